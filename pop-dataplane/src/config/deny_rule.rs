//! The operator's source deny rules as written: `[[acl]]` in the config and the words of
//! `acl add` (`deny src PREFIX [dev IFACE]`). The control plane's `acl` compiles them.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::prefix::{PrefixError, parse_prefix};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DenyRuleError {
    #[error("unknown action {action:?}: {USAGE}")]
    UnknownAction { action: String },
    #[error("{words:?}: {USAGE}")]
    Usage { words: String },
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    #[error("dev {0:?} is not a valid interface name")]
    BadDev(String),
}

const USAGE: &str = "expected: deny src PREFIX [dev IFACE]";

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
    pub fn parse(words: &[String]) -> Result<Self, DenyRuleError> {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let (src, dev) = match words.as_slice() {
            ["deny", "src", src] => (src, None),
            ["deny", "src", src, "dev", dev] => (src, Some(*dev)),
            [action, ..] if *action != "deny" => {
                return Err(DenyRuleError::UnknownAction {
                    action: (*action).to_owned(),
                });
            }
            _ => {
                return Err(DenyRuleError::Usage {
                    words: words.join(" "),
                });
            }
        };
        let src = parse_prefix(src)?;
        if let Some(dev) = dev
            && !super::is_valid_ifname(dev)
        {
            return Err(DenyRuleError::BadDev(dev.to_owned()));
        }
        Ok(Self {
            src,
            dev: dev.map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(src: &str, dev: Option<&str>) -> DenyRule {
        DenyRule {
            src: src.parse().unwrap(),
            dev: dev.map(str::to_owned),
        }
    }

    #[test]
    fn the_words_of_acl_add() {
        let words = |text: &str| -> Vec<String> { text.split(' ').map(str::to_owned).collect() };
        assert_eq!(
            DenyRule::parse(&words("deny src 192.0.2.0/24 dev eth0")),
            Ok(rule("192.0.2.0/24", Some("eth0")))
        );
        assert_eq!(
            DenyRule::parse(&words("deny src 192.0.2.1/24")).map_err(|err| err.to_string()),
            Err("192.0.2.1/24 has host bits set (the prefix is 192.0.2.0/24)".to_owned())
        );
        assert!(
            DenyRule::parse(&words("permit src 192.0.2.0/24"))
                .unwrap_err()
                .to_string()
                .starts_with("unknown action \"permit\"")
        );
        assert!(
            DenyRule::parse(&words("deny src 192.0.2.0/24 dev a/b"))
                .unwrap_err()
                .to_string()
                .contains("not a valid interface name")
        );
    }
}
