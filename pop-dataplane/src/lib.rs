//! pop-dataplane userspace: loads the XDP fast path, fills its maps from the routing config,
//! and reports its counters.

pub mod config;
pub mod dataplane;
pub mod mac;
pub mod netdev;
pub mod run;
pub mod stats;
pub mod tables;
