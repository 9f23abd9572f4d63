//! `pop-dataplane trace`: builds one packet, runs the loaded XDP program on it with
//! BPF_PROG_TEST_RUN, and tells what the program did: action, matched route, next hop, egress
//! interface and the rewritten headers. It answers from the program and maps that are loaded
//! (pinned by the daemon), not from a copy of the table.

use std::{net::IpAddr, path::Path};

use anyhow::{Context as _, bail};
use aya::maps::{Array, HashMap, Map};
use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep, VlanId};
use ipnet::IpNet;
use pop_dataplane_common::{
    DropReason, Interface, InterfaceKey, Nexthop, PassReason, Route, RouteTarget, TraceRecord,
    maps, nexthop::ECMP_BUCKETS,
};
use serde::Serialize;

use crate::{
    control::topology::interface_name, dataplane::Pinned, host::Host, mac::MacAddr, observe::names,
};

/// The source MAC of traced frames: a neighbour that does not exist.
const TRACE_SOURCE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    Udp,
    Tcp,
    Icmp,
}

/// The packet to trace.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    /// The interface it arrives on: a port, or a VLAN device on one.
    pub ingress: String,
    pub dst: IpAddr,
    pub src: Option<IpAddr>,
    pub protocol: Protocol,
    pub sport: u16,
    pub dport: u16,
    /// A VLAN tag to add on top of `ingress`'s own.
    pub vlan: Option<u16>,
    pub ttl: u8,
}

/// What the program did, as `trace --json` prints it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Trace {
    pub ingress: String,
    /// The VRF the ingress interface routes in, whose table was looked up (`default` for
    /// the default VRF).
    pub vrf: String,
    pub action: &'static str,
    pub xdp_action: u32,
    /// Why it was not forwarded.
    pub reason: Option<&'static str>,
    pub route: Option<TracedRoute>,
    pub nexthop: Option<TracedNexthop>,
    /// The frame as the program left it, in hex.
    pub output: String,
    pub rewritten: Option<Headers>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct TracedRoute {
    pub prefix: String,
    /// `nexthop N`, `group N`, `blackhole`, `kernel` or `local`.
    pub target: String,
    /// The flow hash and bucket, for an ECMP group.
    pub hash: Option<u32>,
    pub bucket: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct TracedNexthop {
    pub id: u32,
    pub egress: String,
    pub port: u32,
    pub src_mac: String,
    pub dst_mac: String,
    pub vlan: Vec<u16>,
    pub mtu: u16,
    pub resolved: bool,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Headers {
    pub dst_mac: String,
    pub src_mac: String,
    pub vlan: Vec<u16>,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 header checksum.
    pub checksum: Option<String>,
}

pub(crate) fn trace(pin_dir: &Path, run_dir: &Path, probe: &Probe) -> anyhow::Result<Trace> {
    Tracer::open(pin_dir, run_dir)?.trace(probe)
}

/// The loaded program and what naming its answers takes, opened once for many probes
/// (`trace --batch`).
pub(crate) struct Tracer {
    pinned: Pinned,
    host: Host,
    saved: Vec<crate::control::topology::NamedInterface>,
    /// `INTERFACES` when opened: the interfaces do not change under a batch.
    entries: Vec<(InterfaceKey, Interface)>,
}

impl Tracer {
    pub(crate) fn open(pin_dir: &Path, run_dir: &Path) -> anyhow::Result<Self> {
        let pinned = Pinned::open(pin_dir)?;
        let host = Host::read_now()?;
        let saved = names::load(run_dir);
        let interfaces: HashMap<_, InterfaceKey, Interface> =
            HashMap::try_from(Map::HashMap(pinned.map(maps::INTERFACES)?))?;
        let entries = interfaces.iter().collect::<Result<_, _>>()?;
        Ok(Self {
            pinned,
            host,
            saved,
            entries,
        })
    }

    pub(crate) fn trace(&self, probe: &Probe) -> anyhow::Result<Trace> {
        let Self {
            pinned,
            host,
            saved,
            entries,
        } = self;
        traced(pinned, host, saved, entries, probe)
    }
}

fn traced(
    pinned: &Pinned,
    host: &Host,
    saved: &[crate::control::topology::NamedInterface],
    entries: &[(InterfaceKey, Interface)],
    probe: &Probe,
) -> anyhow::Result<Trace> {
    let name_of = |(key, interface): &(InterfaceKey, Interface)| {
        interface_name(saved, host, key, interface.slot)
    };

    // Where the frame lands: the port and tags of --in (a dataplane interface, or a host
    // interface), plus --vlan.
    let ingress_key = entries
        .iter()
        .find(|entry| name_of(entry) == probe.ingress)
        .map(|(key, _)| *key)
        .or_else(|| {
            host.link(&probe.ingress)
                .map(|link| InterfaceKey::untagged(link.ifindex))
        })
        .with_context(|| format!("--in {}: no such interface", probe.ingress))?;
    let mut tags = vec_tags(&ingress_key);
    if let Some(vlan) = probe.vlan {
        tags.push(vlan);
    }
    if tags.len() > 2 {
        bail!("more than two VLAN tags");
    }
    let key = InterfaceKey {
        ifindex: ingress_key.ifindex,
        vlan_outer: tags.first().copied().unwrap_or(0),
        vlan_inner: tags.get(1).copied().unwrap_or(0),
    };
    let dst_mac = entries
        .iter()
        .find(|(k, _)| *k == key || *k == InterfaceKey::untagged(key.ifindex))
        .map(|(_, interface)| interface.mac)
        .or_else(|| host.link_by_index(key.ifindex).map(|link| link.mac.0))
        .unwrap_or_default();
    let frame = build(probe, &tags, dst_mac)?;

    let (output, record) = pinned.trace(key.ifindex, &frame)?;
    let nexthops: Array<_, Nexthop> = Array::try_from(Map::Array(pinned.map(maps::NEXTHOPS)?))?;
    let slot_name = |slot: u32| {
        entries
            .iter()
            .find(|(_, interface)| interface.slot == slot)
            .map_or_else(|| format!("slot {slot}"), name_of)
    };

    let route = (record.route_found != 0).then(|| {
        let target = RouteTarget::from_bits(record.route_target);
        let prefix = IpNet::new(probe.dst, record.route_prefix_len as u8)
            .map(|net| net.trunc().to_string())
            .unwrap_or_default();
        let (target, hash, bucket) = match target.decode() {
            Route::Nexthop(id) => (format!("nexthop {id}"), None, None),
            Route::Group(id) => (
                format!("group {id}"),
                Some(record.hash),
                Some(record.hash as usize % ECMP_BUCKETS),
            ),
            Route::Blackhole => ("blackhole".to_owned(), None, None),
            Route::Kernel | Route::Unknown => ("kernel".to_owned(), None, None),
            Route::Local => ("local".to_owned(), None, None),
        };
        TracedRoute {
            prefix,
            target,
            hash,
            bucket,
        }
    });
    let nexthop = match record.nexthop {
        u32::MAX => None,
        id => {
            let nexthop = nexthops
                .get(&id, 0)
                .with_context(|| format!("NEXTHOPS[{id}]"))?;
            let vlan = match nexthop.vlan_tags() {
                0 => vec![],
                1 => vec![nexthop.vlan_outer],
                _ => vec![nexthop.vlan_outer, nexthop.vlan_inner],
            };
            Some(TracedNexthop {
                id,
                egress: slot_name(nexthop.slot),
                port: nexthop.port,
                src_mac: MacAddr(nexthop.src_mac).to_string(),
                dst_mac: MacAddr(nexthop.dst_mac).to_string(),
                vlan,
                mtu: nexthop.mtu,
                resolved: nexthop.is_resolved(),
            })
        }
    };
    let (action, reason) = match record.verdict {
        TraceRecord::FORWARD => ("forward", None),
        TraceRecord::TO_KERNEL => (
            "to_kernel",
            PassReason::ALL
                .iter()
                .find(|r| **r as u32 == record.reason)
                .map(|r| r.name()),
        ),
        _ => (
            "drop",
            DropReason::ALL
                .iter()
                .find(|r| **r as u32 == record.reason)
                .map(|r| r.name()),
        ),
    };
    let rewritten = (action == "forward")
        .then(|| headers(&output.frame))
        .flatten();
    // The VRF's name as the daemon saved it; a VRF it did not name, by its slot.
    let vrf = entries
        .iter()
        .find(|(_, interface)| interface.slot == record.ingress_slot)
        .map_or(0, |(_, interface)| interface.vrf);
    let vrf = match saved.iter().find(|n| n.slot == record.ingress_slot) {
        _ if vrf == 0 => crate::control::vrf::DEFAULT_VRF_NAME.to_owned(),
        Some(crate::control::topology::NamedInterface {
            vrf: Some(name), ..
        }) => name.clone(),
        _ => vrf.to_string(),
    };
    Ok(Trace {
        ingress: if record.ingress_slot == u32::MAX {
            probe.ingress.clone()
        } else {
            slot_name(record.ingress_slot)
        },
        vrf,
        action,
        xdp_action: output.action,
        reason,
        route,
        nexthop,
        output: output.frame.iter().map(|b| format!("{b:02x}")).collect(),
        rewritten,
    })
}

fn vec_tags(key: &InterfaceKey) -> Vec<u16> {
    [key.vlan_outer, key.vlan_inner]
        .into_iter()
        .filter(|&v| v != 0)
        .collect()
}

/// The probe as an Ethernet frame to `dst_mac` with `tags`.
fn build(probe: &Probe, tags: &[u16], dst_mac: [u8; 6]) -> anyhow::Result<Vec<u8>> {
    let vlan =
        |id: u16| VlanId::try_new(id).map_err(|_| anyhow::anyhow!("VLAN id {id} is above 4095"));
    let eth = PacketBuilder::ethernet2(TRACE_SOURCE_MAC, dst_mac);
    let with_ip = |step: Step| -> anyhow::Result<PacketBuilderStep<IpHeaders>> {
        Ok(match (probe.src, probe.dst) {
            (None | Some(IpAddr::V4(_)), IpAddr::V4(dst)) => {
                let src = match probe.src {
                    Some(IpAddr::V4(src)) => src,
                    _ => [198, 18, 0, 1].into(),
                };
                step.ipv4(src.octets(), dst.octets(), probe.ttl)
            }
            (None | Some(IpAddr::V6(_)), IpAddr::V6(dst)) => {
                let src = match probe.src {
                    Some(IpAddr::V6(src)) => src,
                    _ => "2001:2::1".parse().expect("an address"),
                };
                step.ipv6(src.octets(), dst.octets(), probe.ttl)
            }
            _ => bail!("--src and --dst must be of the same family"),
        })
    };
    let ip = match tags {
        [] => with_ip(Step::Eth(eth))?,
        [one] => with_ip(Step::Vlan(eth.single_vlan(vlan(*one)?)))?,
        [outer, inner, ..] => with_ip(Step::Vlan(eth.double_vlan(vlan(*outer)?, vlan(*inner)?)))?,
    };
    let payload = b"pop-dataplane trace";
    let mut frame = Vec::new();
    match probe.protocol {
        Protocol::Udp => ip
            .udp(probe.sport, probe.dport)
            .write(&mut frame, payload)?,
        Protocol::Tcp => ip
            .tcp(probe.sport, probe.dport, 1, 65535)
            .ack(1)
            .write(&mut frame, payload)?,
        Protocol::Icmp => match probe.dst {
            IpAddr::V4(_) => ip.icmpv4_echo_request(1, 1).write(&mut frame, payload)?,
            IpAddr::V6(_) => ip.icmpv6_echo_request(1, 1).write(&mut frame, payload)?,
        },
    }
    Ok(frame)
}

/// The two builder steps an IP header can follow.
enum Step {
    Eth(PacketBuilderStep<etherparse::Ethernet2Header>),
    Vlan(PacketBuilderStep<etherparse::VlanHeader>),
}

impl Step {
    fn ipv4(self, src: [u8; 4], dst: [u8; 4], ttl: u8) -> PacketBuilderStep<IpHeaders> {
        match self {
            Self::Eth(step) => step.ipv4(src, dst, ttl),
            Self::Vlan(step) => step.ipv4(src, dst, ttl),
        }
    }

    fn ipv6(self, src: [u8; 16], dst: [u8; 16], hop_limit: u8) -> PacketBuilderStep<IpHeaders> {
        match self {
            Self::Eth(step) => step.ipv6(src, dst, hop_limit),
            Self::Vlan(step) => step.ipv6(src, dst, hop_limit),
        }
    }
}

/// The link and network header fields a forwarded frame leaves with.
fn headers(frame: &[u8]) -> Option<Headers> {
    let mac = |bytes: &[u8]| MacAddr(bytes.try_into().expect("six bytes")).to_string();
    let mut offset = 12;
    let mut vlan = Vec::new();
    loop {
        let ether_type = u16::from_be_bytes(frame.get(offset..offset + 2)?.try_into().ok()?);
        match ether_type {
            0x8100 | 0x88a8 => {
                let tci = u16::from_be_bytes(frame.get(offset + 2..offset + 4)?.try_into().ok()?);
                vlan.push(tci & 0x0fff);
                offset += 4;
            }
            0x0800 => {
                let ip = frame.get(offset + 2..offset + 22)?;
                return Some(Headers {
                    dst_mac: mac(&frame[0..6]),
                    src_mac: mac(&frame[6..12]),
                    vlan,
                    ttl: ip[8],
                    checksum: Some(format!("0x{:04x}", u16::from_be_bytes([ip[10], ip[11]]))),
                });
            }
            0x86dd => {
                let ip = frame.get(offset + 2..offset + 42)?;
                return Some(Headers {
                    dst_mac: mac(&frame[0..6]),
                    src_mac: mac(&frame[6..12]),
                    vlan,
                    ttl: ip[7],
                    checksum: None,
                });
            }
            _ => return None,
        }
    }
}

/// The trace for a person.
pub(crate) fn render(probe: &Probe, trace: &Trace) -> String {
    let mut out = String::new();
    let proto = match probe.protocol {
        Protocol::Udp => format!("udp {} -> {}", probe.sport, probe.dport),
        Protocol::Tcp => format!("tcp {} -> {}", probe.sport, probe.dport),
        Protocol::Icmp => "icmp echo request".to_owned(),
    };
    let src = probe
        .src
        .map_or_else(|| "default source".to_owned(), |s| s.to_string());
    let vrf = if trace.vrf == crate::control::vrf::DEFAULT_VRF_NAME {
        String::new()
    } else {
        format!(" (vrf {})", trace.vrf)
    };
    out += &format!(
        "packet:    {src} -> {} {proto}, ttl {}, in {}{vrf}\n",
        probe.dst, probe.ttl, trace.ingress
    );
    out += &format!(
        "action:    {}{} (XDP action {})\n",
        trace.action,
        trace.reason.map(|r| format!(" ({r})")).unwrap_or_default(),
        trace.xdp_action
    );
    match &trace.route {
        Some(route) => {
            out += &format!("route:     {} -> {}", route.prefix, route.target);
            if let (Some(hash), Some(bucket)) = (route.hash, route.bucket) {
                out += &format!(" (hash 0x{hash:08x}, bucket {bucket} of {ECMP_BUCKETS})");
            }
            out.push('\n');
        }
        None => out += "route:     none\n",
    }
    if let Some(nexthop) = &trace.nexthop {
        let vlan = if nexthop.vlan.is_empty() {
            String::new()
        } else {
            format!(", vlan {:?}", nexthop.vlan)
        };
        out += &format!(
            "next hop:  {} via {} (port {}), {} -> {}{vlan}, mtu {}{}\n",
            nexthop.id,
            nexthop.egress,
            nexthop.port,
            nexthop.src_mac,
            nexthop.dst_mac,
            nexthop.mtu,
            if nexthop.resolved { "" } else { ", unresolved" }
        );
    }
    if let Some(headers) = &trace.rewritten {
        let vlan = if headers.vlan.is_empty() {
            "untagged".to_owned()
        } else {
            format!("vlan {:?}", headers.vlan)
        };
        out += &format!(
            "rewritten: {} -> {}, {vlan}, ttl {}{}\n",
            headers.src_mac,
            headers.dst_mac,
            headers.ttl,
            headers
                .checksum
                .as_ref()
                .map(|c| format!(", checksum {c}"))
                .unwrap_or_default()
        );
    }
    out
}
