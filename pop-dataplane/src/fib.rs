//! Compiles RIB winners into what the route maps hold: a [`RouteEntry`] per prefix, and the
//! ECMP groups they point at. Groups are shared by every route over the same next hops and
//! freed with the last of them. The output is a list of map writes, in a safe order: a group
//! is written before a route points at it.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use pop_dataplane_common::{
    NexthopGroup, Route, RouteEntry, RouteTarget, maps::MAX_NEXTHOP_GROUPS, nexthop::ECMP_BUCKETS,
};

use crate::rib::{Action, Change};

/// One write to the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapWrite {
    /// Boxed: a group is large and rare, routes are many and small.
    Group(u32, Box<NexthopGroup>),
    Route(IpNet, RouteEntry),
    DeleteRoute(IpNet),
}

#[derive(Debug, Default)]
pub struct Fib {
    /// What the route maps hold, per prefix, with the action it came from.
    routes: BTreeMap<IpNet, (Action, RouteEntry)>,
    groups: Groups,
}

#[derive(Debug, Default)]
struct Groups {
    /// Member set -> (group id, routes using it).
    by_members: HashMap<Vec<u32>, (u32, usize)>,
    free: Vec<u32>,
    next: u32,
}

/// Why a change could not be compiled.
#[derive(Debug, PartialEq, Eq)]
pub struct FibFull;

impl std::fmt::Display for FibFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "more than {MAX_NEXTHOP_GROUPS} distinct ECMP next-hop sets"
        )
    }
}

impl std::error::Error for FibFull {}

impl Fib {
    /// Compiles one change into map writes, appended to `writes`.
    pub fn apply(&mut self, change: &Change, writes: &mut Vec<MapWrite>) -> Result<(), FibFull> {
        let old = self.routes.remove(&change.prefix);
        match &change.best {
            Some(action) => {
                let target = self.target(action, writes)?;
                let entry = RouteEntry::new(target, change.prefix.prefix_len());
                writes.push(MapWrite::Route(change.prefix, entry));
                self.routes.insert(change.prefix, (action.clone(), entry));
            }
            None => {
                if old.is_some() {
                    writes.push(MapWrite::DeleteRoute(change.prefix));
                }
            }
        }
        if let Some((action, _)) = old {
            self.release(&action);
        }
        Ok(())
    }

    /// The route target for `action`, allocating (and writing) its group when it has several
    /// next hops.
    fn target(
        &mut self,
        action: &Action,
        writes: &mut Vec<MapWrite>,
    ) -> Result<RouteTarget, FibFull> {
        Ok(RouteTarget::new(match action {
            Action::Nexthops(members) if members.len() == 1 => Route::Nexthop(members[0]),
            Action::Nexthops(members) => Route::Group(self.groups.acquire(members, writes)?),
            Action::Blackhole => Route::Blackhole,
            Action::Kernel => Route::Kernel,
            Action::Local => Route::Local,
        }))
    }

    fn release(&mut self, action: &Action) {
        if let Action::Nexthops(members) = action
            && members.len() > 1
        {
            self.groups.release(members);
        }
    }

    /// The compiled entry of `prefix`.
    pub fn get(&self, prefix: &IpNet) -> Option<&RouteEntry> {
        self.routes.get(prefix).map(|(_, entry)| entry)
    }

    pub fn routes(&self) -> impl Iterator<Item = (&IpNet, &RouteEntry)> {
        self.routes
            .iter()
            .map(|(prefix, (_, entry))| (prefix, entry))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// ECMP groups in use.
    pub fn groups(&self) -> usize {
        self.groups.by_members.len()
    }
}

impl Groups {
    fn acquire(&mut self, members: &[u32], writes: &mut Vec<MapWrite>) -> Result<u32, FibFull> {
        if let Some((id, users)) = self.by_members.get_mut(members) {
            *users += 1;
            return Ok(*id);
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None if self.next < MAX_NEXTHOP_GROUPS => {
                self.next += 1;
                self.next - 1
            }
            None => return Err(FibFull),
        };
        writes.push(MapWrite::Group(id, Box::new(buckets(members))));
        self.by_members.insert(members.to_vec(), (id, 1));
        Ok(id)
    }

    fn release(&mut self, members: &[u32]) {
        let Some((id, users)) = self.by_members.get_mut(members) else {
            return;
        };
        *users -= 1;
        if *users == 0 {
            self.free.push(*id);
            self.by_members.remove(members);
        }
    }
}

/// Fills the buckets with the members in turn, so each gets its share.
pub fn buckets(members: &[u32]) -> NexthopGroup {
    let mut group = NexthopGroup::default();
    for (i, bucket) in group.buckets.iter_mut().enumerate() {
        *bucket = members[i % members.len()];
    }
    debug_assert!(members.len() <= ECMP_BUCKETS);
    group
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(prefix: &str, best: Option<Action>) -> Change {
        Change {
            prefix: prefix.parse().unwrap(),
            best,
        }
    }

    #[test]
    fn groups_are_shared_and_freed() {
        let mut fib = Fib::default();
        let mut writes = Vec::new();
        let ecmp = Action::Nexthops(vec![1, 2]);
        fib.apply(&change("198.18.9.0/24", Some(ecmp.clone())), &mut writes)
            .unwrap();
        fib.apply(&change("198.18.10.0/24", Some(ecmp.clone())), &mut writes)
            .unwrap();
        let group = RouteTarget::new(Route::Group(0));
        assert_eq!(
            writes,
            [
                MapWrite::Group(0, Box::new(buckets(&[1, 2]))),
                MapWrite::Route("198.18.9.0/24".parse().unwrap(), RouteEntry::new(group, 24)),
                MapWrite::Route(
                    "198.18.10.0/24".parse().unwrap(),
                    RouteEntry::new(group, 24)
                ),
            ]
        );
        assert_eq!(buckets(&[1, 2]).buckets[..4], [1, 2, 1, 2]);
        assert_eq!(fib.groups(), 1);

        writes.clear();
        fib.apply(&change("198.18.9.0/24", None), &mut writes)
            .unwrap();
        assert_eq!(fib.groups(), 1);
        fib.apply(
            &change("198.18.10.0/24", Some(Action::Nexthops(vec![4]))),
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
            &change("2001:2::/48", Some(Action::Nexthops(vec![5, 6, 7]))),
            &mut writes,
        )
        .unwrap();
        assert_eq!(writes[0], MapWrite::Group(0, Box::new(buckets(&[5, 6, 7]))));
    }
}
