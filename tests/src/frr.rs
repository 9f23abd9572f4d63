//! FRR in a test namespace: zebra and bgpd with their own config, sockets, state and logs
//! under the test's directory, stopped when dropped; `vtysh` against them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::{Netns, run};

/// Where Debian puts FRR's daemons.
const DAEMONS: &str = "/usr/lib/frr";

/// A running zebra and bgpd.
pub struct Frr {
    children: Vec<Child>,
    vty_dir: PathBuf,
    logs: Vec<PathBuf>,
}

impl Frr {
    /// Starts zebra, then bgpd with `bgpd_config` (text), in `ns`; their files in a
    /// directory `name` under `dir`. Zebra installs routes through nexthop objects, its
    /// default.
    pub fn start(ns: &Netns, dir: &Path, name: &str, bgpd_config: &str) -> anyhow::Result<Self> {
        let dir = dir.join(name);
        fs::create_dir_all(&dir)?;
        // The daemons drop to the frr user (their vty sockets belong to its group, frrvty)
        // and write their sockets and pid files here.
        run(Command::new("chown").arg("frr:frr").arg(&dir))?;
        let zserv = dir.join("zserv.api");
        let mut frr = Self {
            children: Vec::new(),
            vty_dir: dir.clone(),
            logs: Vec::new(),
        };
        for (daemon, config) in [("zebra", ""), ("bgpd", bgpd_config)] {
            let config_path = dir.join(format!("{daemon}.conf"));
            let log = dir.join(format!("{daemon}.log"));
            fs::write(&config_path, config)?;
            let child = ns
                .enter(format!("{DAEMONS}/{daemon}"))
                .arg("--config_file")
                .arg(&config_path)
                .arg("--pid_file")
                .arg(dir.join(format!("{daemon}.pid")))
                .arg("--socket")
                .arg(&zserv)
                .arg("--vty_socket")
                .arg(&dir)
                .args(["--vty_port", "0"])
                .arg("--log")
                .arg(format!("file:{}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.join(format!("{daemon}.stderr")))?)
                .spawn()
                .with_context(|| format!("starting {daemon}"))?;
            frr.children.push(child);
            frr.logs.push(log);
            let socket = dir.join(format!("{daemon}.vty"));
            frr.wait_for(
                Duration::from_secs(30),
                &format!("{daemon}'s vty socket"),
                || Ok(socket.exists()),
            )?;
        }
        Ok(frr)
    }

    /// `vtysh -c COMMAND ...` against these daemons; the output.
    pub fn vtysh(&self, commands: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("vtysh");
        command.arg("--vty_socket").arg(&self.vty_dir);
        for c in commands {
            command.args(["-c", c]);
        }
        run(&mut command)
    }

    /// Polls `ready` every 100 ms until it says yes, for at most `limit`; the error tells
    /// what was awaited, with the daemons' logs.
    pub fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        mut ready: impl FnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if ready()? {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                let logs: String = self
                    .logs
                    .iter()
                    .map(|log| {
                        format!(
                            "{}:\n{}\n",
                            log.display(),
                            fs::read_to_string(log).unwrap_or_default()
                        )
                    })
                    .collect();
                bail!("waited {limit:?} for {what}; FRR's logs:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        // bgpd first, so that zebra takes its routes out of the kernel as it goes.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
