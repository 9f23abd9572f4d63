//! `cargo xtask package`: the Debian package. The release build, then what is generated from
//! the CLI's definition (man pages, shell completions) into `target/release/packaging/`, then
//! cargo-deb with the assets `pop-dataplane/Cargo.toml` lists.

use std::{fs, path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::{build, output, pinned_cargo, setup, target_dir};

/// Builds the package; its path.
pub(crate) fn package() -> anyhow::Result<PathBuf> {
    build(true)?;
    let release = target_dir().join("release");
    let binary = release.join("pop-dataplane");
    let generated = release.join("packaging");
    let _ = fs::remove_dir_all(&generated);
    let completions = generated.join("completions");
    fs::create_dir_all(&completions)?;
    let man = generated.join("man");
    output(Command::new(&binary).arg("manpages").arg(&man))?;
    // Compressed, as Debian policy has man pages (`-n`: no name or time stamp inside, so the
    // package is the same from the same sources).
    let pages: Vec<PathBuf> = fs::read_dir(&man)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    output(Command::new("gzip").arg("-9n").args(&pages))?;
    for (shell, file) in [
        ("bash", "pop-dataplane.bash"),
        ("zsh", "_pop-dataplane"),
        ("fish", "pop-dataplane.fish"),
    ] {
        let text = output(Command::new(&binary).args(["completions", shell]))?;
        fs::write(completions.join(file), text)?;
    }
    let out_dir = target_dir().join("package");
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir)?;
    // `cargo deb` finds cargo-deb on PATH.
    let mut deb = pinned_cargo();
    let tool_dir = setup::cargo_deb_bin()
        .parent()
        .expect("<root>/bin/cargo-deb")
        .to_owned();
    let path = deb
        .get_envs()
        .find(|(key, _)| *key == "PATH")
        .and_then(|(_, value)| value.map(ToOwned::to_owned))
        .unwrap_or_default();
    let paths = std::iter::once(tool_dir).chain(std::env::split_paths(&path));
    deb.env("PATH", std::env::join_paths(paths)?);
    deb.args(["deb", "-p", "pop-dataplane", "--no-build", "--output"])
        .arg(&out_dir);
    let printed = output(&mut deb)?;
    let path = printed
        .lines()
        .rev()
        .find(|line| line.trim_end().ends_with(".deb"))
        .map(|line| PathBuf::from(line.trim()))
        .context("cargo deb printed no package path")?;
    println!("package: {}", path.display());
    Ok(path)
}
