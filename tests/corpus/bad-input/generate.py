#!/usr/bin/env python3
"""Writes the bad-input corpus: broken config files (config/) and route files (routes/), each
with one fault, for tests/tests/e2e_bad_input.rs. Each case's expected error is in EXPECTED
(`{file}` stands for the file's name as the daemon or CLI was given it). Run from this
directory; the output is committed, this script is how it was made."""

import os
import random

BASE = """# lab router (ra: host A side, rb: host B side)
[[interface]]
name = "ra"

[[interface]]
name = "rb"

[[nexthop]]
name = "host-a"
dev = "ra"
via = "198.18.1.2"
lladdr = "02:00:00:01:00:02"

[[nexthop]]
name = "host-b"
dev = "rb"
via = "198.18.2.2"
lladdr = "02:00:00:02:00:02"

[[route]]
prefix = "198.18.1.0/24"
nexthop = "host-a"

[[route]]
prefix = "198.18.2.0/24"
nexthop = "host-b"
"""
# BASE has 26 lines; what is appended starts on line 27 (after a blank line 27, at 28).
APPENDED = 28

CONFIG = []  # (name, text or bytes, expected)
ROUTES = []


def config(name, extra, expected, base=BASE):
    text = base + "\n" + extra if extra is not None else base
    CONFIG.append((name + ".toml", text, expected))


def replace(name, old, new, expected):
    assert old in BASE, old
    CONFIG.append((name + ".toml", BASE.replace(old, new, 1), expected))


L = APPENDED
route = lambda p: f'[[route]]\nprefix = "{p}"\nnexthop = "host-b"\n'
config("bad-prefix-octet", route("198.18.300.0/24"), f'{{file}}:{L}: route 198.18.300.0/24: "198.18.300.0/24" is not an IP prefix')
config("prefix-without-length", route("198.18.3.0"), f'{{file}}:{L}: route 198.18.3.0: "198.18.3.0" is not an IP prefix')
config("prefix-length-33", route("198.18.3.0/33"), f'{{file}}:{L}: route 198.18.3.0/33: "198.18.3.0/33" is not an IP prefix')
config("prefix-length-huge", route("198.18.3.0/99999999999999999999"), f'{{file}}:{L}: route 198.18.3.0/99999999999999999999: "198.18.3.0/99999999999999999999" is not an IP prefix')
config("prefix-length-negative", route("198.18.3.0/-1"), f'{{file}}:{L}: route 198.18.3.0/-1: "198.18.3.0/-1" is not an IP prefix')
config("prefix-v6-length-129", route("2001:2::/129"), f'{{file}}:{L}: route 2001:2::/129: "2001:2::/129" is not an IP prefix')
config("host-bits", route("198.18.3.1/24"), f"{{file}}:{L}: route 198.18.3.1/24: 198.18.3.1/24 has host bits set (the prefix is 198.18.3.0/24)")
config("host-bits-v6", route("2001:2::1/64"), f"{{file}}:{L}: route 2001:2::1/64: 2001:2::1/64 has host bits set (the prefix is 2001:2::/64)")
config("duplicate-route", route("198.18.2.0/24"), f"{{file}}:{L}: route 198.18.2.0/24: defined twice (first on line 24)")
config("duplicate-interface", '[[interface]]\nname = "rb"\n', f'{{file}}:{L}: interface "rb": listed twice (first on line 5)')
config("duplicate-nexthop", '[[nexthop]]\nname = "host-b"\ndev = "ra"\nlladdr = "02:00:00:00:00:09"\n', f'{{file}}:{L}: next hop "host-b": defined twice (first on line 14)')
config("unknown-interface", '[[interface]]\nname = "nosuch0"\n', f'{{file}}:{L}: interface "nosuch0": no such interface in this network namespace')
config("nexthop-unknown-dev", '[[nexthop]]\nname = "x"\ndev = "eth9"\nlladdr = "02:00:00:00:00:09"\n', f'{{file}}:{L}: next hop "x": dev "eth9" is not one of the [[interface]] entries (ra, rb)')
config("route-unknown-nexthop", '[[route]]\nprefix = "198.18.3.0/24"\nnexthop = "transit-z"\n', f'{{file}}:{L}: route 198.18.3.0/24: next hop "transit-z" is not defined (defined: host-a, host-b)')
config("route-nexthop-twice", '[[route]]\nprefix = "198.18.3.0/24"\nnexthop = ["host-b", "host-b"]\n', f'{{file}}:{L}: route 198.18.3.0/24: next hop "host-b" is listed twice')
config("route-empty-nexthop-list", '[[route]]\nprefix = "198.18.3.0/24"\nnexthop = []\n', f"{{file}}:{L}: route 198.18.3.0/24: the next hop list is empty")
config("route-blackhole-with-nexthop", '[[route]]\nprefix = "198.18.3.0/24"\ntype = "blackhole"\nnexthop = "host-b"\n', f"{{file}}:{L}: route 198.18.3.0/24: a blackhole or kernel route takes no next hop")
config("route-without-nexthop", '[[route]]\nprefix = "198.18.3.0/24"\n', f'{{file}}:{L}: route 198.18.3.0/24: needs `nexthop = "NAME"`')
config("route-unknown-type", '[[route]]\nprefix = "198.18.3.0/24"\ntype = "drop"\n', f"{{file}}:{L+2}: unknown variant `drop`, expected one of `unicast`, `blackhole`, `kernel`")
config("prefix-wrong-type", "[[route]]\nprefix = 5\nnexthop = \"host-b\"\n", f"{{file}}:{L+1}: invalid type: integer `5`, expected a string")
config("interface-name-wrong-type", "[[interface]]\nname = 7\n", f"{{file}}:{L+1}: invalid type: integer `7`, expected a string")
config("vlan-wrong-type", '[[interface]]\nname = "ra-7"\nport = "ra"\nvlan = "ten"\n', f"{{file}}:{L+3}: a VLAN id (vlan = 100), or two for QinQ (vlan = [200, 300])")
config("vlan-4095", '[[interface]]\nname = "ra-7"\nport = "ra"\nvlan = 4095\n', f'{{file}}:{L}: interface "ra-7": VLAN id 4095 is outside 1-4094')
config("vlan-huge-number", '[[interface]]\nname = "ra-7"\nport = "ra"\nvlan = 99999999999999999999\n', f"{{file}}:{L+3}: invalid type: integer `99999999999999999999`")
config("vlan-three-tags", '[[interface]]\nname = "ra-7"\nport = "ra"\nvlan = [1, 2, 3]\n', f'{{file}}:{L}: interface "ra-7": vlan takes one VLAN id, or two (outer, inner) for QinQ')
config("vlan-without-port", '[[interface]]\nname = "ra-7"\nvlan = 7\n', f'{{file}}:{L}: interface "ra-7": a VLAN sub-interface needs both `port` and `vlan`')
config("bad-lladdr", '[[nexthop]]\nname = "x"\ndev = "ra"\nlladdr = "02:00:00:zz:00:01"\n', f'{{file}}:{L}: next hop "x": "02:00:00:zz:00:01" is not a MAC address')
config("multicast-lladdr", '[[nexthop]]\nname = "x"\ndev = "ra"\nlladdr = "01:00:5e:00:00:01"\n', f'{{file}}:{L}: next hop "x": lladdr 01:00:5e:00:00:01 is not a unicast MAC address')
config("bad-via", '[[nexthop]]\nname = "x"\ndev = "ra"\nvia = "198.18.2.256"\n', f'{{file}}:{L}: next hop "x": via "198.18.2.256" is not an IPv4 or IPv6 address')
config("nexthop-without-address", '[[nexthop]]\nname = "x"\ndev = "ra"\n', f'{{file}}:{L}: next hop "x": needs `via`')
config("unknown-field", '[[interface]]\nname = "ra-7"\nmtu = 1500\n', f"{{file}}:{L+2}: unknown field `mtu`")
config("unknown-section", "[routing]\nas = 64500\n", f"{{file}}:{L}: unknown field `routing`")
config("interface-name-too-long", '[[interface]]\nname = "abcdefghijklmnopq"\n', f'{{file}}:{L}: interface "abcdefghijklmnopq": not a valid interface name')
config("interface-name-slash", '[[interface]]\nname = "ra/1"\n', f'{{file}}:{L}: interface "ra/1": not a valid interface name')
config("interface-name-nul", '[[interface]]\nname = "ra\\u0000x"\n', f'{{file}}:{L}: interface "ra\\0x": not a valid interface name')
many = "".join(f'[[nexthop]]\nname = "n{i}"\ndev = "rb"\nlladdr = "02:00:00:00:{i // 256:02x}:{i % 256:02x}"\n\n' for i in range(65))
names = ", ".join(f'"n{i}"' for i in range(65))
config("too-many-ecmp-nexthops", many + f'[[route]]\nprefix = "198.18.3.0/24"\nnexthop = [{names}]\n', f"{{file}}:{L + 65 * 5}: route 198.18.3.0/24: 65 next hops; at most 64 per route")
config("acl-bad-prefix", '[[acl]]\naction = "deny"\nsrc = "300.0.0.0/8"\n', f'{{file}}:{L}: acl deny src 300.0.0.0/8: "300.0.0.0/8" is not an IP prefix')
config("acl-host-bits", '[[acl]]\naction = "deny"\nsrc = "198.18.9.1/24"\n', f"{{file}}:{L}: acl deny src 198.18.9.1/24: 198.18.9.1/24 has host bits set")
config("acl-unknown-dev", '[[acl]]\naction = "deny"\nsrc = "198.18.9.0/24"\ndev = "eth9"\n', f'{{file}}:{L}: acl deny src 198.18.9.0/24: dev "eth9" is not one of the [[interface]] entries (ra, rb)')
config("acl-unknown-action", '[[acl]]\naction = "permit"\nsrc = "198.18.9.0/24"\n', f"{{file}}:{L+1}: unknown variant `permit`, expected `deny`")
config("acl-duplicate", '[[acl]]\naction = "deny"\nsrc = "198.18.9.0/24"\n\n[[acl]]\naction = "deny"\nsrc = "198.18.9.0/24"\n', f"{{file}}:{L+4}: acl deny src 198.18.9.0/24: listed twice (first on line {L})")
config("urpf-unknown-mode", '[[interface]]\nname = "ra-7"\nurpf = "sideways"\n', f"{{file}}:{L+2}: unknown variant `sideways`, expected one of `off`, `loose`, `strict`")
config("urpf-allow-default-without-urpf", '[[interface]]\nname = "ra-7"\nurpf_allow_default = true\n', f'{{file}}:{L}: interface "ra-7": urpf_allow_default needs urpf = "loose" or "strict"')
config("flow-unknown-component", '[[flow]]\nrule = "destination 198.18.2.0/24 colour =1 then drop"\n', f'{{file}}:{L}: flow "destination 198.18.2.0/24 colour =1 then drop": unknown match "colour"')
config("flow-value-out-of-range", '[[flow]]\nrule = "ipv4 dscp =64 then drop"\n', f'{{file}}:{L}: flow "ipv4 dscp =64 then drop": dscp "=64": 64 is out of range (0-63)')
config("flow-no-action", '[[flow]]\nrule = "destination 198.18.2.0/24 protocol =udp"\n', f'{{file}}:{L}: flow "destination 198.18.2.0/24 protocol =udp": destination 198.18.2.0/24 protocol =udp: expected: [ipv4|ipv6]')
config("flow-bad-rate", '[[flow]]\nrule = "ipv4 protocol =udp then rate-limit 0 packets"\n', f'{{file}}:{L}: flow "ipv4 protocol =udp then rate-limit 0 packets": rate-limit 0 packets: the rate must be 1 to 2^40 (use drop for none)')
config("flow-unknown-key", '[[flow]]\nrule = "ipv4 protocol =udp then drop"\naction = "drop"\n', f"{{file}}:{L+2}: unknown field `action`, expected `rule`")
config("flow-duplicate", '[[flow]]\nrule = "ipv4 protocol =udp then drop"\n\n[[flow]]\nrule = "ipv4 protocol =udp then drop"\n', f'{{file}}:{L+3}: flow "ipv4 protocol =udp then drop": listed twice (first on line {L})')
config("flow-too-many-covering", "".join(f'[[flow]]\nrule = "destination 198.18.2.0/24 dscp ={d} then drop"\n' for d in range(29)), "{file}: 29 flow rules cover destination 198.18.2.0/24; at most 28 may")
RATE_RANGE = "is outside 1-16777216 (1-in-N; leave it out, or give 0 on an interface, for none)"
config("sflow-rate-zero", '[sflow]\nsampling_rate = 0\n', f"{{file}}:{L}: [sflow]: sampling rate 0 {RATE_RANGE}")
config("sflow-rate-too-large", '[sflow]\nsampling_rate = 16777217\n', f"{{file}}:{L}: [sflow]: sampling rate 16777217 {RATE_RANGE}")
replace("sflow-interface-rate-negative", 'name = "ra"\n', 'name = "ra"\nsampling_rate = -1\n', f'{{file}}:2: interface "ra": sampling rate -1 {RATE_RANGE}')
config("sflow-collector-port-zero", '[sflow]\ncollectors = ["198.18.2.2:0"]\n', f'{{file}}:{L}: [sflow]: collector "198.18.2.2:0": the port is not a number in 1-65535')
config("sflow-collector-twice", '[sflow]\ncollectors = ["198.18.2.2", "198.18.2.2:6343"]\n', f"{{file}}:{L}: [sflow]: collector 198.18.2.2:6343 is listed twice")
config("sflow-polling-too-long", '[sflow]\npolling_interval = 86400\n', f"{{file}}:{L}: [sflow]: polling_interval 86400 is outside 0-3600 seconds")
config("sflow-unknown-key", '[sflow]\ncollector = "198.18.2.2"\n', f"{{file}}:{L+1}: unknown field `collector`")
# Checked against the host when the daemon takes the config.
config("sflow-collector-unresolvable", '[sflow]\ncollectors = ["no-such-collector.invalid"]\n', f"{{file}}:{L}: [sflow]: collector no-such-collector.invalid:6343: cannot resolve")
config("sflow-collector-unreachable", '[sflow]\ncollectors = ["198.19.200.1"]\n', f"{{file}}:{L}: [sflow]: collector 198.19.200.1:6343 (198.19.200.1:6343): unreachable from this host: Network is unreachable")
config("sflow-agent-not-local", '[sflow]\ncollectors = ["198.18.2.2"]\nagent_address = "198.18.7.7"\n', f"{{file}}:{L}: [sflow]: agent_address 198.18.7.7: Cannot assign requested address")
# e2e_bad_input holds UDP port 6999 in the router's namespace.
config("sflow-source-port-in-use", '[sflow]\ncollectors = ["198.18.2.2"]\nsource_port = 6999\n', f"{{file}}:{L}: [sflow]: source_port 6999: Address already in use")
config("filter-wrong-type", '[filter]\nmartian_sources = "yes"\n', f"{{file}}:{L+1}: invalid type: string \"yes\", expected a boolean")
config("daemon-unknown-key", '[daemon]\ncontrol_socket = "/tmp/x"\n', f"{{file}}:{L+1}: unknown field `control_socket`")
config("sync-unknown-table", '[daemon]\nsync_kernel_tables = ["nosuchtable"]\n', f'{{file}}:{L+1}: routing table "nosuchtable": not main, default, local, a number or a name in /etc/iproute2/rt_tables')
config("vrf-named-default", '[[vrf]]\nname = "default"\n', f'{{file}}:{L}: vrf "default": "default" is the default VRF\'s name: interfaces without `vrf` are in it')
config("vrf-bad-name", '[[vrf]]\nname = "blue vrf"\n', f'{{file}}:{L}: vrf "blue vrf": not a valid VRF name (1-15 letters, digits, \'-\', \'_\' or \'.\')')
config("vrf-twice", '[[vrf]]\nname = "blue"\n\n[[vrf]]\nname = "blue"\n', f'{{file}}:{L+3}: vrf "blue": listed twice (first on line {L})')
config("vrf-table-twice", '[[vrf]]\nname = "blue"\nsync_kernel_table = 100\n\n[[vrf]]\nname = "red"\nsync_kernel_table = 100\n', f'{{file}}:{L+4}: vrf "red": kernel table 100 is followed by vrf "blue" already (line {L})')
config("vrf-table-of-default", '[daemon]\nsync_kernel_tables = [100]\n\n[[vrf]]\nname = "blue"\nsync_kernel_table = 100\n', f'{{file}}:{L+3}: vrf "blue": kernel table 100 is in [daemon] sync_kernel_tables, the default VRF\'s')
replace("vrf-unknown-on-interface", 'name = "rb"\n', 'name = "rb"\nvrf = "blue"\n', '{file}:5: interface "rb": vrf "blue" is not one of the [[vrf]] entries (default)')
config("vrf-unknown-on-route", '[[route]]\nprefix = "198.18.3.0/24"\ntype = "blackhole"\nvrf = "blue"\n', f'{{file}}:{L}: route 198.18.3.0/24: vrf "blue" is not one of the [[vrf]] entries (default)')
config("vrf-route-twice", '[[vrf]]\nname = "blue"\n\n[[route]]\nprefix = "198.18.3.0/24"\ntype = "blackhole"\nvrf = "blue"\n\n[[route]]\nprefix = "198.18.3.0/24"\ntype = "kernel"\nvrf = "blue"\n', f'{{file}}:{L+8}: route 198.18.3.0/24: defined twice (first on line {L+3})')
config("vrf-unknown-on-flow", '[[flow]]\nrule = "vrf blue destination 198.18.2.0/24 then drop"\n', f'{{file}}:{L}: flow "vrf blue destination 198.18.2.0/24 then drop": vrf "blue" is not one of the [[vrf]] entries (default)')
config("toml-unclosed-table", "[[interface]\nname = \"rc\"\n", f"{{file}}:{L}: unclosed array table, expected `]`")
config("toml-unterminated-string", '[[interface]]\nname = "rc\n', f"{{file}}:{L+1}: invalid basic string, expected `\"`")
config("toml-duplicate-key", '[[interface]]\nname = "rc"\nname = "rd"\n', f"{{file}}:{L+2}: duplicate key")
CONFIG.append(("empty.toml", "", "{file}: no [[interface]]: nothing to attach to"))
CONFIG.append(("only-comments.toml", "# nothing here\n# at all\n", "{file}: no [[interface]]: nothing to attach to"))
rng = random.Random(7)
junk = bytes(rng.randrange(256) for _ in range(4096))
CONFIG.append(("binary-junk.toml", junk, "{file}:1: not UTF-8 text"))
CONFIG.append(("not-utf8.toml", BASE.encode().replace(b"# lab router", b"# lab router caf\xe9"), "{file}:1: not UTF-8 text"))
CONFIG.append(("not-utf8-later.toml", (BASE + "\n# r\xe9seau\n").encode("latin-1"), f"{{file}}:{L}: not UTF-8 text"))

# Route files, for `route load`: lines as `route add` takes them.
GOOD = "198.18.5.0/24 via 198.18.2.2 dev rb\n198.18.6.0/24 blackhole\n"  # lines 1-2


def routes(name, extra, expected):
    text = GOOD + extra if isinstance(extra, str) else GOOD.encode() + extra
    ROUTES.append((name + ".routes", text, expected))


routes("bad-prefix", "198.18.300.0/24 blackhole\n", '{file}:3: "198.18.300.0/24" is not an IP prefix')
routes("host-bits", "198.18.7.1/24 blackhole\n", "{file}:3: 198.18.7.1/24 has host bits set (the prefix is 198.18.7.0/24)")
routes("host-bits-v6", "2001:2::1/64 blackhole\n", "{file}:3: 2001:2::1/64 has host bits set (the prefix is 2001:2::/64)")
routes("prefix-length-huge", "198.18.7.0/4294967296 blackhole\n", '{file}:3: "198.18.7.0/4294967296" is not an IP prefix')
routes("prefix-without-length", "198.18.7.0 blackhole\n", '{file}:3: "198.18.7.0" is not an IP prefix')
routes("duplicate-prefix", "198.18.5.0/24 blackhole\n", "{file}:3: route 198.18.5.0/24: given twice (first on line 1)")
routes("unknown-dev", "198.18.7.0/24 via 198.18.2.2 dev nosuch\n", '{file}:3: route 198.18.7.0/24: dev "nosuch" is not one of the dataplane\'s interfaces (ra, rb)')
routes("bad-via", "198.18.7.0/24 via 198.18.2.999 dev rb\n", '{file}:3: "198.18.2.999" is not an IPv4 or IPv6 address')
routes("via-multicast", "198.18.7.0/24 via 224.0.0.1 dev rb\n", "{file}:3: 224.0.0.1 cannot be a next hop")
routes("via-without-dev", "198.18.7.0/24 via 198.18.2.2\n", '{file}:3: unexpected "via": expected `via ADDRESS dev INTERFACE`')
routes("dev-without-via", "198.18.7.0/24 dev rb\n", '{file}:3: unexpected "dev": expected `via ADDRESS dev INTERFACE`')
routes("family-mismatch", "198.18.7.0/24 via 2001:2:0:2::2 dev rb\n", "{file}:3: next hop 2001:2:0:2::2 is not of the prefix's address family")
routes("nexthop-twice", "198.18.7.0/24 via 198.18.2.2 dev rb via 198.18.2.2 dev rb\n", "{file}:3: a next hop is listed twice")
routes("blackhole-with-via", "198.18.7.0/24 blackhole via 198.18.2.2 dev rb\n", '{file}:3: unexpected "blackhole"')
routes("trailing-word", "198.18.7.0/24 via 198.18.2.2 dev rb onlink\n", '{file}:3: unexpected "onlink"')
routes("route-add-prefix", "route add 198.18.7.0/24 blackhole\n", '{file}:3: "route" is not an IP prefix')
routes("too-many-ecmp", "198.18.7.0/24 " + " ".join(f"via 198.18.2.{i} dev rb" for i in range(2, 67)) + "\n", "{file}:3: route 198.18.7.0/24: 65 next hops; at most 64 per route")
routes("overlong-line", "198.18.7.0/24 blackhole " + "x" * 5000 + "\n", "{file}:3: line longer than 4096 bytes")
routes("nul-byte", "198.18.7.0/24\0 blackhole\n", '{file}:3: "198.18.7.0/24\\0" is not an IP prefix')
routes("not-utf8", b"198.18.7.0/24 blackhole # caf\xe9\n", "{file}:3: not UTF-8 text")
ROUTES.append(("binary-junk.routes", junk, "{file}:1: not UTF-8 text"))
ROUTES.append(("empty.routes", "", "{file}: no routes"))
ROUTES.append(("only-comments.routes", "# nothing\n\n# here\n", "{file}: no routes"))
routes("vrf-without-name", "vrf\n", "{file}:3: `vrf` needs a VRF's name after it")
routes("vrf-unknown", "vrf green 198.18.7.0/24 blackhole\n", '{file}:3: route 198.18.7.0/24: vrf "green" is not one of the VRFs (default)')
routes("second-error-also-named", "198.18.300.0/24 blackhole\n198.18.8.1/24 blackhole\n", "{file}:4: 198.18.8.1/24 has host bits set")

with open("EXPECTED", "w") as manifest:
    manifest.write("# case<TAB>what its error must contain ({file}: the name it was given)\n")
    for folder, cases in (("config", CONFIG), ("routes", ROUTES)):
        for name, content, expected in cases:
            data = content.encode() if isinstance(content, str) else content
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
            manifest.write(f"{folder}/{name}\t{expected}\n")
print(len(CONFIG), "config cases,", len(ROUTES), "route-file cases")
