//! The pop-dataplane XDP program: routes IPv4 and IPv6 between the router's interfaces in the
//! driver, and hands everything else to the kernel. The decision is in [`forward`].
#![no_std]
#![no_main]

mod acl;
mod checksum;
mod fib;
mod flow;
mod forward;
mod ipv4;
mod ipv6;
mod l2;
mod maps;
mod packet;
mod sample;
mod urpf;
mod verdict;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use pop_dataplane_common::{DropReason, InterfaceCounters, TraceRecord, trace::TRACE_MAGIC};

use crate::{
    forward::Path,
    maps::{ACL_HITS, COUNTERS, EGRESS, TRACE},
    verdict::Verdict,
};

// `frags`: frames larger than a page (jumbo frames) arrive as several buffers.
#[xdp(frags)]
fn pop_dataplane(ctx: XdpContext) -> u32 {
    let tracing = trace_requested(&ctx);
    let rx_len = packet::frame_len(&ctx);
    // Only the linear part changes size (VLAN tags pushed or popped): the length sent is
    // worked out from it, without a second call of the helper.
    let rx_linear = packet::linear_len(&ctx);
    let mut path = Path {
        ingress_slot: None,
        route: None,
        hash: 0,
        nexthop: None,
        acl_rule: None,
        flow_rule: None,
        counting: !tracing,
        sampled: false,
    };

    let Some(verdict) = forward::forward(&ctx, rx_len, &mut path) else {
        // Not one of our ports.
        if tracing {
            record(
                &path,
                Verdict::ToKernel(pop_dataplane_common::PassReason::NotRouted),
            );
        }
        return xdp_action::XDP_PASS;
    };
    let verdict = match verdict {
        Verdict::Forward { port, slot } => match EGRESS.redirect(port, 0) {
            Ok(_) => Verdict::Forward { port, slot },
            Err(_) => {
                debug!(&ctx, "no devmap entry for egress port {}", port);
                Verdict::Drop(DropReason::NoEgress)
            }
        },
        verdict => verdict,
    };

    // A traced frame is not traffic: it leaves a record instead of counts.
    if tracing {
        record(&path, verdict);
    } else if let Some(slot) = path.ingress_slot {
        let rx_bytes = rx_len as u64;
        let tx_bytes = (rx_len + packet::linear_len(&ctx) - rx_linear) as u64;
        count(slot, rx_bytes, tx_bytes, verdict);
        if let Some(rule) = path.acl_rule {
            count_acl_hit(rule, rx_bytes);
        }
        if path.sampled {
            sample::emit(verdict, path.nexthop, path.route);
        }
    }
    match verdict {
        Verdict::Forward { .. } => xdp_action::XDP_REDIRECT,
        Verdict::ToKernel(_) => xdp_action::XDP_PASS,
        Verdict::Drop(_) => xdp_action::XDP_DROP,
    }
}

/// Counts the frame on its ingress interface, and on its egress interface when forwarded.
#[inline(always)]
fn count(ingress_slot: u32, rx_bytes: u64, tx_bytes: u64, verdict: Verdict) {
    let Some(ingress) = counters(ingress_slot) else {
        return;
    };
    ingress.rx_packets += 1;
    ingress.rx_bytes += rx_bytes;
    match verdict {
        Verdict::Forward { slot, .. } => {
            ingress.forwarded_packets += 1;
            ingress.forwarded_bytes += rx_bytes;
            if let Some(egress) = counters(slot) {
                egress.tx_packets += 1;
                egress.tx_bytes += tx_bytes;
            }
        }
        Verdict::ToKernel(reason) => {
            if let Some(n) = ingress.to_kernel.get_mut(opaque(reason as u32)) {
                *n += 1;
            }
        }
        Verdict::Drop(reason) => {
            if let Some(n) = ingress.dropped.get_mut(opaque(reason as u32)) {
                *n += 1;
            }
        }
    }
}

/// Counts a frame an ACL rule dropped on that rule.
#[inline(always)]
fn count_acl_hit(rule: u32, bytes: u64) {
    if let Some(hits) = ACL_HITS.get_ptr_mut(rule) {
        // SAFETY: per-CPU, as `counters`.
        let hits = unsafe { &mut *hits };
        hits.packets += 1;
        hits.bytes += bytes;
    }
}

/// `index`, hidden from the optimiser. The compiler knows a reason is below its enum's
/// length and would drop the bounds check; the verifier, which cannot know, needs it.
#[inline(always)]
fn opaque(index: u32) -> usize {
    // SAFETY: reading a local.
    unsafe { core::ptr::read_volatile(&index) as usize }
}

/// This CPU's counters of an interface slot.
#[inline(always)]
fn counters(slot: u32) -> Option<&'static mut InterfaceCounters> {
    // SAFETY: per-CPU: no other program run touches this CPU's entry while we run.
    COUNTERS.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

/// A frame from `pop-dataplane trace` carries TRACE_MAGIC in its XDP metadata; real traffic
/// carries no metadata.
#[inline(always)]
fn trace_requested(ctx: &XdpContext) -> bool {
    let meta = ctx.metadata();
    if meta + 4 > ctx.metadata_end() {
        return false;
    }
    // SAFETY: the four bytes lie inside the metadata area, checked above.
    unsafe { *(meta as *const u32) == TRACE_MAGIC }
}

#[inline(always)]
fn record(path: &Path, verdict: Verdict) {
    let Some(record) = TRACE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU, and only traced runs write it.
    let record = unsafe { &mut *record };
    let (kind, reason) = match verdict {
        Verdict::Forward { .. } => (TraceRecord::FORWARD, 0),
        Verdict::ToKernel(reason) => (TraceRecord::TO_KERNEL, reason as u32),
        Verdict::Drop(reason) => (TraceRecord::DROP, reason as u32),
    };
    *record = TraceRecord {
        magic: TRACE_MAGIC,
        verdict: kind,
        reason,
        ingress_slot: path.ingress_slot.unwrap_or(u32::MAX),
        route_target: path.route.map_or(0, |r| r.target.to_bits()),
        route_prefix_len: path.route.map_or(0, |r| u32::from(r.prefix_len)),
        route_found: u32::from(path.route.is_some()),
        hash: path.hash,
        nexthop: path.nexthop.unwrap_or(u32::MAX),
    };
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
