//! The loaded XDP program and its maps: load, fill, attach, pin, and run on a test frame.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, ArrayOfMaps, DevMap, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuValues,
        lpm_trie::Key,
    },
    programs::{TestRun as _, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
    util::nr_cpus,
};
use aya_obj::programs::XdpAttachType;
use ipnet::IpNet;
use log::{info, warn};
use pop_dataplane_common::{
    Interface, InterfaceKey, Nexthop, NexthopGroup, RouteEntry, TraceRecord, maps,
    trace::TRACE_MAGIC,
};

use crate::{fib::MapWrite, tables::Tables};

/// The XDP object built from `pop-dataplane-ebpf`, embedded at build time.
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pop-dataplane-xdp"));

/// The program's name in the object.
const PROGRAM: &str = "pop_dataplane";
/// The program's pin, next to the maps'.
const PROGRAM_PIN: &str = "program";

/// Every map, for pinning.
const ALL_MAPS: [&str; 8] = [
    maps::INTERFACES,
    maps::EGRESS,
    maps::COUNTERS,
    maps::NEXTHOPS,
    maps::NEXTHOP_GROUPS,
    maps::ROUTES_V4,
    maps::ROUTES_V6,
    maps::TRACE,
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
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Which of the program's own log statements the verifier keeps.
    pub log_level: log::LevelFilter,
    /// Seed of the ECMP flow hash. Routers of one site should differ, or they all pick the
    /// same member for the same flows (polarisation); a restart should keep it.
    pub ecmp_seed: u32,
}

/// What one run of the program on a frame did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The XDP action (`XDP_PASS` = 2 and so on).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// The route tables the program reads: inner maps of `ROUTES_V4` and `ROUTES_V6`.
struct RouteTables {
    v4: LpmTrie<MapData, [u8; 4], RouteEntry>,
    v6: LpmTrie<MapData, [u8; 16], RouteEntry>,
}

impl RouteTables {
    /// Empty tables, not yet seen by the program.
    fn create() -> anyhow::Result<Self> {
        Ok(Self {
            v4: LpmTrie::create(maps::MAX_ROUTES_V4, BPF_F_NO_PREALLOC)
                .context("creating an IPv4 route table")?,
            v6: LpmTrie::create(maps::MAX_ROUTES_V6, BPF_F_NO_PREALLOC)
                .context("creating an IPv6 route table")?,
        })
    }

    fn set(&mut self, prefix: &IpNet, entry: &RouteEntry) -> anyhow::Result<()> {
        match prefix {
            IpNet::V4(p) => self
                .v4
                .insert(
                    &Key::new(u32::from(p.prefix_len()), p.network().octets()),
                    entry,
                    0,
                )
                .with_context(|| format!("ROUTES_V4[{p}]")),
            IpNet::V6(p) => self
                .v6
                .insert(
                    &Key::new(u32::from(p.prefix_len()), p.network().octets()),
                    entry,
                    0,
                )
                .with_context(|| format!("ROUTES_V6[{p}]")),
        }
    }

    fn delete(&mut self, prefix: &IpNet) -> anyhow::Result<()> {
        match prefix {
            IpNet::V4(p) => self
                .v4
                .remove(&Key::new(u32::from(p.prefix_len()), p.network().octets()))
                .with_context(|| format!("deleting ROUTES_V4[{p}]")),
            IpNet::V6(p) => self
                .v6
                .remove(&Key::new(u32::from(p.prefix_len()), p.network().octets()))
                .with_context(|| format!("deleting ROUTES_V6[{p}]")),
        }
    }
}

/// BPF_F_NO_PREALLOC: LPM tries require it.
const BPF_F_NO_PREALLOC: u32 = 1;

pub struct Dataplane {
    ebpf: Ebpf,
    links: Vec<(String, XdpLinkId)>,
    /// The route tables the program reads now.
    routes: Option<RouteTables>,
    /// Interface names by counter slot, from the last install.
    names: std::collections::HashMap<u32, String>,
}

impl Dataplane {
    /// Loads the program into the kernel (the verifier runs here).
    pub fn load(options: LoadOptions) -> anyhow::Result<Self> {
        let level = options.log_level as u8;
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &level, false)
            .override_global(maps::ECMP_SEED, &options.ecmp_seed, true)
            .load(XDP_OBJECT)
            .context("loading the XDP object")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .context("the XDP object has no program pop_dataplane")?
            .try_into()?;
        program
            .load()
            .context("loading the XDP program into the kernel (verifier)")?;
        Ok(Self {
            ebpf,
            links: Vec::new(),
            routes: None,
            names: std::collections::HashMap::new(),
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

    /// Writes all of `tables` into the maps, and the route writes `routes` (from
    /// [`Tables::compile`]) into fresh route tables that it then swaps in. Called before
    /// attaching, so that the first packet already sees complete tables.
    pub fn install(&mut self, tables: &Tables, routes: &[MapWrite]) -> anyhow::Result<()> {
        let mut interfaces: HashMap<_, InterfaceKey, Interface> =
            HashMap::try_from(self.map_mut(maps::INTERFACES)?)?;
        for interface in &tables.topology.interfaces {
            interfaces
                .insert(&interface.key, &interface.entry, 0)
                .with_context(|| format!("INTERFACES[{}]", interface.name))?;
        }
        let mut egress = DevMap::try_from(self.map_mut(maps::EGRESS)?)?;
        for port in &tables.topology.ports {
            egress
                .set(port.index, port.ifindex, None, 0)
                .with_context(|| format!("EGRESS[{}] = {}", port.index, port.name))?;
        }
        for (id, nexthop) in tables.nexthops.iter().enumerate() {
            self.set_nexthop(id as u32, nexthop)?;
        }
        self.names = tables
            .topology
            .interfaces
            .iter()
            .map(|i| (i.entry.slot, i.name.clone()))
            .collect();
        self.swap_routes(routes)
    }

    /// Builds new route tables from `writes` (all routes, and the groups they need) and
    /// makes the program use them at once: one update of each table slot. The old tables are
    /// freed when the last packet using them is done.
    pub fn swap_routes(&mut self, writes: &[MapWrite]) -> anyhow::Result<()> {
        let mut fresh = RouteTables::create()?;
        for write in writes {
            match write {
                MapWrite::Group(id, group) => self.set_group(*id, group)?,
                MapWrite::Route(prefix, entry) => fresh.set(prefix, entry)?,
                MapWrite::DeleteRoute(prefix) => fresh.delete(prefix)?,
            }
        }
        let mut outer: ArrayOfMaps<_, LpmTrie<MapData, [u8; 4], RouteEntry>> =
            ArrayOfMaps::try_from(self.map_mut(maps::ROUTES_V4)?)?;
        outer
            .set(0, &fresh.v4, 0)
            .context("swapping in the IPv4 route table")?;
        let mut outer: ArrayOfMaps<_, LpmTrie<MapData, [u8; 16], RouteEntry>> =
            ArrayOfMaps::try_from(self.map_mut(maps::ROUTES_V6)?)?;
        outer
            .set(0, &fresh.v6, 0)
            .context("swapping in the IPv6 route table")?;
        self.routes = Some(fresh);
        Ok(())
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

    /// Performs `writes` in order, on the route tables in use.
    pub fn apply(&mut self, writes: &[MapWrite]) -> anyhow::Result<()> {
        for write in writes {
            match write {
                MapWrite::Group(id, group) => self.set_group(*id, group)?,
                MapWrite::Route(prefix, entry) => self.routes()?.set(prefix, entry)?,
                MapWrite::DeleteRoute(prefix) => self.routes()?.delete(prefix)?,
            }
        }
        Ok(())
    }

    fn routes(&mut self) -> anyhow::Result<&mut RouteTables> {
        self.routes
            .as_mut()
            .context("no route tables yet: install() comes first")
    }

    /// Attaches the program to the interface `ifname`.
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> anyhow::Result<AttachedMode> {
        let ifname_c = std::ffi::CString::new(ifname)?;
        let native = match mode {
            AttachMode::Generic => None,
            AttachMode::Native | AttachMode::Auto => {
                Some(self.program().attach(ifname_c.as_c_str(), XdpMode::Driver))
            }
        };
        let (link, attached) = match native {
            Some(Ok(link)) => (link, AttachedMode::Native),
            Some(Err(err)) if mode == AttachMode::Native => {
                return Err(err).with_context(|| format!("attaching to {ifname} in native mode"));
            }
            Some(Err(err)) => {
                warn!(
                    "{ifname}: native XDP failed ({}); using generic mode, which is slower",
                    anyhow::Error::from(err)
                );
                let link = self
                    .program()
                    .attach(ifname_c.as_c_str(), XdpMode::Skb)
                    .with_context(|| format!("attaching to {ifname} in generic mode"))?;
                (link, AttachedMode::Generic)
            }
            None => {
                let link = self
                    .program()
                    .attach(ifname_c.as_c_str(), XdpMode::Skb)
                    .with_context(|| format!("attaching to {ifname} in generic mode"))?;
                (link, AttachedMode::Generic)
            }
        };
        self.links.push((ifname.to_owned(), link));
        info!("{ifname}: attached ({attached} mode)");
        Ok(attached)
    }

    /// Detaches from every interface, newest first.
    pub fn detach_all(&mut self) {
        while let Some((ifname, link)) = self.links.pop() {
            match self.program().detach(link) {
                Ok(()) => info!("{ifname}: detached"),
                Err(err) => warn!("{ifname}: detaching failed: {err}"),
            }
        }
    }

    /// Pins the program and every map under `dir` (a directory on a bpf filesystem), so that
    /// `stats`, `trace` and other processes can open them.
    pub fn pin(&mut self, dir: &Path) -> anyhow::Result<()> {
        ensure_bpffs(dir)?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for name in ALL_MAPS {
            self.map(name)?
                .pin(dir.join(name))
                .with_context(|| format!("pinning {name} under {}", dir.display()))?;
        }
        self.program()
            .pin(dir.join(PROGRAM_PIN))
            .with_context(|| format!("pinning the program under {}", dir.display()))?;
        Ok(())
    }

    /// The counters of every interface, summed over CPUs.
    pub fn stats(&self) -> anyhow::Result<Vec<crate::stats::InterfaceStats>> {
        let interfaces = HashMap::try_from(self.map(maps::INTERFACES)?)?;
        let counters = PerCpuArray::try_from(self.map(maps::COUNTERS)?)?;
        crate::stats::collect(&interfaces, &counters, |slot, key| {
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
    fn drop(&mut self) {
        self.detach_all();
    }
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

/// The LPM trie key that looks up one address in `ROUTES_V4` or `ROUTES_V6`.
pub fn lookup_v4(addr: std::net::Ipv4Addr) -> Key<[u8; 4]> {
    Key::new(32, addr.octets())
}

pub fn lookup_v6(addr: std::net::Ipv6Addr) -> Key<[u8; 16]> {
    Key::new(128, addr.octets())
}

/// Looks `addr` up in the pinned route maps under `dir`, as the program does.
pub fn lookup_route(dir: &Path, addr: IpAddr) -> anyhow::Result<Option<RouteEntry>> {
    Ok(match addr {
        IpAddr::V4(addr) => {
            let outer: ArrayOfMaps<_, LpmTrie<MapData, [u8; 4], RouteEntry>> =
                ArrayOfMaps::try_from(Map::ArrayOfMaps(open_pinned(dir, maps::ROUTES_V4)?))?;
            outer.get(&0, 0)?.get(&lookup_v4(addr), 0).ok()
        }
        IpAddr::V6(addr) => {
            let outer: ArrayOfMaps<_, LpmTrie<MapData, [u8; 16], RouteEntry>> =
                ArrayOfMaps::try_from(Map::ArrayOfMaps(open_pinned(dir, maps::ROUTES_V6)?))?;
            outer.get(&0, 0)?.get(&lookup_v6(addr), 0).ok()
        }
    })
}

/// Opens a map pinned under `dir` by [`Dataplane::pin`].
pub fn open_pinned(dir: &Path, name: &str) -> anyhow::Result<MapData> {
    let path = dir.join(name);
    MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is `pop-dataplane run` running with --pin-dir {}?)",
            path.display(),
            dir.display()
        )
    })
}

/// Removes the pins under `dir`, and `dir` itself.
pub fn unpin(dir: &Path) -> anyhow::Result<()> {
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
