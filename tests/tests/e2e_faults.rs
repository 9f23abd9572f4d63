//! Faults, end to end: the daemon killed (SIGKILL) in the middle of a full-table load; an
//! attached interface deleted and created again, and taken down and up, under traffic; no
//! bpf filesystem, no kernel BTF, and an interface without native XDP. Each must end in a
//! consistent dataplane or a clear message, as the README's "Faults" section says.
//!
//! Needs root, iproute2, ping, unshare and the real table (../shared/data/fulltable-2023).

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use ipnet::Ipv4Net;
use pop_dataplane_tests::{
    dataplane_binary, fulltable,
    lab::{Daemon, HOST_B, Lab, LabOptions, ROUTER_A, ROUTER_B, counter},
};
use serde_json::Value;

/// Three pings from A to B, 20 ms apart: whether all came back.
fn ping(lab: &Lab) -> bool {
    lab.a
        .exec("ping", &["-c", "3", "-i", "0.02", "-W", "1", HOST_B.ipv4])
        .is_ok_and(|out| out.contains("3 received"))
}

/// Pings A to B until one answers; how long that took.
fn until_ping(lab: &Lab, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if lab
            .a
            .exec("ping", &["-c", "1", "-W", "0.2", HOST_B.ipv4])
            .is_ok()
        {
            return Some(started.elapsed());
        }
    }
    None
}

/// Counter `field` of interface `name`.
fn count(lab: &Lab, binary: &Path, name: &str, field: &str) -> u64 {
    counter(&lab.stats(binary).unwrap(), name, field)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_interface_deleted_and_created_again_or_flapped_under_traffic() {
    let (binary, lab, daemon) = Lab::running("pdpt-flt", LabOptions::default()).unwrap();
    assert!(ping(&lab));

    // Traffic all along: a ping every 10 ms from A, counted at the end.
    let flood = lab
        .a
        .command("ping")
        .args(["-i", "0.01", "-w", "30", HOST_B.ipv4])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    // Deleted: its next hop goes down, the daemon keeps running and lets the link go.
    lab.router.ip(&["link", "del", ROUTER_B.ifname]).unwrap();
    wait_for("the daemon sees rb gone", Duration::from_secs(5), || {
        daemon.log().contains("rb: deleted")
    });
    assert!(!ping(&lab), "B is unreachable without rb");
    let status: Value =
        serde_json::from_str(&lab.cli(&binary, &["status", "--json"]).unwrap()).unwrap();
    assert!(
        status["nexthops_unresolved"].as_u64().unwrap() >= 1,
        "{status}"
    );

    // Created again (a new ifindex): placed, attached, and forwarding by XDP again.
    let created = Instant::now();
    lab.reconnect(&lab.b, HOST_B, ROUTER_B).unwrap();
    until_ping(&lab, Duration::from_secs(10)).expect("B reachable again");
    println!(
        "rb created again: B answered {:.0} ms after the link was made",
        created.elapsed().as_secs_f64() * 1e3
    );
    assert!(
        daemon.log().contains("rb: created again"),
        "{}",
        daemon.log()
    );
    let tx_before = count(&lab, &binary, ROUTER_B.ifname, "tx_packets");
    assert!(ping(&lab));
    let tx_after = count(&lab, &binary, ROUTER_B.ifname, "tx_packets");
    // Kernel forwarding is off in the lab: only XDP can have sent these.
    assert!(tx_after >= tx_before + 3, "{tx_before} -> {tx_after}");
    let link = lab.router.ip(&["link", "show", ROUTER_B.ifname]).unwrap();
    assert!(link.contains("xdp"), "{link}");

    // Down and up: unreachable while down, forwarded again once up.
    lab.router
        .ip(&["link", "set", ROUTER_B.ifname, "down"])
        .unwrap();
    wait_for("rb down seen", Duration::from_secs(5), || {
        daemon.log().contains("rb: link down")
    });
    assert!(!ping(&lab));
    let up = Instant::now();
    lab.router
        .ip(&["link", "set", ROUTER_B.ifname, "up"])
        .unwrap();
    until_ping(&lab, Duration::from_secs(10)).expect("B reachable after up");
    println!(
        "rb down and up: B answered {:.0} ms after up",
        up.elapsed().as_secs_f64() * 1e3
    );
    let before = count(&lab, &binary, ROUTER_A.ifname, "forwarded_packets");
    assert!(ping(&lab));
    assert!(count(&lab, &binary, ROUTER_A.ifname, "forwarded_packets") >= before + 3);

    let _ = Command::new("kill")
        .args(["-INT", &flood.id().to_string()])
        .status();
    let out = flood.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    let summary = summary
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("")
        .to_owned();
    // Most of the loss is meant: the two outages above each wait out three unanswered pings.
    println!("ping every 10 ms through it all: {summary}");
    assert!(summary.contains("received"), "{summary}");
}

/// The prefixes of the real table that stay clear of the lab's own 198.18.0.0/15.
fn table() -> Vec<Ipv4Net> {
    let bench: Ipv4Net = "198.18.0.0/15".parse().unwrap();
    let (v4, _) = fulltable::read().unwrap();
    v4.into_iter()
        .filter(|p| !bench.contains(p) && !p.contains(&bench))
        .collect()
}

/// What the loaded program does with an address of each sampled prefix: "new" when every
/// one goes out of rb (the full table's next hop), "old" when none is routed (the config's
/// table), else a description of the mix.
fn table_state(lab: &Lab, binary: &Path, samples: &[Ipv4Net]) -> String {
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for prefix in samples {
        let dst = prefix
            .hosts()
            .next()
            .unwrap_or(prefix.network())
            .to_string();
        let trace = lab
            .trace(binary, &["--in", ROUTER_A.ifname, "--dst", &dst])
            .unwrap();
        let outcome = match (trace["action"].as_str(), trace["reason"].as_str()) {
            (Some("forward"), _) => format!("forward via {}", trace["nexthop"]["egress"]),
            (action, reason) => format!("{action:?} {reason:?}"),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    let all = |what: &str| outcomes.len() == 1 && outcomes.contains_key(what);
    if all(&format!("forward via \"{}\"", ROUTER_B.ifname)) {
        "new".to_owned()
    } else if all("Some(\"to_kernel\") Some(\"no_route\")") {
        "old".to_owned()
    } else {
        format!("a mix: {outcomes:?}")
    }
}

#[test]
fn a_daemon_killed_in_the_middle_of_a_full_table_load_leaves_one_table_and_recovers() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-kill").unwrap();
    let table = table();
    let mut file = String::with_capacity(table.len() * 40);
    for prefix in &table {
        file += &format!("{prefix} via {} dev {}\n", HOST_B.ipv4, ROUTER_B.ifname);
    }
    let path = lab.dir().join("full.routes");
    std::fs::write(&path, file).unwrap();
    let samples: Vec<Ipv4Net> = (0..16).map(|i| table[i * table.len() / 16 + 7]).collect();
    let load = || {
        lab.dataplane_command(&binary)
            .args(["route", "load", "--replace-all"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    // A whole load first, to know how long one takes.
    let mut daemon = lab
        .start_dataplane(&binary, &lab.router_config(), "native")
        .unwrap();
    assert_eq!(table_state(&lab, &binary, &samples), "old");
    let started = Instant::now();
    assert!(load().wait().unwrap().success());
    let whole = started.elapsed();
    assert_eq!(table_state(&lab, &binary, &samples), "new");
    println!("{} routes load in {whole:.2?}", table.len());
    daemon.stop().unwrap();

    // Then killed at points through it: a consistent table every time, forwarding on, and
    // the next start back on the config's table (the CLI's routes were not saved).
    let mut seen = Vec::new();
    for fraction in [0.2, 0.5, 0.8, 0.95, 1.1] {
        let mut daemon = lab
            .start_dataplane(&binary, &lab.router_config(), "native")
            .unwrap();
        assert_eq!(table_state(&lab, &binary, &samples), "old", "after restart");
        assert!(ping(&lab), "forwarding after restart");
        let mut cli = load();
        thread::sleep(whole.mul_f64(fraction));
        daemon.kill().unwrap();
        let _ = cli.wait();
        let state = table_state(&lab, &binary, &samples);
        assert!(
            state == "old" || state == "new",
            "killed at {fraction}: {state}"
        );
        assert!(ping(&lab), "forwarding after SIGKILL at {fraction}");
        println!(
            "killed at {:.0}% of a load: the {state} table",
            fraction * 100.0
        );
        seen.push(state);
    }
    println!("tables left by the kills: {seen:?}");
    let daemon = lab
        .start_dataplane(&binary, &lab.router_config(), "native")
        .unwrap();
    assert_eq!(table_state(&lab, &binary, &samples), "old");
    assert!(ping(&lab));
    drop(daemon);
}

/// The daemon in a mount namespace of its own, after shell commands `setup` changed it.
fn start_in_own_mounts(lab: &Lab, binary: &Path, setup: &str) -> Daemon {
    let script = format!("{setup} && exec \"$0\" \"$@\"");
    lab.start_dataplane_in(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
        binary,
        &lab.router_config(),
        "native",
        &[],
        &[],
    )
    .unwrap()
}

#[test]
fn no_bpffs_no_btf_and_no_native_xdp_get_fallbacks_or_clear_messages() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-env").unwrap();
    let xdp_on = |ifname: &str| {
        lab.router
            .ip(&["link", "show", ifname])
            .unwrap()
            .contains(" xdp")
    };

    // No bpf filesystem on /sys/fs/bpf (a mount namespace of its own without it): the daemon
    // mounts one and runs.
    let mut daemon = start_in_own_mounts(
        &lab,
        &binary,
        "umount -l /sys/fs/bpf; ! grep -q ' /sys/fs/bpf ' /proc/mounts",
    );
    assert!(
        daemon
            .log()
            .contains("mounting a bpf filesystem on /sys/fs/bpf"),
        "{}",
        daemon.log()
    );
    assert!(ping(&lab));
    daemon.stop().unwrap();

    // A pin directory on a filesystem that is not bpffs: refused, nothing attached.
    let out = lab
        .router
        .enter(&binary)
        .args([
            "--pin-dir",
            "/tmp/pop-dataplane-not-bpffs/pins",
            "--run-dir",
        ])
        .arg(lab.run_dir())
        .args(["run", "--config"])
        .arg(lab.config_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(
                "/tmp/pop-dataplane-not-bpffs is not on a bpf filesystem: mount one (mount -t \
                 bpf bpf /tmp/pop-dataplane-not-bpffs) or choose --pin-dir under one"
            ),
        "{stderr}"
    );
    assert!(!xdp_on(ROUTER_A.ifname));

    // No kernel BTF (hidden under an empty tmpfs): not needed; said, and forwarding works.
    let mut daemon = start_in_own_mounts(&lab, &binary, "mount -t tmpfs none /sys/kernel/btf");
    assert!(
        daemon
            .log()
            .contains("no kernel BTF at /sys/kernel/btf/vmlinux; not needed, carrying on"),
        "{}",
        daemon.log()
    );
    assert!(ping(&lab));
    daemon.stop().unwrap();

    // An interface whose driver has no native XDP (a bridge): `native` refuses it and leaves
    // nothing attached; `auto` attaches it in generic mode and the others natively.
    lab.router
        .ip(&["link", "add", "br-x", "type", "bridge"])
        .unwrap();
    lab.router.ip(&["link", "set", "br-x", "up"]).unwrap();
    let config = format!("{}\n[[interface]]\nname = \"br-x\"\n", lab.router_config());
    let err = lab
        .start_dataplane(&binary, &config, "native")
        .err()
        .expect("native mode on a bridge fails")
        .to_string();
    assert!(
        err.contains(
            "br-x's driver does not support native XDP: run with --xdp-mode generic (or auto, \
             which falls back to generic mode for such interfaces)"
        ),
        "{err}"
    );
    assert!(!xdp_on(ROUTER_A.ifname) && !xdp_on(ROUTER_B.ifname) && !xdp_on("br-x"));
    assert!(!lab.pin_dir().exists());
    let daemon = lab.start_dataplane(&binary, &config, "auto").unwrap();
    let status: Value =
        serde_json::from_str(&lab.cli(&binary, &["status", "--json"]).unwrap()).unwrap();
    let ports: Vec<(String, String)> = serde_json::from_value(status["ports"].clone()).unwrap();
    assert!(
        ports.contains(&("br-x".to_owned(), "generic".to_owned()))
            && ports.contains(&(ROUTER_A.ifname.to_owned(), "native".to_owned())),
        "{ports:?}"
    );
    assert!(daemon.log().contains("br-x"), "{}", daemon.log());
    assert!(ping(&lab));
}
