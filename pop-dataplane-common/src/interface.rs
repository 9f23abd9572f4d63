/// Identifies the interface a frame arrived on: the port it was received on and its VLAN
/// tags. The key of `INTERFACES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterfaceKey {
    /// The port: the physical interface the program is attached to.
    pub ifindex: u32,
    /// VLAN id of the outer tag (802.1ad or 802.1Q), 0 for an untagged frame. A priority
    /// tag (VLAN id 0) counts as untagged.
    pub vlan_outer: u16,
    /// VLAN id of the inner tag of a double-tagged (QinQ) frame, else 0.
    pub vlan_inner: u16,
}

impl InterfaceKey {
    pub const fn untagged(ifindex: u32) -> Self {
        Self {
            ifindex,
            vlan_outer: 0,
            vlan_inner: 0,
        }
    }

    /// Where `PORTS_BY_IFINDEX` holds this key's interface too: the index of an untagged
    /// key whose ifindex the array covers.
    pub const fn port_index(&self) -> Option<u32> {
        if self.vlan_outer == 0
            && self.vlan_inner == 0
            && self.ifindex < crate::maps::MAX_PORT_IFINDEX
        {
            Some(self.ifindex)
        } else {
            None
        }
    }
}

/// An interface the router routes on: a port (untagged) or a VLAN sub-interface of one. The
/// value of `INTERFACES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    /// Its index in `COUNTERS`, `0..MAX_INTERFACES`.
    pub slot: u32,
    /// Its own MAC address. A unicast frame to any other address is not for this router to
    /// forward (it reached us only because the port is promiscuous or flooded).
    pub mac: [u8; 6],
    /// `Interface::ROUTED` and friends.
    pub flags: u16,
    /// The VRF its frames are routed in: the slot of `FIB_V4`/`FIB_V6` (or `ROUTES_V4`/
    /// `ROUTES_V6`) their destinations and sources are looked up in, `0..MAX_VRFS`; 0 is the
    /// default VRF.
    pub vrf: u16,
    pub _pad: u16,
}

// The layout pinned maps carry from one version to the next on take-over.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<InterfaceKey>() == 8);
    assert!(offset_of!(InterfaceKey, ifindex) == 0);
    assert!(offset_of!(InterfaceKey, vlan_outer) == 4);
    assert!(offset_of!(InterfaceKey, vlan_inner) == 6);
    assert!(size_of::<Interface>() == 16);
    assert!(offset_of!(Interface, slot) == 0);
    assert!(offset_of!(Interface, mac) == 4);
    assert!(offset_of!(Interface, flags) == 10);
    assert!(offset_of!(Interface, vrf) == 12);
};

impl Interface {
    /// Frames on it are routed. Without it (a port whose untagged side is not configured),
    /// frames are counted and handed to the kernel.
    pub const ROUTED: u16 = 1 << 0;

    /// The source filter has entries for it (deny rules or martian sources): its frames'
    /// sources are looked up in `ACL_V4` / `ACL_V6`. Without it the lookup is skipped, since
    /// it could match nothing.
    pub const FILTERED: u16 = 1 << 1;

    /// Unicast reverse-path forwarding (RFC 3704), strict: a frame's source must have a
    /// route that leaves through this interface (any next hop of an ECMP route).
    pub const URPF_STRICT: u16 = 1 << 2;

    /// uRPF, loose: a frame's source must have a route, other than a blackhole.
    pub const URPF_LOOSE: u16 = 1 << 3;

    /// With either uRPF mode: the default route counts as a route back.
    pub const URPF_ALLOW_DEFAULT: u16 = 1 << 4;

    /// Set in `PORTS_BY_IFINDEX` entries, which are all zero for an ifindex that is no port:
    /// this entry is one. Never set in `INTERFACES`.
    pub const PORT_ENTRY: u16 = 1 << 15;

    /// An interface of the default VRF.
    pub const fn new(slot: u32, mac: [u8; 6], flags: u16) -> Self {
        Self {
            slot,
            mac,
            flags,
            vrf: 0,
            _pad: 0,
        }
    }

    /// The same interface in VRF `vrf`.
    pub const fn in_vrf(self, vrf: u16) -> Self {
        Self { vrf, ..self }
    }

    pub const fn is_routed(&self) -> bool {
        self.flags & Self::ROUTED != 0
    }

    pub const fn is_filtered(&self) -> bool {
        self.flags & Self::FILTERED != 0
    }

    /// Frames' sources are checked against the FIB (strict or loose uRPF).
    pub const fn checks_reverse_path(&self) -> bool {
        self.flags & (Self::URPF_STRICT | Self::URPF_LOOSE) != 0
    }

    /// The `PORTS_BY_IFINDEX` entry of a port whose untagged side is `self`.
    pub const fn port_entry(self) -> Self {
        Self {
            flags: self.flags | Self::PORT_ENTRY,
            ..self
        }
    }

    pub const fn is_port_entry(&self) -> bool {
        self.flags & Self::PORT_ENTRY != 0
    }
}
