//! End to end: the route tables of a running daemon under a full table, churn and whole-table
//! replacement, in both lookup modes. Packets are sent between namespaces with the benchmark's
//! generator in bursts that the router and the sink take whole (no ring can overflow), so
//! every frame is accounted for; a frame that found no route shows in the router's counters.
//!
//! Needs root, iproute2 and ethtool (`cargo xtask test` installs them).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use ipnet::{IpNet, Ipv4Net};
use pop_dataplane_tests::{
    bench::{
        Amount, BenchLab, Rng, Router, SINK_NEXTHOPS_V4, Table, Tools, Traffic, full_table,
        random_address,
    },
    bench_binary, dataplane_binary, fulltable,
    lab::{ROUTER_A, ROUTER_B},
    netns::run,
};
use serde_json::Value;

fn tools() -> Tools {
    Tools {
        dataplane: dataplane_binary(),
        bench: bench_binary(),
    }
}

/// A counter of the router's ingress port.
fn counter(stats: &Value, path: &[&str]) -> u64 {
    let port = stats["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == ROUTER_A.ifname)
        .unwrap();
    path.iter()
        .fold(port, |v, key| &v[*key])
        .as_u64()
        .unwrap_or_else(|| panic!("no {path:?} in {port}"))
}

/// `count` IPv4 /24s in 198.19.0.0/16, and 4 destinations in each.
fn bench_prefixes(first: u8, count: u8, rng: &mut Rng) -> (Vec<Ipv4Net>, Vec<IpAddr>) {
    let prefixes: Vec<Ipv4Net> = (first..first + count)
        .map(|i| Ipv4Net::new(Ipv4Addr::new(198, 19, i, 0), 24).unwrap())
        .collect();
    let destinations = prefixes
        .iter()
        .flat_map(|&p| {
            (0..4)
                .map(|_| random_address(IpNet::V4(p), &mut *rng))
                .collect::<Vec<_>>()
        })
        .collect();
    (prefixes, destinations)
}

fn traffic(destinations: Vec<IpAddr>) -> Traffic {
    Traffic {
        range: (destinations[0], destinations[0]),
        destinations,
        ports: 2,
        frame_size: 64,
    }
}

#[test]
fn route_churn_under_traffic_never_misses_a_route() {
    let tools = tools();
    for router in [Router::Dataplane, Router::DataplaneLpmTrie] {
        let mut rng = Rng::new(7);
        // 16 /24s the traffic goes to, among 20,000 real prefixes.
        let (hot, destinations) = bench_prefixes(0, 16, &mut rng);
        let (real_v4, _) = fulltable::read().unwrap();
        let mut churned: Vec<Ipv4Net> = hot.clone();
        churned.extend(real_v4.iter().step_by(45).take(20_000 - hot.len()));
        let table = Table {
            v4: churned.clone(),
            v6: Vec::new(),
        };
        let mut lab = BenchLab::new("pdpt-fib", &tools, router, &table, false).unwrap();
        // Batches of 2,000 in place, half of the traffic's prefixes in each of the first two.
        let churn = lab.churn(&churned, 2_000).unwrap();
        let traffic = traffic(destinations);
        let before = lab.stats().unwrap();
        let (changes, run) = std::thread::scope(|scope| {
            let pushing = scope.spawn(|| churn.run(Duration::from_secs(3)).unwrap());
            let mut runs = Vec::new();
            while !pushing.is_finished() {
                runs.push(
                    lab.measure(
                        &traffic,
                        Amount::Count {
                            frames: 2048,
                            burst: 64,
                        },
                    )
                    .unwrap(),
                );
            }
            (pushing.join().unwrap(), runs)
        });
        let after = lab.stats().unwrap();
        let sent: u64 = run.iter().map(|r| r.sent).sum();
        let delivered: u64 = run.iter().map(|r| r.delivered).sum();
        let delta = |path: &[&str]| counter(&after, path) - counter(&before, path);
        for short in run.iter().filter(|r| r.delivered != r.sent) {
            println!("{router:?}: a run lost frames: {}", short.to_json());
            println!("before: {before}\nafter: {after}");
        }
        println!(
            "{router:?}: {} route changes in {:.1} s ({:.0}/s); {sent} frames sent, {delivered} \
             delivered, {} forwarded",
            changes.0,
            changes.1,
            changes.0 as f64 / changes.1,
            delta(&["forwarded_packets"])
        );
        assert!(
            changes.0 >= 4_000,
            "the churn made too few changes to test anything"
        );
        assert!(sent > 0);
        assert_eq!(delivered, sent, "{router:?}: frames lost during churn");
        assert_eq!(
            delta(&["to_kernel", "no_route"]),
            0,
            "{router:?}: a route missed"
        );
        assert_eq!(delta(&["to_kernel", "unresolved"]), 0, "{router:?}");
        assert_eq!(delta(&["dropped_packets"]), 0, "{router:?}");
        assert_eq!(delta(&["forwarded_packets"]), sent, "{router:?}");
    }
}

#[test]
fn a_whole_table_replaced_at_once_under_traffic() {
    let tools = tools();
    for router in [Router::Dataplane, Router::DataplaneLpmTrie] {
        let mut rng = Rng::new(11);
        // Table A: /24s 0-15 and 16-31 of 198.19.0.0/16; table B: 0-15 and 32-47, through
        // the other next hop, and 30,000 real prefixes in both (a bulk change).
        let (both, to_both) = bench_prefixes(0, 16, &mut rng);
        let (only_a, to_only_a) = bench_prefixes(16, 16, &mut rng);
        let (only_b, to_only_b) = bench_prefixes(32, 16, &mut rng);
        let (real_v4, _) = fulltable::read().unwrap();
        let real: Vec<Ipv4Net> = real_v4.iter().step_by(30).take(30_000).copied().collect();
        let a = Table {
            v4: [both.clone(), only_a.clone(), real.clone()].concat(),
            v6: Vec::new(),
        };
        let mut lab = BenchLab::new("pdpt-fib", &tools, router, &a, false).unwrap();
        let b_file = lab.lab.dir().join("table-b");
        let b_lines: String = [both.clone(), only_b.clone(), real.clone()]
            .concat()
            .iter()
            .map(|p| format!("{p} via {} dev {}\n", SINK_NEXTHOPS_V4[1], ROUTER_B.ifname))
            .collect();
        std::fs::write(&b_file, b_lines).unwrap();

        let traffic_both = traffic(to_both);
        let before = lab.stats().unwrap();
        let mut replace = std::process::Command::new(&tools.dataplane);
        replace
            .arg("--run-dir")
            .arg(lab.lab.run_dir())
            .args(["route", "load", "--replace-all"])
            .arg(&b_file);
        let (reply, runs) = std::thread::scope(|scope| {
            let replacing = scope.spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                run(&mut replace).unwrap()
            });
            let mut runs = Vec::new();
            while !replacing.is_finished() || runs.len() < 3 {
                runs.push(
                    lab.measure(
                        &traffic_both,
                        Amount::Count {
                            frames: 1024,
                            burst: 64,
                        },
                    )
                    .unwrap(),
                );
            }
            (replacing.join().unwrap(), runs)
        });
        println!("{router:?}: {}", reply.trim());
        assert!(reply.contains("16 removed"), "{reply}");
        let after = lab.stats().unwrap();
        let sent: u64 = runs.iter().map(|r| r.sent).sum();
        assert_eq!(runs.iter().map(|r| r.delivered).sum::<u64>(), sent);
        assert_eq!(
            counter(&after, &["to_kernel", "no_route"])
                - counter(&before, &["to_kernel", "no_route"]),
            0,
            "{router:?}: a prefix in both tables missed during the replace"
        );

        // Afterwards: A's own prefixes gone, B's there, through B's next hop.
        for (destinations, routed) in [(&to_only_a, false), (&to_only_b, true)] {
            let before = lab.stats().unwrap();
            let run = lab
                .measure(
                    &traffic(destinations.clone()),
                    Amount::Count {
                        frames: 256,
                        burst: 64,
                    },
                )
                .unwrap();
            let after = lab.stats().unwrap();
            let no_route = counter(&after, &["to_kernel", "no_route"])
                - counter(&before, &["to_kernel", "no_route"]);
            if routed {
                assert_eq!((run.delivered, no_route), (256, 0), "{router:?}");
            } else {
                assert_eq!((run.delivered, no_route), (0, 256), "{router:?}");
            }
        }
        let routes: Value = serde_json::from_str(
            &lab.lab
                .cli(
                    &tools.dataplane,
                    &["route", "list", "--json", "--source", "cli"],
                )
                .unwrap(),
        )
        .unwrap();
        let routes = routes.as_array().unwrap();
        assert_eq!(routes.len(), 16 + 16 + 30_000);
        let via: HashMap<String, String> = routes
            .iter()
            .map(|r| (r["prefix"].as_str().unwrap().to_owned(), r.to_string()))
            .collect();
        assert!(via[&both[3].to_string()].contains(SINK_NEXTHOPS_V4[1]));
        assert!(!via.contains_key(&only_a[0].to_string()));
    }
}

#[test]
fn the_full_table_loads_and_every_sampled_address_finds_its_longest_prefix() {
    let tools = tools();
    let (real_v4, real_v6) = fulltable::read().unwrap();
    let (table, _) = full_table(&real_v4, &real_v6);
    let lab = BenchLab::new("pdpt-fib", &tools, Router::Dataplane, &table, false).unwrap();
    let (output, took) = lab.load().unwrap();
    println!("full table: {} ({took:.2?} with the CLI)", output.trim());
    let status = lab.status().unwrap();
    assert_eq!(status["fib"], "compiled");
    assert!(
        output.starts_with(&format!("{} routes set", table.len())),
        "{output}"
    );
    // The table, and the lab's own: its links' prefixes and the host's addresses.
    let routes = status["routes_v4"].as_u64().unwrap() + status["routes_v6"].as_u64().unwrap();
    assert!(
        (table.len() as u64..table.len() as u64 + 16).contains(&routes),
        "{routes} routes"
    );
    let memory = status["table_memory"]["v4_bytes"].as_u64().unwrap()
        + status["table_memory"]["v6_bytes"].as_u64().unwrap();
    // The compact tables: a full table within 32 MiB (the DIR-24-8 tables before took
    // 114.9 MiB, their IPv4 first level alone 64 MiB).
    assert!(
        memory > 1 << 20 && memory <= 32 << 20,
        "{memory} bytes of kernel memory"
    );

    // The longest prefix of sampled addresses, by brute force over the table, against what
    // the loaded program finds (`trace` runs it on the packet).
    let mut rng = Rng::new(3);
    let by_len: Vec<std::collections::HashSet<IpNet>> = (0..=128)
        .map(|len| {
            table
                .v4
                .iter()
                .map(|&p| IpNet::V4(p))
                .chain(table.v6.iter().map(|&p| IpNet::V6(p)))
                .filter(|p| p.prefix_len() == len)
                .collect()
        })
        .collect();
    let is_route = |p: &IpNet| by_len[usize::from(p.prefix_len())].contains(p);
    let addresses: Vec<IpAddr> = (0..5_000)
        .map(|i| {
            let prefix = if i % 3 == 2 {
                IpNet::V6(table.v6[(rng.next_u64() % table.v6.len() as u64) as usize])
            } else {
                IpNet::V4(table.v4[(rng.next_u64() % table.v4.len() as u64) as usize])
            };
            random_address(prefix, &mut rng)
        })
        .collect();
    let singles: Vec<Value> = addresses[..60]
        .iter()
        .map(|&addr| assert_finds_longest(&lab, &tools, addr, is_route))
        .collect();

    // All 5,000 in one `trace --batch`: each finds its longest prefix, and the first 60
    // answer exactly as their single traces did.
    let lines: String = addresses
        .iter()
        .map(|addr| format!("--in {} --dst {addr}\n", ROUTER_A.ifname))
        .collect();
    let mut batch = lab
        .lab
        .dataplane_command(&tools.dataplane)
        .args(["trace", "--batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = batch.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        std::io::Write::write_all(&mut stdin, lines.as_bytes()).unwrap();
    });
    let started = std::time::Instant::now();
    let out = batch.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(results.len(), addresses.len());
    println!(
        "trace --batch: {} probes in {:.2?}",
        results.len(),
        started.elapsed()
    );
    for (i, (result, addr)) in results.iter().zip(&addresses).enumerate() {
        assert_eq!(result["line"], i + 1);
        assert_eq!(
            result["trace"]["route"]["prefix"],
            longest(*addr, is_route).to_string(),
            "{addr}: {result}"
        );
        if let Some(single) = singles.get(i) {
            assert_eq!(&result["trace"], single, "{addr}");
        }
    }
}

/// The longest of the prefixes `is_route` accepts that contain `addr`, by brute force.
fn longest(addr: IpAddr, is_route: impl Fn(&IpNet) -> bool) -> IpNet {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (0..=max)
        .rev()
        .map(|len| IpNet::new(addr, len).unwrap().trunc())
        .find(|p| is_route(p))
        .unwrap()
}

/// The loaded program (`trace` runs it on a packet to `addr`) finds the longest of the
/// prefixes `is_route` accepts that contain `addr`, as a brute-force search does.
/// Returns the trace.
fn assert_finds_longest(
    lab: &BenchLab,
    tools: &Tools,
    addr: IpAddr,
    is_route: impl Fn(&IpNet) -> bool,
) -> Value {
    let longest = longest(addr, is_route);
    let out = lab
        .lab
        .cli(
            &tools.dataplane,
            &[
                "trace",
                "--in",
                ROUTER_A.ifname,
                "--dst",
                &addr.to_string(),
                "--json",
            ],
        )
        .unwrap();
    let trace: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        trace["route"]["prefix"],
        longest.to_string(),
        "{addr}: {trace}"
    );
    trace
}

/// A VRF-sized table: a thousand real prefixes of each family, loaded route by route (fewer
/// than a bulk load's 10,000). The burst outruns the reuse of freed cells and grows the IPv6
/// array to about 3 MiB; the daemon then compacts the tables into arrays sized for them,
/// which must still find every route.
#[test]
fn a_thousand_routes_loaded_route_by_route_take_little_memory() {
    let tools = tools();
    let (real_v4, real_v6) = fulltable::read().unwrap();
    let mut rng = Rng::new(11);
    let mut table = Table {
        v4: (0..999)
            .map(|_| real_v4[(rng.next_u64() % real_v4.len() as u64) as usize])
            .chain([Ipv4Net::default()])
            .collect(),
        v6: (0..999)
            .map(|_| real_v6[(rng.next_u64() % real_v6.len() as u64) as usize])
            .chain([ipnet::Ipv6Net::default()])
            .collect(),
    };
    table.v4.sort();
    table.v4.dedup();
    table.v6.sort();
    table.v6.dedup();
    let lab = BenchLab::new("pdpt-fib", &tools, Router::Dataplane, &table, false).unwrap();
    let (output, _) = lab.load().unwrap();
    assert!(
        output.starts_with(&format!("{} routes set", table.len())),
        "{output}"
    );
    // The cells the burst let go are free after their 100 ms of quarantine; the daemon
    // looks for such room every second.
    let memory = || {
        let status = lab.status().unwrap();
        let memory = &status["table_memory"];
        (
            memory["v4_bytes"].as_u64().unwrap(),
            memory["v6_bytes"].as_u64().unwrap(),
        )
    };
    let after_load = memory();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (v4, v6) = loop {
        let (v4, v6) = memory();
        if (v4 < 1 << 20 && v6 < 1 << 20) || std::time::Instant::now() > deadline {
            break (v4, v6);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "{} + {} routes: {after_load:?} bytes after the load, then {v4} + {v6}",
        table.v4.len(),
        table.v6.len()
    );
    assert!(v4 < 1 << 20 && v6 < 1 << 20, "{v4} + {v6} bytes");
    for prefix in table
        .v6
        .iter()
        .step_by(50)
        .map(|&p| IpNet::V6(p))
        .chain(table.v4.iter().step_by(100).map(|&p| IpNet::V4(p)))
    {
        let addr = random_address(prefix, &mut rng);
        assert_finds_longest(&lab, &tools, addr, |p| match p {
            IpNet::V4(p) => table.v4.contains(p),
            IpNet::V6(p) => table.v6.contains(p),
        });
    }
}
