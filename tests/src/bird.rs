//! BIRD 2 in a test namespace: a speaker with its own config, control socket and log, stopped
//! when dropped; and the kernel routing table of a namespace, read with `ip -json route`.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ipnet::IpNet;

use crate::netns::{Netns, run};

/// A BGP protocol of a BIRD 2 config, quick to (re)connect: `channel` is its channel, as
/// BIRD writes it (`ipv4 { import all; export none; }`).
pub fn bgp_session(name: &str, local: (&str, u32), neighbor: (&str, u32), channel: &str) -> String {
    format!(
        "protocol bgp {name} {{
  local {} as {}; neighbor {} as {};
  connect retry time 1; error wait time 1, 5;
  {channel};
}}
",
        local.0, local.1, neighbor.0, neighbor.1
    )
}

/// A running `bird`.
pub struct Bird {
    child: Child,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Bird {
    /// Starts BIRD in `ns` with `config` (text), its files under `dir` named after `name`.
    pub fn start(ns: &Netns, dir: &Path, name: &str, config: &str) -> anyhow::Result<Self> {
        let config_path = dir.join(format!("{name}.conf"));
        let socket = dir.join(format!("{name}.ctl"));
        let log = dir.join(format!("{name}.log"));
        fs::write(&config_path, config)?;
        let child = ns
            .enter("bird")
            .arg("-f")
            .arg("-c")
            .arg(&config_path)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.join(format!("{name}.pid")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting bird")?;
        let bird = Self {
            child,
            config: config_path,
            socket,
            log,
        };
        bird.wait_for(Duration::from_secs(60), "its control socket", |bird| {
            Ok(bird.birdc(&["show", "status"]).is_ok())
        })?;
        Ok(bird)
    }

    /// `birdc ARGS` against this BIRD; its output.
    pub fn birdc(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new("birdc").arg("-s").arg(&self.socket).args(args))
    }

    /// Replaces the config and tells BIRD to apply it.
    pub fn reconfigure(&self, config: &str) -> anyhow::Result<()> {
        fs::write(&self.config, config)?;
        let out = self.birdc(&["configure"])?;
        if !out.contains("Reconfigured") && !out.contains("Reconfiguration in progress") {
            bail!("birdc configure: {out}");
        }
        Ok(())
    }

    /// Whether BGP protocol `name` is up.
    pub fn established(&self, name: &str) -> anyhow::Result<bool> {
        Ok(self
            .birdc(&["show", "protocols", name])?
            .contains("Established"))
    }

    /// Polls `ready` every 50 ms until it says yes, for at most `limit`; the error tells
    /// what was awaited, with BIRD's log.
    pub fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        mut ready: impl FnMut(&Self) -> anyhow::Result<bool>,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if ready(self)? {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                bail!(
                    "waited {limit:?} for {what}; bird's log:\n{}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The forwarding routes of routing table `table` in `ns`, as the kernel lists them (for a
/// prefix with several, the lowest metric's): prefix -> `via ADDR dev DEV` (each gateway,
/// sorted), `dev DEV`, `blackhole`, `unreachable`, ...
pub fn kernel_table(ns: &Netns, table: &str) -> anyhow::Result<BTreeMap<IpNet, String>> {
    let mut routes: BTreeMap<IpNet, (u64, String)> = BTreeMap::new();
    for family in ["-4", "-6"] {
        let out = ns.ip(&["-json", family, "route", "show", "table", table])?;
        let list: Vec<serde_json::Value> = serde_json::from_str(&out)
            .with_context(|| format!("parsing ip -json {family} route"))?;
        for route in list {
            let kind = route["type"].as_str().unwrap_or("unicast");
            if !["unicast", "blackhole", "unreachable", "prohibit", "throw"].contains(&kind) {
                continue;
            }
            let dst = route["dst"].as_str().context("dst")?;
            let prefix: IpNet = match dst {
                "default" if family == "-4" => "0.0.0.0/0".parse()?,
                "default" => "::/0".parse()?,
                dst if dst.contains('/') => dst.parse()?,
                dst => IpNet::from(dst.parse::<std::net::IpAddr>()?),
            };
            let hop = |hop: &serde_json::Value| match (hop["gateway"].as_str(), hop["dev"].as_str())
            {
                (Some(gateway), Some(dev)) => format!("via {gateway} dev {dev}"),
                (None, Some(dev)) => format!("dev {dev}"),
                _ => "?".to_owned(),
            };
            let target = if kind != "unicast" {
                kind.to_owned()
            } else if let Some(hops) = route["nexthops"].as_array() {
                let mut hops: Vec<String> = hops.iter().map(hop).collect();
                hops.sort();
                hops.join(" ")
            } else {
                hop(&route)
            };
            let metric = route["metric"].as_u64().unwrap_or(0);
            match routes.get(&prefix) {
                Some((best, _)) if *best <= metric => {}
                _ => {
                    routes.insert(prefix, (metric, target));
                }
            }
        }
    }
    Ok(routes.into_iter().map(|(p, (_, t))| (p, t)).collect())
}
