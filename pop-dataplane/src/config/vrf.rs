//! `[[vrf]]`: routing tables of their own, bound to the interfaces that name them
//! (`[[interface]] vrf = "NAME"`), each optionally following a kernel routing table:
//!
//! ```toml
//! [[vrf]]
//! name = "customers"
//! sync_kernel_table = 100      # what BIRD or FRR installs in kernel table 100
//! ```

use pop_dataplane_common::maps::MAX_VRFS;
use serde::Deserialize;

use super::{ConfigError, KernelTable};

/// The default VRF's name, which no `[[vrf]]` may take.
pub const DEFAULT_VRF: &str = "default";

/// Longest VRF name: Linux's limit for a VRF device's name (IFNAMSIZ - 1), so that a VRF can
/// bear its device's name.
const MAX_VRF_NAME_LEN: usize = 15;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrfConfig {
    pub name: String,
    /// The kernel table whose routes become this VRF's `kernel` routes.
    pub sync_kernel_table: Option<u32>,
    pub line: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVrf {
    name: String,
    sync_kernel_table: Option<KernelTable>,
}

/// The `[[vrf]]` entries, each with its line, checked against each other and against the
/// default VRF's kernel tables (`daemon_tables`).
pub(super) fn check(
    entries: &[(usize, &RawVrf)],
    daemon_tables: &[KernelTable],
    error: impl Fn(usize, String) -> ConfigError,
) -> Result<Vec<VrfConfig>, ConfigError> {
    let mut vrfs: Vec<VrfConfig> = Vec::with_capacity(entries.len());
    for &(line, raw) in entries {
        if vrfs.len() + 1 >= MAX_VRFS as usize {
            return Err(error(line, format!("more than {} VRFs", MAX_VRFS - 1)));
        }
        let at = |message: String| error(line, format!("vrf {:?}: {message}", raw.name));
        let name = raw.name.as_str();
        if name.is_empty()
            || name.len() > MAX_VRF_NAME_LEN
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(at(format!(
                "not a valid VRF name (1-{MAX_VRF_NAME_LEN} letters, digits, '-', '_' or '.')"
            )));
        }
        if name == DEFAULT_VRF {
            return Err(at(
                "\"default\" is the default VRF's name: interfaces without `vrf` are in it"
                    .to_owned(),
            ));
        }
        if let Some(first) = vrfs.iter().find(|v| v.name == name) {
            return Err(at(format!("listed twice (first on line {})", first.line)));
        }
        let table = raw.sync_kernel_table.map(|t| t.0);
        if let Some(table) = table {
            if let Some(other) = vrfs.iter().find(|v| v.sync_kernel_table == Some(table)) {
                return Err(at(format!(
                    "kernel table {table} is followed by vrf {:?} already (line {})",
                    other.name, other.line
                )));
            }
            if daemon_tables.iter().any(|t| t.0 == table) {
                return Err(at(format!(
                    "kernel table {table} is in [daemon] sync_kernel_tables, the default \
                     VRF's"
                )));
            }
        }
        vrfs.push(VrfConfig {
            name: name.to_owned(),
            sync_kernel_table: table,
            line,
        });
    }
    Ok(vrfs)
}

/// An entry names a VRF no `[[vrf]]` defines.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("vrf {vrf:?} is not one of the [[vrf]] entries ({known})")]
pub struct UnknownVrf {
    pub vrf: String,
    pub known: String,
}

/// Checks that `vrf`, named by an entry, is `default` or one of `vrfs`.
pub(super) fn check_known(vrf: &str, vrfs: &[VrfConfig]) -> Result<(), UnknownVrf> {
    if vrf == DEFAULT_VRF || vrfs.iter().any(|v| v.name == vrf) {
        return Ok(());
    }
    Err(UnknownVrf {
        vrf: vrf.to_owned(),
        known: std::iter::once(DEFAULT_VRF)
            .chain(vrfs.iter().map(|v| v.name.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
    })
}
