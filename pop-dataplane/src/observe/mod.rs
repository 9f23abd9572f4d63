//! What a running dataplane shows: its counters (`stats`), the Prometheus endpoint
//! (`metrics`) and `trace`, all read from the pinned program and maps.

pub mod metrics;
pub mod names;
pub mod stats;
pub mod trace;
