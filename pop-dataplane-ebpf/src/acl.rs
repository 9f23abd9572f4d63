//! The ingress source filter (see `pop_dataplane_common::acl`): one LPM lookup of (ingress
//! slot, source address), before the route lookup.

use aya_ebpf::maps::lpm_trie::Key;
use pop_dataplane_common::{
    DropReason, Interface,
    acl::{AclEntry, AclKeyV4, AclKeyV6, SLOT_BITS},
};

use crate::maps::{ACL_V4, ACL_V6};

/// The rule that drops an IPv4 packet from `src` arriving on `ingress`, if any; none
/// without a lookup on an interface the filter has no entries for.
#[inline(always)]
pub(crate) fn check_v4(ingress: &Interface, src: [u8; 4]) -> Option<AclEntry> {
    if !ingress.is_filtered() {
        return None;
    }
    let key = AclKeyV4 {
        slot: ingress.slot.to_be_bytes(),
        src,
    };
    ACL_V4.get(&Key::new(SLOT_BITS + 32, key)).copied()
}

#[inline(always)]
pub(crate) fn check_v6(ingress: &Interface, src: [u8; 16]) -> Option<AclEntry> {
    if !ingress.is_filtered() {
        return None;
    }
    let key = AclKeyV6 {
        slot: ingress.slot.to_be_bytes(),
        src,
    };
    ACL_V6.get(&Key::new(SLOT_BITS + 128, key)).copied()
}

/// The counter a matching entry's drop moves.
#[inline(always)]
pub(crate) fn reason(entry: &AclEntry) -> DropReason {
    if entry.kind == AclEntry::MARTIAN {
        DropReason::MartianSource
    } else {
        DropReason::AclDeny
    }
}
