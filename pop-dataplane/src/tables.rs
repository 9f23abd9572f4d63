//! The contents of the BPF maps, compiled from a validated config and the host's interfaces.
//! Slots and next-hop ids are dense indexes assigned here, in config order.

use std::{io, net::Ipv4Addr};

use ipnet::Ipv4Net;
use pop_dataplane_common::{Interface, Nexthop, RouteTarget, maps};

use crate::{
    config::{Config, ConfigError, RouteAction},
    netdev::NetDevice,
};

/// An interface to attach to, with its slot and what the program needs to know of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub device: NetDevice,
    /// Its `INTERFACES` entry; `entry.slot` indexes `EGRESS` and `COUNTERS`.
    pub entry: Interface,
}

/// Everything the maps hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// Slot `i` is `ports[i]`.
    pub ports: Vec<Port>,
    /// Next-hop id `i` is `nexthops[i]`.
    pub nexthops: Vec<Nexthop>,
    /// Config routes, then a /32 `local` route for each of the router's own addresses; the
    /// local routes win over a config route for the same /32.
    pub routes_v4: Vec<(Ipv4Net, RouteTarget)>,
}

impl Tables {
    /// Compiles `config` (read from `file`), looking interfaces up with `lookup`; packets to
    /// `local_addresses` go to the kernel. Fails, naming the entry, when an interface does not
    /// exist or a limit is exceeded.
    pub fn compile(
        config: &Config,
        file: &str,
        lookup: impl Fn(&str) -> io::Result<NetDevice>,
        local_addresses: &[Ipv4Addr],
    ) -> Result<Self, ConfigError> {
        let at = |line: usize, message: String| ConfigError {
            file: file.to_owned(),
            line: Some(line),
            message,
        };
        if config.interfaces.len() > maps::MAX_INTERFACES as usize {
            return Err(ConfigError {
                file: file.to_owned(),
                line: None,
                message: format!(
                    "{} interfaces; at most {} are supported",
                    config.interfaces.len(),
                    maps::MAX_INTERFACES
                ),
            });
        }
        let mut ports = Vec::with_capacity(config.interfaces.len());
        for (slot, interface) in config.interfaces.iter().enumerate() {
            let device = lookup(&interface.name).map_err(|err| {
                let why = if err.raw_os_error() == Some(libc::ENODEV) {
                    "no such interface in this network namespace".to_owned()
                } else {
                    err.to_string()
                };
                at(
                    interface.line,
                    format!("interface {:?}: {why}", interface.name),
                )
            })?;
            let entry = Interface::new(slot as u32, device.mac.0);
            ports.push(Port { device, entry });
        }

        if config.nexthops.len() > maps::MAX_NEXTHOPS as usize {
            return Err(ConfigError {
                file: file.to_owned(),
                line: None,
                message: format!(
                    "{} next hops; at most {} are supported",
                    config.nexthops.len(),
                    maps::MAX_NEXTHOPS
                ),
            });
        }
        let nexthops = config
            .nexthops
            .iter()
            .map(|nexthop| {
                let egress = ports
                    .iter()
                    .find(|port| port.device.name == nexthop.dev)
                    .expect("validated: a next hop's dev is a configured interface");
                Nexthop {
                    egress_slot: egress.entry.slot,
                    mtu: egress.device.mtu.min(u32::from(u16::MAX)) as u16,
                    flags: Nexthop::RESOLVED,
                    src_mac: egress.device.mac.0,
                    dst_mac: nexthop.lladdr.0,
                }
            })
            .collect();

        if config.routes.len() + local_addresses.len() > maps::MAX_ROUTES_V4 as usize {
            return Err(ConfigError {
                file: file.to_owned(),
                line: None,
                message: format!(
                    "{} IPv4 routes; at most {} are supported",
                    config.routes.len() + local_addresses.len(),
                    maps::MAX_ROUTES_V4
                ),
            });
        }
        let local: Vec<Ipv4Net> = local_addresses
            .iter()
            .map(|addr| Ipv4Net::from(*addr))
            .collect();
        let routes_v4 = config
            .routes
            .iter()
            .filter(|route| !local.contains(&route.prefix))
            .map(|route| {
                let target = match route.action {
                    RouteAction::Nexthop(id) => RouteTarget::nexthop(id as u32),
                    RouteAction::Blackhole => RouteTarget::blackhole(),
                    RouteAction::Kernel => RouteTarget::kernel(),
                };
                (route.prefix, target)
            })
            .chain(local.iter().map(|prefix| (*prefix, RouteTarget::local())))
            .collect();

        Ok(Self {
            ports,
            nexthops,
            routes_v4,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::MacAddr;

    fn device(name: &str) -> io::Result<NetDevice> {
        let ifindex = match name {
            "ra" => 7,
            "rb" => 9,
            _ => return Err(io::Error::from_raw_os_error(libc::ENODEV)),
        };
        Ok(NetDevice {
            name: name.to_owned(),
            ifindex,
            mac: MacAddr([2, 0, 0, 0, 0, ifindex as u8]),
            mtu: 1500,
        })
    }

    const CONFIG: &str = r#"
[[interface]]
name = "ra"
[[interface]]
name = "rb"
[[nexthop]]
name = "b"
dev = "rb"
lladdr = "02:00:00:00:00:bb"
[[route]]
prefix = "198.18.2.0/24"
nexthop = "b"
[[route]]
prefix = "0.0.0.0/0"
type = "blackhole"
"#;

    #[test]
    fn compiles() {
        let config = Config::parse("t.toml", CONFIG).unwrap();
        let local = ["198.18.1.1".parse().unwrap(), "198.18.2.0".parse().unwrap()];
        let tables = Tables::compile(&config, "t.toml", device, &local).unwrap();
        assert_eq!(tables.ports.len(), 2);
        assert_eq!(tables.ports[1].entry, Interface::new(1, [2, 0, 0, 0, 0, 9]));
        assert_eq!(
            tables.nexthops,
            [Nexthop {
                egress_slot: 1,
                mtu: 1500,
                flags: Nexthop::RESOLVED,
                src_mac: [2, 0, 0, 0, 0, 9],
                dst_mac: [2, 0, 0, 0, 0, 0xbb],
            }]
        );
        assert_eq!(
            tables.routes_v4,
            [
                ("198.18.2.0/24".parse().unwrap(), RouteTarget::nexthop(0)),
                ("0.0.0.0/0".parse().unwrap(), RouteTarget::blackhole()),
                ("198.18.1.1/32".parse().unwrap(), RouteTarget::local()),
                ("198.18.2.0/32".parse().unwrap(), RouteTarget::local()),
            ]
        );
    }

    #[test]
    fn unknown_interface() {
        let config = Config::parse("t.toml", &CONFIG.replace("\"rb\"", "\"rc\"")).unwrap();
        let err = Tables::compile(&config, "t.toml", device, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml:4: interface \"rc\": no such interface in this network namespace"
        );
    }
}
