/// An interface the XDP program is attached to: the value of `INTERFACES`, keyed by ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    /// Dense index of this interface in `EGRESS` and `COUNTERS`, `0..MAX_INTERFACES`.
    pub slot: u32,
    /// The interface's own MAC address. A unicast frame to any other address is not for this
    /// router to forward (it reached us only because the port is promiscuous or flooded).
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl Interface {
    pub const fn new(slot: u32, mac: [u8; 6]) -> Self {
        Self {
            slot,
            mac,
            _pad: [0; 2],
        }
    }
}
