//! Route lookup: the longest prefix matching a destination, in the compiled FIB (one or two
//! array reads for IPv4, one per 8 bits past the first 16 for IPv6) or, in `lpm-trie` mode, in
//! the kernel's LPM trie.

use aya_ebpf::maps::lpm_trie::Key;
use pop_dataplane_common::{
    RouteEntry,
    fib::{FibEntry, FibMode},
};

use crate::maps::{FIB_MODE, FIB_V4, FIB_V6, ROUTES_V4, ROUTES_V6};

/// The route for IPv4 destination `dst`.
#[inline(always)]
pub(crate) fn lookup_v4(dst: [u8; 4]) -> Option<RouteEntry> {
    if FIB_MODE.load() == FibMode::LpmTrie as u8 {
        return ROUTES_V4.get(0)?.get(&Key::new(32, dst)).copied();
    }
    let table = FIB_V4.get(0)?;
    // The first level is indexed by the top 24 bits: block = top 16, entry = next 8.
    let block = u32::from(u16::from_be_bytes([dst[0], dst[1]]));
    let mut entry = FibEntry(table.get(block)?[usize::from(dst[2])]);
    if entry.is_next() {
        entry = FibEntry(table.get(entry.block())?[usize::from(dst[3])]);
    }
    route(entry)
}

/// The route for IPv6 destination `dst`.
#[inline(always)]
pub(crate) fn lookup_v6(dst: [u8; 16]) -> Option<RouteEntry> {
    if FIB_MODE.load() == FibMode::LpmTrie as u8 {
        return ROUTES_V6.get(0)?.get(&Key::new(128, dst)).copied();
    }
    let table = FIB_V6.get(0)?;
    // The first level is indexed by the top 16 bits: block = top 8, entry = next 8.
    let mut entry = FibEntry(table.get(u32::from(dst[0]))?[usize::from(dst[1])]);
    let mut byte = 2;
    while entry.is_next() && byte < dst.len() {
        entry = FibEntry(table.get(entry.block())?[usize::from(dst[byte])]);
        byte += 1;
    }
    route(entry)
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
