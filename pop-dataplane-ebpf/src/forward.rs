//! The forwarding decision: everything the fast path does to a frame, in order. A frame is
//! either rewritten for its next hop, handed to the kernel untouched, or dropped; each with the
//! reason that the counters record.

use aya_ebpf::programs::XdpContext;
use pop_dataplane_common::{
    DropReason, Interface, InterfaceKey, Nexthop, PassReason, Route, RouteEntry,
    maps::MAX_PORT_IFINDEX, nexthop::ECMP_BUCKETS,
};

use crate::{
    acl, fib, flow, ipv4, ipv6,
    l2::{self, LinkError},
    maps::{ECMP_SEED, INTERFACES, NEXTHOP_GROUPS, NEXTHOPS, PORTS_BY_IFINDEX},
    sample, urpf,
    verdict::Verdict,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

use Verdict::{Drop, ToKernel};

/// What the decision went through, for `trace`.
pub(crate) struct Path {
    /// The ingress interface's counter slot; `None` when the frame is not ours.
    pub(crate) ingress_slot: Option<u32>,
    pub(crate) route: Option<RouteEntry>,
    pub(crate) hash: u32,
    pub(crate) nexthop: Option<u32>,
    /// The ACL rule that dropped the frame.
    pub(crate) acl_rule: Option<u32>,
    /// The flow rule that matched the frame.
    pub(crate) flow_rule: Option<u32>,
    /// A real frame, not a trace: flow rules count it and take it from their rate limits.
    pub(crate) counting: bool,
    /// Picked for an sFlow sample: its record waits for the verdict.
    pub(crate) sampled: bool,
}

/// The network header's fields, for the steps that differ by family.
enum Network {
    V4(ipv4::Ipv4),
    V6(ipv6::Ipv6),
}

/// Decides what happens to the frame in `ctx` and, when it is to be forwarded, rewrites it
/// for its next hop. `None` when the frame did not arrive on one of our ports.
#[inline(always)]
pub(crate) fn forward(ctx: &XdpContext, len: usize, path: &mut Path) -> Option<Verdict> {
    let ifindex = ctx.ingress_ifindex() as u32;
    // Read before the frame: the port's entry does not depend on it, so the CPU fetches both
    // at once (the frame's first bytes are usually a cache miss).
    let port = port(ifindex);
    let link = l2::parse(ctx);

    // The ingress interface: the port's, or its VLAN sub-interface's. Frames we cannot place
    // on a configured interface are still counted on their port.
    let key = match &link {
        Ok(link) => InterfaceKey {
            ifindex,
            vlan_outer: link.vlan_outer,
            vlan_inner: link.vlan_inner,
        },
        Err(_) => InterfaceKey::untagged(ifindex),
    };
    let (ingress, placed) = match interface(&key, port) {
        Some(ingress) => (ingress, true),
        None => (interface(&InterfaceKey::untagged(ifindex), port)?, false),
    };
    path.ingress_slot = Some(ingress.slot);
    // Sampled on arrival, before anything is rewritten.
    path.sampled = sample::capture(ctx, ingress.slot, len, path.counting);
    if !placed {
        return Some(ToKernel(PassReason::NotRouted));
    }
    let link = match link {
        Ok(link) => link,
        Err(LinkError::Truncated) => return Some(Drop(DropReason::Malformed)),
        Err(LinkError::TooManyTags) => return Some(ToKernel(PassReason::NotRouted)),
    };
    Some(match route(ctx, len, &ingress, &link, path) {
        Ok(verdict) | Err(verdict) => verdict,
    })
}

/// What `PORTS_BY_IFINDEX` says of port `ifindex`: `Some(None)` for no port of ours, `None`
/// when it does not cover the ifindex.
#[inline(always)]
fn port(ifindex: u32) -> Option<Option<Interface>> {
    if ifindex >= MAX_PORT_IFINDEX {
        return None;
    }
    let entry = PORTS_BY_IFINDEX.get(ifindex).copied().unwrap_or_default();
    Some(entry.is_port_entry().then_some(entry))
}

/// The interface of `key`: the port's entry for an untagged frame, when `PORTS_BY_IFINDEX`
/// covers it, else the `INTERFACES` one.
#[inline(always)]
fn interface(key: &InterfaceKey, port: Option<Option<Interface>>) -> Option<Interface> {
    if let (Some(port), Some(_)) = (port, key.port_index()) {
        return port;
    }
    // SAFETY: the map is not preallocated: an entry read is never reused under us.
    unsafe { INTERFACES.get(key) }.copied()
}

#[inline(always)]
fn route(
    ctx: &XdpContext,
    len: usize,
    ingress: &Interface,
    link: &l2::Link,
    path: &mut Path,
) -> Result<Verdict, Verdict> {
    if !ingress.is_routed() {
        return Err(ToKernel(PassReason::NotRouted));
    }
    if link.ether_type != ETH_P_IP && link.ether_type != ETH_P_IPV6 {
        return Err(ToKernel(PassReason::NonIp));
    }
    if link.dst[0] & 1 != 0 {
        return Err(ToKernel(PassReason::LinkMulticast));
    }
    if link.dst != ingress.mac {
        return Err(ToKernel(PassReason::OtherHost));
    }

    let l3 = link.l3_offset();
    let network = if link.ether_type == ETH_P_IP {
        Network::V4(ipv4::inspect(ctx, l3, len)?)
    } else {
        Network::V6(ipv6::inspect(ctx, l3, len)?)
    };

    // The source filter: the operator's deny rules and, when on, martian sources; looked up
    // only on interfaces that have entries.
    let denied = match &network {
        Network::V4(ip) => acl::check_v4(ingress, ip.src),
        Network::V6(ip) => acl::check_v6(ingress, ip.src),
    };
    if let Some(rule) = denied {
        path.acl_rule = Some(rule.rule);
        return Err(Drop(acl::reason(&rule)));
    }

    // The reverse-path check, on interfaces that have it, in the ingress interface's VRF.
    if ingress.checks_reverse_path() {
        let back = match &network {
            Network::V4(ip) => fib::lookup_v4(ingress.vrf, ip.src),
            Network::V6(ip) => fib::lookup_v6(ingress.vrf, ip.src),
        };
        if !urpf::accepts(ingress, back) {
            return Err(Drop(DropReason::Urpf));
        }
    }

    // The destination, in the ingress interface's VRF only.
    let entry = match &network {
        Network::V4(ip) => fib::lookup_v4(ingress.vrf, ip.dst),
        Network::V6(ip) => fib::lookup_v6(ingress.vrf, ip.dst),
    }
    .ok_or(ToKernel(PassReason::NoRoute))?;
    path.route = Some(entry);

    // Flow rules, for routes that some rule's destination overlaps.
    let checked = match &network {
        Network::V4(ip) => {
            flow::check_v4(ctx, l3, ip, ingress.vrf, &entry, len as u64, path.counting)
        }
        Network::V6(ip) => {
            flow::check_v6(ctx, l3, ip, ingress.vrf, &entry, len as u64, path.counting)
        }
    };
    let passed = match checked {
        Ok(passed) => passed,
        Err((verdict, rule)) => {
            path.flow_rule = Some(rule);
            return Err(verdict);
        }
    };
    path.flow_rule = passed.rule;
    if let Some(dscp) = passed.remark {
        match &network {
            Network::V4(_) => ipv4::set_dscp(ctx, l3, dscp),
            Network::V6(_) => ipv6::set_dscp(ctx, l3, dscp),
        }
        .ok_or(Drop(DropReason::RewriteFailed))?;
    }

    let nexthop_id = match entry.target.decode() {
        Route::Nexthop(id) => id,
        Route::Group(group) => {
            let seed = ECMP_SEED.load();
            path.hash = match &network {
                Network::V4(ip) => ipv4::flow_hash(ctx, l3, ip, seed),
                Network::V6(ip) => ipv6::flow_hash(ctx, l3, ip, seed),
            };
            let group = NEXTHOP_GROUPS
                .get(group)
                .ok_or(ToKernel(PassReason::Unresolved))?;
            group.buckets[path.hash as usize % ECMP_BUCKETS]
        }
        Route::Local => return Err(ToKernel(PassReason::Local)),
        Route::Blackhole => return Err(Drop(DropReason::Blackhole)),
        Route::Kernel | Route::Unknown => return Err(ToKernel(PassReason::KernelRoute)),
    };
    path.nexthop = Some(nexthop_id);

    let (ttl, ip_len) = match &network {
        Network::V4(ip) => (ip.ttl, u32::from(ip.total_len)),
        Network::V6(ip) => (ip.hop_limit, ip.total_len()),
    };
    if ttl <= 1 {
        return Err(ToKernel(PassReason::TtlExceeded));
    }
    let nexthop: Nexthop = *NEXTHOPS
        .get(nexthop_id)
        .ok_or(ToKernel(PassReason::Unresolved))?;
    if !nexthop.is_resolved() {
        return Err(ToKernel(PassReason::Unresolved));
    }
    if ip_len > u32::from(nexthop.mtu) {
        return Err(ToKernel(PassReason::MtuExceeded));
    }

    // Commit: from here on the frame is ours to send.
    match &network {
        Network::V4(_) => ipv4::decrement_ttl(ctx, l3),
        Network::V6(_) => ipv6::decrement_hop_limit(ctx, l3),
    }
    .ok_or(Drop(DropReason::RewriteFailed))?;
    l2::rewrite(ctx, link, &nexthop).map_err(|()| Drop(DropReason::RewriteFailed))?;
    // Counted here, where the next hop is known: the frame as sent, its tags pushed or popped.
    let sent = len + nexthop.vlan_tags() * l2::VLAN_HLEN - link.tags * l2::VLAN_HLEN;
    sample::count_nexthop(nexthop_id, sent as u64);
    Ok(Verdict::Forward {
        port: nexthop.port,
        slot: nexthop.slot,
    })
}
