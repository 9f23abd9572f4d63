use super::*;

const GOOD: &str = r#"
[[interface]]
name = "ra"

[[interface]]
name = "rb"

[[nexthop]]
name = "host-b"
dev = "rb"
lladdr = "02:00:00:00:00:0b"

[[route]]
prefix = "198.18.2.0/24"
nexthop = "host-b"

[[route]]
prefix = "198.18.99.0/24"
type = "blackhole"

[[route]]
prefix = "198.18.98.0/24"
type = "kernel"
"#;

fn error(text: &str) -> String {
    Config::parse("lab.toml", text).unwrap_err().to_string()
}

#[test]
fn parses_a_good_config() {
    let config = Config::parse("lab.toml", GOOD).unwrap();
    assert_eq!(
        config
            .interfaces
            .iter()
            .map(|i| (i.name.as_str(), i.line))
            .collect::<Vec<_>>(),
        [("ra", 2), ("rb", 5)]
    );
    assert_eq!(
        config.nexthops,
        [NexthopConfig {
            name: "host-b".into(),
            dev: "rb".into(),
            via: None,
            lladdr: Some(MacAddr([2, 0, 0, 0, 0, 0x0b])),
            line: 8,
        }]
    );
    assert_eq!(
        config.routes,
        [
            RouteConfig {
                vrf: None,
                prefix: "198.18.2.0/24".parse().unwrap(),
                action: RouteAction::Nexthops(vec![0]),
                line: 13,
            },
            RouteConfig {
                vrf: None,
                prefix: "198.18.99.0/24".parse().unwrap(),
                action: RouteAction::Blackhole,
                line: 17,
            },
            RouteConfig {
                vrf: None,
                prefix: "198.18.98.0/24".parse().unwrap(),
                action: RouteAction::Kernel,
                line: 21,
            },
        ]
    );
}

#[test]
fn bad_prefix() {
    let text = GOOD.replace("198.18.2.0/24", "198.18.2.0/33");
    assert_eq!(
        error(&text),
        "lab.toml:13: route 198.18.2.0/33: \"198.18.2.0/33\" is not an IP prefix \
         (expected ADDRESS/LENGTH, e.g. 203.0.113.0/24 or 2001:db8::/32)"
    );
    let text = GOOD.replace("198.18.2.0/24", "banana");
    assert!(error(&text).starts_with("lab.toml:13: route banana: \"banana\" is not an IP prefix"));
}

#[test]
fn host_bits() {
    let text = GOOD.replace("198.18.2.0/24", "198.18.2.1/24");
    assert_eq!(
        error(&text),
        "lab.toml:13: route 198.18.2.1/24: 198.18.2.1/24 has host bits set (the prefix is 198.18.2.0/24)"
    );
}

#[test]
fn duplicate_route() {
    let text = GOOD.replace("198.18.99.0/24", "198.18.2.0/24");
    assert_eq!(
        error(&text),
        "lab.toml:17: route 198.18.2.0/24: defined twice (first on line 13)"
    );
}

#[test]
fn unknown_nexthop() {
    let text = GOOD.replace("nexthop = \"host-b\"", "nexthop = \"host-c\"");
    assert_eq!(
        error(&text),
        "lab.toml:13: route 198.18.2.0/24: next hop \"host-c\" is not defined (defined: host-b)"
    );
}

#[test]
fn nexthop_on_unknown_interface() {
    let text = GOOD.replace("dev = \"rb\"", "dev = \"eth9\"");
    assert_eq!(
        error(&text),
        "lab.toml:8: next hop \"host-b\": dev \"eth9\" is not one of the [[interface]] entries (ra, rb)"
    );
}

#[test]
fn bad_lladdr() {
    let text = GOOD.replace("02:00:00:00:00:0b", "02:00:00:00:0b");
    assert_eq!(
        error(&text),
        "lab.toml:8: next hop \"host-b\": \"02:00:00:00:0b\" is not a MAC address \
         (expected six hex octets: 02:00:5e:10:00:01)"
    );
    let text = GOOD.replace("02:00:00:00:00:0b", "01:00:5e:00:00:01");
    assert_eq!(
        error(&text),
        "lab.toml:8: next hop \"host-b\": lladdr 01:00:5e:00:00:01 is not a unicast MAC address"
    );
}

#[test]
fn duplicates() {
    let text = GOOD.replace("name = \"rb\"", "name = \"ra\"");
    assert_eq!(
        error(&text),
        "lab.toml:5: interface \"ra\": listed twice (first on line 2)"
    );
    let text = format!(
        "{GOOD}\n[[nexthop]]\nname = \"host-b\"\ndev = \"ra\"\nlladdr = \"02:00:00:00:00:01\"\n"
    );
    assert_eq!(
        error(&text),
        "lab.toml:25: next hop \"host-b\": defined twice (first on line 8)"
    );
}

#[test]
fn wrong_types_and_unknown_fields() {
    let text = GOOD.replace("name = \"ra\"", "name = 7");
    let err = error(&text);
    assert!(
        err.starts_with("lab.toml:3: invalid type: integer `7`, expected a string"),
        "{err}"
    );

    let text = GOOD.replace("prefix = \"198.18.2.0/24\"", "prefx = \"198.18.2.0/24\"");
    let err = error(&text);
    assert!(
        err.starts_with("lab.toml:14: unknown field `prefx`"),
        "{err}"
    );

    let text = GOOD.replace("type = \"kernel\"", "type = \"anycast\"");
    let err = error(&text);
    assert!(
        err.starts_with("lab.toml:23: unknown variant `anycast`"),
        "{err}"
    );

    let err = error("[[interface]]\nname = \"ra\"\n[[route]\n");
    assert!(err.starts_with("lab.toml:3: "), "{err}");
}

#[test]
fn route_kinds() {
    let text = GOOD.replace("nexthop = \"host-b\"", "");
    assert_eq!(
        error(&text),
        "lab.toml:13: route 198.18.2.0/24: needs `nexthop = \"NAME\"`, or `type = \"blackhole\"` or `\"kernel\"`"
    );
    let text = GOOD.replace(
        "type = \"blackhole\"",
        "type = \"blackhole\"\nnexthop = \"host-b\"",
    );
    assert_eq!(
        error(&text),
        "lab.toml:17: route 198.18.99.0/24: a blackhole or kernel route takes no next hop"
    );
}

#[test]
fn ipv6_ecmp_and_via() {
    let text = format!(
        "{GOOD}
[[nexthop]]
name = \"b2\"
dev = \"rb\"
via = \"2001:2:0:2::3\"

[[route]]
prefix = \"2001:2:0:9::/64\"
nexthop = [\"b2\", \"host-b\"]
"
    );
    let config = Config::parse("lab.toml", &text).unwrap();
    assert_eq!(
        config.nexthops[1].via,
        Some("2001:2:0:2::3".parse().unwrap())
    );
    assert_eq!(config.nexthops[1].lladdr, None);
    assert_eq!(
        config.routes[3],
        RouteConfig {
            vrf: None,
            prefix: "2001:2:0:9::/64".parse().unwrap(),
            action: RouteAction::Nexthops(vec![0, 1]),
            line: 30,
        }
    );

    let err = error(&text.replace("2001:2:0:9::/64", "2001:2:0:9::1/64"));
    assert_eq!(
        err,
        "lab.toml:30: route 2001:2:0:9::1/64: 2001:2:0:9::1/64 has host bits set (the prefix is 2001:2:0:9::/64)"
    );
    let err = error(&text.replace("[\"b2\", \"host-b\"]", "[\"b2\", \"b2\"]"));
    assert_eq!(
        err,
        "lab.toml:30: route 2001:2:0:9::/64: next hop \"b2\" is listed twice"
    );
    let err = error(&text.replace("[\"b2\", \"host-b\"]", "[]"));
    assert_eq!(
        err,
        "lab.toml:30: route 2001:2:0:9::/64: the next hop list is empty"
    );
    let err = error(&text.replace("via = \"2001:2:0:2::3\"", "via = \"2001:2::2::3\""));
    assert_eq!(
        err,
        "lab.toml:25: next hop \"b2\": via \"2001:2::2::3\" is not an IPv4 or IPv6 address"
    );
    let err = error(&text.replace("via = \"2001:2:0:2::3\"", ""));
    assert_eq!(
        err,
        "lab.toml:25: next hop \"b2\": needs `via` (the neighbour's address), `lladdr` (its MAC), or both"
    );
}

#[test]
fn vlan_sub_interfaces() {
    let text = format!(
        "{GOOD}
[[interface]]
name = \"ra.7\"
port = \"ra\"
vlan = 7

[[interface]]
name = \"qinq\"
port = \"ra\"
vlan = [200, 300]
"
    );
    let config = Config::parse("lab.toml", &text).unwrap();
    assert_eq!(
        config.interfaces[2].vlan,
        Some(VlanConfig {
            port: "ra".into(),
            outer: 7,
            inner: None,
            outer_tpid: 0x8100
        })
    );
    assert_eq!(
        config.interfaces[3].vlan,
        Some(VlanConfig {
            port: "ra".into(),
            outer: 200,
            inner: Some(300),
            outer_tpid: 0x88a8
        })
    );
    assert_eq!(
        error(&text.replace("vlan = 7", "vlan = 4095")),
        "lab.toml:25: interface \"ra.7\": VLAN id 4095 is outside 1-4094"
    );
    assert_eq!(
        error(&text.replace("vlan = [200, 300]", "vlan = [1, 2, 3]")),
        "lab.toml:30: interface \"qinq\": vlan takes one VLAN id, or two (outer, inner) for QinQ"
    );
    assert_eq!(
        error(&text.replace("port = \"ra\"\nvlan = 7", "vlan = 7")),
        "lab.toml:25: interface \"ra.7\": a VLAN sub-interface needs both `port` and `vlan`"
    );
}

#[test]
fn no_interfaces() {
    assert_eq!(
        error(""),
        "lab.toml: no [[interface]]: nothing to attach to"
    );
}

#[test]
fn bad_interface_name() {
    let text = GOOD.replace("name = \"ra\"", "name = \"a-very-long-interface-name\"");
    assert_eq!(
        error(&text),
        "lab.toml:2: interface \"a-very-long-interface-name\": not a valid interface name \
         (1-15 characters, no '/' or spaces)"
    );
}

#[test]
fn unreadable_and_not_utf8() {
    let err = Config::load(Path::new("/nonexistent/pop.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/nonexistent/pop.toml: cannot read: No such file"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("pop-config-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    fs::write(&path, b"[[interface]]\nname = \"r\xffa\"\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(err, format!("{}:2: not UTF-8 text", path.display()));
}
