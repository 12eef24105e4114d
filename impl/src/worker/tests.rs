//! Whole sessions over a storage node and two workers' real caches, on a hand-driven network:
//! messages are delivered in order, and a test drops, holds back or injects exactly the ones
//! it names, so each scenario is one precise interleaving (the models and the simulator cover
//! the others).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::cache::CacheConfig;
use crate::kvs::{Durability, Ring, StorageConfig};
use crate::lattice::{Dependencies, Lww, MultiKeyCausal, Stamp, VectorClock, WriterId};
use crate::node::DurableState;
use crate::node::handle_checked;
use crate::session::invariants::{distributed_causal, multi_key, repeatable_read, single_key};
use crate::session::{
    Dag, FnId, Function, Level, Meta, Outcome, Pinned, Read, SchedulerConfig, SessionId,
    SessionInfo,
};

const SCHEDULER: NodeId = NodeId(0);
const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const STORAGE: NodeId = NodeId(3);
const CLIENT: NodeId = NodeId(60);
const PUTTER: NodeId = NodeId(70);
const EXECUTOR: NodeId = NodeId(100);

fn lww(time: u64) -> LatticeValue {
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(7)), Bytes::from(format!("v{time}"))))
}

fn vc(entries: &[(u64, u64)]) -> VectorClock {
    VectorClock::new(entries.iter().map(|&(w, n)| (WriterId(w), n)))
}

fn causal(clock: &[(u64, u64)], deps: &[(&str, &[(u64, u64)])]) -> LatticeValue {
    let deps = Dependencies::new(deps.iter().map(|(k, c)| ((*k).to_owned(), vc(c))));
    LatticeValue::MultiKeyCausal(MultiKeyCausal::new(vc(clock), deps, Bytes::from_static(b"v")))
}

type Envelope = (NodeId, NodeId, SystemMsg);

fn session_msg(msg: &SystemMsg) -> Option<&SessionMsg> {
    match msg {
        SystemMsg::Session(msg) => Some(msg),
        _ => None,
    }
}

/// Whether `envelope` is a session message matching `f`.
fn is(envelope: &Envelope, f: impl Fn(&SessionMsg) -> bool) -> bool {
    session_msg(&envelope.2).is_some_and(f)
}

/// A storage node, a scheduler and workers A and B (one executor each), on a network the
/// test drives by hand.
struct Net {
    cfgs: BTreeMap<NodeId, SystemConfig>,
    nodes: BTreeMap<NodeId, SystemNode>,
    durable: BTreeMap<NodeId, crate::kvs::Stored>,
    queue: VecDeque<Envelope>,
    /// Every message sent, in order.
    sent: Vec<Envelope>,
    next_put: u64,
}

impl Net {
    /// The system holding `initial`, with functions scripted by `bodies`.
    fn new(
        initial: &[(&str, LatticeValue)],
        lease: Option<Duration>,
        bodies: BTreeMap<String, Vec<Step>>,
    ) -> Self {
        let ring = Ring::with_members(8, [STORAGE]);
        let mut scheduler = SchedulerConfig::new(SCHEDULER, vec![A, B]);
        scheduler.max_attempts = 3;
        let worker = |id| {
            let mut worker =
                WorkerConfig::new(CacheConfig::new(id, ring.clone(), 1), SCHEDULER, vec![EXECUTOR]);
            worker.session.pin_lease = lease;
            SystemConfig::Worker(ScriptedWorkerConfig { worker, bodies: bodies.clone() })
        };
        let cfgs = BTreeMap::from([
            (SCHEDULER, SystemConfig::Scheduler(scheduler)),
            (A, worker(A)),
            (B, worker(B)),
            (STORAGE, SystemConfig::Storage(StorageConfig::new(STORAGE, ring.clone(), 1))),
        ]);
        let mut net = Self {
            cfgs,
            nodes: BTreeMap::new(),
            durable: BTreeMap::new(),
            queue: VecDeque::new(),
            sent: Vec::new(),
            next_put: 0,
        };
        for id in [SCHEDULER, A, B, STORAGE] {
            net.start(id);
        }
        for (key, value) in initial {
            net.put(key, value.clone(), &[]);
        }
        net
    }

    fn start(&mut self, id: NodeId) {
        let mut out = Outbox::new();
        let durable = self.durable.get(&id).cloned().unwrap_or_default();
        let node = SystemNode::init(&self.cfgs[&id], &durable, &mut out);
        self.nodes.insert(id, node);
        self.execute(id, out);
    }

    fn execute(&mut self, from: NodeId, out: Outbox<SystemNode>) {
        for output in out {
            match output {
                Output::Send { to, msg } => {
                    self.sent.push((from, to, msg.clone()));
                    self.queue.push_back((from, to, msg));
                }
                Output::Persist(delta) => self.durable.entry(from).or_default().merge_delta(delta),
                _ => {}
            }
        }
    }

    fn input(&mut self, to: NodeId, input: Input<SystemNode>) {
        let Some(node) = self.nodes.get_mut(&to) else { return };
        let mut out = Outbox::new();
        handle_checked(node, &self.cfgs[&to], input, &mut out).expect("step invariant");
        self.execute(to, out);
    }

    fn inject(&mut self, from: NodeId, to: NodeId, msg: SystemMsg) {
        self.input(to, Input::Receive { from, msg });
    }

    fn fire(&mut self, id: NodeId, timer: SystemTimer) {
        self.input(id, Input::Timeout(timer));
    }

    /// Delivers in order until nothing is queued, dropping what `drop` names.
    fn run_dropping(&mut self, drop: impl Fn(&Envelope) -> bool) {
        for _ in 0..100_000 {
            let Some(envelope) = self.queue.pop_front() else { return };
            if !drop(&envelope) {
                let (from, to, msg) = envelope;
                self.input(to, Input::Receive { from, msg });
            }
        }
        panic!("the network never went quiet");
    }

    fn run(&mut self) {
        self.run_dropping(|_| false);
    }

    /// Delivers in order until the next message to deliver satisfies `stop` (left queued).
    fn run_until(&mut self, stop: impl Fn(&Envelope) -> bool) {
        while let Some(envelope) = self.queue.front() {
            if stop(envelope) {
                return;
            }
            let (from, to, msg) = self.queue.pop_front().expect("peeked");
            self.input(to, Input::Receive { from, msg });
        }
        panic!("no message matched");
    }

    /// Delivers in order until a worker's `Abort` is next (left queued); returns its reason.
    fn run_until_abort(&mut self) -> String {
        self.run_until(|e| e.1 == SCHEDULER && is(e, |m| matches!(m, SessionMsg::Abort { .. })));
        match self.queue.front().and_then(|e| session_msg(&e.2)) {
            Some(SessionMsg::Abort { reason, .. }) => reason.clone(),
            _ => unreachable!("run_until stopped at an abort"),
        }
    }

    fn call(&mut self, req: ReqId, level: Level, dag: &Dag) {
        let call = SessionMsg::Call { req, level, dag: dag.clone(), args: Vec::new() };
        self.inject(CLIENT, SCHEDULER, SystemMsg::Session(call));
    }

    /// Puts `value` at the storage node, which pushes it to subscribed caches: only those in
    /// `to` get the push.
    fn put(&mut self, key: &str, value: LatticeValue, to: &[NodeId]) {
        self.next_put += 1;
        let put = KvsMsg::Put {
            req: self.next_put,
            key: key.to_owned(),
            value,
            durability: Durability::One,
        };
        self.inject(PUTTER, STORAGE, SystemMsg::Kvs(put));
        self.fire(STORAGE, SystemTimer::Kvs(KvsTimer::Push));
        self.run_dropping(|(_, dst, msg)| {
            matches!(msg, SystemMsg::Kvs(KvsMsg::Push { .. })) && !to.contains(dst)
        });
    }

    /// The storage node pushes its value of `key` to `worker` (a late push).
    fn push(&mut self, worker: NodeId, key: &str, value: LatticeValue) {
        let incarnation = self.worker(worker).cache().incarnation();
        let entries = BTreeMap::from([(key.to_owned(), Some(value))]);
        let push = KvsMsg::Push { incarnation, entries, epochs: BTreeMap::new() };
        self.inject(STORAGE, worker, SystemMsg::Kvs(push));
    }

    fn scheduler(&self) -> &Scheduler {
        match &self.nodes[&SCHEDULER] {
            SystemNode::Scheduler(s) => s,
            _ => unreachable!(),
        }
    }

    fn worker(&self, id: NodeId) -> &Worker {
        match &self.nodes[&id] {
            SystemNode::Worker(w) => w.worker(),
            _ => unreachable!(),
        }
    }

    fn storage(&self) -> &StorageNode {
        match &self.nodes[&STORAGE] {
            SystemNode::Storage(s) => s,
            _ => unreachable!(),
        }
    }

    fn outcome(&self, req: ReqId) -> Option<&Outcome> {
        self.scheduler().requests()[&(CLIENT, req)].outcome.as_ref()
    }

    fn completed(&self, req: ReqId) -> bool {
        matches!(self.outcome(req), Some(Outcome::Completed { .. }))
    }

    fn attempts(&self, req: ReqId) -> u32 {
        self.scheduler().requests()[&(CLIENT, req)].attempts
    }

    fn recorded(&self, req: ReqId) -> &crate::session::Recorded {
        let recorded: Vec<_> =
            self.scheduler().recorded().iter().filter(|r| r.req == req).collect();
        assert_eq!(recorded.len(), 1, "request {req} has one result");
        recorded[0]
    }

    fn log(&self, req: ReqId) -> &[Read] {
        &self.recorded(req).log
    }

    fn read(&self, req: ReqId, function: FnId, key: &str) -> Option<LatticeValue> {
        self.log(req)
            .iter()
            .find(|r| r.function == function && r.key == key)
            .map(|r| r.value.clone())
            .expect("the function read the key")
    }

    fn fetches(&self, from: NodeId, to: NodeId) -> usize {
        let fetch = |m: &SessionMsg| matches!(m, SessionMsg::Fetch { .. });
        self.sent.iter().filter(|e| e.0 == from && e.1 == to && is(e, fetch)).count()
    }

    fn no_pins(&self) -> bool {
        self.worker(A).layer().pins().is_empty() && self.worker(B).layer().pins().is_empty()
    }
}

fn chain_x_x() -> Dag {
    Dag::chain(&[&["x"], &["x"]]).expect("valid")
}

/// Caches A and B both hold `x` (after an LWW call of `dag`), then a write reaches only A:
/// they disagree.
fn diverged(dag: &Dag) -> Net {
    let mut net = Net::new(&[("x", lww(1)), ("y", lww(1))], None, BTreeMap::new());
    net.call(0, Level::Lww, &chain_x_x());
    net.run();
    assert!(net.completed(0));
    net.call(100, Level::Lww, dag);
    net.run();
    net.put("x", lww(2), &[A]);
    net
}

#[test]
fn dsrr_reads_the_upstream_pin_where_lww_reads_a_stale_cache() {
    let mut net = diverged(&chain_x_x());
    net.call(1, Level::Dsrr, &chain_x_x());
    net.run();
    assert_eq!(net.read(1, 0, "x"), Some(lww(2)));
    assert_eq!(net.read(1, 1, "x"), Some(lww(2)), "f1 repeats f0's read from A's pin");
    assert!(repeatable_read(net.log(1)).is_ok());
    assert_eq!(net.fetches(B, A), 1, "B's cache had another version: one remote read");
    assert!(net.no_pins(), "the sink's completion released the pins");

    // The anomaly DSRR forbids: at LWW, f1 reads B's stale copy.
    net.call(2, Level::Lww, &chain_x_x());
    net.run();
    assert_eq!(net.read(2, 1, "x"), Some(lww(1)));
    assert!(repeatable_read(net.log(2)).is_err());
    // Once the storage node re-sends its unacknowledged push, B catches up.
    net.fire(STORAGE, SystemTimer::Kvs(KvsTimer::Push));
    net.run();
    assert_eq!(net.worker(B).cache().entries()["x"].value, Some(lww(2)));
}

#[test]
fn a_lost_release_is_sent_again_until_acknowledged() {
    let mut net = diverged(&chain_x_x());
    net.call(1, Level::Dsrr, &chain_x_x());
    net.run_dropping(|e| is(e, |m| matches!(m, SessionMsg::Release { .. })));
    assert!(net.completed(1));
    assert!(!net.worker(A).layer().pins().is_empty(), "the release was lost");
    net.fire(SCHEDULER, SystemTimer::Session(SessionTimer::Release));
    net.run();
    assert!(net.no_pins());
    assert!(net.scheduler().is_idle());
}

#[test]
fn a_crashed_upstream_worker_aborts_the_session_and_the_retry_completes_once() {
    let mut net = diverged(&chain_x_x());
    net.call(1, Level::Dsrr, &chain_x_x());
    // f0 finished on A and pinned x; before f1 reads it, A crashes and restarts empty.
    net.run_until(|e| e.1 == B && is(e, |m| matches!(m, SessionMsg::Trigger { .. })));
    net.start(A);
    net.run();
    let Some(Outcome::Completed { session, .. }) = net.outcome(1).cloned() else {
        panic!("the retry completes: {:?}", net.outcome(1))
    };
    assert_eq!(net.attempts(1), 2, "one abort, one retry");
    assert_eq!(session.seq & 0xffff_ffff, 3, "the retry ran under a new session id");
    assert!(repeatable_read(net.log(1)).is_ok());
    assert!(net.no_pins());
}

/// f0 (on A) triggers f1 (on B) and f2 (on A); both read x, which the caches hold at
/// different versions; f3 (on B) joins them, reading `sink_reads`.
fn siblings_abort_at_the_join_and_the_retry_agrees(sink_reads: &[&str]) {
    let dag = Dag::new(vec![
        Function::new("f0", &[], &[1, 2]),
        Function::new("f1", &["x"], &[3]),
        Function::new("f2", &["x"], &[3]),
        Function::new("f3", sink_reads, &[]),
    ])
    .expect("valid");
    let mut net = diverged(&dag);
    net.call(1, Level::Dsrr, &dag);
    let reason = net.run_until_abort();
    assert!(reason.contains("different versions of x"), "{reason}");
    // A (late) push reaches B before the retry: both branches now read x@2.
    net.push(B, "x", lww(2));
    net.run();
    assert!(net.completed(1), "{:?}", net.outcome(1));
    assert_eq!(net.attempts(1), 2);
    assert!(repeatable_read(net.log(1)).is_ok());
    assert!(net.no_pins());
}

#[test]
fn sibling_branches_that_read_different_versions_abort_at_the_join() {
    siblings_abort_at_the_join_and_the_retry_agrees(&["x"]);
}

#[test]
fn sibling_branches_abort_even_when_no_later_function_reads_the_key() {
    // Nobody downstream reads x, so nothing pins it: the join compares the branches' reads.
    siblings_abort_at_the_join_and_the_retry_agrees(&[]);
}

#[test]
fn single_key_reads_a_newer_local_version_but_never_an_older_one() {
    let mut net = diverged(&chain_x_x());
    net.call(1, Level::SingleKey, &chain_x_x());
    net.run();
    assert_eq!(net.read(1, 1, "x"), Some(lww(2)), "B's older copy is not read");
    assert_eq!(net.fetches(B, A), 1);
    // Now B is ahead of A: f1 may read its own newer copy.
    net.push(B, "x", lww(2));
    net.put("x", lww(3), &[B]);
    net.call(2, Level::SingleKey, &chain_x_x());
    net.run();
    assert_eq!(net.read(2, 0, "x"), Some(lww(2)));
    assert_eq!(net.read(2, 1, "x"), Some(lww(3)));
    assert_eq!(net.fetches(B, A), 1, "no remote read for a newer local version");
    assert!(single_key(&chain_x_x(), net.log(2)).is_ok());
    assert!(repeatable_read(net.log(2)).is_err(), "SK is weaker than DSRR");
}

fn x1() -> LatticeValue {
    causal(&[(9, 1)], &[])
}

fn x2() -> LatticeValue {
    causal(&[(9, 1), (4, 2)], &[("y", &[(9, 1), (4, 1)])])
}

fn y1() -> LatticeValue {
    causal(&[(9, 1), (4, 1)], &[])
}

fn causal_net() -> Net {
    Net::new(&[("x", x1()), ("y", causal(&[(9, 1)], &[]))], None, BTreeMap::new())
}

#[test]
fn the_causal_cut_waits_for_dependencies_while_lww_reads_a_torn_pair() {
    let dag = Dag::chain(&[&["x", "y"]]).expect("valid");
    let mut net = causal_net();
    net.call(0, Level::MultiKey, &dag);
    net.run();
    // y@1 reaches the storage node, but its push to A is lost; then x@2, which depends on it,
    // is pushed to A (alone: the storage node's batch with y@1 is lost too).
    net.put("y", y1(), &[]);
    net.put("x", x2(), &[]);
    net.push(A, "x", x2());
    net.run();
    // A's cache holds x@2, but its cut keeps x@1 until y@1 arrives.
    assert_eq!(net.worker(A).cache().entries()["x"].value, Some(x2()));
    assert_eq!(net.worker(A).layer().cut()["x"], Some(x1()));
    net.call(1, Level::MultiKey, &dag);
    net.call(2, Level::Lww, &dag);
    net.run();
    assert!(multi_key(net.log(1)).is_ok());
    assert_eq!(net.read(1, 0, "x"), Some(x1()), "the cut's older pair");
    // At LWW the same function read x@2 beside the old y: the anomaly MK forbids.
    assert_eq!(net.read(2, 0, "x"), Some(x2()));
    assert!(multi_key(net.log(2)).is_err(), "{:?}", net.log(2));
    // The storage node re-sends the push of y@1; the cut then takes x@2 and y@1 together.
    net.fire(STORAGE, SystemTimer::Kvs(KvsTimer::Push));
    net.run();
    assert_eq!(net.worker(A).layer().cut()["x"], Some(x2()));
    assert_eq!(net.worker(A).layer().cut()["y"], Some(y1()));
    net.call(3, Level::MultiKey, &dag);
    net.run();
    assert_eq!(net.read(3, 0, "y"), Some(y1()));
    assert!(multi_key(net.log(3)).is_ok());
}

#[test]
fn dsc_carries_the_upstream_snapshot_to_a_stale_cache() {
    let dag = Dag::chain(&[&["x"], &["x", "y"]]).expect("valid");
    let mut net = causal_net();
    net.call(0, Level::Lww, &dag);
    net.run();
    // A sees y@1 and x@2; B sees neither.
    net.call(100, Level::Lww, &Dag::chain(&[&["y"]]).expect("valid"));
    net.run();
    net.put("y", y1(), &[A]);
    net.put("x", x2(), &[A]);
    net.call(1, Level::Dsc, &dag);
    net.call(2, Level::MultiKey, &dag);
    net.run();
    assert_eq!(net.read(1, 1, "x"), Some(x2()));
    assert_eq!(net.read(1, 1, "y"), Some(y1()), "y from A's snapshot, not B's stale cut");
    assert!(distributed_causal(&dag, net.log(1)).is_ok());
    assert!(multi_key(net.log(1)).is_ok());
    assert_eq!(net.fetches(B, A), 2, "x and y read remotely");
    // At MK each function reads a cut, but f1's is older than what f0 read.
    assert!(multi_key(net.log(2)).is_ok());
    assert!(distributed_causal(&dag, net.log(2)).is_err());
    assert!(net.no_pins());
}

#[test]
fn unreleased_pins_expire_after_two_lease_ticks_without_use() {
    let mut net = Net::new(&[("x", lww(1))], Some(Duration::from_secs(5)), BTreeMap::new());
    net.call(0, Level::Dsrr, &chain_x_x());
    // The scheduler never hears of the pins (holds lost) nor releases them.
    net.run_dropping(|e| is(e, |m| matches!(m, SessionMsg::Hold { .. })));
    assert!(net.completed(0));
    assert_eq!(net.worker(A).layer().pins().len(), 1);
    let lease = SystemTimer::Session(SessionTimer::Lease);
    net.fire(A, lease);
    net.fire(A, lease);
    assert_eq!(net.worker(A).layer().pins().len(), 1, "two ticks are not yet enough");
    net.fire(A, lease);
    assert!(net.worker(A).layer().pins().is_empty());
}

#[test]
fn results_are_recorded_once_and_bad_input_is_ignored() {
    let mut net = diverged(&chain_x_x());
    net.call(1, Level::Dsrr, &chain_x_x());
    net.run();
    let result = net
        .sent
        .iter()
        .rev()
        .find(|e| is(e, |m| matches!(m, SessionMsg::Result { .. })))
        .cloned()
        .expect("a result was sent");
    net.inject(result.0, result.1, result.2);
    assert_eq!(net.scheduler().recorded().iter().filter(|r| r.req == 1).count(), 1);
    // A repeated call gets the recorded outcome again, and starts nothing.
    let before = net.attempts(1);
    net.call(1, Level::Dsrr, &chain_x_x());
    let done = net.queue.pop_back().expect("answered");
    assert!(matches!(
        done,
        (SCHEDULER, CLIENT, SystemMsg::Session(SessionMsg::Done { req: 1, .. }))
    ));
    assert_eq!(net.attempts(1), before);
    // A trigger of a function the DAG lacks, and a remote read of an unknown session.
    let session = SessionId { scheduler: SCHEDULER, seq: 99 };
    let info = SessionInfo {
        client: CLIENT,
        req: 9,
        level: Level::Dsrr,
        dag: chain_x_x(),
        placement: vec![A, B],
    };
    let trigger = SessionMsg::Trigger {
        session,
        info,
        function: 7,
        from: None,
        meta: Meta::default(),
        args: Vec::new(),
    };
    net.inject(SCHEDULER, A, SystemMsg::Session(trigger));
    assert!(net.queue.is_empty());
    let fetch = SessionMsg::Fetch { session, client: CLIENT, key: "x".into(), incarnation: 1 };
    net.inject(B, A, SystemMsg::Session(fetch));
    let answer = net.queue.pop_back().expect("answered");
    let fetched = SessionMsg::Fetched { session, key: "x".into(), pinned: Pinned::Gone };
    assert_eq!(answer.2, SystemMsg::Session(fetched));
}

#[test]
fn a_branch_without_the_pin_reads_the_version_a_sibling_pinned_on_its_worker() {
    // Branch one: f2 (on A) reads x. Branch two: f1 and f3 (on B), then f4 (on A) reads x
    // without a pin in its metadata. The sink f5 (on B) reads x too.
    let dag = Dag::new(vec![
        Function::new("f0", &[], &[1, 2]),
        Function::new("f1", &[], &[3]),
        Function::new("f2", &["x"], &[5]),
        Function::new("f3", &[], &[4]),
        Function::new("f4", &["x"], &[5]),
        Function::new("f5", &["x"], &[]),
    ])
    .expect("valid");
    let mut net = Net::new(&[("x", lww(1))], None, BTreeMap::new());
    net.call(0, Level::Lww, &dag);
    net.run();
    net.call(1, Level::Dsrr, &dag);
    net.run_until(|e| e.1 == A && is(e, |m| matches!(m, SessionMsg::Trigger { function: 4, .. })));
    // f2 pinned x@1 on A; now x@2 reaches A before f4 runs there.
    net.push(A, "x", lww(2));
    net.run();
    assert_eq!(net.attempts(1), 1, "no abort needed");
    for function in [2, 4, 5] {
        assert_eq!(net.read(1, function, "x"), Some(lww(1)), "function {function}");
    }
}

#[test]
fn a_dsc_read_depending_on_newer_versions_than_the_session_pinned_aborts() {
    // f0 (on A) reads y; f1 (on B) reads x; f2 (on A) reads y again.
    let dag = Dag::chain(&[&["y"], &["x"], &["y"]]).expect("valid");
    let mut net = causal_net();
    net.call(0, Level::Lww, &dag);
    net.run();
    // B's cut gets y@1 and x@2 (which depends on it); A keeps y@0.
    net.put("y", y1(), &[B]);
    net.put("x", x2(), &[B]);
    assert_eq!(net.worker(B).layer().cut()["x"], Some(x2()));
    net.call(1, Level::Dsc, &dag);
    let reason = net.run_until_abort();
    assert!(reason.contains("x in this cache conflicts"), "{reason}");
    // Once A has y@1 too, the retry reads one causal cut along the chain.
    net.push(A, "y", y1());
    net.run();
    assert_eq!(net.attempts(1), 2);
    assert!(distributed_causal(&dag, net.log(1)).is_ok());
    assert_eq!(net.read(1, 2, "y"), Some(y1()));
}

#[test]
fn two_functions_waiting_on_a_lost_pin_abort_the_session_once() {
    // f0 (on A) pins x; f1 and f3 (both on B) read it remotely; f4 (on A) joins them.
    let dag = Dag::new(vec![
        Function::new("f0", &["x"], &[1, 2]),
        Function::new("f1", &["x"], &[4]),
        Function::new("f2", &[], &[3]),
        Function::new("f3", &["x"], &[4]),
        Function::new("f4", &[], &[]),
    ])
    .expect("valid");
    let mut net = diverged(&dag);
    net.call(1, Level::Dsrr, &dag);
    net.run_dropping(|e| is(e, |m| matches!(m, SessionMsg::Fetch { .. })));
    // A restarts empty; B re-sends both remote reads, and A answers that the pin is gone.
    net.start(A);
    net.fire(B, SystemTimer::Session(SessionTimer::Retry));
    net.run();
    let aborts =
        net.sent.iter().filter(|e| is(e, |m| matches!(m, SessionMsg::Abort { .. }))).count();
    assert_eq!(aborts, 1);
    assert!(net.completed(1));
    assert_eq!(net.attempts(1), 2);
}

fn bodies(list: &[(&str, Vec<Step>)]) -> BTreeMap<String, Vec<Step>> {
    list.iter().map(|(name, steps)| ((*name).to_owned(), steps.clone())).collect()
}

#[test]
fn a_function_writes_through_its_cache_and_the_kvs_holds_it_before_it_goes_on() {
    let write = Step::Put("out".into(), Write::Value(lww(5)));
    let mut net = Net::new(&[("x", lww(1))], None, bodies(&[("f0", vec![write])]));
    let dag = Dag::chain(&[&["x"], &["out"]]).expect("valid");
    net.call(1, Level::Lww, &dag);
    net.run();
    assert!(net.completed(1), "{:?}", net.outcome(1));
    assert_eq!(net.storage().store()["out"], lww(5));
    assert_eq!(net.read(1, 1, "out"), Some(lww(5)), "f1 ran after the KVS held f0's write");
    let recorded = net.recorded(1);
    assert_eq!(recorded.writes, [Read { function: 0, key: "out".into(), value: Some(lww(5)) }]);
    assert_eq!(recorded.output, Bytes::from_static(b"f1"), "the sink's output is the result");
}

#[test]
fn a_causal_write_depends_on_what_the_session_read() {
    let write = Step::Put("z".into(), Write::Causal(Bytes::from_static(b"new")));
    let mut net = causal_net();
    net.put("y", y1(), &[]);
    net.put("x", x2(), &[]);
    let dag = Dag::chain(&[&["x", "y"], &[]]).expect("valid");
    let mut with_write = net.cfgs.clone();
    for cfg in with_write.values_mut() {
        if let SystemConfig::Worker(cfg) = cfg {
            cfg.bodies = bodies(&[("f0", vec![write.clone()])]);
        }
    }
    net.cfgs = with_write;
    net.call(1, Level::MultiKey, &dag);
    net.run();
    assert!(net.completed(1), "{:?}", net.outcome(1));
    let Some(LatticeValue::MultiKeyCausal(z)) = net.storage().store().get("z").cloned() else {
        panic!("z is a multi-key causal value: {:?}", net.storage().store().get("z"))
    };
    let deps = z.dependencies();
    assert_eq!(deps.get(&"x".to_owned()), Some(&vc(&[(9, 1), (4, 2)])), "{deps:?}");
    assert_eq!(deps.get(&"y".to_owned()), Some(&vc(&[(9, 1), (4, 1)])), "x@2's own dependency");
    assert_eq!(z.clock().get(WriterId(A.0)) >> 32, 1, "stamped by worker A, incarnation 1");
}

#[test]
fn a_plain_write_at_a_causal_level_and_an_undeclared_read_at_dsrr_are_refused() {
    let bad_write = Step::Put("z".into(), Write::Value(lww(5)));
    let bad_read = Step::Get("y".into());
    let bodies = bodies(&[("f0", vec![bad_write]), ("g0", vec![bad_read])]);
    let mut net = Net::new(&[("x", x1())], None, bodies);
    let dag = Dag::chain(&[&["x"]]).expect("valid");
    net.call(1, Level::MultiKey, &dag);
    net.run();
    match net.outcome(1) {
        Some(Outcome::Failed { reason, .. }) => {
            assert!(reason.contains("a plain write at mk"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let reader = Dag::new(vec![Function::new("g0", &["x"], &[])]).expect("valid");
    net.call(2, Level::Dsrr, &reader);
    net.run();
    match net.outcome(2) {
        Some(Outcome::Failed { reason, .. }) => {
            assert!(reason.contains("not among the keys"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // At LWW the same undeclared read is fetched through the cache.
    net.call(3, Level::Lww, &reader);
    net.run();
    assert!(net.completed(3));
    assert!(net.log(3).iter().any(|r| r.key == "y" && r.value.is_none()), "{:?}", net.log(3));
}

#[test]
fn a_function_ready_while_the_executor_is_busy_waits_for_it() {
    // f0 (on A) triggers f2 and f4 (both on A) and f3 (on B); A has one executor, which f2
    // keeps busy while its write waits for the storage node.
    let dag = Dag::new(vec![
        Function::new("f0", &[], &[2, 3, 4]),
        Function::new("f1", &[], &[]),
        Function::new("f2", &[], &[1]),
        Function::new("f3", &[], &[1]),
        Function::new("f4", &[], &[1]),
    ])
    .expect("valid");
    let write = Step::Put("w".into(), Write::Value(lww(5)));
    let mut net = Net::new(&[], None, bodies(&[("f2", vec![write])]));
    net.call(1, Level::Lww, &dag);
    net.run_until(|e| e.1 == A && matches!(e.2, SystemMsg::Kvs(KvsMsg::PutOk { .. })));
    assert_eq!(net.worker(A).busy().len(), 1, "f2 runs");
    assert_eq!(net.worker(A).queued(), 1, "f4 waits for the executor");
    net.run();
    assert!(net.completed(1), "{:?}", net.outcome(1));
    let invokes = net.sent.iter().filter(|e| matches!(e.2, SystemMsg::Exec(_))).count();
    assert_eq!(invokes, 0, "executors are inside their workers: nothing on the network");
    assert!(net.worker(A).busy().is_empty() && net.worker(A).queued() == 0);
}

/// The model's `stale-hold-ok` counterexample as one interleaving: A pins x for a session that
/// then ends and is released; A restarts, and a late copy of the session's trigger makes it pin
/// x again. Its new `Hold` is lost, and the scheduler's acknowledgement of the *previous*
/// incarnation's hold arrives instead. Taking that for the new pins would leave them held by
/// nobody: A must keep asking until the scheduler (for whom the session ended) releases them.
/// Returns whether A's pins are gone at the end.
fn stale_hold_ok_scenario(net: &mut Net) -> bool {
    net.call(1, Level::Dsrr, &chain_x_x());
    net.run();
    assert!(net.completed(1));
    assert!(net.no_pins());
    let first = |f: &dyn Fn(&Envelope) -> bool| {
        net.sent.iter().find(|e| f(e)).cloned().expect("sent during the session")
    };
    let trigger = first(&|e| e.1 == A && is(e, |m| matches!(m, SessionMsg::Trigger { .. })));
    let hold_ok = first(&|e| e.1 == A && is(e, |m| matches!(m, SessionMsg::HoldOk { .. })));
    net.start(A);
    assert_eq!(net.worker(A).layer().incarnation(), 2, "restarted");
    let (from, to, msg) = trigger;
    net.inject(from, to, msg);
    net.run_until(|e| e.1 == SCHEDULER && is(e, |m| matches!(m, SessionMsg::Hold { .. })));
    net.queue.pop_front().expect("the new hold, lost");
    net.run();
    assert!(!net.worker(A).layer().pins().is_empty(), "the late trigger pinned x");
    let (from, to, msg) = hold_ok;
    net.inject(from, to, msg);
    net.fire(A, SystemTimer::Session(SessionTimer::Retry));
    net.run();
    net.no_pins()
}

#[test]
fn a_hold_acknowledged_to_an_earlier_incarnation_does_not_hold_the_new_pins() {
    let mut net = Net::new(&[("x", lww(1))], None, BTreeMap::new());
    assert!(stale_hold_ok_scenario(&mut net), "the retried hold released the late pins");
}

#[cfg(feature = "mutants")]
#[test]
fn a_worker_taking_a_stale_hold_ok_leaks_its_pins() {
    let mut net = Net::new(&[("x", lww(1))], None, BTreeMap::new());
    if let Some(SystemConfig::Worker(cfg)) = net.cfgs.get_mut(&A) {
        cfg.worker.session.mutant = Some(crate::session::Mutant::StaleHoldOk);
    }
    assert!(!stale_hold_ok_scenario(&mut net), "with the defect, nobody releases the pins");
}

#[test]
fn a_warm_worker_fetches_its_hot_keys_at_start_and_keeps_them_fresh() {
    let mut net = Net::new(&[("x", lww(1))], None, BTreeMap::new());
    assert!(!net.worker(B).cache().entries().contains_key("x"), "cold before warming");
    if let Some(SystemConfig::Worker(b)) = net.cfgs.get_mut(&B) {
        b.worker.warm = vec!["x".to_owned()];
    }
    // A restart starts warm again: the fetch subscribes the new incarnation.
    net.start(B);
    net.run();
    assert_eq!(net.worker(B).cache().entries()["x"].value, Some(lww(1)));
    net.put("x", lww(2), &[B]);
    assert_eq!(net.worker(B).cache().entries()["x"].value, Some(lww(2)), "pushed as subscribed");
    assert!(!net.worker(A).cache().entries().contains_key("x"), "only B is warm");
}

#[test]
fn a_submitted_call_is_accepted_at_once_runs_once_and_answers_nothing_more() {
    let mut net = diverged(&chain_x_x());
    let submit =
        |req| SessionMsg::Submit { req, level: Level::Dsrr, dag: chain_x_x(), args: Vec::new() };
    net.inject(CLIENT, SCHEDULER, SystemMsg::Session(submit(1)));
    let to_client = |net: &Net| -> Vec<SessionMsg> {
        net.sent
            .iter()
            .filter(|e| e.1 == CLIENT)
            .filter_map(|e| session_msg(&e.2).cloned())
            .filter(|m| !matches!(m, SessionMsg::Done { req: 0 | 100, .. }))
            .collect()
    };
    assert_eq!(to_client(&net), vec![SessionMsg::Accepted { req: 1 }], "answered before it ran");
    assert!(!net.completed(1));
    // A repeat while it runs is accepted again and starts nothing.
    net.inject(CLIENT, SCHEDULER, SystemMsg::Session(submit(1)));
    assert_eq!(net.attempts(1), 1);
    net.run();
    assert!(net.completed(1));
    assert_eq!(net.read(1, 1, "x"), Some(lww(2)), "run at the level asked for");
    assert_eq!(
        to_client(&net),
        vec![SessionMsg::Accepted { req: 1 }, SessionMsg::Accepted { req: 1 }],
        "no Done for a submitted call"
    );
    // A repeat after it ended is accepted again; still one result.
    net.inject(CLIENT, SCHEDULER, SystemMsg::Session(submit(1)));
    net.run();
    assert_eq!(net.attempts(1), 1);
    assert_eq!(net.recorded(1).req, 1);
}

#[test]
fn functions_send_messages_to_running_and_later_functions_of_their_session() {
    // talker (on A) tells listener (a sibling, on B) and join (its successor, on A, which
    // does not run yet); both wait for the message, so the call completes only if each came.
    let dag = Dag::new(vec![
        Function::new("talker", &[], &[2]),
        Function::new("listener", &[], &[2]),
        Function::new("join", &[], &[]),
    ])
    .expect("valid");
    let hi = || Bytes::from_static(b"hi");
    let talker = vec![Step::Send("listener".into(), hi()), Step::Send("join".into(), hi())];
    let scripts =
        bodies(&[("talker", talker), ("listener", vec![Step::Recv]), ("join", vec![Step::Recv])]);
    let mut net = Net::new(&[], None, scripts);
    net.call(1, Level::Lww, &dag);
    net.run();
    assert!(net.completed(1), "{:?}", net.outcome(1));
    let messages: Vec<_> = net
        .sent
        .iter()
        .filter(|e| is(e, |m| matches!(m, SessionMsg::Message { .. })))
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(messages, [(A, B)], "to listener over the network, to join within A");
    assert_eq!(net.worker(A).unread() + net.worker(B).unread(), 0, "every message read");

    // A message to no function of the DAG fails the sender, and so the call.
    let lost = vec![Step::Send("nobody".into(), hi())];
    let mut net = Net::new(&[], None, bodies(&[("talker", lost)]));
    net.call(2, Level::Lww, &dag);
    net.run();
    assert!(
        matches!(net.outcome(2), Some(Outcome::Failed { reason, .. }) if reason.contains("nobody")),
        "{:?}",
        net.outcome(2)
    );
}

#[test]
fn unread_messages_are_bounded_and_dropped_once_their_receiver_is_not_coming() {
    // The talker tells join (which runs after it, on A) more than A keeps.
    let dag = Dag::new(vec![
        Function::new("talker", &[], &[2]),
        Function::new("other", &[], &[2]),
        Function::new("join", &[], &[]),
    ])
    .expect("valid");
    let many = (0..4).map(|i| Step::Send("join".into(), Bytes::from(vec![i]))).collect();
    let mut net = Net::new(&[], None, bodies(&[("talker", many)]));
    for id in [A, B] {
        if let SystemConfig::Worker(cfg) = net.cfgs.get_mut(&id).expect("a worker") {
            cfg.worker.max_messages = 2;
        }
    }
    net.call(1, Level::Lww, &dag);
    net.run();
    // The third send was refused: the talker failed, and every attempt did the same.
    assert!(
        matches!(net.outcome(1), Some(Outcome::Failed { reason, .. }) if reason.contains("unread")),
        "{:?}",
        net.outcome(1)
    );
    assert!(net.worker(A).unread() <= 2);
    // The receivers never run: Retry ticks drop their messages.
    for _ in 0..=5 {
        net.fire(A, SystemTimer::Session(SessionTimer::Retry));
        net.fire(B, SystemTimer::Session(SessionTimer::Retry));
    }
    net.run();
    assert_eq!(net.worker(A).unread() + net.worker(B).unread(), 0);
}

#[test]
fn a_worker_reports_what_its_cache_holds_and_the_scheduler_places_dags_there() {
    let mut net = Net::new(&[("x", lww(1))], None, BTreeMap::new());
    for id in [A, B] {
        if let Some(SystemConfig::Worker(w)) = net.cfgs.get_mut(&id) {
            w.worker.report_keys = 8;
        }
    }
    let Some(SystemConfig::Scheduler(scheduler)) = net.cfgs.get_mut(&SCHEDULER) else {
        unreachable!()
    };
    scheduler.placement = crate::session::Placement::Local;
    let scheduler = scheduler.clone();
    let reports = |net: &Net| {
        let cached = |m: &SessionMsg| matches!(m, SessionMsg::Cached { .. });
        net.sent.iter().filter(|e| e.1 == SCHEDULER && is(e, cached)).count()
    };
    let reads_x = Dag::chain(&[&["x"]]).expect("a chain");
    net.call(1, Level::Lww, &reads_x);
    net.run();
    assert!(net.completed(1), "{:?}", net.outcome(1));
    let ran = net.scheduler().requests()[&(CLIENT, 1)].placement[0];
    assert_eq!(reports(&net), 1, "one report after the execution");
    assert_eq!(net.scheduler().cached()[&ran], BTreeSet::from(["x".to_owned()]));
    net.call(2, Level::Lww, &reads_x);
    net.run();
    assert_eq!(reports(&net), 1, "nothing changed: no second report");
    // A DAG reading x and a key nobody caches, whose keys hash to the other worker: placed
    // where x is cached.
    let none = BTreeMap::new();
    let dag = (b'a'..=b'z')
        .map(|c| Dag::chain(&[&["x", &(c as char).to_string()]]).expect("a chain"))
        .find(|dag| Scheduler::place(&scheduler, dag, 1, &[0, 0], &none)[0] != ran)
        .expect("some key set hashes to the other worker");
    net.call(3, Level::Lww, &dag);
    net.run();
    assert!(net.completed(3), "{:?}", net.outcome(3));
    assert_eq!(
        net.scheduler().requests()[&(CLIENT, 3)].placement,
        [ran],
        "placed where x is cached"
    );
}

#[test]
fn a_function_waiting_for_a_lost_message_is_stopped_when_its_session_is_aborted() {
    // talker (on A) messages listener (on B); the message is lost. At LWW nothing is pinned,
    // so only the listener's wait makes B a holder of the session: the deadline's abort must
    // still reach B and free its executor (found recording the session-faults trace).
    let dag = Dag::new(vec![
        Function::new("talker", &[], &[2]),
        Function::new("listener", &[], &[2]),
        Function::new("join", &[], &[]),
    ])
    .expect("valid");
    let talker = vec![Step::Send("listener".into(), Bytes::from_static(b"hi"))];
    let mut net =
        Net::new(&[], None, bodies(&[("talker", talker), ("listener", vec![Step::Recv])]));
    net.call(1, Level::Lww, &dag);
    net.run_dropping(|e| is(e, |m| matches!(m, SessionMsg::Message { .. })));
    assert!(net.outcome(1).is_none(), "the listener waits");
    assert_eq!(net.worker(B).busy().len(), 1, "its executor is taken");
    let hold = |m: &SessionMsg| matches!(m, SessionMsg::Hold { .. });
    assert!(net.sent.iter().any(|e| e.0 == B && e.1 == SCHEDULER && is(e, hold)), "B holds");
    // The deadline aborts the session; the Release stops the listener on B.
    for _ in 0..3 {
        net.fire(SCHEDULER, SystemTimer::Session(SessionTimer::Deadline));
    }
    net.run_until(|e| e.1 == B && is(e, |m| matches!(m, SessionMsg::Release { .. })));
    net.run();
    assert!(net.attempts(1) >= 2, "the session was aborted and retried");
    assert!(
        net.worker(B).busy().values().all(|(session, _)| net.scheduler().requests()[&(CLIENT, 1)]
            .session
            .is_none_or(|running| running == *session)),
        "B's executor no longer runs the aborted session"
    );
    assert!(net.completed(1), "{:?}", net.outcome(1));
    assert!(net.no_pins(), "the hold is released with the session");
}
