//! Bad input, end to end: every broken config file and route file of the corpus in
//! `tests/corpus/bad-input/` (written by its `generate.py`; the expected errors are in its
//! `EXPECTED`), plus a 100 MB config and a 100 MB route file made here, given to a running
//! daemon (`reload`, `route load`). Each must be refused with an error that names the file and,
//! where there is one, the line; and the running dataplane must not change: same routes, same
//! ACL and flow rules, same program decisions, and traffic still forwarded.
//!
//! Needs root, iproute2 and ping.

use std::{fs, path::Path};

use pop_dataplane_tests::{
    dataplane_binary,
    lab::{HOST_B, Lab},
    sflow::Receiver,
};
use serde_json::Value;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/bad-input");

/// What must not change: the routes, the ACL, the flow rules, the route counts, and the
/// sFlow agent (its collectors and rates).
fn snapshot(lab: &Lab, binary: &Path) -> (Value, Value, Value, (Value, Value, Value), Value) {
    let json =
        |args: &[&str]| -> Value { serde_json::from_str(&lab.cli(binary, args).unwrap()).unwrap() };
    let status = json(&["status", "--json"]);
    let sflow = json(&["sflow", "show", "--json"]);
    (
        json(&["route", "list", "--json"]),
        json(&["acl", "list", "--json"]),
        json(&["flow", "list", "--json"]),
        (
            status["routes_v4"].clone(),
            status["nexthops"].clone(),
            status["ports"].clone(),
        ),
        serde_json::json!([
            sflow["collectors"],
            sflow["interfaces"],
            sflow["agent_address"]
        ]),
    )
}

fn trace(lab: &Lab, binary: &Path) -> Value {
    let mut trace = lab
        .trace(binary, &["--in", "ra", "--dst", HOST_B.ipv4])
        .unwrap();
    trace.as_object_mut().unwrap().remove("counters");
    trace
}

#[test]
fn every_broken_file_is_refused_with_its_place_and_nothing_changes() {
    let binary = dataplane_binary();
    let lab = Lab::new("pdpt-bad").unwrap();
    let good = format!(
        "[filter]\nmartian_sources = true\n\n{}\n[[acl]]\naction = \"deny\"\nsrc = \
         \"198.18.9.0/24\"\n[[flow]]\nrule = \"destination 198.18.2.0/24 protocol =udp \
         destination-port =9 then drop\"\n\n[sflow]\ncollectors = [\"{}\"]\n\
         sampling_rate = 1000\nsource_port = 6998\n",
        lab.router_config(),
        HOST_B.ipv4
    );
    let _daemon = lab.start_dataplane(&binary, &good, "native").unwrap();
    // A source port another program holds (the corpus's sflow-source-port-in-use).
    let _holder = Receiver::bind(&lab.router, "0.0.0.0:6999").unwrap();
    // A reload of the same config keeps its sFlow source port (the new agent binds it
    // while the old one still holds it).
    fs::write(lab.config_path(), &good).unwrap();
    lab.cli(&binary, &["reload"]).unwrap();
    lab.cli(&binary, &["route", "add", "198.18.4.0/24", "blackhole"])
        .unwrap();
    let before = snapshot(&lab, &binary);
    let decision = trace(&lab, &binary);
    assert_eq!(decision["action"], "forward", "{decision}");

    let manifest = fs::read_to_string(Path::new(CORPUS).join("EXPECTED")).unwrap();
    let mut cases: Vec<(String, Vec<u8>, String)> = manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (case, expected) = line.split_once('\t').expect("case<TAB>expected");
            let bytes = fs::read(Path::new(CORPUS).join(case)).unwrap();
            (case.to_owned(), bytes, expected.to_owned())
        })
        .collect();
    assert!(cases.len() >= 50, "{} cases", cases.len());

    // 100 MB each: a config (refused for its size before it is read) and a route file of
    // 2.9 million good lines and one bad one at the end, found and named.
    let mut big_config = good.clone().into_bytes();
    big_config.resize(100 << 20, b'#');
    big_config.push(b'\n');
    cases.push((
        "config/100-megabytes.toml".to_owned(),
        big_config,
        "{file}: 104857601 bytes; a config file is at most 16 MiB".to_owned(),
    ));
    let mut big_routes = String::with_capacity(101 << 20);
    let mut lines = 0;
    'fill: for a in 0..=255u32 {
        for b in 0..=255u32 {
            for c in (0..=255u32).step_by(2) {
                if big_routes.len() > 100 << 20 {
                    break 'fill;
                }
                big_routes += &format!("{}.{a}.{b}.{c}/31 blackhole\n", 100 + (c & 1));
                lines += 1;
            }
        }
    }
    big_routes += "198.18.4.1/24 blackhole\n";
    cases.push((
        "routes/100-megabytes.routes".to_owned(),
        big_routes.into_bytes(),
        format!("{{file}}:{}: 198.18.4.1/24 has host bits set", lines + 1),
    ));

    let config_path = lab.config_path();
    let mut failures = Vec::new();
    for (case, bytes, expected) in &cases {
        let (args, file) = if case.starts_with("config/") {
            fs::write(&config_path, bytes).unwrap();
            (vec!["reload".to_owned()], config_path.display().to_string())
        } else {
            let path = lab.dir().join(Path::new(case).file_name().unwrap());
            fs::write(&path, bytes).unwrap();
            let file = path.display().to_string();
            (vec!["route".into(), "load".into(), file.clone()], file)
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = lab.cli_output(&binary, &args).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = expected.replace("{file}", &file);
        if out.status.success() || !stderr.contains(&expected) {
            failures.push(format!(
                "{case}: exit {:?}\n  expected: {expected}\n  got:      {}",
                out.status.code(),
                stderr.trim()
            ));
        } else if stderr.len() > 2000 {
            failures.push(format!("{case}: an error of {} bytes", stderr.len()));
        }
        if snapshot(&lab, &binary) != before {
            failures.push(format!("{case}: the dataplane's state changed"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!("{} broken inputs refused, nothing changed", cases.len());

    // The program still decides the same, traffic still flows, and a good config reloads.
    assert_eq!(trace(&lab, &binary), decision);
    let ping = lab
        .a
        .exec("ping", &["-c", "3", "-i", "0.05", "-W", "1", HOST_B.ipv4])
        .unwrap();
    assert!(ping.contains("3 received"), "{ping}");
    fs::write(&config_path, &good).unwrap();
    lab.cli(&binary, &["reload"]).unwrap();
    assert_eq!(snapshot(&lab, &binary), before);
}
