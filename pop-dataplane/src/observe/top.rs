//! `pop-dataplane top`: traffic estimated from the samples, by destination prefix (the route
//! matched), source prefix, next hop and protocol, over the last few seconds. Each sample of a
//! 1-in-N interface stands for N frames of its length.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The estimate covers this many one-second buckets (the last one filling).
const WINDOW_BUCKETS: usize = 5;
const BUCKET: Duration = Duration::from_secs(1);
/// Keys kept per dimension and bucket; samples beyond are tallied as "other", so that a
/// flood of random sources costs bounded memory.
const MAX_KEYS: usize = 16_384;

/// What one sample says, for the tallies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TopSample {
    /// The route the destination matched; `None` when there was none.
    pub dst: Option<IpNet>,
    /// The route the source falls under.
    pub src: Option<IpNet>,
    pub nexthop: Option<u32>,
    pub protocol: Protocol,
    pub frame_len: u32,
    pub rate: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Protocol {
    /// An IP protocol number (IPv4 protocol, IPv6 next header past extensions).
    Ip(u8),
    /// Not IP: the EtherType.
    Other(u16),
}

impl Protocol {
    pub(crate) fn name(self) -> String {
        match self {
            Self::Ip(1) => "icmp".into(),
            Self::Ip(6) => "tcp".into(),
            Self::Ip(17) => "udp".into(),
            Self::Ip(47) => "gre".into(),
            Self::Ip(50) => "esp".into(),
            Self::Ip(58) => "icmpv6".into(),
            Self::Ip(132) => "sctp".into(),
            Self::Ip(n) => format!("ip-proto-{n}"),
            Self::Other(0x0806) => "arp".into(),
            Self::Other(t) => format!("ethertype-0x{t:04x}"),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    bytes: f64,
    packets: f64,
}

#[derive(Debug)]
struct Tallies<K> {
    by_key: HashMap<K, Tally>,
    other: Tally,
}

impl<K> Default for Tallies<K> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            other: Tally::default(),
        }
    }
}

impl<K: Eq + Hash> Tallies<K> {
    fn add(&mut self, key: K, bytes: f64, packets: f64) {
        let len = self.by_key.len();
        let tally = match self.by_key.get_mut(&key) {
            Some(tally) => tally,
            None if len < MAX_KEYS => self.by_key.entry(key).or_default(),
            None => &mut self.other,
        };
        tally.bytes += bytes;
        tally.packets += packets;
    }
}

#[derive(Debug)]
struct Bucket {
    started: Instant,
    samples: u64,
    dst: Tallies<Option<IpNet>>,
    src: Tallies<Option<IpNet>>,
    nexthop: Tallies<Option<u32>>,
    protocol: Tallies<Protocol>,
}

impl Bucket {
    fn new(started: Instant) -> Self {
        Self {
            started,
            samples: 0,
            dst: Tallies::default(),
            src: Tallies::default(),
            nexthop: Tallies::default(),
            protocol: Tallies::default(),
        }
    }
}

/// The tallies of the last few seconds.
#[derive(Debug, Default)]
pub(crate) struct Top {
    buckets: VecDeque<Bucket>,
}

/// One line of a `top` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopRow {
    pub key: String,
    pub bits_per_second: f64,
    pub packets_per_second: f64,
}

/// What `top` shows, estimated over `window_seconds`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopSnapshot {
    pub window_seconds: f64,
    pub samples: u64,
    pub destinations: Vec<TopRow>,
    pub sources: Vec<TopRow>,
    pub nexthops: Vec<TopRow>,
    pub protocols: Vec<TopRow>,
}

impl Top {
    pub(crate) fn add(&mut self, sample: TopSample, now: Instant) {
        self.expire(now);
        if self
            .buckets
            .back()
            .is_none_or(|b| now.duration_since(b.started) >= BUCKET)
        {
            self.buckets.push_back(Bucket::new(now));
        }
        let bucket = self.buckets.back_mut().expect("pushed above");
        let packets = f64::from(sample.rate);
        let bytes = f64::from(sample.frame_len) * packets;
        bucket.samples += 1;
        bucket.dst.add(sample.dst, bytes, packets);
        bucket.src.add(sample.src, bytes, packets);
        bucket.nexthop.add(sample.nexthop, bytes, packets);
        bucket.protocol.add(sample.protocol, bytes, packets);
    }

    fn expire(&mut self, now: Instant) {
        while self
            .buckets
            .front()
            .is_some_and(|b| now.duration_since(b.started) >= BUCKET * WINDOW_BUCKETS as u32)
        {
            self.buckets.pop_front();
        }
    }

    /// The `limit` largest of each table; next hops named by `nexthop_name`.
    pub(crate) fn snapshot(
        &mut self,
        now: Instant,
        limit: usize,
        nexthop_name: impl Fn(u32) -> String,
    ) -> TopSnapshot {
        self.expire(now);
        let Some(first) = self.buckets.front() else {
            return TopSnapshot::default();
        };
        // From the first bucket's start, at least a second: a rate over the time sampled.
        let window = now.duration_since(first.started).max(BUCKET).as_secs_f64();
        let prefix = |p: &Option<IpNet>| p.map_or_else(|| "no route".to_owned(), |p| p.to_string());
        TopSnapshot {
            window_seconds: window,
            samples: self.buckets.iter().map(|b| b.samples).sum(),
            destinations: rows(&self.buckets, |b| &b.dst, prefix, window, limit),
            sources: rows(&self.buckets, |b| &b.src, prefix, window, limit),
            nexthops: rows(
                &self.buckets,
                |b| &b.nexthop,
                |n| n.map_or_else(|| "not forwarded".to_owned(), &nexthop_name),
                window,
                limit,
            ),
            protocols: rows(&self.buckets, |b| &b.protocol, |p| p.name(), window, limit),
        }
    }
}

fn rows<K: Eq + Hash + Clone>(
    buckets: &VecDeque<Bucket>,
    pick: impl Fn(&Bucket) -> &Tallies<K>,
    name: impl Fn(&K) -> String,
    window: f64,
    limit: usize,
) -> Vec<TopRow> {
    let mut sums: HashMap<K, Tally> = HashMap::new();
    let mut other = Tally::default();
    for bucket in buckets {
        let tallies = pick(bucket);
        for (key, tally) in &tallies.by_key {
            let sum = sums.entry(key.clone()).or_default();
            sum.bytes += tally.bytes;
            sum.packets += tally.packets;
        }
        other.bytes += tallies.other.bytes;
        other.packets += tallies.other.packets;
    }
    let mut rows: Vec<TopRow> = sums
        .iter()
        .map(|(key, tally)| TopRow {
            key: name(key),
            bits_per_second: tally.bytes * 8.0 / window,
            packets_per_second: tally.packets / window,
        })
        .collect();
    if other.packets > 0.0 {
        rows.push(TopRow {
            key: "other".to_owned(),
            bits_per_second: other.bytes * 8.0 / window,
            packets_per_second: other.packets / window,
        });
    }
    rows.sort_by(|a, b| {
        b.bits_per_second
            .total_cmp(&a.bits_per_second)
            .then_with(|| a.key.cmp(&b.key))
    });
    rows.truncate(limit);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dst: &str, rate: u32, len: u32) -> TopSample {
        TopSample {
            dst: Some(dst.parse().unwrap()),
            src: Some("198.18.0.0/24".parse().unwrap()),
            nexthop: Some(3),
            protocol: Protocol::Ip(17),
            frame_len: len,
            rate,
        }
    }

    #[test]
    fn estimates_rates_from_samples_and_ranks_them() {
        let mut top = Top::default();
        let t0 = Instant::now();
        // Over 2 s: 100 samples of 1-in-10 at 100 B to A, 10 to B.
        for i in 0..100u32 {
            let at = t0 + Duration::from_millis(u64::from(i) * 20);
            top.add(sample("198.18.1.0/24", 10, 100), at);
            if i % 10 == 0 {
                top.add(sample("198.18.2.0/24", 10, 100), at);
            }
        }
        let snapshot = top.snapshot(t0 + Duration::from_secs(2), 10, |id| format!("nh{id}"));
        assert_eq!(snapshot.window_seconds, 2.0);
        assert_eq!(snapshot.samples, 110);
        assert_eq!(snapshot.destinations[0].key, "198.18.1.0/24");
        // 100 samples x 10 frames x 100 B x 8 bits / 2 s
        assert_eq!(snapshot.destinations[0].bits_per_second, 400_000.0);
        assert_eq!(snapshot.destinations[0].packets_per_second, 500.0);
        assert_eq!(snapshot.destinations[1].key, "198.18.2.0/24");
        assert_eq!(snapshot.nexthops[0].key, "nh3");
        assert_eq!(snapshot.protocols[0].key, "udp");
        assert_eq!(snapshot.sources.len(), 1);
        // Old buckets leave the window.
        let later = top.snapshot(t0 + Duration::from_secs(30), 10, |id| format!("nh{id}"));
        assert_eq!(later, TopSnapshot::default());
    }

    #[test]
    fn keys_beyond_the_bound_count_as_other() {
        let mut top = Top::default();
        let now = Instant::now();
        for i in 0..(MAX_KEYS as u32 + 10) {
            let mut s = sample("198.18.1.0/24", 1, 64);
            s.src = Some(IpNet::new(std::net::Ipv4Addr::from(i).into(), 32).unwrap());
            top.add(s, now);
        }
        let snapshot = top.snapshot(now, usize::MAX, |id| id.to_string());
        assert_eq!(snapshot.sources.len(), MAX_KEYS + 1);
        let other = snapshot.sources.iter().find(|r| r.key == "other").unwrap();
        assert_eq!(other.packets_per_second, 10.0);
    }
}
