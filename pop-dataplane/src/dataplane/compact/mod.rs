//! The compiled FIB's tables (see `pop_dataplane_common::fib` for the layout the program
//! reads), kept by userspace: built whole for a bulk load, changed route by route in place.
//!
//! Userspace keeps the routes by prefix length, and per node depth how many routes longer
//! than the depth lie under each region: a child is a node exactly when that count is not
//! zero. A change rebuilds the deepest node still above the changed prefix (reusing the
//! children it did not cover), copies the path above it, and publishes the new path with one
//! store: the direct entry. What the old path held goes to the allocator's quarantine.
//!
//! The same code builds tables in memory (a new table, before it is copied into a fresh BPF
//! array; the tests) and edits them in a BPF array mapped into the daemon.

mod alloc;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    ops::Range,
    sync::atomic::{AtomicU32, Ordering},
};

use pop_dataplane_common::{
    RouteEntry,
    fib::{
        CELL_WORDS, Cell, DIRECT_BITS, DIRECT_CELLS, FibEntry, GROUP_CHILDREN, NODE_CELLS,
        NODE_CHILDREN, group, group_child,
    },
};

use self::alloc::Allocator;
pub(crate) use self::alloc::Full;

/// A cell as userspace writes it: word by word, each an atomic store.
pub(crate) type AtomicCell = [AtomicU32; CELL_WORDS];

/// Where a table's cells live.
pub(crate) trait Cells {
    fn cells(&self) -> &[AtomicCell];
    /// Makes room for `cells` cells in all; false when the storage cannot grow.
    fn grow(&mut self, cells: u32) -> bool;
}

/// Cells in memory, growing on demand.
#[derive(Default)]
pub(crate) struct MemoryCells(Vec<AtomicCell>);

impl Cells for MemoryCells {
    fn cells(&self) -> &[AtomicCell] {
        &self.0
    }

    fn grow(&mut self, cells: u32) -> bool {
        let cells = cells as usize;
        if cells > self.0.len() {
            self.0.resize_with(cells, Default::default);
        }
        true
    }
}

/// A node's record: its four group cells.
type Record = [Cell; NODE_CELLS as usize];

/// The lookup leaf of a route.
pub(crate) fn leaf(entry: RouteEntry) -> FibEntry {
    FibEntry::leaf(entry).expect("route ids fit a leaf (checked at compile time)")
}

/// One family's table.
pub(crate) struct Table<C> {
    /// Address bits: 32 or 128. An IPv4 address is the low 32 bits of the u128.
    bits: u32,
    cells: C,
    alloc: Allocator,
    /// Routes by prefix length: the prefix's top `len` bits -> its leaf.
    routes: Vec<BTreeMap<u128, FibEntry>>,
    /// By node level (depth `DIRECT_BITS + 8 * level`): the region's top `depth` bits ->
    /// routes longer than `depth` under it.
    longer: Vec<BTreeMap<u128, u32>>,
}

impl Table<MemoryCells> {
    /// A table of `bits`-bit addresses holding `routes` (address, prefix length, leaf), in
    /// memory.
    pub(crate) fn build_in_memory(
        bits: u32,
        routes: impl IntoIterator<Item = (u128, u8, FibEntry)>,
    ) -> Self {
        let mut cells = MemoryCells::default();
        cells.grow(DIRECT_CELLS * 2);
        let mut table = Self::empty(bits, cells, DIRECT_CELLS * 2);
        for (addr, len, leaf) in routes {
            table.index(addr, u32::from(len), leaf);
        }
        table.fill().expect("memory grows");
        table
    }
}

impl<C: Cells> Table<C> {
    fn empty(bits: u32, cells: C, capacity: u32) -> Self {
        let levels = ((bits - DIRECT_BITS) / 8) as usize;
        Self {
            bits,
            cells,
            alloc: Allocator::new(DIRECT_CELLS, capacity),
            routes: vec![BTreeMap::new(); bits as usize + 1],
            longer: vec![BTreeMap::new(); levels],
        }
    }

    /// The same table in other storage, which must hold at least [`Table::high_water`]
    /// cells: every cell copied to the same place.
    pub(crate) fn copy_to<D: Cells>(&self, mut cells: D) -> Table<D> {
        let high = self.alloc.high_water();
        let capacity = cells.cells().len() as u32;
        assert!(capacity >= high, "the copy must hold every cell handed out");
        for (from, to) in self.cells.cells()[..high as usize]
            .iter()
            .zip(cells.cells())
        {
            for (a, b) in from.iter().zip(to) {
                b.store(a.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        cells.grow(capacity);
        let mut alloc = self.alloc.clone();
        alloc.set_capacity(capacity);
        Table {
            bits: self.bits,
            cells,
            alloc,
            routes: self.routes.clone(),
            longer: self.longer.clone(),
        }
    }

    pub(crate) fn storage(&self) -> &C {
        &self.cells
    }

    /// Cells handed out so far (the direct array's included): what a copy must hold.
    pub(crate) fn high_water(&self) -> u32 {
        self.alloc.high_water()
    }

    /// Cells in use now (the direct array's included).
    #[cfg(test)]
    pub(crate) fn cells_in_use(&self) -> u64 {
        self.alloc.in_use()
    }

    /// Adds or replaces the route of `addr`/`len`. On `Err(Full)` the table is as it was for
    /// lookups; the caller moves it to larger storage and calls again.
    pub(crate) fn insert(&mut self, addr: u128, len: u8, leaf: FibEntry) -> Result<(), Full> {
        let len = u32::from(len);
        self.index(addr, len, leaf);
        self.refresh(addr, len)
    }

    /// Removes the route of `addr`/`len`, if there is one. `Err(Full)` as for `insert`.
    pub(crate) fn remove(&mut self, addr: u128, len: u8) -> Result<(), Full> {
        let len = u32::from(len);
        let value = self.value(addr, len);
        if self.routes[len as usize].remove(&value).is_some() {
            for (level, depth) in self.depths_below(len) {
                let region = self.value(addr, depth);
                let map = &mut self.longer[level];
                let count = map.get_mut(&region).expect("counted at insert");
                *count -= 1;
                if *count == 0 {
                    map.remove(&region);
                }
            }
        }
        self.refresh(addr, len)
    }

    /// Routes held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.routes.iter().map(BTreeMap::len).sum()
    }

    /// The leaf for `addr`, as the program finds it.
    #[cfg(test)]
    pub(crate) fn lookup(&self, addr: u128) -> FibEntry {
        let mut entry = self.direct((addr >> (self.bits - DIRECT_BITS)) as u32);
        let mut depth = DIRECT_BITS;
        while entry.is_next() {
            let slot = self.byte_at(addr, depth);
            let cell = self.read_cell(entry.cell() + slot / GROUP_CHILDREN as u32);
            match group_child(&cell, slot % GROUP_CHILDREN as u32) {
                Ok(record) => entry = FibEntry::next(record),
                Err(word) => return self.read_word(word),
            }
            depth += 8;
        }
        entry
    }

    // ---- The route indexes ------------------------------------------------------------------

    /// Records the route in the indexes (the cells change in `refresh`).
    fn index(&mut self, addr: u128, len: u32, leaf: FibEntry) {
        let value = self.value(addr, len);
        if self.routes[len as usize].insert(value, leaf).is_none() {
            for (level, depth) in self.depths_below(len) {
                let region = self.value(addr, depth);
                *self.longer[level].entry(region).or_insert(0) += 1;
            }
        }
    }

    /// The node levels and depths above a prefix of length `len`.
    fn depths_below(&self, len: u32) -> impl Iterator<Item = (usize, u32)> + use<C> {
        (0..self.longer.len())
            .map(|level| (level, DIRECT_BITS + 8 * level as u32))
            .filter(move |&(_, depth)| depth < len)
    }

    /// The top `len` bits of `addr`.
    fn value(&self, addr: u128, len: u32) -> u128 {
        if len == 0 {
            0
        } else {
            addr >> (self.bits - len)
        }
    }

    /// The 8 address bits after `depth`: the child slot at a node of that depth.
    fn byte_at(&self, addr: u128, depth: u32) -> u32 {
        ((addr >> (self.bits - depth - 8)) & 0xff) as u32
    }

    /// Routes longer than `depth` under the region `region` (its top `depth` bits).
    fn longer_under(&self, depth: u32, region: u128) -> u32 {
        let level = ((depth - DIRECT_BITS) / 8) as usize;
        self.longer
            .get(level)
            .and_then(|map| map.get(&region))
            .copied()
            .unwrap_or(0)
    }

    /// The leaf of the longest route of at most `depth` bits covering region `region`.
    fn covering(&self, depth: u32, region: u128) -> FibEntry {
        (0..=depth)
            .rev()
            .filter(|&len| !self.routes[len as usize].is_empty())
            .find_map(|len| {
                let value = if len == 0 { 0 } else { region >> (depth - len) };
                self.routes[len as usize].get(&value).copied()
            })
            .unwrap_or(FibEntry::EMPTY)
    }

    // ---- Cells -----------------------------------------------------------------------------

    fn read_cell(&self, at: u32) -> Cell {
        let cell = &self.cells.cells()[at as usize];
        std::array::from_fn(|i| cell[i].load(Ordering::Relaxed))
    }

    fn write_cell(&self, at: u32, value: &Cell) {
        for (word, value) in self.cells.cells()[at as usize].iter().zip(value) {
            word.store(*value, Ordering::Relaxed);
        }
    }

    fn read_word(&self, word: u32) -> FibEntry {
        FibEntry(
            self.cells.cells()[(word / CELL_WORDS as u32) as usize]
                [(word % CELL_WORDS as u32) as usize]
                .load(Ordering::Relaxed),
        )
    }

    fn write_word(&self, word: u32, value: FibEntry) {
        self.cells.cells()[(word / CELL_WORDS as u32) as usize]
            [(word % CELL_WORDS as u32) as usize]
            .store(value.0, Ordering::Relaxed);
    }

    fn direct(&self, slot: u32) -> FibEntry {
        self.read_word(slot)
    }

    /// Publishes a direct entry: everything it points at was written before.
    fn set_direct(&self, slot: u32, value: FibEntry) {
        self.cells.cells()[(slot / CELL_WORDS as u32) as usize]
            [(slot % CELL_WORDS as u32) as usize]
            .store(value.0, Ordering::Release);
    }

    fn read_record(&self, at: u32) -> Record {
        std::array::from_fn(|g| self.read_cell(at + g as u32))
    }

    fn write_record(&self, at: u32, record: &Record) {
        for (g, cell) in record.iter().enumerate() {
            self.write_cell(at + g as u32, cell);
        }
    }

    /// A run of `size` cells, the storage grown when it can.
    fn alloc(&mut self, size: u32) -> Result<u32, Full> {
        loop {
            match self.alloc.alloc(size) {
                Ok(at) => return Ok(at),
                Err(Full) => {
                    let capacity = self.cells.cells().len() as u32;
                    let wanted = capacity + capacity / 2 + size;
                    if !self.cells.grow(wanted) {
                        return Err(Full);
                    }
                    self.alloc.set_capacity(wanted);
                }
            }
        }
    }

    // ---- Building -----------------------------------------------------------------------------

    /// Writes the whole table from the indexes: the direct array and every node.
    fn fill(&mut self) -> Result<(), Full> {
        let mut direct = vec![FibEntry::EMPTY; 1 << DIRECT_BITS];
        for len in 0..=DIRECT_BITS {
            for (&value, &leaf) in &self.routes[len as usize] {
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
    fn place_root(&mut self, record: &Record) -> Result<u32, Full> {
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
    fn make_node(
        &mut self,
        depth: u32,
        region: u128,
        default: FibEntry,
        old: Option<(&Record, Range<u32>)>,
        released: &mut Vec<(u32, u32)>,
    ) -> Result<Record, Full> {
        // Leaves of every slot, pushed down from the routes ending within this node.
        let mut leaves = [default; NODE_CHILDREN];
        for len in depth + 1..=(depth + 8).min(self.bits) {
            let shift = depth + 8 - len;
            let low = region << (len - depth);
            let high = low | ((1 << (len - depth)) - 1);
            for (&value, &leaf) in self.routes[len as usize].range(low..=high) {
                let first = ((value - low) << shift) as usize;
                leaves[first..first + (1 << shift)].fill(leaf);
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
        let mut children = Vec::new();
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
        self.write_node(&leaves, &is_node, &children)
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
    fn release_subtree(&self, at: u32, released: &mut Vec<(u32, u32)>) {
        let record = self.read_record(at);
        for group in &record {
            for child in 0..vector(group).count_ones() {
                self.release_subtree(group[group::BASE_NODE] + child * NODE_CELLS, released);
            }
        }
        self.release_arrays(&record, released);
    }

    /// A record's own arrays: each group's children array and the node's leaf array.
    fn release_arrays(&self, record: &Record, released: &mut Vec<(u32, u32)>) {
        let mut leaves = 0;
        for group in record {
            let children = vector(group).count_ones();
            if children > 0 {
                released.push((group[group::BASE_NODE], children * NODE_CELLS));
            }
            leaves += leafvec(group).count_ones();
        }
        if leaves > 0 {
            released.push((
                record[0][group::BASE_LEAF] / CELL_WORDS as u32,
                leaves.div_ceil(CELL_WORDS as u32),
            ));
        }
    }

    /// Writes a node's children arrays (one per group) and its leaf array; its record.
    fn write_node(
        &mut self,
        leaves: &[FibEntry; NODE_CHILDREN],
        is_node: &[bool; NODE_CHILDREN],
        children: &[Record],
    ) -> Result<Record, Full> {
        // Leaf runs: a run starts at each leaf child whose leaf differs from the previous
        // leaf child's in its group.
        let mut runs: Vec<FibEntry> = Vec::new();
        let mut record: Record = [[0; CELL_WORDS]; NODE_CELLS as usize];
        let mut group_runs = [0u32; NODE_CELLS as usize];
        let mut next_child = 0;
        for (g, cell) in record.iter_mut().enumerate() {
            let (mut vector, mut leafvec) = (0u64, 0u64);
            let mut previous = None;
            group_runs[g] = runs.len() as u32;
            for i in 0..GROUP_CHILDREN {
                let slot = g * GROUP_CHILDREN + i;
                if is_node[slot] {
                    vector |= 1 << i;
                } else if previous != Some(leaves[slot]) {
                    leafvec |= 1 << i;
                    runs.push(leaves[slot]);
                    previous = Some(leaves[slot]);
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
        let first_word = if runs.is_empty() {
            0
        } else {
            let at = self.alloc((runs.len() as u32).div_ceil(CELL_WORDS as u32))?;
            let first_word = at * CELL_WORDS as u32;
            for (k, run) in runs.iter().enumerate() {
                self.write_word(first_word + k as u32, *run);
            }
            first_word
        };
        for (cell, runs_before) in record.iter_mut().zip(group_runs) {
            cell[group::BASE_LEAF] = first_word + runs_before;
        }
        Ok(record)
    }

    // ---- Changes ------------------------------------------------------------------------------

    /// Brings the cells in line with the indexes after a change of the route `addr`/`len`.
    fn refresh(&mut self, addr: u128, len: u32) -> Result<(), Full> {
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
            let count = vector(group).count_ones();
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

fn vector(group: &Cell) -> u64 {
    u64::from(group[group::VECTOR]) | (u64::from(group[group::VECTOR + 1]) << 32)
}

fn leafvec(group: &Cell) -> u64 {
    u64::from(group[group::LEAFVEC]) | (u64::from(group[group::LEAFVEC + 1]) << 32)
}
