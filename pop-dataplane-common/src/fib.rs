//! The compiled FIB: route tables whose lookup costs the same whatever their size.
//!
//! Each family's table is a multibit trie with leaf pushing, stored in one BPF array of
//! [`Block`]s of 256 entries:
//!
//! - IPv4 (DIR-24-8): the first level is indexed by the top 24 bits of the address: 2^24
//!   entries, blocks `0..65536`; an entry for a /24 that holds longer prefixes points at a
//!   block indexed by the last 8 bits. One or two reads.
//! - IPv6: the first level is indexed by the top 16 bits (blocks `0..256`), then each level by
//!   the next 8 bits. One read per level, at most 15 for a /128; 5 for a /48.
//!
//! An entry is a [`FibEntry`]: empty (no route), a leaf (the route of the longest prefix
//! covering every address under the entry: leaves are pushed down to the deepest level), or a
//! pointer to the block of the next level. Userspace builds and edits the tables; a route
//! change rewrites entries one by one, each from one valid value to another (a 4-byte store),
//! so a lookup never sees a half-written entry, and a replaced route never misses.

use crate::{RouteEntry, RouteTarget};

/// Entries of a block: one level's stride is 8 bits.
pub const BLOCK_ENTRIES: usize = 256;

/// The value type of the FIB arrays.
pub type Block = [u32; BLOCK_ENTRIES];

/// Address bits the first level of each family's table is indexed by.
pub const FIRST_LEVEL_BITS_V4: u32 = 24;
pub const FIRST_LEVEL_BITS_V6: u32 = 16;

/// Blocks of the first level: entries are `2^bits`, 256 to a block.
pub const FIRST_LEVEL_BLOCKS_V4: u32 = 1 << (FIRST_LEVEL_BITS_V4 - 8);
pub const FIRST_LEVEL_BLOCKS_V6: u32 = 1 << (FIRST_LEVEL_BITS_V6 - 8);

/// `ARRAY_OF_MAPS`, one slot: the IPv4 table, an `ARRAY` of [`Block`]s. A new table is built
/// beside the old one and swapped in with one update.
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

/// One entry of a FIB block, 32 bits:
///
/// ```text
///   0                           empty: no route
///   1 | block (31 bits)         the next level's block
///   0 | len (8) | target (23)   a leaf: the route of a prefix of length len (0 to 128)
/// ```
///
/// A leaf's target is a [`RouteTarget`] squeezed into 23 bits: its kind in the top 3, its id
/// in the low 20 (next hops and groups number far fewer).
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
    /// Ids a leaf can hold: below 2^20.
    pub const MAX_ID: u32 = (1 << Self::KIND_SHIFT) - 1;

    /// The leaf for `entry`, or `None` when its id does not fit.
    pub const fn leaf(entry: RouteEntry) -> Option<Self> {
        let bits = entry.target.to_bits();
        let kind = bits >> 28;
        let id = bits & RouteTarget::ID_MASK;
        if id > Self::MAX_ID || kind == 0 || kind > 7 || entry.prefix_len > 128 {
            return None;
        }
        Some(Self(
            ((entry.prefix_len as u32) << Self::LEN_SHIFT) | (kind << Self::KIND_SHIFT) | id,
        ))
    }

    /// A pointer to block `block` (below 2^31).
    pub const fn next(block: u32) -> Self {
        Self(Self::NEXT | block)
    }

    #[inline(always)]
    pub const fn is_next(self) -> bool {
        self.0 & Self::NEXT != 0
    }

    /// The block a pointer points at (meaningless for other entries).
    #[inline(always)]
    pub const fn block(self) -> u32 {
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
            FibValue::Next(self.block())
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
            }
        }
        let too_big = RouteEntry::new(RouteTarget::new(Route::Nexthop(1 << 20)), 8);
        assert_eq!(FibEntry::leaf(too_big), None);
        assert_eq!(FibEntry::next(12345).value(), FibValue::Next(12345));
        assert_eq!(FibEntry::EMPTY.value(), FibValue::Empty);
    }
}
