//! The benchmark's XDP programs, in an object of their own (`pop-dataplane-bench-xdp`): none
//! of this is loaded on a router.
//!
//! - `bench_generate`, the traffic generator: run by `BPF_PROG_TEST_RUN` with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES`, it turns each run's frame into the next flow's UDP packet and
//!   returns `XDP_TX`, which the kernel sends out of the generator's interface. The kernel
//!   recycles frame pages without resetting them, so every run writes the whole header.
//! - `bench_sink`: counts and drops the generator's packets (UDP to one port) where they
//!   arrive; everything else (ARP, neighbour discovery) goes to the kernel.
//! - `bench_redirect`: the ceiling, every frame redirected to one port with no parsing, no
//!   lookup and no rewrite.
//! - `bench_fib_forward`: the simplest XDP router, and what an operator could run instead of
//!   pop-dataplane: the kernel's own FIB and neighbour table looked up from XDP
//!   (`bpf_fib_lookup`), MACs rewritten, TTL or hop limit decremented, redirected to the port
//!   the kernel names. No table of its own, no daemon; anything it cannot forward (no route,
//!   no neighbour yet, TTL expiring, VLAN tags, options it does not parse) goes to the kernel.
//! - `bench_null`: does nothing; what a `BPF_PROG_TEST_RUN` costs without a program's work.
#![no_std]
#![no_main]

use core::ptr::copy_nonoverlapping;

use aya_ebpf::{
    EbpfContext as _, Global,
    bindings::xdp_action,
    helpers::generated::bpf_fib_lookup,
    macros::{map, xdp},
    maps::{Array, DevMap, DevMapHash, PerCpuArray},
    programs::XdpContext,
};
use pop_dataplane_bench_ebpf::{
    GEN_HEADER_LEN_V4, GEN_HEADER_LEN_V6, GEN_TEMPLATE_LEN, GenFlow, MAX_GEN_FLOWS, SinkCounters,
    offsets,
};

#[map]
static GEN_TEMPLATE: Array<[u8; GEN_TEMPLATE_LEN]> = Array::with_max_entries(1, 0);

#[map]
static GEN_FLOWS: Array<GenFlow> = Array::with_max_entries(MAX_GEN_FLOWS, 0);

#[map]
static GEN_SEQUENCE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static GEN_FLOW_COUNT: Global<u32> = Global::new(1);

#[unsafe(no_mangle)]
static GEN_IPV6: Global<u8> = Global::new(0);

#[map]
static SINK_COUNTERS: PerCpuArray<SinkCounters> = PerCpuArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static SINK_UDP_PORT: Global<u16> = Global::new(9);

#[map]
static CEILING_EGRESS: DevMap = DevMap::with_max_entries(1, 0);

#[xdp]
fn bench_generate(ctx: XdpContext) -> u32 {
    let Some(sequence) = GEN_SEQUENCE.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: per-CPU, and a test run runs on one CPU.
    let sequence = unsafe { &mut *sequence };
    let flow_count = GEN_FLOW_COUNT.load();
    let index = *sequence % if flow_count == 0 { 1 } else { flow_count };
    *sequence = sequence.wrapping_add(1);
    let (Some(flow), Some(template)) = (GEN_FLOWS.get(index), GEN_TEMPLATE.get(0)) else {
        return xdp_action::XDP_ABORTED;
    };
    let written = if GEN_IPV6.load() != 0 {
        write_ipv6(&ctx, template, flow)
    } else {
        write_ipv4(&ctx, template, flow)
    };
    if written.is_none() {
        return xdp_action::XDP_ABORTED;
    }
    xdp_action::XDP_TX
}

/// A pointer to the first `len` bytes of the frame, if it has them.
#[inline(always)]
fn frame_start(ctx: &XdpContext, len: usize) -> Option<*mut u8> {
    if ctx.data() + len > ctx.data_end() {
        return None;
    }
    Some(ctx.data() as *mut u8)
}

#[inline(always)]
fn write_ipv4(ctx: &XdpContext, template: &[u8; GEN_TEMPLATE_LEN], flow: &GenFlow) -> Option<()> {
    let frame = frame_start(ctx, GEN_HEADER_LEN_V4)?;
    let udp = offsets::V4_UDP;
    // SAFETY: `frame_start` checked that the frame holds GEN_HEADER_LEN_V4 bytes, and every
    // write below lies inside them.
    unsafe {
        copy_nonoverlapping(template.as_ptr(), frame, GEN_HEADER_LEN_V4);
        copy_nonoverlapping(flow.dst.as_ptr(), frame.add(offsets::V4_DST), 4);
        copy_nonoverlapping(
            flow.ip_checksum.as_ptr(),
            frame.add(offsets::V4_CHECKSUM),
            2,
        );
        write_udp(frame.add(udp), flow);
    }
    Some(())
}

#[inline(always)]
fn write_ipv6(ctx: &XdpContext, template: &[u8; GEN_TEMPLATE_LEN], flow: &GenFlow) -> Option<()> {
    let frame = frame_start(ctx, GEN_HEADER_LEN_V6)?;
    let udp = offsets::V6_UDP;
    // SAFETY: as in `write_ipv4`, with GEN_HEADER_LEN_V6.
    unsafe {
        copy_nonoverlapping(template.as_ptr(), frame, GEN_HEADER_LEN_V6);
        copy_nonoverlapping(flow.dst.as_ptr(), frame.add(offsets::V6_DST), 16);
        write_udp(frame.add(udp), flow);
    }
    Some(())
}

/// The flow's UDP source port and checksum, into the UDP header at `udp`.
///
/// # Safety
/// The UDP header's first eight bytes must lie inside the frame.
#[inline(always)]
unsafe fn write_udp(udp: *mut u8, flow: &GenFlow) {
    // SAFETY: the caller's promise.
    unsafe {
        copy_nonoverlapping(
            flow.udp_src_port.as_ptr(),
            udp.add(offsets::UDP_SRC_PORT),
            2,
        );
        copy_nonoverlapping(
            flow.udp_checksum.as_ptr(),
            udp.add(offsets::UDP_CHECKSUM),
            2,
        );
    }
}

#[xdp]
fn bench_sink(ctx: XdpContext) -> u32 {
    if !is_bench_packet(&ctx) {
        return xdp_action::XDP_PASS;
    }
    if let Some(counters) = SINK_COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU; XDP runs with preemption off.
        let counters = unsafe { &mut *counters };
        counters.packets += 1;
        counters.bytes += (ctx.data_end() - ctx.data()) as u64;
    }
    xdp_action::XDP_DROP
}

/// UDP to `SINK_UDP_PORT`, in IPv4 without options or IPv6 without extension headers, as the
/// generator sends it.
#[inline(always)]
fn is_bench_packet(ctx: &XdpContext) -> bool {
    let Some(frame) = frame_start(ctx, GEN_HEADER_LEN_V4) else {
        return false;
    };
    // SAFETY: the frame holds GEN_HEADER_LEN_V4 bytes; the IPv6 branch checks for more.
    let (ethertype, v4_protocol, v4_ihl) = unsafe {
        (
            u16::from_be_bytes([*frame.add(12), *frame.add(13)]),
            *frame.add(14 + 9),
            *frame.add(14) & 0x0f,
        )
    };
    let dst_port = match ethertype {
        0x0800 if v4_protocol == 17 && v4_ihl == 5 => udp_dst_port(frame, offsets::V4_UDP),
        0x86dd => {
            if frame_start(ctx, GEN_HEADER_LEN_V6).is_none() {
                return false;
            }
            // SAFETY: checked just above.
            if unsafe { *frame.add(14 + 6) } != 17 {
                return false;
            }
            udp_dst_port(frame, offsets::V6_UDP)
        }
        _ => return false,
    };
    dst_port == SINK_UDP_PORT.load()
}

/// The destination port of the UDP header at `udp`; the caller has checked the bounds.
#[inline(always)]
fn udp_dst_port(frame: *mut u8, udp: usize) -> u16 {
    // SAFETY: the caller checked that the frame holds the whole UDP header.
    unsafe { u16::from_be_bytes([*frame.add(udp + 2), *frame.add(udp + 3)]) }
}

/// The least a forwarder does: the MAC addresses rewritten (swapped, as the kernel's
/// `xdp_redirect` sample does) and the frame redirected, with no parsing and no lookup.
/// Touching the frame matters: its first bytes are a cache miss, which every router pays and
/// a program that never reads the frame would leave to whoever does next.
#[xdp]
fn bench_redirect(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    if data + 12 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let macs = data as *mut [u8; 6];
    // SAFETY: the 12 bytes of the two MAC addresses are inside the frame, checked above.
    unsafe {
        let dst = *macs;
        *macs = *macs.add(1);
        *macs.add(1) = dst;
    }
    CEILING_EGRESS
        .redirect(0, 0)
        .unwrap_or(xdp_action::XDP_ABORTED)
}

/// `DEVMAP_HASH`: the ports `bench_fib_forward` may send out of, keyed by ifindex.
#[map]
static FIB_FORWARD_PORTS: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// `struct bpf_fib_lookup` (64 bytes), with the unions as the fields this program uses.
#[repr(C)]
#[derive(Default)]
struct FibParams {
    family: u8,
    l4_protocol: u8,
    sport: u16,
    dport: u16,
    /// In: the packet's length; out: the route's MTU.
    tot_len: u16,
    /// In: the ingress ifindex; out: the egress one.
    ifindex: u32,
    /// IPv4 TOS, or the IPv6 flow information.
    tos: u32,
    src: [u32; 4],
    dst: [u32; 4],
    vlan: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
const ETH_HLEN: usize = 14;

#[xdp]
fn bench_fib_forward(ctx: XdpContext) -> u32 {
    fib_forward(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// Forwards the frame by the kernel's FIB; `None` hands it to the kernel.
#[inline(always)]
fn fib_forward(ctx: &XdpContext) -> Option<u32> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let frame = start as *mut u8;
    // Bounds as the verifier follows them: the packet pointer plus a length, against the end.
    if start + ETH_HLEN > end {
        return None;
    }
    let mut params = FibParams {
        ifindex: ctx.ingress_ifindex() as u32,
        ..FibParams::default()
    };
    // SAFETY: every read and write below is within bounds checked before it.
    let ethertype = unsafe { u16::from_be_bytes([*frame.add(12), *frame.add(13)]) };
    match ethertype {
        0x0800 => {
            if start + ETH_HLEN + 20 > end {
                return None;
            }
            // SAFETY: as above.
            let ip = unsafe { frame.add(ETH_HLEN) };
            // SAFETY: as above: the 20-byte header is in the frame.
            unsafe {
                if *ip.add(8) <= 1 {
                    return None;
                }
                params.family = AF_INET;
                params.tos = u32::from(*ip.add(1));
                params.l4_protocol = *ip.add(9);
                params.tot_len = u16::from_be_bytes([*ip.add(2), *ip.add(3)]);
                params.src[0] = ip.add(12).cast::<u32>().read_unaligned();
                params.dst[0] = ip.add(16).cast::<u32>().read_unaligned();
            }
            lookup(ctx, &mut params)?;
            // SAFETY: as above. TTL down by one, the checksum up by 0x0100 (RFC 1624).
            unsafe {
                *ip.add(8) -= 1;
                let sum = u32::from(u16::from_be_bytes([*ip.add(10), *ip.add(11)])) + 0x0100;
                let sum = ((sum & 0xffff) + (sum >> 16)) as u16;
                let [high, low] = sum.to_be_bytes();
                *ip.add(10) = high;
                *ip.add(11) = low;
            }
        }
        0x86dd => {
            if start + ETH_HLEN + 40 > end {
                return None;
            }
            // SAFETY: as above.
            let ip = unsafe { frame.add(ETH_HLEN) };
            // SAFETY: as above: the 40-byte header is in the frame.
            unsafe {
                if *ip.add(7) <= 1 {
                    return None;
                }
                params.family = AF_INET6;
                params.tos = ip.cast::<u32>().read_unaligned() & u32::to_be(0x0fff_ffff);
                params.l4_protocol = *ip.add(6);
                params.tot_len = u16::from_be_bytes([*ip.add(4), *ip.add(5)]);
                for word in 0..4 {
                    params.src[word] = ip.add(8 + 4 * word).cast::<u32>().read_unaligned();
                    params.dst[word] = ip.add(24 + 4 * word).cast::<u32>().read_unaligned();
                }
            }
            lookup(ctx, &mut params)?;
            // SAFETY: as above.
            unsafe { *ip.add(7) -= 1 };
        }
        _ => return None,
    }
    // SAFETY: the Ethernet header is in the frame.
    unsafe {
        for i in 0..6 {
            *frame.add(i) = params.dmac[i];
            *frame.add(6 + i) = params.smac[i];
        }
    }
    FIB_FORWARD_PORTS.redirect(params.ifindex, 0).ok()
}

/// The kernel's FIB and neighbour table, for `params`; `None` unless it found both.
#[inline(always)]
fn lookup(ctx: &XdpContext, params: &mut FibParams) -> Option<()> {
    // SAFETY: `params` is a `struct bpf_fib_lookup` of the size given, on this stack.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            (params as *mut FibParams).cast(),
            size_of::<FibParams>() as i32,
            0,
        )
    };
    (rc == BPF_FIB_LKUP_RET_SUCCESS).then_some(())
}

const _: () = assert!(size_of::<FibParams>() == 64);

#[xdp]
fn bench_null(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
