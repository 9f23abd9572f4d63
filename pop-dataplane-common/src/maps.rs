//! Names and capacities of the BPF maps. The eBPF crate declares each map under exactly the name
//! given here; userspace opens them by these names.

/// `HASH`: [`crate::InterfaceKey`] (port ifindex and VLAN tags) -> [`crate::Interface`]. A
/// frame whose port has no entry at all is not ours: it goes to the kernel untouched and
/// uncounted.
pub const INTERFACES: &str = "INTERFACES";

/// `ARRAY`: port ifindex -> the [`crate::Interface`] of its untagged side, with
/// [`crate::Interface::PORT_ENTRY`] set; all zero for an ifindex that is no port of ours. A
/// copy of `INTERFACES`' untagged entries for ifindexes below [`MAX_PORT_IFINDEX`], so that
/// an untagged frame's interface is an array read instead of a hash lookup. A frame on a
/// port with a larger ifindex, or a tagged one, is looked up in `INTERFACES`.
pub const PORTS_BY_IFINDEX: &str = "PORTS_BY_IFINDEX";

/// `DEVMAP`: port index -> egress ifindex, the target of `bpf_redirect_map`.
pub const EGRESS: &str = "EGRESS";

/// `PERCPU_ARRAY`: interface slot -> [`crate::InterfaceCounters`].
pub const COUNTERS: &str = "COUNTERS";

/// `ARRAY`: next-hop id -> [`crate::Nexthop`].
pub const NEXTHOPS: &str = "NEXTHOPS";

/// `ARRAY`: group id -> [`crate::NexthopGroup`].
pub const NEXTHOP_GROUPS: &str = "NEXTHOP_GROUPS";

/// `ARRAY_OF_MAPS`, a slot per VRF: `LPM_TRIE`, IPv4 prefix (address in network byte order)
/// -> [`crate::RouteEntry`].
pub const ROUTES_V4: &str = "ROUTES_V4";

/// `ARRAY_OF_MAPS`, a slot per VRF: `LPM_TRIE`, IPv6 prefix -> [`crate::RouteEntry`].
pub const ROUTES_V6: &str = "ROUTES_V6";

/// `PERCPU_ARRAY`, one entry: the [`crate::TraceRecord`] of the last traced frame.
pub const TRACE: &str = "TRACE";

/// Global (`.rodata`, set at load): the seed of the ECMP flow hash.
pub const ECMP_SEED: &str = "ECMP_SEED";

/// `LPM_TRIE`: [`crate::acl::AclKeyV4`] (ingress slot, source prefix) -> [`crate::acl::AclEntry`].
pub const ACL_V4: &str = "ACL_V4";

/// `LPM_TRIE`: [`crate::acl::AclKeyV6`] -> [`crate::acl::AclEntry`].
pub const ACL_V6: &str = "ACL_V6";

/// `PERCPU_ARRAY`: rule -> [`crate::acl::AclHits`].
pub const ACL_HITS: &str = "ACL_HITS";

/// Interface slots: ports and VLAN sub-interfaces, each with one counter entry.
pub const MAX_INTERFACES: u32 = 1024;

/// Ports: attached physical interfaces, each with one devmap entry.
pub const MAX_PORTS: u32 = 256;

/// The ifindexes `PORTS_BY_IFINDEX` covers: `0..MAX_PORT_IFINDEX`. Linux numbers the
/// interfaces of each network namespace from 1, so a router host's ports fall far below.
pub const MAX_PORT_IFINDEX: u32 = 4096;

/// VRFs: routing tables bound to interfaces (`Interface::vrf`), each a slot of the route
/// table maps, `0..MAX_VRFS`. A slot without a table has no routes: its frames go to the
/// kernel.
pub const MAX_VRFS: u32 = 1024;

/// Next-hop ids are `0..MAX_NEXTHOPS`.
pub const MAX_NEXTHOPS: u32 = 65_536;

/// ECMP group ids are `0..MAX_NEXTHOP_GROUPS`.
pub const MAX_NEXTHOP_GROUPS: u32 = 4096;

/// IPv4 routes. The global table holds about 1.0-1.2 million prefixes today.
pub const MAX_ROUTES_V4: u32 = 2 * 1024 * 1024;

/// IPv6 routes. The global table holds about 230-280 thousand prefixes today.
pub const MAX_ROUTES_V6: u32 = 1024 * 1024;

/// ACL rules (deny rules and martian prefixes) are `0..MAX_ACL_RULES`.
pub const MAX_ACL_RULES: u32 = 4096;

/// ACL entries per family: each rule for every interface is one entry per routed interface.
pub const MAX_ACL_ENTRIES: u32 = 65_536;
