//! End to end, the ingress source checks: deny rules from the config and the CLI, martian
//! source checks and uRPF, on real frames sent from host A through the router; every drop
//! counted on its interface (and its rule); bad rules refused with the state unchanged.
//!
//! Needs root, iproute2 and ping.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use pop_dataplane_tests::{
    dataplane_binary,
    frame::{ETH_P_IPV4, Ipv4, ethernet_tagged, mac},
    lab::{HOST_A, HOST_B, Lab, ROUTER_A, counter},
};
use serde_json::Value;

/// `count` UDP frames from `src` to host B, sent by host A to the router; returns once the
/// program has seen them all (the receive runs in the router port's NAPI, after the send
/// returns).
fn send_from(lab: &Lab, binary: &Path, src: [u8; 4], count: usize) {
    let dst: std::net::Ipv4Addr = HOST_B.ipv4.parse().unwrap();
    let packet = Ipv4::new(src, dst.octets(), 17).udp(4000, 9, &[0u8; 32]);
    let frame = ethernet_tagged(mac(ROUTER_A.mac), mac(HOST_A.mac), &[], ETH_P_IPV4, &packet);
    let rx = |lab: &Lab| ra(lab, binary, "rx_packets");
    let before = rx(lab);
    lab.a
        .send_frames(HOST_A.ifname, &vec![frame; count])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rx(lab) < before + count as u64 {
        assert!(
            Instant::now() < deadline,
            "the program did not see the frames"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Counter `field` of the router's port on host A's side.
fn ra(lab: &Lab, binary: &Path, field: &str) -> u64 {
    counter(&lab.stats(binary).unwrap(), ROUTER_A.ifname, field)
}

fn dropped(lab: &Lab, binary: &Path, reason: &str) -> u64 {
    ra(lab, binary, &format!("dropped.{reason}"))
}

fn acl(lab: &Lab, binary: &Path) -> Vec<Value> {
    let out = lab.cli(binary, &["acl", "list", "--json"]).unwrap();
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The hit count of the rule matching `src` (and `dev`).
fn hits(rules: &[Value], src: &str, dev: Option<&str>) -> u64 {
    rules
        .iter()
        .find(|r| r["rule"]["src"] == src && r["rule"]["dev"].as_str() == dev)
        .unwrap_or_else(|| panic!("no rule {src} in {rules:?}"))["packets"]
        .as_u64()
        .unwrap()
}

/// Three pings from A to B: whether all came back (ping fails when none does).
fn ping(lab: &Lab) -> bool {
    lab.a
        .exec("ping", &["-c", "3", "-i", "0.05", "-W", "1", HOST_B.ipv4])
        .is_ok_and(|out| out.contains("3 received"))
}

#[test]
fn deny_rules_and_martian_sources_drop_and_count_at_ingress() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-sec").unwrap();
    let config = format!(
        "[filter]\nmartian_sources = true\n\n{}\n[[acl]]\naction = \"deny\"\nsrc = \
         \"198.18.9.0/24\"\n",
        lab.router_config()
    );
    let _daemon = lab.start_dataplane(&binary, &config, "native").unwrap();
    assert!(ping(&lab));

    // Martian sources: loopback, multicast, limited broadcast, "this network", and the
    // router's own address on the far side. Each dropped at ingress and counted.
    for src in [
        [127, 0, 0, 2],
        [224, 1, 2, 3],
        [255, 255, 255, 255],
        [0, 1, 2, 3],
        [198, 18, 2, 1],
    ] {
        let before = dropped(&lab, &binary, "martian_source");
        send_from(&lab, &binary, src, 5);
        assert_eq!(
            dropped(&lab, &binary, "martian_source"),
            before + 5,
            "source {src:?}"
        );
    }
    let rules = acl(&lab, &binary);
    assert_eq!(hits(&rules, "127.0.0.0/8", None), 5, "{rules:?}");
    assert_eq!(hits(&rules, "198.18.2.1/32", None), 5, "{rules:?}");
    assert_eq!(hits(&rules, "240.0.0.0/4", None), 5, "{rules:?}");

    // The config's deny rule.
    send_from(&lab, &binary, [198, 18, 9, 7], 4);
    assert_eq!(dropped(&lab, &binary, "acl_deny"), 4);
    assert_eq!(hits(&acl(&lab, &binary), "198.18.9.0/24", None), 4);

    // An address the router gains is a martian source at once; forwarded before.
    let forwarded = ra(&lab, &binary, "forwarded_packets");
    send_from(&lab, &binary, [198, 18, 77, 1], 3);
    assert_eq!(ra(&lab, &binary, "forwarded_packets"), forwarded + 3);
    lab.router
        .ip(&["addr", "add", "198.18.77.1/32", "dev", "lo"])
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !acl(&lab, &binary)
        .iter()
        .any(|r| r["rule"]["src"] == "198.18.77.1/32")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "own address not followed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before = dropped(&lab, &binary, "martian_source");
    send_from(&lab, &binary, [198, 18, 77, 1], 3);
    assert_eq!(dropped(&lab, &binary, "martian_source"), before + 3);

    // A deny rule from the CLI stops host A's pings on its interface, and is counted.
    let out = lab
        .cli(
            &binary,
            &["acl", "add", "deny", "src", "198.18.1.2/32", "dev", "ra"],
        )
        .unwrap();
    assert!(out.contains("added deny src 198.18.1.2/32 dev ra"), "{out}");
    let before = dropped(&lab, &binary, "acl_deny");
    assert!(!ping(&lab));
    assert_eq!(dropped(&lab, &binary, "acl_deny"), before + 3);
    let rules = acl(&lab, &binary);
    assert_eq!(hits(&rules, "198.18.1.2/32", Some("ra")), 3);
    let listed = lab.cli(&binary, &["acl", "list"]).unwrap();
    assert!(
        listed.starts_with("ID") && listed.contains("deny src 198.18.1.2/32 dev ra  cli"),
        "{listed}"
    );

    // Bad rules: each refused with a message that says what, and nothing changes.
    let before = acl(&lab, &binary);
    for (args, message) in [
        (
            vec!["acl", "add", "deny", "src", "198.18.1.2/24"],
            "198.18.1.2/24 has host bits set (the prefix is 198.18.1.0/24)",
        ),
        (
            vec!["acl", "add", "deny", "src", "198.18.300.0/24"],
            "\"198.18.300.0/24\" is not an IP prefix",
        ),
        (
            vec![
                "acl",
                "add",
                "deny",
                "src",
                "198.18.4.0/24",
                "dev",
                "nosuch",
            ],
            "dev \"nosuch\" is not one of the interfaces",
        ),
        (
            vec!["acl", "add", "permit", "src", "198.18.4.0/24"],
            "unknown action \"permit\"",
        ),
        (
            vec!["acl", "add", "deny", "198.18.4.0/24"],
            "expected: deny src PREFIX [dev IFACE]",
        ),
        (
            vec!["acl", "add", "deny", "src", "198.18.1.2/32", "dev", "ra"],
            "is in the ACL already (from the CLI)",
        ),
        (
            vec!["acl", "del", "deny", "src", "198.18.9.0/24"],
            "deny src 198.18.9.0/24 comes from the config file: change it there",
        ),
        (
            vec!["acl", "del", "deny", "src", "127.0.0.0/8"],
            "comes from the source checks ([filter] martian_sources)",
        ),
        (
            vec!["acl", "del", "deny", "src", "198.18.4.0/24"],
            "deny src 198.18.4.0/24 is not in the ACL",
        ),
    ] {
        let out = lab.cli_output(&binary, &args).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(message),
            "{args:?}: {stderr}"
        );
        assert_eq!(acl(&lab, &binary).len(), before.len(), "{args:?}");
    }

    // Deleted, pings pass again.
    lab.cli(
        &binary,
        &["acl", "del", "deny", "src", "198.18.1.2/32", "dev", "ra"],
    )
    .unwrap();
    assert!(ping(&lab));
}

/// uRPF on host A's side of the router: strict, then loose after a reload. Host A's own
/// pings pass (its subnet's route leaves through ra); frames with B's addresses as source
/// (spoofed) fail strict and pass loose; a source without a route, or with a blackhole route
/// (source-based RTBH from the CLI), fails both; each drop counted in `dropped.urpf`.
#[test]
fn urpf_strict_and_loose_drop_spoofed_sources_at_ingress() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-urpf").unwrap();
    let with_urpf = |mode: &str| lab.router_config_with_urpf(mode);
    let strict = with_urpf("strict");
    assert!(strict.contains("urpf = \"strict\""), "{strict}");
    let _daemon = lab.start_dataplane(&binary, &strict, "native").unwrap();
    assert!(ping(&lab), "host A's own pings pass strict uRPF");
    assert_eq!(dropped(&lab, &binary, "urpf"), 0);

    let spoofed = [198, 18, 2, 77];
    let unrouted = [198, 19, 200, 1];
    let forwarded = || ra(&lab, &binary, "forwarded_packets");
    let before = forwarded();
    for src in [spoofed, unrouted] {
        send_from(&lab, &binary, src, 4);
    }
    assert_eq!(dropped(&lab, &binary, "urpf"), 8, "strict");
    assert_eq!(forwarded(), before);
    // `trace` shows the check, for a source given or the default one.
    let traced = |src: &str| {
        let trace = lab
            .trace(
                &binary,
                &["--in", ROUTER_A.ifname, "--dst", HOST_B.ipv4, "--src", src],
            )
            .unwrap();
        (trace["action"].clone(), trace["reason"].clone())
    };
    assert_eq!(traced("198.18.2.77"), ("drop".into(), "urpf".into()));
    assert_eq!(traced(HOST_A.ipv4), ("forward".into(), Value::Null));

    std::fs::write(lab.config_path(), with_urpf("loose")).unwrap();
    let out = lab.cli(&binary, &["reload"]).unwrap();
    assert!(out.contains("reloaded"), "{out}");
    send_from(&lab, &binary, spoofed, 4);
    assert_eq!(forwarded(), before + 4, "loose: B's subnet has a route");
    send_from(&lab, &binary, unrouted, 4);
    assert_eq!(dropped(&lab, &binary, "urpf"), 12, "loose: no route");

    // Source-based RTBH: a blackhole route for a source drops what it sends.
    let out = lab
        .cli(&binary, &["route", "add", "198.18.66.0/24", "blackhole"])
        .unwrap();
    assert!(out.starts_with("1 routes set"), "{out}");
    send_from(&lab, &binary, [198, 18, 66, 5], 3);
    assert_eq!(dropped(&lab, &binary, "urpf"), 15, "blackholed source");
    assert!(ping(&lab), "host A's pings still pass");

    // A bad setting is refused at reload, naming the place, and nothing changes.
    std::fs::write(lab.config_path(), with_urpf("sideways")).unwrap();
    let out = lab.cli_output(&binary, &["reload"]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("router.toml:") && stderr.contains("sideways"),
        "{stderr}"
    );
    let before = forwarded();
    send_from(&lab, &binary, spoofed, 2);
    assert_eq!(forwarded(), before + 2, "still loose");
}
