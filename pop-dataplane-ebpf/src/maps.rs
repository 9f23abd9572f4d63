//! The BPF maps, under the names and capacities of `pop_dataplane_common::maps`. Userspace fills
//! all of them; the program only reads them, except the counters.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, DevMap, HashMap, LpmTrie, PerCpuArray},
};
use pop_dataplane_common::{
    Interface, InterfaceCounters, Nexthop, RouteTarget,
    maps::{MAX_INTERFACES, MAX_NEXTHOPS, MAX_ROUTES_V4},
};

/// Not preallocated: an update then swaps in a new element instead of rewriting the one a
/// packet may be reading.
#[map]
pub static INTERFACES: HashMap<u32, Interface> =
    HashMap::with_max_entries(MAX_INTERFACES, BPF_F_NO_PREALLOC);

#[map]
pub static EGRESS: DevMap = DevMap::with_max_entries(MAX_INTERFACES, 0);

#[map]
pub static COUNTERS: PerCpuArray<InterfaceCounters> =
    PerCpuArray::with_max_entries(MAX_INTERFACES, 0);

#[map]
pub static NEXTHOPS: Array<Nexthop> = Array::with_max_entries(MAX_NEXTHOPS, 0);

/// Keyed by the destination address in network byte order.
#[map]
pub static ROUTES_V4: LpmTrie<[u8; 4], RouteTarget> = LpmTrie::with_max_entries(MAX_ROUTES_V4, 0);
