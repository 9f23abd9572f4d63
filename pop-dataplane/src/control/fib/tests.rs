use std::sync::Arc;

use super::*;
use crate::control::vrf::VrfId;

const D: VrfId = VrfId::DEFAULT;

fn change(prefix: &str, best: Option<Action>) -> Change {
    Change {
        vrf: D,
        prefix: prefix.parse().unwrap(),
        best,
    }
}

fn all(_: u32) -> bool {
    true
}

fn set(ids: &[u32]) -> Action {
    Action::Nexthops(Arc::from(ids))
}

#[test]
fn a_kernel_object_is_one_group_its_routes_share() {
    let mut fib = Fib::default();
    let mut writes = Vec::new();
    // Members set before any route: nothing written yet.
    fib.set_object(7, Arc::from([1, 2]), &all, &mut writes);
    assert!(writes.is_empty());
    for prefix in ["198.18.9.0/24", "198.18.10.0/24"] {
        fib.apply(&change(prefix, Some(Action::Object(7))), &all, &mut writes)
            .unwrap();
    }
    let group = RouteTarget::new(Route::Group(0));
    assert_eq!(
        writes,
        [
            MapWrite::Group(0, Box::new(buckets(&[1, 2], &all))),
            MapWrite::Route(
                D,
                "198.18.9.0/24".parse().unwrap(),
                RouteEntry::new(group, 24)
            ),
            MapWrite::Route(
                D,
                "198.18.10.0/24".parse().unwrap(),
                RouteEntry::new(group, 24)
            ),
        ]
    );
    // A group of the same members for another route is not the object's.
    writes.clear();
    fib.apply(
        &change("198.18.11.0/24", Some(set(&[1, 2]))),
        &all,
        &mut writes,
    )
    .unwrap();
    assert_eq!(fib.groups(), 2);
    assert_eq!(fib.route_counts(), (3, 0));
    // The object changes: one write of its buckets, no route touched.
    writes.clear();
    let old = fib.set_object(7, Arc::from([3, 4]), &all, &mut writes);
    assert_eq!(&*old, &[1, 2]);
    assert_eq!(
        writes,
        [MapWrite::Group(0, Box::new(buckets(&[3, 4], &all)))]
    );
    assert_eq!(fib.object_members(7), &[3, 4]);
    // Failover reaches it like any group: 4 down, its buckets go to 3.
    let down = |id| id != 4;
    let writes = fib.refresh_groups(&down);
    assert!(writes.contains(&MapWrite::Group(0, Box::new(buckets(&[3, 4], &down)))));
    assert_eq!(buckets(&[3, 4], &down).buckets[..4], [3, 3, 3, 3]);
    // No members: buckets without a next hop, the kernel's to forward.
    let mut writes = Vec::new();
    fib.set_object(7, Arc::from([]), &all, &mut writes);
    assert_eq!(writes, [MapWrite::Group(0, Box::default())]);
    // Its last route gone, its group is freed and the empty object forgotten.
    for prefix in ["198.18.9.0/24", "198.18.10.0/24"] {
        fib.apply(&change(prefix, None), &all, &mut writes).unwrap();
    }
    assert_eq!(fib.groups(), 1);
    assert_eq!(fib.route_counts(), (1, 0));
    assert_eq!(fib.objects().count(), 0);
    assert!(fib.object_members(7).is_empty());
}

#[test]
fn groups_are_shared_and_freed() {
    let mut fib = Fib::default();
    let mut writes = Vec::new();
    fib.apply(
        &change("198.18.9.0/24", Some(set(&[1, 2]))),
        &all,
        &mut writes,
    )
    .unwrap();
    fib.apply(
        &change("198.18.10.0/24", Some(set(&[1, 2]))),
        &all,
        &mut writes,
    )
    .unwrap();
    let group = RouteTarget::new(Route::Group(0));
    assert_eq!(
        writes,
        [
            MapWrite::Group(0, Box::new(buckets(&[1, 2], &all))),
            MapWrite::Route(
                D,
                "198.18.9.0/24".parse().unwrap(),
                RouteEntry::new(group, 24)
            ),
            MapWrite::Route(
                D,
                "198.18.10.0/24".parse().unwrap(),
                RouteEntry::new(group, 24)
            ),
        ]
    );
    assert_eq!(buckets(&[1, 2], &all).buckets[..4], [1, 2, 1, 2]);
    assert_eq!(fib.groups(), 1);

    writes.clear();
    fib.apply(&change("198.18.9.0/24", None), &all, &mut writes)
        .unwrap();
    assert_eq!(fib.groups(), 1);
    fib.apply(
        &change("198.18.10.0/24", Some(set(&[4]))),
        &all,
        &mut writes,
    )
    .unwrap();
    assert_eq!(fib.groups(), 0);
    assert_eq!(
        writes,
        [
            MapWrite::DeleteRoute(D, "198.18.9.0/24".parse().unwrap()),
            MapWrite::Route(
                D,
                "198.18.10.0/24".parse().unwrap(),
                RouteEntry::new(RouteTarget::new(Route::Nexthop(4)), 24)
            ),
        ]
    );
    // The freed id is reused.
    writes.clear();
    fib.apply(
        &change("2001:2::/48", Some(set(&[5, 6, 7]))),
        &all,
        &mut writes,
    )
    .unwrap();
    assert_eq!(
        writes[0],
        MapWrite::Group(0, Box::new(buckets(&[5, 6, 7], &all)))
    );
}

#[test]
fn a_dead_member_loses_only_its_own_buckets() {
    let full = buckets(&[1, 2, 3], &all);
    let without_2 = buckets(&[1, 2, 3], &|id| id != 2);
    for (before, after) in full.buckets.iter().zip(without_2.buckets) {
        if *before == 2 {
            assert_ne!(after, 2);
        } else {
            assert_eq!(after, *before, "a flow on a working member moved");
        }
    }
    let count = |id| without_2.buckets.iter().filter(|&&b| b == id).count();
    assert!(
        count(1).abs_diff(count(3)) <= 2,
        "the dead member's share is spread evenly"
    );
    assert_eq!(count(1) + count(3), 64);
    assert_eq!(
        buckets(&[1, 2], &|_| false),
        buckets(&[1, 2], &all),
        "none usable"
    );

    let mut fib = Fib::default();
    let mut writes = Vec::new();
    fib.apply(
        &change("198.18.9.0/24", Some(set(&[1, 2, 3]))),
        &all,
        &mut writes,
    )
    .unwrap();
    assert_eq!(fib.refresh_groups(&all), []);
    assert_eq!(
        fib.refresh_groups(&|id| id != 2),
        [MapWrite::Group(0, Box::new(without_2))]
    );
    assert_eq!(
        fib.refresh_groups(&all),
        [MapWrite::Group(0, Box::new(full))]
    );
}

#[test]
fn rebuilds_keep_groups_in_use_and_skip_reserved_ids() {
    let mut fib = Fib::avoiding([0]);
    let mut writes = Vec::new();
    fib.apply(
        &change("198.18.9.0/24", Some(set(&[1, 2]))),
        &all,
        &mut writes,
    )
    .unwrap();
    assert_eq!(
        writes[0],
        MapWrite::Group(1, Box::new(buckets(&[1, 2], &all))),
        "0 is reserved"
    );
    let a: IpNet = "198.18.9.0/24".parse().unwrap();
    let b: IpNet = "198.18.10.0/24".parse().unwrap();
    let keep = set(&[1, 2]);
    let new = set(&[3, 4]);
    let writes = fib
        .rebuild([(D, a, &keep), (D, b, &new)].into_iter(), &all)
        .unwrap();
    assert_eq!(fib.groups(), 2);
    assert!(writes.contains(&MapWrite::Group(2, Box::new(buckets(&[3, 4], &all)))));
    assert_eq!(
        writes
            .iter()
            .filter(|w| matches!(w, MapWrite::Route(D, ..)))
            .count(),
        2
    );
    assert_eq!(
        fib.get(D, &a).unwrap().target.decode(),
        Route::Group(1),
        "kept its id"
    );
    assert_eq!(fib.unreserve_groups(), [0]);
}
