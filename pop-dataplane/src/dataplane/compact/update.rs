//! Changes: the cells brought in line with the route indexes after one route changed, the
//! new path published with one store.

use pop_dataplane_common::fib::{
    DIRECT_BITS, FibEntry, GROUP_CHILDREN, NODE_CELLS, group, group_child, group_vector,
};

use super::{Cells, Full, Table};

impl<C: Cells> Table<C> {
    /// Brings the cells in line with the indexes after a change of the route `addr`/`len`.
    pub(super) fn refresh(&mut self, addr: u128, len: u32) -> Result<(), Full> {
        let mut released = Vec::new();
        if len <= DIRECT_BITS {
            let first = (self.value(addr, len) << (DIRECT_BITS - len)) as u32;
            for slot in first..first + (1 << (DIRECT_BITS - len)) {
                self.refresh_direct(slot, &mut released)?;
            }
        } else {
            self.refresh_path(addr, len, &mut released)?;
        }
        for (first, size) in released {
            self.alloc.release(first, size);
        }
        Ok(())
    }

    /// Rebuilds direct entry `slot` and everything under it.
    fn refresh_direct(&mut self, slot: u32, released: &mut Vec<(u32, u32)>) -> Result<(), Full> {
        let region = u128::from(slot);
        let default = self.covering(DIRECT_BITS, region);
        let old = self.direct(slot);
        let new = if self.longer_under(DIRECT_BITS, region) > 0 {
            let record = self.make_node(DIRECT_BITS, region, default, None, released)?;
            FibEntry::next(self.place_root(&record)?)
        } else {
            default
        };
        if new != old {
            self.set_direct(slot, new);
        }
        if old.is_next() {
            self.release_subtree(old.cell(), released);
            released.push((old.cell(), NODE_CELLS));
        }
        Ok(())
    }

    /// After a change of a route longer than the direct array's bits: rebuilds the deepest
    /// node above it that stays a node, then copies the path up to the direct entry.
    fn refresh_path(
        &mut self,
        addr: u128,
        len: u32,
        released: &mut Vec<(u32, u32)>,
    ) -> Result<(), Full> {
        let slot = (addr >> (self.bits - DIRECT_BITS)) as u32;
        // The nodes on the way down now: (depth, region, record's cell).
        let mut path = Vec::new();
        let mut entry = self.direct(slot);
        let mut depth = DIRECT_BITS;
        while entry.is_next() && depth < len {
            path.push((depth, self.value(addr, depth), entry.cell()));
            if len <= depth + 8 {
                break;
            }
            let byte = self.byte_at(addr, depth);
            let record = self.read_record(entry.cell());
            match group_child(
                &record[byte as usize / GROUP_CHILDREN],
                byte % GROUP_CHILDREN as u32,
            ) {
                Ok(child) => entry = FibEntry::next(child),
                Err(_) => break,
            }
            depth += 8;
        }
        while path
            .last()
            .is_some_and(|&(depth, region, _)| self.longer_under(depth, region) == 0)
        {
            path.pop();
        }
        let Some((depth, region, at)) = path.pop() else {
            return self.refresh_direct(slot, released);
        };
        // The child slots whose subtrees the change reaches.
        let covered = if len <= depth + 8 {
            let first = ((self.value(addr, len) << (depth + 8 - len)) & 0xff) as u32;
            first..first + (1 << (depth + 8 - len))
        } else {
            let byte = self.byte_at(addr, depth);
            byte..byte + 1
        };
        let old = self.read_record(at);
        let default = self.covering(depth, region);
        let mut record = self.make_node(depth, region, default, Some((&old, covered)), released)?;
        // Up the path: each parent copied with its new child in a new children array.
        let mut child_at = at;
        for &(depth, _, parent_at) in path.iter().rev() {
            let byte = self.byte_at(addr, depth);
            let mut parent = self.read_record(parent_at);
            let group = &mut parent[byte as usize / GROUP_CHILDREN];
            let base = group[group::BASE_NODE];
            let count = group_vector(group).count_ones();
            let array = self.alloc(count * NODE_CELLS)?;
            for k in 0..count {
                let from = base + k * NODE_CELLS;
                let copy = if from == child_at {
                    record
                } else {
                    self.read_record(from)
                };
                self.write_record(array + k * NODE_CELLS, &copy);
            }
            group[group::BASE_NODE] = array;
            released.push((base, count * NODE_CELLS));
            record = parent;
            child_at = parent_at;
        }
        let root = self.place_root(&record)?;
        self.set_direct(slot, FibEntry::next(root));
        released.push((child_at, NODE_CELLS));
        Ok(())
    }
}
