//! The running dataplane as other processes see it: the program and maps pinned on a bpf
//! filesystem. `stats`, `trace`, the benchmark's lookup and a new daemon open them here.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::{
    maps::{Map, MapData, PerCpuArray, PerCpuValues},
    programs::Xdp,
    util::nr_cpus,
};
use aya_obj::programs::XdpAttachType;
use log::info;
use pop_dataplane_common::{TraceRecord, maps, trace::TRACE_MAGIC};

use super::{
    ALL_MAPS, LINKS_DIR, PROGRAM_PIN,
    test_run::{TestRunOutput, test_run},
};

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
    remove_map_pins(dir)?;
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", dir.display())),
    }
}

/// Removes the maps' and the program's pins under `dir` (not the links').
pub(super) fn remove_map_pins(dir: &Path) -> anyhow::Result<()> {
    for name in ALL_MAPS.iter().chain(&[PROGRAM_PIN]) {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("removing {}", path.display())),
        }
    }
    Ok(())
}

/// Makes sure `dir`'s parent is on a bpf filesystem: mounts one at /sys/fs/bpf when that is
/// where it belongs and nothing is mounted there, as bpftool does.
pub(super) fn ensure_bpffs(dir: &Path) -> anyhow::Result<()> {
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
        // SAFETY: `statfs` is plain data, for which all zeroes is a valid value.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path, and a struct statfs to write into.
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
