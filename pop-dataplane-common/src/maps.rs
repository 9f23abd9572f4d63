//! Names and capacities of the BPF maps. The eBPF crate declares each map under exactly the name
//! given here; userspace opens them by these names.

/// `HASH`: ingress ifindex (`u32`) -> [`crate::Interface`]. Interfaces not in it are not ours:
/// their packets go to the kernel untouched and uncounted.
pub const INTERFACES: &str = "INTERFACES";

/// `DEVMAP`: interface slot -> egress ifindex, the target of `bpf_redirect_map`.
pub const EGRESS: &str = "EGRESS";

/// `PERCPU_ARRAY`: interface slot -> [`crate::InterfaceCounters`].
pub const COUNTERS: &str = "COUNTERS";

/// `ARRAY`: next-hop id -> [`crate::Nexthop`].
pub const NEXTHOPS: &str = "NEXTHOPS";

/// `LPM_TRIE`: IPv4 prefix (destination address in network byte order) -> [`crate::RouteTarget`].
pub const ROUTES_V4: &str = "ROUTES_V4";

/// Interface slots: attached interfaces, each with one devmap entry and one counter entry.
pub const MAX_INTERFACES: u32 = 256;

/// Next-hop ids are `0..MAX_NEXTHOPS`.
pub const MAX_NEXTHOPS: u32 = 65_536;

/// IPv4 routes. The global table holds about 1.0-1.2 million prefixes today.
pub const MAX_ROUTES_V4: u32 = 2 * 1024 * 1024;
