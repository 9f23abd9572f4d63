/// A next hop: where and how a routed packet leaves. The value of `NEXTHOPS`, keyed by id.
///
/// Routes name next hops by id, so a neighbour's MAC changing or its link going down is one
/// write here, whatever the number of routes through it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nexthop {
    /// Slot of the egress interface in `EGRESS` and `COUNTERS`.
    pub egress_slot: u32,
    /// The egress interface's MTU: the largest IP packet it sends. Larger packets go to the
    /// kernel, which fragments them or answers "fragmentation needed" / "packet too big".
    pub mtu: u16,
    /// `Nexthop::RESOLVED` and friends.
    pub flags: u16,
    /// Source MAC of forwarded frames: the egress interface's own address.
    pub src_mac: [u8; 6],
    /// Destination MAC of forwarded frames: the neighbour's address.
    pub dst_mac: [u8; 6],
}

impl Nexthop {
    /// The neighbour's MAC is known. Without it, packets go to the kernel, which resolves it.
    pub const RESOLVED: u16 = 1 << 0;

    pub const fn is_resolved(&self) -> bool {
        self.flags & Self::RESOLVED != 0
    }
}
