//! A reference model of the forwarding decision: plain Rust over byte slices, written from the
//! README's table of what the fast path does and the ECMP hash's specification
//! (`pop_dataplane_common::ecmp`), sharing no code with the XDP program. It uses the map
//! layout types of `pop-dataplane-common` as data, and decodes them itself.
//!
//! Given a frame, the ingress interface and the tables, it says what the program must do:
//! the XDP action, the exact output frame, and which counter moves.

use std::collections::HashMap;

use pop_dataplane_common::{
    Interface, InterfaceKey, Nexthop, NexthopGroup, RouteEntry,
    acl::AclEntry,
    flow::{FlowEntry, FlowList, FlowOp, field},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

/// `NEXTHOP_GROUPS` holds this many groups (`pop_dataplane_common::maps::MAX_NEXTHOP_GROUPS`).
const MAX_GROUPS: u32 = 4096;

/// What the maps hold, as the model reads it.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    pub interfaces: HashMap<InterfaceKey, Interface>,
    /// Port index -> egress ifindex (the devmap).
    pub ports: HashMap<u32, u32>,
    pub nexthops: HashMap<u32, Nexthop>,
    pub groups: HashMap<u32, NexthopGroup>,
    /// Per prefix length, (VRF, network address) -> entry.
    routes_v4: Vec<HashMap<(u16, u32), RouteEntry>>,
    routes_v6: Vec<HashMap<(u16, u128), RouteEntry>>,
    /// The source filter: (interface slot, prefix length, network) -> entry.
    acl_v4: HashMap<(u32, u8, u32), AclEntry>,
    acl_v6: HashMap<(u32, u8, u128), AclEntry>,
    /// Flow rules: entries by index, and lists by (VRF, IPv6?, prefix length, network as
    /// u128).
    flow_entries: HashMap<u32, FlowEntry>,
    flow_lists: Vec<(u16, bool, u8, u128, FlowList)>,
    pub ecmp_seed: u32,
}

/// The counter a frame moves on its ingress interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counted {
    /// Not counted: not one of the dataplane's ports.
    Nothing,
    Forwarded {
        ingress_slot: u32,
        egress_slot: u32,
    },
    /// `PassReason` number.
    ToKernel {
        ingress_slot: u32,
        reason: u32,
    },
    /// `DropReason` number.
    Dropped {
        ingress_slot: u32,
        reason: u32,
    },
    /// Dropped by source filter rule `rule`, for `DropReason` number `reason`.
    Denied {
        ingress_slot: u32,
        reason: u32,
        rule: u32,
    },
}

/// What a frame does to a flow rule's counters: the rule that matched it, and whether the
/// rule dropped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowHit {
    pub rule: u32,
    pub dropped: bool,
}

/// What the program must do with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub action: u32,
    pub frame: Vec<u8>,
    pub counted: Counted,
    pub flow: Option<FlowHit>,
}

// The reason numbers of pop_dataplane_common::counters, restated.
mod pass {
    pub(super) const NON_IP: u32 = 0;
    pub(super) const OTHER_HOST: u32 = 1;
    pub(super) const LINK_MULTICAST: u32 = 2;
    pub(super) const IP_OPTIONS: u32 = 3;
    pub(super) const IP_MULTICAST: u32 = 4;
    pub(super) const LINK_LOCAL: u32 = 5;
    pub(super) const TTL_EXCEEDED: u32 = 6;
    pub(super) const NO_ROUTE: u32 = 7;
    pub(super) const KERNEL_ROUTE: u32 = 8;
    pub(super) const UNRESOLVED: u32 = 9;
    pub(super) const MTU_EXCEEDED: u32 = 10;
    pub(super) const LOCAL: u32 = 11;
    pub(super) const HOP_BY_HOP: u32 = 12;
    pub(super) const NOT_ROUTED: u32 = 13;
    pub(super) const RESERVED: u32 = 14;
}

mod drop {
    pub(super) const MALFORMED: u32 = 0;
    pub(super) const BAD_CHECKSUM: u32 = 1;
    pub(super) const BLACKHOLE: u32 = 2;
    pub(super) const NO_EGRESS: u32 = 3;
    pub(super) const ACL_DENY: u32 = 5;
    pub(super) const MARTIAN_SOURCE: u32 = 6;
    pub(super) const URPF: u32 = 7;
    pub(super) const FLOW: u32 = 8;
}

impl Tables {
    pub fn new(ecmp_seed: u32) -> Self {
        Self {
            routes_v4: vec![HashMap::new(); 33],
            routes_v6: vec![HashMap::new(); 129],
            ecmp_seed,
            ..Self::default()
        }
    }

    /// A route of VRF `vrf`'s table.
    pub fn set_route_v4(&mut self, vrf: u16, network: [u8; 4], len: u8, entry: RouteEntry) {
        let network = mask32(u32::from_be_bytes(network), len);
        self.routes_v4[usize::from(len)].insert((vrf, network), entry);
    }

    pub fn set_route_v6(&mut self, vrf: u16, network: [u8; 16], len: u8, entry: RouteEntry) {
        let network = mask128(u128::from_be_bytes(network), len);
        self.routes_v6[usize::from(len)].insert((vrf, network), entry);
    }

    pub fn delete_route_v4(&mut self, vrf: u16, network: [u8; 4], len: u8) {
        let network = mask32(u32::from_be_bytes(network), len);
        self.routes_v4[usize::from(len)].remove(&(vrf, network));
    }

    pub fn delete_route_v6(&mut self, vrf: u16, network: [u8; 16], len: u8) {
        let network = mask128(u128::from_be_bytes(network), len);
        self.routes_v6[usize::from(len)].remove(&(vrf, network));
    }

    /// A source filter entry for sources in `network`/`len` arriving on interface `slot`.
    pub fn set_acl_v4(&mut self, slot: u32, network: [u8; 4], len: u8, entry: AclEntry) {
        let network = mask32(u32::from_be_bytes(network), len);
        self.acl_v4.insert((slot, len, network), entry);
    }

    pub fn set_acl_v6(&mut self, slot: u32, network: [u8; 16], len: u8, entry: AclEntry) {
        let network = mask128(u128::from_be_bytes(network), len);
        self.acl_v6.insert((slot, len, network), entry);
    }

    /// `FLOW_ENTRIES[index]`.
    pub fn set_flow_entry(&mut self, index: u32, entry: FlowEntry) {
        self.flow_entries.insert(index, entry);
    }

    /// The flow list of a destination prefix in VRF `vrf` (IPv4 addresses in the low 32
    /// bits).
    pub fn set_flow_list(&mut self, vrf: u16, v6: bool, network: u128, len: u8, list: FlowList) {
        self.flow_lists
            .retain(|(v, f, l, n, _)| !(*v == vrf && *f == v6 && *l == len && *n == network));
        self.flow_lists.push((vrf, v6, len, network, list));
    }

    /// The longest source filter entry for `src` on `slot`.
    fn acl(&self, slot: u32, src: Addr) -> Option<AclEntry> {
        match src {
            Addr::V4(src) => {
                let src = u32::from_be_bytes(src);
                (0..=32u8)
                    .rev()
                    .find_map(|len| self.acl_v4.get(&(slot, len, mask32(src, len))).copied())
            }
            Addr::V6(src) => {
                let src = u128::from_be_bytes(src);
                (0..=128u8)
                    .rev()
                    .find_map(|len| self.acl_v6.get(&(slot, len, mask128(src, len))).copied())
            }
        }
    }

    /// Longest prefix match in VRF `vrf`'s table, one prefix length at a time, longest
    /// first.
    pub fn lookup_v4(&self, vrf: u16, addr: [u8; 4]) -> Option<RouteEntry> {
        let addr = u32::from_be_bytes(addr);
        (0..=32u8).rev().find_map(|len| {
            self.routes_v4[usize::from(len)]
                .get(&(vrf, mask32(addr, len)))
                .copied()
        })
    }

    pub fn lookup_v6(&self, vrf: u16, addr: [u8; 16]) -> Option<RouteEntry> {
        let addr = u128::from_be_bytes(addr);
        (0..=128u8).rev().find_map(|len| {
            self.routes_v6[usize::from(len)]
                .get(&(vrf, mask128(addr, len)))
                .copied()
        })
    }

    /// The model: what the program must do with `frame` received on port `ifindex`.
    pub fn forward(&self, ifindex: u32, frame: &[u8]) -> Outcome {
        let unchanged = |action, counted| Outcome {
            action,
            frame: frame.to_vec(),
            counted,
            flow: None,
        };

        // Link header: MACs, up to two VLAN tags.
        let link = parse_link(frame);
        let key = match &link {
            Ok(link) => InterfaceKey {
                ifindex,
                vlan_outer: link.vlans[0],
                vlan_inner: link.vlans[1],
            },
            Err(_) => InterfaceKey::untagged(ifindex),
        };
        let ingress = match self.interfaces.get(&key) {
            Some(ingress) => *ingress,
            None => match self.interfaces.get(&InterfaceKey::untagged(ifindex)) {
                None => return unchanged(XDP_PASS, Counted::Nothing),
                Some(port) => {
                    return unchanged(
                        XDP_PASS,
                        Counted::ToKernel {
                            ingress_slot: port.slot,
                            reason: pass::NOT_ROUTED,
                        },
                    );
                }
            },
        };
        let slot = ingress.slot;
        let to_kernel = |reason| {
            unchanged(
                XDP_PASS,
                Counted::ToKernel {
                    ingress_slot: slot,
                    reason,
                },
            )
        };
        let dropped = |reason| {
            unchanged(
                XDP_DROP,
                Counted::Dropped {
                    ingress_slot: slot,
                    reason,
                },
            )
        };
        let link = match link {
            Ok(link) => link,
            Err(LinkError::Truncated) => return dropped(drop::MALFORMED),
            Err(LinkError::TooManyTags) => return to_kernel(pass::NOT_ROUTED),
        };
        if ingress.flags & Interface::ROUTED == 0 {
            return to_kernel(pass::NOT_ROUTED);
        }
        if link.ether_type != 0x0800 && link.ether_type != 0x86dd {
            return to_kernel(pass::NON_IP);
        }
        if frame[0] & 1 != 0 {
            return to_kernel(pass::LINK_MULTICAST);
        }
        if frame[0..6] != ingress.mac {
            return to_kernel(pass::OTHER_HOST);
        }

        let l3 = link.l3_offset;
        let packet = &frame[l3..];
        let network = if link.ether_type == 0x0800 {
            ipv4(packet)
        } else {
            ipv6(packet)
        };
        let network = match network {
            Ok(network) => network,
            Err(Verdict::ToKernel(reason)) => return to_kernel(reason),
            Err(Verdict::Drop(reason)) => return dropped(reason),
        };
        if let Some(denied) = self.acl(slot, network.src) {
            return unchanged(
                XDP_DROP,
                Counted::Denied {
                    ingress_slot: slot,
                    reason: if denied.kind == AclEntry::MARTIAN {
                        drop::MARTIAN_SOURCE
                    } else {
                        drop::ACL_DENY
                    },
                    rule: denied.rule,
                },
            );
        }
        if !self.reverse_path_ok(&ingress, network.src) {
            return dropped(drop::URPF);
        }
        // The destination, in the ingress interface's VRF only.
        let entry = match network.dst {
            Addr::V4(dst) => self.lookup_v4(ingress.vrf, dst),
            Addr::V6(dst) => self.lookup_v6(ingress.vrf, dst),
        };
        let Some(entry) = entry else {
            return to_kernel(pass::NO_ROUTE);
        };
        // Flow rules of the ingress interface's VRF: the first of those covering the
        // destination that matches.
        let mut frame = frame.to_vec();
        let flow = self.flow_rule(ingress.vrf, packet, &network);
        if let Some(rule) = &flow {
            let hit = |dropped| {
                Some(FlowHit {
                    rule: rule.rule,
                    dropped,
                })
            };
            if rule.action == FlowEntry::DROP {
                return Outcome {
                    action: XDP_DROP,
                    frame,
                    counted: Counted::Dropped {
                        ingress_slot: slot,
                        reason: drop::FLOW,
                    },
                    flow: hit(true),
                };
            }
            if rule.remark != FlowEntry::NO_REMARK {
                set_dscp(&mut frame[l3..], &network, rule.remark);
            }
        }
        let mut outcome = self.route(&frame, &link, &network, entry, slot);
        outcome.flow = flow.map(|rule| FlowHit {
            rule: rule.rule,
            dropped: false,
        });
        outcome
    }

    /// The rest of the decision for a frame whose destination has route `entry`.
    fn route(
        &self,
        frame: &[u8],
        link: &Link,
        network: &Network,
        entry: RouteEntry,
        slot: u32,
    ) -> Outcome {
        let packet = &frame[link.l3_offset..];
        let unchanged = |action, counted| Outcome {
            action,
            frame: frame.to_vec(),
            counted,
            flow: None,
        };
        let to_kernel = |reason| {
            unchanged(
                XDP_PASS,
                Counted::ToKernel {
                    ingress_slot: slot,
                    reason,
                },
            )
        };
        let dropped = |reason| {
            unchanged(
                XDP_DROP,
                Counted::Dropped {
                    ingress_slot: slot,
                    reason,
                },
            )
        };
        let bits = entry.target.to_bits();
        let id = bits & 0x0fff_ffff;
        let nexthop_id = match bits >> 28 {
            1 => id,
            5 => {
                let hash = self.flow_hash(packet, network);
                // An array map: an id never written reads as all zeros (next hop 0).
                if id >= MAX_GROUPS {
                    return to_kernel(pass::UNRESOLVED);
                }
                let group = self.groups.get(&id).copied().unwrap_or_default();
                group.buckets[hash as usize % group.buckets.len()]
            }
            2 => return dropped(drop::BLACKHOLE),
            4 => return to_kernel(pass::LOCAL),
            _ => return to_kernel(pass::KERNEL_ROUTE),
        };
        if network.ttl <= 1 {
            return to_kernel(pass::TTL_EXCEEDED);
        }
        let Some(nexthop) = self.nexthops.get(&nexthop_id).copied() else {
            return to_kernel(pass::UNRESOLVED);
        };
        if nexthop.flags & Nexthop::RESOLVED == 0 {
            return to_kernel(pass::UNRESOLVED);
        }
        if network.length > u32::from(nexthop.mtu) {
            return to_kernel(pass::MTU_EXCEEDED);
        }
        if !self.ports.contains_key(&nexthop.port) {
            // The rewrite happened; the redirect then failed.
            return Outcome {
                action: XDP_DROP,
                frame: rewrite(frame, link, network, &nexthop),
                counted: Counted::Dropped {
                    ingress_slot: slot,
                    reason: drop::NO_EGRESS,
                },
                flow: None,
            };
        }
        Outcome {
            action: XDP_REDIRECT,
            frame: rewrite(frame, link, network, &nexthop),
            counted: Counted::Forwarded {
                ingress_slot: slot,
                egress_slot: nexthop.slot,
            },
            flow: None,
        }
    }

    /// The README's flow rules: of the lists of the VRF whose prefix covers the destination, the
    /// longest; of its entries, in order, the first whose source prefix and every component
    /// match the packet (RFC 8955: a component is a list of terms ORed, AND binding
    /// tighter). A field the packet lacks matches no term.
    fn flow_rule(&self, vrf: u16, packet: &[u8], network: &Network) -> Option<FlowEntry> {
        let (v6, dst, src, bits) = match (network.dst, network.src) {
            (Addr::V4(d), Addr::V4(s)) => (
                false,
                u128::from(u32::from_be_bytes(d)),
                u128::from(u32::from_be_bytes(s)),
                32u8,
            ),
            (Addr::V6(d), Addr::V6(s)) => {
                (true, u128::from_be_bytes(d), u128::from_be_bytes(s), 128)
            }
            _ => unreachable!(),
        };
        let covers =
            |len: u8, net: u128| len == 0 || (dst >> (bits - len)) == (net >> (bits - len));
        let list = self
            .flow_lists
            .iter()
            .filter(|(v, f, len, net, _)| *v == vrf && *f == v6 && covers(*len, *net))
            .max_by_key(|(_, _, len, _, _)| *len)?
            .4;
        let fields = flow_fields(packet, network);
        list.entries[..usize::from(list.len)]
            .iter()
            .filter_map(|index| self.flow_entries.get(&u32::from(*index)))
            .find(|entry| {
                let len = entry.src_len;
                let rule_src = if v6 {
                    u128::from_be_bytes(entry.src)
                } else {
                    u128::from(u32::from_be_bytes(entry.src[..4].try_into().unwrap()))
                };
                let source = len == 0 || (src >> (bits - len)) == (rule_src >> (bits - len));
                source && components_match(&entry.ops, &fields)
            })
            .copied()
    }

    /// The README's uRPF (RFC 3704): off, or the source's best route must exist and not be
    /// a blackhole, must not be the default route unless allowed, and in strict mode must
    /// leave through the ingress interface (a next hop, or any member of an ECMP group, on
    /// it; not the router itself). Routes handed to the kernel pass.
    fn reverse_path_ok(&self, ingress: &Interface, src: Addr) -> bool {
        let strict = ingress.flags & Interface::URPF_STRICT != 0;
        if !strict && ingress.flags & Interface::URPF_LOOSE == 0 {
            return true;
        }
        let route = match src {
            Addr::V4(src) => self.lookup_v4(ingress.vrf, src),
            Addr::V6(src) => self.lookup_v6(ingress.vrf, src),
        };
        let Some(route) = route else {
            return false;
        };
        if route.prefix_len == 0 && ingress.flags & Interface::URPF_ALLOW_DEFAULT == 0 {
            return false;
        }
        let bits = route.target.to_bits();
        let id = bits & 0x0fff_ffff;
        let on_ingress = |nexthop: u32| {
            self.nexthops
                .get(&nexthop)
                .is_some_and(|n| n.slot == ingress.slot)
        };
        match bits >> 28 {
            1 => !strict || on_ingress(id),
            5 => {
                !strict
                    || self
                        .groups
                        .get(&id)
                        .is_some_and(|group| group.buckets.iter().any(|&n| on_ingress(n)))
            }
            2 => false,
            4 => !strict,
            _ => true,
        }
    }

    /// The ECMP flow hash, from its specification.
    fn flow_hash(&self, packet: &[u8], network: &Network) -> u32 {
        let mut words = Vec::with_capacity(10);
        match (network.src, network.dst) {
            (Addr::V4(src), Addr::V4(dst)) => {
                words.push(u32::from_be_bytes(src));
                words.push(u32::from_be_bytes(dst));
            }
            (Addr::V6(src), Addr::V6(dst)) => {
                for chunk in src.chunks(4).chain(dst.chunks(4)) {
                    words.push(u32::from_be_bytes(chunk.try_into().unwrap()));
                }
            }
            _ => unreachable!(),
        }
        let (protocol, ports) = transport(packet, network);
        words.push(u32::from(protocol));
        words.push(ports);
        let mut hash = self.ecmp_seed;
        for word in words {
            hash = (hash ^ word).wrapping_mul(0x9e37_79b1).rotate_left(13);
        }
        hash ^= hash >> 16;
        hash = hash.wrapping_mul(0x85eb_ca6b);
        hash ^= hash >> 13;
        hash = hash.wrapping_mul(0xc2b2_ae35);
        hash ^ (hash >> 16)
    }
}

fn mask32(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask128(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

struct Link {
    ether_type: u16,
    vlans: [u16; 2],
    tags: usize,
    l3_offset: usize,
}

enum LinkError {
    Truncated,
    TooManyTags,
}

fn parse_link(frame: &[u8]) -> Result<Link, LinkError> {
    let be16 = |at: usize| -> Result<u16, LinkError> {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(LinkError::Truncated)
    };
    if frame.len() < 14 {
        return Err(LinkError::Truncated);
    }
    let mut link = Link {
        ether_type: be16(12)?,
        vlans: [0, 0],
        tags: 0,
        l3_offset: 14,
    };
    while link.ether_type == 0x8100 || link.ether_type == 0x88a8 {
        if link.tags == 2 {
            return Err(LinkError::TooManyTags);
        }
        // A tag: TCI, then the next EtherType.
        let tci = be16(link.l3_offset)?;
        let next = be16(link.l3_offset + 2)?;
        link.vlans[link.tags] = tci & 0x0fff;
        link.tags += 1;
        link.l3_offset += 4;
        link.ether_type = next;
    }
    Ok(link)
}

#[derive(Clone, Copy)]
enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

struct Network {
    src: Addr,
    dst: Addr,
    ttl: u8,
    /// The IP length: total length, or 40 + payload length.
    length: u32,
    /// IPv4: protocol; IPv6: next header of the fixed header.
    protocol: u8,
    is_fragment: bool,
    /// Where the IP payload ends, from the start of the IP header.
    end: usize,
    header_len: usize,
}

enum Verdict {
    ToKernel(u32),
    Drop(u32),
}

fn ipv4(packet: &[u8]) -> Result<Network, Verdict> {
    if packet.len() < 20 {
        return Err(Verdict::Drop(drop::MALFORMED));
    }
    let version = packet[0] >> 4;
    let ihl = packet[0] & 0x0f;
    if version != 4 || ihl < 5 {
        return Err(Verdict::Drop(drop::MALFORMED));
    }
    if ihl > 5 {
        return Err(Verdict::ToKernel(pass::IP_OPTIONS));
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total < 20 || total > packet.len() {
        return Err(Verdict::Drop(drop::MALFORMED));
    }
    if checksum(&packet[..20]) != 0 {
        return Err(Verdict::Drop(drop::BAD_CHECKSUM));
    }
    let dst: [u8; 4] = packet[16..20].try_into().unwrap();
    match dst[0] {
        224..=239 => return Err(Verdict::ToKernel(pass::IP_MULTICAST)),
        0 | 127 | 240..=255 => return Err(Verdict::ToKernel(pass::RESERVED)),
        169 if dst[1] == 254 => return Err(Verdict::ToKernel(pass::LINK_LOCAL)),
        _ => {}
    }
    let flags_fragment = u16::from_be_bytes([packet[6], packet[7]]);
    Ok(Network {
        src: Addr::V4(packet[12..16].try_into().unwrap()),
        dst: Addr::V4(dst),
        ttl: packet[8],
        length: total as u32,
        protocol: packet[9],
        is_fragment: flags_fragment & 0x2000 != 0 || flags_fragment & 0x1fff != 0,
        end: total,
        header_len: 20,
    })
}

fn ipv6(packet: &[u8]) -> Result<Network, Verdict> {
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return Err(Verdict::Drop(drop::MALFORMED));
    }
    let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    if 40 + payload > packet.len() {
        return Err(Verdict::Drop(drop::MALFORMED));
    }
    let src: [u8; 16] = packet[8..24].try_into().unwrap();
    let dst: [u8; 16] = packet[24..40].try_into().unwrap();
    if packet[6] == 0 {
        return Err(Verdict::ToKernel(pass::HOP_BY_HOP));
    }
    let link_local = |a: &[u8; 16]| a[0] == 0xfe && a[1] & 0xc0 == 0x80;
    if dst[0] == 0xff {
        return Err(Verdict::ToKernel(pass::IP_MULTICAST));
    }
    if link_local(&dst) || link_local(&src) {
        return Err(Verdict::ToKernel(pass::LINK_LOCAL));
    }
    if u128::from_be_bytes(dst) <= 1 {
        return Err(Verdict::ToKernel(pass::RESERVED));
    }
    Ok(Network {
        src: Addr::V6(src),
        dst: Addr::V6(dst),
        ttl: packet[7],
        length: 40 + payload as u32,
        protocol: packet[6],
        is_fragment: false,
        end: 40 + payload,
        header_len: 40,
    })
}

/// The protocol and ports word the flow hash takes (`ecmp` module documentation).
fn transport(packet: &[u8], network: &Network) -> (u8, u32) {
    let has_ports = |p: u8| matches!(p, 6 | 17 | 132);
    let ports_at = |at: usize| -> u32 {
        if at + 4 <= network.end {
            u32::from_be_bytes(packet[at..at + 4].try_into().unwrap())
        } else {
            0
        }
    };
    if let Addr::V4(_) = network.src {
        if has_ports(network.protocol) && !network.is_fragment {
            return (network.protocol, ports_at(network.header_len));
        }
        return (network.protocol, 0);
    }
    let (next, at) = walk_extensions(packet, network);
    if next == 44 || is_extension(next) || !has_ports(next) {
        return (next, 0);
    }
    (next, ports_at(at))
}

/// IPv6 extension headers the walk moves past (`ecmp` module documentation).
fn is_extension(next_header: u8) -> bool {
    matches!(next_header, 0 | 43 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}

/// The walk past an IPv6 packet's extension headers, at most four: where it stops (at a
/// fragment header, at a header that is none, or at one cut short), and that header.
fn walk_extensions(packet: &[u8], network: &Network) -> (u8, usize) {
    let mut next = network.protocol;
    let mut at = network.header_len;
    for _ in 0..4 {
        if next == 44 || !is_extension(next) || at + 2 > network.end {
            break;
        }
        let (following, len) = (packet[at], usize::from(packet[at + 1]));
        at += if next == 51 {
            (len + 2) * 4
        } else {
            (len + 1) * 8
        };
        next = following;
    }
    (next, at)
}

/// The frame as it leaves for `nexthop`: new MACs and tags, TTL or hop limit one less, the
/// IPv4 header checksum computed afresh.
fn rewrite(frame: &[u8], link: &Link, network: &Network, nexthop: &Nexthop) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 8);
    out.extend_from_slice(&nexthop.dst_mac);
    out.extend_from_slice(&nexthop.src_mac);
    let tags: Vec<(u16, u16)> = match (nexthop.vlan_outer, nexthop.vlan_inner) {
        (0, _) => vec![],
        (outer, 0) => vec![(nexthop.vlan_outer_tpid, outer)],
        (outer, inner) => vec![(nexthop.vlan_outer_tpid, outer), (0x8100, inner)],
    };
    for (tpid, vid) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    out.extend_from_slice(&link.ether_type.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(&frame[link.l3_offset..]);
    match network.src {
        Addr::V4(_) => {
            out[start + 8] -= 1;
            out[start + 10] = 0;
            out[start + 11] = 0;
            let check = checksum(&out[start..start + 20]);
            out[start + 10..start + 12].copy_from_slice(&check.to_be_bytes());
        }
        Addr::V6(_) => out[start + 7] -= 1,
    }
    out
}

/// The Internet checksum (RFC 1071): 0 over a header whose checksum is right.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The fields flow rules test, by `pop_dataplane_common::flow::field` number; `None` where
/// the packet has none (ports of a later fragment, a truncated transport header).
fn flow_fields(packet: &[u8], network: &Network) -> [Option<u16>; field::COUNT] {
    let mut fields = [None; field::COUNT];
    let mut set = |f: u8, v: u16| fields[usize::from(f)] = Some(v);
    let end = network.end;
    let (protocol, transport_at, icmp) = match network.src {
        Addr::V4(_) => {
            let flags_fragment = u16::from_be_bytes([packet[6], packet[7]]);
            let (df, mf, offset) = (
                flags_fragment & 0x4000 != 0,
                flags_fragment & 0x2000 != 0,
                flags_fragment & 0x1fff,
            );
            let mut bits = u16::from(df);
            if mf || offset != 0 {
                bits |= 0x02;
                if offset == 0 {
                    bits |= 0x04;
                }
                if !mf {
                    bits |= 0x08;
                }
            }
            set(field::FRAGMENT, bits);
            set(field::LENGTH, network.length as u16);
            set(field::DSCP, u16::from(packet[1] >> 2));
            (packet[9], (offset == 0).then_some(20), 1u8)
        }
        Addr::V6(_) => {
            set(field::LENGTH, network.length as u16);
            let class = (packet[0] << 4) | (packet[1] >> 4);
            set(field::DSCP, u16::from(class >> 2));
            // Past the extension headers as the flow hash walks them, stopping at a
            // fragment header; its next header is the protocol, and only a first fragment's
            // transport header (right after it) is read.
            let (mut next, at) = walk_extensions(packet, network);
            let mut bits = 0;
            let mut transport_at = Some(at);
            if next == 44 && at + 8 <= end {
                let offset = u16::from_be_bytes([packet[at + 2], packet[at + 3]]) >> 3;
                let more = packet[at + 3] & 1 != 0;
                bits = 0x02 | if offset == 0 { 0x04 } else { 0 } | if more { 0 } else { 0x08 };
                next = packet[at];
                transport_at = (offset == 0).then_some(at + 8);
            }
            set(field::FRAGMENT, bits);
            (next, transport_at, 58u8)
        }
    };
    set(field::PROTOCOL, u16::from(protocol));
    let Some(at) = transport_at else {
        return fields;
    };
    if protocol == icmp {
        if at + 2 <= end {
            set(field::ICMP_TYPE, u16::from(packet[at]));
            set(field::ICMP_CODE, u16::from(packet[at + 1]));
        }
        return fields;
    }
    if matches!(protocol, 6 | 17 | 132) && at + 4 <= end {
        set(
            field::SRC_PORT,
            u16::from_be_bytes([packet[at], packet[at + 1]]),
        );
        set(
            field::DST_PORT,
            u16::from_be_bytes([packet[at + 2], packet[at + 3]]),
        );
        if protocol == 6 && at + 14 <= end {
            set(
                field::TCP_FLAGS,
                u16::from_be_bytes([packet[at + 12] & 0x0f, packet[at + 13]]),
            );
        }
    }
    fields
}

/// Whether every component of an entry's ops holds. A component starts at an op with
/// `FIRST`; within it, a term is a run of ops joined by `AND`; a component holds when one
/// of its terms does.
fn components_match(ops: &[FlowOp], fields: &[Option<u16>; field::COUNT]) -> bool {
    let ops: Vec<&FlowOp> = ops.iter().take_while(|op| op.field != 0).collect();
    let mut components: Vec<Vec<Vec<&FlowOp>>> = Vec::new();
    for op in ops {
        if op.flags & FlowOp::FIRST != 0 || components.is_empty() {
            components.push(vec![vec![op]]);
        } else if op.flags & FlowOp::AND != 0 {
            components.last_mut().unwrap().last_mut().unwrap().push(op);
        } else {
            components.last_mut().unwrap().push(vec![op]);
        }
    }
    components.iter().all(|terms| {
        terms.iter().any(|term| {
            term.iter().all(|op| {
                let Some(value) = fields.get(usize::from(op.field)).copied().flatten() else {
                    return false;
                };
                let wanted = op.value;
                if op.flags & FlowOp::BITMASK != 0 {
                    let hit = if op.flags & FlowOp::MATCH != 0 {
                        value & wanted == wanted
                    } else {
                        value & wanted != 0
                    };
                    hit ^ (op.flags & FlowOp::NOT != 0)
                } else {
                    let less = op.flags & FlowOp::LT != 0 && value < wanted;
                    let greater = op.flags & FlowOp::GT != 0 && value > wanted;
                    let equal = op.flags & FlowOp::EQ != 0 && value == wanted;
                    less || greater || equal
                }
            })
        })
    })
}

/// Writes `dscp` into the packet's DSCP bits; IPv4's header checksum is computed when the
/// frame is rewritten, or here for a frame that is not.
fn set_dscp(packet: &mut [u8], network: &Network, dscp: u8) {
    match network.src {
        Addr::V4(_) => {
            packet[1] = (dscp << 2) | (packet[1] & 0x03);
            packet[10] = 0;
            packet[11] = 0;
            let check = checksum(&packet[..20]);
            packet[10..12].copy_from_slice(&check.to_be_bytes());
        }
        Addr::V6(_) => {
            let class = (dscp << 2) | ((packet[1] >> 4) & 0x03);
            packet[0] = (packet[0] & 0xf0) | (class >> 4);
            packet[1] = (packet[1] & 0x0f) | (class << 4);
        }
    }
}
