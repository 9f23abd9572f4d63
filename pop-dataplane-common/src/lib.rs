//! The contract between the pop-dataplane XDP program and its userspace: the names and sizes of
//! the BPF maps, and the `#[repr(C)]` keys, values and counters stored in them. Each type is
//! defined here once and used by both sides.
#![no_std]

pub mod counters;
pub mod interface;
pub mod maps;
pub mod nexthop;
pub mod route;

pub use counters::{DropReason, InterfaceCounters, PassReason};
pub use interface::Interface;
pub use nexthop::Nexthop;
pub use route::{Route, RouteTarget};

/// Implements `aya::Pod` (userspace only): the type is plain old data, valid for any bytes.
macro_rules! impl_pod {
    ($($ty:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: `#[repr(C)]` or `#[repr(transparent)]`, integers and byte arrays only,
            // with explicit padding fields, so every bit pattern is a valid value.
            unsafe impl aya::Pod for $ty {}
        )*
    };
}

impl_pod!(Interface, Nexthop, RouteTarget, InterfaceCounters);
