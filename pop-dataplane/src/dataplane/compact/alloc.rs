//! Cells of a table handed out and taken back: runs of cells of a few exact sizes (node
//! records, children arrays, leaf arrays), each reused only after a quarantine, long after any
//! lookup that could still be reading it has finished (a lookup takes nanoseconds, with
//! preemption off).

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

/// How long a run nobody points at any more waits before it is reused.
pub(crate) const QUARANTINE: Duration = Duration::from_millis(100);

/// No run of the size asked for is free and the storage has no room left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

#[derive(Clone, Debug)]
pub(crate) struct Allocator {
    /// Cells below this were handed out at some point (the direct array's included).
    next: u32,
    /// Cells the storage holds.
    capacity: u32,
    /// Free runs by size: their first cells.
    free: HashMap<u32, Vec<u32>>,
    /// Runs let go, oldest first: (when, first cell, size).
    quarantine: VecDeque<(Instant, u32, u32)>,
    quarantine_for: Duration,
    /// Cells in runs handed out and not let go.
    in_use: u64,
    /// Cells in `quarantine`.
    quarantined: u64,
}

impl Allocator {
    /// Cells `0..reserved` are taken for good (the direct array); the rest of `capacity` is
    /// to be handed out.
    pub(crate) fn new(reserved: u32, capacity: u32) -> Self {
        Self {
            next: reserved,
            capacity,
            free: HashMap::new(),
            quarantine: VecDeque::new(),
            quarantine_for: QUARANTINE,
            in_use: u64::from(reserved),
            quarantined: 0,
        }
    }

    /// A run of `size` cells: its first cell.
    pub(crate) fn alloc(&mut self, size: u32) -> Result<u32, Full> {
        self.reclaim();
        let run = match self.free.get_mut(&size).and_then(Vec::pop) {
            Some(run) => run,
            None if self.next + size <= self.capacity => {
                self.next += size;
                self.next - size
            }
            None => return Err(Full),
        };
        self.in_use += u64::from(size);
        Ok(run)
    }

    /// Lets the run at `first` of `size` cells go: free once the quarantine is over.
    pub(crate) fn release(&mut self, first: u32, size: u32) {
        self.in_use -= u64::from(size);
        self.quarantined += u64::from(size);
        self.quarantine.push_back((Instant::now(), first, size));
    }

    /// Frees the runs whose quarantine is over.
    pub(crate) fn reclaim(&mut self) {
        while let Some(&(when, first, size)) = self.quarantine.front() {
            if when.elapsed() < self.quarantine_for {
                break;
            }
            self.quarantine.pop_front();
            self.quarantined -= u64::from(size);
            self.free.entry(size).or_default().push(first);
        }
    }

    /// Cells in runs handed out and not let go.
    pub(crate) fn in_use(&self) -> u64 {
        self.in_use
    }

    /// Cells let go and not yet free again.
    pub(crate) fn quarantined(&self) -> u64 {
        self.quarantined
    }

    /// The highest cell handed out so far, plus one: what a copy must hold.
    pub(crate) fn high_water(&self) -> u32 {
        self.next
    }

    pub(crate) fn set_capacity(&mut self, capacity: u32) {
        debug_assert!(capacity >= self.next);
        self.capacity = capacity;
    }

    #[cfg(test)]
    pub(crate) fn without_quarantine(mut self) -> Self {
        self.quarantine_for = Duration::ZERO;
        self
    }
}
