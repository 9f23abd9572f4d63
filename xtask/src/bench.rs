//! `cargo xtask bench`: pop-dataplane's forwarding rate side by side with the kernel's own
//! forwarding and a no-lookup XDP ceiling, with a handful of routes and the full table, IPv4
//! and IPv6, 64 to 1518-byte frames; and the lookup micro-benchmark from one route to the full
//! table. Prints a table, writes `target/bench/latest.json` and `target/bench/latest.png`.
//!
//! Every case runs `rounds` times in alternation (A B C ... A B C ...), so that a machine's
//! drift touches every case alike; figures are medians with min and max, and ratios are
//! medians of ratios taken within a round. How the router's cost is measured, and why, is in
//! `pop_dataplane_tests::bench`.

use std::{
    fmt::Write as _,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use anyhow::{Context as _, bail};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use pop_dataplane_tests::{
    bench::{
        Amount, BenchLab, Generator, Rng, Router, Run, Table, Tools, few_traffic, full_table,
        random_address, table_traffic,
    },
    fulltable,
};
use serde_json::{Value, json};

use crate::output;

pub(crate) struct Options {
    pub rounds: usize,
    pub seconds: f64,
    /// Distinct packets per lookup measurement.
    pub lookup_packets: usize,
    pub out_dir: PathBuf,
}

/// One forwarding case: a lab (router and table) and the traffic sent through it.
struct Case {
    name: &'static str,
    lab: usize,
    router: Router,
    /// "none", "few" or "full".
    table: &'static str,
    ipv6: bool,
    frame_size: usize,
    runs: Vec<Run>,
}

/// Route-table sizes of the lookup micro-benchmark (IPv4; IPv6 up to the table's size).
const LOOKUP_SIZES: [usize; 4] = [1, 1_000, 10_000, 100_000];

pub(crate) fn run(tools: &Tools, options: &Options) -> anyhow::Result<()> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("handling Ctrl-C")?;
    let check = || -> anyhow::Result<()> {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted; labs removed");
        }
        Ok(())
    };
    let started = Instant::now();
    let machine = machine()?;
    println!(
        "bench: {} ({} CPUs, Linux {}), {} rounds of {} s per case",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cpus"],
        machine["kernel"].as_str().unwrap_or("?"),
        options.rounds,
        options.seconds
    );

    let (real_v4, real_v6) = fulltable::read()?;
    let (mut full, copied) = full_table(&real_v4, &real_v6);
    full.v4.push(Ipv4Net::default());
    full.v6.push(Ipv6Net::default());
    println!(
        "bench: full table {} IPv4 + {} IPv6 routes, of them {} + {} copies of the densest /16 \
         and /32 in the benchmark ranges, where the traffic goes",
        full.v4.len(),
        full.v6.len(),
        copied.v4.len(),
        copied.v6.len()
    );

    // The forwarding labs, each set up once.
    let specs: [(&str, Router, &Table, &str); 16] = [
        ("kernel forwarding", Router::Kernel, &Table::few(), "few"),
        (
            "no-lookup ceiling",
            Router::Ceiling,
            &Table::default(),
            "none",
        ),
        (
            "pop-dataplane, few routes",
            Router::Dataplane,
            &Table::few(),
            "few",
        ),
        (
            "pop-dataplane, full table",
            Router::Dataplane,
            &full,
            "full",
        ),
        (
            "pop-dataplane --fib lpm-trie, few routes",
            Router::DataplaneLpmTrie,
            &Table::few(),
            "few",
        ),
        (
            "pop-dataplane --fib lpm-trie, full table",
            Router::DataplaneLpmTrie,
            &full,
            "full",
        ),
        (
            "pop-dataplane, full table, martian source checks and 1,000 deny rules",
            Router::DataplaneFiltered,
            &full,
            "full",
        ),
        (
            "kernel FIB from XDP (bpf_fib_lookup), few routes",
            Router::FibForward,
            &Table::few(),
            "few",
        ),
        (
            "kernel FIB from XDP (bpf_fib_lookup), full table",
            Router::FibForward,
            &full,
            "full",
        ),
        (
            "kernel forwarding, full table",
            Router::Kernel,
            &full,
            "full",
        ),
        (
            "pop-dataplane, full table, strict uRPF on the ingress",
            Router::DataplaneUrpf,
            &full,
            "full",
        ),
        (
            "pop-dataplane, full table, 1,000 flow rules the traffic matches none of",
            Router::DataplaneFlows,
            &full,
            "full",
        ),
        (
            "pop-dataplane, full table, a flow rule dropping all the traffic",
            Router::DataplaneFlood,
            &full,
            "full",
        ),
        (
            "pop-dataplane, blackhole routes for all the traffic, no table",
            Router::DataplaneBlackhole,
            &Table::default(),
            "full",
        ),
        (
            "pop-dataplane, full table, sFlow sampling 1-in-1000",
            Router::DataplaneSampled,
            &full,
            "full",
        ),
        (
            "pop-dataplane, full table, sFlow sampling every frame",
            Router::DataplaneSampledAll,
            &full,
            "full",
        ),
    ];
    let mut labs = Vec::new();
    for (what, router, table, _) in specs {
        let lab_started = Instant::now();
        let lab = BenchLab::new("pdp-bench", tools, router, table, true)?;
        println!(
            "bench: lab {}: {what} ({} routes) ready in {:.1} s",
            labs.len() + 1,
            table.len(),
            lab_started.elapsed().as_secs_f64()
        );
        if let Some((output, took)) = lab.load() {
            println!(
                "bench:   route load took {:.2} s: {}",
                took.as_secs_f64(),
                output.trim()
            );
        }
        labs.push(lab);
        check()?;
    }
    let loads = [3, 5].map(|lab| -> anyhow::Result<Value> {
        let (_, took) = labs[lab].load().context("the full-table labs load a table")?;
        let status = labs[lab].status()?;
        Ok(json!({
            "fib": status["fib"],
            "routes": status["routes_v4"].as_u64().unwrap_or(0) + status["routes_v6"].as_u64().unwrap_or(0),
            "load_s": round3(took.as_secs_f64()),
            "kernel_memory_bytes": status["table_memory"]["v4_bytes"].as_u64().unwrap_or(0)
                + status["table_memory"]["v6_bytes"].as_u64().unwrap_or(0),
        }))
    });
    let [compiled_load, lpm_load] = loads;
    let (compiled_load, lpm_load) = (compiled_load?, lpm_load?);
    let generator = labs[0].generator;
    match generator {
        Generator::Pktgen => println!("bench: generator: pktgen (/proc/net/pktgen)"),
        Generator::Xdp => println!(
            "bench: generator: no pktgen in this kernel (no /proc/net/pktgen); using \
             pop-dataplane-bench generate (XDP, BPF_PROG_TEST_RUN live frames)"
        ),
    }

    let case = |name, lab: usize, ipv6, frame_size| Case {
        name,
        lab,
        router: specs[lab].1,
        table: specs[lab].3,
        ipv6,
        frame_size,
        runs: Vec::new(),
    };
    let mut cases = vec![
        case("kernel", 0, false, 64),
        case("ceiling", 1, false, 64),
        case("xdp-few", 2, false, 64),
        case("xdp-full", 3, false, 64),
        case("lpm-few", 4, false, 64),
        case("lpm-full", 5, false, 64),
        case("kernel-v6", 0, true, 78),
        case("xdp-few-v6", 2, true, 78),
        case("xdp-full-v6", 3, true, 78),
        case("lpm-full-v6", 5, true, 78),
        case("xdp-few-512", 2, false, 512),
        case("xdp-few-1518", 2, false, 1518),
        case("xdp-full-filter", 6, false, 64),
        case("fib-few", 7, false, 64),
        case("fib-full", 8, false, 64),
        case("fib-few-v6", 7, true, 78),
        case("fib-full-v6", 8, true, 78),
        case("kernel-full", 9, false, 64),
        case("kernel-full-v6", 9, true, 78),
        case("xdp-full-urpf", 10, false, 64),
        case("xdp-full-urpf-v6", 10, true, 78),
        case("xdp-full-flows", 11, false, 64),
        case("xdp-full-flows-v6", 11, true, 78),
        case("xdp-full-flood", 12, false, 64),
        case("xdp-full-flood-v6", 12, true, 78),
        case("xdp-blackhole", 13, false, 64),
        case("xdp-blackhole-v6", 13, true, 78),
        case("xdp-full-sampled", 14, false, 64),
        case("xdp-full-sampled-v6", 14, true, 78),
        case("xdp-full-sampled-all", 15, false, 64),
    ];
    let sampled_all_rss_before = labs[15].daemon_rss()?;
    let mut rng = Rng::new(2023);
    for round in 1..=options.rounds {
        for case in &mut cases {
            let traffic = if case.table == "full" {
                table_traffic(&copied, case.ipv6, case.frame_size, &mut rng)
            } else {
                few_traffic(case.ipv6, case.frame_size, &mut rng)
            };
            let run = labs[case.lab].measure(&traffic, Amount::Seconds(options.seconds))?;
            println!(
                "bench: round {round}/{}: {:<13} offered {:>6.2} Mpps, delivered {:>6.2} Mpps, \
                 loss {:>5.1}%, router {:>7.1} ns/packet ({:.0}% busy)",
                options.rounds,
                case.name,
                run.offered_pps() / 1e6,
                run.delivered_pps() / 1e6,
                run.loss() * 100.0,
                run.router_ns_per_packet().unwrap_or(f64::NAN),
                run.router_busy().unwrap_or(f64::NAN) * 100.0
            );
            case.runs.push(run);
            check()?;
        }
    }

    // The programs' own cost, from the kernel's BPF statistics, in runs of their own: the
    // statistics cost every program run, so the rounds above ran without them.
    let mut program_ns = serde_json::Map::new();
    for (key, lab) in [
        ("pop_dataplane", 2),
        ("pop_dataplane_full", 3),
        ("ceiling", 1),
        ("fib_lookup", 7),
        ("fib_lookup_full", 8),
        ("pop_dataplane_full_flows", 11),
        ("pop_dataplane_full_flood", 12),
        ("pop_dataplane_blackhole", 13),
        ("pop_dataplane_full_sampled", 14),
    ] {
        let traffic = if specs[lab].3 == "full" {
            table_traffic(&copied, false, 64, &mut rng)
        } else {
            few_traffic(false, 64, &mut rng)
        };
        let ns = labs[lab].program_ns(&traffic, Amount::Seconds(options.seconds))?;
        println!("bench: program run time (bpf_stats): {key} {ns:.1} ns/packet");
        program_ns.insert(key.to_owned(), round3(ns));
        check()?;
    }
    let program_ns = Value::Object(program_ns);

    // Sampling every frame: what the daemon took, what the ring lost, and its memory.
    let sflow = labs[15].sflow()?;
    let lost: u64 = sflow["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["lost"].as_u64())
        .sum();
    let sampling = json!({
        "rate": pop_dataplane_tests::bench::SAMPLING_RATE,
        "all_samples_read": sflow["samples"],
        "all_samples_lost": lost,
        "all_daemon_rss_before_bytes": sampled_all_rss_before,
        "all_daemon_rss_after_bytes": labs[15].daemon_rss()?,
    });
    println!("bench: sampling every frame: {sampling}");

    let churn = churn_benchmark(&mut labs[3], &copied, &real_v4, options, &mut rng)?;
    let vrf_scale = vrf_scale_benchmark(&labs[3], &real_v4, &mut rng)?;
    let fell_back = labs.iter().any(BenchLab::generator_fell_back);
    if fell_back {
        println!(
            "bench: the kernel refused live frames: the generator sent through an AF_PACKET \
             socket (skbs, about 1 Mpps): router figures are not comparable with live-frame runs"
        );
    }
    drop(labs);

    let (lookup, scaling) = lookup_benchmark(tools, options, &full, &real_v4, &real_v6, &check)?;

    let report = report(
        &machine,
        generator,
        options,
        &cases,
        &lookup,
        &full,
        json!({ "compiled": compiled_load, "lpm_trie": lpm_load }),
        churn,
        program_ns,
        &scaling,
        sampling,
        vrf_scale,
        fell_back,
    );
    fs::create_dir_all(&options.out_dir)?;
    let json_path = options.out_dir.join("latest.json");
    fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")?;
    let png_path = options.out_dir.join("latest.png");
    chart(&report, &png_path)?;
    println!();
    print!("{}", table(&report));
    println!();
    println!("bench: {} and {}", json_path.display(), png_path.display());
    println!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The table and chart again, from the JSON of the last run in `out_dir`.
pub(crate) fn redraw(out_dir: &Path) -> anyhow::Result<()> {
    let json_path = out_dir.join("latest.json");
    let text = fs::read_to_string(&json_path).with_context(|| {
        format!(
            "reading {} (run `cargo xtask bench` first)",
            json_path.display()
        )
    })?;
    let report: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json_path.display()))?;
    let png_path = out_dir.join("latest.png");
    chart(&report, &png_path)?;
    print!("{}", table(&report));
    println!("bench: {} redrawn", png_path.display());
    Ok(())
}

/// One table size of the lookup micro-benchmark, with its measurements (ns per packet) in
/// the compiled FIB and in the LPM trie.
struct LookupSize {
    routes_v4: usize,
    routes_v6: usize,
    /// Kernel memory of the compiled tables (both families).
    memory_bytes: u64,
    v4: Vec<f64>,
    v6: Vec<f64>,
    v4_lpm: Vec<f64>,
    v6_lpm: Vec<f64>,
    /// The kernel-FIB XDP router (`bpf_fib_lookup`), full table only.
    v4_fib: Vec<f64>,
    v6_fib: Vec<f64>,
}

/// Two CPUs' lookup rate over one CPU's, per round.
#[derive(Default)]
struct Scaling {
    full: Vec<f64>,
    one_route: Vec<f64>,
}

/// The program's cost per packet under `BPF_PROG_TEST_RUN`, for tables of 1 route to the
/// full table. Every size sees the same packets (one address in each of many prefixes of
/// the real table); every table has a default route, so every packet is forwarded and only
/// the table's size differs.
fn lookup_benchmark(
    tools: &Tools,
    options: &Options,
    full: &Table,
    real_v4: &[Ipv4Net],
    real_v6: &[Ipv6Net],
    check: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<LookupSize>, Scaling)> {
    let mut rng = Rng::new(1);
    let packets_v4: Vec<IpAddr> = sample(real_v4, options.lookup_packets, &mut rng)
        .into_iter()
        .map(|p| random_address(IpNet::V4(p), &mut rng))
        .collect();
    let packets_v6: Vec<IpAddr> = sample(real_v6, options.lookup_packets, &mut rng)
        .into_iter()
        .map(|p| random_address(IpNet::V6(p), &mut rng))
        .collect();
    let mut tables: Vec<Table> = LOOKUP_SIZES
        .iter()
        .map(|&size| {
            let mut table = Table {
                v4: sample(real_v4, size - 1, &mut rng),
                v6: sample(real_v6, size - 1, &mut rng),
            };
            table.v4.push(Ipv4Net::default());
            table.v6.push(Ipv6Net::default());
            table
        })
        .collect();
    tables.push(full.clone());
    // A lab per table and lookup mode.
    let mut labs = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let mut pair = Vec::new();
        let full_table = i + 1 == tables.len();
        let routers: &[Router] = if full_table {
            &[
                Router::Dataplane,
                Router::DataplaneLpmTrie,
                Router::FibForward,
            ]
        } else {
            &[Router::Dataplane, Router::DataplaneLpmTrie]
        };
        for &router in routers {
            let lab_started = Instant::now();
            pair.push(BenchLab::new("pdp-bench", tools, router, table, false)?);
            println!(
                "bench: lookup lab: {} IPv4 + {} IPv6 routes, {router:?}, ready in {:.1} s",
                table.v4.len(),
                table.v6.len(),
                lab_started.elapsed().as_secs_f64()
            );
            check()?;
        }
        labs.push(pair);
    }
    let mut sizes: Vec<LookupSize> = Vec::new();
    for (table, pair) in tables.iter().zip(&labs) {
        let status = pair[0].status()?;
        let memory = &status["table_memory"];
        sizes.push(LookupSize {
            routes_v4: table.v4.len(),
            routes_v6: table.v6.len(),
            memory_bytes: memory["v4_bytes"].as_u64().unwrap_or(0)
                + memory["v6_bytes"].as_u64().unwrap_or(0),
            v4: Vec::new(),
            v6: Vec::new(),
            v4_lpm: Vec::new(),
            v6_lpm: Vec::new(),
            v4_fib: Vec::new(),
            v6_fib: Vec::new(),
        });
    }
    let cost = |lab: &BenchLab, packets: &[IpAddr]| -> anyhow::Result<f64> {
        let cost = lab.lookup_cost(packets)?;
        let forwarded = cost["actions"]["4"].as_u64().unwrap_or(0);
        if forwarded != packets.len() as u64 {
            bail!("lookup: not every packet was forwarded: {cost}");
        }
        cost["ns_per_packet"].as_f64().context("ns_per_packet")
    };
    for round in 1..=options.rounds {
        for (pair, size) in labs.iter().zip(&mut sizes) {
            size.v4.push(cost(&pair[0], &packets_v4)?);
            size.v6.push(cost(&pair[0], &packets_v6)?);
            size.v4_lpm.push(cost(&pair[1], &packets_v4)?);
            size.v6_lpm.push(cost(&pair[1], &packets_v6)?);
            if let Some(fib) = pair.get(2) {
                size.v4_fib.push(cost(fib, &packets_v4)?);
                size.v6_fib.push(cost(fib, &packets_v6)?);
                println!(
                    "bench: round {round}/{}: lookup, full table in the kernel FIB \
                     (bpf_fib_lookup): IPv4 {:.1} ns/packet, IPv6 {:.1}",
                    options.rounds,
                    size.v4_fib.last().copied().unwrap_or(f64::NAN),
                    size.v6_fib.last().copied().unwrap_or(f64::NAN),
                );
            }
            println!(
                "bench: round {round}/{}: lookup, {:>7} IPv4 routes {:>6.1} ns/packet ({:.1} \
                 in the LPM trie), {:>6} IPv6 routes {:>6.1} ns/packet ({:.1})",
                options.rounds,
                size.routes_v4,
                size.v4.last().copied().unwrap_or(f64::NAN),
                size.v4_lpm.last().copied().unwrap_or(f64::NAN),
                size.routes_v6,
                size.v6.last().copied().unwrap_or(f64::NAN),
                size.v6_lpm.last().copied().unwrap_or(f64::NAN),
            );
            check()?;
        }
    }
    // Scaling: the full table's program on both CPUs at once against one, each run timed by
    // the kernel; with no shared writable state on the per-packet path, two CPUs look up
    // twice as many packets.
    // The same with one route, as a control: its lookups stay in cache, so what keeps it
    // from 2x is the machine (vCPUs that share a core, the syscalls), not the program.
    let full_lab = &labs.last().expect("the full table's labs")[0];
    let one_lab = &labs[0][0];
    let mut scaling = Scaling::default();
    for round in 1..=options.rounds {
        for (lab, ratios, what) in [
            (full_lab, &mut scaling.full, "full table"),
            (one_lab, &mut scaling.one_route, "one route"),
        ] {
            let single = cost(lab, &packets_v4)?;
            let (a, b) = std::thread::scope(|scope| {
                let other = scope.spawn(|| lab.lookup_cost_on(&packets_v4, 0));
                let here = lab.lookup_cost_on(&packets_v4, 1);
                (other.join().expect("lookup thread"), here)
            });
            let ns = |cost: anyhow::Result<Value>| -> anyhow::Result<f64> {
                cost?["ns_per_packet"].as_f64().context("ns_per_packet")
            };
            let (a, b) = (ns(a)?, ns(b)?);
            let ratio = single * (1.0 / a + 1.0 / b);
            println!(
                "bench: round {round}/{}: lookup, {what}, on two CPUs at once: {a:.1} and \
                 {b:.1} ns/packet against {single:.1} on one: {ratio:.2}x",
                options.rounds
            );
            ratios.push(ratio);
            check()?;
        }
    }
    Ok((sizes, scaling))
}

/// VRFs beside the full table: 100 of 1,000 real IPv4 prefixes each added to the full-table
/// lab, each VRF's routes loaded with one `route load` (as a VRF's session would bring them);
/// the time that took and the kernel memory they added.
fn vrf_scale_benchmark(
    lab: &BenchLab,
    real_v4: &[Ipv4Net],
    rng: &mut Rng,
) -> anyhow::Result<Value> {
    const VRFS: usize = 100;
    const ROUTES: usize = 1_000;
    let memory = || -> anyhow::Result<u64> {
        let status = lab.status()?;
        Ok(status["table_memory"]["v4_bytes"].as_u64().unwrap_or(0)
            + status["table_memory"]["v6_bytes"].as_u64().unwrap_or(0))
    };
    let before = memory()?;
    lab.add_vrfs(VRFS)?;
    let started = Instant::now();
    let mut loads = Vec::with_capacity(VRFS);
    for vrf in 0..VRFS {
        let prefixes = sample(real_v4, ROUTES, rng);
        loads.push(
            lab.load_vrf_routes(&format!("v{vrf}"), &prefixes)?
                .as_secs_f64(),
        );
    }
    let load_s = started.elapsed().as_secs_f64();
    // Tables a burst of single routes grew are compacted within a second.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let after = memory()?;
    let status = lab.status()?;
    let added = after.saturating_sub(before);
    let result = json!({
        "vrfs": VRFS,
        "routes_per_vrf": ROUTES,
        "load_s": round3(load_s),
        "load_s_per_vrf_median": round3(spread(&loads).0),
        "kernel_memory_bytes_before": before,
        "kernel_memory_bytes_after": after,
        "kernel_memory_bytes_per_vrf": added / VRFS as u64,
        "routes_v4": status["routes_v4"],
    });
    println!(
        "bench: VRFs: {VRFS} VRFs of {ROUTES} routes beside the full table loaded in {load_s:.2} s \
         (one route load each, median {:.3} s); route tables {:.1} -> {:.1} MiB, {:.2} MiB a VRF",
        spread(&loads).0,
        before as f64 / f64::from(1 << 20),
        after as f64 / f64::from(1 << 20),
        added as f64 / VRFS as f64 / f64::from(1 << 20),
    );
    Ok(result)
}

/// Route changes per second pushed with `route load` while traffic flows through the full
/// table, half of it to prefixes being changed, and whether any packet missed a route.
fn churn_benchmark(
    lab: &mut BenchLab,
    copied: &Table,
    real_v4: &[Ipv4Net],
    options: &Options,
    rng: &mut Rng,
) -> anyhow::Result<Value> {
    // Half of the prefixes the traffic goes to, and real-table prefixes to make batches of
    // 10,000 (the most a change makes in place; more build fresh tables).
    let mut prefixes: Vec<Ipv4Net> = copied.v4[..copied.v4.len() / 2].to_vec();
    prefixes.extend(sample(real_v4, 50_000 - prefixes.len(), rng));
    let churn = lab.churn(&prefixes, 10_000)?;
    let traffic = table_traffic(copied, false, 64, rng);
    let before = lab.stats()?;
    let seconds = options.seconds * 2.0;
    let (result, run) = std::thread::scope(|scope| {
        let pushing = scope.spawn(|| churn.run(std::time::Duration::from_secs_f64(seconds)));
        let run = lab.measure(&traffic, Amount::Seconds(seconds));
        (pushing.join().expect("churn thread"), run)
    });
    let (changes, elapsed) = result?;
    let run = run?;
    let after = lab.stats()?;
    let memory = |lab: &BenchLab| -> anyhow::Result<u64> {
        let status = lab.status()?;
        Ok(status["table_memory"]["v4_bytes"].as_u64().unwrap_or(0)
            + status["table_memory"]["v6_bytes"].as_u64().unwrap_or(0))
    };
    // Churn leaves the cells it let go free in the arrays; the daemon compacts them within
    // seconds.
    let memory_after = memory(lab)?;
    std::thread::sleep(std::time::Duration::from_secs(3));
    let memory_settled = memory(lab)?;
    let delta = |path: &[&str]| -> u64 {
        let read = |stats: &Value| {
            let port = stats["interfaces"]
                .as_array()
                .and_then(|all| all.iter().find(|i| i["name"] == "ra"))
                .cloned()
                .unwrap_or(Value::Null);
            path.iter()
                .fold(&port, |v, key| &v[*key])
                .as_u64()
                .unwrap_or(0)
        };
        read(&after) - read(&before)
    };
    let result = json!({
        "changes": changes,
        "seconds": round3(elapsed),
        "changes_per_s": (changes as f64 / elapsed).round(),
        "batch": 10_000,
        "router_rx": delta(&["rx_packets"]),
        "forwarded": delta(&["forwarded_packets"]),
        "no_route": delta(&["to_kernel", "no_route"]),
        "unresolved": delta(&["to_kernel", "unresolved"]),
        "dropped": delta(&["dropped_packets"]),
        "delivered_pps": run.delivered_pps().round(),
        "kernel_memory_bytes_after": memory_after,
        "kernel_memory_bytes_3s_later": memory_settled,
    });
    println!(
        "bench: churn: {changes} route changes in {elapsed:.1} s ({:.0}/s) under {:.2} Mpps of \
         traffic; {} packets received, {} forwarded, {} missed a route; tables {:.1} MiB \
         after, {:.1} MiB 3 s later",
        changes as f64 / elapsed,
        run.offered_pps() / 1e6,
        result["router_rx"],
        result["forwarded"],
        result["no_route"],
        memory_after as f64 / f64::from(1 << 20),
        memory_settled as f64 / f64::from(1 << 20),
    );
    Ok(result)
}

/// `count` distinct items of `items` at random (all of them when there are fewer).
fn sample<T: Copy>(items: &[T], count: usize, rng: &mut Rng) -> Vec<T> {
    if count >= items.len() {
        return items.to_vec();
    }
    // A partial Fisher-Yates shuffle over indexes.
    let mut indexes: Vec<usize> = (0..items.len()).collect();
    for i in 0..count {
        let j = i + (rng.next_u64() % (items.len() - i) as u64) as usize;
        indexes.swap(i, j);
    }
    indexes[..count].iter().map(|&i| items[i]).collect()
}

/// Median, min and max.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted[0], sorted[n - 1])
}

/// `a`'s figure in `figures` over `b`'s.
fn ratio_of(figures: &Value, a: &str, b: &str) -> Value {
    match (figures[a].as_f64(), figures[b].as_f64()) {
        (Some(a), Some(b)) => round3(a / b),
        _ => Value::Null,
    }
}

/// The median over rounds of `a`'s figure over `b`'s, taken within each round.
fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
    spread(&ratios).0
}

fn round3(value: f64) -> Value {
    if value.is_finite() {
        json!((value * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    machine: &Value,
    generator: Generator,
    options: &Options,
    cases: &[Case],
    lookup: &[LookupSize],
    full: &Table,
    loads: Value,
    churn: Value,
    program_ns: Value,
    scaling: &Scaling,
    sampling: Value,
    vrf_scale: Value,
    fell_back: bool,
) -> Value {
    let per_core = |case: &Case| -> Vec<f64> {
        case.runs
            .iter()
            .map(|r| r.pps_per_core().unwrap_or(f64::NAN))
            .collect()
    };
    let by_name = |name: &str| cases.iter().find(|c| c.name == name).expect("known case");
    let case_json: Vec<Value> = cases
        .iter()
        .map(|case| {
            let delivered: Vec<f64> = case.runs.iter().map(Run::delivered_pps).collect();
            let offered: Vec<f64> = case.runs.iter().map(Run::offered_pps).collect();
            let loss: Vec<f64> = case.runs.iter().map(Run::loss).collect();
            let ns: Vec<f64> = case
                .runs
                .iter()
                .map(|r| r.router_ns_per_packet().unwrap_or(f64::NAN))
                .collect();
            let busy: Vec<f64> = case
                .runs
                .iter()
                .map(|r| r.router_busy().unwrap_or(f64::NAN))
                .collect();
            let (pps, pps_min, pps_max) = spread(&delivered);
            let (core, core_min, core_max) = spread(&per_core(case));
            let (ns_median, ns_min, ns_max) = spread(&ns);
            let (loss_median, loss_min, loss_max) = spread(&loss);
            json!({
                "name": case.name,
                "router": match case.router {
                    Router::Kernel => "kernel",
                    Router::Ceiling => "ceiling",
                    Router::FibForward => "kernel FIB from XDP (bpf_fib_lookup)",
                    Router::Dataplane => "pop-dataplane",
                    Router::DataplaneLpmTrie => "pop-dataplane --fib lpm-trie",
                    Router::DataplaneFiltered => "pop-dataplane, source checks and 1,000 deny rules",
                    Router::DataplaneUrpf => "pop-dataplane, strict uRPF",
                    Router::DataplaneFlows => "pop-dataplane, 1,000 flow rules matching none",
                    Router::DataplaneFlood => "pop-dataplane, a flow rule dropping all",
                    Router::DataplaneBlackhole => "pop-dataplane, blackhole routes for all",
                    Router::DataplaneSampled => "pop-dataplane, sampling 1-in-1000",
                    Router::DataplaneSampledAll => "pop-dataplane, sampling every frame",
                },
                "table": case.table,
                "family": if case.ipv6 { "ipv6" } else { "ipv4" },
                "frame_size": case.frame_size,
                "pps_median": pps.round(),
                "pps_min": pps_min.round(),
                "pps_max": pps_max.round(),
                "offered_pps_median": spread(&offered).0.round(),
                "loss": round3(loss_median),
                "loss_min": round3(loss_min),
                "loss_max": round3(loss_max),
                "router_ns_per_packet_median": round3(ns_median),
                "router_ns_per_packet_min": round3(ns_min),
                "router_ns_per_packet_max": round3(ns_max),
                "pps_per_core_median": core.round(),
                "pps_per_core_min": core_min.round(),
                "pps_per_core_max": core_max.round(),
                "router_busy_median": round3(spread(&busy).0),
                "runs": case.runs.iter().map(Run::to_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let lookup_json: Vec<Value> = lookup
        .iter()
        .map(|size| {
            let (v4, v4_min, v4_max) = spread(&size.v4);
            let (v6, v6_min, v6_max) = spread(&size.v6);
            json!({
                "routes_v4": size.routes_v4,
                "routes_v6": size.routes_v6,
                "kernel_memory_bytes": size.memory_bytes,
                "ns_per_packet_v4_median": round3(v4),
                "ns_per_packet_v4_min": round3(v4_min),
                "ns_per_packet_v4_max": round3(v4_max),
                "ns_per_packet_v6_median": round3(v6),
                "ns_per_packet_v6_min": round3(v6_min),
                "ns_per_packet_v6_max": round3(v6_max),
                "lpm_trie_ns_per_packet_v4_median": round3(spread(&size.v4_lpm).0),
                "lpm_trie_ns_per_packet_v6_median": round3(spread(&size.v6_lpm).0),
                "fib_lookup_ns_per_packet_v4_median": round3(spread(&size.v4_fib).0),
                "fib_lookup_ns_per_packet_v6_median": round3(spread(&size.v6_fib).0),
            })
        })
        .collect();
    let one = lookup.first().expect("sizes");
    let all = lookup.last().expect("sizes");
    json!({
        "machine": machine,
        "generator": match generator {
            Generator::Pktgen => "pktgen",
            Generator::Xdp if fell_back => "pop-dataplane-bench generate (AF_PACKET: the kernel refused live frames)",
            Generator::Xdp => "pop-dataplane-bench generate (XDP live frames)",
        },
        "rounds": options.rounds,
        "seconds_per_run": options.seconds,
        "full_table_routes": { "ipv4": full.v4.len(), "ipv6": full.v6.len() },
        "method": "pps_*: packets the sink received per second. pps_per_core_*: packets the router \
                   forwards per second of its NAPI thread's run time (1e9 / router_ns_per_packet), \
                   what one router core forwards. Forwarding ratios are of pps_per_core, medians of \
                   per-round ratios. Lookup: ns per packet of the XDP program under \
                   BPF_PROG_TEST_RUN, minus an empty program's, over distinct packets.",
        "cases": case_json,
        "ratios": {
            "xdp_vs_kernel": round3(paired_ratio(&per_core(by_name("xdp-few")), &per_core(by_name("kernel")))),
            "xdp_vs_kernel_v6": round3(paired_ratio(&per_core(by_name("xdp-few-v6")), &per_core(by_name("kernel-v6")))),
            "xdp_vs_ceiling": round3(paired_ratio(&per_core(by_name("xdp-few")), &per_core(by_name("ceiling")))),
            "full_vs_few": round3(paired_ratio(&per_core(by_name("xdp-full")), &per_core(by_name("xdp-few")))),
            "full_vs_few_v6": round3(paired_ratio(&per_core(by_name("xdp-full-v6")), &per_core(by_name("xdp-few-v6")))),
            "filter_vs_none": round3(paired_ratio(&per_core(by_name("xdp-full-filter")), &per_core(by_name("xdp-full")))),
            "urpf_vs_none": round3(paired_ratio(&per_core(by_name("xdp-full-urpf")), &per_core(by_name("xdp-full")))),
            "urpf_vs_none_v6": round3(paired_ratio(&per_core(by_name("xdp-full-urpf-v6")), &per_core(by_name("xdp-full-v6")))),
            "flows_1k_vs_none": round3(paired_ratio(&per_core(by_name("xdp-full-flows")), &per_core(by_name("xdp-full")))),
            "flows_1k_vs_none_v6": round3(paired_ratio(&per_core(by_name("xdp-full-flows-v6")), &per_core(by_name("xdp-full-v6")))),
            "flood_drop_vs_forward": round3(paired_ratio(&per_core(by_name("xdp-full-flood")), &per_core(by_name("xdp-full")))),
            "flood_drop_vs_forward_v6": round3(paired_ratio(&per_core(by_name("xdp-full-flood-v6")), &per_core(by_name("xdp-full-v6")))),
            // The control: the same frames dropped by a blackhole route, no rule.
            "flood_drop_vs_blackhole_drop": round3(paired_ratio(&per_core(by_name("xdp-full-flood")), &per_core(by_name("xdp-blackhole")))),
            "flood_drop_vs_blackhole_drop_v6": round3(paired_ratio(&per_core(by_name("xdp-full-flood-v6")), &per_core(by_name("xdp-blackhole-v6")))),
            "blackhole_drop_vs_forward": round3(paired_ratio(&per_core(by_name("xdp-blackhole")), &per_core(by_name("xdp-full")))),
            "sampling_1k_vs_none": round3(paired_ratio(&per_core(by_name("xdp-full-sampled")), &per_core(by_name("xdp-full")))),
            "sampling_1k_vs_none_v6": round3(paired_ratio(&per_core(by_name("xdp-full-sampled-v6")), &per_core(by_name("xdp-full-v6")))),
            "sampling_all_vs_none": round3(paired_ratio(&per_core(by_name("xdp-full-sampled-all")), &per_core(by_name("xdp-full")))),
            "xdp_vs_fib_lookup": round3(paired_ratio(&per_core(by_name("xdp-full")), &per_core(by_name("fib-full")))),
            "xdp_vs_fib_lookup_v6": round3(paired_ratio(&per_core(by_name("xdp-full-v6")), &per_core(by_name("fib-full-v6")))),
            "xdp_vs_kernel_full": round3(paired_ratio(&per_core(by_name("xdp-full")), &per_core(by_name("kernel-full")))),
            "lookup_full_vs_one": round3(paired_ratio(&all.v4, &one.v4)),
            "lookup_full_vs_one_v6": round3(paired_ratio(&all.v6, &one.v6)),
            "lookup_full_vs_trie_one": round3(paired_ratio(&all.v4, &one.v4_lpm)),
            "lookup_full_vs_trie_one_v6": round3(paired_ratio(&all.v6, &one.v6_lpm)),
            "lookup_vs_fib_lookup": round3(paired_ratio(&all.v4_fib, &all.v4)),
            "lookup_vs_fib_lookup_v6": round3(paired_ratio(&all.v6_fib, &all.v6)),
            "scaling_2cpu": round3(spread(&scaling.full).0),
            "scaling_2cpu_one_route": round3(spread(&scaling.one_route).0),
            "prog_ns": program_ns["pop_dataplane"],
            "prog_ns_ceiling": program_ns["ceiling"],
            // The programs' own cost (no driver, no frame freeing): 1,000 rules that match
            // nothing over none, and a flood every frame of which a rule drops over the same
            // traffic forwarded.
            "flows_1k_prog_vs_none": ratio_of(&program_ns, "pop_dataplane_full_flows", "pop_dataplane_full"),
            "flood_prog_vs_forward": ratio_of(&program_ns, "pop_dataplane_full_flood", "pop_dataplane_full"),
            "blackhole_prog_vs_forward": ratio_of(&program_ns, "pop_dataplane_blackhole", "pop_dataplane_full"),
            "sampling_1k_prog_vs_none": ratio_of(&program_ns, "pop_dataplane_full_sampled", "pop_dataplane_full"),
            "full_table_load_s": loads["compiled"]["load_s"],
            "fib_kernel_memory_bytes": loads["compiled"]["kernel_memory_bytes"],
            "fib_kernel_memory_bytes_1k": lookup
                .iter()
                .find(|size| size.routes_v4 == 1_000)
                .map(|size| size.memory_bytes),
            "churn_changes_per_s": churn["changes_per_s"],
            "vrf_100x1k_load_s": vrf_scale["load_s"],
            "vrf_1k_kernel_memory_bytes": vrf_scale["kernel_memory_bytes_per_vrf"],
            "lpm_trie": {
                "full_vs_few": round3(paired_ratio(&per_core(by_name("lpm-full")), &per_core(by_name("lpm-few")))),
                "lookup_full_vs_one": round3(paired_ratio(&all.v4_lpm, &one.v4_lpm)),
                "lookup_full_vs_one_v6": round3(paired_ratio(&all.v6_lpm, &one.v6_lpm)),
                "full_table_load_s": loads["lpm_trie"]["load_s"],
                "fib_kernel_memory_bytes": loads["lpm_trie"]["kernel_memory_bytes"],
            },
        },
        "full_table_load": loads,
        "sampling": sampling,
        "program_ns": program_ns,
        "churn": churn,
        "vrf_scale": vrf_scale,
        "lookup": lookup_json,
    })
}

/// The report as a terminal table.
fn table(report: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<13} {:>5} {:>11} {:>11} {:>7} {:>12} {:>16}",
        "case", "bytes", "offered", "delivered", "loss", "router", "per router core"
    );
    for case in report["cases"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<13} {:>5} {:>6.2} Mpps {:>6.2} Mpps {:>6.1}% {:>7.1} ns/p {:>6.2} Mpps ({:.2}-{:.2})",
            case["name"].as_str().unwrap_or(""),
            case["frame_size"].as_u64().unwrap_or(0),
            case["offered_pps_median"].as_f64().unwrap_or(f64::NAN) / 1e6,
            case["pps_median"].as_f64().unwrap_or(f64::NAN) / 1e6,
            case["loss"].as_f64().unwrap_or(f64::NAN) * 100.0,
            case["router_ns_per_packet_median"]
                .as_f64()
                .unwrap_or(f64::NAN),
            case["pps_per_core_median"].as_f64().unwrap_or(f64::NAN) / 1e6,
            case["pps_per_core_min"].as_f64().unwrap_or(f64::NAN) / 1e6,
            case["pps_per_core_max"].as_f64().unwrap_or(f64::NAN) / 1e6,
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "lookup, ns/packet: {:>9} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "IPv4", "IPv6", "v4", "v6", "v4 trie", "v6 trie"
    );
    let ns = |size: &Value, key: &str| size[key].as_f64().unwrap_or(f64::NAN);
    for size in report["lookup"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "                   {:>9} {:>9} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            size["routes_v4"].as_u64().unwrap_or(0),
            size["routes_v6"].as_u64().unwrap_or(0),
            ns(size, "ns_per_packet_v4_median"),
            ns(size, "ns_per_packet_v6_median"),
            ns(size, "lpm_trie_ns_per_packet_v4_median"),
            ns(size, "lpm_trie_ns_per_packet_v6_median"),
        );
    }
    let _ = writeln!(out);
    let ratios = &report["ratios"];
    for key in [
        "xdp_vs_kernel",
        "xdp_vs_kernel_v6",
        "xdp_vs_ceiling",
        "xdp_vs_fib_lookup",
        "xdp_vs_fib_lookup_v6",
        "xdp_vs_kernel_full",
        "full_vs_few",
        "full_vs_few_v6",
        "filter_vs_none",
        "urpf_vs_none",
        "urpf_vs_none_v6",
        "flows_1k_vs_none",
        "flows_1k_vs_none_v6",
        "flood_drop_vs_forward",
        "flood_drop_vs_forward_v6",
        "flood_drop_vs_blackhole_drop",
        "flood_drop_vs_blackhole_drop_v6",
        "blackhole_drop_vs_forward",
        "sampling_1k_vs_none",
        "sampling_1k_vs_none_v6",
        "sampling_all_vs_none",
        "lookup_full_vs_one",
        "lookup_full_vs_one_v6",
        "lookup_full_vs_trie_one",
        "lookup_full_vs_trie_one_v6",
        "lookup_vs_fib_lookup",
        "lookup_vs_fib_lookup_v6",
        "scaling_2cpu",
        "scaling_2cpu_one_route",
        "prog_ns",
        "prog_ns_ceiling",
        "flows_1k_prog_vs_none",
        "flood_prog_vs_forward",
        "blackhole_prog_vs_forward",
        "full_table_load_s",
        "fib_kernel_memory_bytes",
        "fib_kernel_memory_bytes_1k",
        "churn_changes_per_s",
        "vrf_100x1k_load_s",
        "vrf_1k_kernel_memory_bytes",
    ] {
        let _ = writeln!(out, "{key:<24} {}", ratios[key]);
    }
    let _ = writeln!(out, "lpm-trie mode: {}", ratios["lpm_trie"]);
    out
}

/// The machine the figures come from.
fn machine() -> anyhow::Result<Value> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, name)| name.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = output(std::process::Command::new("uname").arg("-r"))?
        .trim()
        .to_owned();
    let cpus = std::thread::available_parallelism()?.get();
    let memory_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kib| (kib / 1024.0 / 1024.0).round());
    let virtualized = cpuinfo.contains(" hypervisor");
    Ok(json!({
        "cpu": cpu,
        "cpus": cpus,
        "memory_gib": memory_gib,
        "kernel": kernel,
        "virtual_machine": virtualized,
    }))
}

/// The chart: forwarding rate per router core by case, and lookup cost against table size.
fn chart(report: &Value, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let font = fs::read(crate::setup::FONT)
        .with_context(|| format!("reading the chart's font {}", crate::setup::FONT))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into()))
        .map_err(|_| anyhow::anyhow!("{} is not a usable font", crate::setup::FONT))?;

    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(760);

    let cases: Vec<&Value> = report["cases"].as_array().into_iter().flatten().collect();
    let mpps = |case: &Value, key: &str| case[key].as_f64().unwrap_or(0.0) / 1e6;
    let right_end = cases
        .iter()
        .map(|c| mpps(c, "pps_per_core_max"))
        .fold(1.0, f64::max)
        * 1.15;
    let count = cases.len() as u32;
    let mut rate = ChartBuilder::on(&left)
        .caption("Forwarding rate per router core", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(110)
        .build_cartesian_2d(0.0..right_end, (0..count).into_segmented())?;
    rate.configure_mesh()
        .disable_y_mesh()
        .y_labels(cases.len())
        .y_label_formatter(&|segment| match segment {
            SegmentValue::CenterOf(i) => (count - 1)
                .checked_sub(*i)
                .and_then(|i| cases.get(i as usize))
                .and_then(|c| c["name"].as_str())
                .unwrap_or("")
                .to_owned(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 14))
        .x_desc("Mpps: packets forwarded per second of router CPU (median, min-max)")
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    rate.draw_series(cases.iter().enumerate().map(|(i, case)| {
        let color = match case["router"].as_str() {
            Some("kernel") => RGBColor(200, 90, 60),
            Some("ceiling") => RGBColor(130, 130, 130),
            Some("pop-dataplane") => RGBColor(40, 110, 180),
            _ => RGBColor(140, 180, 220),
        };
        let i = count - 1 - i as u32;
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (
                    mpps(case, "pps_per_core_median"),
                    SegmentValue::Exact(i + 1),
                ),
            ],
            color.filled(),
        );
        bar.set_margin(4, 4, 0, 0);
        bar
    }))?;
    rate.draw_series(cases.iter().enumerate().map(|(i, case)| {
        let i = count - 1 - i as u32;
        PathElement::new(
            vec![
                (mpps(case, "pps_per_core_min"), SegmentValue::CenterOf(i)),
                (mpps(case, "pps_per_core_max"), SegmentValue::CenterOf(i)),
            ],
            BLACK.stroke_width(2),
        )
    }))?;

    let sizes: Vec<&Value> = report["lookup"].as_array().into_iter().flatten().collect();
    let ns = |size: &Value, key: &str| size[key].as_f64().unwrap_or(0.0);
    let top = sizes
        .iter()
        .flat_map(|s| {
            [
                ns(s, "ns_per_packet_v4_max"),
                ns(s, "ns_per_packet_v6_max"),
                ns(s, "lpm_trie_ns_per_packet_v4_median"),
                ns(s, "lpm_trie_ns_per_packet_v6_median"),
            ]
        })
        .fold(10.0, f64::max)
        * 1.15;
    let routes_max = sizes
        .iter()
        .filter_map(|s| s["routes_v4"].as_f64())
        .fold(10.0, f64::max)
        * 2.0;
    let mut lookup = ChartBuilder::on(&right)
        .caption("Lookup cost against table size", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0..routes_max).log_scale(), 0.0..top)?;
    lookup
        .configure_mesh()
        .x_label_formatter(&|routes| match *routes {
            r if r >= 1e6 => format!("{}M", r / 1e6),
            r if r >= 1e3 => format!("{}k", r / 1e3),
            r => format!("{r}"),
        })
        .y_label_formatter(&|ns| format!("{ns:.0}"))
        .label_style(("sans-serif", 14))
        .x_desc("routes in the table")
        .y_desc("ns per packet (XDP program, BPF_PROG_TEST_RUN)")
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    for (key, routes, color, label) in [
        (
            "ns_per_packet_v4_median",
            "routes_v4",
            RGBColor(40, 110, 180),
            "IPv4, compiled",
        ),
        (
            "ns_per_packet_v6_median",
            "routes_v6",
            RGBColor(200, 90, 60),
            "IPv6, compiled",
        ),
        (
            "lpm_trie_ns_per_packet_v4_median",
            "routes_v4",
            RGBColor(140, 180, 225),
            "IPv4, --fib lpm-trie",
        ),
        (
            "lpm_trie_ns_per_packet_v6_median",
            "routes_v6",
            RGBColor(235, 165, 140),
            "IPv6, --fib lpm-trie",
        ),
    ] {
        let points: Vec<(f64, f64)> = sizes
            .iter()
            .map(|s| (s[routes].as_f64().unwrap_or(1.0), ns(s, key)))
            .collect();
        lookup
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        lookup.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    lookup
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
