//! The daemon's files: the instance lock, the saved CLI routes, and what it reads from the
//! host at start (the ECMP seed, whether the kernel forwards).

use std::{
    fs,
    hash::{BuildHasher as _, RandomState},
    io::Write as _,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use log::warn;

use crate::config::{
    Config,
    route_spec::{self, RouteSpec},
};

/// Where `config save` writes: `[daemon] saved_routes`, else next to the config.
pub(super) fn saved_routes_path(config: &Config, config_path: &Path) -> PathBuf {
    config.daemon.saved_routes.clone().unwrap_or_else(|| {
        let mut path = config_path.as_os_str().to_owned();
        path.push(".routes");
        PathBuf::from(path)
    })
}

pub(super) fn read_saved_routes(path: &Path) -> anyhow::Result<Vec<(usize, RouteSpec)>> {
    match fs::read_to_string(path) {
        Ok(text) => route_spec::parse_lines(&path.display().to_string(), &text, &mut |_| {})
            .map_err(anyhow::Error::from),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `specs`, the CLI's routes, to the saved-routes file at `path`, read back at the next
/// start; written aside and renamed, so a crash leaves the old file or the new one.
pub(super) fn write_saved_routes(path: &Path, specs: &[RouteSpec]) -> std::io::Result<()> {
    let mut text = String::from(
        "# pop-dataplane: routes pushed with the CLI, saved by `pop-dataplane config save`.\n\
         # Read at start; one route per line, as `pop-dataplane route add` takes them.\n",
    );
    for spec in specs {
        text.push_str(&spec.to_string());
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, path))
}

/// The ECMP hash seed: derived from /etc/machine-id, so that it differs between routers
/// (else they all send a flow to the same member: polarisation) and survives restarts (else a
/// restart moves flows); random when there is no machine id.
pub(super) fn ecmp_seed() -> u32 {
    let machine_id = fs::read_to_string("/etc/machine-id").unwrap_or_default();
    match u32::from_str_radix(machine_id.trim().get(..8).unwrap_or(""), 16) {
        Ok(seed) => seed,
        Err(_) => RandomState::new().hash_one(std::process::id()) as u32,
    }
}

/// The kernel is the slow path: it sends ICMP time exceeded and fragmentation needed, and
/// forwards packets whose neighbour is not resolved yet. Linux does all of that only with
/// forwarding on; with it off, those packets vanish without an answer.
pub(super) fn warn_if_kernel_forwarding_is_off() {
    let forwarding = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    if forwarding.trim() == "0" {
        warn!(
            "net.ipv4.ip_forward is 0: packets handed to the kernel (TTL expired, too big, \
             unresolved next hop) are dropped without ICMP errors; set it to 1 to make the \
             kernel the slow path"
        );
    }
}

/// One daemon per run directory: an exclusive `flock` on `RUN_DIR/lock`, held while it runs.
pub(super) struct InstanceLock {
    // Held for the flock; closing it releases the lock.
    _file: fs::File,
}

impl InstanceLock {
    pub(super) fn acquire(run_dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        let path = run_dir.join("lock");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another pop-dataplane is running with --run-dir {} (pid {})",
                run_dir.display(),
                holder.trim()
            );
        }
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }
}
