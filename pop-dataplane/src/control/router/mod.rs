//! The router's state: topology, next hops, the RIB and the FIB compiled from it, and what the
//! host says (addresses, link states, neighbours). The daemon owns one; every change it makes
//! comes out as map writes, in an order that is safe for packets in flight.
//!
//! - [`config`]: moving to a config, whole or not at all.
//! - [`routes`]: routes from the CLI, route files and the kernel; route queries.
//! - [`host`]: the host's addresses, links and neighbours; the source filter's rules.

mod config;
mod flows;
mod host;
mod routes;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use pop_dataplane_common::{Nexthop, RouteEntry, maps};
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, ConfigError, MAX_ECMP_NEXTHOPS},
    control::{
        acl::{Acl, AclEntries},
        fib::{Fib, FibFull},
        nexthops::{NamedNexthop, Neighbour, Nexthops},
        plan::{Adopted, MapWrite, Update},
        rib::{Action, NexthopSet, Rib, Source},
        topology::{NamedInterface, Topology},
        vrf::{VrfId, Vrfs},
    },
    host::{Address, Host, Link},
};

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
    /// The VRF's name (`default` for the default VRF).
    pub vrf: String,
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
    pub state: NexthopState,
}

/// Whether a next hop can take traffic, as `route list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NexthopState {
    /// Its neighbour resolved, its link up.
    #[serde(rename = "reachable")]
    Reachable,
    #[serde(rename = "unresolved")]
    Unresolved,
    #[serde(rename = "link down")]
    LinkDown,
}

impl std::fmt::Display for NexthopState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Reachable => "reachable",
            Self::Unresolved => "unresolved",
            Self::LinkDown => "link down",
        })
    }
}

/// Why a route change was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Something wrong with one route: from `line` of a file (0: from no file).
    #[error("{}route {prefix}: {problem}", LineNumber(*.line))]
    Route {
        line: usize,
        prefix: IpNet,
        problem: RouteProblem,
    },
    #[error(
        "{v4} IPv4 and {v6} IPv6 routes; at most {} and {} are supported",
        maps::MAX_ROUTES_V4,
        maps::MAX_ROUTES_V6
    )]
    TablesFull { v4: usize, v6: usize },
    #[error("more than {} next hops", maps::MAX_NEXTHOPS - 1)]
    TooManyNexthops,
    #[error("more than {} distinct ECMP next-hop sets", maps::MAX_NEXTHOP_GROUPS)]
    TooManyGroups,
    #[error(transparent)]
    Fib(#[from] FibFull),
}

impl RouteError {
    /// The error about a route read from `file`, as `FILE:LINE: ...` like the route-file
    /// parser's.
    pub fn in_file(&self, file: &str) -> String {
        match self {
            Self::Route {
                line,
                prefix,
                problem,
            } if *line > 0 => format!("{file}:{line}: route {prefix}: {problem}"),
            other => format!("{file}: {other}"),
        }
    }
}

/// `line N: ` before an error about line N of a file; nothing for a route from no file.
struct LineNumber(usize);

impl std::fmt::Display for LineNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => Ok(()),
            line => write!(f, "line {line}: "),
        }
    }
}

/// What is wrong with one route.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteProblem {
    #[error("given twice (first on line {0})")]
    GivenTwiceAt(usize),
    #[error("given twice")]
    GivenTwice,
    #[error("exists (from the {}); use `route replace` to change it", .0.name())]
    Exists(Source),
    #[error("{0} next hops; at most {MAX_ECMP_NEXTHOPS} per route")]
    TooManyHops(usize),
    #[error("dev {dev:?} is not one of the dataplane's interfaces ({interfaces})")]
    UnknownDev { dev: String, interfaces: String },
    #[error("next hop {via} is not on a subnet of {dev} ({subnets})")]
    NotOnLink {
        via: IpAddr,
        dev: String,
        subnets: String,
    },
    #[error("no such route")]
    NoSuchRoute,
    #[error("vrf {vrf:?} is not one of the VRFs ({known})")]
    UnknownVrf { vrf: String, known: String },
    #[error(
        "no route from the {} (it has one from the {others}, which changes only with its source)",
        .from.name()
    )]
    OtherSource { from: Source, others: String },
}

pub struct Router {
    topology: Topology,
    /// The VRFs besides the default one, by name, with their ids.
    vrfs: Vrfs,
    nexthops: Nexthops,
    rib: Rib,
    fib: Fib,
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
    /// Flow rules, and what their maps hold.
    flows: crate::control::flow::Flows,
    flows_installed: flows::FlowsInstalled,
}

impl Router {
    /// An empty router over `host`'s interfaces; with `adopted`, it avoids the ids and slots
    /// a running dataplane uses until its tables are replaced.
    pub fn new(host: &Host, adopted: Adopted, names: &[NamedInterface]) -> Self {
        Self {
            topology: Topology::adopted(&adopted.interfaces, &adopted.ports, names, host),
            vrfs: Vrfs::default(),
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
            flows: crate::control::flow::Flows::default(),
            flows_installed: flows::FlowsInstalled::adopted(&adopted.flow_lists, adopted.flow_bank),
        }
    }

    /// A router running `config` on `host`, and the update that installs it.
    pub fn start(config: &Config, file: &str, host: &Host) -> Result<(Self, Update), ConfigError> {
        let mut router = Self::new(host, Adopted::default(), &[]);
        let update = router.apply_config(config, file, host)?;
        Ok((router, update))
    }

    /// Every route of every VRF as the route maps hold it (for building fresh tables).
    pub fn table_routes(&self) -> impl Iterator<Item = (VrfId, IpNet, RouteEntry)> + '_ {
        self.fib.routes()
    }

    /// Fresh route tables for everything in the RIB now, to be swapped in at once; with
    /// every next hop and group they use, so the update stands on its own.
    pub fn rebuild_tables(&mut self) -> Result<Update, FibFull> {
        let usable = self.usable_set();
        let tables = self
            .fib
            .rebuild(self.rib.best().map(|(v, p, _, a)| (v, p, a)), &|id| {
                usable.contains(&id)
            })?;
        let mut before: Vec<MapWrite> = self
            .nexthop_values()
            .map(|(id, nexthop)| MapWrite::Nexthop(id, nexthop))
            .collect();
        before.extend(self.fib.group_writes());
        Ok(Update {
            before,
            tables,
            ..Update::default()
        })
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
    #[cfg(test)]
    fn config_nexthop(&self, name: &str) -> Option<u32> {
        self.config_nexthops.get(name).copied()
    }

    /// The interfaces and ports the router runs on.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Next hops in use.
    pub fn nexthop_count(&self) -> usize {
        self.nexthops.len()
    }

    /// Next hops in use that cannot take traffic now (neighbour unresolved or link down).
    pub fn unusable_nexthops(&self) -> usize {
        self.nexthops
            .iter()
            .filter(|(id, _)| !self.usable(*id))
            .count()
    }

    /// Every next hop in use: (id, `NEXTHOPS[id]` as it must be now).
    pub fn nexthop_values(&self) -> impl Iterator<Item = (u32, Nexthop)> + '_ {
        self.nexthops
            .iter()
            .map(|(id, _)| (id, self.nexthop_value(id)))
    }

    /// Every next hop in use, named (see [`NamedNexthop`]).
    pub(crate) fn nexthop_names(&self) -> Vec<NamedNexthop> {
        let names: HashMap<u32, &str> = self
            .config_nexthops
            .iter()
            .map(|(name, &id)| (id, name.as_str()))
            .collect();
        self.nexthops
            .iter()
            .map(|(id, entry)| {
                let configured = names.get(&id);
                let name = match (configured, entry.key.neighbour) {
                    (Some(name), _) => (*name).to_owned(),
                    (None, Neighbour::Via(addr)) => addr.to_string(),
                    (None, Neighbour::Mac(mac)) => mac.to_string(),
                };
                NamedNexthop {
                    id,
                    name,
                    dev: entry.key.dev.clone(),
                    configured: configured.is_some(),
                }
            })
            .collect()
    }

    /// Next hop `id`'s neighbour address, when it has one.
    pub fn nexthop_via(&self, id: u32) -> Option<std::net::IpAddr> {
        self.nexthops.get(id)?.via()
    }

    /// The prefix of the selected route in `vrf` that `addr` falls under (its longest
    /// match).
    pub fn matching_prefix(&self, vrf: VrfId, addr: std::net::IpAddr) -> Option<IpNet> {
        self.rib.lookup(vrf, addr).map(|(prefix, _)| prefix)
    }

    /// The interfaces' names and their VRFs', for `stats`, `trace` and the metrics, which see
    /// only the maps.
    pub fn interface_names(&self) -> Vec<NamedInterface> {
        let mut names = self.topology.names();
        for (named, interface) in names.iter_mut().zip(&self.topology.interfaces) {
            let vrf = VrfId(interface.entry.vrf);
            named.vrf = (!vrf.is_default()).then(|| self.vrf_name(vrf));
        }
        names
    }

    /// The VRFs besides the default one.
    pub fn vrfs(&self) -> &Vrfs {
        &self.vrfs
    }

    /// The id of VRF `name` (`None`: the default VRF), or the problem a route naming it has.
    pub fn vrf_id(&self, name: Option<&str>) -> Result<VrfId, RouteProblem> {
        let Some(name) = name else {
            return Ok(VrfId::DEFAULT);
        };
        self.vrfs.id(name).ok_or_else(|| RouteProblem::UnknownVrf {
            vrf: name.to_owned(),
            known: self.vrfs.names(),
        })
    }

    /// The name of VRF `id`, as route words and output give it (`default` for the default).
    pub fn vrf_name(&self, id: VrfId) -> String {
        self.vrfs.name(id).unwrap_or("?").to_owned()
    }

    /// ECMP groups in use.
    pub fn group_count(&self) -> usize {
        self.fib.groups()
    }

    /// The (VRF, prefix) pairs that have a route from `source`.
    pub fn prefixes_of(&self, source: Source) -> Vec<(VrfId, IpNet)> {
        self.rib.prefixes_of(source)
    }

    /// Whether `prefix` in `vrf` has a route from `source`.
    pub fn has_route(&self, vrf: VrfId, prefix: &IpNet, source: Source) -> bool {
        self.rib.get(vrf, prefix, source).is_some()
    }

    /// The ids an adopted dataplane held are in no table any more: free for use.
    pub fn forget_adopted(&mut self) -> (Vec<u32>, Vec<u32>) {
        (self.nexthops.unreserve(), self.fib.unreserve_groups())
    }

    /// Routes of each family in the FIB.
    pub fn route_counts(&self) -> (usize, usize) {
        self.fib.route_counts()
    }

    /// What the FIB says for `prefix` in the default VRF, decoded.
    #[cfg(test)]
    fn compiled(&self, prefix: &IpNet) -> Option<pop_dataplane_common::Route> {
        self.compiled_in(VrfId::DEFAULT, prefix)
    }

    /// What the FIB says for `prefix` in `vrf`, decoded.
    #[cfg(test)]
    fn compiled_in(&self, vrf: VrfId, prefix: &IpNet) -> Option<pop_dataplane_common::Route> {
        self.fib.get(vrf, prefix).map(|entry| entry.target.decode())
    }
}
