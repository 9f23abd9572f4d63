/// A next hop: where and how a routed packet leaves. The value of `NEXTHOPS`, keyed by id.
///
/// Routes name next hops by id (directly or through a group), so a neighbour's MAC changing
/// or its link going down is one write here, whatever the number of routes through it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nexthop {
    /// The egress port's index in `EGRESS` (the devmap).
    pub port: u32,
    /// The egress interface's index in `COUNTERS` (the port, or its VLAN sub-interface).
    pub slot: u32,
    /// The egress interface's MTU: the largest IP packet it sends. Larger packets go to the
    /// kernel, which fragments them or answers "fragmentation needed" / "packet too big".
    pub mtu: u16,
    /// `Nexthop::RESOLVED` and friends.
    pub flags: u16,
    /// VLAN id of the tag to send with, 0 for none. With `vlan_inner`, the outer tag.
    pub vlan_outer: u16,
    /// VLAN id of the inner tag (QinQ), 0 for none.
    pub vlan_inner: u16,
    /// TPID of the outer tag: 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub vlan_outer_tpid: u16,
    /// Source MAC of forwarded frames: the egress interface's own address.
    pub src_mac: [u8; 6],
    /// Destination MAC of forwarded frames: the neighbour's address.
    pub dst_mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl Nexthop {
    /// The neighbour's MAC is known. Without it, packets go to the kernel, which resolves it.
    pub const RESOLVED: u16 = 1 << 0;

    pub const fn is_resolved(&self) -> bool {
        self.flags & Self::RESOLVED != 0
    }

    /// VLAN tags the frame leaves with: 0, 1 or 2.
    pub const fn vlan_tags(&self) -> usize {
        match (self.vlan_outer, self.vlan_inner) {
            (0, _) => 0,
            (_, 0) => 1,
            _ => 2,
        }
    }
}

/// Buckets of an ECMP group: a power of two, so that a hash picks one with a mask.
pub const ECMP_BUCKETS: usize = 64;

/// An ECMP group: the value of `NEXTHOP_GROUPS`. Its members' next-hop ids fill the buckets
/// (each member about equally often); a flow's hash picks a bucket. Taking a member out
/// rewrites only its own buckets, so the other flows stay where they are.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NexthopGroup {
    pub buckets: [u32; ECMP_BUCKETS],
}

// The layout pinned maps carry from one version to the next on take-over.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Nexthop>() == 32);
    assert!(offset_of!(Nexthop, port) == 0);
    assert!(offset_of!(Nexthop, slot) == 4);
    assert!(offset_of!(Nexthop, mtu) == 8);
    assert!(offset_of!(Nexthop, flags) == 10);
    assert!(offset_of!(Nexthop, vlan_outer) == 12);
    assert!(offset_of!(Nexthop, vlan_inner) == 14);
    assert!(offset_of!(Nexthop, vlan_outer_tpid) == 16);
    assert!(offset_of!(Nexthop, src_mac) == 18);
    assert!(offset_of!(Nexthop, dst_mac) == 24);
    assert!(size_of::<NexthopGroup>() == 4 * ECMP_BUCKETS);
};

impl Default for NexthopGroup {
    fn default() -> Self {
        Self {
            buckets: [0; ECMP_BUCKETS],
        }
    }
}
