//! The loaded XDP program and its maps: load, fill, attach, pin, and run on a test frame.

pub mod mtrie;
pub mod tables;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, DevMap, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key,
    },
    programs::{
        TestRun as _, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
    util::nr_cpus,
};
use aya_obj::programs::XdpAttachType;
use ipnet::IpNet;
use log::{info, warn};
use pop_dataplane_common::{
    Interface, InterfaceCounters, InterfaceKey, Nexthop, NexthopGroup, RouteEntry, TraceRecord,
    acl::{AclEntry, AclHits, AclKeyV4, AclKeyV6, SLOT_BITS},
    fib::{self, FibMode},
    maps,
    trace::TRACE_MAGIC,
};

use crate::{
    control::acl::{AclEntries, AclKey},
    control::plan::MapWrite,
    control::router::{Adopted, Update},
    control::topology::{NamedInterface, Port, RouterInterface, Topology, interface_name},
    dataplane::tables::{Moved, RouteTables, TableMemory},
    host::Host,
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
const ALL_MAPS: [&str; 13] = [
    maps::INTERFACES,
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
];

/// How to attach to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode: works on any interface, slower.
    Generic,
}

/// The mode an attachment ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

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

/// What one run of the program on a frame did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The XDP action (`XDP_PASS` = 2 and so on).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// An XDP link, pinned so that it outlives the daemon when it must.
struct AttachedLink {
    ifname: String,
    ifindex: u32,
    /// The pin, or `None` when not pinned.
    pin: Option<PathBuf>,
    link: FdLink,
}

pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    fib: FibMode,
    /// The maps were already pinned: this is a running dataplane, taken over.
    adopted: bool,
    links: Vec<AttachedLink>,
    /// The route tables the program reads now.
    routes: Option<RouteTables>,
    /// Interface names by counter slot, from the last install.
    names: std::collections::HashMap<u32, String>,
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
        let mut ebpf = loader.load(XDP_OBJECT).context(if adopted {
            "loading the XDP object with the pinned maps of the running dataplane (from an \
             incompatible version? stop it, or remove its pins, and start again)"
        } else {
            "loading the XDP object"
        })?;
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
        Ok(Self {
            ebpf,
            pin_dir: options.pin_dir,
            fib: options.fib,
            adopted,
            links: Vec::new(),
            routes: None,
            names: std::collections::HashMap::new(),
        })
    }

    /// The maps were pinned before this daemon: a running dataplane, now ours.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// What the running dataplane uses that new tables must leave alone until they are
    /// swapped in: next-hop and group ids, interface slots and port indexes. `names` are the
    /// interface names it saved.
    pub fn in_use(&self, names: &[NamedInterface], host: &Host) -> anyhow::Result<Adopted> {
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
        let mut topology = Topology::default();
        let interfaces: HashMap<_, InterfaceKey, Interface> =
            HashMap::try_from(self.map(maps::INTERFACES)?)?;
        for entry in interfaces.iter() {
            let (key, entry) = entry?;
            let name = names
                .iter()
                .find(|n| n.key() == key && n.slot == entry.slot)
                .map_or_else(|| interface_name(host, &key), |n| n.name.clone());
            topology.interfaces.push(RouterInterface {
                name,
                key,
                entry,
                port: 0,
                mtu: 0,
                outer_tpid: 0,
                device: None,
            });
        }
        let egress = DevMap::try_from(self.map(maps::EGRESS)?)?;
        for index in 0..maps::MAX_PORTS {
            if let Ok(value) = egress.get(index, 0) {
                topology.ports.push(Port {
                    name: host
                        .link_by_index(value.if_index)
                        .map_or_else(String::new, |l| l.name.clone()),
                    ifindex: value.if_index,
                    index,
                });
            }
        }
        Ok(Adopted {
            acl: self.read_acl()?,
            nexthops: nexthop_ids,
            groups: group_ids,
            topology,
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

    fn map(&self, name: &str) -> anyhow::Result<&Map> {
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

    /// Names the counter slots for [`Dataplane::stats`].
    pub fn set_names(&mut self, topology: &Topology) {
        self.names = topology
            .interfaces
            .iter()
            .map(|i| (i.entry.slot, i.name.clone()))
            .collect();
    }

    /// Builds new route tables from `writes` (all routes, and the groups they need) and
    /// makes the program use them at once: one update of each table slot. The old tables are
    /// freed when the last packet using them is done.
    pub fn swap_routes(&mut self, writes: &[MapWrite]) -> anyhow::Result<()> {
        // A prefix deleted in the list after it was set is left out.
        let mut routes = std::collections::HashMap::new();
        for write in writes {
            match write {
                MapWrite::Route(prefix, entry) => {
                    routes.insert(*prefix, *entry);
                }
                MapWrite::DeleteRoute(prefix) => {
                    routes.remove(prefix);
                }
                other => self.apply(std::slice::from_ref(other))?,
            }
        }
        self.replace_routes(routes)
    }

    /// Builds new route tables holding `routes` and makes the program use them at once.
    pub fn replace_routes(
        &mut self,
        routes: impl IntoIterator<Item = (IpNet, RouteEntry)>,
    ) -> anyhow::Result<()> {
        let fresh = RouteTables::build(self.fib, routes)?;
        self.install(&fresh)?;
        self.routes = Some(fresh);
        Ok(())
    }

    /// Points the program at `tables`.
    fn install(&mut self, tables: &RouteTables) -> anyhow::Result<()> {
        let (v4, v6) = match tables.mode() {
            FibMode::Compiled => (fib::FIB_V4, fib::FIB_V6),
            FibMode::LpmTrie => (maps::ROUTES_V4, maps::ROUTES_V6),
        };
        let [Some(v4), Some(v6)] = self.ebpf.maps_disjoint_mut([v4, v6]) else {
            bail!("the XDP object has no maps {v4} and {v6}");
        };
        tables.install(v4, v6)
    }

    /// Kernel memory of the route tables in use.
    pub fn table_memory(&self) -> TableMemory {
        self.routes
            .as_ref()
            .map(RouteTables::memory)
            .unwrap_or_default()
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

    pub fn set_nexthop(&mut self, id: u32, nexthop: &Nexthop) -> anyhow::Result<()> {
        let mut nexthops: Array<_, Nexthop> = Array::try_from(self.map_mut(maps::NEXTHOPS)?)?;
        nexthops
            .set(id, nexthop, 0)
            .with_context(|| format!("NEXTHOPS[{id}]"))
    }

    /// Performs `writes` in order; routes go to the tables in use.
    pub fn apply(&mut self, writes: &[MapWrite]) -> anyhow::Result<()> {
        for write in writes {
            match write {
                MapWrite::Interface(key, interface) => {
                    let mut map: HashMap<_, InterfaceKey, Interface> =
                        HashMap::try_from(self.map_mut(maps::INTERFACES)?)?;
                    map.insert(key, interface, 0)
                        .with_context(|| format!("INTERFACES[{key:?}]"))?;
                }
                MapWrite::DeleteInterface(key) => {
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
                MapWrite::Nexthop(id, nexthop) => self.set_nexthop(*id, nexthop)?,
                MapWrite::Group(id, group) => self.set_group(*id, group)?,
                MapWrite::Route(prefix, entry) => {
                    if let Some(Moved) = self.routes()?.set(prefix, entry)? {
                        let tables = self.routes.take().expect("just used");
                        let installed = self.install(&tables);
                        self.routes = Some(tables);
                        installed?;
                    }
                }
                MapWrite::DeleteRoute(prefix) => self.routes()?.delete(prefix)?,
            }
        }
        Ok(())
    }

    /// Sets (or, with `None`, deletes) one ACL entry.
    fn set_acl_entry(&mut self, key: &AclKey, entry: Option<&AclEntry>) -> anyhow::Result<()> {
        let result = match acl_key(key) {
            AclMapKey::V4(k) => self.set_lpm(maps::ACL_V4, &k, entry),
            AclMapKey::V6(k) => self.set_lpm(maps::ACL_V6, &k, entry),
        };
        result.with_context(|| format!("the ACL entry for {} on slot {}", key.src, key.slot))
    }

    fn set_lpm<K: aya::Pod>(
        &mut self,
        name: &str,
        key: &Key<K>,
        entry: Option<&AclEntry>,
    ) -> anyhow::Result<()> {
        let mut map: LpmTrie<_, K, AclEntry> = LpmTrie::try_from(self.map_mut(name)?)?;
        let result = match entry {
            Some(entry) => map.insert(key, entry, 0),
            None => map.remove(key),
        };
        match result {
            Ok(()) => Ok(()),
            // Deleting what is not there is done.
            Err(aya::maps::MapError::KeyNotFound) if entry.is_none() => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// What the ACL maps hold (a taken-over dataplane's entries).
    fn read_acl(&self) -> anyhow::Result<AclEntries> {
        let mut held = AclEntries::new();
        let v4: LpmTrie<_, AclKeyV4, AclEntry> = LpmTrie::try_from(self.map(maps::ACL_V4)?)?;
        for item in v4.iter() {
            let (key, entry) = item?;
            let data = key.data();
            held.insert(
                from_acl_key(data.slot, data.src.into(), key.prefix_len())?,
                entry,
            );
        }
        let v6: LpmTrie<_, AclKeyV6, AclEntry> = LpmTrie::try_from(self.map(maps::ACL_V6)?)?;
        for item in v6.iter() {
            let (key, entry) = item?;
            let data = key.data();
            held.insert(
                from_acl_key(data.slot, data.src.into(), key.prefix_len())?,
                entry,
            );
        }
        Ok(held)
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

    fn routes(&mut self) -> anyhow::Result<&mut RouteTables> {
        self.routes
            .as_mut()
            .context("no route tables yet: install() comes first")
    }

    /// Attaches the program to port `ifname` (`ifindex`), pinning the link. When a pinned
    /// link from a previous daemon is there, the program is swapped into it instead: one
    /// atomic update, no packet misses a program.
    pub fn attach(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> anyhow::Result<String> {
        if let Some(pin) = self.link_pin(ifindex)
            && pin.exists()
        {
            let pinned = PinnedLink::from_pin(&pin)
                .with_context(|| format!("opening the pinned link {}", pin.display()))?;
            let link = XdpLink::try_from(FdLink::from(pinned))
                .with_context(|| format!("{} is not an XDP link", pin.display()))?;
            let id = self
                .program()
                .attach_to_link(link)
                .with_context(|| format!("{ifname}: replacing the program in its link"))?;
            self.keep_link(ifname, ifindex, id, Some(pin))?;
            info!("{ifname}: program replaced in the running link");
            return Ok("replaced".to_owned());
        }
        let ifname_c = std::ffi::CString::new(ifname)?;
        let native = match mode {
            AttachMode::Generic => None,
            AttachMode::Native | AttachMode::Auto => {
                Some(self.program().attach(ifname_c.as_c_str(), XdpMode::Driver))
            }
        };
        let (id, attached) = match native {
            Some(Ok(id)) => (id, AttachedMode::Native),
            Some(Err(err)) if mode == AttachMode::Native => {
                return Err(attach_error(err, ifname, "native"));
            }
            Some(Err(err)) => {
                warn!(
                    "{ifname}: native XDP failed ({}); using generic mode, which is slower",
                    anyhow::Error::from(err)
                );
                let id = self
                    .program()
                    .attach(ifname_c.as_c_str(), XdpMode::Skb)
                    .map_err(|err| attach_error(err, ifname, "generic"))?;
                (id, AttachedMode::Generic)
            }
            None => {
                let id = self
                    .program()
                    .attach(ifname_c.as_c_str(), XdpMode::Skb)
                    .map_err(|err| attach_error(err, ifname, "generic"))?;
                (id, AttachedMode::Generic)
            }
        };
        let pin = self.link_pin(ifindex);
        self.keep_link(ifname, ifindex, id, pin)?;
        info!("{ifname}: attached ({attached} mode)");
        Ok(attached.to_string())
    }

    fn link_pin(&self, ifindex: u32) -> Option<PathBuf> {
        self.pin_dir
            .as_ref()
            .map(|dir| dir.join(LINKS_DIR).join(ifindex.to_string()))
    }

    /// Takes the link out of aya's keeping (which would detach it on drop) into ours,
    /// pinned at `pin`.
    fn keep_link(
        &mut self,
        ifname: &str,
        ifindex: u32,
        id: XdpLinkId,
        pin: Option<PathBuf>,
    ) -> anyhow::Result<()> {
        let link = self.program().take_link(id)?;
        let link = FdLink::try_from(link).context(
            "the kernel attached XDP without a bpf_link (kernel older than 5.9?): links cannot be \
             pinned, so the dataplane cannot outlive the daemon",
        )?;
        if let Some(path) = &pin
            && !path.exists()
        {
            // Pinning consumes the link; keep a handle by reopening the pin.
            link.pin(path)
                .with_context(|| format!("pinning the XDP link at {}", path.display()))?;
            let link = FdLink::from(PinnedLink::from_pin(path)?);
            self.links.push(AttachedLink {
                ifname: ifname.to_owned(),
                ifindex,
                pin,
                link,
            });
            return Ok(());
        }
        self.links.push(AttachedLink {
            ifname: ifname.to_owned(),
            ifindex,
            pin,
            link,
        });
        Ok(())
    }

    /// Pinned links of ports that are no longer attached by us: (ifindex, pin).
    pub fn stale_links(&self) -> Vec<(u32, PathBuf)> {
        let Some(dir) = &self.pin_dir else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(dir.join(LINKS_DIR)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let ifindex: u32 = entry.file_name().to_str()?.parse().ok()?;
                (!self.links.iter().any(|l| l.ifindex == ifindex)).then(|| (ifindex, entry.path()))
            })
            .collect()
    }

    /// Detaches from port `ifindex` (ours, or a pinned link a previous daemon left).
    pub fn detach(&mut self, ifindex: u32) {
        if let Some(i) = self.links.iter().position(|l| l.ifindex == ifindex) {
            let link = self.links.remove(i);
            if let Some(pin) = &link.pin {
                let _ = fs::remove_file(pin);
            }
            info!("{}: detached", link.ifname);
            drop(link.link);
        } else if let Some(pin) = self.link_pin(ifindex)
            && fs::remove_file(&pin).is_ok()
        {
            info!("ifindex {ifindex}: detached a link left by a previous daemon");
        }
    }

    /// Detaches from every port and removes every pin: the dataplane stops.
    pub fn stop(mut self) {
        while let Some(link) = self.links.pop() {
            if let Some(pin) = &link.pin {
                let _ = fs::remove_file(pin);
            }
            info!("{}: detached", link.ifname);
        }
        for (ifindex, _) in self.stale_links() {
            self.detach(ifindex);
        }
        if let Some(dir) = self.pin_dir.take()
            && let Err(err) = unpin(&dir)
        {
            warn!("{err:#}");
        }
    }

    /// Leaves the dataplane forwarding on its pinned program, maps and links, for the next
    /// daemon to take over.
    pub fn keep_running(mut self) {
        for link in self.links.drain(..) {
            if link.pin.is_none() {
                warn!(
                    "{}: its link is not pinned; it stops with the daemon",
                    link.ifname
                );
            }
        }
        self.pin_dir = None;
    }

    /// The counters of every interface, summed over CPUs.
    pub fn stats(&self) -> anyhow::Result<Vec<crate::observe::stats::InterfaceStats>> {
        let interfaces = HashMap::try_from(self.map(maps::INTERFACES)?)?;
        let counters = PerCpuArray::try_from(self.map(maps::COUNTERS)?)?;
        crate::observe::stats::collect(&interfaces, &counters, |slot, key| {
            self.names
                .get(&slot)
                .cloned()
                .unwrap_or_else(|| format!("if{}", key.ifindex))
        })
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

enum AclMapKey {
    V4(Key<AclKeyV4>),
    V6(Key<AclKeyV6>),
}

/// The LPM key of an entry: the slot's bits, then the source prefix's.
fn acl_key(key: &AclKey) -> AclMapKey {
    let slot = key.slot.to_be_bytes();
    match key.src {
        IpNet::V4(src) => AclMapKey::V4(Key::new(
            SLOT_BITS + u32::from(src.prefix_len()),
            AclKeyV4 {
                slot,
                src: src.network().octets(),
            },
        )),
        IpNet::V6(src) => AclMapKey::V6(Key::new(
            SLOT_BITS + u32::from(src.prefix_len()),
            AclKeyV6 {
                slot,
                src: src.network().octets(),
            },
        )),
    }
}

/// The entry a map key stands for: the slot's bits, then the source prefix's.
fn from_acl_key(slot: [u8; 4], src: std::net::IpAddr, prefix_len: u32) -> anyhow::Result<AclKey> {
    let len = prefix_len
        .checked_sub(SLOT_BITS)
        .and_then(|len| u8::try_from(len).ok())
        .context("an ACL key shorter than its slot")?;
    Ok(AclKey {
        slot: u32::from_be_bytes(slot),
        src: IpNet::new(src, len)?,
    })
}

/// An attach error, with what to do about the usual ones.
fn attach_error(err: aya::programs::ProgramError, ifname: &str, mode: &str) -> anyhow::Error {
    let errno = match &err {
        aya::programs::ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    };
    let what = match errno {
        Some(libc::EBUSY | libc::EEXIST) => format!(
            "{ifname} already has an XDP program (another pop-dataplane, or another tool): two \
             dataplanes cannot share an interface"
        ),
        Some(libc::EOPNOTSUPP) if mode == "native" => format!(
            "{ifname}'s driver does not support native XDP: run with --xdp-mode generic (or \
             auto, which falls back to generic mode for such interfaces)"
        ),
        _ => format!("attaching to {ifname} in {mode} mode"),
    };
    anyhow::Error::from(err).context(what)
}

/// Runs `program` once on `frame` received on `ingress_ifindex`; with `trace`, asks it for a
/// trace record (see `pop_dataplane_common::trace`).
fn test_run(
    program: &Xdp,
    ingress_ifindex: u32,
    frame: &[u8],
    trace: bool,
) -> anyhow::Result<TestRunOutput> {
    // The trace request travels as XDP metadata in front of the frame.
    let meta_len = if trace { 4 } else { 0 };
    let mut data = Vec::with_capacity(meta_len + frame.len());
    if trace {
        data.extend_from_slice(&TRACE_MAGIC.to_ne_bytes());
    }
    data.extend_from_slice(frame);
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex }: offsets into data_in (metadata first), and the ingress interface.
    let data_end = u32::try_from(data.len()).context("frame too long")?;
    let mut ctx = [0u8; 24];
    ctx[0..4].copy_from_slice(&(meta_len as u32).to_ne_bytes());
    ctx[4..8].copy_from_slice(&data_end.to_ne_bytes());
    ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    // Room for VLAN tags the program pushes.
    let mut out = vec![0u8; data.len() + 64];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(&data),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    // data_out starts with the metadata too.
    let frame = out.split_off(meta_len.min(out.len()));
    Ok(TestRunOutput {
        action: result.return_value,
        frame,
    })
}

/// The running dataplane as another process sees it: its pinned program and maps.
pub struct Pinned {
    dir: PathBuf,
    program: Xdp,
}

impl Pinned {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("running the dataplane's program needs root (BPF objects are root's)");
        }
        let path = dir.join(PROGRAM_PIN);
        let program = Xdp::from_pin(&path, XdpAttachType::Interface).with_context(|| {
            format!(
                "opening {} (is `pop-dataplane run` running with --pin-dir {}?)",
                path.display(),
                dir.display()
            )
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            program,
        })
    }

    pub fn map(&self, name: &str) -> anyhow::Result<MapData> {
        open_pinned(&self.dir, name)
    }

    /// The running program itself (for the lookup micro-benchmark).
    pub fn program(&self) -> &Xdp {
        &self.program
    }

    /// Runs the program on `frame` received on `ingress_ifindex` with a trace request, and
    /// returns its output and its trace record.
    pub fn trace(
        &self,
        ingress_ifindex: u32,
        frame: &[u8],
    ) -> anyhow::Result<(TestRunOutput, TraceRecord)> {
        let mut records: PerCpuArray<_, TraceRecord> =
            PerCpuArray::try_from(Map::PerCpuArray(self.map(maps::TRACE)?))?;
        let cpus = nr_cpus().map_err(|(_, err)| err).context("counting CPUs")?;
        records.set(
            0,
            PerCpuValues::try_from(vec![TraceRecord::default(); cpus.get() as usize])?,
            0,
        )?;
        let output = test_run(&self.program, ingress_ifindex, frame, true)?;
        let written = records
            .get(&0, 0)?
            .iter()
            .copied()
            .find(|record| record.magic == TRACE_MAGIC);
        match written {
            Some(record) => Ok((output, record)),
            None => bail!("the program left no trace record (is it an older version?)"),
        }
    }
}

/// Opens a map pinned under `dir` by [`Dataplane::pin`].
pub fn open_pinned(dir: &Path, name: &str) -> anyhow::Result<MapData> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("reading the dataplane's maps needs root (BPF objects are root's)");
    }
    let path = dir.join(name);
    MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is `pop-dataplane run` running with --pin-dir {}?)",
            path.display(),
            dir.display()
        )
    })
}

/// Removes the pins under `dir` (links included: whatever they attach stops), and `dir`.
pub fn unpin(dir: &Path) -> anyhow::Result<()> {
    if let Ok(entries) = fs::read_dir(dir.join(LINKS_DIR)) {
        for entry in entries.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        let _ = fs::remove_dir(dir.join(LINKS_DIR));
    }
    for name in ALL_MAPS.iter().chain(&[PROGRAM_PIN]) {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("removing {}", path.display())),
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", dir.display())),
    }
}

/// Makes sure `dir`'s parent is on a bpf filesystem: mounts one at /sys/fs/bpf when that is
/// where it belongs and nothing is mounted there, as bpftool does.
fn ensure_bpffs(dir: &Path) -> anyhow::Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let parent: PathBuf = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let is_bpffs = |path: &Path| -> bool {
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: statfs writes into the zeroed struct we pass.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        let ret = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
        ret == 0 && stat.f_type as i64 == BPF_FS_MAGIC
    };
    if is_bpffs(&parent) {
        return Ok(());
    }
    if parent == Path::new("/sys/fs/bpf") {
        info!("mounting a bpf filesystem on /sys/fs/bpf");
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()
            .context("running mount -t bpf bpf /sys/fs/bpf")?;
        if status.success() && is_bpffs(&parent) {
            return Ok(());
        }
    }
    bail!(
        "{} is not on a bpf filesystem: mount one (mount -t bpf bpf {}) or choose --pin-dir \
         under one",
        parent.display(),
        parent.display()
    )
}
