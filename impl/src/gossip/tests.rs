//! Per-handler tests: each feeds one input to a replica or client and asserts the exact
//! outputs it emits.

use std::time::Duration;

use super::*;
use crate::lattice::{Stamp, WriterId};
use crate::node::{NodeId, Output};

type N = GossipNode<u8>;

const PERIOD: Duration = Duration::from_millis(10);
const ME: NodeId = NodeId(0);
const PEER_A: NodeId = NodeId(1);
const PEER_B: NodeId = NodeId(2);
const CLIENT: NodeId = NodeId(9);

fn write(time: u64, writer: u64, value: u8) -> Lww<u8> {
    Lww::new(Stamp::new(time, WriterId(writer)), value)
}

fn replica() -> (ReplicaConfig, Replica<u8>) {
    let cfg = ReplicaConfig::new(ME, [ME, PEER_A, PEER_B], PERIOD);
    let mut out = Outbox::new();
    let replica = Replica::init(&cfg, &mut out);
    assert!(out.is_empty(), "a fresh replica has nothing to say");
    (cfg, replica)
}

fn step(cfg: &ReplicaConfig, replica: &mut Replica<u8>, input: Input<N>) -> Vec<Output<N>> {
    let mut out = Outbox::new();
    replica.handle(cfg, input, &mut out);
    out.into_iter().collect()
}

fn receive(from: NodeId, msg: GossipMsg<u8>) -> Input<N> {
    Input::Receive { from, msg }
}

fn send(to: NodeId, msg: GossipMsg<u8>) -> Output<N> {
    Output::Send { to, msg }
}

fn arm_gossip() -> Output<N> {
    Output::SetTimer { timer: GossipTimer::Gossip, after: PERIOD }
}

fn put(seq: u32, value: Lww<u8>) -> GossipMsg<u8> {
    GossipMsg::Put { seq, value }
}

fn gossip(value: Lww<u8>) -> GossipMsg<u8> {
    GossipMsg::Gossip { value }
}

fn ack(value: Lww<u8>) -> GossipMsg<u8> {
    GossipMsg::GossipAck { value }
}

/// Delivers `msg` from `from` to the replica and returns what it emitted.
fn deliver(
    cfg: &ReplicaConfig,
    r: &mut Replica<u8>,
    from: NodeId,
    msg: GossipMsg<u8>,
) -> Vec<Output<N>> {
    step(cfg, r, receive(from, msg))
}

#[test]
fn config_drops_self_from_peers() {
    let (cfg, _) = replica();
    assert_eq!(cfg.peers, [PEER_A, PEER_B]);
}

#[test]
fn put_that_grows_the_value_is_acknowledged_and_schedules_gossip() {
    let (cfg, mut r) = replica();
    let outputs = deliver(&cfg, &mut r, CLIENT, put(3, write(1, 1, 5)));
    assert_eq!(outputs, [send(CLIENT, GossipMsg::PutOk { seq: 3 }), arm_gossip()]);
    assert_eq!(r.value(), &write(1, 1, 5));
    assert_eq!(r.behind_peers().collect::<Vec<_>>(), [PEER_A, PEER_B]);
}

#[test]
fn put_of_an_older_write_is_acknowledged_without_gossip() {
    let (cfg, mut r) = replica();
    deliver(&cfg, &mut r, CLIENT, put(0, write(2, 1, 5)));
    let outputs = deliver(&cfg, &mut r, CLIENT, put(1, write(1, 1, 6)));
    assert_eq!(outputs, [send(CLIENT, GossipMsg::PutOk { seq: 1 })]);
    assert_eq!(r.value(), &write(2, 1, 5));
}

#[test]
fn gossip_from_a_peer_is_merged_acknowledged_with_the_merged_value_and_noted() {
    let (cfg, mut r) = replica();
    deliver(&cfg, &mut r, CLIENT, put(0, write(1, 1, 5)));
    let outputs = deliver(&cfg, &mut r, PEER_A, gossip(write(1, 2, 7)));
    assert_eq!(outputs, [send(PEER_A, ack(write(1, 2, 7))), arm_gossip()]);
    assert_eq!(r.value(), &write(1, 2, 7));
    // Peer A sent this very value, so only B is behind.
    assert_eq!(r.behind_peers().collect::<Vec<_>>(), [PEER_B]);
}

#[test]
fn gossip_older_than_the_value_is_acknowledged_with_the_newer_value() {
    let (cfg, mut r) = replica();
    deliver(&cfg, &mut r, CLIENT, put(0, write(3, 1, 5)));
    let outputs = deliver(&cfg, &mut r, PEER_A, gossip(write(1, 2, 7)));
    assert_eq!(outputs, [send(PEER_A, ack(write(3, 1, 5)))]);
}

#[test]
fn gossip_from_a_stranger_is_ignored() {
    let (cfg, mut r) = replica();
    let outputs = deliver(&cfg, &mut r, NodeId(42), gossip(write(1, 2, 7)));
    assert!(matches!(outputs[..], [Output::Ignored { .. }]));
    assert_eq!(r.value(), &Lww::default());
}

#[test]
fn acknowledgements_cancel_the_timer_once_no_peer_is_behind() {
    let (cfg, mut r) = replica();
    deliver(&cfg, &mut r, CLIENT, put(0, write(1, 1, 5)));
    let first = deliver(&cfg, &mut r, PEER_A, ack(write(1, 1, 5)));
    assert!(first.is_empty(), "peer B is still behind: {first:?}");
    let second = deliver(&cfg, &mut r, PEER_B, ack(write(1, 1, 5)));
    assert_eq!(second, [Output::CancelTimer(GossipTimer::Gossip)]);
    assert!(!r.has_pending_gossip());
}

#[test]
fn stale_acknowledgement_does_not_mark_a_peer_up_to_date() {
    let (cfg, mut r) = replica();
    deliver(&cfg, &mut r, CLIENT, put(0, write(2, 1, 5)));
    deliver(&cfg, &mut r, PEER_A, ack(write(1, 1, 4)));
    assert_eq!(r.behind_peers().collect::<Vec<_>>(), [PEER_A, PEER_B]);
}

#[test]
fn gossip_timer_sends_to_behind_peers_only_and_rearms() {
    let (cfg, mut r) = replica();
    deliver(&cfg, &mut r, CLIENT, put(0, write(1, 1, 5)));
    deliver(&cfg, &mut r, PEER_A, ack(write(1, 1, 5)));
    let outputs = step(&cfg, &mut r, Input::Timeout(GossipTimer::Gossip));
    assert_eq!(outputs, [send(PEER_B, gossip(write(1, 1, 5))), arm_gossip()]);
}

#[test]
fn gossip_timer_with_every_peer_up_to_date_does_nothing_and_stops() {
    let (cfg, mut r) = replica();
    let outputs = step(&cfg, &mut r, Input::Timeout(GossipTimer::Gossip));
    assert!(matches!(outputs[..], [Output::Ignored { .. }]), "{outputs:?}");
}

#[test]
fn step_check_rejects_a_shrinking_value() {
    let (cfg, mut before) = replica();
    deliver(&cfg, &mut before, CLIENT, put(0, write(2, 1, 5)));
    let (_, after) = replica();
    let violation = Replica::check_step(&before, &after).unwrap_err();
    assert_eq!(violation.id, invariants::MONOTONE);
    assert!(Replica::check_step(&after, &before).is_ok());
}

fn client(writes: Vec<Lww<u8>>) -> (ClientConfig<u8>, Client, Vec<Output<N>>) {
    let cfg = ClientConfig::new(CLIENT, ME, writes, PERIOD);
    let mut out = Outbox::new();
    let client = Client::init(&cfg, &mut out);
    (cfg, client, out.into_iter().collect())
}

fn client_step(cfg: &ClientConfig<u8>, c: &mut Client, input: Input<N>) -> Vec<Output<N>> {
    let mut out = Outbox::new();
    c.handle(cfg, input, &mut out);
    out.into_iter().collect()
}

fn arm_retry() -> Output<N> {
    Output::SetTimer { timer: GossipTimer::Retry, after: PERIOD }
}

#[test]
fn client_sends_its_first_write_at_start() {
    let (_, _, outputs) = client(vec![write(1, 9, 1), write(2, 9, 2)]);
    assert_eq!(outputs, [send(ME, put(0, write(1, 9, 1))), arm_retry()]);
}

#[test]
fn client_advances_on_acknowledgement_and_stops_after_the_last() {
    let (cfg, mut c, _) = client(vec![write(1, 9, 1), write(2, 9, 2)]);
    let next = client_step(&cfg, &mut c, receive(ME, GossipMsg::PutOk { seq: 0 }));
    assert_eq!(next, [send(ME, put(1, write(2, 9, 2))), arm_retry()]);
    let done = client_step(&cfg, &mut c, receive(ME, GossipMsg::PutOk { seq: 1 }));
    assert_eq!(done, [Output::CancelTimer(GossipTimer::Retry)]);
    assert!(c.is_done(&cfg));
}

#[test]
fn client_ignores_duplicate_acknowledgements() {
    let (cfg, mut c, _) = client(vec![write(1, 9, 1), write(2, 9, 2)]);
    client_step(&cfg, &mut c, receive(ME, GossipMsg::PutOk { seq: 0 }));
    let duplicate = client_step(&cfg, &mut c, receive(ME, GossipMsg::PutOk { seq: 0 }));
    assert!(matches!(duplicate[..], [Output::Ignored { .. }]));
    assert_eq!(c.acknowledged(), 1);
}

#[test]
fn client_resends_on_retry() {
    let (cfg, mut c, first) = client(vec![write(1, 9, 1)]);
    let again = client_step(&cfg, &mut c, Input::Timeout(GossipTimer::Retry));
    assert_eq!(again, first);
}
