//! The benchmark's smoke case: every part `cargo xtask bench` uses (labs for the kernel, the
//! no-lookup ceiling, the kernel-FIB XDP router and pop-dataplane; the XDP generator, the sink, the lookup
//! micro-benchmark) run on a few thousand frames, and every frame sent must arrive. So the
//! benchmark cannot rot unnoticed between runs.
//!
//! Frames go in bursts of 64, each taken through the router and the sink before the next
//! (no threaded NAPI here): no ring can overflow, so any loss is a bug.

use pop_dataplane_tests::{
    bench::{
        Amount, BenchLab, FILTER_DENY_RULES, FLOW_RULES, Rng, Router, Table, Tools, few_traffic,
    },
    bench_binary, dataplane_binary,
};

const FRAMES: u64 = 4096;

fn tools() -> Tools {
    Tools {
        dataplane: dataplane_binary(),
        bench: bench_binary(),
    }
}

#[test]
fn every_frame_the_generator_sends_arrives_through_each_router() {
    let tools = tools();
    let mut rng = Rng::new(1);
    for router in [
        Router::Kernel,
        Router::Ceiling,
        Router::FibForward,
        Router::Dataplane,
        Router::DataplaneLpmTrie,
        Router::DataplaneFiltered,
        Router::DataplaneUrpf,
        Router::DataplaneFlows,
        Router::DataplaneFlood,
        Router::DataplaneBlackhole,
        Router::DataplaneSampled,
        Router::DataplaneSampledAll,
    ] {
        // The flood router's rule, and the blackhole router's routes (with no table loaded
        // over them), drop everything the generator sends.
        let flood = matches!(router, Router::DataplaneFlood | Router::DataplaneBlackhole);
        let table = if router == Router::DataplaneBlackhole {
            Table::default()
        } else {
            Table::few()
        };
        let mut lab = BenchLab::new("pdpt", &tools, router, &table, false).unwrap();
        for (ipv6, size) in [(false, 64), (true, 78), (false, 1518)] {
            let traffic = few_traffic(ipv6, size, &mut rng);
            let run = lab
                .measure(
                    &traffic,
                    Amount::Count {
                        frames: FRAMES,
                        burst: 64,
                    },
                )
                .unwrap();
            let mut what = format!(
                "{router:?}, IPv{}, {size} bytes: {run:?}",
                if ipv6 { 6 } else { 4 }
            );
            if router.is_dataplane() {
                what += &format!("\n{}", lab.stats().unwrap());
            }
            assert_eq!(run.sent, FRAMES, "{what}");
            assert_eq!(run.delivered, if flood { 0 } else { FRAMES }, "{what}");
            assert_eq!(run.lost_in, 0, "{what}");
            // The router's ports also carry the hosts' own IPv6 chatter (router solicitations,
            // MLD), which the sink does not count.
            assert!(run.router_rx >= FRAMES, "{what}");
            if !flood {
                assert_eq!(run.lost_out, 0, "{what}");
                assert!(run.router_tx >= FRAMES, "{what}");
            }
        }
        if flood {
            let stats = lab.stats().unwrap();
            let reason = if router == Router::DataplaneFlood {
                "dropped.flow"
            } else {
                "dropped.blackhole"
            };
            let dropped = pop_dataplane_tests::lab::counter(&stats, "ra", reason);
            assert_eq!(dropped, 3 * FRAMES, "{stats}");
            continue;
        }
        if router == Router::Dataplane {
            // The VRF-scale step: VRFs added by a reload, a VRF's routes loaded into it; more
            // routes, and more table memory.
            let status = |lab: &BenchLab| lab.status().unwrap();
            let memory = |s: &serde_json::Value| {
                s["table_memory"]["v4_bytes"].as_u64().unwrap()
                    + s["table_memory"]["v6_bytes"].as_u64().unwrap()
            };
            let before = status(&lab);
            lab.add_vrfs(3).unwrap();
            lab.load_vrf_routes("v1", &Table::few().v4).unwrap();
            let after = status(&lab);
            assert_eq!(
                after["routes_v4"].as_u64().unwrap(),
                before["routes_v4"].as_u64().unwrap() + 8,
                "{after}"
            );
            assert!(memory(&after) > memory(&before), "{before} {after}");
        }
        if router == Router::DataplaneFlows {
            let rules = lab
                .lab
                .cli(&tools.dataplane, &["flow", "list", "--json"])
                .unwrap();
            let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
            assert_eq!(rules.as_array().unwrap().len(), FLOW_RULES);
        }
        if router == Router::DataplaneFiltered {
            // The filter is there (and matched none of the traffic, which all arrived).
            let rules = lab
                .lab
                .cli(&tools.dataplane, &["acl", "list", "--json"])
                .unwrap();
            let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
            let rules = rules.as_array().unwrap();
            let deny = rules.iter().filter(|r| r["origin"] == "config").count();
            let martian = rules.iter().filter(|r| r["origin"] == "martian").count();
            assert_eq!(deny, FILTER_DENY_RULES);
            assert!(martian >= 7, "{martian} martian rules");
        }
        if let Router::DataplaneSampled | Router::DataplaneSampledAll = router {
            // Sampling took its share of what arrived on the generator's side, or (1-in-1)
            // each frame the ring had room for, and counted the rest as lost.
            let sflow = lab.sflow().unwrap();
            let ra = sflow["interfaces"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["name"] == "ra")
                .unwrap()
                .clone();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let mut read = 0;
            while std::time::Instant::now() < deadline {
                read = lab.sflow().unwrap()["samples"].as_u64().unwrap();
                if router == Router::DataplaneSampled
                    || read + ra["lost"].as_u64().unwrap() >= 3 * FRAMES
                {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if router == Router::DataplaneSampledAll {
                assert_eq!(ra["sampling_rate"], 1, "{sflow}");
                let lost = ra["lost"].as_u64().unwrap();
                assert!(
                    read + lost >= 3 * FRAMES,
                    "read {read}, lost {lost}: {sflow}"
                );
            } else {
                assert_eq!(
                    ra["sampling_rate"],
                    pop_dataplane_tests::bench::SAMPLING_RATE
                );
            }
        }
        if router == Router::DataplaneUrpf {
            // Strict uRPF ran on every frame, and each passed: their sources route back
            // through the ingress.
            let stats = lab.stats().unwrap();
            assert_eq!(
                pop_dataplane_tests::lab::counter(&stats, "ra", "dropped.urpf"),
                0,
                "{stats}"
            );
        }
        if router.is_dataplane() || router == Router::FibForward {
            if router.is_dataplane() {
                let stats = lab.stats().unwrap();
                let ra = stats["interfaces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|i| i["name"] == "ra")
                    .unwrap();
                assert_eq!(
                    ra["forwarded_packets"].as_u64(),
                    Some(3 * FRAMES),
                    "{stats}"
                );
            }

            // The kernel-FIB router's too: every frame found its route and neighbour in the
            // kernel and was redirected, not passed to the kernel's own forwarding.
            let traffic = few_traffic(false, 64, &mut rng);
            let cost = lab.lookup_cost(&traffic.destinations).unwrap();
            let packets = cost["packets"].as_u64().unwrap();
            assert_eq!(packets, traffic.destinations.len() as u64, "{cost}");
            // Every packet redirected (XDP_REDIRECT is 4), and both runs timed by the kernel.
            // No bound on the cost itself: on a few hundred frames the difference between
            // two timings is noise (it came out negative once), and figures are the bench's job.
            assert_eq!(cost["actions"]["4"].as_u64(), Some(packets), "{cost}");
            assert!(cost["overhead_ns"].as_f64().unwrap() > 0.0, "{cost}");
            assert!(
                cost["ns_per_packet"].as_f64().unwrap().is_finite(),
                "{cost}"
            );
        }
        if matches!(
            router,
            Router::Dataplane | Router::Ceiling | Router::FibForward
        ) {
            // The program's own run time, from the kernel's BPF statistics.
            let traffic = few_traffic(false, 64, &mut rng);
            let amount = Amount::Count {
                frames: FRAMES,
                burst: 64,
            };
            let ns = lab.program_ns(&traffic, amount).unwrap();
            assert!(ns.is_finite() && ns > 0.0, "{router:?}: {ns} ns");
        }
    }
}
