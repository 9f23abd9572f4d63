//! Kernel nexthop objects in the FIB: each a group of its own while routes use it, whose
//! buckets follow the object's members, so that a change of the object moves every route
//! through it with one write.

use super::{Fib, FibFull, Group, buckets};
use crate::control::{plan::MapWrite, rib::NexthopSet};

/// A kernel nexthop object as the FIB keeps it.
#[derive(Debug, Default)]
pub(super) struct Object {
    /// The next hops it forwards through now: none when the fast path cannot take it (the
    /// group's buckets then hold no next hop, and its packets go to the kernel).
    pub(super) members: NexthopSet,
    /// Its group, while routes use it.
    pub(super) group: Option<Group>,
}

impl Fib {
    /// One route fewer through object `id`: its group freed with the last.
    pub(super) fn release_object(&mut self, id: u32) {
        let object = self.objects.get_mut(&id).expect("object_groups agrees");
        let group = object
            .group
            .as_mut()
            .expect("a group in object_groups is live");
        group.users -= 1;
        if group.users == 0 {
            let group_id = group.id;
            object.group = None;
            self.object_groups.remove(&group_id);
            self.groups.free.push(group_id);
            if object.members.is_empty() {
                self.objects.remove(&id);
            }
        }
    }

    /// The group of object `id` for one more route: taken, and written, for its first.
    pub(super) fn acquire_object(
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
            writes.extend(group.rebucket(&object.members, usable));
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
}
