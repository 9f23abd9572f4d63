//! ECMP groups: shared by every route over the same next-hop set, freed with the last of
//! them; and their buckets.

use foldhash::HashMap;
use pop_dataplane_common::{NexthopGroup, maps::MAX_NEXTHOP_GROUPS, nexthop::ECMP_BUCKETS};

use super::FibFull;
use crate::control::{plan::MapWrite, rib::NexthopSet};

#[derive(Debug, Default)]
pub(super) struct Groups {
    /// Member set -> group.
    pub(super) by_members: HashMap<NexthopSet, Group>,
    /// Group id -> member set.
    pub(super) by_id: HashMap<u32, NexthopSet>,
    pub(super) free: Vec<u32>,
    pub(super) next: u32,
    /// Ids a running dataplane held when this daemon adopted it: avoided until swapped out.
    pub(super) reserved: std::collections::BTreeSet<u32>,
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) id: u32,
    /// Routes using it.
    pub(super) users: usize,
    /// Its buckets as last written.
    pub(super) buckets: NexthopGroup,
}

impl Groups {
    pub(super) fn acquire(
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
    pub(super) fn take_id(&mut self) -> Result<u32, FibFull> {
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

    pub(super) fn release(&mut self, id: u32) {
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

impl Group {
    /// Gives the group the buckets of `members` now; the write, if they changed.
    pub(super) fn rebucket(
        &mut self,
        members: &[u32],
        usable: &dyn Fn(u32) -> bool,
    ) -> Option<MapWrite> {
        let buckets = buckets(members, usable);
        (buckets != self.buckets).then(|| {
            self.buckets = buckets;
            MapWrite::Group(self.id, Box::new(buckets))
        })
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
