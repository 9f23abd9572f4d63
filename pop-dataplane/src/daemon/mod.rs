//! `pop-dataplane run`: the daemon. Validates the config, loads (or takes over) the dataplane,
//! attaches, and then keeps the maps right while the world changes: control requests (routes,
//! reload, save), the host's addresses, links and neighbours over rtnetlink, SIGHUP. On
//! SIGINT or SIGTERM it detaches, or with `--keep-on-exit` leaves the dataplane forwarding
//! for the next daemon to take over.
//!
//! - [`handlers`]: the daemon's state and its answers to control requests.
//! - [`check`]: `config check`, the daemon's checks of a config without a daemon.
//! - [`host_events`]: addresses, links and neighbours as they change.
//! - [`kernel_sync`]: following kernel routing tables.
//! - [`sampling`]: sFlow samples and counters, and `top`'s tallies.
//! - [`notify`]: systemd's notify protocol.
//! - [`server`]: the control socket.
//! - [`files`]: the instance lock, saved routes, and what is read from the host at start.

mod check;
mod files;
mod handlers;
mod host_events;
mod kernel_sync;
mod notify;
mod sampling;
mod server;

use std::{
    fs,
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use log::{error, info, warn};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use pop_dataplane_common::fib::FibMode;
use rtnetlink::{MulticastGroup, sys::AsyncSocket as _};
use tokio::{
    net::UnixListener,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    task::JoinHandle,
};

use self::{
    files::{
        InstanceLock, ecmp_seed, read_saved_routes, saved_routes_path,
        warn_if_kernel_forwarding_is_off,
    },
    handlers::Daemon,
    host_events::{enlarge_receive_buffer, is_route_event, refresh_neighbours},
    kernel_sync::{KernelSync, kernel_tables_to_follow, vrf_tables},
    server::{Progress, Responder, accept_loop, bind_control_socket},
};
use crate::{
    api::Request,
    config::Config,
    control::{
        plan::clear_ids,
        router::{BULK_ROUTES, Router},
        topology::Topology,
        vrf::Vrfs,
    },
    dataplane::{AttachMode, Dataplane, LoadOptions},
    host::Host,
    observe::{metrics, names},
};

pub(crate) use self::check::check as check_config;

pub(crate) struct RunOptions {
    pub config: PathBuf,
    pub xdp_mode: AttachMode,
    pub pin_dir: PathBuf,
    pub run_dir: PathBuf,
    pub socket: PathBuf,
    pub log_level: log::LevelFilter,
    /// Leave the dataplane forwarding when stopped.
    pub keep_on_exit: bool,
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where the program looks routes up.
    pub fib: FibMode,
    /// Kernel routing tables to follow, besides the config's.
    pub sync_kernel_tables: Vec<u32>,
}

/// How often next hops' neighbours are asked for again: the kernel lets entries nobody uses
/// go stale and then forgets them, and XDP traffic does not count as use.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(5);

/// How often the route tables are checked for room left by a burst of changes (see
/// `Dataplane::compact_tables`).
const TABLE_COMPACTION: Duration = Duration::from_secs(1);

/// Receive buffer of the rtnetlink event socket. Route events come in floods (a BGP session
/// bringing up a full table is a million of them, about 1 KiB each in the buffer): room for
/// a good share of one while the daemon applies what came before. Should it overflow all the
/// same, the daemon reads the tables again.
const EVENT_BUFFER_BYTES: libc::c_int = 256 << 20;

pub(crate) async fn run(options: RunOptions) -> anyhow::Result<()> {
    let (daemon, listener, events, metrics) = start(&options).await?;
    serve(daemon, listener, events, metrics).await
}

/// The event streams the daemon follows.
struct Events {
    rtnetlink: futures_channel::mpsc::UnboundedReceiver<(
        netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    /// Nexthop object events, when kernel tables are followed.
    objects: Option<tokio::sync::mpsc::Receiver<crate::host::kernel_nexthops::ObjectRead>>,
}

/// Bring-up: everything checked, the dataplane loaded (or taken over), tables installed,
/// ports attached, routes and neighbours read; forwarding when it returns.
async fn start(
    options: &RunOptions,
) -> anyhow::Result<(Daemon<'_>, UnixListener, Events, Option<JoinHandle<()>>)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "pop-dataplane run needs root: it loads BPF programs and attaches them to interfaces"
        );
    }
    // Everything a user can get wrong is checked before anything is loaded or attached.
    notify::status("checking the config");
    let file = options.config.display().to_string();
    let config = Config::load(&options.config)?;
    let saved_routes_path = saved_routes_path(&config, &options.config);
    let saved = read_saved_routes(&saved_routes_path)?;

    let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(connection);
    // The VRF devices' tables, which VRFs follow: read before subscribing, which depends on
    // whether any table is followed. The host is read again, whole, after.
    let sync_tables = kernel_tables_to_follow(options, &config, &Host::read(&handle).await?);
    let agent = sampling::open_agent(&config, &file).await?;

    // Subscribe before the dump, so that no change falls between the two.
    let mut groups = vec![
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Neigh,
    ];
    if !sync_tables.is_empty() {
        groups.extend([MulticastGroup::Ipv4Route, MulticastGroup::Ipv6Route]);
    }
    let (mut events_connection, _, rtnetlink_events) =
        rtnetlink::new_multicast_connection(&groups).context("subscribing to rtnetlink events")?;
    enlarge_receive_buffer(events_connection.socket_mut().socket_mut());
    tokio::spawn(events_connection);
    let events = Events {
        rtnetlink: rtnetlink_events,
        objects: if sync_tables.is_empty() {
            None
        } else {
            Some(kernel_sync::follow_objects()?)
        },
    };
    let host = Host::read(&handle).await?;
    // Validated against this host before anything else happens.
    Topology::build(&config, &file, &host, &Vrfs::of_config(&config))?;

    warn_if_kernel_forwarding_is_off();
    let lock = InstanceLock::acquire(&options.run_dir)?;
    let listener = bind_control_socket(&options.socket, config.daemon.control_group.as_deref())?;

    notify::status("loading the XDP program");
    let mut dataplane = Dataplane::load(LoadOptions {
        log_level: options.log_level,
        ecmp_seed: ecmp_seed(),
        pin_dir: Some(options.pin_dir.clone()),
        fib: options.fib,
    })?;
    dataplane.forward_logs();
    let samples = dataplane.take_samples()?;
    let adopted = if dataplane.adopted() {
        let adopted = dataplane.in_use()?;
        info!(
            "taking over the running dataplane in {}: {} next hops, {} groups, {} interfaces",
            options.pin_dir.display(),
            adopted.nexthops.len(),
            adopted.groups.len(),
            adopted.interfaces.len()
        );
        Some(adopted)
    } else {
        None
    };
    let old_ids = adopted
        .as_ref()
        .map(|a| (a.nexthops.clone(), a.groups.clone()));
    let saved_names = names::load(&options.run_dir);
    let mut router = Router::new(&host, adopted.unwrap_or_default(), &saved_names);
    let update = router.apply_config_with(&config, &file, &host, Some(&saved))?;
    notify::status("installing the route tables");
    let started = Instant::now();
    dataplane.update(&update)?;
    if let Some((nexthops, groups)) = old_ids {
        // The old tables are swapped out: clear what only they used.
        let (nexthops_freed, groups_freed) = router.forget_adopted();
        let clear = clear_ids(
            nexthops
                .iter()
                .filter(|id| nexthops_freed.contains(id))
                .copied(),
            groups
                .iter()
                .filter(|id| groups_freed.contains(id))
                .copied(),
        );
        dataplane.apply(&clear)?;
    }
    info!("tables installed in {:.2?}", started.elapsed());

    notify::status("attaching to the ports");
    let mut attached = Vec::new();
    for port in &router.topology().ports {
        match dataplane.attach(&port.name, port.ifindex, options.xdp_mode) {
            Ok(mode) => attached.push((port.name.clone(), mode)),
            // A fresh start that cannot attach everywhere leaves nothing behind; a taken-over
            // dataplane keeps forwarding on its links (now running this program).
            Err(err) if !dataplane.adopted() => {
                dataplane.stop();
                return Err(err);
            }
            Err(err) => return Err(err),
        }
    }
    for (ifindex, _) in dataplane.stale_links() {
        dataplane.detach(ifindex);
    }
    names::save(&options.run_dir, &router.interface_names())?;
    let kernel = if sync_tables.is_empty() {
        None
    } else {
        let mut sync = KernelSync {
            tables: sync_tables,
            vrf_tables: vrf_tables(&config, &host),
            routes: Default::default(),
            objects: Default::default(),
        };
        let started = Instant::now();
        let count = sync
            .read_tables(&handle, &mut router, &mut dataplane)
            .await?;
        info!(
            "{count} routes from kernel table(s) {:?} in {:.2?}",
            sync.tables,
            started.elapsed()
        );
        Some(sync)
    };
    refresh_neighbours(&handle, &mut router, &mut dataplane).await?;

    let (metrics_state, metrics_task) = match options.metrics_listen {
        Some(addr) => {
            let state = metrics::Shared::default();
            let task = metrics::serve(
                addr,
                options.pin_dir.clone(),
                options.run_dir.clone(),
                state.clone(),
            )
            .await?;
            (Some(state), Some(task))
        }
        None => (None, None),
    };

    let mut daemon = Daemon {
        sampling: sampling::Sampling::new(samples, &config, agent),
        nexthop_names: Vec::new(),
        _lock: lock,
        options,
        config,
        config_file: file,
        saved_routes_path,
        router,
        dataplane,
        handle,
        attached,
        metrics: metrics_state,
        kernel,
    };
    daemon.apply_sample_rates()?;
    daemon.publish();
    let ready = daemon.ready_line();
    info!("{ready}");
    // Scripts and tests wait for this line on stdout; systemd for READY=1.
    println!("{ready}");
    std::io::stdout().flush()?;
    notify::ready(&ready);
    Ok((daemon, listener, events, metrics_task))
}

/// The next read of the nexthop object events; never, when there are none to follow.
async fn next_objects(
    objects: &mut Option<tokio::sync::mpsc::Receiver<crate::host::kernel_nexthops::ObjectRead>>,
) -> Option<crate::host::kernel_nexthops::ObjectRead> {
    match objects {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// The event loop, until SIGTERM or SIGINT: control requests, SIGHUP reloads, host events,
/// the neighbour refresh. Then the dataplane stops, or stays for the next daemon.
async fn serve(
    mut daemon: Daemon<'_>,
    listener: UnixListener,
    mut events: Events,
    metrics_task: Option<JoinHandle<()>>,
) -> anyhow::Result<()> {
    let options = daemon.options;
    let (requests, mut incoming) = mpsc::channel::<(Request, Responder)>(16);
    tokio::spawn(accept_loop(listener, requests));
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
    let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
    let mut compact = tokio::time::interval(TABLE_COMPACTION);
    let mut drain = tokio::time::interval(sampling::DRAIN_EVERY);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    // Without a watchdog, a tick that never comes.
    let watchdog_every = notify::watchdog_every();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
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
            _ = hangup.recv() => {
                info!("SIGHUP: reloading {}", daemon.config_file);
                notify::reloading();
                match daemon.reload().await {
                    Ok(message) => info!("{message}"),
                    Err(message) => error!("reload refused: {message}"),
                }
                notify::ready(&daemon.ready_line());
            }
            _ = watchdog.tick(), if watchdog_every.is_some() => notify::watchdog(),
            Some((request, responder)) = incoming.recv() => {
                let mut progress = Progress::to(responder.progress);
                let answer = daemon.handle(request, &mut progress).await;
                let _ = responder.reply.send(answer);
            }
            Some(read) = next_objects(&mut events.objects) => {
                daemon.kernel_object_events(read).await?;
            }
            message = events.rtnetlink.next() => {
                let Some((message, _)) = message else {
                    bail!("the rtnetlink event socket closed");
                };
                let mut next = Some(message);
                while let Some(message) = next.take() {
                    if daemon.kernel.is_some() && is_route_event(&message) {
                        // Route events come in floods: taken in batches, each applied in
                        // place (a batch is at most a bulk change's size).
                        let mut batch = vec![message];
                        while batch.len() < BULK_ROUTES {
                            match events.rtnetlink.try_recv() {
                                Ok((message, _)) if is_route_event(&message) => batch.push(message),
                                Ok((message, _)) => {
                                    next = Some(message);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        daemon.kernel_route_events(batch).await?;
                        continue;
                    }
                    match message.payload {
                        NetlinkPayload::InnerMessage(message) => {
                            daemon.host_event(message).await?;
                        }
                        NetlinkPayload::Overrun(_) => {
                            warn!("rtnetlink events were lost; reading the host's state again");
                            daemon.resync().await?;
                        }
                        _ => {}
                    }
                }
            }
            _ = refresh.tick() => daemon.refresh_neighbours().await?,
            _ = compact.tick() => daemon.dataplane.compact_tables()?,
            _ = drain.tick() => daemon.drain_samples(),
            _ = poll.tick() => {
                if let Err(err) = daemon.poll_counters().await {
                    warn!("sFlow counter samples: {err:#}");
                }
            }
        }
    }
    notify::stopping();
    if let Some(task) = metrics_task {
        task.abort();
    }
    let _ = fs::remove_file(&options.socket);
    if options.keep_on_exit {
        info!(
            "leaving the dataplane forwarding (--keep-on-exit); the next `run` with --pin-dir {} \
             takes it over",
            options.pin_dir.display()
        );
        daemon.dataplane.keep_running();
    } else {
        daemon.dataplane.stop();
    }
    Ok(())
}
