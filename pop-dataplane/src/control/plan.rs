//! The plan: changes to the dataplane's maps, as the control plane decides them and the
//! dataplane layer performs them, in order. Whoever builds a list puts a next hop or group
//! before the routes that point at it, and removes a route before what it pointed at. Also
//! what flows the other way: what a running dataplane's maps hold when a new daemon takes
//! it over.

use ipnet::IpNet;
use pop_dataplane_common::{
    Interface, InterfaceKey, Nexthop, NexthopGroup, RouteEntry,
    acl::AclEntry,
    flow::{FlowEntry, FlowList},
};

use crate::control::{
    acl::{AclEntries, AclKey},
    topology::Port,
    vrf::VrfId,
};

/// One change to one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapWrite {
    /// `INTERFACES[key] = interface`.
    Interface(InterfaceKey, Interface),
    DeleteInterface(InterfaceKey),
    /// `EGRESS[port] = ifindex`.
    Port(u32, u32),
    /// Zero the counters of a slot handed to a new interface.
    ResetCounters(u32),
    /// `NEXTHOPS[id]`; an all-zero value clears it.
    Nexthop(u32, Nexthop),
    /// `NEXTHOP_GROUPS[id]`. Boxed: a group is large and rare, routes are many and small.
    Group(u32, Box<NexthopGroup>),
    /// A route of VRF `.0`'s table.
    Route(VrfId, IpNet, RouteEntry),
    DeleteRoute(VrfId, IpNet),
    /// `ACL_V4`/`ACL_V6`: the source filter entry for (slot, source prefix).
    Acl(AclKey, AclEntry),
    DeleteAcl(AclKey),
    /// Zero the hit counters of an ACL rule id handed to a new rule.
    ResetAclHits(u32),
    /// `FLOW_ENTRIES`: bank `bank`'s entries from index 0 (no list points past them).
    FlowEntries {
        bank: u32,
        entries: Vec<FlowEntry>,
    },
    /// `FLOW_INDEX_V4`/`_V6`: the list of a destination prefix in a VRF.
    FlowList(VrfId, IpNet, FlowList),
    DeleteFlowList(VrfId, IpNet),
    /// `FLOW_WILDCARD`: whether every packet of the family (IPv4, IPv6) routed in the VRF is
    /// checked.
    FlowWildcard(VrfId, [bool; 2]),
    /// Zero the counters and the rate bucket of a flow rule id handed to a new rule.
    ResetFlowRule(u32),
}

/// A move to a new config: what to write before the route tables are swapped, the complete
/// new route tables, and what to write after; and the ports to attach to and detach from.
#[derive(Debug, Default)]
pub struct Update {
    pub before: Vec<MapWrite>,
    /// Groups and every route, for fresh tables.
    pub tables: Vec<MapWrite>,
    pub after: Vec<MapWrite>,
    pub ports_added: Vec<Port>,
    pub ports_removed: Vec<Port>,
}

/// What the maps of a running dataplane hold when this daemon takes it over: the ids and
/// slots that new tables must leave alone until they are swapped in.
#[derive(Clone, Debug, Default)]
pub struct Adopted {
    /// What its ACL maps hold.
    pub acl: AclEntries,
    /// Next-hop and group ids in use.
    pub nexthops: Vec<u32>,
    pub groups: Vec<u32>,
    /// `INTERFACES` entries.
    pub interfaces: Vec<(InterfaceKey, Interface)>,
    /// `EGRESS` entries: (port index, ifindex).
    pub ports: Vec<(u32, u32)>,
    /// The flow lists' (VRF, prefix), and the bank they point at.
    pub flow_lists: Vec<(VrfId, IpNet)>,
    pub flow_bank: u32,
}

/// Writes that clear next hops and groups no table uses any more.
pub fn clear_ids(
    nexthops: impl Iterator<Item = u32>,
    groups: impl Iterator<Item = u32>,
) -> Vec<MapWrite> {
    nexthops
        .map(|id| MapWrite::Nexthop(id, Nexthop::default()))
        .chain(groups.map(|id| MapWrite::Group(id, Box::default())))
        .collect()
}
