//! Everything the maps hold, compiled from a validated config and the host: the topology, the
//! next hops, and the routes (the RIB, and the FIB compiled from it). Kept by the daemon and
//! updated as the host changes; every update comes out as map writes.

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use pop_dataplane_common::{Nexthop, maps};

use crate::{
    config::{self, Config, ConfigError},
    fib::{Fib, FibFull, MapWrite},
    host::{Address, Host},
    rib::{Action, Rib, Source},
    topology::Topology,
};

#[derive(Debug)]
pub struct Tables {
    pub topology: Topology,
    /// Next-hop id `i` is `nexthops[i]`, the config's `i`-th next hop.
    pub nexthops: Vec<Nexthop>,
    pub rib: Rib,
    pub fib: Fib,
    /// The router's own addresses, on their interfaces.
    local: BTreeSet<Address>,
}

impl Tables {
    /// Compiles `config` (read from `file`) against `host`; also returns the map writes that
    /// install its routes. Fails, naming the entry, when an interface does not exist or a
    /// limit is exceeded.
    pub fn compile(
        config: &Config,
        file: &str,
        host: &Host,
    ) -> Result<(Self, Vec<MapWrite>), ConfigError> {
        let whole_file = |message: String| ConfigError {
            file: file.to_owned(),
            line: None,
            message,
        };
        let topology = Topology::build(config, file, host)?;
        if config.nexthops.len() > maps::MAX_NEXTHOPS as usize {
            return Err(whole_file(format!(
                "{} next hops; at most {} are supported",
                config.nexthops.len(),
                maps::MAX_NEXTHOPS
            )));
        }
        let nexthops = config
            .nexthops
            .iter()
            .map(|n| topology.nexthop(n))
            .collect();

        let mut tables = Self {
            topology,
            nexthops,
            rib: Rib::default(),
            fib: Fib::default(),
            local: BTreeSet::new(),
        };
        let (mut v4, mut v6) = (0, 0);
        let mut writes = Vec::new();
        for route in &config.routes {
            let action = match &route.action {
                config::RouteAction::Nexthops(ids) => {
                    Action::Nexthops(ids.iter().map(|&id| id as u32).collect())
                }
                config::RouteAction::Blackhole => Action::Blackhole,
                config::RouteAction::Kernel => Action::Kernel,
            };
            match route.prefix {
                IpNet::V4(_) => v4 += 1,
                IpNet::V6(_) => v6 += 1,
            }
            if let Some(change) = tables.rib.insert(route.prefix, Source::Config, action) {
                tables
                    .fib
                    .apply(&change, &mut writes)
                    .map_err(|err| whole_file(err.to_string()))?;
            }
        }
        if v4 > maps::MAX_ROUTES_V4 as usize || v6 > maps::MAX_ROUTES_V6 as usize {
            return Err(whole_file(format!(
                "{v4} IPv4 and {v6} IPv6 routes; at most {} and {} are supported",
                maps::MAX_ROUTES_V4,
                maps::MAX_ROUTES_V6
            )));
        }
        writes.extend(tables.set_local_addresses(&host.addresses));
        Ok((tables, writes))
    }

    /// Adds or replaces the route for `prefix` from `source`; the map writes that follow.
    pub fn set_route(
        &mut self,
        prefix: IpNet,
        source: Source,
        action: Action,
    ) -> Result<Vec<MapWrite>, FibFull> {
        let mut writes = Vec::new();
        if let Some(change) = self.rib.insert(prefix, source, action) {
            self.fib.apply(&change, &mut writes)?;
        }
        Ok(writes)
    }

    /// An interface got `address`: packets to it go to the kernel. Idempotent.
    pub fn local_address_added(&mut self, address: Address) -> Vec<MapWrite> {
        if !self.local.insert(address) {
            return Vec::new();
        }
        self.update(IpNet::from(address.addr), |rib, prefix| {
            rib.insert(prefix, Source::Local, Action::Local)
        })
    }

    /// An interface lost `address`; when no interface carries it any more, the config's
    /// route (if any) for that address comes back. Idempotent.
    pub fn local_address_removed(&mut self, address: Address) -> Vec<MapWrite> {
        if !self.local.remove(&address) || self.carries(address.addr) {
            return Vec::new();
        }
        self.update(IpNet::from(address.addr), |rib, prefix| {
            rib.remove(prefix, Source::Local)
        })
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

    fn carries(&self, addr: IpAddr) -> bool {
        self.local.iter().any(|a| a.addr == addr)
    }

    fn update(
        &mut self,
        prefix: IpNet,
        change: impl FnOnce(&mut Rib, IpNet) -> Option<crate::rib::Change>,
    ) -> Vec<MapWrite> {
        let mut writes = Vec::new();
        if let Some(change) = change(&mut self.rib, prefix) {
            // Local routes never need a group: compiling them cannot fail.
            self.fib
                .apply(&change, &mut writes)
                .expect("local routes use no ECMP group");
        }
        writes
    }

    /// The router's own addresses.
    pub fn local_addresses(&self) -> BTreeSet<IpAddr> {
        self.local.iter().map(|a| a.addr).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{host::Link, mac::MacAddr};
    use pop_dataplane_common::{Route, RouteEntry, RouteTarget};

    fn host() -> Host {
        let link = |ifindex: u32, name: &str| Link {
            ifindex,
            name: name.to_owned(),
            mac: MacAddr([2, 0, 0, 0, 0, ifindex as u8]),
            mtu: 1500,
            up: true,
            vlan: None,
        };
        Host {
            links: vec![link(7, "ra"), link(9, "rb")],
            addresses: vec![
                Address {
                    ifindex: 9,
                    addr: "198.18.2.1".parse().unwrap(),
                },
                Address {
                    ifindex: 9,
                    addr: "2001:2:0:2::1".parse().unwrap(),
                },
            ],
        }
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
[[nexthop]]
name = "b2"
dev = "rb"
lladdr = "02:00:00:00:00:b2"
[[route]]
prefix = "198.18.2.0/24"
nexthop = "b"
[[route]]
prefix = "198.18.2.1/32"
type = "blackhole"
[[route]]
prefix = "2001:2:0:9::/64"
nexthop = ["b", "b2"]
"#;

    fn entry(route: Route, len: u8) -> RouteEntry {
        RouteEntry::new(RouteTarget::new(route), len)
    }

    #[test]
    fn compiles_routes_and_follows_local_addresses() {
        let config = Config::parse("t.toml", CONFIG).unwrap();
        let (mut tables, writes) = Tables::compile(&config, "t.toml", &host()).unwrap();
        assert_eq!(tables.nexthops.len(), 2);
        let routes: Vec<_> = tables
            .fib
            .routes()
            .map(|(p, e)| (p.to_string(), *e))
            .collect();
        assert_eq!(
            routes,
            [
                ("198.18.2.0/24".to_owned(), entry(Route::Nexthop(0), 24)),
                ("198.18.2.1/32".to_owned(), entry(Route::Local, 32)),
                ("2001:2:0:2::1/128".to_owned(), entry(Route::Local, 128)),
                ("2001:2:0:9::/64".to_owned(), entry(Route::Group(0), 64)),
            ]
        );
        assert!(matches!(writes[0], MapWrite::Route(..)));
        assert!(writes.contains(&MapWrite::Group(0, Box::new(crate::fib::buckets(&[0, 1])))));

        // The address goes away: the config's blackhole for it comes back.
        let on_rb = Address {
            ifindex: 9,
            addr: "198.18.2.1".parse().unwrap(),
        };
        let on_ra = Address {
            ifindex: 7,
            ..on_rb
        };
        assert_eq!(
            tables.local_address_removed(on_rb),
            [MapWrite::Route(
                "198.18.2.1/32".parse().unwrap(),
                entry(Route::Blackhole, 32)
            )]
        );
        assert_eq!(tables.local_address_added(on_rb).len(), 1);
        assert!(tables.local_address_added(on_rb).is_empty(), "idempotent");
        // A second interface with the same address changes nothing, nor does its removal.
        assert!(tables.local_address_added(on_ra).is_empty());
        assert!(tables.local_address_removed(on_ra).is_empty());
        // A fresh dump without it takes it away.
        assert_eq!(tables.set_local_addresses(&[]).len(), 2);
        assert_eq!(tables.local_addresses().len(), 0);
        assert_eq!(tables.set_local_addresses(&[on_rb]).len(), 1);
        assert_eq!(
            tables.fib.get(&"198.18.2.1/32".parse().unwrap()),
            Some(&entry(Route::Local, 32))
        );
    }
}
