//! The names a running daemon saves in its run directory, so that `stats`, `trace`, the
//! metrics and the next daemon can name what the maps hold by slot or id: its interfaces
//! (`interfaces.json`; a VLAN sub-interface defined in the config has no host interface to
//! be named after) and its next hops (`nexthops.json`).

use std::{fs, path::Path};

use anyhow::Context as _;
use serde::{Serialize, de::DeserializeOwned};

use crate::control::{nexthops::NamedNexthop, topology::NamedInterface};

const NAMES_FILE: &str = "interfaces.json";
const NEXTHOPS_FILE: &str = "nexthops.json";

/// Writes the running dataplane's interface names into its run directory.
pub(crate) fn save(run_dir: &Path, names: &[NamedInterface]) -> anyhow::Result<()> {
    write(run_dir, NAMES_FILE, names)
}

/// The names the running dataplane saved; none when it saved none (or they do not read).
pub(crate) fn load(run_dir: &Path) -> Vec<NamedInterface> {
    read(run_dir, NAMES_FILE)
}

/// Writes the names of the running dataplane's next hops, by id, into its run directory.
pub(crate) fn save_nexthops(run_dir: &Path, names: &[NamedNexthop]) -> anyhow::Result<()> {
    write(run_dir, NEXTHOPS_FILE, names)
}

/// The next hops' names the running dataplane saved; none when it saved none.
pub(crate) fn load_nexthops(run_dir: &Path) -> Vec<NamedNexthop> {
    read(run_dir, NEXTHOPS_FILE)
}

/// Writes `value` as `run_dir/name`, whole: through a temporary file renamed over it.
fn write<T: Serialize + ?Sized>(run_dir: &Path, name: &str, value: &T) -> anyhow::Result<()> {
    let path = run_dir.join(name);
    let tmp = run_dir.join(format!("{name}.tmp"));
    fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

fn read<T: DeserializeOwned + Default>(run_dir: &Path, name: &str) -> T {
    fs::read(run_dir.join(name))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}
