//! pop-dataplane userspace: loads the XDP fast path, compiles the routing config and the
//! host's state into its maps, keeps them current, and reports what it does.
//!
//! The modules are the layers, in the order data flows through them; each uses only the
//! ones before it:
//!
//! - [`config`], [`host`]: what comes in. The config file and the words of the CLI and route
//!   files; the host's interfaces, addresses, neighbours and kernel routes over rtnetlink.
//! - [`control`]: the control plane, pure (no I/O): topology, RIB, next hops, source filter,
//!   FIB compile; every change comes out as a plan of map writes.
//! - [`dataplane`]: the only user of aya. Loads and attaches the XDP program, pins and takes
//!   over, executes plans on the maps and the route tables.
//! - [`observe`]: counters, metrics and `trace`, read from the pinned program and maps.
//! - [`api`]: the control socket's typed requests and replies, and its client.
//! - [`daemon`]: `pop-dataplane run`: bring-up, the event loop, request handlers, kernel
//!   route sync, the control server and its files.
//! - [`cli`]: the command line: commands and rendering.

// Public: what the tests, the fuzz targets and the benchmark tools use. The rest is the
// binary's alone, so that rustc reports what nobody calls.
pub(crate) mod api;
pub mod cli;
pub mod config;
pub mod control;
pub(crate) mod daemon;
pub mod dataplane;
pub mod host;
pub mod mac;
pub mod observe;
