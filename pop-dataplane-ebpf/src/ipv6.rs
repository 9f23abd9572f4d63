//! IPv6: header checks, the flow hash (through extension headers), hop limit decrement.
//!
//! As for IPv4, the header is read once into an [`Ipv6`] copy.

use aya_ebpf::programs::XdpContext;
use network_types::ip::Ipv6Hdr;
use pop_dataplane_common::{
    DropReason, PassReason,
    ecmp::{
        self, IPPROTO_AH, IPPROTO_FRAGMENT, MAX_EXTENSION_HEADERS, has_ports, is_extension_header,
    },
};

use crate::{
    packet::header,
    verdict::Verdict::{self, Drop, ToKernel},
};

const IPPROTO_HOPOPTS: u8 = 0;

/// The header fields routing needs.
#[derive(Clone, Copy)]
pub(crate) struct Ipv6 {
    pub(crate) src: [u8; 16],
    pub(crate) dst: [u8; 16],
    pub(crate) next_header: u8,
    pub(crate) hop_limit: u8,
    pub(crate) payload_len: u16,
    /// DSCP and ECN.
    pub(crate) traffic_class: u8,
}

impl Ipv6 {
    /// The IPv6 length of the packet: what must fit in the egress MTU.
    #[inline(always)]
    pub(crate) fn total_len(&self) -> u32 {
        u32::from(self.payload_len) + Ipv6Hdr::LEN as u32
    }
}

/// Checks the header at `offset` of a frame of `frame_len` bytes, and returns its fields when
/// the packet may be routed.
#[inline(always)]
pub(crate) fn inspect(ctx: &XdpContext, offset: usize, frame_len: usize) -> Result<Ipv6, Verdict> {
    let ip: *const Ipv6Hdr = header(ctx, offset).ok_or(Drop(DropReason::Malformed))?;
    // SAFETY: `header` checked that it lies inside the frame.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != 6 {
        return Err(Drop(DropReason::Malformed));
    }
    let packet = Ipv6 {
        src: ip.src_addr,
        dst: ip.dst_addr,
        next_header: ip.next_hdr,
        hop_limit: ip.hop_limit,
        payload_len: u16::from_be_bytes(ip.payload_len),
        traffic_class: (ip.vcf[0] << 4) | (ip.vcf[1] >> 4),
    };
    if offset + Ipv6Hdr::LEN + usize::from(packet.payload_len) > frame_len {
        return Err(Drop(DropReason::Malformed));
    }
    if packet.next_header == IPPROTO_HOPOPTS {
        return Err(ToKernel(PassReason::HopByHop));
    }
    if packet.dst[0] == 0xff {
        return Err(ToKernel(PassReason::IpMulticast));
    }
    if is_link_local(&packet.dst) || is_link_local(&packet.src) {
        return Err(ToKernel(PassReason::LinkLocal));
    }
    // :: and ::1
    if u128::from_be_bytes(packet.dst) <= 1 {
        return Err(ToKernel(PassReason::Reserved));
    }
    Ok(packet)
}

/// fe80::/10
#[inline(always)]
fn is_link_local(addr: &[u8; 16]) -> bool {
    addr[0] == 0xfe && addr[1] & 0xc0 == 0x80
}

/// The flow hash (see `pop_dataplane_common::ecmp`).
#[inline(always)]
pub(crate) fn flow_hash(ctx: &XdpContext, offset: usize, packet: &Ipv6, seed: u32) -> u32 {
    let (protocol, ports) = transport(ctx, offset, packet);
    let mut hash = seed;
    for chunk in packet.src.chunks_exact(4).chain(packet.dst.chunks_exact(4)) {
        hash = ecmp::mix(
            hash,
            u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
        );
    }
    hash = ecmp::mix(hash, u32::from(protocol));
    hash = ecmp::mix(hash, ports);
    ecmp::finish(hash)
}

/// The transport protocol and its ports word, past the extension headers.
#[inline(always)]
fn transport(ctx: &XdpContext, offset: usize, packet: &Ipv6) -> (u8, u32) {
    let upper = upper_layer(ctx, offset, packet);
    let next = upper.next;
    if next == IPPROTO_FRAGMENT || is_extension_header(next) || !has_ports(next) {
        return (next, 0);
    }
    if upper.at + 4 > upper.end {
        return (next, 0);
    }
    match header::<[u8; 4]>(ctx, upper.at) {
        // SAFETY: `header` checked the bounds.
        Some(l4) => (next, u32::from_be_bytes(unsafe { *l4 })),
        None => (next, 0),
    }
}

/// Where the walk through the extension headers stopped.
pub(crate) struct UpperLayer {
    /// The header found there: the upper-layer protocol, or the fragment header, or an
    /// extension header the walk could not get past (truncated, or too many).
    pub(crate) next: u8,
    /// Its offset in the frame.
    pub(crate) at: usize,
    /// The end of the IPv6 payload.
    pub(crate) end: usize,
}

/// Walks the extension headers after the fixed header at `offset`, up to the first header
/// that is none (or a fragment header).
#[inline(always)]
pub(crate) fn upper_layer(ctx: &XdpContext, offset: usize, packet: &Ipv6) -> UpperLayer {
    let end = offset + Ipv6Hdr::LEN + usize::from(packet.payload_len);
    let mut next = packet.next_header;
    let mut at = offset + Ipv6Hdr::LEN;
    for _ in 0..MAX_EXTENSION_HEADERS {
        if next == IPPROTO_FRAGMENT || !is_extension_header(next) || at + 2 > end {
            break;
        }
        let Some(ext) = header::<[u8; 2]>(ctx, at) else {
            break;
        };
        // SAFETY: `header` checked the bounds.
        let [following, len] = unsafe { *ext };
        at += if next == IPPROTO_AH {
            (usize::from(len) + 2) * 4
        } else {
            (usize::from(len) + 1) * 8
        };
        next = following;
    }
    UpperLayer { next, at, end }
}

/// Sets the DSCP of the packet (the top six bits of its traffic class). IPv6 has no header
/// checksum.
#[inline(always)]
pub(crate) fn set_dscp(ctx: &XdpContext, offset: usize, dscp: u8) -> Option<()> {
    let ip: *mut Ipv6Hdr = header(ctx, offset)?;
    // SAFETY: `header` checked the bounds.
    let ip = unsafe { &mut *ip };
    let class = (dscp << 2) | ((ip.vcf[1] >> 4) & 0x03);
    ip.vcf[0] = (ip.vcf[0] & 0xf0) | (class >> 4);
    ip.vcf[1] = (ip.vcf[1] & 0x0f) | (class << 4);
    Some(())
}

/// Hop limit minus one (IPv6 has no header checksum).
#[inline(always)]
pub(crate) fn decrement_hop_limit(ctx: &XdpContext, offset: usize) -> Option<()> {
    let ip: *mut Ipv6Hdr = header(ctx, offset)?;
    // SAFETY: `header` checked the bounds.
    unsafe { (*ip).hop_limit -= 1 };
    Some(())
}
