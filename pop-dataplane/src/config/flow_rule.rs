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

use std::{cmp::Ordering, fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::prefix::{PrefixError, parse_prefix};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlowRuleError {
    #[error("{0}: {USAGE}")]
    Usage(String),
    #[error("unknown match {0:?} (expected one of: {COMPONENT_NAMES})")]
    UnknownComponent(String),
    #[error("{0} is given twice")]
    Repeated(&'static str),
    #[error("{component} {ops:?}: {reason}")]
    BadOps {
        component: &'static str,
        ops: String,
        reason: String,
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
                    let ops = parse_ops(kind, value).map_err(|reason| FlowRuleError::BadOps {
                        component: kind.name(),
                        ops: value.clone(),
                        reason,
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

    /// RFC 8955 section 5.1: which of two rules of a family comes first (`Less`: `self`).
    /// Component by component in type order: a rule that has a type the other lacks comes
    /// first; two prefixes, the lower address where they differ within the shorter length,
    /// else the longer; other components, their encodings compared as byte strings, the
    /// lower first, else the longer.
    pub fn precedence(&self, other: &Self) -> Ordering {
        let (a, b) = (self.nlri(), other.nlri());
        let mut a = a.iter().peekable();
        let mut b = b.iter().peekable();
        loop {
            match (a.next(), b.next()) {
                (None, None) => return Ordering::Equal,
                (Some(_), None) => return Ordering::Less,
                (None, Some(_)) => return Ordering::Greater,
                (Some((ta, da)), Some((tb, db))) => {
                    if ta != tb {
                        return ta.cmp(tb);
                    }
                    let order = if *ta <= 2 {
                        compare_prefixes(da, db)
                    } else {
                        compare_strings(da, db)
                    };
                    if order != Ordering::Equal {
                        return order;
                    }
                }
            }
        }
    }

    /// The rule's components as FlowSpec encodes them (RFC 8955 4.2.2): (type, data), in type
    /// order; a prefix's data is its length (and for IPv6 the offset, 0) and its bytes.
    pub fn nlri(&self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        for (kind, prefix) in [(1, self.destination), (2, self.source)] {
            if let Some(prefix) = prefix {
                let len = prefix.prefix_len();
                let mut data = vec![len];
                if self.family == Family::V6 {
                    data.push(0);
                }
                let bytes = match prefix.network() {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                };
                data.extend_from_slice(&bytes[..usize::from(len).div_ceil(8)]);
                out.push((kind, data));
            }
        }
        for component in &self.components {
            out.push((component.kind as u8, encode_ops(&component.ops)));
        }
        out
    }
}

/// Prefix data (length, [offset,] bytes): within the shorter length the lower address first;
/// equal there, the longer prefix first.
fn compare_prefixes(a: &[u8], b: &[u8]) -> Ordering {
    let bits = |data: &[u8]| -> (u8, u128) {
        let len = data[0];
        // IPv6 data carries an offset byte: the bytes are what is left past the prefix
        // length's own ceil(len / 8).
        let bytes = &data[data.len() - usize::from(len).div_ceil(8)..];
        let mut full = [0u8; 16];
        full[..bytes.len()].copy_from_slice(bytes);
        (len, u128::from_be_bytes(full))
    };
    let ((la, va), (lb, vb)) = (bits(a), bits(b));
    let common = u32::from(la.min(lb));
    let mask = if common == 0 {
        0
    } else {
        u128::MAX << (128 - common)
    };
    match (va & mask).cmp(&(vb & mask)) {
        Ordering::Equal => lb.cmp(&la),
        order => order,
    }
}

/// memcmp over the common length, the lower first; equal there, the longer first.
fn compare_strings(a: &[u8], b: &[u8]) -> Ordering {
    let common = a.len().min(b.len());
    match a[..common].cmp(&b[..common]) {
        Ordering::Equal => b.len().cmp(&a.len()),
        order => order,
    }
}

/// An operator list as FlowSpec encodes it: per op, the operator byte (end-of-list, AND,
/// value length, then lt/gt/eq or not/match) and the value, one byte when it fits.
pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let (bits, value) = match op.test {
            Test::Numeric { lt, gt, eq, value } => {
                (u8::from(lt) << 2 | u8::from(gt) << 1 | u8::from(eq), value)
            }
            Test::Bitmask { not, all, value } => (u8::from(not) << 1 | u8::from(all), value),
        };
        let mut byte = bits;
        if i + 1 == ops.len() {
            byte |= 0x80;
        }
        if op.and && i > 0 {
            byte |= 0x40;
        }
        if value > 0xff {
            out.push(byte | 0x10);
            out.extend_from_slice(&value.to_be_bytes());
        } else {
            out.push(byte);
            out.push(value as u8);
        }
    }
    out
}

fn parse_ops(kind: ComponentKind, text: &str) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    for alternative in text.split('|') {
        for (i, term) in alternative.split('&').enumerate() {
            if term.is_empty() {
                return Err("an empty term".to_owned());
            }
            let test = if kind.is_bitmask() {
                parse_bitmask(kind, term)?
            } else {
                parse_numeric(kind, term)?
            };
            ops.push(Op { and: i > 0, test });
        }
    }
    Ok(ops)
}

fn parse_numeric(kind: ComponentKind, term: &str) -> Result<Test, String> {
    let (lt, gt, eq, value) = match term {
        "true" => (true, true, true, "0"),
        "false" => (false, false, false, "0"),
        _ => {
            let (op, value) = match term.find(|c: char| !"=<>!".contains(c)) {
                Some(at) => term.split_at(at),
                None => return Err(format!("{term:?} has no value")),
            };
            let (lt, gt, eq) = match op {
                "" | "=" | "==" => (false, false, true),
                "!=" => (true, true, false),
                "<" => (true, false, false),
                "<=" => (true, false, true),
                ">" => (false, true, false),
                ">=" => (false, true, true),
                other => return Err(format!("unknown operator {other:?}")),
            };
            (lt, gt, eq, value)
        }
    };
    let value = match (kind, value) {
        (ComponentKind::Protocol, name) if protocol_number(name).is_some() => {
            u16::from(protocol_number(name).unwrap_or_default())
        }
        (_, number) => number
            .parse::<u32>()
            .map_err(|_| format!("{number:?} is not a number"))
            .and_then(|n| {
                u16::try_from(n)
                    .ok()
                    .filter(|&n| n <= kind.max())
                    .ok_or_else(|| format!("{n} is out of range (0-{})", kind.max()))
            })?,
    };
    Ok(Test::Numeric { lt, gt, eq, value })
}

fn parse_bitmask(kind: ComponentKind, term: &str) -> Result<Test, String> {
    let (not, rest) = match term.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, term),
    };
    let (all, rest) = match rest.strip_prefix('=') {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let mut value = 0u16;
    for name in rest.split('+') {
        let bit = bit_names(kind)
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bit)| *bit)
            .or_else(|| parse_number(name).filter(|&n| n <= kind.max()))
            .ok_or_else(|| {
                let names: Vec<&str> = bit_names(kind).iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown bit {name:?} (expected {} or a number)",
                    names.join(", ")
                )
            })?;
        value |= bit;
    }
    Ok(Test::Bitmask { not, all, value })
}

fn parse_number(text: &str) -> Option<u16> {
    match text.strip_prefix("0x") {
        Some(hex) => u16::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The names of a bitmask component's bits.
fn bit_names(kind: ComponentKind) -> &'static [(&'static str, u16)] {
    use pop_dataplane_common::flow::fragment;
    match kind {
        ComponentKind::TcpFlags => &[
            ("fin", 0x01),
            ("syn", 0x02),
            ("rst", 0x04),
            ("psh", 0x08),
            ("ack", 0x10),
            ("urg", 0x20),
            ("ece", 0x40),
            ("cwr", 0x80),
        ],
        ComponentKind::Fragment => &[
            ("dont-fragment", fragment::DONT_FRAGMENT),
            ("is-fragment", fragment::IS_FRAGMENT),
            ("first-fragment", fragment::FIRST_FRAGMENT),
            ("last-fragment", fragment::LAST_FRAGMENT),
        ],
        _ => &[],
    }
}

const PROTOCOLS: [(&str, u8); 8] = [
    ("icmp", 1),
    ("tcp", 6),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("sctp", 132),
];

fn protocol_number(name: &str) -> Option<u8> {
    PROTOCOLS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
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
                format_ops(component.kind, &component.ops)
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

fn format_ops(kind: ComponentKind, ops: &[Op]) -> String {
    let mut out = String::new();
    for (i, op) in ops.iter().enumerate() {
        if i > 0 {
            out.push(if op.and { '&' } else { '|' });
        }
        match op.test {
            Test::Numeric { lt, gt, eq, value } => {
                let op = match (lt, gt, eq) {
                    (true, true, true) => {
                        out.push_str("true");
                        continue;
                    }
                    (false, false, false) => {
                        out.push_str("false");
                        continue;
                    }
                    (false, false, true) => "=",
                    (true, true, false) => "!=",
                    (true, false, false) => "<",
                    (true, false, true) => "<=",
                    (false, true, false) => ">",
                    (false, true, true) => ">=",
                };
                out.push_str(op);
                match PROTOCOLS.iter().find(|(_, p)| u16::from(*p) == value) {
                    Some((name, _)) if kind == ComponentKind::Protocol => out.push_str(name),
                    _ => out.push_str(&value.to_string()),
                }
            }
            Test::Bitmask { not, all, value } => {
                if not {
                    out.push('!');
                }
                if all {
                    out.push('=');
                }
                let mut names = Vec::new();
                let mut left = value;
                for (name, bit) in bit_names(kind) {
                    if value & bit != 0 {
                        names.push((*name).to_owned());
                        left &= !bit;
                    }
                }
                if left != 0 || names.is_empty() {
                    names.push(format!("{left:#x}"));
                }
                out.push_str(&names.join("+"));
            }
        }
    }
    out
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

    #[test]
    fn precedence_follows_rfc_8955_section_5_1() {
        let sorted = |texts: &[&str]| {
            let mut rules: Vec<FlowRule> = texts.iter().map(|t| rule(t)).collect();
            rules.sort_by(FlowRule::precedence);
            rules.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        // Overlapping destinations: the longer first; disjoint ones: the lower first.
        assert_eq!(
            sorted(&[
                "destination 198.18.0.0/15 then drop",
                "destination 198.18.5.0/24 then drop",
                "destination 198.18.4.0/24 then drop",
            ]),
            [
                "destination 198.18.4.0/24 then drop",
                "destination 198.18.5.0/24 then drop",
                "destination 198.18.0.0/15 then drop",
            ]
        );
        // A rule with a destination comes before one without; with the same destination,
        // the one with the lower-typed extra component first.
        assert_eq!(
            sorted(&[
                "ipv4 protocol =tcp then drop",
                "destination 198.18.5.0/24 dscp =1 then drop",
                "destination 198.18.5.0/24 protocol =udp then drop",
                "destination 198.18.5.0/24 then drop",
            ]),
            [
                "destination 198.18.5.0/24 protocol =udp then drop",
                "destination 198.18.5.0/24 dscp =1 then drop",
                "destination 198.18.5.0/24 then drop",
                "ipv4 protocol =tcp then drop",
            ]
        );
        // Same type: encodings compared, the lower first, a longer one first on a tie.
        assert_eq!(
            sorted(&[
                "ipv4 destination-port =80 then drop",
                "ipv4 destination-port =53 then drop",
                "ipv4 destination-port =53|=80 then drop",
            ]),
            [
                "ipv4 destination-port =53|=80 then drop",
                "ipv4 destination-port =53 then drop",
                "ipv4 destination-port =80 then drop",
            ]
        );
    }

    #[test]
    fn operators_encode_as_flowspec_does() {
        // RFC 8955's own example: port >=137 AND <=139 OR =8080.
        let rule = rule("ipv4 port >=137&<=139|=8080 then drop");
        assert_eq!(
            rule.nlri(),
            [(4, vec![0x03, 0x89, 0x45, 0x8b, 0x91, 0x1f, 0x90])]
        );
    }
}
