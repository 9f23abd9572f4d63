//! pop-dataplane userspace: loads the XDP fast path, compiles the routing config and the
//! host's state into its maps, keeps them current, and reports what it does.

pub mod acl;
pub mod bench;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod fib;
pub mod host;
pub mod kernel_routes;
pub mod mac;
pub mod metrics;
pub mod mtrie;
pub mod nexthops;
pub mod rib;
pub mod route_spec;
pub mod router;
pub mod run;
pub mod stats;
pub mod tables;
pub mod topology;
pub mod trace;
pub mod writes;
