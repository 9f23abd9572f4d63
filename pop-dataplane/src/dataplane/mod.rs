//! The loaded XDP program and its maps: load, fill, attach, pin, and run on a test frame.

mod acl;
mod attach;
pub(crate) mod compact;
mod flow;
mod pins;
mod sample;
pub(crate) mod tables;
mod test_run;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMap, HashMap, Map, PerCpuArray, PerCpuValues},
    programs::Xdp,
    util::nr_cpus,
};
use ipnet::IpNet;
use log::warn;
use pop_dataplane_common::{
    Interface, InterfaceCounters, InterfaceKey, Nexthop, NexthopGroup, RouteEntry,
    acl::AclHits,
    fib::{self, FibMode},
    flow as flow_maps, maps, sample as sample_maps,
};

use self::test_run::test_run;
use self::{
    attach::AttachedLink,
    pins::{ensure_bpffs, remove_map_pins},
    tables::{Moved, RouteTables, TableMemory},
};
pub use self::{
    attach::{AttachMode, AttachedMode},
    pins::{Pinned, open_pinned, unpin},
    sample::{nexthop_traffic, samples_lost},
    test_run::TestRunOutput,
};
use crate::control::{
    plan::{Adopted, MapWrite, Update},
    vrf::VrfId,
};

/// The XDP object built from `pop-dataplane-ebpf`, embedded at build time.
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pop-dataplane-xdp"));

/// Where the kernel describes its own types (CONFIG_DEBUG_INFO_BTF).
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The program's name in the object.
const PROGRAM: &str = "pop_dataplane";
/// The program's pin, next to the maps'.
const PROGRAM_PIN: &str = "program";
/// The XDP links' pins, one per port, named by ifindex.
const LINKS_DIR: &str = "links";

/// Every map, for pinning.
const ALL_MAPS: [&str; 23] = [
    maps::INTERFACES,
    maps::PORTS_BY_IFINDEX,
    maps::EGRESS,
    maps::COUNTERS,
    maps::NEXTHOPS,
    maps::NEXTHOP_GROUPS,
    maps::ROUTES_V4,
    maps::ROUTES_V6,
    fib::FIB_V4,
    fib::FIB_V6,
    maps::TRACE,
    maps::ACL_V4,
    maps::ACL_V6,
    maps::ACL_HITS,
    flow_maps::FLOW_ENTRIES,
    flow_maps::FLOW_INDEX_V4,
    flow_maps::FLOW_INDEX_V6,
    flow_maps::FLOW_WILDCARD,
    flow_maps::FLOW_HITS,
    flow_maps::FLOW_BUCKETS,
    sample_maps::SAMPLE_RATES,
    sample_maps::SAMPLES_LOST,
    sample_maps::NEXTHOP_TRAFFIC,
];

/// Load-time settings of the program.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Which of the program's own log statements the verifier keeps.
    pub log_level: log::LevelFilter,
    /// Seed of the ECMP flow hash. Routers of one site should differ, or they all pick the
    /// same member for the same flows (polarisation); a restart should keep it.
    pub ecmp_seed: u32,
    /// Where the program, maps and links are pinned (a directory on a bpf filesystem). Maps
    /// already pinned there are used, not created: a restarted daemon takes over the running
    /// dataplane's state. `None`: nothing pinned (tests).
    pub pin_dir: Option<PathBuf>,
    /// Where the program looks routes up.
    pub fib: FibMode,
}

pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    fib: FibMode,
    /// The maps were already pinned: this is a running dataplane, taken over.
    adopted: bool,
    links: Vec<AttachedLink>,
    /// The route tables the program reads now, per VRF: the default VRF's once tables are
    /// installed, and those of the VRFs that have had routes since.
    routes: std::collections::BTreeMap<VrfId, RouteTables>,
}

impl Dataplane {
    /// Loads the program into the kernel (the verifier runs here). With a pin directory,
    /// the maps pinned there are reused (a running dataplane is taken over: see
    /// [`Dataplane::adopted`]), else created and pinned; the program is pinned too.
    pub fn load(options: LoadOptions) -> anyhow::Result<Self> {
        let level = options.log_level as u8;
        let fib_mode = options.fib as u8;
        let mut loader = EbpfLoader::new();
        loader
            .override_global(aya_log::LEVEL, &level, false)
            .override_global(maps::ECMP_SEED, &options.ecmp_seed, true)
            .override_global(fib::FIB_MODE, &fib_mode, true);
        if !Path::new(KERNEL_BTF).exists() {
            // aya relocates against the kernel's BTF only for CO-RE, which the program does
            // not use: it loads the same without it.
            warn!("no kernel BTF at {KERNEL_BTF}; not needed, carrying on");
        }
        let mut adopted = false;
        if let Some(dir) = &options.pin_dir {
            ensure_bpffs(dir)?;
            fs::create_dir_all(dir.join(LINKS_DIR))
                .with_context(|| format!("creating {}", dir.display()))?;
            adopted = dir.join(maps::INTERFACES).exists();
            for name in ALL_MAPS {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = match (loader.load(XDP_OBJECT), &options.pin_dir) {
            (Ok(ebpf), _) => ebpf,
            // Pins this version cannot take (another version's maps): a start must not
            // depend on them. Fresh maps replace them; the links stay, and take this
            // program as the ports are attached (the old one forwards until then).
            (Err(err), Some(dir)) if adopted => {
                warn!(
                    "the maps pinned in {} do not fit this version ({}): replacing them with \
                     fresh ones; the dataplane's state (counters, tables) starts anew",
                    dir.display(),
                    anyhow::Error::from(err)
                );
                remove_map_pins(dir)?;
                adopted = false;
                loader
                    .load(XDP_OBJECT)
                    .context("loading the XDP object, the old pins removed")?
            }
            (Err(err), _) => return Err(err).context("loading the XDP object"),
        };
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .context("the XDP object has no program pop_dataplane")?
            .try_into()?;
        program.load().map_err(|err| {
            let permission = matches!(&err, aya::programs::ProgramError::SyscallError(e)
                if e.io_error.raw_os_error() == Some(libc::EPERM));
            anyhow::Error::from(err).context(if permission {
                "loading the XDP program was refused: pop-dataplane run needs root"
            } else {
                "loading the XDP program into the kernel (verifier)"
            })
        })?;
        if let Some(dir) = &options.pin_dir {
            // The new program replaces the old one's pin.
            let path = dir.join(PROGRAM_PIN);
            let _ = fs::remove_file(&path);
            program
                .pin(&path)
                .with_context(|| format!("pinning the program at {}", path.display()))?;
        }
        let mut dataplane = Self {
            ebpf,
            pin_dir: options.pin_dir,
            fib: options.fib,
            adopted,
            links: Vec::new(),
            routes: std::collections::BTreeMap::new(),
        };
        if adopted {
            dataplane.sync_port_entries()?;
        }
        Ok(dataplane)
    }

    /// The maps were pinned before this daemon: a running dataplane, now ours.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// What the running dataplane's maps hold that new tables must leave alone until they
    /// are swapped in: next-hop and group ids, interfaces and ports, ACL entries.
    pub fn in_use(&self) -> anyhow::Result<Adopted> {
        let nexthops: Array<_, Nexthop> = Array::try_from(self.map(maps::NEXTHOPS)?)?;
        let mut nexthop_ids = Vec::new();
        for id in 0..maps::MAX_NEXTHOPS {
            if nexthops.get(&id, 0)? != Nexthop::default() {
                nexthop_ids.push(id);
            }
        }
        let groups: Array<_, NexthopGroup> = Array::try_from(self.map(maps::NEXTHOP_GROUPS)?)?;
        let mut group_ids = Vec::new();
        for id in 0..maps::MAX_NEXTHOP_GROUPS {
            if groups.get(&id, 0)? != NexthopGroup::default() {
                group_ids.push(id);
            }
        }
        let interfaces: HashMap<_, InterfaceKey, Interface> =
            HashMap::try_from(self.map(maps::INTERFACES)?)?;
        let interfaces = interfaces.iter().collect::<Result<Vec<_>, _>>()?;
        let egress = DevMap::try_from(self.map(maps::EGRESS)?)?;
        let ports = (0..maps::MAX_PORTS)
            .filter_map(|index| Some((index, egress.get(index, 0).ok()?.if_index)))
            .collect();
        let (flow_lists, flow_bank) = self.read_flow_lists()?;
        Ok(Adopted {
            flow_lists,
            flow_bank,
            acl: self.read_acl()?,
            nexthops: nexthop_ids,
            groups: group_ids,
            interfaces,
            ports,
        })
    }

    /// Starts forwarding the program's own log records (see `--log-level`) to the `log`
    /// crate. Needs a tokio runtime.
    pub fn forward_logs(&mut self) {
        let logger = match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(logger) => logger,
            Err(err) => {
                warn!("the XDP program's log records are not available: {err}");
                return;
            }
        };
        // SAFETY: the logger owns the ring buffer's fd and keeps it open while registered.
        let logger = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        };
        let mut logger = match logger {
            Ok(logger) => logger,
            Err(err) => {
                warn!("cannot poll the XDP program's log records: {err}");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                let Ok(mut guard) = logger.readable_mut().await else {
                    return;
                };
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        });
    }

    fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM)
            .expect("loaded in Dataplane::load")
            .try_into()
            .expect("an XDP program")
    }

    /// One of the program's maps, by its name in `pop_dataplane_common::maps`.
    pub fn map(&self, name: &str) -> anyhow::Result<&Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("the XDP object has no map {name}"))
    }

    fn map_mut(&mut self, name: &str) -> anyhow::Result<&mut Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("the XDP object has no map {name}"))
    }

    /// Performs `update`: its first writes, then fresh route tables filled from it and
    /// swapped in at once, then its last writes. At start this runs before anything is
    /// attached, so that the first packet already sees complete tables.
    pub fn update(&mut self, update: &Update) -> anyhow::Result<()> {
        self.apply(&update.before)?;
        self.swap_routes(&update.tables)?;
        self.apply(&update.after)
    }

    /// Builds new route tables from `writes` (all routes, and the groups they need) and
    /// makes the program use them at once: one update of each table slot. The old tables are
    /// freed when the last packet using them is done.
    pub fn swap_routes(&mut self, writes: &[MapWrite]) -> anyhow::Result<()> {
        // A prefix deleted in the list after it was set is left out.
        let mut routes = std::collections::HashMap::new();
        for write in writes {
            match write {
                MapWrite::Route(vrf, prefix, entry) => {
                    routes.insert((*vrf, *prefix), *entry);
                }
                MapWrite::DeleteRoute(vrf, prefix) => {
                    routes.remove(&(*vrf, *prefix));
                }
                other => self.apply(std::slice::from_ref(other))?,
            }
        }
        self.replace_routes(
            routes
                .into_iter()
                .map(|((vrf, prefix), entry)| (vrf, prefix, entry)),
        )
    }

    /// Builds new route tables holding `routes` (of every VRF) and makes the program use
    /// them: one update of each VRF's table slots. A VRF that had tables and has no routes
    /// now loses them: its frames go to the kernel.
    pub fn replace_routes(
        &mut self,
        routes: impl IntoIterator<Item = (VrfId, IpNet, RouteEntry)>,
    ) -> anyhow::Result<()> {
        let mut by_vrf: std::collections::BTreeMap<VrfId, Vec<(IpNet, RouteEntry)>> =
            std::collections::BTreeMap::new();
        // The default VRF always has tables.
        by_vrf.insert(VrfId::DEFAULT, Vec::new());
        for (vrf, prefix, entry) in routes {
            by_vrf.entry(vrf).or_default().push((prefix, entry));
        }
        let mut fresh = std::collections::BTreeMap::new();
        for (vrf, routes) in by_vrf {
            let tables = RouteTables::build(self.fib, routes)?;
            self.install(vrf, &tables)?;
            fresh.insert(vrf, tables);
        }
        // The first tables of this daemon: a taken-over dataplane may hold tables of VRFs
        // the previous one had, in any slot.
        let gone: Vec<VrfId> = if self.routes.is_empty() {
            (1..maps::MAX_VRFS as u16)
                .map(VrfId)
                .filter(|vrf| !fresh.contains_key(vrf))
                .collect()
        } else {
            self.routes
                .keys()
                .filter(|vrf| !fresh.contains_key(vrf))
                .copied()
                .collect()
        };
        for vrf in gone {
            self.uninstall(vrf)?;
        }
        self.routes = fresh;
        release_free_memory();
        Ok(())
    }

    /// The two outer maps (IPv4, IPv6) that tables of the lookup mode in use go in.
    fn outer_maps(&mut self) -> anyhow::Result<[&mut Map; 2]> {
        let (v4, v6) = match self.fib {
            FibMode::Compiled => (fib::FIB_V4, fib::FIB_V6),
            FibMode::LpmTrie => (maps::ROUTES_V4, maps::ROUTES_V6),
        };
        let [Some(v4), Some(v6)] = self.ebpf.maps_disjoint_mut([v4, v6]) else {
            bail!("the XDP object has no maps {v4} and {v6}");
        };
        Ok([v4, v6])
    }

    /// Points the program at `tables` for VRF `vrf`.
    fn install(&mut self, vrf: VrfId, tables: &RouteTables) -> anyhow::Result<()> {
        let [v4, v6] = self.outer_maps()?;
        tables.install(vrf, v4, v6)
    }

    /// Takes VRF `vrf`'s tables away from the program.
    fn uninstall(&mut self, vrf: VrfId) -> anyhow::Result<()> {
        let [v4, v6] = self.outer_maps()?;
        tables::uninstall(vrf, v4, v6)
    }

    /// Points the program at VRF `vrf`'s tables again, after one moved to a larger array.
    fn reinstall(&mut self, vrf: VrfId) -> anyhow::Result<()> {
        let tables = self
            .routes
            .remove(&vrf)
            .with_context(|| format!("no route tables for VRF {}", vrf.0))?;
        let installed = self.install(vrf, &tables);
        self.routes.insert(vrf, tables);
        installed
    }

    /// Kernel memory of the route tables in use, every VRF's.
    pub fn table_memory(&self) -> TableMemory {
        self.routes
            .values()
            .map(RouteTables::memory)
            .fold(TableMemory::default(), |sum, m| TableMemory {
                v4_bytes: sum.v4_bytes + m.v4_bytes,
                v6_bytes: sum.v6_bytes + m.v6_bytes,
            })
    }

    pub fn fib_mode(&self) -> FibMode {
        self.fib
    }

    fn set_group(&mut self, id: u32, group: &NexthopGroup) -> anyhow::Result<()> {
        let mut groups: Array<_, NexthopGroup> =
            Array::try_from(self.map_mut(maps::NEXTHOP_GROUPS)?)?;
        groups
            .set(id, group, 0)
            .with_context(|| format!("NEXTHOP_GROUPS[{id}]"))
    }

    /// Mirrors an untagged `INTERFACES` entry into `PORTS_BY_IFINDEX`, when that covers its
    /// ifindex; `None` clears it.
    fn set_port_entry(
        &mut self,
        key: &InterfaceKey,
        interface: Option<&Interface>,
    ) -> anyhow::Result<()> {
        let Some(index) = key.port_index() else {
            return Ok(());
        };
        let entry = interface.map_or_else(Interface::default, |i| i.port_entry());
        let mut ports: Array<_, Interface> =
            Array::try_from(self.map_mut(maps::PORTS_BY_IFINDEX)?)?;
        ports
            .set(index, &entry, 0)
            .with_context(|| format!("PORTS_BY_IFINDEX[{index}]"))
    }

    /// Makes `PORTS_BY_IFINDEX` the copy of `INTERFACES` it must be: after taking over the
    /// maps of a version that had no such array, or of one killed between the two writes.
    fn sync_port_entries(&mut self) -> anyhow::Result<()> {
        let interfaces: HashMap<_, InterfaceKey, Interface> =
            HashMap::try_from(self.map(maps::INTERFACES)?)?;
        let mut wanted = vec![Interface::default(); maps::MAX_PORT_IFINDEX as usize];
        for entry in interfaces.iter() {
            let (key, interface) = entry.context("reading INTERFACES")?;
            if let Some(index) = key.port_index() {
                wanted[index as usize] = interface.port_entry();
            }
        }
        let mut ports: Array<_, Interface> =
            Array::try_from(self.map_mut(maps::PORTS_BY_IFINDEX)?)?;
        for (ifindex, entry) in (0..).zip(wanted) {
            if ports.get(&ifindex, 0)? != entry {
                ports
                    .set(ifindex, &entry, 0)
                    .with_context(|| format!("PORTS_BY_IFINDEX[{ifindex}]"))?;
            }
        }
        Ok(())
    }

    pub fn set_nexthop(&mut self, id: u32, nexthop: &Nexthop) -> anyhow::Result<()> {
        let mut nexthops: Array<_, Nexthop> = Array::try_from(self.map_mut(maps::NEXTHOPS)?)?;
        nexthops
            .set(id, nexthop, 0)
            .with_context(|| format!("NEXTHOPS[{id}]"))
    }

    /// Performs `writes` in order; routes go to the tables in use.
    pub fn apply(&mut self, writes: &[MapWrite]) -> anyhow::Result<()> {
        let routes_changed = writes
            .iter()
            .any(|w| matches!(w, MapWrite::Route(..) | MapWrite::DeleteRoute(..)));
        for write in writes {
            match write {
                MapWrite::Interface(key, interface) => {
                    let mut map: HashMap<_, InterfaceKey, Interface> =
                        HashMap::try_from(self.map_mut(maps::INTERFACES)?)?;
                    map.insert(key, interface, 0)
                        .with_context(|| format!("INTERFACES[{key:?}]"))?;
                    self.set_port_entry(key, Some(interface))?;
                }
                MapWrite::DeleteInterface(key) => {
                    self.set_port_entry(key, None)?;
                    let mut map: HashMap<_, InterfaceKey, Interface> =
                        HashMap::try_from(self.map_mut(maps::INTERFACES)?)?;
                    match map.remove(key) {
                        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                        Err(err) => {
                            return Err(err)
                                .with_context(|| format!("deleting INTERFACES[{key:?}]"));
                        }
                    }
                }
                MapWrite::Port(index, ifindex) => {
                    let mut egress = DevMap::try_from(self.map_mut(maps::EGRESS)?)?;
                    egress
                        .set(*index, *ifindex, None, 0)
                        .with_context(|| format!("EGRESS[{index}] = ifindex {ifindex}"))?;
                }
                MapWrite::ResetCounters(slot) => {
                    self.zero_per_cpu::<InterfaceCounters>(maps::COUNTERS, *slot)?
                }
                MapWrite::ResetAclHits(rule) => {
                    self.zero_per_cpu::<AclHits>(maps::ACL_HITS, *rule)?
                }
                MapWrite::Acl(key, entry) => self.set_acl_entry(key, Some(entry))?,
                MapWrite::DeleteAcl(key) => self.set_acl_entry(key, None)?,
                MapWrite::FlowEntries { bank, entries } => self.set_flow_entries(*bank, entries)?,
                MapWrite::FlowList(vrf, prefix, list) => {
                    self.set_flow_list(*vrf, prefix, Some(list))?
                }
                MapWrite::DeleteFlowList(vrf, prefix) => self.set_flow_list(*vrf, prefix, None)?,
                MapWrite::FlowWildcard(vrf, wildcard) => self.set_flow_wildcard(*vrf, *wildcard)?,
                MapWrite::ResetFlowRule(rule) => self.reset_flow_rule(*rule)?,
                MapWrite::Nexthop(id, nexthop) => {
                    self.set_nexthop(*id, nexthop)?;
                    if *nexthop == Nexthop::default() {
                        // Cleared: its id may go to another next hop, which starts from zero.
                        self.reset_nexthop_traffic(*id)?;
                    }
                }
                MapWrite::Group(id, group) => self.set_group(*id, group)?,
                MapWrite::Route(vrf, prefix, entry) => {
                    if let Some(Moved) = self.routes(*vrf)?.set(prefix, entry)? {
                        self.reinstall(*vrf)?;
                    }
                }
                MapWrite::DeleteRoute(vrf, prefix) => {
                    if let Some(Moved) = self.routes(*vrf)?.delete(prefix)? {
                        self.reinstall(*vrf)?;
                    }
                }
            }
        }
        if routes_changed {
            self.compact_tables()?;
        }
        Ok(())
    }

    /// Moves compiled tables that a burst of changes left mostly empty into arrays sized for
    /// them (a rebuild: milliseconds for a VRF's table, about a second for a full one). Run
    /// after route changes and from time to time, since the cells a burst lets go are free
    /// only after their quarantine.
    pub fn compact_tables(&mut self) -> anyhow::Result<()> {
        let vrfs: Vec<VrfId> = self.routes.keys().copied().collect();
        for vrf in vrfs {
            if let Some(Moved) = self.routes(vrf)?.compact()? {
                self.reinstall(vrf)?;
            }
        }
        Ok(())
    }

    /// Zeroes entry `index` of per-CPU array `name` on every CPU.
    fn zero_per_cpu<V: aya::Pod + Default>(
        &mut self,
        name: &str,
        index: u32,
    ) -> anyhow::Result<()> {
        let mut array: PerCpuArray<_, V> = PerCpuArray::try_from(self.map_mut(name)?)?;
        let cpus = nr_cpus().map_err(|(_, err)| err).context("counting CPUs")?;
        let zero =
            PerCpuValues::try_from((0..cpus.get()).map(|_| V::default()).collect::<Vec<_>>())?;
        array
            .set(index, zero, 0)
            .with_context(|| format!("resetting {name}[{index}]"))
    }

    /// Packets and bytes ACL rule `rule` dropped, summed over CPUs.
    pub fn acl_hits(&self, rule: u32) -> anyhow::Result<AclHits> {
        let hits: PerCpuArray<_, AclHits> = PerCpuArray::try_from(self.map(maps::ACL_HITS)?)?;
        let values = hits.get(&rule, 0)?;
        Ok(values.iter().fold(AclHits::default(), |sum, cpu| AclHits {
            packets: sum.packets + cpu.packets,
            bytes: sum.bytes + cpu.bytes,
        }))
    }

    /// VRF `vrf`'s tables; new, empty ones installed for a VRF that has none yet (its first
    /// route). The default VRF's come first, with the whole set.
    fn routes(&mut self, vrf: VrfId) -> anyhow::Result<&mut RouteTables> {
        if !self.routes.contains_key(&VrfId::DEFAULT) {
            bail!("no route tables yet: install() comes first");
        }
        if !self.routes.contains_key(&vrf) {
            let tables = RouteTables::build(self.fib, [])?;
            self.install(vrf, &tables)?;
            self.routes.insert(vrf, tables);
        }
        Ok(self.routes.get_mut(&vrf).expect("inserted above"))
    }

    /// Runs the loaded program once on `frame`, as if received on `ingress_ifindex` (which
    /// must exist in this thread's network namespace). Nothing is sent: a redirect only
    /// reports `XDP_REDIRECT`.
    pub fn test_run(
        &mut self,
        ingress_ifindex: u32,
        frame: &[u8],
    ) -> anyhow::Result<TestRunOutput> {
        test_run(self.program(), ingress_ifindex, frame, false)
    }
}

impl Drop for Dataplane {
    /// Dropped without `stop` or `keep_running` (an error path): unpinned links go, pinned
    /// ones stay with the pins for the next start.
    fn drop(&mut self) {
        self.links.clear();
    }
}

/// Hands the heap's free pages back to the kernel, after a rebuild of the tables: the old
/// tables' bookkeeping (and, on a reload, the RIB and FIB the router rebuilt just before) is
/// a full table's worth, about 100 MiB, freed at once. glibc keeps freed memory mapped while
/// anything above it in the heap lives, so without this the daemon's resident size settles
/// at the peak of a rebuild, old and new tables together, climbing to it over the first few
/// reloads.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and unmaps the allocator's own free chunks.
    unsafe {
        libc::malloc_trim(0);
    }
}
