//! Two minutes of the soak run (`cargo xtask soak --minutes N` runs it for longer): full-rate
//! traffic through the full table under route churn, link flaps and reloads; every frame
//! accounted for, the daemon's memory flat, the tables as expected at the end.
//!
//! Needs root, iproute2 and the real table (../shared/data/fulltable-2023).

use pop_dataplane_tests::{
    bench::Tools,
    bench_binary, dataplane_binary,
    soak::{Options, soak},
};

#[test]
fn two_minutes_of_traffic_churn_flaps_and_reloads_lose_nothing_unaccounted() {
    let tools = Tools {
        dataplane: dataplane_binary(),
        bench: bench_binary(),
    };
    let report = soak(&tools, &Options::minutes(2.0), &mut |line| {
        println!("{line}")
    })
    .unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let problems = report.problems();
    assert!(problems.is_empty(), "{problems:#?}");
}
