//! Builds the XDP programs of the crate being built (its `-ebpf` sibling: `pop-dataplane-ebpf`
//! for `pop-dataplane`, `pop-dataplane-bench-ebpf` for `pop-dataplane-bench`, which uses this
//! file too) for the BPF target, so that the binary can embed them: one `cargo build`, no
//! separate step to remember.

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// The toolchain the eBPF crate is built with: the one building us. `cargo xtask` pins it.
fn toolchain() -> String {
    std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "nightly".to_owned())
}

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let name = format!("{}-ebpf", std::env::var("CARGO_PKG_NAME")?);
    let ebpf = packages
        .into_iter()
        .find(|package| package.name.as_str() == name)
        .ok_or_else(|| anyhow!("{name} package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;

    // A stable toolchain builds `core` for the BPF target only with `-Z build-std`, which
    // aya-build passes when RUSTC_BOOTSTRAP=1. Set here, it reaches the eBPF build alone.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };

    let toolchain = toolchain();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: &name,
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}
