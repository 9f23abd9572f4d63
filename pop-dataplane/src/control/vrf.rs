//! VRFs: routing tables of their own, bound to interfaces. Each has an id, its slot in the
//! route table maps (`Interface::vrf`); the default VRF is 0 and always there.

use std::collections::BTreeMap;

use pop_dataplane_common::maps::MAX_VRFS;
use serde::{Deserialize, Serialize};

use crate::{
    config::InterfaceConfig,
    host::{Host, Link},
};

/// A VRF's id: the slot of its tables in `FIB_V4`/`FIB_V6` (`ROUTES_V4`/`ROUTES_V6`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct VrfId(pub u16);

impl VrfId {
    pub const DEFAULT: Self = Self(0);

    pub const fn is_default(self) -> bool {
        self.0 == 0
    }
}

/// The name the default VRF goes by in route words and output.
pub const DEFAULT_VRF_NAME: &str = "default";

/// The VRFs by name, with stable ids: a VRF keeps its id across config moves, and an id let
/// go is not handed to another VRF in the same move (its interfaces could otherwise see the
/// other VRF's routes between their entry's write and the table swap).
#[derive(Clone, Debug, Default)]
pub struct Vrfs {
    by_name: BTreeMap<String, VrfId>,
}

/// More VRFs than the route table maps have slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("more than {} VRFs", MAX_VRFS - 1)]
pub struct TooManyVrfs;

impl Vrfs {
    /// The VRFs of `config`, numbered afresh (`config::vrf` bounds how many there are).
    pub fn of_config(config: &crate::config::Config) -> Self {
        Self::default()
            .renamed(config.vrfs.iter().map(|v| v.name.as_str()))
            .expect("the config holds at most MAX_VRFS - 1 VRFs")
    }

    /// The VRFs named in `names` (besides the default one), keeping the ids of those already
    /// here.
    pub fn renamed<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, TooManyVrfs> {
        let names: Vec<&str> = names.into_iter().collect();
        let mut by_name = BTreeMap::new();
        let mut taken: std::collections::BTreeSet<u16> =
            self.by_name.values().map(|id| id.0).collect();
        for name in &names {
            if let Some(&id) = self.by_name.get(*name) {
                by_name.insert((*name).to_owned(), id);
            }
        }
        let mut next = 1u16;
        for name in names {
            if by_name.contains_key(name) {
                continue;
            }
            while taken.contains(&next) {
                next += 1;
            }
            if u32::from(next) >= MAX_VRFS {
                return Err(TooManyVrfs);
            }
            taken.insert(next);
            by_name.insert(name.to_owned(), VrfId(next));
        }
        Ok(Self { by_name })
    }

    /// The id of VRF `name`; `default` is the default VRF.
    pub fn id(&self, name: &str) -> Option<VrfId> {
        if name == DEFAULT_VRF_NAME {
            return Some(VrfId::DEFAULT);
        }
        self.by_name.get(name).copied()
    }

    /// The name of VRF `id`.
    pub fn name(&self, id: VrfId) -> Option<&str> {
        if id.is_default() {
            return Some(DEFAULT_VRF_NAME);
        }
        self.by_name
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(name, _)| name.as_str())
    }

    /// Every VRF but the default one: (name, id).
    pub fn iter(&self) -> impl Iterator<Item = (&str, VrfId)> {
        self.by_name.iter().map(|(name, id)| (name.as_str(), *id))
    }

    /// The names of every VRF, the default one first, for error messages.
    pub fn names(&self) -> String {
        std::iter::once(DEFAULT_VRF_NAME)
            .chain(self.by_name.keys().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a configured interface has no VRF.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceVrfError {
    #[error(
        "vrf = {vrf:?}, but the interface is enslaved to VRF device {device:?} (kernel table \
         {table}): leave `vrf` out to follow the device, or move the interface"
    )]
    OtherDevice {
        vrf: String,
        device: String,
        table: u32,
    },
    #[error(
        "enslaved to VRF device {device:?} (kernel table {table}): add a [[vrf]] named \
         {device:?} to route it in that VRF"
    )]
    Undeclared { device: String, table: u32 },
    /// The config was checked against other VRFs than these (a bug, not a user's error).
    #[error("vrf {0:?} has no id")]
    NoId(String),
}

/// The VRF of configured interface `interface`, whose host device is `device` (`None` for a
/// VLAN sub-interface defined in the config): its `vrf`, or the VRF of the VRF device (l3mdev)
/// its device is enslaved to, which must be a `[[vrf]]` of the same name.
pub fn interface_vrf(
    interface: &InterfaceConfig,
    device: Option<&Link>,
    host: &Host,
    vrfs: &Vrfs,
) -> Result<VrfId, InterfaceVrfError> {
    let vrf_device = device.and_then(|d| host.vrf_device_of(d));
    let table = |device: &Link| device.vrf_table.unwrap_or(0);
    match (&interface.vrf, vrf_device) {
        (Some(name), Some(vrf_device)) if *name != vrf_device.name => {
            Err(InterfaceVrfError::OtherDevice {
                vrf: name.clone(),
                device: vrf_device.name.clone(),
                table: table(vrf_device),
            })
        }
        (Some(name), _) => vrfs
            .id(name)
            .ok_or_else(|| InterfaceVrfError::NoId(name.clone())),
        (None, Some(vrf_device)) => {
            vrfs.id(&vrf_device.name)
                .ok_or_else(|| InterfaceVrfError::Undeclared {
                    device: vrf_device.name.clone(),
                    table: table(vrf_device),
                })
        }
        (None, None) => Ok(VrfId::DEFAULT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_and_freed_ones_wait() {
        let first = Vrfs::default().renamed(["blue", "red"]).unwrap();
        assert_eq!(first.id("blue"), Some(VrfId(1)));
        assert_eq!(first.id("red"), Some(VrfId(2)));
        assert_eq!(first.id("default"), Some(VrfId::DEFAULT));
        assert_eq!(first.name(VrfId(2)), Some("red"));
        // blue goes, green comes: red keeps 2, green does not take blue's 1 in this move.
        let second = first.renamed(["red", "green"]).unwrap();
        assert_eq!(second.id("red"), Some(VrfId(2)));
        assert_eq!(second.id("green"), Some(VrfId(3)));
        assert_eq!(second.id("blue"), None);
        // In the next move 1 is free again.
        let third = second.renamed(["red", "green", "amber"]).unwrap();
        assert_eq!(third.id("amber"), Some(VrfId(1)));
        assert_eq!(third.names(), "default, amber, green, red");
    }

    #[test]
    fn slots_run_out() {
        let names: Vec<String> = (0..MAX_VRFS).map(|i| format!("v{i}")).collect();
        let err = Vrfs::default()
            .renamed(names.iter().map(String::as_str))
            .unwrap_err();
        assert_eq!(err.to_string(), format!("more than {} VRFs", MAX_VRFS - 1));
    }
}
