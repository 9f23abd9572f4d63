//! End to end with FRR (Debian's `frr`): zebra and bgpd on the router, an eBGP session over
//! each of its two links with a BIRD transit on host B (IPv4 on both, IPv6 on the first).
//! zebra installs what bgpd learns through kernel nexthop objects, its default, the
//! two-link routes through a group object (ECMP); `pop-dataplane run --sync-kernel-table
//! main` follows them and forwards in XDP (the router's kernel forwarding is off, and the
//! counters tell). A withdrawal, a link going down (the kernel drops the objects on it) and
//! a session shut down move the dataplane as they move the kernel. And the full IPv4 table
//! over an FRR session, timed from the session up to every route in the dataplane.
//!
//! Needs root, iproute2, bird2 and frr (`cargo xtask test` installs them).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use pop_dataplane_tests::{
    bird::{Bird, kernel_table},
    dataplane_binary,
    frr::Frr,
    fulltable,
    lab::{Daemon, HOST_B, HOST_B2, Lab, LabOptions, ROUTER_A, ROUTER_B, ROUTER_C, counter},
};
use serde_json::Value;

const ROUTER_AS: u32 = 64500;
const TRANSIT_AS: u32 = 64501;

/// The transit's BIRD: `v4` and `v6` announced over a session per (local, router) address
/// pair of each family.
fn transit_config(v4: &[String], v6: &[String], sessions: &[(&str, &str)]) -> String {
    let mut config = format!("router id {};\nprotocol device {{ }}\n", HOST_B.ipv4);
    for (i, (local, neighbor)) in sessions.iter().enumerate() {
        let family = if local.contains(':') { "ipv6" } else { "ipv4" };
        config += &format!(
            "protocol bgp router{i} {{
  local {local} as {TRANSIT_AS}; neighbor {neighbor} as {ROUTER_AS};
  connect retry time 1; error wait time 1, 5;
  {family} {{ import none; export all; }};
}}
"
        );
    }
    for (family, routes) in [("ipv4", v4), ("ipv6", v6)] {
        config += &format!("protocol static {{ {family};\n");
        for route in routes {
            config += &format!("  route {route} blackhole;\n");
        }
        config += "}\n";
    }
    config
}

/// The router's bgpd: a session with each of `neighbors` (IPv4 and IPv6 addresses), the
/// IPv4 routes learned over two links used together.
fn router_config(neighbors: &[&str]) -> String {
    let mut config = format!(
        "router bgp {ROUTER_AS}
 bgp router-id {}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
",
        ROUTER_B.ipv4
    );
    for neighbor in neighbors {
        config += &format!(
            " neighbor {neighbor} remote-as {TRANSIT_AS}\n neighbor {neighbor} timers connect 1\n"
        );
    }
    for family in ["ipv4", "ipv6"] {
        config += &format!(" address-family {family} unicast\n  maximum-paths 2\n");
        for neighbor in neighbors {
            if neighbor.contains(':') == (family == "ipv6") {
                config += &format!("  neighbor {neighbor} activate\n");
            }
        }
        config += " exit-address-family\n";
    }
    config
}

/// The dataplane's kernel routes: prefix -> target as `route list` shows it.
fn dataplane_routes(lab: &Lab) -> BTreeMap<IpNet, String> {
    lab.route_targets(&dataplane_binary(), "kernel").unwrap()
}

/// Waits (60 s at most) until the dataplane's kernel routes have the kernel table's
/// prefixes and `check` holds of them.
fn wait_in_sync(
    lab: &Lab,
    frr: &Frr,
    what: &str,
    check: impl Fn(&BTreeMap<IpNet, String>) -> bool,
) -> BTreeMap<IpNet, String> {
    let mut last = BTreeMap::new();
    frr.wait_for(Duration::from_secs(60), what, || {
        let kernel: BTreeSet<IpNet> = kernel_table(&lab.router, "main")?.into_keys().collect();
        let dataplane = dataplane_routes(lab);
        let done =
            dataplane.keys().copied().collect::<BTreeSet<_>>() == kernel && check(&dataplane);
        last = dataplane;
        Ok(done)
    })
    .unwrap_or_else(|err| panic!("{err}\ndataplane: {last:?}"));
    last
}

/// One datagram from host A to `dst` per source port in `ports`: what it added on (rb, rc).
fn send_flows(lab: &Lab, dst: &str, ports: std::ops::Range<u16>) -> (u64, u64) {
    lab.send_flows(&dataplane_binary(), dst, ports).unwrap()
}

fn forwarded(lab: &Lab) -> u64 {
    counter(
        &lab.stats(&dataplane_binary()).unwrap(),
        ROUTER_A.ifname,
        "forwarded_packets",
    )
}

fn following_main(lab: &Lab) -> Daemon {
    lab.start_dataplane_with_env(
        &dataplane_binary(),
        &lab.router_config(),
        "native",
        &["--sync-kernel-table", "main"],
        &[],
    )
    .unwrap()
}

#[test]
fn routes_frr_learns_forward_in_xdp_through_its_nexthop_objects() {
    let lab = Lab::with(
        "pdpt-frr",
        LabOptions {
            ipv6: true,
            second_link: true,
        },
    )
    .unwrap();
    for addr in ["198.19.10.1/32", "198.19.11.1/32"] {
        lab.b.ip(&["addr", "add", addr, "dev", "lo"]).unwrap();
    }
    lab.b
        .ip(&["addr", "add", "2001:2:0:100::1/128", "dev", "lo", "nodad"])
        .unwrap();
    let _daemon = following_main(&lab);
    let dir = lab.dir();
    let v4 = ["198.19.10.0/24".to_owned(), "198.19.11.0/24".to_owned()];
    let v6 = ["2001:2:0:100::/56".to_owned()];
    let sessions = [
        (HOST_B.ipv4, ROUTER_B.ipv4),
        (HOST_B2.ipv4, ROUTER_C.ipv4),
        (HOST_B.ipv6, ROUTER_B.ipv6),
    ];
    let transit =
        Bird::start(&lab.b, dir, "transit", &transit_config(&v4, &v6, &sessions)).unwrap();
    let frr = Frr::start(
        &lab.router,
        dir,
        "frr",
        &router_config(&[HOST_B.ipv4, HOST_B2.ipv4, HOST_B.ipv6]),
    )
    .unwrap();

    // zebra's routes, through nexthop objects; the two-link one through a group.
    let ecmp: IpNet = v4[0].parse().unwrap();
    let v6_prefix: IpNet = v6[0].parse().unwrap();
    let routes = wait_in_sync(&lab, &frr, "the announced routes through objects", |r| {
        r.get(&ecmp)
            .is_some_and(|t| t.starts_with("nhid ") && t.matches(" via ").count() == 2)
            && r.get(&v6_prefix)
                .is_some_and(|t| t.starts_with("nhid ") && t.contains(" via "))
    });
    println!("in sync: {routes:?}");
    assert!(
        routes[&ecmp].contains(&format!("via {} dev {}", HOST_B.ipv4, ROUTER_B.ifname))
            && routes[&ecmp].contains(&format!("via {} dev {}", HOST_B2.ipv4, ROUTER_C.ifname)),
        "{}",
        routes[&ecmp]
    );

    // Forwarded by XDP (once the neighbours are known).
    let destinations = ["198.19.10.1", "198.19.11.1", "2001:2:0:100::1"];
    for dst in destinations {
        let _ = lab
            .a
            .exec("ping", &["-c", "2", "-i", "0.5", "-W", "1", dst]);
    }
    let before = forwarded(&lab);
    for dst in destinations {
        lab.a
            .exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", dst])
            .unwrap_or_else(|err| panic!("ping {dst}: {err}"));
    }
    assert!(forwarded(&lab) - before >= 9, "the pings went another way");
    let (on_b, on_c) = send_flows(&lab, "198.19.10.1", 24_000..24_048);
    assert_eq!(on_b + on_c, 48);
    assert!(on_b >= 8 && on_c >= 8, "{on_b} flows on rb, {on_c} on rc");

    // A withdrawal.
    transit
        .reconfigure(&transit_config(&v4[..1], &v6, &sessions))
        .unwrap();
    let withdrawn: IpNet = v4[1].parse().unwrap();
    wait_in_sync(&lab, &frr, "the withdrawal", |r| {
        !r.contains_key(&withdrawn)
    });

    // rc down: the kernel drops the objects on it; the route keeps rb alone.
    lab.router
        .ip(&["link", "set", ROUTER_C.ifname, "down"])
        .unwrap();
    let routes = wait_in_sync(&lab, &frr, "rc down", |r| {
        r.get(&ecmp)
            .is_some_and(|t| t.starts_with("nhid ") && t.matches(" via ").count() == 1)
    });
    assert!(
        routes[&ecmp].ends_with(&format!("via {} dev {}", HOST_B.ipv4, ROUTER_B.ifname)),
        "{}",
        routes[&ecmp]
    );
    assert_eq!(send_flows(&lab, "198.19.10.1", 25_000..25_016), (16, 0));

    // The sessions shut down: every BGP route goes.
    frr.vtysh(&[
        "configure terminal",
        &format!("router bgp {ROUTER_AS}"),
        &format!("neighbor {} shutdown", HOST_B.ipv4),
        &format!("neighbor {} shutdown", HOST_B2.ipv4),
        &format!("neighbor {} shutdown", HOST_B.ipv6),
    ])
    .unwrap();
    let routes = wait_in_sync(&lab, &frr, "the sessions shut down", |r| {
        !r.contains_key(&ecmp) && !r.contains_key(&v6_prefix)
    });
    assert!(
        routes.values().all(|t| !t.starts_with("nhid")),
        "{routes:?}"
    );
    drop(transit);
}

#[test]
fn a_full_table_over_frr_reaches_the_dataplane_whole() {
    let lab = Lab::new("pdpt-frr").unwrap();
    let _daemon = following_main(&lab);
    let lab_range: IpNet = "198.18.0.0/15".parse().unwrap();
    let (real_v4, _) = fulltable::read().unwrap();
    let table: Vec<String> = real_v4
        .into_iter()
        .map(IpNet::V4)
        .filter(|p| !lab_range.contains(p) && !p.contains(&lab_range))
        .map(|p| p.to_string())
        .collect();
    let dir = lab.dir();
    let transit = Bird::start(
        &lab.b,
        dir,
        "transit",
        &transit_config(&table, &[], &[(HOST_B.ipv4, ROUTER_B.ipv4)]),
    )
    .unwrap();
    let frr = Frr::start(&lab.router, dir, "frr", &router_config(&[HOST_B.ipv4])).unwrap();
    frr.wait_for(Duration::from_secs(60), "the session", || {
        Ok(frr
            .vtysh(&["show bgp ipv4 unicast summary json"])
            .is_ok_and(|out| out.contains("\"state\":\"Established\"")))
    })
    .unwrap();
    let up = Instant::now();
    let count = |lab: &Lab| -> usize {
        let status: Value =
            serde_json::from_str(&lab.cli(&dataplane_binary(), &["status", "--json"]).unwrap())
                .unwrap();
        status["kernel_routes"].as_u64().unwrap_or(0) as usize
    };
    let mut in_kernel = None;
    frr.wait_for(Duration::from_secs(300), "the whole table", || {
        if in_kernel.is_none() {
            let installed = lab
                .router
                .ip(&["route", "show", "proto", "bgp"])?
                .lines()
                .count();
            if installed >= table.len() {
                in_kernel = Some(up.elapsed());
            }
        }
        Ok(count(&lab) >= table.len())
    })
    .unwrap();
    let took = up.elapsed();
    let in_kernel = in_kernel.unwrap_or(took);
    println!(
        "full table over FRR: {} IPv4 prefixes; session up to all in the kernel: {:.1} s; to \
         all in the dataplane: {:.1} s (target: under 30 s)",
        table.len(),
        in_kernel.as_secs_f64(),
        took.as_secs_f64()
    );
    // And equal to the kernel's at the end.
    let kernel: BTreeSet<IpNet> = kernel_table(&lab.router, "main")
        .unwrap()
        .into_keys()
        .collect();
    let dataplane: BTreeSet<IpNet> = dataplane_routes(&lab).into_keys().collect();
    assert_eq!(kernel.len(), dataplane.len());
    assert!(
        kernel == dataplane,
        "the dataplane's table differs from the kernel's"
    );
    drop(transit);
}
