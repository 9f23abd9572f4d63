//! The route tables the program reads, in either of its lookup modes: the compiled FIB
//! (`FIB_V4`/`FIB_V6`, the default; see `compact`) or the kernel's LPM trie
//! (`ROUTES_V4`/`ROUTES_V6`, the reference). Each family's table is an inner map of a one-slot array of maps: a new table is
//! built aside and swapped in with one update; single routes change in place.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use anyhow::{Context as _, bail};
use aya::maps::{ArrayOfMaps, LpmTrie, Map, MapData, lpm_trie::Key};
use ipnet::IpNet;
use pop_dataplane_common::{
    RouteEntry,
    fib::{Cell, FIB_MAP_FLAGS, FibEntry, FibMode},
    maps,
};

use crate::{
    control::vrf::VrfId,
    dataplane::compact::{self, AtomicCell, Cells, Full, Table},
};

/// BPF_F_NO_PREALLOC: LPM tries require it.
const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;

/// The largest table [`Compiled::compact`] rebuilds: 8 MiB of cells (VRF-sized tables, up
/// to some 100,000 routes). A rebuild holds a second copy of the table's bookkeeping while it
/// runs, hundreds of MiB for a full table, which the daemon's heap then keeps.
const MAX_COMPACTED_CELLS: u32 = (8 << 20) / size_of::<Cell>() as u32;

/// Cells a compiled table's array gets for `needed`: room for later routes (an eighth more,
/// and 32 KiB) before the table must be copied into a larger array. Small, so that many
/// small tables fit: a copy costs milliseconds even for a full table.
fn capacity_for(needed: u32) -> u32 {
    needed + needed / 8 + 1024
}

/// A compiled table's cells in a BPF array, mapped into this process: words are written with
/// plain (atomic) stores, no syscall.
pub(crate) struct MappedCells {
    map: MapData,
    cells: NonNull<AtomicCell>,
    len: usize,
}

// SAFETY: the mapping is owned by this value and only reached through it.
unsafe impl Send for MappedCells {}

impl MappedCells {
    fn create(name: &str, cells: u32) -> anyhow::Result<Self> {
        let bytes = cells as usize * size_of::<Cell>();
        let map = MapData::create(
            aya_obj::Map::new_from_params(
                BPF_MAP_TYPE_ARRAY,
                size_of::<u32>() as u32,
                size_of::<Cell>() as u32,
                cells,
                FIB_MAP_FLAGS,
            ),
            name,
            None,
        )
        .with_context(|| format!("creating a {} KiB route table", bytes >> 10))?;
        // SAFETY: mapping a BPF array created mmapable, of exactly this length; the kernel
        // zeroes it.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            bail!(
                "mapping the route table into memory: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Self {
            map,
            cells: NonNull::new(address.cast()).context("mmap returned null")?,
            len: cells as usize,
        })
    }

    /// Kernel memory of the array, as the kernel accounts it.
    fn kernel_bytes(&self) -> u64 {
        memlock(&self.map)
    }
}

impl Cells for MappedCells {
    fn cells(&self) -> &[AtomicCell] {
        // SAFETY: `len` cells mapped at `cells` for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.cells.as_ptr(), self.len) }
    }

    fn grow(&mut self, cells: u32) -> bool {
        cells as usize <= self.len
    }
}

impl Drop for MappedCells {
    fn drop(&mut self) {
        // SAFETY: unmapping what `create` mapped, once.
        unsafe {
            libc::munmap(self.cells.as_ptr().cast(), self.len * size_of::<Cell>());
        }
    }
}

/// The kernel's account of a map's memory (`memlock` in its fdinfo).
fn memlock(map: &MapData) -> u64 {
    let path = format!("/proc/self/fdinfo/{}", map.fd().as_fd().as_raw_fd());
    std::fs::read_to_string(path)
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Kernel memory the route tables take.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TableMemory {
    pub v4_bytes: u64,
    pub v6_bytes: u64,
}

impl TableMemory {
    pub fn total(&self) -> u64 {
        self.v4_bytes + self.v6_bytes
    }
}

/// One family's compiled table, in a BPF array.
pub(crate) struct Compiled {
    name: &'static str,
    table: Table<MappedCells>,
}

impl Compiled {
    /// A table of `bits`-bit addresses holding `routes`: built in memory, then copied into a
    /// new BPF array sized for it with room to grow.
    fn build(
        name: &'static str,
        bits: u32,
        routes: Vec<(u128, u8, FibEntry)>,
    ) -> anyhow::Result<Self> {
        let built = Table::build_in_memory(bits, routes);
        let cells = MappedCells::create(name, capacity_for(built.high_water()))?;
        Ok(Self {
            name,
            table: built.copy_to(cells),
        })
    }

    /// Copies a full table into an array half as large again. The program reads the old
    /// array until the new one is installed.
    fn grow(&mut self) -> anyhow::Result<()> {
        let high = self.table.high_water();
        let cells = MappedCells::create(self.name, capacity_for(high + high / 2))?;
        self.table = self.table.copy_to(cells);
        Ok(())
    }

    /// Builds the table afresh into an array sized for it, when its array has grown to more
    /// than twice that with cells free for reuse: a burst of changes (a VRF's thousand
    /// routes loaded route by route, or churn) allocates new paths faster than the cells let
    /// go come out of quarantine, and the array never shrinks by itself. Cells still in
    /// quarantine count as held, so that churn, which needs them again in a moment, does not
    /// set off a rebuild. `Some(Moved)`: install the table again.
    fn compact(&mut self) -> anyhow::Result<Option<Moved>> {
        let needed = capacity_for(u32::try_from(self.table.cells_held()).unwrap_or(u32::MAX));
        let capacity = self.table.storage().cells().len() as u32;
        if capacity <= 2 * needed || needed > MAX_COMPACTED_CELLS {
            return Ok(None);
        }
        let built = Table::build_in_memory(self.table.bits(), self.table.routes());
        let cells = MappedCells::create(self.name, capacity_for(built.high_water()))?;
        self.table = built.copy_to(cells);
        Ok(Some(Moved))
    }

    /// Runs `change` on the table; when the table is full, moves it to a larger array and
    /// runs it again. `Some(Moved)`: the table must be installed again.
    fn edit(
        &mut self,
        what: &IpNet,
        mut change: impl FnMut(&mut Table<MappedCells>) -> Result<(), Full>,
    ) -> anyhow::Result<Option<Moved>> {
        match change(&mut self.table) {
            Ok(()) => Ok(None),
            Err(Full) => {
                self.grow()?;
                change(&mut self.table)
                    .map_err(|Full| anyhow::anyhow!("{what}: route table full"))?;
                Ok(Some(Moved))
            }
        }
    }
}

/// The tables of one lookup mode.
pub(crate) enum RouteTables {
    /// Boxed: a table's bookkeeping is large, and there are only ever a few.
    Compiled {
        v4: Box<Compiled>,
        v6: Box<Compiled>,
    },
    /// `Map::LpmTrie`s.
    LpmTrie { v4: Box<Map>, v6: Box<Map> },
}

/// A table in use had to move to a larger array: swap it in.
pub(crate) struct Moved;

impl RouteTables {
    /// New tables holding `routes`, not yet seen by the program.
    pub(crate) fn build(
        mode: FibMode,
        routes: impl IntoIterator<Item = (IpNet, RouteEntry)>,
    ) -> anyhow::Result<Self> {
        match mode {
            FibMode::Compiled => {
                let mut v4 = Vec::new();
                let mut v6 = Vec::new();
                for (prefix, entry) in routes {
                    match prefix {
                        IpNet::V4(p) => v4.push((
                            u128::from(u32::from(p.network())),
                            p.prefix_len(),
                            compact::leaf(entry),
                        )),
                        IpNet::V6(p) => v6.push((
                            u128::from(p.network()),
                            p.prefix_len(),
                            compact::leaf(entry),
                        )),
                    }
                }
                Ok(Self::Compiled {
                    v4: Box::new(Compiled::build("fib_v4", 32, v4)?),
                    v6: Box::new(Compiled::build("fib_v6", 128, v6)?),
                })
            }
            FibMode::LpmTrie => {
                let mut tables = Self::LpmTrie {
                    v4: Box::new(lpm_trie::<[u8; 4]>("routes_v4", maps::MAX_ROUTES_V4)?),
                    v6: Box::new(lpm_trie::<[u8; 16]>("routes_v6", maps::MAX_ROUTES_V6)?),
                };
                for (prefix, entry) in routes {
                    tables.set(&prefix, &entry)?;
                }
                Ok(tables)
            }
        }
    }

    /// Makes the program use these tables for VRF `vrf`: one update of each family's slot
    /// (`FIB_V4` and `FIB_V6`, or `ROUTES_V4` and `ROUTES_V6`). The tables they replace are
    /// freed when the last packet using them is done.
    pub(crate) fn install(
        &self,
        vrf: VrfId,
        v4_outer: &mut Map,
        v6_outer: &mut Map,
    ) -> anyhow::Result<()> {
        let (v4, v6) = match self {
            Self::Compiled { v4, v6 } => (&v4.table.storage().map, &v6.table.storage().map),
            Self::LpmTrie { v4, v6 } => (map_data(v4), map_data(v6)),
        };
        ArrayOfMaps::<_, MapData>::try_from(v4_outer)?
            .set(u32::from(vrf.0), v4, 0)
            .with_context(|| format!("swapping in VRF {}'s IPv4 route table", vrf.0))?;
        ArrayOfMaps::<_, MapData>::try_from(v6_outer)?
            .set(u32::from(vrf.0), v6, 0)
            .with_context(|| format!("swapping in VRF {}'s IPv6 route table", vrf.0))?;
        Ok(())
    }

    /// Adds or replaces one route in place. `Ok(Some(Moved))`: a compiled table was full and
    /// now lives in a larger array, which must be installed.
    pub(crate) fn set(
        &mut self,
        prefix: &IpNet,
        entry: &RouteEntry,
    ) -> anyhow::Result<Option<Moved>> {
        match self {
            Self::Compiled { v4, v6 } => {
                let (table, addr, len) = match prefix {
                    IpNet::V4(p) => (v4, u128::from(u32::from(p.network())), p.prefix_len()),
                    IpNet::V6(p) => (v6, u128::from(p.network()), p.prefix_len()),
                };
                let leaf = compact::leaf(*entry);
                table.edit(prefix, |table| table.insert(addr, len, leaf))
            }
            Self::LpmTrie { v4, v6 } => {
                match prefix {
                    IpNet::V4(p) => LpmTrie::<_, [u8; 4], RouteEntry>::try_from(&mut **v4)?
                        .insert(
                            &Key::new(u32::from(p.prefix_len()), p.network().octets()),
                            entry,
                            0,
                        )
                        .with_context(|| format!("ROUTES_V4[{p}]"))?,
                    IpNet::V6(p) => LpmTrie::<_, [u8; 16], RouteEntry>::try_from(&mut **v6)?
                        .insert(
                            &Key::new(u32::from(p.prefix_len()), p.network().octets()),
                            entry,
                            0,
                        )
                        .with_context(|| format!("ROUTES_V6[{p}]"))?,
                }
                Ok(None)
            }
        }
    }

    /// Removes one route in place. `Ok(Some(Moved))` as for [`RouteTables::set`].
    pub(crate) fn delete(&mut self, prefix: &IpNet) -> anyhow::Result<Option<Moved>> {
        match self {
            Self::Compiled { v4, v6 } => {
                let (table, addr, len) = match prefix {
                    IpNet::V4(p) => (v4, u128::from(u32::from(p.network())), p.prefix_len()),
                    IpNet::V6(p) => (v6, u128::from(p.network()), p.prefix_len()),
                };
                table.edit(prefix, |table| table.remove(addr, len))
            }
            Self::LpmTrie { v4, v6 } => {
                let result = match prefix {
                    IpNet::V4(p) => LpmTrie::<_, [u8; 4], RouteEntry>::try_from(&mut **v4)?
                        .remove(&Key::new(u32::from(p.prefix_len()), p.network().octets())),
                    IpNet::V6(p) => LpmTrie::<_, [u8; 16], RouteEntry>::try_from(&mut **v6)?
                        .remove(&Key::new(u32::from(p.prefix_len()), p.network().octets())),
                };
                match result {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(None),
                    Err(err) => Err(err).with_context(|| format!("deleting route {prefix}")),
                }
            }
        }
    }

    /// Compacts compiled tables that a burst of changes left mostly empty (see
    /// [`Compiled::compact`]). `Ok(Some(Moved))` as for [`RouteTables::set`].
    pub(crate) fn compact(&mut self) -> anyhow::Result<Option<Moved>> {
        match self {
            Self::Compiled { v4, v6 } => {
                let moved_v4 = v4.compact()?;
                let moved_v6 = v6.compact()?;
                Ok(moved_v4.or(moved_v6))
            }
            Self::LpmTrie { .. } => Ok(None),
        }
    }

    /// Kernel memory of the tables.
    pub(crate) fn memory(&self) -> TableMemory {
        match self {
            Self::Compiled { v4, v6 } => TableMemory {
                v4_bytes: v4.table.storage().kernel_bytes(),
                v6_bytes: v6.table.storage().kernel_bytes(),
            },
            Self::LpmTrie { v4, v6 } => TableMemory {
                v4_bytes: memlock(map_data(v4)),
                v6_bytes: memlock(map_data(v6)),
            },
        }
    }
}

/// Empties VRF `vrf`'s slots of the outer maps (empty ones stay so): its frames find no
/// route (the kernel's).
pub(crate) fn uninstall(vrf: VrfId, v4_outer: &Map, v6_outer: &Map) -> anyhow::Result<()> {
    for (outer, family) in [(v4_outer, "IPv4"), (v6_outer, "IPv6")] {
        let Map::ArrayOfMaps(outer) = outer else {
            bail!("the {family} route tables' map is not an array of maps");
        };
        match delete_element(outer, u32::from(vrf.0)) {
            Err(err) if err.raw_os_error() != Some(libc::ENOENT) => {
                return Err(err)
                    .with_context(|| format!("removing VRF {}'s {family} route table", vrf.0));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `BPF_MAP_DELETE_ELEM` of `key` in `map`: for an array of maps, empties the slot. aya's
/// `ArrayOfMaps` has no call for it.
fn delete_element(map: &MapData, key: u32) -> std::io::Result<()> {
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    // The head of `union bpf_attr` for map element commands.
    #[repr(C)]
    struct ElementAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = ElementAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: &raw const key as u64,
        value: 0,
        flags: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr head of the size given, and `key` outlives the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            &raw const attr,
            size_of::<ElementAttr>(),
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A new, empty LPM trie for keys of `K`.
fn lpm_trie<K>(name: &str, max_entries: u32) -> anyhow::Result<Map> {
    let data = MapData::create(
        aya_obj::Map::new_from_params(
            BPF_MAP_TYPE_LPM_TRIE,
            size_of::<Key<K>>() as u32,
            size_of::<RouteEntry>() as u32,
            max_entries,
            BPF_F_NO_PREALLOC,
        ),
        name,
        None,
    )
    .with_context(|| format!("creating route table {name}"))?;
    Ok(Map::LpmTrie(data))
}

fn map_data(map: &Map) -> &MapData {
    match map {
        Map::LpmTrie(data) => data,
        _ => unreachable!("route tables are LPM tries"),
    }
}
