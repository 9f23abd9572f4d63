//! End to end through network namespaces with real tools: IPv6, a VLAN trunk (802.1Q and
//! QinQ), ECMP over two links, traceroute answered by the kernel, jumbo frames, the MTU
//! hand-off, `pop-dataplane trace`, and the router's addresses followed as they change.
//!
//! Needs root, iproute2, ethtool, iperf3, ping, traceroute and tcpdump.

use std::{
    io::{BufRead as _, BufReader},
    net::UdpSocket,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use pop_dataplane_tests::{
    dataplane_binary,
    frame::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, IPPROTO_ICMP, Ipv4, ethernet_tagged, mac},
    lab::{B_SERVICE_V4, HOST_A, HOST_B, Lab, LabOptions, ROUTER_A, ROUTER_B, ROUTER_C, counter},
};

#[test]
fn ipv6_ping_and_tcp_are_forwarded() {
    let (binary, lab, _daemon) = Lab::running(
        "pdpt-route",
        LabOptions {
            ipv6: true,
            second_link: false,
        },
    )
    .unwrap();
    let before = lab.stats(&binary).unwrap();

    let ping = lab
        .a
        .exec(
            "ping",
            &["-6", "-c", "20", "-i", "0.01", "-W", "2", HOST_B.ipv6],
        )
        .unwrap();
    assert!(
        ping.contains("20 packets transmitted, 20 received"),
        "{ping}"
    );
    let after = lab.stats(&binary).unwrap();
    // Nothing but the echoes is forwarded (router solicitations and MLD go to the kernel).
    let d = |ifname, field| counter(&after, ifname, field) - counter(&before, ifname, field);
    assert_eq!(d(ROUTER_A.ifname, "forwarded_packets"), 20);
    assert_eq!(d(ROUTER_B.ifname, "forwarded_packets"), 20);
    assert_eq!(d(ROUTER_B.ifname, "tx_packets"), 20);

    let tcp = lab.iperf3_to(HOST_B.ipv6, &["-t", "1"]).unwrap();
    let bytes = tcp["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(bytes > 1_000_000, "TCP over IPv6 moved only {bytes} bytes");
    let end = lab.stats(&binary).unwrap();
    assert!(
        counter(&end, ROUTER_A.ifname, "forwarded_packets")
            > counter(&after, ROUTER_A.ifname, "forwarded_packets") + 500
    );
    assert_eq!(counter(&end, ROUTER_A.ifname, "dropped_packets"), 0);
}

#[test]
fn a_vlan_trunk_with_802_1q_and_qinq() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-route").unwrap();
    // Host A's side of the trunk carries VLAN 100 (198.18.3.0/24) and QinQ 200/300
    // (198.18.4.0/24). This kernel has no 802.1Q devices, so the router's sub-interfaces are
    // defined in the config and host A's tagged traffic is written raw and read by tcpdump.
    let config = format!(
        r#"{}
[[interface]]
name = "ra.100"
port = "ra"
vlan = 100

[[interface]]
name = "ra.qinq"
port = "ra"
vlan = [200, 300]

[[nexthop]]
name = "a-100"
dev = "ra.100"
lladdr = "{mac}"

[[nexthop]]
name = "a-qinq"
dev = "ra.qinq"
lladdr = "{mac}"

[[route]]
prefix = "198.18.3.0/24"
nexthop = "a-100"

[[route]]
prefix = "198.18.4.0/24"
nexthop = "a-qinq"
"#,
        lab.router_config(),
        mac = HOST_A.mac
    );
    let _daemon = lab.start_dataplane(&binary, &config, "native").unwrap();

    for (tags, src, interface, filter) in [
        (
            vec![(ETH_P_8021Q, 100u16)],
            [198, 18, 3, 2],
            "ra.100",
            "vlan 100 and icmp",
        ),
        (
            vec![(ETH_P_8021AD, 200), (ETH_P_8021Q, 300)],
            [198, 18, 4, 2],
            "ra.qinq",
            "vlan 200 and vlan 300 and icmp",
        ),
    ] {
        const N: u16 = 10;
        let before = lab.stats(&binary).unwrap();
        // tcpdump on host A waits for the N echo replies, tagged.
        let mut tcpdump = lab
            .a
            .command("tcpdump")
            .args([
                "-i",
                HOST_A.ifname,
                "-Q",
                "in",
                "-nn",
                "-e",
                "-l",
                "-c",
                &N.to_string(),
                filter,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(tcpdump.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "tcpdump did not start"
            );
        }

        let frames: Vec<Vec<u8>> = (1..=N)
            .map(|seq| {
                let packet =
                    Ipv4::new(src, [198, 18, 2, 2], IPPROTO_ICMP).icmp_echo(7, seq, b"trunk");
                ethernet_tagged(
                    mac(ROUTER_A.mac),
                    mac(HOST_A.mac),
                    &tags,
                    ETH_P_IPV4,
                    &packet,
                )
            })
            .collect();
        lab.a.send_frames(HOST_A.ifname, &frames).unwrap();

        let deadline = Instant::now() + Duration::from_secs(10);
        while tcpdump.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "tcpdump saw fewer than {N} tagged replies ({filter})"
            );
            thread::sleep(Duration::from_millis(20));
        }
        let mut captured = String::new();
        std::io::Read::read_to_string(&mut tcpdump.stdout.take().unwrap(), &mut captured).unwrap();
        let replies = captured
            .lines()
            .filter(|l| l.contains("198.18.2.2 >") && l.contains("ICMP echo reply"))
            .count();
        assert_eq!(replies, usize::from(N), "{captured}");

        let after = lab.stats(&binary).unwrap();
        let d = |ifname, field| counter(&after, ifname, field) - counter(&before, ifname, field);
        assert_eq!(d(interface, "rx_packets"), u64::from(N), "{interface} rx");
        assert_eq!(
            d(interface, "forwarded_packets"),
            u64::from(N),
            "{interface} forwarded"
        );
        assert_eq!(
            d(interface, "tx_packets"),
            u64::from(N),
            "{interface} tx (replies, tagged)"
        );
        assert_eq!(
            d(ROUTER_B.ifname, "tx_packets"),
            u64::from(N),
            "requests out of rb, untagged"
        );
    }
}

#[test]
fn ecmp_spreads_flows_over_two_links_and_keeps_each_on_one() {
    let (binary, lab, _daemon) = Lab::running(
        "pdpt-route",
        LabOptions {
            ipv6: false,
            second_link: true,
        },
    )
    .unwrap();

    const FLOWS: u16 = 48;
    const PER_FLOW: u64 = 5;
    let mut on_b = 0;
    let mut on_b2 = 0;
    for flow in 0..FLOWS {
        let before = lab.stats(&binary).unwrap();
        // One flow: one source port, PER_FLOW datagrams, sent from inside host A.
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    lab.a.enter_thread().unwrap();
                    let socket = UdpSocket::bind((HOST_A.ipv4, 20_000 + flow)).unwrap();
                    for _ in 0..PER_FLOW {
                        socket.send_to(b"ecmp", (B_SERVICE_V4, 9)).unwrap();
                    }
                })
                .join()
                .unwrap();
        });
        thread::sleep(Duration::from_millis(20));
        let after = lab.stats(&binary).unwrap();
        let d =
            |ifname| counter(&after, ifname, "tx_packets") - counter(&before, ifname, "tx_packets");
        match (d(ROUTER_B.ifname), d(ROUTER_C.ifname)) {
            (PER_FLOW, 0) => on_b += 1,
            (0, PER_FLOW) => on_b2 += 1,
            split => panic!("flow {flow} split over both links: {split:?}"),
        }
    }
    assert!(
        on_b >= FLOWS / 5 && on_b2 >= FLOWS / 5,
        "{on_b} flows on rb, {on_b2} on rc"
    );

    // trace shows the group and its choice, from the loaded program.
    let mut egresses = std::collections::BTreeSet::new();
    for sport in 0..16u16 {
        let sport = (30_000 + sport).to_string();
        let t = lab
            .trace(
                &binary,
                &["--in", "ra", "--dst", B_SERVICE_V4, "--sport", &sport],
            )
            .unwrap();
        assert_eq!(t["action"], "forward", "{t}");
        assert_eq!(t["route"]["prefix"], format!("{B_SERVICE_V4}/32"));
        assert!(
            t["route"]["target"].as_str().unwrap().starts_with("group "),
            "{t}"
        );
        assert!(t["route"]["hash"].is_u64(), "{t}");
        egresses.insert(t["nexthop"]["egress"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        egresses,
        [ROUTER_B.ifname.to_owned(), ROUTER_C.ifname.to_owned()].into(),
        "both members appear in traces"
    );
}

#[test]
fn traceroute_shows_the_router_answered_by_the_kernel() {
    let binary = dataplane_binary();
    let lab = Lab::with(
        "pdpt-route",
        LabOptions {
            ipv6: true,
            second_link: false,
        },
    )
    .unwrap();
    // The kernel is the slow path: it answers TTL expiry only with forwarding on.
    lab.set_kernel_forwarding(true).unwrap();
    let _daemon = lab
        .start_dataplane(&binary, &lab.router_config(), "native")
        .unwrap();
    let before = lab.stats(&binary).unwrap();

    for (args, router, host) in [
        (
            vec!["-n", "-q", "1", "-w", "2", HOST_B.ipv4],
            ROUTER_A.ipv4,
            HOST_B.ipv4,
        ),
        (
            vec!["-6", "-n", "-q", "1", "-w", "2", HOST_B.ipv6],
            ROUTER_A.ipv6,
            HOST_B.ipv6,
        ),
    ] {
        let out = lab.a.exec("traceroute", &args).unwrap();
        let hops: Vec<&str> = out.lines().skip(1).collect();
        assert!(hops.len() == 2, "two hops expected:\n{out}");
        assert!(
            hops[0].split_whitespace().nth(1) == Some(router),
            "hop 1 is the router:\n{out}"
        );
        assert!(
            hops[1].split_whitespace().nth(1) == Some(host),
            "hop 2 is host B:\n{out}"
        );
    }
    let after = lab.stats(&binary).unwrap();
    let d =
        |field| counter(&after, ROUTER_A.ifname, field) - counter(&before, ROUTER_A.ifname, field);
    assert!(
        d("to_kernel.ttl_exceeded") >= 2,
        "TTL-1 probes went to the kernel"
    );
    assert!(
        d("forwarded_packets") >= 2,
        "the other probes were forwarded by XDP"
    );
}

#[test]
fn jumbo_frames_are_forwarded_and_too_big_goes_to_the_kernel() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-route").unwrap();
    for (ns, ifname) in [
        (&lab.a, HOST_A.ifname),
        (&lab.router, ROUTER_A.ifname),
        (&lab.router, ROUTER_B.ifname),
        (&lab.b, HOST_B.ifname),
    ] {
        ns.ip(&["link", "set", ifname, "mtu", "9000"]).unwrap();
    }
    lab.set_kernel_forwarding(true).unwrap();
    {
        // Native XDP on a 9000-byte veth needs a multi-buffer (frags) program.
        let _daemon = lab
            .start_dataplane(&binary, &lab.router_config(), "native")
            .unwrap();
        let before = lab.stats(&binary).unwrap();
        let ping = lab
            .a
            .exec(
                "ping",
                &[
                    "-c",
                    "5",
                    "-i",
                    "0.05",
                    "-M",
                    "do",
                    "-s",
                    "8972",
                    "-W",
                    "2",
                    HOST_B.ipv4,
                ],
            )
            .unwrap();
        assert!(ping.contains("5 packets transmitted, 5 received"), "{ping}");
        let after = lab.stats(&binary).unwrap();
        assert_eq!(
            counter(&after, ROUTER_A.ifname, "forwarded_packets")
                - counter(&before, ROUTER_A.ifname, "forwarded_packets"),
            5
        );
        assert_eq!(
            counter(&after, ROUTER_A.ifname, "forwarded_bytes")
                - counter(&before, ROUTER_A.ifname, "forwarded_bytes"),
            5 * 9014
        );
    }

    // B's side back to 1500: a 4000-byte packet with DF set goes to the kernel, which
    // answers "fragmentation needed".
    lab.router
        .ip(&["link", "set", ROUTER_B.ifname, "mtu", "1500"])
        .unwrap();
    let _daemon = lab
        .start_dataplane(&binary, &lab.router_config(), "native")
        .unwrap();
    let before = lab.stats(&binary).unwrap();
    let out = lab
        .a
        .command("ping")
        .args(["-c", "1", "-M", "do", "-s", "4000", "-W", "2", HOST_B.ipv4])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Frag needed") && text.contains("mtu = 1500"),
        "{text}"
    );
    let after = lab.stats(&binary).unwrap();
    assert_eq!(
        counter(&after, ROUTER_A.ifname, "to_kernel.mtu_exceeded")
            - counter(&before, ROUTER_A.ifname, "to_kernel.mtu_exceeded"),
        1
    );
}

#[test]
fn trace_answers_from_the_loaded_program_and_addresses_are_followed() {
    let (binary, lab, _daemon) = Lab::running(
        "pdpt-route",
        LabOptions {
            ipv6: true,
            second_link: false,
        },
    )
    .unwrap();
    let before = lab.stats(&binary).unwrap();

    let t = lab
        .trace(&binary, &["--in", "ra", "--dst", HOST_B.ipv4])
        .unwrap();
    assert_eq!(t["action"], "forward");
    assert_eq!(t["route"]["prefix"], "198.18.2.0/24");
    assert_eq!(t["nexthop"]["egress"], ROUTER_B.ifname);
    assert_eq!(t["rewritten"]["dst_mac"], HOST_B.mac);
    assert_eq!(t["rewritten"]["src_mac"], ROUTER_B.mac);
    assert_eq!(t["rewritten"]["ttl"], 63);

    let t = lab
        .trace(
            &binary,
            &["--in", "ra", "--dst", HOST_B.ipv6, "--proto", "tcp"],
        )
        .unwrap();
    assert_eq!(t["action"], "forward");
    assert_eq!(t["route"]["prefix"], "2001:2:0:2::/64");
    assert_eq!(t["rewritten"]["ttl"], 63);

    let t = lab
        .trace(&binary, &["--in", "ra", "--dst", "198.19.9.9"])
        .unwrap();
    assert_eq!(
        (t["action"].as_str(), t["reason"].as_str()),
        (Some("to_kernel"), Some("no_route"))
    );
    let t = lab
        .trace(&binary, &["--in", "ra", "--dst", HOST_B.ipv4, "--ttl", "1"])
        .unwrap();
    assert_eq!(t["reason"], "ttl_exceeded");
    let t = lab
        .trace(
            &binary,
            &["--in", "ra", "--dst", ROUTER_B.ipv4, "--proto", "icmp"],
        )
        .unwrap();
    assert_eq!(
        (t["reason"].as_str(), t["route"]["target"].as_str()),
        (Some("local"), Some("local"))
    );

    // Traces are not traffic: none of their outcomes was counted. (rx is not compared: the
    // hosts' IPv6 chatter arrives meanwhile.)
    let after = lab.stats(&binary).unwrap();
    for field in [
        "forwarded_packets",
        "to_kernel.no_route",
        "to_kernel.ttl_exceeded",
        "to_kernel.local",
    ] {
        assert_eq!(
            counter(&after, ROUTER_A.ifname, field),
            counter(&before, ROUTER_A.ifname, field),
            "{field}"
        );
    }

    // A new address on the router takes its packets to the kernel; removed, they are
    // forwarded again.
    let extra = "198.18.2.77";
    let wait_for = |reason: Option<&str>| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let t = lab.trace(&binary, &["--in", "ra", "--dst", extra]).unwrap();
            if t["reason"].as_str() == reason {
                return;
            }
            assert!(Instant::now() < deadline, "still {t} after 5 s");
            thread::sleep(Duration::from_millis(50));
        }
    };
    lab.router
        .ip(&[
            "addr",
            "add",
            &format!("{extra}/32"),
            "dev",
            ROUTER_B.ifname,
        ])
        .unwrap();
    wait_for(Some("local"));
    lab.router
        .ip(&[
            "addr",
            "del",
            &format!("{extra}/32"),
            "dev",
            ROUTER_B.ifname,
        ])
        .unwrap();
    wait_for(None);
}
