use pop_dataplane_common::{Route, RouteTarget};

use super::*;

fn entry(id: u32, len: u8) -> FibEntry {
    leaf(RouteEntry::new(RouteTarget::new(Route::Nexthop(id)), len))
}

fn v4(addr: &str) -> u128 {
    u128::from(u32::from(addr.parse::<std::net::Ipv4Addr>().unwrap()))
}

fn empty(bits: u32) -> Table<MemoryCells> {
    let mut table = Table::build_in_memory(bits, []);
    table.alloc = table.alloc.clone().without_quarantine();
    table
}

/// The routes a test put in: (top bits, length) -> leaf.
type Model = std::collections::HashMap<(u128, u8), FibEntry>;

/// The longest-prefix match in `model`, by brute force.
fn reference(model: &Model, bits: u32, addr: u128) -> FibEntry {
    (0..=bits)
        .rev()
        .find_map(|len| {
            let value = if len == 0 { 0 } else { addr >> (bits - len) };
            model.get(&(value, len as u8)).copied()
        })
        .unwrap_or(FibEntry::EMPTY)
}

/// A small deterministic generator (xorshift), so that a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn longest_prefix_wins_at_every_level() {
    let mut table = empty(32);
    table.insert(v4("44.0.0.0"), 8, entry(1, 8)).unwrap();
    table.insert(v4("44.1.0.0"), 16, entry(2, 16)).unwrap();
    table.insert(v4("44.1.2.0"), 24, entry(3, 24)).unwrap();
    table.insert(v4("44.1.2.128"), 25, entry(4, 25)).unwrap();
    table.insert(v4("44.1.2.130"), 32, entry(5, 32)).unwrap();
    for (addr, id) in [
        ("44.9.9.9", Some(1)),
        ("44.1.9.9", Some(2)),
        ("44.1.2.1", Some(3)),
        ("44.1.2.129", Some(4)),
        ("44.1.2.130", Some(5)),
        ("45.0.0.0", None),
    ] {
        let want = id.map_or(FibEntry::EMPTY, |id| {
            entry(id, [0, 8, 16, 24, 25, 32][id as usize])
        });
        assert_eq!(table.lookup(v4(addr)), want, "{addr}");
    }
    // A shorter route added later does not cover the longer ones.
    table.insert(v4("44.0.0.0"), 7, entry(6, 7)).unwrap();
    assert_eq!(table.lookup(v4("44.1.2.130")), entry(5, 32));
    assert_eq!(table.lookup(v4("45.0.0.1")), entry(6, 7));
    table.insert(0, 0, entry(7, 0)).unwrap();
    assert_eq!(table.lookup(v4("192.0.2.1")), entry(7, 0));
    assert_eq!(table.lookup(v4("44.1.2.130")), entry(5, 32));
    // The default route reaches the leaves pushed deep inside nodes.
    assert_eq!(table.lookup(v4("44.1.3.1")), entry(2, 16));
    table.remove(0, 0).unwrap();
    assert_eq!(table.lookup(v4("192.0.2.1")), FibEntry::EMPTY);
}

#[test]
fn removing_routes_gives_every_cell_back() {
    let mut table = empty(32);
    let direct = table.cells_in_use();
    let routes = [
        ("44.1.0.0", 16),
        ("44.1.2.0", 24),
        ("44.1.2.128", 25),
        ("44.1.2.130", 32),
        ("44.1.3.0", 24),
    ];
    for (i, (addr, len)) in routes.iter().enumerate() {
        table.insert(v4(addr), *len, entry(i as u32, *len)).unwrap();
    }
    assert!(table.cells_in_use() > direct);
    assert_eq!(table.lookup(v4("44.1.2.131")), entry(2, 25));
    table.remove(v4("44.1.2.130"), 32).unwrap();
    table.remove(v4("44.1.2.128"), 25).unwrap();
    assert_eq!(table.lookup(v4("44.1.2.131")), entry(1, 24));
    for (addr, len) in routes {
        table.remove(v4(addr), len).unwrap();
    }
    assert_eq!(table.len(), 0);
    assert_eq!(table.cells_in_use(), direct);
    assert_eq!(table.lookup(v4("44.1.2.131")), FibEntry::EMPTY);
}

/// Routes clustered under a few regions, so that nodes nest and share levels.
fn random_route(rng: &mut Rng, bits: u32) -> (u128, u8) {
    let bases: [u128; 4] = if bits == 32 {
        [0x2c01_0000, 0x2c01_0200, 0xc612_0000, 0x0a00_0000]
    } else {
        [
            0x2001_0db8_0000_0000_0000_0000_0000_0000,
            0x2001_0db8_0001_0000_0000_0000_0000_0000,
            0x2a02_0000_0000_0000_0000_0000_0000_0000,
            0xfe80_0000_0000_0000_0000_0000_0000_0000,
        ]
    };
    let base = bases[(rng.next() % 4) as usize];
    let noise = u128::from(rng.next()) | (u128::from(rng.next()) << 64);
    // The base's top bits stay: routes cluster under a few direct entries.
    let kept = if bits == 32 { 16 } else { 24 };
    let addr = base ^ (noise & ((1u128 << (bits - kept)) - 1));
    let len = match rng.next() % 10 {
        0 => (rng.next() % 17) as u32,
        1..=6 => bits - (rng.next() % 8) as u32 - if bits == 32 { 8 } else { 80 },
        _ => (rng.next() % u64::from(bits + 1)) as u32,
    };
    let len = len.min(bits);
    let mask = if len == 0 {
        0
    } else {
        (u128::MAX >> (128 - bits)) & !((1u128 << (bits - len)) - 1)
    };
    (addr & mask, len as u8)
}

/// Random inserts, replacements and removals, the table checked against the brute-force
/// lookup as it goes, and against the same routes built whole at the end. Leaves take `ids`
/// values: with a few, neighbouring routes often have equal leaves.
fn check_family(bits: u32, seed: u64, ids: u64) {
    let mut rng = Rng(seed);
    let mut table = empty(bits);
    let direct = table.cells_in_use();
    let mut held: Vec<(u128, u8)> = Vec::new();
    let mut model = Model::new();
    let key = |addr: u128, len: u8| {
        let value = if len == 0 {
            0
        } else {
            addr >> (bits - u32::from(len))
        };
        (value, len)
    };
    for step in 0..3_000 {
        let id = (rng.next() % ids) as u32;
        if !held.is_empty() && rng.next().is_multiple_of(4) {
            let (addr, len) = held[(rng.next() as usize) % held.len()];
            table.insert(addr, len, entry(id, len)).unwrap();
            model.insert(key(addr, len), entry(id, len));
        } else if held.is_empty() || !rng.next().is_multiple_of(3) {
            let (addr, len) = random_route(&mut rng, bits);
            table.insert(addr, len, entry(id, len)).unwrap();
            model.insert(key(addr, len), entry(id, len));
            held.push((addr, len));
        } else {
            let (addr, len) = held.swap_remove((rng.next() as usize) % held.len());
            table.remove(addr, len).unwrap();
            model.remove(&key(addr, len));
        }
        if step % 100 == 0 {
            for _ in 0..200 {
                let (addr, len) = held
                    .get((rng.next() as usize) % held.len().max(1))
                    .copied()
                    .unwrap_or((0, 0));
                let host = u128::from(rng.next()) | (u128::from(rng.next()) << 64);
                let host = host
                    & 1u128
                        .checked_shl(bits - u32::from(len))
                        .map_or(u128::MAX, |size| size - 1);
                let probe = (addr | host) & (u128::MAX >> (128 - bits));
                assert_eq!(
                    table.lookup(probe),
                    reference(&model, bits, probe),
                    "seed {seed} step {step}: {probe:x}"
                );
            }
        }
    }
    // The table holds the model's routes, and built whole from them answers the same.
    let routes: Vec<(u128, u8, FibEntry)> = table.routes().collect();
    let held_routes: Model = routes
        .iter()
        .map(|&(addr, len, leaf)| (key(addr, len), leaf))
        .collect();
    assert_eq!((table.len(), &held_routes), (model.len(), &model));
    let whole = Table::build_in_memory(bits, routes);
    for _ in 0..2_000 {
        let probe =
            (u128::from(rng.next()) | (u128::from(rng.next()) << 64)) & (u128::MAX >> (128 - bits));
        let (addr, _) = random_route(&mut rng, bits);
        for probe in [probe, addr] {
            assert_eq!(whole.lookup(probe), table.lookup(probe), "{probe:x}");
        }
    }
    for (addr, len) in held.drain(..) {
        table.remove(addr, len).unwrap();
    }
    assert_eq!(
        table.cells_in_use(),
        direct,
        "seed {seed}: cells not given back"
    );
}

#[test]
fn ipv4_edits_agree_with_a_brute_force_lookup() {
    for seed in [1, 2, 3] {
        check_family(32, 0x9e37_79b9_7f4a_7c15 ^ seed, 1000);
        check_family(32, 0x9e37_79b9_7f4a_7c15 ^ seed, 2);
    }
}

#[test]
fn ipv6_edits_agree_with_a_brute_force_lookup() {
    for seed in [1, 2, 3] {
        check_family(128, 0xdead_beef_cafe_f00d ^ seed, 1000);
        check_family(128, 0xdead_beef_cafe_f00d ^ seed, 2);
    }
}

#[test]
fn a_new_next_hop_rewrites_the_leaves_in_place() {
    // Neighbours with equal leaves, a route pushed into the nodes below it, and a direct
    // entry's route.
    let routes = [
        ("44.1.4.0", 24, 1),
        ("44.1.5.0", 24, 1),
        ("44.1.6.0", 23, 1),
        ("44.1.7.128", 25, 2),
        ("44.1.7.200", 32, 2),
        ("44.2.0.0", 16, 1),
        ("44.2.7.0", 24, 1),
    ];
    let mut table = Table::build_in_memory(
        32,
        routes
            .iter()
            .map(|&(addr, len, id)| (v4(addr), len, entry(id, len))),
    );
    let cells = table.cells_in_use();
    let high = table.high_water();
    for (addr, len) in [("44.1.5.0", 24), ("44.1.6.0", 23), ("44.2.0.0", 16)] {
        table.insert(v4(addr), len, entry(3, len)).unwrap();
    }
    for (addr, want) in [
        ("44.1.4.9", entry(1, 24)),
        ("44.1.5.9", entry(3, 24)),
        ("44.1.6.1", entry(3, 23)),
        ("44.1.7.1", entry(3, 23)),
        ("44.1.7.129", entry(2, 25)),
        ("44.1.7.200", entry(2, 32)),
        ("44.1.7.201", entry(2, 25)),
        ("44.2.0.1", entry(3, 16)),
        ("44.2.7.1", entry(1, 24)),
        ("44.2.8.1", entry(3, 16)),
    ] {
        assert_eq!(table.lookup(v4(addr)), want, "{addr}");
    }
    // Nothing allocated: the leaves changed where they were.
    assert_eq!((table.cells_in_use(), table.high_water()), (cells, high));
}

#[test]
fn a_full_table_lives_in_a_few_mib() {
    // 20,000 /24s spread over 2,000 /16s, and 2,000 longer prefixes.
    let mut rng = Rng(7);
    let mut routes = Vec::new();
    for i in 0..20_000u32 {
        let addr = ((i % 2_000 + 0x2c00) << 16) | ((rng.next() as u32 & 0xff) << 8);
        routes.push((u128::from(addr), 24, entry(i % 300, 24)));
    }
    for i in 0..2_000u32 {
        let addr = ((i + 0x2c00) << 16) | (rng.next() as u32 & 0xff80);
        routes.push((u128::from(addr), 25, entry(i % 300, 25)));
    }
    let table = Table::build_in_memory(32, routes);
    let bytes = table.cells_in_use() * size_of::<Cell>() as u64;
    assert!(bytes < 2 << 20, "{bytes} bytes");
}
