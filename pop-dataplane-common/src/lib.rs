//! The contract between the pop-dataplane XDP program and its userspace: the names and sizes of
//! the BPF maps, and the `#[repr(C)]` keys, values and counters stored in them. Each type is
//! defined here once and used by both sides.
#![no_std]

pub mod acl;
pub mod counters;
pub mod ecmp;
pub mod fib;
pub mod flow;
pub mod interface;
pub mod maps;
pub mod nexthop;
pub mod route;
pub mod sample;
pub mod trace;

pub use counters::{DropReason, InterfaceCounters, PassReason};
pub use interface::{Interface, InterfaceKey};
pub use nexthop::{Nexthop, NexthopGroup};
pub use route::{Route, RouteEntry, RouteTarget};
pub use trace::TraceRecord;

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

impl_pod!(
    Interface,
    InterfaceKey,
    Nexthop,
    NexthopGroup,
    RouteTarget,
    RouteEntry,
    InterfaceCounters,
    TraceRecord,
    acl::AclKeyV4,
    acl::AclKeyV6,
    acl::AclEntry,
    acl::AclHits,
    flow::FlowOp,
    flow::FlowEntry,
    flow::FlowList,
    flow::FlowHits,
    flow::RateBucket,
    sample::SampleRate,
    sample::SampleRecord,
    sample::NexthopTraffic,
);
