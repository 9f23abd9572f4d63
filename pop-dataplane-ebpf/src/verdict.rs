//! What the fast path decides for a frame: every step of the decision returns one.

use pop_dataplane_common::{DropReason, PassReason};

/// The outcome for one frame.
#[derive(Clone, Copy)]
pub(crate) enum Verdict {
    /// Headers rewritten; redirect out of `port`, count on interface `slot`.
    Forward { port: u32, slot: u32 },
    /// `XDP_PASS`, frame untouched.
    ToKernel(PassReason),
    /// `XDP_DROP`.
    Drop(DropReason),
}
