//! The three-namespace lab used by the demo, the end-to-end tests and the benchmarks:
//!
//! ```text
//!   host A                         router                          host B
//!   a0 198.18.1.2/24 ------- ra 198.18.1.1/24
//!      2001:2:0:1::2/64         2001:2:0:1::1/64
//!                               rb 198.18.2.1/24 ------- b0 198.18.2.2/24
//!                                  2001:2:0:2::1/64         2001:2:0:2::2/64
//!                               rc 198.18.12.1/24 ------ b1 198.18.12.2/24   (second_link)
//!                                                        lo 198.18.9.1, 2001:2:0:9::1
//! ```
//!
//! The router's kernel forwarding is off (`net.ipv4.ip_forward=0`): what crosses it was
//! forwarded by XDP. Addresses come only from the benchmarking ranges 198.18.0.0/15 and
//! 2001:2::/48.

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
    pub ipv6: &'static str,
    pub prefix_len: u8,
}

pub const HOST_A: Port = Port {
    ifname: "a0",
    mac: "02:00:00:01:00:02",
    ipv4: "198.18.1.2",
    ipv6: "2001:2:0:1::2",
    prefix_len: 24,
};
pub const ROUTER_A: Port = Port {
    ifname: "ra",
    mac: "02:00:00:01:00:01",
    ipv4: "198.18.1.1",
    ipv6: "2001:2:0:1::1",
    prefix_len: 24,
};
pub const ROUTER_B: Port = Port {
    ifname: "rb",
    mac: "02:00:00:02:00:01",
    ipv4: "198.18.2.1",
    ipv6: "2001:2:0:2::1",
    prefix_len: 24,
};
pub const HOST_B: Port = Port {
    ifname: "b0",
    mac: "02:00:00:02:00:02",
    ipv4: "198.18.2.2",
    ipv6: "2001:2:0:2::2",
    prefix_len: 24,
};
/// The second link's router end (`second_link`).
pub const ROUTER_C: Port = Port {
    ifname: "rc",
    mac: "02:00:00:12:00:01",
    ipv4: "198.18.12.1",
    ipv6: "2001:2:0:12::1",
    prefix_len: 24,
};
/// The second link's end on host B.
pub const HOST_B2: Port = Port {
    ifname: "b1",
    mac: "02:00:00:12:00:02",
    ipv4: "198.18.12.2",
    ipv6: "2001:2:0:12::2",
    prefix_len: 24,
};
/// An address of host B reachable over both of its links (`second_link`).
pub const B_SERVICE_V4: &str = "198.18.9.1";
pub const B_SERVICE_V6: &str = "2001:2:0:9::1";

/// What the lab has beyond host A, the router and host B on IPv4.
#[derive(Clone, Copy, Debug, Default)]
pub struct LabOptions {
    /// IPv6 addresses and routes. Without it IPv6 is off everywhere: no router
    /// solicitations or MLD reports, so counters count only the test's traffic and ARP.
    pub ipv6: bool,
    /// A second link between the router and host B, for ECMP.
    pub second_link: bool,
}

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

pub struct Lab {
    pub a: Netns,
    pub router: Netns,
    pub b: Netns,
    pub options: LabOptions,
    /// Scratch directory: the router config, the daemon's run directory and log.
    dir: PathBuf,
}

impl Lab {
    /// The IPv4 lab; namespaces are named `<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        Self::with(prefix, LabOptions::default())
    }

    pub fn with(prefix: &str, options: LabOptions) -> anyhow::Result<Self> {
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
        let lab = Self {
            a,
            router,
            b,
            options,
            dir,
        };
        if !options.ipv6 {
            for ns in [&lab.a, &lab.router, &lab.b] {
                ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
                ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
            }
        }
        lab.link(&lab.a, HOST_A, ROUTER_A)?;
        lab.link(&lab.b, HOST_B, ROUTER_B)?;
        if options.second_link {
            lab.link(&lab.b, HOST_B2, ROUTER_C)?;
            lab.b
                .ip(&["addr", "add", &format!("{B_SERVICE_V4}/32"), "dev", "lo"])?;
            if options.ipv6 {
                lab.b.ip(&[
                    "addr",
                    "add",
                    &format!("{B_SERVICE_V6}/128"),
                    "dev",
                    "lo",
                    "nodad",
                ])?;
            }
        }
        for (host, port, gateway) in [(&lab.a, HOST_A, ROUTER_A), (&lab.b, HOST_B, ROUTER_B)] {
            lab.host_gateway(host, port, gateway)?;
        }
        // Only XDP forwards; the kernel still answers ARP, ND and ICMP for the router itself.
        lab.set_kernel_forwarding(false)?;
        Ok(lab)
    }

    /// Turns the router's own (kernel) forwarding on or off. Off, only XDP forwards; on, the
    /// kernel is the slow path and answers TTL expiry and the like.
    pub fn set_kernel_forwarding(&self, on: bool) -> anyhow::Result<()> {
        let value = if on { "1" } else { "0" };
        self.router.sysctl("net.ipv4.ip_forward", value)?;
        if self.options.ipv6 {
            self.router.sysctl("net.ipv6.conf.all.forwarding", value)?;
        }
        Ok(())
    }

    /// The link between `host` and the router again, after a test deleted it: the veth pair,
    /// addresses, and the host's route and gateway entry.
    pub fn reconnect(&self, host: &Netns, port: Port, gateway: Port) -> anyhow::Result<()> {
        self.link(host, port, gateway)?;
        self.host_gateway(host, port, gateway)
    }

    /// `host`'s route to the benchmarking ranges through `gateway`, and a static entry for it.
    fn host_gateway(&self, host: &Netns, port: Port, gateway: Port) -> anyhow::Result<()> {
        let mut families = vec![("-4", "198.18.0.0/15", gateway.ipv4)];
        if self.options.ipv6 {
            families.push(("-6", "2001:2::/48", gateway.ipv6));
        }
        for (family, range, via) in families {
            host.ip(&[family, "route", "add", range, "via", via])?;
            // A static gateway entry: no ARP or ND in the way of exact packet counts. (The
            // router still resolves the hosts, through the kernel.)
            host.ip(&[
                family,
                "neigh",
                "replace",
                via,
                "lladdr",
                gateway.mac,
                "dev",
                port.ifname,
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
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
            if self.options.ipv6 {
                ns.ip(&[
                    "addr",
                    "add",
                    &format!("{}/64", port.ipv6),
                    "dev",
                    port.ifname,
                    "nodad",
                ])?;
            }
        }
        // Native XDP on the router redirects into the host's veth: without GRO (or an XDP
        // program) on the receiving end the frames are silently lost. And the XDP path does
        // not finish partial checksums: the hosts must send full ones.
        host.exec(
            "ethtool",
            &["-K", host_port.ifname, "gro", "on", "tx", "off"],
        )?;
        Ok(())
    }

    /// The router config: its ports, a next hop per host link, a route per host subnet
    /// (IPv6 too), and with `second_link` an ECMP route to host B's service addresses.
    pub fn router_config(&self) -> String {
        let mut config = String::from("# pop-dataplane lab router\n");
        let mut ports = vec![ROUTER_A, ROUTER_B];
        if self.options.second_link {
            ports.push(ROUTER_C);
        }
        for port in &ports {
            config += &format!("\n[[interface]]\nname = \"{}\"\n", port.ifname);
        }
        let mut hosts = vec![("host-a", ROUTER_A, HOST_A), ("host-b", ROUTER_B, HOST_B)];
        if self.options.second_link {
            hosts.push(("host-b2", ROUTER_C, HOST_B2));
        }
        for (name, router, host) in &hosts {
            config += &format!(
                "\n[[nexthop]]\nname = \"{name}\"\ndev = \"{}\"\nvia = \"{}\"\nlladdr = \"{}\"\n",
                router.ifname, host.ipv4, host.mac
            );
        }
        for (name, _, host) in &hosts {
            let subnet_v4 = format!("{}.0/24", host.ipv4.rsplit_once('.').expect("dotted").0);
            config += &format!("\n[[route]]\nprefix = \"{subnet_v4}\"\nnexthop = \"{name}\"\n");
            if self.options.ipv6 {
                let subnet_v6 = format!("{}/64", host.ipv6.trim_end_matches(|c| c != ':'));
                config += &format!("\n[[route]]\nprefix = \"{subnet_v6}\"\nnexthop = \"{name}\"\n");
            }
        }
        if self.options.second_link {
            config += &format!(
                "\n[[route]]\nprefix = \"{B_SERVICE_V4}/32\"\nnexthop = [\"host-b\", \"host-b2\"]\n"
            );
            if self.options.ipv6 {
                config += &format!(
                    "\n[[route]]\nprefix = \"{B_SERVICE_V6}/128\"\nnexthop = [\"host-b\", \"host-b2\"]\n"
                );
            }
        }
        config
    }

    /// [`Lab::router_config`] with uRPF in `mode` (strict, loose) on host A's side.
    pub fn router_config_with_urpf(&self, mode: &str) -> String {
        let ingress = format!("name = \"{}\"\n", ROUTER_A.ifname);
        let config =
            self.router_config()
                .replacen(&ingress, &format!("{ingress}urpf = \"{mode}\"\n"), 1);
        assert!(
            config.contains("urpf = "),
            "no interface {}",
            ROUTER_A.ifname
        );
        config
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

    /// The usual start of an end-to-end test: a lab named after `prefix`, its router running
    /// the dataplane binary natively on [`Lab::router_config`]. Bind the three in this order,
    /// `let (binary, lab, _daemon) = ...`: the daemon then stops before the lab's namespaces
    /// go.
    pub fn running(prefix: &str, options: LabOptions) -> anyhow::Result<(PathBuf, Lab, Daemon)> {
        let binary = crate::dataplane_binary();
        let lab = Lab::with(prefix, options)?;
        let daemon = lab.start_dataplane(&binary, &lab.router_config(), "native")?;
        Ok((binary, lab, daemon))
    }

    /// Starts `pop-dataplane run` on the router with `config` (TOML text) and waits until it
    /// says it is forwarding.
    pub fn start_dataplane(
        &self,
        binary: &Path,
        config: &str,
        xdp_mode: &str,
    ) -> anyhow::Result<Daemon> {
        self.start_dataplane_with(binary, config, xdp_mode, &[])
    }

    /// Where the router's config is written.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("router.toml")
    }

    /// [`Lab::start_dataplane`] with more `run` arguments.
    pub fn start_dataplane_with(
        &self,
        binary: &Path,
        config: &str,
        xdp_mode: &str,
        extra: &[&str],
    ) -> anyhow::Result<Daemon> {
        self.start_dataplane_with_env(binary, config, xdp_mode, extra, &[])
    }

    /// [`Lab::start_dataplane_with`] with environment variables for the daemon.
    pub fn start_dataplane_with_env(
        &self,
        binary: &Path,
        config: &str,
        xdp_mode: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Daemon> {
        self.start_dataplane_in(&[], binary, config, xdp_mode, extra, env)
    }

    /// [`Lab::start_dataplane_with_env`], the daemon started through `wrapper` (a command
    /// that ends by running its arguments, e.g. in a mount namespace of its own).
    pub fn start_dataplane_in(
        &self,
        wrapper: &[&str],
        binary: &Path,
        config: &str,
        xdp_mode: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Daemon> {
        let config_path = self.config_path();
        fs::write(&config_path, config)?;
        let log_path = self.dir.join("daemon.log");
        let log = fs::File::create(&log_path)?;
        let mut command = match wrapper {
            [] => self.dataplane_command(binary),
            [program, args @ ..] => {
                let mut command = self.router.enter(program);
                command
                    .args(args)
                    .arg(binary)
                    .arg("--pin-dir")
                    .arg(self.pin_dir())
                    .arg("--run-dir")
                    .arg(self.run_dir());
                command
            }
        };
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .args(["--xdp-mode", xdp_mode])
            .args(extra)
            .envs(env.iter().copied())
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
        self.iperf3_to(HOST_B.ipv4, args)
    }

    /// [`Lab::iperf3`] to one of B's addresses `target`.
    pub fn iperf3_to(&self, target: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
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
            &[&["-c", target, "-p", "5201", "-J"], args].concat(),
        );
        let _ = server.kill();
        let _ = server.wait();
        serde_json::from_str(&client?).context("parsing iperf3 -J")
    }

    /// `pop-dataplane ARGS` on the router: its stdout, or an error with its stderr.
    pub fn cli(&self, binary: &Path, args: &[&str]) -> anyhow::Result<String> {
        run(self.dataplane_command(binary).args(args))
    }

    /// `pop-dataplane ARGS` on the router, however it ends.
    pub fn cli_output(&self, binary: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(self
            .dataplane_command(binary)
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    }

    /// `pop-dataplane stats --json` for the router.
    pub fn stats(&self, binary: &Path) -> anyhow::Result<serde_json::Value> {
        let out = run(self.dataplane_command(binary).args(["stats", "--json"]))?;
        serde_json::from_str(&out).context("parsing stats --json")
    }

    /// The router's routes from `source` (`route list --json --source SOURCE`): prefix ->
    /// target as it shows them.
    pub fn route_targets(
        &self,
        binary: &Path,
        source: &str,
    ) -> anyhow::Result<std::collections::BTreeMap<ipnet::IpNet, String>> {
        let out = self.cli(binary, &["route", "list", "--json", "--source", source])?;
        let routes: Vec<serde_json::Value> =
            serde_json::from_str(&out).context("parsing route list --json")?;
        routes
            .iter()
            .map(|route| {
                let prefix = route["prefix"].as_str().context("a prefix")?.parse()?;
                let target = route["target"].as_str().context("a target")?.to_owned();
                Ok((prefix, target))
            })
            .collect()
    }

    /// One UDP datagram from host A to `dst` port 9 per source port in `ports`; what they
    /// added to the router's transmit counts on rb and rc (the second link's port).
    pub fn send_flows(
        &self,
        binary: &Path,
        dst: &str,
        ports: std::ops::Range<u16>,
    ) -> anyhow::Result<(u64, u64)> {
        let before = self.stats(binary)?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| -> anyhow::Result<()> {
                    self.a.enter_thread()?;
                    for port in ports {
                        let socket = std::net::UdpSocket::bind((HOST_A.ipv4, port))?;
                        socket.send_to(b"flow", (dst, 9))?;
                    }
                    Ok(())
                })
                .join()
                .expect("the sending thread")
        })?;
        std::thread::sleep(Duration::from_millis(200));
        let after = self.stats(binary)?;
        let sent =
            |ifname| counter(&after, ifname, "tx_packets") - counter(&before, ifname, "tx_packets");
        Ok((sent(ROUTER_B.ifname), sent(ROUTER_C.ifname)))
    }

    /// `pop-dataplane trace ARGS --json` on the router: what the loaded program does.
    pub fn trace(&self, binary: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = run(self
            .dataplane_command(binary)
            .arg("trace")
            .args(args)
            .arg("--json"))?;
        serde_json::from_str(&out).context("parsing trace --json")
    }
}

/// The entry of interface `ifname` in `stats --json`.
pub fn interface<'a>(stats: &'a serde_json::Value, ifname: &str) -> &'a serde_json::Value {
    stats["interfaces"]
        .as_array()
        .and_then(|interfaces| interfaces.iter().find(|i| i["name"] == ifname))
        .unwrap_or_else(|| panic!("no {ifname} in {stats}"))
}

/// Counter `field` of interface `ifname` in `stats --json`; a dotted field reads a reason
/// (`dropped.acl_deny`).
pub fn counter(stats: &serde_json::Value, ifname: &str, field: &str) -> u64 {
    let interface = interface(stats, ifname);
    field
        .split('.')
        .fold(interface, |value, key| &value[key])
        .as_u64()
        .unwrap_or_else(|| panic!("{ifname}.{field} in {interface}"))
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

    /// Kills the daemon with SIGKILL, as a crash would: no clean-up of its own.
    pub fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("the daemon was already stopped");
        };
        child.kill()?;
        Ok(child.wait()?)
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
