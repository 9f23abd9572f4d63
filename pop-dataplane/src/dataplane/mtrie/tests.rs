use pop_dataplane_common::{Route, RouteTarget};

use super::*;

fn entry(id: u32, len: u8) -> FibEntry {
    leaf(RouteEntry::new(RouteTarget::new(Route::Nexthop(id)), len))
}

fn v4(addr: &str) -> u128 {
    u128::from(u32::from(addr.parse::<std::net::Ipv4Addr>().unwrap()))
}

/// The longest-prefix match, by brute force over the routes.
fn reference<B: Blocks>(table: &Table<B>, addr: u128) -> FibEntry {
    table
        .routes()
        .filter(|&(network, len, _)| table.shape.network(addr, len) == network)
        .max_by_key(|&(_, len, _)| len)
        .map_or(FibEntry::EMPTY, |(_, _, leaf)| leaf)
}

#[test]
fn longest_prefix_wins_at_every_level() {
    let mut table = Table::new(V4);
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
        let found = table.lookup(v4(addr));
        let want = id.map_or(FibEntry::EMPTY, |id| {
            entry(id, [0, 8, 16, 24, 25, 32][id as usize])
        });
        assert_eq!(found, want, "{addr}");
    }
    // One block below 44.1.2.0/24 for the /25 and the /32.
    assert_eq!(table.blocks_in_use(), 65_536 + 1);
    // A shorter route added later does not cover the longer ones.
    table.insert(v4("44.0.0.0"), 7, entry(6, 7)).unwrap();
    assert_eq!(table.lookup(v4("44.1.2.130")), entry(5, 32));
    assert_eq!(table.lookup(v4("45.0.0.1")), entry(6, 7));
    table.insert(0, 0, entry(7, 0)).unwrap();
    assert_eq!(table.lookup(v4("192.0.2.1")), entry(7, 0));
    assert_eq!(table.lookup(v4("44.1.2.130")), entry(5, 32));
    assert!(table.remove(0, 0));
    assert_eq!(table.lookup(v4("192.0.2.1")), FibEntry::EMPTY);
}

#[test]
fn removing_a_route_uncovers_the_one_below_and_frees_blocks() {
    let mut table = Table::new(V4);
    table.insert(v4("44.1.0.0"), 16, entry(2, 16)).unwrap();
    table.insert(v4("44.1.2.128"), 25, entry(4, 25)).unwrap();
    table.insert(v4("44.1.2.130"), 32, entry(5, 32)).unwrap();
    assert!(table.remove(v4("44.1.2.130"), 32));
    assert_eq!(table.lookup(v4("44.1.2.130")), entry(4, 25));
    assert_eq!(table.blocks_in_use(), 65_537);
    assert!(table.remove(v4("44.1.2.128"), 25));
    assert_eq!(table.lookup(v4("44.1.2.130")), entry(2, 16));
    // The block below 44.1.2.0/24 now holds the /16 everywhere: folded back.
    assert_eq!(table.blocks_in_use(), 65_536);
    assert!(!table.remove(v4("44.1.2.128"), 25), "already gone");
    assert!(table.remove(v4("44.1.0.0"), 16));
    assert_eq!(table.lookup(v4("44.1.2.130")), FibEntry::EMPTY);
    assert!(table.len() == 0);
}

#[test]
fn two_longer_routes_with_the_same_leaf_keep_their_block() {
    // 44.1.2.0/25 and 44.1.2.128/25 through the same next hop make a block of identical
    // leaves, which must not be folded into the /24's entry: removing one /25 would then
    // take the other with it.
    let mut table = Table::new(V4);
    table.insert(v4("44.1.2.0"), 25, entry(7, 25)).unwrap();
    table.insert(v4("44.1.2.128"), 25, entry(7, 25)).unwrap();
    assert!(table.remove(v4("44.1.2.0"), 25));
    assert_eq!(table.lookup(v4("44.1.2.1")), FibEntry::EMPTY);
    assert_eq!(table.lookup(v4("44.1.2.200")), entry(7, 25));
}

#[test]
fn a_replaced_route_changes_leaf_in_place() {
    let mut table = Table::new(V6);
    let addr = u128::from("2001:db8::".parse::<std::net::Ipv6Addr>().unwrap());
    table.insert(addr, 32, entry(1, 32)).unwrap();
    table.insert(addr, 48, entry(2, 48)).unwrap();
    let blocks = table.blocks_in_use();
    table.insert(addr, 32, entry(3, 32)).unwrap();
    assert_eq!(table.blocks_in_use(), blocks);
    assert_eq!(table.lookup(addr | 1), entry(2, 48));
    assert_eq!(table.lookup(addr | (1 << 90)), entry(3, 32));
    assert_eq!(table.len(), 2);
}

#[test]
fn random_tables_match_brute_force_through_inserts_and_removes() {
    // A small generator, so that the test needs no crate.
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for shape in [V4, V6] {
        let mut table = Table::new(shape);
        let mut present: Vec<(u128, u8)> = Vec::new();
        // Addresses from a few clusters, so that prefixes nest.
        let random_addr = |next: &mut dyn FnMut() -> u64| -> u128 {
            let cluster = u128::from(next() % 4) << (shape.width - 4);
            let rest = (u128::from(next()) << 64 | u128::from(next()))
                & ((1u128 << (shape.width - 4)) - 1);
            let spread = rest & !((1u128 << (shape.width.saturating_sub(20))) - 1);
            cluster | spread | (rest & 0xff)
        };
        for step in 0..2000 {
            if step % 3 == 2 && !present.is_empty() {
                let (addr, len) = present.swap_remove(next() as usize % present.len());
                assert!(table.remove(addr, len));
            } else {
                // Short IPv4 prefixes expand to 2^(24-len) first-level entries: slow in a
                // debug build, and nothing different to test.
                let shortest: u64 = if shape == V4 { 12 } else { 0 };
                let len = (shortest + next() % (u64::from(shape.width) + 1 - shortest)) as u8;
                let addr = shape.network(random_addr(&mut next), len);
                let id = (next() % 1000) as u32;
                table.insert(addr, len, entry(id, len)).unwrap();
                if !present.contains(&(addr, len)) {
                    present.push((addr, len));
                }
            }
            if step % 200 == 0 {
                for _ in 0..100 {
                    let addr = random_addr(&mut next);
                    assert_eq!(table.lookup(addr), reference(&table, addr), "{addr:x}");
                }
            }
        }
        assert_eq!(table.len(), present.len());
        for (addr, len) in present.drain(..) {
            assert!(table.remove(addr, len));
        }
        assert!(table.len() == 0);
        // Everything folded back: only the first level (and quarantined blocks) remain.
        assert_eq!(table.blocks_in_use(), shape.first_level_blocks() as usize);
    }
}

#[test]
fn blocks_needed_is_what_a_build_takes() {
    let routes: Vec<(u128, u8, FibEntry)> = [
        ("44.0.0.0", 8),
        ("44.1.2.0", 24),
        ("44.1.2.128", 25),
        ("44.1.2.130", 32),
        ("44.1.3.0", 26),
        ("44.9.9.9", 32),
        ("192.0.2.0", 24),
    ]
    .into_iter()
    .map(|(addr, len)| (v4(addr), len, entry(1, len)))
    .collect();
    let table = Table::build(V4, MemoryBlocks::default(), routes.clone()).unwrap();
    // 44.1.2.0/24, 44.1.3.0/24 and 44.9.9.0/24 hold longer routes.
    assert_eq!(blocks_needed(V4, &routes), 65_536 + 3);
    assert_eq!(table.blocks_in_use(), 65_536 + 3);
    let addr = u128::from("2001:db8:1:2::".parse::<std::net::Ipv6Addr>().unwrap());
    let routes = vec![
        (addr, 32, entry(1, 32)),
        (addr, 48, entry(2, 48)),
        (addr | (1 << 70), 58, entry(3, 58)),
    ];
    let table = Table::build(V6, MemoryBlocks::default(), routes.clone()).unwrap();
    assert_eq!(blocks_needed(V6, &routes), table.blocks_in_use());
    assert_eq!(table.lookup(addr | 1), entry(2, 48));
}

#[test]
fn a_table_in_fixed_storage_reports_full_and_stays_whole() {
    struct Fixed(Vec<AtomicU32>);
    impl Blocks for Fixed {
        fn entries(&self) -> &[AtomicU32] {
            &self.0
        }
        fn grow(&mut self, blocks: usize) -> bool {
            blocks * BLOCK_ENTRIES <= self.0.len()
        }
    }
    let mut memory = Table::new(V4);
    memory.insert(v4("44.1.2.0"), 24, entry(1, 24)).unwrap();
    let capacity = memory.high_water() + 1;
    let mut fixed = memory.moved_to(Fixed(
        (0..capacity * BLOCK_ENTRIES)
            .map(|_| AtomicU32::new(0))
            .collect(),
    ));
    fixed.insert(v4("44.1.2.128"), 25, entry(2, 25)).unwrap();
    assert_eq!(fixed.insert(v4("44.1.3.128"), 25, entry(3, 25)), Err(Full));
    assert_eq!(fixed.lookup(v4("44.1.3.200")), FibEntry::EMPTY);
    assert_eq!(fixed.lookup(v4("44.1.2.200")), entry(2, 25));
    assert_eq!(fixed.lookup(v4("44.1.2.1")), entry(1, 24));
    assert_eq!(fixed.len(), 2);
}
