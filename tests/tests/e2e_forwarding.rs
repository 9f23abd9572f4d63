//! End to end: the `pop-dataplane` binary routes real traffic (ping, iperf3 TCP and UDP)
//! between two hosts through a router namespace whose kernel forwarding is off, in native and
//! in generic XDP mode, and its counters match the traffic exactly.
//!
//! Needs root, iproute2, ethtool, iperf3 and ping (`cargo xtask test` installs them).

use std::{path::Path, thread, time::Duration};

use pop_dataplane_tests::{
    dataplane_binary,
    lab::{HOST_A, HOST_B, Lab, LabOptions, ROUTER_A, ROUTER_B},
};
use serde_json::Value;

/// Every counter that matters, before or after some traffic.
struct Snapshot {
    /// Kernel packet counters of the hosts' ports: (rx, tx).
    a0: (u64, u64),
    b0: (u64, u64),
    stats: Value,
}

impl Snapshot {
    fn take(lab: &Lab, binary: &Path) -> Self {
        Self {
            a0: lab.a.link_packets(HOST_A.ifname).unwrap(),
            b0: lab.b.link_packets(HOST_B.ifname).unwrap(),
            stats: lab.stats(binary).unwrap(),
        }
    }

    fn counter(&self, ifname: &str, field: &str) -> u64 {
        let interface = self.stats["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == ifname)
            .unwrap_or_else(|| panic!("no {ifname} in {}", self.stats));
        let mut value = interface;
        for key in field.split('.') {
            value = &value[key];
        }
        value
            .as_u64()
            .unwrap_or_else(|| panic!("{ifname}.{field} in {interface}"))
    }
}

/// How much `field` of `ifname` grew between two snapshots.
fn delta(before: &Snapshot, after: &Snapshot, ifname: &str, field: &str) -> u64 {
    after.counter(ifname, field) - before.counter(ifname, field)
}

fn forwards_real_traffic(xdp_mode: &str) {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-e2e").unwrap();
    let daemon = lab
        .start_dataplane(&binary, &lab.router_config(), xdp_mode)
        .unwrap();
    let before = Snapshot::take(&lab, &binary);

    let ping = lab
        .a
        .exec("ping", &["-c", "20", "-i", "0.01", "-W", "2", HOST_B.ipv4])
        .unwrap();
    assert!(
        ping.contains("20 packets transmitted, 20 received"),
        "{ping}"
    );

    let tcp = lab.iperf3(&["-t", "1"]).unwrap();
    let tcp_bytes = tcp["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(tcp_bytes > 1_000_000, "TCP moved only {tcp_bytes} bytes");

    let udp = lab
        .iperf3(&["-u", "-b", "100M", "-l", "1000", "-t", "1"])
        .unwrap();
    let udp_sent = udp["end"]["sum"]["packets"].as_u64().unwrap();
    assert!(udp_sent > 1000, "UDP sent only {udp_sent} datagrams");

    // Let the last frames drain.
    thread::sleep(Duration::from_millis(300));
    let after = Snapshot::take(&lab, &binary);
    let d = |ifname, field| delta(&before, &after, ifname, field);
    let (ra, rb) = (ROUTER_A.ifname, ROUTER_B.ifname);

    // A -> B: every frame A sent reached the program on ra and was forwarded out of rb,
    // and every frame B received came from there.
    let a_sent = after.a0.1 - before.a0.1;
    let b_received = after.b0.0 - before.b0.0;
    assert_eq!(d(ra, "rx_packets"), a_sent, "ra saw every frame A sent");
    assert_eq!(
        d(ra, "forwarded_packets"),
        a_sent,
        "ra forwarded all of them"
    );
    assert_eq!(d(rb, "tx_packets"), a_sent, "out of rb");
    assert_eq!(b_received, a_sent, "B received them all");
    assert!(
        a_sent >= 20 + udp_sent,
        "ping and UDP alone are {}",
        20 + udp_sent
    );

    // B -> A, the same.
    let b_sent = after.b0.1 - before.b0.1;
    let a_received = after.a0.0 - before.a0.0;
    assert_eq!(d(rb, "rx_packets"), b_sent);
    assert_eq!(d(rb, "forwarded_packets"), b_sent);
    assert_eq!(d(ra, "tx_packets"), b_sent);
    assert_eq!(a_received, b_sent);
    assert_eq!(d(ra, "forwarded_bytes"), d(rb, "tx_bytes"));
    assert_eq!(d(rb, "forwarded_bytes"), d(ra, "tx_bytes"));

    for ifname in [ra, rb] {
        assert_eq!(
            d(ifname, "to_kernel_packets"),
            0,
            "{ifname}: nothing for the kernel"
        );
        assert_eq!(d(ifname, "dropped_packets"), 0, "{ifname}: nothing dropped");
    }
    drop(daemon);
}

#[test]
fn forwards_ping_tcp_udp_in_native_mode() {
    forwards_real_traffic("native");
}

#[test]
fn forwards_ping_tcp_udp_in_generic_mode() {
    forwards_real_traffic("generic");
}

#[test]
fn the_kernel_still_answers_for_the_router() {
    let (binary, lab, _daemon) = Lab::running("pdpt-e2e", LabOptions::default()).unwrap();
    let before = Snapshot::take(&lab, &binary);

    // The router's own address, inside a routed subnet: the kernel answers, after resolving
    // A with ARP (whose reply the program hands to the kernel too).
    let ping = lab
        .a
        .exec("ping", &["-c", "3", "-i", "0.05", "-W", "2", ROUTER_A.ipv4])
        .unwrap();
    assert!(ping.contains("3 packets transmitted, 3 received"), "{ping}");
    let after = Snapshot::take(&lab, &binary);
    assert_eq!(
        delta(&before, &after, ROUTER_A.ifname, "to_kernel.local"),
        3
    );
    assert!(
        delta(&before, &after, ROUTER_A.ifname, "to_kernel.non_ip") >= 1,
        "ARP reply"
    );

    // TTL 1: the kernel answers time exceeded, which Linux does only as a router: with
    // forwarding on. The kernel is the slow path; XDP still forwards everything else.
    lab.router.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let before = Snapshot::take(&lab, &binary);
    let out = lab
        .a
        .command("ping")
        .args(["-c", "1", "-t", "1", "-W", "2", HOST_B.ipv4])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Time to live exceeded"), "{text}");
    let ping = lab
        .a
        .exec("ping", &["-c", "5", "-i", "0.05", "-W", "2", HOST_B.ipv4])
        .unwrap();
    assert!(ping.contains("5 packets transmitted, 5 received"), "{ping}");
    let after = Snapshot::take(&lab, &binary);
    assert_eq!(
        delta(&before, &after, ROUTER_A.ifname, "to_kernel.ttl_exceeded"),
        1
    );
    assert_eq!(
        delta(&before, &after, ROUTER_A.ifname, "forwarded_packets"),
        5
    );
    assert_eq!(
        delta(&before, &after, ROUTER_B.ifname, "forwarded_packets"),
        5
    );
}

#[test]
fn an_invalid_config_stops_run_before_anything_is_attached() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-e2e").unwrap();
    let cases = [
        (
            lab.router_config().replace("\"rb\"", "\"eth9\""),
            "interface \"eth9\": no such interface in this network namespace",
        ),
        (
            lab.router_config()
                .replace("198.18.2.0/24", "198.18.2.0/33"),
            "route 198.18.2.0/33: \"198.18.2.0/33\" is not an IP prefix",
        ),
        (
            lab.router_config()
                .replace("nexthop = \"host-b\"", "nexthop = \"host-c\""),
            "route 198.18.2.0/24: next hop \"host-c\" is not defined (defined: host-a, host-b)",
        ),
    ];
    for (config, expected) in cases {
        let path = lab.dir().join("bad.toml");
        std::fs::write(&path, &config).unwrap();
        let out = lab
            .dataplane_command(&binary)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(&format!("{}:", path.display())) && stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
        for port in [ROUTER_A.ifname, ROUTER_B.ifname] {
            let link = lab.router.ip(&["-d", "link", "show", port]).unwrap();
            assert!(!link.contains("xdp"), "{port} has an XDP program:\n{link}");
        }
        assert!(!lab.pin_dir().exists(), "nothing pinned");
    }
}
