//! The RIB: every route the daemon knows, with where it came from, and per prefix the one that
//! wins. The BPF route maps are compiled from the winners and from nothing else.
//!
//! Sized for a full Internet table: one hash entry per prefix, next-hop sets shared.

use std::sync::Arc;

// foldhash: a full table is a million keys; SipHash would be a third of the load time.
use foldhash::HashMap;
use smallvec::SmallVec;

use ipnet::IpNet;

use crate::control::vrf::VrfId;

/// Where a route came from. Earlier sources win over later ones for the same prefix.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// One of the router's own addresses: always the kernel's.
    Local,
    /// Pushed with `pop-dataplane route ...`: the operator's latest word.
    Cli,
    /// The config file.
    Config,
    /// A kernel routing table the daemon follows (`run --sync-kernel-table`): what BIRD or
    /// FRR installed. Last: the operator's own routes override it.
    Kernel,
}

impl Source {
    pub const ALL: [Self; 4] = [Self::Local, Self::Cli, Self::Config, Self::Kernel];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Cli => "cli",
            Self::Config => "config",
            Self::Kernel => "kernel",
        }
    }
}

/// A set of next-hop ids, sorted and distinct; shared between the routes that use it.
pub type NexthopSet = Arc<[u32]>;

/// What a route does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Forward through these next hops: one, or several for ECMP.
    Nexthops(NexthopSet),
    /// Forward through the kernel nexthop object of this id (what FRR's zebra installs
    /// routes with), whatever it resolves to now: the FIB keeps its members.
    Object(u32),
    Blackhole,
    /// Hand to the kernel.
    Kernel,
    /// One of the router's own addresses.
    Local,
}

impl Action {
    /// The next hops it holds.
    pub fn nexthops(&self) -> &[u32] {
        match self {
            Self::Nexthops(set) => set,
            _ => &[],
        }
    }
}

/// A prefix whose winning route changed: the new winner, or `None` when no route is left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub vrf: VrfId,
    pub prefix: IpNet,
    pub best: Option<Action>,
}

/// A prefix's routes, sorted by source: the first wins. Nearly always one, kept inline: a
/// heap allocation per prefix would be a million of them.
type Routes = SmallVec<[(Source, Action); 1]>;

/// The RIB of every VRF: routes are keyed by (VRF, prefix).
#[derive(Clone, Debug, Default)]
pub struct Rib {
    routes: HashMap<(VrfId, IpNet), Routes>,
    /// How many of `routes`' prefixes are IPv4, kept as they come and go: capacity checks
    /// ask for it at every change, and counting a full table costs milliseconds.
    v4_prefixes: usize,
}

impl Rib {
    /// Makes room for `more` prefixes.
    pub fn reserve(&mut self, more: usize) {
        self.routes.reserve(more);
    }

    /// Adds or replaces the route for `prefix` from `source`. Returns the route it replaced
    /// (same prefix and source), and the change of winner, if any.
    pub fn insert(
        &mut self,
        vrf: VrfId,
        prefix: IpNet,
        source: Source,
        action: Action,
    ) -> (Option<Action>, Option<Change>) {
        let routes = self.routes.entry((vrf, prefix)).or_default();
        if routes.is_empty() && prefix.addr().is_ipv4() {
            self.v4_prefixes += 1;
        }
        let (replaced, at) = match routes.binary_search_by_key(&source, |(s, _)| *s) {
            Ok(i) => (Some(std::mem::replace(&mut routes[i].1, action)), i),
            Err(i) => {
                routes.insert(i, (source, action));
                (None, i)
            }
        };
        // Only a change at the front can change the winner: from the route replaced there,
        // or from the one the new route pushed back.
        let before = match (&replaced, routes.get(1)) {
            (Some(old), _) => Some(old),
            (None, Some((_, pushed_back))) => Some(pushed_back),
            (None, None) => None,
        };
        let change = (at == 0 && before != Some(&routes[0].1)).then(|| Change {
            vrf,
            prefix,
            best: Some(routes[0].1.clone()),
        });
        (replaced, change)
    }

    /// Removes the route for `prefix` from `source`. Returns it, and the change of winner.
    pub fn remove(
        &mut self,
        vrf: VrfId,
        prefix: IpNet,
        source: Source,
    ) -> (Option<Action>, Option<Change>) {
        let Some(routes) = self.routes.get_mut(&(vrf, prefix)) else {
            return (None, None);
        };
        let Ok(i) = routes.binary_search_by_key(&source, |(s, _)| *s) else {
            return (None, None);
        };
        let was_best = i == 0;
        let (_, removed) = routes.remove(i);
        let after = routes.first().map(|(_, a)| a.clone());
        if routes.is_empty() {
            self.routes.remove(&(vrf, prefix));
            if prefix.addr().is_ipv4() {
                self.v4_prefixes -= 1;
            }
        }
        let change = was_best.then_some(Change {
            vrf,
            prefix,
            best: after,
        });
        (Some(removed), change)
    }

    /// The routes of `prefix` in `vrf`, best first.
    pub fn routes(&self, vrf: VrfId, prefix: &IpNet) -> &[(Source, Action)] {
        self.routes
            .get(&(vrf, *prefix))
            .map_or(&[], |routes| routes.as_slice())
    }

    /// The route of `prefix` in `vrf` from `source`.
    pub fn get(&self, vrf: VrfId, prefix: &IpNet, source: Source) -> Option<&Action> {
        self.routes(vrf, prefix)
            .iter()
            .find(|(s, _)| *s == source)
            .map(|(_, action)| action)
    }

    /// The winning route of every prefix of every VRF, in no particular order.
    pub fn best(&self) -> impl Iterator<Item = (VrfId, IpNet, Source, &Action)> {
        self.routes
            .iter()
            .map(|((vrf, prefix), routes)| (*vrf, *prefix, routes[0].0, &routes[0].1))
    }

    /// Every route of every VRF, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = (VrfId, IpNet, Source, &Action)> {
        self.routes.iter().flat_map(|((vrf, prefix), routes)| {
            routes.iter().map(move |(s, a)| (*vrf, *prefix, *s, a))
        })
    }

    /// (VRF, prefix) of the routes from `source`.
    pub fn prefixes_of(&self, source: Source) -> Vec<(VrfId, IpNet)> {
        self.all()
            .filter(|(_, _, s, _)| *s == source)
            .map(|(v, p, _, _)| (v, p))
            .collect()
    }

    /// The longest prefix in `vrf` with a route that contains `addr`, and its routes.
    pub fn lookup(
        &self,
        vrf: VrfId,
        addr: std::net::IpAddr,
    ) -> Option<(IpNet, &[(Source, Action)])> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| {
            let prefix = IpNet::new(addr, len).ok()?.trunc();
            self.routes
                .get(&(vrf, prefix))
                .map(|routes| (prefix, routes.as_slice()))
        })
    }

    /// Prefixes with at least one route, IPv4 and IPv6, over every VRF.
    pub fn prefix_counts(&self) -> (usize, usize) {
        (self.v4_prefixes, self.routes.len() - self.v4_prefixes)
    }

    /// Prefixes with at least one route.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: VrfId = VrfId::DEFAULT;

    #[test]
    fn prefix_counts_follow_prefixes_not_routes() {
        let mut rib = Rib::default();
        let v4: IpNet = "198.18.0.0/16".parse().unwrap();
        let v6: IpNet = "2001:2::/48".parse().unwrap();
        rib.insert(D, v4, Source::Cli, Action::Blackhole);
        rib.insert(D, v4, Source::Config, Action::Kernel);
        rib.insert(D, v6, Source::Cli, Action::Blackhole);
        assert_eq!(rib.prefix_counts(), (1, 1));
        rib.remove(D, v4, Source::Cli);
        assert_eq!(rib.prefix_counts(), (1, 1));
        rib.remove(D, v4, Source::Config);
        rib.remove(D, v4, Source::Config);
        assert_eq!(rib.prefix_counts(), (0, 1));
        rib.remove(D, v6, Source::Cli);
        assert_eq!(rib.prefix_counts(), (0, 0));
    }

    #[test]
    fn sources_take_turns_by_preference() {
        let mut rib = Rib::default();
        let prefix: IpNet = "198.18.2.1/32".parse().unwrap();
        let via = Action::Nexthops(Arc::from([3]));
        assert_eq!(
            rib.insert(D, prefix, Source::Config, via.clone()),
            (
                None,
                Some(Change {
                    vrf: D,
                    prefix,
                    best: Some(via.clone())
                })
            )
        );
        let cli = Action::Nexthops(Arc::from([4, 5]));
        assert_eq!(
            rib.insert(D, prefix, Source::Cli, cli.clone()),
            (
                None,
                Some(Change {
                    vrf: D,
                    prefix,
                    best: Some(cli.clone())
                })
            )
        );
        assert_eq!(
            rib.insert(D, prefix, Source::Local, Action::Local),
            (
                None,
                Some(Change {
                    vrf: D,
                    prefix,
                    best: Some(Action::Local)
                })
            )
        );
        // Replacing a losing route changes nothing visible, and hands back the old one.
        assert_eq!(
            rib.insert(D, prefix, Source::Config, Action::Blackhole),
            (Some(via), None)
        );
        assert_eq!(
            rib.remove(D, prefix, Source::Local),
            (
                Some(Action::Local),
                Some(Change {
                    vrf: D,
                    prefix,
                    best: Some(cli.clone())
                })
            )
        );
        assert_eq!(rib.remove(D, prefix, Source::Local), (None, None));
        assert_eq!(
            rib.remove(D, prefix, Source::Config),
            (Some(Action::Blackhole), None)
        );
        assert_eq!(rib.get(D, &prefix, Source::Cli), Some(&cli));
        assert_eq!(
            rib.remove(D, prefix, Source::Cli),
            (
                Some(cli),
                Some(Change {
                    vrf: D,
                    prefix,
                    best: None
                })
            )
        );
        assert!(rib.is_empty());
    }

    #[test]
    fn vrfs_keep_their_own_routes() {
        let mut rib = Rib::default();
        let blue = VrfId(1);
        let prefix: IpNet = "198.18.2.0/24".parse().unwrap();
        rib.insert(D, prefix, Source::Config, Action::Kernel);
        let (_, change) = rib.insert(blue, prefix, Source::Config, Action::Blackhole);
        // The same prefix in another VRF is a route of its own, not a second source.
        assert_eq!(change.unwrap().vrf, blue);
        assert_eq!(rib.get(D, &prefix, Source::Config), Some(&Action::Kernel));
        assert_eq!(
            rib.lookup(blue, "198.18.2.1".parse().unwrap()).unwrap().1[0].1,
            Action::Blackhole
        );
        assert!(
            rib.lookup(VrfId(2), "198.18.2.1".parse().unwrap())
                .is_none()
        );
        assert_eq!(rib.prefix_counts(), (2, 0));
        rib.remove(D, prefix, Source::Config);
        assert_eq!(rib.prefixes_of(Source::Config), vec![(blue, prefix)]);
    }

    #[test]
    fn lookup_finds_the_longest_prefix() {
        let mut rib = Rib::default();
        for (prefix, action) in [
            ("198.18.0.0/15", Action::Kernel),
            ("198.18.2.0/24", Action::Blackhole),
        ] {
            rib.insert(D, prefix.parse().unwrap(), Source::Config, action);
        }
        let (prefix, routes) = rib.lookup(D, "198.18.2.9".parse().unwrap()).unwrap();
        assert_eq!(
            (prefix.to_string().as_str(), &routes[0].1),
            ("198.18.2.0/24", &Action::Blackhole)
        );
        let (prefix, _) = rib.lookup(D, "198.19.0.1".parse().unwrap()).unwrap();
        assert_eq!(prefix.to_string(), "198.18.0.0/15");
        assert!(rib.lookup(D, "2001:2::1".parse().unwrap()).is_none());
    }
}
