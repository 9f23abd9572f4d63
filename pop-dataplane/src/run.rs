//! `pop-dataplane run`: validate the config, load and fill the dataplane, attach, and forward
//! until SIGINT or SIGTERM; then detach and remove the pinned state.

use std::{
    fs,
    io::Write as _,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use log::{info, warn};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::Config,
    dataplane::{AttachMode, Dataplane, unpin_maps},
    netdev::{self, NetDevice},
    tables::Tables,
};

pub struct RunOptions {
    pub config: PathBuf,
    pub xdp_mode: AttachMode,
    pub pin_dir: PathBuf,
    pub run_dir: PathBuf,
    pub log_level: log::LevelFilter,
}

pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    // Everything a user can get wrong is checked before anything is loaded or attached.
    let file = options.config.display().to_string();
    let config = Config::load(&options.config)?;
    let local = netdev::local_ipv4_addresses().context("reading the router's own addresses")?;
    let tables = Tables::compile(&config, &file, NetDevice::by_name, &local)?;

    warn_if_kernel_forwarding_is_off();
    let _lock = InstanceLock::acquire(&options.run_dir)?;
    if options.pin_dir.exists() {
        warn!(
            "removing pinned maps left in {} by a daemon that did not exit cleanly",
            options.pin_dir.display()
        );
        unpin_maps(&options.pin_dir)?;
    }

    let mut dataplane = Dataplane::load(options.log_level)?;
    dataplane.forward_logs();
    dataplane.install(&tables)?;
    let _pins = Pins::create(&dataplane, &options.pin_dir)?;

    let mut attached = Vec::new();
    for port in &tables.ports {
        let mode = dataplane.attach(&port.device.name, options.xdp_mode)?;
        attached.push(format!("{} ({mode})", port.device.name));
    }
    let ready = format!(
        "ready: forwarding on {}; {} IPv4 routes ({} local), {} next hops",
        attached.join(", "),
        tables.routes_v4.len(),
        local.len(),
        tables.nexthops.len()
    );
    info!("{ready}");
    // Scripts and tests wait for this line on stdout.
    println!("{ready}");
    std::io::stdout().flush()?;

    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    tokio::select! {
        _ = terminate.recv() => info!("SIGTERM: stopping"),
        _ = interrupt.recv() => info!("SIGINT: stopping"),
    }
    dataplane.detach_all();
    Ok(())
}

/// The kernel is the slow path: it sends ICMP time exceeded and fragmentation needed, and
/// forwards packets whose neighbour is not resolved yet. Linux does all of that only with
/// forwarding on; with it off, those packets vanish without an answer.
fn warn_if_kernel_forwarding_is_off() {
    let forwarding = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    if forwarding.trim() == "0" {
        warn!(
            "net.ipv4.ip_forward is 0: packets handed to the kernel (TTL expired, too big, \
             unresolved next hop) are dropped without ICMP errors; set it to 1 to make the \
             kernel the slow path"
        );
    }
}

/// The pinned maps, removed when dropped.
struct Pins(PathBuf);

impl Pins {
    fn create(dataplane: &Dataplane, dir: &Path) -> anyhow::Result<Self> {
        let pins = Self(dir.to_owned());
        dataplane.pin_maps(dir)?;
        Ok(pins)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(err) = unpin_maps(&self.0) {
            warn!("{err:#}");
        }
    }
}

/// One daemon per run directory: an exclusive `flock` on `RUN_DIR/lock`, held while it runs.
struct InstanceLock {
    // Held for the flock; closing it releases the lock.
    _file: fs::File,
}

impl InstanceLock {
    fn acquire(run_dir: &Path) -> anyhow::Result<Self> {
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
