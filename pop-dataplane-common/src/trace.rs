//! `pop-dataplane trace` runs the loaded program on one frame with BPF_PROG_TEST_RUN. It puts
//! [`TRACE_MAGIC`] in the frame's XDP metadata; the program, seeing it, writes what it
//! decided into `TRACE`. Real traffic carries no such metadata and writes nothing.

/// The metadata word that asks for a trace record.
pub const TRACE_MAGIC: u32 = 0x7472_6163; // "trac"

/// What the program did with a traced frame: the value of `TRACE` (per-CPU, one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceRecord {
    /// [`TRACE_MAGIC`] once written.
    pub magic: u32,
    /// [`TraceRecord::FORWARD`], [`TraceRecord::TO_KERNEL`] or [`TraceRecord::DROP`].
    pub verdict: u32,
    /// The `PassReason` or `DropReason`, when not forwarded.
    pub reason: u32,
    /// `COUNTERS` slot of the ingress interface, `u32::MAX` if it is not ours.
    pub ingress_slot: u32,
    /// The matched route's target bits and prefix length; `route_found` 0 when none matched.
    pub route_target: u32,
    pub route_prefix_len: u32,
    pub route_found: u32,
    /// The flow hash (ECMP), when a group was consulted.
    pub hash: u32,
    /// The next hop used, `u32::MAX` if none.
    pub nexthop: u32,
}

// Read back by `trace` from a program of the same version or (on take-over) an older one.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<TraceRecord>() == 36);
    assert!(offset_of!(TraceRecord, nexthop) == 32);
};

impl TraceRecord {
    pub const FORWARD: u32 = 0;
    pub const TO_KERNEL: u32 = 1;
    pub const DROP: u32 = 2;
}
