//! Network namespaces that remove themselves: each test host is one, named
//! `<prefix>-<pid>-<n>` so that parallel tests and runs never collide, and so that one left
//! behind by a killed run can be recognised and reaped.

use std::{
    fs,
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted (with its interfaces and processes) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a unique name starting with `prefix`, loopback up. The first
    /// call of a process also reaps what killed runs left behind under `prefix`.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        require_root()?;
        static REAPED: std::sync::Once = std::sync::Once::new();
        REAPED.call_once(|| reap_stale(prefix));
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, for `nsenter --net=` and `setns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `program` to run inside the namespace with `ip netns exec` (which also gives it the
    /// namespace's own /sys).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// `program` to run inside the namespace's network only, keeping the host's mounts
    /// (/sys/fs/bpf among them): how the dataplane daemon and its CLI are run.
    pub fn enter(&self, program: impl Into<std::ffi::OsString>) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net={}", self.path().display()));
        command.arg(program.into());
        command
    }

    /// Moves the calling thread into this namespace, for in-process work that must see its
    /// interfaces (BPF test runs, devmap entries). Other threads are not affected.
    pub fn enter_thread(&self) -> anyhow::Result<()> {
        let file = fs::File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        // SAFETY: setns on a namespace file descriptor we own.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({}): {}", self.name, std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends `frames` as they are (link header included) out of `ifname`, through an
    /// AF_PACKET socket opened inside the namespace: for traffic no tool here can make, such
    /// as VLAN-tagged frames on a kernel without 802.1Q.
    pub fn send_frames(&self, ifname: &str, frames: &[Vec<u8>]) -> anyhow::Result<()> {
        let ifname = std::ffi::CString::new(ifname)?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| -> anyhow::Result<()> {
                    self.enter_thread()?;
                    // SAFETY: plain socket calls on descriptors we own; the address struct is
                    // zeroed and filled before use.
                    unsafe {
                        let ifindex = libc::if_nametoindex(ifname.as_ptr());
                        if ifindex == 0 {
                            bail!("{ifname:?}: {}", std::io::Error::last_os_error());
                        }
                        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                        if fd < 0 {
                            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
                        }
                        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                        addr.sll_family = libc::AF_PACKET as u16;
                        addr.sll_ifindex = ifindex as i32;
                        addr.sll_halen = 6;
                        let mut result = Ok(());
                        for frame in frames {
                            let sent = libc::sendto(
                                fd,
                                frame.as_ptr().cast(),
                                frame.len(),
                                0,
                                (&raw const addr).cast(),
                                std::mem::size_of::<libc::sockaddr_ll>() as u32,
                            );
                            if sent < 0 {
                                result = Err(anyhow::anyhow!(
                                    "sendto: {}",
                                    std::io::Error::last_os_error()
                                ));
                                break;
                            }
                        }
                        libc::close(fd);
                        result
                    }
                })
                .join()
                .expect("sender thread")
        })
    }

    /// Runs `ip ARGS` inside the namespace; fails with its stderr.
    /// A namespace for running the program on crafted frames (BPF_PROG_TEST_RUN needs real
    /// ingress interfaces): veth `ports` as (name, peer, MAC), up; then each of `setup` as
    /// `ip` arguments; entered by the calling thread.
    pub fn with_ports(
        prefix: &str,
        ports: &[(&str, &str, &str)],
        setup: &[&str],
    ) -> anyhow::Result<Self> {
        let netns = Self::new(prefix)?;
        for (port, peer, mac) in ports {
            netns.ip(&["link", "add", port, "type", "veth", "peer", "name", peer])?;
            netns.ip(&["link", "set", port, "address", mac, "up"])?;
            netns.ip(&["link", "set", peer, "up"])?;
        }
        for args in setup {
            netns.ip(&args.split(' ').collect::<Vec<_>>())?;
        }
        netns.enter_thread()?;
        Ok(netns)
    }

    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("ip");
        command.args(["-n", &self.name]).args(args);
        run(&mut command)
    }

    /// Runs `program ARGS` inside the namespace; fails with its stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        run(self.command(program).args(args))
    }

    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// The kernel's packet counters of `ifname` in this namespace: (rx, tx).
    pub fn link_packets(&self, ifname: &str) -> anyhow::Result<(u64, u64)> {
        let stats = |dir: &str| -> anyhow::Result<u64> {
            let text = self.exec(
                "cat",
                &[&format!("/sys/class/net/{ifname}/statistics/{dir}_packets")],
            )?;
            text.trim()
                .parse()
                .with_context(|| format!("{ifname} {dir}_packets: {text:?}"))
        };
        Ok((stats("rx")?, stats("tx")?))
    }

    /// Stops every process still running in the namespace.
    pub fn kill_all(&self) {
        let Ok(pids) = run(Command::new("ip").args(["netns", "pids", &self.name])) else {
            return;
        };
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// True for a name `<prefix>-<pid>-...` whose process `pid` is gone: something a run that
/// was killed before it could clean up left behind.
pub fn is_stale(name: &str, prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    !PathBuf::from(format!("/proc/{pid}")).exists()
}

/// Deletes the stale namespaces of `prefix` (see [`is_stale`]), and their processes.
pub fn reap_stale(prefix: &str) {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_stale(&name, prefix) {
            drop(Netns { name });
        }
    }
}

/// Fails unless running as root: the tests need it, and must say so rather than skip.
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "this needs root (network namespaces, BPF): run it as root, e.g. `sudo -E cargo xtask test`"
        );
    }
    Ok(())
}

/// Runs `command`; its stdout on success, an error with its stderr otherwise.
pub fn run(command: &mut Command) -> anyhow::Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!(
            "{command:?} failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}
