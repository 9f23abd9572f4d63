use super::*;
use crate::host::Vlan;

fn link(ifindex: u32, name: &str, vlan: Option<Vlan>) -> Link {
    Link {
        ifindex,
        name: name.to_owned(),
        mac: MacAddr([2, 0, 0, 0, 0, ifindex as u8]),
        mtu: if vlan.is_some() { 1496 } else { 1500 },
        up: true,
        vlan,
        controller: None,
        vrf_table: None,
    }
}

fn host() -> Host {
    Host {
        links: vec![
            link(7, "ra", None),
            link(9, "rb", None),
            link(
                10,
                "ra.100",
                Some(Vlan {
                    parent: 7,
                    id: 100,
                    tpid: 0x8100,
                }),
            ),
            link(
                11,
                "ra.200",
                Some(Vlan {
                    parent: 7,
                    id: 200,
                    tpid: 0x88a8,
                }),
            ),
            link(
                12,
                "ra.200.300",
                Some(Vlan {
                    parent: 11,
                    id: 300,
                    tpid: 0x8100,
                }),
            ),
            link(
                13,
                "x.1.2.3",
                Some(Vlan {
                    parent: 12,
                    id: 3,
                    tpid: 0x8100,
                }),
            ),
        ],
        addresses: vec![],
    }
}

const CONFIG: &str = r#"
[[interface]]
name = "ra.100"
[[interface]]
name = "ra.200.300"
[[interface]]
name = "rb"
[[interface]]
name = "rb.cfg"
port = "rb"
vlan = [5, 6]
[[nexthop]]
name = "q"
dev = "ra.200.300"
lladdr = "02:00:00:00:00:aa"
[[nexthop]]
name = "u"
dev = "rb"
via = "198.18.2.2"
"#;

#[test]
fn places_vlans_on_their_ports() {
    let config = Config::parse("t.toml", CONFIG).unwrap();
    let topology = Topology::build(&config, "t.toml", &host(), &Vrfs::default()).unwrap();
    assert_eq!(
        topology.ports,
        [
            Port {
                name: "ra".into(),
                ifindex: 7,
                index: 0
            },
            Port {
                name: "rb".into(),
                ifindex: 9,
                index: 1
            },
        ]
    );
    let summary: Vec<_> = topology
        .interfaces
        .iter()
        .map(|i| {
            (
                i.name.as_str(),
                i.key,
                i.entry.slot,
                i.entry.is_routed(),
                i.port,
            )
        })
        .collect();
    let key = |ifindex, vlan_outer, vlan_inner| InterfaceKey {
        ifindex,
        vlan_outer,
        vlan_inner,
    };
    assert_eq!(
        summary,
        [
            ("ra.100", key(7, 100, 0), 0, true, 0),
            ("ra.200.300", key(7, 200, 300), 1, true, 0),
            ("rb", key(9, 0, 0), 2, true, 1),
            ("rb.cfg", key(9, 5, 6), 3, true, 1),
            // ra's untagged side is not configured: counted, not routed.
            ("ra", key(7, 0, 0), 4, false, 0),
        ]
    );

    let lladdr = config.nexthops[0].lladdr;
    let qinq = topology.nexthop("ra.200.300", lladdr, true).unwrap();
    assert_eq!(
        qinq,
        Nexthop {
            port: 0,
            slot: 1,
            mtu: 1496,
            flags: Nexthop::RESOLVED,
            vlan_outer: 200,
            vlan_inner: 300,
            vlan_outer_tpid: 0x88a8,
            src_mac: [2, 0, 0, 0, 0, 12],
            dst_mac: [2, 0, 0, 0, 0, 0xaa],
            _pad: [0; 2],
        }
    );
    assert_eq!(
        interface_name(&[], &host(), &key(7, 200, 300), 0),
        "ra.200.300"
    );
    assert_eq!(interface_name(&[], &host(), &key(7, 0, 0), 0), "ra");
    assert_eq!(interface_name(&[], &host(), &key(7, 5, 0), 0), "if7.5");
    // A saved name wins, for its own slot only: a slot given to another interface since
    // is not named after the old one.
    let saved = [NamedInterface {
        name: "customer-5".to_owned(),
        slot: 4,
        key: [7, 5, 0],
        vrf: None,
    }];
    assert_eq!(
        interface_name(&saved, &host(), &key(7, 5, 0), 4),
        "customer-5"
    );
    assert_eq!(interface_name(&saved, &host(), &key(7, 5, 0), 3), "if7.5");

    let unresolved = topology.nexthop("rb", None, true).unwrap();
    assert!(!unresolved.is_resolved());
    assert_eq!(
        (unresolved.port, unresolved.slot, unresolved.vlan_tags()),
        (1, 2, 0)
    );
}

#[test]
fn errors_name_the_entry_and_the_problem() {
    let config =
        Config::parse("t.toml", &CONFIG.replace("port = \"rb\"", "port = \"rz\"")).unwrap();
    assert_eq!(
        Topology::build(&config, "t.toml", &host(), &Vrfs::default())
            .unwrap_err()
            .to_string(),
        "t.toml:8: interface \"rb.cfg\": port \"rz\": no such interface in this network namespace"
    );
    let config = Config::parse(
        "t.toml",
        &CONFIG
            .replace("vlan = [5, 6]", "vlan = 100")
            .replace("port = \"rb\"", "port = \"ra\""),
    )
    .unwrap();
    assert_eq!(
        Topology::build(&config, "t.toml", &host(), &Vrfs::default())
            .unwrap_err()
            .to_string(),
        "t.toml:8: interface \"rb.cfg\": the same port and VLAN tags as interface \"ra.100\""
    );
}

#[test]
fn errors_name_the_entry() {
    let config = Config::parse("t.toml", &CONFIG.replace("\"rb\"", "\"rc\"")).unwrap();
    assert_eq!(
        Topology::build(&config, "t.toml", &host(), &Vrfs::default())
            .unwrap_err()
            .to_string(),
        "t.toml:6: interface \"rc\": no such interface in this network namespace"
    );
    let config = Config::parse("t.toml", &CONFIG.replace("\"ra.100\"", "\"x.1.2.3\"")).unwrap();
    assert_eq!(
        Topology::build(&config, "t.toml", &host(), &Vrfs::default())
            .unwrap_err()
            .to_string(),
        "t.toml:2: interface \"x.1.2.3\": more than two VLAN tags deep: not supported"
    );
}
