//! The soak run (`cargo xtask soak`, and two minutes of it in the suite): the full table
//! loaded, traffic at the generator's full rate through the router for the whole time, and
//! meanwhile route churn, link flaps on the egress port and config reloads. At the end:
//!
//! - every frame the generator sent is accounted for: delivered to the sink, lost in a veth
//!   ring (counted by the kernel), or counted by the XDP program as handed to the kernel or
//!   dropped, with its reason;
//! - the daemon's memory did not grow (resident size, first third against last third);
//! - the daemon's routes equal the expected table, prefix by prefix and next hop by next hop,
//!   and the loaded program finds them.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use ipnet::{IpNet, Ipv4Net};
use serde::Serialize;
use serde_json::Value;

use crate::{
    bench::{
        Amount, BenchLab, Rng, Router, SINK_NEXTHOPS_V4, SINK_NEXTHOPS_V6, Tools, full_table,
        random_address, table_traffic,
    },
    fulltable,
    lab::{HOST_A, HOST_B, ROUTER_A, ROUTER_B, interface},
    netns::run,
};

pub struct Options {
    pub duration: Duration,
    /// Traffic is sent in chunks of this long, alternating IPv4 and IPv6.
    pub chunk: Duration,
    /// Routes moved between two next hops, in batches of `churn_batch`.
    pub churn_routes: usize,
    pub churn_batch: usize,
    /// The egress port goes down for `flap_down` every `flap_every`.
    pub flap_every: Duration,
    pub flap_down: Duration,
    pub reload_every: Duration,
}

impl Options {
    pub fn minutes(minutes: f64) -> Self {
        Self {
            duration: Duration::from_secs_f64(minutes * 60.0),
            chunk: Duration::from_secs(5),
            churn_routes: 20_000,
            churn_batch: 2_000,
            flap_every: Duration::from_secs(25),
            flap_down: Duration::from_millis(300),
            reload_every: Duration::from_secs(20),
        }
    }
}

/// What a soak run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub seconds: f64,
    pub routes: u64,
    pub sent: u64,
    pub delivered: u64,
    /// Lost on the way into the router: the generator's port could not hand them to the
    /// router's (its ring full): `a0.tx_xdp_xmit_errors`.
    pub lost_before_router: u64,
    /// Redirected by the program but not sent: the egress port down, before the daemon took
    /// its next hops out (counted by the veth driver as `ra.rx_drops`), or its peer's ring
    /// full (`rb.tx_xdp_xmit_errors`).
    pub lost_after_router: u64,
    /// Counted by the XDP program on the ingress port, by reason (generator frames only).
    pub to_kernel: BTreeMap<String, u64>,
    pub dropped: BTreeMap<String, u64>,
    /// Frames the generator sent that neither reached the program nor were counted lost on
    /// the way (sent - lost before - forwarded - handed to the kernel - dropped), and frames
    /// the program forwarded that were neither delivered nor counted lost after it: both
    /// must be 0.
    pub unaccounted_in: i64,
    pub unaccounted_out: i64,
    /// The veth driver's own counters on the router's ports (`ethtool -S`), what moved.
    pub veth: BTreeMap<String, u64>,
    pub offered_pps: f64,
    pub delivered_pps: f64,
    pub route_changes: u64,
    pub route_changes_per_second: f64,
    pub flaps: u64,
    pub reloads: u64,
    /// Resident size of the daemon (KiB) just after each reload, the largest seen at any
    /// time, and the growth from the first half of the reloads to the second (the first
    /// half's largest against the second half's median).
    pub rss_kib_after_reloads: Vec<u64>,
    pub rss_kib_max: u64,
    pub rss_growth: f64,
    /// The daemon's CLI routes against the expected table.
    pub routes_checked: u64,
    pub routes_wrong: u64,
    /// Addresses traced through the loaded program, and how many found the wrong route.
    pub traced: u64,
    pub traced_wrong: u64,
}

impl Report {
    /// Whether every check held.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.unaccounted_in != 0 || self.unaccounted_out != 0 {
            problems.push(format!(
                "{} + {} frames unaccounted for (sent {}, delivered {}, lost {} + {}, to \
                 kernel {:?}, dropped {:?})",
                self.unaccounted_in,
                self.unaccounted_out,
                self.sent,
                self.delivered,
                self.lost_before_router,
                self.lost_after_router,
                self.to_kernel,
                self.dropped
            ));
        }
        if self.rss_growth > 0.10 {
            problems.push(format!(
                "the daemon's memory grew by {:.1}% from the first half of the reloads to \
                 the second ({:?} KiB)",
                self.rss_growth * 100.0,
                self.rss_kib_after_reloads
            ));
        }
        if self.routes_wrong != 0 || self.routes_checked != self.routes {
            problems.push(format!(
                "{} of {} routes differ from the expected table ({} checked)",
                self.routes_wrong, self.routes, self.routes_checked
            ));
        }
        if self.traced_wrong != 0 {
            problems.push(format!(
                "{} of {} traced addresses found the wrong route",
                self.traced_wrong, self.traced
            ));
        }
        if self.delivered == 0 || self.route_changes == 0 || self.flaps == 0 || self.reloads == 0 {
            problems.push("something did not run at all".to_owned());
        }
        problems
    }
}

/// Reasons a frame of the host's own (router solicitations, MLD) is handed to the kernel
/// for: never the generator's unicast UDP.
/// The generator sends unicast UDP to the traffic ranges only, so these are the hosts'.
const HOST_CHATTER: [&str; 5] = [
    "link_multicast",
    "non_ip",
    "ip_multicast",
    "link_local",
    "local",
];

pub fn soak(
    tools: &Tools,
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Report> {
    let (real_v4, real_v6) = fulltable::read()?;
    let (table, copied) = full_table(&real_v4, &real_v6);
    let mut lab = BenchLab::new("pdsk", tools, Router::Dataplane, &table, false)?;
    // Flaps flush the router's neighbour entries (static ones too): the sink answers for
    // every next hop, so that they resolve again as real neighbours would. And the router
    // keeps its IPv6 addresses over a flap, as a router should.
    for via in SINK_NEXTHOPS_V4.iter().skip(1) {
        lab.lab
            .b
            .ip(&["addr", "add", &format!("{via}/24"), "dev", HOST_B.ifname])?;
    }
    for via in SINK_NEXTHOPS_V6.iter().skip(1) {
        lab.lab.b.ip(&[
            "addr",
            "add",
            &format!("{via}/64"),
            "dev",
            HOST_B.ifname,
            "nodad",
        ])?;
    }
    for key in ["all", "default", ROUTER_B.ifname] {
        lab.lab
            .router
            .sysctl(&format!("net.ipv6.conf.{key}.keep_addr_on_down"), "1")?;
    }
    if let Some((output, took)) = lab.load() {
        progress(&format!("full table: {} ({took:.2?})", output.trim()));
    }
    let mut rng = Rng::new(11);
    let traffic = [
        table_traffic(&copied, false, 64, &mut rng),
        table_traffic(&copied, true, 78, &mut rng),
    ];

    // The churned routes: copies in the traffic's range, so that traffic crosses them.
    let churned: Vec<Ipv4Net> = copied
        .v4
        .iter()
        .take(options.churn_routes)
        .copied()
        .collect();
    let churn = lab.churn(&churned, options.churn_batch)?;
    let stop = Arc::new(AtomicBool::new(false));
    let binary = tools.dataplane.clone();
    let run_dir = lab.lab.run_dir();
    let router_ns = lab.lab.router.name().to_owned();

    let before = ingress_counters(&lab)?;
    let veth_before = veth_counters(&lab)?;
    let pid = lab.status()?["pid"].as_u64().context("daemon pid")?;
    let started = Instant::now();
    let churn_thread = {
        let duration = options.duration;
        thread::spawn(move || churn.run(duration))
    };
    let flaps = Arc::new(AtomicU64::new(0));
    // The daemon's resident size just after each reload: the same point of its work each
    // time (between reloads it holds a table being rebuilt, or not).
    let rss_after_reload = Arc::new(Mutex::new(Vec::new()));
    let reloads = Arc::new(AtomicU64::new(0));
    let disturb_thread = {
        let (stop, flaps, reloads) = (stop.clone(), flaps.clone(), reloads.clone());
        let rss_after_reload = rss_after_reload.clone();
        let (flap_every, flap_down, reload_every) =
            (options.flap_every, options.flap_down, options.reload_every);
        thread::spawn(move || -> anyhow::Result<()> {
            let (mut next_flap, mut next_reload) = (flap_every, reload_every);
            let clock = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                let now = clock.elapsed();
                if now >= next_flap {
                    for state in ["down", "up"] {
                        run(std::process::Command::new("ip").args([
                            "-n",
                            &router_ns,
                            "link",
                            "set",
                            ROUTER_B.ifname,
                            state,
                        ]))?;
                        if state == "down" {
                            thread::sleep(flap_down);
                        }
                    }
                    flaps.fetch_add(1, Ordering::SeqCst);
                    next_flap += flap_every;
                }
                if now >= next_reload {
                    run(std::process::Command::new(&binary)
                        .arg("--run-dir")
                        .arg(&run_dir)
                        .arg("reload"))
                    .context("reload")?;
                    reloads.fetch_add(1, Ordering::SeqCst);
                    rss_after_reload
                        .lock()
                        .expect("not poisoned")
                        .push(rss_kib(pid)?);
                    next_reload += reload_every;
                }
                thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        })
    };

    let mut report = Report {
        routes: (table.len()) as u64,
        ..Report::default()
    };
    let mut rss = Vec::new();
    let mut chunk = 0;
    while started.elapsed() < options.duration {
        let left = options.duration.saturating_sub(started.elapsed());
        let seconds = options.chunk.min(left).as_secs_f64().max(0.5);
        let run = lab.measure(&traffic[chunk % 2], Amount::Seconds(seconds))?;
        report.sent += run.sent;
        report.delivered += run.delivered;
        rss.push(rss_kib(pid)?);
        chunk += 1;
        progress(&format!(
            "{:>4.0} s: {:.2} Mpps offered, {:.2} delivered; {} flaps, {} reloads; daemon {} KiB",
            started.elapsed().as_secs_f64(),
            run.offered_pps() / 1e6,
            run.delivered_pps() / 1e6,
            flaps.load(Ordering::SeqCst),
            reloads.load(Ordering::SeqCst),
            rss.last().copied().unwrap_or(0)
        ));
    }
    stop.store(true, Ordering::SeqCst);
    let (changes, churn_seconds) = churn_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the churn thread panicked"))??;
    disturb_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the flap and reload thread panicked"))??;
    report.seconds = started.elapsed().as_secs_f64();
    report.route_changes = changes;
    report.route_changes_per_second = changes as f64 / churn_seconds.max(1e-9);
    report.flaps = flaps.load(Ordering::SeqCst);
    report.reloads = reloads.load(Ordering::SeqCst);
    report.offered_pps = report.sent as f64 / report.seconds;
    report.delivered_pps = report.delivered as f64 / report.seconds;

    // The account: every frame the generator sent, somewhere.
    let after = ingress_counters(&lab)?;
    for (name, value) in veth_counters(&lab)? {
        let delta = value - veth_before.get(&name).copied().unwrap_or(0);
        if delta != 0 {
            report.veth.insert(name, delta);
        }
    }
    let delta = |name: &str, map: &str| -> u64 {
        after[map][name].as_u64().unwrap_or(0) - before[map][name].as_u64().unwrap_or(0)
    };
    for (map, out) in [
        ("to_kernel", &mut report.to_kernel),
        ("dropped", &mut report.dropped),
    ] {
        for name in after[map].as_object().context("reasons")?.keys() {
            let n = delta(name, map);
            if n > 0 && !(map == "to_kernel" && HOST_CHATTER.contains(&name.as_str())) {
                out.insert(name.clone(), n);
            }
        }
    }
    let forwarded = after["forwarded_packets"].as_u64().unwrap_or(0)
        - before["forwarded_packets"].as_u64().unwrap_or(0);
    // Sent = lost in the ingress ring + forwarded + handed over + dropped; and every frame
    // forwarded was delivered or lost in the egress ring.
    let handed: u64 = report.to_kernel.values().sum::<u64>() + report.dropped.values().sum::<u64>();
    let veth = |name: &str| report.veth.get(name).copied().unwrap_or(0);
    report.lost_before_router = veth("a0.tx_xdp_xmit_errors");
    report.lost_after_router = veth("ra.rx_drops") + veth("rb.tx_xdp_xmit_errors");
    report.unaccounted_in =
        report.sent as i64 - (report.lost_before_router + forwarded + handed) as i64;
    report.unaccounted_out =
        forwarded as i64 - (report.delivered + report.lost_after_router) as i64;

    let after_reloads = rss_after_reload.lock().expect("not poisoned").clone();
    ensure!(
        after_reloads.len() >= 2,
        "the soak is too short to compare the daemon's memory over its reloads"
    );
    report.rss_kib_after_reloads = after_reloads.clone();
    report.rss_kib_max = rss.iter().chain(&after_reloads).copied().max().unwrap_or(0);
    // The first half's largest against the second half's median: a leak grows every time,
    // the allocator's high-water marks settle. (Not the second half's largest: one reload
    // that happens to catch the heap high, 554 MiB once after five at 459-498, is no
    // growth, and failed a run that leaked nothing.)
    let half = after_reloads.len() / 2;
    let first = after_reloads[..half].iter().max().copied().unwrap_or(1);
    let mut later = after_reloads[half..].to_vec();
    later.sort_unstable();
    let second = later.get(later.len() / 2).copied().unwrap_or(0);
    report.rss_growth = second as f64 / first as f64 - 1.0;

    // The tables: the churned routes settled on one next hop, then everything compared.
    let settle = lab.lab.dir().join("settle.routes");
    let via = SINK_NEXTHOPS_V4[0];
    fs::write(
        &settle,
        churned
            .iter()
            .map(|p| format!("{p} via {via} dev {}\n", ROUTER_B.ifname))
            .collect::<String>(),
    )?;
    lab.lab.cli(
        &tools.dataplane,
        &["route", "load", &settle.to_string_lossy()],
    )?;
    let mut expected: HashMap<IpNet, String> = HashMap::new();
    for line in table.route_lines().lines() {
        let mut words = line.split_whitespace();
        let prefix: IpNet = words.next().context("prefix")?.parse()?;
        let via = words.nth(1).context("via")?.to_owned();
        expected.insert(prefix, via);
    }
    for prefix in &churned {
        expected.insert(IpNet::V4(*prefix), via.to_owned());
    }
    let listed = lab.lab.cli(
        &tools.dataplane,
        &["route", "list", "--source", "cli", "--json"],
    )?;
    let listed: Value = serde_json::from_str(&listed).context("route list --json")?;
    for route in listed.as_array().context("routes")? {
        let prefix: IpNet = route["prefix"].as_str().context("prefix")?.parse()?;
        let got = route["nexthops"][0]["via"].as_str();
        report.routes_checked += 1;
        if expected.get(&prefix).map(String::as_str) != got || route["selected"] != true {
            report.routes_wrong += 1;
        }
    }
    for i in 0..50 {
        let prefix = if i % 2 == 0 {
            IpNet::V4(churned[rng.next_u64() as usize % churned.len()])
        } else {
            IpNet::V4(table.v4[rng.next_u64() as usize % table.v4.len()])
        };
        let addr = random_address(prefix, &mut rng);
        let trace = lab.lab.trace(
            &tools.dataplane,
            &["--in", ROUTER_A.ifname, "--dst", &addr.to_string()],
        )?;
        report.traced += 1;
        // The longest match may be a longer prefix than the one sampled: any prefix of the
        // table containing the address, and forwarded.
        let found: Option<IpNet> = trace["route"]["prefix"]
            .as_str()
            .and_then(|p| p.parse().ok());
        let ok = trace["action"] == "forward"
            && found.is_some_and(|f| f.contains(&addr) && expected.contains_key(&f));
        if !ok {
            report.traced_wrong += 1;
        }
    }
    Ok(report)
}

/// `ethtool -S` of the router's two ports and the hosts' ends, queues summed:
/// `ra.rx_xdp_redirect` and so on.
fn veth_counters(lab: &BenchLab) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut counters = BTreeMap::new();
    for (netns, port) in [
        (&lab.lab.a, HOST_A.ifname),
        (&lab.lab.router, ROUTER_A.ifname),
        (&lab.lab.router, ROUTER_B.ifname),
        (&lab.lab.b, HOST_B.ifname),
    ] {
        let out = netns.exec("ethtool", &["-S", port])?;
        for line in out.lines().skip(1) {
            let Some((name, value)) = line.trim().split_once(": ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<u64>() else {
                continue;
            };
            if name == "peer_ifindex" {
                continue;
            }
            // rx_queue_0_xdp_drops -> rx_xdp_drops
            let name = match name.split_once("_queue_") {
                Some((dir, rest)) => {
                    format!("{dir}_{}", rest.split_once('_').map_or(rest, |(_, r)| r))
                }
                None => name.to_owned(),
            };
            *counters.entry(format!("{port}.{name}")).or_default() += value;
        }
    }
    Ok(counters)
}

/// The ingress port's XDP counters.
fn ingress_counters(lab: &BenchLab) -> anyhow::Result<Value> {
    Ok(interface(&lab.stats()?, ROUTER_A.ifname).clone())
}

/// The resident size of process `pid`, KiB.
fn rss_kib(pid: u64) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?;
    ensure!(kib > 0, "VmRSS 0");
    Ok(kib)
}
