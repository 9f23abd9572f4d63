//! Compiles RIB winners into what the route maps hold: a [`RouteEntry`] per prefix, and the
//! ECMP groups they point at. Groups are shared by every route over the same next hops and
//! freed with the last of them. The output is a list of map writes, in a safe order: a group
//! is written before a route points at it. Kernel nexthop objects (`objects`) are groups of
//! their own, kept by the object rather than by their members.

mod groups;
mod objects;
#[cfg(test)]
mod tests;

use foldhash::{HashMap, HashMapExt as _, HashSet};

use ipnet::IpNet;
use pop_dataplane_common::{Route, RouteEntry, RouteTarget, maps::MAX_NEXTHOP_GROUPS};

pub(crate) use self::groups::buckets;
use self::{
    groups::{Group, Groups},
    objects::Object,
};
use crate::control::{
    plan::MapWrite,
    rib::{Action, Change},
    vrf::VrfId,
};

#[derive(Debug, Default)]
pub(crate) struct Fib {
    /// What the route maps hold, per VRF and prefix.
    routes: HashMap<(VrfId, IpNet), RouteEntry>,
    /// How many of `routes` are IPv4, kept as they come and go: the daemon reports the
    /// counts after every batch of kernel route events, and counting a full table costs
    /// milliseconds.
    v4_routes: usize,
    groups: Groups,
    /// Kernel nexthop objects, by kernel id: each routes' own ECMP group while routes use
    /// it, whose buckets follow the object's members, so that a change of the object moves
    /// every route through it with one write.
    objects: HashMap<u32, Object>,
    /// Group id -> the object it is the group of.
    object_groups: HashMap<u32, u32>,
    /// The flow rules' destinations: routes that overlap one carry `RouteEntry::FLOW`.
    flows: FlowPrefixes,
}

/// A set of prefixes, each in a VRF, asked whether a route's prefix overlaps one of its VRF:
/// contains one (is among the truncations of one) or lies inside one (a truncation of it is
/// one).
#[derive(Debug, Default)]
struct FlowPrefixes {
    prefixes: HashSet<(VrfId, IpNet)>,
    /// The lengths among `prefixes`, per family (IPv4, IPv6), over all VRFs.
    lens: [std::collections::BTreeSet<u8>; 2],
    /// Every truncation of every prefix, the prefix included.
    covering: HashSet<(VrfId, IpNet)>,
}

impl FlowPrefixes {
    fn new(prefixes: impl IntoIterator<Item = (VrfId, IpNet)>) -> Self {
        let mut set = Self::default();
        for (vrf, prefix) in prefixes {
            set.lens[usize::from(matches!(prefix, IpNet::V6(_)))].insert(prefix.prefix_len());
            for len in 0..=prefix.prefix_len() {
                set.covering.insert((
                    vrf,
                    IpNet::new(prefix.addr(), len).expect("shorter").trunc(),
                ));
            }
            set.prefixes.insert((vrf, prefix));
        }
        set
    }

    /// Whether a route of `prefix` in `vrf` must be flagged: it overlaps a rule's
    /// destination in that VRF.
    fn overlaps(&self, vrf: VrfId, prefix: &IpNet) -> bool {
        if self.prefixes.is_empty() {
            return false;
        }
        if self.covering.contains(&(vrf, *prefix)) {
            return true;
        }
        self.lens[usize::from(matches!(prefix, IpNet::V6(_)))]
            .range(..=prefix.prefix_len())
            .any(|&len| {
                self.prefixes.contains(&(
                    vrf,
                    IpNet::new(prefix.addr(), len).expect("shorter").trunc(),
                ))
            })
    }
}

/// Why a change could not be compiled: no ECMP group is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("more than {MAX_NEXTHOP_GROUPS} distinct ECMP next-hop sets")]
pub struct FibFull;

impl Fib {
    /// A FIB whose new groups avoid the ids in `reserved`.
    pub(crate) fn avoiding(reserved: impl IntoIterator<Item = u32>) -> Self {
        Self {
            groups: Groups {
                reserved: reserved.into_iter().collect(),
                ..Groups::default()
            },
            ..Self::default()
        }
    }

    /// Compiles one change into map writes, appended to `writes`. `usable` says which next
    /// hops may take traffic (for the buckets of new groups).
    pub(crate) fn apply(
        &mut self,
        change: &Change,
        usable: &dyn Fn(u32) -> bool,
        writes: &mut Vec<MapWrite>,
    ) -> Result<(), FibFull> {
        self.compile(change, usable, writes, true)
    }

    /// [`Fib::apply`] without the route's own write, for a change that fresh tables built
    /// from [`Fib::routes`] will carry: only the groups it needs are written.
    pub(crate) fn apply_for_rebuild(
        &mut self,
        change: &Change,
        usable: &dyn Fn(u32) -> bool,
        writes: &mut Vec<MapWrite>,
    ) -> Result<(), FibFull> {
        self.compile(change, usable, writes, false)
    }

    fn compile(
        &mut self,
        change: &Change,
        usable: &dyn Fn(u32) -> bool,
        writes: &mut Vec<MapWrite>,
        route_writes: bool,
    ) -> Result<(), FibFull> {
        let old = match &change.best {
            Some(action) => {
                let target = self.target(action, usable, writes)?;
                let entry = RouteEntry::new(target, change.prefix.prefix_len())
                    .with_flow(self.flows.overlaps(change.vrf, &change.prefix));
                if route_writes {
                    writes.push(MapWrite::Route(change.vrf, change.prefix, entry));
                }
                let old = self.routes.insert((change.vrf, change.prefix), entry);
                if old.is_none() && change.prefix.addr().is_ipv4() {
                    self.v4_routes += 1;
                }
                old
            }
            None => {
                let old = self.routes.remove(&(change.vrf, change.prefix));
                if old.is_some() && change.prefix.addr().is_ipv4() {
                    self.v4_routes -= 1;
                }
                if old.is_some() && route_writes {
                    writes.push(MapWrite::DeleteRoute(change.vrf, change.prefix));
                }
                old
            }
        };
        if let Some(old) = old {
            self.release(old.target);
        }
        Ok(())
    }

    /// Compiles every winner anew, for fresh route tables: the writes that fill them (new
    /// groups first). Groups still used keep their ids; the old routes' groups are released
    /// after the new ones are taken, so nothing in use is freed on the way.
    pub(crate) fn rebuild<'a>(
        &mut self,
        best: impl Iterator<Item = (VrfId, IpNet, &'a Action)>,
        usable: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<MapWrite>, FibFull> {
        let mut writes = Vec::new();
        let mut routes = HashMap::with_capacity(self.routes.len());
        for (vrf, prefix, action) in best {
            let target = match self.target(action, usable, &mut writes) {
                Ok(target) => target,
                Err(full) => {
                    // Give back what this rebuild took; the FIB stays as it was.
                    for entry in routes.values() {
                        let entry: &RouteEntry = entry;
                        self.release(entry.target);
                    }
                    return Err(full);
                }
            };
            let entry = RouteEntry::new(target, prefix.prefix_len())
                .with_flow(self.flows.overlaps(vrf, &prefix));
            routes.insert((vrf, prefix), entry);
            writes.push(MapWrite::Route(vrf, prefix, entry));
        }
        let old = std::mem::replace(&mut self.routes, routes);
        self.v4_routes = self
            .routes
            .keys()
            .filter(|(_, p)| p.addr().is_ipv4())
            .count();
        for entry in old.values() {
            self.release(entry.target);
        }
        Ok(writes)
    }

    /// Makes `prefixes` the flow rules' destinations: the writes that flag or unflag the
    /// routes whose overlap with them changed (none when the set is the same). A walk of
    /// every route, on changes to the set only.
    pub(crate) fn set_flow_prefixes(
        &mut self,
        prefixes: impl IntoIterator<Item = (VrfId, IpNet)>,
    ) -> Vec<MapWrite> {
        if !self.replace_flow_prefixes(prefixes) {
            return Vec::new();
        }
        let mut writes = Vec::new();
        for ((vrf, prefix), entry) in &mut self.routes {
            let flow = self.flows.overlaps(*vrf, prefix);
            if entry.checks_flows() != flow {
                *entry = entry.with_flow(flow);
                writes.push(MapWrite::Route(*vrf, *prefix, *entry));
            }
        }
        writes
    }

    /// Makes `prefixes` the flow rules' destinations for the routes compiled from now on,
    /// without a walk of those compiled before (for a rebuild, which flags them afresh);
    /// whether the set changed.
    pub(crate) fn replace_flow_prefixes(
        &mut self,
        prefixes: impl IntoIterator<Item = (VrfId, IpNet)>,
    ) -> bool {
        let new = FlowPrefixes::new(prefixes);
        if new.prefixes == self.flows.prefixes {
            return false;
        }
        self.flows = new;
        true
    }

    /// The route target for `action`, taking (and writing) its group when it has several
    /// next hops.
    fn target(
        &mut self,
        action: &Action,
        usable: &dyn Fn(u32) -> bool,
        writes: &mut Vec<MapWrite>,
    ) -> Result<RouteTarget, FibFull> {
        Ok(RouteTarget::new(match action {
            Action::Nexthops(members) if members.len() == 1 => Route::Nexthop(members[0]),
            Action::Nexthops(members) => {
                Route::Group(self.groups.acquire(members, usable, writes)?)
            }
            Action::Object(id) => Route::Group(self.acquire_object(*id, usable, writes)?),
            Action::Blackhole => Route::Blackhole,
            Action::Kernel => Route::Kernel,
            Action::Local => Route::Local,
        }))
    }

    fn release(&mut self, target: RouteTarget) {
        let Route::Group(id) = target.decode() else {
            return;
        };
        match self.object_groups.get(&id) {
            Some(&object) => self.release_object(object),
            None => self.groups.release(id),
        }
    }
    /// Whether a group for exactly these (sorted) next hops exists.
    pub(crate) fn has_group(&self, members: &[u32]) -> bool {
        self.groups.by_members.contains_key(members)
    }

    /// Rewrites the buckets of every group whose members' usability changed: traffic leaves
    /// next hops that cannot take it and comes back when they can.
    pub(crate) fn refresh_groups(&mut self, usable: &dyn Fn(u32) -> bool) -> Vec<MapWrite> {
        let mut writes = Vec::new();
        let objects = self
            .objects
            .values_mut()
            .filter_map(|object| Some((&object.members, object.group.as_mut()?)));
        for (members, group) in self.groups.by_members.iter_mut().chain(objects) {
            writes.extend(group.rebucket(members, usable));
        }
        writes
    }

    /// Every group in use, as its buckets are now.
    pub(crate) fn group_writes(&self) -> Vec<MapWrite> {
        let objects = self.objects.values().filter_map(|o| o.group.as_ref());
        self.groups
            .by_members
            .values()
            .chain(objects)
            .map(|group| MapWrite::Group(group.id, Box::new(group.buckets)))
            .collect()
    }

    /// The compiled entry of `prefix` in `vrf`.
    #[cfg(test)]
    pub(crate) fn get(&self, vrf: VrfId, prefix: &IpNet) -> Option<&RouteEntry> {
        self.routes.get(&(vrf, *prefix))
    }

    /// Routes of each family.
    pub(crate) fn route_counts(&self) -> (usize, usize) {
        (self.v4_routes, self.routes.len() - self.v4_routes)
    }

    /// What the route maps hold: every route of every VRF, in no order.
    pub(crate) fn routes(&self) -> impl Iterator<Item = (VrfId, IpNet, RouteEntry)> + '_ {
        self.routes
            .iter()
            .map(|((vrf, prefix), entry)| (*vrf, *prefix, *entry))
    }

    /// The reserved group ids are in no table any more: hand them out again.
    pub(crate) fn unreserve_groups(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.groups.reserved)
            .into_iter()
            .collect()
    }

    /// ECMP groups in use.
    /// Makes room for `more` routes.
    pub(crate) fn reserve(&mut self, more: usize) {
        self.routes.reserve(more);
    }

    pub(crate) fn groups(&self) -> usize {
        self.groups.by_members.len() + self.object_groups.len()
    }
}
