//! Route lookup: the longest prefix matching a destination in a VRF's table, in the compiled FIB (the direct
//! entry of the top 16 bits, then one node per further byte until a leaf: for a /24, one; see
//! `pop_dataplane_common::fib`) or, in `lpm-trie` mode, in the kernel's LPM trie.

use aya_ebpf::maps::lpm_trie::Key;
use pop_dataplane_common::{
    RouteEntry,
    fib::{CELL_WORDS, FibEntry, FibMode, GROUP_CHILDREN, group_child},
};

use crate::maps::{FIB_MODE, FIB_V4, FIB_V6, FibCells, ROUTES_V4, ROUTES_V6};

/// The route for IPv4 destination `dst` in VRF `vrf`.
#[inline(always)]
pub(crate) fn lookup_v4(vrf: u16, dst: [u8; 4]) -> Option<RouteEntry> {
    if FIB_MODE.load() == FibMode::LpmTrie as u8 {
        return ROUTES_V4
            .get(u32::from(vrf))?
            .get(&Key::new(32, dst))
            .copied();
    }
    route(FibEntry(compiled_v4(
        u32::from(vrf),
        u32::from_be_bytes(dst),
    )))
}

/// The compiled IPv4 table's leaf for `dst`, `0` for none. A function of its own (a BPF
/// subprogram): the inner map's pointer stays in here, where the verifier can follow it,
/// instead of in a register the caller's code reuses.
#[inline(never)]
fn compiled_v4(vrf: u32, dst: u32) -> u32 {
    let Some(table) = FIB_V4.get(vrf) else {
        return 0;
    };
    let [b0, b1, b2, b3] = dst.to_be_bytes();
    let mut entry = direct(table, b0, b1);
    for byte in [b2, b3] {
        if !entry.is_next() {
            break;
        }
        entry = child(table, entry.cell(), byte);
    }
    entry.0
}

/// The route for IPv6 destination `dst` in VRF `vrf`.
#[inline(always)]
pub(crate) fn lookup_v6(vrf: u16, dst: [u8; 16]) -> Option<RouteEntry> {
    if FIB_MODE.load() == FibMode::LpmTrie as u8 {
        return ROUTES_V6
            .get(u32::from(vrf))?
            .get(&Key::new(128, dst))
            .copied();
    }
    let dst = u128::from_be_bytes(dst);
    route(FibEntry(compiled_v6(
        u32::from(vrf),
        (dst >> 64) as u64,
        dst as u64,
    )))
}

/// The compiled IPv6 table's leaf for the address `high`:`low`, `0` for none; a subprogram,
/// as [`compiled_v4`].
#[inline(never)]
fn compiled_v6(vrf: u32, high: u64, low: u64) -> u32 {
    let Some(table) = FIB_V6.get(vrf) else {
        return 0;
    };
    let mut entry = direct(table, (high >> 56) as u8, (high >> 48) as u8);
    // Bytes 2..16: at most one node each.
    for index in 2..16u32 {
        if !entry.is_next() {
            break;
        }
        let byte = if index < 8 {
            (high >> (56 - 8 * index)) as u8
        } else {
            (low >> (56 - 8 * (index - 8))) as u8
        };
        entry = child(table, entry.cell(), byte);
    }
    entry.0
}

/// The direct entry of an address whose top bytes are `high` and `low` (empty if the table
/// is malformed).
#[inline(always)]
fn direct(table: &FibCells, high: u8, low: u8) -> FibEntry {
    let slot = u32::from(u16::from_be_bytes([high, low]));
    match table.get(slot / CELL_WORDS as u32) {
        Some(cell) => FibEntry(cell[(slot % CELL_WORDS as u32) as usize]),
        None => FibEntry::EMPTY,
    }
}

/// What the node whose record starts at cell `node` holds for address byte `byte`: a
/// pointer to the next node, or a leaf.
#[inline(always)]
fn child(table: &FibCells, node: u32, byte: u8) -> FibEntry {
    let Some(group) = table.get(node + u32::from(byte) / GROUP_CHILDREN as u32) else {
        return FibEntry::EMPTY;
    };
    match group_child(group, u32::from(byte) % GROUP_CHILDREN as u32) {
        Ok(record) => FibEntry::next(record),
        Err(word) => match table.get(word / CELL_WORDS as u32) {
            Some(cell) => FibEntry(cell[(word % CELL_WORDS as u32) as usize]),
            None => FibEntry::EMPTY,
        },
    }
}

/// The route a leaf holds; none for an empty entry (or a pointer left after the last level,
/// which a well-formed table never has).
#[inline(always)]
fn route(entry: FibEntry) -> Option<RouteEntry> {
    if entry == FibEntry::EMPTY || entry.is_next() {
        return None;
    }
    Some(entry.route())
}
