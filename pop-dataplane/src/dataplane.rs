//! The loaded XDP program and its maps: load, fill, attach, pin, and run on a test frame.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMap, HashMap, LpmTrie, MapData, PerCpuArray, lpm_trie::Key},
    programs::{TestRun as _, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use ipnet::Ipv4Net;
use log::{info, warn};
use pop_dataplane_common::{Interface, Nexthop, RouteTarget, maps};

use crate::tables::Tables;

/// The XDP object built from `pop-dataplane-ebpf`, embedded at build time.
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pop-dataplane-xdp"));

/// The program's name in the object.
const PROGRAM: &str = "pop_dataplane";

/// Every map, for pinning.
const ALL_MAPS: [&str; 5] = [
    maps::INTERFACES,
    maps::EGRESS,
    maps::COUNTERS,
    maps::NEXTHOPS,
    maps::ROUTES_V4,
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

/// What one run of the program on a frame did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The XDP action (`XDP_PASS` = 2 and so on).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

pub struct Dataplane {
    ebpf: Ebpf,
    links: Vec<(String, XdpLinkId)>,
}

impl Dataplane {
    /// Loads the program into the kernel (the verifier runs here). `log_level` sets which of
    /// the program's own log statements are compiled in by the verifier.
    pub fn load(log_level: log::LevelFilter) -> anyhow::Result<Self> {
        let level = log_level as u8;
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &level, false)
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
        })
    }

    /// Starts forwarding the program's own log records (debug builds of the program's logs) to
    /// the `log` crate. Needs a tokio runtime.
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

    fn map_mut(&mut self, name: &str) -> anyhow::Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("the XDP object has no map {name}"))
    }

    /// Writes `tables` into the maps. Called before attaching, so that the first packet
    /// already sees complete tables.
    pub fn install(&mut self, tables: &Tables) -> anyhow::Result<()> {
        let mut interfaces: HashMap<_, u32, Interface> =
            HashMap::try_from(self.map_mut(maps::INTERFACES)?)?;
        for port in &tables.ports {
            interfaces
                .insert(&port.device.ifindex, &port.entry, 0)
                .with_context(|| format!("INTERFACES[{}]", port.device.name))?;
        }

        let mut egress = DevMap::try_from(self.map_mut(maps::EGRESS)?)?;
        for port in &tables.ports {
            egress
                .set(port.entry.slot, port.device.ifindex, None, 0)
                .with_context(|| format!("EGRESS[{}] = {}", port.entry.slot, port.device.name))?;
        }

        let mut nexthops: Array<_, Nexthop> = Array::try_from(self.map_mut(maps::NEXTHOPS)?)?;
        for (id, nexthop) in tables.nexthops.iter().enumerate() {
            nexthops
                .set(id as u32, nexthop, 0)
                .with_context(|| format!("NEXTHOPS[{id}]"))?;
        }

        let mut routes: LpmTrie<_, [u8; 4], RouteTarget> =
            LpmTrie::try_from(self.map_mut(maps::ROUTES_V4)?)?;
        for (prefix, target) in &tables.routes_v4 {
            routes
                .insert(&route_key_v4(prefix), target, 0)
                .with_context(|| format!("ROUTES_V4[{prefix}]"))?;
        }
        Ok(())
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

    /// Pins every map under `dir` (a directory on a bpf filesystem), so that `stats` and other
    /// processes can open them.
    pub fn pin_maps(&self, dir: &Path) -> anyhow::Result<()> {
        ensure_bpffs(dir)?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for name in ALL_MAPS {
            let map = self
                .ebpf
                .map(name)
                .with_context(|| format!("the XDP object has no map {name}"))?;
            map.pin(dir.join(name))
                .with_context(|| format!("pinning {name} under {}", dir.display()))?;
        }
        Ok(())
    }

    /// The counters of every attached interface, summed over CPUs.
    pub fn stats(&self) -> anyhow::Result<Vec<crate::stats::InterfaceStats>> {
        let map = |name| {
            self.ebpf
                .map(name)
                .with_context(|| format!("the XDP object has no map {name}"))
        };
        let interfaces = HashMap::try_from(map(maps::INTERFACES)?)?;
        let counters = PerCpuArray::try_from(map(maps::COUNTERS)?)?;
        crate::stats::collect(&interfaces, &counters)
    }

    /// Runs the loaded program once on `frame`, as if received on `ingress_ifindex` (which
    /// must exist in this thread's network namespace). Nothing is sent: a redirect only
    /// reports `XDP_REDIRECT`.
    pub fn test_run(
        &mut self,
        ingress_ifindex: u32,
        frame: &[u8],
    ) -> anyhow::Result<TestRunOutput> {
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex }: the kernel wants data = 0 (no metadata) and data_end = the
        // frame's length, and takes the ingress interface and queue from here.
        let frame_len = u32::try_from(frame.len()).context("frame too long")?;
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&frame_len.to_ne_bytes());
        ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
        // Room for a frame the program grows (VLAN push) by up to 8 bytes.
        let mut out = vec![0u8; frame.len() + 64];
        let result = self
            .program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        out.truncate(result.data_size_out as usize);
        Ok(TestRunOutput {
            action: result.return_value,
            frame: out,
        })
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// The LPM trie key of an IPv4 prefix.
pub fn route_key_v4(prefix: &Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(prefix.prefix_len()), prefix.network().octets())
}

/// The LPM trie key that looks up one address.
pub fn lookup_key_v4(addr: Ipv4Addr) -> Key<[u8; 4]> {
    Key::new(32, addr.octets())
}

/// Opens a map pinned under `dir` by [`Dataplane::pin_maps`].
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

/// Removes the pinned maps under `dir`, and `dir` itself.
pub fn unpin_maps(dir: &Path) -> anyhow::Result<()> {
    for name in ALL_MAPS {
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
    let default_root = Path::new("/sys/fs/bpf");
    if parent == default_root {
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
