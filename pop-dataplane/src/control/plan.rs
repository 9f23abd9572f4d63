//! Changes to the dataplane's maps, as the daemon decides them and the dataplane performs
//! them, in order. Whoever builds a list puts a next hop or group before the routes that
//! point at it, and removes a route before what it pointed at.

use ipnet::IpNet;
use pop_dataplane_common::{
    Interface, InterfaceKey, Nexthop, NexthopGroup, RouteEntry, acl::AclEntry,
};

use crate::control::acl::AclKey;

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
    Route(IpNet, RouteEntry),
    DeleteRoute(IpNet),
    /// `ACL_V4`/`ACL_V6`: the source filter entry for (slot, source prefix).
    Acl(AclKey, AclEntry),
    DeleteAcl(AclKey),
    /// Zero the hit counters of an ACL rule id handed to a new rule.
    ResetAclHits(u32),
}
