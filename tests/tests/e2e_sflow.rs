//! End to end, traffic visibility: frames from host A through the router to host B, sampled
//! by the XDP program and sent by the daemon as sFlow v5 to two collectors on host B: pmacct's
//! `sfacctd`, whose decoded flows and counters the test reads back, and the test's own
//! receiver, whose datagrams it decodes field by field. Also the traffic per next hop, `top`,
//! and sampling rates changed at run time.
//!
//! Needs root, iproute2 and sfacctd (pmacct).

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use pop_dataplane_tests::{
    frame::{ETH_P_IPV4, Ipv4, ethernet_tagged, mac},
    lab::{HOST_A, HOST_B, Lab, LabOptions, ROUTER_A, ROUTER_B, counter},
    sflow::{FlowSample, GenericCounters, Receiver, Sfacctd},
};
use serde_json::Value;

const RATE: u32 = 10;
/// Frames to host B, and to a blackholed prefix.
const FORWARDED: usize = 20_000;
const BLACKHOLED: usize = 4_000;
const BLACKHOLE: &str = "198.18.99.0/24";
const UDP_PORT: u16 = 9999;

/// A UDP packet from host A to `dst`, numbered `n` in its first payload bytes.
fn udp(dst: Ipv4Addr, n: u16) -> Vec<u8> {
    let src: Ipv4Addr = HOST_A.ipv4.parse().unwrap();
    let mut payload = [0u8; 200];
    payload[..2].copy_from_slice(&n.to_be_bytes());
    Ipv4::new(src.octets(), dst.octets(), 17).udp(10_000 + n % 1000, UDP_PORT, &payload)
}

fn frame(dst: Ipv4Addr, n: u16) -> Vec<u8> {
    ethernet_tagged(
        mac(ROUTER_A.mac),
        mac(HOST_A.mac),
        &[],
        ETH_P_IPV4,
        &udp(dst, n),
    )
}

fn host_b() -> Ipv4Addr {
    HOST_B.ipv4.parse().unwrap()
}

fn blackholed() -> Ipv4Addr {
    "198.18.99.7".parse().unwrap()
}

fn ifindex(lab: &Lab, name: &str) -> u32 {
    let out = lab.router.ip(&["-j", "link", "show", name]).unwrap();
    let links: Value = serde_json::from_str(&out).unwrap();
    links[0]["ifindex"].as_u64().unwrap() as u32
}

/// The kernel's counters of router interface `name`: (rx bytes, rx packets, tx bytes).
fn kernel_counters(lab: &Lab, name: &str) -> (u64, u64, u64) {
    let out = lab.router.ip(&["-s", "-j", "link", "show", name]).unwrap();
    let link: Value = serde_json::from_str::<Value>(&out).unwrap()[0].clone();
    let stats = &link["stats64"];
    let n = |v: &Value| v.as_u64().unwrap();
    (
        n(&stats["rx"]["bytes"]),
        n(&stats["rx"]["packets"]) - n(&stats["rx"]["multicast"]),
        n(&stats["tx"]["bytes"]),
    )
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `count` samples is what 1-in-RATE sampling of `frames` gives, within 4 standard
/// deviations of the binomial.
fn plausible(count: usize, frames: usize) -> bool {
    let p = 1.0 / f64::from(RATE);
    let mean = frames as f64 * p;
    let sd = (frames as f64 * p * (1.0 - p)).sqrt();
    (count as f64 - mean).abs() <= 4.0 * sd
}

fn udp_flows(flows: &[FlowSample]) -> impl Iterator<Item = &FlowSample> {
    flows
        .iter()
        .filter(|f| f.header.len() >= 38 && f.header[36..38] == UDP_PORT.to_be_bytes())
}

#[test]
fn samples_and_counters_reach_sfacctd_and_a_decoder() {
    let lab = Lab::with("pdpt-sflow", LabOptions::default()).unwrap();
    let binary = pop_dataplane_tests::dataplane_binary();
    let sfacctd = Sfacctd::start(&lab.b, lab.dir(), HOST_B.ipv4, 6343).unwrap();
    let receiver = Receiver::bind(&lab.b, &format!("{}:6344", HOST_B.ipv4)).unwrap();
    let config = format!(
        "{}\n[[route]]\nprefix = \"{BLACKHOLE}\"\ntype = \"blackhole\"\n\n\
         [sflow]\ncollectors = [\"{b}\", \"{b}:6344\"]\nsampling_rate = {RATE}\n\
         polling_interval = 2\n",
        lab.router_config(),
        b = HOST_B.ipv4,
    );
    let _daemon = lab.start_dataplane(&binary, &config, "native").unwrap();
    let (ra, rb) = (
        ifindex(&lab, ROUTER_A.ifname),
        ifindex(&lab, ROUTER_B.ifname),
    );

    let mut frames: Vec<Vec<u8>> = (0..FORWARDED as u16).map(|n| frame(host_b(), n)).collect();
    frames.extend((0..BLACKHOLED as u16).map(|n| frame(blackholed(), n)));
    for chunk in frames.chunks(1000) {
        lab.a.send_frames(HOST_A.ifname, chunk).unwrap();
    }
    let received = || counter(&lab.stats(&binary).unwrap(), ROUTER_A.ifname, "rx_packets");
    wait_for("the frames received", Duration::from_secs(10), || {
        received() >= frames.len() as u64
    });
    let rx_total = received();

    // Every sample reaches the receiver: wait until what the daemon says it read arrived.
    let status = || -> Value {
        serde_json::from_str(&lab.cli(&binary, &["sflow", "show", "--json"]).unwrap()).unwrap()
    };
    let flows = || -> Vec<FlowSample> {
        receiver
            .datagrams()
            .into_iter()
            .flat_map(|d| d.flows)
            .collect()
    };
    // The daemon drains the ring on a timer: its count must also have stopped moving.
    let mut last = 0;
    wait_for(
        "the samples at the receiver",
        Duration::from_secs(10),
        || {
            let read = status()["samples"].as_u64().unwrap();
            let settled = read == last;
            last = read;
            settled && read > 0 && flows().len() as u64 >= read
        },
    );
    assert!(receiver.errors().is_empty(), "{:?}", receiver.errors());
    let status = status();
    assert_eq!(status["send_errors"], 0, "{status}");
    assert!(
        status["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["lost"] == 0 && i["sampling_rate"] == RATE),
        "{status}"
    );
    let agent: IpAddr = ROUTER_B.ipv4.parse().unwrap();
    assert!(receiver.datagrams().iter().all(|d| d.agent == agent));

    // The decoder's view: counts within the binomial bound, every header the frame as it
    // arrived (before the router rewrote it), the route's masks and next hop.
    let flows = flows();
    let to_b: Vec<&FlowSample> = udp_flows(&flows)
        .filter(|f| f.header[30..34] == host_b().octets())
        .collect();
    let dropped: Vec<&FlowSample> = udp_flows(&flows)
        .filter(|f| f.header[30..34] == blackholed().octets())
        .collect();
    assert!(
        plausible(to_b.len(), FORWARDED),
        "{} samples of {FORWARDED}",
        to_b.len()
    );
    assert!(
        plausible(dropped.len(), BLACKHOLED),
        "{} samples of {BLACKHOLED}",
        dropped.len()
    );
    for (samples, dst, output, router) in [
        (&to_b, host_b(), rb, Some((IpAddr::V4(host_b()), 24, 24))),
        // Discarded (format 1), reason 0: net unreachable, a blackhole route's.
        (&dropped, blackholed(), 0x4000_0000, None),
    ] {
        for sample in samples {
            let n = u16::from_be_bytes([sample.header[42], sample.header[43]]);
            let sent = frame(dst, n);
            assert_eq!(sample.header, sent[..128], "sample of frame {n}");
            assert_eq!(sample.frame_length, sent.len() as u32 + 4, "with its FCS");
            assert_eq!(sample.stripped, 4);
            assert_eq!(sample.header_protocol, 1);
            assert_eq!((sample.source_type, sample.source_index), (0, ra));
            assert_eq!(sample.input, ra);
            assert_eq!(sample.output, output);
            assert_eq!(sample.sampling_rate, RATE);
            assert_eq!(sample.drops, 0);
            assert_eq!(sample.router, router);
        }
    }
    // The sample pool: the interface's received frames, rising; the last near the total.
    let from_ra: Vec<&FlowSample> = flows.iter().filter(|f| f.input == ra).collect();
    assert!(
        from_ra
            .windows(2)
            .all(|w| w[0].sample_pool <= w[1].sample_pool)
    );
    assert!(
        from_ra
            .windows(2)
            .all(|w| w[1].sequence == w[0].sequence + 1)
    );
    let last_pool = u64::from(from_ra.last().unwrap().sample_pool);
    assert!(
        last_pool <= rx_total && last_pool + 1000 >= rx_total,
        "pool {last_pool}, received {rx_total}"
    );

    // sfacctd's view, un-renormalised: one packet per sample.
    wait_for("sfacctd's flows", Duration::from_secs(10), || {
        let flows = sfacctd.flows();
        let sum = |dst: &str| -> usize {
            flows
                .iter()
                .filter(|f| f["ip_dst"] == dst && f["port_dst"] == UDP_PORT)
                .map(|f| f["packets"].as_u64().unwrap() as usize)
                .sum()
        };
        sum(HOST_B.ipv4) == to_b.len() && sum("198.18.99.7") == dropped.len()
    });
    for flow in sfacctd
        .flows()
        .iter()
        .filter(|f| f["ip_dst"] == HOST_B.ipv4 && f["port_dst"] == UDP_PORT)
    {
        assert_eq!(flow["ip_src"], HOST_A.ipv4, "{flow}");
        assert_eq!(flow["ip_proto"], "udp", "{flow}");
        assert_eq!(flow["iface_in"], ra, "{flow}");
        assert_eq!(flow["iface_out"], rb, "{flow}");
        assert_eq!(
            (&flow["mask_src"], &flow["mask_dst"]),
            (&24.into(), &24.into())
        );
        assert_eq!(flow["sampling_rate"], RATE, "{flow}");
        assert_eq!(
            flow["bytes"].as_u64(),
            flow["packets"]
                .as_u64()
                .map(|p| p * (frame(host_b(), 0).len() as u64 + 4))
        );
    }

    // Counter samples: a sample taken between two readings of the kernel's counters lies
    // between them (the traffic has stopped, so they barely move).
    let before = kernel_counters(&lab, ROUTER_A.ifname);
    let seen = receiver.datagrams().len();
    let counters = || -> Vec<GenericCounters> {
        receiver.datagrams()[seen..]
            .iter()
            .flat_map(|d| d.counters.iter().filter_map(|c| c.generic))
            .filter(|c| c.ifindex == ra)
            .collect()
    };
    wait_for("a counter sample", Duration::from_secs(10), || {
        !counters().is_empty()
    });
    let after = kernel_counters(&lab, ROUTER_A.ifname);
    let sample = counters()[0];
    assert_eq!(
        (sample.if_type, sample.status),
        (6, 3),
        "ethernet, up and up"
    );
    assert!(
        before.0 <= sample.in_octets && sample.in_octets <= after.0,
        "{before:?} {sample:?} {after:?}"
    );
    assert!(
        before.1 <= u64::from(sample.in_unicast) && u64::from(sample.in_unicast) <= after.1,
        "{before:?} {sample:?} {after:?}"
    );
    assert!(before.2 <= sample.out_octets && sample.out_octets <= after.2);
    assert!(before.1 >= FORWARDED as u64);
    wait_for("sfacctd's counter samples", Duration::from_secs(10), || {
        sfacctd
            .counters()
            .iter()
            .any(|c| c["ifIndex"] == ra && c["ifInUcastPkts"].as_u64() >= Some(before.1))
    });

    // Traffic per next hop: every forwarded frame, as sent.
    let stats = lab.stats(&binary).unwrap();
    let host_b_hop = stats["nexthops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "host-b")
        .unwrap_or_else(|| panic!("no next hop host-b in {stats}"))
        .clone();
    assert_eq!(host_b_hop["tx_packets"], FORWARDED, "{stats}");
    assert_eq!(
        host_b_hop["tx_bytes"],
        FORWARDED as u64 * frame(host_b(), 0).len() as u64
    );
}

#[test]
fn top_shows_the_traffic_and_rates_change_at_run_time() {
    let lab = Lab::with("pdpt-top", LabOptions::default()).unwrap();
    let binary = pop_dataplane_tests::dataplane_binary();
    let config = lab.router_config().replacen(
        &format!("name = \"{}\"\n", ROUTER_A.ifname),
        &format!("name = \"{}\"\nsampling_rate = 4\n", ROUTER_A.ifname),
        1,
    );
    let _daemon = lab.start_dataplane(&binary, &config, "native").unwrap();
    let frames: Vec<Vec<u8>> = (0..2000u16).map(|n| frame(host_b(), n)).collect();
    let sent = Instant::now();
    for _ in 0..5 {
        lab.a.send_frames(HOST_A.ifname, &frames).unwrap();
    }
    let elapsed = sent.elapsed().as_secs_f64();
    // Every sample taken: the daemon drains the ring on a timer, so the count read must
    // have stopped moving.
    let read = || -> u64 {
        let status: Value =
            serde_json::from_str(&lab.cli(&binary, &["sflow", "show", "--json"]).unwrap()).unwrap();
        status["samples"].as_u64().unwrap()
    };
    let mut last = read();
    wait_for("the samples drained", Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(50));
        let now = read();
        let settled = now == last && now > 0;
        last = now;
        settled
    });

    let top: Value = serde_json::from_str(
        &lab.cli(&binary, &["top", "--json", "--count", "1"])
            .unwrap(),
    )
    .unwrap();
    let first = |table: &str| top[table][0]["key"].clone();
    assert_eq!(first("destinations"), "198.18.2.0/24", "{top}");
    assert_eq!(first("sources"), "198.18.1.0/24", "{top}");
    assert_eq!(first("nexthops"), "host-b", "{top}");
    assert_eq!(first("protocols"), "udp", "{top}");
    // 10,000 frames in the window: the estimate is samples x 4 over the window.
    let samples = top["samples"].as_f64().unwrap();
    assert!(
        (samples * 4.0 - 10_000.0).abs() <= 4.0 * (10_000.0f64 * 0.25 * 0.75).sqrt() * 4.0,
        "{samples} samples of 10,000 frames at 1-in-4: {top}"
    );
    let pps = top["destinations"][0]["packets_per_second"]
        .as_f64()
        .unwrap();
    let window = top["window_seconds"].as_f64().unwrap();
    assert!((pps * window - samples * 4.0).abs() < 1.0, "{top}");
    assert!(window >= 1.0 && window >= elapsed.min(5.0) - 1.0, "{top}");

    // Off at run time: no more samples; a bad rate or interface changes nothing.
    let out = lab.cli(&binary, &["sflow", "rate", "0"]).unwrap();
    assert!(out.contains("not sampled"), "{out}");
    for (args, says) in [
        (
            &["sflow", "rate", "0", "dev", "nosuch"][..],
            "dev \"nosuch\" is not one of",
        ),
        (&["sflow", "rate", "16777217"][..], "outside 1-16777216"),
    ] {
        let out = lab.cli_output(&binary, args).unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
    let read = || -> u64 {
        let status: Value =
            serde_json::from_str(&lab.cli(&binary, &["sflow", "show", "--json"]).unwrap()).unwrap();
        status["samples"].as_u64().unwrap()
    };
    let before = read();
    lab.a.send_frames(HOST_A.ifname, &frames).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(read(), before, "sampled after `sflow rate 0`");
    // And on again, on one interface.
    lab.cli(&binary, &["sflow", "rate", "1", "dev", ROUTER_A.ifname])
        .unwrap();
    lab.a.send_frames(HOST_A.ifname, &frames).unwrap();
    wait_for("1-in-1 samples", Duration::from_secs(5), || {
        read() >= before + frames.len() as u64
    });
}
