//! The RIB: every route the daemon knows, with where it came from, and per prefix the one that
//! wins. The BPF route maps are compiled from the winners and from nothing else.

use std::collections::BTreeMap;

use ipnet::IpNet;

/// Where a route came from. Earlier sources win over later ones for the same prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// One of the router's own addresses: always the kernel's.
    Local,
    /// The config file.
    Config,
}

impl Source {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Config => "config",
        }
    }
}

/// What a route does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Forward through these next hops (ids, sorted, distinct): one, or several for ECMP.
    Nexthops(Vec<u32>),
    Blackhole,
    /// Hand to the kernel.
    Kernel,
    /// One of the router's own addresses.
    Local,
}

/// A prefix whose winning route changed: the new winner, or `None` when no route is left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub prefix: IpNet,
    pub best: Option<Action>,
}

#[derive(Clone, Debug, Default)]
pub struct Rib {
    routes: BTreeMap<IpNet, BTreeMap<Source, Action>>,
}

impl Rib {
    /// Adds or replaces the route for `prefix` from `source`; the change of winner, if any.
    pub fn insert(&mut self, prefix: IpNet, source: Source, action: Action) -> Option<Change> {
        let routes = self.routes.entry(prefix).or_default();
        let before = routes.first_key_value().map(|(_, a)| a.clone());
        routes.insert(source, action);
        let after = routes.first_key_value().map(|(_, a)| a.clone());
        (before != after).then_some(Change {
            prefix,
            best: after,
        })
    }

    /// Removes the route for `prefix` from `source`; the change of winner, if any.
    pub fn remove(&mut self, prefix: IpNet, source: Source) -> Option<Change> {
        let routes = self.routes.get_mut(&prefix)?;
        let before = routes.first_key_value().map(|(_, a)| a.clone());
        routes.remove(&source)?;
        let after = routes.first_key_value().map(|(_, a)| a.clone());
        if routes.is_empty() {
            self.routes.remove(&prefix);
        }
        (before != after).then_some(Change {
            prefix,
            best: after,
        })
    }

    /// The winning route of every prefix.
    pub fn best(&self) -> impl Iterator<Item = (IpNet, Source, &Action)> {
        self.routes.iter().filter_map(|(prefix, routes)| {
            routes
                .first_key_value()
                .map(|(source, action)| (*prefix, *source, action))
        })
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

    #[test]
    fn local_wins_and_config_comes_back() {
        let mut rib = Rib::default();
        let prefix: IpNet = "198.18.2.1/32".parse().unwrap();
        let via = Action::Nexthops(vec![3]);
        assert_eq!(
            rib.insert(prefix, Source::Config, via.clone()),
            Some(Change {
                prefix,
                best: Some(via.clone())
            })
        );
        assert_eq!(
            rib.insert(prefix, Source::Local, Action::Local),
            Some(Change {
                prefix,
                best: Some(Action::Local)
            })
        );
        // Replacing a losing route changes nothing visible.
        assert_eq!(rib.insert(prefix, Source::Config, Action::Blackhole), None);
        assert_eq!(
            rib.remove(prefix, Source::Local),
            Some(Change {
                prefix,
                best: Some(Action::Blackhole)
            })
        );
        assert_eq!(rib.remove(prefix, Source::Local), None);
        assert_eq!(
            rib.remove(prefix, Source::Config),
            Some(Change { prefix, best: None })
        );
        assert!(rib.is_empty());
    }
}
