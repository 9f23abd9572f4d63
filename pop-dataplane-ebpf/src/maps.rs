//! The BPF maps, under the names and capacities of `pop_dataplane_common::maps`. Userspace fills
//! all of them; the program only reads them, except `COUNTERS` and `TRACE`. Each is declared
//! with BTF (`#[btf_map]`), so the kernel knows its key and value types: `bpftool map dump`
//! prints their fields by name.

use aya_ebpf::{
    Global,
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{self, Array, ArrayOfMaps, DevMap, HashMap, LpmTrie, PerCpuArray},
    macros::btf_map,
};
use pop_dataplane_common::{
    Interface, InterfaceCounters, InterfaceKey, Nexthop, NexthopGroup, RouteEntry, TraceRecord,
    acl::{AclEntry, AclHits, AclKeyV4, AclKeyV6},
    fib::{Cell, FIB_MAP_FLAGS},
    flow::{
        BANK_ENTRIES, FlowEntry, FlowHits, FlowKeyV4, FlowKeyV6, FlowList, MAX_FLOW_RULES,
        RateBucket,
    },
    maps::{
        MAX_ACL_ENTRIES, MAX_ACL_RULES, MAX_INTERFACES, MAX_NEXTHOP_GROUPS, MAX_NEXTHOPS,
        MAX_PORT_IFINDEX, MAX_PORTS, MAX_ROUTES_V4, MAX_ROUTES_V6, MAX_VRFS,
    },
};

/// Not preallocated: an update then swaps in a new element instead of rewriting the one a
/// packet may be reading.
#[btf_map]
pub(crate) static INTERFACES: HashMap<
    InterfaceKey,
    Interface,
    { MAX_INTERFACES as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// The untagged entries of `INTERFACES` again, by ifindex: an array read, which the verifier
/// inlines, where the hash costs a call and a hash. Rewritten in place (12 bytes), as
/// `NEXTHOPS` is.
#[btf_map]
pub(crate) static PORTS_BY_IFINDEX: Array<Interface, { MAX_PORT_IFINDEX as usize }> = Array::new();

#[btf_map]
pub(crate) static EGRESS: DevMap<{ MAX_PORTS as usize }> = DevMap::new();

#[btf_map]
pub(crate) static COUNTERS: PerCpuArray<InterfaceCounters, { MAX_INTERFACES as usize }> =
    PerCpuArray::new();

#[btf_map]
pub(crate) static NEXTHOPS: Array<Nexthop, { MAX_NEXTHOPS as usize }> = Array::new();

#[btf_map]
pub(crate) static NEXTHOP_GROUPS: Array<NexthopGroup, { MAX_NEXTHOP_GROUPS as usize }> =
    Array::new();

/// The route tables, one slot each: userspace builds a whole new table in a fresh inner map
/// and swaps it in with one update, so packets never see a half-built table.
pub(crate) type RoutesV4 = LpmTrie<[u8; 4], RouteEntry, { MAX_ROUTES_V4 as usize }>;
pub(crate) type RoutesV6 = LpmTrie<[u8; 16], RouteEntry, { MAX_ROUTES_V6 as usize }>;

#[btf_map]
pub(crate) static ROUTES_V4: ArrayOfMaps<RoutesV4, { MAX_VRFS as usize }> = ArrayOfMaps::new();

#[btf_map]
pub(crate) static ROUTES_V6: ArrayOfMaps<RoutesV6, { MAX_VRFS as usize }> = ArrayOfMaps::new();

/// The compiled FIB (see `pop_dataplane_common::fib`): each family's table is an array of
/// blocks, sized by userspace (an inner map of any size: `BPF_F_INNER_MAP`), swapped in whole
/// like the LPM tries above or edited in place through a mapping (`BPF_F_MMAPABLE`).
pub(crate) type FibCells = btf_maps::Array<Cell, 1, { FIB_MAP_FLAGS as usize }>;

#[btf_map]
pub(crate) static FIB_V4: ArrayOfMaps<FibCells, { MAX_VRFS as usize }> = ArrayOfMaps::new();

#[btf_map]
pub(crate) static FIB_V6: ArrayOfMaps<FibCells, { MAX_VRFS as usize }> = ArrayOfMaps::new();

/// Set by userspace at load time: a `FibMode`, constant for the verifier, which drops the
/// lookup not taken.
#[unsafe(no_mangle)]
pub(crate) static FIB_MODE: Global<u8> = Global::new(0);

#[btf_map]
pub(crate) static TRACE: PerCpuArray<TraceRecord, 1> = PerCpuArray::new();

/// Set by userspace at load time; constant for the verifier.
#[unsafe(no_mangle)]
pub(crate) static ECMP_SEED: Global<u32> = Global::new(0);

/// The ingress source filter, edited in place entry by entry (a rule is one entry per
/// interface; an LPM trie update replaces an element atomically).
#[btf_map]
pub(crate) static ACL_V4: LpmTrie<AclKeyV4, AclEntry, { MAX_ACL_ENTRIES as usize }> =
    LpmTrie::new();

#[btf_map]
pub(crate) static ACL_V6: LpmTrie<AclKeyV6, AclEntry, { MAX_ACL_ENTRIES as usize }> =
    LpmTrie::new();

#[btf_map]
pub(crate) static ACL_HITS: PerCpuArray<AclHits, { MAX_ACL_RULES as usize }> = PerCpuArray::new();

/// Flow rules (see `pop_dataplane_common::flow`): two banks of entries, and per family the
/// lists of entries by destination prefix, each list replaced atomically.
#[btf_map]
pub(crate) static FLOW_ENTRIES: Array<FlowEntry, { 2 * BANK_ENTRIES as usize }> = Array::new();

#[btf_map]
pub(crate) static FLOW_INDEX_V4: LpmTrie<FlowKeyV4, FlowList, { MAX_FLOW_RULES as usize }> =
    LpmTrie::new();

#[btf_map]
pub(crate) static FLOW_INDEX_V6: LpmTrie<FlowKeyV6, FlowList, { MAX_FLOW_RULES as usize }> =
    LpmTrie::new();

#[btf_map]
pub(crate) static FLOW_WILDCARD: Array<u32, { 2 * MAX_VRFS as usize }> = Array::new();

#[btf_map]
pub(crate) static FLOW_HITS: PerCpuArray<FlowHits, { MAX_FLOW_RULES as usize }> =
    PerCpuArray::new();

#[btf_map]
pub(crate) static FLOW_BUCKETS: Array<RateBucket, { MAX_FLOW_RULES as usize }> = Array::new();
