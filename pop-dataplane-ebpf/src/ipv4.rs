//! IPv4: header checks, the flow hash, TTL decrement.
//!
//! The header is read once, into an [`Ipv4`] copy; the few writes re-check their bounds. The
//! verifier then never has to trust a packet pointer kept across the route lookup.

use aya_ebpf::programs::XdpContext;
use network_types::ip::Ipv4Hdr;
use pop_dataplane_common::{
    DropReason, PassReason,
    ecmp::{self, has_ports},
};

use crate::{
    checksum,
    packet::header,
    verdict::Verdict::{self, Drop, ToKernel},
};

/// The header fields routing needs.
#[derive(Clone, Copy)]
pub(crate) struct Ipv4 {
    pub(crate) src: [u8; 4],
    pub(crate) dst: [u8; 4],
    pub(crate) protocol: u8,
    pub(crate) ttl: u8,
    pub(crate) total_len: u16,
    /// The type-of-service byte: DSCP and ECN.
    pub(crate) tos: u8,
    /// The flags and fragment offset word.
    pub(crate) frags: u16,
    /// MF set or a fragment offset: a fragment, first or not.
    pub(crate) is_fragment: bool,
}

impl Ipv4 {
    /// A fragment with a non-zero offset: no transport header.
    #[inline(always)]
    pub(crate) fn is_later_fragment(&self) -> bool {
        self.frags & 0x1fff != 0
    }
}

/// Checks the header at `offset` of a frame of `frame_len` bytes, and returns its fields when
/// the packet may be routed.
#[inline(always)]
pub(crate) fn inspect(ctx: &XdpContext, offset: usize, frame_len: usize) -> Result<Ipv4, Verdict> {
    let ip: *const Ipv4Hdr = header(ctx, offset).ok_or(Drop(DropReason::Malformed))?;
    // SAFETY: `header` checked that it lies inside the frame.
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != 4 || ip.vihl & 0x0f < 5 {
        return Err(Drop(DropReason::Malformed));
    }
    if ip.vihl & 0x0f > 5 {
        return Err(ToKernel(PassReason::IpOptions));
    }
    let total_len = u16::from_be_bytes(ip.tot_len);
    if usize::from(total_len) < Ipv4Hdr::LEN || offset + usize::from(total_len) > frame_len {
        return Err(Drop(DropReason::Malformed));
    }
    // SAFETY: an options-free IPv4 header is exactly these 20 bytes.
    let bytes = unsafe { &*(ip as *const Ipv4Hdr).cast::<[u8; 20]>() };
    if !checksum::ipv4_header_valid(bytes) {
        return Err(Drop(DropReason::BadChecksum));
    }
    let packet = Ipv4 {
        src: ip.src_addr,
        dst: ip.dst_addr,
        protocol: ip.proto,
        ttl: ip.ttl,
        total_len,
        tos: ip.tos,
        frags: u16::from_be_bytes(ip.frags),
        is_fragment: ip.frags[0] & 0x20 != 0 || u16::from_be_bytes(ip.frags) & 0x1fff != 0,
    };
    match packet.dst[0] {
        224..=239 => return Err(ToKernel(PassReason::IpMulticast)),
        0 | 127 | 240..=255 => return Err(ToKernel(PassReason::Reserved)),
        169 if packet.dst[1] == 254 => return Err(ToKernel(PassReason::LinkLocal)),
        _ => {}
    }
    Ok(packet)
}

/// The flow hash (see `pop_dataplane_common::ecmp`).
#[inline(always)]
pub(crate) fn flow_hash(ctx: &XdpContext, offset: usize, packet: &Ipv4, seed: u32) -> u32 {
    let mut ports = 0u32;
    if has_ports(packet.protocol)
        && !packet.is_fragment
        && usize::from(packet.total_len) >= Ipv4Hdr::LEN + 4
    {
        if let Some(l4) = header::<[u8; 4]>(ctx, offset + Ipv4Hdr::LEN) {
            // SAFETY: `header` checked the bounds.
            ports = u32::from_be_bytes(unsafe { *l4 });
        }
    }
    let mut hash = seed;
    hash = ecmp::mix(hash, u32::from_be_bytes(packet.src));
    hash = ecmp::mix(hash, u32::from_be_bytes(packet.dst));
    hash = ecmp::mix(hash, u32::from(packet.protocol));
    hash = ecmp::mix(hash, ports);
    ecmp::finish(hash)
}

/// TTL minus one, and the header checksum updated for it (RFC 1624).
#[inline(always)]
pub(crate) fn decrement_ttl(ctx: &XdpContext, offset: usize) -> Option<()> {
    let ip: *mut Ipv4Hdr = header(ctx, offset)?;
    // SAFETY: `header` checked the bounds.
    let ip = unsafe { &mut *ip };
    let old_word = u16::from_be_bytes([ip.ttl, ip.proto]);
    ip.ttl -= 1;
    let new_word = u16::from_be_bytes([ip.ttl, ip.proto]);
    let check = checksum::replace_word(u16::from_be_bytes(ip.check), old_word, new_word);
    ip.check = check.to_be_bytes();
    Some(())
}

/// Sets the DSCP of the packet (the top six bits of its type of service), and the header
/// checksum for it.
#[inline(always)]
pub(crate) fn set_dscp(ctx: &XdpContext, offset: usize, dscp: u8) -> Option<()> {
    let ip: *mut Ipv4Hdr = header(ctx, offset)?;
    // SAFETY: `header` checked the bounds.
    let ip = unsafe { &mut *ip };
    let old_word = u16::from_be_bytes([ip.vihl, ip.tos]);
    ip.tos = (dscp << 2) | (ip.tos & 0x03);
    let new_word = u16::from_be_bytes([ip.vihl, ip.tos]);
    let check = checksum::replace_word(u16::from_be_bytes(ip.check), old_word, new_word);
    ip.check = check.to_be_bytes();
    Some(())
}
