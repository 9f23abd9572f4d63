//! The compiled FIB's tables (see `pop_dataplane_common::fib`): a multibit trie with leaf
//! pushing over an array of 256-entry blocks, kept by userspace and read by the program.
//!
//! The table is edited in place, entry by entry, while packets read it: every store replaces
//! one valid entry with another. A new block is filled before the entry that points at it is
//! written; a block no longer pointed at is reused only after [`QUARANTINE`], long after any
//! lookup that could still be reading it has finished (a lookup takes nanoseconds, with
//! preemption off).
//!
//! The same code edits tables in a BPF array mapped into the daemon and, in the unit tests,
//! in memory.

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use foldhash::HashMap;
use pop_dataplane_common::{
    RouteEntry,
    fib::{BLOCK_ENTRIES, FIRST_LEVEL_BITS_V4, FIRST_LEVEL_BITS_V6, FibEntry},
};

/// How long a block nobody points at any more waits before it is reused.
pub(crate) const QUARANTINE: Duration = Duration::from_millis(100);

/// Where a table's entries live: block after block.
pub(crate) trait Blocks {
    fn entries(&self) -> &[AtomicU32];
    /// Makes room for `blocks` blocks in all; false when the storage cannot grow.
    fn grow(&mut self, blocks: usize) -> bool;
}

/// Blocks in memory, growing on demand (the unit tests' tables).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct MemoryBlocks(Vec<AtomicU32>);

#[cfg(test)]
impl Blocks for MemoryBlocks {
    fn entries(&self) -> &[AtomicU32] {
        &self.0
    }

    fn grow(&mut self, blocks: usize) -> bool {
        let entries = blocks * BLOCK_ENTRIES;
        if entries > self.0.len() {
            self.0.resize_with(entries, AtomicU32::default);
        }
        true
    }
}

/// An address family's table layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Address bits: 32 or 128.
    pub width: u32,
    /// Bits the first level is indexed by.
    pub first_bits: u32,
}

pub(crate) const V4: Shape = Shape {
    width: 32,
    first_bits: FIRST_LEVEL_BITS_V4,
};

pub(crate) const V6: Shape = Shape {
    width: 128,
    first_bits: FIRST_LEVEL_BITS_V6,
};

impl Shape {
    fn first_level_blocks(self) -> u32 {
        1 << (self.first_bits - 8)
    }

    /// Where the level whose entries start at address bit `depth` ends.
    fn level_end(self, depth: u32) -> u32 {
        if depth == 0 {
            self.first_bits
        } else {
            depth + 8
        }
    }

    /// The entries route `addr/len` covers in the level starting at `depth`, where `index` is
    /// `addr`'s entry: (first, count). `None` when the route is longer than the level.
    fn entries_at(self, addr: u128, len: u8, depth: u32, index: usize) -> Option<(usize, usize)> {
        let level_end = self.level_end(depth);
        if u32::from(len) > level_end {
            return None;
        }
        let span = 1usize << (level_end - u32::from(len));
        let block_start = if depth == 0 {
            0
        } else {
            index - self.bits(addr, depth, 8) as usize
        };
        let at = self.bits(addr, depth, level_end - depth) as usize & !(span - 1);
        Some((block_start + at, span))
    }

    /// `count` bits of `addr` from bit `start` (0 is the most significant).
    fn bits(self, addr: u128, start: u32, count: u32) -> u32 {
        ((addr >> (self.width - start - count)) & ((1u128 << count) - 1)) as u32
    }

    /// `addr` with all but its first `len` bits cleared.
    fn network(self, addr: u128, len: u8) -> u128 {
        let len = u32::from(len);
        if len == 0 {
            0
        } else {
            addr & !((1u128 << (self.width - len)) - 1)
        }
    }
}

/// The table has no free block left (only a table in a BPF array: memory ones grow).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// One family's table.
pub(crate) struct Table<B: Blocks> {
    shape: Shape,
    blocks: B,
    /// Blocks ever handed out, first level included: the high-water mark.
    used: u32,
    free: Vec<u32>,
    quarantine: VecDeque<(Instant, u32)>,
    /// The routes it holds, by prefix length: network -> leaf.
    routes: Vec<HashMap<u128, FibEntry>>,
}

#[cfg(test)]
impl Table<MemoryBlocks> {
    /// An empty table in memory.
    pub(crate) fn new(shape: Shape) -> Self {
        let mut blocks = MemoryBlocks::default();
        blocks.grow(shape.first_level_blocks() as usize);
        Self::empty(shape, blocks)
    }
}

/// Blocks a table holding `routes` (address, prefix length) takes, first level included: one
/// per distinct run of leading bits, at each level, that a longer route extends.
pub(crate) fn blocks_needed(shape: Shape, routes: &[(u128, u8, FibEntry)]) -> usize {
    let mut blocks = shape.first_level_blocks() as usize;
    let mut depth = shape.first_bits;
    while depth < shape.width {
        let parents: foldhash::HashSet<u128> = routes
            .iter()
            .filter(|&&(_, len, _)| u32::from(len) > depth)
            .map(|&(addr, _, _)| addr >> (shape.width - depth))
            .collect();
        blocks += parents.len();
        depth += 8;
    }
    blocks
}

impl<B: Blocks> Table<B> {
    /// A table over `blocks` (zeroed, with room for [`blocks_needed`]) holding `routes`:
    /// (address, prefix length, leaf); a route given twice keeps its last leaf.
    pub(crate) fn build(
        shape: Shape,
        blocks: B,
        mut routes: Vec<(u128, u8, FibEntry)>,
    ) -> Result<Self, Full> {
        let mut table = Self::empty(shape, blocks);
        let mut per_length = vec![0usize; shape.width as usize + 1];
        for &(_, len, _) in &routes {
            per_length[usize::from(len)] += 1;
        }
        for (map, count) in table.routes.iter_mut().zip(per_length) {
            map.reserve(count);
        }
        // In address order, the entries written one after another lie side by side: the
        // difference between a cache miss per route and a few per page.
        routes.sort_unstable_by_key(|&(addr, len, _)| (addr, len));
        for (addr, len, leaf) in routes {
            table.insert(addr, len, leaf)?;
        }
        Ok(table)
    }

    /// An empty table over `blocks`, which must be zeroed and hold the first level.
    fn empty(shape: Shape, mut blocks: B) -> Self {
        let room = blocks.grow(shape.first_level_blocks() as usize);
        assert!(room, "storage for the first level");
        Self {
            shape,
            blocks,
            used: shape.first_level_blocks(),
            free: Vec::new(),
            quarantine: VecDeque::new(),
            routes: vec![HashMap::default(); shape.width as usize + 1],
        }
    }

    pub(crate) fn shape(&self) -> Shape {
        self.shape
    }

    /// Routes held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.routes.iter().map(HashMap::len).sum()
    }

    /// Blocks handed out (the first level's included), free ones not counted.
    #[cfg(test)]
    pub(crate) fn blocks_in_use(&self) -> usize {
        self.used as usize - self.free.len() - self.quarantine.len()
    }

    /// Blocks the storage holds.
    pub(crate) fn capacity(&self) -> usize {
        self.blocks.entries().len() / BLOCK_ENTRIES
    }

    /// Blocks of the storage up to the last ever handed out: what a copy must take.
    pub(crate) fn high_water(&self) -> usize {
        self.used as usize
    }

    pub(crate) fn storage(&self) -> &B {
        &self.blocks
    }

    fn load(&self, index: usize) -> FibEntry {
        FibEntry(self.blocks.entries()[index].load(Ordering::Relaxed))
    }

    /// Writes one entry. Release: a block is filled before an entry points at it.
    fn store(&self, index: usize, entry: FibEntry) {
        self.blocks.entries()[index].store(entry.0, Ordering::Release);
    }

    /// Adds the route `addr/len` (host bits ignored) with `leaf`, or replaces it. Each entry
    /// changes from its old leaf to the new one in one store.
    pub(crate) fn insert(&mut self, addr: u128, len: u8, leaf: FibEntry) -> Result<(), Full> {
        debug_assert!(!leaf.is_next() && leaf != FibEntry::EMPTY);
        let shape = self.shape;
        let (mut index, mut depth) = (shape.bits(addr, 0, shape.first_bits) as usize, 0);
        let (start, span) = loop {
            let level_end = shape.level_end(depth);
            if let Some(entries) = shape.entries_at(addr, len, depth, index) {
                break entries;
            }
            let block = self.next_block(index)?;
            depth = level_end;
            index = block as usize * BLOCK_ENTRIES + shape.bits(addr, depth, 8) as usize;
        };
        for i in start..start + span {
            self.push(i, len, leaf);
        }
        self.routes[usize::from(len)].insert(shape.network(addr, len), leaf);
        Ok(())
    }

    /// Removes the route `addr/len`; false when the table has no such route. Its entries
    /// take the leaf of the longest shorter route covering it (or none).
    pub(crate) fn remove(&mut self, addr: u128, len: u8) -> bool {
        let shape = self.shape;
        let network = shape.network(addr, len);
        if self.routes[usize::from(len)].remove(&network).is_none() {
            return false;
        }
        let cover = self.covering(addr, len);
        // (entry pointing at the block, the block, the depth its entries start at)
        let mut path: Vec<(usize, u32, u32)> = Vec::new();
        let (mut index, mut depth) = (shape.bits(addr, 0, shape.first_bits) as usize, 0);
        let (start, span) = loop {
            let level_end = shape.level_end(depth);
            if let Some(entries) = shape.entries_at(addr, len, depth, index) {
                break entries;
            }
            let entry = self.load(index);
            if !entry.is_next() {
                // No block below: the route's entries were never there (cannot happen for a
                // route the table holds).
                return true;
            }
            path.push((index, entry.block(), level_end));
            depth = level_end;
            index = entry.block() as usize * BLOCK_ENTRIES + shape.bits(addr, depth, 8) as usize;
        };
        for i in start..start + span {
            self.unpush(i, len, cover);
        }
        // Blocks left holding one leaf of a shorter route everywhere go back to a single entry.
        for &(parent, block, depth) in path.iter().rev() {
            let Some(only) = self.uniform(block, depth) else {
                break;
            };
            self.store(parent, only);
            self.release(block);
        }
        true
    }

    /// The leaf of the route for `addr`, or empty: what the program finds.
    #[cfg(test)]
    pub(crate) fn lookup(&self, addr: u128) -> FibEntry {
        let shape = self.shape;
        let mut entry = self.load(shape.bits(addr, 0, shape.first_bits) as usize);
        let mut depth = shape.first_bits;
        while entry.is_next() {
            let at = shape.bits(addr, depth, 8) as usize;
            entry = self.load(entry.block() as usize * BLOCK_ENTRIES + at);
            depth += 8;
        }
        entry
    }

    /// Every route: (network, length, leaf).
    #[cfg(test)]
    pub(crate) fn routes(&self) -> impl Iterator<Item = (u128, u8, FibEntry)> + '_ {
        self.routes.iter().enumerate().flat_map(|(len, routes)| {
            routes
                .iter()
                .map(move |(&network, &leaf)| (network, len as u8, leaf))
        })
    }

    /// The same table in other storage, which must hold at least [`Table::high_water`]
    /// blocks: every entry copied, blocks where they were.
    #[cfg(test)]
    pub(crate) fn moved_to<C: Blocks>(self, blocks: C) -> Table<C> {
        let blocks = self.copy_blocks(blocks);
        Table {
            shape: self.shape,
            blocks,
            used: self.used,
            free: self.free,
            quarantine: self.quarantine,
            routes: self.routes,
        }
    }

    /// `blocks`, grown to this table's high water and holding a copy of its entries.
    fn copy_blocks<C: Blocks>(&self, mut blocks: C) -> C {
        let room = blocks.grow(self.high_water());
        assert!(room, "storage for {} blocks", self.high_water());
        for (to, from) in blocks.entries().iter().zip(self.blocks.entries()) {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        blocks
    }

    /// A copy in other storage, which must hold at least [`Table::high_water`] blocks.
    pub(crate) fn copy_to<C: Blocks>(&self, blocks: C) -> Table<C> {
        let blocks = self.copy_blocks(blocks);
        Table {
            shape: self.shape,
            blocks,
            used: self.used,
            free: self.free.clone(),
            quarantine: self.quarantine.clone(),
            routes: self.routes.clone(),
        }
    }

    /// Writes `leaf` of a route of length `len` into entry `index` and, through pointers,
    /// into every entry below it, except where a longer route's leaf is.
    fn push(&self, index: usize, len: u8, leaf: FibEntry) {
        let entry = self.load(index);
        if entry.is_next() {
            let first = entry.block() as usize * BLOCK_ENTRIES;
            for i in first..first + BLOCK_ENTRIES {
                self.push(i, len, leaf);
            }
        } else if entry == FibEntry::EMPTY || entry.prefix_len() <= len {
            self.store(index, leaf);
        }
    }

    /// Replaces the leaves of the route of length `len` at and below entry `index` with
    /// `cover`.
    fn unpush(&self, index: usize, len: u8, cover: FibEntry) {
        let entry = self.load(index);
        if entry.is_next() {
            let first = entry.block() as usize * BLOCK_ENTRIES;
            for i in first..first + BLOCK_ENTRIES {
                self.unpush(i, len, cover);
            }
        } else if entry != FibEntry::EMPTY && entry.prefix_len() == len {
            self.store(index, cover);
        }
    }

    /// The leaf of the longest route shorter than `len` covering `addr`, or empty.
    fn covering(&self, addr: u128, len: u8) -> FibEntry {
        (0..len)
            .rev()
            .filter(|&l| !self.routes[usize::from(l)].is_empty())
            .find_map(|l| {
                self.routes[usize::from(l)]
                    .get(&self.shape.network(addr, l))
                    .copied()
            })
            .unwrap_or(FibEntry::EMPTY)
    }

    /// The block entry `index` points at; a new one (holding the entry's leaf everywhere)
    /// when it holds a leaf.
    fn next_block(&mut self, index: usize) -> Result<u32, Full> {
        let entry = self.load(index);
        if entry.is_next() {
            return Ok(entry.block());
        }
        let block = self.allocate()?;
        let first = block as usize * BLOCK_ENTRIES;
        for i in first..first + BLOCK_ENTRIES {
            self.blocks.entries()[i].store(entry.0, Ordering::Relaxed);
        }
        self.store(index, FibEntry::next(block));
        Ok(block)
    }

    fn allocate(&mut self) -> Result<u32, Full> {
        while let Some(&(since, block)) = self.quarantine.front() {
            if since.elapsed() < QUARANTINE {
                break;
            }
            self.quarantine.pop_front();
            self.free.push(block);
        }
        if let Some(block) = self.free.pop() {
            return Ok(block);
        }
        if !self.blocks.grow(self.used as usize + 1) || self.capacity() <= self.used as usize {
            return Err(Full);
        }
        self.used += 1;
        Ok(self.used - 1)
    }

    fn release(&mut self, block: u32) {
        self.quarantine.push_back((Instant::now(), block));
    }

    /// The one value every entry of `block` holds, when it is a leaf of a route no longer
    /// than `depth` (so covering the whole block) or empty.
    fn uniform(&self, block: u32, depth: u32) -> Option<FibEntry> {
        let first = block as usize * BLOCK_ENTRIES;
        let only = self.load(first);
        if only.is_next() || (only != FibEntry::EMPTY && u32::from(only.prefix_len()) > depth) {
            return None;
        }
        (first + 1..first + BLOCK_ENTRIES)
            .all(|i| self.load(i) == only)
            .then_some(only)
    }
}

/// The leaf for a route entry.
pub(crate) fn leaf(entry: RouteEntry) -> FibEntry {
    FibEntry::leaf(entry).expect("route ids fit a leaf (checked at compile time)")
}

#[cfg(test)]
mod tests;
