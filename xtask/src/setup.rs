//! Installs what building and testing need, idempotently: the pinned Rust toolchain with
//! rust-src, bpf-linker built against that toolchain's own LLVM, the Debian packages the tests
//! use, and a bpf filesystem on /sys/fs/bpf. Each step checks first and does nothing when
//! its piece is already there.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{cmd, output};

/// The toolchain that builds everything but xtask: aya 0.16 needs rustc >= 1.98, and its eBPF
/// crate builds `core` with `-Z build-std` (allowed on stable through RUSTC_BOOTSTRAP).
pub(crate) const TOOLCHAIN: &str = "1.99.1";
const COMPONENTS: [&str; 3] = ["rust-src", "rustfmt", "clippy"];

/// bpf-linker 0.13's default feature links LLVM 23, the LLVM of Rust 1.99.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-fuzz, which builds and runs the fuzz targets in `tests/fuzz`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-deb, which builds the Debian package (`cargo xtask package`).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Debian packages: the tools the tests and the demo drive.
const APT_PACKAGES: [(&str, &str); 15] = [
    ("iproute2", "ip"),
    ("ethtool", "ethtool"),
    ("iperf3", "iperf3"),
    ("iputils-ping", "ping"),
    ("tcpdump", "tcpdump"),
    ("traceroute", "traceroute"),
    // The BGP end-to-end tests' speakers (installed, not started: each test runs its own).
    ("bird2", "/usr/sbin/bird"),
    // The FRR test's router: zebra and bgpd (and vtysh).
    ("frr", "/usr/lib/frr/zebra"),
    // The FlowSpec test: ExaBGP feeds the dataplane, GoBGP announces.
    ("exabgp", "/usr/sbin/exabgp"),
    ("gobgpd", "/usr/bin/gobgpd"),
    // The sFlow test's collector.
    ("pmacct", "/usr/sbin/sfacctd"),
    // The package test: the unit verified, a man page read.
    ("systemd", "/usr/bin/systemd-analyze"),
    ("man-db", "/usr/bin/man"),
    // The benchmark reads programs' run-time statistics with it.
    ("bpftool", "/usr/sbin/bpftool"),
    // The benchmark chart's font.
    ("fonts-dejavu-core", FONT),
];

/// The font the benchmark chart is drawn with.
pub(crate) const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Where this project keeps what it installs outside the workspace.
fn tools_dir() -> PathBuf {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cargo"));
    cargo_home.join("pop-dataplane")
}

fn home() -> PathBuf {
    env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// The directory holding the bpf-linker built for [`TOOLCHAIN`].
pub(crate) fn bpf_linker_bin_dir() -> PathBuf {
    tools_dir()
        .join(format!("bpf-linker-{BPF_LINKER_VERSION}-rust-{TOOLCHAIN}"))
        .join("bin")
}

/// Everything: toolchain, bpf-linker, cargo-fuzz, cargo-deb, packages, bpffs.
pub(crate) fn all() -> anyhow::Result<()> {
    toolchain()?;
    cargo_fuzz()?;
    cargo_deb()?;
    apt_packages()?;
    bpffs()?;
    Ok(())
}

/// The cargo-fuzz binary this project installs.
pub(crate) fn cargo_fuzz_bin() -> PathBuf {
    tool_bin("cargo-fuzz", CARGO_FUZZ_VERSION)
}

fn cargo_fuzz() -> anyhow::Result<()> {
    tool("cargo-fuzz", CARGO_FUZZ_VERSION)
}

/// The cargo-deb binary this project installs.
pub(crate) fn cargo_deb_bin() -> PathBuf {
    tool_bin("cargo-deb", CARGO_DEB_VERSION)
}

fn cargo_deb() -> anyhow::Result<()> {
    tool("cargo-deb", CARGO_DEB_VERSION)
}

/// Where tool `name` at `version` is installed.
fn tool_bin(name: &str, version: &str) -> PathBuf {
    tools_dir()
        .join(format!("{name}-{version}"))
        .join("bin")
        .join(name)
}

/// Builds tool `name` at `version` unless it is there.
fn tool(name: &str, version: &str) -> anyhow::Result<()> {
    let bin = tool_bin(name, version);
    if bin.exists() {
        return Ok(());
    }
    let started = Instant::now();
    println!("setup: building {name} {version}");
    cargo_install(name, version, &bin, &[])?;
    println!("setup: {name} built in {:.0?}", started.elapsed());
    Ok(())
}

/// `cargo install NAME --version VERSION`, locked, with the pinned toolchain, so that its
/// binary lands at `bin` (`<root>/bin/<name>`).
fn cargo_install(
    name: &str,
    version: &str,
    bin: &Path,
    env: &[(&str, &Path)],
) -> anyhow::Result<()> {
    let root = bin
        .parent()
        .and_then(Path::parent)
        .expect("<root>/bin/<name>");
    cmd(Command::new("rustup")
        .args(["run", TOOLCHAIN, "cargo", "install", name, "--locked"])
        .args(["--version", version, "--root"])
        .arg(root)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null()))
}

/// The pinned toolchain and the bpf-linker that matches it: enough to build.
pub(crate) fn toolchain() -> anyhow::Result<()> {
    rust_toolchain()?;
    bpf_linker()?;
    Ok(())
}

fn rust_toolchain() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["toolchain", "list"]))?;
    let have_toolchain = installed
        .lines()
        .any(|line| line.starts_with(&format!("{TOOLCHAIN}-")));
    if have_toolchain {
        let components = output(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            TOOLCHAIN,
        ]))?;
        let missing: Vec<_> = COMPONENTS
            .iter()
            .filter(|c| {
                !components
                    .lines()
                    .any(|line| line.starts_with(&format!("{c}-")))
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        println!(
            "setup: adding {} to Rust {TOOLCHAIN}",
            COMPONENTS.join(", ")
        );
        cmd(Command::new("rustup")
            .args(["component", "add", "--toolchain", TOOLCHAIN])
            .args(missing)
            .stdin(std::process::Stdio::null()))?;
        return Ok(());
    }
    let started = Instant::now();
    println!(
        "setup: installing Rust {TOOLCHAIN} with {}",
        COMPONENTS.join(", ")
    );
    // rustup may wait on a terminal that is not there: give it none.
    let mut install = Command::new("rustup");
    install.args(["toolchain", "install", TOOLCHAIN, "--profile", "minimal"]);
    for component in COMPONENTS {
        install.args(["--component", component]);
    }
    cmd(install.stdin(std::process::Stdio::null()))?;
    println!(
        "setup: Rust {TOOLCHAIN} installed in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// bpf-linker must link the same LLVM major version as the rustc that emits the eBPF bitcode.
/// Every rustup toolchain ships its own libLLVM: we build bpf-linker against that one, through
/// a directory that holds it under the name bpf-linker's build script looks for.
fn bpf_linker() -> anyhow::Result<()> {
    let bin = bpf_linker_bin_dir().join("bpf-linker");
    if bin.exists()
        && Command::new(&bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    let started = Instant::now();
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the LLVM of Rust {TOOLCHAIN}"
    );
    let sysroot =
        output(Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"]))?;
    let toolchain_lib = Path::new(sysroot.trim()).join("lib");
    let libllvm = fs::read_dir(&toolchain_lib)
        .with_context(|| format!("reading {}", toolchain_lib.display()))?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", toolchain_lib.display()))?;

    let llvm_prefix = tools_dir().join(format!("llvm-rust-{TOOLCHAIN}"));
    let llvm_lib = llvm_prefix.join("lib");
    fs::create_dir_all(&llvm_lib)?;
    let file_name = libllvm.file_name().expect("a file");
    for link in [llvm_lib.join("libLLVM.so"), llvm_lib.join(file_name)] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
    }

    cargo_install(
        "bpf-linker",
        BPF_LINKER_VERSION,
        &bin,
        &[("LLVM_PREFIX", &llvm_prefix)],
    )?;
    if !Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        bail!("{} was installed but does not run", bin.display());
    }
    println!("setup: bpf-linker built in {:.0?}", started.elapsed());
    Ok(())
}

/// Installs the Debian packages whose commands are missing.
pub(crate) fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, needed)| {
            if needed.starts_with('/') {
                !Path::new(needed).is_file()
            } else {
                !on_path(needed)
            }
        })
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    println!("setup: installing Debian packages {}", missing.join(" "));
    cmd(Command::new("apt-get")
        .args(["update", "-qq"])
        .stdin(std::process::Stdio::null()))?;
    cmd(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null()))?;
    println!("setup: packages installed in {:.0?}", started.elapsed());
    Ok(())
}

fn on_path(command: &str) -> bool {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|dir| dir.join(command).is_file())
}

/// Mounts a bpf filesystem on /sys/fs/bpf when none is there (a new machine may not have one).
pub(crate) fn bpffs() -> anyhow::Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let path = c"/sys/fs/bpf";
    // SAFETY: `statfs` is plain data, for which all zeroes is a valid value.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path, and a struct statfs to write into.
    let mounted = unsafe { libc::statfs(path.as_ptr(), &mut stat) } == 0
        && stat.f_type as i64 == BPF_FS_MAGIC;
    if !mounted {
        println!("setup: mounting a bpf filesystem on /sys/fs/bpf");
        cmd(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    Ok(())
}
