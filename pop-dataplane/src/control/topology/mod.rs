//! Where the program attaches and what it routes on, from the config and the host's
//! interfaces: ports (physical interfaces, one devmap entry each) and router interfaces (a
//! port's untagged side or a VLAN device on it, one counter slot each). Also how each next hop
//! leaves: port, VLAN tags, MACs, MTU.

use pop_dataplane_common::{Interface, InterfaceKey, Nexthop, maps};
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, ConfigError, InterfaceConfig, Urpf},
    control::vrf::{Vrfs, interface_vrf},
    host::{Host, Link},
    mac::MacAddr,
};

const ETH_P_8021Q: u16 = 0x8100;

/// A physical interface the program is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub ifindex: u32,
    /// Its index in `EGRESS`.
    pub index: u32,
}

/// An interface the router routes on: a port, or a VLAN device on one. A port whose untagged
/// side is not configured still gets one, not routed, so its frames are counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterInterface {
    pub name: String,
    /// How a frame received on it looks: port and VLAN tags.
    pub key: InterfaceKey,
    /// Its `INTERFACES` entry: counter slot, MAC, flags.
    pub entry: Interface,
    /// Index of its port in `EGRESS`.
    pub port: u32,
    pub mtu: u32,
    /// TPID of the outer tag it sends.
    pub outer_tpid: u16,
    /// The host's own interface of that name (a port or a Linux VLAN device), whose state,
    /// MAC, MTU and neighbour table apply; `None` for a VLAN sub-interface defined only in
    /// the config.
    pub device: Option<u32>,
    /// Its VRF is the one of the VRF device (l3mdev) its host device is enslaved to, followed
    /// as that changes: a configured interface with a device and no `vrf` of its own.
    pub follows_vrf_device: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    pub ports: Vec<Port>,
    pub interfaces: Vec<RouterInterface>,
}

impl Topology {
    /// Places every configured interface on its port. Fails, naming the entry, for an
    /// interface the host does not have or one stacked more than two VLANs deep.
    /// `vrfs` gives the ids of the VRFs interfaces are in.
    pub fn build(
        config: &Config,
        file: &str,
        host: &Host,
        vrfs: &Vrfs,
    ) -> Result<Self, ConfigError> {
        Self::build_after(config, file, host, vrfs, &Self::default())
    }

    /// [`Topology::build`], for a dataplane running with `previous`: an interface or port it
    /// already had keeps its counter slot or devmap index (and so its counters); new ones get
    /// slots and indexes `previous` does not use, so that nothing changes meaning under the
    /// packets of the old tables.
    pub fn build_after(
        config: &Config,
        file: &str,
        host: &Host,
        vrfs: &Vrfs,
        previous: &Self,
    ) -> Result<Self, ConfigError> {
        let mut topology = Self::default();
        let mut slots = Allocator::new(previous.interfaces.iter().map(|i| i.entry.slot));
        let mut indexes = Allocator::new(previous.ports.iter().map(|p| p.index));
        for interface in &config.interfaces {
            let at = |message: String| ConfigError {
                file: file.to_owned(),
                line: Some(interface.line),
                message: format!("interface {:?}: {message}", interface.name),
            };
            // A VLAN sub-interface defined in the config, or a host interface: a port, or a
            // Linux VLAN device on one.
            let (port_link, vlan_outer, vlan_inner, outer_tpid, mac, mtu, device) = match &interface
                .vlan
            {
                Some(vlan) => {
                    let port = host.link(&vlan.port).ok_or_else(|| {
                        at(format!(
                            "port {:?}: no such interface in this network namespace",
                            vlan.port
                        ))
                    })?;
                    if port.vlan.is_some() {
                        return Err(at(format!("port {:?} is itself a VLAN device", vlan.port)));
                    }
                    let inner = vlan.inner.unwrap_or(0);
                    (
                        port,
                        vlan.outer,
                        inner,
                        vlan.outer_tpid,
                        port.mac,
                        port.mtu,
                        None,
                    )
                }
                None => {
                    let link = host.link(&interface.name).ok_or_else(|| {
                        at("no such interface in this network namespace".to_owned())
                    })?;
                    let (port, outer, inner, tpid) =
                        place(link, host).map_err(|err| at(err.to_string()))?;
                    (
                        port,
                        outer,
                        inner,
                        tpid,
                        link.mac,
                        link.mtu,
                        Some(link.ifindex),
                    )
                }
            };
            let key = InterfaceKey {
                ifindex: port_link.ifindex,
                vlan_outer,
                vlan_inner,
            };
            if let Some(other) = topology.interfaces.iter().find(|i| i.key == key) {
                return Err(at(format!(
                    "the same port and VLAN tags as interface {:?}",
                    other.name
                )));
            }
            let port = topology.port(port_link, previous, &mut indexes);
            let slot = slot_for(previous, &interface.name, &key, &mut slots);
            let vrf = interface_vrf(
                interface,
                device.and_then(|d| host.link_by_index(d)),
                host,
                vrfs,
            )
            .map_err(|err| at(err.to_string()))?;
            topology.interfaces.push(RouterInterface {
                name: interface.name.clone(),
                key,
                entry: Interface::new(slot, mac.0, Interface::ROUTED | urpf_flags(interface))
                    .in_vrf(vrf.0),
                port,
                mtu,
                outer_tpid,
                device,
                follows_vrf_device: device.is_some() && interface.vrf.is_none(),
            });
        }
        // Ports whose untagged side is not configured: counted, not routed.
        for port in topology.ports.clone() {
            let key = InterfaceKey::untagged(port.ifindex);
            if topology.interfaces.iter().any(|i| i.key == key) {
                continue;
            }
            let link = host
                .link_by_index(port.ifindex)
                .expect("ports come from host links");
            let slot = slot_for(previous, &link.name, &key, &mut slots);
            topology.interfaces.push(RouterInterface {
                name: link.name.clone(),
                key,
                entry: Interface::new(slot, link.mac.0, 0),
                port: port.index,
                mtu: link.mtu,
                outer_tpid: ETH_P_8021Q,
                device: Some(link.ifindex),
                follows_vrf_device: false,
            });
        }
        if topology.interfaces.len() > maps::MAX_INTERFACES as usize
            || topology.ports.len() > maps::MAX_PORTS as usize
        {
            return Err(ConfigError {
                file: file.to_owned(),
                line: None,
                message: format!(
                    "{} interfaces on {} ports; at most {} interfaces and {} ports are supported",
                    topology.interfaces.len(),
                    topology.ports.len(),
                    maps::MAX_INTERFACES,
                    maps::MAX_PORTS
                ),
            });
        }
        Ok(topology)
    }

    /// The index of `link`'s port, adding it on first sight.
    fn port(&mut self, link: &Link, previous: &Self, indexes: &mut Allocator) -> u32 {
        if let Some(port) = self.ports.iter().find(|p| p.ifindex == link.ifindex) {
            return port.index;
        }
        let index = match previous.ports.iter().find(|p| p.ifindex == link.ifindex) {
            Some(port) => port.index,
            None => indexes.take(),
        };
        self.ports.push(Port {
            name: link.name.clone(),
            ifindex: link.ifindex,
            index,
        });
        index
    }

    /// The topology a running dataplane's maps hold (`INTERFACES` entries and `EGRESS` ports),
    /// named from `saved` and the host: what a daemon taking it over must leave alone.
    pub fn adopted(
        interfaces: &[(InterfaceKey, Interface)],
        ports: &[(u32, u32)],
        saved: &[NamedInterface],
        host: &Host,
    ) -> Self {
        let interfaces = interfaces
            .iter()
            .map(|&(key, entry)| RouterInterface {
                name: interface_name(saved, host, &key, entry.slot),
                key,
                entry,
                port: 0,
                mtu: 0,
                outer_tpid: 0,
                device: None,
                follows_vrf_device: false,
            })
            .collect();
        let ports = ports
            .iter()
            .map(|&(index, ifindex)| Port {
                name: host
                    .link_by_index(ifindex)
                    .map_or_else(String::new, |l| l.name.clone()),
                ifindex,
                index,
            })
            .collect();
        Self { ports, interfaces }
    }

    pub fn interface(&self, name: &str) -> Option<&RouterInterface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The interfaces whose state, MAC, MTU or neighbours come from host interface `ifindex`:
    /// the interface itself, or any VLAN on it when it is a port.
    pub fn interfaces_on(&self, ifindex: u32) -> impl Iterator<Item = &RouterInterface> {
        self.interfaces
            .iter()
            .filter(move |i| i.device == Some(ifindex) || i.key.ifindex == ifindex)
    }

    /// The interfaces' names and keys, as [`save_names`] writes them.
    pub fn names(&self) -> Vec<NamedInterface> {
        self.interfaces
            .iter()
            .map(|i| NamedInterface {
                name: i.name.clone(),
                slot: i.entry.slot,
                key: [
                    i.key.ifindex,
                    u32::from(i.key.vlan_outer),
                    u32::from(i.key.vlan_inner),
                ],
                vrf: None,
            })
            .collect()
    }

    /// How packets through a next hop on interface `dev` leave, to `mac`. Marked resolved
    /// when the MAC is known and `up`: else its packets go to the kernel.
    pub fn nexthop(&self, dev: &str, mac: Option<MacAddr>, up: bool) -> Option<Nexthop> {
        let egress = self.interface(dev)?;
        Some(Nexthop {
            port: egress.port,
            slot: egress.entry.slot,
            mtu: egress.mtu.min(u32::from(u16::MAX)) as u16,
            flags: if mac.is_some() && up {
                Nexthop::RESOLVED
            } else {
                0
            },
            vlan_outer: egress.key.vlan_outer,
            vlan_inner: egress.key.vlan_inner,
            vlan_outer_tpid: egress.outer_tpid,
            src_mac: egress.entry.mac,
            dst_mac: mac.unwrap_or_default().0,
            _pad: [0; 2],
        })
    }
}

/// An interface's name, for `stats` and `trace`, which see only the maps: a VLAN
/// sub-interface defined in the config has no host interface to be named after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedInterface {
    pub name: String,
    pub slot: u32,
    /// Port ifindex, outer and inner VLAN id.
    pub key: [u32; 3],
    /// Its VRF's name; `None` for the default VRF (and in files of versions before VRFs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
}

impl NamedInterface {
    pub fn key(&self) -> InterfaceKey {
        InterfaceKey {
            ifindex: self.key[0],
            vlan_outer: self.key[1] as u16,
            vlan_inner: self.key[2] as u16,
        }
    }
}

/// The name of the interface with counter slot `slot` that frames with `key` arrive on: as the
/// daemon saved it in `saved`, else the host's (the port, or the VLAN device on it), else
/// `if<index>[.<vlan>[.<vlan>]]`. The one way `stats`, `trace` and a take-over name an
/// interface the maps hold.
pub fn interface_name(
    saved: &[NamedInterface],
    host: &Host,
    key: &InterfaceKey,
    slot: u32,
) -> String {
    if let Some(named) = saved.iter().find(|n| n.slot == slot && n.key() == *key) {
        return named.name.clone();
    }
    let found = host.links.iter().find(|link| {
        place(link, host).is_ok_and(|(port, outer, inner, _)| {
            port.ifindex == key.ifindex && outer == key.vlan_outer && inner == key.vlan_inner
        })
    });
    match (found, key.vlan_outer, key.vlan_inner) {
        (Some(link), _, _) => link.name.clone(),
        (None, 0, _) => format!("if{}", key.ifindex),
        (None, outer, 0) => format!("if{}.{outer}", key.ifindex),
        (None, outer, inner) => format!("if{}.{outer}.{inner}", key.ifindex),
    }
}

/// Hands out the lowest numbers that are neither taken nor in use by a previous topology.
struct Allocator {
    in_use: std::collections::BTreeSet<u32>,
}

impl Allocator {
    fn new(previous: impl Iterator<Item = u32>) -> Self {
        Self {
            in_use: previous.collect(),
        }
    }

    fn take(&mut self) -> u32 {
        let n = (0..)
            .find(|n| !self.in_use.contains(n))
            .expect("a free number");
        self.in_use.insert(n);
        n
    }
}

/// The counter slot of interface `name` with `key`: its previous one when it had the same
/// name and key, else a new one.
fn slot_for(previous: &Topology, name: &str, key: &InterfaceKey, slots: &mut Allocator) -> u32 {
    match previous
        .interfaces
        .iter()
        .find(|i| i.name == name && i.key == *key)
    {
        Some(interface) => interface.entry.slot,
        None => slots.take(),
    }
}

/// The port `link` sits on, and the VLAN tags (outer, inner) and outer TPID it adds.
/// Why a VLAN device cannot be placed on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum PlaceError {
    #[error("its parent interface (index {0}) is gone")]
    ParentGone(u32),
    #[error("more than two VLAN tags deep: not supported")]
    TooDeep,
}

/// The port `link` rides on, with its outer and inner VLAN ids and the outer tag's TPID.
fn place<'a>(link: &'a Link, host: &'a Host) -> Result<(&'a Link, u16, u16, u16), PlaceError> {
    let Some(vlan) = link.vlan else {
        return Ok((link, 0, 0, ETH_P_8021Q));
    };
    let parent = host
        .link_by_index(vlan.parent)
        .ok_or(PlaceError::ParentGone(vlan.parent))?;
    let Some(outer) = parent.vlan else {
        return Ok((parent, vlan.id, 0, vlan.tpid));
    };
    let port = host
        .link_by_index(outer.parent)
        .ok_or(PlaceError::ParentGone(outer.parent))?;
    if port.vlan.is_some() {
        return Err(PlaceError::TooDeep);
    }
    Ok((port, outer.id, vlan.id, outer.tpid))
}

/// The `Interface` flags of an interface's uRPF settings.
fn urpf_flags(interface: &InterfaceConfig) -> u16 {
    let mode = match interface.urpf {
        Urpf::Off => return 0,
        Urpf::Loose => Interface::URPF_LOOSE,
        Urpf::Strict => Interface::URPF_STRICT,
    };
    if interface.urpf_allow_default {
        mode | Interface::URPF_ALLOW_DEFAULT
    } else {
        mode
    }
}

#[cfg(test)]
mod tests;
