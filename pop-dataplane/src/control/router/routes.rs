//! Routes from the CLI, route files and the kernel: set, replaced and removed all or nothing;
//! and the queries of `route list` and `route get`.

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use log::warn;
use pop_dataplane_common::{Nexthop, maps};

use super::{
    BULK_ROUTES, Mode, NexthopInfo, NexthopState, RouteError, RouteInfo, RouteProblem, Router,
};
use crate::{
    config::{
        MAX_ECMP_NEXTHOPS,
        route_spec::{Hop, RouteSpec, Target},
    },
    control::{
        nexthops::{Neighbour, NexthopKey},
        plan::MapWrite,
        rib::{Action, Source},
        vrf::VrfId,
    },
    host::{
        Address,
        kernel_nexthops::{KernelObjects, Resolved},
        kernel_routes::KernelTarget,
    },
};

impl Router {
    /// A next hop the kernel must resolve has to be on one of its interface's subnets (when
    /// the interface has addresses to tell).
    fn check_on_link(&self, dev: &str, via: IpAddr) -> Result<(), RouteProblem> {
        let Some(device) = self.topology.interface(dev).and_then(|i| i.device) else {
            return Ok(());
        };
        let subnets: Vec<&Address> = self.local.iter().filter(|a| a.ifindex == device).collect();
        if subnets.is_empty() || subnets.iter().any(|a| a.subnet().contains(&via)) {
            return Ok(());
        }
        Err(RouteProblem::NotOnLink {
            via,
            dev: dev.to_owned(),
            subnets: subnets
                .iter()
                .map(|a| format!("{}/{}", a.addr, a.prefix_len))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// A kernel route as the RIB takes it: through its gateways when each is on one of the
    /// router's interfaces (and on that interface's subnet), else handed to the kernel, which
    /// forwards by the same route.
    /// A route through a nexthop object forwards through it while it resolves to gateways
    /// (its members, set with [`Router::set_kernel_object`], may still be none the fast path
    /// can use: then its packets go to the kernel).
    pub fn kernel_spec(
        &self,
        vrf: Option<&str>,
        prefix: IpNet,
        target: &KernelTarget,
        objects: &KernelObjects,
    ) -> RouteSpec {
        let target = match target {
            KernelTarget::Via(hops) => self.kernel_hops(hops).map_or(Target::Kernel, Target::Via),
            KernelTarget::Object(id) => match objects.resolve(*id) {
                Resolved::Via(_) => Target::Object(*id),
                Resolved::Blackhole => Target::Blackhole,
                Resolved::Kernel => Target::Kernel,
            },
            KernelTarget::Blackhole => Target::Blackhole,
            KernelTarget::Direct(_) | KernelTarget::Kernel => Target::Kernel,
        };
        RouteSpec {
            vrf: vrf.map(str::to_owned),
            prefix,
            target,
        }
    }

    /// Kernel gateways (interface index, address) as next hops: `None` unless every one is
    /// on a router interface (and its subnet), and there are not too many.
    fn kernel_hops(&self, hops: &[(u32, IpAddr)]) -> Option<Vec<Hop>> {
        if hops.len() > MAX_ECMP_NEXTHOPS {
            return None;
        }
        hops.iter()
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
            .collect()
    }

    /// Makes kernel nexthop object `id` forward as `resolved` says: the next hops of its
    /// members taken (and written when new), those it had let go. The routes through it
    /// move with its group's one write. An object the fast path cannot use gets no members.
    pub fn set_kernel_object(&mut self, id: u32, resolved: &Resolved) -> Vec<MapWrite> {
        let hops = match resolved {
            Resolved::Via(hops) => self.kernel_hops(hops).unwrap_or_default(),
            Resolved::Blackhole | Resolved::Kernel => Vec::new(),
        };
        let mut writes = Vec::new();
        let mut ids = Vec::with_capacity(hops.len());
        for hop in &hops {
            let key = hop_key(hop);
            let new = self.nexthops.id(&key).is_none();
            let Ok(nexthop) = self.nexthops.acquire(&key, None) else {
                warn!("nexthop object {id}: no room for next hop {key}; the kernel forwards");
                for taken in ids.drain(..) {
                    self.nexthops.release(taken);
                }
                break;
            };
            if new {
                writes.push(MapWrite::Nexthop(nexthop, self.nexthop_value(nexthop)));
            }
            ids.push(nexthop);
        }
        ids.sort_unstable();
        let usable = self.usable_set();
        let old = self
            .fib
            .set_object(id, ids.into(), &|n| usable.contains(&n), &mut writes);
        let mut after = Vec::new();
        for &nexthop in old.iter() {
            if self.nexthops.release(nexthop) {
                after.push(MapWrite::Nexthop(nexthop, Nexthop::default()));
            }
        }
        writes.extend(self.still_free(after));
        writes
    }

    /// The kernel objects the router keeps next hops for.
    pub fn kernel_object_ids(&self) -> Vec<u32> {
        self.fib.objects().map(|(id, _)| id).collect()
    }

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
    ) -> Result<Vec<MapWrite>, RouteError> {
        self.check_routes(specs, source, mode)?;
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
                Target::Object(id) => Action::Object(*id),
            };
            let vrf = self.vrf_id(spec.vrf.as_deref()).expect("checked");
            let (replaced, change) = self.rib.insert(vrf, spec.prefix, source, action);
            if let Some(change) = change {
                let usable = |id| usable.contains(&id);
                let compiled = if bulk {
                    self.fib.apply_for_rebuild(&change, &usable, &mut writes)
                } else {
                    self.fib.apply(&change, &usable, &mut writes)
                };
                compiled?;
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

    /// Everything about `specs` that can fail, checked before anything changes: each route,
    /// then whether the tables, next hops and ECMP groups have room for them all.
    fn check_routes(
        &self,
        specs: &[(usize, RouteSpec)],
        source: Source,
        mode: Mode,
    ) -> Result<(), RouteError> {
        let repeat = first_repeat(specs, |name| self.vrf_id(name).ok());
        let mut checked: foldhash::HashSet<(&str, IpAddr)> = foldhash::HashSet::default();
        let mut new_keys = BTreeSet::new();
        let (have_v4, have_v6) = self.rib.prefix_counts();
        let given_v4 = specs
            .iter()
            .filter(|(_, s)| s.prefix.addr().is_ipv4())
            .count();
        let given_v6 = specs.len() - given_v4;
        // Whether each route is new matters to `route add`, which refuses existing ones, and
        // when the tables could fill up: a batch of replacements in a full table is spared a
        // RIB lookup per route.
        let count_new = mode == Mode::Add
            || have_v4 + given_v4 > maps::MAX_ROUTES_V4 as usize
            || have_v6 + given_v6 > maps::MAX_ROUTES_V6 as usize;
        let (mut new_v4, mut new_v6) = if count_new {
            (0, 0)
        } else {
            (given_v4, given_v6)
        };
        for (index, (line, spec)) in specs.iter().enumerate() {
            let refuse = |problem| RouteError::Route {
                line: *line,
                prefix: spec.prefix,
                problem,
            };
            let vrf = self.vrf_id(spec.vrf.as_deref()).map_err(refuse)?;
            if let Some((_, first)) = repeat.filter(|&(at, _)| at == index) {
                return Err(refuse(if first > 0 {
                    RouteProblem::GivenTwiceAt(first)
                } else {
                    RouteProblem::GivenTwice
                }));
            }
            if count_new {
                let exists = self.rib.get(vrf, &spec.prefix, source).is_some();
                if mode == Mode::Add && exists {
                    return Err(refuse(RouteProblem::Exists(source)));
                }
                if !exists {
                    match spec.prefix {
                        IpNet::V4(_) => new_v4 += 1,
                        IpNet::V6(_) => new_v6 += 1,
                    }
                }
            }
            let Target::Via(hops) = &spec.target else {
                continue;
            };
            if hops.len() > MAX_ECMP_NEXTHOPS {
                return Err(refuse(RouteProblem::TooManyHops(hops.len())));
            }
            for hop in hops {
                // A full table names a handful of next hops a million times: each is
                // checked once.
                if !checked.insert((hop.dev.as_str(), hop.via)) {
                    continue;
                }
                if self.topology.interface(&hop.dev).is_none() {
                    return Err(refuse(RouteProblem::UnknownDev {
                        dev: hop.dev.clone(),
                        interfaces: self
                            .topology
                            .interfaces
                            .iter()
                            .filter(|i| i.entry.is_routed())
                            .map(|i| i.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    }));
                }
                let key = hop_key(hop);
                if self.nexthops.id(&key).is_none() {
                    self.check_on_link(&hop.dev, hop.via).map_err(refuse)?;
                    new_keys.insert(key);
                }
            }
        }
        self.check_room(have_v4 + new_v4, have_v6 + new_v6, new_keys.len())?;
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
            return Err(RouteError::TooManyGroups);
        }
        Ok(())
    }

    /// Whether the tables can hold `v4` and `v6` routes, and the next hops `new_nexthops`
    /// more: the one capacity check of every change.
    pub(super) fn check_room(
        &self,
        v4: usize,
        v6: usize,
        new_nexthops: usize,
    ) -> Result<(), RouteError> {
        if v4 > maps::MAX_ROUTES_V4 as usize || v6 > maps::MAX_ROUTES_V6 as usize {
            return Err(RouteError::TablesFull { v4, v6 });
        }
        if self.nexthops.len() + new_nexthops >= maps::MAX_NEXTHOPS as usize {
            return Err(RouteError::TooManyNexthops);
        }
        Ok(())
    }

    /// Makes `specs` all the routes of `source`: sets them, and removes the source's routes
    /// for other prefixes; all or nothing. The writes, and how many routes went. The caller
    /// builds fresh tables from [`Router::table_routes`] (the writes may leave routes out).
    pub fn replace_routes(
        &mut self,
        specs: &[(usize, RouteSpec)],
        source: Source,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(Vec<MapWrite>, usize), RouteError> {
        // Checked in full by `set_routes` below: a VRF that does not resolve refuses the lot.
        let keep: foldhash::HashSet<(VrfId, IpNet)> = specs
            .iter()
            .filter_map(|(_, spec)| Some((self.vrf_id(spec.vrf.as_deref()).ok()?, spec.prefix)))
            .collect();
        let gone: Vec<(VrfId, IpNet)> = self
            .rib
            .prefixes_of(source)
            .into_iter()
            .filter(|key| !keep.contains(key))
            .collect();
        // Checked in full before anything changes; removing routes the source has cannot fail.
        let mut writes = self.set_routes(specs, source, Mode::Replace, progress)?;
        writes.extend(self.remove_routes(&gone, source)?);
        Ok((writes, gone.len()))
    }

    /// Removes the routes for `prefixes` (each in its VRF) from `source`: all, or none when
    /// one has no such route.
    pub fn remove_routes(
        &mut self,
        prefixes: &[(VrfId, IpNet)],
        source: Source,
    ) -> Result<Vec<MapWrite>, RouteError> {
        for (vrf, prefix) in prefixes {
            if self.rib.get(*vrf, prefix, source).is_none() {
                let others: Vec<&str> = self
                    .rib
                    .routes(*vrf, prefix)
                    .iter()
                    .map(|(s, _)| s.name())
                    .collect();
                let problem = if others.is_empty() {
                    RouteProblem::NoSuchRoute
                } else {
                    RouteProblem::OtherSource {
                        from: source,
                        others: others.join(" and "),
                    }
                };
                return Err(RouteError::Route {
                    line: 0,
                    prefix: *prefix,
                    problem,
                });
            }
        }
        let mut writes = Vec::new();
        let mut after = Vec::new();
        let usable = self.usable_set();
        for (vrf, prefix) in prefixes {
            let (removed, change) = self.rib.remove(*vrf, *prefix, source);
            if let Some(change) = change {
                self.fib
                    .apply(&change, &|id| usable.contains(&id), &mut writes)?;
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
            .filter(|(_, _, s, _)| *s == source)
            .filter_map(|(vrf, prefix, _, action)| self.spec(vrf, prefix, action))
            .collect();
        specs.sort_by(|a, b| (&a.vrf, a.prefix).cmp(&(&b.vrf, b.prefix)));
        specs
    }

    fn spec(&self, vrf: VrfId, prefix: IpNet, action: &Action) -> Option<RouteSpec> {
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
            Action::Object(id) => Target::Object(*id),
            Action::Local => return None,
        };
        let vrf = (!vrf.is_default()).then(|| self.vrf_name(vrf));
        Some(RouteSpec {
            vrf,
            prefix,
            target,
        })
    }

    /// Every route, or those of `source`, or of VRF `vrf`, sorted by VRF, prefix, then
    /// preference.
    pub fn list(&self, source: Option<Source>, vrf: Option<VrfId>) -> Vec<RouteInfo> {
        let mut list: Vec<(VrfId, RouteInfo)> = self
            .rib
            .all()
            .filter(|(v, _, s, _)| {
                source.is_none_or(|want| *s == want) && vrf.is_none_or(|want| *v == want)
            })
            .map(|(v, prefix, s, action)| (v, self.info(v, prefix, s, action)))
            .collect();
        list.sort_by_key(|(v, a)| (*v, a.prefix, a.source));
        list.into_iter().map(|(_, info)| info).collect()
    }

    /// The route the dataplane uses for `addr` in `vrf`: longest prefix, best source.
    pub fn get(&self, vrf: VrfId, addr: IpAddr) -> Option<RouteInfo> {
        let (prefix, routes) = self.rib.lookup(vrf, addr)?;
        let (source, action) = &routes[0];
        Some(self.info(vrf, prefix, *source, action))
    }

    fn info(&self, vrf: VrfId, prefix: IpNet, source: Source, action: &Action) -> RouteInfo {
        let selected = self
            .rib
            .routes(vrf, &prefix)
            .first()
            .is_some_and(|(s, _)| *s == source);
        let ids = match action {
            Action::Object(id) => self.fib.object_members(*id),
            _ => action.nexthops(),
        };
        let nexthops: Vec<NexthopInfo> = ids
            .iter()
            .filter_map(|&id| {
                let entry = self.nexthops.get(id)?;
                Some(NexthopInfo {
                    id,
                    dev: entry.key.dev.clone(),
                    via: entry.via(),
                    mac: entry.mac().map(|m| m.to_string()),
                    state: if !self.interface_up(&entry.key.dev) {
                        NexthopState::LinkDown
                    } else if entry.mac().is_some() {
                        NexthopState::Reachable
                    } else {
                        NexthopState::Unresolved
                    },
                })
            })
            .collect();
        let hops = || {
            nexthops
                .iter()
                .map(|n| match (n.via, &n.mac) {
                    (Some(via), _) => format!("via {via} dev {}", n.dev),
                    (None, Some(mac)) => format!("lladdr {mac} dev {}", n.dev),
                    (None, None) => format!("dev {}", n.dev),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let target = match action {
            Action::Nexthops(_) => hops(),
            // An object none of whose gateways the fast path can use: the kernel forwards.
            Action::Object(id) if nexthops.is_empty() => format!("nhid {id} kernel"),
            Action::Object(id) => format!("nhid {id} {}", hops()),
            Action::Blackhole => "blackhole".to_owned(),
            Action::Kernel => "kernel".to_owned(),
            Action::Local => "local".to_owned(),
        };
        RouteInfo {
            vrf: self.vrf_name(vrf),
            prefix,
            source,
            selected,
            target,
            nexthops,
        }
    }
}

pub(super) fn hop_key(hop: &Hop) -> NexthopKey {
    NexthopKey {
        dev: hop.dev.clone(),
        neighbour: Neighbour::Via(hop.via),
    }
}

/// The first of `specs`, in their order, whose VRF and prefix an earlier one has: its index,
/// and the earlier one's line. Routes whose VRF `vrf_id` does not know are left out (they
/// are refused on their own). By sorting, not hashing: a full table's million keys in a
/// fresh hash map cost a third of a second, mostly in cache misses and page faults.
fn first_repeat(
    specs: &[(usize, RouteSpec)],
    vrf_id: impl Fn(Option<&str>) -> Option<VrfId>,
) -> Option<(usize, usize)> {
    let mut keys: Vec<(VrfId, IpNet, u32)> = specs
        .iter()
        .zip(0u32..)
        .filter_map(|((_, spec), index)| Some((vrf_id(spec.vrf.as_deref())?, spec.prefix, index)))
        .collect();
    // Equal keys end up side by side, in the order given.
    keys.sort_unstable();
    keys.windows(2)
        .filter(|pair| (pair[0].0, pair[0].1) == (pair[1].0, pair[1].1))
        .map(|pair| (pair[1].2 as usize, specs[pair[0].2 as usize].0))
        .min()
}
