//! The next-hop registry: every next hop in use, by identity (interface and neighbour), with
//! its id in `NEXTHOPS` and what is known of its neighbour's MAC. Routes hold next hops by
//! id; an id lives while something uses it, and is never reused for another next hop while
//! any route table may still point at it.

use std::{collections::BTreeMap, net::IpAddr};

use pop_dataplane_common::maps::MAX_NEXTHOPS;

use crate::mac::MacAddr;

/// Who a next hop sends to, on which interface: what makes two next hops the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NexthopKey {
    /// A router interface name (`[[interface]]`).
    pub dev: String,
    pub neighbour: Neighbour,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Neighbour {
    /// Known by address; its MAC comes from the kernel's neighbour table, or is static.
    Via(IpAddr),
    /// Known only by a static MAC.
    Mac(MacAddr),
}

impl std::fmt::Display for NexthopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.neighbour {
            Neighbour::Via(addr) => write!(f, "via {addr} dev {}", self.dev),
            Neighbour::Mac(mac) => write!(f, "lladdr {mac} dev {}", self.dev),
        }
    }
}

/// A next hop as people know it, for the counters shown by id: its `[[nexthop]]` name
/// where it has one, else its neighbour's address (or MAC); and its interface.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct NamedNexthop {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) dev: String,
    /// `name` is the config's.
    pub(crate) configured: bool,
}

impl NamedNexthop {
    /// How `top` and the tables show it: the name, or the address with its interface.
    pub(crate) fn label(&self) -> String {
        if self.configured {
            self.name.clone()
        } else {
            format!("{} dev {}", self.name, self.dev)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NexthopEntry {
    pub key: NexthopKey,
    /// A MAC given in the config: used whatever the neighbour table says.
    pub static_mac: Option<MacAddr>,
    /// The MAC the kernel's neighbour table has for `via`, if any.
    pub learned_mac: Option<MacAddr>,
    /// Routes and config entries holding it.
    users: usize,
}

impl NexthopEntry {
    /// The MAC to send to, if known.
    pub(crate) fn mac(&self) -> Option<MacAddr> {
        self.static_mac.or(self.learned_mac)
    }

    pub(crate) fn via(&self) -> Option<IpAddr> {
        match self.key.neighbour {
            Neighbour::Via(addr) => Some(addr),
            Neighbour::Mac(_) => None,
        }
    }
}

/// No room for another next hop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NexthopsFull;

impl std::fmt::Display for NexthopsFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {} next hops", MAX_NEXTHOPS - 1)
    }
}

impl std::error::Error for NexthopsFull {}

#[derive(Debug, Default)]
pub(crate) struct Nexthops {
    entries: BTreeMap<u32, NexthopEntry>,
    by_key: foldhash::HashMap<NexthopKey, u32>,
    /// Ids freed, reusable; and the next never used. Id 0 is never used, so that an all-zero
    /// map entry means "no next hop".
    free: Vec<u32>,
    next: u32,
    /// Ids the maps held before this registry existed (a restarted daemon adopting a running
    /// dataplane): not handed out, so the old tables stay right until they are swapped out.
    reserved: std::collections::BTreeSet<u32>,
    /// What the kernel's neighbour table says of every neighbour on the interfaces, used by a
    /// next hop or not: a next hop created later starts with its MAC, so that routes moved to
    /// it take traffic at once rather than wait for a neighbour event that may never come.
    neighbours: foldhash::HashMap<(String, IpAddr), MacAddr>,
}

impl Nexthops {
    /// A registry that hands out no id in `reserved`.
    pub(crate) fn avoiding(reserved: impl IntoIterator<Item = u32>) -> Self {
        Self {
            reserved: reserved.into_iter().collect(),
            ..Self::default()
        }
    }

    /// The id of the next hop `key`, adding it if new; one more user. A static MAC given
    /// here replaces the one it had.
    pub(crate) fn acquire(
        &mut self,
        key: &NexthopKey,
        static_mac: Option<MacAddr>,
    ) -> Result<u32, NexthopsFull> {
        if let Some(&id) = self.by_key.get(key) {
            let entry = self.entries.get_mut(&id).expect("by_key and entries agree");
            entry.users += 1;
            if static_mac.is_some() {
                entry.static_mac = static_mac;
            }
            return Ok(id);
        }
        let id = self.allocate()?;
        let learned_mac = match key.neighbour {
            Neighbour::Via(addr) => self.neighbours.get(&(key.dev.clone(), addr)).copied(),
            Neighbour::Mac(_) => None,
        };
        self.entries.insert(
            id,
            NexthopEntry {
                key: key.clone(),
                static_mac,
                learned_mac,
                users: 1,
            },
        );
        self.by_key.insert(key.clone(), id);
        Ok(id)
    }

    fn allocate(&mut self) -> Result<u32, NexthopsFull> {
        if let Some(id) = self.free.pop() {
            return Ok(id);
        }
        loop {
            self.next += 1;
            if self.next >= MAX_NEXTHOPS {
                return Err(NexthopsFull);
            }
            if !self.reserved.contains(&self.next) {
                return Ok(self.next);
            }
        }
    }

    /// One more user of next hop `id`, which exists.
    pub(crate) fn hold(&mut self, id: u32) {
        self.entries.get_mut(&id).expect("held next hop").users += 1;
    }

    /// One user fewer; the next hop goes away with its last user. Returns whether it did.
    pub(crate) fn release(&mut self, id: u32) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else {
            return false;
        };
        entry.users -= 1;
        if entry.users > 0 {
            return false;
        }
        let entry = self.entries.remove(&id).expect("present");
        self.by_key.remove(&entry.key);
        self.free.push(id);
        true
    }

    /// The reserved ids are no longer in any table: hand them out again.
    pub(crate) fn unreserve(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.reserved).into_iter().collect()
    }

    pub(crate) fn get(&self, id: u32) -> Option<&NexthopEntry> {
        self.entries.get(&id)
    }

    pub(crate) fn id(&self, key: &NexthopKey) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &NexthopEntry)> {
        self.entries.iter().map(|(id, entry)| (*id, entry))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The kernel now says `addr` on interface `dev` has `mac` (`None`: unknown); the ids
    /// whose MAC changed.
    pub(crate) fn learned(&mut self, dev: &str, addr: IpAddr, mac: Option<MacAddr>) -> Vec<u32> {
        match mac {
            Some(mac) => self.neighbours.insert((dev.to_owned(), addr), mac),
            None => self.neighbours.remove(&(dev.to_owned(), addr)),
        };
        let key = NexthopKey {
            dev: dev.to_owned(),
            neighbour: Neighbour::Via(addr),
        };
        let Some(&id) = self.by_key.get(&key) else {
            return Vec::new();
        };
        let entry = self.entries.get_mut(&id).expect("by_key and entries agree");
        if entry.learned_mac == mac {
            return Vec::new();
        }
        entry.learned_mac = mac;
        vec![id]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(dev: &str, addr: &str) -> NexthopKey {
        NexthopKey {
            dev: dev.to_owned(),
            neighbour: Neighbour::Via(addr.parse().unwrap()),
        }
    }

    #[test]
    fn ids_live_while_used_and_skip_reserved_ones() {
        let mut nexthops = Nexthops::avoiding([2]);
        let a = nexthops.acquire(&via("rb", "198.18.2.2"), None).unwrap();
        let b = nexthops.acquire(&via("rb", "198.18.2.3"), None).unwrap();
        assert_eq!((a, b), (1, 3), "0 is never used, 2 is reserved");
        assert_eq!(
            nexthops.acquire(&via("rb", "198.18.2.2"), None),
            Ok(a),
            "same identity"
        );
        assert!(!nexthops.release(a));
        assert!(nexthops.release(a));
        assert_eq!(nexthops.id(&via("rb", "198.18.2.2")), None);
        // The freed id comes back for the next one.
        assert_eq!(nexthops.acquire(&via("rc", "198.18.12.2"), None), Ok(1));
        assert_eq!(nexthops.unreserve(), [2]);
    }

    #[test]
    fn learned_macs_apply_to_via_next_hops_and_static_macs_win() {
        let mut nexthops = Nexthops::default();
        let mac = |last| MacAddr([2, 0, 0, 0, 0, last]);
        let learned = nexthops.acquire(&via("rb", "198.18.2.2"), None).unwrap();
        let fixed = nexthops
            .acquire(&via("rb", "198.18.2.3"), Some(mac(3)))
            .unwrap();
        assert_eq!(
            nexthops.learned("rb", "198.18.2.2".parse().unwrap(), Some(mac(9))),
            [learned]
        );
        assert!(
            nexthops
                .learned("rb", "198.18.2.2".parse().unwrap(), Some(mac(9)))
                .is_empty()
        );
        assert!(
            nexthops
                .learned("rc", "198.18.2.2".parse().unwrap(), Some(mac(9)))
                .is_empty()
        );
        assert_eq!(
            nexthops.learned("rb", "198.18.2.3".parse().unwrap(), Some(mac(7))),
            [fixed]
        );
        assert_eq!(nexthops.get(learned).unwrap().mac(), Some(mac(9)));
        assert_eq!(nexthops.get(fixed).unwrap().mac(), Some(mac(3)));
        assert_eq!(
            nexthops.learned("rb", "198.18.2.2".parse().unwrap(), None),
            [learned]
        );
        assert_eq!(nexthops.get(learned).unwrap().mac(), None);
    }

    #[test]
    fn a_next_hop_created_after_its_neighbour_starts_resolved() {
        let mut nexthops = Nexthops::default();
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let addr = "198.18.2.2".parse().unwrap();
        assert!(nexthops.learned("rb", addr, Some(mac)).is_empty());
        let id = nexthops.acquire(&via("rb", "198.18.2.2"), None).unwrap();
        assert_eq!(nexthops.get(id).unwrap().mac(), Some(mac));
        // Released, the entry goes; the neighbour stays known.
        assert!(nexthops.release(id));
        let id = nexthops.acquire(&via("rb", "198.18.2.2"), None).unwrap();
        assert_eq!(nexthops.get(id).unwrap().mac(), Some(mac));
        // Another interface's neighbour of the same address is another neighbour.
        let other = nexthops.acquire(&via("rc", "198.18.2.2"), None).unwrap();
        assert_eq!(nexthops.get(other).unwrap().mac(), None);
        // Gone from the kernel's table: a next hop made afterwards waits for resolution.
        nexthops.learned("rb", addr, None);
        assert!(nexthops.release(id));
        let id = nexthops.acquire(&via("rb", "198.18.2.2"), None).unwrap();
        assert_eq!(nexthops.get(id).unwrap().mac(), None);
    }
}
