//! Flow rules: from the config (`[[flow]]`), the CLI (`flow add`) and FlowSpec sessions, each
//! under a stable id, compiled into what the flow maps hold (see
//! `pop_dataplane_common::flow`): entries in RFC 8955 order and, per destination prefix, the
//! list of entries covering it.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use pop_dataplane_common::flow::{
    self, BANK_ENTRIES, FlowEntry, FlowList, FlowOp, LIST_ENTRIES, MAX_FLOW_RULES,
};
use serde::{Deserialize, Serialize};

use crate::{
    config::flow_rule::{ComponentKind, Family, FlowRule, Op, RateUnit, Test, Verdict},
    control::vrf::{VrfId, Vrfs},
};

/// Why a change to the rules was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("{rule} is there already (from {})", .origin.describe())]
    Exists {
        rule: Box<FlowRule>,
        origin: FlowOrigin,
    },
    #[error("{0} is not among the CLI's flow rules")]
    NotThere(Box<FlowRule>),
    #[error("{total} flow rules; at most {MAX_RULES} are supported")]
    TooManyRules { total: usize },
    #[error("the flow rules take {entries} entries; at most {BANK_ENTRIES} fit")]
    TooManyEntries { entries: usize },
    #[error(
        "{count} flow rules cover destination {prefix}; at most {LIST_ENTRIES} may (rules \
         without a destination cover every one)"
    )]
    TooManyCovering { prefix: IpNet, count: usize },
    #[error("{rule}: vrf {vrf:?} is not one of the VRFs ({known})")]
    UnknownVrf {
        rule: Box<FlowRule>,
        vrf: String,
        known: String,
    },
}

pub const MAX_RULES: usize = MAX_FLOW_RULES as usize;

/// Where a rule comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowOrigin {
    Config,
    Cli,
    /// A FlowSpec route received over this BGP session (named by the feed).
    Bgp(String),
}

impl FlowOrigin {
    pub fn describe(&self) -> String {
        match self {
            Self::Config => "the config".to_owned(),
            Self::Cli => "the CLI".to_owned(),
            Self::Bgp(session) => format!("BGP session {session}"),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::Config => "config".to_owned(),
            Self::Cli => "cli".to_owned(),
            Self::Bgp(session) => format!("bgp:{session}"),
        }
    }
}

/// One rule, as `flow list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowInfo {
    pub id: u32,
    pub rule: FlowRule,
    pub origin: FlowOrigin,
    /// Its place in the evaluation order (RFC 8955 5.1), from 0.
    pub order: usize,
    pub matched_packets: u64,
    pub matched_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

/// The rules, each under its id (its counters' index).
#[derive(Clone, Debug, Default)]
pub struct Flows {
    rules: BTreeMap<u32, (FlowRule, FlowOrigin)>,
    /// Ids given out since the last [`Flows::take_fresh`]: their counters start at zero.
    fresh: Vec<u32>,
}

/// What the flow maps must hold, bank aside: the entries, and per VRF and family the lists
/// by destination prefix (entry indices within the bank).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledFlows {
    pub entries: Vec<FlowEntry>,
    pub lists: BTreeMap<(VrfId, IpNet), Vec<u16>>,
    /// Per VRF: some rule of the family (IPv4, IPv6) has no destination, so every packet
    /// routed in the VRF is checked. VRFs with neither are left out.
    pub wildcard: BTreeMap<VrfId, [bool; 2]>,
}

impl CompiledFlows {
    /// The destination prefixes of the rules, each in its VRF: routes overlapping one are
    /// flagged. (A rule for every destination sets its VRF's family wildcard instead.)
    pub fn prefixes(&self) -> impl Iterator<Item = (VrfId, IpNet)> + '_ {
        self.lists
            .keys()
            .copied()
            .filter(|(_, p)| p.prefix_len() > 0)
    }

    /// The list of `prefix` in `vrf` as the map holds it, its entries in `bank`.
    pub fn list(&self, key: &(VrfId, IpNet), bank: u32) -> FlowList {
        let mut list = FlowList::default();
        let entries = &self.lists[key];
        list.len = entries.len() as u16;
        for (slot, &entry) in list.entries.iter_mut().zip(entries) {
            *slot = (bank * BANK_ENTRIES) as u16 + entry;
        }
        list
    }
}

impl Flows {
    /// Adds `rule` from `origin`. The config and the CLI may not give the same rule twice;
    /// a FlowSpec session's repeat of its own rule is a no-op.
    pub fn add(&mut self, rule: FlowRule, origin: FlowOrigin) -> Result<u32, FlowError> {
        let session = matches!(origin, FlowOrigin::Bgp(_));
        let clash = self.rules.iter().find(|(_, (r, o))| {
            *r == rule && (*o == origin || (!session && !matches!(o, FlowOrigin::Bgp(_))))
        });
        if let Some((&id, (_, had))) = clash {
            if session {
                return Ok(id);
            }
            return Err(FlowError::Exists {
                rule: Box::new(rule),
                origin: had.clone(),
            });
        }
        if self.rules.len() >= MAX_RULES {
            return Err(FlowError::TooManyRules {
                total: self.rules.len() + 1,
            });
        }
        let id = (0..MAX_FLOW_RULES)
            .find(|id| !self.rules.contains_key(id))
            .expect("fewer rules than ids");
        self.rules.insert(id, (rule, origin));
        self.fresh.push(id);
        Ok(id)
    }

    /// Removes `rule` of `origin`.
    pub fn remove(&mut self, rule: &FlowRule, origin: &FlowOrigin) -> Result<(), FlowError> {
        let id = self
            .rules
            .iter()
            .find(|(_, (r, o))| r == rule && o == origin)
            .map(|(&id, _)| id)
            .ok_or_else(|| FlowError::NotThere(Box::new(rule.clone())))?;
        self.rules.remove(&id);
        Ok(())
    }

    /// Makes `origin`'s rules exactly `rules`: those it had keep their ids (and counters).
    pub fn set(&mut self, origin: &FlowOrigin, rules: &[FlowRule]) -> Result<(), FlowError> {
        let wanted: BTreeSet<&FlowRule> = rules.iter().collect();
        self.rules
            .retain(|_, (rule, o)| o != origin || wanted.contains(rule));
        for rule in wanted {
            let held = self.rules.values().any(|(r, o)| r == rule && o == origin);
            if !held {
                self.add(rule.clone(), origin.clone())?;
            }
        }
        Ok(())
    }

    /// Ids whose counters must be zeroed before use.
    pub fn take_fresh(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.fresh)
    }

    /// The rules, in evaluation order.
    pub fn ordered(&self) -> Vec<(u32, &FlowRule, &FlowOrigin)> {
        let mut rules: Vec<_> = self.rules.iter().map(|(&id, (r, o))| (id, r, o)).collect();
        rules.sort_by(|a, b| {
            a.1.family
                .cmp(&b.1.family)
                .then_with(|| a.1.precedence(b.1))
                .then_with(|| a.2.cmp(b.2))
                .then(a.0.cmp(&b.0))
        });
        rules
    }

    /// The maps' contents for these rules, their VRFs' ids from `vrfs`.
    pub fn compile(&self, vrfs: &Vrfs) -> Result<CompiledFlows, FlowError> {
        let mut compiled = CompiledFlows::default();
        // Per rule in order: its VRF, family, entries and destination (`None`: every one).
        let mut covering: Vec<(VrfId, Family, Option<IpNet>, Vec<u16>)> = Vec::new();
        for (id, rule, _) in self.ordered() {
            let vrf = match &rule.vrf {
                None => VrfId::DEFAULT,
                Some(name) => vrfs.id(name).ok_or_else(|| FlowError::UnknownVrf {
                    rule: Box::new(rule.clone()),
                    vrf: name.clone(),
                    known: vrfs.names(),
                })?,
            };
            let mut indices = Vec::new();
            for entry in entries(id, rule) {
                if compiled.entries.len() >= BANK_ENTRIES as usize {
                    return Err(FlowError::TooManyEntries {
                        entries: compiled.entries.len() + 1,
                    });
                }
                indices.push(compiled.entries.len() as u16);
                compiled.entries.push(entry);
            }
            match rule.destination {
                Some(prefix) if prefix.prefix_len() > 0 => {
                    compiled.lists.entry((vrf, prefix)).or_default();
                }
                _ => {
                    let family = rule.family as usize;
                    compiled.wildcard.entry(vrf).or_default()[family] = true;
                    let any: IpNet = match rule.family {
                        Family::V4 => "0.0.0.0/0".parse().expect("valid"),
                        Family::V6 => "::/0".parse().expect("valid"),
                    };
                    compiled.lists.entry((vrf, any)).or_default();
                }
            }
            covering.push((vrf, rule.family, rule.destination, indices));
        }
        // Each list: the entries, in order, of the rules of its VRF whose destination covers
        // its prefix.
        for ((vrf, prefix), list) in &mut compiled.lists {
            let family = match prefix {
                IpNet::V4(_) => Family::V4,
                IpNet::V6(_) => Family::V6,
            };
            for (rule_vrf, rule_family, destination, indices) in &covering {
                let covers = rule_vrf == vrf
                    && *rule_family == family
                    && destination.is_none_or(|d| d.contains(prefix));
                if covers {
                    list.extend_from_slice(indices);
                }
            }
            if list.len() > LIST_ENTRIES {
                return Err(FlowError::TooManyCovering {
                    prefix: *prefix,
                    count: list.len(),
                });
            }
        }
        Ok(compiled)
    }

    /// The rules by id, with where each comes from and its place in the order.
    pub fn infos(&self) -> Vec<(u32, FlowRule, FlowOrigin, usize)> {
        self.ordered()
            .into_iter()
            .enumerate()
            .map(|(order, (id, rule, origin))| (id, rule.clone(), origin.clone(), order))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The entries of rule `id`: one, or with a `port` component two (the packet's destination
/// port, then its source port, each tested by the component's ops).
fn entries(id: u32, rule: &FlowRule) -> Vec<FlowEntry> {
    let mut base = FlowEntry {
        rule: id,
        ..FlowEntry::default()
    };
    match rule.action.verdict {
        Verdict::Accept => base.action = FlowEntry::ACCEPT,
        Verdict::Drop => base.action = FlowEntry::DROP,
        Verdict::RateLimit { rate, unit } => {
            let (action, min_budget) = match unit {
                RateUnit::Packets => (FlowEntry::RATE_PACKETS, MIN_BUDGET_PACKETS),
                RateUnit::Bytes => (FlowEntry::RATE_BYTES, MIN_BUDGET_BYTES),
            };
            base.action = action;
            (base.budget, base.slot_ns) = rate_slot(rate, min_budget);
        }
    }
    base.remark = rule.action.remark.unwrap_or(FlowEntry::NO_REMARK);
    if let Some(source) = rule.source {
        base.src_len = source.prefix_len();
        match source.network() {
            std::net::IpAddr::V4(a) => base.src[..4].copy_from_slice(&a.octets()),
            std::net::IpAddr::V6(a) => base.src = a.octets(),
        }
    }
    let port = rule.component(ComponentKind::Port);
    let variants: Vec<Option<u8>> = match port {
        Some(_) => vec![Some(flow::field::DST_PORT), Some(flow::field::SRC_PORT)],
        None => vec![None],
    };
    variants
        .into_iter()
        .map(|port_field| {
            let mut entry = base;
            let mut ops = Vec::new();
            for component in &rule.components {
                let field = match component.kind {
                    ComponentKind::Port => port_field.expect("a port variant"),
                    kind => field_of(kind),
                };
                push_ops(&mut ops, field, &component.ops);
            }
            entry.ops[..ops.len()].copy_from_slice(&ops);
            entry
        })
        .collect()
}

/// The program's field for a component (the port component aside).
fn field_of(kind: ComponentKind) -> u8 {
    use flow::field;
    match kind {
        ComponentKind::Protocol => field::PROTOCOL,
        ComponentKind::Port | ComponentKind::DestinationPort => field::DST_PORT,
        ComponentKind::SourcePort => field::SRC_PORT,
        ComponentKind::IcmpType => field::ICMP_TYPE,
        ComponentKind::IcmpCode => field::ICMP_CODE,
        ComponentKind::TcpFlags => field::TCP_FLAGS,
        ComponentKind::PacketLength => field::LENGTH,
        ComponentKind::Dscp => field::DSCP,
        ComponentKind::Fragment => field::FRAGMENT,
    }
}

fn push_ops(out: &mut Vec<FlowOp>, field: u8, ops: &[Op]) {
    for (i, op) in ops.iter().enumerate() {
        let mut flags = if i == 0 { FlowOp::FIRST } else { 0 };
        if op.and && i > 0 {
            flags |= FlowOp::AND;
        }
        let value = match op.test {
            Test::Numeric { lt, gt, eq, value } => {
                if lt {
                    flags |= FlowOp::LT;
                }
                if gt {
                    flags |= FlowOp::GT;
                }
                if eq {
                    flags |= FlowOp::EQ;
                }
                value
            }
            Test::Bitmask { not, all, value } => {
                flags |= FlowOp::BITMASK;
                if not {
                    flags |= FlowOp::NOT;
                }
                if all {
                    flags |= FlowOp::MATCH;
                }
                value
            }
        };
        out.push(FlowOp {
            field,
            flags,
            value,
        });
    }
}

/// A rate-limited rule passes at most this many packets, or bytes, per time slot at least:
/// slots are longer for low rates, so that a budget is never less than a few frames (a
/// jumbo frame's bytes).
const MIN_BUDGET_PACKETS: u64 = 8;
const MIN_BUDGET_BYTES: u64 = 16_384;
/// And slots last at least this long.
const MIN_SLOT_NS: u64 = 1_000_000;

/// The (budget, slot length) of a rate per second.
fn rate_slot(rate: u64, min_budget: u64) -> (u64, u64) {
    let budget = (rate * MIN_SLOT_NS / 1_000_000_000).max(min_budget);
    let slot_ns = budget * 1_000_000_000 / rate;
    (budget, slot_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> FlowRule {
        text.parse().unwrap()
    }

    #[test]
    fn lists_hold_the_covering_rules_in_order() {
        let mut flows = Flows::default();
        let wide = flows
            .add(rule("destination 198.18.0.0/15 then drop"), FlowOrigin::Cli)
            .unwrap();
        let narrow = flows
            .add(
                rule("destination 198.18.5.0/24 port =53 then accept"),
                FlowOrigin::Config,
            )
            .unwrap();
        let any = flows
            .add(
                rule("ipv4 protocol =udp then rate-limit 1000 packets"),
                FlowOrigin::Cli,
            )
            .unwrap();
        let compiled = flows.compile(&Vrfs::default()).unwrap();
        // The /24's rule (two entries, for its port), the /15's, then the wildcard.
        let rules: Vec<u32> = compiled.entries.iter().map(|e| e.rule).collect();
        assert_eq!(rules, [narrow, narrow, wide, any]);
        let lists: Vec<(String, Vec<u16>)> = compiled
            .lists
            .iter()
            .map(|((_, p), l)| (p.to_string(), l.clone()))
            .collect();
        assert_eq!(
            lists,
            [
                ("0.0.0.0/0".to_owned(), vec![3]),
                ("198.18.0.0/15".to_owned(), vec![2, 3]),
                ("198.18.5.0/24".to_owned(), vec![0, 1, 2, 3]),
            ]
        );
        assert_eq!(
            compiled.wildcard,
            BTreeMap::from([(VrfId::DEFAULT, [true, false])])
        );
        assert_eq!(
            compiled
                .prefixes()
                .map(|(_, p)| p.to_string())
                .collect::<Vec<_>>(),
            ["198.18.0.0/15", "198.18.5.0/24"]
        );
        assert_eq!(
            compiled
                .list(&(VrfId::DEFAULT, "198.18.0.0/15".parse().unwrap()), 1)
                .entries[..2],
            [8194, 8195]
        );
        // The rate: 1,000 packets a second as 8 per 8 ms.
        assert_eq!(
            (compiled.entries[3].budget, compiled.entries[3].slot_ns),
            (8, 8_000_000)
        );
    }

    #[test]
    fn duplicates_and_limits_are_refused() {
        let mut flows = Flows::default();
        let r = rule("destination 198.18.5.0/24 then drop");
        flows.add(r.clone(), FlowOrigin::Config).unwrap();
        assert!(matches!(
            flows.add(r.clone(), FlowOrigin::Cli),
            Err(FlowError::Exists { .. })
        ));
        // A session may announce what the config has; its own repeat is a no-op.
        let session = FlowOrigin::Bgp("peer".to_owned());
        let id = flows.add(r.clone(), session.clone()).unwrap();
        assert_eq!(flows.add(r.clone(), session.clone()).unwrap(), id);
        assert_eq!(
            flows.remove(&r, &FlowOrigin::Cli),
            Err(FlowError::NotThere(Box::new(r.clone())))
        );
        flows.set(&session, &[]).unwrap();
        assert_eq!(flows.len(), 1);

        let mut flows = Flows::default();
        for i in 0..LIST_ENTRIES {
            flows
                .add(
                    rule(&format!("destination 198.18.5.0/24 dscp ={i} then drop")),
                    FlowOrigin::Cli,
                )
                .unwrap();
        }
        flows.compile(&Vrfs::default()).unwrap();
        flows
            .add(rule("ipv4 dscp =63 then drop"), FlowOrigin::Cli)
            .unwrap();
        assert!(matches!(
            flows.compile(&Vrfs::default()),
            Err(FlowError::TooManyCovering { count: 29, .. })
        ));
    }

    #[test]
    fn each_vrf_has_its_own_lists_and_wildcards() {
        let vrfs = Vrfs::default().renamed(["blue"]).unwrap();
        let blue = vrfs.id("blue").unwrap();
        let mut flows = Flows::default();
        let default = flows
            .add(rule("destination 198.18.0.0/15 then drop"), FlowOrigin::Cli)
            .unwrap();
        let in_blue = flows
            .add(
                rule("vrf blue destination 198.18.5.0/24 then drop"),
                FlowOrigin::Cli,
            )
            .unwrap();
        let blue_any = flows
            .add(
                rule("vrf blue ipv6 protocol =17 then drop"),
                FlowOrigin::Cli,
            )
            .unwrap();
        let compiled = flows.compile(&vrfs).unwrap();
        let rules_of = |key: &(VrfId, IpNet)| -> Vec<u32> {
            compiled.lists[key]
                .iter()
                .map(|&i| compiled.entries[usize::from(i)].rule)
                .collect()
        };
        // Blue's /24 is inside the default VRF's /15, whose rule does not cover it there.
        assert_eq!(
            rules_of(&(blue, "198.18.5.0/24".parse().unwrap())),
            [in_blue]
        );
        assert_eq!(
            rules_of(&(VrfId::DEFAULT, "198.18.0.0/15".parse().unwrap())),
            [default]
        );
        assert_eq!(rules_of(&(blue, "::/0".parse().unwrap())), [blue_any]);
        assert_eq!(compiled.wildcard, BTreeMap::from([(blue, [false, true])]));
        let unknown = flows.compile(&Vrfs::default()).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "vrf blue destination 198.18.5.0/24 then drop: vrf \"blue\" is not one of the \
             VRFs (default)"
        );
    }
}
