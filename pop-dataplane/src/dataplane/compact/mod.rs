//! The compiled FIB's tables (see `pop_dataplane_common::fib` for the layout the program
//! reads), kept by userspace: built whole for a bulk load, changed route by route in place.
//!
//! Userspace keeps the routes (those of up to 16 bits by length, longer ones by the node
//! they end within), and per node depth how many routes longer than the depth lie under each
//! region: a child is a node exactly when that count is not zero. A change rebuilds the deepest node still above the changed prefix (reusing the
//! children it did not cover), copies the path above it, and publishes the new path with one
//! store: the direct entry. What the old path held goes to the allocator's quarantine.
//!
//! The same code builds tables in memory (a new table, before it is copied into a fresh BPF
//! array; the tests) and edits them in a BPF array mapped into the daemon.

mod alloc;
mod build;
#[cfg(test)]
mod tests;
mod update;

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU32, Ordering},
};

// foldhash: a full table's indexes are a million keys.
use foldhash::HashMap;

#[cfg(test)]
use pop_dataplane_common::fib::{GROUP_CHILDREN, group_child};
use pop_dataplane_common::{
    RouteEntry,
    fib::{CELL_WORDS, Cell, DIRECT_BITS, DIRECT_CELLS, FibEntry, NODE_CELLS},
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

/// A node by its depth and region (the address's top `depth` bits).
type Node = (u32, u128);

/// A route as the node it ends within keeps it: prefix length, the prefix's bits past the
/// node's depth (below 2^8), leaf. 8 bytes: a busy node's list is a few cache lines.
type EndingRoute = (u8, u8, FibEntry);

/// The bits of `value`, a prefix of `len` bits, past `depth`.
fn bits_past(value: u128, len: u32, depth: u32) -> u8 {
    (value & ((1 << (len - depth)) - 1)) as u8
}

/// One family's table.
pub(crate) struct Table<C> {
    /// Address bits: 32 or 128. An IPv4 address is the low 32 bits of the u128.
    bits: u32,
    cells: C,
    alloc: Allocator,
    /// The routes of up to `DIRECT_BITS` bits, the direct array's, by prefix length: the
    /// prefix's top `len` bits -> its leaf.
    short: Vec<HashMap<u128, FibEntry>>,
    /// Every longer route, by the node (its depth and region) within whose 8 bits it ends:
    /// (length, top bits, leaf), the ones the node's leaves are made of, kept together so
    /// that building a node reads one list, and a change touches one entry of one map.
    ending: HashMap<Node, Vec<EndingRoute>>,
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
        // In address order, each node's routes come together and the per-level counts grow
        // in key order: the indexes stay in cache. The FIB hands routes over in hash order,
        // in which indexing the full IPv4 table took 0.40 s, against 0.22 s sorted (the
        // sort included).
        let mut routes: Vec<_> = routes.into_iter().collect();
        // Stable: of two entries for the same prefix, the later one still wins.
        routes.sort_by_key(|&(addr, len, _)| (addr, len));
        for (addr, len, leaf) in routes {
            _ = table.index(addr, u32::from(len), leaf);
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
            short: vec![HashMap::default(); DIRECT_BITS as usize + 1],
            ending: HashMap::default(),
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
            short: self.short.clone(),
            ending: self.ending.clone(),
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

    /// Cells that are not free for reuse: in use, or let go and still in quarantine (runs
    /// whose quarantine is over are freed first).
    pub(crate) fn cells_held(&mut self) -> u64 {
        self.alloc.reclaim();
        self.alloc.in_use() + self.alloc.quarantined()
    }

    /// Address bits: 32 or 128.
    pub(crate) fn bits(&self) -> u32 {
        self.bits
    }

    /// Every route: (address, prefix length, leaf).
    pub(crate) fn routes(&self) -> impl Iterator<Item = (u128, u8, FibEntry)> + '_ {
        let short =
            self.short.iter().zip(0u8..).flat_map(|(routes, len)| {
                routes.iter().map(move |(&value, &leaf)| (len, value, leaf))
            });
        let long = self.ending.iter().flat_map(|(&(depth, region), routes)| {
            routes.iter().map(move |&(len, bits, leaf)| {
                let value = (region << (u32::from(len) - depth)) | u128::from(bits);
                (len, value, leaf)
            })
        });
        short.chain(long).map(|(len, value, leaf)| {
            let addr = if len == 0 {
                0
            } else {
                value << (self.bits - u32::from(len))
            };
            (addr, len, leaf)
        })
    }

    /// Adds or replaces the route of `addr`/`len`. On `Err(Full)` the table is as it was for
    /// lookups; the caller moves it to larger storage and calls again.
    pub(crate) fn insert(&mut self, addr: u128, len: u8, leaf: FibEntry) -> Result<(), Full> {
        let len = u32::from(len);
        match self.index(addr, len, leaf) {
            Some(old) if old == leaf => Ok(()),
            // A route changing its next hop (churn's common case): its leaves rewritten in
            // place, nothing allocated.
            Some(old) if self.replace_leaf(addr, len, old, leaf) => Ok(()),
            _ => self.refresh(addr, len),
        }
    }

    /// Removes the route of `addr`/`len`, if there is one. `Err(Full)` as for `insert`.
    pub(crate) fn remove(&mut self, addr: u128, len: u8) -> Result<(), Full> {
        let len = u32::from(len);
        let value = self.value(addr, len);
        let removed = match self.node_holding(addr, len) {
            None => self.short[len as usize].remove(&value).is_some(),
            Some(node) => {
                let key = (len as u8, bits_past(value, len, node.0));
                let ending = self.ending.get_mut(&node);
                let at = ending
                    .as_ref()
                    .and_then(|routes| routes.iter().position(|&(l, b, _)| (l, b) == key));
                if let (Some(routes), Some(at)) = (ending, at) {
                    routes.swap_remove(at);
                    if routes.is_empty() {
                        self.ending.remove(&node);
                    }
                }
                at.is_some()
            }
        };
        if removed {
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
        self.short.iter().map(HashMap::len).sum::<usize>()
            + self.ending.values().map(Vec::len).sum::<usize>()
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

    /// Records the route in the indexes (the cells change in `refresh`). The leaf it
    /// replaces, if the route was there.
    fn index(&mut self, addr: u128, len: u32, leaf: FibEntry) -> Option<FibEntry> {
        let value = self.value(addr, len);
        let replaced = match self.node_holding(addr, len) {
            None => self.short[len as usize].insert(value, leaf),
            Some(node) => {
                let key = (len as u8, bits_past(value, len, node.0));
                let ending = self.ending.entry(node).or_default();
                match ending.iter_mut().find(|(l, b, _)| (*l, *b) == key) {
                    Some(route) => Some(std::mem::replace(&mut route.2, leaf)),
                    None => {
                        ending.push((key.0, key.1, leaf));
                        None
                    }
                }
            }
        };
        if replaced.is_none() {
            for (level, depth) in self.depths_below(len) {
                let region = self.value(addr, depth);
                *self.longer[level].entry(region).or_insert(0) += 1;
            }
        }
        replaced
    }

    /// The node (depth, region) whose 8 bits a prefix of `len` bits ends within; none for
    /// the direct array's.
    fn node_holding(&self, addr: u128, len: u32) -> Option<Node> {
        (len > DIRECT_BITS).then(|| {
            let depth = DIRECT_BITS + 8 * ((len - DIRECT_BITS - 1) / 8);
            (depth, self.value(addr, depth))
        })
    }

    /// The node levels and depths above a prefix of length `len`.
    fn depths_below(&self, len: u32) -> impl Iterator<Item = (usize, u32)> + use<C> {
        (0..self.longer.len())
            .map(|level| (level, DIRECT_BITS + 8 * level as u32))
            .filter(move |&(_, depth)| depth < len)
    }

    /// The top `len` bits of `addr`.
    pub(super) fn value(&self, addr: u128, len: u32) -> u128 {
        if len == 0 {
            0
        } else {
            addr >> (self.bits - len)
        }
    }

    /// The 8 address bits after `depth`: the child slot at a node of that depth.
    pub(super) fn byte_at(&self, addr: u128, depth: u32) -> u32 {
        ((addr >> (self.bits - depth - 8)) & 0xff) as u32
    }

    /// Routes longer than `depth` under the region `region` (its top `depth` bits).
    pub(super) fn longer_under(&self, depth: u32, region: u128) -> u32 {
        let level = ((depth - DIRECT_BITS) / 8) as usize;
        self.longer
            .get(level)
            .and_then(|map| map.get(&region))
            .copied()
            .unwrap_or(0)
    }

    /// The leaf of the longest route of at most `depth` bits covering region `region`.
    pub(super) fn covering(&self, depth: u32, region: u128) -> FibEntry {
        // The nodes above the region, deepest first: their routes are the longer ones.
        let longer = (DIRECT_BITS..depth)
            .step_by(8)
            .rev()
            .find_map(|node_depth| {
                let node = (node_depth, region >> (depth - node_depth));
                self.ending
                    .get(&node)?
                    .iter()
                    .filter(|&&(len, bits, _)| {
                        let len = u32::from(len);
                        len <= depth && bits_past(region >> (depth - len), len, node_depth) == bits
                    })
                    .max_by_key(|&&(len, _, _)| len)
                    .map(|&(_, _, leaf)| leaf)
            });
        longer
            .or_else(|| {
                (0..=depth.min(DIRECT_BITS))
                    .rev()
                    .filter(|&len| !self.short[len as usize].is_empty())
                    .find_map(|len| {
                        let value = if len == 0 { 0 } else { region >> (depth - len) };
                        self.short[len as usize].get(&value).copied()
                    })
            })
            .unwrap_or(FibEntry::EMPTY)
    }

    // ---- Cells -----------------------------------------------------------------------------

    pub(super) fn read_cell(&self, at: u32) -> Cell {
        let cell = &self.cells.cells()[at as usize];
        std::array::from_fn(|i| cell[i].load(Ordering::Relaxed))
    }

    pub(super) fn write_cell(&self, at: u32, value: &Cell) {
        for (word, value) in self.cells.cells()[at as usize].iter().zip(value) {
            word.store(*value, Ordering::Relaxed);
        }
    }

    /// Word `word` of the cells: cell `word / 8`, index `word % 8`.
    fn word(&self, word: u32) -> &AtomicU32 {
        &self.cells.cells()[(word / CELL_WORDS as u32) as usize]
            [(word % CELL_WORDS as u32) as usize]
    }

    pub(super) fn read_word(&self, word: u32) -> FibEntry {
        FibEntry(self.word(word).load(Ordering::Relaxed))
    }

    pub(super) fn write_word(&self, word: u32, value: FibEntry) {
        self.word(word).store(value.0, Ordering::Relaxed);
    }

    pub(super) fn direct(&self, slot: u32) -> FibEntry {
        self.read_word(slot)
    }

    /// Publishes a direct entry: everything it points at was written before.
    pub(super) fn set_direct(&self, slot: u32, value: FibEntry) {
        self.word(slot).store(value.0, Ordering::Release);
    }

    pub(super) fn read_record(&self, at: u32) -> Record {
        std::array::from_fn(|g| self.read_cell(at + g as u32))
    }

    pub(super) fn write_record(&self, at: u32, record: &Record) {
        for (g, cell) in record.iter().enumerate() {
            self.write_cell(at + g as u32, cell);
        }
    }

    /// A run of `size` cells, the storage grown when it can.
    pub(super) fn alloc(&mut self, size: u32) -> Result<u32, Full> {
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
}
