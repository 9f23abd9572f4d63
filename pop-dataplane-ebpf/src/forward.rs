//! The forwarding decision: everything the fast path does to a frame, in order. A frame is
//! either rewritten for its next hop, handed to the kernel untouched, or dropped; each with the
//! reason that the counters record.

use aya_ebpf::{maps::lpm_trie::Key, programs::XdpContext};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};
use pop_dataplane_common::{DropReason, Interface, PassReason, Route};

use crate::{
    checksum,
    maps::{NEXTHOPS, ROUTES_V4},
    packet::{frame_len, header_mut},
};

/// The outcome for one frame.
#[derive(Clone, Copy)]
pub enum Verdict {
    /// Headers rewritten; redirect out of this egress slot.
    Forward { egress_slot: u32 },
    /// `XDP_PASS`, frame untouched.
    ToKernel(PassReason),
    /// `XDP_DROP`.
    Drop(DropReason),
}

use Verdict::{Drop, ToKernel};

/// Decides what happens to the frame in `ctx`, received on `ingress`, and when it is to be
/// forwarded, rewrites it for its next hop.
#[inline(always)]
pub fn forward(ctx: &XdpContext, ingress: &Interface) -> Verdict {
    match try_forward(ctx, ingress) {
        Ok(verdict) | Err(verdict) => verdict,
    }
}

#[inline(always)]
fn try_forward(ctx: &XdpContext, ingress: &Interface) -> Result<Verdict, Verdict> {
    let eth: *mut EthHdr = header_mut(ctx, 0).ok_or(Drop(DropReason::Malformed))?;
    // SAFETY: `header_mut` checked that the header lies inside the frame.
    let eth = unsafe { &mut *eth };
    if eth.ether_type != EtherType::Ipv4 as u16 {
        return Err(ToKernel(PassReason::NonIp));
    }
    if eth.dst_addr[0] & 1 != 0 {
        return Err(ToKernel(PassReason::LinkMulticast));
    }
    if eth.dst_addr != ingress.mac {
        return Err(ToKernel(PassReason::OtherHost));
    }

    let ip: *mut Ipv4Hdr = header_mut(ctx, EthHdr::LEN).ok_or(Drop(DropReason::Malformed))?;
    // SAFETY: as above.
    let ip = unsafe { &mut *ip };
    if ip.vihl >> 4 != 4 || ip.vihl & 0x0f < 5 {
        return Err(Drop(DropReason::Malformed));
    }
    if ip.vihl & 0x0f > 5 {
        return Err(ToKernel(PassReason::IpOptions));
    }
    let total_len = u16::from_be_bytes(ip.tot_len);
    if usize::from(total_len) < Ipv4Hdr::LEN
        || EthHdr::LEN + usize::from(total_len) > frame_len(ctx)
    {
        return Err(Drop(DropReason::Malformed));
    }
    // SAFETY: an options-free IPv4 header is exactly these 20 bytes.
    if !checksum::ipv4_header_valid(unsafe { &*(ip as *const Ipv4Hdr).cast::<[u8; 20]>() }) {
        return Err(Drop(DropReason::BadChecksum));
    }

    let dst = ip.dst_addr;
    // 224.0.0.0/4 multicast, 240.0.0.0/4 reserved and 255.255.255.255 broadcast.
    if dst[0] >= 224 {
        return Err(ToKernel(PassReason::IpMulticast));
    }
    if dst[0] == 169 && dst[1] == 254 {
        return Err(ToKernel(PassReason::LinkLocal));
    }

    let target = ROUTES_V4
        .get(&Key::new(32, dst))
        .ok_or(ToKernel(PassReason::NoRoute))?;
    let nexthop_id = match target.decode() {
        Route::Nexthop(id) => id,
        Route::Blackhole => return Err(Drop(DropReason::Blackhole)),
        Route::Local => return Err(ToKernel(PassReason::Local)),
        Route::Kernel | Route::Unknown => return Err(ToKernel(PassReason::KernelRoute)),
    };

    if ip.ttl <= 1 {
        return Err(ToKernel(PassReason::TtlExceeded));
    }
    let nexthop = NEXTHOPS
        .get(nexthop_id)
        .ok_or(ToKernel(PassReason::Unresolved))?;
    if !nexthop.is_resolved() {
        return Err(ToKernel(PassReason::Unresolved));
    }
    if total_len > nexthop.mtu {
        return Err(ToKernel(PassReason::MtuExceeded));
    }

    // Commit: from here on the frame is ours to send.
    let old_word = u16::from_be_bytes([ip.ttl, ip.proto]);
    ip.ttl -= 1;
    let new_word = u16::from_be_bytes([ip.ttl, ip.proto]);
    let check = checksum::replace_word(u16::from_be_bytes(ip.check), old_word, new_word);
    ip.check = check.to_be_bytes();
    eth.dst_addr = nexthop.dst_mac;
    eth.src_addr = nexthop.src_mac;
    Ok(Verdict::Forward {
        egress_slot: nexthop.egress_slot,
    })
}
