//! End to end through network namespaces: VRFs. Host A's port is in VRF blue, host B's two
//! links in the default VRF. Host B's service address has a route in each VRF, over a
//! different link: blue's comes from kernel table 100 (as BIRD or FRR would install it),
//! the default VRF's from the config. Real pings show each VRF's traffic taking its own
//! route, a prefix only the default VRF has unreachable from blue's port, CLI routes in a
//! VRF, and a VRF's kernel table followed as it changes. Then BIRD on the router with a
//! routing table per VRF: a transit session filling the default VRF, a customer session
//! filling blue, each session's routes in its VRF only.
//!
//! This kernel has no VRF devices (CONFIG_NET_VRF): interfaces are bound to VRFs by the
//! config, and kernel tables are followed by number.
//!
//! Needs root, iproute2, ethtool, ping and bird2.

use std::time::{Duration, Instant};

use pop_dataplane_tests::{
    bird::{Bird, bgp_session as bgp},
    dataplane_binary,
    lab::{
        B_SERVICE_V4, HOST_A, HOST_B, HOST_B2, Lab, LabOptions, ROUTER_A, ROUTER_B, ROUTER_C,
        counter,
    },
};

const BLUE_TABLE: &str = "100";

fn config() -> String {
    format!(
        r#"
[[vrf]]
name = "blue"
sync_kernel_table = {BLUE_TABLE}

[[interface]]
name = "{ra}"
vrf = "blue"
[[interface]]
name = "{rb}"
[[interface]]
name = "{rc}"

[[nexthop]]
name = "host-a"
dev = "{ra}"
via = "{a}"
lladdr = "{a_mac}"
[[nexthop]]
name = "host-b"
dev = "{rb}"
via = "{b}"
lladdr = "{b_mac}"
[[nexthop]]
name = "host-b2"
dev = "{rc}"
via = "{b2}"
lladdr = "{b2_mac}"

# The default VRF: host B's replies to host A (a route to blue's port: leaked, by name),
# and host B's service address over the first link.
[[route]]
prefix = "198.18.1.0/24"
nexthop = "host-a"
[[route]]
prefix = "{service}/32"
nexthop = "host-b"
[[route]]
prefix = "198.18.2.0/24"
nexthop = "host-b"
"#,
        ra = ROUTER_A.ifname,
        rb = ROUTER_B.ifname,
        rc = ROUTER_C.ifname,
        a = HOST_A.ipv4,
        a_mac = HOST_A.mac,
        b = HOST_B.ipv4,
        b_mac = HOST_B.mac,
        b2 = HOST_B2.ipv4,
        b2_mac = HOST_B2.mac,
        service = B_SERVICE_V4,
    )
}

/// Pings `to` from host A `count` times; how many came back.
fn ping(lab: &Lab, to: &str, count: u32) -> u32 {
    let out = lab
        .a
        .exec(
            "ping",
            &["-c", &count.to_string(), "-i", "0.01", "-W", "1", to],
        )
        .unwrap_or_else(|err| err.to_string());
    out.split(", ")
        .find_map(|part| part.strip_suffix(" received")?.parse().ok())
        .unwrap_or(0)
}

/// Waits until `route list --vrf VRF --json` has (or, with `present` false, lacks) `prefix`
/// from `source`.
fn wait_for_route(
    lab: &Lab,
    binary: &std::path::Path,
    vrf: &str,
    prefix: &str,
    source: &str,
    present: bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = lab
            .cli(binary, &["route", "list", "--json", "--vrf", vrf])
            .unwrap();
        let routes: serde_json::Value = serde_json::from_str(&out).unwrap();
        let found = routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["prefix"] == prefix && r["source"] == source && r["vrf"] == vrf);
        if found == present {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "route {prefix} from {source} in vrf {vrf}: never {}; routes: {out}",
            if present { "there" } else { "gone" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn each_vrf_forwards_by_its_own_table_only() {
    let binary = dataplane_binary();
    let lab = Lab::with(
        "pdpt-vrf",
        LabOptions {
            ipv6: false,
            second_link: true,
        },
    )
    .unwrap();
    // Blue's route to host B's service address, over the second link, in kernel table 100.
    lab.router
        .ip(&[
            "route",
            "add",
            &format!("{B_SERVICE_V4}/32"),
            "via",
            HOST_B2.ipv4,
            "dev",
            ROUTER_C.ifname,
            "table",
            BLUE_TABLE,
        ])
        .unwrap();
    let _daemon = lab.start_dataplane(&binary, &config(), "native").unwrap();
    let service = format!("{B_SERVICE_V4}/32");
    wait_for_route(&lab, &binary, "blue", &service, "kernel", true);
    // The same prefix in the default VRF, from the config, through the other link.
    let get: serde_json::Value = serde_json::from_str(
        &lab.cli(&binary, &["route", "get", B_SERVICE_V4, "--json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(get["vrf"], "default");
    assert_eq!(get["nexthops"][0]["dev"], ROUTER_B.ifname, "{get}");
    let get: serde_json::Value = serde_json::from_str(
        &lab.cli(
            &binary,
            &["route", "get", B_SERVICE_V4, "--vrf", "blue", "--json"],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(get["vrf"], "blue");
    assert_eq!(get["nexthops"][0]["dev"], ROUTER_C.ifname, "{get}");

    // `trace` and `stats` say which VRF an interface routes in.
    let trace = lab
        .trace(&binary, &["--in", ROUTER_A.ifname, "--dst", B_SERVICE_V4])
        .unwrap();
    assert_eq!(trace["vrf"], "blue", "{trace}");
    assert_eq!(trace["nexthop"]["egress"], ROUTER_C.ifname, "{trace}");
    let trace = lab
        .trace(&binary, &["--in", ROUTER_B.ifname, "--dst", B_SERVICE_V4])
        .unwrap();
    assert_eq!(trace["vrf"], "default", "{trace}");
    assert_eq!(trace["nexthop"]["egress"], ROUTER_B.ifname, "{trace}");
    let stats = lab.stats(&binary).unwrap();
    assert_eq!(
        pop_dataplane_tests::lab::interface(&stats, ROUTER_A.ifname)["vrf"],
        "blue"
    );
    assert_eq!(
        pop_dataplane_tests::lab::interface(&stats, ROUTER_B.ifname)["vrf"],
        "default"
    );

    // Host A's pings arrive in blue and take blue's route: out of the second link. The
    // replies come back over host B's first link, in the default VRF.
    let before = lab.stats(&binary).unwrap();
    assert_eq!(ping(&lab, B_SERVICE_V4, 20), 20);
    let after = lab.stats(&binary).unwrap();
    let d = |ifname, field| counter(&after, ifname, field) - counter(&before, ifname, field);
    assert_eq!(d(ROUTER_A.ifname, "forwarded_packets"), 20);
    assert_eq!(d(ROUTER_C.ifname, "tx_packets"), 20);
    assert_eq!(d(ROUTER_B.ifname, "tx_packets"), 0);
    assert_eq!(d(ROUTER_B.ifname, "forwarded_packets"), 20);
    assert_eq!(d(ROUTER_A.ifname, "tx_packets"), 20);

    // Host B's first subnet is in the default VRF only: from blue's port it has no route,
    // and goes to the kernel (whose forwarding is off here), never out of rb.
    let before = after;
    assert_eq!(ping(&lab, HOST_B.ipv4, 5), 0);
    let after = lab.stats(&binary).unwrap();
    let d = |ifname, field| counter(&after, ifname, field) - counter(&before, ifname, field);
    assert_eq!(d(ROUTER_A.ifname, "to_kernel.no_route"), 5);
    assert_eq!(d(ROUTER_A.ifname, "forwarded_packets"), 0);
    assert_eq!(d(ROUTER_B.ifname, "tx_packets"), 0);

    // A CLI route in blue: a blackhole for that subnet, dropped in XDP; deleted again.
    lab.cli(
        &binary,
        &["route", "add", "vrf", "blue", "198.18.2.0/24", "blackhole"],
    )
    .unwrap();
    let before = after;
    assert_eq!(ping(&lab, HOST_B.ipv4, 5), 0);
    let after = lab.stats(&binary).unwrap();
    assert_eq!(
        counter(&after, ROUTER_A.ifname, "dropped.blackhole")
            - counter(&before, ROUTER_A.ifname, "dropped.blackhole"),
        5
    );
    let list = lab
        .cli(&binary, &["route", "list", "--vrf", "blue"])
        .unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with("blue") && l.contains("198.18.2.0/24") && l.contains("cli")),
        "{list}"
    );
    lab.cli(&binary, &["route", "del", "vrf", "blue", "198.18.2.0/24"])
        .unwrap();
    wait_for_route(&lab, &binary, "blue", "198.18.2.0/24", "cli", false);

    // Mistakes name the VRF and change nothing.
    let routes_before = lab.cli(&binary, &["route", "list", "--json"]).unwrap();
    for (args, message) in [
        (
            &["route", "add", "vrf", "green", "198.18.2.0/24", "blackhole"][..],
            "vrf \"green\" is not one of the VRFs (default, blue)",
        ),
        (
            &["route", "del", "vrf", "green", "198.18.2.0/24"][..],
            "vrf \"green\" is not one of the VRFs (default, blue)",
        ),
        (
            &["route", "list", "--vrf", "green"][..],
            "vrf \"green\" is not one of the VRFs (default, blue)",
        ),
        (
            &["route", "del", "vrf", "blue", "198.18.2.0/24"][..],
            "no such route",
        ),
    ] {
        let out = lab.cli_output(&binary, args).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert_eq!(
        lab.cli(&binary, &["route", "list", "--json"]).unwrap(),
        routes_before
    );

    // Flow rules are a VRF's: blue's drops blue's pings in XDP; the default VRF's, for the
    // same destination, leaves them alone.
    let rule = |vrf: &[&'static str]| -> Vec<&'static str> {
        let mut words = vec!["flow", "add"];
        words.extend_from_slice(vrf);
        words.extend([
            "destination",
            "198.18.9.1/32",
            "protocol",
            "=icmp",
            "then",
            "drop",
        ]);
        words
    };
    lab.cli(&binary, &rule(&["vrf", "blue"])).unwrap();
    let before = lab.stats(&binary).unwrap();
    assert_eq!(ping(&lab, B_SERVICE_V4, 5), 0);
    let after = lab.stats(&binary).unwrap();
    assert_eq!(
        counter(&after, ROUTER_A.ifname, "dropped.flow")
            - counter(&before, ROUTER_A.ifname, "dropped.flow"),
        5
    );
    let mut del = rule(&["vrf", "blue"]);
    del[1] = "del";
    lab.cli(&binary, &del).unwrap();
    lab.cli(&binary, &rule(&[])).unwrap();
    assert_eq!(ping(&lab, B_SERVICE_V4, 5), 5);
    let flows: serde_json::Value =
        serde_json::from_str(&lab.cli(&binary, &["flow", "list", "--json"]).unwrap()).unwrap();
    assert_eq!(flows[0]["matched_packets"], 0, "{flows}");
    let out = lab.cli_output(&binary, &rule(&["vrf", "green"])).unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("vrf \"green\" is not one of the VRFs (default, blue)"),
        "{out:?}"
    );

    // Blue's kernel table changes: its route goes, and so does blue's way to the service
    // address (the default VRF's stays and is not used instead).
    lab.router
        .ip(&[
            "route",
            "del",
            &format!("{B_SERVICE_V4}/32"),
            "table",
            BLUE_TABLE,
        ])
        .unwrap();
    wait_for_route(&lab, &binary, "blue", &service, "kernel", false);
    let before = lab.stats(&binary).unwrap();
    assert_eq!(ping(&lab, B_SERVICE_V4, 5), 0);
    let after = lab.stats(&binary).unwrap();
    let d = |ifname, field| counter(&after, ifname, field) - counter(&before, ifname, field);
    assert_eq!(d(ROUTER_A.ifname, "to_kernel.no_route"), 5);
    assert_eq!(d(ROUTER_B.ifname, "tx_packets"), 0);
    assert_eq!(d(ROUTER_C.ifname, "tx_packets"), 0);
    wait_for_route(&lab, &binary, "default", &service, "config", true);
}

const ROUTER_AS: u32 = 64500;
const TRANSIT_AS: u32 = 64501;
const CUSTOMER_AS: u32 = 64502;
/// What the customer (host B's second link) announces, and what the transit (its first)
/// does.
const CUSTOMER_PREFIX: &str = "198.19.20.0/24";
const CUSTOMER_ADDR: &str = "198.19.20.1";
const TRANSIT_PREFIX: &str = "198.19.21.0/24";
const TRANSIT_ADDR: &str = "198.19.21.1";

/// The router's BIRD, one routing table per VRF: the transit's routes into `master4` and the
/// kernel's main table (the default VRF), the customer's into table `blue` and kernel table
/// 100 (VRF blue).
fn router_bird() -> String {
    format!(
        "router id {r};
protocol device {{ }}
ipv4 table blue;
protocol kernel {{ ipv4 {{ import none; export all; }}; }}
protocol kernel kblue {{ kernel table {BLUE_TABLE}; ipv4 {{ table blue; import none; export all; }}; }}
",
        r = ROUTER_B.ipv4
    ) + &bgp(
        "transit",
        (ROUTER_B.ipv4, ROUTER_AS),
        (HOST_B.ipv4, TRANSIT_AS),
        "ipv4 { import all; export none; }",
    ) + &bgp(
        "customer",
        (ROUTER_C.ipv4, ROUTER_AS),
        (HOST_B2.ipv4, CUSTOMER_AS),
        "ipv4 { table blue; import all; export none; }",
    )
}

/// Host B's BIRD: the transit on its first link, the customer on its second, each announcing
/// its prefix.
fn host_b_bird() -> String {
    format!(
        "router id {b};
protocol device {{ }}
protocol static transit_routes {{ ipv4; route {TRANSIT_PREFIX} blackhole; }}
ipv4 table customer_routes_table;
protocol static customer_routes {{ ipv4 {{ table customer_routes_table; }}; route {CUSTOMER_PREFIX} blackhole; }}
",
        b = HOST_B.ipv4
    ) + &bgp(
        "transit",
        (HOST_B.ipv4, TRANSIT_AS),
        (ROUTER_B.ipv4, ROUTER_AS),
        "ipv4 { import none; export where source = RTS_STATIC; }",
    ) + &bgp(
        "customer",
        (HOST_B2.ipv4, CUSTOMER_AS),
        (ROUTER_C.ipv4, ROUTER_AS),
        "ipv4 { table customer_routes_table; import none; export all; }",
    )
}

#[test]
fn bird_fills_each_vrf_from_its_own_session() {
    let binary = dataplane_binary();
    let lab = Lab::with(
        "pdpt-vrfb",
        LabOptions {
            ipv6: false,
            second_link: true,
        },
    )
    .unwrap();
    for addr in [CUSTOMER_ADDR, TRANSIT_ADDR] {
        lab.b
            .ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"])
            .unwrap();
    }
    // Host A's port and the customer link in blue, the transit link in the default VRF.
    let config = config()
        .replace(
            &format!("name = \"{}\"\n", ROUTER_C.ifname),
            &format!("name = \"{}\"\nvrf = \"blue\"\n", ROUTER_C.ifname),
        )
        .replace(
            &format!("[[route]]\nprefix = \"{B_SERVICE_V4}/32\"\nnexthop = \"host-b\"\n"),
            "",
        );
    let _daemon = lab
        .start_dataplane_with(&binary, &config, "native", &["--sync-kernel-table", "main"])
        .unwrap();
    let dir = lab.dir();
    let _host_b = Bird::start(&lab.b, dir, "host-b", &host_b_bird()).unwrap();
    let router = Bird::start(&lab.router, dir, "router", &router_bird()).unwrap();

    // Each session's routes reach the kernel table of their VRF, and the dataplane's VRF.
    router
        .wait_for(Duration::from_secs(60), "both sessions' routes", |_| {
            // Table 100 exists once BIRD put a route in it. (IPv4 alone: the lab has no IPv6.)
            let has = |table, prefix: &str| {
                lab.router
                    .ip(&["-4", "route", "show", "table", table])
                    .is_ok_and(|routes| routes.lines().any(|l| l.starts_with(prefix)))
            };
            Ok(has(BLUE_TABLE, CUSTOMER_PREFIX) && has("main", TRANSIT_PREFIX))
        })
        .unwrap_or_else(|err| {
            panic!(
                "{err}\nrouter: {}\n{}\n{}\nhost B: {}",
                router.birdc(&["show", "protocols"]).unwrap_or_default(),
                router
                    .birdc(&["show", "route", "table", "blue", "all"])
                    .unwrap_or_default(),
                lab.router
                    .ip(&["route", "show", "table", "all"])
                    .unwrap_or_default(),
                _host_b.birdc(&["show", "protocols"]).unwrap_or_default(),
            )
        });
    wait_for_route(&lab, &binary, "blue", CUSTOMER_PREFIX, "kernel", true);
    wait_for_route(&lab, &binary, "default", TRANSIT_PREFIX, "kernel", true);
    // And in no other VRF.
    let routes: serde_json::Value =
        serde_json::from_str(&lab.cli(&binary, &["route", "list", "--json"]).unwrap()).unwrap();
    let vrfs_of = |prefix: &str| -> Vec<String> {
        routes
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["prefix"] == prefix)
            .map(|r| r["vrf"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(vrfs_of(CUSTOMER_PREFIX), ["blue"]);
    assert_eq!(vrfs_of(TRANSIT_PREFIX), ["default"]);
    let get: serde_json::Value = serde_json::from_str(
        &lab.cli(
            &binary,
            &["route", "get", CUSTOMER_ADDR, "--vrf", "blue", "--json"],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(get["nexthops"][0]["via"], HOST_B2.ipv4, "{get}");
    assert_eq!(get["nexthops"][0]["dev"], ROUTER_C.ifname, "{get}");

    // Host A (in blue) reaches the customer, out of the customer link, in XDP; the
    // transit's prefix, the default VRF's alone, goes to the kernel from blue's port.
    let before = lab.stats(&binary).unwrap();
    assert_eq!(ping(&lab, CUSTOMER_ADDR, 10), 10);
    assert_eq!(ping(&lab, TRANSIT_ADDR, 5), 0);
    let after = lab.stats(&binary).unwrap();
    let d = |ifname, field| counter(&after, ifname, field) - counter(&before, ifname, field);
    assert_eq!(d(ROUTER_A.ifname, "forwarded_packets"), 10);
    assert_eq!(d(ROUTER_C.ifname, "tx_packets"), 10);
    assert_eq!(d(ROUTER_A.ifname, "to_kernel.no_route"), 5);
    assert_eq!(d(ROUTER_B.ifname, "tx_packets"), 0);

    // The customer session down: its route leaves blue (and only blue had it).
    router.birdc(&["disable", "customer"]).unwrap();
    wait_for_route(&lab, &binary, "blue", CUSTOMER_PREFIX, "kernel", false);
    wait_for_route(&lab, &binary, "default", TRANSIT_PREFIX, "kernel", true);
}

#[test]
fn a_restarted_daemon_takes_over_the_vrfs_tables() {
    let binary = dataplane_binary();
    let lab = Lab::with(
        "pdpt-vrft",
        LabOptions {
            ipv6: false,
            second_link: true,
        },
    )
    .unwrap();
    // Blue's route from the config this time (no kernel table), over the second link; and a
    // second VRF, red, that the next config drops.
    let with_red = |config: String| format!("{config}\n[[vrf]]\nname = \"red\"\n");
    let config = config().replace(&format!("sync_kernel_table = {BLUE_TABLE}\n"), "")
        + &format!(
            "\n[[route]]\nvrf = \"blue\"\nprefix = \"{B_SERVICE_V4}/32\"\nnexthop = \"host-b2\"\n\
             \n[[route]]\nvrf = \"red\"\nprefix = \"{B_SERVICE_V4}/32\"\ntype = \"blackhole\"\n"
        );
    let mut daemon = lab
        .start_dataplane_with(
            &binary,
            &with_red(config.clone()),
            "native",
            &["--keep-on-exit"],
        )
        .unwrap();
    assert_eq!(ping(&lab, B_SERVICE_V4, 5), 5);

    // Stopped with --keep-on-exit: blue's table forwards on with no daemon.
    assert!(daemon.stop().unwrap().success());
    let before = lab.stats(&binary).unwrap();
    assert_eq!(ping(&lab, B_SERVICE_V4, 5), 5);
    let after = lab.stats(&binary).unwrap();
    let d = |ifname, field| counter(&after, ifname, field) - counter(&before, ifname, field);
    assert_eq!(d(ROUTER_C.ifname, "tx_packets"), 5);

    // The next daemon, without red, takes over: blue still goes out of the second link,
    // counters carry over, and red's route is gone with it.
    let config = config.replace(
        &format!(
            "\n[[route]]\nvrf = \"red\"\nprefix = \"{B_SERVICE_V4}/32\"\ntype = \"blackhole\"\n"
        ),
        "",
    );
    let daemon = lab.start_dataplane(&binary, &config, "native").unwrap();
    assert!(
        daemon.log().contains("taking over the running dataplane"),
        "{}",
        daemon.log()
    );
    let before = lab.stats(&binary).unwrap();
    assert_eq!(ping(&lab, B_SERVICE_V4, 5), 5);
    let after = lab.stats(&binary).unwrap();
    let d = |ifname, field| counter(&after, ifname, field) - counter(&before, ifname, field);
    assert_eq!(d(ROUTER_C.ifname, "tx_packets"), 5);
    assert_eq!(d(ROUTER_B.ifname, "tx_packets"), 0);
    assert!(counter(&after, ROUTER_A.ifname, "forwarded_packets") >= 15);
    let routes = lab.cli(&binary, &["route", "list", "--json"]).unwrap();
    assert!(!routes.contains("\"red\""), "{routes}");
    // Red's slot of the table maps was emptied: the default VRF's and blue's tables are
    // all the IPv4 table map holds.
    let fib = lab.pin_dir().join("FIB_V4");
    let dump = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&fib)
        .output()
        .unwrap();
    assert!(dump.status.success(), "{dump:?}");
    let slots: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    assert_eq!(slots.as_array().unwrap().len(), 2, "{slots}");
    let out = lab
        .cli_output(&binary, &["route", "list", "--vrf", "red"])
        .unwrap();
    assert!(!out.status.success());
}
