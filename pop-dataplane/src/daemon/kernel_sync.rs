//! Following kernel routing tables (`--sync-kernel-table`, `[daemon] sync_kernel_tables`):
//! what BIRD, FRR's zebra or an operator installs there becomes the RIB's `kernel` source,
//! read whole at start and after lost events, then followed route event by route event.
//! The kernel's nexthop objects, which FRR installs routes through, are followed beside
//! them: a change of one moves its routes with one write (see `control::fib`).

use std::collections::BTreeMap;

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use ipnet::IpNet;
use log::{debug, error, info, warn};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use pop_dataplane_common::Nexthop;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::{RunOptions, handlers::Daemon};
use crate::{
    config::{
        Config,
        route_spec::{self, RouteSpec},
    },
    control::{
        plan::MapWrite,
        rib::Source,
        router::{BULK_ROUTES, Mode, Router},
        vrf::VrfId,
    },
    dataplane::Dataplane,
    host::{
        Host,
        kernel_nexthops::{KernelObjects, ObjectEvent, ObjectRead, ObjectSocket, Resolved},
        kernel_routes::{self, KernelRoutes, KernelTarget},
    },
};

/// The kernel routing tables the daemon follows, and what they hold.
pub(super) struct KernelSync {
    pub(super) tables: Vec<u32>,
    /// The tables `[[vrf]]` entries follow, with their VRF's name; the others are the default
    /// VRF's.
    pub(super) vrf_tables: Vec<(u32, String)>,
    /// The routes of each VRF's tables, by VRF name (`None`: the default VRF).
    pub(super) routes: BTreeMap<Option<String>, KernelRoutes>,
    pub(super) objects: KernelObjects,
}

/// A prefix of a VRF (by name, `None` for the default VRF) whose kernel route changed.
type VrfPrefix = (Option<String>, IpNet);

/// Reads nexthop object events in a task of their own, into a channel the event loop
/// selects on. Joined before the tables are read, so that no change falls between.
pub(super) fn follow_objects() -> anyhow::Result<tokio::sync::mpsc::Receiver<ObjectRead>> {
    let mut socket = ObjectSocket::open()?;
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let read = match socket.next().await {
                Ok(read) => read,
                Err(err) => {
                    error!("nexthop object events: {err:#}; reading them whole again");
                    ObjectRead::Overrun
                }
            };
            if sender.send(read).await.is_err() {
                return;
            }
        }
    });
    Ok(receiver)
}

impl KernelSync {
    /// The VRF whose routes table `table` holds.
    fn vrf_of(&self, table: u32) -> Option<String> {
        self.vrf_tables
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, name)| name.clone())
    }

    /// The route the kernel forwards `prefix` of `vrf` with.
    fn best(&self, (vrf, prefix): &VrfPrefix) -> Option<&KernelTarget> {
        self.routes.get(vrf)?.best(prefix)
    }

    /// Reads the tables whole and makes the RIB's kernel routes equal to them (at start, and
    /// after lost events); the number of prefixes.
    pub(super) async fn read_tables(
        &mut self,
        handle: &Handle,
        router: &mut Router,
        dataplane: &mut Dataplane,
    ) -> anyhow::Result<usize> {
        // Objects first: the routes read next resolve through them.
        let mut objects = KernelObjects::default();
        for event in ObjectSocket::dump().await? {
            objects.apply(event);
        }
        let mut writes = Vec::new();
        let known = objects.ids();
        for id in router.kernel_object_ids() {
            if !known.contains(&id) {
                writes.extend(router.set_kernel_object(id, &Resolved::Kernel));
            }
        }
        for &id in &known {
            writes.extend(router.set_kernel_object(id, &objects.resolve(id)));
        }
        dataplane.apply(&writes)?;
        self.objects = objects;
        let mut routes: BTreeMap<Option<String>, KernelRoutes> = BTreeMap::new();
        // Without strict checking the kernel dumps every table: the others are skipped.
        let dumps = [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ];
        for request in dumps {
            let mut dump = handle.route().get(request).execute();
            while let Some(message) = dump.try_next().await.context("reading kernel routes")? {
                if let Some(route) = kernel_routes::parse_route(&message, &self.tables) {
                    routes
                        .entry(self.vrf_of(route.table))
                        .or_default()
                        .add(route, true);
                }
            }
        }
        self.routes = routes;
        let mut specs: Vec<(usize, RouteSpec)> = Vec::new();
        for (vrf, routes) in &self.routes {
            specs.extend(routes.best_routes().map(|(prefix, target)| {
                let spec = router.kernel_spec(vrf.as_deref(), prefix, target, &self.objects);
                (0, spec)
            }));
        }
        let gone: Vec<(VrfId, IpNet)> = {
            let keep: foldhash::HashSet<(VrfId, IpNet)> = specs
                .iter()
                .filter_map(|(_, s)| Some((router.vrf_id(s.vrf.as_deref()).ok()?, s.prefix)))
                .collect();
            router
                .prefixes_of(Source::Kernel)
                .into_iter()
                .filter(|key| !keep.contains(key))
                .collect()
        };
        let writes = set_kernel_routes(router, &specs, &gone);
        install(dataplane, router, writes, specs.len() > BULK_ROUTES)?;
        Ok(specs.len())
    }
}

impl Daemon<'_> {
    /// Applies a batch of kernel route events.
    pub(super) async fn kernel_route_events(
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
            let key = (sync.vrf_of(route.table), route.prefix);
            let routes = sync.routes.entry(key.0.clone()).or_default();
            let winner_changed = if added {
                routes.add(route, append)
            } else {
                routes.remove(&route)
            };
            if winner_changed {
                changed.insert(key);
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        debug!(
            "kernel routes: {} changed ({} events)",
            changed.len(),
            batch.len()
        );
        self.set_kernel_prefixes(changed, Vec::new()).await
    }

    /// Brings the RIB's kernel routes for `changed` in line with the kernel's, with the
    /// writes `before` (next hops and groups they need) applied first.
    async fn set_kernel_prefixes(
        &mut self,
        changed: impl IntoIterator<Item = VrfPrefix>,
        before: Vec<MapWrite>,
    ) -> anyhow::Result<()> {
        let sync = self.kernel.as_ref().expect("called when syncing");
        let mut set = Vec::new();
        let mut gone = Vec::new();
        for key in changed {
            match sync.best(&key) {
                Some(target) => {
                    let (vrf, prefix) = &key;
                    set.push((
                        0,
                        self.router
                            .kernel_spec(vrf.as_deref(), *prefix, target, &sync.objects),
                    ));
                }
                None => {
                    if let Ok(vrf) = self.router.vrf_id(key.0.as_deref()) {
                        gone.push((vrf, key.1));
                    }
                }
            }
        }
        let mut writes = before;
        writes.extend(set_kernel_routes(&mut self.router, &set, &gone));
        install(&mut self.dataplane, &self.router, writes, false)?;
        // Only a next hop still unresolved needs the kernel asked; in a BGP flood nearly
        // every batch has none, and reading the neighbour table each time is wasted.
        let unresolved = self.router.unusable_nexthops() > 0;
        if unresolved {
            self.refresh_neighbours().await?;
        } else {
            self.publish();
        }
        Ok(())
    }

    /// Applies what the nexthop object socket read. An object that still resolves to
    /// gateways only has its members changed: one group write moves all its routes. One
    /// that starts or stops doing so (a blackhole, unknown, on-link, the kernel's alone)
    /// changes what its routes are, route by route; one deleted takes its routes with it,
    /// as in the kernel.
    pub(super) async fn kernel_object_events(&mut self, read: ObjectRead) -> anyhow::Result<()> {
        let events = match read {
            ObjectRead::Events(events) => events,
            ObjectRead::Overrun => {
                warn!("nexthop object events were lost; reading the kernel tables again");
                return self.resync().await;
            }
        };
        let sync = self.kernel.as_mut().expect("called when syncing");
        let mut before = std::collections::BTreeMap::new();
        let mut changed = Vec::new();
        for event in events {
            let id = match &event {
                ObjectEvent::Set(id, _) | ObjectEvent::Removed(id) => *id,
            };
            for touched in sync.objects.affected(id) {
                before
                    .entry(touched)
                    .or_insert_with(|| sync.objects.resolve(touched));
            }
            if matches!(event, ObjectEvent::Removed(_)) {
                for (vrf, routes) in &mut sync.routes {
                    changed.extend(
                        routes
                            .remove_through_object(id)
                            .into_iter()
                            .map(|prefix| (vrf.clone(), prefix)),
                    );
                }
            }
            sync.objects.apply(event);
        }
        let mut writes = Vec::new();
        let mut reclassified = std::collections::BTreeSet::new();
        let mut moved = 0;
        for (id, was) in before {
            let now = sync.objects.resolve(id);
            if std::mem::discriminant(&was) != std::mem::discriminant(&now) {
                reclassified.insert(id);
            }
            if was != now {
                moved += 1;
                writes.extend(self.router.set_kernel_object(id, &now));
            }
        }
        for (vrf, routes) in &sync.routes {
            changed.extend(
                routes
                    .through_objects(&reclassified)
                    .into_iter()
                    .map(|prefix| (vrf.clone(), prefix)),
            );
        }
        info!(
            "nexthop objects changed: {moved} ({} map writes), {} routes set again",
            writes.len(),
            changed.len()
        );
        self.set_kernel_prefixes(changed, writes).await
    }
}

/// Sets and removes kernel routes in the RIB; the writes. Kernel routes are the kernel's
/// word and cannot be refused: one the fast path cannot take (the tables or ECMP groups
/// full) is handed to the kernel instead.
fn set_kernel_routes(
    router: &mut Router,
    set: &[(usize, RouteSpec)],
    gone: &[(VrfId, IpNet)],
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
                            vrf: spec.vrf.clone(),
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
    let gone: Vec<(VrfId, IpNet)> = gone
        .iter()
        .filter(|(vrf, prefix)| router.has_route(*vrf, prefix, Source::Kernel))
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
pub(super) fn install(
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

/// The kernel tables `run` follows: its options' and the config's, the VRFs' too (see
/// [`vrf_tables`]).
pub(super) fn kernel_tables_to_follow(
    options: &RunOptions,
    config: &Config,
    host: &Host,
) -> Vec<u32> {
    let mut tables: Vec<u32> = options.sync_kernel_tables.clone();
    tables.extend(config.daemon.sync_kernel_tables.iter().map(|table| table.0));
    tables.extend(vrf_tables(config, host).into_iter().map(|(table, _)| table));
    tables.sort_unstable();
    tables.dedup();
    tables
}

/// The kernel tables the config's `[[vrf]]` entries follow, with their VRF: its
/// `sync_kernel_table`, else the table of the host's VRF device (l3mdev) of the same name.
pub(super) fn vrf_tables(config: &Config, host: &Host) -> Vec<(u32, String)> {
    config
        .vrfs
        .iter()
        .filter_map(|vrf| {
            let table = vrf
                .sync_kernel_table
                .or_else(|| host.link(&vrf.name)?.vrf_table)?;
            Some((table, vrf.name.clone()))
        })
        .collect()
}
