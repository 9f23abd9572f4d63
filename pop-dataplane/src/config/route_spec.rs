//! Routes as operators type them, iproute2 style, on the command line, in `route load` files
//! and in the saved-routes file:
//!
//! ```text
//! 203.0.113.0/24 via 198.18.2.2 dev eth1
//! 203.0.113.0/24 via 198.18.2.2 dev eth1 via 198.18.3.2 dev eth2     (ECMP)
//! 203.0.113.0/24 nexthop via 198.18.2.2 dev eth1 nexthop via ...     (the same, iproute2's words)
//! 192.0.2.0/24 blackhole                                              (or: blackhole 192.0.2.0/24)
//! 198.51.100.0/24 kernel
//! vrf customers 198.18.7.0/24 via 198.18.5.2 dev eth3                 (in VRF customers;
//! 198.18.7.0/24 via 198.18.5.2 dev eth3 vrf customers                   either end)
//! ```

use std::{
    fmt,
    net::IpAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::{
    prefix::{PrefixError, parse_prefix},
    vrf::DEFAULT_VRF,
};

/// What is wrong with one route's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteSpecError {
    #[error("line longer than {MAX_LINE_LEN} bytes")]
    TooLong,
    #[error("empty route")]
    Empty,
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    #[error("next hop {0} is not of the prefix's address family")]
    OtherFamily(IpAddr),
    #[error("a next hop is listed twice")]
    HopTwice,
    #[error("unexpected {0:?}: expected `via ADDRESS dev INTERFACE`, `blackhole` or `kernel`")]
    Unexpected(String),
    #[error("expected `via ADDRESS dev INTERFACE` after `nexthop`")]
    NothingAfterNexthop,
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    NotAnAddress(String),
    #[error("{0} cannot be a next hop")]
    NotANexthop(IpAddr),
    #[error("expected `via ADDRESS dev INTERFACE`, `blackhole` or `kernel`")]
    NoTarget,
    #[error("`vrf` needs a VRF's name after it")]
    NoVrfName,
}

/// A bad line of a route file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {error}")]
pub struct LineError {
    pub file: String,
    pub line: usize,
    pub error: RouteSpecError,
}

/// The bad lines of a route file: the first ten.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RouteFileError {
    pub lines: Vec<LineError>,
    /// Reading stopped at the tenth bad line.
    pub more: bool,
}

impl fmt::Display for RouteFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{line}")?;
        }
        if self.more {
            f.write_str("\n(stopped after 10 errors)")?;
        }
        Ok(())
    }
}

/// Longest route line accepted: a line this long is a mistake (or an attack), not a route.
pub const MAX_LINE_LEN: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteSpec {
    /// The VRF whose table it goes in: `None` for the default VRF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
    pub prefix: IpNet,
    pub target: Target,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// One next hop, or several (ECMP).
    Via(Vec<Hop>),
    Blackhole,
    Kernel,
    /// A kernel nexthop object, by id (`nhid`): kernel routes only, never parsed.
    Object(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hop {
    pub via: IpAddr,
    pub dev: String,
}

impl RouteSpec {
    /// Parses one route from its words.
    pub fn parse(line: &str) -> Result<Self, RouteSpecError> {
        if line.len() > MAX_LINE_LEN {
            return Err(RouteSpecError::TooLong);
        }
        // Inline for the usual few words: no allocation per line of a million-route file.
        let words: SmallVec<[&str; 8]> = line.split_whitespace().collect();
        // `vrf NAME`, at either end.
        let (vrf, words) = match words.as_slice() {
            ["vrf"] => return Err(RouteSpecError::NoVrfName),
            ["vrf", name, rest @ ..] => (Some(*name), rest),
            [rest @ .., "vrf", name] => (Some(*name), rest),
            all => (None, all),
        };
        // `vrf default` is no `vrf` at all.
        let vrf = vrf.filter(|name| *name != DEFAULT_VRF).map(str::to_owned);
        match words {
            [] => Err(RouteSpecError::Empty),
            ["blackhole", prefix] | [prefix, "blackhole"] => Ok(Self {
                vrf,
                prefix: parse_prefix(prefix)?,
                target: Target::Blackhole,
            }),
            ["kernel", prefix] | [prefix, "kernel"] => Ok(Self {
                vrf,
                prefix: parse_prefix(prefix)?,
                target: Target::Kernel,
            }),
            [prefix, rest @ ..] => {
                let prefix = parse_prefix(prefix)?;
                let hops = parse_hops(rest)?;
                for hop in &hops {
                    if hop.via.is_ipv4() != prefix.addr().is_ipv4() {
                        // iproute2 allows IPv6 next hops for IPv4 routes (RFC 5549); the
                        // fast path needs the neighbour's MAC only, but the kernel slow path
                        // would not take such a route from us: keep families apart.
                        return Err(RouteSpecError::OtherFamily(hop.via));
                    }
                }
                if hops.len() > 1 {
                    let mut sorted = hops.clone();
                    sorted.sort();
                    sorted.dedup();
                    if sorted.len() != hops.len() {
                        return Err(RouteSpecError::HopTwice);
                    }
                }
                Ok(Self {
                    vrf,
                    prefix,
                    target: Target::Via(hops),
                })
            }
        }
    }
}

fn parse_hops(mut words: &[&str]) -> Result<Vec<Hop>, RouteSpecError> {
    let mut hops = Vec::with_capacity(1);
    while !words.is_empty() {
        if words[0] == "nexthop" {
            words = &words[1..];
        }
        let (via, dev) = match words {
            ["via", via, "dev", dev, rest @ ..] => {
                words = rest;
                (via, dev)
            }
            ["dev", dev, "via", via, rest @ ..] => {
                words = rest;
                (via, dev)
            }
            [word, ..] => {
                return Err(RouteSpecError::Unexpected((*word).to_owned()));
            }
            [] => return Err(RouteSpecError::NothingAfterNexthop),
        };
        let via: IpAddr = via
            .parse()
            .map_err(|_| RouteSpecError::NotAnAddress((*via).to_owned()))?;
        if via.is_unspecified() || via.is_multicast() {
            return Err(RouteSpecError::NotANexthop(via));
        }
        hops.push(Hop {
            via,
            dev: (*dev).to_owned(),
        });
    }
    if hops.is_empty() {
        return Err(RouteSpecError::NoTarget);
    }
    Ok(hops)
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(vrf) = &self.vrf {
            write!(f, "vrf {vrf} ")?;
        }
        write!(f, "{}", self.prefix)?;
        match &self.target {
            Target::Via(hops) => {
                for hop in hops {
                    write!(f, " via {} dev {}", hop.via, hop.dev)?;
                }
                Ok(())
            }
            Target::Blackhole => write!(f, " blackhole"),
            Target::Kernel => write!(f, " kernel"),
            Target::Object(id) => write!(f, " nhid {id}"),
        }
    }
}

/// The text of route file `path` (`-`: standard input, named `stdin`), and its name for
/// errors; a file that is not UTF-8 is refused with the line where it stops being so.
pub fn read_file(path: &str) -> anyhow::Result<(String, String)> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let (name, bytes) = if path == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
        ("stdin".to_owned(), bytes)
    } else {
        let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        (path.to_owned(), bytes)
    };
    let text = String::from_utf8(bytes).map_err(|err| {
        let line = err.as_bytes()[..err.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        anyhow::anyhow!("{name}:{line}: not UTF-8 text")
    })?;
    Ok((name, text))
}

/// The routes of a file or stdin in that syntax: `#` comments and blank lines are skipped;
/// every bad line is reported with its number, and one is enough to refuse them all.
///
/// `progress` hears of the lines read now and then.
///
/// A large text is read in two halves at once, one on a thread of its own: a full table's
/// million lines take half a second alone.
pub fn parse_lines(
    name: &str,
    text: &str,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<(usize, RouteSpec)>, RouteFileError> {
    let middle = text.len() / 2;
    let split = (text.len() >= PARALLEL_BYTES)
        .then(|| text.as_bytes()[middle..].iter().position(|&b| b == b'\n'))
        .flatten()
        .map(|at| middle + at + 1);
    let Some(split) = split else {
        return parse_part(name, text, 0, progress).into_result();
    };
    // Both halves end at a line's end: the second starts at line `first_lines` (from 0).
    let (first, second) = text.split_at(split);
    let first_lines = first.bytes().filter(|&b| b == b'\n').count();
    let second_done = AtomicUsize::new(0);
    let (mut parsed, rest) = std::thread::scope(|scope| {
        let helper = scope.spawn(|| {
            parse_part(name, second, first_lines, &mut |done| {
                second_done.store(done, Ordering::Relaxed);
            })
        });
        let parsed = parse_part(name, first, 0, &mut |done| {
            progress(done + second_done.load(Ordering::Relaxed));
        });
        (parsed, helper.join().expect("parsing does not panic"))
    });
    parsed.routes.extend(rest.routes);
    parsed.more |= rest.more || parsed.errors.len() + rest.errors.len() >= MAX_LINE_ERRORS;
    parsed.errors.extend(rest.errors);
    parsed.errors.truncate(MAX_LINE_ERRORS);
    parsed.into_result()
}

/// Texts from this size up are parsed in two halves at once.
const PARALLEL_BYTES: usize = 1 << 20;

/// Bad lines reported at most: after that, the reading stops.
const MAX_LINE_ERRORS: usize = 10;

/// What a part of a route text held.
struct Parsed {
    routes: Vec<(usize, RouteSpec)>,
    errors: Vec<LineError>,
    /// Reading stopped at [`MAX_LINE_ERRORS`] bad lines.
    more: bool,
}

impl Parsed {
    fn into_result(self) -> Result<Vec<(usize, RouteSpec)>, RouteFileError> {
        if self.errors.is_empty() {
            Ok(self.routes)
        } else {
            Err(RouteFileError {
                lines: self.errors,
                more: self.more,
            })
        }
    }
}

/// The routes of `text`, whose first line is line `first_line` (from 0) of the file.
fn parse_part(
    name: &str,
    text: &str,
    first_line: usize,
    progress: &mut dyn FnMut(usize),
) -> Parsed {
    let mut parsed = Parsed {
        routes: Vec::new(),
        errors: Vec::new(),
        more: false,
    };
    for (i, line) in text.lines().enumerate() {
        if i % 16_384 == 0 {
            progress(i);
        }
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let number = first_line + i + 1;
        match RouteSpec::parse(line) {
            Ok(route) => parsed.routes.push((number, route)),
            Err(error) => {
                parsed.errors.push(LineError {
                    file: name.to_owned(),
                    line: number,
                    error,
                });
                if parsed.errors.len() == MAX_LINE_ERRORS {
                    parsed.more = true;
                    break;
                }
            }
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(via: &str, dev: &str) -> Hop {
        Hop {
            via: via.parse().unwrap(),
            dev: dev.to_owned(),
        }
    }

    #[test]
    fn parses_iproute2_forms() {
        let spec = RouteSpec::parse("203.0.113.0/24 via 198.18.2.2 dev eth1").unwrap();
        assert_eq!(spec.target, Target::Via(vec![hop("198.18.2.2", "eth1")]));
        assert_eq!(spec.to_string(), "203.0.113.0/24 via 198.18.2.2 dev eth1");
        for ecmp in [
            "2001:db8::/32 via 2001:2::1 dev eth1 via 2001:2::2 dev eth2",
            "2001:db8::/32 nexthop via 2001:2::1 dev eth1 nexthop dev eth2 via 2001:2::2",
        ] {
            let spec = RouteSpec::parse(ecmp).unwrap();
            assert_eq!(
                spec.target,
                Target::Via(vec![hop("2001:2::1", "eth1"), hop("2001:2::2", "eth2")])
            );
        }
        for line in ["192.0.2.0/24 blackhole", "blackhole 192.0.2.0/24"] {
            assert_eq!(RouteSpec::parse(line).unwrap().target, Target::Blackhole);
        }
        assert_eq!(
            RouteSpec::parse("0.0.0.0/0 kernel").unwrap().target,
            Target::Kernel
        );
        let text = RouteSpec::parse("192.0.2.0/24 blackhole")
            .unwrap()
            .to_string();
        assert_eq!(text, "192.0.2.0/24 blackhole");
    }

    #[test]
    fn vrf_at_either_end() {
        for line in [
            "vrf blue 198.18.7.0/24 via 198.18.5.2 dev eth3",
            "198.18.7.0/24 via 198.18.5.2 dev eth3 vrf blue",
        ] {
            let spec = RouteSpec::parse(line).unwrap();
            assert_eq!(spec.vrf.as_deref(), Some("blue"));
            assert_eq!(spec.target, Target::Via(vec![hop("198.18.5.2", "eth3")]));
            assert_eq!(
                spec.to_string(),
                "vrf blue 198.18.7.0/24 via 198.18.5.2 dev eth3"
            );
            assert_eq!(RouteSpec::parse(&spec.to_string()).unwrap(), spec);
        }
        let spec = RouteSpec::parse("vrf blue blackhole 198.18.7.0/24").unwrap();
        assert_eq!(
            (spec.vrf.as_deref(), spec.target),
            (Some("blue"), Target::Blackhole)
        );
        assert_eq!(
            RouteSpec::parse("vrf default 198.18.7.0/24 kernel")
                .unwrap()
                .vrf,
            None
        );
        assert_eq!(RouteSpec::parse("vrf"), Err(RouteSpecError::NoVrfName));
        // An interface may be named `vrf`.
        let spec = RouteSpec::parse("198.18.7.0/24 via 198.18.5.2 dev vrf").unwrap();
        assert_eq!(spec.vrf, None);
    }

    #[test]
    fn rejects_what_it_should_with_clear_words() {
        let cases = [
            ("", "empty route"),
            ("banana via 1.2.3.4 dev x", "\"banana\" is not an IP prefix"),
            (
                "198.18.2.1/24 blackhole",
                "198.18.2.1/24 has host bits set (the prefix is 198.18.2.0/24)",
            ),
            (
                "198.18.2.0/24",
                "expected `via ADDRESS dev INTERFACE`, `blackhole` or `kernel`",
            ),
            (
                "198.18.2.0/24 via 198.18.1.1",
                "unexpected \"via\": expected `via ADDRESS dev INTERFACE`",
            ),
            (
                "198.18.2.0/24 via 1.2.3 dev x",
                "\"1.2.3\" is not an IPv4 or IPv6 address",
            ),
            (
                "198.18.2.0/24 via 2001:2::1 dev x",
                "next hop 2001:2::1 is not of the prefix's address family",
            ),
            (
                "198.18.2.0/24 via 0.0.0.0 dev x",
                "0.0.0.0 cannot be a next hop",
            ),
            (
                "198.18.2.0/24 via 1.1.1.1 dev x via 1.1.1.1 dev x",
                "a next hop is listed twice",
            ),
            ("198.18.2.0/24 blackhole extra", "unexpected \"blackhole\""),
        ];
        for (line, expected) in cases {
            let err = RouteSpec::parse(line).unwrap_err();
            assert!(err.to_string().contains(expected), "{line:?}: {err}");
        }
        let long = format!("198.18.2.0/24 via 198.18.1.1 dev {}", "x".repeat(5000));
        assert!(
            RouteSpec::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than 4096")
        );
    }

    #[test]
    fn files_report_every_bad_line() {
        let text = "# routes\n198.18.2.0/24 blackhole\n\n198.18.3.0/24 via x dev y\n198.18.4.0/33 kernel  # bad\n";
        assert_eq!(
            parse_lines("r.txt", text, &mut |_| {})
                .unwrap_err()
                .to_string(),
            "r.txt:4: \"x\" is not an IPv4 or IPv6 address\nr.txt:5: \"198.18.4.0/33\" is not an IP prefix \
             (expected ADDRESS/LENGTH, e.g. 203.0.113.0/24 or 2001:db8::/32)"
        );
        let good = parse_lines("r.txt", "198.18.2.0/24 blackhole # ok\n", &mut |_| {}).unwrap();
        assert_eq!(good[0].0, 1);
    }

    /// A text large enough to be read in two halves gives what reading it line by line
    /// gives: the same routes in the same order, the same line numbers, and the first bad
    /// lines of the file whichever half they are in.
    #[test]
    fn large_texts_read_in_halves_as_in_one() {
        let mut text = String::from("# a large file\n");
        let mut lines = 1;
        while text.len() < 2 * PARALLEL_BYTES {
            lines += 1;
            text += &format!(
                "198.{}.{}.0/24 via 198.18.1.1 dev eth{}\n",
                18 + lines % 2,
                lines % 250,
                lines % 7
            );
            if lines % 1000 == 0 {
                lines += 1;
                text += "\n";
            }
        }
        assert!(text.len() >= PARALLEL_BYTES);
        let whole = parse_part("r", &text, 0, &mut |_| {})
            .into_result()
            .unwrap();
        let halves = parse_lines("r", &text, &mut |_| {}).unwrap();
        assert_eq!(halves, whole);
        assert!(halves.len() > 20_000);
        assert_eq!(
            halves.last().unwrap().0,
            lines,
            "line numbers run on into the second half"
        );

        // Bad lines near the end of each half: the first half's come first, ten at most.
        let mut bad: Vec<&str> = text.lines().collect();
        let at = [100, 200, bad.len() / 2 - 3, bad.len() - 10, bad.len() - 5];
        for &i in &at {
            bad[i] = "198.18.0.0/33 kernel";
        }
        let bad = bad.join("\n");
        let err = parse_lines("r", &bad, &mut |_| {}).unwrap_err();
        let numbers: Vec<usize> = err.lines.iter().map(|line| line.line).collect();
        assert_eq!(numbers, at.map(|i| i + 1));
        assert!(!err.more);
        let mut many: Vec<&str> = text.lines().collect();
        let count = many.len();
        for line in many.iter_mut().skip(count - 12) {
            *line = "x";
        }
        let err = parse_lines("r", &many.join("\n"), &mut |_| {}).unwrap_err();
        assert_eq!(err.lines.len(), MAX_LINE_ERRORS);
        assert_eq!(err.lines[0].line, count - 11);
        assert!(err.more);
    }
}
