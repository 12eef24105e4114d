//! The placement function: published FNV-1a vectors, the reimplementers' table in
//! `testdata/ring.tsv`, and properties checked against a brute-force reference.

use proptest::prelude::*;

use super::ring::{Epoch, Membership, Ring, Status, fnv1a64, ring_hash};
use crate::node::NodeId;

fn ids(list: &[u64]) -> Vec<NodeId> {
    list.iter().copied().map(NodeId).collect()
}

#[test]
fn fnv1a64_matches_the_published_test_vectors() {
    // From the FNV reference test suite (Fowler, Noll, Vo).
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn ring_hash_adds_the_murmur3_finalizer_to_fnv1a() {
    // fmix64 maps 0 to 0 and is a bijection; spot-check one value computed by hand.
    assert_eq!(ring_hash(b""), {
        let mut k: u64 = 0xcbf2_9ce4_8422_2325;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    });
    assert_ne!(ring_hash(b"a"), fnv1a64(b"a"));
}

#[test]
fn keys_spread_evenly_over_the_members() {
    // With plain FNV-1a, node 1 of three took 90 % of these keys; the finalizer fixes that.
    let ring = Ring::with_members(64, ids(&[0, 1, 2]));
    let mut owned = [0usize; 3];
    for i in 0..3_000 {
        owned[ring.responsible(&format!("key{i}"), 1)[0].0 as usize] += 1;
    }
    for count in owned {
        assert!((600..=1_400).contains(&count), "unbalanced placement: {owned:?}");
    }
}

/// Parses a comma-separated id list; `-` is the empty list.
fn parse_ids(field: &str) -> Vec<NodeId> {
    if field == "-" {
        return Vec::new();
    }
    field.split(',').map(|id| NodeId(id.parse().expect("node id"))).collect()
}

#[test]
fn placements_match_the_reimplementers_table() {
    let table = include_str!("testdata/ring.tsv");
    let mut rows = 0;
    for line in table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [members, virtual_nodes, key, factor, expected] = fields[..] else {
            panic!("malformed row: {line:?}");
        };
        let ring = Ring::with_members(virtual_nodes.parse().unwrap(), parse_ids(members));
        let got = ring.responsible(key, factor.parse().unwrap());
        assert_eq!(got, parse_ids(expected), "row {line:?}");
        rows += 1;
    }
    assert!(rows >= 10, "the table has {rows} rows");
}

/// The placement function written as plainly as possible, to judge the real one.
fn reference(members: &[NodeId], virtual_nodes: u32, key: &str, factor: usize) -> Vec<NodeId> {
    let mut positions: Vec<(u64, NodeId)> = Vec::new();
    for &node in members {
        for i in 0..virtual_nodes {
            positions.push((ring_hash(format!("{}#{i}", node.0).as_bytes()), node));
        }
    }
    positions.sort();
    positions.dedup_by_key(|(position, _)| *position); // the smaller id sorts first and stays
    let start = positions.iter().position(|(p, _)| *p >= ring_hash(key.as_bytes())).unwrap_or(0);
    let mut found = Vec::new();
    for k in 0..positions.len() {
        let node = positions[(start + k) % positions.len()].1;
        if found.len() < factor && !found.contains(&node) {
            found.push(node);
        }
    }
    found
}

#[test]
fn membership_changes_advance_the_epoch_only_when_they_change_the_ring() {
    let mut ring = Ring::new(4);
    assert_eq!(ring.epoch(), Epoch(0));
    assert!(ring.join(NodeId(1)));
    assert!(!ring.join(NodeId(1)));
    assert_eq!(ring.epoch(), Epoch(1));
    assert!(!ring.leave(NodeId(9)));
    assert!(ring.leave(NodeId(1)));
    assert_eq!(ring.epoch(), Epoch(2));
    assert!(ring.responsible("k", 3).is_empty(), "an empty ring owns nothing");
}

fn membership() -> impl Strategy<Value = Membership> {
    let status = prop_oneof![Just(Status::Member), Just(Status::Leaving), Just(Status::Left)];
    prop::collection::btree_map((0u64..6).prop_map(NodeId), status, 0..6)
}

fn view(members: &Membership) -> Ring {
    let mut ring = Ring::new(4);
    ring.merge(members);
    ring
}

#[test]
fn leaving_and_departing_follow_the_status_order() {
    let mut ring = Ring::with_members(4, [NodeId(0), NodeId(1)]);
    assert!(!ring.depart(NodeId(1)), "a member must leave before it departs");
    assert!(ring.leave(NodeId(1)));
    assert!(!ring.leave(NodeId(1)));
    assert_eq!(ring.members().iter().copied().collect::<Vec<_>>(), [NodeId(0)]);
    assert!(ring.depart(NodeId(1)));
    assert!(!ring.join(NodeId(1)), "a node that left cannot rejoin under its id");
    assert_eq!(ring.epoch(), Epoch(1 + 3));
    assert_eq!(ring.status(NodeId(1)), Some(Status::Left));
}

proptest! {
    #[test]
    fn membership_merge_is_a_join(a in membership(), b in membership(), c in membership()) {
        // Commutative, associative, idempotent: views converge in any delivery order.
        let mut ab = view(&a);
        ab.merge(&b);
        let mut ba = view(&b);
        ba.merge(&a);
        prop_assert_eq!(&ab, &ba);
        let mut ab_c = ab.clone();
        ab_c.merge(&c);
        let mut bc = view(&b);
        bc.merge(&c);
        let mut a_bc = view(&a);
        a_bc.merge(bc.membership());
        prop_assert_eq!(&ab_c, &a_bc);
        prop_assert!(!ab.clone().merge(&a), "idempotent");
        // The merge covers both sides, and the epoch grows exactly when the view changes.
        prop_assert!(ab.covers(&a) && ab.covers(&b));
        let mut grown = view(&a);
        let before = grown.epoch();
        let changed = grown.merge(&b);
        prop_assert_eq!(changed, grown.epoch() > before);
        prop_assert_eq!(changed, !view(&a).covers(&b));
    }

    #[test]
    fn responsible_agrees_with_the_reference(
        members in prop::collection::btree_set(0u64..20, 0..6),
        virtual_nodes in 1u32..16,
        key in "[a-z0-9]{0,8}",
        factor in 0usize..8,
    ) {
        let members = ids(&members.into_iter().collect::<Vec<_>>());
        let ring = Ring::with_members(virtual_nodes, members.clone());
        let got = ring.responsible(&key, factor);
        prop_assert_eq!(&got, &reference(&members, virtual_nodes, &key, factor));
        // Total and distinct: min(factor, members) nodes, never a repeat, never a loop.
        prop_assert_eq!(got.len(), factor.min(members.len()));
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), got.len());
    }

    #[test]
    fn a_join_moves_keys_only_to_the_new_node(
        members in prop::collection::btree_set(0u64..20, 1..6),
        newcomer in 20u64..30,
        key in "[a-z0-9]{0,8}",
    ) {
        let mut ring = Ring::with_members(8, ids(&members.into_iter().collect::<Vec<_>>()));
        let before = ring.responsible(&key, 1);
        ring.join(NodeId(newcomer));
        let after = ring.responsible(&key, 1);
        prop_assert!(after == before || after == [NodeId(newcomer)]);
        ring.leave(NodeId(newcomer));
        prop_assert_eq!(ring.responsible(&key, 1), before, "leaving undoes joining");
    }

    #[test]
    fn a_larger_factor_extends_the_smaller_one(
        members in prop::collection::btree_set(0u64..20, 1..6),
        key in "[a-z0-9]{0,8}",
        factor in 1usize..6,
    ) {
        let ring = Ring::with_members(8, ids(&members.into_iter().collect::<Vec<_>>()));
        let smaller = ring.responsible(&key, factor);
        let larger = ring.responsible(&key, factor + 1);
        prop_assert_eq!(&larger[..smaller.len()], &smaller[..]);
    }
}

/// The table's rows are exactly the reference implementation's answers for these cases, so the
/// table can neither drift nor be edited by hand into agreeing with a bug. On a deliberate
/// change of the placement function, the failure message prints the new rows.
#[test]
fn the_table_is_generated_by_the_reference() {
    let cases: &[(&[u64], u32, &str, usize)] = &[
        (&[], 8, "user:1", 3),
        (&[0], 8, "user:1", 1),
        (&[0], 8, "user:1", 3),
        (&[0, 1, 2], 1, "a", 1),
        (&[0, 1, 2], 1, "a", 3),
        (&[0, 1, 2], 8, "", 2),
        (&[0, 1, 2], 8, "user:1", 2),
        (&[0, 1, 2], 8, "user:2", 2),
        (&[0, 1, 2], 8, "x", 2),
        (&[0, 1, 2], 8, "y", 2),
        (&[0, 1, 2], 8, "z", 3),
        (&[0, 1, 2], 8, "user:3", 1),
        (&[0, 1, 2], 8, "cart/42", 3),
        (&[0, 1, 2], 8, "cart/42", 5),
        (&[0, 1, 2, 3, 4], 16, "user:1", 3),
        (&[0, 1, 2, 3, 4], 16, "session:7f3a", 3),
        (&[3, 17, 250], 64, "k", 2),
        (&[3, 17, 250], 64, "ключ", 2),
    ];
    let mut rows = String::new();
    for &(members, virtual_nodes, key, factor) in cases {
        let got = reference(&ids(members), virtual_nodes, key, factor);
        let list = |v: Vec<String>| if v.is_empty() { "-".to_owned() } else { v.join(",") };
        let members = list(members.iter().map(u64::to_string).collect());
        let got = list(got.iter().map(|n| n.0.to_string()).collect());
        rows.push_str(&format!("{members}\t{virtual_nodes}\t{key}\t{factor}\t{got}\n"));
    }
    let table: String = include_str!("testdata/ring.tsv")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(table == rows, "testdata/ring.tsv should hold these rows:\n{rows}");
}
