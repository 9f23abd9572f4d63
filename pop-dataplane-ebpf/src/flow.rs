//! Flow rules (see `pop_dataplane_common::flow`): for a packet whose route carries the flow
//! flag, the rules covering its destination, in order; the first that matches acts.

use core::ffi::c_void;

use aya_ebpf::{
    btf_maps::PerCpuArray,
    helpers::{bpf_ktime_get_ns, generated::bpf_loop},
    macros::btf_map,
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use pop_dataplane_common::{
    DropReason, RouteEntry,
    ecmp::{IPPROTO_FRAGMENT, IPPROTO_TCP, has_ports},
    flow::{
        FLOW_KEY_VRF_BITS, FlowEntry, FlowKeyV4, FlowKeyV6, FlowList, FlowOp, LIST_ENTRIES,
        MAX_OPS, WILDCARD_V4, WILDCARD_V6, field, flow_key_v4, fragment, wildcard_index,
        write_flow_key_v6,
    },
};

use crate::{
    ipv4::Ipv4,
    ipv6::{self, Ipv6},
    maps::{FLOW_BUCKETS, FLOW_ENTRIES, FLOW_HITS, FLOW_INDEX_V4, FLOW_INDEX_V6, FLOW_WILDCARD},
    packet::header,
    verdict::Verdict::{self, Drop},
};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;

/// A packet's fields, as the ops test them: `values[field]`, valid where `present` has bit
/// `field`.
struct Fields {
    present: u16,
    values: [u16; field::COUNT],
}

impl Fields {
    #[inline(always)]
    fn set(&mut self, field: u8, value: u16) {
        self.present |= 1 << field;
        self.values[usize::from(field)] = value;
    }
}

/// What the rules decided for a packet that goes on: the rule that matched (for `trace`),
/// and the DSCP to write.
pub(crate) struct Passed {
    pub(crate) rule: Option<u32>,
    pub(crate) remark: Option<u8>,
}

const NONE_PASSED: Passed = Passed {
    rule: None,
    remark: None,
};

/// This CPU's scratch, its fields cleared for a new packet.
#[inline(always)]
fn fresh_search() -> Option<&'static mut Search> {
    let search = FLOW_SEARCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, used by this run alone.
    let search = unsafe { &mut *search };
    search.fields.present = 0;
    Some(search)
}

/// The fragment bits of a fragment: the first (offset 0), the last (no more after it).
#[inline(always)]
fn fragment_bits(first: bool, more: bool) -> u16 {
    let mut bits = fragment::IS_FRAGMENT;
    if first {
        bits |= fragment::FIRST_FRAGMENT;
    }
    if !more {
        bits |= fragment::LAST_FRAGMENT;
    }
    bits
}

/// Whether packets to this route, routed in VRF `vrf`, must be checked: the route is flagged,
/// or the VRF has rules of the family without a destination.
#[inline(always)]
fn wanted(vrf: u16, route: &RouteEntry, family: u32) -> bool {
    route.checks_flows()
        || FLOW_WILDCARD
            .get(wildcard_index(vrf, family))
            .is_some_and(|&on| on != 0)
}

/// Checks an IPv4 packet against the rules. `counting`: a real packet (not a trace), which
/// moves counters and rate limits.
#[inline(always)]
pub(crate) fn check_v4(
    ctx: &XdpContext,
    l3: usize,
    ip: &Ipv4,
    vrf: u16,
    route: &RouteEntry,
    bytes: u64,
    counting: bool,
) -> Result<Passed, (Verdict, u32)> {
    if !wanted(vrf, route, WILDCARD_V4) {
        return Ok(NONE_PASSED);
    }
    let Some(search) = fresh_search() else {
        return Ok(NONE_PASSED);
    };
    // The key in the scratch: the stack has no room for it.
    search.key_v4.prefix_len = FLOW_KEY_VRF_BITS + 32;
    search.key_v4.data = flow_key_v4(vrf, ip.dst);
    let Some(list) = FLOW_INDEX_V4.get(&search.key_v4) else {
        return Ok(NONE_PASSED);
    };
    let fields = &mut search.fields;
    fields.set(field::PROTOCOL, u16::from(ip.protocol));
    fields.set(field::LENGTH, ip.total_len);
    fields.set(field::DSCP, u16::from(ip.tos >> 2));
    let more = ip.frags & 0x2000 != 0;
    let mut bits = 0;
    if ip.frags & 0x4000 != 0 {
        bits |= fragment::DONT_FRAGMENT;
    }
    if ip.is_fragment {
        bits |= fragment_bits(!ip.is_later_fragment(), more);
    }
    fields.set(field::FRAGMENT, bits);
    if !ip.is_later_fragment() {
        transport(
            ctx,
            l3 + 20,
            l3 + usize::from(ip.total_len),
            ip.protocol,
            IPPROTO_ICMP,
            fields,
        );
    }
    search.src = [u64::from(u32::from_be_bytes(ip.src)) << 32, 0];
    search.v6 = false;
    decide(search as *mut Search, list, bytes, counting)
}

/// Checks an IPv6 packet against the rules, as [`check_v4`].
#[inline(always)]
pub(crate) fn check_v6(
    ctx: &XdpContext,
    l3: usize,
    ip: &Ipv6,
    vrf: u16,
    route: &RouteEntry,
    bytes: u64,
    counting: bool,
) -> Result<Passed, (Verdict, u32)> {
    if !wanted(vrf, route, WILDCARD_V6) {
        return Ok(NONE_PASSED);
    }
    let Some(search) = fresh_search() else {
        return Ok(NONE_PASSED);
    };
    search.key_v6.prefix_len = FLOW_KEY_VRF_BITS + 128;
    write_flow_key_v6(&mut search.key_v6.data, vrf, &ip.dst);
    let Some(list) = FLOW_INDEX_V6.get(&search.key_v6) else {
        return Ok(NONE_PASSED);
    };
    let fields = &mut search.fields;
    fields.set(field::LENGTH, ip.payload_len.wrapping_add(40));
    fields.set(field::DSCP, u16::from(ip.traffic_class >> 2));
    let upper = ipv6::upper_layer(ctx, l3, ip);
    let mut protocol = upper.next;
    let mut at = upper.at;
    let mut bits = 0;
    if upper.next == IPPROTO_FRAGMENT && at + 8 <= upper.end {
        // The fragment header: next header, reserved, offset (13 bits) | res | M, id.
        if let Some(frag) = header::<[u8; 4]>(ctx, at) {
            // SAFETY: `header` checked the bounds.
            let [following, _, high, low] = unsafe { *frag };
            let offset = u16::from_be_bytes([high, low]) >> 3;
            let more = low & 1 != 0;
            bits |= fragment_bits(offset == 0, more);
            protocol = following;
            // Only the first fragment carries the transport header.
            at = if offset == 0 { at + 8 } else { usize::MAX };
        }
    }
    fields.set(field::FRAGMENT, bits);
    fields.set(field::PROTOCOL, u16::from(protocol));
    if at != usize::MAX {
        transport(ctx, at, upper.end, protocol, IPPROTO_ICMPV6, fields);
    }
    search.src = [
        u64::from_be_bytes([
            ip.src[0], ip.src[1], ip.src[2], ip.src[3], ip.src[4], ip.src[5], ip.src[6], ip.src[7],
        ]),
        u64::from_be_bytes([
            ip.src[8], ip.src[9], ip.src[10], ip.src[11], ip.src[12], ip.src[13], ip.src[14],
            ip.src[15],
        ]),
    ];
    search.v6 = true;
    decide(search as *mut Search, list, bytes, counting)
}

/// The transport header's fields, at `at` (its end no later than `end`).
#[inline(always)]
fn transport(ctx: &XdpContext, at: usize, end: usize, protocol: u8, icmp: u8, fields: &mut Fields) {
    if protocol == icmp {
        if at + 2 <= end
            && let Some(l4) = header::<[u8; 2]>(ctx, at)
        {
            // SAFETY: `header` checked the bounds.
            let [kind, code] = unsafe { *l4 };
            fields.set(field::ICMP_TYPE, u16::from(kind));
            fields.set(field::ICMP_CODE, u16::from(code));
        }
        return;
    }
    if !(has_ports(protocol) || protocol == IPPROTO_SCTP) || at + 4 > end {
        return;
    }
    let Some(l4) = header::<[u8; 4]>(ctx, at) else {
        return;
    };
    // SAFETY: `header` checked the bounds.
    let [s0, s1, d0, d1] = unsafe { *l4 };
    fields.set(field::SRC_PORT, u16::from_be_bytes([s0, s1]));
    fields.set(field::DST_PORT, u16::from_be_bytes([d0, d1]));
    if protocol == IPPROTO_TCP
        && at + 14 <= end
        && let Some(tcp) = header::<[u8; 14]>(ctx, at)
    {
        // SAFETY: `header` checked the bounds.
        let tcp = unsafe { &*tcp };
        fields.set(
            field::TCP_FLAGS,
            u16::from_be_bytes([tcp[12] & 0x0f, tcp[13]]),
        );
    }
}

#[inline(always)]
fn prefix_v4(src: u32, entry: &FlowEntry) -> bool {
    let len = u32::from(entry.src_len);
    if len == 0 {
        return true;
    }
    let rule = u32::from_be_bytes([entry.src[0], entry.src[1], entry.src[2], entry.src[3]]);
    let mask = u32::MAX << (32 - len.min(32));
    src & mask == rule
}

#[inline(always)]
fn prefix_v6(src: u128, entry: &FlowEntry) -> bool {
    let len = u32::from(entry.src_len);
    if len == 0 {
        return true;
    }
    let rule = u128::from_be_bytes(entry.src);
    let mask = u128::MAX << (128 - len.min(128));
    src & mask == rule
}

/// The first entry of `list` that matches the packet in `search`, and its action.
#[inline(always)]
fn decide(
    search: *mut Search,
    list: &FlowList,
    bytes: u64,
    counting: bool,
) -> Result<Passed, (Verdict, u32)> {
    let len = u32::from(list.len).min(LIST_ENTRIES as u32);
    // A helper loop: the verifier checks one pass of the callback, not one per entry. The
    // callback reaches `search` through the map, so it is written and read here through
    // the pointer, with no reference held across the call.
    // SAFETY: `search` is this CPU's scratch entry; the callback matches the helper's
    // signature and takes no context.
    let found = unsafe {
        // As words: a plain copy of the array compiles to a byte-by-byte memmove.
        let from = &*(&raw const list.entries).cast::<[u64; LIST_ENTRIES / 4]>();
        let to = &raw mut (*search).entries;
        for (i, word) in from.iter().enumerate() {
            core::ptr::write_volatile(to.cast::<u64>().add(i), *word);
        }
        (*search).found = 0;
        bpf_loop(len, check_entry as *mut c_void, core::ptr::null_mut(), 0);
        core::ptr::read_volatile(&raw const (*search).found)
    };
    if found == 0 {
        return Ok(NONE_PASSED);
    }
    let Some(entry) = FLOW_ENTRIES.get(found - 1) else {
        return Ok(NONE_PASSED);
    };
    act(entry, bytes, counting)
}

/// The scratch space of the rule check, per CPU: the program's own, not shared with
/// userspace, not pinned.
#[btf_map]
static FLOW_SEARCH: PerCpuArray<Search, 1> = PerCpuArray::new();

/// The per-CPU scratch of a rule check (`FLOW_SEARCH`: too large for the stack): the
/// packet's fields and source, the list's entries, and the entry found (its index + 1; 0
/// for none).
#[repr(C, align(8))]
struct Search {
    /// The `FLOW_INDEX` keys of the packet's VRF and destination (bytes 0, 1 and 20.. stay 0).
    key_v4: Key<FlowKeyV4>,
    key_v6: Key<FlowKeyV6>,
    entries: [u16; LIST_ENTRIES],
    fields: Fields,
    /// The source address, big-endian in two words (an IPv4 one in the top half of the
    /// first).
    src: [u64; 2],
    v6: bool,
    found: u32,
    /// The entry whose ops [`check_op`] applies, and where its evaluation stands: the OR of
    /// the current component's finished AND-runs, the run under way, whether a component
    /// has begun, and whether one failed.
    entry: u32,
    any: bool,
    run: bool,
    open: bool,
    failed: bool,
}

/// The `bpf_loop` callback: whether entry `index` of the list matches; 1 (stop) when it
/// does.
extern "C" fn check_entry(index: u64, _: *mut c_void) -> i64 {
    let Some(scratch) = FLOW_SEARCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, used by this run alone. Read through the pointer after the
    // entry's lookup, not through a reference before it: a value read early would be kept
    // across the helper call on the stack, which is near the verifier's bound here.
    let Some(&id) = (unsafe { (*scratch).entries.get(index as usize) }) else {
        return 1;
    };
    let Some(entry) = FLOW_ENTRIES.get(u32::from(id)) else {
        return 0;
    };
    // SAFETY: as above.
    let source = unsafe {
        let high = core::ptr::read_volatile(&raw const (*scratch).src[0]);
        if (*scratch).v6 {
            let low = core::ptr::read_volatile(&raw const (*scratch).src[1]);
            prefix_v6((u128::from(high) << 64) | u128::from(low), entry)
        } else {
            prefix_v4((high >> 32) as u32, entry)
        }
    };
    if source && ops_match(scratch, u32::from(id)) {
        // SAFETY: as above; no reference to the scratch is used after this.
        unsafe { (*scratch).found = u32::from(id) + 1 };
        return 1;
    }
    0
}

/// Whether every component of entry `id` holds for the packet in `search`: each component a
/// run of ops, ORed, where AND binds tighter (RFC 8955 4.2.1.1). One op per pass of a helper
/// loop, as for the entries.
#[inline(always)]
fn ops_match(search: *mut Search, id: u32) -> bool {
    // SAFETY: as in `decide`.
    unsafe {
        (*search).entry = id;
        (*search).any = false;
        (*search).run = true;
        (*search).open = false;
        (*search).failed = false;
        bpf_loop(
            MAX_OPS as u32,
            check_op as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
        let failed = core::ptr::read_volatile(&raw const (*search).failed);
        let open = core::ptr::read_volatile(&raw const (*search).open);
        let any = core::ptr::read_volatile(&raw const (*search).any);
        let run = core::ptr::read_volatile(&raw const (*search).run);
        !failed && (!open || any || run)
    }
}

/// The `bpf_loop` callback of [`ops_match`]: applies op `index` of the entry under test; 1
/// (stop) at the end of its ops or at a component that failed.
extern "C" fn check_op(index: u64, _: *mut c_void) -> i64 {
    let Some(search) = FLOW_SEARCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, used by this run alone.
    let search = unsafe { &mut *search };
    let Some(entry) = FLOW_ENTRIES.get(search.entry) else {
        search.failed = true;
        return 1;
    };
    let Some(op) = entry.ops.get(index as usize) else {
        return 1;
    };
    if op.field == 0 {
        return 1;
    }
    let field = usize::from(op.field);
    let hit = match search.fields.values.get(field) {
        Some(&value) => search.fields.present & (1 << field) != 0 && op.test(value),
        None => false,
    };
    if op.flags & FlowOp::FIRST != 0 {
        if search.open && !(search.any || search.run) {
            search.failed = true;
            return 1;
        }
        search.any = false;
        search.run = hit;
        search.open = true;
    } else if op.flags & FlowOp::AND != 0 {
        search.run = search.run && hit;
    } else {
        search.any = search.any || search.run;
        search.run = hit;
    }
    0
}

/// Applies the matching entry's action, and counts it.
#[inline(always)]
fn act(entry: &FlowEntry, bytes: u64, counting: bool) -> Result<Passed, (Verdict, u32)> {
    let rule = entry.rule;
    let dropped = match entry.action {
        FlowEntry::DROP => Some(DropReason::Flow),
        FlowEntry::RATE_PACKETS | FlowEntry::RATE_BYTES if counting => {
            let cost = if entry.action == FlowEntry::RATE_BYTES {
                bytes
            } else {
                1
            };
            (!within_rate(entry, cost)).then_some(DropReason::FlowRateLimit)
        }
        _ => None,
    };
    if counting && let Some(hits) = FLOW_HITS.get_ptr_mut(rule) {
        // SAFETY: per-CPU: no other program run touches this CPU's entry while we run.
        let hits = unsafe { &mut *hits };
        hits.matched_packets += 1;
        hits.matched_bytes += bytes;
        if dropped.is_some() {
            hits.dropped_packets += 1;
            hits.dropped_bytes += bytes;
        }
    }
    if let Some(reason) = dropped {
        return Err((Drop(reason), rule));
    }
    Ok(Passed {
        rule: Some(rule),
        remark: (entry.remark != FlowEntry::NO_REMARK).then_some(entry.remark),
    })
}

/// Takes `cost` from the rule's budget for the current time slot. The bucket is shared by
/// the CPUs, and read and written without atomics (the BPF target's `core` has none for
/// 64 bits): two CPUs passing the same rule's packets at the same instant may each count
/// over the other's update, so under contention a little more than the budget may pass.
#[inline(always)]
fn within_rate(entry: &FlowEntry, cost: u64) -> bool {
    let Some(bucket) = FLOW_BUCKETS.get_ptr_mut(entry.rule) else {
        return true;
    };
    if entry.slot_ns == 0 {
        return true;
    }
    // SAFETY: the helper reads the clock.
    let slot = unsafe { bpf_ktime_get_ns() } / entry.slot_ns;
    // SAFETY: the entry lives as long as the map; see above for the sharing.
    let bucket = unsafe { &mut *bucket };
    if bucket.slot != slot {
        bucket.slot = slot;
        bucket.used = 0;
    }
    if bucket.used + cost > entry.budget {
        return false;
    }
    bucket.used += cost;
    true
}
