//! Ethernet and VLAN tags: reading them on ingress, writing them for the next hop on egress.

use aya_ebpf::{helpers::generated::bpf_xdp_adjust_head, programs::XdpContext};
use pop_dataplane_common::Nexthop;

use crate::packet::header;

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const VLAN_HLEN: usize = 4;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_VID_MASK: u16 = 0x0fff;

/// The Ethernet header as far as routing cares.
#[repr(C)]
pub(crate) struct EthHeader {
    pub(crate) dst: [u8; 6],
    pub(crate) src: [u8; 6],
    /// Big-endian.
    pub(crate) ether_type: [u8; 2],
}

/// One 802.1Q / 802.1ad tag after the MAC addresses or another tag.
#[repr(C)]
struct VlanTag {
    tci: [u8; 2],
    ether_type: [u8; 2],
}

/// What came before the IP header.
#[derive(Clone, Copy)]
pub(crate) struct Link {
    pub(crate) dst: [u8; 6],
    /// The EtherType after the tags.
    pub(crate) ether_type: u16,
    /// VLAN ids of the outer and inner tags, 0 when absent.
    pub(crate) vlan_outer: u16,
    pub(crate) vlan_inner: u16,
    /// Tags present: 0, 1 or 2.
    pub(crate) tags: usize,
}

impl Link {
    /// Where the network header starts.
    #[inline(always)]
    pub(crate) fn l3_offset(&self) -> usize {
        ETH_HLEN + self.tags * VLAN_HLEN
    }
}

/// Why the link header could not be read.
pub(crate) enum LinkError {
    /// The frame ends inside the Ethernet header or a tag.
    Truncated,
    /// More than two VLAN tags.
    TooManyTags,
}

/// Reads the Ethernet header and up to two VLAN tags.
#[inline(always)]
pub(crate) fn parse(ctx: &XdpContext) -> Result<Link, LinkError> {
    let eth: *const EthHeader = header(ctx, 0).ok_or(LinkError::Truncated)?;
    // SAFETY: `header` checked that it lies inside the frame.
    let eth = unsafe { &*eth };
    let mut link = Link {
        dst: eth.dst,
        ether_type: u16::from_be_bytes(eth.ether_type),
        vlan_outer: 0,
        vlan_inner: 0,
        tags: 0,
    };
    if is_vlan(link.ether_type) {
        let tag: *const VlanTag = header(ctx, ETH_HLEN).ok_or(LinkError::Truncated)?;
        // SAFETY: as above.
        let tag = unsafe { &*tag };
        link.vlan_outer = u16::from_be_bytes(tag.tci) & VLAN_VID_MASK;
        link.ether_type = u16::from_be_bytes(tag.ether_type);
        link.tags = 1;
        if is_vlan(link.ether_type) {
            let tag: *const VlanTag =
                header(ctx, ETH_HLEN + VLAN_HLEN).ok_or(LinkError::Truncated)?;
            // SAFETY: as above.
            let tag = unsafe { &*tag };
            link.vlan_inner = u16::from_be_bytes(tag.tci) & VLAN_VID_MASK;
            link.ether_type = u16::from_be_bytes(tag.ether_type);
            link.tags = 2;
            if is_vlan(link.ether_type) {
                return Err(LinkError::TooManyTags);
            }
        }
    }
    Ok(link)
}

#[inline(always)]
fn is_vlan(ether_type: u16) -> bool {
    ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD
}

/// Rewrites the link header for `nexthop`: its MAC addresses and VLAN tags, pushing or
/// popping tags as needed. The network header must already be final: it may move.
#[inline(always)]
pub(crate) fn rewrite(ctx: &XdpContext, link: &Link, nexthop: &Nexthop) -> Result<(), ()> {
    let tags = nexthop.vlan_tags();
    if tags != link.tags {
        // Positive: the header shrinks (tags popped); negative: it grows (pushed).
        let delta = (link.tags as i32 - tags as i32) * VLAN_HLEN as i32;
        // SAFETY: the helper checks the new head against the buffer's bounds.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
            return Err(());
        }
    }
    let eth: *mut EthHeader = header(ctx, 0).ok_or(())?;
    // SAFETY: `header` checked the bounds, after any head adjustment.
    let eth = unsafe { &mut *eth };
    eth.dst = nexthop.dst_mac;
    eth.src = nexthop.src_mac;
    match tags {
        0 => eth.ether_type = link.ether_type.to_be_bytes(),
        1 => {
            eth.ether_type = nexthop.vlan_outer_tpid.to_be_bytes();
            write_tag(ctx, ETH_HLEN, nexthop.vlan_outer, link.ether_type)?;
        }
        _ => {
            eth.ether_type = nexthop.vlan_outer_tpid.to_be_bytes();
            write_tag(ctx, ETH_HLEN, nexthop.vlan_outer, ETH_P_8021Q)?;
            write_tag(
                ctx,
                ETH_HLEN + VLAN_HLEN,
                nexthop.vlan_inner,
                link.ether_type,
            )?;
        }
    }
    Ok(())
}

#[inline(always)]
fn write_tag(ctx: &XdpContext, offset: usize, vid: u16, ether_type: u16) -> Result<(), ()> {
    let tag: *mut VlanTag = header(ctx, offset).ok_or(())?;
    // SAFETY: `header` checked the bounds.
    let tag = unsafe { &mut *tag };
    tag.tci = (vid & VLAN_VID_MASK).to_be_bytes();
    tag.ether_type = ether_type.to_be_bytes();
    Ok(())
}
