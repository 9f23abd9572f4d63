//! Operations: `config check` saying what `reload` says, with no daemon and no root;
//! systemd's notify protocol; stale pin directories that must never keep a start from
//! working.
//!
//! Needs root (to make the lab), iproute2, ping, setpriv and bpftool.

use std::{
    fs,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use pop_dataplane_tests::{
    dataplane_binary,
    lab::{HOST_B, Lab},
    sflow::Receiver,
};
use serde_json::Value;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/bad-input");

fn ping(lab: &Lab) -> bool {
    lab.a
        .exec("ping", &["-c", "3", "-i", "0.05", "-W", "1", HOST_B.ipv4])
        .is_ok_and(|out| out.contains("3 received"))
}

/// `pop-dataplane ARGS` in the router's namespace as user nobody.
fn as_nobody(lab: &Lab, binary: &Path, args: &[&str]) -> std::process::Output {
    let mut command = lab.router.enter("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(binary)
        .args(args);
    command.output().unwrap()
}

#[test]
fn config_check_says_what_reload_says_without_a_daemon_or_root() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-ops").unwrap();
    // A source port another program holds (the corpus's sflow-source-port-in-use).
    let _holder = Receiver::bind(&lab.router, "0.0.0.0:6999").unwrap();
    let dir = lab.dir().join("corpus");
    fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    fs::write(&good, lab.router_config()).unwrap();
    let good = good.display().to_string();

    let out = as_nobody(&lab, &binary, &["config", "check", &good]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("good on this host"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let manifest = fs::read_to_string(Path::new(CORPUS).join("EXPECTED")).unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (case, expected) = line.split_once('\t').unwrap();
        let path = dir.join(Path::new(case).file_name().unwrap());
        fs::copy(Path::new(CORPUS).join(case), &path).unwrap();
        let file = path.display().to_string();
        let args: Vec<&str> = if case.starts_with("config/") {
            vec!["config", "check", &file]
        } else {
            vec!["config", "check", &good, "--routes", &file]
        };
        let out = as_nobody(&lab, &binary, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = expected.replace("{file}", &file);
        if out.status.success() || !stderr.contains(&expected) {
            failures.push(format!(
                "{case}: exit {:?}\n  expected: {expected}\n  got:      {}",
                out.status.code(),
                stderr.trim()
            ));
        }
        cases += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Without the host: an interface this namespace lacks is not looked for.
    let elsewhere = dir.join("elsewhere.toml");
    fs::write(&elsewhere, "[[interface]]\nname = \"eth9\"\n").unwrap();
    let elsewhere = elsewhere.display().to_string();
    let on_host = as_nobody(&lab, &binary, &["config", "check", &elsewhere]);
    assert!(!on_host.status.success());
    assert!(
        String::from_utf8_lossy(&on_host.stderr).contains("no such interface"),
        "{}",
        String::from_utf8_lossy(&on_host.stderr)
    );
    let off_host = as_nobody(&lab, &binary, &["config", "check", "--no-host", &elsewhere]);
    assert!(off_host.status.success(), "{off_host:?}");
    println!("{cases} broken inputs: config check says what reload says");
}

/// Messages from the daemon on a NOTIFY_SOCKET, until `want` arrives.
fn until(socket: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = message.lines().any(|l| l == want);
        seen.push(message);
        if done {
            return;
        }
    }
    panic!("no {want} within 10 s; got {seen:?}");
}

#[test]
fn systemd_hears_ready_reloading_watchdog_and_stopping() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-ops").unwrap();
    let path = lab.dir().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut daemon = lab
        .start_dataplane_with_env(
            &binary,
            &lab.router_config(),
            "native",
            &[],
            &[
                ("NOTIFY_SOCKET", path.to_str().unwrap()),
                ("WATCHDOG_USEC", "400000"),
            ],
        )
        .unwrap();
    let mut seen = Vec::new();
    until(&socket, "READY=1", &mut seen);
    let statuses: Vec<&String> = seen.iter().filter(|m| m.starts_with("STATUS=")).collect();
    assert!(
        statuses.len() >= 3,
        "the start's phases as STATUS= lines before READY=1: {seen:?}"
    );
    assert!(ping(&lab), "forwarding once READY=1");
    let ready = seen.last().unwrap().clone();
    assert!(ready.contains("STATUS=ready: forwarding on ra"), "{ready}");

    // The watchdog, every half of WATCHDOG_USEC.
    let mut seen = Vec::new();
    let started = Instant::now();
    until(&socket, "WATCHDOG=1", &mut seen);
    until(&socket, "WATCHDOG=1", &mut seen);
    assert!(started.elapsed() < Duration::from_secs(2), "{seen:?}");

    // A reload (ExecReload sends SIGHUP): RELOADING=1 with the monotonic time, then READY=1.
    let status: Value =
        serde_json::from_str(&lab.cli(&binary, &["status", "--json"]).unwrap()).unwrap();
    let pid = status["pid"].as_u64().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut seen = Vec::new();
    until(&socket, "RELOADING=1", &mut seen);
    assert!(seen.last().unwrap().contains("MONOTONIC_USEC="), "{seen:?}");
    until(&socket, "READY=1", &mut seen);
    assert!(ping(&lab));

    daemon.stop().unwrap();
    let mut seen = Vec::new();
    until(&socket, "STOPPING=1", &mut seen);
}

/// Starts the router's daemon with `--keep-on-exit`, and stops it: the dataplane stays,
/// pinned, forwarding.
fn leave_pins(lab: &Lab, binary: &Path) {
    let mut daemon = lab
        .start_dataplane_with(binary, &lab.router_config(), "native", &["--keep-on-exit"])
        .unwrap();
    daemon.stop().unwrap();
    assert!(ping(lab), "the kept dataplane forwards");
}

fn starts_and_forwards(lab: &Lab, binary: &Path, says: &str) {
    let mut daemon = lab
        .start_dataplane(binary, &lab.router_config(), "native")
        .unwrap_or_else(|err| panic!("{err:#}"));
    assert!(ping(lab), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains(says), "the log does not say {says:?}:\n{log}");
    daemon.stop().unwrap();
}

#[test]
fn stale_pins_never_keep_the_daemon_from_starting() {
    let binary = dataplane_binary();

    // Pins of another version: a map under one of this version's names that it cannot take.
    let lab = Lab::new("pdpt-ops").unwrap();
    let pins: PathBuf = lab.pin_dir();
    leave_pins(&lab, &binary);
    fs::remove_file(pins.join("NEXTHOPS")).unwrap();
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(pins.join("NEXTHOPS"))
        .args([
            "type", "array", "key", "4", "value", "8", "entries", "4", "name", "NEXTHOPS",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    starts_and_forwards(&lab, &binary, "do not fit this version");

    // A half-written pin set (a daemon killed while it pinned): the program and some maps
    // missing.
    leave_pins(&lab, &binary);
    for name in [
        "program",
        "NEXTHOPS",
        "FIB_V6",
        "FLOW_ENTRIES",
        "SAMPLES_LOST",
    ] {
        fs::remove_file(pins.join(name)).unwrap();
    }
    starts_and_forwards(&lab, &binary, "taking over the running dataplane");

    // Links whose interfaces are gone (their namespace deleted under a kept dataplane),
    // pinned under the ifindexes this lab's ports have now: another lab's pins, moved here.
    let old = Lab::new("pdpt-ops").unwrap();
    leave_pins(&old, &binary);
    let moved = lab.pin_dir();
    fs::remove_dir_all(&moved).ok();
    fs::rename(old.pin_dir(), &moved).unwrap();
    // In two steps: an old index may be another port's new one.
    let links = moved.join("links");
    for port in ["ra", "rb"] {
        let from = links.join(ifindex(&old, port).to_string());
        fs::rename(from, links.join(format!("moving-{port}"))).unwrap();
    }
    for port in ["ra", "rb"] {
        let to = links.join(ifindex(&lab, port).to_string());
        fs::rename(links.join(format!("moving-{port}")), to).unwrap();
    }
    drop(old);
    starts_and_forwards(&lab, &binary, "cannot take the program");
}

fn ifindex(lab: &Lab, name: &str) -> u32 {
    let out = lab.router.ip(&["-j", "link", "show", name]).unwrap();
    let links: Value = serde_json::from_str(&out).unwrap();
    links[0]["ifindex"].as_u64().unwrap() as u32
}

#[test]
fn bpftool_dumps_the_pinned_maps_with_field_names() {
    let (binary, lab, _daemon) =
        Lab::running("pdpt-ops", pop_dataplane_tests::lab::LabOptions::default()).unwrap();
    assert!(ping(&lab));
    for (map, fields) in [
        (
            "INTERFACES",
            &["ifindex", "vlan_outer", "slot", "mac", "flags"][..],
        ),
        (
            "NEXTHOPS",
            &["port", "slot", "mtu", "dst_mac", "src_mac"][..],
        ),
        (
            "COUNTERS",
            &["rx_packets", "forwarded_packets", "to_kernel", "dropped"][..],
        ),
        ("SAMPLE_RATES", &["rate", "threshold"][..]),
    ] {
        let out = Command::new("bpftool")
            .args(["map", "dump", "pinned"])
            .arg(lab.pin_dir().join(map))
            .output()
            .unwrap();
        let dump = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{map}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for field in fields {
            assert!(
                dump.contains(&format!("\"{field}\"")),
                "{map}: no field {field} in bpftool's dump:\n{}",
                &dump[..dump.len().min(2000)]
            );
        }
    }
    let _ = binary;
}
