//! Routes from the kernel's FIB (`run --sync-kernel-table`): what a routing daemon (BIRD,
//! FRR's zebra) or an operator installed in a kernel routing table, read over rtnetlink and
//! followed from its events. The daemon gives them to the RIB as the `kernel` source.
//!
//! The kernel may hold several routes for one prefix in a table, with different metrics; it
//! forwards with the lowest, and so does the dataplane.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::{
    AddressFamily,
    route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteType},
};
use smallvec::SmallVec;

/// What a kernel route does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelTarget {
    /// Through gateways, each (interface index, address): one, or several for multipath.
    Via(Vec<(u32, IpAddr)>),
    /// No gateway: the prefix is on the link (a connected subnet), each destination its own
    /// neighbour.
    Direct(u32),
    /// Through a kernel nexthop object (`nhid`, see `kernel_nexthops`).
    Object(u32),
    Blackhole,
    /// Unreachable, prohibit, throw, or a next hop given in a form the fast path does not
    /// take (an IPv6 gateway for IPv4, a nexthop object without its details): the kernel
    /// answers.
    Kernel,
}

/// One route of a kernel table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRoute {
    /// The kernel table it is in.
    pub table: u32,
    pub prefix: IpNet,
    /// The route's priority: lower wins.
    pub metric: u32,
    pub target: KernelTarget,
}

/// The route a netlink route message describes, if it is in one of `tables` and is a
/// forwarding route (not a local, broadcast or multicast entry of the kernel's own, nor a
/// cached clone).
pub fn parse_route(message: &RouteMessage, tables: &[u32]) -> Option<KernelRoute> {
    let header = &message.header;
    let mut table = u32::from(header.table);
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = 0;
    let mut multipath = None;
    let mut object = None;
    let mut other_gateway = false;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(id) => table = *id,
            RouteAttribute::Destination(address) => destination = address_of(address),
            RouteAttribute::Gateway(address) => gateway = address_of(address),
            RouteAttribute::Via(_) => other_gateway = true,
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Priority(priority) => metric = *priority,
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            RouteAttribute::NhId(id) => object = Some(*id),
            _ => {}
        }
    }
    if !tables.contains(&table) || header.flags.contains(RouteFlags::Cloned) || header.tos != 0 {
        return None;
    }
    let unspecified = match header.address_family {
        AddressFamily::Inet => IpAddr::from([0u8; 4]),
        AddressFamily::Inet6 => IpAddr::from([0u8; 16]),
        _ => return None,
    };
    let prefix = IpNet::new(
        destination.unwrap_or(unspecified),
        header.destination_prefix_length,
    )
    .ok()?
    .trunc();
    // The object, not the gateways expanded beside it (`nexthop_compat_mode=1`): they
    // change with it.
    if let (RouteType::Unicast, Some(id)) = (header.kind, object) {
        return Some(KernelRoute {
            table,
            prefix,
            metric,
            target: KernelTarget::Object(id),
        });
    }
    let target = match header.kind {
        RouteType::Unicast if other_gateway => KernelTarget::Kernel,
        RouteType::Unicast => match (multipath, gateway, oif) {
            (Some(hops), _, _) => {
                let mut via = Vec::with_capacity(hops.len());
                for hop in hops {
                    let gateway = hop.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(address) => address_of(address),
                        _ => None,
                    });
                    match gateway {
                        Some(gateway) if gateway.is_ipv4() == prefix.addr().is_ipv4() => {
                            via.push((hop.interface_index, gateway));
                        }
                        _ => return Some(kernel_route(table, prefix, metric)),
                    }
                }
                via.sort_unstable();
                via.dedup();
                KernelTarget::Via(via)
            }
            (None, Some(gateway), Some(oif)) if gateway.is_ipv4() == prefix.addr().is_ipv4() => {
                KernelTarget::Via(vec![(oif, gateway)])
            }
            (None, None, Some(oif)) => KernelTarget::Direct(oif),
            _ => KernelTarget::Kernel,
        },
        RouteType::BlackHole => KernelTarget::Blackhole,
        RouteType::Unreachable | RouteType::Prohibit | RouteType::Throw => KernelTarget::Kernel,
        // The kernel's own entries (local, broadcast, anycast, multicast, NAT): not routes
        // to forward by.
        _ => return None,
    };
    Some(KernelRoute {
        table,
        prefix,
        metric,
        target,
    })
}

fn kernel_route(table: u32, prefix: IpNet, metric: u32) -> KernelRoute {
    KernelRoute {
        table,
        prefix,
        metric,
        target: KernelTarget::Kernel,
    }
}

fn address_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The routes of the synced tables, per prefix sorted by metric: the first is the kernel's.
#[derive(Debug, Default)]
pub struct KernelRoutes {
    routes: foldhash::HashMap<IpNet, SmallVec<[(u32, KernelTarget); 1]>>,
}

impl KernelRoutes {
    /// The route added, or replacing the one with its prefix and metric; with `append`
    /// (`NLM_F_APPEND`: `ip route append`, IPv6 multipath gateways added one by one), its
    /// gateways join those of that route. Whether the prefix's winner changed.
    pub fn add(&mut self, route: KernelRoute, append: bool) -> bool {
        let routes = self.routes.entry(route.prefix).or_default();
        let before = routes.first().map(|(_, target)| target.clone());
        match routes.binary_search_by_key(&route.metric, |(metric, _)| *metric) {
            Ok(i) => match (&mut routes[i].1, route.target) {
                (KernelTarget::Via(hops), KernelTarget::Via(more)) if append => {
                    hops.extend(more);
                    hops.sort_unstable();
                    hops.dedup();
                }
                (target, new) => *target = new,
            },
            Err(i) => routes.insert(i, (route.metric, route.target)),
        }
        before.as_ref() != routes.first().map(|(_, target)| target)
    }

    /// The route deleted. Whether the prefix's winner changed.
    ///
    /// The kernel tells the deletion of one gateway of an IPv6 multipath route (each is an
    /// entry of its own there) with that gateway alone: only it goes.
    pub fn remove(&mut self, route: &KernelRoute) -> bool {
        let Some(routes) = self.routes.get_mut(&route.prefix) else {
            return false;
        };
        let Ok(i) = routes.binary_search_by_key(&route.metric, |(metric, _)| *metric) else {
            return false;
        };
        match (&mut routes[i].1, &route.target) {
            (KernelTarget::Via(hops), KernelTarget::Via(gone))
                if route.prefix.addr().is_ipv6()
                    && hops.len() > 1
                    && gone.len() == 1
                    && hops.contains(&gone[0]) =>
            {
                hops.retain(|hop| *hop != gone[0]);
            }
            // Another interface's route for the same prefix and metric (IPv6 keeps one per
            // interface: fe80::/64 on each), which this one had replaced here.
            (KernelTarget::Direct(kept), KernelTarget::Direct(gone)) if kept != gone => {
                return false;
            }
            _ => {
                routes.remove(i);
            }
        }
        let changed = i == 0;
        if routes.is_empty() {
            self.routes.remove(&route.prefix);
        }
        changed
    }

    /// The route the kernel forwards `prefix` with.
    pub fn best(&self, prefix: &IpNet) -> Option<&KernelTarget> {
        self.routes.get(prefix)?.first().map(|(_, target)| target)
    }

    /// Every prefix with the route the kernel forwards it with.
    pub fn best_routes(&self) -> impl Iterator<Item = (IpNet, &KernelTarget)> {
        self.routes
            .iter()
            .filter_map(|(prefix, routes)| Some((*prefix, &routes.first()?.1)))
    }

    /// The prefixes whose route is through one of the nexthop objects `ids`.
    pub fn through_objects(&self, ids: &std::collections::BTreeSet<u32>) -> Vec<IpNet> {
        self.best_routes()
            .filter(|(_, target)| matches!(target, KernelTarget::Object(id) if ids.contains(id)))
            .map(|(prefix, _)| prefix)
            .collect()
    }

    /// Removes the routes through nexthop object `id`, which the kernel deleted with it;
    /// the prefixes whose winner changed.
    pub fn remove_through_object(&mut self, id: u32) -> Vec<IpNet> {
        let mut changed = Vec::new();
        self.routes.retain(|prefix, routes| {
            let first = routes.first().map(|(metric, _)| *metric);
            routes.retain(|(_, target)| *target != KernelTarget::Object(id));
            if routes.first().map(|(metric, _)| *metric) != first {
                changed.push(*prefix);
            }
            !routes.is_empty()
        });
        changed
    }

    /// Prefixes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::route::{RouteHeader, RouteNextHop, RouteVia};

    use super::*;

    fn message(prefix: &str, kind: RouteType, attributes: Vec<RouteAttribute>) -> RouteMessage {
        let prefix: IpNet = prefix.parse().unwrap();
        let mut message = RouteMessage::default();
        message.header.address_family = match prefix {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        message.header.destination_prefix_length = prefix.prefix_len();
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.kind = kind;
        message
            .attributes
            .push(RouteAttribute::Destination(prefix.addr().into()));
        message.attributes.extend(attributes);
        message
    }

    fn gateway(addr: &str) -> RouteAttribute {
        RouteAttribute::Gateway(addr.parse::<IpAddr>().unwrap().into())
    }

    fn via(hops: &[(u32, &str)]) -> KernelTarget {
        KernelTarget::Via(hops.iter().map(|(i, a)| (*i, a.parse().unwrap())).collect())
    }

    #[test]
    fn routes_of_every_kind_are_read() {
        let tables = [crate::config::kernel_table::RT_TABLE_MAIN];
        let parse = |m: &RouteMessage| parse_route(m, &tables).map(|r| (r.prefix, r.target));
        let single = message(
            "203.0.113.0/24",
            RouteType::Unicast,
            vec![gateway("198.18.2.2"), RouteAttribute::Oif(3)],
        );
        assert_eq!(
            parse(&single),
            Some(("203.0.113.0/24".parse().unwrap(), via(&[(3, "198.18.2.2")])))
        );
        let hop = |index, addr| {
            let mut hop = RouteNextHop::default();
            hop.interface_index = index;
            hop.attributes = vec![gateway(addr)];
            hop
        };
        let multipath = message(
            "2001:db8::/32",
            RouteType::Unicast,
            vec![RouteAttribute::MultiPath(vec![
                hop(4, "2001:2:0:2::3"),
                hop(3, "2001:2:0:2::2"),
            ])],
        );
        assert_eq!(
            parse(&multipath).unwrap().1,
            via(&[(3, "2001:2:0:2::2"), (4, "2001:2:0:2::3")])
        );
        let connected = message(
            "198.18.2.0/24",
            RouteType::Unicast,
            vec![RouteAttribute::Oif(3)],
        );
        assert_eq!(parse(&connected).unwrap().1, KernelTarget::Direct(3));
        let blackhole = message("192.0.2.0/24", RouteType::BlackHole, vec![]);
        assert_eq!(parse(&blackhole).unwrap().1, KernelTarget::Blackhole);
        let unreachable = message("192.0.2.0/25", RouteType::Unreachable, vec![]);
        assert_eq!(parse(&unreachable).unwrap().1, KernelTarget::Kernel);
        // An IPv4 route through an IPv6 gateway (RFC 5549): the kernel's.
        let v6_gateway = message(
            "203.0.113.0/24",
            RouteType::Unicast,
            vec![
                RouteAttribute::Via(RouteVia::Inet6("2001:2:0:2::2".parse().unwrap())),
                RouteAttribute::Oif(3),
            ],
        );
        assert_eq!(parse(&v6_gateway).unwrap().1, KernelTarget::Kernel);

        // Through a nexthop object: the object, whatever gateways come expanded beside it
        // (nexthop_compat_mode=1), or none (0).
        let mut object = single.clone();
        object.attributes.push(RouteAttribute::NhId(10));
        assert_eq!(parse(&object).unwrap().1, KernelTarget::Object(10));
        let bare = message(
            "203.0.113.0/24",
            RouteType::Unicast,
            vec![RouteAttribute::NhId(11)],
        );
        assert_eq!(parse(&bare).unwrap().1, KernelTarget::Object(11));

        // Not ours: another table, the kernel's local entries, cached clones.
        let mut other_table = single.clone();
        other_table.attributes.push(RouteAttribute::Table(100));
        assert_eq!(parse(&other_table), None);
        assert!(parse_route(&other_table, &[100]).is_some());
        assert_eq!(
            parse(&message("198.18.2.1/32", RouteType::Local, vec![])),
            None
        );
        let mut clone = single.clone();
        clone.header.flags = RouteFlags::Cloned;
        assert_eq!(parse(&clone), None);
        // The default route has no destination attribute.
        let mut default = message("0.0.0.0/0", RouteType::Unicast, vec![gateway("198.18.2.2")]);
        default
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Destination(_)));
        default.attributes.push(RouteAttribute::Oif(3));
        assert_eq!(
            parse(&default),
            Some(("0.0.0.0/0".parse().unwrap(), via(&[(3, "198.18.2.2")])))
        );
    }

    #[test]
    fn the_lowest_metric_wins_and_multipath_gateways_go_one_by_one() {
        let mut routes = KernelRoutes::default();
        let prefix: IpNet = "2001:db8::/32".parse().unwrap();
        let route = |metric, target| KernelRoute {
            table: 254,
            prefix,
            metric,
            target,
        };
        assert!(routes.add(route(1024, via(&[(3, "2001:2:0:2::2")])), false));
        assert!(!routes.add(route(2048, KernelTarget::Blackhole), false));
        assert!(routes.add(route(100, via(&[(4, "2001:2:0:2::3")])), false));
        // Appended: a gateway more; told twice, still one more.
        assert!(routes.add(route(100, via(&[(3, "2001:2:0:2::2")])), true));
        assert!(!routes.add(route(100, via(&[(3, "2001:2:0:2::2")])), true));
        assert_eq!(
            routes.best(&prefix),
            Some(&via(&[(3, "2001:2:0:2::2"), (4, "2001:2:0:2::3")]))
        );
        // One gateway of the multipath route deleted.
        assert!(routes.remove(&route(100, via(&[(4, "2001:2:0:2::3")]))));
        assert_eq!(routes.best(&prefix), Some(&via(&[(3, "2001:2:0:2::2")])));
        assert!(routes.remove(&route(100, via(&[(3, "2001:2:0:2::2")]))));
        assert_eq!(routes.best(&prefix), Some(&via(&[(3, "2001:2:0:2::2")])));
        assert!(!routes.remove(&route(2048, KernelTarget::Blackhole)));
        assert!(
            !routes.remove(&route(7, KernelTarget::Blackhole)),
            "no such route"
        );
        assert!(routes.remove(&route(1024, KernelTarget::Kernel)));
        assert_eq!(routes.best(&prefix), None);
        assert!(routes.is_empty());

        // IPv6 keeps a connected route per interface for one prefix and metric (fe80::/64):
        // one going does not take the other's.
        let link_local = |ifindex| KernelRoute {
            table: 254,
            prefix: "fe80::/64".parse().unwrap(),
            metric: 256,
            target: KernelTarget::Direct(ifindex),
        };
        routes.add(link_local(3), false);
        routes.add(link_local(4), false);
        assert!(!routes.remove(&link_local(3)));
        assert_eq!(
            routes.best(&"fe80::/64".parse().unwrap()),
            Some(&KernelTarget::Direct(4))
        );
    }

    #[test]
    fn routes_through_a_deleted_object_go_with_it() {
        let mut routes = KernelRoutes::default();
        let route = |prefix: &str, metric, target| KernelRoute {
            table: 254,
            prefix: prefix.parse().unwrap(),
            metric,
            target,
        };
        routes.add(route("198.19.1.0/24", 10, KernelTarget::Object(1)), false);
        routes.add(route("198.19.1.0/24", 20, KernelTarget::Object(2)), false);
        routes.add(route("198.19.2.0/24", 10, KernelTarget::Object(2)), false);
        routes.add(route("198.19.3.0/24", 10, KernelTarget::Object(1)), false);
        let through: std::collections::BTreeSet<u32> = [1].into();
        assert_eq!(routes.through_objects(&through).len(), 2);
        let mut changed = routes.remove_through_object(1);
        changed.sort();
        assert_eq!(
            changed,
            [
                "198.19.1.0/24".parse().unwrap(),
                "198.19.3.0/24".parse().unwrap()
            ]
        );
        // The next route of a prefix takes over; a prefix with none is gone.
        assert_eq!(
            routes.best(&"198.19.1.0/24".parse().unwrap()),
            Some(&KernelTarget::Object(2))
        );
        assert_eq!(routes.best(&"198.19.3.0/24".parse().unwrap()), None);
        assert_eq!(routes.len(), 2);
    }
}
