//! The fuzz targets of `tests/fuzz` (cargo fuzz, libFuzzer, coverage-guided) for the parsers of
//! untrusted input: config files, route files, the CLI's route, ACL and flow words, rtnetlink
//! messages, kernel nexthop object messages, ExaBGP's FlowSpec messages. Each runs for a
//! bounded time from its corpus in `tests/fuzz/corpus/<target>`
//! (what it finds new goes to a scratch directory, not the repository); a crash, a panic or
//! a broken property fails the test with libFuzzer's report.
//!
//! Needs cargo-fuzz: `cargo xtask test` installs it and passes it as POP_CARGO_FUZZ.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

const TARGETS: [&str; 6] = [
    "config",
    "route_file",
    "cli_words",
    "netlink",
    "flowspec_feed",
    "nexthop_objects",
];
/// Seconds each target runs.
const SECONDS: u32 = 30;

fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let bin = std::env::var_os("POP_CARGO_FUZZ")
        .map(PathBuf::from)
        .expect("POP_CARGO_FUZZ is not set: run the suite with `cargo xtask test`");
    let workspace = fuzz_dir
        .parent()
        .and_then(Path::parent)
        .expect("tests/fuzz");
    let mut command = Command::new(bin);
    command
        .current_dir(workspace)
        // No sanitizer: the targets are safe Rust; the coverage instrumentation works on
        // the pinned stable toolchain. RUSTC_BOOTSTRAP for the XDP object built on the way.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", workspace.join("target/fuzz"));
    command
}

#[test]
fn every_fuzz_target_runs_clean_from_its_corpus() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let started = Instant::now();
    let status = cargo_fuzz(&fuzz_dir)
        .args(["build", "--fuzz-dir"])
        .arg(&fuzz_dir)
        .args(["-s", "none", "--debug-assertions"])
        .status()
        .expect("running cargo fuzz build");
    assert!(status.success(), "cargo fuzz build: {status}");
    println!("fuzz targets built in {:.0?}", started.elapsed());

    for target in TARGETS {
        let corpus = fuzz_dir.join("corpus").join(target);
        let seeds = std::fs::read_dir(&corpus).unwrap().count();
        assert!(seeds > 0, "no corpus for {target}");
        let scratch = std::env::temp_dir().join(format!(
            "pop-dataplane-fuzz-{target}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&scratch).unwrap();
        let output = cargo_fuzz(&fuzz_dir)
            .args(["run", "--fuzz-dir"])
            .arg(&fuzz_dir)
            .args(["-s", "none", "--debug-assertions", target])
            .arg(&scratch)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={SECONDS}"))
            .arg(format!("-artifact_prefix={}/", scratch.display()))
            .output()
            .expect("running cargo fuzz run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let done = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("Done ") || l.contains("DONE "))
            .unwrap_or("");
        println!("{target}: {seeds} seeds; {}", done.trim());
        assert!(
            output.status.success(),
            "{target} failed ({}): {}",
            output.status,
            stderr
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
        let _ = std::fs::remove_dir_all(&scratch);
    }
}
