//! Writing nodes: a whole table from the route indexes, or one node (and what it needs below
//! it) for a change; and letting go of what a replaced node held.

use std::ops::Range;

use pop_dataplane_common::fib::{
    CELL_WORDS, DIRECT_BITS, FibEntry, GROUP_CHILDREN, NODE_CELLS, NODE_CHILDREN, group,
    group_child, group_leafvec, group_vector,
};

use smallvec::SmallVec;

use super::{Cells, Full, Record, Table};

impl<C: Cells> Table<C> {
    /// Writes the whole table from the indexes: the direct array and every node.
    pub(super) fn fill(&mut self) -> Result<(), Full> {
        let mut direct = vec![FibEntry::EMPTY; 1 << DIRECT_BITS];
        for len in 0..=DIRECT_BITS {
            for (&value, &leaf) in &self.short[len as usize] {
                let first = (value << (DIRECT_BITS - len)) as usize;
                direct[first..first + (1 << (DIRECT_BITS - len))].fill(leaf);
            }
        }
        let roots: Vec<u128> = self
            .longer
            .first()
            .map(|map| map.keys().copied().collect())
            .unwrap_or_default();
        for region in roots {
            let slot = region as usize;
            let record =
                self.make_node(DIRECT_BITS, region, direct[slot], None, &mut Vec::new())?;
            direct[slot] = FibEntry::next(self.place_root(&record)?);
        }
        for (slot, entry) in direct.into_iter().enumerate() {
            self.set_direct(slot as u32, entry);
        }
        Ok(())
    }

    /// A run holding `record` alone: a root, pointed at by a direct entry.
    pub(super) fn place_root(&mut self, record: &Record) -> Result<u32, Full> {
        let at = self.alloc(NODE_CELLS)?;
        self.write_record(at, record);
        Ok(at)
    }

    /// The record of the node for region `region` at `depth`, its children and leaves
    /// written (a node's record itself goes where its parent keeps it). Leaves not covered by
    /// a route under the region take `default`. With `old` (the node's record now, and the
    /// child slots a change covers), the old node's children outside the covered slots are
    /// kept as they are; what the old node held and the new one does not is added to
    /// `released`.
    pub(super) fn make_node(
        &mut self,
        depth: u32,
        region: u128,
        default: FibEntry,
        old: Option<(&Record, Range<u32>)>,
        released: &mut Vec<(u32, u32)>,
    ) -> Result<Record, Full> {
        // Leaves of every slot, pushed down from the routes ending within this node.
        let mut leaves = [default; NODE_CHILDREN];
        // The length of the route each slot's leaf came from: the longest wins.
        let mut lengths = [0u8; NODE_CHILDREN];
        for &(len, bits, leaf) in self.ending.get(&(depth, region)).into_iter().flatten() {
            let shift = depth + 8 - u32::from(len);
            let first = usize::from(bits) << shift;
            for slot in first..first + (1 << shift) {
                if lengths[slot] < len {
                    lengths[slot] = len;
                    leaves[slot] = leaf;
                }
            }
        }
        // Children that are nodes: routes longer than their depth under them.
        let mut is_node = [false; NODE_CHILDREN];
        if depth + 8 < self.bits {
            let level = ((depth + 8 - DIRECT_BITS) / 8) as usize;
            let low = region << 8;
            for (&child, _) in self.longer[level].range(low..=low | 0xff) {
                is_node[(child & 0xff) as usize] = true;
            }
        }
        // Most nodes have a few children that are nodes: kept inline, no allocation.
        let mut children: SmallVec<[Record; 4]> = SmallVec::new();
        for slot in 0..NODE_CHILDREN as u32 {
            if !is_node[slot as usize] {
                continue;
            }
            let kept = old.as_ref().and_then(|(record, covered)| {
                if covered.contains(&slot) {
                    return None;
                }
                let group = &record[slot as usize / GROUP_CHILDREN];
                group_child(group, slot % GROUP_CHILDREN as u32)
                    .ok()
                    .map(|at| self.read_record(at))
            });
            let child = match kept {
                Some(record) => record,
                None => self.make_node(
                    depth + 8,
                    (region << 8) | u128::from(slot),
                    leaves[slot as usize],
                    None,
                    released,
                )?,
            };
            children.push(child);
        }
        if let Some((record, covered)) = &old {
            self.release_old_node(record, covered, &is_node, released);
        }
        self.write_node(depth, &leaves, &is_node, &children)
    }

    /// What an old node's record holds and its replacement does not: its children arrays and
    /// leaf array, and the whole subtrees of the children that were rebuilt (in `covered`)
    /// or are nodes no more.
    fn release_old_node(
        &self,
        record: &Record,
        covered: &Range<u32>,
        is_node: &[bool; NODE_CHILDREN],
        released: &mut Vec<(u32, u32)>,
    ) {
        for slot in 0..NODE_CHILDREN as u32 {
            let group = &record[slot as usize / GROUP_CHILDREN];
            if let Ok(at) = group_child(group, slot % GROUP_CHILDREN as u32)
                && (covered.contains(&slot) || !is_node[slot as usize])
            {
                self.release_subtree(at, released);
            }
        }
        self.release_arrays(record, released);
    }

    /// The arrays of the node at `at` and of every node below it (not the record itself,
    /// which its parent's array holds).
    pub(super) fn release_subtree(&self, at: u32, released: &mut Vec<(u32, u32)>) {
        let record = self.read_record(at);
        for group in &record {
            for child in 0..group_vector(group).count_ones() {
                self.release_subtree(group[group::BASE_NODE] + child * NODE_CELLS, released);
            }
        }
        self.release_arrays(&record, released);
    }

    /// A record's own arrays: each group's children array and the node's leaf array.
    fn release_arrays(&self, record: &Record, released: &mut Vec<(u32, u32)>) {
        let mut leaves = 0;
        for group in record {
            let children = group_vector(group).count_ones();
            if children > 0 {
                released.push((group[group::BASE_NODE], children * NODE_CELLS));
            }
            leaves += group_leafvec(group).count_ones();
        }
        if leaves > 0 {
            released.push((
                record[0][group::BASE_LEAF] / CELL_WORDS as u32,
                leaves.div_ceil(CELL_WORDS as u32),
            ));
        }
    }

    /// Writes the children arrays (one per group) and the leaf array of the node at `depth`;
    /// its record.
    fn write_node(
        &mut self,
        depth: u32,
        leaves: &[FibEntry; NODE_CHILDREN],
        is_node: &[bool; NODE_CHILDREN],
        children: &[Record],
    ) -> Result<Record, Full> {
        // Leaf runs: a run starts at each leaf child whose leaf comes from another route than
        // the previous leaf child's in its group. Two routes of the same length and target
        // have equal leaves but get runs of their own, so that a route's leaf can be replaced
        // in place (`replace_leaf`). At most one run per child: on the stack.
        let mut runs = [FibEntry::EMPTY; NODE_CHILDREN];
        let mut run_count = 0;
        let mut record: Record = [[0; CELL_WORDS]; NODE_CELLS as usize];
        let mut group_runs = [0u32; NODE_CELLS as usize];
        let mut next_child = 0;
        for (g, cell) in record.iter_mut().enumerate() {
            let (mut vector, mut leafvec) = (0u64, 0u64);
            let mut previous: Option<(FibEntry, usize)> = None;
            group_runs[g] = run_count as u32;
            for i in 0..GROUP_CHILDREN {
                let slot = g * GROUP_CHILDREN + i;
                if is_node[slot] {
                    vector |= 1 << i;
                } else if previous.is_none_or(|(leaf, at)| {
                    leaf != leaves[slot] || !same_route(depth, leaf, at, slot)
                }) {
                    leafvec |= 1 << i;
                    runs[run_count] = leaves[slot];
                    run_count += 1;
                    previous = Some((leaves[slot], slot));
                }
            }
            let count = vector.count_ones() as usize;
            if count > 0 {
                let at = self.alloc(count as u32 * NODE_CELLS)?;
                for (k, child) in children[next_child..next_child + count].iter().enumerate() {
                    self.write_record(at + k as u32 * NODE_CELLS, child);
                }
                cell[group::BASE_NODE] = at;
                next_child += count;
            }
            cell[group::VECTOR] = vector as u32;
            cell[group::VECTOR + 1] = (vector >> 32) as u32;
            cell[group::LEAFVEC] = leafvec as u32;
            cell[group::LEAFVEC + 1] = (leafvec >> 32) as u32;
        }
        let first_word = if run_count == 0 {
            0
        } else {
            let at = self.alloc((run_count as u32).div_ceil(CELL_WORDS as u32))?;
            let first_word = at * CELL_WORDS as u32;
            for (k, run) in runs[..run_count].iter().enumerate() {
                self.write_word(first_word + k as u32, *run);
            }
            first_word
        };
        for (cell, runs_before) in record.iter_mut().zip(group_runs) {
            cell[group::BASE_LEAF] = first_word + runs_before;
        }
        Ok(record)
    }
}

/// Whether child slots `a` and `b` of a node at `depth`, both holding `leaf`, hold it from
/// the same route: a route no longer than the depth covers the whole node; a longer one
/// covers the slots that agree in its bits past the depth.
fn same_route(depth: u32, leaf: FibEntry, a: usize, b: usize) -> bool {
    let len = u32::from(leaf.prefix_len());
    len <= depth || (a ^ b) >> (depth + 8 - len) == 0
}
