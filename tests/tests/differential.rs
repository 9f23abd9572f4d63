//! Differential test: at least a million frames through the real XDP program
//! (BPF_PROG_TEST_RUN) and through the reference model (`pop_dataplane_tests::model`), with
//! the full routing table loaded; actions, output bytes and, at the end, every counter must
//! be identical.
//!
//! Frames: valid IPv4 and IPv6 (TCP, UDP, ICMP, other protocols, fragments, options,
//! extension headers) on untagged, VLAN and QinQ interfaces, and mutations of them (truncated
//! at every length, wrong version, bad IHL, bad lengths, flipped bytes, random bytes). Some
//! interfaces check sources (uRPF strict and loose, with and without the default route), some
//! filter them (deny rules, martian sources). Random flow rules (FlowSpec components, drop,
//! accept, remark) are generated with the frames, from the same seed. Two interfaces are in
//! VRFs of their own, each holding a share of the table's prefixes with other next hops (some
//! on default-VRF interfaces: leaked routes), so their frames must be looked up there only;
//! a third of the flow rules are theirs.
//!
//! The seed is printed; `POP_DIFF_SEED=<seed>` replays a run, `POP_DIFF_FRAMES=<n>` sets its
//! length. A mismatch prints the frame and both results.

use std::{collections::HashMap, net::IpAddr, time::Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use pop_dataplane::{
    config::Config,
    config::route_spec::{Hop, RouteSpec, Target},
    control::acl::Origin,
    control::plan::MapWrite,
    control::rib::Source,
    control::router::{Mode, Router},
    dataplane::{Dataplane, LoadOptions},
    host::Host,
    observe::stats,
};
use pop_dataplane_common::{
    acl::AclHits,
    fib::FibMode,
    flow::FlowHits,
    sample::{HEADER_BYTES, SampleRecord},
};
use pop_dataplane_tests::{
    frame::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, Extension, IPPROTO_DSTOPTS,
        IPPROTO_ESP, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4, Ipv6,
        ethernet_tagged,
    },
    fulltable,
    model::{self, Counted},
    netns::Netns,
};

const ECMP_SEED: u32 = 0x0bad_5eed;
const IPPROTO_SCTP: u8 = 132;
const REASONS: usize = pop_dataplane_common::counters::MAX_REASONS;
const DEFAULT_FRAMES: u64 = 1_000_000;

const CONFIG: &str = r#"
[[interface]]
name = "p0"
[[interface]]
name = "p0.100"
port = "p0"
vlan = 100
urpf = "loose"
[[interface]]
name = "p0.qinq"
port = "p0"
vlan = [200, 300]
vrf = "red"
[[interface]]
name = "p1"
urpf = "strict"
[[interface]]
name = "p1.10"
port = "p1"
vlan = 10
[[interface]]
name = "p2"
urpf = "strict"
urpf_allow_default = true
[[interface]]
name = "p3.7"
port = "p3"
vlan = 7
urpf = "loose"
urpf_allow_default = true
vrf = "blue"

[[vrf]]
name = "blue"
[[vrf]]
name = "red"

[[nexthop]]
name = "n0"
dev = "p1"
via = "198.18.2.10"
lladdr = "02:00:00:00:01:01"
[[nexthop]]
name = "n1"
dev = "p1.10"
via = "198.18.10.10"
lladdr = "02:00:00:00:01:02"
[[nexthop]]
name = "n2"
dev = "p2"
via = "198.18.20.10"
lladdr = "02:00:00:00:01:03"
[[nexthop]]
name = "n3"
dev = "p0.qinq"
via = "198.18.30.10"
lladdr = "02:00:00:00:01:04"
[[nexthop]]
name = "n4"
dev = "p0.100"
via = "198.18.40.10"
lladdr = "02:00:00:00:01:05"
[[nexthop]]
name = "n5"
dev = "p3.7"
via = "198.18.50.10"
lladdr = "02:00:00:00:01:06"
[[nexthop]]
name = "unresolved"
dev = "p1"
via = "198.18.2.99"

# Source filter rules: for every interface, for one, nested, and IPv6.
[[acl]]
action = "deny"
src = "100.64.0.0/10"
[[acl]]
action = "deny"
src = "128.0.0.0/2"
dev = "p1"
[[acl]]
action = "deny"
src = "128.0.0.0/4"
[[acl]]
action = "deny"
src = "2001:2:0:8000::/49"
[[acl]]
action = "deny"
src = "2001:2::/49"
dev = "p0.100"
"#;

/// The compiled-FIB run also checks martian sources; the LPM-trie run does not.
const MARTIAN_SOURCES: &str = "[filter]\nmartian_sources = true\n";

/// The config's next hops (dev, via), which the full table's routes are spread over, and
/// ECMP sets of them (indexes).
const NEXTHOPS: [(&str, &str); 7] = [
    ("p1", "198.18.2.10"),
    ("p1.10", "198.18.10.10"),
    ("p2", "198.18.20.10"),
    ("p0.qinq", "198.18.30.10"),
    ("p0.100", "198.18.40.10"),
    ("p3.7", "198.18.50.10"),
    ("p1", "198.18.2.99"),
];
const GROUPS: [&[usize]; 3] = [&[0, 2], &[1, 3, 4], &[0, 1, 2, 3, 4, 5]];

/// SplitMix64: small, fast, and the same sequence for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Random flow rules, as `[[flow]]` entries: destinations wide enough for the generated
/// frames to hit (or none), and components with the values those frames carry.
fn flow_rules(rng: &mut Rng) -> String {
    // One fixed rule, so that every run drops some.
    let mut out = "[[flow]]\nrule = \"ipv4 protocol =47 dscp <32 then drop\"\n".to_owned();
    for _ in 0..24 {
        let v6 = rng.chance(40);
        let mut words: Vec<String> = Vec::new();
        // A third of the rules are VRF blue's or red's: frames routed there see only those.
        if rng.chance(33) {
            words.push(format!("vrf {}", rng.pick(&["blue", "red"])));
        }
        if rng.chance(80) {
            let len = 1 + rng.below(if v6 { 12 } else { 8 });
            let net = if v6 {
                let addr = std::net::Ipv6Addr::from(
                    ((0x2000u128 | rng.below(0x1fff) as u128) << 112)
                        | (u128::from(rng.next()) << 48),
                );
                IpNet::V6(Ipv6Net::new(addr, len as u8).unwrap().trunc())
            } else {
                let addr = std::net::Ipv4Addr::from(rng.next() as u32);
                IpNet::V4(Ipv4Net::new(addr, len as u8).unwrap().trunc())
            };
            words.push(format!("destination {net}"));
        } else {
            words.push(if v6 { "ipv6" } else { "ipv4" }.to_owned());
        }
        if rng.chance(15) {
            let len = 1 + rng.below(4);
            let net: IpNet = if v6 {
                IpNet::V6(
                    Ipv6Net::new(
                        std::net::Ipv6Addr::from(u128::from(rng.next()) << 64),
                        len as u8,
                    )
                    .unwrap()
                    .trunc(),
                )
            } else {
                IpNet::V4(
                    Ipv4Net::new(std::net::Ipv4Addr::from(rng.next() as u32), len as u8)
                        .unwrap()
                        .trunc(),
                )
            };
            words.push(format!("source {net}"));
        }
        let numeric = |rng: &mut Rng, max: u64| -> String {
            let terms = 1 + rng.below(3);
            let mut text = String::new();
            for t in 0..terms {
                if t > 0 {
                    text.push(if rng.chance(50) { '&' } else { '|' });
                }
                let op = *rng.pick(&["=", ">", ">=", "<", "<=", "!="]);
                text.push_str(&format!("{op}{}", rng.below(max + 1)));
            }
            text
        };
        let mut kinds: Vec<u64> = (0..1 + rng.below(3)).map(|_| rng.below(10)).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            let component = match kind {
                0 => format!(
                    "protocol ={}",
                    rng.pick(&["tcp", "udp", "icmp", "icmpv6", "47", "132"])
                ),
                1 => format!("port {}", numeric(rng, 65535)),
                2 => format!("destination-port {}", numeric(rng, 65535)),
                3 => format!("source-port {}", numeric(rng, 65535)),
                4 => format!("icmp-type {}", numeric(rng, 140)),
                5 => format!("icmp-code {}", numeric(rng, 3)),
                6 => format!(
                    "tcp-flags {}{}{}",
                    if rng.chance(30) { "!" } else { "" },
                    if rng.chance(40) { "=" } else { "" },
                    rng.pick(&["ack", "syn", "ack+psh", "fin+syn+rst", "0x11"])
                ),
                7 => format!("packet-length {}", numeric(rng, 1500)),
                8 => format!("dscp {}", numeric(rng, 63)),
                _ => format!(
                    "fragment {}{}",
                    if rng.chance(30) { "!" } else { "" },
                    if v6 {
                        rng.pick(&["is-fragment", "first-fragment", "last-fragment"])
                    } else {
                        rng.pick(&[
                            "dont-fragment",
                            "is-fragment",
                            "first-fragment",
                            "last-fragment",
                        ])
                    }
                ),
            };
            words.push(component);
        }
        words.push("then".to_owned());
        words.push(
            rng.pick(&[
                "drop",
                "drop",
                "accept",
                "remark 46",
                "remark 0",
                // Never reached: the model knows no clock.
                "rate-limit 1000000000000 packets",
            ])
            .to_string(),
        );
        let rule = words.join(" ");
        // Rules the parser refuses (a bad mix) are left out; the rest must all be taken.
        if rule
            .parse::<pop_dataplane::config::flow_rule::FlowRule>()
            .is_ok()
        {
            out.push_str(&format!("[[flow]]\nrule = \"{rule}\"\n"));
        }
    }
    out
}

/// Where a generated frame may arrive: a port and the tags and MAC of one of its interfaces.
#[derive(Clone)]
struct Ingress {
    ifindex: u32,
    tags: Vec<(u16, u16)>,
    mac: [u8; 6],
}

struct Generator {
    rng: Rng,
    ingresses: Vec<Ingress>,
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
    local: Vec<IpAddr>,
}

impl Generator {
    /// One base frame and where it arrives.
    fn frame(&mut self) -> (u32, Vec<u8>) {
        let ingress = self.rng.pick(&self.ingresses).clone();
        let rng = &mut self.rng;
        if rng.chance(2) {
            let len = 14 + rng.below(120) as usize;
            return (ingress.ifindex, rng.bytes(len));
        }
        let mut tags = ingress.tags.clone();
        match rng.below(100) {
            0..=3 => tags = vec![(ETH_P_8021Q, rng.below(4095) as u16)],
            4..=5 => tags.push((ETH_P_8021Q, rng.below(4095) as u16)),
            6 => tags.insert(0, (ETH_P_8021Q, 0)),
            _ => {}
        }
        let dst_mac = match rng.below(100) {
            0..=3 => [0x02, 0, 0, 0, 0x99, rng.next() as u8],
            4..=5 => [0xff; 6],
            6 => [0x33, 0x33, 0, 0, 0, 1],
            _ => ingress.mac,
        };
        let src_mac = [0x02, 0, 0, 0, 0x77, rng.next() as u8];
        let (ethertype, packet) = match rng.below(100) {
            0..=2 => (ETH_P_ARP, self.rng.bytes(28)),
            3 => (0x88cc, self.rng.bytes(40)),
            4..=59 => (ETH_P_IPV4, self.ipv4()),
            _ => (ETH_P_IPV6, self.ipv6()),
        };
        let mut frame = ethernet_tagged(dst_mac, src_mac, &tags, ethertype, &packet);
        if self.rng.chance(3) {
            // Ethernet padding or trailing garbage.
            let len = 1 + self.rng.below(20) as usize;
            frame.extend(self.rng.bytes(len));
        }
        (ingress.ifindex, frame)
    }

    fn ttl(&mut self) -> u8 {
        match self.rng.below(100) {
            0..=3 => 0,
            4..=7 => 1,
            8..=10 => 2,
            _ => 3 + self.rng.below(253) as u8,
        }
    }

    fn payload(&mut self) -> Vec<u8> {
        let len = match self.rng.below(100) {
            0..=4 => 1200 + self.rng.below(300),
            _ => self.rng.below(200),
        };
        self.rng.bytes(len as usize)
    }

    fn v4_address(&mut self) -> [u8; 4] {
        let rng = &mut self.rng;
        let random_in = |rng: &mut Rng, net: &Ipv4Net| {
            let host_bits = 32 - u32::from(net.prefix_len());
            let host = if host_bits == 0 {
                0
            } else {
                (rng.next() as u32) & (u32::MAX >> (32 - host_bits))
            };
            (u32::from(net.network()) | host).to_be_bytes()
        };
        match rng.below(100) {
            0..=54 => {
                let net = *rng.pick(&self.v4);
                random_in(rng, &net)
            }
            55..=64 => (rng.next() as u32).to_be_bytes(),
            65..=69 => {
                let locals: Vec<[u8; 4]> = self
                    .local
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(a) => Some(a.octets()),
                        IpAddr::V6(_) => None,
                    })
                    .collect();
                *rng.pick(&locals)
            }
            70..=74 => *rng.pick(&[
                [224, 0, 0, 5],
                [239, 255, 255, 250],
                [240, 1, 2, 3],
                [255, 255, 255, 255],
                [0, 0, 0, 0],
                [127, 0, 0, 1],
                [169, 254, 9, 9],
            ]),
            75..=84 => [
                198,
                18 + rng.below(2) as u8,
                rng.next() as u8,
                rng.next() as u8,
            ],
            _ => {
                let net = *rng.pick(&self.v4);
                if rng.chance(50) {
                    net.network().octets()
                } else {
                    net.broadcast().octets()
                }
            }
        }
    }

    fn v6_address(&mut self) -> [u8; 16] {
        let rng = &mut self.rng;
        let random_in = |rng: &mut Rng, net: &Ipv6Net| {
            let host_bits = 128 - u32::from(net.prefix_len());
            let random = (u128::from(rng.next()) << 64) | u128::from(rng.next());
            let host = if host_bits == 0 {
                0
            } else {
                random & (u128::MAX >> (128 - host_bits))
            };
            (u128::from(net.network()) | host).to_be_bytes()
        };
        match rng.below(100) {
            0..=59 => {
                let net = *rng.pick(&self.v6);
                random_in(rng, &net)
            }
            60..=69 => {
                let random = (u128::from(rng.next()) << 64) | u128::from(rng.next());
                ((random & (u128::MAX >> 3)) | (1u128 << 125)).to_be_bytes()
            }
            70..=74 => {
                let locals: Vec<[u8; 16]> = self
                    .local
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V6(a) => Some(a.octets()),
                        IpAddr::V4(_) => None,
                    })
                    .collect();
                *rng.pick(&locals)
            }
            75..=79 => {
                let special: [u128; 5] = [
                    0,
                    1,
                    0xff02 << 112 | 1,
                    0xfe80 << 112 | 9,
                    0xff05 << 112 | 2,
                ];
                rng.pick(&special).to_be_bytes()
            }
            _ => {
                let random = (u128::from(rng.next()) << 64) | u128::from(rng.next());
                ((0x2001_0002u128 << 96) | (random & ((1u128 << 80) - 1))).to_be_bytes()
            }
        }
    }

    fn ipv4(&mut self) -> Vec<u8> {
        let src = (self.rng.next() as u32).to_be_bytes();
        let dst = self.v4_address();
        let protocol = *self.rng.pick(&[
            IPPROTO_UDP,
            IPPROTO_UDP,
            IPPROTO_TCP,
            IPPROTO_TCP,
            IPPROTO_ICMP,
            47,
            132,
        ]);
        let mut header = Ipv4::new(src, dst, protocol);
        header.ttl = self.ttl();
        header.id = self.rng.next() as u16;
        header.tos = self.rng.next() as u8;
        if self.rng.chance(10) {
            header.flags_fragment = match self.rng.below(3) {
                0 => 0x2000,
                1 => 0x2000 | (1 + self.rng.below(0x1ffe) as u16),
                _ => 1 + self.rng.below(0x1ffe) as u16,
            };
        }
        if self.rng.chance(4) {
            let words = 1 + self.rng.below(10) as usize;
            header.options = self.rng.bytes(4 * words);
        }
        let payload = self.payload();
        let (sport, dport) = (self.rng.next() as u16, self.rng.next() as u16);
        match protocol {
            IPPROTO_UDP => header.udp(sport, dport, &payload),
            IPPROTO_TCP => header.tcp(sport, dport, &payload),
            IPPROTO_ICMP => header.icmp_echo(sport, dport, &payload),
            _ => header.packet(&payload),
        }
    }

    fn ipv6(&mut self) -> Vec<u8> {
        let src = if self.rng.chance(3) {
            let mut src = [0u8; 16];
            src[0] = 0xfe;
            src[1] = 0x80;
            src[15] = 1;
            src
        } else {
            self.v6_address()
        };
        let mut header = Ipv6::new(src, self.v6_address());
        header.hop_limit = self.ttl();
        header.flow_label = self.rng.next() as u32;
        if self.rng.chance(15) {
            for i in 0..1 + self.rng.below(5) {
                let extension = match self.rng.below(6) {
                    0 if i == 0 => Extension::options(IPPROTO_HOPOPTS),
                    0 | 1 => Extension::routing(),
                    2 => Extension::options(IPPROTO_DSTOPTS),
                    3 => Extension::fragment(
                        self.rng.below(8000) as u16,
                        self.rng.chance(50),
                        self.rng.next() as u32,
                    ),
                    4 => Extension::auth(),
                    _ => Extension::options(IPPROTO_DSTOPTS),
                };
                header.extensions.push(extension);
            }
        }
        let payload = self.payload();
        let (sport, dport) = (self.rng.next() as u16, self.rng.next() as u16);
        match self.rng.below(10) {
            0..=3 => header.udp(sport, dport, &payload),
            4..=6 => header.tcp(sport, dport, &payload),
            7 => header.icmp_echo(sport, dport, &payload),
            8 => header.packet(IPPROTO_ESP, &payload),
            _ => header.packet(IPPROTO_SCTP, &payload),
        }
    }

    /// A mutation of `frame`: the header fields a router must not trust.
    fn mutate(&mut self, frame: &mut Vec<u8>) {
        let rng = &mut self.rng;
        let l3 = {
            let mut at = 12;
            while at + 2 <= frame.len()
                && matches!(
                    u16::from_be_bytes([frame[at], frame[at + 1]]),
                    0x8100 | 0x88a8
                )
            {
                at += 4;
            }
            at + 2
        };
        match rng.below(7) {
            0 => {
                let len = 14 + rng.below(frame.len().saturating_sub(14) as u64 + 1) as usize;
                frame.truncate(len.max(14));
            }
            1 if frame.len() > l3 => frame[l3] = (rng.next() as u8 & 0xf0) | (frame[l3] & 0x0f),
            2 if frame.len() > l3 => frame[l3] = (frame[l3] & 0xf0) | (rng.next() as u8 & 0x0f),
            3 if frame.len() > l3 + 5 => {
                let at = l3 + 2 + 2 * rng.below(2) as usize;
                frame[at] = rng.next() as u8;
                frame[at + 1] = rng.next() as u8;
            }
            4 if frame.len() > l3 + 11 => frame[l3 + 10] ^= 1 + rng.next() as u8 % 255,
            _ => {
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(frame.len() as u64) as usize;
                    frame[at] = rng.next() as u8;
                }
            }
        }
    }
}

/// The model's view of what `router` put in the maps, its groups as `writes` wrote them.
fn model_tables(router: &Router, writes: &[MapWrite]) -> model::Tables {
    let mut model = model::Tables::new(ECMP_SEED);
    for interface in &router.topology().interfaces {
        model.interfaces.insert(interface.key, interface.entry);
    }
    for port in &router.topology().ports {
        model.ports.insert(port.index, port.ifindex);
    }
    for (id, nexthop) in router.nexthop_values() {
        model.nexthops.insert(id, nexthop);
    }
    for write in writes {
        match write {
            MapWrite::Group(id, group) => {
                model.groups.insert(*id, **group);
            }
            MapWrite::FlowEntries { bank, entries } => {
                for (i, entry) in (0..).zip(entries) {
                    model.set_flow_entry(
                        bank * pop_dataplane_common::flow::BANK_ENTRIES + i,
                        *entry,
                    );
                }
            }
            MapWrite::FlowList(vrf, prefix, list) => match prefix {
                IpNet::V4(net) => model.set_flow_list(
                    vrf.0,
                    false,
                    u128::from(u32::from(net.network())),
                    net.prefix_len(),
                    *list,
                ),
                IpNet::V6(net) => model.set_flow_list(
                    vrf.0,
                    true,
                    u128::from(net.network()),
                    net.prefix_len(),
                    *list,
                ),
            },
            MapWrite::Acl(key, entry) => match key.src {
                IpNet::V4(net) => {
                    model.set_acl_v4(key.slot, net.network().octets(), net.prefix_len(), *entry)
                }
                IpNet::V6(net) => {
                    model.set_acl_v6(key.slot, net.network().octets(), net.prefix_len(), *entry)
                }
            },
            _ => {}
        }
    }
    for (vrf, prefix, entry) in router.table_routes() {
        match prefix {
            IpNet::V4(net) => {
                model.set_route_v4(vrf.0, net.network().octets(), net.prefix_len(), entry)
            }
            IpNet::V6(net) => {
                model.set_route_v6(vrf.0, net.network().octets(), net.prefix_len(), entry)
            }
        }
    }
    model
}

/// The sample records the program must write, in order: one for every frame counted on a
/// 1-in-1 interface, and maybe one for a frame on the 1-in-3 interface.
#[derive(Default)]
struct Samples {
    queue: std::collections::VecDeque<(SampleRecord, bool)>,
    /// Frames on the 1-in-3 interface, and how many were sampled.
    maybe: u64,
    maybe_sampled: u64,
    checked: u64,
}

impl Samples {
    fn expect(&mut self, counted: &Counted, frame: &[u8], one_in_three: u32) {
        let (ingress_slot, verdict, reason, egress_slot) = match *counted {
            Counted::Nothing => return,
            Counted::Forwarded {
                ingress_slot,
                egress_slot,
            } => (ingress_slot, SampleRecord::FORWARD, 0, egress_slot),
            Counted::ToKernel {
                ingress_slot,
                reason,
            } => (
                ingress_slot,
                SampleRecord::TO_KERNEL,
                reason,
                SampleRecord::NONE,
            ),
            Counted::Dropped {
                ingress_slot,
                reason,
            }
            | Counted::Denied {
                ingress_slot,
                reason,
                ..
            } => (ingress_slot, SampleRecord::DROP, reason, SampleRecord::NONE),
        };
        let mut record = SampleRecord {
            ingress_slot,
            verdict,
            reason,
            egress_slot,
            frame_len: frame.len() as u32,
            header_len: frame.len().min(HEADER_BYTES) as u32,
            ..SampleRecord::EMPTY
        };
        record.header[..frame.len().min(HEADER_BYTES)]
            .copy_from_slice(&frame[..frame.len().min(HEADER_BYTES)]);
        let certain = ingress_slot != one_in_three;
        if !certain {
            self.maybe += 1;
        }
        self.queue.push_back((record, certain));
    }

    /// Takes the ring's records and matches them against what was expected, in order.
    fn check(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) {
        let same = |got: &SampleRecord, want: &SampleRecord| {
            got.ingress_slot == want.ingress_slot
                && got.verdict == want.verdict
                && got.reason == want.reason
                && got.egress_slot == want.egress_slot
                && got.frame_len == want.frame_len
                && got.header_len == want.header_len
                // Past its length, the header holds whatever an earlier sample left.
                && got.header[..got.header_len as usize] == want.header[..want.header_len as usize]
        };
        while let Some(item) = ring.next() {
            assert_eq!(item.len(), size_of::<SampleRecord>());
            // SAFETY: the ring holds the program's `SampleRecord`s; any bytes are one.
            let got: SampleRecord =
                unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SampleRecord>()) };
            drop(item);
            assert_ne!(
                got.nexthop == SampleRecord::NONE,
                got.verdict == SampleRecord::FORWARD
            );
            loop {
                let (want, certain) = self
                    .queue
                    .pop_front()
                    .unwrap_or_else(|| panic!("an unexpected sample: {got:?}"));
                if same(&got, &want) {
                    self.checked += 1;
                    if !certain {
                        self.maybe_sampled += 1;
                    }
                    break;
                }
                assert!(
                    !certain,
                    "sample {} differs:\n  program {got:?}\n  model   {want:?}",
                    self.checked
                );
            }
        }
    }

    fn finish(&self) {
        assert!(
            self.queue.iter().all(|(_, certain)| !certain),
            "{} frames left without their sample",
            self.queue.iter().filter(|(_, c)| *c).count()
        );
        let (n, p) = (self.maybe as f64, 1.0 / 3.0);
        let sd = (n * p * (1.0 - p)).sqrt();
        assert!(
            (self.maybe_sampled as f64 - n * p).abs() <= 4.0 * sd,
            "{} of {} frames sampled at 1-in-3",
            self.maybe_sampled,
            self.maybe
        );
        println!(
            "{} sample records as the model expects ({} of {} frames at 1-in-3)",
            self.checked, self.maybe_sampled, self.maybe
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Expected {
    rx_packets: u64,
    rx_bytes: u64,
    forwarded_packets: u64,
    tx_packets: u64,
    to_kernel: [u64; REASONS],
    dropped: [u64; REASONS],
}

#[test]
fn xdp_program_and_model_agree_on_a_million_frames_with_the_full_table_in_the_compiled_fib() {
    agree(FibMode::Compiled);
}

#[test]
fn xdp_program_and_model_agree_on_a_million_frames_with_the_full_table_in_the_lpm_trie() {
    agree(FibMode::LpmTrie);
}

/// Runs the program, with its route lookup in `fib`, and the model on the same frames.
fn agree(fib: FibMode) {
    let seed: u64 = std::env::var("POP_DIFF_SEED")
        .ok()
        .map(|s| s.parse().expect("POP_DIFF_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let frames: u64 = std::env::var("POP_DIFF_FRAMES")
        .ok()
        .map(|s| s.parse().expect("POP_DIFF_FRAMES is a number"))
        .unwrap_or(DEFAULT_FRAMES);
    println!(
        "differential test, {fib:?} FIB: seed {seed} (replay with POP_DIFF_SEED={seed}), \
         {frames} frames"
    );

    let netns = Netns::with_ports(
        "pdpt-diff",
        &[
            ("p0", "q0", "02:00:00:00:00:a0"),
            ("p1", "q1", "02:00:00:00:00:b0"),
            ("p2", "q2", "02:00:00:00:00:c0"),
            ("p3", "q3", "02:00:00:00:00:d0"),
        ],
        &[
            "link set p2 mtu 1280",
            "addr add 198.18.2.1/24 dev p1",
            "addr add 198.18.1.1/24 dev p0",
            "addr add 2001:2:0:2::1/64 dev p1 nodad",
        ],
    )
    .unwrap();

    // The config's interfaces and next hops, then the full table spread over them.
    let flows = flow_rules(&mut Rng(seed ^ 0xf10e));
    println!("flow rules:\n{flows}");
    let config = match fib {
        FibMode::Compiled => format!("{MARTIAN_SOURCES}{CONFIG}{flows}"),
        FibMode::LpmTrie => format!("{CONFIG}{flows}"),
    };
    let config = Config::parse("differential.toml", &config).unwrap();
    let host = Host::read_now().unwrap();
    let (mut router, first) = Router::start(&config, "differential.toml", &host).unwrap();
    let (v4, v6) = fulltable::read().unwrap();
    let started = Instant::now();
    let hop = |i: usize| {
        let (dev, via) = NEXTHOPS[i];
        Hop {
            via: via.parse().unwrap(),
            dev: dev.to_owned(),
        }
    };
    let prefixes = || {
        v4.iter()
            .map(|p| IpNet::V4(*p))
            .chain(v6.iter().map(|p| IpNet::V6(*p)))
    };
    // IPv6 prefixes go through the same next hops as IPv4 ones: the CLI would refuse that
    // (families apart), but the fast path needs only their MACs.
    let specs: Vec<(usize, RouteSpec)> = prefixes()
        .enumerate()
        .map(|(i, prefix)| {
            let target = match i {
                i if i % 23 == 0 => Target::Blackhole,
                i if i % 29 == 0 => Target::Kernel,
                i if i % 5 == 0 => Target::Via(
                    GROUPS[(i / 5) % GROUPS.len()]
                        .iter()
                        .map(|&n| hop(n))
                        .collect(),
                ),
                i => Target::Via(vec![hop(i % NEXTHOPS.len())]),
            };
            (
                0,
                RouteSpec {
                    vrf: None,
                    prefix,
                    target,
                },
            )
        })
        // An IPv6 default route (IPv4 has none): sources only it covers meet uRPF with and
        // without `urpf_allow_default`.
        .chain([(
            0,
            RouteSpec {
                vrf: None,
                prefix: "::/0".parse().unwrap(),
                target: Target::Via(vec![hop(2)]),
            },
        )])
        // A third of the prefixes in VRFs blue and red too, with other targets: through the
        // VRF's own interface, or leaked to the default VRF's, blackholes, groups.
        .chain(
            prefixes()
                .enumerate()
                .filter(|(i, _)| i % 3 == 0)
                .map(|(i, prefix)| {
                    let vrf = if i % 2 == 0 { "blue" } else { "red" };
                    let own = if vrf == "blue" { hop(5) } else { hop(3) };
                    let target = match i {
                        i if i % 19 == 0 => Target::Blackhole,
                        i if i % 7 == 0 => Target::Via(vec![own.clone(), hop(1)]),
                        i if i % 4 == 0 => Target::Via(vec![hop(i % 5)]),
                        _ => Target::Via(vec![own]),
                    };
                    (
                        0,
                        RouteSpec {
                            vrf: Some(vrf.to_owned()),
                            prefix,
                            target,
                        },
                    )
                }),
        )
        .collect();
    router
        .set_routes(&specs, Source::Cli, Mode::Replace, &mut |_| {})
        .unwrap();
    let update = router.rebuild_tables().unwrap();
    println!(
        "compiled {} IPv4 + {} IPv6 routes in {:.2?}",
        v4.len(),
        v6.len(),
        started.elapsed()
    );
    let mut dataplane = Dataplane::load(LoadOptions {
        log_level: log::LevelFilter::Warn,
        ecmp_seed: ECMP_SEED,
        pin_dir: None,
        fib,
    })
    .unwrap();
    let started = Instant::now();
    dataplane.update(&first).unwrap();
    dataplane.update(&update).unwrap();
    println!(
        "installed {} routes in {:.2?}",
        update.tables.len(),
        started.elapsed()
    );
    let writes: Vec<MapWrite> = first
        .before
        .iter()
        .chain(&first.tables)
        .chain(&update.before)
        .chain(&update.tables)
        .cloned()
        .collect();
    let model = model_tables(&router, &writes);

    // Sampling on every interface: 1-in-1, so that each frame's record is known, except the
    // first interface's, 1-in-3, whose samples are a random share. Sampling changes no
    // verdict and no byte: the frames are still checked against the model, which knows
    // nothing of it.
    let mut ring = dataplane.take_samples().unwrap();
    let one_in_three = router.topology().interfaces[0].entry.slot;
    for interface in &router.topology().interfaces {
        let slot = interface.entry.slot;
        let rate = if slot == one_in_three { 3 } else { 1 };
        dataplane.set_sample_rate(slot, rate).unwrap();
    }
    let mut samples = Samples::default();

    let ingresses: Vec<Ingress> = router
        .topology()
        .interfaces
        .iter()
        .map(|i| Ingress {
            ifindex: i.key.ifindex,
            tags: match (i.key.vlan_outer, i.key.vlan_inner) {
                (0, _) => vec![],
                (outer, 0) => vec![(ETH_P_8021Q, outer)],
                (outer, inner) => vec![(ETH_P_8021AD, outer), (ETH_P_8021Q, inner)],
            },
            mac: i.entry.mac,
        })
        // Loopback: not one of the dataplane's ports.
        .chain([Ingress {
            ifindex: 1,
            tags: vec![],
            mac: [0; 6],
        }])
        .collect();
    let mut generator = Generator {
        rng: Rng(seed),
        ingresses,
        v4,
        v6,
        local: router.local_addresses().into_iter().collect(),
    };

    let mut expected: HashMap<u32, Expected> = HashMap::new();
    let mut outcomes: HashMap<&'static str, u64> = HashMap::new();
    let mut acl_hits: HashMap<u32, AclHits> = HashMap::new();
    let mut flow_hits: HashMap<u32, FlowHits> = HashMap::new();
    let mut run = 0u64;
    let started = Instant::now();
    while run < frames {
        let (ifindex, base) = generator.frame();
        // Now and then, every truncation of a frame; else the frame, or a mutation of it.
        let variants: Vec<Vec<u8>> = if run % 1000 == 0 {
            (14..=base.len()).map(|len| base[..len].to_vec()).collect()
        } else if generator.rng.chance(30) {
            let mut mutated = base.clone();
            generator.mutate(&mut mutated);
            vec![mutated]
        } else {
            vec![base]
        };
        for frame in variants {
            run += 1;
            let want = model.forward(ifindex, &frame);
            let got = dataplane.test_run(ifindex, &frame).unwrap();
            if got.action != want.action || got.frame != want.frame {
                panic!(
                    "mismatch on frame {run} (seed {seed}), received on ifindex {ifindex}:\n\
                     frame:    {}\n\
                     model:    action {} counted {:?}\n          {}\n\
                     program:  action {}\n          {}",
                    hex(&frame),
                    want.action,
                    want.counted,
                    hex(&want.frame),
                    got.action,
                    hex(&got.frame),
                );
            }
            samples.expect(&want.counted, &frame, one_in_three);
            if run % 1000 == 0 {
                samples.check(&mut ring);
            }
            let len = frame.len() as u64;
            if let Some(hit) = want.flow {
                let hits = flow_hits.entry(hit.rule).or_default();
                hits.matched_packets += 1;
                hits.matched_bytes += len;
                if hit.dropped {
                    hits.dropped_packets += 1;
                    hits.dropped_bytes += len;
                }
                *outcomes.entry("flow matched").or_default() += 1;
            }
            match want.counted {
                Counted::Nothing => *outcomes.entry("not ours").or_default() += 1,
                Counted::Forwarded {
                    ingress_slot,
                    egress_slot,
                } => {
                    let ingress = expected.entry(ingress_slot).or_default();
                    ingress.rx_packets += 1;
                    ingress.rx_bytes += len;
                    ingress.forwarded_packets += 1;
                    expected.entry(egress_slot).or_default().tx_packets += 1;
                    *outcomes.entry("forwarded").or_default() += 1;
                }
                Counted::ToKernel {
                    ingress_slot,
                    reason,
                } => {
                    let ingress = expected.entry(ingress_slot).or_default();
                    ingress.rx_packets += 1;
                    ingress.rx_bytes += len;
                    ingress.to_kernel[reason as usize] += 1;
                    *outcomes.entry("to kernel").or_default() += 1;
                }
                Counted::Dropped {
                    ingress_slot,
                    reason,
                } => {
                    let ingress = expected.entry(ingress_slot).or_default();
                    ingress.rx_packets += 1;
                    ingress.rx_bytes += len;
                    ingress.dropped[reason as usize] += 1;
                    let name = pop_dataplane_common::DropReason::ALL
                        .get(reason as usize)
                        .map_or("?", |r| r.name());
                    *outcomes.entry(name).or_default() += 1;
                }
                Counted::Denied {
                    ingress_slot,
                    reason,
                    rule,
                } => {
                    let ingress = expected.entry(ingress_slot).or_default();
                    ingress.rx_packets += 1;
                    ingress.rx_bytes += len;
                    ingress.dropped[reason as usize] += 1;
                    let hits = acl_hits.entry(rule).or_default();
                    hits.packets += 1;
                    hits.bytes += len;
                    *outcomes.entry("denied").or_default() += 1;
                }
            }
        }
    }
    samples.check(&mut ring);
    samples.finish();
    let elapsed = started.elapsed();
    println!(
        "{run} frames agree ({:.0?}, {:.1} µs a frame): {outcomes:?}",
        elapsed,
        elapsed.as_secs_f64() * 1e6 / run as f64
    );

    // Every counter of every interface, exactly.
    let names = router.topology().names();
    for stats in stats::of_loaded(&dataplane, &names, &host).unwrap() {
        let want = expected.get(&stats.slot).copied().unwrap_or_default();
        let reasons = |map: &std::collections::BTreeMap<&'static str, u64>,
                       names: &[&str]|
         -> [u64; REASONS] {
            let mut out = [0; REASONS];
            for (i, name) in names.iter().enumerate() {
                out[i] = map[name];
            }
            out
        };
        let pass_names: Vec<&str> = pop_dataplane_common::PassReason::ALL
            .iter()
            .map(|r| r.name())
            .collect();
        let drop_names: Vec<&str> = pop_dataplane_common::DropReason::ALL
            .iter()
            .map(|r| r.name())
            .collect();
        let got = Expected {
            rx_packets: stats.rx_packets,
            rx_bytes: stats.rx_bytes,
            forwarded_packets: stats.forwarded_packets,
            tx_packets: stats.tx_packets,
            to_kernel: reasons(&stats.to_kernel, &pass_names),
            dropped: reasons(&stats.dropped, &drop_names),
        };
        assert_eq!(got, want, "counters of {}", stats.name);
    }
    // Every rule's hits, exactly; and the martian rules hit when on.
    let mut martian_hits = 0;
    for (id, rule, origin) in router.acl_rules() {
        let got = dataplane.acl_hits(id).unwrap();
        let want = acl_hits.get(&id).copied().unwrap_or_default();
        assert_eq!(got, want, "hits of ACL rule {id}, {rule} ({origin:?})");
        if origin == Origin::Martian {
            martian_hits += got.packets;
        }
    }
    assert_eq!(martian_hits > 0, fib == FibMode::Compiled, "{acl_hits:?}");
    // Every flow rule's counters, exactly.
    for (id, rule, origin, _) in router.flow_rules() {
        let got = dataplane.flow_hits(id).unwrap();
        let want = flow_hits.get(&id).copied().unwrap_or_default();
        assert_eq!(got, want, "counters of flow rule {id}, {rule} ({origin:?})");
    }
    // The mix exercised every kind of outcome.
    for outcome in [
        "forwarded",
        "to kernel",
        "malformed",
        "blackhole",
        "urpf",
        "denied",
        "not ours",
        "flow",
        "flow matched",
    ] {
        assert!(
            outcomes.get(outcome).copied().unwrap_or(0) > 100,
            "too few {outcome}: {outcomes:?}"
        );
    }
    drop(netns);
}
