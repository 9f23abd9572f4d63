//! `[[interface]]`: a port, a Linux VLAN device, or a VLAN sub-interface defined here; its
//! uRPF and sampling settings. What one entry says, checked on its own (names against the
//! other entries are `Config::parse`'s).

use serde::Deserialize;

use super::{ConfigError, sflow};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    /// For a VLAN sub-interface defined here rather than as a Linux VLAN device: the port
    /// it is on, and its tags.
    pub vlan: Option<VlanConfig>,
    /// Unicast reverse-path forwarding (RFC 3704) on frames arriving here.
    pub urpf: Urpf,
    /// With uRPF: the default route counts as a route back to a source.
    pub urpf_allow_default: bool,
    /// sFlow sampling, 1-in-N, of frames arriving here: `Some(0)` for none, `None` for
    /// `[sflow] sampling_rate`.
    pub sampling_rate: Option<u32>,
    /// The VRF its frames are routed in: `None` for the default VRF.
    pub vrf: Option<String>,
    pub line: usize,
}

/// `urpf = "strict" | "loose" | "off"` of an `[[interface]]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urpf {
    /// No check.
    #[default]
    Off,
    /// The source must have a route (a blackhole does not count).
    Loose,
    /// The source's route must leave through the ingress interface.
    Strict,
}

/// A VLAN sub-interface of a port, as the config defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlanConfig {
    pub port: String,
    /// Outer tag's VLAN id, and the inner tag's for QinQ.
    pub outer: u16,
    pub inner: Option<u16>,
    /// TPID of the outer tag: 0x8100 (802.1Q), or 0x88a8 (802.1ad, the default for QinQ).
    pub outer_tpid: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterface {
    pub(super) name: String,
    port: Option<String>,
    vlan: Option<OneOrManyIds>,
    vlan_protocol: Option<RawVlanProtocol>,
    #[serde(default)]
    urpf: Urpf,
    urpf_allow_default: Option<bool>,
    sampling_rate: Option<i64>,
    vrf: Option<String>,
}

/// `vlan = 100` or `vlan = [200, 300]`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a VLAN id (vlan = 100), or two for QinQ (vlan = [200, 300])"
)]
enum OneOrManyIds {
    One(i64),
    Many(Vec<i64>),
}

#[derive(Deserialize, Clone, Copy)]
enum RawVlanProtocol {
    #[serde(rename = "802.1q")]
    Dot1q,
    #[serde(rename = "802.1ad")]
    Dot1ad,
}

/// The entry `raw`, on line `line`, checked; `at` makes an error about it.
pub(super) fn check(
    raw: &RawInterface,
    line: usize,
    at: impl Fn(String) -> ConfigError,
) -> Result<InterfaceConfig, ConfigError> {
    let vlan = match (&raw.port, &raw.vlan) {
        (None, None) => {
            if raw.vlan_protocol.is_some() {
                return Err(at("vlan_protocol needs port and vlan".to_owned()));
            }
            None
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(at(
                "a VLAN sub-interface needs both `port` and `vlan`".to_owned()
            ));
        }
        (Some(port), Some(ids)) => {
            let ids: Vec<i64> = match ids {
                OneOrManyIds::One(id) => vec![*id],
                OneOrManyIds::Many(ids) => ids.clone(),
            };
            if ids.is_empty() || ids.len() > 2 {
                return Err(at(
                    "vlan takes one VLAN id, or two (outer, inner) for QinQ".to_owned()
                ));
            }
            let mut checked = Vec::with_capacity(2);
            for id in ids {
                if !(1..=4094).contains(&id) {
                    return Err(at(format!("VLAN id {id} is outside 1-4094")));
                }
                checked.push(id as u16);
            }
            let outer_tpid = match (raw.vlan_protocol, checked.len()) {
                (Some(RawVlanProtocol::Dot1q), _) | (None, 1) => 0x8100,
                (Some(RawVlanProtocol::Dot1ad), _) | (None, _) => 0x88a8,
            };
            Some(VlanConfig {
                port: port.clone(),
                outer: checked[0],
                inner: checked.get(1).copied(),
                outer_tpid,
            })
        }
    };
    if raw.urpf == Urpf::Off && raw.urpf_allow_default.is_some() {
        return Err(at(
            "urpf_allow_default needs urpf = \"loose\" or \"strict\"".to_owned(),
        ));
    }
    let sampling_rate = match raw.sampling_rate {
        None => None,
        Some(0) => Some(0),
        Some(rate) => Some(sflow::check_rate(rate).map_err(|err| at(err.to_string()))?),
    };
    Ok(InterfaceConfig {
        name: raw.name.clone(),
        vlan,
        urpf: raw.urpf,
        urpf_allow_default: raw.urpf_allow_default.unwrap_or(false),
        sampling_rate,
        vrf: raw
            .vrf
            .clone()
            .filter(|name| name != super::vrf::DEFAULT_VRF),
        line,
    })
}
