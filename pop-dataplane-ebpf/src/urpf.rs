//! Unicast reverse-path forwarding (RFC 3704): whether a frame's source has a route back
//! that its ingress interface's mode accepts. A second lookup in the same FIB as the
//! destination's.

use pop_dataplane_common::{Interface, Route, RouteEntry, nexthop::ECMP_BUCKETS};

use crate::maps::{NEXTHOP_GROUPS, NEXTHOPS};

/// Whether `route`, the FIB's answer for a frame's source (`None`: no route), passes the
/// reverse-path check of `ingress`.
#[inline(always)]
pub(crate) fn accepts(ingress: &Interface, route: Option<RouteEntry>) -> bool {
    let Some(route) = route else {
        return false;
    };
    if route.prefix_len == 0 && ingress.flags & Interface::URPF_ALLOW_DEFAULT == 0 {
        return false;
    }
    let strict = ingress.flags & Interface::URPF_STRICT != 0;
    match route.target.decode() {
        Route::Blackhole => false,
        Route::Nexthop(id) => !strict || leaves_through(id, ingress.slot),
        Route::Group(id) => !strict || group_leaves_through(id, ingress.slot),
        // The router itself is no path back through any interface.
        Route::Local => !strict,
        // Connected subnets and routes handed to the kernel: the dataplane does not know
        // their interface, and accepts them (the kernel checks what it is given).
        Route::Kernel | Route::Unknown => true,
    }
}

/// Next hop `id` leaves through interface `slot`. An entry never written (all zero, no MTU)
/// is no next hop.
#[inline(always)]
fn leaves_through(id: u32, slot: u32) -> bool {
    NEXTHOPS
        .get(id)
        .is_some_and(|nexthop| nexthop.mtu != 0 && nexthop.slot == slot)
}

/// A next hop of ECMP group `id` leaves through interface `slot`: its buckets scanned, at
/// most 64 reads, on strict interfaces only.
#[inline(always)]
fn group_leaves_through(id: u32, slot: u32) -> bool {
    let Some(group) = NEXTHOP_GROUPS.get(id) else {
        return false;
    };
    for bucket in 0..ECMP_BUCKETS {
        if leaves_through(group.buckets[bucket], slot) {
            return true;
        }
    }
    false
}
