//! End to end with a real BGP daemon: BIRD 2 on host B plays a transit provider and
//! announces routes over eBGP to a BIRD on the router, which installs them in the router's
//! kernel table; `pop-dataplane run --sync-kernel-table main` follows that table into the
//! dataplane. Traffic to announced destinations is forwarded by XDP (the router's kernel
//! forwarding is off, and the dataplane's counters tell); withdrawals and a session going
//! down take the routes away again; routes tagged with the BLACKHOLE community drop
//! traffic to and from them in XDP (RTBH); and a full IPv4 table arrives whole, timed. Also: a
//! flood of kernel route changes that overflows the daemon's event socket, after which the
//! daemon reads the table again and ends equal to it.
//!
//! Needs root, iproute2 and bird2 (`cargo xtask test` installs them).

use std::{collections::BTreeMap, time::Duration};

use ipnet::IpNet;
use pop_dataplane_tests::{
    bird::{Bird, bgp_session as bgp, kernel_table},
    dataplane_binary,
    frame::{ETH_P_IPV4, Ipv4, ethernet_tagged, mac},
    fulltable,
    lab::{Daemon, HOST_A, HOST_B, Lab, LabOptions, ROUTER_A, ROUTER_B},
};
use serde_json::Value;

const ROUTER_AS: u32 = 64500;
const TRANSIT_AS: u32 = 64501;

/// The router's BIRD: a session per family with the transit, everything learned exported to
/// the kernel's main table.
fn router_bird_config() -> String {
    let (r4, r6, t4, t6) = (ROUTER_B.ipv4, ROUTER_B.ipv6, HOST_B.ipv4, HOST_B.ipv6);
    format!(
        "router id {r4};
protocol device {{ }}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
protocol kernel {{ ipv6 {{ import none; export all; }}; merge paths on; }}
"
    ) + &bgp(
        "transit4",
        (r4, ROUTER_AS),
        (t4, TRANSIT_AS),
        "ipv4 { import all; export none; }",
    ) + &bgp(
        "transit6",
        (r6, ROUTER_AS),
        (t6, TRANSIT_AS),
        "ipv6 { import all; export none; }",
    )
}

/// The transit's BIRD: `v4` and `v6` as static routes, announced to the router (eBGP: with
/// the transit's own address as next hop).
fn transit_bird_config(v4: &[String], v6: &[String]) -> String {
    let (r4, r6, t4, t6) = (ROUTER_B.ipv4, ROUTER_B.ipv6, HOST_B.ipv4, HOST_B.ipv6);
    let mut config = format!("router id {t4};\nprotocol device {{ }}\n")
        + &bgp(
            "router4",
            (t4, TRANSIT_AS),
            (r4, ROUTER_AS),
            "ipv4 { import none; export all; }",
        )
        + &bgp(
            "router6",
            (t6, TRANSIT_AS),
            (r6, ROUTER_AS),
            "ipv6 { import none; export all; }",
        );
    for (family, routes) in [("ipv4", v4), ("ipv6", v6)] {
        config += &format!("protocol static {{ {family};\n");
        for route in routes {
            config += &format!("  route {route} blackhole;\n");
        }
        config += "}\n";
    }
    config
}

/// The dataplane's kernel-sourced routes: prefix -> target, as [`kernel_table`] would say
/// it the dataplane's way.
fn dataplane_kernel_routes(lab: &Lab) -> BTreeMap<IpNet, String> {
    let out = lab
        .cli(
            &dataplane_binary(),
            &["route", "list", "--json", "--source", "kernel"],
        )
        .unwrap();
    let routes: Vec<Value> = serde_json::from_str(&out).unwrap();
    routes
        .iter()
        .map(|r| {
            let prefix: IpNet = r["prefix"].as_str().unwrap().parse().unwrap();
            let target = match r["target"].as_str().unwrap() {
                t if t.starts_with("via ") => {
                    let mut hops: Vec<String> = r["nexthops"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|n| {
                            format!(
                                "via {} dev {}",
                                n["via"].as_str().unwrap(),
                                n["dev"].as_str().unwrap()
                            )
                        })
                        .collect();
                    hops.sort();
                    hops.join(" ")
                }
                t => t.to_owned(),
            };
            (prefix, target)
        })
        .collect()
}

/// What the dataplane must hold for the kernel's table: routes through the dataplane's
/// interfaces as they are, blackholes as blackholes, everything else handed to the kernel.
fn expected(kernel: &BTreeMap<IpNet, String>) -> BTreeMap<IpNet, String> {
    let ours = [ROUTER_A.ifname, ROUTER_B.ifname];
    kernel
        .iter()
        .map(|(prefix, target)| {
            let through_ours = target.starts_with("via ")
                && target
                    .split(" via ")
                    .all(|hop| ours.iter().any(|dev| hop.ends_with(&format!(" dev {dev}"))));
            let target = if through_ours || target == "blackhole" {
                target.clone()
            } else {
                "kernel".to_owned()
            };
            (*prefix, target)
        })
        .collect()
}

/// The real IPv4 table, without prefixes in or over the lab's own range (which stays the
/// lab's).
fn real_prefixes() -> impl Iterator<Item = IpNet> {
    let (real_v4, _) = fulltable::read().unwrap();
    let lab: IpNet = "198.18.0.0/15".parse().unwrap();
    real_v4
        .into_iter()
        .map(IpNet::V4)
        .filter(move |p| !lab.contains(p) && !p.contains(&lab))
}

/// The dataplane's table holds exactly `expected`.
fn assert_equal(expected: &BTreeMap<IpNet, String>, dataplane: &BTreeMap<IpNet, String>) {
    let differ: Vec<_> = expected
        .iter()
        .filter(|(p, t)| dataplane.get(p) != Some(t))
        .take(5)
        .collect();
    assert!(differ.is_empty(), "kernel vs dataplane: {differ:?}");
    assert_eq!(dataplane.len(), expected.len());
}

/// The dataplane on the router, following the kernel's main table, with `env`.
fn following_main(lab: &Lab, env: &[(&str, &str)]) -> Daemon {
    lab.start_dataplane_with_env(
        &dataplane_binary(),
        &lab.router_config(),
        "native",
        &["--sync-kernel-table", "main"],
        env,
    )
    .unwrap()
}

fn forwarded(lab: &Lab) -> u64 {
    let stats = lab.stats(&dataplane_binary()).unwrap();
    stats["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == ROUTER_A.ifname)
        .unwrap()["forwarded_packets"]
        .as_u64()
        .unwrap()
}

/// Waits until the dataplane's kernel routes equal the router's kernel table and `check`
/// holds of them.
fn wait_in_sync(
    lab: &Lab,
    bird: &Bird,
    what: &str,
    check: impl Fn(&BTreeMap<IpNet, String>) -> bool,
) -> BTreeMap<IpNet, String> {
    let mut last = BTreeMap::new();
    bird.wait_for(Duration::from_secs(60), what, |_| {
        let kernel = kernel_table(&lab.router, "main")?;
        let dataplane = dataplane_kernel_routes(lab);
        let done = check(&kernel) && dataplane == expected(&kernel);
        last = dataplane;
        Ok(done)
    })
    .unwrap_or_else(|err| panic!("{err}\ndataplane: {last:?}"));
    last
}

#[test]
fn routes_bird_learns_over_bgp_are_forwarded_by_xdp_and_withdrawn() {
    let lab = Lab::with(
        "pdpt-bird",
        LabOptions {
            ipv6: true,
            second_link: false,
        },
    )
    .unwrap();
    // The destinations the transit announces, and answers for.
    for addr in ["198.19.10.1/32", "198.19.11.1/32"] {
        lab.b.ip(&["addr", "add", addr, "dev", "lo"]).unwrap();
    }
    lab.b
        .ip(&["addr", "add", "2001:2:0:100::1/128", "dev", "lo", "nodad"])
        .unwrap();
    let _daemon = following_main(&lab, &[]);
    let dir = lab.dir();
    let v4 = ["198.19.10.0/24".to_owned(), "198.19.11.0/24".to_owned()];
    let v6 = ["2001:2:0:100::/56".to_owned()];
    let transit = Bird::start(&lab.b, dir, "transit", &transit_bird_config(&v4, &v6)).unwrap();
    let router = Bird::start(&lab.router, dir, "router", &router_bird_config()).unwrap();

    let announced: Vec<IpNet> = v4.iter().chain(&v6).map(|p| p.parse().unwrap()).collect();
    let routes = wait_in_sync(&lab, &router, "the announced routes", |kernel| {
        announced.iter().all(|p| kernel.contains_key(p))
    });
    for prefix in &announced {
        let via = if prefix.addr().is_ipv4() {
            HOST_B.ipv4
        } else {
            HOST_B.ipv6
        };
        assert_eq!(routes[prefix], format!("via {via} dev {}", ROUTER_B.ifname));
    }
    println!("in sync: {routes:?}");

    // Forwarded by XDP: the router's kernel does not forward (the lab turns it off), and the
    // dataplane counts every echo request.
    let before = forwarded(&lab);
    for dst in ["198.19.10.1", "198.19.11.1", "2001:2:0:100::1"] {
        lab.a
            .exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", dst])
            .unwrap_or_else(|err| panic!("ping {dst}: {err}"));
    }
    assert!(forwarded(&lab) - before >= 9, "the pings went another way");

    // A withdrawal: gone from the kernel, and from the dataplane.
    transit
        .reconfigure(&transit_bird_config(&v4[..1], &v6))
        .unwrap();
    let withdrawn: IpNet = v4[1].parse().unwrap();
    let routes = wait_in_sync(&lab, &router, "the withdrawal", |kernel| {
        !kernel.contains_key(&withdrawn)
    });
    assert!(!routes.contains_key(&withdrawn));
    assert!(routes.contains_key(&announced[0]));
    assert!(
        lab.a
            .exec("ping", &["-c", "1", "-W", "1", "198.19.11.1"])
            .is_err(),
        "a withdrawn destination still answered"
    );

    // The session down: every BGP route goes.
    router.birdc(&["disable", "transit4"]).unwrap();
    router.birdc(&["disable", "transit6"]).unwrap();
    let routes = wait_in_sync(&lab, &router, "the session down", |kernel| {
        announced.iter().all(|p| !kernel.contains_key(p))
    });
    assert!(
        announced.iter().all(|p| !routes.contains_key(p)),
        "{routes:?}"
    );
    // What is left are the router's connected subnets, the kernel's to serve.
    assert!(routes.values().all(|t| t == "kernel"), "{routes:?}");
    drop(transit);
}

#[test]
fn a_full_table_over_bgp_reaches_the_dataplane_whole() {
    let lab = Lab::with(
        "pdpt-bird",
        LabOptions {
            ipv6: true,
            second_link: false,
        },
    )
    .unwrap();
    let v4: Vec<String> = real_prefixes().map(|p| p.to_string()).collect();
    let _daemon = following_main(&lab, &[]);
    let dir = lab.dir();
    // The router first, its sessions waiting; the transit's start (parsing the table) is
    // not part of the time.
    let router = Bird::start(&lab.router, dir, "router", &router_bird_config()).unwrap();
    let transit = Bird::start(&lab.b, dir, "transit", &transit_bird_config(&v4, &[])).unwrap();
    router
        .wait_for(Duration::from_secs(120), "the IPv4 session", |bird| {
            bird.established("transit4")
        })
        .unwrap();
    let up = std::time::Instant::now();
    let status = |lab: &Lab| -> Value {
        serde_json::from_str(&lab.cli(&dataplane_binary(), &["status", "--json"]).unwrap()).unwrap()
    };
    let mut in_kernel = None;
    let mut kernel_routes = 0;
    router
        .wait_for(Duration::from_secs(300), "the full table", |_| {
            kernel_routes = status(&lab)["kernel_routes"].as_u64().unwrap();
            if in_kernel.is_none() {
                let count = lab
                    .router
                    .ip(&["route", "show", "proto", "bird"])?
                    .lines()
                    .count();
                if count >= v4.len() {
                    in_kernel = Some(up.elapsed());
                }
            }
            // Every announced prefix, and the lab's connected subnets.
            Ok(kernel_routes as usize >= v4.len())
        })
        .unwrap();
    let took = up.elapsed();
    let in_kernel = in_kernel.unwrap_or(took);
    println!(
        "full table over BGP: {} IPv4 prefixes; session up to all in the kernel: {:.1} s; to \
         all in the dataplane: {:.1} s (target: under 30 s)",
        v4.len(),
        in_kernel.as_secs_f64(),
        took.as_secs_f64()
    );

    // The dataplane's table equals the kernel's, route by route.
    let kernel = kernel_table(&lab.router, "main").unwrap();
    let dataplane = dataplane_kernel_routes(&lab);
    let expected = expected(&kernel);
    assert_equal(&expected, &dataplane);
    assert!(kernel.len() > v4.len());
    drop(transit);
}

#[test]
fn lost_route_events_are_recovered_by_reading_the_table_again() {
    let lab = Lab::new("pdpt-bird").unwrap();
    // An event buffer of 64 KiB: a few dozen events, so that the flood below overflows it.
    let daemon = following_main(&lab, &[("POP_DATAPLANE_EVENT_BUFFER", "65536")]);
    let prefixes: Vec<String> = real_prefixes()
        .step_by(4)
        .take(200_000)
        .map(|p| p.to_string())
        .collect();
    // 200,000 routes added, then a quarter of them deleted and another quarter moved to a
    // blackhole, as fast as `ip -batch` goes.
    let mut batch = String::new();
    for prefix in &prefixes {
        batch += &format!(
            "route add {prefix} via {} dev {}\n",
            HOST_B.ipv4, ROUTER_B.ifname
        );
    }
    for prefix in prefixes.iter().step_by(4) {
        batch += &format!("route del {prefix}\n");
    }
    for prefix in prefixes.iter().skip(1).step_by(4) {
        batch += &format!("route replace blackhole {prefix}\n");
    }
    let file = lab.dir().join("routes.batch");
    std::fs::write(&file, batch).unwrap();
    lab.router.ip(&["-batch", &file.to_string_lossy()]).unwrap();

    let kernel = kernel_table(&lab.router, "main").unwrap();
    assert_eq!(
        kernel.len(),
        150_000 + 2,
        "the table, and the two lab subnets"
    );
    let expected = expected(&kernel);
    let started = std::time::Instant::now();
    let mut dataplane = BTreeMap::new();
    while started.elapsed() < Duration::from_secs(120) {
        dataplane = dataplane_kernel_routes(&lab);
        if dataplane == expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = daemon.log();
    assert!(
        log.contains("rtnetlink events were lost"),
        "the flood did not overflow the event buffer; the test tests nothing:\n{log}"
    );
    assert_equal(&expected, &dataplane);
    println!(
        "in sync {:.1} s after the flood ended; {} overruns",
        started.elapsed().as_secs_f64(),
        log.matches("rtnetlink events were lost").count()
    );
}

/// The BLACKHOLE community (RFC 7999).
const BLACKHOLE: &str = "(65535, 666)";

/// Remote-triggered blackholing (RFC 5635) from BGP: the transit tags two /32s with the
/// BLACKHOLE community; the router's BIRD turns routes so tagged into kernel blackhole
/// routes, and the dataplane, following the table, drops traffic to the one (destination
/// RTBH, `dropped.blackhole`) and from the other where uRPF is on (source RTBH,
/// `dropped.urpf`), while the rest of the covering /24 stays reachable. The withdrawal of the
/// tagged routes lifts both.
#[test]
fn blackhole_community_routes_drop_in_xdp_by_destination_and_by_source() {
    let lab = Lab::with(
        "pdpt-rtbh",
        LabOptions {
            ipv6: false,
            second_link: false,
        },
    )
    .unwrap();
    for addr in ["198.19.10.1/32", "198.19.10.2/32"] {
        lab.b.ip(&["addr", "add", addr, "dev", "lo"]).unwrap();
    }
    // uRPF (loose) on host A's side, for the source-based case.
    let config = lab.router_config_with_urpf("loose");
    let _daemon = lab
        .start_dataplane_with_env(
            &dataplane_binary(),
            &config,
            "native",
            &["--sync-kernel-table", "main"],
            &[],
        )
        .unwrap();
    let (r4, t4) = (ROUTER_B.ipv4, HOST_B.ipv4);
    let router_config = format!(
        "router id {r4};
protocol device {{ }}
protocol kernel {{ ipv4 {{ import none; export all; }}; }}
"
    ) + &bgp(
        "transit4",
        (r4, ROUTER_AS),
        (t4, TRANSIT_AS),
        &format!(
            "ipv4 {{ import filter {{ if {BLACKHOLE} ~ bgp_community then dest = \
             RTD_BLACKHOLE; accept; }}; export none; }}"
        ),
    );
    let transit_config = |tagged: &[&str]| {
        let mut config = format!("router id {t4};\nprotocol device {{ }}\n");
        let mut filter = String::from("export filter { ");
        for prefix in tagged {
            filter += &format!("if net = {prefix} then bgp_community.add({BLACKHOLE}); ");
        }
        filter += "accept; }";
        config += &bgp(
            "router4",
            (t4, TRANSIT_AS),
            (r4, ROUTER_AS),
            &format!("ipv4 {{ import none; {filter}; }}"),
        );
        config += "protocol static { ipv4;\n  route 198.19.10.0/24 blackhole;\n";
        for prefix in tagged {
            config += &format!("  route {prefix} blackhole;\n");
        }
        config + "}\n"
    };
    let tagged = ["198.19.10.1/32", "198.19.10.5/32"];
    let dir = lab.dir();
    let transit = Bird::start(&lab.b, dir, "transit", &transit_config(&tagged)).unwrap();
    let router = Bird::start(&lab.router, dir, "router", &router_config).unwrap();
    let covering: IpNet = "198.19.10.0/24".parse().unwrap();
    let routes = wait_in_sync(&lab, &router, "the tagged routes and the /24", |kernel| {
        kernel.contains_key(&covering)
            && tagged.iter().all(|p| {
                kernel
                    .get(&p.parse().unwrap())
                    .is_some_and(|t| t == "blackhole")
            })
    });
    assert_eq!(
        routes[&covering],
        format!("via {t4} dev {}", ROUTER_B.ifname)
    );

    let stats = || lab.stats(&dataplane_binary()).unwrap();
    let dropped = |reason: &str| {
        pop_dataplane_tests::lab::counter(&stats(), ROUTER_A.ifname, &format!("dropped.{reason}"))
    };
    let ping = |dst: &str| {
        lab.a
            .exec("ping", &["-c", "3", "-i", "0.1", "-W", "1", dst])
            .is_ok_and(|out| out.contains("3 received"))
    };
    // Destination RTBH: the tagged address is dropped in XDP, its neighbour answers.
    assert!(ping("198.19.10.2"), "the rest of the /24 answers");
    let before = dropped("blackhole");
    assert!(!ping("198.19.10.1"), "a blackholed destination answered");
    assert_eq!(dropped("blackhole"), before + 3);

    // Source RTBH: frames from the tagged source fail uRPF on ra.
    let src = [198, 19, 10, 5];
    let packet = Ipv4::new(src, [198, 19, 10, 2], 17).udp(4000, 9, &[0u8; 32]);
    let frame = ethernet_tagged(mac(ROUTER_A.mac), mac(HOST_A.mac), &[], ETH_P_IPV4, &packet);
    let before = dropped("urpf");
    lab.a
        .send_frames(HOST_A.ifname, &vec![frame.clone(); 5])
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while dropped("urpf") < before + 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "uRPF did not drop the frames"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The tags withdrawn: the /32s go, traffic to and from them flows again.
    transit.reconfigure(&transit_config(&[])).unwrap();
    wait_in_sync(
        &lab,
        &router,
        "the withdrawal of the tagged routes",
        |kernel| {
            tagged
                .iter()
                .all(|p| !kernel.contains_key(&p.parse().unwrap()))
        },
    );
    assert!(ping("198.19.10.1"), "the destination is back");
    let forwarded_before = forwarded(&lab);
    lab.a.send_frames(HOST_A.ifname, &vec![frame; 5]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while forwarded(&lab) < forwarded_before + 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "frames from the source no longer blackholed were not forwarded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(transit);
}
