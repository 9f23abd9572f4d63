use pop_dataplane_common::{Interface, Route};

use super::*;
use crate::{
    config::{DenyRule, route_spec::RouteSpec},
    control::vrf::VrfId,
    mac::MacAddr,
};

fn link(ifindex: u32, name: &str) -> Link {
    Link {
        ifindex,
        name: name.to_owned(),
        mac: MacAddr([2, 0, 0, 0, 0, ifindex as u8]),
        mtu: 1500,
        up: true,
        vlan: None,
        controller: None,
        vrf_table: None,
    }
}

fn host() -> Host {
    Host {
        links: vec![link(7, "ra"), link(9, "rb"), link(11, "rc")],
        addresses: vec![
            Address {
                ifindex: 9,
                addr: "198.18.2.1".parse().unwrap(),
                prefix_len: 24,
            },
            Address {
                ifindex: 9,
                addr: "2001:2:0:2::1".parse().unwrap(),
                prefix_len: 64,
            },
        ],
    }
}

const CONFIG: &str = r#"
[[interface]]
name = "ra"
[[interface]]
name = "rb"
[[interface]]
name = "rc"
[[nexthop]]
name = "b"
dev = "rb"
via = "198.18.2.2"
lladdr = "02:00:00:00:00:bb"
[[nexthop]]
name = "c"
dev = "rc"
via = "198.18.3.2"
[[route]]
prefix = "198.18.2.0/24"
nexthop = "b"
[[route]]
prefix = "198.18.2.1/32"
type = "blackhole"
[[route]]
prefix = "2001:2:0:9::/64"
nexthop = ["b", "c"]
"#;

fn start(text: &str) -> (Router, Update) {
    let config = Config::parse("t.toml", text).unwrap();
    Router::start(&config, "t.toml", &host()).unwrap()
}

fn routes(update: &Update) -> Vec<(String, Route)> {
    let mut routes: Vec<(String, Route)> = update
        .tables
        .iter()
        .filter_map(|w| match w {
            MapWrite::Route(_, p, e) => Some((p.to_string(), e.target.decode())),
            _ => None,
        })
        .collect();
    routes.sort_by(|a, b| a.0.cmp(&b.0));
    routes
}

#[test]
fn starts_with_routes_local_addresses_and_resolution_state() {
    let (router, update) = start(CONFIG);
    let (b, c) = (
        router.config_nexthop("b").unwrap(),
        router.config_nexthop("c").unwrap(),
    );
    assert_eq!((b, c), (1, 2), "ids start at 1");
    assert_eq!(
        routes(&update),
        [
            ("198.18.2.0/24".to_owned(), Route::Nexthop(b)),
            ("198.18.2.1/32".to_owned(), Route::Local),
            ("2001:2:0:2::1/128".to_owned(), Route::Local),
            ("2001:2:0:9::/64".to_owned(), Route::Group(0)),
        ]
    );
    assert!(router.usable(b), "static MAC, link up");
    assert!(!router.usable(c), "nothing learned yet");
    assert_eq!(
        router.kernel_neighbours(),
        [(11, "198.18.3.2".parse().unwrap())]
    );
    // The group puts everything on b while c is unresolved.
    let group = update.tables.iter().find_map(|w| match w {
        MapWrite::Group(0, g) => Some(g.buckets),
        _ => None,
    });
    assert!(group.unwrap().iter().all(|&id| id == b));
    assert!(update.before.contains(&MapWrite::Port(0, 7)));
    assert_eq!(update.ports_added.len(), 3);
}

#[test]
fn neighbours_and_links_move_traffic() {
    let (mut router, _) = start(CONFIG);
    let (b, c) = (
        router.config_nexthop("b").unwrap(),
        router.config_nexthop("c").unwrap(),
    );
    let mac = MacAddr([2, 0, 0, 0, 0, 0xcc]);
    let writes = router.neighbour(11, "198.18.3.2".parse().unwrap(), Some(mac));
    let value = router.nexthop_value(c);
    assert!(value.is_resolved());
    assert_eq!(value.dst_mac, mac.0);
    assert_eq!(writes[0], MapWrite::Nexthop(c, value));
    let MapWrite::Group(0, group) = &writes[1] else {
        panic!("{writes:?}")
    };
    assert!(group.buckets.contains(&b) && group.buckets.contains(&c));

    // rb goes down: b is unusable, its buckets go to c.
    let down = Link {
        up: false,
        ..link(9, "rb")
    };
    let writes = router.link_changed(down);
    assert!(!router.nexthop_value(b).is_resolved());
    let MapWrite::Group(0, group) = writes.last().unwrap() else {
        panic!("{writes:?}")
    };
    assert!(group.buckets.iter().all(|&id| id == c));
    // Back up: back in.
    let writes = router.link_changed(link(9, "rb"));
    let MapWrite::Group(0, group) = writes.last().unwrap() else {
        panic!("{writes:?}")
    };
    assert!(group.buckets.contains(&b));
}

#[test]
fn cli_routes_are_all_or_nothing_and_share_next_hops() {
    let (mut router, _) = start(CONFIG);
    let spec = |line: &str| (0, RouteSpec::parse(line).unwrap());
    let writes = router
        .set_routes(
            &[
                spec("198.18.7.0/24 via 198.18.2.2 dev rb"),
                spec("198.18.8.0/24 via 198.18.12.2 dev rc"),
            ],
            Source::Cli,
            Mode::Add,
            &mut |_| {},
        )
        .unwrap();
    // 198.18.2.2 on rb is config next hop b; 198.18.12.2 is new.
    let b = router.config_nexthop("b").unwrap();
    assert_eq!(
        router.compiled(&"198.18.7.0/24".parse().unwrap()),
        Some(Route::Nexthop(b))
    );
    // The new next hop is written before the route that uses it.
    let nexthop_at = writes
        .iter()
        .position(|w| matches!(w, MapWrite::Nexthop(3, _)));
    let route_at = writes
        .iter()
        .position(|w| matches!(w, MapWrite::Route(_, p, _) if p.to_string() == "198.18.8.0/24"));
    assert!(nexthop_at.unwrap() < route_at.unwrap(), "{writes:?}");

    let err = router
        .set_routes(
            &[
                spec("198.18.9.0/24 blackhole"),
                (7, RouteSpec::parse("198.18.7.0/24 blackhole").unwrap()),
            ],
            Source::Cli,
            Mode::Add,
            &mut |_| {},
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 7: route 198.18.7.0/24: exists (from the cli); use `route replace` to change it"
    );
    assert!(
        router
            .rib
            .get(
                VrfId::DEFAULT,
                &"198.18.9.0/24".parse().unwrap(),
                Source::Cli
            )
            .is_none(),
        "nothing applied"
    );
    let err = router
        .set_routes(
            &[spec("198.18.9.0/24 via 198.18.2.2 dev eth9")],
            Source::Cli,
            Mode::Add,
            &mut |_| {},
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route 198.18.9.0/24: dev \"eth9\" is not one of the dataplane's interfaces (ra, rb, rc)"
    );

    // A CLI route wins over the config's for the same prefix, and the config's comes back.
    router
        .set_routes(
            &[spec("198.18.2.0/24 blackhole")],
            Source::Cli,
            Mode::Replace,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(
        router.compiled(&"198.18.2.0/24".parse().unwrap()),
        Some(Route::Blackhole)
    );
    router
        .remove_routes(
            &[(VrfId::DEFAULT, "198.18.2.0/24".parse().unwrap())],
            Source::Cli,
        )
        .unwrap();
    assert_eq!(
        router.compiled(&"198.18.2.0/24".parse().unwrap()),
        Some(Route::Nexthop(b))
    );
    let err = router
        .remove_routes(
            &[(VrfId::DEFAULT, "198.18.2.0/24".parse().unwrap())],
            Source::Cli,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route 198.18.2.0/24: no route from the cli (it has one from the config, which changes only with its source)"
    );

    // The new next hop goes away with its last route, and its entry is cleared.
    let writes = router
        .remove_routes(
            &[(VrfId::DEFAULT, "198.18.8.0/24".parse().unwrap())],
            Source::Cli,
        )
        .unwrap();
    assert_eq!(
        writes.last(),
        Some(&MapWrite::Nexthop(3, Nexthop::default()))
    );
    assert_eq!(
        router
            .specs(Source::Cli)
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        ["198.18.7.0/24 via 198.18.2.2 dev rb"]
    );
}

/// A batch that names a prefix twice is refused at the second time, with the line of the
/// first; of several problems, the one on the earliest line is reported; the same prefix in
/// two VRFs is no repeat.
#[test]
fn a_prefix_given_twice_is_refused_at_its_first_repeat() {
    let config = format!("{CONFIG}\n[[vrf]]\nname = \"blue\"\n");
    let (mut router, _) = start(&config);
    let batch = |lines: &[(usize, &str)]| -> Vec<(usize, RouteSpec)> {
        lines
            .iter()
            .map(|&(line, text)| (line, RouteSpec::parse(text).unwrap()))
            .collect()
    };
    let mut set = |lines: &[(usize, &str)]| {
        router
            .set_routes(&batch(lines), Source::Cli, Mode::Replace, &mut |_| {})
            .map(|_| ())
            .map_err(|err| err.to_string())
    };
    assert_eq!(
        set(&[
            (1, "198.18.7.0/24 blackhole"),
            (2, "198.18.8.0/24 blackhole"),
            (3, "198.18.8.0/24 kernel"),
            (4, "198.18.7.0/24 kernel"),
            (5, "198.18.8.0/24 blackhole"),
        ]),
        Err("line 3: route 198.18.8.0/24: given twice (first on line 2)".to_owned())
    );
    assert_eq!(
        set(&[
            (1, "198.18.7.0/24 blackhole"),
            (2, "198.18.9.0/24 via 198.18.2.2 dev eth9"),
            (3, "198.18.7.0/24 kernel"),
        ]),
        Err("line 2: route 198.18.9.0/24: dev \"eth9\" is not one of the dataplane's interfaces (ra, rb, rc)".to_owned())
    );
    assert_eq!(
        set(&[
            (1, "198.18.7.0/24 blackhole"),
            (2, "vrf nowhere 198.18.7.0/24 kernel"),
            (3, "vrf nowhere 198.18.7.0/24 kernel"),
        ])
        .map_err(|err| err.contains("line 2:") && err.contains("nowhere")),
        Err(true)
    );
    set(&[
        (1, "198.18.7.0/24 blackhole"),
        (2, "vrf blue 198.18.7.0/24 kernel"),
    ])
    .unwrap();
    assert_eq!(
        router.compiled(&"198.18.7.0/24".parse().unwrap()),
        Some(Route::Blackhole)
    );
}

#[test]
fn a_new_config_is_applied_whole_or_not_at_all() {
    let (mut router, _) = start(CONFIG);
    router
        .set_routes(
            &[(
                0,
                RouteSpec::parse("198.18.7.0/24 via 198.18.3.9 dev rc").unwrap(),
            )],
            Source::Cli,
            Mode::Add,
            &mut |_| {},
        )
        .unwrap();
    // rc leaves the config, but a CLI route uses it: refused, nothing changes.
    let without_rc = CONFIG
        .replace("[[interface]]\nname = \"rc\"\n", "")
        .replace(
            "[[nexthop]]\nname = \"c\"\ndev = \"rc\"\nvia = \"198.18.3.2\"\n",
            "",
        )
        .replace("nexthop = [\"b\", \"c\"]", "nexthop = \"b\"");
    let config = Config::parse("t.toml", &without_rc).unwrap();
    let err = router
        .apply_config(&config, "t.toml", &host())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("interface \"rc\" is gone from the config but route 198.18.7.0/24"),
        "{err}"
    );
    assert_eq!(router.topology.interfaces.len(), 3);

    // A config that moves 198.18.2.0/24 to c, and drops the IPv6 ECMP route.
    let changed = CONFIG
        .replace(
            "prefix = \"198.18.2.0/24\"\nnexthop = \"b\"",
            "prefix = \"198.18.2.0/24\"\nnexthop = \"c\"",
        )
        .replace(
            "[[route]]\nprefix = \"2001:2:0:9::/64\"\nnexthop = [\"b\", \"c\"]\n",
            "",
        );
    let config = Config::parse("t.toml", &changed).unwrap();
    let update = router.apply_config(&config, "t.toml", &host()).unwrap();
    let c = router.config_nexthop("c").unwrap();
    assert!(routes(&update).contains(&("198.18.2.0/24".to_owned(), Route::Nexthop(c))));
    assert!(!routes(&update).iter().any(|(p, _)| p == "2001:2:0:9::/64"));
    assert_eq!(router.fib.groups(), 0, "the group went with its last route");
    assert!(
        router
            .rib
            .get(
                VrfId::DEFAULT,
                &"198.18.7.0/24".parse().unwrap(),
                Source::Cli
            )
            .is_some(),
        "CLI routes stay"
    );
    assert!(update.ports_added.is_empty() && update.ports_removed.is_empty());
}

/// The `FILTERED` flags the writes leave on each interface, by name.
fn filtered_flags(router: &Router, writes: &[MapWrite]) -> Vec<(String, bool)> {
    let names = router.topology().names();
    let mut flags: Vec<(String, bool)> = writes
        .iter()
        .filter_map(|write| match write {
            MapWrite::Interface(key, entry) => {
                let name = names.iter().find(|n| n.key() == *key)?.name.clone();
                Some((name, entry.is_filtered()))
            }
            _ => None,
        })
        .collect();
    flags.sort();
    flags
}

#[test]
fn interfaces_with_source_filter_entries_are_flagged_and_unflagged() {
    let (mut router, update) = start(CONFIG);
    // No rules: no interface is looked up in the filter.
    assert!(
        filtered_flags(&router, &update.before)
            .iter()
            .all(|(_, filtered)| !filtered)
    );
    let words = |text: &str| text.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let rule = DenyRule::parse(&words("deny src 192.0.2.0/24 dev rb")).unwrap();
    let writes = router.acl_add(rule.clone()).unwrap();
    assert_eq!(filtered_flags(&router, &writes), [("rb".to_owned(), true)]);
    let global = DenyRule::parse(&words("deny src 192.0.2.0/24")).unwrap();
    let writes = router.acl_add(global.clone()).unwrap();
    assert_eq!(
        filtered_flags(&router, &writes),
        [("ra".to_owned(), true), ("rc".to_owned(), true)]
    );
    router.acl_remove(&global).unwrap();
    let writes = router.acl_remove(&rule).unwrap();
    assert_eq!(filtered_flags(&router, &writes), [("rb".to_owned(), false)]);
}

#[test]
fn urpf_settings_become_interface_flags() {
    let config = CONFIG
        .replacen(
            "name = \"ra\"\n",
            "name = \"ra\"\nurpf = \"strict\"\nurpf_allow_default = true\n",
            1,
        )
        .replacen("name = \"rb\"\n", "name = \"rb\"\nurpf = \"loose\"\n", 1);
    let (router, update) = start(&config);
    let names = router.topology().names();
    let flags = |name: &str| {
        let key = names.iter().find(|n| n.name == name).unwrap().key();
        update
            .before
            .iter()
            .find_map(|w| match w {
                MapWrite::Interface(k, entry) if *k == key => Some(entry.flags),
                _ => None,
            })
            .unwrap()
    };
    let urpf = Interface::URPF_STRICT | Interface::URPF_LOOSE | Interface::URPF_ALLOW_DEFAULT;
    assert_eq!(
        flags("ra") & urpf,
        Interface::URPF_STRICT | Interface::URPF_ALLOW_DEFAULT
    );
    assert_eq!(flags("rb") & urpf, Interface::URPF_LOOSE);
    assert_eq!(flags("rc") & urpf, 0);
}

#[test]
fn interfaces_follow_the_vrf_device_they_are_enslaved_to() {
    // rb carries 198.18.2.1; a VRF device "blue" (table 100) is ifindex 20.
    let blue = Link {
        vrf_table: Some(100),
        ..link(20, "blue")
    };
    let enslaved = |ifindex, name| Link {
        controller: Some(20),
        ..link(ifindex, name)
    };
    let config = format!("{CONFIG}\n[[vrf]]\nname = \"blue\"\n");
    let config = Config::parse("t.toml", &config).unwrap();
    let mut host = host();
    host.links.push(blue.clone());
    let (mut router, _) = Router::start(&config, "t.toml", &host).unwrap();
    let blue_id = router.vrfs().id("blue").unwrap();
    let rb = |router: &Router| {
        router
            .topology()
            .interfaces
            .iter()
            .find(|i| i.name == "rb")
            .unwrap()
            .clone()
    };
    let own: IpNet = "198.18.2.1/32".parse().unwrap();
    assert_eq!(rb(&router).entry.vrf, 0);
    assert!(router.has_route(VrfId::DEFAULT, &own, Source::Local));

    // `ip link set rb master blue`: rb's entry moves to blue, and so does its address: into
    // blue before the entry is written, out of the default VRF after.
    let writes = router.link_changed(enslaved(9, "rb"));
    assert_eq!(rb(&router).entry.vrf, blue_id.0);
    assert!(rb(&router).entry.is_routed());
    let entry_at = writes
        .iter()
        .position(
            |w| matches!(w, MapWrite::Interface(key, e) if key.ifindex == 9 && e.vrf == blue_id.0),
        )
        .unwrap_or_else(|| panic!("{writes:?}"));
    let added_at = writes
        .iter()
        .position(|w| matches!(w, MapWrite::Route(v, p, _) if *v == blue_id && *p == own))
        .unwrap_or_else(|| panic!("{writes:?}"));
    // The config's blackhole for 198.18.2.1/32 comes back in the default VRF; the IPv6
    // address had no other route there.
    let own_v6: IpNet = "2001:2:0:2::1/128".parse().unwrap();
    let removed_at = writes
        .iter()
        .position(|w| matches!(w, MapWrite::DeleteRoute(v, p) if v.is_default() && *p == own_v6))
        .unwrap_or_else(|| panic!("{writes:?}"));
    assert_eq!(router.compiled(&own), Some(Route::Blackhole));
    assert!(added_at < entry_at && entry_at < removed_at, "{writes:?}");
    assert!(router.has_route(blue_id, &own, Source::Local));
    assert!(!router.has_route(VrfId::DEFAULT, &own, Source::Local));
    // Other interfaces stay.
    assert!(
        router
            .topology()
            .interfaces
            .iter()
            .filter(|i| i.name != "rb")
            .all(|i| i.entry.vrf == 0)
    );

    // `nomaster`: back to the default VRF.
    router.link_changed(link(9, "rb"));
    assert_eq!(rb(&router).entry.vrf, 0);
    assert!(router.has_route(VrfId::DEFAULT, &own, Source::Local));
    assert!(!router.has_route(blue_id, &own, Source::Local));

    // Enslaved to a VRF device no [[vrf]] names: not routed (the kernel routes it), until
    // it leaves.
    router.link_changed(Link {
        vrf_table: Some(200),
        ..link(21, "red")
    });
    router.link_changed(Link {
        controller: Some(21),
        ..link(9, "rb")
    });
    assert!(!rb(&router).entry.is_routed());
    router.link_changed(link(9, "rb"));
    assert!(rb(&router).entry.is_routed());

    // An interface with its own `vrf` does not follow devices.
    let config = format!(
        "{}\n[[vrf]]\nname = \"blue\"\n",
        CONFIG.replace("name = \"rc\"\n", "name = \"rc\"\nvrf = \"blue\"\n")
    );
    let config = Config::parse("t.toml", &config).unwrap();
    let (mut router, _) = Router::start(&config, "t.toml", &host).unwrap();
    let rc = |router: &Router| {
        router
            .topology()
            .interfaces
            .iter()
            .find(|i| i.name == "rc")
            .unwrap()
            .entry
    };
    assert_eq!(rc(&router).vrf, blue_id.0);
    router.link_changed(Link {
        controller: None,
        mtu: 1400,
        ..link(11, "rc")
    });
    assert_eq!(rc(&router).vrf, blue_id.0);
}

#[test]
fn enslaved_interfaces_need_their_vrf_in_the_config() {
    let mut host = host();
    host.links.push(Link {
        vrf_table: Some(100),
        ..link(20, "blue")
    });
    host.links[1].controller = Some(20); // rb
    let refused = |text: &str| {
        let config = Config::parse("t.toml", text).unwrap();
        match Router::start(&config, "t.toml", &host) {
            Ok(_) => panic!("accepted"),
            Err(err) => err.to_string(),
        }
    };
    assert_eq!(
        refused(CONFIG),
        "t.toml:4: interface \"rb\": enslaved to VRF device \"blue\" (kernel table 100): add a \
         [[vrf]] named \"blue\" to route it in that VRF"
    );
    let other = format!(
        "{}\n[[vrf]]\nname = \"red\"\n",
        CONFIG.replace("name = \"rb\"\n", "name = \"rb\"\nvrf = \"red\"\n")
    );
    assert_eq!(
        refused(&other),
        "t.toml:4: interface \"rb\": vrf = \"red\", but the interface is enslaved to VRF device \
         \"blue\" (kernel table 100): leave `vrf` out to follow the device, or move the interface"
    );
    let config = Config::parse("t.toml", &format!("{CONFIG}\n[[vrf]]\nname = \"blue\"\n")).unwrap();
    let (router, _) = Router::start(&config, "t.toml", &host).unwrap();
    let rb = router
        .topology()
        .interfaces
        .iter()
        .find(|i| i.name == "rb")
        .unwrap();
    assert_eq!(Some(VrfId(rb.entry.vrf)), router.vrfs().id("blue"));
}
