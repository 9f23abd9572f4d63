//! `pop-dataplane run`: validate the config, load and fill the dataplane, attach, and forward
//! until SIGINT or SIGTERM, following the host's addresses; then detach and remove the pins.

use std::{
    fs,
    hash::{BuildHasher as _, RandomState},
    io::Write as _,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use log::{debug, info, warn};
use netlink_packet_core::NetlinkPayload;
use rtnetlink::MulticastGroup;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::Config,
    dataplane::{AttachMode, Dataplane, LoadOptions, unpin},
    host::{self, Host, HostEvent},
    tables::Tables,
    topology::save_names,
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

    // Subscribe before the dump, so that no change falls between the two.
    let (events_connection, _, mut events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])
    .context("subscribing to rtnetlink address events")?;
    tokio::spawn(events_connection);
    let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(connection);
    let host = Host::read(&handle).await?;
    let (mut tables, routes) = Tables::compile(&config, &file, &host)?;

    warn_if_kernel_forwarding_is_off();
    let _lock = InstanceLock::acquire(&options.run_dir)?;
    if options.pin_dir.exists() {
        warn!(
            "removing pins left in {} by a daemon that did not exit cleanly",
            options.pin_dir.display()
        );
        unpin(&options.pin_dir)?;
    }

    let mut dataplane = Dataplane::load(LoadOptions {
        log_level: options.log_level,
        ecmp_seed: ecmp_seed(),
    })?;
    dataplane.forward_logs();
    dataplane.install(&tables, &routes)?;
    let _pins = Pins::create(&mut dataplane, &options.pin_dir)?;
    save_names(&options.run_dir, &tables.topology.names())?;

    let mut attached = Vec::new();
    for port in &tables.topology.ports {
        let mode = dataplane.attach(&port.name, options.xdp_mode)?;
        attached.push(format!("{} ({mode})", port.name));
    }
    let ready = format!(
        "ready: forwarding on {}; {} routes ({} local), {} next hops, {} ECMP groups",
        attached.join(", "),
        tables.fib.len(),
        tables.local_addresses().len(),
        tables.nexthops.len(),
        tables.fib.groups(),
    );
    info!("{ready}");
    // Scripts and tests wait for this line on stdout.
    println!("{ready}");
    std::io::stdout().flush()?;

    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    loop {
        tokio::select! {
            _ = terminate.recv() => {
                info!("SIGTERM: stopping");
                break;
            }
            _ = interrupt.recv() => {
                info!("SIGINT: stopping");
                break;
            }
            message = events.next() => {
                let Some((message, _)) = message else {
                    bail!("the rtnetlink event socket closed");
                };
                let writes = match message.payload {
                    NetlinkPayload::InnerMessage(message) => match host::event(&message) {
                        Some(HostEvent::AddressAdded(address)) => {
                            debug!("address {} added on interface {}", address.addr, address.ifindex);
                            tables.local_address_added(address)
                        }
                        Some(HostEvent::AddressRemoved(address)) => {
                            debug!("address {} removed from interface {}", address.addr, address.ifindex);
                            tables.local_address_removed(address)
                        }
                        _ => continue,
                    },
                    NetlinkPayload::Overrun(_) => {
                        warn!("rtnetlink events were lost; reading the addresses again");
                        let host = Host::read(&handle).await?;
                        tables.set_local_addresses(&host.addresses)
                    }
                    _ => continue,
                };
                dataplane.apply(&writes)?;
            }
        }
    }
    dataplane.detach_all();
    Ok(())
}

/// The ECMP hash seed: derived from /etc/machine-id, so that it differs between routers
/// (else they all send a flow to the same member: polarisation) and survives restarts (else a
/// restart moves flows); random when there is no machine id.
fn ecmp_seed() -> u32 {
    let machine_id = fs::read_to_string("/etc/machine-id").unwrap_or_default();
    match u32::from_str_radix(machine_id.trim().get(..8).unwrap_or(""), 16) {
        Ok(seed) => seed,
        Err(_) => RandomState::new().hash_one(std::process::id()) as u32,
    }
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

/// The pins, removed when dropped.
struct Pins(PathBuf);

impl Pins {
    fn create(dataplane: &mut Dataplane, dir: &Path) -> anyhow::Result<Self> {
        let pins = Self(dir.to_owned());
        dataplane.pin(dir)?;
        Ok(pins)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(err) = unpin(&self.0) {
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
