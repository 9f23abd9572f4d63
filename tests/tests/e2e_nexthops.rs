//! End to end: routes through kernel nexthop objects (`ip nexthop`, what FRR's zebra
//! installs routes with), followed by `pop-dataplane run --sync-kernel-table main` with
//! `net.ipv4.nexthop_compat_mode` 0 and 1. Single objects, a group object (ECMP over two
//! links), a blackhole object; an object changed in place moves its routes with one group
//! write (the daemon says so, and the traffic moves); a link going down, which makes the
//! kernel delete the objects on it and their routes, takes them out of the dataplane too.
//!
//! Needs root and iproute2 (`cargo xtask test` installs them).

use std::{
    collections::{BTreeMap, BTreeSet},
    thread,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use pop_dataplane_tests::{
    bird::kernel_table,
    dataplane_binary,
    lab::{Daemon, HOST_B, HOST_B2, Lab, LabOptions, Port, ROUTER_A, ROUTER_B, ROUTER_C, counter},
    netns::Netns,
};

/// Addresses of host B, on both of its links, routed only by the kernel routes under test
/// (the lab config routes its service addresses itself, and the config wins).
const TARGET_V4: &str = "198.18.9.7";
const TARGET_V6: &str = "2001:2:0:9::7";

/// The dataplane's kernel routes: prefix -> target as `route list` shows it.
fn dataplane_routes(lab: &Lab) -> BTreeMap<IpNet, String> {
    lab.route_targets(&dataplane_binary(), "kernel").unwrap()
}

/// Waits until `check` holds of the dataplane's kernel routes (10 s at most).
fn wait_for(
    lab: &Lab,
    what: &str,
    check: impl Fn(&BTreeMap<IpNet, String>) -> bool,
) -> BTreeMap<IpNet, String> {
    let started = Instant::now();
    loop {
        let routes = dataplane_routes(lab);
        if check(&routes) {
            return routes;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s; the dataplane has {:?}",
            routes.iter().take(20).collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn host(addr: &str) -> IpNet {
    IpNet::from(addr.parse::<std::net::IpAddr>().unwrap())
}

/// One datagram from host A to `dst` per source port in `ports`: what it added on (rb, rc).
fn send_flows(lab: &Lab, dst: &str, ports: std::ops::Range<u16>) -> (u64, u64) {
    lab.send_flows(&dataplane_binary(), dst, ports).unwrap()
}

/// `ip nexthop replace id ID via HOST dev PORT` on the router.
fn move_object(router: &Netns, id: u32, host: Port, port: Port) {
    router
        .ip(&[
            "nexthop",
            "replace",
            "id",
            &id.to_string(),
            "via",
            host.ipv4,
            "dev",
            port.ifname,
        ])
        .unwrap();
}

fn forwarded(lab: &Lab) -> u64 {
    counter(
        &lab.stats(&dataplane_binary()).unwrap(),
        ROUTER_A.ifname,
        "forwarded_packets",
    )
}

fn run(compat_mode: &str) {
    let lab = Lab::with(
        "pdpt-nh",
        LabOptions {
            ipv6: true,
            second_link: true,
        },
    )
    .unwrap();
    let router = &lab.router;
    router
        .sysctl("net.ipv4.nexthop_compat_mode", compat_mode)
        .unwrap();
    lab.b
        .ip(&["addr", "add", &format!("{TARGET_V4}/32"), "dev", "lo"])
        .unwrap();
    lab.b
        .ip(&[
            "addr",
            "add",
            &format!("{TARGET_V6}/128"),
            "dev",
            "lo",
            "nodad",
        ])
        .unwrap();
    let service = format!("{TARGET_V4}/32");
    let service6 = format!("{TARGET_V6}/128");
    // Before the daemon: read with the first dump.
    for args in [
        vec![
            "nexthop",
            "add",
            "id",
            "1",
            "via",
            HOST_B.ipv4,
            "dev",
            ROUTER_B.ifname,
        ],
        vec![
            "nexthop",
            "add",
            "id",
            "2",
            "via",
            HOST_B2.ipv4,
            "dev",
            ROUTER_C.ifname,
        ],
        vec![
            "nexthop",
            "add",
            "id",
            "6",
            "via",
            HOST_B.ipv6,
            "dev",
            ROUTER_B.ifname,
        ],
        vec!["nexthop", "add", "id", "30", "blackhole"],
        vec!["route", "add", &service, "nhid", "1"],
        vec!["route", "add", &service6, "nhid", "6"],
    ] {
        router.ip(&args).unwrap();
    }
    let mut daemon: Daemon = lab
        .start_dataplane_with_env(
            &dataplane_binary(),
            &lab.router_config(),
            "native",
            &["--sync-kernel-table", "main"],
            &[],
        )
        .unwrap();
    let via_b = format!("nhid 1 via {} dev {}", HOST_B.ipv4, ROUTER_B.ifname);
    let routes = wait_for(&lab, "the routes read at start", |r| {
        r.get(&host(TARGET_V4)) == Some(&via_b)
    });
    assert_eq!(
        routes[&host(TARGET_V6)],
        format!("nhid 6 via {} dev {}", HOST_B.ipv6, ROUTER_B.ifname)
    );

    // Followed from events: a group object, a blackhole route, a thousand routes through
    // object 1.
    router
        .ip(&["nexthop", "add", "id", "10", "group", "1/2"])
        .unwrap();
    router
        .ip(&["route", "add", "198.19.200.0/24", "nhid", "30"])
        .unwrap();
    let batch: String = (0..1000u32)
        .map(|i| format!("route add 198.19.{}.{}/32 nhid 1\n", 100 + i / 256, i % 256))
        .collect();
    let file = lab.dir().join("routes.batch");
    std::fs::write(&file, batch).unwrap();
    router.ip(&["-batch", &file.to_string_lossy()]).unwrap();
    let routes = wait_for(&lab, "the thousand routes", |r| r.len() >= 1003);
    assert_eq!(routes[&"198.19.200.0/24".parse().unwrap()], "blackhole");
    assert_eq!(routes[&host("198.19.103.231")], via_b);

    // Forwarded by XDP through the objects (once the neighbours are known: until then the
    // kernel has the packets, and drops them, not forwarding).
    for dst in [TARGET_V4, TARGET_V6] {
        let _ = lab
            .a
            .exec("ping", &["-c", "2", "-i", "0.5", "-W", "1", dst]);
    }
    let before = forwarded(&lab);
    for dst in [TARGET_V4, TARGET_V6] {
        lab.a
            .exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", dst])
            .unwrap_or_else(|err| panic!("ping {dst}: {err}"));
    }
    let delta = forwarded(&lab) - before;
    assert!(
        delta >= 6,
        "the pings went another way: {delta} forwarded; {}",
        lab.stats(&dataplane_binary()).unwrap()
    );
    assert_eq!(send_flows(&lab, TARGET_V4, 21_000..21_010), (10, 0));

    // Object 1 moved to the second link: its 1,001 routes follow with one group write, not
    // route by route.
    move_object(router, 1, HOST_B2, ROUTER_C);
    let via_c = format!("nhid 1 via {} dev {}", HOST_B2.ipv4, ROUTER_C.ifname);
    let routes = wait_for(&lab, "object 1 moved", |r| {
        r.get(&host(TARGET_V4)) == Some(&via_c)
    });
    assert_eq!(routes[&host("198.19.103.231")], via_c);
    let log = daemon.log();
    let moved = log
        .lines()
        .rfind(|l| l.contains("nexthop objects changed:"))
        .unwrap_or_else(|| panic!("no nexthop object line in the log:\n{log}"));
    assert!(
        moved.contains("0 routes set again"),
        "the routes moved one by one: {moved}"
    );
    assert_eq!(send_flows(&lab, TARGET_V4, 21_000..21_010), (0, 10));

    // Back, and through the group: flows over both links.
    move_object(router, 1, HOST_B, ROUTER_B);
    router
        .ip(&["route", "replace", &service, "nhid", "10"])
        .unwrap();
    wait_for(&lab, "the group route", |r| {
        r.get(&host(TARGET_V4))
            .is_some_and(|t| t.starts_with("nhid 10 via") && t.matches(" via ").count() == 2)
    });
    let (on_b, on_c) = send_flows(&lab, TARGET_V4, 22_000..22_048);
    assert_eq!(on_b + on_c, 48);
    assert!(on_b >= 8 && on_c >= 8, "{on_b} flows on rb, {on_c} on rc");

    // rc down: the kernel deletes the objects on it (2, and 3 with its route) and takes 2
    // out of the group; the dataplane the same.
    router
        .ip(&[
            "nexthop",
            "add",
            "id",
            "3",
            "via",
            HOST_B2.ipv4,
            "dev",
            ROUTER_C.ifname,
        ])
        .unwrap();
    router
        .ip(&["route", "add", "198.19.210.0/24", "nhid", "3"])
        .unwrap();
    let on_rc: IpNet = "198.19.210.0/24".parse().unwrap();
    wait_for(&lab, "the route through object 3", |r| {
        r.contains_key(&on_rc)
    });
    router
        .ip(&["link", "set", ROUTER_C.ifname, "down"])
        .unwrap();
    let kernel: BTreeSet<IpNet> = {
        let started = Instant::now();
        loop {
            let table = kernel_table(router, "main").unwrap();
            if !table.contains_key(&on_rc) {
                break table.into_keys().collect();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the kernel kept the route"
            );
            thread::sleep(Duration::from_millis(100));
        }
    };
    let via_b_only = format!("nhid 10 via {} dev {}", HOST_B.ipv4, ROUTER_B.ifname);
    let routes = wait_for(&lab, "rc down", |r| {
        let ours: BTreeSet<IpNet> = r.keys().copied().collect();
        if ours != kernel {
            println!(
                "only in the dataplane: {:?}; only in the kernel: {:?}",
                ours.difference(&kernel).collect::<Vec<_>>(),
                kernel.difference(&ours).collect::<Vec<_>>()
            );
        }
        ours == kernel && r.get(&host(TARGET_V4)) == Some(&via_b_only)
    });
    assert!(!routes.contains_key(&on_rc));
    assert_eq!(routes[&host("198.19.103.231")], via_b);
    assert_eq!(send_flows(&lab, TARGET_V4, 23_000..23_016), (16, 0));

    // The group deleted: its route goes with it.
    router.ip(&["nexthop", "del", "id", "10"]).unwrap();
    wait_for(&lab, "the group deleted", |r| {
        !r.contains_key(&host(TARGET_V4))
    });
    daemon.stop().unwrap();
}

#[test]
fn routes_through_nexthop_objects_follow_them_in_compat_mode_0() {
    run("0");
}

#[test]
fn routes_through_nexthop_objects_follow_them_in_compat_mode_1() {
    run("1");
}
