//! The real XDP program run with BPF_PROG_TEST_RUN on crafted frames: every case checks the
//! action and every byte of the output frame, and the counters it leaves.
//!
//! Needs root and a kernel with BPF_PROG_TEST_RUN for XDP (>= 4.15; the ingress_ifindex
//! context field >= 5.15).

use pop_dataplane::{
    config::Config,
    dataplane::{Dataplane, TestRunOutput},
    netdev::NetDevice,
    stats::InterfaceStats,
    tables::Tables,
};
use pop_dataplane_tests::{
    frame::{
        self, ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4,
        internet_checksum, mac,
    },
    netns::Netns,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const P0_MAC: &str = "02:00:00:00:00:a0";
const P1_MAC: &str = "02:00:00:00:00:b0";
const P2_MAC: &str = "02:00:00:00:00:c0";
const NEIGHBOUR_B: &str = "02:00:00:00:00:bb";
const NEIGHBOUR_C: &str = "02:00:00:00:00:cc";
const SENDER_MAC: &str = "02:00:00:00:00:01";

const CONFIG: &str = r#"
[[interface]]
name = "p0"
[[interface]]
name = "p1"
[[interface]]
name = "p2"

[[nexthop]]
name = "b"
dev = "p1"
lladdr = "02:00:00:00:00:bb"

[[nexthop]]
name = "c"
dev = "p2"
lladdr = "02:00:00:00:00:cc"

[[route]]
prefix = "198.18.2.0/24"
nexthop = "b"

[[route]]
prefix = "198.18.2.128/25"
nexthop = "c"

[[route]]
prefix = "198.18.3.0/24"
nexthop = "c"

[[route]]
prefix = "198.18.66.0/24"
type = "blackhole"

[[route]]
prefix = "198.18.77.0/24"
type = "kernel"
"#;

/// A namespace with three veth ports (p2 with MTU 1280), the program loaded and its maps
/// filled from [`CONFIG`]; the test thread runs inside the namespace.
struct Fixture {
    dataplane: Dataplane,
    p0: u32,
    _netns: Netns,
}

impl Fixture {
    fn new() -> Self {
        let netns = Netns::new("pdpt-pkt").unwrap();
        for (port, peer, mac) in [
            ("p0", "q0", P0_MAC),
            ("p1", "q1", P1_MAC),
            ("p2", "q2", P2_MAC),
        ] {
            netns
                .ip(&["link", "add", port, "type", "veth", "peer", "name", peer])
                .unwrap();
            netns
                .ip(&["link", "set", port, "address", mac, "up"])
                .unwrap();
            netns.ip(&["link", "set", peer, "up"]).unwrap();
        }
        netns.ip(&["link", "set", "p2", "mtu", "1280"]).unwrap();
        netns
            .ip(&["addr", "add", "198.18.2.1/24", "dev", "p1"])
            .unwrap();
        netns.enter_thread().unwrap();

        let config = Config::parse("packets.toml", CONFIG).unwrap();
        let local = pop_dataplane::netdev::local_ipv4_addresses().unwrap();
        let tables = Tables::compile(&config, "packets.toml", NetDevice::by_name, &local).unwrap();
        let mut dataplane = Dataplane::load(log::LevelFilter::Warn).unwrap();
        dataplane.install(&tables).unwrap();
        let p0 = NetDevice::by_name("p0").unwrap().ifindex;
        Self {
            dataplane,
            p0,
            _netns: netns,
        }
    }

    /// Runs the program on `frame` as received on p0.
    fn run(&mut self, frame: &[u8]) -> TestRunOutput {
        self.dataplane.test_run(self.p0, frame).unwrap()
    }

    fn stats(&self, ifname: &str) -> InterfaceStats {
        self.dataplane
            .stats()
            .unwrap()
            .into_iter()
            .find(|s| s.name == ifname)
            .unwrap()
    }

    /// Asserts the program hands `frame` to the kernel untouched, for `reason`.
    fn assert_to_kernel(&mut self, frame: &[u8], reason: &str) {
        let before = self.stats("p0").to_kernel[reason];
        let out = self.run(frame);
        assert_eq!(out.action, XDP_PASS, "expected XDP_PASS ({reason})");
        assert_eq!(out.frame, frame, "a frame for the kernel must be untouched");
        assert_eq!(
            self.stats("p0").to_kernel[reason],
            before + 1,
            "to_kernel.{reason}"
        );
    }

    /// Asserts the program drops `frame`, for `reason`.
    fn assert_dropped(&mut self, frame: &[u8], reason: &str) {
        let before = self.stats("p0").dropped[reason];
        let out = self.run(frame);
        assert_eq!(
            out.action, XDP_DROP,
            "expected XDP_DROP ({reason}) for {frame:02x?}"
        );
        assert_eq!(
            self.stats("p0").dropped[reason],
            before + 1,
            "dropped.{reason}"
        );
    }
}

fn ip(src: [u8; 4], dst: [u8; 4], protocol: u8) -> Ipv4 {
    Ipv4::new(src, dst, protocol)
}

/// A frame from the sender to p0 carrying `packet`.
fn to_router(packet: &[u8]) -> Vec<u8> {
    frame::ethernet(mac(P0_MAC), mac(SENDER_MAC), ETH_P_IPV4, packet)
}

/// What a correct router sends for `packet` (built by `header`) through next hop
/// (`src_mac` -> `dst_mac`): new MACs, TTL one less, header checksum recomputed from scratch.
fn forwarded(header: &Ipv4, packet: &[u8], src_mac: &str, dst_mac: &str) -> Vec<u8> {
    let mut out = packet.to_vec();
    out[8] = header.ttl - 1;
    out[10..12].copy_from_slice(&[0, 0]);
    let check = internet_checksum(&out[..header.header_len()]);
    out[10..12].copy_from_slice(&check.to_be_bytes());
    frame::ethernet(mac(dst_mac), mac(src_mac), ETH_P_IPV4, &out)
}

#[test]
fn forwards_udp_tcp_icmp_with_new_macs_ttl_and_checksum() {
    let mut fx = Fixture::new();
    let src = [198, 18, 1, 2];
    let dst = [198, 18, 2, 2];
    let cases: Vec<(Ipv4, Vec<u8>)> = vec![
        {
            let h = ip(src, dst, IPPROTO_UDP);
            let p = h.udp(40000, 53, b"query");
            (h, p)
        },
        {
            let h = ip(src, dst, IPPROTO_TCP);
            let p = h.tcp(40000, 443, &[7; 100]);
            (h, p)
        },
        {
            let h = ip(src, dst, IPPROTO_ICMP);
            let p = h.icmp_echo(1, 1, &[0xab; 56]);
            (h, p)
        },
    ];
    for (header, packet) in cases {
        let out = fx.run(&to_router(&packet));
        assert_eq!(out.action, XDP_REDIRECT);
        let expected = forwarded(&header, &packet, P1_MAC, NEIGHBOUR_B);
        assert_eq!(out.frame, expected);
        assert_eq!(internet_checksum(&out.frame[ETH_HLEN..ETH_HLEN + 20]), 0);
    }
    let p0 = fx.stats("p0");
    let p1 = fx.stats("p1");
    assert_eq!(
        (
            p0.rx_packets,
            p0.forwarded_packets,
            p0.to_kernel_packets,
            p0.dropped_packets
        ),
        (3, 3, 0, 0)
    );
    assert_eq!(p1.tx_packets, 3);
    assert_eq!(p1.tx_bytes, p0.forwarded_bytes);
    assert_eq!(p0.rx_bytes, p0.forwarded_bytes);
}

#[test]
fn incremental_checksum_matches_recomputation_for_every_ttl_and_many_headers() {
    let mut fx = Fixture::new();
    let mut runs = 0;
    for ttl in 2..=255u8 {
        // Vary the id so that the checksum takes many values, carries and wraps included.
        for id in (0..=u16::MAX).step_by(997) {
            let mut header = ip([198, 18, 1, 2], [198, 18, 2, 9], IPPROTO_UDP);
            header.ttl = ttl;
            header.id = id.wrapping_add(u16::from(ttl));
            let packet = header.udp(1, 2, &[]);
            let out = fx.run(&to_router(&packet));
            assert_eq!(out.action, XDP_REDIRECT);
            assert_eq!(
                out.frame,
                forwarded(&header, &packet, P1_MAC, NEIGHBOUR_B),
                "ttl {ttl} id {id}"
            );
            runs += 1;
        }
    }
    assert_eq!(fx.stats("p0").forwarded_packets, runs);
}

#[test]
fn longest_prefix_wins() {
    let mut fx = Fixture::new();
    for (last, via_mac, neighbour) in [
        (127, P1_MAC, NEIGHBOUR_B),
        (128, P2_MAC, NEIGHBOUR_C),
        (255, P2_MAC, NEIGHBOUR_C),
        (0, P1_MAC, NEIGHBOUR_B),
    ] {
        let header = ip([198, 18, 1, 2], [198, 18, 2, last], IPPROTO_UDP);
        let packet = header.udp(1, 2, b"x");
        let out = fx.run(&to_router(&packet));
        assert_eq!(out.action, XDP_REDIRECT, ".{last}");
        assert_eq!(
            out.frame,
            forwarded(&header, &packet, via_mac, neighbour),
            ".{last}"
        );
    }
}

#[test]
fn route_miss_goes_to_the_kernel() {
    let mut fx = Fixture::new();
    let packet = ip([198, 18, 1, 2], [198, 19, 9, 9], IPPROTO_UDP).udp(1, 2, b"x");
    fx.assert_to_kernel(&to_router(&packet), "no_route");
}

#[test]
fn ttl_one_and_zero_go_to_the_kernel() {
    let mut fx = Fixture::new();
    for ttl in [1, 0] {
        let mut header = ip([198, 18, 1, 2], [198, 18, 2, 2], IPPROTO_ICMP);
        header.ttl = ttl;
        fx.assert_to_kernel(&to_router(&header.icmp_echo(1, 1, b"ping")), "ttl_exceeded");
    }
}

#[test]
fn arp_and_ipv6_go_to_the_kernel() {
    let mut fx = Fixture::new();
    let arp = frame::arp_request(mac(SENDER_MAC), [198, 18, 1, 2], [198, 18, 1, 1]);
    fx.assert_to_kernel(&arp, "non_ip");
    let ipv6 = frame::ethernet(mac(P0_MAC), mac(SENDER_MAC), ETH_P_IPV6, &[0x60; 48]);
    fx.assert_to_kernel(&ipv6, "non_ip");
}

#[test]
fn ipv4_options_go_to_the_kernel() {
    let mut fx = Fixture::new();
    let mut header = ip([198, 18, 1, 2], [198, 18, 2, 2], IPPROTO_UDP);
    // Router alert (RFC 2113), a real option.
    header.options = vec![0x94, 0x04, 0x00, 0x00];
    fx.assert_to_kernel(&to_router(&header.udp(1, 2, b"x")), "ip_options");
}

#[test]
fn frames_not_for_this_router_go_to_the_kernel() {
    let mut fx = Fixture::new();
    let packet = ip([198, 18, 1, 2], [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"x");
    let other_host = frame::ethernet(
        mac("02:00:00:00:00:99"),
        mac(SENDER_MAC),
        ETH_P_IPV4,
        &packet,
    );
    fx.assert_to_kernel(&other_host, "other_host");
    let broadcast = frame::ethernet([0xff; 6], mac(SENDER_MAC), ETH_P_IPV4, &packet);
    fx.assert_to_kernel(&broadcast, "link_multicast");
    for dst in [
        [224, 0, 0, 5],
        [239, 1, 2, 3],
        [255, 255, 255, 255],
        [240, 0, 0, 1],
    ] {
        let packet = ip([198, 18, 1, 2], dst, IPPROTO_UDP).udp(1, 2, b"x");
        fx.assert_to_kernel(&to_router(&packet), "ip_multicast");
    }
    let packet = ip([198, 18, 1, 2], [169, 254, 1, 1], IPPROTO_UDP).udp(1, 2, b"x");
    fx.assert_to_kernel(&to_router(&packet), "link_local");
}

#[test]
fn packets_for_the_router_itself_go_to_the_kernel() {
    let mut fx = Fixture::new();
    // 198.18.2.1 is p1's address, inside the routed 198.18.2.0/24.
    let packet = ip([198, 18, 1, 2], [198, 18, 2, 1], IPPROTO_ICMP).icmp_echo(1, 1, b"ping");
    fx.assert_to_kernel(&to_router(&packet), "local");
    // Its neighbours in the subnet are still forwarded.
    let packet = ip([198, 18, 1, 2], [198, 18, 2, 2], IPPROTO_ICMP).icmp_echo(1, 1, b"ping");
    assert_eq!(fx.run(&to_router(&packet)).action, XDP_REDIRECT);
}

#[test]
fn route_types_blackhole_and_kernel() {
    let mut fx = Fixture::new();
    let packet = ip([198, 18, 1, 2], [198, 18, 66, 1], IPPROTO_UDP).udp(1, 2, b"x");
    fx.assert_dropped(&to_router(&packet), "blackhole");
    let packet = ip([198, 18, 1, 2], [198, 18, 77, 1], IPPROTO_UDP).udp(1, 2, b"x");
    fx.assert_to_kernel(&to_router(&packet), "kernel_route");
}

#[test]
fn larger_than_the_egress_mtu_goes_to_the_kernel() {
    let mut fx = Fixture::new();
    // p2 has MTU 1280: a 1280-byte packet fits, 1281 does not.
    let header = ip([198, 18, 1, 2], [198, 18, 3, 3], IPPROTO_UDP);
    let fits = header.udp(1, 2, &vec![0; 1280 - 28]);
    let out = fx.run(&to_router(&fits));
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(out.frame, forwarded(&header, &fits, P2_MAC, NEIGHBOUR_C));
    let too_big = header.udp(1, 2, &vec![0; 1281 - 28]);
    fx.assert_to_kernel(&to_router(&too_big), "mtu_exceeded");
}

#[test]
fn truncated_frames_are_dropped_at_every_length() {
    let mut fx = Fixture::new();
    let packet = ip([198, 18, 1, 2], [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"payload");
    let full = to_router(&packet);
    // BPF_PROG_TEST_RUN takes no frame shorter than an Ethernet header.
    for len in ETH_HLEN..full.len() {
        fx.assert_dropped(&full[..len], "malformed");
    }
    // Ethernet padding after the IP packet is fine.
    let mut padded = full.clone();
    padded.resize(60, 0);
    let out = fx.run(&padded);
    assert_eq!(out.action, XDP_REDIRECT);
}

#[test]
fn malformed_headers_are_dropped() {
    let mut fx = Fixture::new();
    let packet = ip([198, 18, 1, 2], [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"payload");
    let good = to_router(&packet);

    let mut bad_version = good.clone();
    bad_version[ETH_HLEN] = 0x65;
    fx.assert_dropped(&bad_version, "malformed");

    for ihl in 0..5u8 {
        let mut bad_ihl = good.clone();
        bad_ihl[ETH_HLEN] = 0x40 | ihl;
        fx.assert_dropped(&bad_ihl, "malformed");
    }

    let mut short_total = good.clone();
    short_total[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&19u16.to_be_bytes());
    fx.assert_dropped(&short_total, "malformed");

    let mut bad_checksum = good.clone();
    bad_checksum[ETH_HLEN + 10] ^= 0x01;
    fx.assert_dropped(&bad_checksum, "bad_checksum");
}

#[test]
fn unknown_ingress_interfaces_are_left_alone() {
    let mut fx = Fixture::new();
    let packet = to_router(&ip([198, 18, 1, 2], [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"x"));
    // Loopback (ifindex 1) is not one of the dataplane's interfaces.
    let out = fx.dataplane.test_run(1, &packet).unwrap();
    assert_eq!(out.action, XDP_PASS);
    assert_eq!(out.frame, packet);
    let total: u64 = fx
        .dataplane
        .stats()
        .unwrap()
        .iter()
        .map(|s| s.rx_packets)
        .sum();
    assert_eq!(total, 0, "nothing counted");
}

#[test]
fn every_received_frame_is_counted_once() {
    let mut fx = Fixture::new();
    let good = ip([198, 18, 1, 2], [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"x");
    let miss = ip([198, 18, 1, 2], [198, 19, 0, 1], IPPROTO_UDP).udp(1, 2, b"x");
    let frames = [
        to_router(&good),
        to_router(&miss),
        to_router(&good)[..20].to_vec(),
    ];
    let mut bytes = 0;
    for frame in &frames {
        fx.run(frame);
        bytes += frame.len() as u64;
    }
    let p0 = fx.stats("p0");
    assert_eq!(p0.rx_packets, 3);
    assert_eq!(p0.rx_bytes, bytes);
    assert_eq!(p0.forwarded_packets, 1);
    assert_eq!(p0.to_kernel["no_route"], 1);
    assert_eq!(p0.dropped["malformed"], 1);
    assert_eq!(
        p0.rx_packets,
        p0.forwarded_packets + p0.to_kernel_packets + p0.dropped_packets
    );
}
