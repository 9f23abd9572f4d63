use which::which;

/// The eBPF object is linked by `bpf-linker`, a dependency cargo does not see: rebuild when the
/// linker binary changes (xtask installs it against the pinned toolchain's LLVM).
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not on PATH: run `cargo xtask setup`");
    println!("cargo::rerun-if-changed={}", bpf_linker.display());
}
