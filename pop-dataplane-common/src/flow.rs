//! Flow rules: matches on the FlowSpec components (RFC 8955 for IPv4, RFC 8956 for IPv6) with
//! an action, as the XDP program reads them.
//!
//! Checking a packet against the rules costs nothing unless its route's leaf carries
//! [`crate::RouteEntry::FLOW`]: the control plane sets it on every route that overlaps some
//! rule's destination prefix (or, for rules without one, the family's flag in
//! `FLOW_WILDCARD` says to check every packet). A flagged packet's destination is then looked
//! up in the family's `FLOW_INDEX`, whose entries are the rules' destination prefixes: each
//! holds the [`FlowList`] of entries, in RFC 8955 section 5.1 order, of every rule whose
//! destination covers that prefix. The first entry that matches decides.
//!
//! Entries live in `FLOW_ENTRIES`, in two banks: a new rule set is written to the bank the
//! lists do not point at, then the lists are rewritten to point at it, each list one atomic
//! update, so a packet sees the old rules or the new ones.

/// `ARRAY`: entry index (bank * [`BANK_ENTRIES`] + index) -> [`FlowEntry`].
pub const FLOW_ENTRIES: &str = "FLOW_ENTRIES";
/// `LPM_TRIE`: (VRF, IPv4 destination prefix), as [`FlowKeyV4`] -> [`FlowList`].
pub const FLOW_INDEX_V4: &str = "FLOW_INDEX_V4";
/// `LPM_TRIE`: (VRF, IPv6 destination prefix), as [`FlowKeyV6`] -> [`FlowList`].
pub const FLOW_INDEX_V6: &str = "FLOW_INDEX_V6";
/// `ARRAY`, two entries per VRF (`vrf * 2 +` [`WILDCARD_V4`] or [`WILDCARD_V6`]): 1 when some
/// rule of the VRF and family has no destination prefix, so that every packet of the family
/// routed in the VRF is checked.
pub const FLOW_WILDCARD: &str = "FLOW_WILDCARD";

/// The key data of `FLOW_INDEX_V4`: the VRF (big-endian u32, the first 32 bits of every
/// prefix, so that a VRF's rules cover only its packets), then the destination.
pub type FlowKeyV4 = [u8; 8];
/// The key data of `FLOW_INDEX_V6`: the VRF, the destination, and 4 bytes no prefix reaches
/// (the key data a multiple of 8 bytes, as aya's BTF LPM trie wants).
pub type FlowKeyV6 = [u8; 24];
/// Bits of a key before the destination: its prefix length is these plus the prefix's.
pub const FLOW_KEY_VRF_BITS: u32 = 32;

/// The `FLOW_INDEX_V4` key data of `addr` in VRF `vrf`.
#[inline(always)]
pub const fn flow_key_v4(vrf: u16, addr: [u8; 4]) -> FlowKeyV4 {
    let [v0, v1] = vrf.to_be_bytes();
    [0, 0, v0, v1, addr[0], addr[1], addr[2], addr[3]]
}

/// The `FLOW_INDEX_V6` key data of `addr` in VRF `vrf`.
#[inline(always)]
pub fn flow_key_v6(vrf: u16, addr: [u8; 16]) -> FlowKeyV6 {
    let mut key = [0u8; 24];
    write_flow_key_v6(&mut key, vrf, &addr);
    key
}

/// Writes the VRF and address of a `FLOW_INDEX_V6` key in place (the program's key lives in
/// its per-CPU scratch: the stack has no room for it). Bytes 0, 1 and 20.. are left as
/// they are: zero.
#[inline(always)]
pub fn write_flow_key_v6(key: &mut FlowKeyV6, vrf: u16, addr: &[u8; 16]) {
    let [v0, v1] = vrf.to_be_bytes();
    key[2] = v0;
    key[3] = v1;
    key[4..20].copy_from_slice(addr);
}

/// The `FLOW_WILDCARD` index of VRF `vrf`'s flag for a family ([`WILDCARD_V4`] or
/// [`WILDCARD_V6`]).
#[inline(always)]
pub const fn wildcard_index(vrf: u16, family: u32) -> u32 {
    vrf as u32 * 2 + family
}
/// `PERCPU_ARRAY`: rule id -> [`FlowHits`].
pub const FLOW_HITS: &str = "FLOW_HITS";
/// `ARRAY`: rule id -> [`RateBucket`], shared by the CPUs.
pub const FLOW_BUCKETS: &str = "FLOW_BUCKETS";

/// Rule ids are `0..MAX_FLOW_RULES`.
pub const MAX_FLOW_RULES: u32 = 4096;
/// Entries per bank. A rule takes one entry, two if it has a `port` component (the packet's
/// source port or its destination port: one entry each).
pub const BANK_ENTRIES: u32 = 8192;
/// Ops of one entry, over all its components.
pub const MAX_OPS: usize = 24;
/// Entries a [`FlowList`] holds: the rules covering one destination, wildcard rules included.
pub const LIST_ENTRIES: usize = 28;

/// Index in `FLOW_WILDCARD`.
pub const WILDCARD_V4: u32 = 0;
pub const WILDCARD_V6: u32 = 1;

/// A packet field a [`FlowOp`] tests. Numbered by the program's field array, not by the
/// FlowSpec component type (the `port` component is two entries, one per port).
pub mod field {
    /// IP protocol, or IPv6's upper-layer protocol (after the extension headers).
    pub const PROTOCOL: u8 = 1;
    pub const DST_PORT: u8 = 2;
    pub const SRC_PORT: u8 = 3;
    /// ICMP or ICMPv6.
    pub const ICMP_TYPE: u8 = 4;
    pub const ICMP_CODE: u8 = 5;
    /// The 12 bits after the TCP data offset: flags, NS and the reserved bits.
    pub const TCP_FLAGS: u8 = 6;
    /// The IP packet's length, header included (IPv4 total length; IPv6 payload length + 40).
    pub const LENGTH: u8 = 7;
    pub const DSCP: u8 = 8;
    /// [`super::fragment`] bits.
    pub const FRAGMENT: u8 = 9;
    /// Fields are `1..COUNT`.
    pub const COUNT: usize = 10;
}

/// The bits of the fragment field (RFC 8955 4.2.2.12).
pub mod fragment {
    pub const DONT_FRAGMENT: u16 = 0x01;
    pub const IS_FRAGMENT: u16 = 0x02;
    pub const FIRST_FRAGMENT: u16 = 0x04;
    pub const LAST_FRAGMENT: u16 = 0x08;
}

/// One {operator, value} test of a field (RFC 8955 4.2.1): `field` 0 ends an entry's ops.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowOp {
    pub field: u8,
    pub flags: u8,
    pub value: u16,
}

impl FlowOp {
    /// Numeric: true when the field equals, is greater than, or is less than `value`; any
    /// combination (all three: always true; none: always false).
    pub const EQ: u8 = 1 << 0;
    pub const GT: u8 = 1 << 1;
    pub const LT: u8 = 1 << 2;
    /// Bitmask instead of numeric: `(field & value) != 0`, or with [`FlowOp::MATCH`]
    /// `(field & value) == value`; [`FlowOp::NOT`] negates.
    pub const BITMASK: u8 = 1 << 3;
    pub const MATCH: u8 = 1 << 4;
    pub const NOT: u8 = 1 << 5;
    /// ANDed with the previous op (AND binds tighter than OR); else ORed.
    pub const AND: u8 = 1 << 6;
    /// The first op of a component: the ops before it form another component, and an entry
    /// matches only if every component does.
    pub const FIRST: u8 = 1 << 7;

    /// Whether this op holds for a field's `value`.
    #[inline(always)]
    pub const fn test(self, value: u16) -> bool {
        if self.flags & Self::BITMASK != 0 {
            let masked = value & self.value;
            let hit = if self.flags & Self::MATCH != 0 {
                masked == self.value
            } else {
                masked != 0
            };
            hit != (self.flags & Self::NOT != 0)
        } else {
            (self.flags & Self::EQ != 0 && value == self.value)
                || (self.flags & Self::GT != 0 && value > self.value)
                || (self.flags & Self::LT != 0 && value < self.value)
        }
    }
}

/// One compiled rule (or half of one with a `port` component): what the program checks
/// beyond the destination, which its list already matched.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    /// The rule's id: its index in `FLOW_HITS` and `FLOW_BUCKETS`.
    pub rule: u32,
    /// [`FlowEntry::ACCEPT`] and friends.
    pub action: u8,
    /// The DSCP to write into a packet it passes, or [`FlowEntry::NO_REMARK`].
    pub remark: u8,
    /// Length of the source prefix; 0 matches any source.
    pub src_len: u8,
    pub _pad: u8,
    /// The source prefix (IPv4 in the first four bytes), host bits zero.
    pub src: [u8; 16],
    /// Rate limits: packets or bytes a time slot of `slot_ns` may pass.
    pub budget: u64,
    pub slot_ns: u64,
    pub ops: [FlowOp; MAX_OPS],
}

impl FlowEntry {
    /// Pass the packet on (to forwarding, or to the kernel where its route says so).
    pub const ACCEPT: u8 = 0;
    /// Drop it: `dropped.flow`.
    pub const DROP: u8 = 1;
    /// Pass at most `budget` packets, or bytes, each `slot_ns`; drop the rest:
    /// `dropped.flow_rate_limit`.
    pub const RATE_PACKETS: u8 = 2;
    pub const RATE_BYTES: u8 = 3;
    pub const NO_REMARK: u8 = 0xff;
}

impl Default for FlowEntry {
    fn default() -> Self {
        Self {
            rule: 0,
            action: Self::ACCEPT,
            remark: Self::NO_REMARK,
            src_len: 0,
            _pad: 0,
            src: [0; 16],
            budget: 0,
            slot_ns: 0,
            ops: [FlowOp::default(); MAX_OPS],
        }
    }
}

/// The entries to check for destinations under one `FLOW_INDEX` prefix, in order. Aligned
/// so that the program copies `entries` as words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowList {
    pub len: u16,
    pub _pad: [u16; 3],
    pub entries: [u16; LIST_ENTRIES],
}

/// What a rule matched and dropped; one entry per rule and CPU in `FLOW_HITS`. What it
/// passed is the difference.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowHits {
    pub matched_packets: u64,
    pub matched_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

impl core::ops::Add for FlowHits {
    type Output = Self;

    /// Two CPUs' counters together.
    fn add(self, other: Self) -> Self {
        Self {
            matched_packets: self.matched_packets + other.matched_packets,
            matched_bytes: self.matched_bytes + other.matched_bytes,
            dropped_packets: self.dropped_packets + other.dropped_packets,
            dropped_bytes: self.dropped_bytes + other.dropped_bytes,
        }
    }
}

/// A rate-limited rule's window: the time slot it counts in, and what passed in it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateBucket {
    pub slot: u64,
    pub used: u64,
}

// The layout pinned maps carry from one version to the next on take-over.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<FlowOp>() == 4);
    assert!(offset_of!(FlowEntry, src) == 8);
    assert!(offset_of!(FlowEntry, budget) == 24);
    assert!(offset_of!(FlowEntry, ops) == 40);
    assert!(size_of::<FlowEntry>() == 40 + 4 * MAX_OPS);
    assert!(offset_of!(FlowList, entries) == 8);
    assert!(size_of::<FlowList>() == 8 + 2 * LIST_ENTRIES);
    assert!(LIST_ENTRIES.is_multiple_of(4));
    assert!(size_of::<FlowHits>() == 32);
    assert!(size_of::<RateBucket>() == 16);
    // List entries are u16s: both banks' indices fit.
    assert!(2 * BANK_ENTRIES <= u16::MAX as u32 + 1);
};
