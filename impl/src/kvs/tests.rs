//! Per-handler tests of the storage node: each feeds one input and asserts the exact outputs.
//! (The client's are in `client_tests.rs`.)

use std::collections::BTreeMap;

use bytes::Bytes;

use super::*;
use crate::lattice::{LatticeType, LatticeValue, Lww, SetUnion, Stamp, WriterId};
use crate::node::{DurableState, Input, Node, NodeId, Outbox, Output};

const N0: NodeId = NodeId(0);
const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const CLIENT: NodeId = NodeId(9);

fn ring() -> Ring {
    Ring::with_members(8, [N0, N1, N2])
}

fn lww(time: u64, value: &'static str) -> LatticeValue {
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(1)), Bytes::from_static(value.as_bytes())))
}

fn set(value: &'static str) -> LatticeValue {
    LatticeValue::Set(SetUnion::singleton(Bytes::from_static(value.as_bytes())))
}

fn storage_cfg(id: NodeId, replication: usize) -> StorageConfig {
    let mut cfg = StorageConfig::new(id, ring(), replication);
    cfg.schema = BTreeMap::from([("typed/".to_owned(), LatticeType::Lww)]);
    cfg
}

fn storage(cfg: &StorageConfig, persisted: u32) -> (StorageNode, Vec<Output<StorageNode>>) {
    let mut out = Outbox::new();
    let node = StorageNode::init(cfg, &Stored::incarnation(persisted), &mut out);
    (node, out.into_iter().collect())
}

pub(super) fn deliver(
    cfg: &StorageConfig,
    node: &mut StorageNode,
    from: NodeId,
    msg: KvsMsg,
) -> Vec<Output<StorageNode>> {
    let mut out = Outbox::new();
    node.handle(cfg, Input::Receive { from, msg }, &mut out);
    out.into_iter().collect()
}

pub(super) fn send(to: NodeId, msg: KvsMsg) -> Output<StorageNode> {
    Output::Send { to, msg }
}

fn put(req: u64, key: &str, value: LatticeValue, durability: Durability) -> KvsMsg {
    KvsMsg::Put { req, key: key.to_owned(), value, durability }
}

fn entries(key: &str, value: LatticeValue) -> BTreeMap<Key, LatticeValue> {
    BTreeMap::from([(key.to_owned(), value)])
}

fn gossip(incarnation: u32, key: &str, value: LatticeValue) -> KvsMsg {
    KvsMsg::Gossip { incarnation, entries: entries(key, value) }
}

fn ack(incarnation: u32, key: &str, value: LatticeValue) -> KvsMsg {
    KvsMsg::GossipAck { incarnation, entries: entries(key, value) }
}

fn arm_gossip(cfg: &StorageConfig) -> Output<StorageNode> {
    Output::SetTimer { timer: KvsTimer::Gossip, after: cfg.gossip_period }
}

#[test]
fn first_start_persists_incarnation_one_and_says_nothing() {
    let (node, outputs) = storage(&storage_cfg(N0, 3), 0);
    assert_eq!(outputs, [Output::Persist(Stored::incarnation(1))]);
    assert_eq!(node.incarnation(), 1);
    assert!(node.is_idle());
}

#[test]
fn restart_with_nothing_stored_comes_back_empty_with_a_new_incarnation_and_says_hello() {
    let cfg = storage_cfg(N0, 3);
    let (node, outputs) = storage(&cfg, 1);
    assert_eq!(node.incarnation(), 2);
    assert_eq!(
        outputs,
        [
            Output::Persist(Stored::incarnation(2)),
            send(N1, KvsMsg::Hello { incarnation: 2 }),
            send(N2, KvsMsg::Hello { incarnation: 2 }),
            Output::SetTimer { timer: KvsTimer::Hello, after: cfg.hello_period },
        ]
    );
}

#[test]
fn majority_put_is_gossiped_at_once_and_acknowledged_after_one_more_replica() {
    let cfg = storage_cfg(N0, 3);
    let (mut node, _) = storage(&cfg, 0);
    let outputs = deliver(&cfg, &mut node, CLIENT, put(7, "k", lww(1, "a"), Durability::Majority));
    assert_eq!(
        outputs,
        [
            Output::Persist(Stored::value("k", &lww(1, "a"))),
            send(N1, gossip(1, "k", lww(1, "a"))),
            send(N2, gossip(1, "k", lww(1, "a"))),
            arm_gossip(&cfg)
        ]
    );
    let acked = deliver(&cfg, &mut node, N2, ack(1, "k", lww(1, "a")));
    assert_eq!(acked, [send(CLIENT, KvsMsg::PutOk { req: 7 })]);
    assert!(!node.is_idle(), "n1 is still behind");
}

#[test]
fn a_put_is_acknowledged_once_replicas_hold_its_value_even_if_the_key_has_moved_on() {
    // A hot key: a second write lands before the first is acknowledged. A peer's
    // acknowledgement of the first value covers the first put, though it is behind the second.
    let cfg = storage_cfg(N0, 3);
    let (mut node, _) = storage(&cfg, 0);
    deliver(&cfg, &mut node, CLIENT, put(1, "k", lww(1, "a"), Durability::Majority));
    deliver(&cfg, &mut node, CLIENT, put(2, "k", lww(2, "b"), Durability::Majority));
    let acked = deliver(&cfg, &mut node, N1, ack(1, "k", lww(1, "a")));
    assert_eq!(acked, [send(CLIENT, KvsMsg::PutOk { req: 1 })], "only the covered put");
    let acked = deliver(&cfg, &mut node, N2, ack(1, "k", lww(2, "b")));
    assert_eq!(acked, [send(CLIENT, KvsMsg::PutOk { req: 2 })]);
}

#[test]
fn acknowledgements_from_a_previous_incarnation_stop_counting_when_the_peer_restarts() {
    let cfg = storage_cfg(N0, 3);
    let (mut node, _) = storage(&cfg, 0);
    deliver(&cfg, &mut node, CLIENT, put(1, "k", lww(1, "a"), Durability::All));
    assert!(deliver(&cfg, &mut node, N1, ack(1, "k", lww(1, "a"))).is_empty());
    // n1 restarts (its copy is gone); n2's acknowledgement alone no longer makes "all".
    deliver(&cfg, &mut node, N1, KvsMsg::Hello { incarnation: 2 });
    let outputs = deliver(&cfg, &mut node, N2, ack(1, "k", lww(1, "a")));
    assert!(!outputs.contains(&send(CLIENT, KvsMsg::PutOk { req: 1 })), "{outputs:?}");
    let outputs = deliver(&cfg, &mut node, N1, ack(2, "k", lww(1, "a")));
    assert!(outputs.contains(&send(CLIENT, KvsMsg::PutOk { req: 1 })), "{outputs:?}");
}

#[test]
fn put_at_durability_one_is_acknowledged_immediately() {
    let cfg = storage_cfg(N0, 3);
    let (mut node, _) = storage(&cfg, 0);
    let outputs = deliver(&cfg, &mut node, CLIENT, put(1, "k", lww(1, "a"), Durability::One));
    assert_eq!(outputs.last(), Some(&send(CLIENT, KvsMsg::PutOk { req: 1 })));
}

#[test]
fn put_against_the_schema_is_rejected_before_touching_the_store() {
    let cfg = storage_cfg(N0, 3);
    let (mut node, _) = storage(&cfg, 0);
    let outputs = deliver(&cfg, &mut node, CLIENT, put(1, "typed/k", set("x"), Durability::One));
    let error = PutError::mismatch(LatticeType::Lww, LatticeType::Set);
    assert_eq!(outputs, [send(CLIENT, KvsMsg::PutRejected { req: 1, error })]);
    assert!(node.store().is_empty());
}

#[test]
fn put_against_the_stored_type_is_rejected() {
    let cfg = storage_cfg(N0, 3);
    let (mut node, _) = storage(&cfg, 0);
    deliver(&cfg, &mut node, CLIENT, put(1, "k", lww(1, "a"), Durability::One));
    let outputs = deliver(&cfg, &mut node, CLIENT, put(2, "k", set("x"), Durability::One));
    let error = PutError::mismatch(LatticeType::Lww, LatticeType::Set);
    assert_eq!(outputs, [send(CLIENT, KvsMsg::PutRejected { req: 2, error })]);
    assert_eq!(node.store()["k"], lww(1, "a"));
}

#[test]
fn bounds_reject_puts_definitely() {
    let mut cfg = storage_cfg(N0, 3);
    cfg.max_keys = 1;
    cfg.max_pending = 1;
    let (mut node, _) = storage(&cfg, 0);
    deliver(&cfg, &mut node, CLIENT, put(1, "k", lww(1, "a"), Durability::All));
    let full = deliver(&cfg, &mut node, CLIENT, put(2, "other", lww(1, "b"), Durability::One));
    assert_eq!(
        full,
        [send(CLIENT, KvsMsg::PutRejected { req: 2, error: PutError::StoreFull { max_keys: 1 } })]
    );
    let busy = deliver(&cfg, &mut node, CLIENT, put(3, "k", lww(2, "c"), Durability::One));
    assert_eq!(busy, [send(CLIENT, KvsMsg::PutRejected { req: 3, error: PutError::Overloaded })]);
}

#[test]
fn get_distinguishes_a_missing_key_from_a_stored_one() {
    let cfg = storage_cfg(N0, 3);
    let (mut node, _) = storage(&cfg, 0);
    let missing = deliver(&cfg, &mut node, CLIENT, KvsMsg::Get { req: 1, key: "k".into() });
    assert_eq!(missing, [send(CLIENT, KvsMsg::GetOk { req: 1, value: None })]);
    deliver(&cfg, &mut node, CLIENT, put(2, "k", set("x"), Durability::One));
    let found = deliver(&cfg, &mut node, CLIENT, KvsMsg::Get { req: 3, key: "k".into() });
    assert_eq!(found, [send(CLIENT, KvsMsg::GetOk { req: 3, value: Some(set("x")) })]);
}

#[test]
fn a_node_that_does_not_own_the_key_redirects_with_its_epoch() {
    let key = (0..).map(|i| format!("key{i}")).find(|k| ring().responsible(k, 1) == [N1]).unwrap();
    let cfg = storage_cfg(N0, 1);
    let (mut node, _) = storage(&cfg, 0);
    let outputs = deliver(&cfg, &mut node, CLIENT, KvsMsg::Get { req: 4, key: key.clone() });
    let redirect = KvsMsg::Redirect { req: 4, key, epoch: ring().epoch(), owners: vec![N1] };
    assert_eq!(outputs, [send(CLIENT, redirect)]);
}

#[test]
fn gossip_is_merged_acknowledged_and_passed_on_to_the_other_replicas() {
    let cfg = storage_cfg(N0, 3);
    let (mut node, _) = storage(&cfg, 0);
    let outputs = deliver(&cfg, &mut node, N1, gossip(1, "k", lww(1, "a")));
    let persist = Output::Persist(Stored::value("k", &lww(1, "a")));
    assert_eq!(outputs, [persist, send(N1, ack(1, "k", lww(1, "a"))), arm_gossip(&cfg)]);
    // n1 sent the value, so only n2 is behind; the timer will send it there.
    let mut out = Outbox::new();
    node.handle(&cfg, Input::Timeout(KvsTimer::Gossip), &mut out);
    let timer: Vec<_> = out.into_iter().collect();
    assert_eq!(timer, [send(N2, gossip(1, "k", lww(1, "a"))), arm_gossip(&cfg)]);
}

#[test]
fn gossip_from_an_earlier_incarnation_is_merged_but_proves_nothing() {
    let cfg = storage_cfg(N0, 3);
    let (mut node, _) = storage(&cfg, 0);
    deliver(&cfg, &mut node, N1, KvsMsg::Hello { incarnation: 2 });
    deliver(&cfg, &mut node, CLIENT, put(1, "k", lww(1, "a"), Durability::All));
    // An acknowledgement n1 sent before it restarted must not count.
    let stale = deliver(&cfg, &mut node, N1, ack(1, "k", lww(1, "a")));
    assert!(matches!(stale[..], [Output::Ignored { .. }, ..]), "{stale:?}");
    let fresh_n2 = deliver(&cfg, &mut node, N2, ack(1, "k", lww(1, "a")));
    assert!(!fresh_n2.contains(&send(CLIENT, KvsMsg::PutOk { req: 1 })), "n1 has not confirmed");
    let fresh_n1 = deliver(&cfg, &mut node, N1, ack(2, "k", lww(1, "a")));
    assert!(fresh_n1.contains(&send(CLIENT, KvsMsg::PutOk { req: 1 })));
}

#[test]
fn hello_from_a_restarted_peer_puts_its_keys_behind_again() {
    let cfg = storage_cfg(N0, 3);
    let (mut node, _) = storage(&cfg, 0);
    deliver(&cfg, &mut node, CLIENT, put(1, "k", lww(1, "a"), Durability::One));
    deliver(&cfg, &mut node, N1, ack(1, "k", lww(1, "a")));
    deliver(&cfg, &mut node, N2, ack(1, "k", lww(1, "a")));
    assert!(node.is_idle());
    let outputs = deliver(&cfg, &mut node, N1, KvsMsg::Hello { incarnation: 2 });
    let members = ring().membership().clone();
    assert_eq!(outputs, [arm_gossip(&cfg), send(N1, KvsMsg::HelloAck { incarnation: 2, members })]);
    assert!(!node.is_idle());
}

#[test]
fn step_check_rejects_a_lost_key() {
    let cfg = storage_cfg(N0, 3);
    let (mut before, _) = storage(&cfg, 0);
    deliver(&cfg, &mut before, CLIENT, put(1, "k", lww(1, "a"), Durability::One));
    let (after, _) = storage(&cfg, 0);
    let violation = StorageNode::check_step(&cfg, &before, &after).unwrap_err();
    assert_eq!(violation.id, invariants::MONOTONE);
    assert!(StorageNode::check_step(&cfg, &after, &before).is_ok());
}

#[test]
fn durability_counts_replicas() {
    assert_eq!(Durability::One.replicas_needed(3), 1);
    assert_eq!(Durability::Majority.replicas_needed(3), 2);
    assert_eq!(Durability::Majority.replicas_needed(4), 3);
    assert_eq!(Durability::All.replicas_needed(3), 3);
    assert_eq!(Durability::Majority.replicas_needed(0), 0);
}

#[test]
fn a_duplicate_of_a_pending_put_is_not_rejected_by_the_bounds() {
    let mut cfg = storage_cfg(N0, 3);
    cfg.max_pending = 1;
    let (mut node, _) = storage(&cfg, 0);
    deliver(&cfg, &mut node, CLIENT, put(1, "k", lww(1, "a"), Durability::All));
    let duplicate = deliver(&cfg, &mut node, CLIENT, put(1, "k", lww(1, "a"), Durability::All));
    assert!(duplicate.is_empty(), "still waiting, not rejected: {duplicate:?}");
}

#[test]
fn a_put_is_on_disk_before_the_client_hears_it_was_written() {
    let cfg = storage_cfg(N0, 3);
    let (mut node, _) = storage(&cfg, 0);
    let outputs = deliver(&cfg, &mut node, CLIENT, put(1, "k", lww(1, "a"), Durability::One));
    let persisted =
        outputs.iter().position(|o| matches!(o, Output::Persist(d) if d.data.contains_key("k")));
    let acked = outputs.iter().position(|o| *o == send(CLIENT, KvsMsg::PutOk { req: 1 }));
    assert!(persisted.expect("persisted") < acked.expect("acknowledged"), "{outputs:?}");
    // A put the node already holds grows nothing, and persists nothing again.
    let again = deliver(&cfg, &mut node, CLIENT, put(2, "k", lww(1, "a"), Durability::One));
    assert_eq!(again, [send(CLIENT, KvsMsg::PutOk { req: 2 })]);
}

#[test]
fn a_restarted_node_serves_what_it_persisted_and_gossips_it_to_the_replicas() {
    let cfg = storage_cfg(N0, 3);
    let mut stored = Stored::incarnation(1);
    stored.merge_delta(Stored::value("k", &lww(1, "a")));
    stored.merge_delta(Stored::value("k", &lww(2, "b")));
    let mut out = Outbox::new();
    let mut node = StorageNode::init(&cfg, &stored, &mut out);
    let outputs: Vec<_> = out.into_iter().collect();
    assert_eq!(node.incarnation(), 2);
    assert_eq!(node.store().get("k"), Some(&lww(2, "b")));
    assert_eq!(outputs[0], Output::Persist(Stored::incarnation(2)));
    assert!(outputs.contains(&arm_gossip(&cfg)), "{outputs:?}");
    let get = deliver(&cfg, &mut node, CLIENT, KvsMsg::Get { req: 1, key: "k".into() });
    assert_eq!(get, [send(CLIENT, KvsMsg::GetOk { req: 1, value: Some(lww(2, "b")) })]);
    let mut out = Outbox::new();
    node.handle(&cfg, Input::Timeout(KvsTimer::Gossip), &mut out);
    let timer: Vec<_> = out.into_iter().collect();
    assert!(timer.contains(&send(
        N1,
        KvsMsg::Gossip { incarnation: 2, entries: entries("k", lww(2, "b")) }
    )));
}

#[test]
fn stored_state_merges_deltas_as_a_lattice_and_splits_into_records() {
    let mut stored = Stored::default();
    stored.merge_delta(Stored::value("k", &lww(2, "b")));
    stored.merge_delta(Stored::value("k", &lww(1, "a")));
    stored.merge_delta(Stored::incarnation(3));
    stored.merge_delta(Stored::incarnation(2));
    // A value of another type under a stored key is dropped, never merged.
    stored.merge_delta(Stored::value("k", &set("x")));
    assert_eq!(stored.incarnation, 3);
    assert_eq!(stored.data.get("k"), Some(&lww(2, "b")));
    let parts = stored.clone().parts();
    let names: Vec<&[u8]> = parts.iter().map(|(name, _)| &name[..]).collect();
    assert_eq!(names, [&b"i"[..], &b"kk"[..]]);
    let mut rebuilt = Stored::default();
    for (_, part) in parts {
        rebuilt.merge_delta(part);
    }
    assert_eq!(rebuilt, stored);
}

#[cfg(feature = "mutants")]
#[test]
fn write_behind_mutants_acknowledge_what_no_disk_holds() {
    for (mutant, from, msg) in [
        (Mutant::AckBeforePersist, CLIENT, put(1, "k", lww(1, "a"), Durability::One)),
        (Mutant::GossipAckBeforePersist, N1, gossip(1, "k", lww(1, "a"))),
    ] {
        let mut cfg = storage_cfg(N0, 3);
        cfg.mutant = Some(mutant);
        let (mut node, _) = storage(&cfg, 0);
        let outputs = deliver(&cfg, &mut node, from, msg);
        assert!(
            !outputs.iter().any(|o| matches!(o, Output::Persist(_))),
            "{mutant:?}: {outputs:?}"
        );
        assert!(outputs.iter().any(|o| matches!(o, Output::Send { to, .. } if *to == from)));
    }
}

fn tick(cfg: &StorageConfig, node: &mut StorageNode) -> Vec<Output<StorageNode>> {
    let mut out = Outbox::new();
    node.handle(cfg, Input::Timeout(KvsTimer::Gossip), &mut out);
    out.into_iter().collect()
}

/// The gossip messages to `peer` among `outputs`, as their key lists.
fn gossip_to(outputs: &[Output<StorageNode>], peer: NodeId) -> Vec<Vec<Key>> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Send { to, msg: KvsMsg::Gossip { entries, .. } } if *to == peer => {
                Some(entries.keys().cloned().collect())
            }
            _ => None,
        })
        .collect()
}

/// Node 0 of three (replication 3) holding `keys` keys that N1 and N2 both lack, with
/// batches of 10 and a backoff of up to 8 ticks.
fn lagging_node(keys: usize) -> (StorageConfig, StorageNode) {
    let mut cfg = storage_cfg(N0, 3);
    cfg.gossip_batch = 10;
    cfg.gossip_backoff = 8;
    let (mut node, _) = storage(&cfg, 0);
    for i in 0..keys {
        let key = format!("k{i:03}");
        deliver(&cfg, &mut node, CLIENT, put(i as u64, &key, lww(1, "v"), Durability::One));
    }
    (cfg, node)
}

#[test]
fn a_silent_replica_gets_bounded_batches_ever_further_apart_and_no_gossip_per_put() {
    let (cfg, mut node) = lagging_node(100);
    let mut batches = Vec::new();
    let mut sent_at = Vec::new();
    for t in 0..40 {
        let outputs = tick(&cfg, &mut node);
        assert!(outputs.contains(&arm_gossip(&cfg)), "the timer stays armed");
        let to_n2 = gossip_to(&outputs, N2);
        if !to_n2.is_empty() {
            sent_at.push(t);
        }
        batches.extend(to_n2);
        // N1 acknowledges everything it gets, so it is never silent.
        for keys in gossip_to(&outputs, N1) {
            let entries = keys.iter().map(|k| (k.clone(), lww(1, "v"))).collect();
            deliver(&cfg, &mut node, N1, KvsMsg::GossipAck { incarnation: 1, entries });
        }
    }
    // N2 never answers: ticks 0 and 1, then waits of 1, 3, 7 and 7 ticks between batches.
    assert_eq!(sent_at, [0, 1, 3, 7, 15, 23, 31, 39]);
    // One batch of 10, then (N2 silent) probes of one key each.
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 1, 1, 1, 1, 1, 1, 1]);
    // Batches resume where the last stopped: N2 got 17 distinct keys in order.
    let keys: Vec<Key> = batches.concat();
    assert_eq!(keys, (0..17).map(|i| format!("k{i:03}")).collect::<Vec<_>>());
    // A put to a key N2 lags on goes at once to N1 only: N2 is probed, not flooded.
    let outputs = deliver(&cfg, &mut node, CLIENT, put(500, "k000", lww(2, "w"), Durability::One));
    assert_eq!(gossip_to(&outputs, N1), [vec!["k000".to_owned()]]);
    assert!(gossip_to(&outputs, N2).is_empty());
    // N2 answers a probe: the next full batch goes at once.
    let probe = batches.last().expect("a probe").clone();
    let entries = probe.iter().map(|k| (k.clone(), lww(1, "v"))).collect();
    let outputs = deliver(&cfg, &mut node, N2, KvsMsg::GossipAck { incarnation: 1, entries });
    assert_eq!(gossip_to(&outputs, N2).first().map(Vec::len), Some(10));
}

#[test]
fn a_replica_catching_up_gets_its_next_batch_as_soon_as_it_acknowledges_one() {
    let (cfg, mut node) = lagging_node(25);
    // N1 is up to date; N2 restarted empty and gets everything back, a batch per ack.
    for i in 0..25 {
        let key = format!("k{i:03}");
        deliver(&cfg, &mut node, N1, ack(1, &key, lww(1, "v")));
    }
    let mut outputs = tick(&cfg, &mut node);
    let mut got = Vec::new();
    for _ in 0..3 {
        let batch = gossip_to(&outputs, N2);
        assert_eq!(batch.len(), 1, "one batch outstanding at a time");
        let entries = batch[0].iter().map(|k| (k.clone(), lww(1, "v"))).collect();
        got.extend(batch[0].clone());
        outputs = deliver(&cfg, &mut node, N2, KvsMsg::GossipAck { incarnation: 1, entries });
    }
    assert_eq!(got.len(), 25, "three batches, each sent on the last one's ack");
    assert!(gossip_to(&outputs, N2).is_empty(), "nothing left to send");
    assert!(node.is_idle(), "every replica holds everything: the timer is disarmed");
    assert!(outputs.contains(&Output::CancelTimer(KvsTimer::Gossip)));
}

#[test]
fn a_restarted_replica_is_no_longer_suspected() {
    let (cfg, mut node) = lagging_node(30);
    for _ in 0..8 {
        tick(&cfg, &mut node);
    }
    let outputs = deliver(&cfg, &mut node, CLIENT, put(600, "k001", lww(3, "x"), Durability::One));
    assert!(gossip_to(&outputs, N2).is_empty(), "N2 is suspected");
    // N2 comes back (a new incarnation): gossip to it starts over at once.
    deliver(&cfg, &mut node, N2, KvsMsg::Hello { incarnation: 2 });
    let outputs = tick(&cfg, &mut node);
    assert_eq!(gossip_to(&outputs, N2).first().map(Vec::len), Some(10));
    let outputs = deliver(&cfg, &mut node, CLIENT, put(601, "k002", lww(3, "x"), Durability::One));
    assert_eq!(gossip_to(&outputs, N2), [vec!["k002".to_owned()]]);
}
