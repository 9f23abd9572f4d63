//! The interface names a running daemon saves in its run directory (`interfaces.json`), so
//! that `stats`, `trace` and the next daemon can name what the maps hold: a VLAN
//! sub-interface defined in the config has no host interface to be named after.

use std::{fs, path::Path};

use anyhow::Context as _;

use crate::control::{nexthops::NamedNexthop, topology::NamedInterface};

const NAMES_FILE: &str = "interfaces.json";

/// Writes the running dataplane's interface names into its run directory.
pub(crate) fn save(run_dir: &Path, names: &[NamedInterface]) -> anyhow::Result<()> {
    let path = run_dir.join(NAMES_FILE);
    let tmp = run_dir.join(format!("{NAMES_FILE}.tmp"));
    fs::write(&tmp, serde_json::to_vec_pretty(names)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// The names the running dataplane saved; none when it saved none (or they do not read).
pub(crate) fn load(run_dir: &Path) -> Vec<NamedInterface> {
    fs::read(run_dir.join(NAMES_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

const NEXTHOPS_FILE: &str = "nexthops.json";

/// Writes the names of the running dataplane's next hops, by id, into its run directory.
pub(crate) fn save_nexthops(run_dir: &Path, names: &[NamedNexthop]) -> anyhow::Result<()> {
    let path = run_dir.join(NEXTHOPS_FILE);
    let tmp = run_dir.join(format!("{NEXTHOPS_FILE}.tmp"));
    fs::write(&tmp, serde_json::to_vec(names)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// The next hops' names the running dataplane saved; none when it saved none.
pub(crate) fn load_nexthops(run_dir: &Path) -> Vec<NamedNexthop> {
    fs::read(run_dir.join(NEXTHOPS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}
