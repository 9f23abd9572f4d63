//! Test support for pop-dataplane: network namespaces that clean up after themselves, the
//! three-namespace lab, and a frame builder. The integration tests live in `tests/tests/`;
//! xtask's demo and bench use the lab too.

pub mod bench;
pub mod bird;
pub mod flowspec;
pub mod frame;
pub mod frr;
pub mod fulltable;
pub mod lab;
pub mod model;
pub mod netns;
pub mod pktgen;
pub mod sflow;
pub mod soak;
pub mod traffic;

use std::path::PathBuf;

/// The `pop-dataplane` binary to test: `$POP_DATAPLANE_BIN`, else the one cargo built next to
/// the running test executable (`target/<profile>/pop-dataplane`).
pub fn dataplane_binary() -> PathBuf {
    built_binary("POP_DATAPLANE_BIN", "pop-dataplane")
}

/// The benchmark's tools, `pop-dataplane-bench`: `$POP_DATAPLANE_BENCH_BIN`, else the one
/// next to the running test executable.
pub fn bench_binary() -> PathBuf {
    built_binary("POP_DATAPLANE_BENCH_BIN", "pop-dataplane-bench")
}

fn built_binary(variable: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} does not exist: build it first (`cargo xtask test` does)",
        binary.display()
    );
    binary
}
