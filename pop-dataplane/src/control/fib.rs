//! Compiles RIB winners into what the route maps hold: a [`RouteEntry`] per prefix, and the
//! ECMP groups they point at. Groups are shared by every route over the same next hops and
//! freed with the last of them. The output is a list of map writes, in a safe order: a group
//! is written before a route points at it.

use foldhash::{HashMap, HashMapExt as _, HashSet};

use ipnet::IpNet;
use pop_dataplane_common::{
    NexthopGroup, Route, RouteEntry, RouteTarget, maps::MAX_NEXTHOP_GROUPS, nexthop::ECMP_BUCKETS,
};

use crate::{
    control::plan::MapWrite,
    control::rib::{Action, Change, NexthopSet},
};

#[derive(Debug, Default)]
pub(crate) struct Fib {
    /// What the route maps hold, per prefix.
    routes: HashMap<IpNet, RouteEntry>,
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

/// A kernel nexthop object as the FIB keeps it.
#[derive(Debug, Default)]
struct Object {
    /// The next hops it forwards through now: none when the fast path cannot take it (the
    /// group's buckets then hold no next hop, and its packets go to the kernel).
    members: NexthopSet,
    /// Its group, while routes use it.
    group: Option<Group>,
}

/// A set of prefixes, asked whether a route's prefix overlaps one of them: contains one (is
/// among the truncations of one) or lies inside one (a truncation of it is one).
#[derive(Debug, Default)]
struct FlowPrefixes {
    prefixes: HashSet<IpNet>,
    /// The lengths among `prefixes`, per family (IPv4, IPv6).
    lens: [std::collections::BTreeSet<u8>; 2],
    /// Every truncation of every prefix, the prefix included.
    covering: HashSet<IpNet>,
}

impl FlowPrefixes {
    fn new(prefixes: impl IntoIterator<Item = IpNet>) -> Self {
        let mut set = Self::default();
        for prefix in prefixes {
            set.lens[usize::from(matches!(prefix, IpNet::V6(_)))].insert(prefix.prefix_len());
            for len in 0..=prefix.prefix_len() {
                set.covering
                    .insert(IpNet::new(prefix.addr(), len).expect("shorter").trunc());
            }
            set.prefixes.insert(prefix);
        }
        set
    }

    fn overlaps(&self, prefix: &IpNet) -> bool {
        if self.prefixes.is_empty() {
            return false;
        }
        if self.covering.contains(prefix) {
            return true;
        }
        self.lens[usize::from(matches!(prefix, IpNet::V6(_)))]
            .range(..=prefix.prefix_len())
            .any(|&len| {
                self.prefixes
                    .contains(&IpNet::new(prefix.addr(), len).expect("shorter").trunc())
            })
    }
}

#[derive(Debug, Default)]
struct Groups {
    /// Member set -> group.
    by_members: HashMap<NexthopSet, Group>,
    /// Group id -> member set.
    by_id: HashMap<u32, NexthopSet>,
    free: Vec<u32>,
    next: u32,
    /// Ids a running dataplane held when this daemon adopted it: avoided until swapped out.
    reserved: std::collections::BTreeSet<u32>,
}

#[derive(Debug)]
struct Group {
    id: u32,
    /// Routes using it.
    users: usize,
    /// Its buckets as last written.
    buckets: NexthopGroup,
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
                    .with_flow(self.flows.overlaps(&change.prefix));
                if route_writes {
                    writes.push(MapWrite::Route(change.prefix, entry));
                }
                let old = self.routes.insert(change.prefix, entry);
                if old.is_none() && change.prefix.addr().is_ipv4() {
                    self.v4_routes += 1;
                }
                old
            }
            None => {
                let old = self.routes.remove(&change.prefix);
                if old.is_some() && change.prefix.addr().is_ipv4() {
                    self.v4_routes -= 1;
                }
                if old.is_some() && route_writes {
                    writes.push(MapWrite::DeleteRoute(change.prefix));
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
        best: impl Iterator<Item = (IpNet, &'a Action)>,
        usable: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<MapWrite>, FibFull> {
        let mut writes = Vec::new();
        let mut routes = HashMap::with_capacity(self.routes.len());
        for (prefix, action) in best {
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
                .with_flow(self.flows.overlaps(&prefix));
            routes.insert(prefix, entry);
            writes.push(MapWrite::Route(prefix, entry));
        }
        let old = std::mem::replace(&mut self.routes, routes);
        self.v4_routes = self.routes.keys().filter(|p| p.addr().is_ipv4()).count();
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
        prefixes: impl IntoIterator<Item = IpNet>,
    ) -> Vec<MapWrite> {
        if !self.replace_flow_prefixes(prefixes) {
            return Vec::new();
        }
        let mut writes = Vec::new();
        for (prefix, entry) in &mut self.routes {
            let flow = self.flows.overlaps(prefix);
            if entry.checks_flows() != flow {
                *entry = entry.with_flow(flow);
                writes.push(MapWrite::Route(*prefix, *entry));
            }
        }
        writes
    }

    /// Makes `prefixes` the flow rules' destinations for the routes compiled from now on,
    /// without a walk of those compiled before (for a rebuild, which flags them afresh);
    /// whether the set changed.
    pub(crate) fn replace_flow_prefixes(
        &mut self,
        prefixes: impl IntoIterator<Item = IpNet>,
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
        let Some(&object_id) = self.object_groups.get(&id) else {
            self.groups.release(id);
            return;
        };
        let object = self
            .objects
            .get_mut(&object_id)
            .expect("object_groups agrees");
        let group = object
            .group
            .as_mut()
            .expect("a group in object_groups is live");
        group.users -= 1;
        if group.users == 0 {
            object.group = None;
            self.object_groups.remove(&id);
            self.groups.free.push(id);
            if object.members.is_empty() {
                self.objects.remove(&object_id);
            }
        }
    }

    /// The group of object `id` for one more route: taken, and written, for its first.
    fn acquire_object(
        &mut self,
        id: u32,
        usable: &dyn Fn(u32) -> bool,
        writes: &mut Vec<MapWrite>,
    ) -> Result<u32, FibFull> {
        let object = self.objects.entry(id).or_default();
        if let Some(group) = &mut object.group {
            group.users += 1;
            return Ok(group.id);
        }
        let group_id = self.groups.take_id()?;
        let buckets = buckets(&object.members, usable);
        writes.push(MapWrite::Group(group_id, Box::new(buckets)));
        object.group = Some(Group {
            id: group_id,
            users: 1,
            buckets,
        });
        self.object_groups.insert(group_id, id);
        Ok(group_id)
    }

    /// Makes `members` the next hops of kernel object `id`: its group's buckets rewritten
    /// (one write) if routes use it. The members it had, for the caller to let go.
    pub(crate) fn set_object(
        &mut self,
        id: u32,
        members: NexthopSet,
        usable: &dyn Fn(u32) -> bool,
        writes: &mut Vec<MapWrite>,
    ) -> NexthopSet {
        let object = self.objects.entry(id).or_default();
        let old = std::mem::replace(&mut object.members, members);
        if let Some(group) = &mut object.group {
            let buckets = buckets(&object.members, usable);
            if buckets != group.buckets {
                group.buckets = buckets;
                writes.push(MapWrite::Group(group.id, Box::new(buckets)));
            }
        } else if object.members.is_empty() {
            self.objects.remove(&id);
        }
        old
    }

    /// The next hops of kernel object `id` (none if unknown).
    pub(crate) fn object_members(&self, id: u32) -> &[u32] {
        self.objects.get(&id).map_or(&[], |object| &object.members)
    }

    /// The kernel objects with members, by id.
    pub(crate) fn objects(&self) -> impl Iterator<Item = (u32, &NexthopSet)> {
        self.objects
            .iter()
            .filter(|(_, object)| !object.members.is_empty())
            .map(|(id, object)| (*id, &object.members))
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
            let buckets = buckets(members, usable);
            if buckets != group.buckets {
                group.buckets = buckets;
                writes.push(MapWrite::Group(group.id, Box::new(buckets)));
            }
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

    /// The compiled entry of `prefix`.
    #[cfg(test)]
    pub(crate) fn get(&self, prefix: &IpNet) -> Option<&RouteEntry> {
        self.routes.get(prefix)
    }

    /// Routes of each family.
    pub(crate) fn route_counts(&self) -> (usize, usize) {
        (self.v4_routes, self.routes.len() - self.v4_routes)
    }

    /// What the route maps hold: every route, in no order.
    pub(crate) fn routes(&self) -> impl Iterator<Item = (&IpNet, &RouteEntry)> {
        self.routes.iter()
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

impl Groups {
    fn acquire(
        &mut self,
        members: &NexthopSet,
        usable: &dyn Fn(u32) -> bool,
        writes: &mut Vec<MapWrite>,
    ) -> Result<u32, FibFull> {
        if let Some(group) = self.by_members.get_mut(members) {
            group.users += 1;
            return Ok(group.id);
        }
        let id = self.take_id()?;
        let buckets = buckets(members, usable);
        writes.push(MapWrite::Group(id, Box::new(buckets)));
        self.by_members.insert(
            members.clone(),
            Group {
                id,
                users: 1,
                buckets,
            },
        );
        self.by_id.insert(id, members.clone());
        Ok(id)
    }

    /// A group id nothing uses.
    fn take_id(&mut self) -> Result<u32, FibFull> {
        if let Some(id) = self.free.pop() {
            return Ok(id);
        }
        loop {
            if self.next >= MAX_NEXTHOP_GROUPS {
                return Err(FibFull);
            }
            self.next += 1;
            let id = self.next - 1;
            if !self.reserved.contains(&id) {
                return Ok(id);
            }
        }
    }

    fn release(&mut self, id: u32) {
        let Some(members) = self.by_id.get(&id) else {
            return;
        };
        let group = self
            .by_members
            .get_mut(members)
            .expect("by_id and by_members agree");
        group.users -= 1;
        if group.users == 0 {
            let members = self.by_id.remove(&id).expect("present");
            self.by_members.remove(&members);
            self.free.push(id);
        }
    }
}

/// The buckets of a group: its members in turn; the buckets of members that cannot take
/// traffic go to those that can, in turn, so that flows on working members never move. With
/// no member usable, every member keeps its buckets (and the packets go to the kernel).
pub(crate) fn buckets(members: &[u32], usable: &dyn Fn(u32) -> bool) -> NexthopGroup {
    let mut group = NexthopGroup::default();
    if members.is_empty() {
        return group;
    }
    let alive: Vec<u32> = members.iter().copied().filter(|&id| usable(id)).collect();
    let mut next_alive = 0;
    for (i, bucket) in group.buckets.iter_mut().enumerate() {
        let member = members[i % members.len()];
        *bucket = if alive.is_empty() || usable(member) {
            member
        } else {
            next_alive += 1;
            alive[(next_alive - 1) % alive.len()]
        };
    }
    debug_assert!(members.len() <= ECMP_BUCKETS);
    group
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn change(prefix: &str, best: Option<Action>) -> Change {
        Change {
            prefix: prefix.parse().unwrap(),
            best,
        }
    }

    fn all(_: u32) -> bool {
        true
    }

    fn set(ids: &[u32]) -> Action {
        Action::Nexthops(Arc::from(ids))
    }

    #[test]
    fn a_kernel_object_is_one_group_its_routes_share() {
        let mut fib = Fib::default();
        let mut writes = Vec::new();
        // Members set before any route: nothing written yet.
        fib.set_object(7, Arc::from([1, 2]), &all, &mut writes);
        assert!(writes.is_empty());
        for prefix in ["198.18.9.0/24", "198.18.10.0/24"] {
            fib.apply(&change(prefix, Some(Action::Object(7))), &all, &mut writes)
                .unwrap();
        }
        let group = RouteTarget::new(Route::Group(0));
        assert_eq!(
            writes,
            [
                MapWrite::Group(0, Box::new(buckets(&[1, 2], &all))),
                MapWrite::Route("198.18.9.0/24".parse().unwrap(), RouteEntry::new(group, 24)),
                MapWrite::Route(
                    "198.18.10.0/24".parse().unwrap(),
                    RouteEntry::new(group, 24)
                ),
            ]
        );
        // A group of the same members for another route is not the object's.
        writes.clear();
        fib.apply(
            &change("198.18.11.0/24", Some(set(&[1, 2]))),
            &all,
            &mut writes,
        )
        .unwrap();
        assert_eq!(fib.groups(), 2);
        assert_eq!(fib.route_counts(), (3, 0));
        // The object changes: one write of its buckets, no route touched.
        writes.clear();
        let old = fib.set_object(7, Arc::from([3, 4]), &all, &mut writes);
        assert_eq!(&*old, &[1, 2]);
        assert_eq!(
            writes,
            [MapWrite::Group(0, Box::new(buckets(&[3, 4], &all)))]
        );
        assert_eq!(fib.object_members(7), &[3, 4]);
        // Failover reaches it like any group: 4 down, its buckets go to 3.
        let down = |id| id != 4;
        let writes = fib.refresh_groups(&down);
        assert!(writes.contains(&MapWrite::Group(0, Box::new(buckets(&[3, 4], &down)))));
        assert_eq!(buckets(&[3, 4], &down).buckets[..4], [3, 3, 3, 3]);
        // No members: buckets without a next hop, the kernel's to forward.
        let mut writes = Vec::new();
        fib.set_object(7, Arc::from([]), &all, &mut writes);
        assert_eq!(writes, [MapWrite::Group(0, Box::default())]);
        // Its last route gone, its group is freed and the empty object forgotten.
        for prefix in ["198.18.9.0/24", "198.18.10.0/24"] {
            fib.apply(&change(prefix, None), &all, &mut writes).unwrap();
        }
        assert_eq!(fib.groups(), 1);
        assert_eq!(fib.route_counts(), (1, 0));
        assert_eq!(fib.objects().count(), 0);
        assert!(fib.object_members(7).is_empty());
    }

    #[test]
    fn groups_are_shared_and_freed() {
        let mut fib = Fib::default();
        let mut writes = Vec::new();
        fib.apply(
            &change("198.18.9.0/24", Some(set(&[1, 2]))),
            &all,
            &mut writes,
        )
        .unwrap();
        fib.apply(
            &change("198.18.10.0/24", Some(set(&[1, 2]))),
            &all,
            &mut writes,
        )
        .unwrap();
        let group = RouteTarget::new(Route::Group(0));
        assert_eq!(
            writes,
            [
                MapWrite::Group(0, Box::new(buckets(&[1, 2], &all))),
                MapWrite::Route("198.18.9.0/24".parse().unwrap(), RouteEntry::new(group, 24)),
                MapWrite::Route(
                    "198.18.10.0/24".parse().unwrap(),
                    RouteEntry::new(group, 24)
                ),
            ]
        );
        assert_eq!(buckets(&[1, 2], &all).buckets[..4], [1, 2, 1, 2]);
        assert_eq!(fib.groups(), 1);

        writes.clear();
        fib.apply(&change("198.18.9.0/24", None), &all, &mut writes)
            .unwrap();
        assert_eq!(fib.groups(), 1);
        fib.apply(
            &change("198.18.10.0/24", Some(set(&[4]))),
            &all,
            &mut writes,
        )
        .unwrap();
        assert_eq!(fib.groups(), 0);
        assert_eq!(
            writes,
            [
                MapWrite::DeleteRoute("198.18.9.0/24".parse().unwrap()),
                MapWrite::Route(
                    "198.18.10.0/24".parse().unwrap(),
                    RouteEntry::new(RouteTarget::new(Route::Nexthop(4)), 24)
                ),
            ]
        );
        // The freed id is reused.
        writes.clear();
        fib.apply(
            &change("2001:2::/48", Some(set(&[5, 6, 7]))),
            &all,
            &mut writes,
        )
        .unwrap();
        assert_eq!(
            writes[0],
            MapWrite::Group(0, Box::new(buckets(&[5, 6, 7], &all)))
        );
    }

    #[test]
    fn a_dead_member_loses_only_its_own_buckets() {
        let full = buckets(&[1, 2, 3], &all);
        let without_2 = buckets(&[1, 2, 3], &|id| id != 2);
        for (before, after) in full.buckets.iter().zip(without_2.buckets) {
            if *before == 2 {
                assert_ne!(after, 2);
            } else {
                assert_eq!(after, *before, "a flow on a working member moved");
            }
        }
        let count = |id| without_2.buckets.iter().filter(|&&b| b == id).count();
        assert!(
            count(1).abs_diff(count(3)) <= 2,
            "the dead member's share is spread evenly"
        );
        assert_eq!(count(1) + count(3), 64);
        assert_eq!(
            buckets(&[1, 2], &|_| false),
            buckets(&[1, 2], &all),
            "none usable"
        );

        let mut fib = Fib::default();
        let mut writes = Vec::new();
        fib.apply(
            &change("198.18.9.0/24", Some(set(&[1, 2, 3]))),
            &all,
            &mut writes,
        )
        .unwrap();
        assert_eq!(fib.refresh_groups(&all), []);
        assert_eq!(
            fib.refresh_groups(&|id| id != 2),
            [MapWrite::Group(0, Box::new(without_2))]
        );
        assert_eq!(
            fib.refresh_groups(&all),
            [MapWrite::Group(0, Box::new(full))]
        );
    }

    #[test]
    fn rebuilds_keep_groups_in_use_and_skip_reserved_ids() {
        let mut fib = Fib::avoiding([0]);
        let mut writes = Vec::new();
        fib.apply(
            &change("198.18.9.0/24", Some(set(&[1, 2]))),
            &all,
            &mut writes,
        )
        .unwrap();
        assert_eq!(
            writes[0],
            MapWrite::Group(1, Box::new(buckets(&[1, 2], &all))),
            "0 is reserved"
        );
        let a: IpNet = "198.18.9.0/24".parse().unwrap();
        let b: IpNet = "198.18.10.0/24".parse().unwrap();
        let keep = set(&[1, 2]);
        let new = set(&[3, 4]);
        let writes = fib
            .rebuild([(a, &keep), (b, &new)].into_iter(), &all)
            .unwrap();
        assert_eq!(fib.groups(), 2);
        assert!(writes.contains(&MapWrite::Group(2, Box::new(buckets(&[3, 4], &all)))));
        assert_eq!(
            writes
                .iter()
                .filter(|w| matches!(w, MapWrite::Route(..)))
                .count(),
            2
        );
        assert_eq!(
            fib.get(&a).unwrap().target.decode(),
            Route::Group(1),
            "kept its id"
        );
        assert_eq!(fib.unreserve_groups(), [0]);
    }
}
