//! FlowSpec over real BGP in test namespaces: ExaBGP on the router, feeding the dataplane
//! through `pop-dataplane flowspec-feed`, and GoBGP as the speaker that announces routes
//! (from Debian's `exabgp` and `gobgpd` packages). Both are stopped when dropped.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::{Netns, run};

/// A running ExaBGP whose API process is the dataplane's FlowSpec feed.
pub struct ExaBgp {
    child: Child,
    pub log: PathBuf,
}

impl ExaBgp {
    /// Starts ExaBGP in `ns`, peering from `local` (AS 65001) with `peer` (AS 65002) for
    /// IPv4 and IPv6 FlowSpec, running `feed` (a command line without spaces in its words)
    /// as its JSON API process.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        local: &str,
        peer: &str,
        feed: &[&str],
    ) -> anyhow::Result<Self> {
        let config = dir.join("exabgp.conf");
        let log = dir.join("exabgp.log");
        fs::write(
            &config,
            format!(
                "process feed {{\n    run {};\n    encoder json;\n}}\n\
                 neighbor {peer} {{\n    router-id {local};\n    local-address {local};\n    \
                 local-as 65001;\n    peer-as 65002;\n    hold-time 9;\n    \
                 family {{\n        ipv4 flow;\n        ipv6 flow;\n    }}\n    \
                 api {{\n        processes [ feed ];\n        receive {{ parsed; update; }}\n        \
                 neighbor-changes;\n    }}\n}}\n",
                feed.join(" ")
            ),
        )?;
        let child = ns
            .command("exabgp")
            .arg(&config)
            .current_dir(dir)
            .env("exabgp.daemon.user", "root")
            .env("exabgp.daemon.drop", "false")
            .env("exabgp.log.destination", "stdout")
            .env("exabgp.log.level", "INFO")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::options().append(true).open(&log)?)
            .spawn()
            .context("starting exabgp")?;
        Ok(Self { child, log })
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ExaBgp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running GoBGP speaker, driven with the `gobgp` CLI.
pub struct GoBgp {
    child: Option<Child>,
    ns_name: String,
    pub log: PathBuf,
}

impl GoBgp {
    /// Starts gobgpd in `ns` as AS 65002 at `local`, peering with `peer` (AS 65001) for IPv4
    /// and IPv6 FlowSpec; its API on the namespace's loopback.
    pub fn start(ns: &Netns, dir: &Path, local: &str, peer: &str) -> anyhow::Result<Self> {
        run(ns.command("ip").args(["link", "set", "lo", "up"]))?;
        let config = dir.join("gobgpd.toml");
        let log = dir.join("gobgpd.log");
        fs::write(
            &config,
            format!(
                "[global.config]\n  as = 65002\n  router-id = \"{local}\"\n  \
                 local-address-list = [\"{local}\"]\n\
                 [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{peer}\"\n    \
                 peer-as = 65001\n  [neighbors.timers.config]\n    hold-time = 9\n    \
                 keepalive-interval = 3\n\
                 [[neighbors.afi-safis]]\n  [neighbors.afi-safis.config]\n    \
                 afi-safi-name = \"ipv4-flowspec\"\n\
                 [[neighbors.afi-safis]]\n  [neighbors.afi-safis.config]\n    \
                 afi-safi-name = \"ipv6-flowspec\"\n"
            ),
        )?;
        let child = ns
            .command("gobgpd")
            .arg("-f")
            .arg(&config)
            .args(["--api-hosts", "127.0.0.1:50051"])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting gobgpd")?;
        Ok(Self {
            child: Some(child),
            ns_name: ns.name().to_owned(),
            log,
        })
    }

    /// `gobgp ARGS` against this speaker.
    pub fn gobgp(&self, args: &[&str]) -> anyhow::Result<String> {
        run(std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns_name, "gobgp"])
            .args(args))
    }

    /// Waits until the session is established.
    pub fn wait_established(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.gobgp(&["neighbor"]).unwrap_or_default();
            if out.contains("Establ") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("no BGP session after {timeout:?}: {out}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills gobgpd: its session goes down.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for GoBgp {
    fn drop(&mut self) {
        self.kill();
    }
}
