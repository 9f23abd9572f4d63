//! Changes: the cells brought in line with the route indexes after one route changed, the
//! new path published with one store; or, when only a route's leaf changed, its leaves
//! rewritten where they are.

use std::ops::Range;

use pop_dataplane_common::fib::{
    DIRECT_BITS, FibEntry, GROUP_CHILDREN, NODE_CELLS, NODE_CHILDREN, group, group_child,
    group_vector,
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

    /// After the leaf of the route `addr`/`len` changed from `old` to `new`, its prefix the
    /// same: rewrites in place the direct entries and leaf words under the prefix that hold
    /// `old`, each with one 4-byte store, so that a lookup finds the old leaf or the new
    /// one. Under the prefix, a leaf of its length can only be its own, so those are exactly
    /// its leaves. A run's word serves the run's slots alone, and runs end where routes do
    /// (`write_node`), so no slot outside the prefix reads a word rewritten here; should one,
    /// nothing is written and false returned, and the caller rebuilds instead.
    pub(super) fn replace_leaf(&self, addr: u128, len: u32, old: FibEntry, new: FibEntry) -> bool {
        let mut direct = Vec::new();
        let mut words = Vec::new();
        if len <= DIRECT_BITS {
            let first = (self.value(addr, len) << (DIRECT_BITS - len)) as u32;
            for slot in first..first + (1 << (DIRECT_BITS - len)) {
                let entry = self.direct(slot);
                if entry == old {
                    direct.push(slot);
                } else if entry.is_next()
                    && !self.leaves_holding(entry.cell(), 0..NODE_CHILDREN as u32, old, &mut words)
                {
                    return false;
                }
            }
        } else {
            // Down to the node the prefix ends within.
            let mut entry = self.direct((addr >> (self.bits - DIRECT_BITS)) as u32);
            let mut depth = DIRECT_BITS;
            while len > depth + 8 {
                if !entry.is_next() {
                    return false;
                }
                let byte = self.byte_at(addr, depth);
                let cell = self.read_cell(entry.cell() + byte / GROUP_CHILDREN as u32);
                match group_child(&cell, byte % GROUP_CHILDREN as u32) {
                    Ok(child) => entry = FibEntry::next(child),
                    Err(_) => return false,
                }
                depth += 8;
            }
            if !entry.is_next() {
                return false;
            }
            let first = ((self.value(addr, len) << (depth + 8 - len)) & 0xff) as u32;
            let slots = first..first + (1 << (depth + 8 - len));
            if !self.leaves_holding(entry.cell(), slots, old, &mut words) {
                return false;
            }
        }
        for word in words {
            self.write_word(word, new);
        }
        for slot in direct {
            self.set_direct(slot, new);
        }
        true
    }

    /// Adds to `words` the leaf words holding `leaf` of child slots `slots` of the node at
    /// `at`, and of every node below those slots. False when such a word also serves a slot
    /// outside `slots`.
    fn leaves_holding(
        &self,
        at: u32,
        slots: Range<u32>,
        leaf: FibEntry,
        words: &mut Vec<u32>,
    ) -> bool {
        let record = self.read_record(at);
        for (g, cell) in record.iter().enumerate() {
            let base = g as u32 * GROUP_CHILDREN as u32;
            let (from, to) = (
                slots.start.max(base),
                slots.end.min(base + GROUP_CHILDREN as u32),
            );
            if from >= to {
                continue;
            }
            let (from, to) = (from - base, to - base);
            let mut first_word = None;
            let mut last_word = None;
            for i in from..to {
                match group_child(cell, i) {
                    Ok(child) => {
                        if !self.leaves_holding(child, 0..NODE_CHILDREN as u32, leaf, words) {
                            return false;
                        }
                    }
                    Err(word) => {
                        first_word.get_or_insert(word);
                        last_word = Some(word);
                        if self.read_word(word) == leaf && words.last() != Some(&word) {
                            words.push(word);
                        }
                    }
                }
            }
            // The leaf children just outside the slots, in this group (runs never cross
            // groups): a run of `leaf` reaching them shares its word.
            let leaf_children = !group_vector(cell);
            let before = leaf_children & ((1u64 << from) - 1);
            let after = leaf_children & u64::MAX.checked_shl(to).unwrap_or(0);
            let shares = |outside: u32, inside: Option<u32>| {
                matches!(group_child(cell, outside), Err(word)
                    if Some(word) == inside && self.read_word(word) == leaf)
            };
            if (before != 0 && shares(63 - before.leading_zeros(), first_word))
                || (after != 0 && shares(after.trailing_zeros(), last_word))
            {
                return false;
            }
        }
        true
    }
}
