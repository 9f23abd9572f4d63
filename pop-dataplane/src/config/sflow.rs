//! `[sflow]`: packet sampling and where its datagrams go.
//!
//! ```toml
//! [sflow]
//! collectors = ["198.18.0.9", "collector.example:6343"]   # port 6343 unless given
//! sampling_rate = 1000          # 1-in-N, every [[interface]] without its own
//! polling_interval = 20         # seconds between counter samples; 0: none
//! agent_address = "198.18.0.1"  # the agent's address in datagrams, and their source
//! source_port = 6343            # default: any
//! ```
//!
//! What is checked here needs nothing of the host; names are resolved, and collectors checked
//! for a route, when the daemon takes the config (`observe::sflow::Collectors`).

use std::{fmt, net::IpAddr};

use pop_dataplane_common::sample::MAX_SAMPLING_RATE;
use serde::Deserialize;

/// The sFlow port (sFlow.org assigned it).
pub const SFLOW_PORT: u16 = 6343;

/// The default of `polling_interval`, as the sFlow MIB has it.
pub const DEFAULT_POLLING_SECONDS: u32 = 20;

/// A validated `[sflow]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SflowConfig {
    pub collectors: Vec<Collector>,
    /// 1-in-N for interfaces that set none; `None`: no sampling but theirs.
    pub sampling_rate: Option<u32>,
    /// Seconds between counter samples of each interface; 0: none.
    pub polling_interval: u32,
    pub agent_address: Option<IpAddr>,
    pub source_port: Option<u16>,
    pub line: usize,
}

/// A collector as written: a host (name or address) and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Collector {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What is wrong with an `[sflow]` setting, or a sampling rate from the CLI.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SflowConfigError {
    #[error("collector {text:?}: {why}")]
    Collector { text: String, why: &'static str },
    #[error("collector {0} is listed twice")]
    CollectorTwice(Collector),
    #[error(
        "sampling rate {0} is outside 1-{MAX_SAMPLING_RATE} (1-in-N; leave it out, or give 0 \
         on an interface, for none)"
    )]
    Rate(i64),
    #[error("polling_interval {0} is outside 0-3600 seconds (0: no counter samples)")]
    PollingInterval(i64),
    #[error("agent_address {0:?} is not an IPv4 or IPv6 address")]
    AgentAddress(String),
    #[error("source_port {0} is outside 1-65535")]
    SourcePort(i64),
}

impl std::str::FromStr for Collector {
    type Err = SflowConfigError;

    /// `HOST`, `HOST:PORT`, `[IPV6]:PORT` or a bare IPv6 address.
    fn from_str(text: &str) -> Result<Self, SflowConfigError> {
        let bad = |why: &'static str| SflowConfigError::Collector {
            text: text.to_owned(),
            why,
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("a '[' without its ']'"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("expected :PORT after ']'")),
            }
        } else if text.parse::<std::net::Ipv6Addr>().is_ok() {
            (text, None)
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        if host.is_empty() || host.contains([' ', '/']) {
            return Err(bad("not a host name or address"));
        }
        let port = match port {
            Some(port) => match port.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad("the port is not a number in 1-65535")),
                Ok(port) => port,
            },
            None => SFLOW_PORT,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// A sampling rate as the config and CLI give it: 1-in-N, N in 1..=2^24.
pub fn check_rate(rate: i64) -> Result<u32, SflowConfigError> {
    if (1..=i64::from(MAX_SAMPLING_RATE)).contains(&rate) {
        Ok(rate as u32)
    } else {
        Err(SflowConfigError::Rate(rate))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSflow {
    #[serde(default)]
    collectors: Vec<String>,
    sampling_rate: Option<i64>,
    polling_interval: Option<i64>,
    agent_address: Option<String>,
    source_port: Option<i64>,
}

impl RawSflow {
    /// Checks it; errors say which setting and why (the caller adds file and line).
    pub(super) fn check(&self, line: usize) -> Result<SflowConfig, SflowConfigError> {
        let mut collectors: Vec<Collector> = Vec::with_capacity(self.collectors.len());
        for text in &self.collectors {
            let collector: Collector = text.parse()?;
            if collectors.contains(&collector) {
                return Err(SflowConfigError::CollectorTwice(collector));
            }
            collectors.push(collector);
        }
        let sampling_rate = self.sampling_rate.map(check_rate).transpose()?;
        let polling_interval = match self.polling_interval {
            None => DEFAULT_POLLING_SECONDS,
            Some(seconds @ 0..=3600) => seconds as u32,
            Some(seconds) => return Err(SflowConfigError::PollingInterval(seconds)),
        };
        let agent_address = match &self.agent_address {
            Some(text) => Some(
                text.parse::<IpAddr>()
                    .map_err(|_| SflowConfigError::AgentAddress(text.clone()))?,
            ),
            None => None,
        };
        let source_port = match self.source_port {
            None => None,
            Some(port @ 1..=65535) => Some(port as u16),
            Some(port) => return Err(SflowConfigError::SourcePort(port)),
        };
        Ok(SflowConfig {
            collectors,
            sampling_rate,
            polling_interval,
            agent_address,
            source_port,
            line,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectors_parse_with_and_without_ports() {
        let c = |text: &str| {
            text.parse::<Collector>()
                .map(|c| c.to_string())
                .map_err(|e| e.to_string())
        };
        assert_eq!(c("198.18.0.9").unwrap(), "198.18.0.9:6343");
        assert_eq!(c("198.18.0.9:9999").unwrap(), "198.18.0.9:9999");
        assert_eq!(c("2001:2::9").unwrap(), "[2001:2::9]:6343");
        assert_eq!(c("[2001:2::9]:6000").unwrap(), "[2001:2::9]:6000");
        assert_eq!(c("collector.example").unwrap(), "collector.example:6343");
        assert!(c("198.18.0.9:0").unwrap_err().contains("1-65535"));
        assert!(c("198.18.0.9:x").is_err());
        assert!(c("[2001:2::9").is_err());
        assert!(c("").is_err());
    }

    #[test]
    fn rates_are_one_to_two_to_the_24() {
        assert_eq!(check_rate(1), Ok(1));
        assert_eq!(check_rate(1 << 24), Ok(1 << 24));
        assert!(
            check_rate(0)
                .unwrap_err()
                .to_string()
                .contains("outside 1-16777216")
        );
        assert!(check_rate((1 << 24) + 1).is_err());
        assert!(check_rate(-5).is_err());
    }
}
