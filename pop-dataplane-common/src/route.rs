/// What a route points at, packed in 32 bits (the kind in the top four bits, an id below) so
/// that compiled FIB tables of many entries stay small.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteTarget(u32);

/// A decoded [`RouteTarget`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Forward through the next hop with this id.
    Nexthop(u32),
    /// Forward through a member of the ECMP group with this id.
    Group(u32),
    /// Drop, counted.
    Blackhole,
    /// Hand to the kernel, counted.
    Kernel,
    /// One of the router's own addresses: hand to the kernel.
    Local,
    /// An encoding this version does not know: handled like [`Route::Kernel`].
    Unknown,
}

impl RouteTarget {
    const KIND_SHIFT: u32 = 28;
    /// Ids are below 2^28.
    pub const ID_MASK: u32 = (1 << Self::KIND_SHIFT) - 1;

    const KIND_NEXTHOP: u32 = 1;
    const KIND_BLACKHOLE: u32 = 2;
    const KIND_KERNEL: u32 = 3;
    const KIND_LOCAL: u32 = 4;
    const KIND_GROUP: u32 = 5;

    const fn pack(kind: u32, id: u32) -> Self {
        Self((kind << Self::KIND_SHIFT) | (id & Self::ID_MASK))
    }

    pub const fn new(route: Route) -> Self {
        match route {
            Route::Nexthop(id) => Self::pack(Self::KIND_NEXTHOP, id),
            Route::Group(id) => Self::pack(Self::KIND_GROUP, id),
            Route::Blackhole => Self::pack(Self::KIND_BLACKHOLE, 0),
            Route::Local => Self::pack(Self::KIND_LOCAL, 0),
            Route::Kernel | Route::Unknown => Self::pack(Self::KIND_KERNEL, 0),
        }
    }

    #[inline(always)]
    pub const fn decode(self) -> Route {
        let id = self.0 & Self::ID_MASK;
        match self.0 >> Self::KIND_SHIFT {
            Self::KIND_NEXTHOP => Route::Nexthop(id),
            Self::KIND_GROUP => Route::Group(id),
            Self::KIND_BLACKHOLE => Route::Blackhole,
            Self::KIND_KERNEL => Route::Kernel,
            Self::KIND_LOCAL => Route::Local,
            _ => Route::Unknown,
        }
    }

    pub const fn to_bits(self) -> u32 {
        self.0
    }

    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }
}

impl From<Route> for RouteTarget {
    fn from(route: Route) -> Self {
        Self::new(route)
    }
}

/// The value of the route maps (`ROUTES_V4`, `ROUTES_V6`): the target, and the length of the
/// prefix it was stored under, so that a lookup also tells which route matched (`trace`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteEntry {
    pub target: RouteTarget,
    pub prefix_len: u8,
    /// [`RouteEntry::FLOW`].
    pub flags: u8,
    pub _pad: [u8; 2],
}

// The layout pinned maps carry from one version to the next on take-over.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<RouteTarget>() == 4);
    assert!(size_of::<RouteEntry>() == 8);
    assert!(offset_of!(RouteEntry, prefix_len) == 4);
    assert!(offset_of!(RouteEntry, flags) == 5);
};

impl RouteEntry {
    /// Some flow rule's destination overlaps the route's prefix: its packets are checked
    /// against the rules (see `crate::flow`). Without it they cannot match any.
    pub const FLOW: u8 = 1 << 0;

    pub const fn new(target: RouteTarget, prefix_len: u8) -> Self {
        Self {
            target,
            prefix_len,
            flags: 0,
            _pad: [0; 2],
        }
    }

    /// The same route with [`RouteEntry::FLOW`] set or cleared.
    pub const fn with_flow(self, flow: bool) -> Self {
        Self {
            flags: if flow {
                self.flags | Self::FLOW
            } else {
                self.flags & !Self::FLOW
            },
            ..self
        }
    }

    #[inline(always)]
    pub const fn checks_flows(&self) -> bool {
        self.flags & Self::FLOW != 0
    }
}
