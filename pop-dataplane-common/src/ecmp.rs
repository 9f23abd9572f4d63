//! The flow hash that picks an ECMP group member. Specified here in words; the XDP program
//! and the reference model each implement it.
//!
//! The hash folds 32-bit words into a seed with [`mix`] and ends with [`finish`]:
//!
//! - IPv4: source, destination, protocol, then `source_port << 16 | destination_port`.
//! - IPv6: the four words of the source, the four of the destination, protocol, ports.
//!
//! Ports are those of TCP, UDP and SCTP, when the packet is not a fragment and its payload
//! holds them; otherwise the ports word is 0, so every fragment of a packet (the first
//! included) takes the same path. An IPv4 fragment has MF set or a fragment offset.
//!
//! For IPv6 the protocol is the one after the extension headers. The walk starts at the
//! fixed header's next header and takes at most [`MAX_EXTENSION_HEADERS`] steps: on
//! Fragment (44) it stops with protocol 44 and no ports; on an extension header in
//! [`is_extension_header`] it moves past it (length `(byte 1 + 1) * 8`, or for AH (51)
//! `(byte 1 + 2) * 4`) to the next header named in its byte 0; on anything else it stops: that
//! is the protocol. When a header's first two bytes (or the transport's four port bytes) lie
//! beyond the payload or the linear part of the frame, the walk stops with that header's type
//! (or the transport protocol) and no ports; so it does when the chain still goes on after the
//! last step.
//!
//! The bucket is `finish(...) as usize % ECMP_BUCKETS` (a mask: the count is a power of two).

/// Extension headers walked to find an IPv6 packet's transport protocol.
pub const MAX_EXTENSION_HEADERS: usize = 4;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;

/// IPv6 extension headers the walk moves past (Fragment ends it; ESP hides the rest).
#[inline(always)]
pub const fn is_extension_header(next_header: u8) -> bool {
    matches!(next_header, 0 | 43 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}

/// Whether `protocol` carries 16-bit source and destination ports first in its header.
#[inline(always)]
pub const fn has_ports(protocol: u8) -> bool {
    matches!(protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
}

#[inline(always)]
pub const fn mix(hash: u32, word: u32) -> u32 {
    (hash ^ word).wrapping_mul(0x9e37_79b1).rotate_left(13)
}

/// The murmur3 finaliser: every input bit affects every output bit.
#[inline(always)]
pub const fn finish(mut hash: u32) -> u32 {
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^= hash >> 16;
    hash
}
