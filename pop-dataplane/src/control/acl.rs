//! The ingress source filter: the operator's deny rules (`[[acl]]` in the config, `acl add`
//! from the CLI) and, with `[filter] martian_sources`, the martian sources of RFC 1812 5.3.7
//! and their IPv6 counterparts, with the router's own addresses. Compiled into the ACL maps
//! (see `pop_dataplane_common::acl`): one entry per rule and interface it applies to.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;
use pop_dataplane_common::{acl::AclEntry, maps};
use serde::{Deserialize, Serialize};

use crate::{config::DenyRule, control::topology::Topology};

/// Why the ACL refused a change; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("{rule} is in the ACL already (from {})", .origin.describe())]
    Exists { rule: DenyRule, origin: Origin },
    #[error("the ACL is full ({MAX_RULES} rules)")]
    Full,
    #[error("{0} is not in the ACL")]
    NotThere(DenyRule),
    #[error("{rule} comes from {}: change it there", .origin.describe())]
    NotFromCli { rule: DenyRule, origin: Origin },
    #[error("{total} ACL rules; at most {MAX_RULES} are supported")]
    TooManyRules { total: usize },
    #[error(
        "the ACL would take {v4} IPv4 and {v6} IPv6 entries (rules times the interfaces they \
         apply to); at most {MAX_ENTRIES} each"
    )]
    TooManyEntries { v4: usize, v6: usize },
    #[error("dev {dev:?} is not one of the interfaces ({interfaces})")]
    UnknownDev { dev: String, interfaces: String },
    /// An error about one rule, with the rule.
    #[error("{rule}: {error}")]
    Rule {
        rule: DenyRule,
        error: Box<AclError>,
    },
}

/// Rules, of every origin together.
pub const MAX_RULES: usize = maps::MAX_ACL_RULES as usize;

/// Entries per family in the maps.
pub const MAX_ENTRIES: usize = maps::MAX_ACL_ENTRIES as usize;

/// Sources a router must not forward from (RFC 1812 5.3.7: "this network", loopback, class D
/// multicast, class E with the limited broadcast address; RFC 4291: the unspecified and
/// loopback addresses, multicast).
pub const MARTIAN_PREFIXES: [&str; 7] = [
    "0.0.0.0/8",
    "127.0.0.0/8",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "ff00::/8",
];

/// Where a rule comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Config,
    Cli,
    /// Source checks: a martian prefix or one of the router's own addresses.
    Martian,
}

/// A compiled entry's key: an interface slot and a source prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclKey {
    pub slot: u32,
    pub src: IpNet,
}

/// What the ACL maps must hold.
pub type AclEntries = BTreeMap<AclKey, AclEntry>;

/// One rule, as `acl list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    pub id: u32,
    pub rule: DenyRule,
    pub origin: Origin,
    /// Packets and bytes it dropped since it was added (or the daemon started).
    pub packets: u64,
    pub bytes: u64,
}

/// The rules, each under a stable id: its hit counter's index.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    rules: BTreeMap<u32, (DenyRule, Origin)>,
    /// Ids given out since the last [`Acl::take_fresh`]: their counters start at zero.
    fresh: Vec<u32>,
}

impl Acl {
    /// Adds `rule`; refused when it is there already (from any origin) or no id is free.
    pub fn add(&mut self, rule: DenyRule, origin: Origin) -> Result<u32, AclError> {
        if let Some((_, (_, had))) = self.rules.iter().find(|(_, (r, _))| *r == rule) {
            return Err(AclError::Exists { rule, origin: *had });
        }
        let id = self.free_id().ok_or(AclError::Full)?;
        self.rules.insert(id, (rule, origin));
        self.fresh.push(id);
        Ok(id)
    }

    /// Removes the CLI's `rule`.
    pub fn remove(&mut self, rule: &DenyRule) -> Result<(), AclError> {
        let Some((&id, (_, origin))) = self.rules.iter().find(|(_, (r, _))| r == rule) else {
            return Err(AclError::NotThere(rule.clone()));
        };
        if *origin != Origin::Cli {
            return Err(AclError::NotFromCli {
                rule: rule.clone(),
                origin: *origin,
            });
        }
        self.rules.remove(&id);
        Ok(())
    }

    /// Makes `rules` the rules of `origin`: those already there keep their ids (and counts).
    /// Fails, changing nothing, when they do not fit.
    pub fn set(&mut self, origin: Origin, rules: &[DenyRule]) -> Result<(), AclError> {
        let wanted: BTreeSet<&DenyRule> = rules.iter().collect();
        let have: BTreeSet<&DenyRule> = self
            .rules
            .values()
            .filter(|(_, o)| *o == origin)
            .map(|(rule, _)| rule)
            .collect();
        let new: Vec<DenyRule> = wanted.difference(&have).map(|&r| r.clone()).collect();
        let others = self.rules.len() - have.len();
        let total = others + wanted.len();
        if total > MAX_RULES {
            return Err(AclError::TooManyRules { total });
        }
        self.rules
            .retain(|_, (r, o)| *o != origin || wanted.contains(r));
        for rule in new {
            // A rule of another origin with the same match keeps its entry; this one is
            // shadowed, and listed as such.
            let id = self.free_id().expect("room checked");
            self.rules.insert(id, (rule, origin));
            self.fresh.push(id);
        }
        Ok(())
    }

    /// The martian rules for source checks on (`enabled`), with the router's `own` addresses.
    pub fn martian_rules(enabled: bool, own: &BTreeSet<IpAddr>) -> Vec<DenyRule> {
        if !enabled {
            return Vec::new();
        }
        MARTIAN_PREFIXES
            .iter()
            .map(|p| p.parse().expect("valid prefixes"))
            .chain(own.iter().map(|&addr| IpNet::from(addr)))
            .map(|src| DenyRule { src, dev: None })
            .collect()
    }

    /// The lowest id no rule holds.
    fn free_id(&self) -> Option<u32> {
        (0..MAX_RULES as u32).find(|id| !self.rules.contains_key(id))
    }

    /// Ids given out since the last call.
    pub fn take_fresh(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.fresh)
    }

    pub fn rules(&self) -> impl Iterator<Item = (u32, &DenyRule, Origin)> {
        self.rules
            .iter()
            .map(|(id, (rule, origin))| (*id, rule, *origin))
    }

    /// The map entries for `topology`: a rule with a `dev` on that interface, one without on
    /// every routed interface. Where two rules give the same entry, the operator's wins over
    /// a martian one, then the lower id. A rule whose `dev` is not in the topology has none.
    pub fn compile(&self, topology: &Topology) -> AclEntries {
        let mut entries = AclEntries::new();
        let mut ordered: Vec<(u32, &DenyRule, Origin)> = self.rules().collect();
        ordered.sort_by_key(|(id, _, origin)| (*origin == Origin::Martian, *id));
        for (id, rule, origin) in ordered {
            let entry = AclEntry {
                rule: id,
                kind: if origin == Origin::Martian {
                    AclEntry::MARTIAN
                } else {
                    AclEntry::DENY
                },
            };
            let slots: Vec<u32> = match &rule.dev {
                Some(dev) => topology
                    .interface(dev)
                    .map(|i| i.entry.slot)
                    .into_iter()
                    .collect(),
                None => topology
                    .interfaces
                    .iter()
                    .filter(|i| i.entry.is_routed())
                    .map(|i| i.entry.slot)
                    .collect(),
            };
            for slot in slots {
                entries
                    .entry(AclKey {
                        slot,
                        src: rule.src,
                    })
                    .or_insert(entry);
            }
        }
        entries
    }
}

/// Whether `entries` fit the maps.
pub fn check_room(entries: &AclEntries) -> Result<(), AclError> {
    let (v4, v6) = entry_counts(entries);
    if v4.max(v6) > MAX_ENTRIES {
        return Err(AclError::TooManyEntries { v4, v6 });
    }
    Ok(())
}

/// Entries per family, for the capacity check.
pub fn entry_counts(entries: &AclEntries) -> (usize, usize) {
    let v4 = entries
        .keys()
        .filter(|k| matches!(k.src, IpNet::V4(_)))
        .count();
    (v4, entries.len() - v4)
}

impl Origin {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Cli => "cli",
            Self::Martian => "martian",
        }
    }

    /// Where the rule is set, for messages.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Config => "the config file",
            Self::Cli => "the CLI",
            Self::Martian => "the source checks ([filter] martian_sources)",
        }
    }
}

#[cfg(test)]
mod tests {
    use pop_dataplane_common::{Interface, InterfaceKey};

    use super::*;
    use crate::control::topology::RouterInterface;

    fn rule(src: &str, dev: Option<&str>) -> DenyRule {
        DenyRule {
            src: src.parse().unwrap(),
            dev: dev.map(str::to_owned),
        }
    }

    fn interface(name: &str, slot: u32, routed: bool) -> RouterInterface {
        RouterInterface {
            name: name.to_owned(),
            key: InterfaceKey::untagged(slot + 10),
            entry: Interface::new(slot, [2, 0, 0, 0, 0, 1], u16::from(routed)),
            port: slot,
            mtu: 1500,
            outer_tpid: 0,
            device: Some(slot + 10),
            follows_vrf_device: false,
        }
    }

    #[test]
    fn a_rule_applies_to_its_interface_or_to_every_routed_one() {
        let topology = Topology {
            ports: Vec::new(),
            interfaces: vec![
                interface("eth0", 0, true),
                interface("eth1", 1, true),
                interface("eth2", 2, false),
            ],
        };
        let mut acl = Acl::default();
        let global = acl.add(rule("192.0.2.0/24", None), Origin::Config).unwrap();
        let local = acl
            .add(rule("198.51.100.0/24", Some("eth1")), Origin::Cli)
            .unwrap();
        // The same entry from a martian rule and an operator's: the operator's counts.
        acl.set(Origin::Martian, &[rule("192.0.2.0/24", None)])
            .unwrap();
        let entries = acl.compile(&topology);
        let key = |slot, src: &str| AclKey {
            slot,
            src: src.parse().unwrap(),
        };
        let deny = |rule| AclEntry {
            rule,
            kind: AclEntry::DENY,
        };
        let expected: AclEntries = [
            (key(0, "192.0.2.0/24"), deny(global)),
            (key(1, "192.0.2.0/24"), deny(global)),
            (key(1, "198.51.100.0/24"), deny(local)),
        ]
        .into_iter()
        .collect();
        assert_eq!(entries, expected);
        assert_eq!(entry_counts(&entries), (3, 0));
    }

    #[test]
    fn rules_keep_their_ids_and_only_the_cli_can_delete_its_own() {
        let mut acl = Acl::default();
        acl.set(
            Origin::Config,
            &[rule("192.0.2.0/24", None), rule("2001:db8::/32", None)],
        )
        .unwrap();
        let cli = acl
            .add(rule("203.0.113.0/24", Some("eth0")), Origin::Cli)
            .unwrap();
        assert_eq!(acl.take_fresh(), vec![0, 1, cli]);
        // The config again, one rule dropped and one added: the kept rule keeps its id.
        acl.set(
            Origin::Config,
            &[rule("2001:db8::/32", None), rule("198.51.100.0/24", None)],
        )
        .unwrap();
        let ids: Vec<(u32, String)> = acl.rules().map(|(id, r, _)| (id, r.to_string())).collect();
        assert_eq!(
            ids,
            vec![
                (0, "deny src 198.51.100.0/24".to_owned()),
                (1, "deny src 2001:db8::/32".to_owned()),
                (2, "deny src 203.0.113.0/24 dev eth0".to_owned()),
            ]
        );
        assert_eq!(acl.take_fresh(), vec![0]);
        assert_eq!(
            acl.add(rule("2001:db8::/32", None), Origin::Cli)
                .map_err(|err| err.to_string()),
            Err("deny src 2001:db8::/32 is in the ACL already (from the config file)".to_owned())
        );
        assert_eq!(
            acl.remove(&rule("2001:db8::/32", None))
                .map_err(|err| err.to_string()),
            Err("deny src 2001:db8::/32 comes from the config file: change it there".to_owned())
        );
        acl.remove(&rule("203.0.113.0/24", Some("eth0"))).unwrap();
        assert_eq!(acl.rules().count(), 2);
    }
}
