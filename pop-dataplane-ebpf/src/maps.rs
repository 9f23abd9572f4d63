//! The BPF maps, under the names and capacities of `pop_dataplane_common::maps`. Userspace fills
//! all of them; the program only reads them, except `COUNTERS` and `TRACE`.

use aya_ebpf::{
    Global,
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{self, ArrayOfMaps, LpmTrie},
    macros::{btf_map, map},
    maps::{Array, DevMap, HashMap, LpmTrie as LpmTrieMap, PerCpuArray},
};
use pop_dataplane_common::{
    Interface, InterfaceCounters, InterfaceKey, Nexthop, NexthopGroup, RouteEntry, TraceRecord,
    acl::{AclEntry, AclHits, AclKeyV4, AclKeyV6},
    fib::{Cell, FIB_MAP_FLAGS},
    flow::{BANK_ENTRIES, FlowEntry, FlowHits, FlowList, MAX_FLOW_RULES, RateBucket},
    maps::{
        MAX_ACL_ENTRIES, MAX_ACL_RULES, MAX_INTERFACES, MAX_NEXTHOP_GROUPS, MAX_NEXTHOPS,
        MAX_PORT_IFINDEX, MAX_PORTS, MAX_ROUTES_V4, MAX_ROUTES_V6,
    },
};

/// Not preallocated: an update then swaps in a new element instead of rewriting the one a
/// packet may be reading.
#[map]
pub(crate) static INTERFACES: HashMap<InterfaceKey, Interface> =
    HashMap::with_max_entries(MAX_INTERFACES, BPF_F_NO_PREALLOC);

/// The untagged entries of `INTERFACES` again, by ifindex: an array read, which the verifier
/// inlines, where the hash costs a call and a hash. Rewritten in place (12 bytes), as
/// `NEXTHOPS` is.
#[map]
pub(crate) static PORTS_BY_IFINDEX: Array<Interface> = Array::with_max_entries(MAX_PORT_IFINDEX, 0);

#[map]
pub(crate) static EGRESS: DevMap = DevMap::with_max_entries(MAX_PORTS, 0);

#[map]
pub(crate) static COUNTERS: PerCpuArray<InterfaceCounters> =
    PerCpuArray::with_max_entries(MAX_INTERFACES, 0);

#[map]
pub(crate) static NEXTHOPS: Array<Nexthop> = Array::with_max_entries(MAX_NEXTHOPS, 0);

#[map]
pub(crate) static NEXTHOP_GROUPS: Array<NexthopGroup> =
    Array::with_max_entries(MAX_NEXTHOP_GROUPS, 0);

/// The route tables, one slot each: userspace builds a whole new table in a fresh inner map
/// and swaps it in with one update, so packets never see a half-built table.
pub(crate) type RoutesV4 = LpmTrie<[u8; 4], RouteEntry, { MAX_ROUTES_V4 as usize }>;
pub(crate) type RoutesV6 = LpmTrie<[u8; 16], RouteEntry, { MAX_ROUTES_V6 as usize }>;

#[btf_map]
pub(crate) static ROUTES_V4: ArrayOfMaps<RoutesV4, 1> = ArrayOfMaps::new();

#[btf_map]
pub(crate) static ROUTES_V6: ArrayOfMaps<RoutesV6, 1> = ArrayOfMaps::new();

/// The compiled FIB (see `pop_dataplane_common::fib`): each family's table is an array of
/// blocks, sized by userspace (an inner map of any size: `BPF_F_INNER_MAP`), swapped in whole
/// like the LPM tries above or edited in place through a mapping (`BPF_F_MMAPABLE`).
pub(crate) type FibCells = btf_maps::Array<Cell, 1, { FIB_MAP_FLAGS as usize }>;

#[btf_map]
pub(crate) static FIB_V4: ArrayOfMaps<FibCells, 1> = ArrayOfMaps::new();

#[btf_map]
pub(crate) static FIB_V6: ArrayOfMaps<FibCells, 1> = ArrayOfMaps::new();

/// Set by userspace at load time: a `FibMode`, constant for the verifier, which drops the
/// lookup not taken.
#[unsafe(no_mangle)]
pub(crate) static FIB_MODE: Global<u8> = Global::new(0);

#[map]
pub(crate) static TRACE: PerCpuArray<TraceRecord> = PerCpuArray::with_max_entries(1, 0);

/// Set by userspace at load time; constant for the verifier.
#[unsafe(no_mangle)]
pub(crate) static ECMP_SEED: Global<u32> = Global::new(0);

/// The ingress source filter, edited in place entry by entry (a rule is one entry per
/// interface; an LPM trie update replaces an element atomically).
#[map]
pub(crate) static ACL_V4: LpmTrieMap<AclKeyV4, AclEntry> =
    LpmTrieMap::with_max_entries(MAX_ACL_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
pub(crate) static ACL_V6: LpmTrieMap<AclKeyV6, AclEntry> =
    LpmTrieMap::with_max_entries(MAX_ACL_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
pub(crate) static ACL_HITS: PerCpuArray<AclHits> = PerCpuArray::with_max_entries(MAX_ACL_RULES, 0);

/// Flow rules (see `pop_dataplane_common::flow`): two banks of entries, and per family the
/// lists of entries by destination prefix, each list replaced atomically.
#[map]
pub(crate) static FLOW_ENTRIES: Array<FlowEntry> = Array::with_max_entries(2 * BANK_ENTRIES, 0);

#[map]
pub(crate) static FLOW_INDEX_V4: LpmTrieMap<[u8; 4], FlowList> =
    LpmTrieMap::with_max_entries(MAX_FLOW_RULES, BPF_F_NO_PREALLOC);

#[map]
pub(crate) static FLOW_INDEX_V6: LpmTrieMap<[u8; 16], FlowList> =
    LpmTrieMap::with_max_entries(MAX_FLOW_RULES, BPF_F_NO_PREALLOC);

#[map]
pub(crate) static FLOW_WILDCARD: Array<u32> = Array::with_max_entries(2, 0);

#[map]
pub(crate) static FLOW_HITS: PerCpuArray<FlowHits> =
    PerCpuArray::with_max_entries(MAX_FLOW_RULES, 0);

#[map]
pub(crate) static FLOW_BUCKETS: Array<RateBucket> = Array::with_max_entries(MAX_FLOW_RULES, 0);
