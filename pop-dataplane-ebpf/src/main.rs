//! The pop-dataplane XDP program: routes IPv4 frames between the router's interfaces in the
//! driver, and hands everything else to the kernel. The decision is in [`forward`].
#![no_std]
#![no_main]

mod checksum;
mod forward;
mod maps;
mod packet;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use pop_dataplane_common::{DropReason, InterfaceCounters};

use crate::{
    forward::Verdict,
    maps::{COUNTERS, EGRESS, INTERFACES},
};

#[xdp]
pub fn pop_dataplane(ctx: XdpContext) -> u32 {
    // Interfaces the daemon did not attach us to are none of our business.
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(ingress) = (unsafe { INTERFACES.get(&ifindex) }) else {
        return xdp_action::XDP_PASS;
    };
    let ingress = *ingress;
    let bytes = packet::frame_len(&ctx) as u64;

    let verdict = match forward::forward(&ctx, &ingress) {
        Verdict::Forward { egress_slot } => match EGRESS.redirect(egress_slot, 0) {
            Ok(_) => Verdict::Forward { egress_slot },
            Err(_) => {
                debug!(&ctx, "no devmap entry for egress slot {}", egress_slot);
                Verdict::Drop(DropReason::NoEgress)
            }
        },
        verdict => verdict,
    };

    count(ingress.slot, bytes, verdict);
    match verdict {
        Verdict::Forward { .. } => xdp_action::XDP_REDIRECT,
        Verdict::ToKernel(_) => xdp_action::XDP_PASS,
        Verdict::Drop(_) => xdp_action::XDP_DROP,
    }
}

/// Counts the frame on its ingress interface, and on its egress interface when forwarded.
#[inline(always)]
fn count(ingress_slot: u32, bytes: u64, verdict: Verdict) {
    let Some(ingress) = counters(ingress_slot) else {
        return;
    };
    ingress.rx_packets += 1;
    ingress.rx_bytes += bytes;
    match verdict {
        Verdict::Forward { egress_slot } => {
            ingress.forwarded_packets += 1;
            ingress.forwarded_bytes += bytes;
            if let Some(egress) = counters(egress_slot) {
                egress.tx_packets += 1;
                egress.tx_bytes += bytes;
            }
        }
        Verdict::ToKernel(reason) => {
            if let Some(n) = ingress.to_kernel.get_mut(reason as usize) {
                *n += 1;
            }
        }
        Verdict::Drop(reason) => {
            if let Some(n) = ingress.dropped.get_mut(reason as usize) {
                *n += 1;
            }
        }
    }
}

/// This CPU's counters of an interface slot.
#[inline(always)]
fn counters(slot: u32) -> Option<&'static mut InterfaceCounters> {
    // SAFETY: per-CPU: no other program run touches this CPU's entry while we run.
    COUNTERS.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
