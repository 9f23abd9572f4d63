//! Packet sampling for sFlow: a frame on an interface with a sampling rate is picked at
//! random, its first bytes copied on arrival (before any rewrite), and once its verdict is
//! known the record goes to the daemon through a ring buffer. A full ring loses the sample,
//! counted, and never holds the frame up. Also the traffic sent to each next hop.

use aya_ebpf::{
    bindings::{BPF_RB_NO_WAKEUP, xdp_md},
    btf_maps::{Array, PerCpuArray, RingBuf},
    helpers::generated::{bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_xdp_load_bytes},
    macros::btf_map,
    programs::XdpContext,
};
use pop_dataplane_common::{
    RouteEntry,
    maps::{MAX_INTERFACES, MAX_NEXTHOPS},
    sample::{HEADER_BYTES, NexthopTraffic, SAMPLE_RING_BYTES, SampleRate, SampleRecord},
};

use crate::{maps::COUNTERS, verdict::Verdict};

#[btf_map]
pub(crate) static SAMPLE_RATES: Array<SampleRate, { MAX_INTERFACES as usize }> = Array::new();

#[btf_map]
pub(crate) static SAMPLES: RingBuf<SampleRecord, { SAMPLE_RING_BYTES as usize }> = RingBuf::new();

#[btf_map]
pub(crate) static SAMPLES_LOST: PerCpuArray<u64, { MAX_INTERFACES as usize }> = PerCpuArray::new();

#[btf_map]
pub(crate) static NEXTHOP_TRAFFIC: PerCpuArray<NexthopTraffic, { MAX_NEXTHOPS as usize }> =
    PerCpuArray::new();

/// The record of the frame being sampled on this CPU, filled in two steps.
#[btf_map]
static SAMPLE_SCRATCH: PerCpuArray<SampleRecord, 1> = PerCpuArray::new();

/// Whether to sample this frame, received on interface `slot`, `len` bytes long; when so,
/// its first bytes are copied into this CPU's record. Traced frames are not traffic and are
/// never sampled.
#[inline(always)]
pub(crate) fn capture(ctx: &XdpContext, slot: u32, len: usize, counting: bool) -> bool {
    if !counting {
        return false;
    }
    let Some(rate) = SAMPLE_RATES.get(slot) else {
        return false;
    };
    if rate.rate == 0 {
        return false;
    }
    // SAFETY: the helper has no preconditions.
    if unsafe { bpf_get_prandom_u32() } > rate.threshold {
        return false;
    }
    copy_header(ctx.ctx, slot, len as u32) != 0
}

/// Copies the first bytes of the frame into this CPU's record; non-zero when done. Out of
/// line, as `send`.
#[inline(never)]
fn copy_header(ctx: *mut xdp_md, slot: u32, len: u32) -> u32 {
    let Some(record) = SAMPLE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let header_len = if len < HEADER_BYTES as u32 {
        len
    } else {
        HEADER_BYTES as u32
    };
    // Read back and checked, so that the verifier sees the bound on the very register the
    // helper is given (the compiler would otherwise pass `len`, whose bound it knows).
    // SAFETY: reading a local.
    let header_len = unsafe { core::ptr::read_volatile(&header_len) };
    if header_len == 0 || header_len > HEADER_BYTES as u32 {
        return 0;
    }
    // SAFETY: per-CPU, and written only between this call and `emit` of the same run. The
    // copy's length is 1..=HEADER_BYTES, inside both the frame and the record's header.
    unsafe {
        if bpf_xdp_load_bytes(ctx, 0, (*record).header.as_mut_ptr().cast(), header_len) != 0 {
            return 0;
        }
        (*record).ingress_slot = slot;
        (*record).frame_len = len;
        (*record).header_len = header_len;
    }
    1
}

/// Sends this CPU's record of a frame [`capture`] sampled, now that its verdict is known:
/// the next hop it was sent to and the route it matched, if any.
#[inline(always)]
pub(crate) fn emit(verdict: Verdict, nexthop: Option<u32>, route: Option<RouteEntry>) {
    let (outcome, egress_slot, nexthop) = match verdict {
        Verdict::Forward { slot, .. } => (
            SampleRecord::FORWARD << 16,
            slot,
            nexthop.unwrap_or(SampleRecord::NONE),
        ),
        Verdict::ToKernel(reason) => (
            SampleRecord::TO_KERNEL << 16 | reason as u32,
            SampleRecord::NONE,
            SampleRecord::NONE,
        ),
        Verdict::Drop(reason) => (
            SampleRecord::DROP << 16 | reason as u32,
            SampleRecord::NONE,
            SampleRecord::NONE,
        ),
    };
    let prefix_len = route.map_or(SampleRecord::NONE, |r| u32::from(r.prefix_len));
    send(outcome, egress_slot, nexthop, prefix_len);
}

/// [`emit`]'s work, out of line: the main program's stack is near the verifier's bound, and
/// a sampled frame is rare. `outcome` is the verdict's kind in the top half, its reason below.
#[inline(never)]
fn send(outcome: u32, egress_slot: u32, nexthop: u32, prefix_len: u32) {
    let Some(record) = SAMPLE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU, filled by `capture` in this run.
    let record = unsafe { &mut *record };
    record.verdict = outcome >> 16;
    record.reason = outcome & 0xffff;
    record.egress_slot = egress_slot;
    record.nexthop = nexthop;
    record.route_prefix_len = prefix_len;
    // SAFETY: the helper has no preconditions.
    record.cpu = unsafe { bpf_get_smp_processor_id() };
    let slot = record.ingress_slot;
    // SAFETY: per-CPU, as `main::counters`.
    record.pool = COUNTERS
        .get_ptr(slot)
        .map_or(0, |c| unsafe { (*c).rx_packets });
    let lost = SAMPLES_LOST.get_ptr_mut(slot);
    // SAFETY: per-CPU.
    record.lost = lost.map_or(0, |n| unsafe { *n });
    // No wakeup: the daemon drains the ring on a timer, so a busy ring costs no wakeup per
    // sample.
    if SAMPLES.output(record, BPF_RB_NO_WAKEUP as u64).is_err() {
        if let Some(n) = lost {
            // SAFETY: per-CPU.
            unsafe { *n += 1 };
        }
    }
}

/// Counts a forwarded frame of `bytes` bytes (as sent) on next hop `id`. Out of line, as
/// `send`: inlined, its registers cost the main program 8 bytes of stack it does not have.
#[inline(never)]
pub(crate) fn count_nexthop(id: u32, bytes: u64) {
    if let Some(traffic) = NEXTHOP_TRAFFIC.get_ptr_mut(id) {
        // SAFETY: per-CPU: no other program run touches this CPU's entry while we run.
        let traffic = unsafe { &mut *traffic };
        traffic.packets += 1;
        traffic.bytes += bytes;
    }
}
