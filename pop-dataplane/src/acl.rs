//! The ingress source filter: the operator's deny rules (`[[acl]]` in the config, `acl add`
//! from the CLI) and, with `[filter] martian_sources`, the martian sources of RFC 1812 5.3.7
//! and their IPv6 counterparts, with the router's own addresses. Compiled into the ACL maps
//! (see `pop_dataplane_common::acl`): one entry per rule and interface it applies to.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use ipnet::IpNet;
use pop_dataplane_common::{acl::AclEntry, maps};
use serde::{Deserialize, Serialize};

use crate::topology::Topology;

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

/// Drop packets whose source is in `src`, arriving on `dev` (or on any routed interface).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DenyRule {
    pub src: IpNet,
    pub dev: Option<String>,
}

impl fmt::Display for DenyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deny src {}", self.src)?;
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        Ok(())
    }
}

impl DenyRule {
    /// Parses `deny src PREFIX [dev IFACE]`, the words of `acl add`.
    pub fn parse(words: &[String]) -> Result<Self, String> {
        let usage = "expected: deny src PREFIX [dev IFACE]";
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let (src, dev) = match words.as_slice() {
            ["deny", "src", src] => (src, None),
            ["deny", "src", src, "dev", dev] => (src, Some(*dev)),
            [action, ..] if *action != "deny" => {
                return Err(format!("unknown action {action:?}: {usage}"));
            }
            _ => return Err(format!("{:?}: {usage}", words.join(" "))),
        };
        let src = crate::config::parse_prefix(src)?;
        if let Some(dev) = dev
            && (dev.is_empty() || dev.len() > 15 || dev.contains(['/', '\0']))
        {
            return Err(format!("dev {dev:?} is not a valid interface name"));
        }
        Ok(Self {
            src,
            dev: dev.map(str::to_owned),
        })
    }
}

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
    pub fn add(&mut self, rule: DenyRule, origin: Origin) -> Result<u32, String> {
        if let Some((_, (_, had))) = self.rules.iter().find(|(_, (r, _))| *r == rule) {
            return Err(format!(
                "{rule} is in the ACL already (from {})",
                had.describe()
            ));
        }
        let id = (0..MAX_RULES as u32)
            .find(|id| !self.rules.contains_key(id))
            .ok_or_else(|| format!("the ACL is full ({MAX_RULES} rules)"))?;
        self.rules.insert(id, (rule, origin));
        self.fresh.push(id);
        Ok(id)
    }

    /// Removes the CLI's `rule`.
    pub fn remove(&mut self, rule: &DenyRule) -> Result<(), String> {
        let Some((&id, (_, origin))) = self.rules.iter().find(|(_, (r, _))| r == rule) else {
            return Err(format!("{rule} is not in the ACL"));
        };
        if *origin != Origin::Cli {
            return Err(format!(
                "{rule} comes from {}: change it there",
                origin.describe()
            ));
        }
        self.rules.remove(&id);
        Ok(())
    }

    /// Makes `rules` the rules of `origin`: those already there keep their ids (and counts).
    /// Fails, changing nothing, when they do not fit.
    pub fn set(&mut self, origin: Origin, rules: &[DenyRule]) -> Result<(), String> {
        let wanted: BTreeSet<&DenyRule> = rules.iter().collect();
        let kept = self
            .rules
            .values()
            .filter(|(r, o)| *o != origin || wanted.contains(r))
            .count();
        let added = wanted
            .iter()
            .filter(|r| {
                !self
                    .rules
                    .values()
                    .any(|(have, o)| *o == origin && have == **r)
            })
            .count();
        if kept + added > MAX_RULES {
            return Err(format!(
                "{} ACL rules; at most {MAX_RULES} are supported",
                kept + added
            ));
        }
        self.rules
            .retain(|_, (r, o)| *o != origin || wanted.contains(r));
        for rule in wanted {
            if !self
                .rules
                .values()
                .any(|(have, o)| *o == origin && have == rule)
            {
                // A rule of another origin with the same match keeps its entry; this one
                // is shadowed, and listed as such.
                let id = (0..MAX_RULES as u32)
                    .find(|id| !self.rules.contains_key(id))
                    .expect("room checked");
                self.rules.insert(id, (rule.clone(), origin));
                self.fresh.push(id);
            }
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
