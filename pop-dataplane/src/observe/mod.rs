//! What a running dataplane shows: its counters (`stats`), the Prometheus endpoint
//! (`metrics`) and `trace`, all read from the pinned program and maps.

pub(crate) mod metrics;
pub(crate) mod names;
pub(crate) mod sflow;
pub mod stats;
pub mod top;
pub(crate) mod trace;
