//! Per-handler tests of membership: joining, learning views, handing keys off, leaving.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::tests::{deliver, send};
use super::*;
use crate::lattice::{LatticeValue, Lww, Stamp, WriterId};
use crate::node::{Input, Node, NodeId, Outbox, Output};

const N0: NodeId = NodeId(0);
const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);
const N4: NodeId = NodeId(4);
const OPERATOR: NodeId = NodeId(9);
const REPLICATION: usize = 2;

fn ring() -> Ring {
    Ring::with_members(8, [N0, N1, N2])
}

fn joined(node: NodeId) -> Ring {
    let mut ring = ring();
    ring.join(node);
    ring
}

fn lww(time: u64) -> LatticeValue {
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(1)), Bytes::from_static(b"v")))
}

fn cfg(id: NodeId, ring: Ring) -> StorageConfig {
    StorageConfig::new(id, ring, REPLICATION)
}

fn start(cfg: &StorageConfig) -> (StorageNode, Vec<Output<StorageNode>>) {
    let mut out = Outbox::new();
    let node = StorageNode::init(cfg, &Stored::default(), &mut out);
    (node, out.into_iter().collect())
}

fn sent(outputs: &[Output<StorageNode>]) -> Vec<(NodeId, &KvsMsg)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((*to, msg)),
            _ => None,
        })
        .collect()
}

fn update(ring: &Ring) -> KvsMsg {
    KvsMsg::RingUpdate { incarnation: 1, members: ring.membership().clone() }
}

fn ring_ack(ring: &Ring) -> KvsMsg {
    KvsMsg::RingAck { incarnation: 1, members: ring.membership().clone() }
}

/// The first key `k0`, `k1`, … whose replicas go from `before` to `after` as `want` says.
fn key_where(before: &Ring, after: &Ring, want: impl Fn(&[NodeId], &[NodeId]) -> bool) -> Key {
    (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| want(&before.responsible(k, REPLICATION), &after.responsible(k, REPLICATION)))
        .expect("some key moves as wanted")
}

/// A node holding `key` at `value`, with every other replica acknowledged.
fn holding(cfg: &StorageConfig, key: &str, value: LatticeValue) -> StorageNode {
    let (mut node, _) = start(cfg);
    let put =
        KvsMsg::Put { req: 1, key: key.into(), value: value.clone(), durability: Durability::One };
    deliver(cfg, &mut node, OPERATOR, put);
    for peer in cfg.ring.responsible(key, REPLICATION) {
        if peer != cfg.id {
            let entries = BTreeMap::from([(key.to_owned(), value.clone())]);
            deliver(cfg, &mut node, peer, KvsMsg::GossipAck { incarnation: 1, entries });
        }
    }
    assert!(node.is_idle(), "{node:?}");
    node
}

#[test]
fn a_joiner_adds_itself_and_announces_the_new_view_to_every_member() {
    let mut cfg = cfg(N3, ring());
    cfg.join = true;
    let (node, outputs) = start(&cfg);
    let view = joined(N3);
    assert_eq!(node.ring(), &view);
    assert_eq!(view.epoch(), Epoch(ring().epoch().0 + 1));
    assert_eq!(
        outputs,
        [
            Output::Persist(Stored::incarnation(1)),
            send(N0, update(&view)),
            send(N1, update(&view)),
            send(N2, update(&view)),
            Output::SetTimer { timer: KvsTimer::Ring, after: cfg.ring_period },
        ]
    );
    assert!(!node.is_idle(), "the view is not acknowledged yet");
}

#[test]
fn ring_acks_clear_the_unacknowledged_peers_and_then_the_timer() {
    let mut cfg = cfg(N3, ring());
    cfg.join = true;
    let (mut node, _) = start(&cfg);
    let view = joined(N3);
    assert!(deliver(&cfg, &mut node, N0, ring_ack(&view)).is_empty());
    assert!(deliver(&cfg, &mut node, N1, ring_ack(&view)).is_empty());
    let last = deliver(&cfg, &mut node, N2, ring_ack(&view));
    assert_eq!(last, [Output::CancelTimer(KvsTimer::Ring)]);
    assert!(node.is_idle());
}

#[test]
fn an_ack_of_an_older_view_does_not_count() {
    let mut cfg = cfg(N3, ring());
    cfg.join = true;
    let (mut node, _) = start(&cfg);
    let outputs = deliver(&cfg, &mut node, N0, ring_ack(&ring()));
    assert!(outputs.is_empty(), "{outputs:?}");
    let resent = {
        let mut out = Outbox::new();
        node.handle(&cfg, Input::Timeout(KvsTimer::Ring), &mut out);
        out.into_iter().collect::<Vec<_>>()
    };
    assert!(resent.contains(&send(N0, update(&joined(N3)))), "n0 still gets the view: {resent:?}");
}

#[test]
fn a_member_that_learns_a_join_acknowledges_and_hands_the_joiner_its_keys() {
    let view = joined(N3);
    let key = key_where(&ring(), &view, |before, after| {
        before.contains(&N0) && after.contains(&N0) && after.contains(&N3)
    });
    let cfg = cfg(N0, ring());
    let mut node = holding(&cfg, &key, lww(1));
    let outputs = deliver(&cfg, &mut node, N3, update(&view));
    let entries = BTreeMap::from([(key.clone(), lww(1))]);
    assert_eq!(
        sent(&outputs),
        [(N3, &KvsMsg::Gossip { incarnation: 1, entries }), (N3, &ring_ack(&view))],
        "the joiner's own view is not spread again by its receivers"
    );
    assert_eq!(node.ring(), &view);
    assert_eq!(node.store().get(&key), Some(&lww(1)), "n0 still owns the key");
}

#[test]
fn a_displaced_owner_deletes_a_key_only_after_the_new_owner_acknowledged_it() {
    let view = joined(N3);
    let key = key_where(&ring(), &view, |before, after| {
        before.contains(&N0) && !after.contains(&N0) && after.contains(&N3)
    });
    let cfg = cfg(N0, ring());
    let mut node = holding(&cfg, &key, lww(1));
    let outputs = deliver(&cfg, &mut node, N3, update(&view));
    let entries = BTreeMap::from([(key.clone(), lww(1))]);
    assert!(sent(&outputs).contains(&(N3, &KvsMsg::Gossip { incarnation: 1, entries })));
    assert!(node.store().contains_key(&key), "kept until the new owner has it");
    // An acknowledgement of an older value proves nothing.
    let mut older = BTreeMap::from([(key.clone(), lww(0))]);
    deliver(&cfg, &mut node, N3, KvsMsg::GossipAck { incarnation: 1, entries: older.clone() });
    assert!(node.store().contains_key(&key));
    older.insert(key.clone(), lww(1));
    let before = node.clone();
    deliver(&cfg, &mut node, N3, KvsMsg::GossipAck { incarnation: 1, entries: older });
    assert!(!node.store().contains_key(&key), "handed off");
    // Deleting a key it no longer owns is no step violation; losing one it owns is.
    assert!(StorageNode::check_step(&cfg, &before, &node).is_ok());
    let (lost, _) = start(&cfg);
    assert!(StorageNode::check_step(&cfg, &holding(&cfg, &key, lww(1)), &lost).is_err());
}

#[test]
fn a_view_with_news_for_the_sender_is_spread_to_every_peer() {
    let mine = joined(N3);
    let cfg = cfg(N0, mine.clone());
    let (mut node, _) = start(&cfg);
    let theirs = joined(N4);
    let outputs = deliver(&cfg, &mut node, N4, update(&theirs));
    let mut both = mine.clone();
    both.merge(theirs.membership());
    let targets: Vec<NodeId> = sent(&outputs)
        .into_iter()
        .filter(|(_, msg)| **msg == update(&both))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(targets, [N1, N2, N3, N4], "the merge is new to everyone");
    assert!(outputs.contains(&send(N4, ring_ack(&both))));
    assert_eq!(both.epoch(), Epoch(5), "two concurrent joins: a larger epoch than either");
}

#[test]
fn leave_hands_off_departs_and_answers_once_every_peer_knows() {
    let mut leaving = ring();
    leaving.leave(N1);
    let key = key_where(&ring(), &leaving, |before, _| before.contains(&N1));
    let cfg = cfg(N1, ring());
    let mut node = holding(&cfg, &key, lww(1));
    let outputs = deliver(&cfg, &mut node, OPERATOR, KvsMsg::Leave { req: 7 });
    assert_eq!(node.ring(), &leaving);
    assert!(outputs.contains(&send(N0, update(&leaving))));
    assert!(outputs.contains(&send(N2, update(&leaving))));
    let new_owners = leaving.responsible(&key, REPLICATION);
    // Only replicas that are new for the key are sent it: the others acknowledged it already.
    let old_owners = ring().responsible(&key, REPLICATION);
    let newcomers: Vec<NodeId> =
        new_owners.iter().copied().filter(|n| !old_owners.contains(n)).collect();
    assert!(!newcomers.is_empty());
    let gossiped: Vec<NodeId> = sent(&outputs)
        .into_iter()
        .filter(|(_, msg)| matches!(msg, KvsMsg::Gossip { .. }))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(gossiped, newcomers);
    // A put for the key is now redirected, with the newer epoch.
    let put = KvsMsg::Put { req: 3, key: key.clone(), value: lww(2), durability: Durability::One };
    let redirect = deliver(&cfg, &mut node, OPERATOR, put);
    let expected = KvsMsg::Redirect {
        req: 3,
        key: key.clone(),
        epoch: leaving.epoch(),
        owners: new_owners.clone(),
    };
    assert_eq!(redirect, [send(OPERATOR, expected)]);
    // Once the new owners hold the key, the node is empty and departs.
    let mut departed = leaving.clone();
    departed.depart(N1);
    let mut last = Vec::new();
    for owner in &newcomers {
        assert!(!node.store().is_empty(), "kept until every new owner has it");
        let entries = BTreeMap::from([(key.clone(), lww(1))]);
        last = deliver(&cfg, &mut node, *owner, KvsMsg::GossipAck { incarnation: 1, entries });
    }
    assert!(node.store().is_empty());
    assert!(last.contains(&send(N0, update(&departed))), "{last:?}");
    assert!(!node.has_left(&cfg), "peers do not know yet");
    deliver(&cfg, &mut node, N0, ring_ack(&departed));
    let answered = deliver(&cfg, &mut node, N2, ring_ack(&departed));
    assert!(answered.contains(&send(OPERATOR, KvsMsg::LeaveOk { req: 7 })), "{answered:?}");
    assert!(node.has_left(&cfg));
    assert!(node.is_idle());
    // A repeated request is answered at once.
    let again = deliver(&cfg, &mut node, OPERATOR, KvsMsg::Leave { req: 8 });
    assert_eq!(again, [send(OPERATOR, KvsMsg::LeaveOk { req: 8 })]);
}

#[test]
fn the_last_member_refuses_to_leave() {
    let alone = Ring::with_members(8, [N0]);
    let cfg = StorageConfig::new(N0, alone.clone(), 1);
    let (mut node, _) = start(&cfg);
    let put = KvsMsg::Put { req: 1, key: "k".into(), value: lww(1), durability: Durability::One };
    deliver(&cfg, &mut node, OPERATOR, put);
    let outputs = deliver(&cfg, &mut node, OPERATOR, KvsMsg::Leave { req: 2 });
    assert_eq!(outputs, [send(OPERATOR, KvsMsg::LeaveRefused { req: 2 })]);
    assert_eq!(node.ring(), &alone, "still a member");
    assert_eq!(node.store().get("k"), Some(&lww(1)));
    assert!(node.is_idle());
}

#[test]
fn a_view_from_a_stranger_is_ignored_unless_it_introduces_itself() {
    let cfg = cfg(N0, ring());
    let (mut node, _) = start(&cfg);
    let mut forged = ring();
    forged.join(N4);
    let ignored = deliver(&cfg, &mut node, OPERATOR, update(&forged));
    assert!(matches!(ignored[..], [Output::Ignored { .. }]), "{ignored:?}");
    assert_eq!(node.ring(), &ring());
    let accepted = deliver(&cfg, &mut node, N4, update(&forged));
    assert_eq!(node.ring(), &forged, "a joiner introduces itself");
    assert!(accepted.contains(&send(N4, ring_ack(&forged))));
}

#[test]
fn a_peer_known_only_from_a_view_learns_of_a_restart_from_its_ring_messages() {
    // n3 joined after n0's configuration was written, so n0's `Hello` never reaches it.
    let view = joined(N3);
    let key = key_where(&ring(), &view, |_, after| after.contains(&N0) && after.contains(&N3));
    let cfg3 = cfg(N3, view.clone());
    let mut n3 = holding(&cfg3, &key, lww(1));
    let restarted = KvsMsg::RingUpdate { incarnation: 2, members: view.membership().clone() };
    deliver(&cfg3, &mut n3, N0, restarted);
    let mut out = Outbox::new();
    n3.handle(&cfg3, Input::Timeout(KvsTimer::Gossip), &mut out);
    let outputs: Vec<_> = out.into_iter().collect();
    let entries = BTreeMap::from([(key.clone(), lww(1))]);
    assert!(
        outputs.contains(&send(N0, KvsMsg::Gossip { incarnation: 1, entries })),
        "n0 restarted empty: n3 must send it the key again: {outputs:?}"
    );
}

#[test]
fn a_pending_put_is_judged_by_the_current_replica_count() {
    // An `All` put at n0 on a ring of three at replication 3 needs three holders; once n2
    // leaves, the key has two replicas, and two holders are enough.
    let cfg = StorageConfig::new(N0, ring(), 3);
    let (mut node, _) = start(&cfg);
    let put = KvsMsg::Put { req: 1, key: "k".into(), value: lww(1), durability: Durability::All };
    deliver(&cfg, &mut node, OPERATOR, put);
    let entries = BTreeMap::from([("k".to_owned(), lww(1))]);
    deliver(&cfg, &mut node, N1, KvsMsg::GossipAck { incarnation: 1, entries });
    let mut leaving = ring();
    leaving.leave(N2);
    let outputs = deliver(&cfg, &mut node, N2, update(&leaving));
    assert!(outputs.contains(&send(OPERATOR, KvsMsg::PutOk { req: 1 })), "{outputs:?}");
}

#[test]
fn a_restarted_node_adopts_and_spreads_the_view_in_a_hello_ack() {
    let cfg = cfg(N0, ring());
    let mut out = Outbox::new();
    let mut node = StorageNode::init(&cfg, &Stored::incarnation(1), &mut out);
    let mut leaving = ring();
    leaving.leave(N1);
    let ack = KvsMsg::HelloAck { incarnation: 2, members: leaving.membership().clone() };
    let outputs = deliver(&cfg, &mut node, N1, ack);
    assert_eq!(node.ring(), &leaving);
    let spread = KvsMsg::RingUpdate { incarnation: 2, members: leaving.membership().clone() };
    assert!(outputs.contains(&send(N2, spread)), "{outputs:?}");
}

#[test]
fn a_client_asks_the_node_itself_to_leave_and_records_it() {
    let cfg = ClientConfig::new(OPERATOR, ring(), REPLICATION);
    let mut client = KvsClient::init(&cfg, &(), &mut Outbox::new());
    let mut out = Outbox::new();
    let call = KvsMsg::Call { req: 7, op: Op::Leave { node: N2 } };
    client.handle(&cfg, Input::Receive { from: OPERATOR, msg: call }, &mut out);
    let sent: Vec<_> = out.into_iter().collect();
    assert_eq!(
        sent,
        [
            Output::Send { to: N2, msg: KvsMsg::Leave { req: 0 } },
            Output::SetTimer { timer: KvsTimer::Attempt(0), after: cfg.leave_after },
        ]
    );
    let mut out = Outbox::new();
    client.handle(&cfg, Input::Receive { from: N2, msg: KvsMsg::LeaveOk { req: 0 } }, &mut out);
    let done = KvsMsg::Done { req: 7, outcome: Outcome::Left };
    assert!(out.contains(&Output::Send { to: OPERATOR, msg: done }), "{out:?}");
}
