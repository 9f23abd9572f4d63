//! The Debian package `cargo xtask package` builds (`cargo xtask test` builds it first and
//! names it in `$POP_DATAPLANE_DEB`): what it holds, its control data, and the packaged
//! binary, config and unit working from a scratch root.
//!
//! Needs dpkg-deb and systemd-analyze (both installed by `cargo xtask setup`).

use std::{path::PathBuf, process::Command};

fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {program}: {err}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_package_holds_the_binary_unit_config_man_pages_and_completions_and_they_work() {
    let deb = PathBuf::from(std::env::var_os("POP_DATAPLANE_DEB").expect(
        "POP_DATAPLANE_DEB is not set: run the suite with `cargo xtask test`, which builds the \
         package first (or set it to a .deb from `cargo xtask package`)",
    ));
    let deb = deb.to_str().unwrap();

    let (ok, info, err) = run("dpkg-deb", &["-I", deb]);
    assert!(ok, "{err}");
    for field in [
        "Package: pop-dataplane",
        "Architecture: amd64",
        "Section: net",
        "Depends: iproute2, libc6",
    ] {
        assert!(info.contains(field), "no {field:?} in:\n{info}");
    }
    let (ok, package, err) = run("dpkg-deb", &["-f", deb, "Package"]);
    assert!(ok && package.trim() == "pop-dataplane", "{err}");
    let (ok, listing, err) = run("dpkg-deb", &["-c", deb]);
    assert!(ok, "{err}");
    for path in [
        "./usr/bin/pop-dataplane",
        "./lib/systemd/system/pop-dataplane.service",
        "./etc/pop-dataplane/pop-dataplane.toml",
        "./usr/share/doc/pop-dataplane/examples/99-pop-dataplane.conf",
        "./usr/share/doc/pop-dataplane/README.md",
        "./usr/share/man/man1/pop-dataplane.1.gz",
        "./usr/share/man/man1/pop-dataplane-run.1.gz",
        "./usr/share/man/man1/pop-dataplane-config-check.1.gz",
        "./usr/share/man/man1/pop-dataplane-trace.1.gz",
        "./usr/share/bash-completion/completions/pop-dataplane",
        "./usr/share/zsh/vendor-completions/_pop-dataplane",
        "./usr/share/fish/vendor_completions.d/pop-dataplane.fish",
    ] {
        assert!(
            listing
                .lines()
                .any(|line| line.ends_with(&format!(" {path}"))),
            "no {path} in:\n{listing}"
        );
    }
    // The config is a conffile (kept over upgrades); the sysctl example is not enabled.
    let control = std::env::temp_dir().join(format!("pdpt-deb-control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&control);
    let (ok, _, err) = run("dpkg-deb", &["-e", deb, control.to_str().unwrap()]);
    assert!(ok, "{err}");
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/pop-dataplane/pop-dataplane.toml");
    assert!(!listing.contains("./etc/sysctl.d/"), "{listing}");
    let _ = std::fs::remove_dir_all(&control);

    // Unpacked into a scratch root: the binary runs, and checks the packaged config.
    let root = std::env::temp_dir().join(format!("pdpt-deb-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (ok, _, err) = run("dpkg-deb", &["-x", deb, root.to_str().unwrap()]);
    assert!(ok, "{err}");
    let binary = root.join("usr/bin/pop-dataplane");
    let binary = binary.to_str().unwrap();
    let (ok, version, err) = run(binary, &["--version"]);
    assert!(
        ok && version.starts_with("pop-dataplane 0."),
        "{version}{err}"
    );
    let config = root.join("etc/pop-dataplane/pop-dataplane.toml");
    let (ok, summary, err) = run(
        binary,
        &["config", "check", "--no-host", config.to_str().unwrap()],
    );
    assert!(ok && summary.contains("2 interfaces"), "{summary}{err}");
    let (ok, man, err) = run(
        "man",
        &[
            "-l",
            "-P",
            "cat",
            root.join("usr/share/man/man1/pop-dataplane-config-check.1.gz")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(ok && man.contains("--routes"), "{man}{err}");

    // The unit, as systemd reads it: no warning. Its ExecStart names /usr/bin, where the
    // package is not installed here, so the unit is verified pointing at the unpacked one.
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/pop-dataplane.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line} in:\n{unit}");
    }
    let verify = root.join("pop-dataplane.service");
    std::fs::write(&verify, unit.replace("/usr/bin/pop-dataplane", binary)).unwrap();
    let (ok, out, err) = run(
        "systemd-analyze",
        &["verify", "--man=no", verify.to_str().unwrap()],
    );
    assert!(
        ok && err.trim().is_empty(),
        "systemd-analyze verify: {out}{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
