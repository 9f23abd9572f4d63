//! The router's state: topology, next hops, the RIB and the FIB compiled from it, and what the
//! host says (addresses, link states, neighbours). The daemon owns one; every change it makes
//! comes out as map writes, in an order that is safe for packets in flight.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use pop_dataplane_common::{InterfaceKey, Nexthop, Route, RouteEntry, maps};
use serde::{Deserialize, Serialize};

use crate::{
    config::route_spec::{Hop, RouteSpec, Target},
    config::{self, Config, ConfigError},
    control::acl::{self, Acl, AclEntries, DenyRule, Origin},
    control::fib::Fib,
    control::nexthops::{Neighbour, NexthopKey, Nexthops},
    control::plan::MapWrite,
    control::rib::{Action, NexthopSet, Rib, Source},
    control::topology::{Port, Topology},
    host::kernel_routes::KernelTarget,
    host::{Address, Host, Link},
    mac::MacAddr,
};

/// Ids and slots a running dataplane held when this daemon adopted it.
#[derive(Clone, Debug, Default)]
pub struct Adopted {
    /// What its ACL maps hold.
    pub acl: AclEntries,
    pub nexthops: Vec<u32>,
    pub groups: Vec<u32>,
    pub topology: Topology,
}

/// A move to a new config: what to write before the route tables are swapped, the complete
/// new route tables, and what to write after.
#[derive(Debug, Default)]
pub struct Update {
    pub before: Vec<MapWrite>,
    /// Groups and every route, for fresh tables.
    pub tables: Vec<MapWrite>,
    pub after: Vec<MapWrite>,
    pub ports_added: Vec<Port>,
    pub ports_removed: Vec<Port>,
}

/// Above this many routes, a change is made by building fresh tables and swapping them in:
/// faster than writing each route, and one atomic step for the program.
pub const BULK_ROUTES: usize = 10_000;

/// How a CLI request treats routes that exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Fail on a prefix that has a route from the same source.
    Add,
    /// Add, or replace the route from the same source.
    Replace,
}

/// A route as `route list` and `route get` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    pub prefix: IpNet,
    pub source: Source,
    /// The route the dataplane uses for this prefix (the best source).
    pub selected: bool,
    /// `via ... dev ...`, `blackhole`, `kernel` or `local`.
    pub target: String,
    pub nexthops: Vec<NexthopInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NexthopInfo {
    pub id: u32,
    pub dev: String,
    pub via: Option<IpAddr>,
    pub mac: Option<String>,
    /// `reachable` (resolved, link up), `unresolved` or `link down`.
    pub state: String,
}

pub struct Router {
    pub topology: Topology,
    pub nexthops: Nexthops,
    pub rib: Rib,
    pub fib: Fib,
    /// The config's `[[nexthop]]` entries: name -> id.
    config_nexthops: HashMap<String, u32>,
    local: BTreeSet<Address>,
    /// The host's interfaces, by ifindex.
    links: HashMap<u32, Link>,
    /// Next-hop sets in use, shared by their routes.
    sets: foldhash::HashSet<NexthopSet>,
    /// The ingress source filter, and what its maps hold.
    acl: Acl,
    acl_installed: AclEntries,
    /// `[filter] martian_sources`.
    martian_sources: bool,
}

impl Router {
    /// An empty router over `host`'s interfaces; with `adopted`, it avoids the ids and slots
    /// a running dataplane uses until its tables are replaced.
    pub fn new(host: &Host, adopted: Adopted) -> Self {
        Self {
            topology: adopted.topology,
            nexthops: Nexthops::avoiding(adopted.nexthops),
            rib: Rib::default(),
            fib: Fib::avoiding(adopted.groups),
            config_nexthops: HashMap::new(),
            local: BTreeSet::new(),
            links: host.links.iter().map(|l| (l.ifindex, l.clone())).collect(),
            sets: foldhash::HashSet::default(),
            acl: Acl::default(),
            acl_installed: adopted.acl,
            martian_sources: false,
        }
    }

    /// A router running `config` on `host`, and the update that installs it.
    pub fn start(config: &Config, file: &str, host: &Host) -> Result<(Self, Update), ConfigError> {
        let mut router = Self::new(host, Adopted::default());
        let update = router.apply_config(config, file, host)?;
        Ok((router, update))
    }

    /// Moves to `config` (read from `file`), validated first and applied whole: on error
    /// nothing changes. Routes from other sources stay; the route tables are rebuilt, to be
    /// swapped in at once.
    pub fn apply_config(
        &mut self,
        config: &Config,
        file: &str,
        host: &Host,
    ) -> Result<Update, ConfigError> {
        self.apply_config_with(config, file, host, None)
    }

    /// [`Router::apply_config`], with the CLI routes replaced by `cli_routes` (read back from
    /// the saved-routes file at start) when given.
    pub fn apply_config_with(
        &mut self,
        config: &Config,
        file: &str,
        host: &Host,
        cli_routes: Option<&[(usize, RouteSpec)]>,
    ) -> Result<Update, ConfigError> {
        let whole_file = |message: String| ConfigError {
            file: file.to_owned(),
            line: None,
            message,
        };
        let topology = Topology::build_after(config, file, host, &self.topology)?;

        // Saved CLI routes must find their interfaces in the new topology.
        for (line, spec) in cli_routes.unwrap_or_default() {
            if let Target::Via(hops) = &spec.target {
                for hop in hops {
                    if topology.interface(&hop.dev).is_none() {
                        return Err(whole_file(format!(
                            "saved route on line {line} ({spec}): dev {:?} is not one of the \
                             interfaces",
                            hop.dev
                        )));
                    }
                }
            }
        }
        // CLI routes must still find their interfaces.
        for (prefix, source, action) in self.rib.all() {
            if cli_routes.is_some() {
                break;
            }
            if source != Source::Cli {
                continue;
            }
            for id in action.nexthops() {
                let dev = &self
                    .nexthops
                    .get(*id)
                    .expect("routes hold their next hops")
                    .key
                    .dev;
                if topology.interface(dev).is_none() {
                    return Err(whole_file(format!(
                        "interface {dev:?} is gone from the config but route {prefix} (from the \
                         CLI) uses it: delete or change that route first"
                    )));
                }
            }
        }
        let keys: Vec<(NexthopKey, Option<MacAddr>)> = config
            .nexthops
            .iter()
            .map(|n| {
                let neighbour = match (n.via, n.lladdr) {
                    (Some(via), _) => Neighbour::Via(via),
                    (None, Some(mac)) => Neighbour::Mac(mac),
                    (None, None) => unreachable!("validated: via or lladdr"),
                };
                (
                    NexthopKey {
                        dev: n.dev.clone(),
                        neighbour,
                    },
                    n.lladdr,
                )
            })
            .collect();
        let new_keys = keys
            .iter()
            .filter(|(k, _)| self.nexthops.id(k).is_none())
            .count();
        if self.nexthops.len() + new_keys >= maps::MAX_NEXTHOPS as usize {
            return Err(whole_file(format!(
                "more than {} next hops",
                maps::MAX_NEXTHOPS - 1
            )));
        }
        let (mut v4, mut v6) = (0, 0);
        for route in &config.routes {
            match route.prefix {
                IpNet::V4(_) => v4 += 1,
                IpNet::V6(_) => v6 += 1,
            }
        }
        if v4 > maps::MAX_ROUTES_V4 as usize || v6 > maps::MAX_ROUTES_V6 as usize {
            return Err(whole_file(format!(
                "{v4} IPv4 and {v6} IPv6 routes; at most {} and {} are supported",
                maps::MAX_ROUTES_V4,
                maps::MAX_ROUTES_V6
            )));
        }

        let mut acl = self.acl.clone();
        let config_acl: Vec<DenyRule> = config.acl.iter().map(|a| a.rule.clone()).collect();
        acl.set(Origin::Config, &config_acl).map_err(whole_file)?;
        acl::check_room(&acl.compile(&topology)).map_err(whole_file)?;

        // From here on nothing fails: take the new, then let go of the old.
        self.acl = acl;
        self.martian_sources = config.filter.martian_sources;
        let old_topology = std::mem::replace(&mut self.topology, topology);
        let mut config_nexthops = HashMap::new();
        for (nexthop, (key, mac)) in config.nexthops.iter().zip(&keys) {
            let id = self.nexthops.acquire(key, *mac).expect("room checked");
            config_nexthops.insert(nexthop.name.clone(), id);
        }
        let old_config_nexthops = std::mem::replace(&mut self.config_nexthops, config_nexthops);
        let mut released = Vec::new();
        for prefix in self.rib.prefixes_of(Source::Config) {
            if let (Some(old), _) = self.rib.remove(prefix, Source::Config) {
                released.extend_from_slice(old.nexthops());
            }
        }
        for route in &config.routes {
            let action = match &route.action {
                config::RouteAction::Nexthops(indexes) => {
                    let mut ids: Vec<u32> = indexes
                        .iter()
                        .map(|i| self.config_nexthops[&config.nexthops[*i].name])
                        .collect();
                    // Two names for one next hop count once.
                    ids.sort_unstable();
                    ids.dedup();
                    for id in &ids {
                        self.nexthops.hold(*id);
                    }
                    self.action(ids)
                }
                config::RouteAction::Blackhole => Action::Blackhole,
                config::RouteAction::Kernel => Action::Kernel,
            };
            self.rib.insert(route.prefix, Source::Config, action);
        }
        released.extend(old_config_nexthops.values());
        if let Some(cli_routes) = cli_routes {
            for prefix in self.rib.prefixes_of(Source::Cli) {
                if let (Some(old), _) = self.rib.remove(prefix, Source::Cli) {
                    released.extend_from_slice(old.nexthops());
                }
            }
            for (_, spec) in cli_routes {
                let action = match &spec.target {
                    Target::Via(hops) => {
                        let ids = hops
                            .iter()
                            .map(|hop| {
                                self.nexthops
                                    .acquire(&hop_key(hop), None)
                                    .expect("room checked")
                            })
                            .collect();
                        self.action(ids)
                    }
                    Target::Blackhole => Action::Blackhole,
                    Target::Kernel => Action::Kernel,
                };
                self.rib.insert(spec.prefix, Source::Cli, action);
            }
        }
        self.set_local_addresses_in_rib(&host.addresses);

        let usable = self.usable_set();
        let tables = self
            .fib
            .rebuild(self.rib.best().map(|(p, _, a)| (p, a)), &|id| {
                usable.contains(&id)
            })
            .map_err(|err| whole_file(err.to_string()))?;

        let mut update = Update {
            tables,
            ..Update::default()
        };
        for port in &self.topology.ports {
            update.before.push(MapWrite::Port(port.index, port.ifindex));
            if !old_topology.ports.iter().any(|p| p.ifindex == port.ifindex) {
                update.ports_added.push(port.clone());
            }
        }
        update.ports_removed = old_topology
            .ports
            .iter()
            .filter(|p| !self.topology.ports.iter().any(|n| n.ifindex == p.ifindex))
            .cloned()
            .collect();
        for interface in &self.topology.interfaces {
            if !old_topology
                .interfaces
                .iter()
                .any(|o| o.entry.slot == interface.entry.slot)
            {
                update
                    .before
                    .push(MapWrite::ResetCounters(interface.entry.slot));
            }
            update
                .before
                .push(MapWrite::Interface(interface.key, interface.entry));
        }
        let acl = self.acl_writes();
        update.before.extend(acl);
        for old in &old_topology.interfaces {
            if !self.topology.interfaces.iter().any(|i| i.key == old.key) {
                update.after.push(MapWrite::DeleteInterface(old.key));
            }
        }
        for (id, _) in self.nexthops.iter() {
            update
                .before
                .push(MapWrite::Nexthop(id, self.nexthop_value(id)));
        }
        let mut cleared = Vec::new();
        for id in released {
            if self.nexthops.release(id) {
                cleared.push(MapWrite::Nexthop(id, Nexthop::default()));
            }
        }
        update.after.extend(self.still_free(cleared));
        self.forget_unused_sets();
        Ok(update)
    }

    /// Fresh route tables for everything in the RIB now, to be swapped in at once; with
    /// every next hop and group they use, so the update stands on its own.
    /// Every route as the route maps hold it (for building fresh tables).
    pub fn table_routes(&self) -> impl Iterator<Item = (IpNet, RouteEntry)> + '_ {
        self.fib.routes().map(|(prefix, entry)| (*prefix, *entry))
    }

    pub fn rebuild_tables(&mut self) -> Result<Update, crate::control::fib::FibFull> {
        let usable = self.usable_set();
        let tables = self
            .fib
            .rebuild(self.rib.best().map(|(p, _, a)| (p, a)), &|id| {
                usable.contains(&id)
            })?;
        let mut before: Vec<MapWrite> = self
            .nexthops
            .iter()
            .map(|(id, _)| MapWrite::Nexthop(id, self.nexthop_value(id)))
            .collect();
        before.extend(self.fib.group_writes());
        Ok(Update {
            before,
            tables,
            ..Update::default()
        })
    }

    /// A next hop the kernel must resolve has to be on one of its interface's subnets (when
    /// the interface has addresses to tell).
    fn check_on_link(&self, dev: &str, via: IpAddr) -> Result<(), String> {
        let Some(device) = self.topology.interface(dev).and_then(|i| i.device) else {
            return Ok(());
        };
        let subnets: Vec<&Address> = self.local.iter().filter(|a| a.ifindex == device).collect();
        if subnets.is_empty() || subnets.iter().any(|a| a.subnet().contains(&via)) {
            return Ok(());
        }
        Err(format!(
            "next hop {via} is not on a subnet of {dev} ({})",
            subnets
                .iter()
                .map(|a| format!("{}/{}", a.addr, a.prefix_len))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// A kernel route as the RIB takes it: through its gateways when each is on one of the
    /// router's interfaces (and on that interface's subnet), else handed to the kernel, which
    /// forwards by the same route.
    pub fn kernel_spec(&self, prefix: IpNet, target: &KernelTarget) -> RouteSpec {
        let target = match target {
            KernelTarget::Via(hops) if hops.len() <= config::MAX_ECMP_NEXTHOPS => hops
                .iter()
                .map(|&(ifindex, via)| {
                    let interface = self
                        .topology
                        .interfaces
                        .iter()
                        .find(|i| i.device == Some(ifindex) && i.entry.is_routed())?;
                    self.check_on_link(&interface.name, via).ok()?;
                    Some(Hop {
                        via,
                        dev: interface.name.clone(),
                    })
                })
                .collect::<Option<Vec<_>>>()
                .map_or(Target::Kernel, Target::Via),
            KernelTarget::Blackhole => Target::Blackhole,
            KernelTarget::Via(_) | KernelTarget::Direct(_) | KernelTarget::Kernel => Target::Kernel,
        };
        RouteSpec { prefix, target }
    }

    /// The clearing writes among `writes` whose next-hop id was not taken again meanwhile.
    fn still_free(&self, writes: Vec<MapWrite>) -> Vec<MapWrite> {
        writes
            .into_iter()
            .filter(|w| !matches!(w, MapWrite::Nexthop(id, _) if self.nexthops.get(*id).is_some()))
            .collect()
    }

    /// The shared next-hop set of `ids`.
    fn action(&mut self, mut ids: Vec<u32>) -> Action {
        ids.sort_unstable();
        ids.dedup();
        let set: NexthopSet = Arc::from(ids);
        if let Some(shared) = self.sets.get(&set) {
            return Action::Nexthops(shared.clone());
        }
        self.sets.insert(set.clone());
        Action::Nexthops(set)
    }

    fn forget_unused_sets(&mut self) {
        self.sets.retain(|set| Arc::strong_count(set) > 1);
    }

    /// Whether next hop `id` can take traffic: its MAC known and its interface up.
    pub fn usable(&self, id: u32) -> bool {
        let Some(entry) = self.nexthops.get(id) else {
            return false;
        };
        entry.mac().is_some() && self.interface_up(&entry.key.dev)
    }

    /// The next hops that can take traffic now.
    fn usable_set(&self) -> HashSet<u32> {
        self.nexthops
            .iter()
            .map(|(id, _)| id)
            .filter(|&id| self.usable(id))
            .collect()
    }

    fn interface_up(&self, dev: &str) -> bool {
        let Some(interface) = self.topology.interface(dev) else {
            return false;
        };
        let up = |ifindex: u32| self.links.get(&ifindex).is_some_and(|l| l.up);
        up(interface.key.ifindex) && interface.device.is_none_or(up)
    }

    /// `NEXTHOPS[id]` as it must be now.
    pub fn nexthop_value(&self, id: u32) -> Nexthop {
        let Some(entry) = self.nexthops.get(id) else {
            return Nexthop::default();
        };
        self.topology
            .nexthop(
                &entry.key.dev,
                entry.mac(),
                self.interface_up(&entry.key.dev),
            )
            .unwrap_or_default()
    }

    /// The ids of the config's `[[nexthop]]` entries.
    pub fn config_nexthop(&self, name: &str) -> Option<u32> {
        self.config_nexthops.get(name).copied()
    }

    // ---- Routes from the CLI (and any other source) -----------------------------------------

    /// Adds or replaces the routes of `specs` (with the line each came from, for errors) from
    /// `source`: all of them, or none when one is wrong.
    ///
    /// More than [`BULK_ROUTES`] at once are a bulk change: the writes leave the routes out,
    /// and the caller builds fresh tables from [`Router::table_routes`] instead. `progress`
    /// hears of the routes compiled now and then.
    pub fn set_routes(
        &mut self,
        specs: &[(usize, RouteSpec)],
        source: Source,
        mode: Mode,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<MapWrite>, String> {
        let mut seen: foldhash::HashMap<IpNet, usize> = foldhash::HashMap::default();
        seen.reserve(specs.len());
        let mut checked: foldhash::HashSet<(&str, IpAddr)> = foldhash::HashSet::default();
        let mut new_keys = BTreeSet::new();
        let mut v4 = 0usize;
        let mut v6 = 0usize;
        for (line, spec) in specs {
            let at = |message: String| {
                if *line > 0 {
                    format!("line {line}: route {}: {message}", spec.prefix)
                } else {
                    format!("route {}: {message}", spec.prefix)
                }
            };
            if let Some(first) = seen.insert(spec.prefix, *line) {
                return Err(at(if first > 0 {
                    format!("given twice (first on line {first})")
                } else {
                    "given twice".to_owned()
                }));
            }
            if mode == Mode::Add && self.rib.get(&spec.prefix, source).is_some() {
                return Err(at(format!(
                    "exists (from the {}); use `route replace` to change it",
                    source.name()
                )));
            }
            if self.rib.get(&spec.prefix, source).is_none() {
                match spec.prefix {
                    IpNet::V4(_) => v4 += 1,
                    IpNet::V6(_) => v6 += 1,
                }
            }
            if let Target::Via(hops) = &spec.target {
                if hops.len() > config::MAX_ECMP_NEXTHOPS {
                    return Err(at(format!(
                        "{} next hops; at most {} per route",
                        hops.len(),
                        config::MAX_ECMP_NEXTHOPS
                    )));
                }
                for hop in hops {
                    // A full table names a handful of next hops a million times: each is
                    // checked once.
                    if !checked.insert((hop.dev.as_str(), hop.via)) {
                        continue;
                    }
                    if self.topology.interface(&hop.dev).is_none() {
                        return Err(at(format!(
                            "dev {:?} is not one of the dataplane's interfaces ({})",
                            hop.dev,
                            self.topology
                                .interfaces
                                .iter()
                                .filter(|i| i.entry.is_routed())
                                .map(|i| i.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                    let key = hop_key(hop);
                    if self.nexthops.id(&key).is_none() {
                        self.check_on_link(&hop.dev, hop.via).map_err(at)?;
                        new_keys.insert(key);
                    }
                }
            }
        }
        let (have_v4, have_v6) = self.rib.best().fold((0, 0), |(a, b), (p, _, _)| match p {
            IpNet::V4(_) => (a + 1, b),
            IpNet::V6(_) => (a, b + 1),
        });
        if have_v4 + v4 > maps::MAX_ROUTES_V4 as usize
            || have_v6 + v6 > maps::MAX_ROUTES_V6 as usize
        {
            return Err(format!(
                "the tables would hold more than {} IPv4 or {} IPv6 routes",
                maps::MAX_ROUTES_V4,
                maps::MAX_ROUTES_V6
            ));
        }
        if self.nexthops.len() + new_keys.len() >= maps::MAX_NEXTHOPS as usize {
            return Err(format!("more than {} next hops", maps::MAX_NEXTHOPS - 1));
        }
        // ECMP groups run out only in the middle of a change, which must not happen: count
        // the groups it could create first (an upper bound: groups freed by replaced routes
        // are not counted back).
        let mut sets: foldhash::HashSet<Vec<(&str, IpAddr)>> = foldhash::HashSet::default();
        for (_, spec) in specs {
            if let Target::Via(hops) = &spec.target
                && hops.len() > 1
            {
                let mut set: Vec<(&str, IpAddr)> =
                    hops.iter().map(|h| (h.dev.as_str(), h.via)).collect();
                set.sort_unstable();
                sets.insert(set);
            }
        }
        let new_groups = sets
            .iter()
            .filter(|set| {
                let ids: Option<Vec<u32>> = set
                    .iter()
                    .map(|&(dev, via)| {
                        self.nexthops.id(&NexthopKey {
                            dev: dev.to_owned(),
                            neighbour: Neighbour::Via(via),
                        })
                    })
                    .collect();
                ids.is_none_or(|mut ids| {
                    ids.sort_unstable();
                    !self.fib.has_group(&ids)
                })
            })
            .count();
        if self.fib.groups() + new_groups > maps::MAX_NEXTHOP_GROUPS as usize {
            return Err(format!(
                "more than {} distinct ECMP next-hop sets",
                maps::MAX_NEXTHOP_GROUPS
            ));
        }

        let mut writes = Vec::new();
        let mut after = Vec::new();
        self.rib.reserve(specs.len());
        self.fib.reserve(specs.len());
        let bulk = specs.len() > BULK_ROUTES;
        // Next hops taking traffic; one created here joins when it already can (static MAC).
        let mut usable = self.usable_set();
        let mut ids_of: foldhash::HashMap<(&str, IpAddr), u32> = foldhash::HashMap::default();
        let mut single: foldhash::HashMap<u32, Action> = foldhash::HashMap::default();
        for (i, (_, spec)) in specs.iter().enumerate() {
            if i % 16_384 == 0 {
                progress(i);
            }
            let action = match &spec.target {
                Target::Via(hops) => {
                    // A single next hop seen before: its shared action, no allocation.
                    if let [hop] = hops.as_slice()
                        && let Some(&id) = ids_of.get(&(hop.dev.as_str(), hop.via))
                        && let Some(action) = single.get(&id)
                    {
                        self.nexthops.hold(id);
                        action.clone()
                    } else {
                        let mut ids = Vec::with_capacity(hops.len());
                        for hop in hops {
                            if let Some(&id) = ids_of.get(&(hop.dev.as_str(), hop.via)) {
                                self.nexthops.hold(id);
                                ids.push(id);
                                continue;
                            }
                            let key = hop_key(hop);
                            let new = self.nexthops.id(&key).is_none();
                            let id = self.nexthops.acquire(&key, None).expect("room checked");
                            if new {
                                writes.push(MapWrite::Nexthop(id, self.nexthop_value(id)));
                                if self.usable(id) {
                                    usable.insert(id);
                                }
                            }
                            ids_of.insert((hop.dev.as_str(), hop.via), id);
                            ids.push(id);
                        }
                        let action = self.action(ids);
                        if let [id] = action.nexthops() {
                            single.insert(*id, action.clone());
                        }
                        action
                    }
                }
                Target::Blackhole => Action::Blackhole,
                Target::Kernel => Action::Kernel,
            };
            let (replaced, change) = self.rib.insert(spec.prefix, source, action);
            if let Some(change) = change {
                let usable = |id| usable.contains(&id);
                let compiled = if bulk {
                    self.fib.apply_for_rebuild(&change, &usable, &mut writes)
                } else {
                    self.fib.apply(&change, &usable, &mut writes)
                };
                compiled.map_err(|err| err.to_string())?;
            }
            for id in replaced.iter().flat_map(|a| a.nexthops().to_vec()) {
                if self.nexthops.release(id) {
                    after.push(MapWrite::Nexthop(id, Nexthop::default()));
                }
            }
        }
        self.forget_unused_sets();
        writes.extend(self.still_free(after));
        Ok(writes)
    }

    /// Makes `specs` all the routes of `source`: sets them, and removes the source's routes
    /// for other prefixes; all or nothing. The writes, and how many routes went. The caller
    /// builds fresh tables from [`Router::table_routes`] (the writes may leave routes out).
    pub fn replace_routes(
        &mut self,
        specs: &[(usize, RouteSpec)],
        source: Source,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(Vec<MapWrite>, usize), String> {
        let keep: foldhash::HashSet<IpNet> = specs.iter().map(|(_, spec)| spec.prefix).collect();
        let gone: Vec<IpNet> = self
            .rib
            .prefixes_of(source)
            .into_iter()
            .filter(|prefix| !keep.contains(prefix))
            .collect();
        // Checked in full before anything changes; removing routes the source has cannot fail.
        let mut writes = self.set_routes(specs, source, Mode::Replace, progress)?;
        writes.extend(self.remove_routes(&gone, source)?);
        Ok((writes, gone.len()))
    }

    /// Removes the routes for `prefixes` from `source`: all, or none when one has no such
    /// route.
    pub fn remove_routes(
        &mut self,
        prefixes: &[IpNet],
        source: Source,
    ) -> Result<Vec<MapWrite>, String> {
        for prefix in prefixes {
            if self.rib.get(prefix, source).is_none() {
                let others: Vec<&str> = self
                    .rib
                    .routes(prefix)
                    .iter()
                    .map(|(s, _)| s.name())
                    .collect();
                return Err(if others.is_empty() {
                    format!("route {prefix}: no such route")
                } else {
                    format!(
                        "route {prefix}: no route from the {} (it has one from the {}, which \
                         changes only with its source)",
                        source.name(),
                        others.join(" and ")
                    )
                });
            }
        }
        let mut writes = Vec::new();
        let mut after = Vec::new();
        let usable = self.usable_set();
        for prefix in prefixes {
            let (removed, change) = self.rib.remove(*prefix, source);
            if let Some(change) = change {
                self.fib
                    .apply(&change, &|id| usable.contains(&id), &mut writes)
                    .map_err(|err| err.to_string())?;
            }
            for id in removed.iter().flat_map(|a| a.nexthops().to_vec()) {
                if self.nexthops.release(id) {
                    after.push(MapWrite::Nexthop(id, Nexthop::default()));
                }
            }
        }
        self.forget_unused_sets();
        writes.extend(self.still_free(after));
        Ok(writes)
    }

    /// The routes from `source`, as route specs (for `config save`).
    pub fn specs(&self, source: Source) -> Vec<RouteSpec> {
        let mut specs: Vec<RouteSpec> = self
            .rib
            .all()
            .filter(|(_, s, _)| *s == source)
            .filter_map(|(prefix, _, action)| self.spec(prefix, action))
            .collect();
        specs.sort_by_key(|a| a.prefix);
        specs
    }

    fn spec(&self, prefix: IpNet, action: &Action) -> Option<RouteSpec> {
        let target = match action {
            Action::Nexthops(ids) => {
                let mut hops = Vec::new();
                for id in ids.iter() {
                    let entry = self.nexthops.get(*id)?;
                    hops.push(Hop {
                        via: entry.via()?,
                        dev: entry.key.dev.clone(),
                    });
                }
                Target::Via(hops)
            }
            Action::Blackhole => Target::Blackhole,
            Action::Kernel => Target::Kernel,
            Action::Local => return None,
        };
        Some(RouteSpec { prefix, target })
    }

    /// Every route, or those of `source`, sorted by prefix then preference.
    pub fn list(&self, source: Option<Source>) -> Vec<RouteInfo> {
        let mut list: Vec<RouteInfo> = self
            .rib
            .all()
            .filter(|(_, s, _)| source.is_none_or(|want| *s == want))
            .map(|(prefix, s, action)| self.info(prefix, s, action))
            .collect();
        list.sort_by_key(|a| (a.prefix, a.source));
        list
    }

    /// The route the dataplane uses for `addr`: longest prefix, best source.
    pub fn get(&self, addr: IpAddr) -> Option<RouteInfo> {
        let (prefix, routes) = self.rib.lookup(addr)?;
        let (source, action) = &routes[0];
        Some(self.info(prefix, *source, action))
    }

    fn info(&self, prefix: IpNet, source: Source, action: &Action) -> RouteInfo {
        let selected = self
            .rib
            .routes(&prefix)
            .first()
            .is_some_and(|(s, _)| *s == source);
        let nexthops: Vec<NexthopInfo> = action
            .nexthops()
            .iter()
            .filter_map(|&id| {
                let entry = self.nexthops.get(id)?;
                Some(NexthopInfo {
                    id,
                    dev: entry.key.dev.clone(),
                    via: entry.via(),
                    mac: entry.mac().map(|m| m.to_string()),
                    state: if !self.interface_up(&entry.key.dev) {
                        "link down"
                    } else if entry.mac().is_some() {
                        "reachable"
                    } else {
                        "unresolved"
                    }
                    .to_owned(),
                })
            })
            .collect();
        let target = match action {
            Action::Nexthops(_) => nexthops
                .iter()
                .map(|n| match (n.via, &n.mac) {
                    (Some(via), _) => format!("via {via} dev {}", n.dev),
                    (None, Some(mac)) => format!("lladdr {mac} dev {}", n.dev),
                    (None, None) => format!("dev {}", n.dev),
                })
                .collect::<Vec<_>>()
                .join(" "),
            Action::Blackhole => "blackhole".to_owned(),
            Action::Kernel => "kernel".to_owned(),
            Action::Local => "local".to_owned(),
        };
        RouteInfo {
            prefix,
            source,
            selected,
            target,
            nexthops,
        }
    }

    // ---- What the host says -----------------------------------------------------------------

    /// An interface got `address`: packets to it go to the kernel. Idempotent.
    pub fn local_address_added(&mut self, address: Address) -> Vec<MapWrite> {
        if !self.local.insert(address) {
            return Vec::new();
        }
        let (_, change) = self
            .rib
            .insert(IpNet::from(address.addr), Source::Local, Action::Local);
        let mut writes = self.compile(change);
        writes.extend(self.acl_writes());
        writes
    }

    /// An interface lost `address`; when no interface carries it any more, other routes for
    /// that address (if any) come back. Idempotent.
    pub fn local_address_removed(&mut self, address: Address) -> Vec<MapWrite> {
        if !self.local.remove(&address) || self.local.iter().any(|a| a.addr == address.addr) {
            return Vec::new();
        }
        let (_, change) = self.rib.remove(IpNet::from(address.addr), Source::Local);
        let mut writes = self.compile(change);
        writes.extend(self.acl_writes());
        writes
    }

    /// Makes the local addresses exactly `addresses` (after a fresh dump).
    pub fn set_local_addresses(&mut self, addresses: &[Address]) -> Vec<MapWrite> {
        let wanted: BTreeSet<Address> = addresses.iter().copied().collect();
        let gone: Vec<Address> = self.local.difference(&wanted).copied().collect();
        let mut writes = Vec::new();
        for address in gone {
            writes.extend(self.local_address_removed(address));
        }
        for address in wanted {
            writes.extend(self.local_address_added(address));
        }
        writes
    }

    /// [`Router::set_local_addresses`] in the RIB only, before a rebuild.
    fn set_local_addresses_in_rib(&mut self, addresses: &[Address]) {
        for address in std::mem::take(&mut self.local) {
            self.rib.remove(IpNet::from(address.addr), Source::Local);
        }
        for address in addresses {
            self.local.insert(*address);
            self.rib
                .insert(IpNet::from(address.addr), Source::Local, Action::Local);
        }
    }

    fn compile(&mut self, change: Option<crate::control::rib::Change>) -> Vec<MapWrite> {
        let mut writes = Vec::new();
        if let Some(change) = change {
            // Local routes need no ECMP group, nor do routes that fall back to one in use:
            // compiling them cannot fail.
            let usable = self.usable_set();
            self.fib
                .apply(&change, &|id| usable.contains(&id), &mut writes)
                .expect("local routes use no new ECMP group");
        }
        writes
    }

    /// The map writes that bring the ACL maps to the rules now (the martian rules follow
    /// the router's own addresses, rules with a `dev` its interfaces): hit counters of new
    /// rules zeroed, new and changed entries set, then the ones that went deleted.
    fn acl_writes(&mut self) -> Vec<MapWrite> {
        let martians = Acl::martian_rules(self.martian_sources, &self.local_addresses());
        if let Err(err) = self.acl.set(Origin::Martian, &martians) {
            log::warn!("source checks: {err}; the router's own addresses are not all checked");
        }
        let entries = self.acl.compile(&self.topology);
        let mut writes: Vec<MapWrite> = self
            .acl
            .take_fresh()
            .into_iter()
            .map(MapWrite::ResetAclHits)
            .collect();
        for (key, entry) in &entries {
            if self.acl_installed.get(key) != Some(entry) {
                writes.push(MapWrite::Acl(*key, *entry));
            }
        }
        for key in self.acl_installed.keys() {
            if !entries.contains_key(key) {
                writes.push(MapWrite::DeleteAcl(*key));
            }
        }
        self.acl_installed = entries;
        writes
    }

    /// The ACL's rules.
    pub fn acl_rules(&self) -> impl Iterator<Item = (u32, &DenyRule, Origin)> {
        self.acl.rules()
    }

    /// Adds the CLI's deny `rule`, refused when its `dev` is not one of the interfaces or the
    /// maps would overflow.
    pub fn acl_add(&mut self, rule: DenyRule) -> Result<Vec<MapWrite>, String> {
        if let Some(dev) = &rule.dev
            && self.topology.interface(dev).is_none()
        {
            return Err(format!(
                "{rule}: dev {dev:?} is not one of the interfaces ({})",
                self.topology
                    .interfaces
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mut acl = self.acl.clone();
        acl.add(rule.clone(), Origin::Cli)?;
        acl::check_room(&acl.compile(&self.topology)).map_err(|err| format!("{rule}: {err}"))?;
        self.acl = acl;
        Ok(self.acl_writes())
    }

    /// Deletes the CLI's deny `rule`.
    pub fn acl_remove(&mut self, rule: &DenyRule) -> Result<Vec<MapWrite>, String> {
        self.acl.remove(rule)?;
        Ok(self.acl_writes())
    }

    /// The router's own addresses.
    pub fn local_addresses(&self) -> BTreeSet<IpAddr> {
        self.local.iter().map(|a| a.addr).collect()
    }

    /// A host interface appeared or changed: its state, MAC or MTU. Next hops and groups on it
    /// follow.
    pub fn link_changed(&mut self, link: Link) -> Vec<MapWrite> {
        let ifindex = link.ifindex;
        let before = self.links.insert(ifindex, link.clone());
        if before.as_ref() == Some(&link) {
            return Vec::new();
        }
        let mut writes = Vec::new();
        for interface in &mut self.topology.interfaces {
            if interface.device == Some(ifindex) {
                if interface.entry.mac != link.mac.0 || interface.mtu != link.mtu {
                    interface.entry.mac = link.mac.0;
                    interface.mtu = link.mtu;
                    writes.push(MapWrite::Interface(interface.key, interface.entry));
                }
            } else if interface.key.ifindex == ifindex && interface.device.is_none() {
                // A VLAN defined in the config rides on its port's MAC and MTU.
                if interface.entry.mac != link.mac.0 || interface.mtu != link.mtu {
                    interface.entry.mac = link.mac.0;
                    interface.mtu = link.mtu;
                    writes.push(MapWrite::Interface(interface.key, interface.entry));
                }
            }
        }
        writes.extend(self.nexthops_on(ifindex));
        writes
    }

    /// `link` carries the name of one of the router's ports or interface devices under
    /// another ifindex: deleted and created again.
    pub fn recreated(&self, link: &Link) -> bool {
        self.topology
            .ports
            .iter()
            .any(|p| p.name == link.name && p.ifindex != link.ifindex)
            || self
                .topology
                .interfaces
                .iter()
                .any(|i| i.name == link.name && i.device.is_some_and(|d| d != link.ifindex))
    }

    /// A host interface is gone: its next hops cannot take traffic.
    pub fn link_removed(&mut self, ifindex: u32) -> Vec<MapWrite> {
        if self.links.remove(&ifindex).is_none() {
            return Vec::new();
        }
        self.nexthops_on(ifindex)
    }

    /// The kernel's neighbour table says `addr` on interface `ifindex` has `mac` (`None`: no
    /// usable entry).
    pub fn neighbour(&mut self, ifindex: u32, addr: IpAddr, mac: Option<MacAddr>) -> Vec<MapWrite> {
        let devs: Vec<String> = self
            .topology
            .interfaces
            .iter()
            .filter(|i| i.device == Some(ifindex))
            .map(|i| i.name.clone())
            .collect();
        let mut changed = Vec::new();
        for dev in devs {
            changed.extend(self.nexthops.learned(&dev, addr, mac));
        }
        if changed.is_empty() {
            return Vec::new();
        }
        self.nexthop_writes(changed)
    }

    /// The next hops whose neighbour the kernel resolves (no static MAC): (ifindex, address).
    pub fn kernel_neighbours(&self) -> Vec<(u32, IpAddr)> {
        self.nexthops
            .iter()
            .filter(|(_, entry)| entry.static_mac.is_none())
            .filter_map(|(_, entry)| {
                let device = self.topology.interface(&entry.key.dev)?.device?;
                Some((device, entry.via()?))
            })
            .collect()
    }

    /// Next hops over `ifindex` rewritten, and the groups refreshed.
    fn nexthops_on(&mut self, ifindex: u32) -> Vec<MapWrite> {
        let devs: HashSet<String> = self
            .topology
            .interfaces_on(ifindex)
            .map(|i| i.name.clone())
            .collect();
        let ids: Vec<u32> = self
            .nexthops
            .iter()
            .filter(|(_, entry)| devs.contains(&entry.key.dev))
            .map(|(id, _)| id)
            .collect();
        self.nexthop_writes(ids)
    }

    fn nexthop_writes(&mut self, ids: Vec<u32>) -> Vec<MapWrite> {
        let mut writes: Vec<MapWrite> = ids
            .into_iter()
            .map(|id| MapWrite::Nexthop(id, self.nexthop_value(id)))
            .collect();
        let usable = self.usable_set();
        writes.extend(self.fib.refresh_groups(&|id| usable.contains(&id)));
        writes
    }

    /// The ids an adopted dataplane held are in no table any more: free for use.
    pub fn forget_adopted(&mut self) -> (Vec<u32>, Vec<u32>) {
        (self.nexthops.unreserve(), self.fib.unreserve_groups())
    }

    /// Routes of each family in the FIB.
    pub fn route_counts(&self) -> (usize, usize) {
        self.fib
            .routes()
            .fold((0, 0), |(v4, v6), (prefix, _)| match prefix {
                IpNet::V4(_) => (v4 + 1, v6),
                IpNet::V6(_) => (v4, v6 + 1),
            })
    }

    /// What the FIB says for `prefix`, decoded.
    pub fn compiled(&self, prefix: &IpNet) -> Option<Route> {
        self.fib.get(prefix).map(|entry| entry.target.decode())
    }

    /// The interface keys the topology maps.
    pub fn interface_keys(&self) -> Vec<InterfaceKey> {
        self.topology.interfaces.iter().map(|i| i.key).collect()
    }
}

/// Writes that clear next hops and groups no table uses any more.
pub fn clear_ids(
    nexthops: impl Iterator<Item = u32>,
    groups: impl Iterator<Item = u32>,
) -> Vec<MapWrite> {
    nexthops
        .map(|id| MapWrite::Nexthop(id, Nexthop::default()))
        .chain(groups.map(|id| MapWrite::Group(id, Box::default())))
        .collect()
}

fn hop_key(hop: &Hop) -> NexthopKey {
    NexthopKey {
        dev: hop.dev.clone(),
        neighbour: Neighbour::Via(hop.via),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Link;

    fn link(ifindex: u32, name: &str) -> Link {
        Link {
            ifindex,
            name: name.to_owned(),
            mac: MacAddr([2, 0, 0, 0, 0, ifindex as u8]),
            mtu: 1500,
            up: true,
            vlan: None,
        }
    }

    fn host() -> Host {
        Host {
            links: vec![link(7, "ra"), link(9, "rb"), link(11, "rc")],
            addresses: vec![
                Address {
                    ifindex: 9,
                    addr: "198.18.2.1".parse().unwrap(),
                    prefix_len: 24,
                },
                Address {
                    ifindex: 9,
                    addr: "2001:2:0:2::1".parse().unwrap(),
                    prefix_len: 64,
                },
            ],
        }
    }

    const CONFIG: &str = r#"
[[interface]]
name = "ra"
[[interface]]
name = "rb"
[[interface]]
name = "rc"
[[nexthop]]
name = "b"
dev = "rb"
via = "198.18.2.2"
lladdr = "02:00:00:00:00:bb"
[[nexthop]]
name = "c"
dev = "rc"
via = "198.18.3.2"
[[route]]
prefix = "198.18.2.0/24"
nexthop = "b"
[[route]]
prefix = "198.18.2.1/32"
type = "blackhole"
[[route]]
prefix = "2001:2:0:9::/64"
nexthop = ["b", "c"]
"#;

    fn start(text: &str) -> (Router, Update) {
        let config = Config::parse("t.toml", text).unwrap();
        Router::start(&config, "t.toml", &host()).unwrap()
    }

    fn routes(update: &Update) -> Vec<(String, Route)> {
        let mut routes: Vec<(String, Route)> = update
            .tables
            .iter()
            .filter_map(|w| match w {
                MapWrite::Route(p, e) => Some((p.to_string(), e.target.decode())),
                _ => None,
            })
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        routes
    }

    #[test]
    fn starts_with_routes_local_addresses_and_resolution_state() {
        let (router, update) = start(CONFIG);
        let (b, c) = (
            router.config_nexthop("b").unwrap(),
            router.config_nexthop("c").unwrap(),
        );
        assert_eq!((b, c), (1, 2), "ids start at 1");
        assert_eq!(
            routes(&update),
            [
                ("198.18.2.0/24".to_owned(), Route::Nexthop(b)),
                ("198.18.2.1/32".to_owned(), Route::Local),
                ("2001:2:0:2::1/128".to_owned(), Route::Local),
                ("2001:2:0:9::/64".to_owned(), Route::Group(0)),
            ]
        );
        assert!(router.usable(b), "static MAC, link up");
        assert!(!router.usable(c), "nothing learned yet");
        assert_eq!(
            router.kernel_neighbours(),
            [(11, "198.18.3.2".parse().unwrap())]
        );
        // The group puts everything on b while c is unresolved.
        let group = update.tables.iter().find_map(|w| match w {
            MapWrite::Group(0, g) => Some(g.buckets),
            _ => None,
        });
        assert!(group.unwrap().iter().all(|&id| id == b));
        assert!(update.before.contains(&MapWrite::Port(0, 7)));
        assert_eq!(update.ports_added.len(), 3);
    }

    #[test]
    fn neighbours_and_links_move_traffic() {
        let (mut router, _) = start(CONFIG);
        let (b, c) = (
            router.config_nexthop("b").unwrap(),
            router.config_nexthop("c").unwrap(),
        );
        let mac = MacAddr([2, 0, 0, 0, 0, 0xcc]);
        let writes = router.neighbour(11, "198.18.3.2".parse().unwrap(), Some(mac));
        let value = router.nexthop_value(c);
        assert!(value.is_resolved());
        assert_eq!(value.dst_mac, mac.0);
        assert_eq!(writes[0], MapWrite::Nexthop(c, value));
        let MapWrite::Group(0, group) = &writes[1] else {
            panic!("{writes:?}")
        };
        assert!(group.buckets.contains(&b) && group.buckets.contains(&c));

        // rb goes down: b is unusable, its buckets go to c.
        let down = Link {
            up: false,
            ..link(9, "rb")
        };
        let writes = router.link_changed(down);
        assert!(!router.nexthop_value(b).is_resolved());
        let MapWrite::Group(0, group) = writes.last().unwrap() else {
            panic!("{writes:?}")
        };
        assert!(group.buckets.iter().all(|&id| id == c));
        // Back up: back in.
        let writes = router.link_changed(link(9, "rb"));
        let MapWrite::Group(0, group) = writes.last().unwrap() else {
            panic!("{writes:?}")
        };
        assert!(group.buckets.contains(&b));
    }

    #[test]
    fn cli_routes_are_all_or_nothing_and_share_next_hops() {
        let (mut router, _) = start(CONFIG);
        let spec = |line: &str| (0, RouteSpec::parse(line).unwrap());
        let writes = router
            .set_routes(
                &[
                    spec("198.18.7.0/24 via 198.18.2.2 dev rb"),
                    spec("198.18.8.0/24 via 198.18.12.2 dev rc"),
                ],
                Source::Cli,
                Mode::Add,
                &mut |_| {},
            )
            .unwrap();
        // 198.18.2.2 on rb is config next hop b; 198.18.12.2 is new.
        let b = router.config_nexthop("b").unwrap();
        assert_eq!(
            router.compiled(&"198.18.7.0/24".parse().unwrap()),
            Some(Route::Nexthop(b))
        );
        // The new next hop is written before the route that uses it.
        let nexthop_at = writes
            .iter()
            .position(|w| matches!(w, MapWrite::Nexthop(3, _)));
        let route_at = writes
            .iter()
            .position(|w| matches!(w, MapWrite::Route(p, _) if p.to_string() == "198.18.8.0/24"));
        assert!(nexthop_at.unwrap() < route_at.unwrap(), "{writes:?}");

        let err = router
            .set_routes(
                &[
                    spec("198.18.9.0/24 blackhole"),
                    (7, RouteSpec::parse("198.18.7.0/24 blackhole").unwrap()),
                ],
                Source::Cli,
                Mode::Add,
                &mut |_| {},
            )
            .unwrap_err();
        assert_eq!(
            err,
            "line 7: route 198.18.7.0/24: exists (from the cli); use `route replace` to change it"
        );
        assert!(
            router
                .rib
                .get(&"198.18.9.0/24".parse().unwrap(), Source::Cli)
                .is_none(),
            "nothing applied"
        );
        let err = router
            .set_routes(
                &[spec("198.18.9.0/24 via 198.18.2.2 dev eth9")],
                Source::Cli,
                Mode::Add,
                &mut |_| {},
            )
            .unwrap_err();
        assert_eq!(
            err,
            "route 198.18.9.0/24: dev \"eth9\" is not one of the dataplane's interfaces (ra, rb, rc)"
        );

        // A CLI route wins over the config's for the same prefix, and the config's comes back.
        router
            .set_routes(
                &[spec("198.18.2.0/24 blackhole")],
                Source::Cli,
                Mode::Replace,
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(
            router.compiled(&"198.18.2.0/24".parse().unwrap()),
            Some(Route::Blackhole)
        );
        router
            .remove_routes(&["198.18.2.0/24".parse().unwrap()], Source::Cli)
            .unwrap();
        assert_eq!(
            router.compiled(&"198.18.2.0/24".parse().unwrap()),
            Some(Route::Nexthop(b))
        );
        let err = router
            .remove_routes(&["198.18.2.0/24".parse().unwrap()], Source::Cli)
            .unwrap_err();
        assert_eq!(
            err,
            "route 198.18.2.0/24: no route from the cli (it has one from the config, which changes only with its source)"
        );

        // The new next hop goes away with its last route, and its entry is cleared.
        let writes = router
            .remove_routes(&["198.18.8.0/24".parse().unwrap()], Source::Cli)
            .unwrap();
        assert_eq!(
            writes.last(),
            Some(&MapWrite::Nexthop(3, Nexthop::default()))
        );
        assert_eq!(
            router
                .specs(Source::Cli)
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            ["198.18.7.0/24 via 198.18.2.2 dev rb"]
        );
    }

    #[test]
    fn a_new_config_is_applied_whole_or_not_at_all() {
        let (mut router, _) = start(CONFIG);
        router
            .set_routes(
                &[(
                    0,
                    RouteSpec::parse("198.18.7.0/24 via 198.18.3.9 dev rc").unwrap(),
                )],
                Source::Cli,
                Mode::Add,
                &mut |_| {},
            )
            .unwrap();
        // rc leaves the config, but a CLI route uses it: refused, nothing changes.
        let without_rc = CONFIG
            .replace("[[interface]]\nname = \"rc\"\n", "")
            .replace(
                "[[nexthop]]\nname = \"c\"\ndev = \"rc\"\nvia = \"198.18.3.2\"\n",
                "",
            )
            .replace("nexthop = [\"b\", \"c\"]", "nexthop = \"b\"");
        let config = Config::parse("t.toml", &without_rc).unwrap();
        let err = router
            .apply_config(&config, "t.toml", &host())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("interface \"rc\" is gone from the config but route 198.18.7.0/24"),
            "{err}"
        );
        assert_eq!(router.topology.interfaces.len(), 3);

        // A config that moves 198.18.2.0/24 to c, and drops the IPv6 ECMP route.
        let changed = CONFIG
            .replace(
                "prefix = \"198.18.2.0/24\"\nnexthop = \"b\"",
                "prefix = \"198.18.2.0/24\"\nnexthop = \"c\"",
            )
            .replace(
                "[[route]]\nprefix = \"2001:2:0:9::/64\"\nnexthop = [\"b\", \"c\"]\n",
                "",
            );
        let config = Config::parse("t.toml", &changed).unwrap();
        let update = router.apply_config(&config, "t.toml", &host()).unwrap();
        let c = router.config_nexthop("c").unwrap();
        assert!(routes(&update).contains(&("198.18.2.0/24".to_owned(), Route::Nexthop(c))));
        assert!(!routes(&update).iter().any(|(p, _)| p == "2001:2:0:9::/64"));
        assert_eq!(router.fib.groups(), 0, "the group went with its last route");
        assert!(
            router
                .rib
                .get(&"198.18.7.0/24".parse().unwrap(), Source::Cli)
                .is_some(),
            "CLI routes stay"
        );
        assert!(update.ports_added.is_empty() && update.ports_removed.is_empty());
    }
}
