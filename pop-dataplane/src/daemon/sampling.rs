//! Sampling in the daemon: the program's samples drained from their ring on a timer, turned
//! into sFlow flow samples (with the route and next hop they took) and into `top`'s tallies;
//! counter samples of every interface each polling interval; each interface's sampling
//! rate kept in the map as the config and the CLI set it.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use etherparse::{LaxNetSlice, LaxSlicedPacket};
use ipnet::IpNet;
use pop_dataplane_common::{
    DropReason,
    sample::{HEADER_BYTES, SampleRecord},
};

use super::handlers::{Daemon, RequestError};
use crate::control::vrf::VrfId;
use crate::{
    api::{SampledInterface, SflowStatus},
    config::{Config, SflowConfig, sflow},
    control::router::Router,
    host,
    observe::{
        metrics,
        sflow::{
            Agent, AgentCounts, AgentError,
            datagram::{self, CounterSample, FlowSample, Output, RouterData},
        },
        top::{Protocol, Top, TopSample, TopSnapshot},
    },
};

/// How often the ring is drained.
pub(super) const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// Records taken per drain, at most: at 1-in-1 sampling of millions of frames a second the
/// daemon takes what it can and the ring, full, counts the rest as lost; control requests
/// still get their turn.
const MAX_PER_DRAIN: usize = 20_000;

/// The daemon's sampling state.
pub(super) struct Sampling {
    ring: RingBuf<MapData>,
    agent: Option<Agent>,
    /// The config's `[sflow]`, for the rates and polling.
    config: Option<SflowConfig>,
    /// `sflow rate` from the CLI, until the next reload: by interface name, `None` for all.
    overrides: Vec<(Option<String>, u32)>,
    /// What `SAMPLE_RATES` holds, by slot (slots not here hold 0).
    rates: BTreeMap<u32, u32>,
    /// The latest (pool, lost) each CPU reported, by (slot, CPU).
    pools: HashMap<(u32, u32), (u64, u64)>,
    /// Flow samples sent per data source (ifIndex), and counter samples.
    flow_sequences: HashMap<u32, u32>,
    counter_sequences: HashMap<u32, u32>,
    top: Top,
    /// Records taken from the ring.
    taken: u64,
    last_poll: Option<Instant>,
}

/// An `[sflow]` that cannot be used: named by the config file and line.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: [sflow]: {error}")]
pub(crate) struct SflowError {
    pub file: String,
    pub line: usize,
    pub error: AgentError,
}

/// The agent of `config`'s `[sflow]`, opened; `None` when it has no collectors.
pub(super) async fn open_agent(config: &Config, file: &str) -> Result<Option<Agent>, SflowError> {
    let Some(sflow) = &config.sflow else {
        return Ok(None);
    };
    Agent::open(sflow).await.map_err(|error| SflowError {
        file: file.to_owned(),
        line: sflow.line,
        error,
    })
}

impl Sampling {
    pub(super) fn new(ring: RingBuf<MapData>, config: &Config, agent: Option<Agent>) -> Self {
        Self {
            ring,
            agent,
            config: config.sflow.clone(),
            overrides: Vec::new(),
            rates: BTreeMap::new(),
            pools: HashMap::new(),
            flow_sequences: HashMap::new(),
            counter_sequences: HashMap::new(),
            top: Top::default(),
            taken: 0,
            last_poll: None,
        }
    }

    /// A new config, and its agent: the CLI's rates give way to the config's.
    pub(super) fn reconfigure(&mut self, config: &Config, agent: Option<Agent>) {
        if let Some(old) = &mut self.agent {
            old.flush();
        }
        self.agent = agent;
        self.config = config.sflow.clone();
        self.overrides.clear();
    }

    pub(super) fn polling_interval(&self) -> Option<Duration> {
        let seconds = self.config.as_ref()?.polling_interval;
        (seconds > 0 && self.agent.is_some()).then(|| Duration::from_secs(seconds.into()))
    }

    /// The rate of every interface: its own setting, else `[sflow] sampling_rate`, with the
    /// CLI's on top (the last given wins).
    fn wanted_rates(&self, config: &Config, router: &Router) -> BTreeMap<u32, u32> {
        let global = self
            .config
            .as_ref()
            .and_then(|s| s.sampling_rate)
            .unwrap_or(0);
        router
            .topology()
            .interfaces
            .iter()
            .map(|interface| {
                let configured = config
                    .interfaces
                    .iter()
                    .find(|i| i.name == interface.name)
                    .and_then(|i| i.sampling_rate)
                    .unwrap_or(global);
                let rate = self
                    .overrides
                    .iter()
                    .rev()
                    .find(|(name, _)| name.as_ref().is_none_or(|n| *n == interface.name))
                    .map_or(configured, |(_, rate)| *rate);
                (interface.entry.slot, rate)
            })
            .filter(|(_, rate)| *rate > 0)
            .collect()
    }
}

impl Daemon<'_> {
    /// Writes every interface's sampling rate where it changed (a slot no longer used, or
    /// no longer sampled, goes to 0).
    pub(super) fn apply_sample_rates(&mut self) -> anyhow::Result<()> {
        let wanted = self.sampling.wanted_rates(&self.config, &self.router);
        let old = std::mem::take(&mut self.sampling.rates);
        for (&slot, &rate) in &wanted {
            if old.get(&slot) != Some(&rate) {
                self.dataplane.set_sample_rate(slot, rate)?;
            }
        }
        for &slot in old.keys().filter(|slot| !wanted.contains_key(slot)) {
            self.dataplane.set_sample_rate(slot, 0)?;
        }
        self.sampling.rates = wanted;
        Ok(())
    }

    /// `sflow rate RATE [dev NAME]`: until the next reload.
    pub(super) fn set_sample_rate(
        &mut self,
        rate: u32,
        dev: Option<String>,
    ) -> Result<String, RequestError> {
        if rate != 0 {
            sflow::check_rate(i64::from(rate))?;
        }
        if let Some(dev) = &dev
            && self.router.topology().interface(dev).is_none()
        {
            let names: Vec<&str> = self
                .router
                .topology()
                .interfaces
                .iter()
                .map(|i| i.name.as_str())
                .collect();
            return Err(RequestError::UnknownInterface {
                dev: dev.clone(),
                known: names.join(", "),
            });
        }
        self.sampling.overrides.push((dev.clone(), rate));
        self.apply_sample_rates()?;
        let what = match rate {
            0 => "not sampled".to_owned(),
            rate => format!("sampled 1-in-{rate}"),
        };
        Ok(match dev {
            Some(dev) => format!("{dev}: {what} (until the next reload)"),
            None => format!("every interface: {what} (until the next reload)"),
        })
    }

    pub(super) fn sflow_status(&self) -> Result<SflowStatus, RequestError> {
        let sampling = &self.sampling;
        let counts = sampling
            .agent
            .as_ref()
            .map_or(AgentCounts::default(), |a| a.counts);
        let mut interfaces = Vec::new();
        for interface in &self.router.topology().interfaces {
            let slot = interface.entry.slot;
            interfaces.push(SampledInterface {
                name: interface.name.clone(),
                sampling_rate: sampling.rates.get(&slot).copied().unwrap_or(0),
                lost: self.dataplane.samples_lost(slot)?,
            });
        }
        Ok(SflowStatus {
            agent_address: sampling
                .agent
                .as_ref()
                .map(|a| a.agent_address().to_string()),
            collectors: sampling
                .agent
                .as_ref()
                .map(Agent::collectors)
                .unwrap_or_default(),
            polling_interval: sampling
                .polling_interval()
                .map_or(0, |d| d.as_secs() as u32),
            interfaces,
            samples: sampling.taken,
            flow_samples_sent: counts.flow_samples,
            counter_samples_sent: counts.counter_samples,
            datagrams: counts.datagrams,
            datagram_bytes: counts.bytes,
            send_errors: counts.send_errors,
        })
    }

    pub(super) fn top(&mut self, limit: usize) -> TopSnapshot {
        let names: HashMap<u32, String> = self
            .router
            .nexthop_names()
            .into_iter()
            .map(|n| (n.id, n.label()))
            .collect();
        self.sampling.top.snapshot(Instant::now(), limit, |id| {
            names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("next hop {id} (gone)"))
        })
    }

    /// Takes what the ring holds (up to [`MAX_PER_DRAIN`] records), and sends datagrams
    /// that are due.
    pub(super) fn drain_samples(&mut self) {
        let now = Instant::now();
        let Self {
            sampling,
            router,
            metrics,
            ..
        } = self;
        for _ in 0..MAX_PER_DRAIN {
            let Some(item) = sampling.ring.next() else {
                break;
            };
            if item.len() < size_of::<SampleRecord>() {
                continue;
            }
            // SAFETY: the ring holds `SampleRecord`s, written by the program whole; read
            // unaligned from the ring's bytes. Any bytes are a valid record.
            let record: SampleRecord =
                unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SampleRecord>()) };
            drop(item);
            sampling.taken += 1;
            take(sampling, router, &record, now);
        }
        if let Some(agent) = &mut sampling.agent {
            agent.flush_if_due();
        }
        if let Some(metrics) = metrics {
            metrics.set_sflow(metrics::SflowFigures {
                samples: sampling.taken,
                counts: sampling
                    .agent
                    .as_ref()
                    .map(|a| a.counts)
                    .unwrap_or_default(),
            });
        }
    }

    /// Counter samples of every interface that has a kernel device, when the polling
    /// interval has passed.
    pub(super) async fn poll_counters(&mut self) -> anyhow::Result<()> {
        let Some(every) = self.sampling.polling_interval() else {
            return Ok(());
        };
        if self
            .sampling
            .last_poll
            .is_some_and(|last| last.elapsed() < every)
        {
            return Ok(());
        }
        self.sampling.last_poll = Some(Instant::now());
        let links = host::link_counters(&self.handle).await?;
        let Some(agent) = &mut self.sampling.agent else {
            return Ok(());
        };
        for interface in &self.router.topology().interfaces {
            let Some(ifindex) = interface.device else {
                continue;
            };
            let Some(link) = links.iter().find(|l| l.ifindex == ifindex) else {
                continue;
            };
            let sequence = self.sampling.counter_sequences.entry(ifindex).or_default();
            *sequence = sequence.wrapping_add(1);
            agent.push_counters(&CounterSample {
                sequence: *sequence,
                counters: generic_counters(link, link_speed(&interface.name, ifindex)),
            });
        }
        agent.flush();
        Ok(())
    }
}

/// One record: its sFlow flow sample and its tally in `top`.
fn take(sampling: &mut Sampling, router: &Router, record: &SampleRecord, now: Instant) {
    let slot = record.ingress_slot;
    let Some(&rate) = sampling.rates.get(&slot) else {
        // Sampled just before its interface's rate went to 0.
        return;
    };
    let topology = router.topology();
    let Some(ingress) = topology.interfaces.iter().find(|i| i.entry.slot == slot) else {
        return;
    };
    let input = ingress.device.unwrap_or(ingress.key.ifindex);
    sampling
        .pools
        .insert((slot, record.cpu), (record.pool, record.lost));
    let (pool, lost) = sampling
        .pools
        .iter()
        .filter(|((s, _), _)| *s == slot)
        .fold((0u64, 0u64), |(p, l), (_, (pool, lost))| {
            (p + pool, l + lost)
        });

    let header_len = (record.header_len as usize).min(HEADER_BYTES);
    let header = &record.header[..header_len];
    let parsed = parse_header(header);
    let forwarded = record.verdict == SampleRecord::FORWARD;
    let output = match record.verdict {
        SampleRecord::FORWARD => topology
            .interfaces
            .iter()
            .find(|i| i.entry.slot == record.egress_slot)
            .map_or(Output::Unknown, |i| {
                Output::Interface(i.device.unwrap_or(i.key.ifindex))
            }),
        SampleRecord::DROP => Output::Discarded(discard_code(record.reason)),
        _ => Output::Unknown,
    };
    let dst_mask =
        (record.route_prefix_len != SampleRecord::NONE).then_some(record.route_prefix_len);
    // The source's route in the VRF the frame arrived in.
    let vrf = topology
        .interfaces
        .iter()
        .find(|i| i.entry.slot == record.ingress_slot)
        .map_or(VrfId::DEFAULT, |i| VrfId(i.entry.vrf));
    let src_prefix = parsed.and_then(|p| router.matching_prefix(vrf, p.src));
    let dst_prefix = parsed
        .zip(dst_mask)
        .and_then(|(p, len)| IpNet::new(p.dst, len as u8).ok().map(|net| net.trunc()));
    let nexthop = (forwarded && record.nexthop != SampleRecord::NONE).then_some(record.nexthop);
    let router_data = match (nexthop, parsed, dst_mask) {
        (Some(id), Some(p), Some(dst_mask)) => Some(RouterData {
            next_hop: router.nexthop_via(id).unwrap_or(match p.dst {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            }),
            src_mask: src_prefix.map_or(0, |p| u32::from(p.prefix_len())),
            dst_mask,
        }),
        _ => None,
    };

    sampling.top.add(
        TopSample {
            dst: dst_prefix,
            src: src_prefix,
            nexthop,
            protocol: parsed.map_or_else(|| Protocol::Other(ether_type(header)), |p| p.protocol),
            frame_len: record.frame_len,
            rate,
        },
        now,
    );

    let Some(agent) = &mut sampling.agent else {
        return;
    };
    let sequence = sampling.flow_sequences.entry(input).or_default();
    *sequence = sequence.wrapping_add(1);
    agent.push_flow(&FlowSample {
        sequence: *sequence,
        source: input,
        sampling_rate: rate,
        sample_pool: pool as u32,
        drops: lost as u32,
        input,
        output,
        frame_len: record.frame_len,
        header,
        router: router_data,
    });
}

/// The sFlow discard code of a drop reason.
fn discard_code(reason: u32) -> u32 {
    const ACL: [DropReason; 5] = [
        DropReason::AclDeny,
        DropReason::MartianSource,
        DropReason::Urpf,
        DropReason::Flow,
        DropReason::FlowRateLimit,
    ];
    match DropReason::ALL.iter().find(|r| **r as u32 == reason) {
        Some(DropReason::Blackhole) => Output::NET_UNREACHABLE,
        Some(DropReason::FlowRateLimit) => Output::RATE_LIMIT,
        Some(r) if ACL.contains(r) => Output::ACL,
        _ => Output::UNKNOWN,
    }
}

#[derive(Clone, Copy)]
struct Parsed {
    src: IpAddr,
    dst: IpAddr,
    protocol: Protocol,
}

fn parse_header(header: &[u8]) -> Option<Parsed> {
    let packet = LaxSlicedPacket::from_ethernet(header).ok()?;
    match packet.net? {
        LaxNetSlice::Ipv4(ip) => Some(Parsed {
            src: ip.header().source_addr().into(),
            dst: ip.header().destination_addr().into(),
            protocol: Protocol::Ip(ip.payload().ip_number.0),
        }),
        LaxNetSlice::Ipv6(ip) => Some(Parsed {
            src: ip.header().source_addr().into(),
            dst: ip.header().destination_addr().into(),
            protocol: Protocol::Ip(ip.payload().ip_number.0),
        }),
        LaxNetSlice::Arp(_) => None,
    }
}

/// The EtherType past any VLAN tags; 0 when the header is too short to say.
fn ether_type(header: &[u8]) -> u16 {
    let mut at = 12;
    while let Some(bytes) = header.get(at..at + 2) {
        let ether_type = u16::from_be_bytes([bytes[0], bytes[1]]);
        if ether_type == 0x8100 || ether_type == 0x88a8 {
            at += 4;
            continue;
        }
        return ether_type;
    }
    0
}

fn generic_counters(link: &host::LinkCounters, speed: u64) -> datagram::InterfaceCounters {
    let low = |n: u64| n as u32;
    datagram::InterfaceCounters {
        ifindex: link.ifindex,
        if_type: 6,
        speed,
        direction: 1,
        status: u32::from(link.admin_up) | (u32::from(link.oper_up) << 1),
        in_octets: link.rx_bytes,
        in_unicast: low(link.rx_packets.saturating_sub(link.rx_multicast)),
        in_multicast: low(link.rx_multicast),
        in_broadcast: u32::MAX,
        in_discards: low(link.rx_dropped),
        in_errors: low(link.rx_errors),
        in_unknown_protos: u32::MAX,
        out_octets: link.tx_bytes,
        out_unicast: low(link.tx_packets),
        out_multicast: u32::MAX,
        out_broadcast: u32::MAX,
        out_discards: low(link.tx_dropped),
        out_errors: low(link.tx_errors),
        promiscuous: u32::from(link.promiscuous),
    }
}

/// The interface's speed in bits per second, from sysfs (Mb/s there); 0 when it has none, or
/// when this process's sysfs is another network namespace's (its interface of that name has
/// another ifindex).
fn link_speed(name: &str, ifindex: u32) -> u64 {
    let read = |file: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{file}"));
    if read("ifindex")
        .ok()
        .and_then(|i| i.trim().parse::<u32>().ok())
        != Some(ifindex)
    {
        return 0;
    }
    read("speed")
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .filter(|&mbps| mbps > 0)
        .map_or(0, |mbps| mbps as u64 * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_give_addresses_and_protocols() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
        let ip = etherparse::Ipv4Header::new(
            8,
            64,
            etherparse::IpNumber::UDP,
            [198, 18, 0, 2],
            [198, 19, 1, 2],
        )
        .unwrap();
        ip.write(&mut frame).unwrap();
        frame.extend_from_slice(&[0; 8]);
        let parsed = parse_header(&frame).unwrap();
        assert_eq!(parsed.src, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(parsed.dst, "198.19.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(parsed.protocol, Protocol::Ip(17));
        // Cut short inside the payload: still read.
        assert!(parse_header(&frame[..40]).is_some());
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert_eq!(ether_type(&arp), 0x0806);
        assert_eq!(ether_type(&[0; 5]), 0);
    }

    #[test]
    fn drop_reasons_map_to_sflow_discard_codes() {
        assert_eq!(discard_code(DropReason::AclDeny as u32), 258);
        assert_eq!(discard_code(DropReason::Urpf as u32), 258);
        assert_eq!(discard_code(DropReason::FlowRateLimit as u32), 261);
        assert_eq!(discard_code(DropReason::Blackhole as u32), 0);
        assert_eq!(discard_code(DropReason::Malformed as u32), 256);
        assert_eq!(discard_code(999), 256);
    }
}
