//! Bounds-checked access to the frame. Every header is reached through [`header`], which
//! proves to the verifier that the whole header lies inside the frame's linear part.

use core::mem::size_of;

use aya_ebpf::{helpers::generated::bpf_xdp_get_buff_len, programs::XdpContext};

/// A pointer to a `T` at `offset` bytes into the frame, or `None` when the frame is too short.
/// `T` must be a header type valid for any bytes, with alignment 1 or 2.
#[inline(always)]
pub(crate) fn header<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Length of the whole frame in bytes, fragments of a multi-buffer frame included.
#[inline(always)]
pub(crate) fn frame_len(ctx: &XdpContext) -> usize {
    // SAFETY: the helper only reads the context it is given.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
}

/// Length of the frame's linear part (all of a single-buffer frame), from its pointers.
#[inline(always)]
pub(crate) fn linear_len(ctx: &XdpContext) -> usize {
    let len = ctx.data_end() - ctx.data();
    // SAFETY: reading a local. Volatile, so that the compiler keeps the subtraction of the
    // two pointers (a scalar, for the verifier) instead of folding `data_end` into whatever
    // the caller adds to it, which the verifier refuses.
    unsafe { core::ptr::read_volatile(&len) }
}
