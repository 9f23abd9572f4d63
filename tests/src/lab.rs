//! The three-namespace lab used by the demo, the end-to-end tests and the benchmarks:
//!
//! ```text
//!   host A                    router                     host B
//!   a0 198.18.1.2/24 ---- ra 198.18.1.1/24
//!                             rb 198.18.2.1/24 ---- b0 198.18.2.2/24
//! ```
//!
//! The router's kernel forwarding is off (`net.ipv4.ip_forward=0`): what crosses it was
//! forwarded by XDP. Addresses come only from the benchmarking range 198.18.0.0/15.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::{Netns, is_stale, run};

/// One end of a lab link.
#[derive(Clone, Copy, Debug)]
pub struct Port {
    pub ifname: &'static str,
    pub mac: &'static str,
    pub ipv4: &'static str,
    pub prefix_len: u8,
}

pub const HOST_A: Port = Port {
    ifname: "a0",
    mac: "02:00:00:01:00:02",
    ipv4: "198.18.1.2",
    prefix_len: 24,
};
pub const ROUTER_A: Port = Port {
    ifname: "ra",
    mac: "02:00:00:01:00:01",
    ipv4: "198.18.1.1",
    prefix_len: 24,
};
pub const ROUTER_B: Port = Port {
    ifname: "rb",
    mac: "02:00:00:02:00:01",
    ipv4: "198.18.2.1",
    prefix_len: 24,
};
pub const HOST_B: Port = Port {
    ifname: "b0",
    mac: "02:00:00:02:00:02",
    ipv4: "198.18.2.2",
    prefix_len: 24,
};

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

pub struct Lab {
    pub a: Netns,
    pub router: Netns,
    pub b: Netns,
    /// Scratch directory: the router config, the daemon's run directory and log.
    dir: PathBuf,
}

impl Lab {
    /// Builds the lab; namespaces are named `<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        reap_stale_files(prefix);
        let a = Netns::new(prefix)?;
        let router = Netns::new(prefix)?;
        let b = Netns::new(prefix)?;
        let dir = std::env::temp_dir().join(format!(
            "{}-{}-{}",
            prefix,
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir)?;
        let lab = Self { a, router, b, dir };
        lab.link(&lab.a, HOST_A, ROUTER_A)?;
        lab.link(&lab.b, HOST_B, ROUTER_B)?;
        for (host, port, gateway) in [(&lab.a, HOST_A, ROUTER_A), (&lab.b, HOST_B, ROUTER_B)] {
            host.ip(&["route", "add", "198.18.0.0/15", "via", gateway.ipv4])?;
            // A static gateway entry: no ARP in the way of exact packet counts. (The router
            // still resolves the hosts with ARP, through the kernel.)
            host.ip(&[
                "neigh",
                "replace",
                gateway.ipv4,
                "lladdr",
                gateway.mac,
                "dev",
                port.ifname,
                "nud",
                "permanent",
            ])?;
            // Native XDP on the router redirects into these veths: without GRO (or an XDP
            // program) on the receiving end the frames are silently lost. And the XDP path
            // does not finish partial checksums: the hosts must send full ones.
            host.exec("ethtool", &["-K", port.ifname, "gro", "on", "tx", "off"])?;
        }
        // Only XDP forwards; the kernel still answers ARP and ICMP for the router itself.
        lab.router.sysctl("net.ipv4.ip_forward", "0")?;
        // No IPv6 chatter (router solicitations, MLD): counters then count only the test's
        // traffic and ARP.
        for ns in [&lab.a, &lab.router, &lab.b] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        Ok(lab)
    }

    fn link(&self, host: &Netns, host_port: Port, router_port: Port) -> anyhow::Result<()> {
        run(Command::new("ip").args([
            "link",
            "add",
            host_port.ifname,
            "netns",
            host.name(),
            "type",
            "veth",
            "peer",
            "name",
            router_port.ifname,
            "netns",
            self.router.name(),
        ]))?;
        for (ns, port) in [(host, host_port), (&self.router, router_port)] {
            ns.ip(&["link", "set", port.ifname, "address", port.mac, "up"])?;
            ns.ip(&[
                "addr",
                "add",
                &format!("{}/{}", port.ipv4, port.prefix_len),
                "dev",
                port.ifname,
            ])?;
        }
        Ok(())
    }

    /// The router config: both ports, a next hop per host, a route per host subnet.
    pub fn router_config(&self) -> String {
        format!(
            r#"# pop-dataplane lab router
[[interface]]
name = "{ra}"

[[interface]]
name = "{rb}"

[[nexthop]]
name = "host-a"
dev = "{ra}"
lladdr = "{mac_a}"

[[nexthop]]
name = "host-b"
dev = "{rb}"
lladdr = "{mac_b}"

[[route]]
prefix = "198.18.1.0/24"
nexthop = "host-a"

[[route]]
prefix = "198.18.2.0/24"
nexthop = "host-b"
"#,
            ra = ROUTER_A.ifname,
            rb = ROUTER_B.ifname,
            mac_a = HOST_A.mac,
            mac_b = HOST_B.mac,
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the router's dataplane pins its maps: unique to this lab.
    pub fn pin_dir(&self) -> PathBuf {
        PathBuf::from("/sys/fs/bpf").join(self.router.name())
    }

    /// The router daemon's run directory.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// `pop-dataplane ARGS` in the router namespace, with this lab's pin and run directories.
    pub fn dataplane_command(&self, binary: &Path) -> Command {
        let mut command = self.router.enter(binary);
        command
            .arg("--pin-dir")
            .arg(self.pin_dir())
            .arg("--run-dir")
            .arg(self.run_dir());
        command
    }

    /// Starts `pop-dataplane run` on the router with `config` (TOML text) and waits until it
    /// says it is forwarding.
    pub fn start_dataplane(
        &self,
        binary: &Path,
        config: &str,
        xdp_mode: &str,
    ) -> anyhow::Result<Daemon> {
        let config_path = self.dir.join("router.toml");
        fs::write(&config_path, config)?;
        let log_path = self.dir.join("daemon.log");
        let log = fs::File::create(&log_path)?;
        let mut child = self
            .dataplane_command(binary)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .args(["--xdp-mode", xdp_mode])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let mut daemon = Daemon {
            child: Some(child),
            log: log_path,
        };
        // The daemon prints one line once it forwards; EOF means it exited.
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        // Keep the pipe open and drained: a daemon writing to a closed stdout would fail.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        if !line.starts_with("ready:") {
            let status = daemon.stop()?;
            bail!(
                "pop-dataplane run did not start ({status}):\n{}",
                fs::read_to_string(&daemon.log).unwrap_or_default()
            );
        }
        Ok(daemon)
    }

    /// Runs an iperf3 client on A (with `args`) against a server on B; the client's JSON.
    pub fn iperf3(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut server = self
            .b
            .command("iperf3")
            .args(["-s", "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .b
            .exec("ss", &["-Hltn", "sport = :5201"])?
            .trim()
            .is_empty()
        {
            if Instant::now() > deadline {
                let _ = server.kill();
                bail!("iperf3 -s did not listen within 5 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let client = self.a.exec(
            "iperf3",
            &[&["-c", HOST_B.ipv4, "-p", "5201", "-J"], args].concat(),
        );
        let _ = server.kill();
        let _ = server.wait();
        serde_json::from_str(&client?).context("parsing iperf3 -J")
    }

    /// `pop-dataplane stats --json` for the router.
    pub fn stats(&self, binary: &Path) -> anyhow::Result<serde_json::Value> {
        let out = run(self.dataplane_command(binary).args(["stats", "--json"]))?;
        serde_json::from_str(&out).context("parsing stats --json")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A daemon killed before it could clean up leaves its pins behind.
        let _ = fs::remove_dir_all(self.pin_dir());
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Removes pin directories and scratch directories of labs whose process is gone.
fn reap_stale_files(prefix: &str) {
    for dir in [PathBuf::from("/sys/fs/bpf"), std::env::temp_dir()] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if is_stale(&entry.file_name().to_string_lossy(), prefix) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A running `pop-dataplane run`, stopped with SIGTERM on drop.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Stops the daemon with SIGTERM (SIGKILL after 10 s) and returns how it exited.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("the daemon was already stopped");
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Ok(child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}
