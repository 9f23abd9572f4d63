//! `pop-dataplane run`: the daemon. Validates the config, loads (or takes over) the dataplane,
//! attaches, and then keeps the maps right while the world changes: control requests (routes,
//! reload, save), the host's addresses, links and neighbours over rtnetlink, SIGHUP. On
//! SIGINT or SIGTERM it detaches, or with `--keep-on-exit` leaves the dataplane forwarding
//! for the next daemon to take over.

use std::{
    collections::HashSet,
    fs,
    hash::{BuildHasher as _, RandomState},
    io::Write as _,
    net::IpAddr,
    os::{fd::AsRawFd as _, unix::fs::PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures_util::{StreamExt as _, TryStreamExt as _};
use ipnet::IpNet;
use log::{debug, error, info, warn};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::{
    RouteNetlinkMessage,
    neighbour::{NeighbourFlags, NeighbourState},
};
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder, sys::AsyncSocket as _};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

use pop_dataplane_common::{Nexthop, fib::FibMode};

use crate::{
    api::{MAX_REQUEST, Reply, Request, Status},
    config::Config,
    config::route_spec::{self, RouteSpec},
    control::acl::RuleInfo,
    control::plan::MapWrite,
    control::rib::Source,
    control::router::{BULK_ROUTES, Mode, Router, Update},
    control::topology::{load_names, save_names},
    dataplane::{AttachMode, Dataplane, LoadOptions},
    host::kernel_routes::{self, KernelRoutes},
    host::{self, Host, HostEvent},
    observe::metrics,
};

pub struct RunOptions {
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

/// Receive buffer of the rtnetlink event socket. Route events come in floods (a BGP session
/// bringing up a full table is a million of them, about 1 KiB each in the buffer): room for
/// a good share of one while the daemon applies what came before. Should it overflow all the
/// same, the daemon reads the tables again.
const EVENT_BUFFER_BYTES: libc::c_int = 256 << 20;

pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "pop-dataplane run needs root: it loads BPF programs and attaches them to interfaces"
        );
    }
    // Everything a user can get wrong is checked before anything is loaded or attached.
    let file = options.config.display().to_string();
    let config = Config::load(&options.config)?;
    let saved_routes_path = saved_routes_path(&config, &options.config);
    let saved = read_saved_routes(&saved_routes_path)?;

    let sync_tables = kernel_tables_to_follow(&options, &config);

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
    let (mut events_connection, _, mut events) =
        rtnetlink::new_multicast_connection(&groups).context("subscribing to rtnetlink events")?;
    enlarge_receive_buffer(events_connection.socket_mut().socket_mut());
    tokio::spawn(events_connection);
    let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(connection);
    let host = Host::read(&handle).await?;
    // Validated against this host before anything else happens.
    crate::control::topology::Topology::build(&config, &file, &host)?;

    warn_if_kernel_forwarding_is_off();
    let _lock = InstanceLock::acquire(&options.run_dir)?;
    let listener = bind_control_socket(&options.socket, config.daemon.control_group.as_deref())?;

    let mut dataplane = Dataplane::load(LoadOptions {
        log_level: options.log_level,
        ecmp_seed: ecmp_seed(),
        pin_dir: Some(options.pin_dir.clone()),
        fib: options.fib,
    })?;
    dataplane.forward_logs();
    let adopted = if dataplane.adopted() {
        let names = load_names(&options.run_dir).unwrap_or_default();
        let adopted = dataplane.in_use(&names, &host)?;
        info!(
            "taking over the running dataplane in {}: {} next hops, {} groups, {} interfaces",
            options.pin_dir.display(),
            adopted.nexthops.len(),
            adopted.groups.len(),
            adopted.topology.interfaces.len()
        );
        Some(adopted)
    } else {
        None
    };
    let old_ids = adopted
        .as_ref()
        .map(|a| (a.nexthops.clone(), a.groups.clone()));
    let mut router = Router::new(&host, adopted.unwrap_or_default());
    let update = router
        .apply_config_with(&config, &file, &host, Some(&saved))
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let started = Instant::now();
    dataplane.update(&update)?;
    dataplane.set_names(&router.topology);
    if let Some((nexthops, groups)) = old_ids {
        // The old tables are swapped out: clear what only they used.
        let (nexthops_freed, groups_freed) = router.forget_adopted();
        let clear = crate::control::router::clear_ids(
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

    let mut attached = Vec::new();
    for port in &router.topology.ports {
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
    save_names(&options.run_dir, &router.topology.names())?;
    let kernel = if sync_tables.is_empty() {
        None
    } else {
        let mut sync = KernelSync {
            tables: sync_tables,
            routes: KernelRoutes::default(),
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
        options: &options,
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
    daemon.publish();
    let ready = daemon.ready_line();
    info!("{ready}");
    // Scripts and tests wait for this line on stdout.
    println!("{ready}");
    std::io::stdout().flush()?;

    let (requests, mut incoming) = mpsc::channel::<(Request, Responder)>(16);
    tokio::spawn(accept_loop(listener, requests));
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
    let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
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
                match daemon.reload().await {
                    Ok(message) => info!("{message}"),
                    Err(message) => error!("reload refused: {message}"),
                }
            }
            Some((request, responder)) = incoming.recv() => {
                let mut progress = Progress::to(responder.progress);
                let answer = daemon.handle(request, &mut progress).await;
                let _ = responder.reply.send(answer);
            }
            message = events.next() => {
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
                            match events.try_recv() {
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
        }
    }
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

struct Daemon<'a> {
    options: &'a RunOptions,
    /// The config running now (the file may have changed since).
    config: Config,
    config_file: String,
    saved_routes_path: PathBuf,
    router: Router,
    dataplane: Dataplane,
    handle: Handle,
    /// Ports and how they were attached.
    attached: Vec<(String, String)>,
    metrics: Option<metrics::Shared>,
    /// The kernel tables followed, if any.
    kernel: Option<KernelSync>,
}

impl Daemon<'_> {
    fn ready_line(&self) -> String {
        let (v4, v6) = self.router.route_counts();
        format!(
            "ready: forwarding on {}; {} IPv4 and {} IPv6 routes ({} local), {} next hops, {} ECMP \
             groups",
            self.attached
                .iter()
                .map(|(name, mode)| format!("{name} ({mode})"))
                .collect::<Vec<_>>()
                .join(", "),
            v4,
            v6,
            self.router.local_addresses().len(),
            self.router.nexthops.len(),
            self.router.fib.groups(),
        )
    }

    /// Shares the figures the metrics endpoint shows.
    fn publish(&self) {
        if let Some(metrics) = &self.metrics {
            let (v4, v6) = self.router.route_counts();
            let unresolved = self
                .router
                .nexthops
                .iter()
                .filter(|(id, _)| !self.router.usable(*id))
                .count();
            metrics.set(metrics::Figures {
                routes_v4: v4 as u64,
                routes_v6: v6 as u64,
                nexthops: self.router.nexthops.len() as u64,
                nexthops_unusable: unresolved as u64,
                groups: self.router.fib.groups() as u64,
            });
        }
    }

    async fn handle(&mut self, request: Request, progress: &mut Progress) -> Reply {
        let result = match request {
            Request::RouteSet { routes, mode } => {
                self.set_routes(&routes, mode, false, Duration::ZERO, progress)
                    .await
            }
            Request::RouteLoad {
                name,
                text,
                replace_all,
            } => {
                let started = Instant::now();
                let lines = text.lines().count();
                let parsed = route_spec::parse_lines(&name, &text, &mut |done| {
                    progress.report("reading routes", done, lines)
                });
                match parsed {
                    Ok(routes) if routes.is_empty() => Err(format!("{name}: no routes")),
                    Ok(routes) => self
                        .set_routes(
                            &routes,
                            Mode::Replace,
                            replace_all,
                            started.elapsed(),
                            progress,
                        )
                        .await
                        .map_err(|err| in_file(&name, err)),
                    Err(errors) => Err(errors),
                }
            }
            Request::RouteDel { prefixes } => self
                .router
                .remove_routes(&prefixes, Source::Cli)
                .and_then(|writes| {
                    self.write(&writes, format!("{} routes deleted", prefixes.len()))
                }),
            Request::RouteFlush => {
                let prefixes = self.router.rib.prefixes_of(Source::Cli);
                self.router
                    .remove_routes(&prefixes, Source::Cli)
                    .and_then(|writes| {
                        self.write(&writes, format!("{} CLI routes flushed", prefixes.len()))
                    })
            }
            Request::RouteList { source } => {
                return Reply::Routes {
                    routes: self.router.list(source),
                };
            }
            Request::RouteGet { addr } => {
                return Reply::Route {
                    route: self.router.get(addr),
                };
            }
            Request::Reload => self.reload().await,
            Request::ConfigSave => self.save(),
            Request::Status => {
                return Reply::Status {
                    status: self.status(),
                };
            }
            Request::AclAdd { rule } => {
                let message = format!("added {rule}");
                self.router
                    .acl_add(rule)
                    .and_then(|writes| self.write(&writes, message))
            }
            Request::AclDel { rule } => {
                let message = format!("deleted {rule}");
                self.router
                    .acl_remove(&rule)
                    .and_then(|writes| self.write(&writes, message))
            }
            Request::AclList => {
                return match self.acl_list() {
                    Ok(rules) => Reply::Acl { rules },
                    Err(err) => Reply::Error {
                        message: format!("{err:#}"),
                    },
                };
            }
        };
        self.publish();
        match result {
            Ok(message) => Reply::Done { message },
            Err(message) => Reply::Error { message },
        }
    }

    /// Sets `routes` from the CLI, all or none (with `replace_all`, they become all the CLI's
    /// routes); `parsing` is what reading them took.
    async fn set_routes(
        &mut self,
        routes: &[(usize, RouteSpec)],
        mode: Mode,
        replace_all: bool,
        parsing: Duration,
        progress: &mut Progress,
    ) -> Result<String, String> {
        let started = Instant::now();
        let mut compile = |done| progress.report("compiling routes", done, routes.len());
        let (writes, removed) = if replace_all {
            self.router
                .replace_routes(routes, Source::Cli, &mut compile)?
        } else {
            let writes = self
                .router
                .set_routes(routes, Source::Cli, mode, &mut compile)?;
            (writes, 0)
        };
        progress.report("building tables", 0, 0);
        let compiled = started.elapsed();
        install(
            &mut self.dataplane,
            &self.router,
            writes,
            replace_all || routes.len() > BULK_ROUTES,
        )
        .map_err(|err| format!("{err:#}"))?;
        let installed = started.elapsed() - compiled;
        if let Err(err) = self.refresh_neighbours().await {
            warn!("reading the neighbour table: {err:#}");
        }
        let memory = self.dataplane.table_memory();
        let removed = if replace_all {
            format!(", {removed} removed")
        } else {
            String::new()
        };
        Ok(format!(
            "{} routes set{removed} in {:.2} s (parse {:.2} s, RIB and FIB {:.2} s, tables \
             {:.2} s); the route tables use {:.1} MiB of kernel memory",
            routes.len(),
            (parsing + started.elapsed()).as_secs_f64(),
            parsing.as_secs_f64(),
            compiled.as_secs_f64(),
            installed.as_secs_f64(),
            memory.total() as f64 / (1 << 20) as f64
        ))
    }

    /// Applies a batch of kernel route events.
    async fn kernel_route_events(
        &mut self,
        batch: Vec<netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>>,
    ) -> anyhow::Result<()> {
        let sync = self.kernel.as_mut().expect("called when syncing");
        let mut changed = foldhash::HashSet::default();
        for message in &batch {
            let append = message.header.flags & netlink_packet_core::NLM_F_APPEND != 0;
            let NetlinkPayload::InnerMessage(message) = &message.payload else {
                continue;
            };
            let (route, added) = match message {
                RouteNetlinkMessage::NewRoute(route) => (route, true),
                RouteNetlinkMessage::DelRoute(route) => (route, false),
                _ => continue,
            };
            let Some(route) = kernel_routes::parse_route(route, &sync.tables) else {
                continue;
            };
            let prefix = route.prefix;
            let winner_changed = if added {
                sync.routes.add(route, append)
            } else {
                sync.routes.remove(&route)
            };
            if winner_changed {
                changed.insert(prefix);
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let mut set = Vec::new();
        let mut gone = Vec::new();
        for prefix in changed {
            match sync.routes.best(&prefix) {
                Some(target) => set.push((0, self.router.kernel_spec(prefix, target))),
                None => gone.push(prefix),
            }
        }
        debug!(
            "kernel routes: {} set, {} removed ({} events)",
            set.len(),
            gone.len(),
            batch.len()
        );
        let writes = set_kernel_routes(&mut self.router, &set, &gone);
        install(&mut self.dataplane, &self.router, writes, false)?;
        // Only a next hop still unresolved needs the kernel asked; in a BGP flood nearly
        // every batch has none, and reading the neighbour table each time is wasted.
        let unresolved = self
            .router
            .nexthops
            .iter()
            .any(|(id, _)| !self.router.usable(id));
        if unresolved {
            self.refresh_neighbours().await?;
        } else {
            self.publish();
        }
        Ok(())
    }

    fn write(&mut self, writes: &[MapWrite], message: String) -> Result<String, String> {
        self.dataplane
            .apply(writes)
            .map_err(|err| format!("{err:#}"))?;
        Ok(message)
    }

    /// Re-reads the config and moves to it at once; a config that fails changes nothing.
    async fn reload(&mut self) -> Result<String, String> {
        let started = Instant::now();
        let config = Config::load(&self.options.config).map_err(|err| err.to_string())?;
        let tables = kernel_tables_to_follow(self.options, &config);
        let following = self.kernel.as_ref().map(|sync| sync.tables.clone());
        if tables != following.clone().unwrap_or_default() {
            return Err(format!(
                "{}: [daemon] sync_kernel_tables would follow kernel tables {tables:?} instead                  of {:?}; that takes a restart (nothing changed)",
                self.config_file,
                following.unwrap_or_default()
            ));
        }
        self.apply_config(config).await?;
        let (v4, v6) = self.router.route_counts();
        Ok(format!(
            "reloaded {} in {:.2?}: {v4} IPv4 and {v6} IPv6 routes",
            self.config_file,
            started.elapsed()
        ))
    }

    /// Moves to `config` on the host as it is now: interfaces placed again (attached to ports
    /// new or re-created, detached from ports gone), tables rebuilt and swapped in whole.
    async fn apply_config(&mut self, config: Config) -> Result<(), String> {
        let host = Host::read(&self.handle)
            .await
            .map_err(|err| format!("{err:#}"))?;
        let update: Update = self
            .router
            .apply_config(&config, &self.config_file, &host)
            .map_err(|err| err.to_string())?;
        self.config = config;
        self.dataplane
            .update(&update)
            .map_err(|err| format!("{err:#}"))?;
        self.dataplane.set_names(&self.router.topology);
        for port in &update.ports_added {
            match self
                .dataplane
                .attach(&port.name, port.ifindex, self.options.xdp_mode)
            {
                Ok(mode) => self.attached.push((port.name.clone(), mode)),
                Err(err) => error!("{err:#}"),
            }
        }
        for port in &update.ports_removed {
            self.dataplane.detach(port.ifindex);
            self.attached.retain(|(name, _)| *name != port.name);
        }
        save_names(&self.options.run_dir, &self.router.topology.names())
            .map_err(|err| format!("{err:#}"))?;
        if let Err(err) = self.refresh_neighbours().await {
            warn!("reading the neighbour table: {err:#}");
        }
        Ok(())
    }

    /// Writes the CLI's routes to the saved-routes file, read back at the next start.
    fn save(&self) -> Result<String, String> {
        let specs = self.router.specs(Source::Cli);
        let mut text = String::from(
            "# pop-dataplane: routes pushed with the CLI, saved by `pop-dataplane config save`.\n\
             # Read at start; one route per line, as `pop-dataplane route add` takes them.\n",
        );
        for spec in &specs {
            text.push_str(&spec.to_string());
            text.push('\n');
        }
        let path = &self.saved_routes_path;
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, path))
            .map_err(|err| format!("writing {}: {err}", path.display()))?;
        Ok(format!(
            "{} CLI routes saved to {}",
            specs.len(),
            path.display()
        ))
    }

    fn status(&self) -> Status {
        let (routes_v4, routes_v6) = self.router.route_counts();
        Status {
            pid: std::process::id(),
            config: self.config_file.clone(),
            ports: self.attached.clone(),
            routes_v4,
            routes_v6,
            nexthops: self.router.nexthops.len(),
            nexthops_unresolved: self
                .router
                .nexthops
                .iter()
                .filter(|(id, _)| !self.router.usable(*id))
                .count(),
            groups: self.router.fib.groups(),
            cli_routes: self.router.rib.prefixes_of(Source::Cli).len(),
            kernel_routes: self.router.rib.prefixes_of(Source::Kernel).len(),
            sync_kernel_tables: self
                .kernel
                .as_ref()
                .map(|sync| sync.tables.clone())
                .unwrap_or_default(),
            saved_routes_file: self.saved_routes_path.display().to_string(),
            fib: match self.dataplane.fib_mode() {
                FibMode::Compiled => "compiled",
                FibMode::LpmTrie => "lpm-trie",
            }
            .to_owned(),
            table_memory: self.dataplane.table_memory(),
        }
    }

    async fn host_event(&mut self, message: RouteNetlinkMessage) -> anyhow::Result<()> {
        let writes = match &message {
            RouteNetlinkMessage::NewNeighbour(neighbour)
            | RouteNetlinkMessage::DelNeighbour(neighbour) => {
                let Some((ifindex, addr, mac)) = host::parse_neighbour(neighbour) else {
                    return Ok(());
                };
                let mac = if matches!(message, RouteNetlinkMessage::DelNeighbour(_)) {
                    None
                } else {
                    mac
                };
                debug!("neighbour {addr} on {ifindex}: {mac:?}");
                self.router.neighbour(ifindex, addr, mac)
            }
            _ => match host::event(&message) {
                Some(HostEvent::AddressAdded(address)) => self.router.local_address_added(address),
                Some(HostEvent::AddressRemoved(address)) => {
                    self.router.local_address_removed(address)
                }
                Some(HostEvent::LinkChanged(link)) if self.router.recreated(&link) => {
                    // An interface of the config is back under a new ifindex: place it again
                    // and attach to it.
                    info!("{}: created again (ifindex {})", link.name, link.ifindex);
                    let config = self.config.clone();
                    if let Err(err) = self.apply_config(config).await {
                        error!("{}: cannot take the interface back: {err}", link.name);
                    }
                    return Ok(());
                }
                Some(HostEvent::LinkChanged(link)) => {
                    let (name, up) = (link.name.clone(), link.up);
                    let writes = self.router.link_changed(link);
                    if !writes.is_empty() {
                        info!("{name}: link {}", if up { "up" } else { "down" });
                    }
                    writes
                }
                Some(HostEvent::LinkRemoved(ifindex)) => {
                    if let Some(port) = self
                        .router
                        .topology
                        .ports
                        .iter()
                        .find(|p| p.ifindex == ifindex)
                    {
                        warn!(
                            "{}: deleted; its next hops are down until it is created again",
                            port.name
                        );
                        self.dataplane.detach(ifindex);
                    }
                    self.router.link_removed(ifindex)
                }
                None => return Ok(()),
            },
        };
        if !writes.is_empty() {
            self.dataplane.apply(&writes)?;
            self.publish();
        }
        Ok(())
    }

    fn acl_list(&self) -> anyhow::Result<Vec<RuleInfo>> {
        self.router
            .acl_rules()
            .map(|(id, rule, origin)| {
                let hits = self.dataplane.acl_hits(id)?;
                Ok(RuleInfo {
                    id,
                    rule: rule.clone(),
                    origin,
                    packets: hits.packets,
                    bytes: hits.bytes,
                })
            })
            .collect()
    }

    async fn refresh_neighbours(&mut self) -> anyhow::Result<()> {
        refresh_neighbours(&self.handle, &mut self.router, &mut self.dataplane).await?;
        self.publish();
        Ok(())
    }

    /// After lost events: reads links, addresses and neighbours again, and applies them.
    async fn resync(&mut self) -> anyhow::Result<()> {
        let host = Host::read(&self.handle).await?;
        let mut writes = Vec::new();
        for link in host.links.clone() {
            writes.extend(self.router.link_changed(link));
        }
        writes.extend(self.router.set_local_addresses(&host.addresses));
        let mut dump = self.handle.neighbours().get().execute();
        while let Some(message) = dump.try_next().await? {
            if let Some((ifindex, addr, mac)) = host::parse_neighbour(&message) {
                writes.extend(self.router.neighbour(ifindex, addr, mac));
            }
        }
        self.dataplane.apply(&writes)?;
        if let Some(sync) = &mut self.kernel {
            let count = sync
                .read_tables(&self.handle, &mut self.router, &mut self.dataplane)
                .await?;
            info!("kernel tables read again: {count} routes");
        }
        self.publish();
        Ok(())
    }
}

/// The kernel routing tables the daemon follows, and what they hold.
struct KernelSync {
    tables: Vec<u32>,
    routes: KernelRoutes,
}

impl KernelSync {
    /// Reads the tables whole and makes the RIB's kernel routes equal to them (at start, and
    /// after lost events); the number of prefixes.
    async fn read_tables(
        &mut self,
        handle: &Handle,
        router: &mut Router,
        dataplane: &mut Dataplane,
    ) -> anyhow::Result<usize> {
        let mut routes = KernelRoutes::default();
        // Without strict checking the kernel dumps every table: the others are skipped.
        let dumps = [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ];
        for request in dumps {
            let mut dump = handle.route().get(request).execute();
            while let Some(message) = dump.try_next().await.context("reading kernel routes")? {
                if let Some(route) = kernel_routes::parse_route(&message, &self.tables) {
                    routes.add(route, true);
                }
            }
        }
        self.routes = routes;
        let specs: Vec<(usize, RouteSpec)> = self
            .routes
            .best_routes()
            .map(|(prefix, target)| (0, router.kernel_spec(prefix, target)))
            .collect();
        let gone: Vec<IpNet> = {
            let keep: foldhash::HashSet<IpNet> = specs.iter().map(|(_, s)| s.prefix).collect();
            router
                .rib
                .prefixes_of(Source::Kernel)
                .into_iter()
                .filter(|prefix| !keep.contains(prefix))
                .collect()
        };
        let writes = set_kernel_routes(router, &specs, &gone);
        install(dataplane, router, writes, specs.len() > BULK_ROUTES)?;
        Ok(specs.len())
    }
}

/// Sets and removes kernel routes in the RIB; the writes. Kernel routes are the kernel's
/// word and cannot be refused: one the fast path cannot take (the tables or ECMP groups
/// full) is handed to the kernel instead.
fn set_kernel_routes(
    router: &mut Router,
    set: &[(usize, RouteSpec)],
    gone: &[IpNet],
) -> Vec<MapWrite> {
    let mut writes = match router.set_routes(set, Source::Kernel, Mode::Replace, &mut |_| ()) {
        Ok(writes) => writes,
        Err(err) => {
            warn!("kernel routes: {err}; handing them to the kernel");
            let to_kernel: Vec<(usize, RouteSpec)> = set
                .iter()
                .map(|(line, spec)| {
                    (
                        *line,
                        RouteSpec {
                            prefix: spec.prefix,
                            target: route_spec::Target::Kernel,
                        },
                    )
                })
                .collect();
            router
                .set_routes(&to_kernel, Source::Kernel, Mode::Replace, &mut |_| ())
                .unwrap_or_else(|err| {
                    error!("kernel routes: {err}; they are missing from the dataplane");
                    Vec::new()
                })
        }
    };
    let gone: Vec<IpNet> = gone
        .iter()
        .filter(|prefix| router.rib.get(prefix, Source::Kernel).is_some())
        .copied()
        .collect();
    writes.extend(
        router
            .remove_routes(&gone, Source::Kernel)
            .expect("only routes the RIB has"),
    );
    writes
}

/// Applies `writes`; with `rebuild` (a bulk change: the writes leave the routes out) the
/// route tables are built afresh from the FIB and swapped in at once, one atomic step even
/// if the daemon dies half-way. New next hops and groups go first; next hops the change let
/// go are cleared after the swap.
fn install(
    dataplane: &mut Dataplane,
    router: &Router,
    writes: Vec<MapWrite>,
    rebuild: bool,
) -> anyhow::Result<()> {
    if !rebuild {
        return dataplane.apply(&writes);
    }
    let (cleared, before): (Vec<MapWrite>, Vec<MapWrite>) = writes
        .into_iter()
        .filter(|w| !matches!(w, MapWrite::Route(..) | MapWrite::DeleteRoute(..)))
        .partition(|w| matches!(w, MapWrite::Nexthop(_, n) if *n == Nexthop::default()));
    dataplane.apply(&before)?;
    dataplane.replace_routes(router.table_routes())?;
    dataplane.apply(&cleared)
}

/// The kernel tables `run` follows: its options' and the config's.
/// An error about `line N` of a route file, as `FILE:N: ...` like the parser's.
fn in_file(name: &str, error: String) -> String {
    match error
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((line, rest)) if line.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{name}:{line}: {rest}")
        }
        _ => format!("{name}: {error}"),
    }
}

fn kernel_tables_to_follow(options: &RunOptions, config: &Config) -> Vec<u32> {
    let mut tables: Vec<u32> = options.sync_kernel_tables.clone();
    tables.extend(config.daemon.sync_kernel_tables.iter().map(|table| table.0));
    tables.sort_unstable();
    tables.dedup();
    tables
}

fn is_route_event(message: &netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>) -> bool {
    matches!(
        message.payload,
        NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_)
        )
    )
}

/// See [`EVENT_BUFFER_BYTES`]; `POP_DATAPLANE_EVENT_BUFFER` (bytes) sets another size. Root
/// may go beyond `net.core.rmem_max`.
fn enlarge_receive_buffer(socket: &mut rtnetlink::sys::Socket) {
    let size: libc::c_int = match std::env::var("POP_DATAPLANE_EVENT_BUFFER") {
        Ok(text) => match text.parse() {
            Ok(size) => size,
            Err(_) => {
                warn!("POP_DATAPLANE_EVENT_BUFFER={text:?} is not a number of bytes; ignored");
                EVENT_BUFFER_BYTES
            }
        },
        Err(_) => EVENT_BUFFER_BYTES,
    };
    // SAFETY: the fd is an open socket, and the option's value a c_int living through the
    // call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        warn!(
            "enlarging the rtnetlink event buffer: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Brings the next hops' neighbours up to date, and keeps them so: reads the kernel's
/// neighbour table (an entry already reachable or permanent when a next hop appears sends no
/// event), then asks the kernel to resolve, or keep resolved, each next hop's neighbour: an
/// NTF_USE update starts resolution as a packet would, and counts as use. Static entries
/// (permanent, noarp) are left alone: the kernel turns a permanent entry that gets NTF_USE
/// into a dynamic one.
async fn refresh_neighbours(
    handle: &Handle,
    router: &mut Router,
    dataplane: &mut Dataplane,
) -> anyhow::Result<()> {
    let mut wanted: HashSet<(u32, IpAddr)> = router.kernel_neighbours().into_iter().collect();
    let mut writes = Vec::new();
    let mut dump = handle.neighbours().get().execute();
    while let Some(message) = dump.try_next().await? {
        // Every entry, for next hops to come too.
        if let Some((ifindex, addr, mac)) = host::parse_neighbour(&message) {
            writes.extend(router.neighbour(ifindex, addr, mac));
            if matches!(
                message.header.state,
                NeighbourState::Permanent | NeighbourState::Noarp
            ) {
                wanted.remove(&(ifindex, addr));
            }
        }
    }
    if !writes.is_empty() {
        dataplane.apply(&writes)?;
    }
    for (ifindex, addr) in wanted {
        let request = handle
            .neighbours()
            .add(ifindex, addr)
            .state(NeighbourState::None)
            .flags(NeighbourFlags::Use)
            .replace();
        if let Err(err) = request.execute().await {
            debug!("asking the kernel to resolve {addr} on ifindex {ifindex}: {err}");
        }
    }
    Ok(())
}

/// Accepts control connections and passes their requests to the daemon's loop.
async fn accept_loop(listener: UnixListener, requests: mpsc::Sender<(Request, Responder)>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            if let Err(err) = serve_connection(stream, requests).await {
                debug!("control connection: {err:#}");
            }
        });
    }
}

/// Where the answer to a control request goes, and its progress reports before it.
struct Responder {
    reply: oneshot::Sender<Reply>,
    progress: mpsc::UnboundedSender<Reply>,
}

/// Progress of a long request, reported to its client as it goes: at most every 100 ms, so
/// that reporting costs nothing next to the work.
pub struct Progress {
    to: Option<mpsc::UnboundedSender<Reply>>,
    last: Option<Instant>,
}

impl Progress {
    fn to(sender: mpsc::UnboundedSender<Reply>) -> Self {
        Self {
            to: Some(sender),
            last: None,
        }
    }

    /// `done` of `total` in `phase`.
    pub fn report(&mut self, phase: &str, done: usize, total: usize) {
        let Some(to) = &self.to else {
            return;
        };
        if self
            .last
            .is_some_and(|last| last.elapsed() < Duration::from_millis(100))
            && done < total
        {
            return;
        }
        self.last = Some(Instant::now());
        let _ = to.send(Reply::Progress {
            phase: phase.to_owned(),
            done: done as u64,
            total: total as u64,
        });
    }
}

async fn serve_connection(
    stream: UnixStream,
    requests: mpsc::Sender<(Request, Responder)>,
) -> anyhow::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader).take(MAX_REQUEST as u64);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?;
    let reply = match serde_json::from_slice::<Request>(&line) {
        Ok(request) => {
            let (reply, mut answer) = oneshot::channel();
            let (progress, mut reports) = mpsc::unbounded_channel();
            requests
                .send((request, Responder { reply, progress }))
                .await
                .context("the daemon is stopping")?;
            loop {
                tokio::select! {
                    Some(report) = reports.recv() => write_line(&mut writer, &report).await?,
                    answer = &mut answer => break answer.context("the daemon is stopping")?,
                }
            }
        }
        Err(err) if line.len() >= MAX_REQUEST => Reply::Error {
            message: format!("request larger than {MAX_REQUEST} bytes: {err}"),
        },
        Err(err) => Reply::Error {
            message: format!("malformed request: {err}"),
        },
    };
    write_line(&mut writer, &reply).await
}

async fn write_line(
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec(reply)?;
    text.push(b'\n');
    writer.write_all(&text).await?;
    Ok(())
}

/// The control socket: mode 0600 (0660 owned by the control group, if one is configured).
fn bind_control_socket(path: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file left by a daemon that died: the instance lock says none runs now.
    let _ = fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    let mode = match group {
        None => 0o600,
        Some(group) => {
            let gid = group_id(group).with_context(|| format!("control group {group:?}"))?;
            let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
            // SAFETY: chown on a path we just created.
            if unsafe { libc::chown(c_path.as_ptr(), 0, gid) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("chown {}", path.display()));
            }
            0o660
        }
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

fn group_id(name: &str) -> anyhow::Result<u32> {
    let groups = fs::read_to_string("/etc/group").context("reading /etc/group")?;
    groups
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(name))
                .then(|| fields.nth(1).and_then(|gid| gid.parse().ok()))
                .flatten()
        })
        .with_context(|| format!("no group {name:?} in /etc/group"))
}

/// Where `config save` writes: `[daemon] saved_routes`, else next to the config.
fn saved_routes_path(config: &Config, config_path: &Path) -> PathBuf {
    config.daemon.saved_routes.clone().unwrap_or_else(|| {
        let mut path = config_path.as_os_str().to_owned();
        path.push(".routes");
        PathBuf::from(path)
    })
}

fn read_saved_routes(path: &Path) -> anyhow::Result<Vec<(usize, RouteSpec)>> {
    match fs::read_to_string(path) {
        Ok(text) => route_spec::parse_lines(&path.display().to_string(), &text, &mut |_| {})
            .map_err(|err| anyhow::anyhow!(err)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
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
