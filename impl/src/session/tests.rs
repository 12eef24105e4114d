//! Session scenarios on a hand-driven network: messages are delivered in order, and a test
//! drops, holds back or injects exactly the ones it names, so each scenario is one precise
//! interleaving (the models and the simulator cover the others).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::invariants::{distributed_causal, multi_key, repeatable_read, single_key};
use super::*;
use crate::lattice::{Dependencies, Lww, MultiKeyCausal};
use crate::node::handle_checked;

const SCHEDULER: NodeId = NodeId(0);
const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const STORE: NodeId = NodeId(3);
const CLIENT: NodeId = NodeId(60);
const PUTTER: NodeId = NodeId(70);

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

type Envelope = (NodeId, NodeId, SessionMsg);

/// A network the test drives by hand.
struct Net {
    cfgs: BTreeMap<NodeId, SessionConfig>,
    nodes: BTreeMap<NodeId, SessionNode>,
    durable: BTreeMap<NodeId, u32>,
    queue: VecDeque<Envelope>,
    /// Every message sent, in order.
    sent: Vec<Envelope>,
}

impl Net {
    /// A scheduler, workers A and B and a store holding `initial`, running `dag`.
    fn new(dag: Dag, initial: &[(&str, LatticeValue)], lease: Option<Duration>) -> Self {
        let mut scheduler = SchedulerConfig::new(SCHEDULER, dag.clone(), vec![A, B]);
        scheduler.max_attempts = 3;
        let worker = |id| {
            let mut cfg = WorkerConfig::new(id, STORE, SCHEDULER, dag.clone());
            cfg.pin_lease = lease;
            SessionConfig::Worker(cfg)
        };
        let initial: Vec<_> = initial.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        let cfgs = BTreeMap::from([
            (SCHEDULER, SessionConfig::Scheduler(scheduler)),
            (A, worker(A)),
            (B, worker(B)),
            (STORE, SessionConfig::Store(StoreConfig::new(initial))),
        ]);
        let mut net = Self {
            cfgs,
            nodes: BTreeMap::new(),
            durable: BTreeMap::new(),
            queue: VecDeque::new(),
            sent: Vec::new(),
        };
        for id in [SCHEDULER, A, B, STORE] {
            net.start(id);
        }
        net
    }

    fn start(&mut self, id: NodeId) {
        let mut out = Outbox::new();
        let durable = self.durable.get(&id).copied().unwrap_or_default();
        let node = SessionNode::init(&self.cfgs[&id], &durable, &mut out);
        self.nodes.insert(id, node);
        self.execute(id, out);
    }

    fn execute(&mut self, from: NodeId, out: Outbox<SessionNode>) {
        for output in out {
            match output {
                crate::node::Output::Send { to, msg } => {
                    self.sent.push((from, to, msg.clone()));
                    self.queue.push_back((from, to, msg));
                }
                crate::node::Output::Persist(durable) => {
                    self.durable.insert(from, durable);
                }
                _ => {}
            }
        }
    }

    fn input(&mut self, to: NodeId, input: Input<SessionNode>) {
        let Some(node) = self.nodes.get_mut(&to) else { return };
        let mut out = Outbox::new();
        handle_checked(node, &self.cfgs[&to], input, &mut out).expect("step invariant");
        self.execute(to, out);
    }

    fn inject(&mut self, from: NodeId, to: NodeId, msg: SessionMsg) {
        self.input(to, Input::Receive { from, msg });
    }

    fn fire(&mut self, id: NodeId, timer: SessionTimer) {
        self.input(id, Input::Timeout(timer));
    }

    /// Delivers in order until nothing is queued, dropping what `drop` names.
    fn run_dropping(&mut self, drop: impl Fn(&Envelope) -> bool) {
        for _ in 0..10_000 {
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
        self.run_until(|(_, to, msg)| *to == SCHEDULER && matches!(msg, SessionMsg::Abort { .. }));
        match self.queue.front() {
            Some((_, _, SessionMsg::Abort { reason, .. })) => reason.clone(),
            _ => unreachable!("run_until stopped at an abort"),
        }
    }

    fn call(&mut self, req: ReqId, level: Level) {
        self.inject(CLIENT, SCHEDULER, SessionMsg::Call { req, level });
    }

    /// Puts `value` at the store, delivering the pushes only to `to`.
    fn put(&mut self, key: &str, value: LatticeValue, to: &[NodeId]) {
        let msg = SessionMsg::Put { req: 0, key: key.to_owned(), value };
        self.inject(PUTTER, STORE, msg);
        self.run_dropping(|(_, dst, msg)| {
            matches!(msg, SessionMsg::Value { .. }) && !to.contains(dst)
        });
    }

    fn scheduler(&self) -> &Scheduler {
        match &self.nodes[&SCHEDULER] {
            SessionNode::Scheduler(s) => s,
            _ => unreachable!(),
        }
    }

    fn worker(&self, id: NodeId) -> &Worker {
        match &self.nodes[&id] {
            SessionNode::Worker(w) => w,
            _ => unreachable!(),
        }
    }

    fn outcome(&self, req: ReqId) -> Option<&Outcome> {
        self.scheduler().requests()[&(CLIENT, req)].outcome.as_ref()
    }

    fn log(&self, req: ReqId) -> &[Read] {
        let recorded: Vec<_> =
            self.scheduler().recorded().iter().filter(|r| r.req == req).collect();
        assert_eq!(recorded.len(), 1, "request {req} has one result");
        &recorded[0].log
    }

    fn read(&self, req: ReqId, function: FnId, key: &str) -> Option<LatticeValue> {
        self.log(req)
            .iter()
            .find(|r| r.function == function && r.key == key)
            .map(|r| r.value.clone())
            .expect("the function read the key")
    }

    fn fetches(&self, from: NodeId, to: NodeId) -> usize {
        self.sent
            .iter()
            .filter(|(f, t, m)| *f == from && *t == to && matches!(m, SessionMsg::Fetch { .. }))
            .count()
    }

    fn no_pins(&self) -> bool {
        self.worker(A).pins().is_empty() && self.worker(B).pins().is_empty()
    }
}

fn chain_x_x() -> Dag {
    Dag::chain(&[&["x"], &["x"]]).expect("valid")
}

/// Caches A and B both hold `x`, then a write reaches only A: they disagree.
fn diverged(dag: Dag) -> Net {
    let mut net = Net::new(dag, &[("x", lww(1)), ("y", lww(1))], None);
    net.call(0, Level::Lww);
    net.run();
    assert!(matches!(net.outcome(0), Some(Outcome::Completed { .. })));
    net.put("x", lww(2), &[A]);
    net
}

#[test]
fn dag_validation_names_the_problem() {
    assert_eq!(Dag::new(vec![]), Err(DagError::Empty));
    let cyclic = vec![Function::new("a", &[], &[1]), Function::new("b", &[], &[0])];
    assert!(matches!(Dag::new(cyclic), Err(DagError::Cyclic { .. })));
    let unknown = vec![Function::new("a", &[], &[5])];
    assert!(matches!(Dag::new(unknown), Err(DagError::UnknownSuccessor { next: 5, .. })));
    let two_sinks = vec![
        Function::new("a", &[], &[1, 2]),
        Function::new("b", &[], &[]),
        Function::new("c", &[], &[]),
    ];
    let error = Dag::new(two_sinks).unwrap_err();
    assert_eq!(error, DagError::Sinks { sinks: vec!["b".into(), "c".into()] });
    assert!(error.to_string().contains("exactly one sink"));

    let diamond = Dag::new(vec![
        Function::new("f0", &["w"], &[1, 2]),
        Function::new("f1", &["x"], &[3]),
        Function::new("f2", &["y"], &[3]),
        Function::new("f3", &["z"], &[]),
    ])
    .expect("valid");
    assert_eq!(diamond.sink(), 3);
    assert_eq!(diamond.sources().collect::<Vec<_>>(), [0]);
    assert!(diamond.precedes(0, 3) && diamond.precedes(1, 3) && !diamond.precedes(1, 2));
    let future: Vec<&str> = diamond.future_reads(0).into_iter().map(String::as_str).collect();
    assert_eq!(future, ["x", "y", "z"]);
    assert!(diamond.future_reads(3).is_empty());
}

#[test]
fn level_checkers_accept_consistent_logs_and_name_anomalies() {
    let read = |function, key: &str, value| Read { function, key: key.into(), value: Some(value) };
    let dag = chain_x_x();
    // Repeatable read and single-key order.
    let same = [read(0, "x", lww(2)), read(1, "x", lww(2))];
    let newer = [read(0, "x", lww(1)), read(1, "x", lww(2))];
    let older = [read(0, "x", lww(2)), read(1, "x", lww(1))];
    assert!(repeatable_read(&same).is_ok());
    assert_eq!(repeatable_read(&newer).unwrap_err().id, invariants::REPEATABLE_READ);
    assert!(single_key(&dag, &newer).is_ok());
    assert_eq!(single_key(&dag, &older).unwrap_err().id, invariants::SINGLE_KEY);
    // A function after another in no order (siblings) may read in either order.
    let siblings = Dag::new(vec![
        Function::new("f0", &[], &[1, 2]),
        Function::new("f1", &["x"], &[3]),
        Function::new("f2", &["x"], &[3]),
        Function::new("f3", &[], &[]),
    ])
    .expect("valid");
    let crossed = [read(1, "x", lww(2)), read(2, "x", lww(1))];
    assert!(single_key(&siblings, &crossed).is_ok());

    // Multi-key: x@2 depends on y@1.
    let (y0, y1) = (causal(&[(9, 1)], &[]), causal(&[(9, 1), (4, 1)], &[]));
    let x2 = causal(&[(9, 1), (4, 2)], &[("y", &[(9, 1), (4, 1)])]);
    let cut = [read(0, "x", x2.clone()), read(0, "y", y1.clone())];
    let torn = [read(0, "x", x2.clone()), read(0, "y", y0.clone())];
    assert!(multi_key(&cut).is_ok());
    assert_eq!(multi_key(&torn).unwrap_err().id, invariants::MULTI_KEY);
    // Across functions, only DSC forbids the older y downstream.
    let across = [read(0, "x", x2.clone()), read(1, "y", y0.clone())];
    let dag_xy = Dag::chain(&[&["x"], &["y"]]).expect("valid");
    assert!(multi_key(&across).is_ok());
    let dsc = distributed_causal(&dag_xy, &across).unwrap_err();
    assert_eq!(dsc.id, invariants::DISTRIBUTED_CAUSAL);
    assert!(distributed_causal(&dag_xy, &[read(0, "x", x2.clone()), read(1, "y", y1)]).is_ok());
    // And the other way round: a downstream read depending on a newer version than upstream's.
    let dag_yx = Dag::chain(&[&["y"], &["x"]]).expect("valid");
    let reverse = [read(0, "y", y0), read(1, "x", x2)];
    assert!(multi_key(&reverse).is_ok());
    assert_eq!(
        distributed_causal(&dag_yx, &reverse).unwrap_err().id,
        invariants::DISTRIBUTED_CAUSAL
    );
}

#[test]
fn dsrr_reads_the_upstream_pin_where_lww_reads_a_stale_cache() {
    let mut net = diverged(chain_x_x());
    net.call(1, Level::Dsrr);
    net.run();
    assert_eq!(net.read(1, 0, "x"), Some(lww(2)));
    assert_eq!(net.read(1, 1, "x"), Some(lww(2)), "f1 repeats f0's read from A's pin");
    assert!(repeatable_read(net.log(1)).is_ok());
    assert_eq!(net.fetches(B, A), 1, "B's cache had another version: one remote read");
    assert!(net.no_pins(), "the sink's completion released the pins");

    // The anomaly DSRR forbids: at LWW, f1 reads B's stale copy.
    net.call(2, Level::Lww);
    net.run();
    assert_eq!(net.read(2, 1, "x"), Some(lww(1)));
    assert!(repeatable_read(net.log(2)).is_err());
}

#[test]
fn a_lost_release_is_sent_again_until_acknowledged() {
    let mut net = diverged(chain_x_x());
    net.call(1, Level::Dsrr);
    net.run_dropping(|(_, _, msg)| matches!(msg, SessionMsg::Release { .. }));
    assert!(matches!(net.outcome(1), Some(Outcome::Completed { .. })));
    assert!(!net.worker(A).pins().is_empty(), "the release was lost");
    net.fire(SCHEDULER, SessionTimer::Release);
    net.run();
    assert!(net.no_pins());
    assert!(net.scheduler().is_idle());
}

#[test]
fn a_crashed_upstream_cache_aborts_the_session_and_the_retry_completes_once() {
    let mut net = diverged(chain_x_x());
    net.call(1, Level::Dsrr);
    // f0 finished on A and pinned x; before f1 reads it, A crashes and restarts empty.
    net.run_until(|(_, to, msg)| *to == B && matches!(msg, SessionMsg::Trigger { .. }));
    net.start(A);
    net.run();
    let Some(Outcome::Completed { session }) = net.outcome(1).cloned() else {
        panic!("the retry completes: {:?}", net.outcome(1))
    };
    let request = &net.scheduler().requests()[&(CLIENT, 1)];
    assert_eq!(request.attempts, 2, "one abort, one retry");
    assert_eq!(session.seq & 0xffff_ffff, 2, "the retry ran under a new session id");
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
    let mut net = diverged(dag);
    net.call(1, Level::Dsrr);
    let reason = net.run_until_abort();
    assert!(reason.contains("different versions of x"), "{reason}");
    // A (late) push reaches B before the retry: both branches now read x@2.
    net.inject(STORE, B, SessionMsg::Value { key: "x".into(), value: Some(lww(2)) });
    net.run();
    assert!(matches!(net.outcome(1), Some(Outcome::Completed { .. })), "{:?}", net.outcome(1));
    assert_eq!(net.scheduler().requests()[&(CLIENT, 1)].attempts, 2);
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
    let mut net = diverged(chain_x_x());
    net.call(1, Level::SingleKey);
    net.run();
    assert_eq!(net.read(1, 1, "x"), Some(lww(2)), "B's older copy is not read");
    assert_eq!(net.fetches(B, A), 1);
    // Now B is ahead of A: f1 may read its own newer copy.
    net.put("x", lww(3), &[B]);
    net.call(2, Level::SingleKey);
    net.run();
    assert_eq!(net.read(2, 0, "x"), Some(lww(2)));
    assert_eq!(net.read(2, 1, "x"), Some(lww(3)));
    assert_eq!(net.fetches(B, A), 1, "no remote read for a newer local version");
    assert!(single_key(&chain_x_x(), net.log(2)).is_ok());
    assert!(repeatable_read(net.log(2)).is_err(), "SK is weaker than DSRR");
}

fn causal_net(dag: Dag) -> Net {
    let initial = [("x", causal(&[(9, 1)], &[])), ("y", causal(&[(9, 1)], &[]))];
    Net::new(dag, &initial, None)
}

fn x2() -> LatticeValue {
    causal(&[(9, 1), (4, 2)], &[("y", &[(9, 1), (4, 1)])])
}

fn y1() -> LatticeValue {
    causal(&[(9, 1), (4, 1)], &[])
}

#[test]
fn the_causal_cut_waits_for_dependencies_while_lww_reads_a_torn_pair() {
    let dag = Dag::chain(&[&["x", "y"]]).expect("valid");
    let mut net = causal_net(dag);
    net.call(0, Level::MultiKey);
    net.run();
    // y@1 reaches the store, but its push to A is lost; then x@2, which depends on it, is
    // pushed to A, and A's request for y@1 is lost too.
    net.put("y", y1(), &[]);
    net.inject(PUTTER, STORE, SessionMsg::Put { req: 1, key: "x".into(), value: x2() });
    net.run_dropping(|(_, _, msg)| matches!(msg, SessionMsg::Value { key, .. } if key == "y"));
    // A's latest x is x@2, but its cut keeps x@1 until y@1 arrives.
    assert_eq!(net.worker(A).cut()["x"], Some(causal(&[(9, 1)], &[])));
    net.call(1, Level::MultiKey);
    net.call(2, Level::Lww);
    net.run_dropping(|(_, _, msg)| matches!(msg, SessionMsg::Value { key, .. } if key == "y"));
    assert!(multi_key(net.log(1)).is_ok());
    assert_eq!(net.read(1, 0, "x"), Some(causal(&[(9, 1)], &[])), "the cut's older pair");
    // At LWW the same function read x@2 beside the old y: the anomaly MK forbids.
    assert_eq!(net.read(2, 0, "x"), Some(x2()));
    assert!(multi_key(net.log(2)).is_err(), "{:?}", net.log(2));
    // A's retry tick asks the store for y again; the cut then takes x@2 and y@1 together.
    net.fire(A, SessionTimer::Retry);
    net.run();
    assert_eq!(net.worker(A).cut()["x"], Some(x2()));
    assert_eq!(net.worker(A).cut()["y"], Some(y1()));
    net.call(3, Level::MultiKey);
    net.run();
    assert_eq!(net.read(3, 0, "y"), Some(y1()));
    assert!(multi_key(net.log(3)).is_ok());
}

#[test]
fn dsc_carries_the_upstream_snapshot_to_a_stale_cache() {
    let dag = Dag::chain(&[&["x"], &["x", "y"]]).expect("valid");
    let mut net = causal_net(dag.clone());
    net.call(0, Level::Lww);
    net.run();
    // A sees y@1 and x@2; B sees neither.
    net.put("y", y1(), &[A]);
    net.put("x", x2(), &[A]);
    net.call(1, Level::Dsc);
    net.call(2, Level::MultiKey);
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
    let mut net = Net::new(chain_x_x(), &[("x", lww(1))], Some(Duration::from_secs(5)));
    net.call(0, Level::Dsrr);
    // The scheduler never hears of the pins (holds lost) nor releases them.
    net.run_dropping(|(_, _, msg)| matches!(msg, SessionMsg::Hold { .. }));
    assert!(matches!(net.outcome(0), Some(Outcome::Completed { .. })));
    assert_eq!(net.worker(A).pins().len(), 1);
    net.fire(A, SessionTimer::Lease);
    net.fire(A, SessionTimer::Lease);
    assert_eq!(net.worker(A).pins().len(), 1, "two ticks are not yet enough");
    net.fire(A, SessionTimer::Lease);
    assert!(net.worker(A).pins().is_empty());
}

#[test]
fn results_are_recorded_once_and_bad_input_is_ignored() {
    let mut net = diverged(chain_x_x());
    net.call(1, Level::Dsrr);
    net.run();
    let result = net
        .sent
        .iter()
        .rev()
        .find(|(_, _, m)| matches!(m, SessionMsg::Result { .. }))
        .cloned()
        .expect("a result was sent");
    net.inject(result.0, result.1, result.2);
    assert_eq!(net.scheduler().recorded().iter().filter(|r| r.req == 1).count(), 1);
    // A repeated call gets the recorded outcome again, and starts nothing.
    let before = net.scheduler().requests()[&(CLIENT, 1)].attempts;
    net.call(1, Level::Dsrr);
    let done = net.queue.pop_back().expect("answered");
    assert!(matches!(done, (SCHEDULER, CLIENT, SessionMsg::Done { req: 1, .. })));
    assert_eq!(net.scheduler().requests()[&(CLIENT, 1)].attempts, before);
    // A trigger of a function the DAG lacks, and a remote read of an unknown session.
    let session = SessionId { scheduler: SCHEDULER, seq: 99 };
    let info = SessionInfo { client: CLIENT, req: 9, level: Level::Dsrr, placement: vec![A, B] };
    let trigger =
        SessionMsg::Trigger { session, info, function: 7, from: None, meta: Meta::default() };
    net.inject(SCHEDULER, A, trigger);
    assert!(net.queue.is_empty());
    let fetch = SessionMsg::Fetch { session, client: CLIENT, key: "x".into(), incarnation: 1 };
    net.inject(B, A, fetch);
    let answer = net.queue.pop_back().expect("answered");
    assert_eq!(answer.2, SessionMsg::Fetched { session, key: "x".into(), pinned: None });
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
    let mut net = Net::new(dag, &[("x", lww(1))], None);
    net.call(0, Level::Lww);
    net.run();
    net.call(1, Level::Dsrr);
    net.run_until(|(_, to, msg)| {
        *to == A && matches!(msg, SessionMsg::Trigger { function: 4, .. })
    });
    // f2 pinned x@1 on A; now x@2 reaches A before f4 runs there.
    net.inject(STORE, A, SessionMsg::Value { key: "x".into(), value: Some(lww(2)) });
    net.run();
    assert_eq!(net.scheduler().requests()[&(CLIENT, 1)].attempts, 1, "no abort needed");
    for function in [2, 4, 5] {
        assert_eq!(net.read(1, function, "x"), Some(lww(1)), "function {function}");
    }
}

#[test]
fn a_dsc_read_depending_on_newer_versions_than_the_session_pinned_aborts() {
    // f0 (on A) reads y; f1 (on B) reads x; f2 (on A) reads y again.
    let dag = Dag::chain(&[&["y"], &["x"], &["y"]]).expect("valid");
    let mut net = causal_net(dag.clone());
    net.call(0, Level::Lww);
    net.run();
    // B's cut gets y@1 and x@2 (which depends on it); A keeps y@0.
    net.put("y", y1(), &[B]);
    net.put("x", x2(), &[B]);
    assert_eq!(net.worker(B).cut()["x"], Some(x2()));
    net.call(1, Level::Dsc);
    let reason = net.run_until_abort();
    assert!(reason.contains("x in this cache conflicts"), "{reason}");
    // Once A has y@1 too, the retry reads one causal cut along the chain.
    net.inject(STORE, A, SessionMsg::Value { key: "y".into(), value: Some(y1()) });
    net.run();
    assert_eq!(net.scheduler().requests()[&(CLIENT, 1)].attempts, 2);
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
    let mut net = diverged(dag);
    net.call(1, Level::Dsrr);
    net.run_dropping(|(_, _, msg)| matches!(msg, SessionMsg::Fetch { .. }));
    // A restarts empty; B re-sends both remote reads, and A answers that the pin is gone.
    net.start(A);
    net.fire(B, SessionTimer::Retry);
    net.run();
    let aborts = net.sent.iter().filter(|(_, _, m)| matches!(m, SessionMsg::Abort { .. })).count();
    assert_eq!(aborts, 1);
    assert!(matches!(net.outcome(1), Some(Outcome::Completed { .. })));
    assert_eq!(net.scheduler().requests()[&(CLIENT, 1)].attempts, 2);
}

#[test]
fn branches_carrying_different_runs_of_one_function_conflict_except_at_lww() {
    // f0 ran twice in one session (a re-sent trigger after its worker restarted) and read x
    // at different versions; each branch carries one run.
    let run = |time| Meta {
        log: vec![Read { function: 0, key: "x".into(), value: Some(lww(time)) }],
        ..Meta::default()
    };
    for level in [Level::Dsrr, Level::SingleKey, Level::MultiKey, Level::Dsc] {
        let mut meta = run(1);
        assert_eq!(meta.join(run(2), level), Err("x".to_owned()), "{level:?}");
        let mut same = run(1);
        assert_eq!(same.join(run(1), level), Ok(()), "{level:?}: one run seen twice");
    }
    let mut lww_meta = run(1);
    assert_eq!(lww_meta.join(run(2), Level::Lww), Ok(()));
}
