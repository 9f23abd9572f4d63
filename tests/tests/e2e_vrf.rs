//! End to end through network namespaces: VRFs. Host A's port is in VRF blue, host B's two
//! links in the default VRF. Host B's service address has a route in each VRF, over a
//! different link: blue's comes from kernel table 100 (as BIRD or FRR would install it),
//! the default VRF's from the config. Real pings show each VRF's traffic taking its own
//! route, a prefix only the default VRF has unreachable from blue's port, CLI routes in a
//! VRF, and a VRF's kernel table followed as it changes.
//!
//! This kernel has no VRF devices (CONFIG_NET_VRF): interfaces are bound to VRFs by the
//! config, and kernel tables are followed by number.
//!
//! Needs root, iproute2, ethtool and ping.

use std::time::{Duration, Instant};

use pop_dataplane_tests::{
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
