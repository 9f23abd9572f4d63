//! `cargo xtask`: the project's developer tasks. Each task first installs what it needs
//! (see `setup`), so that on a new machine `cargo xtask demo` and `cargo xtask test` are all
//! there is to type.

// The benchmark report is one `json!` literal, deeper than the default limit allows.
#![recursion_limit = "256"]

mod bench;
mod demo;
mod package;
mod setup;

use std::{
    env,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use package::package;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the pinned toolchain, bpf-linker, the Debian packages the tests use, and mount
    /// bpffs. Idempotent; every other task runs it first.
    Setup,
    /// Build the workspace (XDP program included) with the pinned toolchain.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run the whole test suite: unit, BPF_PROG_TEST_RUN packet tests, end-to-end namespace
    /// tests. Needs root.
    Test {
        /// Passed to `cargo test` after `--` (a test name filter, `--nocapture`, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build a lab of three network namespaces, forward ping, TCP and UDP from host A to host
    /// B through pop-dataplane (kernel forwarding off), print its counters, tear it all down.
    Demo {
        /// native, generic or auto.
        #[arg(long, default_value = "native")]
        xdp_mode: String,
        /// Seconds of TCP and of UDP traffic.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
    },
    /// Benchmark: pop-dataplane against the kernel's forwarding and a no-lookup XDP ceiling,
    /// few routes and the full table, IPv4 and IPv6, 64 to 1518-byte frames, and the lookup
    /// micro-benchmark. Writes target/bench/latest.json and latest.png. Needs root.
    Bench {
        /// Times each case runs, in alternation with the others.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds of traffic per run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Distinct packets per lookup measurement.
        #[arg(long, default_value_t = 100_000)]
        lookup_packets: usize,
        /// Measure nothing: print the table and draw the chart again from the last run's
        /// target/bench/latest.json.
        #[arg(long)]
        redraw: bool,
    },
    /// Soak: the full table, full-rate traffic, route churn, link flaps and reloads for N
    /// minutes; then checks that every frame is accounted for, the daemon's memory did not
    /// grow and the tables are as expected. Writes target/soak/latest.json. Needs root.
    Soak {
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
    },
    /// rustfmt and clippy, warnings as errors.
    Lint,
    /// The Debian package (target/package/pop-dataplane_VERSION_ARCH.deb): the release
    /// binary, a systemd unit, an example config, man pages, shell completions and an
    /// example sysctl file.
    Package,
}

fn main() -> ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Setup => setup::all(),
        Task::Build { release } => {
            setup::toolchain()?;
            build(release)
        }
        Task::Test { args } => {
            setup::all()?;
            build(false)?;
            // The package's test checks what it holds.
            let deb = package()?;
            let mut test = pinned_cargo();
            test.args(["test", "--all-targets", "--no-fail-fast", "--"])
                .args(args);
            test.env(
                "POP_DATAPLANE_BIN",
                target_dir().join("debug/pop-dataplane"),
            );
            test.env("POP_CARGO_FUZZ", setup::cargo_fuzz_bin());
            test.env("POP_DATAPLANE_DEB", deb);
            test_with_summary(&mut test)
        }
        Task::Demo { xdp_mode, seconds } => {
            setup::all()?;
            build(false)?;
            demo::run(
                &target_dir().join("debug/pop-dataplane"),
                &xdp_mode,
                seconds,
            )
        }
        Task::Bench {
            rounds,
            seconds,
            lookup_packets,
            redraw,
        } => {
            if redraw {
                return bench::redraw(&target_dir().join("bench"));
            }
            setup::all()?;
            build(true)?;
            let release = target_dir().join("release");
            bench::run(
                &pop_dataplane_tests::bench::Tools {
                    dataplane: release.join("pop-dataplane"),
                    bench: release.join("pop-dataplane-bench"),
                },
                &bench::Options {
                    rounds,
                    seconds,
                    lookup_packets,
                    out_dir: target_dir().join("bench"),
                },
            )
        }
        Task::Soak { minutes } => {
            setup::all()?;
            build(true)?;
            let release = target_dir().join("release");
            let report = pop_dataplane_tests::soak::soak(
                &pop_dataplane_tests::bench::Tools {
                    dataplane: release.join("pop-dataplane"),
                    bench: release.join("pop-dataplane-bench"),
                },
                &pop_dataplane_tests::soak::Options::minutes(minutes),
                &mut |line| println!("soak: {line}"),
            )?;
            let json = serde_json::to_string_pretty(&report)?;
            println!("{json}");
            let dir = target_dir().join("soak");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("latest.json"), &json)?;
            let problems = report.problems();
            if report.route_changes_per_second < 10_000.0 {
                println!(
                    "soak: route churn {:.0} changes/s, below the 10,000/s target",
                    report.route_changes_per_second
                );
            }
            if !problems.is_empty() {
                bail!("soak failed:\n{}", problems.join("\n"));
            }
            println!("soak: passed");
            Ok(())
        }
        Task::Package => {
            setup::all()?;
            package().map(|_| ())
        }
        Task::Lint => {
            setup::toolchain()?;
            cmd(pinned_cargo().args(["fmt", "--all", "--", "--check"]))?;
            cmd(pinned_cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))
        }
    }
}

/// Runs `cargo test`, echoing its output, and ends with one line that adds up every test
/// binary's result: `summary: N passed, N failed, N ignored`.
fn test_with_summary(test: &mut Command) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};

    let mut child = test
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", display(test)))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        // test result: ok. 21 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; ...
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(count)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(count) = count.parse::<u64>() else {
                    continue;
                };
                match what {
                    "passed" => passed += count,
                    "failed" => failed += count,
                    "ignored" => ignored += count,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    println!("summary: {passed} passed, {failed} failed, {ignored} ignored");
    if !status.success() {
        bail!("{} failed ({status})", display(test));
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

fn build(release: bool) -> anyhow::Result<()> {
    let mut build = pinned_cargo();
    build.args(["build", "--bins"]);
    if release {
        build.arg("--release");
    }
    cmd(&mut build)
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// `cargo` of the pinned toolchain, in the workspace, with the matching bpf-linker first on
/// PATH, and none of the variables that the cargo running xtask set for it.
fn pinned_cargo() -> Command {
    let mut cargo = Command::new("cargo");
    cargo.current_dir(workspace());
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        let inherited_from_cargo = key == "CARGO"
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&&*key)
            || ["RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN", "LD_LIBRARY_PATH"].contains(&&*key);
        if inherited_from_cargo {
            cargo.env_remove(&*key);
        }
    }
    cargo.env("RUSTUP_TOOLCHAIN", setup::TOOLCHAIN);
    let path = env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(setup::bpf_linker_bin_dir()).chain(env::split_paths(&path));
    cargo.env(
        "PATH",
        env::join_paths(paths).expect("PATH entries without ':'"),
    );
    cargo
}

/// Runs `command`, failing unless it succeeds. Output goes to the terminal.
pub fn cmd(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {}", display(command)))?;
    if !status.success() {
        bail!("{} failed ({status})", display(command));
    }
    Ok(())
}

/// Runs `command` and returns its stdout, failing unless it succeeds.
pub fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", display(command)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            display(command),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn display(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}
