//! The session world: the whole system. A scheduler; 2–4 workers, each a real cache with its
//! session layer and 1–2 executors; 1–3 storage nodes at replication 1–2; and a writer — an
//! application with its KVS client — updating every key the DAGs read. The DAG is a chain, a
//! diamond or a fan-in over keys `x`, `y`, `z`, whose sink writes a key of the call's own;
//! 3–6 calls run at random levels — LWW, DSRR or SK over LWW values, or SK, MK or DSC over
//! causal values, where each of the writer's puts depends on the one before it. Workers crash
//! and restart empty (their caches and pins with them).
//!
//! History: every recorded result's reads (one transaction per DAG execution, with its DAG's
//! paths) and its sink's write at LWW and DSRR, the writer's puts, and what the storage nodes
//! settled on. (A causal sink write is judged by `SESS-W` instead: two attempts of one call
//! write concurrent versions, whose join no single write made.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use squall_proto::NodeId;
use squall_proto::cache::CacheConfig;
use squall_proto::kvs::{
    ClientConfig, Durability, Op as KvsOp, Outcome as KvsOutcome, Ring, ScriptConfig, StorageConfig,
};
use squall_proto::lattice::{
    Dependencies, LatticeValue, Lww, MultiKeyCausal, Stamp, VectorClock, WriterId,
};
use squall_proto::session::{
    Call, Dag, Function, Level as SessionLevel, Outcome, Recorded, SchedulerConfig, SessionMsg,
    Write, invariants,
};
use squall_proto::sim::{Faults, Sim};
use squall_proto::worker::{
    ScriptedWorkerConfig, Step, SystemConfig, SystemMsg, SystemNode, WorkerConfig,
};

use super::{
    Mutant, Partition, Timing, Versions, WorldReport, faults, judge, liveness, protocol_checks,
    rng, safety,
};
use crate::history::{Held, History, KeyKind, Level, Op, Status};

const SCHEDULER: NodeId = NodeId(0);
const WRITER: NodeId = NodeId(1);
const CLIENT: NodeId = NodeId(2);
const FIRST_STORAGE: u64 = 3;
const FIRST_WORKER: u64 = 10;
const FIRST_EXECUTOR: u64 = 100;
const KEYS: [&str; 3] = ["x", "y", "z"];
const SAFETY_STEPS: u64 = 5_000;
const LIVENESS_STEPS: u64 = 400_000;

/// The DAG of shape `shape` for call `req`: its sink writes `out-<req>`.
fn dag(shape: usize, req: u64) -> (&'static str, Dag) {
    let sink = format!("sink{req}");
    let dag = match shape {
        0 => (
            "chain",
            Dag::chain(&[&["x"], &["x", "y"], &["y", "z"]]).map(|d| rename_sink(d, &sink)),
        ),
        1 => (
            "diamond",
            Dag::new(vec![
                Function::new("f0", &["x"], &[1, 2]),
                Function::new("f1", &["x", "y"], &[3]),
                Function::new("f2", &["y", "z"], &[3]),
                Function::new(&sink, &["x", "y", "z"], &[]),
            ]),
        ),
        _ => (
            "fan-in",
            Dag::new(vec![
                Function::new("f0", &["x", "z"], &[2]),
                Function::new("f1", &["y"], &[2]),
                Function::new(&sink, &["x", "y", "z"], &[]),
            ]),
        ),
    };
    (dag.0, dag.1.expect("the generated DAGs are valid"))
}

/// `dag` with its sink named `sink`.
fn rename_sink(dag: Dag, sink: &str) -> Dag {
    let mut functions = dag.functions().to_vec();
    let last = dag.sink() as usize;
    functions[last].name = sink.to_owned();
    Dag::new(functions).expect("renaming keeps a DAG valid")
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
        0 | 1 => Dependencies::default(),
        _ => Dependencies::new([(key_of(n - 1).to_owned(), clock(n - 1))]),
    };
    LatticeValue::MultiKeyCausal(MultiKeyCausal::new(clock(n), deps, Bytes::from(n.to_string())))
}

/// The key of the writer's `n`-th put (from 1: every key starts without a value).
fn key_of(n: u64) -> &'static str {
    KEYS[(n % 3) as usize]
}

/// What call `req`'s sink writes at a level that takes plain writes: an LWW value only it
/// writes (retries write it again, which changes nothing).
fn sink_value(req: u64) -> LatticeValue {
    LatticeValue::Lww(Lww::new(Stamp::new(1_000 + req, WriterId(CLIENT.0)), Bytes::from("out")))
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

/// What a seed drew.
struct Draw {
    causal: bool,
    shape: usize,
    storages: Vec<NodeId>,
    replication: usize,
    workers: Vec<(NodeId, Vec<NodeId>)>,
    levels: &'static [SessionLevel],
    calls: Vec<Call>,
    writes: Vec<(String, LatticeValue)>,
}

impl Draw {
    fn new(rng: &mut ChaCha8Rng) -> Self {
        let causal = rng.random_bool(0.5);
        let shape = rng.random_range(0..3);
        let storages: Vec<NodeId> =
            (0..rng.random_range(1..=3)).map(|i| NodeId(FIRST_STORAGE + i)).collect();
        let replication = rng.random_range(1..=storages.len().min(2));
        let mut next_executor = FIRST_EXECUTOR;
        let workers = (0..rng.random_range(2..=4))
            .map(|i| {
                let executors = (0..rng.random_range(1..=2))
                    .map(|_| {
                        next_executor += 1;
                        NodeId(next_executor)
                    })
                    .collect();
                (NodeId(FIRST_WORKER + i), executors)
            })
            .collect();
        let levels: &'static [SessionLevel] = if causal {
            &[SessionLevel::SingleKey, SessionLevel::MultiKey, SessionLevel::Dsc]
        } else {
            &[SessionLevel::Lww, SessionLevel::Dsrr, SessionLevel::SingleKey]
        };
        let calls = (0..rng.random_range(3..=6))
            .map(|req| {
                let level = levels[rng.random_range(0..levels.len())];
                Call { client: CLIENT, req, level, dag: dag(shape, req).1, args: Vec::new() }
            })
            .collect();
        let puts = rng.random_range(6..=9u64);
        let writes = (1..=puts).map(|n| (key_of(n).to_owned(), value(causal, n))).collect();
        Self { causal, shape, storages, replication, workers, levels, calls, writes }
    }

    /// How the writer puts: LWW values at `all`; causal ones at `one`, so one replica may
    /// get a version before its dependency (through gossip) and a cache fetching from it holds
    /// a torn pair its causal cut must not expose.
    fn durability(&self) -> Durability {
        if self.causal { Durability::One } else { Durability::All }
    }

    /// The body of call `req`'s sink: a write of `out-<req>`, plain or causal by its level.
    fn sink_body(req: u64, level: SessionLevel) -> Vec<Step> {
        let key = format!("out-{req}");
        let write = match level {
            SessionLevel::Lww | SessionLevel::Dsrr => Write::Value(sink_value(req)),
            _ => Write::Causal(Bytes::from(format!("out {req}"))),
        };
        vec![Step::Put(key, write)]
    }

    /// Every node's configuration.
    fn configs(&self, mutant: Option<Mutant>, late: &[Call]) -> Vec<(NodeId, SystemConfig)> {
        let session_mutant = match mutant {
            Some(Mutant::Session(m)) => Some(m),
            _ => None,
        };
        let ring = Ring::with_members(16, self.storages.iter().copied());
        let worker_ids: Vec<NodeId> = self.workers.iter().map(|(id, _)| *id).collect();
        let mut scheduler = SchedulerConfig::new(SCHEDULER, worker_ids);
        scheduler.calls = self.calls.clone();
        scheduler.max_attempts = 4;
        // The simulator fires timers as often as it delivers messages: a session gets many
        // ticks.
        scheduler.deadline_ticks = 40;
        scheduler.mutant = session_mutant;
        let mut configs = vec![(SCHEDULER, SystemConfig::Scheduler(scheduler))];
        let bodies: BTreeMap<String, Vec<Step>> = self
            .calls
            .iter()
            .chain(late)
            .map(|call| (format!("sink{}", call.req), Self::sink_body(call.req, call.level)))
            .collect();
        for (id, executors) in &self.workers {
            let mut cache = CacheConfig::new(*id, ring.clone(), self.replication);
            cache.mutant = match mutant {
                Some(Mutant::Cache(m)) => Some(m),
                _ => None,
            };
            let mut worker = WorkerConfig::new(cache, SCHEDULER, executors.clone());
            // Pins are checked after every step: a lease could expire a running session's pin
            // (which only aborts it). The pin lease has its own unit test.
            worker.session.pin_lease = None;
            worker.session.mutant = session_mutant;
            let cfg = ScriptedWorkerConfig { worker, bodies: bodies.clone() };
            configs.push((*id, SystemConfig::Worker(cfg)));
        }
        for &id in &self.storages {
            let mut storage = StorageConfig::new(id, ring.clone(), self.replication);
            storage.lease_period = Some(Duration::from_secs(3));
            storage.mutant = match mutant {
                Some(Mutant::Kvs(m)) => Some(m),
                _ => None,
            };
            configs.push((id, SystemConfig::Storage(storage)));
        }
        let mut writer = ClientConfig::new(WRITER, ring, self.replication);
        writer.max_attempts = 1_000;
        writer.retry_after = Duration::from_millis(50);
        let durability = self.durability();
        let ops = self
            .writes
            .iter()
            .map(|(key, value)| KvsOp::Put { key: key.clone(), value: value.clone(), durability })
            .collect();
        configs.push((WRITER, SystemConfig::Client(ScriptConfig::new(writer, ops))));
        configs
    }
}

/// Runs the session world of `seed`.
pub fn run(seed: u64, mutant: Option<Mutant>) -> WorldReport {
    let mut rng = rng(seed);
    let draw = Draw::new(&mut rng);
    let late_from = draw.calls.len() as u64;
    let late = late_calls(&draw, late_from);
    let configs = draw.configs(mutant, &late);
    let (shape, _) = dag(draw.shape, 0);
    let setup = format!(
        "{shape} DAG on {} workers over {} storage nodes (replication {}), {} calls ({}), {} {} writes",
        draw.workers.len(),
        draw.storages.len(),
        draw.replication,
        draw.calls.len(),
        draw.calls.iter().map(|c| c.level.name()).collect::<Vec<_>>().join(" "),
        draw.writes.len(),
        if draw.causal { "causal" } else { "LWW" },
    );
    let mut faults = faults(&mut rng, 4);
    let calm_from = storm(&mut rng, &mut faults);
    let all: Vec<NodeId> = configs.iter().map(|(id, _)| *id).collect();
    let partition = Partition::draw(&mut rng, &all, SAFETY_STEPS);
    let timing = Timing::draw(&mut rng);
    let setup = format!("{setup}; {}", timing.name());
    let workers: Vec<NodeId> = draw.workers.iter().map(|(id, _)| *id).collect();
    let mut sim: Sim<SystemNode> = Sim::new(seed, faults, configs);
    sim.set_crashable(workers.iter().copied());
    timing.apply(&mut sim);

    let mut times = Times::default();
    let mut after_step = |sim: &Sim<SystemNode>, _| {
        times.record(sim);
        broken(sim)
    };
    let phase = safety(&mut sim, SAFETY_STEPS, partition.as_ref(), calm_from, &mut after_step);
    let mut failure = phase.failure;
    if failure.is_none() {
        failure = liveness(&mut sim, LIVENESS_STEPS, settled, &mut after_step);
    }
    if failure.is_none() && protocol_checks() && !invariants::no_leaked_pins(&sim.states()) {
        failure = Some(("liveness", format!("{} broken once settled", invariants::NO_LEAKED_PINS)));
    }
    // Late calls arrive once the system settled: on a healed network with no more writes, each
    // must complete.
    let mut late_at = 0;
    if failure.is_none() {
        late_at = sim.trace().len() as u64;
        for call in &late {
            let Call { req, level, dag, args, .. } = call.clone();
            let msg = SessionMsg::Call { req, level, dag, args };
            sim.inject(CLIENT, SCHEDULER, SystemMsg::Session(msg));
        }
        failure = liveness(&mut sim, LIVENESS_STEPS, settled, &mut after_step);
    }
    let Some(SystemNode::Scheduler(scheduler)) = sim.node(SCHEDULER) else {
        unreachable!("the scheduler never crashes")
    };
    if failure.is_none() {
        failure = unfinished(scheduler, late_from).map(|what| ("liveness", what));
    }
    let completed = scheduler
        .requests()
        .values()
        .filter(|r| matches!(r.outcome, Some(Outcome::Completed { .. })))
        .count();
    let mut history =
        HistoryBuilder { draw: &draw, versions: Versions::default(), history: History::default() };
    history.writer_puts(&times);
    history.results(scheduler.recorded(), &times, late_from, late_at);
    if failure.is_none() {
        history.settled(&sim);
    }
    let history = history.history;
    if failure.is_none() {
        failure = judge(&history).map(|what| ("history", what));
    }
    WorldReport::new(
        "session",
        format!("{setup}; {completed} of {} calls completed", draw.calls.len() + late.len()),
        &sim,
        phase.partitioned,
        history,
        failure,
    )
}

/// Half the seeds are storms: many duplicates, more crashes, and most of what a worker was
/// sent before a crash arriving again after its restart (a re-sent trigger of a session that
/// already ended, a stale acknowledgement overtaking the restarted worker's new hold). A storm
/// passes before the phase ends: returns the step from which crashes stop (restarts, replays
/// and the network's faults go on), so what a restarted worker did wrong is not wiped out by
/// its next crash before it is judged.
fn storm(rng: &mut ChaCha8Rng, faults: &mut Faults) -> Option<u64> {
    if !rng.random_bool(0.5) {
        return None;
    }
    faults.duplicate_per_mille = rng.random_range(200..=500);
    faults.drop_per_mille = rng.random_range(100..=300);
    faults.crash_per_mille = 8;
    faults.restart_per_mille = 80;
    faults.replay_per_mille = rng.random_range(300..=1000);
    Some(SAFETY_STEPS * 3 / 5)
}

/// The late calls, one per level drawn, numbered from `late_from`: they arrive once the
/// system settled (their sinks' bodies are configured from the start).
fn late_calls(draw: &Draw, late_from: u64) -> Vec<Call> {
    draw.levels
        .iter()
        .enumerate()
        .map(|(i, &level)| {
            let req = late_from + i as u64;
            Call { client: CLIENT, req, level, dag: dag(draw.shape, req).1, args: Vec::new() }
        })
        .collect()
}

/// Whether the system has settled: every node up and idle.
fn settled(sim: &Sim<SystemNode>) -> bool {
    invariants::quiescent(&sim.states())
}

/// A request that never ended, or a late one (on a settled system) that did not complete.
fn unfinished(scheduler: &squall_proto::session::Scheduler, late_from: u64) -> Option<String> {
    if let Some(((_, req), _)) = scheduler.requests().iter().find(|(_, r)| r.outcome.is_none()) {
        return Some(format!("request {req} never ended"));
    }
    scheduler
        .requests()
        .iter()
        .find(|((_, req), r)| {
            *req >= late_from && !matches!(r.outcome, Some(Outcome::Completed { .. }))
        })
        .map(|((_, req), r)| format!("late request {req} on a settled system: {:?}", r.outcome))
}

/// When each of the writer's puts was acknowledged, and each result recorded (simulator
/// events).
#[derive(Default)]
struct Times {
    acked: Vec<u64>,
    recorded: Vec<u64>,
}

impl Times {
    fn record(&mut self, sim: &Sim<SystemNode>) {
        let now = sim.trace().len() as u64;
        if let Some(SystemNode::Client(writer)) = sim.node(WRITER) {
            while self.acked.len() < writer.outcomes().len() {
                let ok = writer.outcomes()[self.acked.len()] == KvsOutcome::Written;
                self.acked.push(if ok { now } else { u64::MAX });
            }
        }
        if let Some(SystemNode::Scheduler(scheduler)) = sim.node(SCHEDULER) {
            while self.recorded.len() < scheduler.recorded().len() {
                self.recorded.push(now);
            }
        }
    }
}

/// The history of a run, built from what the nodes recorded.
struct HistoryBuilder<'a> {
    draw: &'a Draw,
    versions: Versions,
    history: History,
}

impl HistoryBuilder<'_> {
    /// The writer's puts that were made: put `n` (from 1) is version `n`.
    fn writer_puts(&mut self, times: &Times) {
        let draw = self.draw;
        if draw.causal {
            self.history.kinds = KEYS.iter().map(|k| ((*k).to_owned(), KeyKind::Causal)).collect();
        }
        for (i, (key, value)) in draw.writes.iter().enumerate() {
            let version = i as u64 + 1;
            self.versions.add(key, value.clone(), version);
            // The writer puts one at a time: put `i` was made only once `i - 1` ended (a run
            // stopped at a failure leaves the rest never issued, which are not operations).
            if i > times.acked.len() {
                continue;
            }
            let invoke = if i == 0 { 0 } else { times.acked.get(i - 1).copied().unwrap_or(0) };
            let complete = times.acked.get(i).copied().filter(|t| *t != u64::MAX);
            let status = if complete.is_some() { Status::Ok } else { Status::Unknown };
            let level = match draw.durability() {
                Durability::One => Level::One,
                _ => Level::All,
            };
            let mut op = Op::write(WRITER.0, 1_000_000 + version, level, key, version);
            if draw.causal && version > 1 {
                op.deps = vec![(key_of(version - 1).to_owned(), version - 1)];
            }
            self.history.ops.push(op.at(invoke, complete).with_status(status));
        }
    }

    /// Every recorded result: its reads, and its sink's plain write.
    fn results(&mut self, recorded: &[Recorded], times: &Times, late_from: u64, late_at: u64) {
        let mut next_out = 2_000_000;
        for (txn, result) in recorded.iter().enumerate() {
            let txn = txn as u64 + 1;
            let dag = dag(self.draw.shape, result.req).1;
            let functions = dag.len() as u32;
            let pairs: BTreeSet<(String, String)> = (0..functions)
                .flat_map(|f| (0..functions).map(move |g| (f, g)))
                .filter(|&(f, g)| dag.precedes(f, g))
                .map(|(f, g)| (dag.function(f).name.clone(), dag.function(g).name.clone()))
                .collect();
            self.history.precedes.insert(txn, pairs);
            // A DAG execution's operations are invoked when its call was (configured calls at
            // the start, late ones when injected) and complete when its result is recorded.
            let invoke = if result.req >= late_from { late_at } else { 0 };
            let complete = times.recorded.get(txn as usize - 1).copied();
            let session = result.client.0;
            let lvl = level(result.level);
            for read in &result.log {
                let version = read.value.as_ref().map_or(0, |v| self.versions.of(&read.key, v));
                let function = &dag.function(read.function).name;
                let op = Op::read(session, txn, lvl, &read.key, version);
                self.history.ops.push(op.by(function).at(invoke, complete));
            }
            for write in result.writes.iter().filter(|_| matches!(lvl, Level::Lww | Level::Dsrr)) {
                let Some(value) = &write.value else { continue };
                let version = match self.versions.known(&write.key, value) {
                    Some(version) => version,
                    None => {
                        next_out += 1;
                        self.versions.add(&write.key, value.clone(), next_out);
                        next_out
                    }
                };
                let function = &dag.function(write.function).name;
                let op = Op::write(session, txn, lvl, &write.key, version);
                self.history.ops.push(op.by(function).at(invoke, complete));
            }
        }
    }

    /// What every replica of each key the history has holds, once settled.
    fn settled(&mut self, sim: &Sim<SystemNode>) {
        let keys: BTreeSet<String> = self.history.ops.iter().map(|op| op.key.clone()).collect();
        let ring = Ring::with_members(16, self.draw.storages.iter().copied());
        for key in keys {
            for replica in ring.responsible(&key, self.draw.replication) {
                let Some(SystemNode::Storage(storage)) = sim.node(replica) else { continue };
                let version = storage.store().get(&key).map_or(0, |v| self.versions.of(&key, v));
                self.history.settled.push(Held { replica: replica.0, key: key.clone(), version });
            }
        }
    }
}

/// The session invariants broken now, as "ID, ID broken", if any.
fn broken(sim: &Sim<SystemNode>) -> Option<String> {
    let ids = invariants::broken(&sim.states(), sim.messages());
    (!ids.is_empty()).then(|| format!("{} broken", ids.join(", ")))
}
