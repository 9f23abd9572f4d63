//! End to end, flow rules: real frames from host A through the router to host B, the rules
//! from the CLI and from FlowSpec over a real BGP session (GoBGP announcing to ExaBGP on the
//! router, which runs `pop-dataplane flowspec-feed`); every verdict proved by the XDP
//! counters.
//!
//! Needs root, iproute2, ping, tcpdump, exabgp and gobgpd.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use pop_dataplane_tests::{
    flowspec::{ExaBgp, GoBgp},
    frame::{ETH_P_IPV4, Ipv4, ethernet_tagged, internet_checksum, mac},
    lab::{HOST_A, HOST_B, Lab, LabOptions, ROUTER_A, ROUTER_B, counter},
    traffic::{Receivers, Sender},
};
use serde_json::Value;

fn ra(lab: &Lab, binary: &Path, field: &str) -> u64 {
    counter(&lab.stats(binary).unwrap(), ROUTER_A.ifname, field)
}

/// A UDP packet from host A to host B's `port`.
fn udp_to_b(port: u16) -> Vec<u8> {
    let src: Ipv4Addr = HOST_A.ipv4.parse().unwrap();
    let dst: Ipv4Addr = HOST_B.ipv4.parse().unwrap();
    Ipv4::new(src.octets(), dst.octets(), 17).udp(4000, port, &[0u8; 18])
}

/// `count` copies of `packet` sent raw from host A to the router; returns once the program
/// has seen them all.
fn send(lab: &Lab, binary: &Path, packet: &[u8], count: usize) {
    let frame = ethernet_tagged(mac(ROUTER_A.mac), mac(HOST_A.mac), &[], ETH_P_IPV4, packet);
    let before = ra(lab, binary, "rx_packets");
    for chunk in vec![frame; count].chunks(1000) {
        lab.a.send_frames(HOST_A.ifname, chunk).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ra(lab, binary, "rx_packets") < before + count as u64 {
        assert!(
            Instant::now() < deadline,
            "the program did not see the frames"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `pop-dataplane WORDS` on the router (words split at spaces); its output.
fn cli(lab: &Lab, binary: &Path, words: &str) -> String {
    let words: Vec<&str> = words.split(' ').collect();
    lab.cli(binary, &words).unwrap()
}

fn flows(lab: &Lab, binary: &Path) -> Vec<Value> {
    let out = lab.cli(binary, &["flow", "list", "--json"]).unwrap();
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn ping(lab: &Lab) -> bool {
    lab.a
        .exec("ping", &["-c", "3", "-i", "0.05", "-W", "1", HOST_B.ipv4])
        .is_ok_and(|out| out.contains("3 received"))
}

#[test]
fn flow_rules_drop_a_flood_limit_a_rate_and_remark_dscp() {
    let (binary, lab, _daemon) = Lab::running("pdpt-flow", LabOptions::default()).unwrap();
    assert!(ping(&lab));

    // A flood to B's UDP port 9 is dropped in XDP while pings to B go through beside it.
    let out = cli(
        &lab,
        &binary,
        "flow add destination 198.18.2.2/32 protocol =udp destination-port =9 then drop",
    );
    assert!(out.contains("added"), "{out}");
    let forwarded = ra(&lab, &binary, "forwarded_packets");
    std::thread::scope(|scope| {
        let pinger = scope.spawn(|| ping(&lab));
        send(&lab, &binary, &udp_to_b(9), 20_000);
        assert!(pinger.join().unwrap(), "pings beside the flood");
    });
    assert_eq!(ra(&lab, &binary, "dropped.flow"), 20_000);
    let rules = flows(&lab, &binary);
    assert_eq!(rules[0]["origin"], "cli");
    assert_eq!(rules[0]["dropped_packets"], 20_000);
    assert_eq!(rules[0]["matched_packets"], 20_000);
    // What was forwarded meanwhile: the pings (and ARP goes to the kernel).
    assert!(ra(&lab, &binary, "forwarded_packets") - forwarded < 20);

    // A rate limit: 1,000 packets a second, offered 10,000 for 3 s, measured at B.
    let out = cli(
        &lab,
        &binary,
        "flow add destination 198.18.2.2/32 protocol =udp destination-port =5001 then rate-limit 1000 packets",
    );
    assert!(out.contains("added"), "{out}");
    let receivers = Receivers::start(&lab.b, &[HOST_B.ifname], 5001).unwrap();
    let sender = Sender::start(
        &lab.a,
        HOST_A.ipv4.parse().unwrap(),
        vec![(HOST_B.ipv4.parse().unwrap(), 6001)],
        5001,
        10_000,
    )
    .unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let sent = sender.stop().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    let received = receivers.stop().unwrap().len() as f64;
    let rate = received / elapsed;
    println!(
        "rate limit 1000/s: offered {:.0}/s, passed {rate:.0}/s",
        sent as f64 / elapsed
    );
    assert!(
        sent as f64 / elapsed > 9_000.0,
        "offered {sent} in {elapsed:.2} s"
    );
    assert!((900.0..=1100.0).contains(&rate), "passed {rate:.0}/s");
    assert!(ra(&lab, &binary, "dropped.flow_rate_limit") > 20_000);

    // A DSCP remark, checked byte by byte in what B receives.
    let out = cli(
        &lab,
        &binary,
        "flow add destination 198.18.2.2/32 protocol =udp destination-port =7777 then remark 46",
    );
    assert!(out.contains("added"), "{out}");
    let pcap = lab.dir().join("remark.pcap");
    let mut tcpdump = lab
        .b
        .command("tcpdump")
        .args(["-i", HOST_B.ifname, "-Q", "in", "-U", "-c", "1", "-w"])
        .arg(&pcap)
        .args(["udp", "port", "7777"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead as _;
        let mut stderr = std::io::BufReader::new(tcpdump.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "tcpdump did not start"
            );
        }
    }
    let packet = udp_to_b(7777);
    send(&lab, &binary, &packet, 1);
    assert!(tcpdump.wait().unwrap().success());
    let captured = std::fs::read(&pcap).unwrap();
    // The global header (24 bytes) and the record's (16), then the frame.
    let frame = &captured[40..];
    let mut expected_ip = packet.clone();
    expected_ip[1] = 46 << 2;
    expected_ip[8] -= 1;
    expected_ip[10..12].copy_from_slice(&[0, 0]);
    let check = internet_checksum(&expected_ip[..20]);
    expected_ip[10..12].copy_from_slice(&check.to_be_bytes());
    let expected = ethernet_tagged(
        mac(HOST_B.mac),
        mac(ROUTER_B.mac),
        &[],
        ETH_P_IPV4,
        &expected_ip,
    );
    assert_eq!(frame, expected.as_slice());

    // Deleted, the drop rule lets port 9 through again; bad rules are refused.
    let out = cli(
        &lab,
        &binary,
        "flow del destination 198.18.2.2/32 protocol =udp destination-port =9 then drop",
    );
    assert!(out.contains("deleted"), "{out}");
    let forwarded = ra(&lab, &binary, "forwarded_packets");
    send(&lab, &binary, &udp_to_b(9), 10);
    assert_eq!(ra(&lab, &binary, "forwarded_packets"), forwarded + 10);
    let out = lab
        .cli_output(
            &binary,
            &[
                "flow",
                "add",
                "destination",
                "198.18.2.2/32",
                "dscp",
                "=64",
                "then",
                "drop",
            ],
        )
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dscp \"=64\": 64 is out of range (0-63)"),
        "{stderr}"
    );
    assert_eq!(flows(&lab, &binary).len(), 2);
}

#[test]
fn flowspec_routes_follow_a_bgp_session() {
    let (binary, lab, _daemon) = Lab::running("pdpt-fspec", LabOptions::default()).unwrap();
    let feed = format!(
        "{} --pin-dir {} --run-dir {} flowspec-feed",
        binary.display(),
        lab.pin_dir().display(),
        lab.run_dir().display()
    );
    let feed: Vec<&str> = feed.split(' ').collect();
    // ExaBGP runs in the router's namespace (`ip netns exec`); the feed it starts reaches
    // the daemon's socket in the run directory.
    let exabgp = ExaBgp::start(&lab.router, lab.dir(), ROUTER_B.ipv4, HOST_B.ipv4, &feed).unwrap();
    let mut gobgp = GoBgp::start(&lab.b, lab.dir(), HOST_B.ipv4, ROUTER_B.ipv4).unwrap();
    gobgp
        .wait_established(Duration::from_secs(60))
        .unwrap_or_else(|err| panic!("{err}\n{}", exabgp.log()));
    let wait_rules = |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rules = flows(&lab, &binary);
            if rules.len() == count {
                return rules;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} rules, have {rules:?}\n{}",
                exabgp.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let announce = |verb: &str| {
        gobgp
            .gobgp(&[
                "global",
                "rib",
                "-a",
                "ipv4-flowspec",
                verb,
                "match",
                "destination",
                "198.18.2.2/32",
                "protocol",
                "udp",
                "destination-port",
                "==9",
                "then",
                "discard",
            ])
            .unwrap();
    };
    announce("add");
    gobgp
        .gobgp(&[
            "global",
            "rib",
            "-a",
            "ipv4-flowspec",
            "add",
            "match",
            "destination",
            "198.18.2.0/24",
            "protocol",
            "tcp",
            "then",
            "rate-limit",
            "125000",
        ])
        .unwrap();
    let rules = wait_rules(2);
    let texts: Vec<&str> = rules.iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        [
            "destination 198.18.2.2/32 protocol =udp destination-port =9 then drop",
            "destination 198.18.2.0/24 protocol =tcp then rate-limit 125000 bytes",
        ]
    );
    assert_eq!(rules[0]["origin"]["bgp"], HOST_B.ipv4);
    // A route the dataplane cannot carry out (a redirect) is refused, and logged; the
    // session's other rules stay.
    gobgp
        .gobgp(&[
            "global",
            "rib",
            "-a",
            "ipv4-flowspec",
            "add",
            "match",
            "destination",
            "198.18.2.3/32",
            "then",
            "redirect",
            "65000:1",
        ])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !exabgp.log().contains("refused") {
        assert!(Instant::now() < deadline, "{}", exabgp.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        exabgp
            .log()
            .contains("unsupported action \"redirect:65000:1\""),
        "{}",
        exabgp.log()
    );
    assert_eq!(flows(&lab, &binary).len(), 2);
    send(&lab, &binary, &udp_to_b(9), 100);
    assert_eq!(ra(&lab, &binary, "dropped.flow"), 100);

    // Withdrawn, the rule goes; traffic flows again.
    announce("del");
    wait_rules(1);
    let forwarded = ra(&lab, &binary, "forwarded_packets");
    send(&lab, &binary, &udp_to_b(9), 100);
    assert_eq!(ra(&lab, &binary, "forwarded_packets"), forwarded + 100);

    // The session going down takes its rules with it.
    announce("add");
    wait_rules(2);
    gobgp.kill();
    wait_rules(0);
    assert!(
        exabgp
            .log()
            .contains("flowspec-feed: session 198.18.2.2: 0 rules"),
        "{}",
        exabgp.log()
    );
    send(&lab, &binary, &udp_to_b(9), 10);
    assert_eq!(ra(&lab, &binary, "dropped.flow"), 100);
}
