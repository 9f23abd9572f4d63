//! The control plane: what the router should do, computed from the config and the host's
//! state, without any I/O. Every change comes out as a [`plan`] of map writes that the
//! dataplane layer executes.

pub mod acl;
pub(crate) mod fib;
pub mod flow;
pub(crate) mod nexthops;
pub mod plan;
pub mod rib;
pub mod router;
pub mod topology;
pub mod vrf;
