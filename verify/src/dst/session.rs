//! The session world: a scheduler, 2–4 workers (caches with executors), the store and a
//! writer updating every key the DAG reads. The DAG is a chain, a diamond or a fan-in over keys
//! `x`, `y`, `z`; 3–6 calls run at random levels — LWW, DSRR or SK over LWW values, or SK, MK
//! or DSC over causal values, where each write depends on the one before it. Workers crash and
//! restart empty. History: every recorded result's reads (one transaction per DAG execution,
//! with its DAG's paths), the writer's puts, and the store's settled values.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use squall_proto::NodeId;
use squall_proto::lattice::{
    Dependencies, LatticeValue, Lww, MultiKeyCausal, Stamp, VectorClock, WriterId,
};
use squall_proto::session::{
    Dag, Function, Level as SessionLevel, Outcome, SchedulerConfig, SessionConfig, SessionMsg,
    SessionNode, StoreConfig, WorkerConfig, WriterConfig, invariants,
};
use squall_proto::sim::Sim;

use super::{
    Mutant, Partition, Timing, Versions, WorldReport, faults, judge, liveness, protocol_checks,
    rng, safety,
};
use crate::history::{Held, History, KeyKind, Level, Op, Status};

const SCHEDULER: NodeId = NodeId(0);
const STORE: NodeId = NodeId(1);
const WRITER: NodeId = NodeId(2);
const CLIENT: NodeId = NodeId(3);
const FIRST_WORKER: u64 = 4;
const KEYS: [&str; 3] = ["x", "y", "z"];
const SAFETY_STEPS: u64 = 4_000;
const LIVENESS_STEPS: u64 = 300_000;

fn dag(shape: usize) -> (&'static str, Dag) {
    let dag = match shape {
        0 => ("chain", Dag::chain(&[&["x"], &["x", "y"], &["y", "z"]])),
        1 => (
            "diamond",
            Dag::new(vec![
                Function::new("f0", &["x"], &[1, 2]),
                Function::new("f1", &["x", "y"], &[3]),
                Function::new("f2", &["y", "z"], &[3]),
                Function::new("f3", &["x", "y", "z"], &[]),
            ]),
        ),
        _ => (
            "fan-in",
            Dag::new(vec![
                Function::new("f0", &["x", "z"], &[2]),
                Function::new("f1", &["y"], &[2]),
                Function::new("f2", &["x", "y", "z"], &[]),
            ]),
        ),
    };
    (dag.0, dag.1.expect("the generated DAGs are valid"))
}

/// The writer's `n`-th value: an LWW value stamped `n`, or a causal one whose clock counts `n`
/// and which depends on write `n - 1`.
fn value(causal: bool, n: u64) -> LatticeValue {
    if !causal {
        let stamp = Stamp::new(n, WriterId(WRITER.0));
        return LatticeValue::Lww(Lww::new(stamp, Bytes::from(n.to_string())));
    }
    let clock = |n: u64| VectorClock::new([(WriterId(WRITER.0), n)]);
    let deps = match n {
        0 => Dependencies::default(),
        _ => Dependencies::new([(key_of(n - 1).to_owned(), clock(n - 1))]),
    };
    LatticeValue::MultiKeyCausal(MultiKeyCausal::new(clock(n), deps, Bytes::from(n.to_string())))
}

/// The key of the writer's `n`-th put (the initial values are puts `0` of every key).
fn key_of(n: u64) -> &'static str {
    KEYS[(n % 3) as usize]
}

fn level(level: SessionLevel) -> Level {
    match level {
        SessionLevel::Lww => Level::Lww,
        SessionLevel::Dsrr => Level::Dsrr,
        SessionLevel::SingleKey => Level::SingleKey,
        SessionLevel::MultiKey => Level::MultiKey,
        SessionLevel::Dsc => Level::Dsc,
    }
}

/// Runs the session world of `seed`.
pub fn run(seed: u64, mutant: Option<Mutant>) -> WorldReport {
    let mut rng = rng(seed);
    let causal = rng.random_bool(0.5);
    let (shape, dag) = dag(rng.random_range(0..3));
    let workers: Vec<NodeId> =
        (0..rng.random_range(2..=4)).map(|i| NodeId(FIRST_WORKER + i)).collect();
    let mutant = match mutant {
        Some(Mutant::Session(m)) => Some(m),
        _ => None,
    };
    let levels: &[SessionLevel] = if causal {
        &[SessionLevel::SingleKey, SessionLevel::MultiKey, SessionLevel::Dsc]
    } else {
        &[SessionLevel::Lww, SessionLevel::Dsrr, SessionLevel::SingleKey]
    };
    let calls: Vec<(NodeId, u64, SessionLevel)> = (0..rng.random_range(3..=6))
        .map(|req| (CLIENT, req, levels[rng.random_range(0..levels.len())]))
        .collect();
    let puts = rng.random_range(6..=9u64);

    let mut versions = Versions::default();
    let mut initial = Vec::new();
    for key in KEYS {
        // Every key starts at the writer's put 0, which the history calls the initial value.
        versions.add(key, value(causal, 0), 0);
        initial.push((key.to_owned(), value(causal, 0)));
    }
    let writes: Vec<(String, LatticeValue)> =
        (1..=puts).map(|n| (key_of(n).to_owned(), value(causal, n))).collect();
    for (n, (key, value)) in writes.iter().enumerate() {
        versions.add(key, value.clone(), n as u64 + 1);
    }

    let mut scheduler = SchedulerConfig::new(SCHEDULER, dag.clone(), workers.clone());
    scheduler.calls = calls.clone();
    scheduler.max_attempts = 4;
    // The simulator fires timers as often as it delivers messages: a session gets many ticks.
    scheduler.deadline_ticks = 40;
    scheduler.mutant = mutant;
    let mut configs = vec![(SCHEDULER, SessionConfig::Scheduler(scheduler))];
    for &id in &workers {
        let mut worker = WorkerConfig::new(id, STORE, SCHEDULER, dag.clone());
        // Pins are checked after every step: a lease could expire a running session's pin
        // (which only aborts it). The pin lease has its own unit test.
        worker.pin_lease = None;
        worker.mutant = mutant;
        configs.push((id, SessionConfig::Worker(worker)));
    }
    let mut store = StoreConfig::new(initial);
    // Lost pushes are made good, as the KVS's acknowledged pushes would: once healed, every
    // cache converges, so sibling branches agree and late calls complete.
    store.refresh = Some(Duration::from_secs(1));
    configs.push((STORE, SessionConfig::Store(store)));
    let writer =
        WriterConfig { store: STORE, puts: writes.clone(), retry_after: Duration::from_millis(50) };
    configs.push((WRITER, SessionConfig::Writer(writer)));

    let setup = format!(
        "{shape} DAG on {} workers, {} calls ({}), {puts} {} writes",
        workers.len(),
        calls.len(),
        calls.iter().map(|c| c.2.name()).collect::<Vec<_>>().join(" "),
        if causal { "causal" } else { "LWW" },
    );
    let mut faults = faults(&mut rng, 4);
    if rng.random_bool(0.5) {
        // A storm: many duplicates, more crashes, and most of what a worker was sent before a
        // crash arriving again after its restart (a re-sent trigger of a session that already
        // ended, a stale acknowledgement overtaking the restarted worker's new hold).
        faults.duplicate_per_mille = rng.random_range(200..=500);
        faults.drop_per_mille = rng.random_range(100..=300);
        faults.crash_per_mille = 8;
        faults.restart_per_mille = 80;
        faults.replay_per_mille = rng.random_range(300..=1000);
    }
    let all: Vec<NodeId> = workers.iter().copied().chain([SCHEDULER, STORE, WRITER]).collect();
    let partition = Partition::draw(&mut rng, &all, SAFETY_STEPS);
    let timing = Timing::draw(&mut rng);
    let setup = format!("{setup}; {}", timing.name());
    let mut sim: Sim<SessionNode> = Sim::new(seed, faults, configs);
    sim.set_crashable(workers.iter().copied());
    timing.apply(&mut sim);

    // When each of the writer's puts was acknowledged, and each result recorded.
    let (mut acked_at, mut recorded_at): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    let mut after_step = |sim: &Sim<SessionNode>, _| {
        let now = sim.trace().len() as u64;
        if let Some(SessionNode::Writer(writer)) = sim.node(WRITER) {
            while acked_at.len() < writer.acked() {
                acked_at.push(now);
            }
        }
        if let Some(SessionNode::Scheduler(scheduler)) = sim.node(SCHEDULER) {
            while recorded_at.len() < scheduler.recorded().len() {
                recorded_at.push(now);
            }
        }
        broken(sim)
    };
    let phase = safety(&mut sim, SAFETY_STEPS, partition.as_ref(), &mut after_step);
    let mut failure = phase.failure;
    if failure.is_none() {
        let settled = |sim: &Sim<SessionNode>| invariants::quiescent(&sim.states());
        failure = liveness(&mut sim, LIVENESS_STEPS, settled, &mut after_step);
    }
    if failure.is_none() && protocol_checks() && !invariants::no_leaked_pins(&sim.states()) {
        failure = Some(("liveness", format!("{} broken once settled", invariants::NO_LEAKED_PINS)));
    }
    // Late calls, one per level, arrive once the cluster settled: on a healed network with no
    // more writes, each must complete.
    let late_from = calls.len() as u64;
    let mut late_at = 0;
    if failure.is_none() {
        late_at = sim.trace().len() as u64;
        for (i, &level) in levels.iter().enumerate() {
            let req = late_from + i as u64;
            sim.inject(CLIENT, SCHEDULER, SessionMsg::Call { req, level });
        }
        let settled = |sim: &Sim<SessionNode>| invariants::quiescent(&sim.states());
        failure = liveness(&mut sim, LIVENESS_STEPS, settled, &mut after_step);
    }
    let Some(SessionNode::Scheduler(scheduler)) = sim.node(SCHEDULER) else {
        unreachable!("the scheduler never crashes")
    };
    if failure.is_none() {
        let unfinished = scheduler.requests().iter().find(|(_, r)| r.outcome.is_none());
        if let Some(((_, req), _)) = unfinished {
            failure = Some(("liveness", format!("request {req} never ended")));
        }
        let late_failed = scheduler.requests().iter().find(|((_, req), r)| {
            *req >= late_from && !matches!(r.outcome, Some(Outcome::Completed { .. }))
        });
        if let Some(((_, req), r)) = late_failed {
            let outcome = &r.outcome;
            failure =
                Some(("liveness", format!("late request {req} on a settled cluster: {outcome:?}")));
        }
    }

    let mut history = History::default();
    if causal {
        history.kinds = KEYS.iter().map(|k| ((*k).to_owned(), KeyKind::Causal)).collect();
    }
    for (n, (key, _)) in writes.iter().enumerate() {
        let version = n as u64 + 1;
        let invoke = if n == 0 { 0 } else { acked_at.get(n - 1).copied().unwrap_or(0) };
        let complete = acked_at.get(n).copied();
        let status = if complete.is_some() { Status::Ok } else { Status::Unknown };
        // The store is the only replica: a write it acknowledged is on every replica.
        let mut op = Op::write(WRITER.0, 1_000_000 + version, Level::All, key, version);
        if causal && version > 1 {
            op.deps = vec![(key_of(version - 1).to_owned(), version - 1)];
        }
        history.ops.push(op.at(invoke, complete).with_status(status));
    }
    let functions = dag.len() as u32;
    let pairs: BTreeSet<(String, String)> = (0..functions)
        .flat_map(|f| (0..functions).map(move |g| (f, g)))
        .filter(|&(f, g)| dag.precedes(f, g))
        .map(|(f, g)| (dag.function(f).name.clone(), dag.function(g).name.clone()))
        .collect();
    let mut completed = 0;
    for (txn, recorded) in scheduler.recorded().iter().enumerate() {
        let txn = txn as u64 + 1;
        history.precedes.insert(txn, pairs.clone());
        // A DAG execution's reads are invoked when its call was (configured calls at the
        // start, late ones when injected) and complete when its result is recorded.
        let invoke = if recorded.req >= late_from { late_at } else { 0 };
        let complete = recorded_at.get(txn as usize - 1).copied();
        for read in &recorded.log {
            let version = read.value.as_ref().map_or(0, |v| versions.of(&read.key, v));
            let function = &dag.function(read.function).name;
            let op = Op::read(recorded.client.0, txn, level(recorded.level), &read.key, version);
            history.ops.push(op.by(function).at(invoke, complete));
        }
    }
    completed += scheduler
        .requests()
        .values()
        .filter(|r| matches!(r.outcome, Some(Outcome::Completed { .. })))
        .count();
    if failure.is_none() {
        if let Some(SessionNode::Store(store)) = sim.node(STORE) {
            for (key, value) in store.data() {
                let version = versions.of(key, value);
                history.settled.push(Held { replica: STORE.0, key: key.clone(), version });
            }
        }
        failure = judge(&history).map(|what| ("history", what));
    }
    WorldReport::new(
        "session",
        format!("{setup}; {completed} of {} calls completed", calls.len() + levels.len()),
        &sim,
        phase.partitioned,
        history,
        failure,
    )
}

/// The session invariants broken now, as "ID, ID broken", if any.
fn broken(sim: &Sim<SessionNode>) -> Option<String> {
    let ids = invariants::broken(&sim.states(), sim.messages());
    (!ids.is_empty()).then(|| format!("{} broken", ids.join(", ")))
}
