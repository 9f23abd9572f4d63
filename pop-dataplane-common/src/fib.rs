//! The compiled FIB: compact route tables, cache-resident at full-table size, whose lookup
//! takes a few reads whatever the table holds.
//!
//! Each family's table is a multibit trie with leaf pushing and bitmap-compressed nodes (after
//! Poptrie, Asai and Ohara, SIGCOMM 2015), in one BPF array of [`Cell`]s (32 bytes):
//!
//! - The direct array, cells `0..DIRECT_CELLS`: one [`FibEntry`] for each value of the
//!   address's top 16 bits, 8 to a cell. An entry is empty (no route), a leaf (the route of
//!   the longest prefix covering all of its addresses), or a pointer to a node.
//! - Nodes, below: each takes the next 8 bits of the address (byte 2, 3, ...), in 4 groups of
//!   64 children, one cell each (see [`group`]). A group's `vector` has a bit for each child
//!   that is a node, whose records (4 cells each) follow one another from `base_node`; its
//!   `leafvec` a bit where a run of equal leaves starts among the other children, whose leaves
//!   (one [`FibEntry`] each, 8 to a cell) follow one another from word `base_leaf`. A child's
//!   record or leaf is found by counting the bits below its own.
//!
//! IPv4 takes one or two reads past the direct array for a /24, IPv6 one per byte past the
//! second. Userspace never edits a cell the program may be reading: a change writes new
//! nodes and leaves into free cells, then publishes them with one 4-byte store (the direct
//! entry, or a pointer in a new parent written the same way), so a lookup sees the old
//! route or the new one, never none; cells let go are reused only after a quarantine.

use crate::{RouteEntry, RouteTarget};

/// The value type of the FIB arrays: 8 words.
pub type Cell = [u32; CELL_WORDS];
pub const CELL_WORDS: usize = 8;

/// Address bits the direct array is indexed by (both families).
pub const DIRECT_BITS: u32 = 16;
/// Cells of the direct array.
pub const DIRECT_CELLS: u32 = (1 << DIRECT_BITS) / CELL_WORDS as u32;

/// Children of a node (8 address bits), in groups of 64.
pub const NODE_CHILDREN: usize = 256;
pub const GROUP_CHILDREN: usize = 64;
/// Cells of a node record: one per group.
pub const NODE_CELLS: u32 = (NODE_CHILDREN / GROUP_CHILDREN) as u32;

/// The words of a node's group cell.
pub mod group {
    /// `vector`, a u64 (low word first): children that are nodes.
    pub const VECTOR: usize = 0;
    /// `leafvec`, a u64: where runs of equal leaves start among the other children.
    pub const LEAFVEC: usize = 2;
    /// The cell of the first child node's record.
    pub const BASE_NODE: usize = 4;
    /// The word (cell * 8 + index) of the group's first leaf.
    pub const BASE_LEAF: usize = 5;
}

/// A group cell's `vector`: its children that are nodes.
#[inline(always)]
pub fn group_vector(cell: &Cell) -> u64 {
    u64::from(cell[group::VECTOR]) | (u64::from(cell[group::VECTOR + 1]) << 32)
}

/// A group cell's `leafvec`: where runs of equal leaves start among its other children.
#[inline(always)]
pub fn group_leafvec(cell: &Cell) -> u64 {
    u64::from(cell[group::LEAFVEC]) | (u64::from(cell[group::LEAFVEC + 1]) << 32)
}

/// What child `index` (0..64) of a group cell holds: `Ok(cell)` of its node's record, or
/// `Err(word)` of its leaf. The one decoding both sides use.
#[inline(always)]
pub fn group_child(cell: &Cell, index: u32) -> Result<u32, u32> {
    let vector = group_vector(cell);
    let leafvec = group_leafvec(cell);
    // Bits 0..=index.
    let upto = u64::MAX >> (63 - (index & 63));
    if vector & (1 << (index & 63)) != 0 {
        let rank = (vector & upto).count_ones() - 1;
        Ok(cell[group::BASE_NODE] + rank * NODE_CELLS)
    } else {
        let rank = (leafvec & upto).count_ones().wrapping_sub(1);
        Err(cell[group::BASE_LEAF].wrapping_add(rank))
    }
}

/// `ARRAY_OF_MAPS`, a slot per VRF (`maps::MAX_VRFS`): the VRF's IPv4 table, an `ARRAY` of
/// [`Cell`]s. A new table is built beside the old one and swapped in with one update.
pub const FIB_V4: &str = "FIB_V4";
/// The same for IPv6.
pub const FIB_V6: &str = "FIB_V6";

/// Global (set at load): which tables the program looks routes up in. See [`FibMode`].
pub const FIB_MODE: &str = "FIB_MODE";

/// The route lookup the program makes.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FibMode {
    /// The compiled tables, `FIB_V4` and `FIB_V6`.
    Compiled = 0,
    /// The kernel's `BPF_MAP_TYPE_LPM_TRIE`, `ROUTES_V4` and `ROUTES_V6`: the reference.
    LpmTrie = 1,
}

/// Flags of the FIB arrays: mmapable (userspace writes the entries in place, no syscall per
/// entry) and inner maps of any size.
pub const FIB_MAP_FLAGS: u32 = BPF_F_MMAPABLE | BPF_F_INNER_MAP;
const BPF_F_MMAPABLE: u32 = 1 << 10;
const BPF_F_INNER_MAP: u32 = 1 << 12;

/// A direct entry or a leaf, 32 bits:
///
/// ```text
///   0                           empty: no route
///   1 | cell (31 bits)          a node (direct entries only): its record's first cell
///   0 | len (8) | kind (3) | flow (1) | id (19)
///                               a leaf: the route of a prefix of length len (0 to 128)
/// ```
///
/// A leaf's target is a [`RouteTarget`] squeezed into 22 bits: its kind and its id (next hops
/// and groups number far fewer than 2^19); `flow` is [`RouteEntry::FLOW`].
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FibEntry(pub u32);

const _: () = assert!(core::mem::size_of::<FibEntry>() == 4);

/// What a [`FibEntry`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FibValue {
    Empty,
    Leaf(RouteEntry),
    Next(u32),
}

impl FibEntry {
    pub const EMPTY: Self = Self(0);
    const NEXT: u32 = 1 << 31;
    const LEN_SHIFT: u32 = 23;
    const KIND_SHIFT: u32 = 20;
    const FLOW: u32 = 1 << 19;
    /// Ids a leaf can hold: below 2^19.
    pub const MAX_ID: u32 = Self::FLOW - 1;

    /// The leaf for `entry`, or `None` when its id does not fit.
    pub const fn leaf(entry: RouteEntry) -> Option<Self> {
        let bits = entry.target.to_bits();
        let kind = bits >> 28;
        let id = bits & RouteTarget::ID_MASK;
        if id > Self::MAX_ID || kind == 0 || kind > 7 || entry.prefix_len > 128 {
            return None;
        }
        let flow = if entry.checks_flows() { Self::FLOW } else { 0 };
        Some(Self(
            ((entry.prefix_len as u32) << Self::LEN_SHIFT) | (kind << Self::KIND_SHIFT) | flow | id,
        ))
    }

    /// A pointer to the node whose record starts at cell `cell` (below 2^31).
    pub const fn next(cell: u32) -> Self {
        Self(Self::NEXT | cell)
    }

    #[inline(always)]
    pub const fn is_next(self) -> bool {
        self.0 & Self::NEXT != 0
    }

    /// The cell a pointer points at (meaningless for other entries).
    #[inline(always)]
    pub const fn cell(self) -> u32 {
        self.0 & !Self::NEXT
    }

    /// The route a leaf holds (meaningless for other entries).
    #[inline(always)]
    pub const fn route(self) -> RouteEntry {
        let kind = (self.0 >> Self::KIND_SHIFT) & 0x7;
        let id = self.0 & Self::MAX_ID;
        RouteEntry::new(
            RouteTarget::from_bits((kind << 28) | id),
            ((self.0 >> Self::LEN_SHIFT) & 0xff) as u8,
        )
        .with_flow(self.0 & Self::FLOW != 0)
    }

    /// The prefix length of a leaf (meaningless for other entries).
    #[inline(always)]
    pub const fn prefix_len(self) -> u8 {
        ((self.0 >> Self::LEN_SHIFT) & 0xff) as u8
    }

    #[inline(always)]
    pub const fn value(self) -> FibValue {
        if self.0 == 0 {
            FibValue::Empty
        } else if self.is_next() {
            FibValue::Next(self.cell())
        } else {
            FibValue::Leaf(self.route())
        }
    }
}

/// Every route kind and id the tables must carry fits a leaf.
const _: () = {
    assert!(crate::maps::MAX_NEXTHOPS - 1 <= FibEntry::MAX_ID);
    assert!(crate::maps::MAX_NEXTHOP_GROUPS - 1 <= FibEntry::MAX_ID);
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Route;

    #[test]
    fn leaves_keep_their_route_and_length() {
        for route in [
            Route::Nexthop(0),
            Route::Nexthop(65_535),
            Route::Group(4095),
            Route::Blackhole,
            Route::Kernel,
            Route::Local,
        ] {
            for len in [0, 1, 24, 32, 64, 127, 128] {
                let entry = RouteEntry::new(RouteTarget::new(route), len);
                let leaf = FibEntry::leaf(entry).unwrap();
                assert_ne!(leaf, FibEntry::EMPTY);
                assert!(!leaf.is_next());
                assert_eq!(leaf.value(), FibValue::Leaf(entry));
                assert_eq!(leaf.prefix_len(), len);
                assert_eq!(leaf.route().target.decode(), route);
                let flagged = FibEntry::leaf(entry.with_flow(true)).unwrap();
                assert_eq!(flagged.value(), FibValue::Leaf(entry.with_flow(true)));
                assert_ne!(flagged, leaf);
            }
        }
        let too_big = RouteEntry::new(RouteTarget::new(Route::Nexthop(1 << 19)), 8);
        assert_eq!(FibEntry::leaf(too_big), None);
        assert_eq!(FibEntry::next(12345).value(), FibValue::Next(12345));
        assert_eq!(FibEntry::EMPTY.value(), FibValue::Empty);
    }
}
