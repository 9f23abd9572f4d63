//! RFC 8955 section 5.1: the order in which flow rules apply, from their components as
//! FlowSpec encodes them (section 4.2.2).

use std::{cmp::Ordering, net::IpAddr};

use super::{Family, FlowRule, Op, Test};

impl FlowRule {
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

#[cfg(test)]
mod tests {
    use super::super::FlowRule;

    fn rule(text: &str) -> FlowRule {
        text.parse().unwrap_or_else(|err| panic!("{text}: {err}"))
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
