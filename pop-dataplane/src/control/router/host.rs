//! What the host says: the router's own addresses, links coming and going, neighbours
//! resolved; and the source filter's rules, which follow the addresses and interfaces.

use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
};

use ipnet::IpNet;
use pop_dataplane_common::Interface;

use super::Router;
use crate::{
    config::DenyRule,
    control::{
        acl::{self, Acl, AclError, Origin},
        plan::MapWrite,
        rib::{Action, Change, Source},
        vrf::VrfId,
    },
    host::{Address, Link, vrf_device_of},
    mac::MacAddr,
};

impl Router {
    /// An interface got `address`: packets to it go to the kernel. Idempotent.
    pub fn local_address_added(&mut self, address: Address) -> Vec<MapWrite> {
        if !self.local.insert(address) {
            return Vec::new();
        }
        let (_, change) = self.rib.insert(
            self.address_vrf(&address),
            IpNet::from(address.addr),
            Source::Local,
            Action::Local,
        );
        let mut writes = self.compile(change);
        writes.extend(self.acl_writes());
        writes
    }

    /// An interface lost `address`; when no interface carries it any more, other routes for
    /// that address (if any) come back. Idempotent.
    pub fn local_address_removed(&mut self, address: Address) -> Vec<MapWrite> {
        let vrf = self.address_vrf(&address);
        if !self.local.remove(&address)
            || self
                .local
                .iter()
                .any(|a| a.addr == address.addr && self.address_vrf(a) == vrf)
        {
            return Vec::new();
        }
        let (_, change) = self
            .rib
            .remove(vrf, IpNet::from(address.addr), Source::Local);
        let mut writes = self.compile(change);
        writes.extend(self.acl_writes());
        writes
    }

    /// Makes the local addresses exactly `addresses` (after a fresh dump).
    pub fn set_local_addresses(&mut self, addresses: &[Address]) -> Vec<MapWrite> {
        let wanted: BTreeSet<Address> = addresses.iter().copied().collect();
        let gone: Vec<Address> = self.local.difference(&wanted).copied().collect();
        let mut writes = Vec::new();
        for address in gone {
            writes.extend(self.local_address_removed(address));
        }
        for address in wanted {
            writes.extend(self.local_address_added(address));
        }
        writes
    }

    /// [`Router::set_local_addresses`] in the RIB only, before a rebuild.
    /// The VRFs of the addresses may have changed with the topology: the old ones are
    /// removed from wherever they are.
    pub(super) fn set_local_addresses_in_rib(&mut self, addresses: &[Address]) {
        self.local.clear();
        for (vrf, prefix) in self.rib.prefixes_of(Source::Local) {
            self.rib.remove(vrf, prefix, Source::Local);
        }
        for address in addresses {
            self.local.insert(*address);
            self.rib.insert(
                self.address_vrf(address),
                IpNet::from(address.addr),
                Source::Local,
                Action::Local,
            );
        }
    }

    /// The VRF whose packets to `address` are the router's own: its interface's; the
    /// default VRF's for an address on an interface the dataplane does not route on (a
    /// loopback, a management port).
    fn address_vrf(&self, address: &Address) -> VrfId {
        self.topology
            .interfaces
            .iter()
            .find(|i| i.device == Some(address.ifindex) && i.entry.is_routed())
            .map_or(VrfId::DEFAULT, |i| VrfId(i.entry.vrf))
    }

    fn compile(&mut self, change: Option<Change>) -> Vec<MapWrite> {
        let mut writes = Vec::new();
        if let Some(change) = change {
            // Local routes need no ECMP group, nor do routes that fall back to one in use:
            // compiling them cannot fail.
            let usable = self.usable_set();
            self.fib
                .apply(&change, &|id| usable.contains(&id), &mut writes)
                .expect("local routes use no new ECMP group");
        }
        writes
    }

    /// The map writes that bring the ACL maps to the rules now (the martian rules follow
    /// the router's own addresses, rules with a `dev` its interfaces): hit counters of new
    /// rules zeroed, new and changed entries set, then the ones that went deleted.
    pub(super) fn acl_writes(&mut self) -> Vec<MapWrite> {
        let martians = Acl::martian_rules(self.martian_sources, &self.local_addresses());
        if let Err(err) = self.acl.set(Origin::Martian, &martians) {
            log::warn!("source checks: {err}; the router's own addresses are not all checked");
        }
        let entries = self.acl.compile(&self.topology);
        let mut writes: Vec<MapWrite> = self
            .acl
            .take_fresh()
            .into_iter()
            .map(MapWrite::ResetAclHits)
            .collect();
        for (key, entry) in &entries {
            if self.acl_installed.get(key) != Some(entry) {
                writes.push(MapWrite::Acl(*key, *entry));
            }
        }
        for key in self.acl_installed.keys() {
            if !entries.contains_key(key) {
                writes.push(MapWrite::DeleteAcl(*key));
            }
        }
        // Interfaces with entries carry `FILTERED`, without which the program skips the
        // lookup. Entries and flag may change in either order: a rule applies once both are
        // in, as it would a moment later in one write.
        let filtered: BTreeSet<u32> = entries.keys().map(|key| key.slot).collect();
        for interface in &mut self.topology.interfaces {
            let flags = if filtered.contains(&interface.entry.slot) {
                interface.entry.flags | Interface::FILTERED
            } else {
                interface.entry.flags & !Interface::FILTERED
            };
            if flags != interface.entry.flags {
                interface.entry.flags = flags;
                writes.push(MapWrite::Interface(interface.key, interface.entry));
            }
        }
        self.acl_installed = entries;
        writes
    }

    /// The ACL's rules.
    pub fn acl_rules(&self) -> impl Iterator<Item = (u32, &DenyRule, Origin)> {
        self.acl.rules()
    }

    /// Adds the CLI's deny `rule`, refused when its `dev` is not one of the interfaces or the
    /// maps would overflow.
    pub fn acl_add(&mut self, rule: DenyRule) -> Result<Vec<MapWrite>, AclError> {
        if let Some(dev) = &rule.dev
            && self.topology.interface(dev).is_none()
        {
            let error = AclError::UnknownDev {
                dev: dev.clone(),
                interfaces: self
                    .topology
                    .interfaces
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            return Err(AclError::Rule {
                rule,
                error: Box::new(error),
            });
        }
        let mut acl = self.acl.clone();
        acl.add(rule.clone(), Origin::Cli)?;
        acl::check_room(&acl.compile(&self.topology)).map_err(|error| AclError::Rule {
            rule,
            error: Box::new(error),
        })?;
        self.acl = acl;
        Ok(self.acl_writes())
    }

    /// Deletes the CLI's deny `rule`.
    pub fn acl_remove(&mut self, rule: &DenyRule) -> Result<Vec<MapWrite>, AclError> {
        self.acl.remove(rule)?;
        Ok(self.acl_writes())
    }

    /// The router's own addresses.
    pub fn local_addresses(&self) -> BTreeSet<IpAddr> {
        self.local.iter().map(|a| a.addr).collect()
    }

    /// Whether host interface `ifindex` was up when last heard of.
    pub fn link_up(&self, ifindex: u32) -> bool {
        self.links.get(&ifindex).is_some_and(|link| link.up)
    }

    /// A host interface appeared or changed: its state, MAC or MTU. Next hops and groups on it
    /// follow.
    pub fn link_changed(&mut self, link: Link) -> Vec<MapWrite> {
        let ifindex = link.ifindex;
        let before = self.links.insert(ifindex, link.clone());
        if before.as_ref() == Some(&link) {
            return Vec::new();
        }
        let mut writes = Vec::new();
        for interface in &mut self.topology.interfaces {
            // An interface takes its host device's MAC and MTU; a VLAN defined in the config
            // (no device of its own) rides on its port's.
            let follows = match interface.device {
                Some(device) => device == ifindex,
                None => interface.key.ifindex == ifindex,
            };
            if follows && (interface.entry.mac != link.mac.0 || interface.mtu != link.mtu) {
                interface.entry.mac = link.mac.0;
                interface.mtu = link.mtu;
                writes.push(MapWrite::Interface(interface.key, interface.entry));
            }
        }
        writes.extend(self.nexthops_on(ifindex));
        writes.extend(self.follow_vrf_devices());
        writes
    }

    /// Binds the interfaces that follow VRF devices (`RouterInterface::follows_vrf_device`)
    /// to the VRF of the device their host device is enslaved to now (`ip link set DEV master
    /// VRF`, or `nomaster`: the default VRF). One enslaved to a VRF device that no `[[vrf]]`
    /// names is not routed until it leaves it: its frames go to the kernel, which routes them
    /// in that VRF's table. The router's addresses on a moved interface move with it: into
    /// the new VRF before the interface does, out of the old one after.
    fn follow_vrf_devices(&mut self) -> Vec<MapWrite> {
        let mut moved = Vec::new();
        for (index, interface) in self.topology.interfaces.iter().enumerate() {
            let Some(device) = interface
                .device
                .filter(|_| interface.follows_vrf_device)
                .and_then(|d| self.links.get(&d))
            else {
                continue;
            };
            let (vrf, routed) = match vrf_device_of(device, |i| self.links.get(&i)) {
                None => (VrfId::DEFAULT, true),
                Some(vrf_device) => match self.vrfs.id(&vrf_device.name) {
                    Some(vrf) => (vrf, true),
                    None => {
                        log::warn!(
                            "{} is enslaved to VRF device {}, which no [[vrf]] names: the \
                             kernel routes its frames until it leaves it",
                            interface.name,
                            vrf_device.name
                        );
                        (VrfId::DEFAULT, false)
                    }
                },
            };
            let mut entry = interface.entry.in_vrf(vrf.0);
            entry.flags = if routed {
                entry.flags | Interface::ROUTED
            } else {
                entry.flags & !Interface::ROUTED
            };
            if entry != interface.entry {
                moved.push((index, entry));
            }
        }
        if moved.is_empty() {
            return Vec::new();
        }
        let before: Vec<(Address, VrfId)> = self
            .local
            .iter()
            .map(|address| (*address, self.address_vrf(address)))
            .collect();
        let mut writes = Vec::new();
        let mut interfaces = Vec::new();
        for (index, entry) in moved {
            let interface = &mut self.topology.interfaces[index];
            log::info!(
                "{}: now in VRF {}{}",
                interface.name,
                entry.vrf,
                if entry.is_routed() {
                    ""
                } else {
                    " (not routed)"
                }
            );
            interface.entry = entry;
            interfaces.push(MapWrite::Interface(interface.key, entry));
        }
        let mut gone = Vec::new();
        for (address, old) in before {
            let new = self.address_vrf(&address);
            if new == old {
                continue;
            }
            let prefix = IpNet::from(address.addr);
            let (_, change) = self.rib.insert(new, prefix, Source::Local, Action::Local);
            writes.extend(self.compile(change));
            gone.push((old, prefix));
        }
        writes.extend(interfaces);
        for (old, prefix) in gone {
            // Another interface of the old VRF may carry the same address.
            let still = self
                .local
                .iter()
                .any(|a| IpNet::from(a.addr) == prefix && self.address_vrf(a) == old);
            if !still {
                let (_, change) = self.rib.remove(old, prefix, Source::Local);
                writes.extend(self.compile(change));
            }
        }
        writes
    }

    /// `link` carries the name of one of the router's ports or interface devices under
    /// another ifindex: deleted and created again.
    pub fn recreated(&self, link: &Link) -> bool {
        self.topology
            .ports
            .iter()
            .any(|p| p.name == link.name && p.ifindex != link.ifindex)
            || self
                .topology
                .interfaces
                .iter()
                .any(|i| i.name == link.name && i.device.is_some_and(|d| d != link.ifindex))
    }

    /// A host interface is gone: its next hops cannot take traffic.
    pub fn link_removed(&mut self, ifindex: u32) -> Vec<MapWrite> {
        if self.links.remove(&ifindex).is_none() {
            return Vec::new();
        }
        let mut writes = self.nexthops_on(ifindex);
        // A VRF device gone frees its ports.
        writes.extend(self.follow_vrf_devices());
        writes
    }

    /// The kernel's neighbour table says `addr` on interface `ifindex` has `mac` (`None`: no
    /// usable entry).
    pub fn neighbour(&mut self, ifindex: u32, addr: IpAddr, mac: Option<MacAddr>) -> Vec<MapWrite> {
        let devs: Vec<String> = self
            .topology
            .interfaces
            .iter()
            .filter(|i| i.device == Some(ifindex))
            .map(|i| i.name.clone())
            .collect();
        let mut changed = Vec::new();
        for dev in devs {
            changed.extend(self.nexthops.learned(&dev, addr, mac));
        }
        if changed.is_empty() {
            return Vec::new();
        }
        self.nexthop_writes(changed)
    }

    /// The next hops whose neighbour the kernel resolves (no static MAC): (ifindex, address).
    pub fn kernel_neighbours(&self) -> Vec<(u32, IpAddr)> {
        self.nexthops
            .iter()
            .filter(|(_, entry)| entry.static_mac.is_none())
            .filter_map(|(_, entry)| {
                let device = self.topology.interface(&entry.key.dev)?.device?;
                Some((device, entry.via()?))
            })
            .collect()
    }

    /// Next hops over `ifindex` rewritten, and the groups refreshed.
    fn nexthops_on(&mut self, ifindex: u32) -> Vec<MapWrite> {
        let devs: HashSet<String> = self
            .topology
            .interfaces_on(ifindex)
            .map(|i| i.name.clone())
            .collect();
        let ids: Vec<u32> = self
            .nexthops
            .iter()
            .filter(|(_, entry)| devs.contains(&entry.key.dev))
            .map(|(id, _)| id)
            .collect();
        self.nexthop_writes(ids)
    }

    fn nexthop_writes(&mut self, ids: Vec<u32>) -> Vec<MapWrite> {
        let mut writes: Vec<MapWrite> = ids
            .into_iter()
            .map(|id| MapWrite::Nexthop(id, self.nexthop_value(id)))
            .collect();
        let usable = self.usable_set();
        writes.extend(self.fib.refresh_groups(&|id| usable.contains(&id)));
        writes
    }
}
