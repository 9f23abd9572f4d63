//! The operator lists of flow rule components, written as terms joined by `|` and `&`,
//! read and printed back.

use super::{ComponentKind, Op, Test};

/// Why an operator list was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    #[error("an empty term")]
    EmptyTerm,
    #[error("{0:?} has no value")]
    NoValue(String),
    #[error("unknown operator {0:?}")]
    UnknownOperator(String),
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("{value} is out of range (0-{max})")]
    OutOfRange { value: u32, max: u16 },
    #[error("unknown bit {name:?} (expected {expected} or a number)")]
    UnknownBit { name: String, expected: String },
}

pub(super) fn parse_ops(kind: ComponentKind, text: &str) -> Result<Vec<Op>, OpsError> {
    let mut ops = Vec::new();
    for alternative in text.split('|') {
        for (i, term) in alternative.split('&').enumerate() {
            if term.is_empty() {
                return Err(OpsError::EmptyTerm);
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

fn parse_numeric(kind: ComponentKind, term: &str) -> Result<Test, OpsError> {
    let (lt, gt, eq, value) = match term {
        "true" => (true, true, true, "0"),
        "false" => (false, false, false, "0"),
        _ => {
            let (op, value) = match term.find(|c: char| !"=<>!".contains(c)) {
                Some(at) => term.split_at(at),
                None => return Err(OpsError::NoValue(term.to_owned())),
            };
            let (lt, gt, eq) = match op {
                "" | "=" | "==" => (false, false, true),
                "!=" => (true, true, false),
                "<" => (true, false, false),
                "<=" => (true, false, true),
                ">" => (false, true, false),
                ">=" => (false, true, true),
                other => return Err(OpsError::UnknownOperator(other.to_owned())),
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
            .map_err(|_| OpsError::NotANumber(number.to_owned()))
            .and_then(|n| {
                u16::try_from(n)
                    .ok()
                    .filter(|&n| n <= kind.max())
                    .ok_or(OpsError::OutOfRange {
                        value: n,
                        max: kind.max(),
                    })
            })?,
    };
    Ok(Test::Numeric { lt, gt, eq, value })
}

fn parse_bitmask(kind: ComponentKind, term: &str) -> Result<Test, OpsError> {
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
                OpsError::UnknownBit {
                    name: name.to_owned(),
                    expected: names.join(", "),
                }
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
pub(super) fn bit_names(kind: ComponentKind) -> &'static [(&'static str, u16)] {
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

pub(super) fn format_ops(kind: ComponentKind, ops: &[Op]) -> String {
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
