//! The routing config file (TOML): interfaces to route on, next hops, routes.
//!
//! ```toml
//! [[interface]]
//! name = "eth0"                # a port, or a Linux VLAN device on one ("eth0.100")
//!
//! [[interface]]
//! name = "eth0.300"            # a VLAN sub-interface defined here
//! port = "eth0"
//! vlan = 300                   # or [200, 300]: QinQ (outer, inner)
//!
//! [[nexthop]]
//! name = "transit-a"
//! dev = "eth1"
//! via = "198.51.100.1"         # the neighbour's address
//! lladdr = "02:00:5e:10:00:01" # its MAC, when static
//!
//! [[route]]
//! prefix = "203.0.113.0/24"    # IPv4 or IPv6
//! nexthop = "transit-a"        # or a list (ECMP), or: type = "blackhole" / "kernel"
//! ```
//!
//! [`Config::parse`] checks everything that can be checked without looking at the host, and
//! every error names the file, the line and the entry.

pub mod deny_rule;
pub mod flow_rule;
pub mod flowspec_feed;
mod interface;
pub mod kernel_table;
pub mod prefix;
pub mod route_spec;
pub mod sflow;
pub mod vrf;

pub use deny_rule::DenyRule;
pub use interface::{InterfaceConfig, Urpf, VlanConfig};
pub use prefix::parse_prefix;
pub use sflow::SflowConfig;
pub use vrf::VrfConfig;

use std::{collections::HashMap, fmt, fs, path::Path};

use std::net::IpAddr;

use ipnet::IpNet;
use pop_dataplane_common::nexthop::ECMP_BUCKETS;
use serde::Deserialize;
use toml::Spanned;

use crate::mac::MacAddr;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

/// Whether Linux would take `name` for an interface.
pub(crate) fn is_valid_ifname(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_IFNAME_LEN && !name.contains(['/', ' ', '\0'])
}

/// Deny rules, of every origin together.
const MAX_ACL_RULES: usize = pop_dataplane_common::maps::MAX_ACL_RULES as usize;

/// A validated config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub filter: FilterConfig,
    pub interfaces: Vec<InterfaceConfig>,
    pub nexthops: Vec<NexthopConfig>,
    pub routes: Vec<RouteConfig>,
    /// `[[acl]]`: deny rules on ingress source addresses.
    pub acl: Vec<AclConfig>,
    /// `[[flow]]`: flow rules (`rule = "destination ... then drop"`).
    pub flows: Vec<FlowConfig>,
    /// `[sflow]`; `None` when absent (no sampling).
    pub sflow: Option<SflowConfig>,
    /// `[[vrf]]`: VRFs besides the default one.
    pub vrfs: Vec<VrfConfig>,
}

/// One `[[flow]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    pub rule: flow_rule::FlowRule,
    pub line: usize,
}

/// `[filter]`: checks on ingress before the route lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Drop and count packets with martian sources (RFC 1812 5.3.7).
    #[serde(default)]
    pub martian_sources: bool,
}

/// One `[[acl]]` entry: `action = "deny"`, `src = PREFIX`, optional `dev = IFACE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclConfig {
    pub rule: DenyRule,
    pub line: usize,
}

/// `[daemon]`: how the daemon itself runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Where `config save` writes the CLI's routes, and where `run` reads them back
    /// (default: the config file's path with `.routes` appended).
    pub saved_routes: Option<std::path::PathBuf>,
    /// A group whose members may use the control socket, besides root.
    pub control_group: Option<String>,
    /// Kernel routing tables to follow into the dataplane (`run --sync-kernel-table`):
    /// names (`"main"`) or numbers.
    #[serde(default)]
    pub sync_kernel_tables: Vec<KernelTable>,
}

/// A kernel routing table's id, given in the config by name or number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawTable")]
pub struct KernelTable(pub u32);

#[derive(Deserialize)]
#[serde(untagged, expecting = "a routing table: a name (\"main\") or a number")]
enum RawTable {
    Number(i64),
    Name(String),
}

impl TryFrom<RawTable> for KernelTable {
    type Error = kernel_table::TableError;

    fn try_from(raw: RawTable) -> Result<Self, Self::Error> {
        let text = match raw {
            RawTable::Number(n) => n.to_string(),
            RawTable::Name(name) => name,
        };
        kernel_table::parse_table(&text).map(KernelTable)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexthopConfig {
    pub name: String,
    /// Egress interface: one of `Config::interfaces`.
    pub dev: String,
    /// The neighbour's address.
    pub via: Option<IpAddr>,
    /// The neighbour's MAC address, when static. Without it the next hop is unresolved and
    /// its packets go to the kernel.
    pub lladdr: Option<MacAddr>,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// The VRF whose table holds it: `None` for the default VRF.
    pub vrf: Option<String>,
    pub prefix: IpNet,
    pub action: RouteAction,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteAction {
    /// Indexes into `Config::nexthops`: one, or several for ECMP (sorted, distinct).
    Nexthops(Vec<usize>),
    Blackhole,
    Kernel,
}

/// Largest config file read: far more than any set of interfaces, next hops and static
/// routes needs, and a bound on what a mistaken path can make the daemon read.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Most next hops one route may spread over.
pub const MAX_ECMP_NEXTHOPS: usize = ECMP_BUCKETS;

/// What is wrong with a config file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: DaemonConfig,
    #[serde(default, rename = "interface")]
    interfaces: Vec<Spanned<interface::RawInterface>>,
    #[serde(default, rename = "nexthop")]
    nexthops: Vec<Spanned<RawNexthop>>,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    filter: FilterConfig,
    #[serde(default, rename = "acl")]
    acl: Vec<Spanned<RawAcl>>,
    #[serde(default, rename = "flow")]
    flows: Vec<Spanned<RawFlow>>,
    sflow: Option<Spanned<sflow::RawSflow>>,
    #[serde(default, rename = "vrf")]
    vrfs: Vec<Spanned<vrf::RawVrf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    rule: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcl {
    action: RawAclAction,
    src: String,
    dev: Option<String>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawAclAction {
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNexthop {
    name: String,
    dev: String,
    via: Option<String>,
    lladdr: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: String,
    nexthop: Option<OneOrMany>,
    #[serde(rename = "type")]
    kind: Option<RawRouteKind>,
    vrf: Option<String>,
}

/// `nexthop = "a"` or `nexthop = ["a", "b"]`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a next hop's name (nexthop = \"a\"), or a list of them (nexthop = [\"a\", \"b\"])"
)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawRouteKind {
    Unicast,
    Blackhole,
    Kernel,
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let cannot_read = |err: std::io::Error| ConfigError {
            file: file.clone(),
            line: None,
            message: format!("cannot read: {err}"),
        };
        let size = fs::metadata(path).map_err(cannot_read)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError {
                file: file.clone(),
                line: None,
                message: format!(
                    "{size} bytes; a config file is at most {} MiB (a whole routing table \
                     goes in with `route load`)",
                    MAX_CONFIG_BYTES >> 20
                ),
            });
        }
        let text = fs::read(path).map_err(cannot_read)?;
        let text = String::from_utf8(text).map_err(|err| ConfigError {
            file: file.clone(),
            line: Some(line_of(
                &String::from_utf8_lossy(err.as_bytes()),
                err.utf8_error().valid_up_to(),
            )),
            message: "not UTF-8 text".to_owned(),
        })?;
        Self::parse(&file, &text)
    }

    /// Validates config `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let error = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
            file: file.to_owned(),
            line: span.map(|span| line_of(text, span.start)),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|err| {
            // toml's message already quotes the offending line; keep its first line, which
            // says what is wrong, and our line number.
            error(err.span(), err.message().trim().to_owned())
        })?;

        if raw.interfaces.is_empty() {
            return Err(error(
                None,
                "no [[interface]]: nothing to attach to".to_owned(),
            ));
        }
        let vrf_entries: Vec<(usize, &vrf::RawVrf)> = raw
            .vrfs
            .iter()
            .map(|entry| (line_of(text, entry.span().start), entry.get_ref()))
            .collect();
        let vrfs = vrf::check(
            &vrf_entries,
            &raw.daemon.sync_kernel_tables,
            |line, message| ConfigError {
                file: file.to_owned(),
                line: Some(line),
                message,
            },
        )?;
        let mut interfaces = Vec::with_capacity(raw.interfaces.len());
        for entry in &raw.interfaces {
            let line = line_of(text, entry.span().start);
            let name = &entry.get_ref().name;
            let at = |message: String| ConfigError {
                file: file.to_owned(),
                line: Some(line),
                message: format!("interface {name:?}: {message}"),
            };
            if !is_valid_ifname(name) {
                return Err(at(format!(
                    "not a valid interface name (1-{MAX_IFNAME_LEN} characters, no '/' or spaces)"
                )));
            }
            if let Some(first) = interfaces
                .iter()
                .find(|i: &&InterfaceConfig| &i.name == name)
            {
                return Err(at(format!("listed twice (first on line {})", first.line)));
            }
            let interface = interface::check(entry.get_ref(), line, at)?;
            if let Some(name) = &interface.vrf {
                vrf::check_known(name, &vrfs).map_err(|err| at(err.to_string()))?;
            }
            interfaces.push(interface);
        }

        let mut nexthops: Vec<NexthopConfig> = Vec::with_capacity(raw.nexthops.len());
        let mut nexthop_ids = HashMap::new();
        for entry in &raw.nexthops {
            let line = line_of(text, entry.span().start);
            let raw = entry.get_ref();
            let at = |message: String| ConfigError {
                file: file.to_owned(),
                line: Some(line),
                message: format!("next hop {:?}: {message}", raw.name),
            };
            if raw.name.is_empty() {
                return Err(at("the name is empty".to_owned()));
            }
            if let Some(&first) = nexthop_ids.get(raw.name.as_str()) {
                let first: &NexthopConfig = &nexthops[first];
                return Err(at(format!("defined twice (first on line {})", first.line)));
            }
            if !interfaces.iter().any(|i| i.name == raw.dev) {
                return Err(at(format!(
                    "dev {:?} is not one of the [[interface]] entries ({})",
                    raw.dev,
                    names(interfaces.iter().map(|i| i.name.as_str()))
                )));
            }
            let lladdr = match &raw.lladdr {
                Some(text) => {
                    let lladdr: MacAddr = text.parse().map_err(|err: String| at(err))?;
                    if !lladdr.is_unicast() || lladdr.is_zero() {
                        return Err(at(format!("lladdr {lladdr} is not a unicast MAC address")));
                    }
                    Some(lladdr)
                }
                None => None,
            };
            let via = match &raw.via {
                Some(text) => Some(
                    text.parse::<IpAddr>()
                        .map_err(|_| at(format!("via {text:?} is not an IPv4 or IPv6 address")))?,
                ),
                None => None,
            };
            if via.is_none() && lladdr.is_none() {
                return Err(at(
                    "needs `via` (the neighbour's address), `lladdr` (its MAC), or both".to_owned(),
                ));
            }
            nexthop_ids.insert(raw.name.as_str(), nexthops.len());
            nexthops.push(NexthopConfig {
                name: raw.name.clone(),
                dev: raw.dev.clone(),
                via,
                lladdr,
                line,
            });
        }

        let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.routes.len());
        let mut route_lines = HashMap::new();
        for entry in &raw.routes {
            let line = line_of(text, entry.span().start);
            let raw = entry.get_ref();
            let at = |message: String| ConfigError {
                file: file.to_owned(),
                line: Some(line),
                message: format!("route {}: {message}", raw.prefix),
            };
            let prefix = parse_prefix(&raw.prefix).map_err(|err| at(err.to_string()))?;
            if let Some(name) = &raw.vrf {
                vrf::check_known(name, &vrfs).map_err(|err| at(err.to_string()))?;
            }
            // `vrf = "default"` is the default VRF, as no `vrf` at all.
            let route_vrf = raw.vrf.clone().filter(|name| name != vrf::DEFAULT_VRF);
            if let Some(first) = route_lines.insert((route_vrf.clone(), prefix), line) {
                return Err(at(format!("defined twice (first on line {first})")));
            }
            let kind = raw.kind.unwrap_or(RawRouteKind::Unicast);
            let action = match (kind, &raw.nexthop) {
                (RawRouteKind::Unicast, Some(names_given)) => {
                    let names_given: Vec<&String> = match names_given {
                        OneOrMany::One(name) => vec![name],
                        OneOrMany::Many(list) => list.iter().collect(),
                    };
                    if names_given.is_empty() {
                        return Err(at("the next hop list is empty".to_owned()));
                    }
                    if names_given.len() > MAX_ECMP_NEXTHOPS {
                        return Err(at(format!(
                            "{} next hops; at most {MAX_ECMP_NEXTHOPS} per route",
                            names_given.len()
                        )));
                    }
                    let mut ids = Vec::with_capacity(names_given.len());
                    for name in names_given {
                        let id = nexthop_ids.get(name.as_str()).ok_or_else(|| {
                            at(format!(
                                "next hop {name:?} is not defined (defined: {})",
                                names(nexthops.iter().map(|n| n.name.as_str()))
                            ))
                        })?;
                        if ids.contains(id) {
                            return Err(at(format!("next hop {name:?} is listed twice")));
                        }
                        ids.push(*id);
                    }
                    ids.sort_unstable();
                    RouteAction::Nexthops(ids)
                }
                (RawRouteKind::Unicast, None) => {
                    return Err(at(
                        "needs `nexthop = \"NAME\"`, or `type = \"blackhole\"` or `\"kernel\"`"
                            .to_owned(),
                    ));
                }
                (RawRouteKind::Blackhole | RawRouteKind::Kernel, Some(_)) => {
                    return Err(at(
                        "a blackhole or kernel route takes no next hop".to_owned()
                    ));
                }
                (RawRouteKind::Blackhole, None) => RouteAction::Blackhole,
                (RawRouteKind::Kernel, None) => RouteAction::Kernel,
            };
            routes.push(RouteConfig {
                vrf: route_vrf,
                prefix,
                action,
                line,
            });
        }

        let mut acl: Vec<AclConfig> = Vec::with_capacity(raw.acl.len());
        for entry in &raw.acl {
            let line = line_of(text, entry.span().start);
            let raw = entry.get_ref();
            let at = |message: String| ConfigError {
                file: file.to_owned(),
                line: Some(line),
                message: format!("acl deny src {}: {message}", raw.src),
            };
            let RawAclAction::Deny = raw.action;
            let src = parse_prefix(&raw.src).map_err(|err| at(err.to_string()))?;
            if let Some(dev) = &raw.dev
                && !interfaces.iter().any(|i| &i.name == dev)
            {
                return Err(at(format!(
                    "dev {dev:?} is not one of the [[interface]] entries ({})",
                    names(interfaces.iter().map(|i| i.name.as_str()))
                )));
            }
            let rule = DenyRule {
                src,
                dev: raw.dev.clone(),
            };
            if let Some(first) = acl.iter().find(|a| a.rule == rule) {
                return Err(at(format!("listed twice (first on line {})", first.line)));
            }
            acl.push(AclConfig { rule, line });
        }
        if acl.len() > MAX_ACL_RULES {
            return Err(error(
                None,
                format!(
                    "{} [[acl]] rules; at most {} are supported",
                    acl.len(),
                    MAX_ACL_RULES
                ),
            ));
        }

        let mut flows: Vec<FlowConfig> = Vec::with_capacity(raw.flows.len());
        for entry in &raw.flows {
            let line = line_of(text, entry.span().start);
            let text = &entry.get_ref().rule;
            let at = |message: String| ConfigError {
                file: file.to_owned(),
                line: Some(line),
                message: format!("flow {text:?}: {message}"),
            };
            let rule: flow_rule::FlowRule = text
                .parse()
                .map_err(|err: flow_rule::FlowRuleError| at(err.to_string()))?;
            if let Some(name) = &rule.vrf {
                vrf::check_known(name, &vrfs).map_err(|err| at(err.to_string()))?;
            }
            if let Some(first) = flows.iter().find(|f| f.rule == rule) {
                return Err(at(format!("listed twice (first on line {})", first.line)));
            }
            flows.push(FlowConfig { rule, line });
        }

        let sflow = match &raw.sflow {
            Some(entry) => {
                let line = line_of(text, entry.span().start);
                let sflow = entry.get_ref().check(line).map_err(|message| ConfigError {
                    file: file.to_owned(),
                    line: Some(line),
                    message: format!("[sflow]: {message}"),
                })?;
                Some(sflow)
            }
            None => None,
        };

        Ok(Self {
            vrfs,
            sflow,
            daemon: raw.daemon,
            filter: raw.filter,
            interfaces,
            nexthops,
            routes,
            acl,
            flows,
        })
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<_> = names.collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests;
