//! Flow rules as written: `[[flow]]` in the config, the words of `flow add`, and what the
//! FlowSpec feed hands over, all in one syntax:
//!
//! ```text
//! [ipv4|ipv6] [destination PREFIX] [source PREFIX] [COMPONENT OPS]... then ACTION
//! ```
//!
//! The components are FlowSpec's (RFC 8955 section 4.2.2, RFC 8956 section 3): `protocol`,
//! `port`, `destination-port`, `source-port`, `icmp-type`, `icmp-code`, `tcp-flags`,
//! `packet-length`, `dscp`, `fragment`. OPS is one word: terms joined by `|` (OR) and `&`
//! (AND, which binds tighter), as FlowSpec's operator lists are. A numeric term is an
//! operator (`=` `!=` `<` `<=` `>` `>=`; none means `=`) and a value, or `true` / `false`;
//! a bitmask term (`tcp-flags`, `fragment`) is `[!][=]NAME+NAME...`: any of the bits, or
//! with `=` all of them, and `!` negates. The ACTION is `drop`, `accept`, `rate-limit N
//! packets|bytes` (per second), each but drop optionally followed by `remark DSCP`, or
//! `remark DSCP` alone.

mod ops;
mod order;

use std::{fmt, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use self::{ops::OpsError, order::encode_ops};
use super::prefix::{PrefixError, parse_prefix};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlowRuleError {
    #[error("{0}: {USAGE}")]
    Usage(String),
    #[error("unknown match {0:?} (expected one of: {COMPONENT_NAMES})")]
    UnknownComponent(String),
    #[error("{0} is given twice")]
    Repeated(&'static str),
    #[error("{component} {ops:?}: {error}")]
    BadOps {
        component: &'static str,
        ops: String,
        error: OpsError,
    },
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    #[error("{what} {prefix} is not {family}")]
    Family {
        what: &'static str,
        prefix: IpNet,
        family: &'static str,
    },
    #[error("a flow rule needs at least one match (destination, source or a component)")]
    NothingMatched,
    #[error("{0}: without a destination or source prefix, say ipv4 or ipv6 first")]
    NoFamily(String),
    #[error("unknown action {0:?}: {ACTIONS}")]
    Action(String),
    #[error("{0}")]
    BadAction(String),
    #[error("fragment dont-fragment does not exist in IPv6 (RFC 8956)")]
    DontFragmentV6,
    #[error("{ops} operators in all; at most {max} fit one rule")]
    TooManyOps { ops: usize, max: usize },
}

const USAGE: &str = "expected: [ipv4|ipv6] [destination PREFIX] [source PREFIX] [COMPONENT OPS]... \
                     then ACTION";
const ACTIONS: &str = "expected drop, accept, rate-limit N packets|bytes, remark DSCP \
                       (after accept or rate-limit too)";
const COMPONENT_NAMES: &str = "destination, source, protocol, port, destination-port, \
                               source-port, icmp-type, icmp-code, tcp-flags, packet-length, \
                               dscp, fragment";

/// The address family of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const fn name(self) -> &'static str {
        match self {
            Self::V4 => "ipv4",
            Self::V6 => "ipv6",
        }
    }

    fn of(prefix: &IpNet) -> Self {
        match prefix {
            IpNet::V4(_) => Self::V4,
            IpNet::V6(_) => Self::V6,
        }
    }
}

/// A FlowSpec component other than the two prefixes, by its type number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComponentKind {
    Protocol = 3,
    Port = 4,
    DestinationPort = 5,
    SourcePort = 6,
    IcmpType = 7,
    IcmpCode = 8,
    TcpFlags = 9,
    PacketLength = 10,
    Dscp = 11,
    Fragment = 12,
}

impl ComponentKind {
    pub const ALL: [Self; 10] = [
        Self::Protocol,
        Self::Port,
        Self::DestinationPort,
        Self::SourcePort,
        Self::IcmpType,
        Self::IcmpCode,
        Self::TcpFlags,
        Self::PacketLength,
        Self::Dscp,
        Self::Fragment,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Protocol => "protocol",
            Self::Port => "port",
            Self::DestinationPort => "destination-port",
            Self::SourcePort => "source-port",
            Self::IcmpType => "icmp-type",
            Self::IcmpCode => "icmp-code",
            Self::TcpFlags => "tcp-flags",
            Self::PacketLength => "packet-length",
            Self::Dscp => "dscp",
            Self::Fragment => "fragment",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Its operators are bitmask operators (RFC 8955 4.2.1.2), not numeric ones.
    pub const fn is_bitmask(self) -> bool {
        matches!(self, Self::TcpFlags | Self::Fragment)
    }

    /// The largest value it can hold.
    const fn max(self) -> u16 {
        match self {
            Self::Protocol | Self::IcmpType | Self::IcmpCode => 255,
            Self::Port | Self::DestinationPort | Self::SourcePort | Self::PacketLength => u16::MAX,
            Self::Dscp => 63,
            Self::TcpFlags => 0x0fff,
            Self::Fragment => 0x0f,
        }
    }
}

/// One {operator, value} pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Op {
    /// ANDed with the previous op (never for the first).
    pub and: bool,
    pub test: Test,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Test {
    /// True when the field is less than, greater than, or equal to `value` (each bit on).
    Numeric {
        lt: bool,
        gt: bool,
        eq: bool,
        value: u16,
    },
    /// `(field & value) != 0`, or with `all` `== value`; `not` negates.
    Bitmask { not: bool, all: bool, value: u16 },
}

/// A component with its operator list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Component {
    pub kind: ComponentKind,
    pub ops: Vec<Op>,
}

/// What a matching packet gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    /// At most `rate` packets or bytes a second.
    RateLimit {
        rate: u64,
        unit: RateUnit,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RateUnit {
    Packets,
    Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowAction {
    pub verdict: Verdict,
    /// The DSCP written into the packets it passes.
    pub remark: Option<u8>,
}

/// A flow rule: what it matches and what it does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct FlowRule {
    /// The VRF whose routed packets it checks (`vrf NAME` before the matches): `None` for
    /// the default VRF.
    pub vrf: Option<String>,
    pub family: Family,
    pub destination: Option<IpNet>,
    pub source: Option<IpNet>,
    /// In type order, each kind at most once.
    pub components: Vec<Component>,
    pub action: FlowAction,
}

/// Ops a rule may carry in all (a `port` component counts once: each of its entries holds
/// it once, beside the rest).
pub const MAX_OPS: usize = pop_dataplane_common::flow::MAX_OPS;

impl FlowRule {
    /// Parses the words of `flow add` (and of the other sources, split on spaces).
    pub fn parse(words: &[String]) -> Result<Self, FlowRuleError> {
        let text = words.join(" ");
        let usage = || FlowRuleError::Usage(text.clone());
        let (vrf, words) = match words {
            [first, name, rest @ ..] if first == "vrf" && name != "then" => {
                // `vrf default` is no `vrf` at all.
                let name = (name != super::vrf::DEFAULT_VRF).then(|| name.clone());
                (name, rest)
            }
            [first, ..] if first == "vrf" => return Err(usage()),
            all => (None, all),
        };
        let then = words.iter().position(|w| w == "then").ok_or_else(usage)?;
        let (matches, action) = (&words[..then], &words[then + 1..]);
        let mut family = None;
        let mut destination = None;
        let mut source = None;
        let mut components: Vec<Component> = Vec::new();
        let mut rest = matches;
        if let Some(first) = rest.first() {
            family = match first.as_str() {
                "ipv4" => Some(Family::V4),
                "ipv6" => Some(Family::V6),
                _ => None,
            };
            if family.is_some() {
                rest = &rest[1..];
            }
        }
        let mut pairs = rest.chunks(2);
        for pair in &mut pairs {
            let [name, value] = pair else {
                return Err(usage());
            };
            match name.as_str() {
                "destination" | "source" => {
                    let what: &'static str = if name == "destination" {
                        "destination"
                    } else {
                        "source"
                    };
                    let slot = if what == "destination" {
                        &mut destination
                    } else {
                        &mut source
                    };
                    if slot.is_some() {
                        return Err(FlowRuleError::Repeated(what));
                    }
                    let prefix = parse_prefix(value)?;
                    let wanted = *family.get_or_insert(Family::of(&prefix));
                    if Family::of(&prefix) != wanted {
                        return Err(FlowRuleError::Family {
                            what,
                            prefix,
                            family: wanted.name(),
                        });
                    }
                    *slot = Some(prefix);
                }
                other => {
                    let kind = ComponentKind::from_name(other)
                        .ok_or_else(|| FlowRuleError::UnknownComponent(other.to_owned()))?;
                    if components.iter().any(|c| c.kind == kind) {
                        return Err(FlowRuleError::Repeated(kind.name()));
                    }
                    let ops =
                        ops::parse_ops(kind, value).map_err(|error| FlowRuleError::BadOps {
                            component: kind.name(),
                            ops: value.clone(),
                            error,
                        })?;
                    components.push(Component { kind, ops });
                }
            }
        }
        let family = family.ok_or_else(|| FlowRuleError::NoFamily(text.clone()))?;
        if destination.is_none() && source.is_none() && components.is_empty() {
            return Err(FlowRuleError::NothingMatched);
        }
        components.sort();
        if family == Family::V6
            && let Some(fragment) = components
                .iter()
                .find(|c| c.kind == ComponentKind::Fragment)
            && fragment.ops.iter().any(|op| {
                matches!(op.test, Test::Bitmask { value, .. }
                    if value & pop_dataplane_common::flow::fragment::DONT_FRAGMENT != 0)
            })
        {
            return Err(FlowRuleError::DontFragmentV6);
        }
        let ops: usize = components.iter().map(|c| c.ops.len()).sum();
        if ops > MAX_OPS {
            return Err(FlowRuleError::TooManyOps { ops, max: MAX_OPS });
        }
        let action = parse_action(action)?;
        Ok(Self {
            vrf,
            family,
            destination,
            source,
            components,
            action,
        })
    }

    /// The component of `kind`, if the rule has one.
    pub fn component(&self, kind: ComponentKind) -> Option<&Component> {
        self.components.iter().find(|c| c.kind == kind)
    }
}

fn parse_action(words: &[String]) -> Result<FlowAction, FlowRuleError> {
    let text = words.join(" ");
    let bad = || FlowRuleError::Action(text.clone());
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let (verdict, rest) = match words.as_slice() {
        ["drop"] => {
            return Ok(FlowAction {
                verdict: Verdict::Drop,
                remark: None,
            });
        }
        ["accept", rest @ ..] => (Verdict::Accept, rest),
        ["rate-limit", rate, unit, rest @ ..] => {
            let rate: u64 = rate.parse().map_err(|_| bad())?;
            if rate == 0 || rate > 1 << 40 {
                return Err(FlowRuleError::BadAction(format!(
                    "{text}: the rate must be 1 to 2^40 (use drop for none)"
                )));
            }
            let unit = match *unit {
                "packets" => RateUnit::Packets,
                "bytes" => RateUnit::Bytes,
                _ => return Err(bad()),
            };
            (Verdict::RateLimit { rate, unit }, rest)
        }
        rest @ ["remark", ..] => (Verdict::Accept, rest),
        _ => return Err(bad()),
    };
    let remark = match rest {
        [] => None,
        ["remark", dscp] => Some(
            dscp.parse::<u8>()
                .ok()
                .filter(|&d| d <= 63)
                .ok_or_else(|| FlowRuleError::BadAction(format!("{text}: DSCP is 0 to 63")))?,
        ),
        _ => return Err(bad()),
    };
    Ok(FlowAction { verdict, remark })
}

impl fmt::Display for FlowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        if let Some(vrf) = &self.vrf {
            words.push(format!("vrf {vrf}"));
        }
        if self.destination.is_none() && self.source.is_none() {
            words.push(self.family.name().to_owned());
        }
        if let Some(prefix) = self.destination {
            words.push(format!("destination {prefix}"));
        }
        if let Some(prefix) = self.source {
            words.push(format!("source {prefix}"));
        }
        for component in &self.components {
            words.push(format!(
                "{} {}",
                component.kind.name(),
                ops::format_ops(component.kind, &component.ops)
            ));
        }
        words.push("then".to_owned());
        words.push(self.action.to_string());
        f.write_str(&words.join(" "))
    }
}

impl fmt::Display for FlowAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.verdict {
            Verdict::Drop => f.write_str("drop")?,
            Verdict::Accept if self.remark.is_some() => {}
            Verdict::Accept => f.write_str("accept")?,
            Verdict::RateLimit { rate, unit } => {
                let unit = match unit {
                    RateUnit::Packets => "packets",
                    RateUnit::Bytes => "bytes",
                };
                write!(f, "rate-limit {rate} {unit}")?;
            }
        }
        if let Some(dscp) = self.remark {
            if self.verdict != Verdict::Accept {
                f.write_str(" ")?;
            }
            write!(f, "remark {dscp}")?;
        }
        Ok(())
    }
}

impl FromStr for FlowRule {
    type Err = FlowRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        Self::parse(&words)
    }
}

impl From<FlowRule> for String {
    fn from(rule: FlowRule) -> Self {
        rule.to_string()
    }
}

impl TryFrom<String> for FlowRule {
    type Error = FlowRuleError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> FlowRule {
        text.parse().unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    fn error(text: &str) -> String {
        text.parse::<FlowRule>().unwrap_err().to_string()
    }

    #[test]
    fn rules_read_back_as_written() {
        for text in [
            "destination 198.18.5.0/24 protocol =udp destination-port =53 then drop",
            "destination 198.18.5.0/24 source 198.19.0.0/16 port >=1024&<=2048|=80 then \
             rate-limit 1000 packets",
            "ipv6 protocol =icmpv6 icmp-type =128 then rate-limit 125000 bytes remark 10",
            "ipv4 tcp-flags =syn+ack|!rst fragment is-fragment then accept",
            "destination 2001:2::/48 packet-length >1400 dscp =46 then remark 0",
            "ipv4 protocol true then accept",
        ] {
            assert_eq!(rule(text).to_string(), text);
        }
        assert_eq!(
            rule("destination 198.18.0.0/15 protocol 6 then accept").to_string(),
            "destination 198.18.0.0/15 protocol =tcp then accept"
        );
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert!(error("destination 198.18.0.0/15").contains("expected:"));
        assert!(error("destination 198.18.0.0/15 colour =3 then drop").contains("unknown match"));
        assert!(error("protocol =6 then drop").contains("say ipv4 or ipv6"));
        assert!(error("ipv4 then drop").contains("at least one match"));
        assert!(error("ipv4 dscp =64 then drop").contains("out of range (0-63)"));
        assert!(error("ipv4 port =>3 then drop").contains("unknown operator"));
        assert!(error("ipv4 tcp-flags =syn+fish then drop").contains("unknown bit \"fish\""));
        assert!(
            error("destination 198.18.0.0/15 source 2001:2::/48 then drop").contains("not ipv4")
        );
        assert!(error("ipv6 fragment dont-fragment then drop").contains("RFC 8956"));
        assert!(error("ipv4 port =1 then rate-limit 0 packets").contains("use drop"));
        assert!(error("ipv4 port =1 then remark 64").contains("DSCP is 0 to 63"));
        assert!(error("ipv4 port =1 then drop remark 3").contains("unknown action"));
        assert!(error("ipv4 port =1 port =2 then drop").contains("twice"));
        assert!(error("destination 198.18.0.1/15 then drop").contains("host bits"));
    }
}
