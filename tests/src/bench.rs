//! The forwarding benchmark's labs and measurements, shared by `cargo xtask bench` and the
//! test suite's smoke case.
//!
//! Each router under test gets a lab of its own (generator on host A, router, sink on host B),
//! set up once, so that cases can be measured in alternation without reconfiguring anything:
//!
//! - the kernel's own forwarding (`ip_forward=1`, the same few routes in its FIB, no XDP);
//! - the ceiling: `bench_redirect`, every frame redirected to the egress port, no lookup;
//! - pop-dataplane with a handful of routes, and with the full table.
//!
//! The generator is pktgen where the kernel has it, else `pop-dataplane-bench generate` (XDP
//! live frames). The sink is `pop-dataplane-bench sink`, an XDP program that counts.
//!
//! Where the time goes. On a small machine the generator, the router and the sink cannot each
//! have a core. The router's receive work runs in its own NAPI thread (threaded NAPI on its
//! ingress port), alone on the last CPU; the generator and the sink (its NAPI thread, at
//! real-time priority so that it drains as soon as woken) share CPU 0. The router's cost per
//! packet is its NAPI thread's run time (the scheduler's own clock) over the packets it
//! received: that is what one router core spends, and its inverse is what one core forwards.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{
    lab::{Daemon, HOST_A, HOST_B, Lab, LabOptions, ROUTER_A, ROUTER_B},
    netns::{Netns, run},
    pktgen,
};

/// The UDP port the generator sends to and the sink counts (discard).
pub const SINK_PORT: u16 = 9;

/// Next hops on the sink's link for the benchmark's routes (the full table is spread over
/// them, as a PoP spreads it over its transits): all answer with the sink's MAC.
pub const SINK_NEXTHOPS_V4: [&str; 4] = ["198.18.2.2", "198.18.2.3", "198.18.2.4", "198.18.2.5"];
pub const SINK_NEXTHOPS_V6: [&str; 4] = [
    "2001:2:0:2::2",
    "2001:2:0:2::3",
    "2001:2:0:2::4",
    "2001:2:0:2::5",
];

/// The binaries the benchmark runs.
#[derive(Clone, Debug)]
pub struct Tools {
    /// `pop-dataplane`: the daemon and CLI.
    pub dataplane: PathBuf,
    /// `pop-dataplane-bench`: generator, sink, ceiling, lookup micro-benchmark.
    pub bench: PathBuf,
}

/// What forwards between the generator and the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Router {
    /// The kernel's IP forwarding, the routes in its FIB.
    Kernel,
    /// `bench_redirect`: the MAC addresses swapped, no parsing, no lookup.
    Ceiling,
    /// `bench_fib_forward`: the kernel's FIB called from XDP (`bpf_fib_lookup`), the routes in
    /// the router's kernel FIB: what an operator could run instead.
    FibForward,
    /// pop-dataplane (its compiled FIB).
    Dataplane,
    /// pop-dataplane with `--fib lpm-trie`: the kernel's LPM trie.
    DataplaneLpmTrie,
    /// pop-dataplane (compiled FIB) with martian source checks on and
    /// [`FILTER_DENY_RULES`] deny rules, none of which the traffic matches: the source
    /// filter's cost.
    DataplaneFiltered,
    /// pop-dataplane (compiled FIB) with strict uRPF on the ingress interface, which the
    /// traffic passes (its sources route back through it): the second lookup's cost.
    DataplaneUrpf,
    /// pop-dataplane (compiled FIB) with [`FLOW_RULES`] flow rules on real destinations of
    /// the table, none of which the traffic goes to: what the rules cost other traffic.
    DataplaneFlows,
    /// pop-dataplane (compiled FIB) with flow rules dropping everything to where the
    /// benchmark's traffic goes: an attack flood's cost, every frame matched and dropped.
    DataplaneFlood,
    /// pop-dataplane (compiled FIB) with blackhole routes for where the benchmark's traffic
    /// goes, and no table: what a drop costs without any flow rule, the flood's control.
    DataplaneBlackhole,
    /// pop-dataplane (compiled FIB) sampling every interface 1-in-[`SAMPLING_RATE`] (sFlow's
    /// usual order), the samples feeding `top` (no collector): what sampling costs.
    DataplaneSampled,
    /// pop-dataplane (compiled FIB) sampling every frame: the ring overflows, and the
    /// samples it could not take are counted.
    DataplaneSampledAll,
}

/// The sampling rate of [`Router::DataplaneSampled`].
pub const SAMPLING_RATE: u32 = 1000;

/// Flow rules of [`Router::DataplaneFlows`], half IPv4, half IPv6.
pub const FLOW_RULES: usize = 1_000;

/// Deny rules of [`Router::DataplaneFiltered`].
pub const FILTER_DENY_RULES: usize = 1_000;

impl Router {
    pub fn is_dataplane(self) -> bool {
        matches!(
            self,
            Self::Dataplane
                | Self::DataplaneLpmTrie
                | Self::DataplaneFiltered
                | Self::DataplaneUrpf
                | Self::DataplaneFlows
                | Self::DataplaneFlood
                | Self::DataplaneBlackhole
                | Self::DataplaneSampled
                | Self::DataplaneSampledAll
        )
    }

    /// The router's config: the lab's, and for [`Router::DataplaneFiltered`] the filter
    /// (`[filter]` must come before the lab's tables of arrays, `[[acl]]` may follow them).
    fn config(self, lab: &Lab) -> String {
        if self == Self::DataplaneUrpf {
            return lab.router_config_with_urpf("strict");
        }
        if self == Self::DataplaneFlows {
            let mut config = lab.router_config();
            for i in 0..FLOW_RULES / 2 {
                let _ = write!(
                    config,
                    "\n[[flow]]\nrule = \"destination {}.{}.7.1/32 protocol =udp \
                     destination-port =53 then drop\"\n\
                     [[flow]]\nrule = \"destination 2a00:{i:x}::1/128 protocol =udp \
                     destination-port =53 then drop\"\n",
                    1 + i % 97,
                    i / 97
                );
            }
            return config;
        }
        if let Self::DataplaneSampled | Self::DataplaneSampledAll = self {
            let rate = if self == Self::DataplaneSampled {
                SAMPLING_RATE
            } else {
                1
            };
            return format!("{}\n[sflow]\nsampling_rate = {rate}\n", lab.router_config());
        }
        if self == Self::DataplaneBlackhole {
            let mut config = lab.router_config();
            for prefix in [TRAFFIC_V4, TRAFFIC_V6, "2001:2:0:100::/61"] {
                let _ = write!(
                    config,
                    "\n[[route]]\nprefix = \"{prefix}\"\ntype = \"blackhole\"\n"
                );
            }
            return config;
        }
        if self == Self::DataplaneFlood {
            return format!(
                "{}\n[[flow]]\nrule = \"destination {TRAFFIC_V4} then drop\"\n\
                 [[flow]]\nrule = \"destination {TRAFFIC_V6} then drop\"\n\
                 [[flow]]\nrule = \"destination 2001:2:0:100::/61 then drop\"\n",
                lab.router_config()
            );
        }
        if self != Self::DataplaneFiltered {
            return lab.router_config();
        }
        let mut config = format!(
            "[filter]\nmartian_sources = true\n\n{}",
            lab.router_config()
        );
        for i in 0..FILTER_DENY_RULES {
            let _ = write!(
                config,
                "\n[[acl]]\naction = \"deny\"\nsrc = \"100.{}.{}.0/24\"\n",
                64 + i / 256,
                i % 256
            );
        }
        config
    }
}

/// Routes for the router beyond its lab's own (the two links).
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
}

impl Table {
    /// The handful of routes: eight IPv4 /24s in 198.19.0.0/16, eight IPv6 /64s in
    /// 2001:2:0:100::/56.
    pub fn few() -> Self {
        Self {
            v4: (0..8)
                .map(|i| Ipv4Net::new(Ipv4Addr::new(198, 19, i, 0), 24).expect("valid"))
                .collect(),
            v6: (0..8)
                .map(|i| {
                    Ipv6Net::new(Ipv6Addr::new(0x2001, 2, 0, 0x100 + i, 0, 0, 0, 0), 64)
                        .expect("valid")
                })
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The table as `pop-dataplane route load` lines, next hops taken in turn.
    pub fn route_lines(&self) -> String {
        let mut lines = String::with_capacity(self.len() * 48);
        for (i, prefix) in self.v4.iter().enumerate() {
            let via = SINK_NEXTHOPS_V4[i % SINK_NEXTHOPS_V4.len()];
            let _ = writeln!(lines, "{prefix} via {via} dev {}", ROUTER_B.ifname);
        }
        for (i, prefix) in self.v6.iter().enumerate() {
            let via = SINK_NEXTHOPS_V6[i % SINK_NEXTHOPS_V6.len()];
            let _ = writeln!(lines, "{prefix} via {via} dev {}", ROUTER_B.ifname);
        }
        lines
    }
}

/// The IPv4 benchmark range the generator's destinations lie in, beside the lab's links.
pub const TRAFFIC_V4: &str = "198.19.0.0/16";
/// The IPv6 one.
pub const TRAFFIC_V6: &str = "2001:2:0:8000::/49";

/// The full table as the benchmark routes it: every prefix of `v4` and `v6` (the real table)
/// except any in the benchmark ranges, plus a copy of the structure of the table's densest
/// IPv4 /16 moved into [`TRAFFIC_V4`] (prefix lengths kept) and of its densest IPv6 /32
/// moved into [`TRAFFIC_V6`] (prefix lengths 17 longer).
///
/// Test traffic may only go to the benchmark ranges, where the real table has nothing; a
/// lookup there would be shorter than a lookup of real traffic. The copies give the traffic's
/// destinations the depth and density of the busiest parts of the real table. They do not
/// give its spread: traffic to a few hundred or thousand prefixes finds their part of the
/// table in cache. The lookup micro-benchmark, which sends nothing, covers that with
/// destinations all over the real table. Returns the table and the copied prefixes (the
/// traffic's destinations are drawn from those).
pub fn full_table(v4: &[Ipv4Net], v6: &[Ipv6Net]) -> (Table, Table) {
    let traffic_v4: Ipv4Net = TRAFFIC_V4.parse().expect("valid");
    let traffic_v6: Ipv6Net = TRAFFIC_V6.parse().expect("valid");
    let bench_v4: Ipv4Net = "198.18.0.0/15".parse().expect("valid");
    let bench_v6: Ipv6Net = "2001:2::/48".parse().expect("valid");
    let mut table = Table {
        v4: v4
            .iter()
            .filter(|p| !bench_v4.contains(*p) && !p.contains(&bench_v4))
            .copied()
            .collect(),
        v6: v6
            .iter()
            .filter(|p| !bench_v6.contains(*p) && !p.contains(&bench_v6))
            .copied()
            .collect(),
    };
    let copied = Table {
        v4: transplant_v4(&table.v4, 16, traffic_v4),
        v6: transplant_v6(&table.v6, 32, traffic_v6),
    };
    table.v4.extend(&copied.v4);
    table.v6.extend(&copied.v6);
    // A covering route for each range, so that every address in it is routed (pktgen picks
    // destinations in a range, not from a list).
    if !copied.v4.contains(&traffic_v4) {
        table.v4.push(traffic_v4);
    }
    if !copied.v6.contains(&traffic_v6) {
        table.v6.push(traffic_v6);
    }
    (table, copied)
}

/// Flows per destination (UDP source ports) in every case.
pub const PORTS_PER_DESTINATION: u16 = 4;

/// Traffic to the handful of routes of [`Table::few`]: 32 destinations in each, 4 flows each.
pub fn few_traffic(ipv6: bool, frame_size: usize, rng: &mut Rng) -> Traffic {
    let few = Table::few();
    let prefixes: Vec<IpNet> = if ipv6 {
        few.v6.iter().map(|&p| p.into()).collect()
    } else {
        few.v4.iter().map(|&p| p.into()).collect()
    };
    let destinations = prefixes
        .iter()
        .flat_map(|&p| {
            (0..32)
                .map(|_| random_address(p, &mut *rng))
                .collect::<Vec<_>>()
        })
        .collect();
    let first = prefixes.first().expect("a few");
    let last = prefixes.last().expect("a few");
    Traffic {
        destinations,
        range: (first.network(), last.broadcast()),
        ports: PORTS_PER_DESTINATION,
        frame_size,
    }
}

/// Traffic over the prefixes `full_table` copied into the benchmark ranges: one destination
/// in each (at most 16,384, spread over them), 4 flows each.
pub fn table_traffic(copied: &Table, ipv6: bool, frame_size: usize, rng: &mut Rng) -> Traffic {
    let (destinations, range) = if ipv6 {
        let range: IpNet = TRAFFIC_V6.parse().expect("valid");
        (destinations(&copied.v6, 16_384, rng), range)
    } else {
        let range: IpNet = TRAFFIC_V4.parse().expect("valid");
        (destinations(&copied.v4, 16_384, rng), range)
    };
    Traffic {
        destinations,
        range: (range.network(), range.broadcast()),
        ports: PORTS_PER_DESTINATION,
        frame_size,
    }
}

/// The prefixes of the `/len` region of `table` holding the most prefixes at least that
/// long, moved into `target` (lengths shifted by the difference of the two lengths).
fn transplant_v4(table: &[Ipv4Net], len: u8, target: Ipv4Net) -> Vec<Ipv4Net> {
    let region = |p: &Ipv4Net| u32::from(p.network()) >> (32 - len);
    let densest = densest(table.iter().filter(|p| p.prefix_len() >= len).map(region));
    let shift = target.prefix_len() - len;
    let mut moved: Vec<Ipv4Net> = table
        .iter()
        .filter(|p| p.prefix_len() >= len && Some(region(p)) == densest)
        .filter(|p| p.prefix_len() + shift <= 32)
        .map(|p| {
            let inside = u32::from(p.network()) << len >> len;
            let address = u32::from(target.network()) | (inside >> shift);
            Ipv4Net::new(address.into(), p.prefix_len() + shift).expect("length checked")
        })
        .collect();
    moved.sort();
    moved.dedup();
    moved
}

fn transplant_v6(table: &[Ipv6Net], len: u8, target: Ipv6Net) -> Vec<Ipv6Net> {
    let region = |p: &Ipv6Net| u128::from(p.network()) >> (128 - len);
    let densest = densest(table.iter().filter(|p| p.prefix_len() >= len).map(region));
    let shift = target.prefix_len() - len;
    let mut moved: Vec<Ipv6Net> = table
        .iter()
        .filter(|p| p.prefix_len() >= len && Some(region(p)) == densest)
        .filter(|p| p.prefix_len() + shift <= 128)
        .map(|p| {
            let inside = (u128::from(p.network()) << len) >> len;
            let address = u128::from(target.network()) | (inside >> shift);
            Ipv6Net::new(address.into(), p.prefix_len() + shift).expect("length checked")
        })
        .collect();
    moved.sort();
    moved.dedup();
    moved
}

/// The most frequent of `regions`.
fn densest<T: Ord + Copy>(regions: impl Iterator<Item = T>) -> Option<T> {
    let mut counts = std::collections::BTreeMap::new();
    for region in regions {
        *counts.entry(region).or_insert(0usize) += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(region, count)| (count, std::cmp::Reverse(region)))
        .map(|(region, _)| region)
}

/// A small deterministic generator (SplitMix64), so that runs pick the same destinations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One address inside each of `prefixes` (its host bits random), at most `limit` of them
/// (spread over the list).
pub fn destinations<P: Into<IpNet> + Copy>(
    prefixes: &[P],
    limit: usize,
    rng: &mut Rng,
) -> Vec<IpAddr> {
    let step = prefixes.len().div_ceil(limit.max(1)).max(1);
    prefixes
        .iter()
        .step_by(step)
        .map(|&prefix| random_address(prefix.into(), rng))
        .collect()
}

/// A random address inside `prefix`.
pub fn random_address(prefix: IpNet, rng: &mut Rng) -> IpAddr {
    match prefix {
        IpNet::V4(p) => {
            let host = (rng.next_u64() as u32)
                .checked_shr(u32::from(p.prefix_len()))
                .unwrap_or(0);
            IpAddr::V4((u32::from(p.network()) | host).into())
        }
        IpNet::V6(p) => {
            let random = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            let host = random.checked_shr(u32::from(p.prefix_len())).unwrap_or(0);
            IpAddr::V6((u128::from(p.network()) | host).into())
        }
    }
}

/// What the generator sends in one run.
#[derive(Clone, Debug)]
pub struct Traffic {
    /// The XDP generator's destinations, in turn.
    pub destinations: Vec<IpAddr>,
    /// pktgen's, at random: an address range the routes cover.
    pub range: (IpAddr, IpAddr),
    /// Flows per destination (UDP source ports).
    pub ports: u16,
    /// On the wire, FCS included.
    pub frame_size: usize,
}

impl Traffic {
    pub fn is_ipv6(&self) -> bool {
        self.destinations.first().is_some_and(IpAddr::is_ipv6)
    }

    pub fn flows(&self) -> usize {
        self.destinations.len() * usize::from(self.ports)
    }
}

/// How much the generator sends.
#[derive(Clone, Copy, Debug)]
pub enum Amount {
    /// As fast as it can for this long.
    Seconds(f64),
    /// This many frames, in calls of `burst` frames. A burst of 64 or fewer is taken through
    /// the router and the sink before the next (without threaded NAPI): no frame can be lost
    /// to a full ring, which is how the smoke test checks that every frame arrives.
    Count { frames: u64, burst: u64 },
}

/// What sends the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    /// The kernel's pktgen.
    Pktgen,
    /// `pop-dataplane-bench generate`.
    Xdp,
}

/// One lab with one router under test, a sink, and (optionally) the threads pinned.
pub struct BenchLab {
    pub lab: Lab,
    pub router: Router,
    pub generator: Generator,
    tools: Tools,
    daemon: Option<Daemon>,
    redirect: Option<ToolProcess>,
    sink: ToolProcess,
    threads: Option<Threads>,
    dir: PathBuf,
    load: Option<(String, Duration)>,
    /// The XDP generator sent through an AF_PACKET socket: the kernel refused live frames.
    generator_fell_back: std::sync::atomic::AtomicBool,
}

/// The NAPI threads of the router's ingress port and of the sink.
#[derive(Clone, Copy, Debug)]
struct Threads {
    router: u32,
    sink: u32,
}

/// A `pop-dataplane-bench` process that prints "ready", then answers a line per line of input,
/// and ends at the end of its input.
struct ToolProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ToolProcess {
    fn start(netns: &Netns, binary: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = netns
            .enter(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} {}", binary.display(), args.join(" ")))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let output = child.wait_with_output()?;
            bail!(
                "{} {} did not start: {}",
                binary.display(),
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// Asks for one line of output.
    fn ask(&mut self) -> anyhow::Result<String> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        ensure!(!line.is_empty(), "the process ended");
        Ok(line)
    }
}

impl Drop for ToolProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Counters of one run, all exact.
#[derive(Clone, Copy, Debug, Default)]
pub struct Run {
    /// Frames the generator handed to its interface.
    pub sent: u64,
    pub seconds: f64,
    /// Frames that reached the router's ingress port.
    pub router_rx: u64,
    /// Frames lost on the way in: the router's receive ring was full (the router busy, or
    /// not yet woken).
    pub lost_in: u64,
    /// Frames the router sent out of its egress port.
    pub router_tx: u64,
    /// Frames lost on the way out: the sink's ring was full.
    pub lost_out: u64,
    /// Frames the sink counted.
    pub delivered: u64,
    /// Run time of the router's NAPI thread, when the threads are pinned.
    pub router_cpu_ns: Option<u64>,
}

impl Run {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "sent": self.sent,
            "seconds": self.seconds,
            "router_rx": self.router_rx,
            "lost_in": self.lost_in,
            "router_tx": self.router_tx,
            "lost_out": self.lost_out,
            "delivered": self.delivered,
            "router_cpu_ns": self.router_cpu_ns,
        })
    }

    pub fn offered_pps(&self) -> f64 {
        self.sent as f64 / self.seconds
    }

    pub fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }

    /// The share of sent frames that did not arrive.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.sent.saturating_sub(self.delivered) as f64 / self.sent as f64
    }

    /// Router CPU time per packet it received, in nanoseconds.
    pub fn router_ns_per_packet(&self) -> Option<f64> {
        let cpu = self.router_cpu_ns?;
        (self.router_rx > 0).then(|| cpu as f64 / self.router_rx as f64)
    }

    /// Packets one router core forwards per second at that cost.
    pub fn pps_per_core(&self) -> Option<f64> {
        self.router_ns_per_packet().map(|ns| 1e9 / ns)
    }

    /// The share of the run the router's thread was running.
    pub fn router_busy(&self) -> Option<f64> {
        self.router_cpu_ns.map(|ns| ns as f64 / 1e9 / self.seconds)
    }
}

/// A snapshot of the counters a run is the difference of.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    router_rx: u64,
    lost_in: u64,
    router_tx: u64,
    lost_out: u64,
    delivered: u64,
    router_cpu_ns: Option<u64>,
}

impl BenchLab {
    /// A lab with `router` forwarding `table` (plus its links), a sink on host B, and, with
    /// `pin_threads`, threaded NAPI placed as the module says.
    pub fn new(
        prefix: &str,
        tools: &Tools,
        router: Router,
        table: &Table,
        pin_threads: bool,
    ) -> anyhow::Result<Self> {
        let lab = Lab::with(
            prefix,
            LabOptions {
                ipv6: true,
                second_link: false,
            },
        )?;
        let dir = lab.dir().join("bench");
        fs::create_dir_all(&dir)?;
        // The sink's next hops: static neighbours, so that nothing waits for ARP or ND.
        for via in SINK_NEXTHOPS_V4.iter().chain(&SINK_NEXTHOPS_V6) {
            lab.router.ip(&[
                "neigh",
                "replace",
                via,
                "lladdr",
                HOST_B.mac,
                "dev",
                ROUTER_B.ifname,
                "nud",
                "permanent",
            ])?;
        }
        // Receive work on the router's ingress runs in NAPI, which a veth has with XDP or GRO.
        lab.router
            .exec("ethtool", &["-K", ROUTER_A.ifname, "gro", "on"])?;
        let sink = ToolProcess::start(
            &lab.b,
            &tools.bench,
            &[
                "sink",
                "--dev",
                HOST_B.ifname,
                "--port",
                &SINK_PORT.to_string(),
            ],
        )?;
        let generator = if pktgen::available(&lab.a) {
            Generator::Pktgen
        } else {
            Generator::Xdp
        };
        let mut bench = Self {
            lab,
            router,
            generator,
            tools: tools.clone(),
            daemon: None,
            redirect: None,
            sink,
            threads: None,
            dir,
            load: None,
            generator_fell_back: std::sync::atomic::AtomicBool::new(false),
        };
        match router {
            Router::Kernel => bench.route_in_kernel(table)?,
            Router::FibForward => {
                bench.route_in_kernel(table)?;
                bench.redirect = Some(ToolProcess::start(
                    &bench.lab.router,
                    &tools.bench,
                    &[
                        "fib-forward",
                        "--dev",
                        ROUTER_A.ifname,
                        "--dev",
                        ROUTER_B.ifname,
                    ],
                )?);
            }
            Router::Ceiling => {
                bench.redirect = Some(ToolProcess::start(
                    &bench.lab.router,
                    &tools.bench,
                    &[
                        "redirect",
                        "--in",
                        ROUTER_A.ifname,
                        "--out",
                        ROUTER_B.ifname,
                    ],
                )?);
            }
            Router::Dataplane
            | Router::DataplaneLpmTrie
            | Router::DataplaneFiltered
            | Router::DataplaneUrpf
            | Router::DataplaneFlows
            | Router::DataplaneFlood
            | Router::DataplaneBlackhole
            | Router::DataplaneSampled
            | Router::DataplaneSampledAll => bench.start_dataplane(table)?,
        }
        if pin_threads {
            bench.threads = Some(bench.pin_threads()?);
        }
        Ok(bench)
    }

    fn route_in_kernel(&self, table: &Table) -> anyhow::Result<()> {
        self.lab.set_kernel_forwarding(true)?;
        let batch = self.dir.join("kernel-routes");
        let mut lines = String::new();
        for (i, prefix) in table.v4.iter().enumerate() {
            let via = SINK_NEXTHOPS_V4[i % SINK_NEXTHOPS_V4.len()];
            let _ = writeln!(
                lines,
                "route add {prefix} via {via} dev {}",
                ROUTER_B.ifname
            );
        }
        for (i, prefix) in table.v6.iter().enumerate() {
            let via = SINK_NEXTHOPS_V6[i % SINK_NEXTHOPS_V6.len()];
            let _ = writeln!(
                lines,
                "route add {prefix} via {via} dev {}",
                ROUTER_B.ifname
            );
        }
        fs::write(&batch, lines)?;
        self.lab
            .router
            .ip(&["-batch", &batch.to_string_lossy()])
            .context("adding the routes to the kernel")?;
        Ok(())
    }

    fn start_dataplane(&mut self, table: &Table) -> anyhow::Result<()> {
        let fib = if self.router == Router::DataplaneLpmTrie {
            "lpm-trie"
        } else {
            "compiled"
        };
        let daemon = self.lab.start_dataplane_with(
            &self.tools.dataplane,
            &self.router.config(&self.lab),
            "native",
            &["--fib", fib],
        )?;
        self.daemon = Some(daemon);
        if !table.is_empty() {
            self.load = Some(self.load_routes(table)?);
        }
        Ok(())
    }

    /// Whether the XDP generator had to send through an AF_PACKET socket (the kernel refused
    /// live frames): far fewer frames a second, each an skb the router's veth must turn
    /// into an XDP frame.
    pub fn generator_fell_back(&self) -> bool {
        self.generator_fell_back
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What loading the lab's table took (CLI output, wall time), when it had one.
    pub fn load(&self) -> Option<&(String, Duration)> {
        self.load.as_ref()
    }

    /// `pop-dataplane sflow show --json` of the router.
    pub fn sflow(&self) -> anyhow::Result<serde_json::Value> {
        let out = self
            .lab
            .cli(&self.tools.dataplane, &["sflow", "show", "--json"])?;
        serde_json::from_str(&out).context("parsing sflow show --json")
    }

    /// The resident memory of the router's daemon, in bytes.
    pub fn daemon_rss(&self) -> anyhow::Result<u64> {
        let pid = self.status()?["pid"]
            .as_u64()
            .context("status --json has no pid")?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")?;
        Ok(kib * 1024)
    }

    /// `pop-dataplane status --json` of the router.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let out = self.lab.cli(&self.tools.dataplane, &["status", "--json"])?;
        serde_json::from_str(&out).context("parsing status --json")
    }

    /// `pop-dataplane route load` of `table` into the running daemon: what it printed, and
    /// how long the command took.
    pub fn load_routes(&self, table: &Table) -> anyhow::Result<(String, Duration)> {
        let file = self.dir.join("routes");
        fs::write(&file, table.route_lines())?;
        let started = std::time::Instant::now();
        let output = self
            .lab
            .cli(
                &self.tools.dataplane,
                &["route", "load", &file.to_string_lossy()],
            )
            .context("loading the benchmark's routes")?;
        Ok((output, started.elapsed()))
    }

    /// Adds `count` VRFs, `v0`, `v1`, ..., to the router's config and reloads it.
    pub fn add_vrfs(&self, count: usize) -> anyhow::Result<()> {
        let mut config = self.router.config(&self.lab);
        for i in 0..count {
            let _ = write!(config, "\n[[vrf]]\nname = \"v{i}\"\n");
        }
        fs::write(self.lab.config_path(), config)?;
        self.lab
            .cli(&self.tools.dataplane, &["reload"])
            .context("reloading with the VRFs")
            .map(drop)
    }

    /// `pop-dataplane route load` of `prefixes` into VRF `vrf`, through the sink's next hops
    /// in turn; how long the command took.
    pub fn load_vrf_routes(&self, vrf: &str, prefixes: &[Ipv4Net]) -> anyhow::Result<Duration> {
        let mut lines = String::with_capacity(prefixes.len() * 56);
        for (i, prefix) in prefixes.iter().enumerate() {
            let via = SINK_NEXTHOPS_V4[i % SINK_NEXTHOPS_V4.len()];
            let _ = writeln!(
                lines,
                "vrf {vrf} {prefix} via {via} dev {}",
                ROUTER_B.ifname
            );
        }
        let file = self.dir.join(format!("routes-{vrf}"));
        fs::write(&file, lines)?;
        let started = std::time::Instant::now();
        self.lab
            .cli(
                &self.tools.dataplane,
                &["route", "load", &file.to_string_lossy()],
            )
            .with_context(|| format!("loading VRF {vrf}'s routes"))?;
        Ok(started.elapsed())
    }

    /// `pop-dataplane route flush`.
    pub fn flush_routes(&self) -> anyhow::Result<()> {
        self.lab
            .cli(&self.tools.dataplane, &["route", "flush"])
            .map(drop)
    }

    /// Turns on threaded NAPI on the router's ingress and the sink's port, and places the
    /// threads: the router's alone on the last CPU, the sink's on CPU 0 at real-time priority.
    fn pin_threads(&self) -> anyhow::Result<Threads> {
        let cpus = online_cpus()?;
        ensure!(
            cpus >= 2,
            "the benchmark needs two CPUs: one for the router, one for the generator and sink"
        );
        let router = threaded_napi(&self.lab.router, ROUTER_A.ifname)?;
        let sink = threaded_napi(&self.lab.b, HOST_B.ifname)?;
        set_affinity(router, cpus - 1)?;
        set_affinity(sink, 0)?;
        set_realtime(sink)?;
        Ok(Threads { router, sink })
    }

    /// The counters now.
    fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let (router_rx, lost_in) = link_counters(&self.lab.router, ROUTER_A.ifname, "rx")?;
        let (router_tx, lost_out) = link_counters(&self.lab.router, ROUTER_B.ifname, "tx")?;
        let sink: serde_json::Value =
            serde_json::from_str(&self.sink.ask()?).context("the sink's counters")?;
        let delivered = sink["packets"].as_u64().context("sink packets")?;
        let router_cpu_ns = match self.threads {
            Some(threads) => Some(thread_cpu_ns(threads.router)?),
            None => None,
        };
        Ok(Snapshot {
            router_rx,
            lost_in,
            router_tx,
            lost_out,
            delivered,
            router_cpu_ns,
        })
    }

    /// Sends `traffic` through the router and counts what arrives.
    /// The router's XDP program's own cost per packet (ns), from the kernel's BPF run-time
    /// statistics while `traffic` flows: run time over run count of the program on the
    /// ingress port, the statistics' own clock reads included. They are on only for this
    /// measurement, since they cost every program run.
    pub fn program_ns(&mut self, traffic: &Traffic, amount: Amount) -> anyhow::Result<f64> {
        let id = self.ingress_program()?;
        let _stats = BpfStats::enable()?;
        let before = program_stats(id)?;
        self.measure(traffic, amount)?;
        let after = program_stats(id)?;
        ensure!(after.1 > before.1, "program {id} ran no packet");
        Ok((after.0 - before.0) as f64 / (after.1 - before.1) as f64)
    }

    /// The id of the XDP program on the router's ingress port.
    fn ingress_program(&self) -> anyhow::Result<u64> {
        let out = self
            .lab
            .router
            .ip(&["-j", "-d", "link", "show", "dev", ROUTER_A.ifname])?;
        let links: serde_json::Value = serde_json::from_str(&out).context("ip -j link")?;
        links[0]["xdp"]["prog"]["id"]
            .as_u64()
            .with_context(|| format!("no XDP program on {}", ROUTER_A.ifname))
    }

    pub fn measure(&mut self, traffic: &Traffic, amount: Amount) -> anyhow::Result<Run> {
        if let Some(threads) = self.threads {
            // A NAPI thread is re-created when its port's XDP program changes; make sure
            // ours still exist.
            for tid in [threads.router, threads.sink] {
                ensure!(
                    Path::new(&format!("/proc/{tid}")).exists(),
                    "NAPI thread {tid} is gone"
                );
            }
        }
        let before = self.snapshot()?;
        let (sent, seconds) = self.generate(traffic, amount)?;
        // Let the rings drain.
        std::thread::sleep(Duration::from_millis(200));
        let after = self.snapshot()?;
        Ok(Run {
            sent,
            seconds,
            router_rx: after.router_rx - before.router_rx,
            lost_in: after.lost_in - before.lost_in,
            router_tx: after.router_tx - before.router_tx,
            lost_out: after.lost_out - before.lost_out,
            delivered: after.delivered - before.delivered,
            router_cpu_ns: after
                .router_cpu_ns
                .zip(before.router_cpu_ns)
                .map(|(after, before)| after - before),
        })
    }

    /// Runs the generator; returns frames sent and seconds taken.
    fn generate(&self, traffic: &Traffic, amount: Amount) -> anyhow::Result<(u64, f64)> {
        if self.generator == Generator::Pktgen {
            return self.pktgen(traffic, amount);
        }
        let destinations = self.dir.join("destinations");
        let text: String = traffic
            .destinations
            .iter()
            .map(|d| format!("{d}\n"))
            .collect();
        fs::write(&destinations, text)?;
        let src = if traffic.is_ipv6() {
            HOST_A.ipv6
        } else {
            HOST_A.ipv4
        };
        let mut args: Vec<String> = [
            "generate",
            "--dev",
            HOST_A.ifname,
            "--src",
            src,
            "--src-mac",
            HOST_A.mac,
            "--dst-mac",
            ROUTER_A.mac,
            "--dst-file",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(destinations.to_string_lossy().into_owned());
        args.extend([
            "--ports".to_owned(),
            traffic.ports.to_string(),
            "--dst-port".to_owned(),
            SINK_PORT.to_string(),
            "--size".to_owned(),
            traffic.frame_size.to_string(),
            "--cpu".to_owned(),
            "0".to_owned(),
        ]);
        match amount {
            Amount::Seconds(seconds) => args.extend(["--seconds".to_owned(), seconds.to_string()]),
            Amount::Count { frames, burst } => args.extend([
                "--count".to_owned(),
                frames.to_string(),
                "--burst".to_owned(),
                burst.to_string(),
            ]),
        }
        let output =
            run(self.lab.a.enter(&self.tools.bench).args(&args)).context("the generator")?;
        let sent: serde_json::Value =
            serde_json::from_str(output.trim()).context("the generator's output")?;
        if sent["via"] == "af_packet" {
            self.generator_fell_back
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok((
            sent["packets"].as_u64().context("packets")?,
            sent["seconds"].as_f64().context("seconds")?,
        ))
    }

    fn pktgen(&self, traffic: &Traffic, amount: Amount) -> anyhow::Result<(u64, f64)> {
        let src = if traffic.is_ipv6() {
            HOST_A.ipv6
        } else {
            HOST_A.ipv4
        };
        let (count, duration) = match amount {
            Amount::Seconds(seconds) => (0, Some(Duration::from_secs_f64(seconds))),
            Amount::Count { frames, .. } => (frames, None),
        };
        let job = pktgen::Job {
            dev: HOST_A.ifname.to_owned(),
            count,
            frame_size: traffic.frame_size,
            dst_mac: ROUTER_A.mac.to_owned(),
            src: src.parse().expect("valid"),
            dst_min: traffic.range.0,
            dst_max: traffic.range.1,
            udp_src_min: 1024,
            udp_src_max: 1024 + traffic.ports.max(1) - 1,
            udp_dst: SINK_PORT,
        };
        pktgen::send(&self.lab.a, &job, duration)
    }

    /// The lookup micro-benchmark on this lab's router: the program's cost per packet over
    /// `destinations` (JSON from `pop-dataplane-bench lookup`).
    pub fn lookup_cost(&self, destinations: &[IpAddr]) -> anyhow::Result<serde_json::Value> {
        let cpus = online_cpus()?;
        self.lookup_cost_on(destinations, cpus - 1)
    }

    /// [`BenchLab::lookup_cost`] on CPU `cpu`.
    pub fn lookup_cost_on(
        &self,
        destinations: &[IpAddr],
        cpu: usize,
    ) -> anyhow::Result<serde_json::Value> {
        ensure!(
            self.router.is_dataplane() || self.router == Router::FibForward,
            "lookup needs pop-dataplane or the kernel-FIB XDP router"
        );
        let ipv6 = destinations.first().is_some_and(IpAddr::is_ipv6);
        let file = self.dir.join(format!(
            "lookup-{}-cpu{cpu}",
            if ipv6 { "v6" } else { "v4" }
        ));
        let text: String = destinations.iter().map(|d| format!("{d}\n")).collect();
        fs::write(&file, text)?;
        let (src, size) = if ipv6 {
            (HOST_A.ipv6, "78")
        } else {
            (HOST_A.ipv4, "64")
        };
        let mut lookup = self.lab.router.enter(&self.tools.bench);
        lookup.arg("lookup");
        if self.router == Router::FibForward {
            lookup.args(["--fib-forward", ROUTER_A.ifname, ROUTER_B.ifname]);
        } else {
            lookup.arg("--pin-dir").arg(self.lab.pin_dir());
        }
        let output = run(lookup
            .args([
                "--in",
                ROUTER_A.ifname,
                "--src",
                src,
                "--src-mac",
                HOST_A.mac,
                "--dst-mac",
                ROUTER_A.mac,
                "--dst-file",
            ])
            .arg(&file)
            .args(["--size", size, "--cpu", &cpu.to_string()]))
        .context("pop-dataplane-bench lookup")?;
        serde_json::from_str(output.trim()).context("lookup's output")
    }

    /// `pop-dataplane stats --json` of the router.
    pub fn stats(&self) -> anyhow::Result<serde_json::Value> {
        self.lab.stats(&self.tools.dataplane)
    }
}

/// Route churn on a running dataplane: batches of route replacements pushed with
/// `pop-dataplane route load`, one after another, each prefix moving between two next hops.
pub struct Churn {
    binary: PathBuf,
    run_dir: PathBuf,
    /// Batch files and their routes: every batch through the first next hop, then every one
    /// through the second.
    files: Vec<(PathBuf, u64)>,
}

impl BenchLab {
    /// Churn of `prefixes` (IPv4) in batches of `batch` routes, between the sink's first two
    /// next hops.
    pub fn churn(&self, prefixes: &[Ipv4Net], batch: usize) -> anyhow::Result<Churn> {
        ensure!(batch > 0 && !prefixes.is_empty(), "nothing to churn");
        let mut files = Vec::new();
        for (pass, via) in SINK_NEXTHOPS_V4[..2].iter().enumerate() {
            for (chunk, routes) in prefixes.chunks(batch).enumerate() {
                let path = self.dir.join(format!("churn-{pass}-{chunk}"));
                let text: String = routes
                    .iter()
                    .map(|p| format!("{p} via {via} dev {}\n", ROUTER_B.ifname))
                    .collect();
                fs::write(&path, text)?;
                files.push((path, routes.len() as u64));
            }
        }
        Ok(Churn {
            binary: self.tools.dataplane.clone(),
            run_dir: self.lab.run_dir(),
            files,
        })
    }
}

impl Churn {
    fn push(&self, file: &Path) -> anyhow::Result<()> {
        run(Command::new(&self.binary)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(["route", "load"])
            .arg(file))
        .map(drop)
        .context("pushing a churn batch")
    }

    /// Moves every prefix to the first next hop once (untimed, so that every change counted
    /// later is a real one), then pushes batches, alternating next hops, until `duration`
    /// has passed. Returns the route changes made and the seconds they took.
    pub fn run(&self, duration: Duration) -> anyhow::Result<(u64, f64)> {
        let half = self.files.len() / 2;
        for (file, _) in &self.files[..half] {
            self.push(file)?;
        }
        let started = std::time::Instant::now();
        let mut changes = 0u64;
        for (file, routes) in self.files[half..].iter().chain(&self.files[..half]).cycle() {
            if started.elapsed() >= duration {
                break;
            }
            self.push(file)?;
            changes += routes;
        }
        Ok((changes, started.elapsed().as_secs_f64()))
    }
}

/// (packets, dropped) of `ifname` in direction `dir` ("rx" or "tx").
fn link_counters(netns: &Netns, ifname: &str, dir: &str) -> anyhow::Result<(u64, u64)> {
    let json = netns.ip(&["-s", "-j", "link", "show", "dev", ifname])?;
    let links: serde_json::Value = serde_json::from_str(&json).context("ip -j -s link")?;
    let stats = &links[0]["stats64"][dir];
    Ok((
        stats["packets"].as_u64().context("packets")?,
        stats["dropped"].as_u64().context("dropped")?,
    ))
}

/// Turns on threaded NAPI on `ifname` and returns its (one) NAPI thread's id.
fn threaded_napi(netns: &Netns, ifname: &str) -> anyhow::Result<u32> {
    let before = napi_threads()?;
    netns
        .exec(
            "sh",
            &["-c", &format!("echo 1 > /sys/class/net/{ifname}/threaded")],
        )
        .with_context(|| format!("threaded NAPI on {ifname}"))?;
    let after = napi_threads()?;
    let new: Vec<u32> = after.difference(&before).copied().collect();
    match new.as_slice() {
        [tid] => Ok(*tid),
        _ => bail!("expected one new NAPI thread for {ifname}, found {new:?}"),
    }
}

/// Thread ids of the kernel's NAPI threads (`napi/<ifname>-<id>`).
fn napi_threads() -> anyhow::Result<BTreeSet<u32>> {
    let mut threads = BTreeSet::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(comm) = fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if comm.starts_with("napi/") {
            threads.insert(pid);
        }
    }
    Ok(threads)
}

fn online_cpus() -> anyhow::Result<usize> {
    Ok(std::thread::available_parallelism()?.get())
}

fn set_affinity(tid: u32, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays within it for cpu < CPU_SETSIZE.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid as i32, size_of::<libc::cpu_set_t>(), &set)
    };
    ensure!(
        result == 0,
        "placing thread {tid} on CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn set_realtime(tid: u32) -> anyhow::Result<()> {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: a valid sched_param.
    let result = unsafe { libc::sched_setscheduler(tid as i32, libc::SCHED_FIFO, &param) };
    ensure!(
        result == 0,
        "SCHED_FIFO for thread {tid}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Nanoseconds thread `tid` has run (the scheduler's clock, /proc/TID/schedstat).
fn thread_cpu_ns(tid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{tid}/schedstat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .with_context(|| format!("{path}: {text:?}"))
}

/// `kernel.bpf_stats_enabled` on while this lives, as it was after.
struct BpfStats {
    before: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> anyhow::Result<Self> {
        let before =
            fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
        fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        Ok(Self { before })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, self.before.trim());
    }
}

/// A program's (run time in ns, runs) so far, from `bpftool`: zero until it ran with the
/// statistics on.
fn program_stats(id: u64) -> anyhow::Result<(u64, u64)> {
    let out = run(Command::new("bpftool").args(["-j", "prog", "show", "id", &id.to_string()]))
        .context("bpftool prog show")?;
    let info: serde_json::Value = serde_json::from_str(&out).context("bpftool's output")?;
    Ok((
        info["run_time_ns"].as_u64().unwrap_or(0),
        info["run_cnt"].as_u64().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn the_densest_region_is_copied_into_the_benchmark_range() {
        let real_v4 = [
            v4("44.0.0.0/8"),
            v4("45.1.0.0/16"),
            v4("45.1.2.0/24"),
            v4("45.1.3.128/25"),
            v4("45.2.0.0/24"),
            v4("198.18.0.0/15"),
            v4("198.19.5.0/24"),
        ];
        let real_v6 = [
            v6("2a00:1::/32"),
            v6("2a00:1:2::/48"),
            v6("2a00:1:3::/48"),
            v6("2a00:2::/48"),
            v6("2001:2::/48"),
        ];
        let (table, copied) = full_table(&real_v4, &real_v6);
        // 45.1.0.0/16 holds three prefixes of /16 or longer: the densest. Copied with their
        // lengths, bits below the /16 kept.
        assert_eq!(
            copied.v4,
            [
                v4("198.19.0.0/16"),
                v4("198.19.2.0/24"),
                v4("198.19.3.128/25")
            ]
        );
        // 2a00:1::/32 is the densest /32; into a /49, lengths grow by 17.
        assert_eq!(
            copied.v6,
            [
                v6("2001:2:0:8000::/49"),
                v6("2001:2:0:8001::/65"),
                v6("2001:2:0:8001:8000::/65"),
            ]
        );
        // The real table's prefixes in or over the benchmark ranges are left out; the copies
        // and a covering route for each range go in.
        assert!(!table.v4.contains(&v4("198.18.0.0/15")));
        assert!(!table.v4.contains(&v4("198.19.5.0/24")));
        assert!(!table.v6.contains(&v6("2001:2::/48")));
        assert!(table.v4.contains(&v4("44.0.0.0/8")));
        // Once each: the copy of the region's own /16 (or /32) is the covering route.
        assert_eq!(table.v4.len(), 5 + 3);
        assert_eq!(table.v6.len(), 4 + 3);
        assert!(table.v4.contains(&v4(TRAFFIC_V4)));
        assert!(table.v6.contains(&v6(TRAFFIC_V6)));
    }

    #[test]
    fn destinations_lie_inside_their_prefixes() {
        let mut rng = Rng::new(7);
        let prefixes = [
            v4("198.19.1.0/24"),
            v4("198.19.2.128/25"),
            v4("198.19.3.7/32"),
        ];
        for _ in 0..100 {
            for (prefix, addr) in prefixes.iter().zip(destinations(&prefixes, 10, &mut rng)) {
                assert!(
                    IpNet::from(*prefix).contains(&addr),
                    "{addr} outside {prefix}"
                );
            }
        }
        let spread = destinations(&prefixes, 2, &mut rng);
        assert_eq!(spread.len(), 2, "at most the limit, spread over the list");
        let six = [v6("2001:2:0:8000::/49"), v6("::/0")];
        for addr in destinations(&six, 10, &mut rng) {
            assert!(addr.is_ipv6());
        }
        let traffic = few_traffic(true, 78, &mut rng);
        assert_eq!(traffic.flows(), 8 * 32 * 4);
        assert!(traffic.is_ipv6());
        assert!(
            traffic
                .destinations
                .iter()
                .all(|d| Table::few().v6.iter().any(|p| IpNet::from(*p).contains(d)))
        );
    }

    #[test]
    fn run_figures_follow_from_the_counts() {
        let run = Run {
            sent: 1_000,
            seconds: 0.5,
            router_rx: 900,
            lost_in: 100,
            router_tx: 900,
            lost_out: 0,
            delivered: 800,
            router_cpu_ns: Some(90_000),
        };
        assert_eq!(run.offered_pps(), 2_000.0);
        assert_eq!(run.delivered_pps(), 1_600.0);
        assert!((run.loss() - 0.2).abs() < 1e-12);
        assert_eq!(run.router_ns_per_packet(), Some(100.0));
        assert_eq!(run.pps_per_core(), Some(1e7));
        assert!((run.router_busy().unwrap() - 0.00018).abs() < 1e-12);
        assert_eq!(Run::default().loss(), 0.0);
        assert_eq!(Run::default().router_ns_per_packet(), None);
    }
}
