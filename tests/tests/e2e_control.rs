//! End to end, the control plane: the route CLI and its errors, `route load`, saved routes
//! across restarts, reload (atomic, and refused when wrong), neighbour resolution from the
//! kernel, failover when a link goes down (timed), restart and program replacement under
//! traffic (loss counted), unprivileged users, two daemons, `stats --watch` and metrics.
//!
//! Needs root, iproute2, ethtool and ping.

use std::{
    io::{Read as _, Write as _},
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use pop_dataplane_tests::{
    dataplane_binary,
    lab::{
        B_SERVICE_V4, HOST_A, HOST_B, HOST_B2, Lab, LabOptions, ROUTER_A, ROUTER_B, ROUTER_C,
        counter,
    },
    netns::run,
    traffic::{Receivers, Sender, now_ns},
};
use serde_json::Value;

fn trace(lab: &Lab, binary: &Path, dst: &str) -> Value {
    lab.trace(binary, &["--in", ROUTER_A.ifname, "--dst", dst])
        .unwrap()
}

/// `(action, reason)` of a trace.
fn verdict(lab: &Lab, binary: &Path, dst: &str) -> (String, Option<String>) {
    let t = trace(lab, binary, dst);
    (
        t["action"].as_str().unwrap().to_owned(),
        t["reason"].as_str().map(str::to_owned),
    )
}

fn forward() -> (String, Option<String>) {
    ("forward".to_owned(), None)
}

fn to_kernel(reason: &str) -> (String, Option<String>) {
    ("to_kernel".to_owned(), Some(reason.to_owned()))
}

fn routes(lab: &Lab, binary: &Path) -> Value {
    serde_json::from_str(&lab.cli(binary, &["route", "list", "--json"]).unwrap()).unwrap()
}

#[test]
fn route_cli_changes_what_the_program_does() {
    let (binary, lab, _daemon) = Lab::running(
        "pdpt-ctl",
        LabOptions {
            ipv6: false,
            second_link: true,
        },
    )
    .unwrap();

    assert_eq!(verdict(&lab, &binary, "198.18.5.5"), to_kernel("no_route"));
    let out = lab
        .cli(
            &binary,
            &[
                "route",
                "add",
                "198.18.5.0/24",
                "via",
                HOST_B.ipv4,
                "dev",
                ROUTER_B.ifname,
            ],
        )
        .unwrap();
    assert!(out.contains("1 routes set"), "{out}");
    let t = trace(&lab, &binary, "198.18.5.5");
    assert_eq!(
        (t["action"].as_str(), t["nexthop"]["egress"].as_str()),
        (Some("forward"), Some(ROUTER_B.ifname))
    );
    assert_eq!(
        t["rewritten"]["dst_mac"], HOST_B.mac,
        "the config's MAC for the same next hop"
    );

    // Listed, with its source; `route get` finds it by longest match.
    let list = routes(&lab, &binary);
    let cli: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == "cli")
        .collect();
    assert_eq!(cli.len(), 1);
    assert_eq!(
        (cli[0]["prefix"].as_str(), cli[0]["selected"].as_bool()),
        (Some("198.18.5.0/24"), Some(true))
    );
    let get: Value = serde_json::from_str(
        &lab.cli(&binary, &["route", "get", "198.18.5.77", "--json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(get["prefix"], "198.18.5.0/24");
    assert_eq!(get["nexthops"][0]["state"], "reachable");

    // Adding again fails; replace works; ECMP; blackhole; the CLI wins over the config.
    let out = lab
        .cli_output(&binary, &["route", "add", "198.18.5.0/24", "blackhole"])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists (from the cli); use `route replace`")
    );
    lab.cli(&binary, &["route", "replace", "198.18.5.0/24", "blackhole"])
        .unwrap();
    assert_eq!(
        verdict(&lab, &binary, "198.18.5.5"),
        ("drop".to_owned(), Some("blackhole".to_owned()))
    );
    lab.cli(
        &binary,
        &[
            "route",
            "replace",
            "198.18.5.0/24",
            "via",
            HOST_B.ipv4,
            "dev",
            ROUTER_B.ifname,
            "via",
            HOST_B2.ipv4,
            "dev",
            ROUTER_C.ifname,
        ],
    )
    .unwrap();
    assert!(
        trace(&lab, &binary, "198.18.5.5")["route"]["target"]
            .as_str()
            .unwrap()
            .starts_with("group ")
    );
    lab.cli(&binary, &["route", "add", "198.18.2.0/24", "kernel"])
        .unwrap();
    assert_eq!(
        verdict(&lab, &binary, HOST_B.ipv4),
        to_kernel("kernel_route")
    );

    // Deleted, the config's route comes back; flushed, nothing from the CLI is left.
    lab.cli(&binary, &["route", "del", "198.18.2.0/24"])
        .unwrap();
    assert_eq!(verdict(&lab, &binary, HOST_B.ipv4), forward());
    let out = lab.cli(&binary, &["route", "flush"]).unwrap();
    assert!(out.contains("1 CLI routes flushed"), "{out}");
    assert_eq!(verdict(&lab, &binary, "198.18.5.5"), to_kernel("no_route"));
    let out = lab.cli(&binary, &["route", "list"]).unwrap();
    assert!(
        out.starts_with("PREFIX") && out.contains("config  *"),
        "{out}"
    );
}

#[test]
fn bad_cli_input_gets_a_clear_error_and_changes_nothing() {
    let (binary, lab, _daemon) = Lab::running("pdpt-ctl", LabOptions::default()).unwrap();
    let before = routes(&lab, &binary);
    let long = "x".repeat(5000);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["route", "add", "198.18.300.0/24", "blackhole"],
            "\"198.18.300.0/24\" is not an IP prefix",
        ),
        (
            vec!["route", "add", "198.18.5.1/24", "blackhole"],
            "198.18.5.1/24 has host bits set (the prefix is 198.18.5.0/24)",
        ),
        (
            vec![
                "route",
                "add",
                "198.18.5.0/24",
                "via",
                HOST_B.ipv4,
                "dev",
                "eth9",
            ],
            "dev \"eth9\" is not one of the dataplane's interfaces (ra, rb)",
        ),
        (
            vec![
                "route",
                "add",
                "198.18.5.0/24",
                "via",
                "198.18.77.7",
                "dev",
                "rb",
            ],
            "next hop 198.18.77.7 is not on a subnet of rb (198.18.2.1/24)",
        ),
        (
            vec![
                "route",
                "add",
                "198.18.5.0/24",
                "via",
                "banana",
                "dev",
                "rb",
            ],
            "\"banana\" is not an IPv4 or IPv6 address",
        ),
        (
            vec!["route", "add", "198.18.5.0/24", "via", HOST_B.ipv4],
            "expected `via ADDRESS dev INTERFACE`",
        ),
        (
            vec![
                "route",
                "add",
                "198.18.5.0/24",
                "via",
                HOST_B.ipv4,
                "dev",
                &long,
            ],
            "longer than 4096",
        ),
        (
            vec!["route", "del", "198.18.9.0/24"],
            "route 198.18.9.0/24: no such route",
        ),
        (
            vec!["route", "del", "198.18.2.0/24"],
            "no route from the cli (it has one from the config",
        ),
        (
            vec!["route", "del", "banana"],
            "\"banana\" is not an IP prefix",
        ),
    ];
    for (args, expected) in cases {
        let out = lab.cli_output(&binary, &args).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && stderr.lines().count() == 1,
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(routes(&lab, &binary), before, "nothing changed");
}

#[test]
fn route_load_is_all_or_nothing_and_names_the_line() {
    let (binary, lab, _daemon) = Lab::running("pdpt-ctl", LabOptions::default()).unwrap();
    let before = routes(&lab, &binary);

    let file = lab.dir().join("routes.txt");
    // `route load` of `contents` as a file: what it said on stderr.
    let load = |contents: &[u8]| -> String {
        std::fs::write(&file, contents).unwrap();
        let out = lab
            .cli_output(&binary, &["route", "load", file.to_str().unwrap()])
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A syntax error: the CLI refuses before sending anything.
    let stderr = load(b"198.18.5.0/24 via 198.18.2.2 dev rb\n198.18.6.0/24 via 198.18.2.2\n");
    assert!(
        stderr.contains(&format!(
            "{}:2: unexpected \"via\": expected `via ADDRESS dev INTERFACE`",
            file.display()
        )),
        "{stderr}"
    );
    // A line the daemon refuses (unknown interface on line 3): none of the file applies.
    let stderr = load(
        b"# comment\n198.18.5.0/24 via 198.18.2.2 dev rb\n198.18.6.0/24 via 198.18.2.2 dev eth9\n",
    );
    assert!(
        stderr.contains(&format!(
            "{}:3: route 198.18.6.0/24: dev \"eth9\"",
            file.display()
        )),
        "{stderr}"
    );
    assert_eq!(routes(&lab, &binary), before, "nothing changed");
    // Not UTF-8: named with its line.
    assert!(
        load(b"198.18.5.0/24 blackhole\n198.18.6.0/24 \xff\n")
            .contains(&format!("{}:2: not UTF-8 text", file.display()))
    );

    // From standard input, all of it.
    let mut child = lab
        .dataplane_command(&binary)
        .args(["route", "load", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"198.18.5.0/24 via 198.18.2.2 dev rb\n198.18.6.0/24 blackhole\nkernel 198.18.7.0/24\n",
        )
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(verdict(&lab, &binary, "198.18.5.1"), forward());
    assert_eq!(
        verdict(&lab, &binary, "198.18.6.1"),
        ("drop".to_owned(), Some("blackhole".to_owned()))
    );
    assert_eq!(
        verdict(&lab, &binary, "198.18.7.1"),
        to_kernel("kernel_route")
    );
}

#[test]
fn saved_cli_routes_survive_a_restart_and_unsaved_ones_do_not() {
    let (binary, lab, mut daemon) = Lab::running("pdpt-ctl", LabOptions::default()).unwrap();
    lab.cli(&binary, &["route", "add", "198.18.5.0/24", "blackhole"])
        .unwrap();
    let out = lab.cli(&binary, &["config", "save"]).unwrap();
    let saved = format!("{}.routes", lab.config_path().display());
    assert!(
        out.contains(&format!("1 CLI routes saved to {saved}")),
        "{out}"
    );
    assert!(
        std::fs::read_to_string(&saved)
            .unwrap()
            .contains("198.18.5.0/24 blackhole\n")
    );
    lab.cli(&binary, &["route", "add", "198.18.6.0/24", "blackhole"])
        .unwrap();
    assert!(daemon.stop().unwrap().success());

    let _daemon = lab
        .start_dataplane(&binary, &lab.router_config(), "native")
        .unwrap();
    assert_eq!(
        verdict(&lab, &binary, "198.18.5.1"),
        ("drop".to_owned(), Some("blackhole".to_owned()))
    );
    assert_eq!(
        verdict(&lab, &binary, "198.18.6.1"),
        to_kernel("no_route"),
        "not saved: gone"
    );
}

#[test]
fn reload_moves_to_the_new_config_at_once_and_refuses_a_bad_one() {
    let binary = dataplane_binary();
    let lab = Lab::with(
        "pdpt-ctl",
        LabOptions {
            ipv6: false,
            second_link: true,
        },
    )
    .unwrap();
    // 256 destinations on B, all through rb; the new config moves all of them to rc.
    lab.b
        .ip(&["addr", "add", "198.18.100.1/24", "dev", "lo"])
        .unwrap();
    lab.b.sysctl("net.ipv4.conf.all.rp_filter", "0").unwrap();
    let routes_via = |nexthop: &str| {
        (0..=255)
            .map(|i| {
                format!("\n[[route]]\nprefix = \"198.18.100.{i}/32\"\nnexthop = \"{nexthop}\"\n")
            })
            .collect::<String>()
    };
    let old = format!("{}{}", lab.router_config(), routes_via("host-b"));
    let new = format!("{}{}", lab.router_config(), routes_via("host-b2"));
    let _daemon = lab.start_dataplane(&binary, &old, "native").unwrap();

    // A bad config is refused, naming the place, and changes nothing.
    std::fs::write(
        lab.config_path(),
        new.replace("198.18.100.7/32", "198.18.100.7/33"),
    )
    .unwrap();
    let out = lab.cli_output(&binary, &["reload"]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("router.toml:") && stderr.contains("198.18.100.7/33"),
        "{stderr}"
    );
    assert_eq!(
        trace(&lab, &binary, "198.18.100.7")["nexthop"]["egress"],
        ROUTER_B.ifname
    );

    // Numbered traffic to every destination in turn while the good config is loaded.
    let receivers = Receivers::start(&lab.b, &[HOST_B.ifname, HOST_B2.ifname], 9000).unwrap();
    let targets: Vec<(Ipv4Addr, u16)> = (0..=255u8)
        .map(|i| (Ipv4Addr::new(198, 18, 100, i), 41000 + u16::from(i)))
        .collect();
    let sender =
        Sender::start(&lab.a, HOST_A.ipv4.parse().unwrap(), targets, 9000, 20_000).unwrap();
    thread::sleep(Duration::from_millis(500));
    std::fs::write(lab.config_path(), &new).unwrap();
    let out = lab.cli(&binary, &["reload"]).unwrap();
    assert!(out.contains("reloaded"), "{out}");
    thread::sleep(Duration::from_millis(500));
    let sent = sender.stop().unwrap();
    thread::sleep(Duration::from_millis(200));
    let received = receivers.stop().unwrap();

    // Atomic: every datagram sent before the switch left by rb, every one after by rc.
    let last_on_b = received
        .iter()
        .filter(|r| r.device == 0)
        .map(|r| r.seq)
        .max()
        .unwrap();
    let first_on_b2 = received
        .iter()
        .filter(|r| r.device == 1)
        .map(|r| r.seq)
        .min()
        .unwrap();
    println!(
        "reload under traffic: {sent} sent, {} received; last via rb #{last_on_b}, first via rc #{first_on_b2}",
        received.len()
    );
    assert!(
        last_on_b < first_on_b2,
        "a half-applied table: #{last_on_b} via rb after #{first_on_b2} via rc"
    );
    assert_eq!(
        received.len() as u64,
        sent,
        "no datagram lost across the reload"
    );
    assert_eq!(
        trace(&lab, &binary, "198.18.100.7")["nexthop"]["egress"],
        ROUTER_C.ifname
    );

    // SIGHUP reloads too.
    std::fs::write(lab.config_path(), &old).unwrap();
    let pid = std::fs::read_to_string(lab.run_dir().join("lock")).unwrap();
    run(Command::new("kill").args(["-HUP", pid.trim()])).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while trace(&lab, &binary, "198.18.100.7")["nexthop"]["egress"] != ROUTER_B.ifname {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn next_hops_are_resolved_by_the_kernel_and_followed() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-ctl").unwrap();
    // No MACs in the config: the daemon asks the kernel's neighbour table.
    let config = lab
        .router_config()
        .replace(&format!("lladdr = \"{}\"\n", HOST_A.mac), "")
        .replace(&format!("lladdr = \"{}\"\n", HOST_B.mac), "");
    let _daemon = lab.start_dataplane(&binary, &config, "native").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while trace(&lab, &binary, HOST_B.ipv4)["action"] != "forward" {
        assert!(
            Instant::now() < deadline,
            "B was never resolved: {}",
            trace(&lab, &binary, HOST_B.ipv4)
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        trace(&lab, &binary, HOST_B.ipv4)["rewritten"]["dst_mac"],
        HOST_B.mac
    );
    let before = lab.stats(&binary).unwrap();
    let ping = lab
        .a
        .exec("ping", &["-c", "5", "-i", "0.05", "-W", "2", HOST_B.ipv4])
        .unwrap();
    assert!(ping.contains("5 packets transmitted, 5 received"), "{ping}");
    let after = lab.stats(&binary).unwrap();
    assert_eq!(
        counter(&after, ROUTER_A.ifname, "forwarded_packets")
            - counter(&before, ROUTER_A.ifname, "forwarded_packets"),
        5
    );

    // The neighbour's MAC changes in the kernel's table: the next hop follows.
    let new_mac = "02:00:00:02:00:99";
    lab.router
        .ip(&[
            "neigh",
            "replace",
            HOST_B.ipv4,
            "lladdr",
            new_mac,
            "dev",
            ROUTER_B.ifname,
            "nud",
            "permanent",
        ])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while trace(&lab, &binary, HOST_B.ipv4)["rewritten"]["dst_mac"] != new_mac {
        assert!(Instant::now() < deadline, "the new MAC was not followed");
        thread::sleep(Duration::from_millis(50));
    }
    // The entry goes away: unresolved, packets to the kernel, until it is resolved again.
    lab.router
        .ip(&["neigh", "del", HOST_B.ipv4, "dev", ROUTER_B.ifname])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = trace(&lab, &binary, HOST_B.ipv4);
        if t["action"] == "forward" && t["rewritten"]["dst_mac"] == HOST_B.mac {
            break;
        }
        assert!(Instant::now() < deadline, "not resolved again: {t}");
        thread::sleep(Duration::from_millis(50));
    }

    // A next hop whose neighbour the kernel already holds (permanent: no event will come)
    // is resolved as soon as a route brings it in, without traffic or waiting.
    let known = "198.18.2.77";
    let known_mac = "02:00:00:02:00:77";
    lab.router
        .ip(&[
            "neigh",
            "replace",
            known,
            "lladdr",
            known_mac,
            "dev",
            ROUTER_B.ifname,
            "nud",
            "permanent",
        ])
        .unwrap();
    lab.cli(
        &binary,
        &[
            "route",
            "add",
            "198.19.7.0/24",
            "via",
            known,
            "dev",
            ROUTER_B.ifname,
        ],
    )
    .unwrap();
    let t = trace(&lab, &binary, "198.19.7.1");
    assert_eq!(t["action"], "forward", "{t}");
    assert_eq!(t["rewritten"]["dst_mac"], known_mac, "{t}");
    // The daemon keeps dynamic neighbours alive with NTF_USE every 5 s; a static entry must
    // stay static (NTF_USE would make the kernel turn it dynamic, then fail it).
    thread::sleep(Duration::from_secs(6));
    let neighbour = lab
        .router
        .ip(&["neigh", "show", known, "dev", ROUTER_B.ifname])
        .unwrap();
    assert!(neighbour.contains("PERMANENT"), "{neighbour}");
    assert_eq!(trace(&lab, &binary, "198.19.7.1")["action"], "forward");
}

#[test]
fn a_link_going_down_moves_its_flows_to_the_other_path_in_milliseconds() {
    let binary = dataplane_binary();
    let lab = Lab::with(
        "pdpt-ctl",
        LabOptions {
            ipv6: false,
            second_link: true,
        },
    )
    .unwrap();
    lab.b.sysctl("net.ipv4.conf.all.rp_filter", "0").unwrap();
    let _daemon = lab
        .start_dataplane(&binary, &lab.router_config(), "native")
        .unwrap();
    let receivers = Receivers::start(&lab.b, &[HOST_B.ifname, HOST_B2.ifname], 9000).unwrap();
    let service: Ipv4Addr = B_SERVICE_V4.parse().unwrap();
    let targets: Vec<(Ipv4Addr, u16)> = (0..64).map(|i| (service, 42000 + i)).collect();
    let sender =
        Sender::start(&lab.a, HOST_A.ipv4.parse().unwrap(), targets, 9000, 20_000).unwrap();
    thread::sleep(Duration::from_millis(500));
    let down_at = now_ns();
    lab.b.ip(&["link", "set", HOST_B.ifname, "down"]).unwrap();
    thread::sleep(Duration::from_millis(700));
    lab.b.ip(&["link", "set", HOST_B.ifname, "up"]).unwrap();
    thread::sleep(Duration::from_millis(700));
    let sent = sender.stop().unwrap();
    thread::sleep(Duration::from_millis(200));
    let received = receivers.stop().unwrap();

    // Flows on rb before the cut; the first of their datagrams that came through rc.
    let on_b: std::collections::BTreeSet<u32> = received
        .iter()
        .filter(|r| r.device == 0 && r.sent_ns < down_at)
        .map(|r| r.flow)
        .collect();
    assert!(
        !on_b.is_empty() && on_b.len() < 64,
        "flows spread over both links: {} on rb",
        on_b.len()
    );
    let moved = received
        .iter()
        .filter(|r| r.device == 1 && on_b.contains(&r.flow) && r.sent_ns > down_at)
        .map(|r| r.sent_ns)
        .min()
        .expect("the flows of rb came through rc after the cut");
    let failover_ms = (moved - down_at) as f64 / 1e6;
    let lost = sent - received.len() as u64;
    println!(
        "failover: traffic of {} flows on rc {failover_ms:.2} ms after link-down; {lost} of {sent} datagrams lost",
        on_b.len()
    );
    // Back up: they return to rb.
    let back = received
        .iter()
        .any(|r| r.device == 0 && on_b.contains(&r.flow) && r.sent_ns > moved + 700_000_000);
    assert!(back, "the flows came back to rb when its link came up");
}

#[test]
fn restarting_and_upgrading_the_daemon_loses_no_packet() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-ctl").unwrap();
    let mut daemon = lab
        .start_dataplane_with(&binary, &lab.router_config(), "native", &["--keep-on-exit"])
        .unwrap();
    let receivers = Receivers::start(&lab.b, &[HOST_B.ifname], 9000).unwrap();
    let targets: Vec<(Ipv4Addr, u16)> = (0..8)
        .map(|i| (HOST_B.ipv4.parse().unwrap(), 43000 + i))
        .collect();
    let sender =
        Sender::start(&lab.a, HOST_A.ipv4.parse().unwrap(), targets, 9000, 20_000).unwrap();
    thread::sleep(Duration::from_millis(300));

    // Stopped on purpose with --keep-on-exit: the dataplane forwards on alone...
    assert!(daemon.stop().unwrap().success());
    assert!(
        lab.pin_dir().join("links").read_dir().unwrap().count() == 2,
        "links stay pinned"
    );
    thread::sleep(Duration::from_millis(300));
    // ...and the next daemon takes it over, swapping its program into the links.
    let started = Instant::now();
    let daemon = lab
        .start_dataplane(&binary, &lab.router_config(), "native")
        .unwrap();
    let takeover = started.elapsed();
    assert!(
        daemon.log().contains("taking over the running dataplane"),
        "{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("program replaced in the running link"),
        "{}",
        daemon.log()
    );
    thread::sleep(Duration::from_millis(300));
    let sent = sender.stop().unwrap();
    thread::sleep(Duration::from_millis(200));
    let received = receivers.stop().unwrap();
    let lost = sent - received.len() as u64;
    println!(
        "restart with --keep-on-exit and program replacement: {sent} sent, {lost} lost; take-over took {takeover:.2?}"
    );
    assert_eq!(lost, 0);
    // Counters carried over.
    let stats = lab.stats(&binary).unwrap();
    assert!(counter(&stats, ROUTER_A.ifname, "forwarded_packets") >= sent);
}

#[test]
fn unprivileged_users_and_second_daemons_get_clear_errors() {
    let (binary, lab, _daemon) = Lab::running("pdpt-ctl", LabOptions::default()).unwrap();
    // Enter the namespace as root (nsenter needs it), then become nobody.
    let as_nobody = |args: &[&str]| {
        let mut command = lab.router.enter("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary)
            .arg("--pin-dir")
            .arg(lab.pin_dir())
            .arg("--run-dir")
            .arg(lab.run_dir())
            .args(args);
        command.output().unwrap()
    };
    for (args, expected) in [
        (vec!["route", "list"], "permission denied on"),
        (vec!["stats"], "reading the dataplane's maps needs root"),
        (
            vec!["run", "--config", "/nonexistent"],
            "pop-dataplane run needs root",
        ),
    ] {
        let out = as_nobody(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let socket = lab.run_dir().join("control.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // A second daemon with the same run directory, or on the same interfaces.
    let out = lab
        .cli_output(
            &binary,
            &["run", "--config", lab.config_path().to_str().unwrap()],
        )
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("another pop-dataplane is running with --run-dir")
    );
    let other_run = lab.dir().join("run2");
    let out = lab
        .router
        .enter(&binary)
        .args([
            "--pin-dir",
            &format!("{}-2", lab.pin_dir().display()),
            "--run-dir",
            other_run.to_str().unwrap(),
        ])
        .args(["run", "--config", lab.config_path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already has an XDP program"), "{stderr}");
    let _ = std::fs::remove_dir_all(format!("{}-2", lab.pin_dir().display()));

    // No daemon at all.
    let out = lab
        .router
        .enter(&binary)
        .args(["--run-dir", "/nonexistent-pdp", "route", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pop-dataplane daemon is running"));
}

#[test]
fn stats_watch_shows_rates_and_metrics_are_served() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-ctl").unwrap();
    // A flow rule the pings match, for its series.
    let config = format!(
        "{}\n[[flow]]\nrule = \"destination {}/32 protocol =icmp icmp-type =8 then accept\"\n",
        lab.router_config(),
        HOST_B.ipv4
    );
    let _daemon = lab
        .start_dataplane_with(
            &binary,
            &config,
            "native",
            &["--metrics-listen", "127.0.0.1:9477"],
        )
        .unwrap();
    let ping = lab
        .a
        .command("ping")
        .args(["-c", "30", "-i", "0.05", HOST_B.ipv4])
        .stdout(Stdio::null())
        .spawn();
    let mut watch = lab
        .dataplane_command(&binary)
        .args(["stats", "--watch", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(2500));
    watch.kill().unwrap();
    let mut out = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = watch.wait();
    let _ = ping.map(|mut p| p.wait());
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2, "{out}");
    let rate = lines[1]["interfaces"][0]["forwarded_pps"].as_f64().unwrap();
    assert!(
        (10.0..=30.0).contains(&rate),
        "ping at 20 per second forwarded at {rate} per second"
    );

    // Prometheus text, from inside the router's namespace.
    let body = thread::scope(|scope| {
        scope
            .spawn(|| {
                lab.router.enter_thread().unwrap();
                let mut stream = std::net::TcpStream::connect("127.0.0.1:9477").unwrap();
                stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
                let mut body = String::new();
                stream.read_to_string(&mut body).unwrap();
                body
            })
            .join()
            .unwrap()
    });
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("# TYPE pop_dataplane_forwarded_packets_total counter"));
    assert!(
        body.contains(
            "pop_dataplane_to_kernel_packets_total{interface=\"ra\",reason=\"no_route\"} 0"
        )
    );
    assert!(body.contains("pop_dataplane_routes{family=\"ipv4\"} "));
    let forwarded = body
        .lines()
        .find(|l| l.starts_with("pop_dataplane_forwarded_packets_total{interface=\"ra\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(forwarded >= 20, "{forwarded}");
    let matched = body
        .lines()
        .find(|l| {
            l.starts_with(
                "pop_dataplane_flow_matched_packets_total{id=\"0\",rule=\"destination \
                 198.18.2.2/32 protocol =icmp icmp-type =8 then accept\",origin=\"config\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no flow series in {body}"));
    assert_eq!(matched, 30, "the echo requests");
    // The next hops' traffic, named: the echo requests went to host B, the replies to A.
    let series = |name: &str| -> u64 {
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {body}"))
    };
    let to_b = series("pop_dataplane_nexthop_tx_packets_total{nexthop=\"host-b\",dev=\"rb\"}");
    assert_eq!(to_b, 30, "the echo requests");
    assert_eq!(
        series("pop_dataplane_nexthop_tx_packets_total{nexthop=\"host-a\",dev=\"ra\"}"),
        30,
        "the replies"
    );
    assert_eq!(
        series("pop_dataplane_sflow_samples_total"),
        0,
        "nothing sampled"
    );
    let nexthop_rate = lines[1]["nexthops"]
        .as_array()
        .and_then(|hops| hops.iter().find(|h| h["name"] == "host-b"))
        .and_then(|h| h["tx_pps"].as_f64())
        .unwrap_or_else(|| panic!("no host-b rate in {}", lines[1]));
    assert!(
        (10.0..=30.0).contains(&nexthop_rate),
        "ping at 20 per second sent to host B at {nexthop_rate} per second"
    );
}
