//! The sFlow agent: turns the program's samples and the interfaces' counters into sFlow v5
//! datagrams ([`datagram`]) and sends them over UDP to the configured collectors. Sending never
//! waits: a datagram a collector's socket cannot take at once is counted as an error and
//! dropped, as UDP would.

pub(crate) mod datagram;

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use log::warn;
use serde::Serialize;

use self::datagram::{CounterSample, Datagram, FlowSample, MAX_DATAGRAM_BYTES};
use crate::config::sflow::{Collector, SflowConfig};

/// How long queued samples may wait for a fuller datagram.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// How long a collector's name may take to resolve.
const RESOLVE_WITHIN: Duration = Duration::from_secs(5);

/// How often a failing collector is logged.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the agent has done, for `sflow show` and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct AgentCounts {
    pub flow_samples: u64,
    pub counter_samples: u64,
    pub datagrams: u64,
    pub bytes: u64,
    pub send_errors: u64,
}

/// A collector, resolved.
#[derive(Clone, Debug)]
struct Destination {
    collector: Collector,
    addr: SocketAddr,
    last_error: Option<Instant>,
}

pub(crate) struct Agent {
    agent: IpAddr,
    /// One socket per address family in use.
    sockets: BTreeMap<bool, UdpSocket>,
    destinations: Vec<Destination>,
    started: Instant,
    datagram: Datagram,
    sequence: u32,
    oldest: Option<Instant>,
    pub(crate) counts: AgentCounts,
}

/// Why `[sflow]` cannot be used on this host; the message says which setting.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentError {
    #[error("collector {0}: cannot resolve: {1}")]
    Unresolvable(Collector, io::Error),
    #[error("collector {0} ({1}): unreachable from this host: {2}")]
    Unreachable(Collector, SocketAddr, io::Error),
    #[error("source_port {0}: {1}")]
    SourcePortInUse(u16, io::Error),
    #[error("agent_address {0}: {1} (it must be one of this host's addresses)")]
    AgentAddress(IpAddr, io::Error),
    #[error("a socket for the collectors: {0}")]
    Socket(io::Error),
}

impl Agent {
    /// Resolves the collectors and checks each has a route, and opens the sockets (bound to
    /// `agent_address` and `source_port` when given). `None` without collectors.
    pub(crate) async fn open(config: &SflowConfig) -> Result<Option<Self>, AgentError> {
        if config.collectors.is_empty() {
            return Ok(None);
        }
        let mut destinations = Vec::new();
        for collector in &config.collectors {
            let lookup = tokio::net::lookup_host((collector.host.as_str(), collector.port));
            let mut addrs = tokio::time::timeout(RESOLVE_WITHIN, lookup)
                .await
                .unwrap_or_else(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer within {RESOLVE_WITHIN:?}"),
                    ))
                })
                .map_err(|err| AgentError::Unresolvable(collector.clone(), err))?;
            // The agent's family first, when it has one.
            let addr = match config.agent_address {
                Some(agent) => {
                    let all: Vec<SocketAddr> = addrs.collect();
                    all.iter()
                        .find(|a| a.is_ipv4() == agent.is_ipv4())
                        .or(all.first())
                        .copied()
                }
                None => addrs.next(),
            };
            let addr = addr.ok_or_else(|| {
                AgentError::Unresolvable(
                    collector.clone(),
                    io::Error::new(io::ErrorKind::NotFound, "no address"),
                )
            })?;
            destinations.push(Destination {
                collector: collector.clone(),
                addr,
                last_error: None,
            });
        }
        // A connected probe socket per collector: the kernel says at once whether it has a
        // route, and which source address it would use.
        let mut chosen_source = None;
        for destination in &destinations {
            let probe = UdpSocket::bind(unspecified(destination.addr.is_ipv4(), 0))
                .map_err(AgentError::Socket)?;
            probe.connect(destination.addr).map_err(|err| {
                AgentError::Unreachable(destination.collector.clone(), destination.addr, err)
            })?;
            if chosen_source.is_none() {
                chosen_source = probe.local_addr().ok().map(|a| a.ip());
            }
        }
        let agent = config
            .agent_address
            .or(chosen_source)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));

        let mut sockets = BTreeMap::new();
        for destination in &destinations {
            let v4 = destination.addr.is_ipv4();
            if sockets.contains_key(&v4) {
                continue;
            }
            let port = config.source_port.unwrap_or(0);
            let local = match config.agent_address {
                Some(addr) if addr.is_ipv4() == v4 => SocketAddr::new(addr, port),
                _ => unspecified(v4, port),
            };
            let socket = bind(local).map_err(|err| match err.kind() {
                io::ErrorKind::AddrInUse => AgentError::SourcePortInUse(port, err),
                io::ErrorKind::AddrNotAvailable => AgentError::AgentAddress(local.ip(), err),
                _ => AgentError::Socket(err),
            })?;
            sockets.insert(v4, socket);
        }
        Ok(Some(Self {
            agent,
            sockets,
            destinations,
            started: Instant::now(),
            datagram: Datagram::new(agent, 0),
            sequence: 0,
            oldest: None,
            counts: AgentCounts::default(),
        }))
    }

    pub(crate) fn agent_address(&self) -> IpAddr {
        self.agent
    }

    pub(crate) fn collectors(&self) -> Vec<String> {
        self.destinations
            .iter()
            .map(|d| format!("{} ({})", d.collector, d.addr))
            .collect()
    }

    pub(crate) fn push_flow(&mut self, sample: &FlowSample<'_>) {
        if self.datagram.len() + Datagram::flow_sample_len(sample) > MAX_DATAGRAM_BYTES {
            self.flush();
        }
        self.datagram.push_flow(sample);
        self.counts.flow_samples += 1;
        self.oldest.get_or_insert_with(Instant::now);
    }

    pub(crate) fn push_counters(&mut self, sample: &CounterSample) {
        if self.datagram.len() + Datagram::COUNTER_SAMPLE_LEN > MAX_DATAGRAM_BYTES {
            self.flush();
        }
        self.datagram.push_counters(sample);
        self.counts.counter_samples += 1;
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Sends what is queued when it has waited [`FLUSH_EVERY`].
    pub(crate) fn flush_if_due(&mut self) {
        if self.oldest.is_some_and(|t| t.elapsed() >= FLUSH_EVERY) {
            self.flush();
        }
    }

    /// Sends the queued samples to every collector, as one datagram.
    pub(crate) fn flush(&mut self) {
        self.oldest = None;
        if self.datagram.is_empty() {
            return;
        }
        self.sequence = self.sequence.wrapping_add(1);
        let uptime = self.started.elapsed().as_millis() as u32;
        let bytes = self.datagram.take(self.sequence, uptime);
        for destination in &mut self.destinations {
            let socket = &self.sockets[&destination.addr.is_ipv4()];
            match socket.send_to(&bytes, destination.addr) {
                Ok(_) => {
                    self.counts.datagrams += 1;
                    self.counts.bytes += bytes.len() as u64;
                }
                Err(err) => {
                    self.counts.send_errors += 1;
                    if destination
                        .last_error
                        .is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY)
                    {
                        warn!(
                            "sFlow: sending to collector {} ({}): {err} (dropped; more errors \
                             are counted in `sflow show`)",
                            destination.collector, destination.addr
                        );
                        destination.last_error = Some(Instant::now());
                    }
                }
            }
        }
    }
}

/// A non-blocking UDP socket bound to `local`. With SO_REUSEADDR, which lets a reload's new
/// agent bind the source port the old one still holds (both set it); a port another program
/// holds is still refused.
fn bind(local: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&local.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn unspecified(v4: bool, port: u16) -> SocketAddr {
    if v4 {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
    } else {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
    }
}
