//! The ingress source filter: deny rules set by the operator (`acl add deny src PREFIX [dev
//! IFACE]`) and, when source checks are on, the martian sources of RFC 1812 5.3.7. Both are
//! entries of one LPM trie per family, looked up by (ingress interface slot, source address)
//! before the route lookup: a match drops the packet.
//!
//! A rule for every interface is stored once per routed interface, so one lookup answers.

/// The bits of the key taken by the interface slot, before the address.
pub const SLOT_BITS: u32 = 32;

/// `ACL_V4` key data; the LPM prefix length counts [`SLOT_BITS`] plus the source prefix's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclKeyV4 {
    /// The ingress interface's counter slot, big-endian so that it is the first
    /// [`SLOT_BITS`] bits of the key.
    pub slot: [u8; 4],
    pub src: [u8; 4],
}

/// `ACL_V6` key data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclKeyV6 {
    pub slot: [u8; 4],
    pub src: [u8; 16],
}

/// What a matching entry does: which rule it comes from (its index in `ACL_HITS`) and why.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclEntry {
    pub rule: u32,
    /// [`AclEntry::DENY`] or [`AclEntry::MARTIAN`].
    pub kind: u32,
}

impl AclEntry {
    /// An operator's deny rule: counted as `DropReason::AclDeny`.
    pub const DENY: u32 = 0;
    /// A martian source: counted as `DropReason::MartianSource`.
    pub const MARTIAN: u32 = 1;
}

/// Packets and bytes a rule dropped; one entry per rule and CPU in `ACL_HITS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AclHits {
    pub packets: u64,
    pub bytes: u64,
}

// The layout pinned maps carry from one version to the next on take-over. The LPM keys'
// bytes are matched in order: the slot's first, then the source's.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<AclKeyV4>() == 8);
    assert!(offset_of!(AclKeyV4, slot) == 0);
    assert!(offset_of!(AclKeyV4, src) == 4);
    assert!(size_of::<AclKeyV6>() == 20);
    assert!(offset_of!(AclKeyV6, slot) == 0);
    assert!(offset_of!(AclKeyV6, src) == 4);
    assert!(size_of::<AclEntry>() == 8);
    assert!(size_of::<AclHits>() == 16);
};
