//! Per-handler tests of the cache and of the storage node's subscription side: each feeds one
//! input and asserts the outputs.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::*;
use crate::kvs::{PutError, StorageConfig, StorageNode};
use crate::lattice::{Lww, Stamp, WriterId};
use crate::node::{Node, Output};

const S0: NodeId = NodeId(0);
const S1: NodeId = NodeId(1);
const CACHE: NodeId = NodeId(5);
const EXEC: NodeId = NodeId(7);
const OTHER_EXEC: NodeId = NodeId(8);
/// The first write-through request number of a cache's first incarnation.
const FIRST: u64 = 1 << 32;

fn ring() -> Ring {
    Ring::with_members(8, [S0, S1])
}

fn lww(time: u64) -> LatticeValue {
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(1)), Bytes::from_static(b"v")))
}

fn cfg() -> CacheConfig {
    CacheConfig::new(CACHE, ring(), 2)
}

fn step(
    cfg: &CacheConfig,
    cache: &mut CacheNode,
    from: NodeId,
    msg: KvsMsg,
) -> Vec<Output<CacheNode>> {
    let mut out = Outbox::new();
    cache.handle(cfg, Input::Receive { from, msg }, &mut out);
    out.into_iter().collect()
}

fn send<N: Node<Msg = KvsMsg>>(to: NodeId, msg: KvsMsg) -> Output<N> {
    Output::Send { to, msg }
}

fn keys(list: &[&str]) -> BTreeSet<Key> {
    list.iter().map(|k| (*k).to_owned()).collect()
}

/// A push of a key the cache never fetched from the replica (or only at epoch 0).
fn push(key: &str, value: Option<LatticeValue>) -> KvsMsg {
    answer(0, key, value)
}

/// A push of a key whose latest `Fetch` the replica heard was of `epoch`.
fn answer(epoch: u64, key: &str, value: Option<LatticeValue>) -> KvsMsg {
    let entries = BTreeMap::from([(key.to_owned(), value)]);
    let epochs =
        if epoch > 0 { BTreeMap::from([(key.to_owned(), epoch)]) } else { BTreeMap::new() };
    KvsMsg::Push { incarnation: 1, entries, epochs }
}

fn fetch(epoch: u64, list: &[&str]) -> KvsMsg {
    KvsMsg::Fetch { incarnation: 1, keys: keys(list), epoch }
}

fn get(req: u64, key: &str) -> KvsMsg {
    KvsMsg::Get { req, key: key.to_owned() }
}

/// A cache holding `key` at `value`, fetched by `EXEC` with request 0.
fn holding(cfg: &CacheConfig, key: &str, value: LatticeValue) -> CacheNode {
    let mut cache = CacheNode::init(cfg, &0, &mut Outbox::new());
    step(cfg, &mut cache, EXEC, get(0, key));
    step(cfg, &mut cache, S0, answer(0, key, Some(value)));
    cache
}

#[test]
fn a_miss_subscribes_at_every_replica_once_and_the_first_push_answers_every_waiter() {
    let cfg = cfg();
    let mut cache = CacheNode::init(&cfg, &0, &mut Outbox::new());
    let first = step(&cfg, &mut cache, EXEC, get(0, "k"));
    let mut expected: Vec<_> = ring()
        .responsible("k", 2)
        .into_iter()
        .map(|replica| send(replica, fetch(0, &["k"])))
        .collect();
    expected.push(Output::SetTimer {
        timer: KvsTimer::Renew,
        after: cfg.renew_period.expect("renews"),
    });
    assert_eq!(first, expected, "replicas in ring order");
    assert!(step(&cfg, &mut cache, OTHER_EXEC, get(4, "k")).is_empty(), "one fetch in flight");
    let answered = step(&cfg, &mut cache, S1, answer(0, "k", Some(lww(1))));
    assert_eq!(
        answered,
        [
            send(EXEC, KvsMsg::GetOk { req: 0, value: Some(lww(1)) }),
            send(OTHER_EXEC, KvsMsg::GetOk { req: 4, value: Some(lww(1)) }),
            send(
                S1,
                KvsMsg::PushAck {
                    incarnation: 1,
                    entries: BTreeMap::from([("k".to_owned(), lww(1))])
                }
            ),
        ]
    );
    assert!(cache.is_idle());
    let hit = step(&cfg, &mut cache, EXEC, get(1, "k"));
    assert_eq!(hit, [send(EXEC, KvsMsg::GetOk { req: 1, value: Some(lww(1)) })]);
}

#[test]
fn a_missing_key_is_cached_as_missing_not_as_bottom() {
    let cfg = cfg();
    let mut cache = CacheNode::init(&cfg, &0, &mut Outbox::new());
    step(&cfg, &mut cache, EXEC, get(0, "k"));
    let answered = step(&cfg, &mut cache, S0, answer(0, "k", None));
    assert_eq!(answered, [send(EXEC, KvsMsg::GetOk { req: 0, value: None })]);
    assert_eq!(cache.entries()["k"].value, None);
}

#[test]
fn pushes_merge_so_a_late_older_push_never_takes_an_entry_back() {
    let cfg = cfg();
    let mut cache = holding(&cfg, "k", lww(2));
    let late = step(&cfg, &mut cache, S1, push("k", Some(lww(1))));
    assert_eq!(cache.entries()["k"].value, Some(lww(2)));
    let ack =
        KvsMsg::PushAck { incarnation: 1, entries: BTreeMap::from([("k".to_owned(), lww(2))]) };
    assert_eq!(late, [send(S1, ack)], "the ack says what the cache holds");
    step(&cfg, &mut cache, S0, push("k", Some(lww(3))));
    assert_eq!(cache.entries()["k"].value, Some(lww(3)));
}

#[test]
fn a_push_for_a_key_the_cache_does_not_hold_is_answered_with_unsubscribe() {
    let cfg = cfg();
    let mut cache = CacheNode::init(&cfg, &0, &mut Outbox::new());
    let outputs = step(&cfg, &mut cache, S0, push("gone", Some(lww(1))));
    assert_eq!(outputs, [send(S0, KvsMsg::Unsubscribe { incarnation: 1, keys: keys(&["gone"]) })]);
}

#[test]
fn a_put_is_acknowledged_to_the_executor_only_after_the_kvs_acknowledged_it() {
    let cfg = cfg();
    let mut cache = holding(&cfg, "k", lww(1));
    let put = KvsMsg::Put { req: 1, key: "k".into(), value: lww(2), durability: Durability::All };
    let primary = ring().responsible("k", 2)[0];
    let outputs = step(&cfg, &mut cache, EXEC, put);
    let through =
        KvsMsg::Put { req: FIRST, key: "k".into(), value: lww(2), durability: Durability::All };
    let arm = Output::SetTimer { timer: KvsTimer::WriteRetry, after: cfg.retry_after };
    assert_eq!(outputs, [arm, send(primary, through)]);
    assert_eq!(cache.entries()["k"].value, Some(lww(1)), "not before the KVS has it");
    let acked = step(&cfg, &mut cache, primary, KvsMsg::PutOk { req: FIRST });
    assert_eq!(acked, [send(EXEC, KvsMsg::PutOk { req: 1 })]);
    assert_eq!(cache.entries()["k"].value, Some(lww(2)));
}

#[test]
fn a_put_of_another_type_than_the_cached_one_is_rejected_at_once() {
    let cfg = cfg();
    let mut cache = holding(&cfg, "k", lww(1));
    let set = LatticeValue::Set(crate::lattice::SetUnion::singleton(Bytes::from_static(b"s")));
    let put =
        KvsMsg::Put { req: 1, key: "k".into(), value: set.clone(), durability: Durability::One };
    let outputs = step(&cfg, &mut cache, EXEC, put);
    let error = PutError::mismatch(lww(1).lattice_type(), set.lattice_type());
    assert_eq!(outputs, [send(EXEC, KvsMsg::PutRejected { req: 1, error })]);
}

#[test]
fn a_rejection_is_passed_on_only_for_the_first_attempt() {
    let cfg = cfg();
    let mut cache = CacheNode::init(&cfg, &0, &mut Outbox::new());
    let put = KvsMsg::Put { req: 1, key: "k".into(), value: lww(1), durability: Durability::One };
    step(&cfg, &mut cache, EXEC, put);
    let rejected = KvsMsg::PutRejected { req: FIRST, error: PutError::Overloaded };
    let first = step(&cfg, &mut cache, S0, rejected);
    assert_eq!(first, [send(EXEC, KvsMsg::PutRejected { req: 1, error: PutError::Overloaded })]);
    // A retried write-through's rejection is indefinite: the executor is left to time out.
    let put = KvsMsg::Put { req: 2, key: "k".into(), value: lww(1), durability: Durability::One };
    step(&cfg, &mut cache, EXEC, put);
    let tick = |cache: &mut CacheNode| {
        let mut out = Outbox::new();
        cache.handle(&cfg, Input::Timeout(KvsTimer::WriteRetry), &mut out);
        out.into_iter().collect::<Vec<_>>()
    };
    // Retried on the second tick after it was sent, to the next replica, under one number.
    let arm = Output::SetTimer { timer: KvsTimer::WriteRetry, after: cfg.retry_after };
    assert_eq!(tick(&mut cache), [arm]);
    let retried = tick(&mut cache);
    let replicas = ring().responsible("k", 2);
    let again =
        KvsMsg::Put { req: FIRST + 1, key: "k".into(), value: lww(1), durability: Durability::One };
    assert_eq!(retried[0], send(replicas[1], again));
    let rejected = KvsMsg::PutRejected { req: FIRST + 1, error: PutError::Overloaded };
    assert!(step(&cfg, &mut cache, S1, rejected).is_empty());
}

#[test]
fn duplicate_executor_requests_are_ignored() {
    let cfg = cfg();
    let mut cache = holding(&cfg, "k", lww(1));
    let duplicate = step(&cfg, &mut cache, EXEC, get(0, "k"));
    assert!(matches!(duplicate[..], [Output::Ignored { .. }]), "{duplicate:?}");
}

#[test]
fn eviction_drops_the_least_recently_used_key_and_unsubscribes_it() {
    let mut cfg = cfg();
    cfg.max_keys = 2;
    let mut cache = holding(&cfg, "a", lww(1));
    step(&cfg, &mut cache, EXEC, get(1, "b"));
    step(&cfg, &mut cache, S0, answer(0, "b", Some(lww(1))));
    step(&cfg, &mut cache, EXEC, get(2, "a")); // "a" is now the most recent
    step(&cfg, &mut cache, EXEC, get(3, "c"));
    let outputs = step(&cfg, &mut cache, S0, answer(0, "c", None));
    assert!(
        outputs.contains(&send(S0, KvsMsg::Unsubscribe { incarnation: 1, keys: keys(&["b"]) })),
        "{outputs:?}"
    );
    assert!(
        outputs.contains(&send(S1, KvsMsg::Unsubscribe { incarnation: 1, keys: keys(&["b"]) }))
    );
    assert_eq!(cache.entries().keys().collect::<Vec<_>>(), ["a", "c"]);
}

#[test]
fn renewal_resubscribes_held_keys_and_refetches_fetched_ones_at_each_replica() {
    let cfg = cfg();
    let mut cache = holding(&cfg, "a", lww(1));
    step(&cfg, &mut cache, EXEC, get(1, "b"));
    let mut out = Outbox::new();
    cache.handle(&cfg, Input::Timeout(KvsTimer::Renew), &mut out);
    let outputs: Vec<_> = out.into_iter().collect();
    assert_eq!(
        outputs,
        [
            send(S0, KvsMsg::Subscribe { incarnation: 1, keys: keys(&["a"]) }),
            send(S1, KvsMsg::Subscribe { incarnation: 1, keys: keys(&["a"]) }),
            send(S0, fetch(0, &["b"])),
            send(S1, fetch(0, &["b"])),
            Output::SetTimer { timer: KvsTimer::Renew, after: cfg.renew_period.expect("renews") },
        ]
    );
}

#[test]
fn cached_values_only_move_forward_as_a_step_invariant() {
    let cfg = cfg();
    let newer = holding(&cfg, "k", lww(2));
    let older = holding(&cfg, "k", lww(1));
    assert!(CacheNode::check_step(&cfg, &older, &newer).is_ok());
    assert_eq!(
        CacheNode::check_step(&cfg, &newer, &older).unwrap_err().id,
        invariants::MONOTONE_READS
    );
}

fn storage() -> (StorageConfig, StorageNode) {
    let cfg = StorageConfig::new(S0, Ring::with_members(8, [S0]), 1);
    let mut out = Outbox::new();
    let node = StorageNode::init(&cfg, &crate::kvs::Stored::default(), &mut out);
    (cfg, node)
}

fn storage_step(
    cfg: &StorageConfig,
    node: &mut StorageNode,
    input: Input<StorageNode>,
) -> Vec<Output<StorageNode>> {
    let mut out = Outbox::new();
    node.handle(cfg, input, &mut out);
    out.into_iter().collect()
}

#[test]
fn a_subscription_is_answered_with_the_value_and_growth_is_pushed_until_acknowledged() {
    let (cfg, mut node) = storage();
    let put = |req, value| Input::Receive {
        from: EXEC,
        msg: KvsMsg::Put { req, key: "k".into(), value, durability: Durability::One },
    };
    storage_step(&cfg, &mut node, put(0, lww(1)));
    let subscribe = Input::Receive {
        from: CACHE,
        msg: KvsMsg::Subscribe { incarnation: 1, keys: keys(&["k"]) },
    };
    let answered = storage_step(&cfg, &mut node, subscribe.clone());
    assert_eq!(
        answered,
        [
            send(CACHE, push("k", Some(lww(1)))),
            Output::SetTimer { timer: KvsTimer::Push, after: cfg.push_period },
            Output::SetTimer { timer: KvsTimer::Lease, after: cfg.lease_period.expect("leases") },
        ]
    );
    assert!(!node.is_idle(), "waiting for the cache's acknowledgement");
    let ack = |value| Input::Receive {
        from: CACHE,
        msg: KvsMsg::PushAck { incarnation: 1, entries: BTreeMap::from([("k".to_owned(), value)]) },
    };
    storage_step(&cfg, &mut node, ack(lww(1)));
    assert!(node.is_idle());
    // Growth arms the flush timer; its tick pushes every key that grew, in one batch per cache.
    let grown = storage_step(&cfg, &mut node, put(1, lww(2)));
    let flush = Output::SetTimer { timer: KvsTimer::Push, after: cfg.push_period };
    assert!(grown.contains(&flush), "{grown:?}");
    storage_step(&cfg, &mut node, put(2, lww(3)));
    let flushed = storage_step(&cfg, &mut node, Input::Timeout(KvsTimer::Push));
    assert!(flushed.contains(&send(CACHE, push("k", Some(lww(3))))), "{flushed:?}");
    storage_step(&cfg, &mut node, ack(lww(2)));
    assert!(!node.is_idle(), "an older value does not settle the push");
    let resent = storage_step(&cfg, &mut node, Input::Timeout(KvsTimer::Push));
    assert!(resent.contains(&send(CACHE, push("k", Some(lww(3))))));
    storage_step(&cfg, &mut node, ack(lww(3)));
    assert!(node.is_idle());
    // A renewal of a subscription it has is no new fetch: nothing is pushed.
    assert!(storage_step(&cfg, &mut node, subscribe).is_empty());
}

#[test]
fn a_subscription_not_renewed_across_two_lease_ticks_is_dropped() {
    let (cfg, mut node) = storage();
    let subscribe = Input::Receive {
        from: CACHE,
        msg: KvsMsg::Subscribe { incarnation: 1, keys: keys(&["k"]) },
    };
    storage_step(&cfg, &mut node, subscribe.clone());
    let tick = Input::Timeout(KvsTimer::Lease);
    storage_step(&cfg, &mut node, tick.clone());
    storage_step(&cfg, &mut node, subscribe); // renewed: survives the next tick
    storage_step(&cfg, &mut node, tick.clone());
    assert!(node.subscriptions().is_subscribed(CACHE, "k"));
    let last = storage_step(&cfg, &mut node, tick);
    assert!(!node.subscriptions().is_subscribed(CACHE, "k"));
    assert!(last.is_empty(), "no subscription left: the lease timer is not re-armed");
    assert!(node.subscriptions().leases_current());
}

#[test]
fn eviction_also_keeps_the_cache_within_its_byte_bound() {
    let mut cfg = cfg();
    cfg.max_bytes = 4; // "a" + 1 byte of payload is 2 bytes
    let mut cache = holding(&cfg, "a", lww(1));
    assert_eq!(cache.bytes(), 2);
    step(&cfg, &mut cache, EXEC, get(1, "b"));
    step(&cfg, &mut cache, S0, answer(0, "b", Some(lww(1))));
    assert_eq!(cache.bytes(), 4);
    step(&cfg, &mut cache, EXEC, get(2, "c"));
    let outputs = step(&cfg, &mut cache, S0, answer(0, "c", Some(lww(1))));
    assert!(
        outputs.contains(&send(S0, KvsMsg::Unsubscribe { incarnation: 1, keys: keys(&["a"]) })),
        "{outputs:?}"
    );
    assert_eq!(cache.entries().keys().collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(cache.bytes(), 4);
    // A single entry larger than the bound is cached alone.
    let big = LatticeValue::Lww(Lww::new(Stamp::new(9, WriterId(1)), Bytes::from_static(b"large")));
    step(&cfg, &mut cache, S0, push("b", Some(big)));
    assert_eq!(cache.entries().keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(cache.bytes(), 6);
}

#[test]
fn a_newer_view_moves_subscriptions_to_the_keys_new_replicas() {
    let cfg = cfg();
    let mut joined = ring();
    joined.join(NodeId(2));
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| joined.responsible(k, 2).contains(&NodeId(2)))
        .expect("some key moves to the joiner");
    let mut cache = holding(&cfg, &key, lww(1));
    let update = KvsMsg::RingUpdate { incarnation: 1, members: joined.membership().clone() };
    let outputs = step(&cfg, &mut cache, S0, update.clone());
    assert_eq!(
        outputs,
        [send(NodeId(2), KvsMsg::Subscribe { incarnation: 1, keys: keys(&[&key]) })]
    );
    assert_eq!(cache.ring(), &joined);
    let again = step(&cfg, &mut cache, S1, update);
    assert!(matches!(again[..], [Output::Ignored { .. }]), "an old view changes nothing");
}

#[test]
fn a_subscription_to_a_key_a_node_does_not_own_is_answered_with_its_view() {
    let (cfg, mut node) = storage();
    // A one-node ring owns every key: make it a two-node ring where it owns only some.
    let mut joined = cfg.ring.clone();
    joined.join(NodeId(1));
    let update = KvsMsg::RingUpdate { incarnation: 1, members: joined.membership().clone() };
    storage_step(&cfg, &mut node, Input::Receive { from: NodeId(1), msg: update });
    let foreign = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| !joined.is_responsible(S0, k, 1))
        .expect("some key is not n0's");
    let subscribe = KvsMsg::Subscribe { incarnation: 1, keys: keys(&[&foreign]) };
    let outputs = storage_step(&cfg, &mut node, Input::Receive { from: CACHE, msg: subscribe });
    let view = KvsMsg::RingUpdate { incarnation: 1, members: joined.membership().clone() };
    assert_eq!(outputs, [send(CACHE, view)]);
    assert!(!node.subscriptions().is_subscribed(CACHE, &foreign));
}

#[test]
fn a_view_change_tells_the_caches_of_keys_that_moved_away() {
    let (cfg, mut node) = storage();
    let mut joined = cfg.ring.clone();
    joined.join(NodeId(1));
    let moving = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| !joined.is_responsible(S0, k, 1))
        .expect("some key moves to n1");
    let subscribe = KvsMsg::Subscribe { incarnation: 1, keys: keys(&[&moving]) };
    storage_step(&cfg, &mut node, Input::Receive { from: CACHE, msg: subscribe });
    let update = KvsMsg::RingUpdate { incarnation: 1, members: joined.membership().clone() };
    let outputs = storage_step(&cfg, &mut node, Input::Receive { from: NodeId(1), msg: update });
    let view = KvsMsg::RingUpdate { incarnation: 1, members: joined.membership().clone() };
    assert!(outputs.contains(&send(CACHE, view)), "{outputs:?}");
    assert!(!node.subscriptions().is_subscribed(CACHE, &moving));
}

#[test]
fn a_fetch_is_answered_even_when_the_cache_is_still_subscribed() {
    // A cache that restarted (or evicted and lost its Unsubscribe) fetches a key a replica
    // still lists it for: a renewal would push nothing, a fetch pushes the value.
    let (cfg, mut node) = storage();
    let put = KvsMsg::Put { req: 0, key: "k".into(), value: lww(1), durability: Durability::One };
    storage_step(&cfg, &mut node, Input::Receive { from: EXEC, msg: put });
    let subscribe = KvsMsg::Subscribe { incarnation: 1, keys: keys(&["k"]) };
    storage_step(&cfg, &mut node, Input::Receive { from: CACHE, msg: subscribe });
    let outputs =
        storage_step(&cfg, &mut node, Input::Receive { from: CACHE, msg: fetch(7, &["k"]) });
    assert!(outputs.contains(&send(CACHE, answer(7, "k", Some(lww(1))))), "{outputs:?}");
}

#[test]
fn a_restarted_cache_never_takes_an_old_answer_for_a_new_write() {
    let cfg = cfg();
    let mut out = Outbox::new();
    let mut restarted = CacheNode::init(&cfg, &1, &mut out);
    assert_eq!(out.into_iter().next(), Some(Output::Persist(2)));
    let put = KvsMsg::Put { req: 0, key: "k".into(), value: lww(1), durability: Durability::One };
    step(&cfg, &mut restarted, EXEC, put);
    // The first incarnation's first write-through, acknowledged late.
    let stale = step(&cfg, &mut restarted, S0, KvsMsg::PutOk { req: FIRST });
    assert!(matches!(stale[..], [Output::Ignored { .. }]), "{stale:?}");
    let fresh = step(&cfg, &mut restarted, S0, KvsMsg::PutOk { req: 2 << 32 });
    assert_eq!(fresh, [send(EXEC, KvsMsg::PutOk { req: 0 })]);
}

#[test]
fn a_push_from_before_a_fetch_never_answers_it() {
    // Found by the simulator: the cache evicted k after its executor's own write, fetched it
    // again, and a push delayed since before that write answered the fetch, so the executor
    // read older than it had written. (The write is elided: what matters is that the pushes
    // left their replicas before the eviction.)
    let mut cfg = cfg();
    cfg.max_keys = 1;
    let mut cache = holding(&cfg, "k", lww(1));
    step(&cfg, &mut cache, EXEC, get(1, "other"));
    step(&cfg, &mut cache, S0, answer(0, "other", None)); // evicts k: epoch 1
    let refetch = step(&cfg, &mut cache, EXEC, get(2, "k"));
    assert!(refetch.contains(&send(S0, fetch(1, &["k"]))), "{refetch:?}");
    let stale = step(&cfg, &mut cache, S1, answer(0, "k", Some(lww(1))));
    assert!(matches!(stale[..], [Output::Ignored { .. }]), "the first fetch's answer: {stale:?}");
    let old_push = step(&cfg, &mut cache, S0, push("k", Some(lww(1))));
    assert!(matches!(old_push[..], [Output::Ignored { .. }]), "a delayed push: {old_push:?}");
    let answered = step(&cfg, &mut cache, S0, answer(1, "k", Some(lww(5))));
    assert!(answered.contains(&send(EXEC, KvsMsg::GetOk { req: 2, value: Some(lww(5)) })));
}

#[test]
fn a_write_acknowledged_during_a_fetch_restarts_it() {
    // The answer already on its way may predate the write: only an answer to a `Fetch` sent
    // after the acknowledgement resolves the fetch.
    let cfg = cfg();
    let mut cache = CacheNode::init(&cfg, &0, &mut Outbox::new());
    step(&cfg, &mut cache, OTHER_EXEC, get(0, "k"));
    let put = KvsMsg::Put { req: 1, key: "k".into(), value: lww(2), durability: Durability::All };
    step(&cfg, &mut cache, EXEC, put);
    let acked = step(&cfg, &mut cache, S0, KvsMsg::PutOk { req: FIRST });
    for replica in ring().responsible("k", 2) {
        assert!(acked.contains(&send(replica, fetch(1, &["k"]))), "{acked:?}");
    }
    assert!(acked.contains(&send(EXEC, KvsMsg::PutOk { req: 1 })), "{acked:?}");
    let stale = step(&cfg, &mut cache, S1, answer(0, "k", Some(lww(1))));
    assert!(matches!(stale[..], [Output::Ignored { .. }]), "{stale:?}");
    let fresh = step(&cfg, &mut cache, S1, answer(1, "k", Some(lww(2))));
    assert!(fresh.contains(&send(OTHER_EXEC, KvsMsg::GetOk { req: 0, value: Some(lww(2)) })));
}

#[test]
fn a_replica_stamps_every_push_of_a_key_with_the_latest_fetch_epoch_it_heard() {
    let (cfg, mut node) = storage();
    let put = |req, value| Input::Receive {
        from: EXEC,
        msg: KvsMsg::Put { req, key: "k".into(), value, durability: Durability::One },
    };
    storage_step(&cfg, &mut node, put(0, lww(1)));
    let fetched = |epoch| Input::Receive { from: CACHE, msg: fetch(epoch, &["k"]) };
    let answered = storage_step(&cfg, &mut node, fetched(3));
    assert!(answered.contains(&send(CACHE, answer(3, "k", Some(lww(1))))), "{answered:?}");
    // A delayed, older fetch does not lower it; the push of a later growth carries it too.
    let late = storage_step(&cfg, &mut node, fetched(1));
    assert!(late.contains(&send(CACHE, answer(3, "k", Some(lww(1))))), "{late:?}");
    storage_step(&cfg, &mut node, put(1, lww(2)));
    let flushed = storage_step(&cfg, &mut node, Input::Timeout(KvsTimer::Push));
    assert!(flushed.contains(&send(CACHE, answer(3, "k", Some(lww(2))))), "{flushed:?}");
    // A subscription re-created after an unsubscribe (here by a late `Subscribe`) starts
    // from 0: its pushes resolve no fetch begun after an eviction.
    let unsubscribe = KvsMsg::Unsubscribe { incarnation: 1, keys: keys(&["k"]) };
    storage_step(&cfg, &mut node, Input::Receive { from: CACHE, msg: unsubscribe });
    let subscribe = KvsMsg::Subscribe { incarnation: 1, keys: keys(&["k"]) };
    let renewed = storage_step(&cfg, &mut node, Input::Receive { from: CACHE, msg: subscribe });
    assert!(renewed.contains(&send(CACHE, push("k", Some(lww(2))))), "{renewed:?}");
}

#[test]
fn only_evictions_and_writes_acknowledged_during_a_fetch_advance_the_epoch() {
    let cfg = cfg();
    let mut cache = holding(&cfg, "k", lww(1));
    // A write-through of a cached key, and of a key neither cached nor fetched: no change.
    for (req, key) in [(1, "k"), (2, "other")] {
        let put = KvsMsg::Put { req, key: key.into(), value: lww(2), durability: Durability::All };
        step(&cfg, &mut cache, EXEC, put);
        let acked = step(&cfg, &mut cache, S0, KvsMsg::PutOk { req: FIRST + req - 1 });
        assert!(acked.contains(&send(EXEC, KvsMsg::PutOk { req })), "{acked:?}");
    }
    let fetched = step(&cfg, &mut cache, EXEC, get(3, "new"));
    let replica = ring().responsible("new", 2)[0];
    assert!(fetched.contains(&send(replica, fetch(0, &["new"]))), "{fetched:?}");
    // A restarted cache starts again from epoch 0.
    let mut restarted = CacheNode::init(&cfg, &1, &mut Outbox::new());
    let fetched = step(&cfg, &mut restarted, EXEC, get(0, "new"));
    let fetch2 = KvsMsg::Fetch { incarnation: 2, keys: keys(&["new"]), epoch: 0 };
    assert!(fetched.contains(&send(replica, fetch2)), "{fetched:?}");
}
