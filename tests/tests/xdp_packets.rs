//! The real XDP program run with BPF_PROG_TEST_RUN on crafted frames: every case checks the
//! action and every byte of the output frame, and the counters it leaves.
//!
//! Needs root and a kernel with BPF_PROG_TEST_RUN for XDP with an ingress_ifindex context
//! (5.15 or later).

use std::collections::HashMap;

use pop_dataplane::{
    config::Config,
    control::router::Router,
    control::topology::NamedInterface,
    dataplane::{Dataplane, LoadOptions, TestRunOutput},
    host::Host,
    observe::stats::{self, InterfaceStats},
};
use pop_dataplane_common::{fib::FibMode, maps};
use pop_dataplane_tests::{
    frame::{
        self, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, Extension,
        IPPROTO_DSTOPTS, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4, Ipv6,
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
const P3_MAC: &str = "02:00:00:00:00:d0";
const NEIGHBOUR_B: &str = "02:00:00:00:00:bb";
const NEIGHBOUR_C: &str = "02:00:00:00:00:cc";
const NEIGHBOUR_V: &str = "02:00:00:00:00:1a";
const NEIGHBOUR_Q: &str = "02:00:00:00:00:1b";
const NEIGHBOUR_E1: &str = "02:00:00:00:00:e1";
const NEIGHBOUR_E2: &str = "02:00:00:00:00:e2";
const SENDER_MAC: &str = "02:00:00:00:00:01";

const CONFIG: &str = r#"
[[interface]]
name = "p0"
[[interface]]
name = "p0.100"
port = "p0"
vlan = 100
[[interface]]
name = "p0.200.300"
port = "p0"
vlan = [200, 300]
[[interface]]
name = "p1"
[[interface]]
name = "p1.10"
port = "p1"
vlan = 10
[[interface]]
name = "p2"
[[interface]]
name = "p3.7"
port = "p3"
vlan = 7

[[nexthop]]
name = "b"
dev = "p1"
lladdr = "02:00:00:00:00:bb"
[[nexthop]]
name = "c"
dev = "p2"
lladdr = "02:00:00:00:00:cc"
[[nexthop]]
name = "v"
dev = "p1.10"
lladdr = "02:00:00:00:00:1a"
[[nexthop]]
name = "q"
dev = "p0.200.300"
lladdr = "02:00:00:00:00:1b"
[[nexthop]]
name = "u"
dev = "p1"
via = "198.18.2.99"
[[nexthop]]
name = "e1"
dev = "p1"
lladdr = "02:00:00:00:00:e1"
[[nexthop]]
name = "e2"
dev = "p2"
lladdr = "02:00:00:00:00:e2"

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
prefix = "198.18.4.0/24"
nexthop = "v"
[[route]]
prefix = "198.18.5.0/24"
nexthop = "q"
[[route]]
prefix = "198.18.6.0/24"
nexthop = "u"
[[route]]
prefix = "198.18.7.0/24"
nexthop = ["e1", "e2"]
[[route]]
prefix = "198.18.66.0/24"
type = "blackhole"
[[route]]
prefix = "198.18.77.0/24"
type = "kernel"
[[route]]
prefix = "2001:2:0:2::/64"
nexthop = "b"
[[route]]
prefix = "2001:2:0:4::/64"
nexthop = "v"
[[route]]
prefix = "2001:2:0:7::/64"
nexthop = ["e1", "e2"]
"#;

/// A namespace with ports p0 to p3 (p2 with MTU 1280), VLAN sub-interfaces on p0, p1 and p3,
/// the program loaded and its maps filled from [`CONFIG`]; the test thread runs inside the
/// namespace.
struct Fixture {
    dataplane: Dataplane,
    ifindex: HashMap<&'static str, u32>,
    /// The router's interfaces, for the counters' names.
    names: Vec<NamedInterface>,
    host: Host,
    _netns: Netns,
}

impl Fixture {
    fn new() -> Self {
        Self::with_config(CONFIG)
    }

    /// The fixture's ports with another config.
    fn with_config(config: &str) -> Self {
        Self::with_ports(config, &[("p0", "q0", P0_MAC), ("p3", "q3", P3_MAC)], &[])
    }

    /// The fixture with p0 and p3 at ifindexes beyond `PORTS_BY_IFINDEX`, so that their
    /// frames' interfaces are looked up in the `INTERFACES` hash.
    fn with_large_ifindexes() -> Self {
        let index = |i: u32| (maps::MAX_PORT_IFINDEX + i).to_string();
        let (p0, p3) = (index(1), index(7));
        let fx = Self::with_ports(
            CONFIG,
            &[],
            &[
                &format!("link add p0 index {p0} type veth peer name q0"),
                &format!("link set p0 address {P0_MAC} up"),
                "link set q0 up",
                &format!("link add p3 index {p3} type veth peer name q3"),
                &format!("link set p3 address {P3_MAC} up"),
                "link set q3 up",
            ],
        );
        assert!(fx.ifindex["p0"] >= maps::MAX_PORT_IFINDEX);
        assert!(fx.ifindex["p3"] >= maps::MAX_PORT_IFINDEX);
        fx
    }

    /// p1 and p2, plus `ports` (p0 and p3) as given or as `setup` makes them.
    fn with_ports(config: &str, ports: &[(&str, &str, &str)], setup: &[&str]) -> Self {
        let ports: Vec<_> = [("p1", "q1", P1_MAC), ("p2", "q2", P2_MAC)]
            .into_iter()
            .chain(ports.iter().copied())
            .collect();
        let setup: Vec<&str> = setup
            .iter()
            .copied()
            .chain([
                "link set p2 mtu 1280",
                "addr add 198.18.2.1/24 dev p1",
                "addr add 2001:2:0:2::1/64 dev p1 nodad",
            ])
            .collect();
        // VLAN sub-interfaces are defined in the config: this kernel has no 802.1Q devices.
        let netns = Netns::with_ports("pdpt-pkt", &ports, &setup).unwrap();

        let config = Config::parse("packets.toml", config).unwrap();
        let host = Host::read_now().unwrap();
        let (router, update) = Router::start(&config, "packets.toml", &host).unwrap();
        let mut dataplane = Dataplane::load(LoadOptions {
            log_level: log::LevelFilter::Warn,
            ecmp_seed: 0x5eed,
            pin_dir: None,
            fib: FibMode::Compiled,
        })
        .unwrap();
        dataplane.update(&update).unwrap();
        let names = router.topology().names();
        let ifindex = ["p0", "p1", "p2", "p3"]
            .into_iter()
            .map(|name| (name, host.link(name).unwrap().ifindex))
            .collect();
        Self {
            dataplane,
            ifindex,
            names,
            host,
            _netns: netns,
        }
    }

    /// Runs the program on `frame` as received on port p0.
    fn run(&mut self, frame: &[u8]) -> TestRunOutput {
        self.run_on("p0", frame)
    }

    fn run_on(&mut self, port: &str, frame: &[u8]) -> TestRunOutput {
        self.dataplane.test_run(self.ifindex[port], frame).unwrap()
    }

    /// The counters of every interface.
    fn all_stats(&self) -> Vec<InterfaceStats> {
        stats::of_loaded(&self.dataplane, &self.names, &self.host).unwrap()
    }

    fn stats(&self, ifname: &str) -> InterfaceStats {
        self.all_stats()
            .into_iter()
            .find(|s| s.name == ifname)
            .unwrap_or_else(|| panic!("no counters for {ifname}"))
    }

    /// Asserts the program hands `frame` (received on `port`) to the kernel untouched, for
    /// `reason`, counted on interface `counted_on`.
    fn assert_to_kernel_on(&mut self, port: &str, counted_on: &str, frame: &[u8], reason: &str) {
        let before = self.stats(counted_on).to_kernel[reason];
        let out = self.run_on(port, frame);
        assert_eq!(out.action, XDP_PASS, "expected XDP_PASS ({reason})");
        assert_eq!(out.frame, frame, "a frame for the kernel must be untouched");
        assert_eq!(
            self.stats(counted_on).to_kernel[reason],
            before + 1,
            "{counted_on} to_kernel.{reason}"
        );
    }

    fn assert_to_kernel(&mut self, frame: &[u8], reason: &str) {
        self.assert_to_kernel_on("p0", "p0", frame, reason);
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

    /// Asserts the program forwards `frame` as `expected`.
    fn assert_forwarded(&mut self, frame: &[u8], expected: &[u8]) {
        let out = self.run(frame);
        assert_eq!(
            out.action, XDP_REDIRECT,
            "expected XDP_REDIRECT for {frame:02x?}"
        );
        assert_eq!(out.frame, expected);
    }
}

fn v4(src: [u8; 4], dst: [u8; 4], protocol: u8) -> Ipv4 {
    Ipv4::new(src, dst, protocol)
}

fn v6(last_groups: [u16; 2], dst: [u16; 8]) -> Ipv6 {
    let addr = |groups: [u16; 8]| {
        let mut bytes = [0u8; 16];
        for (i, g) in groups.iter().enumerate() {
            bytes[2 * i..2 * i + 2].copy_from_slice(&g.to_be_bytes());
        }
        bytes
    };
    Ipv6::new(
        addr([0x2001, 2, 0, 1, 0, 0, last_groups[0], last_groups[1]]),
        addr(dst),
    )
}

/// A frame from the sender to p0 carrying `packet`.
fn to_router(packet: &[u8]) -> Vec<u8> {
    frame::ethernet(mac(P0_MAC), mac(SENDER_MAC), ETH_P_IPV4, packet)
}

fn to_router_v6(packet: &[u8]) -> Vec<u8> {
    frame::ethernet(mac(P0_MAC), mac(SENDER_MAC), ETH_P_IPV6, packet)
}

/// What a correct router sends for IPv4 `packet` (header `header_len` bytes) through a next
/// hop: its MACs and tags, TTL one less, header checksum recomputed from scratch.
fn forwarded_v4(packet: &[u8], src_mac: &str, dst_mac: &str, tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = packet.to_vec();
    out[8] -= 1;
    out[10..12].copy_from_slice(&[0, 0]);
    let header_len = usize::from(out[0] & 0x0f) * 4;
    let check = internet_checksum(&out[..header_len]);
    out[10..12].copy_from_slice(&check.to_be_bytes());
    frame::ethernet_tagged(mac(dst_mac), mac(src_mac), tags, ETH_P_IPV4, &out)
}

/// The same for IPv6: hop limit one less, no checksum.
fn forwarded_v6(packet: &[u8], src_mac: &str, dst_mac: &str, tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = packet.to_vec();
    out[7] -= 1;
    frame::ethernet_tagged(mac(dst_mac), mac(src_mac), tags, ETH_P_IPV6, &out)
}

const A: [u8; 4] = [198, 18, 1, 2];

#[test]
fn forwards_udp_tcp_icmp_with_new_macs_ttl_and_checksum() {
    let mut fx = Fixture::new();
    let dst = [198, 18, 2, 2];
    let packets = [
        v4(A, dst, IPPROTO_UDP).udp(40000, 53, b"query"),
        v4(A, dst, IPPROTO_TCP).tcp(40000, 443, &[7; 100]),
        v4(A, dst, IPPROTO_ICMP).icmp_echo(1, 1, &[0xab; 56]),
    ];
    for packet in &packets {
        let out = fx.run(&to_router(packet));
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(out.frame, forwarded_v4(packet, P1_MAC, NEIGHBOUR_B, &[]));
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
            let mut header = v4(A, [198, 18, 2, 9], IPPROTO_UDP);
            header.ttl = ttl;
            header.id = id.wrapping_add(u16::from(ttl));
            let packet = header.udp(1, 2, &[]);
            let out = fx.run(&to_router(&packet));
            assert_eq!(out.action, XDP_REDIRECT);
            assert_eq!(
                out.frame,
                forwarded_v4(&packet, P1_MAC, NEIGHBOUR_B, &[]),
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
        let packet = v4(A, [198, 18, 2, last], IPPROTO_UDP).udp(1, 2, b"x");
        fx.assert_forwarded(
            &to_router(&packet),
            &forwarded_v4(&packet, via_mac, neighbour, &[]),
        );
    }
}

#[test]
fn route_miss_goes_to_the_kernel() {
    let mut fx = Fixture::new();
    let packet = v4(A, [198, 19, 9, 9], IPPROTO_UDP).udp(1, 2, b"x");
    fx.assert_to_kernel(&to_router(&packet), "no_route");
    let packet = v6([0, 2], [0x2001, 2, 0, 0x99, 0, 0, 0, 1]).udp(1, 2, b"x");
    fx.assert_to_kernel(&to_router_v6(&packet), "no_route");
}

#[test]
fn ttl_one_and_zero_go_to_the_kernel() {
    let mut fx = Fixture::new();
    for ttl in [1, 0] {
        let mut header = v4(A, [198, 18, 2, 2], IPPROTO_ICMP);
        header.ttl = ttl;
        fx.assert_to_kernel(&to_router(&header.icmp_echo(1, 1, b"ping")), "ttl_exceeded");
        let mut header = v6([0, 2], [0x2001, 2, 0, 2, 0, 0, 0, 2]);
        header.hop_limit = ttl;
        fx.assert_to_kernel(
            &to_router_v6(&header.icmp_echo(1, 1, b"ping")),
            "ttl_exceeded",
        );
    }
}

#[test]
fn arp_and_other_ethertypes_go_to_the_kernel() {
    let mut fx = Fixture::new();
    let arp = frame::arp_request(mac(SENDER_MAC), A, [198, 18, 1, 1]);
    fx.assert_to_kernel(&arp, "non_ip");
    let lldp = frame::ethernet(mac(P0_MAC), mac(SENDER_MAC), 0x88cc, &[0; 46]);
    fx.assert_to_kernel(&lldp, "non_ip");
}

#[test]
fn ipv4_options_go_to_the_kernel() {
    let mut fx = Fixture::new();
    let mut header = v4(A, [198, 18, 2, 2], IPPROTO_UDP);
    // Router alert (RFC 2113), a real option.
    header.options = vec![0x94, 0x04, 0x00, 0x00];
    fx.assert_to_kernel(&to_router(&header.udp(1, 2, b"x")), "ip_options");
}

#[test]
fn frames_not_for_this_router_go_to_the_kernel() {
    let mut fx = Fixture::new();
    let packet = v4(A, [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"x");
    let other_host = frame::ethernet(
        mac("02:00:00:00:00:99"),
        mac(SENDER_MAC),
        ETH_P_IPV4,
        &packet,
    );
    fx.assert_to_kernel(&other_host, "other_host");
    let broadcast = frame::ethernet([0xff; 6], mac(SENDER_MAC), ETH_P_IPV4, &packet);
    fx.assert_to_kernel(&broadcast, "link_multicast");
    for dst in [[224, 0, 0, 5], [239, 1, 2, 3]] {
        let packet = v4(A, dst, IPPROTO_UDP).udp(1, 2, b"x");
        fx.assert_to_kernel(&to_router(&packet), "ip_multicast");
    }
    for dst in [
        [255, 255, 255, 255],
        [240, 0, 0, 1],
        [127, 0, 0, 1],
        [0, 1, 2, 3],
    ] {
        let packet = v4(A, dst, IPPROTO_UDP).udp(1, 2, b"x");
        fx.assert_to_kernel(&to_router(&packet), "reserved");
    }
    let packet = v4(A, [169, 254, 1, 1], IPPROTO_UDP).udp(1, 2, b"x");
    fx.assert_to_kernel(&to_router(&packet), "link_local");
}

#[test]
fn packets_for_the_router_itself_go_to_the_kernel() {
    let mut fx = Fixture::new();
    // 198.18.2.1 is p1's address, inside the routed 198.18.2.0/24.
    let packet = v4(A, [198, 18, 2, 1], IPPROTO_ICMP).icmp_echo(1, 1, b"ping");
    fx.assert_to_kernel(&to_router(&packet), "local");
    let packet = v6([0, 2], [0x2001, 2, 0, 2, 0, 0, 0, 1]).icmp_echo(1, 1, b"ping");
    fx.assert_to_kernel(&to_router_v6(&packet), "local");
    // Their neighbours in the subnet are still forwarded.
    let packet = v4(A, [198, 18, 2, 2], IPPROTO_ICMP).icmp_echo(1, 1, b"ping");
    assert_eq!(fx.run(&to_router(&packet)).action, XDP_REDIRECT);
}

#[test]
fn route_types_blackhole_and_kernel_and_unresolved_next_hops() {
    let mut fx = Fixture::new();
    let packet = v4(A, [198, 18, 66, 1], IPPROTO_UDP).udp(1, 2, b"x");
    fx.assert_dropped(&to_router(&packet), "blackhole");
    let packet = v4(A, [198, 18, 77, 1], IPPROTO_UDP).udp(1, 2, b"x");
    fx.assert_to_kernel(&to_router(&packet), "kernel_route");
    let packet = v4(A, [198, 18, 6, 1], IPPROTO_UDP).udp(1, 2, b"x");
    fx.assert_to_kernel(&to_router(&packet), "unresolved");
}

#[test]
fn larger_than_the_egress_mtu_goes_to_the_kernel() {
    let mut fx = Fixture::new();
    // p2 has MTU 1280: a 1280-byte packet fits, 1281 does not.
    let header = v4(A, [198, 18, 3, 3], IPPROTO_UDP);
    let fits = header.udp(1, 2, &vec![0; 1280 - 28]);
    fx.assert_forwarded(
        &to_router(&fits),
        &forwarded_v4(&fits, P2_MAC, NEIGHBOUR_C, &[]),
    );
    let too_big = header.udp(1, 2, &vec![0; 1281 - 28]);
    fx.assert_to_kernel(&to_router(&too_big), "mtu_exceeded");
}

#[test]
fn truncated_frames_are_dropped_at_every_length() {
    let mut fx = Fixture::new();
    for packet_frame in [
        to_router(&v4(A, [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"payload")),
        to_router_v6(&v6([0, 2], [0x2001, 2, 0, 2, 0, 0, 0, 2]).udp(1, 2, b"payload")),
        frame::ethernet_tagged(
            mac(P0_MAC),
            mac(SENDER_MAC),
            &[(ETH_P_8021AD, 200), (ETH_P_8021Q, 300)],
            ETH_P_IPV4,
            &v4(A, [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"payload"),
        ),
    ] {
        // BPF_PROG_TEST_RUN takes no frame shorter than an Ethernet header.
        for len in ETH_HLEN..packet_frame.len() {
            let before = fx.all_stats();
            let out = fx.run(&packet_frame[..len]);
            assert_eq!(out.action, XDP_DROP, "length {len}");
            let after = fx.all_stats();
            let dropped = |stats: &[InterfaceStats]| -> u64 {
                stats.iter().map(|s| s.dropped["malformed"]).sum()
            };
            assert_eq!(dropped(&after), dropped(&before) + 1, "length {len}");
        }
    }
    // Ethernet padding after the IP packet is fine, and stays.
    let packet = v4(A, [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"x");
    let mut padded = to_router(&packet);
    padded.resize(60, 0);
    let mut expected = forwarded_v4(&packet, P1_MAC, NEIGHBOUR_B, &[]);
    expected.resize(60, 0);
    fx.assert_forwarded(&padded, &expected);
}

#[test]
fn malformed_headers_are_dropped() {
    let mut fx = Fixture::new();
    let packet = v4(A, [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"payload");
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

    let v6_packet = v6([0, 2], [0x2001, 2, 0, 2, 0, 0, 0, 2]).udp(1, 2, b"payload");
    let mut long_payload = to_router_v6(&v6_packet);
    long_payload[ETH_HLEN + 5] += 1;
    fx.assert_dropped(&long_payload, "malformed");
    let mut v6_version = to_router_v6(&v6_packet);
    v6_version[ETH_HLEN] = 0x40;
    fx.assert_dropped(&v6_version, "malformed");
}

#[test]
fn ipv6_is_forwarded_with_the_hop_limit_decremented() {
    let mut fx = Fixture::new();
    let header = v6([0, 2], [0x2001, 2, 0, 2, 0, 0, 0, 2]);
    for packet in [
        header.udp(40000, 53, b"query"),
        header.tcp(40000, 443, &[9; 200]),
        header.icmp_echo(7, 1, &[0xcd; 56]),
    ] {
        fx.assert_forwarded(
            &to_router_v6(&packet),
            &forwarded_v6(&packet, P1_MAC, NEIGHBOUR_B, &[]),
        );
    }
    // Extension headers are the destination's business: forwarded by destination.
    for extensions in [
        vec![Extension::routing()],
        vec![Extension::options(IPPROTO_DSTOPTS), Extension::auth()],
        vec![Extension::fragment(0, true, 7)],
        vec![Extension::fragment(100, false, 7)],
    ] {
        let mut header = header.clone();
        header.extensions = extensions;
        let packet = header.udp(1, 2, b"x");
        fx.assert_forwarded(
            &to_router_v6(&packet),
            &forwarded_v6(&packet, P1_MAC, NEIGHBOUR_B, &[]),
        );
    }
    assert_eq!(fx.stats("p0").forwarded_packets, 7);
}

#[test]
fn ipv6_exceptions_go_to_the_kernel() {
    let mut fx = Fixture::new();
    let mut header = v6([0, 2], [0x2001, 2, 0, 2, 0, 0, 0, 2]);
    header.extensions = vec![Extension::options(IPPROTO_HOPOPTS)];
    fx.assert_to_kernel(&to_router_v6(&header.udp(1, 2, b"x")), "hop_by_hop");

    let multicast = v6([0, 2], [0xff02, 0, 0, 0, 0, 0, 0, 1]).icmp_echo(1, 1, b"x");
    fx.assert_to_kernel(&to_router_v6(&multicast), "ip_multicast");
    let link_local = v6([0, 2], [0xfe80, 0, 0, 0, 0, 0, 0, 1]).icmp_echo(1, 1, b"x");
    fx.assert_to_kernel(&to_router_v6(&link_local), "link_local");
    let mut from_link_local = v6([0, 2], [0x2001, 2, 0, 2, 0, 0, 0, 2]);
    from_link_local.src = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    fx.assert_to_kernel(
        &to_router_v6(&from_link_local.icmp_echo(1, 1, b"x")),
        "link_local",
    );
    let loopback = v6([0, 2], [0, 0, 0, 0, 0, 0, 0, 1]).icmp_echo(1, 1, b"x");
    fx.assert_to_kernel(&to_router_v6(&loopback), "reserved");
}

#[test]
fn vlan_tags_are_popped_pushed_and_rewritten() {
    vlan_tags(Fixture::new());
}

#[test]
fn ports_beyond_the_ifindex_array_are_found_in_the_hash() {
    vlan_tags(Fixture::with_large_ifindexes());
    unconfigured_vlans(Fixture::with_large_ifindexes());
}

fn vlan_tags(mut fx: Fixture) {
    let tagged = |dst_mac: &str, tags: &[(u16, u16)], packet: &[u8]| {
        frame::ethernet_tagged(mac(dst_mac), mac(SENDER_MAC), tags, ETH_P_IPV4, packet)
    };
    let to_b = v4(A, [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"to b");
    let to_v = v4(A, [198, 18, 4, 4], IPPROTO_UDP).udp(1, 2, b"to v");
    let to_q = v4(A, [198, 18, 5, 5], IPPROTO_UDP).udp(1, 2, b"to q");

    // In on VLAN 100, out untagged: popped.
    fx.assert_forwarded(
        &tagged(P0_MAC, &[(ETH_P_8021Q, 100)], &to_b),
        &forwarded_v4(&to_b, P1_MAC, NEIGHBOUR_B, &[]),
    );
    // In untagged, out on VLAN 10: pushed.
    fx.assert_forwarded(
        &tagged(P0_MAC, &[], &to_v),
        &forwarded_v4(&to_v, P1_MAC, NEIGHBOUR_V, &[(ETH_P_8021Q, 10)]),
    );
    // VLAN 100 to VLAN 10: rewritten.
    fx.assert_forwarded(
        &tagged(P0_MAC, &[(ETH_P_8021Q, 100)], &to_v),
        &forwarded_v4(&to_v, P1_MAC, NEIGHBOUR_V, &[(ETH_P_8021Q, 10)]),
    );
    // QinQ in, untagged out: both popped.
    fx.assert_forwarded(
        &tagged(P0_MAC, &[(ETH_P_8021AD, 200), (ETH_P_8021Q, 300)], &to_b),
        &forwarded_v4(&to_b, P1_MAC, NEIGHBOUR_B, &[]),
    );
    // Untagged in, QinQ out: both pushed, the outer as 802.1ad.
    fx.assert_forwarded(
        &tagged(P0_MAC, &[], &to_q),
        &forwarded_v4(
            &to_q,
            P0_MAC,
            NEIGHBOUR_Q,
            &[(ETH_P_8021AD, 200), (ETH_P_8021Q, 300)],
        ),
    );
    // One tag in, two out.
    fx.assert_forwarded(
        &tagged(P0_MAC, &[(ETH_P_8021Q, 100)], &to_q),
        &forwarded_v4(
            &to_q,
            P0_MAC,
            NEIGHBOUR_Q,
            &[(ETH_P_8021AD, 200), (ETH_P_8021Q, 300)],
        ),
    );
    // A priority tag (VLAN 0) is untagged traffic; it leaves without the tag.
    fx.assert_forwarded(
        &tagged(P0_MAC, &[(ETH_P_8021Q, 0)], &to_b),
        &forwarded_v4(&to_b, P1_MAC, NEIGHBOUR_B, &[]),
    );
    // IPv6 too.
    let to_v6 = v6([0, 2], [0x2001, 2, 0, 4, 0, 0, 0, 4]).udp(1, 2, b"v6");
    let frame_v6 = frame::ethernet_tagged(
        mac(P0_MAC),
        mac(SENDER_MAC),
        &[(ETH_P_8021Q, 100)],
        ETH_P_IPV6,
        &to_v6,
    );
    fx.assert_forwarded(
        &frame_v6,
        &forwarded_v6(&to_v6, P1_MAC, NEIGHBOUR_V, &[(ETH_P_8021Q, 10)]),
    );

    // Counted per VLAN interface.
    let counted = |fx: &Fixture, name: &str| {
        let s = fx.stats(name);
        (s.rx_packets, s.forwarded_packets, s.tx_packets)
    };
    assert_eq!(counted(&fx, "p0.100"), (4, 4, 0));
    assert_eq!(counted(&fx, "p0.200.300"), (1, 1, 2));
    assert_eq!(counted(&fx, "p0"), (3, 3, 0));
    assert_eq!(counted(&fx, "p1.10"), (0, 0, 3));
    assert_eq!(counted(&fx, "p1"), (0, 0, 3));
}

#[test]
fn frames_on_unconfigured_vlans_are_counted_on_their_port() {
    unconfigured_vlans(Fixture::new());
}

fn unconfigured_vlans(mut fx: Fixture) {
    let packet = v4(A, [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"x");
    let unknown = frame::ethernet_tagged(
        mac(P0_MAC),
        mac(SENDER_MAC),
        &[(ETH_P_8021Q, 55)],
        ETH_P_IPV4,
        &packet,
    );
    fx.assert_to_kernel_on("p0", "p0", &unknown, "not_routed");
    let three = frame::ethernet_tagged(
        mac(P0_MAC),
        mac(SENDER_MAC),
        &[(ETH_P_8021AD, 200), (ETH_P_8021Q, 300), (ETH_P_8021Q, 1)],
        ETH_P_IPV4,
        &packet,
    );
    fx.assert_to_kernel_on("p0", "p0", &three, "not_routed");
    // p3's untagged side is not configured (only p3.7 is): counted on p3, not routed.
    let untagged = frame::ethernet(mac(P3_MAC), mac(SENDER_MAC), ETH_P_IPV4, &packet);
    fx.assert_to_kernel_on("p3", "p3", &untagged, "not_routed");
    let on_7 = frame::ethernet_tagged(
        mac(P3_MAC),
        mac(SENDER_MAC),
        &[(ETH_P_8021Q, 7)],
        ETH_P_IPV4,
        &packet,
    );
    assert_eq!(fx.run_on("p3", &on_7).action, XDP_REDIRECT);
    // The MAC check applies per VLAN interface too.
    let wrong_mac = frame::ethernet_tagged(
        mac(P1_MAC),
        mac(SENDER_MAC),
        &[(ETH_P_8021Q, 100)],
        ETH_P_IPV4,
        &packet,
    );
    fx.assert_to_kernel_on("p0", "p0.100", &wrong_mac, "other_host");
}

#[test]
fn ecmp_spreads_flows_and_keeps_each_on_one_path() {
    let mut fx = Fixture::new();
    let mut per_path = HashMap::new();
    for flow in 0..200u16 {
        let packet =
            v4(A, [198, 18, 7, (flow % 250) as u8], IPPROTO_UDP).udp(10_000 + flow, 443, b"flow");
        let first = fx.run(&to_router(&packet));
        assert_eq!(first.action, XDP_REDIRECT);
        let path = first.frame[..12].to_vec();
        assert!(
            first.frame == forwarded_v4(&packet, P1_MAC, NEIGHBOUR_E1, &[])
                || first.frame == forwarded_v4(&packet, P2_MAC, NEIGHBOUR_E2, &[]),
            "flow {flow} left by neither member"
        );
        for _ in 0..3 {
            assert_eq!(
                fx.run(&to_router(&packet)).frame,
                first.frame,
                "flow {flow} moved"
            );
        }
        *per_path.entry(path).or_insert(0) += 1;
    }
    assert_eq!(per_path.len(), 2, "both members used");
    assert!(per_path.values().all(|&n| n >= 60), "spread {per_path:?}");

    // Every fragment of a packet takes the same path, whatever its offset.
    for id in 0..50u16 {
        let paths: Vec<Vec<u8>> = [(0x2000u16), (0x2000 | 100), 200]
            .into_iter()
            .map(|flags_fragment| {
                let mut header = v4(A, [198, 18, 7, 9], IPPROTO_UDP);
                header.id = id;
                header.flags_fragment = flags_fragment;
                let packet = header.udp(5000 + id, 53, &[1; 64]);
                fx.run(&to_router(&packet)).frame[..12].to_vec()
            })
            .collect();
        assert!(
            paths.windows(2).all(|w| w[0] == w[1]),
            "IPv4 fragments of {id} split"
        );
        let paths: Vec<Vec<u8>> = [(0u16, true), (100, true), (200, false)]
            .into_iter()
            .map(|(offset, more)| {
                let mut header = v6([0, 2], [0x2001, 2, 0, 7, 0, 0, 0, 9]);
                header.extensions = vec![Extension::fragment(offset, more, u32::from(id))];
                let packet = header.udp(5000 + id, 53, &[1; 64]);
                fx.run(&to_router_v6(&packet)).frame[..12].to_vec()
            })
            .collect();
        assert!(
            paths.windows(2).all(|w| w[0] == w[1]),
            "IPv6 fragments of {id} split"
        );
    }
}

#[test]
fn unknown_ingress_interfaces_are_left_alone() {
    let mut fx = Fixture::new();
    let packet = to_router(&v4(A, [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"x"));
    // Loopback (ifindex 1) is not one of the dataplane's ports.
    let out = fx.dataplane.test_run(1, &packet).unwrap();
    assert_eq!(out.action, XDP_PASS);
    assert_eq!(out.frame, packet);
    let total: u64 = fx.all_stats().iter().map(|s| s.rx_packets).sum();
    assert_eq!(total, 0, "nothing counted");
}

#[test]
fn every_received_frame_is_counted_once() {
    let mut fx = Fixture::new();
    let good = v4(A, [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"x");
    let miss = v4(A, [198, 19, 0, 1], IPPROTO_UDP).udp(1, 2, b"x");
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

/// uRPF (RFC 3704) on each kind of interface, with a source routed out of each place.
const URPF_CONFIG: &str = r#"
[[interface]]
name = "p0"
urpf = "strict"
[[interface]]
name = "p0.100"
port = "p0"
vlan = 100
urpf = "loose"
[[interface]]
name = "p1"
urpf = "loose"
urpf_allow_default = true
[[interface]]
name = "p2"
[[nexthop]]
name = "a"
dev = "p0"
lladdr = "02:00:00:00:00:aa"
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
prefix = "198.18.10.0/24"
nexthop = "a"
[[route]]
prefix = "198.18.11.0/24"
nexthop = ["b", "a"]
[[route]]
prefix = "198.18.12.0/24"
nexthop = ["b", "c"]
[[route]]
prefix = "198.18.66.0/24"
type = "blackhole"
[[route]]
prefix = "198.18.77.0/24"
type = "kernel"
[[route]]
prefix = "0.0.0.0/0"
nexthop = "c"
[[route]]
prefix = "2001:2:0:10::/64"
nexthop = "a"
[[route]]
prefix = "2001:2:0:2::/64"
nexthop = "b"
"#;

#[test]
fn urpf_checks_the_source_route_by_mode() {
    let mut fx = Fixture::with_config(URPF_CONFIG);
    let dst = [198, 18, 2, 2];
    let packet = |src: [u8; 4]| v4(src, dst, IPPROTO_UDP).udp(1, 2, b"urpf");
    let on = |tags: &[(u16, u16)], packet: &[u8]| {
        frame::ethernet_tagged(mac(P0_MAC), mac(SENDER_MAC), tags, ETH_P_IPV4, packet)
    };
    // p0, strict: the source's route must leave through p0 (an ECMP member counts).
    for src in [[198, 18, 10, 1], [198, 18, 11, 1]] {
        let frame = on(&[], &packet(src));
        fx.assert_forwarded(
            &frame,
            &forwarded_v4(&packet(src), P1_MAC, NEIGHBOUR_B, &[]),
        );
    }
    for (src, why) in [
        ([198, 18, 2, 9], "route out of p1"),
        ([198, 18, 12, 1], "ECMP over p1 and p2"),
        ([198, 18, 99, 1], "only the default route"),
        ([198, 18, 66, 1], "blackhole"),
    ] {
        let frame = on(&[], &packet(src));
        let before = fx.stats("p0").dropped["urpf"];
        let out = fx.run(&frame);
        assert_eq!(out.action, XDP_DROP, "strict, {why}");
        assert_eq!(fx.stats("p0").dropped["urpf"], before + 1, "{why}");
    }
    // A connected subnet or another route the kernel takes: its interface is unknown, so
    // it passes.
    let frame = on(&[], &packet([198, 18, 77, 1]));
    assert_eq!(fx.run(&frame).action, XDP_REDIRECT);

    // p0.100, loose: any route but a blackhole; the default route does not count.
    let vlan = [(ETH_P_8021Q, 100)];
    for src in [[198, 18, 2, 9], [198, 18, 12, 1], [198, 18, 10, 1]] {
        let frame = on(&vlan, &packet(src));
        assert_eq!(fx.run(&frame).action, XDP_REDIRECT, "loose, {src:?}");
    }
    for src in [[198, 18, 99, 1], [198, 18, 66, 1]] {
        let frame = on(&vlan, &packet(src));
        assert_eq!(fx.run(&frame).action, XDP_DROP, "loose, {src:?}");
    }
    assert_eq!(fx.stats("p0.100").dropped["urpf"], 2);

    // p1, loose with the default route: only the blackhole fails.
    let to_p1 = |packet: &[u8]| frame::ethernet(mac(P1_MAC), mac(SENDER_MAC), ETH_P_IPV4, packet);
    let dst_c = [198, 18, 99, 2];
    for src in [[198, 18, 99, 1], [198, 18, 2, 9]] {
        let packet = v4(src, dst_c, IPPROTO_UDP).udp(1, 2, b"urpf");
        let out = fx.run_on("p1", &to_p1(&packet));
        assert_eq!(out.action, XDP_REDIRECT, "loose with default, {src:?}");
    }
    let packet = v4([198, 18, 66, 1], dst_c, IPPROTO_UDP).udp(1, 2, b"urpf");
    assert_eq!(fx.run_on("p1", &to_p1(&packet)).action, XDP_DROP);
    assert_eq!(fx.stats("p1").dropped["urpf"], 1);

    // IPv6, strict on p0.
    let from = |last: u16, net: u16| {
        let mut packet = v6([0, 2], [0x2001, 2, 0, 2, 0, 0, 0, 2]);
        packet.src = [0x2001u16, 2, 0, net, 0, 0, 0, last]
            .iter()
            .flat_map(|g| g.to_be_bytes())
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap();
        packet.udp(1, 2, b"v6")
    };
    let good = from(1, 0x10);
    fx.assert_forwarded(
        &to_router_v6(&good),
        &forwarded_v6(&good, P1_MAC, NEIGHBOUR_B, &[]),
    );
    let bad = from(9, 2);
    assert_eq!(fx.run(&to_router_v6(&bad)).action, XDP_DROP);
    // Sources on interfaces without uRPF are not looked up.
    let packet = v4([198, 18, 66, 1], [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"off");
    let frame = frame::ethernet(mac(P2_MAC), mac(SENDER_MAC), ETH_P_IPV4, &packet);
    assert_eq!(fx.run_on("p2", &frame).action, XDP_REDIRECT);
}

/// Flow rules on [`CONFIG`]'s routes: 198.18.3.0/24 and 198.18.2.0/24 via p2 and p1.
const FLOWS: &str = r#"
[[flow]]
rule = "destination 198.18.3.0/24 protocol =udp destination-port =53 then drop"
[[flow]]
rule = "destination 198.18.3.9/32 then accept"
[[flow]]
rule = "destination 198.18.3.128/25 port =8080 then drop"
[[flow]]
rule = "destination 198.18.3.0/24 source 198.18.1.0/24 protocol =tcp tcp-flags ack then remark 46"
[[flow]]
rule = "destination 198.18.4.0/24 fragment is-fragment then drop"
[[flow]]
rule = "destination 198.18.5.0/24 protocol =icmp icmp-type =8 then drop"
[[flow]]
rule = "destination 198.18.2.0/24 packet-length >=1000 then rate-limit 1 packets"
[[flow]]
rule = "destination 2001:2:0:2::/64 protocol =udp destination-port >=1000&<=2000 then drop"
[[flow]]
rule = "ipv6 dscp =10 then remark 0"
"#;

#[test]
fn flow_rules_match_flowspec_components_in_order() {
    let mut fx = Fixture::with_config(&format!("{CONFIG}{FLOWS}"));
    let udp = |dst: [u8; 4], src_port: u16, dst_port: u16| {
        v4([198, 18, 9, 1], dst, IPPROTO_UDP).udp(src_port, dst_port, b"flow")
    };
    // Drop: UDP to port 53 in 198.18.3.0/24, not TCP, not another port.
    fx.assert_dropped(&to_router(&udp([198, 18, 3, 10], 1000, 53)), "flow");
    for packet in [
        udp([198, 18, 3, 10], 1000, 54),
        v4([198, 18, 9, 1], [198, 18, 3, 10], IPPROTO_TCP).tcp(1000, 53, b"flow"),
    ] {
        fx.assert_forwarded(
            &to_router(&packet),
            &forwarded_v4(&packet, P2_MAC, NEIGHBOUR_C, &[]),
        );
    }
    // The /32's accept comes first (RFC 8955 5.1: the longer prefix).
    let packet = udp([198, 18, 3, 9], 1000, 53);
    fx.assert_forwarded(
        &to_router(&packet),
        &forwarded_v4(&packet, P2_MAC, NEIGHBOUR_C, &[]),
    );
    // `port`: either port.
    fx.assert_dropped(&to_router(&udp([198, 18, 3, 200], 1, 8080)), "flow");
    fx.assert_dropped(&to_router(&udp([198, 18, 3, 200], 8080, 1)), "flow");
    // Remark: DSCP 46 written, the header checksum updated, every other byte kept.
    let tcp = v4([198, 18, 1, 7], [198, 18, 3, 10], IPPROTO_TCP).tcp(1000, 80, b"mark");
    let mut marked = tcp.clone();
    marked[1] = 46 << 2;
    fx.assert_forwarded(
        &to_router(&tcp),
        &forwarded_v4(&marked, P2_MAC, NEIGHBOUR_C, &[]),
    );
    // ... only for sources in 198.18.1.0/24.
    let other = v4([198, 18, 9, 7], [198, 18, 3, 10], IPPROTO_TCP).tcp(1000, 80, b"mark");
    fx.assert_forwarded(
        &to_router(&other),
        &forwarded_v4(&other, P2_MAC, NEIGHBOUR_C, &[]),
    );
    // Fragments: a first fragment (MF) and a later one; not a whole packet.
    for flags_fragment in [0x2000, 0x0010] {
        let mut ip = v4([198, 18, 9, 1], [198, 18, 4, 4], IPPROTO_UDP);
        ip.flags_fragment = flags_fragment;
        fx.assert_dropped(&to_router(&ip.packet(&[0; 16])), "flow");
    }
    let whole = udp([198, 18, 4, 4], 1, 2);
    assert_eq!(fx.run(&to_router(&whole)).action, XDP_REDIRECT);
    // ICMP type 8 (echo), not other ICMP types.
    let echo = v4([198, 18, 9, 1], [198, 18, 5, 5], IPPROTO_ICMP).icmp_echo(1, 1, b"ping");
    fx.assert_dropped(&to_router(&echo), "flow");
    let mut reply = echo.clone();
    reply[20] = 0;
    reply[22..24].copy_from_slice(&[0, 0]);
    let check = internet_checksum(&reply[20..]);
    reply[22..24].copy_from_slice(&check.to_be_bytes());
    assert_eq!(fx.run(&to_router(&reply)).action, XDP_REDIRECT);

    // A rate limit of 1 packet a second passes 8 in an 8 s slot, then drops; small packets
    // are not limited. (The 20 frames take milliseconds: at most one slot boundary.)
    let big = udp([198, 18, 2, 2], 1, 2).len();
    let big = v4([198, 18, 9, 1], [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, &vec![0; 1000 - big + 4]);
    let mut passed = 0;
    for _ in 0..20 {
        match fx.run(&to_router(&big)).action {
            XDP_REDIRECT => passed += 1,
            action => assert_eq!(action, XDP_DROP),
        }
    }
    assert!((8..=16).contains(&passed), "{passed} passed");
    assert_eq!(fx.stats("p0").dropped["flow_rate_limit"], 20 - passed);
    let small = udp([198, 18, 2, 2], 1, 2);
    for _ in 0..20 {
        assert_eq!(fx.run(&to_router(&small)).action, XDP_REDIRECT);
    }

    // IPv6: a port range; and a rule for every destination (the wildcard) remarking DSCP 10
    // to 0 in the traffic class.
    let v6_udp = |dst_port: u16| v6([0, 2], [0x2001, 2, 0, 2, 0, 0, 0, 2]).udp(1, dst_port, b"v6");
    fx.assert_dropped(&to_router_v6(&v6_udp(1500)), "flow");
    let packet = v6_udp(2500);
    fx.assert_forwarded(
        &to_router_v6(&packet),
        &forwarded_v6(&packet, P1_MAC, NEIGHBOUR_B, &[]),
    );
    let mut dscp10 = v6([0, 2], [0x2001, 2, 0, 4, 0, 0, 0, 2]).udp(1, 2, b"v6");
    dscp10[0] = 0x60 | (10 << 2) >> 4;
    dscp10[1] = ((10u8 << 2) << 4) | (dscp10[1] & 0x0f);
    let mut cleared = dscp10.clone();
    cleared[0] = 0x60;
    cleared[1] &= 0x0f;
    fx.assert_forwarded(
        &to_router_v6(&dscp10),
        &forwarded_v6(&cleared, P1_MAC, NEIGHBOUR_V, &[(ETH_P_8021Q, 10)]),
    );
}
