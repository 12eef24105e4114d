//! Per-handler tests of the client: an application's call in, the exact requests and answers
//! out — routing, retries, redirects, and whether a failure is definite.

use bytes::Bytes;

use super::*;
use crate::lattice::{LatticeValue, Lww, Stamp, WriterId};
use crate::node::{Input, Node, NodeId, Outbox, Output, Refusal};

const N0: NodeId = NodeId(0);
const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const APP: NodeId = NodeId(8);
const CLIENT: NodeId = NodeId(9);

fn ring() -> Ring {
    Ring::with_members(8, [N0, N1, N2])
}

fn cfg() -> ClientConfig {
    ClientConfig::new(CLIENT, ring(), 3)
}

fn lww(time: u64) -> LatticeValue {
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(1)), Bytes::from_static(b"v")))
}

fn get(key: &str) -> Op {
    Op::Get { key: key.into() }
}

fn put(key: &str) -> Op {
    Op::Put { key: key.into(), value: lww(1), durability: Durability::Majority }
}

fn step(
    cfg: &ClientConfig,
    client: &mut KvsClient,
    input: Input<KvsClient>,
) -> Vec<Output<KvsClient>> {
    let mut out = Outbox::new();
    client.handle(cfg, input, &mut out);
    out.into_iter().collect()
}

/// A client that took the application's call `req` of `op`; the outputs of the call.
fn calling(cfg: &ClientConfig, req: ReqId, op: Op) -> (KvsClient, Vec<Output<KvsClient>>) {
    let mut client = KvsClient::init(cfg, &(), &mut Outbox::new());
    let outputs =
        step(cfg, &mut client, Input::Receive { from: APP, msg: KvsMsg::Call { req, op } });
    (client, outputs)
}

fn from<N: Node<Msg = KvsMsg>>(node: NodeId, msg: KvsMsg) -> Input<N> {
    Input::Receive { from: node, msg }
}

fn done(req: ReqId, outcome: Outcome) -> Output<KvsClient> {
    Output::Send { to: APP, msg: KvsMsg::Done { req, outcome } }
}

/// The request a list of outputs sends, and where.
fn sent<N: Node<Msg = KvsMsg>>(outputs: &[Output<N>]) -> Vec<(NodeId, KvsMsg)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_goes_to_the_keys_primary_with_a_deadline() {
    let cfg = cfg();
    let (_, outputs) = calling(&cfg, 7, get("k"));
    let primary = ring().responsible("k", 3)[0];
    assert_eq!(
        outputs,
        [
            Output::Send { to: primary, msg: KvsMsg::Get { req: 0, key: "k".into() } },
            Output::SetTimer { timer: KvsTimer::Attempt(0), after: cfg.retry_after },
        ]
    );
}

#[test]
fn the_answer_ends_the_call_under_the_applications_number() {
    let cfg = cfg();
    let (mut client, _) = calling(&cfg, 7, get("k"));
    let outputs = step(&cfg, &mut client, from(N0, KvsMsg::GetOk { req: 0, value: None }));
    assert_eq!(outputs, [Output::CancelTimer(KvsTimer::Attempt(0)), done(7, Outcome::Read(None))]);
    assert!(client.is_idle(&cfg));
    // A late duplicate of the answer finds no call.
    let late = step(&cfg, &mut client, from(N0, KvsMsg::GetOk { req: 0, value: None }));
    assert!(matches!(late[..], [Output::Ignored { .. }]), "{late:?}");
}

#[test]
fn calls_run_concurrently_each_with_its_own_request_number() {
    let cfg = cfg();
    let (mut client, _) = calling(&cfg, 1, get("a"));
    let second = step(&cfg, &mut client, from(APP, KvsMsg::Call { req: 2, op: put("b") }));
    assert!(matches!(sent(&second)[..], [(_, KvsMsg::Put { req: 1, .. })]), "{second:?}");
    let answered = step(&cfg, &mut client, from(N1, KvsMsg::PutOk { req: 1 }));
    assert!(answered.contains(&done(2, Outcome::Written)));
    assert_eq!(client.calls(), 1, "the first call still waits");
}

#[test]
fn a_timed_out_put_retries_the_next_replica_then_fails_indefinitely() {
    let cfg = cfg();
    let owners = ring().responsible("k", 3);
    let (mut client, _) = calling(&cfg, 7, put("k"));
    let retry = step(&cfg, &mut client, Input::Timeout(KvsTimer::Attempt(0)));
    assert_eq!(sent(&retry)[0].0, owners[1]);
    step(&cfg, &mut client, Input::Timeout(KvsTimer::Attempt(1)));
    let last = step(&cfg, &mut client, Input::Timeout(KvsTimer::Attempt(2)));
    let outcome = Outcome::Failed(Failure::Indefinite { attempts: 3 });
    assert_eq!(last, [done(7, outcome.clone())]);
    assert!(!outcome.is_definite());
}

#[test]
fn a_read_that_got_no_answer_did_not_happen() {
    let cfg = cfg();
    let (mut client, _) = calling(&cfg, 7, get("k"));
    step(&cfg, &mut client, Input::Timeout(KvsTimer::Attempt(0)));
    step(&cfg, &mut client, Input::Timeout(KvsTimer::Attempt(1)));
    let last = step(&cfg, &mut client, Input::Timeout(KvsTimer::Attempt(2)));
    let failure = Failure::Unavailable { attempts: 3, last: None };
    assert_eq!(last, [done(7, Outcome::Failed(failure))]);
    assert!(client.is_idle(&cfg));
}

#[test]
fn refusals_move_on_and_end_definite_when_nothing_may_have_happened() {
    let cfg = cfg();
    let owners = ring().responsible("k", 3);
    let (mut client, _) = calling(&cfg, 7, put("k"));
    let unreachable = KvsMsg::Refused { req: 0, refusal: Refusal::Unreachable };
    let next = step(&cfg, &mut client, from(owners[0], unreachable));
    assert_eq!(sent(&next)[0].0, owners[1], "tried at once elsewhere: {next:?}");
    let overloaded = KvsMsg::Refused { req: 1, refusal: Refusal::Overloaded };
    step(&cfg, &mut client, from(owners[1], overloaded));
    let refused = KvsMsg::Refused { req: 2, refusal: Refusal::Overloaded };
    let last = step(&cfg, &mut client, from(owners[2], refused));
    let failure = Failure::Unavailable { attempts: 3, last: Some(Refusal::Overloaded) };
    assert!(last.contains(&done(7, Outcome::Failed(failure))), "{last:?}");
}

#[test]
fn a_node_shutting_down_is_not_asked_again_by_the_call() {
    let mut cfg = cfg();
    cfg.max_attempts = 5;
    let owners = ring().responsible("k", 3);
    let (mut client, _) = calling(&cfg, 7, get("k"));
    let stopping = KvsMsg::Refused { req: 0, refusal: Refusal::ShuttingDown };
    step(&cfg, &mut client, from(owners[0], stopping));
    let mut asked = Vec::new();
    for req in 1..5 {
        let outputs = step(&cfg, &mut client, Input::Timeout(KvsTimer::Attempt(req)));
        asked.extend(sent(&outputs).into_iter().map(|(to, _)| to).filter(|to| *to != APP));
    }
    assert!(!asked.contains(&owners[0]), "{asked:?}");
}

#[test]
fn an_invalid_request_fails_definitely_unless_an_earlier_attempt_may_have_landed() {
    let cfg = cfg();
    let (mut client, _) = calling(&cfg, 7, put("k"));
    let malformed = KvsMsg::Refused { req: 0, refusal: Refusal::TooLarge };
    let outputs = step(&cfg, &mut client, from(N0, malformed));
    assert!(outputs.contains(&done(7, Outcome::Failed(Failure::Invalid(Refusal::TooLarge)))));
    let (mut client, _) = calling(&cfg, 7, put("k"));
    step(&cfg, &mut client, Input::Timeout(KvsTimer::Attempt(0)));
    let malformed = KvsMsg::Refused { req: 1, refusal: Refusal::TooLarge };
    let outputs = step(&cfg, &mut client, from(N1, malformed));
    assert!(outputs.contains(&done(7, Outcome::Failed(Failure::Indefinite { attempts: 2 }))));
}

#[test]
fn a_rejected_first_attempt_is_definite_and_a_rejected_retry_is_not() {
    let cfg = cfg();
    let (mut client, _) = calling(&cfg, 7, put("k"));
    let rejected = KvsMsg::PutRejected { req: 0, error: PutError::Overloaded };
    let outputs = step(&cfg, &mut client, from(N0, rejected));
    assert!(outputs.contains(&done(7, Outcome::Rejected(PutError::Overloaded))));
    let (mut client, _) = calling(&cfg, 7, put("k"));
    step(&cfg, &mut client, Input::Timeout(KvsTimer::Attempt(0)));
    let rejected = KvsMsg::PutRejected { req: 1, error: PutError::Overloaded };
    let outputs = step(&cfg, &mut client, from(N1, rejected));
    let failed = Outcome::Failed(Failure::Indefinite { attempts: 2 });
    assert!(outputs.contains(&done(7, failed)), "the first attempt may have landed");
}

#[test]
fn only_redirects_from_newer_epochs_change_the_route() {
    let cfg = cfg();
    let owners = ring().responsible("k", 3);
    let (mut client, _) = calling(&cfg, 7, get("k"));
    let stale =
        KvsMsg::Redirect { req: 0, key: "k".into(), epoch: ring().epoch(), owners: vec![N2] };
    let retried = step(&cfg, &mut client, from(owners[0], stale));
    assert_eq!(client.route("k"), None, "a stale redirect changes no route");
    assert_eq!(sent(&retried)[0].0, owners[1], "but the node did not take it: next replica");
    let newer = Epoch(ring().epoch().0 + 1);
    let fresh = KvsMsg::Redirect { req: 1, key: "k".into(), epoch: newer, owners: vec![N2] };
    let followed = step(&cfg, &mut client, from(owners[1], fresh));
    assert_eq!(client.route("k"), Some(&(newer, vec![N2])));
    assert_eq!(sent(&followed), [(N2, KvsMsg::Get { req: 2, key: "k".into() })]);
}

#[test]
fn routing_prefers_the_local_node_and_honours_targets_and_a_cache() {
    let owners = ring().responsible("k", 3);
    let mut preferring = cfg();
    preferring.prefer = Some(owners[2]);
    assert_eq!(sent(&calling(&preferring, 1, get("k")).1)[0].0, owners[2]);
    let mut targeted = cfg();
    targeted.targets = vec![NodeId(5)];
    assert_eq!(sent(&calling(&targeted, 1, get("k")).1)[0].0, NodeId(5));
    let mut executor = cfg();
    executor.via = Some(NodeId(6));
    assert_eq!(sent(&calling(&executor, 1, put("k")).1)[0].0, NodeId(6));
}

#[test]
fn a_duplicate_call_is_ignored_and_calls_beyond_the_bound_are_refused() {
    let mut cfg = cfg();
    cfg.max_calls = 1;
    let (mut client, _) = calling(&cfg, 7, get("k"));
    let duplicate = step(&cfg, &mut client, from(APP, KvsMsg::Call { req: 7, op: get("k") }));
    assert!(matches!(duplicate[..], [Output::Ignored { .. }]), "{duplicate:?}");
    let over = step(&cfg, &mut client, from(APP, KvsMsg::Call { req: 8, op: get("j") }));
    let failure = Failure::Unavailable { attempts: 0, last: Some(Refusal::Overloaded) };
    assert_eq!(over, [done(8, Outcome::Failed(failure))]);
}

#[test]
fn kvs_i9_rejects_a_route_replaced_from_an_older_epoch() {
    let cfg = cfg();
    let (mut before, _) = calling(&cfg, 7, get("k"));
    let newer = Epoch(ring().epoch().0 + 2);
    let redirect = KvsMsg::Redirect { req: 0, key: "k".into(), epoch: newer, owners: vec![N2] };
    step(&cfg, &mut before, from(N0, redirect));
    let after = before.clone().with_route("k", Epoch(newer.0 - 1), vec![N1]);
    assert!(KvsClient::check_step(&cfg, &before, &after).is_err());
    assert!(KvsClient::check_step(&cfg, &after, &before).is_ok());
}

#[cfg(feature = "mutants")]
#[test]
fn the_stale_redirect_mutant_follows_a_redirect_from_its_own_epoch() {
    let mut cfg = cfg();
    cfg.mutant = Some(Mutant::FollowStaleRedirect);
    let (mut client, _) = calling(&cfg, 7, get("k"));
    let stale =
        KvsMsg::Redirect { req: 0, key: "k".into(), epoch: ring().epoch(), owners: vec![N2] };
    let followed = step(&cfg, &mut client, from(N0, stale));
    assert_eq!(sent(&followed), [(N2, KvsMsg::Get { req: 1, key: "k".into() })]);
}

#[test]
fn a_script_makes_its_calls_in_order_and_records_every_outcome() {
    let script = ScriptConfig::new(cfg(), vec![get("k"), put("k")]);
    let mut out = Outbox::new();
    let mut node = ScriptedClient::init(&script, &(), &mut out);
    assert!(matches!(sent(&out.into_iter().collect::<Vec<_>>())[..], [(_, KvsMsg::Get { .. })]));
    let mut out = Outbox::new();
    node.handle(&script, from(N0, KvsMsg::GetOk { req: 0, value: None }), &mut out);
    assert_eq!(node.outcomes(), [Outcome::Read(None)]);
    let outputs: Vec<_> = out.into_iter().collect();
    assert!(matches!(sent(&outputs)[..], [(_, KvsMsg::Put { req: 1, .. })]), "{outputs:?}");
    let mut out = Outbox::new();
    node.handle(&script, from(N0, KvsMsg::PutOk { req: 1 }), &mut out);
    assert_eq!(node.outcomes(), [Outcome::Read(None), Outcome::Written]);
    assert!(node.is_idle(&script));
}

#[test]
fn a_node_that_timed_out_is_asked_last_until_a_probe_or_an_answer() {
    let mut cfg = cfg();
    cfg.suspect_calls = 2;
    let owners = ring().responsible("k", 3);
    let (mut client, outputs) = calling(&cfg, 1, get("k"));
    assert_eq!(sent(&outputs)[0].0, owners[0]);
    let outputs = step(&cfg, &mut client, Input::Timeout(KvsTimer::Attempt(0)));
    assert_eq!(sent(&outputs)[0].0, owners[1], "the retry goes on to the next replica");
    let first_of = |client: &mut KvsClient, req: ReqId| {
        let call = Input::Receive { from: APP, msg: KvsMsg::Call { req, op: get("k") } };
        sent(&step(&cfg, client, call))[0].0
    };
    assert_eq!(first_of(&mut client, 2), owners[1], "suspected: asked last");
    assert_eq!(first_of(&mut client, 3), owners[1], "for two calls");
    let probe = first_of(&mut client, 4);
    assert_eq!(probe, owners[0], "then asked first again, as a probe");
    // The probe (request 4) times out too: the window doubles to four calls.
    step(&cfg, &mut client, Input::Timeout(KvsTimer::Attempt(4)));
    for req in 10..14 {
        assert_eq!(first_of(&mut client, req), owners[1], "call {req} within the longer window");
    }
    // Any answer from it ends the suspicion at once.
    step(&cfg, &mut client, from(owners[0], KvsMsg::GetOk { req: 0, value: None }));
    assert_eq!(first_of(&mut client, 20), owners[0]);

    let off = self::cfg();
    let (mut client, _) = calling(&off, 1, get("k"));
    step(&off, &mut client, Input::Timeout(KvsTimer::Attempt(0)));
    let call = Input::Receive { from: APP, msg: KvsMsg::Call { req: 2, op: get("k") } };
    assert_eq!(sent(&step(&off, &mut client, call))[0].0, owners[0], "0: no suspicion");
}
