//! sFlow version 5 datagrams (sFlow.org, "sFlow Version 5", July 2004), as XDR: big-endian
//! 32-bit words, opaque data padded to a word. Only what the agent sends: flow samples with
//! a raw packet header and extended router data, and counter samples of generic interface
//! counters.

use std::net::IpAddr;

/// Largest datagram sent: fits a 1500-byte path with IPv6 and UDP headers to spare.
pub(crate) const MAX_DATAGRAM_BYTES: usize = 1400;

/// Record formats (enterprise 0).
const FLOW_SAMPLE: u32 = 1;
const COUNTERS_SAMPLE: u32 = 2;
const RAW_PACKET_HEADER: u32 = 1;
const EXTENDED_ROUTER: u32 = 1002;
const GENERIC_INTERFACE: u32 = 1;

/// `header_protocol`: Ethernet.
const ETHERNET_ISO88023: u32 = 1;
/// Bytes an Ethernet frame has on the wire that the program never sees: its FCS, which the
/// frame length includes and the header was stripped of.
pub(crate) const FCS_BYTES: u32 = 4;

/// Where a sampled packet went: `output` of a flow sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// Sent out of this ifIndex.
    Interface(u32),
    /// Dropped, for this reason (sFlow's codes: 256 unknown, 258 ACL, 261 rate limit...).
    Discarded(u32),
    /// Not known (handed to the host's own stack).
    Unknown,
}

impl Output {
    /// Discard codes of the sFlow v5 specification, section "output".
    pub(crate) const UNKNOWN: u32 = 256;
    pub(crate) const ACL: u32 = 258;
    pub(crate) const RATE_LIMIT: u32 = 261;
    /// ICMP "net unreachable", which a blackhole route stands for.
    pub(crate) const NET_UNREACHABLE: u32 = 0;

    fn encode(self) -> u32 {
        match self {
            Self::Interface(ifindex) => ifindex & 0x3fff_ffff,
            Self::Discarded(reason) => 0x4000_0000 | (reason & 0x3fff_ffff),
            Self::Unknown => 0,
        }
    }
}

/// A flow sample: one sampled packet and what the router did with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FlowSample<'a> {
    /// This data source's flow sample count, from 1.
    pub sequence: u32,
    /// The data source: the ingress interface's ifIndex.
    pub source: u32,
    pub sampling_rate: u32,
    /// Packets that could have been sampled: the interface's received frames.
    pub sample_pool: u32,
    /// Samples lost for want of room.
    pub drops: u32,
    pub input: u32,
    pub output: Output,
    /// The frame's length as received, without FCS.
    pub frame_len: u32,
    pub header: &'a [u8],
    pub router: Option<RouterData>,
}

/// Extended router data: the route the destination matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RouterData {
    pub next_hop: IpAddr,
    pub src_mask: u32,
    pub dst_mask: u32,
}

/// Generic interface counters (RFC 2233's ifTable, as sFlow carries them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct InterfaceCounters {
    pub ifindex: u32,
    /// ifType: 6, ethernetCsmacd.
    pub if_type: u32,
    /// Bits per second; 0 when not known.
    pub speed: u64,
    /// 1 full duplex, 0 unknown.
    pub direction: u32,
    /// Bit 0 admin up, bit 1 oper up.
    pub status: u32,
    pub in_octets: u64,
    pub in_unicast: u32,
    pub in_multicast: u32,
    pub in_broadcast: u32,
    pub in_discards: u32,
    pub in_errors: u32,
    pub in_unknown_protos: u32,
    pub out_octets: u64,
    pub out_unicast: u32,
    pub out_multicast: u32,
    pub out_broadcast: u32,
    pub out_discards: u32,
    pub out_errors: u32,
    pub promiscuous: u32,
}

/// A counter sample of one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CounterSample {
    pub sequence: u32,
    pub counters: InterfaceCounters,
}

/// A datagram being filled: its header fields, and its samples so far.
#[derive(Debug)]
pub(crate) struct Datagram {
    agent: IpAddr,
    sub_agent: u32,
    samples: Vec<u8>,
    count: u32,
}

impl Datagram {
    pub(crate) fn new(agent: IpAddr, sub_agent: u32) -> Self {
        Self {
            agent,
            sub_agent,
            samples: Vec::with_capacity(MAX_DATAGRAM_BYTES),
            count: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the datagram with its samples so far.
    pub(crate) fn len(&self) -> usize {
        self.header_len() + self.samples.len()
    }

    fn header_len(&self) -> usize {
        match self.agent {
            IpAddr::V4(_) => 28,
            IpAddr::V6(_) => 40,
        }
    }

    /// Bytes `sample` would add.
    pub(crate) fn flow_sample_len(sample: &FlowSample<'_>) -> usize {
        8 + 32 + raw_header_record_len(sample.header) + sample.router.map_or(0, router_record_len)
    }

    pub(crate) const COUNTER_SAMPLE_LEN: usize = 8 + 12 + 8 + 88;

    pub(crate) fn push_flow(&mut self, sample: &FlowSample<'_>) {
        let out = &mut self.samples;
        let records = 1 + u32::from(sample.router.is_some());
        let body =
            32 + raw_header_record_len(sample.header) + sample.router.map_or(0, router_record_len);
        put(out, FLOW_SAMPLE);
        put(out, body as u32);
        put(out, sample.sequence);
        put(out, sample.source & 0x00ff_ffff); // type 0: ifIndex
        put(out, sample.sampling_rate);
        put(out, sample.sample_pool);
        put(out, sample.drops);
        put(out, sample.input & 0x3fff_ffff);
        put(out, sample.output.encode());
        put(out, records);

        let padded = sample.header.len().next_multiple_of(4);
        put(out, RAW_PACKET_HEADER);
        put(out, (16 + padded) as u32);
        put(out, ETHERNET_ISO88023);
        put(out, sample.frame_len + FCS_BYTES);
        // `stripped`: the FCS, never in the header.
        put(out, FCS_BYTES);
        put(out, sample.header.len() as u32);
        out.extend_from_slice(sample.header);
        out.resize(out.len() + padded - sample.header.len(), 0);

        if let Some(router) = sample.router {
            put(out, EXTENDED_ROUTER);
            put(out, (router_record_len(router) - 8) as u32);
            put_address(out, router.next_hop);
            put(out, router.src_mask);
            put(out, router.dst_mask);
        }
        self.count += 1;
    }

    pub(crate) fn push_counters(&mut self, sample: &CounterSample) {
        let out = &mut self.samples;
        let c = &sample.counters;
        put(out, COUNTERS_SAMPLE);
        put(out, (Self::COUNTER_SAMPLE_LEN - 8) as u32);
        put(out, sample.sequence);
        put(out, c.ifindex & 0x00ff_ffff);
        put(out, 1);
        put(out, GENERIC_INTERFACE);
        put(out, 88);
        put(out, c.ifindex);
        put(out, c.if_type);
        put64(out, c.speed);
        put(out, c.direction);
        put(out, c.status);
        put64(out, c.in_octets);
        for word in [
            c.in_unicast,
            c.in_multicast,
            c.in_broadcast,
            c.in_discards,
            c.in_errors,
            c.in_unknown_protos,
        ] {
            put(out, word);
        }
        put64(out, c.out_octets);
        for word in [
            c.out_unicast,
            c.out_multicast,
            c.out_broadcast,
            c.out_discards,
            c.out_errors,
            c.promiscuous,
        ] {
            put(out, word);
        }
        self.count += 1;
    }

    /// The whole datagram, numbered `sequence`, sent `uptime_ms` after the agent started;
    /// the samples are taken out, for the next.
    pub(crate) fn take(&mut self, sequence: u32, uptime_ms: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        put(&mut out, 5);
        put_address(&mut out, self.agent);
        put(&mut out, self.sub_agent);
        put(&mut out, sequence);
        put(&mut out, uptime_ms);
        put(&mut out, self.count);
        out.append(&mut self.samples);
        self.count = 0;
        out
    }
}

fn raw_header_record_len(header: &[u8]) -> usize {
    8 + 16 + header.len().next_multiple_of(4)
}

fn router_record_len(router: RouterData) -> usize {
    8 + address_len(router.next_hop) + 8
}

fn address_len(addr: IpAddr) -> usize {
    match addr {
        IpAddr::V4(_) => 8,
        IpAddr::V6(_) => 20,
    }
}

fn put(out: &mut Vec<u8>, word: u32) {
    out.extend_from_slice(&word.to_be_bytes());
}

fn put64(out: &mut Vec<u8>, word: u64) {
    out.extend_from_slice(&word.to_be_bytes());
}

fn put_address(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            put(out, 1);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            put(out, 2);
            out.extend_from_slice(&v6.octets());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks(4)
            .map(|w| u32::from_be_bytes(w.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn a_flow_sample_datagram_word_by_word() {
        let header = [0xaau8; 6];
        let sample = FlowSample {
            sequence: 7,
            source: 3,
            sampling_rate: 1000,
            sample_pool: 123_456,
            drops: 2,
            input: 3,
            output: Output::Interface(4),
            frame_len: 64,
            header: &header,
            router: Some(RouterData {
                next_hop: "198.18.1.2".parse().unwrap(),
                src_mask: 16,
                dst_mask: 24,
            }),
        };
        let mut datagram = Datagram::new("198.18.0.1".parse().unwrap(), 0);
        let expected_len = 28 + Datagram::flow_sample_len(&sample);
        datagram.push_flow(&sample);
        assert_eq!(datagram.len(), expected_len);
        let bytes = datagram.take(9, 5000);
        assert_eq!(bytes.len(), expected_len);
        assert!(datagram.is_empty());
        let w = words(&bytes);
        #[rustfmt::skip]
        let expected: Vec<u32> = vec![
            5, 1, 0xc612_0001, 0, 9, 5000, 1,
            // flow sample, its length
            1, (bytes.len() - 28 - 8) as u32,
            7, 3, 1000, 123_456, 2, 3, 4, 2,
            // raw packet header: Ethernet, 64 + FCS, 4 stripped, 6 bytes, padded to 8
            1, 16 + 8, 1, 68, 4, 6, 0xaaaa_aaaa, 0xaaaa_0000,
            // extended router: next hop, masks
            1002, 16, 1, 0xc612_0102, 16, 24,
        ];
        assert_eq!(w, expected);
    }

    #[test]
    fn discards_and_counters() {
        assert_eq!(Output::Discarded(Output::ACL).encode(), 0x4000_0102);
        assert_eq!(Output::Unknown.encode(), 0);
        let mut datagram = Datagram::new("2001:2::1".parse().unwrap(), 0);
        datagram.push_counters(&CounterSample {
            sequence: 1,
            counters: InterfaceCounters {
                ifindex: 5,
                if_type: 6,
                in_octets: 1 << 40,
                out_errors: 3,
                ..Default::default()
            },
        });
        let bytes = datagram.take(1, 0);
        assert_eq!(bytes.len(), 40 + Datagram::COUNTER_SAMPLE_LEN);
        let w = words(&bytes);
        // version, agent type 2 and its 4 words, sub-agent, sequence, uptime, one sample
        assert_eq!(&w[..10], &[5, 2, 0x2001_0002, 0, 0, 1, 0, 1, 0, 1]);
        assert_eq!(&w[10..17], &[2, 108, 1, 5, 1, 1, 88]);
        // ifIndex, ifType, ifSpeed (2 words), direction, status, ifInOctets (2 words)
        assert_eq!(&w[17..25], &[5, 6, 0, 0, 0, 0, 1 << 8, 0]);
        assert_eq!(*w.last().unwrap(), 0, "promiscuous");
        assert_eq!(w[w.len() - 2], 3, "ifOutErrors");
    }
}
