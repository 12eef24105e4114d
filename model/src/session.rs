//! The session models: the whole system at small bounds — a storage node, two workers each
//! with its real cache and session layer, a scheduler, and a concurrent writer that is an
//! application with its KVS client — over a duplicating, reordering network.
//!
//! Node 0 is the scheduler, nodes 1 and 2 the workers (`f0` runs on 1, `f1` on 2), node 3 the
//! storage node (replication 1) and node 4 the writer. `f0` reads `x`; `f1` reads `x` (and, in
//! the causal model, `y`), so `f1` must repeat `f0`'s read of `x` from worker 1's pin. Caches
//! start cold: each function's read is a fetch from the storage node, which then pushes the
//! writer's updates to the subscribed caches, in any order, any number of times. The writer
//! puts `x` (and, in the causal model, first `y`, on which the new `x` depends) while the
//! session runs, so the two caches can hold different versions. Every timer fires at any
//! moment: the scheduler's deadline aborts the session (at most two attempts), the storage
//! node's lease checks drop subscriptions the caches then renew, the workers' retries re-send.
//! In `dsrr-crash`, worker 1 may also crash once and restart empty, losing its pins and its
//! cache. The models run without a pin lease: pins go only when the scheduler releases them.
//!
//! Properties: the session invariants, and the cache invariants over the workers' caches (the
//! KVS's own are the `kvs` models'), each shown to fail under a seeded defect.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use squall_proto::NodeId;
use squall_proto::cache;
use squall_proto::cache::{CacheConfig, invariants as cache_invariants};
use squall_proto::kvs::{ClientConfig, Durability, Op, Ring, ScriptConfig, StorageConfig};
use squall_proto::lattice::{
    Dependencies, LatticeValue, Lww, MultiKeyCausal, Stamp, VectorClock, WriterId,
};
use squall_proto::mutants::Mutant;
use squall_proto::session::Write;
use squall_proto::session::{self, Call, Dag, Level, SchedulerConfig, invariants};
use squall_proto::worker::{ScriptedWorkerConfig, Step, SystemConfig, SystemNode, WorkerConfig};
use stateright::Expectation;
use stateright::actor::{ActorModel, ActorModelState, LossyNetwork, Network};

use crate::Depth;
use crate::adapter::{Adapter, no_step_violation, node_states};

/// The node type the models run.
pub type SessionActor = Adapter<SystemNode>;
/// A Stateright session model.
pub type SessionModel = ActorModel<SessionActor, (), ()>;

const SCHEDULER: NodeId = NodeId(0);
const WORKER_0: NodeId = NodeId(1);
const WORKER_1: NodeId = NodeId(2);
const STORAGE: NodeId = NodeId(3);
const WRITER: NodeId = NodeId(4);
/// The client the model's call is recorded for (not an actor: the scheduler starts the call).
const CLIENT: NodeId = NodeId(9);
/// Each worker's one executor (inside the worker: never an actor).
const EXECUTOR: NodeId = NodeId(100);

/// Which session model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// `dsrr`: LWW values, a DSRR call, one attempt, a concurrent writer.
    Dsrr,
    /// `dsrr-retry`: a DSRR call of two attempts over values nobody writes.
    DsrrRetry,
    /// `dsrr-crash`: the `dsrr` model, and worker 1 may crash and restart once.
    DsrrCrash,
    /// `causal`: multi-key causal values, a DSC call whose sink writes causally.
    Causal,
    /// `sk`: an SK call over causal values, the downstream worker's cache warm and stale.
    SingleKey,
}

impl Scenario {
    /// Every session model.
    pub const ALL: [Scenario; 5] = [
        Scenario::Dsrr,
        Scenario::DsrrRetry,
        Scenario::DsrrCrash,
        Scenario::Causal,
        Scenario::SingleKey,
    ];

    /// The model's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Dsrr => "dsrr",
            Scenario::DsrrRetry => "dsrr-retry",
            Scenario::DsrrCrash => "dsrr-crash",
            Scenario::Causal => "causal",
            Scenario::SingleKey => "sk",
        }
    }

    /// One line for `list`.
    pub fn about(self) -> &'static str {
        match self {
            Scenario::Dsrr => {
                "a DSRR call of f0(x) → f1(x) on two workers' caches over a storage node, a concurrent writer"
            }
            Scenario::DsrrRetry => {
                "the dsrr call with no writer, and a deadline that may abort its first attempt"
            }
            Scenario::DsrrCrash => {
                "the dsrr model, and the worker holding f0's pins may crash once"
            }
            Scenario::Causal => {
                "a DSC call of f0(x) → f1(x, y) writing z, over causal values; x's new version depends on y's"
            }
            Scenario::SingleKey => {
                "an SK call of f0(x) → f1(x) over causal values; f1's worker holds x from before the write"
            }
        }
    }

    /// What the everyday bounds leave out of the deep ones.
    pub fn everyday(self) -> Option<&'static str> {
        match self {
            Scenario::Dsrr | Scenario::DsrrRetry | Scenario::SingleKey => None,
            Scenario::DsrrCrash => {
                Some("runs that send at most 13 distinct messages; deep: unbounded")
            }
            Scenario::Causal => Some(
                "an aborted session's runs send at most 13 distinct messages; deep: 16, as \
                 every run",
            ),
        }
    }

    /// The scenario of a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

fn lww(time: u64, writer: u64) -> LatticeValue {
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(writer)), Bytes::from_static(b"v")))
}

fn causal(clock: &[(u64, u64)], deps: &[(&str, &[(u64, u64)])]) -> LatticeValue {
    let clock_of = |c: &[(u64, u64)]| VectorClock::new(c.iter().map(|&(w, n)| (WriterId(w), n)));
    let deps = Dependencies::new(deps.iter().map(|(k, c)| ((*k).to_owned(), clock_of(c))));
    LatticeValue::MultiKeyCausal(MultiKeyCausal::new(
        clock_of(clock),
        deps,
        Bytes::from_static(b"v"),
    ))
}

/// The configurations of every node, indexed by node id. A session mutant goes to the
/// scheduler and both workers' session layers, a cache mutant to both caches, a storage one to
/// the storage node.
pub fn configs(scenario: Scenario, mutant: Option<Mutant>) -> Vec<SystemConfig> {
    let (dag, level, puts) = match scenario {
        Scenario::Dsrr | Scenario::DsrrCrash => {
            (Dag::chain(&[&["x"], &["x"]]), Level::Dsrr, vec![("x", lww(2, 4))])
        }
        Scenario::DsrrRetry => (Dag::chain(&[&["x"], &["x"]]), Level::Dsrr, Vec::new()),
        Scenario::Causal => (
            Dag::chain(&[&["x"], &["x", "y"]]),
            Level::Dsc,
            vec![("y", causal(&[(4, 1)], &[])), ("x", causal(&[(4, 2)], &[("y", &[(4, 1)])]))],
        ),
        Scenario::SingleKey => {
            (Dag::chain(&[&["x"], &["x"]]), Level::SingleKey, vec![("x", causal(&[(4, 1)], &[]))])
        }
    };
    let dag = dag.expect("a valid chain");
    let session_mutant = match mutant {
        Some(Mutant::Session(m)) => Some(m),
        _ => None,
    };
    let mut scheduler = SchedulerConfig::new(SCHEDULER, vec![WORKER_0, WORKER_1]);
    scheduler.calls = vec![Call { client: CLIENT, req: 0, level, dag, args: Vec::new() }];
    // Retries are the `dsrr-retry` model's business: a second attempt over a concurrent writer
    // multiplies the states past what a test can search (the simulator and a unit test retry
    // after crashes and under writes).
    scheduler.max_attempts = if scenario == Scenario::DsrrRetry { 2 } else { 1 };
    // Any `Deadline` tick may abort the session: the model fires timers at any moment anyway.
    scheduler.deadline_ticks = 1;
    scheduler.mutant = session_mutant;
    // The causal sink writes `z`, a value that must carry what the session read (SESS-W).
    let bodies = match scenario {
        Scenario::Causal => BTreeMap::from([(
            "f1".to_owned(),
            vec![Step::Put("z".into(), Write::Causal(Bytes::from_static(b"w")))],
        )]),
        _ => BTreeMap::new(),
    };
    let ring = Ring::with_members(4, [STORAGE]);
    let worker = |id| {
        let mut cache = CacheConfig::new(id, ring.clone(), 1);
        cache.max_attempts = 1;
        // Nothing is lost here, so nothing needs renewing: leases and renewals are the cache
        // model's business (and multiply these states many times over).
        cache.renew_period = None;
        cache.mutant = match mutant {
            Some(Mutant::Cache(m)) => Some(m),
            _ => None,
        };
        let mut worker = WorkerConfig::new(cache, SCHEDULER, vec![EXECUTOR]);
        worker.session.pin_lease = None;
        worker.session.mutant = session_mutant;
        // In the `sk` model worker 2 starts warm: it fetches `x` at once, so it may hold an
        // older `x` than `f0` reads, which `f1` must not read (SESS-SK).
        if scenario == Scenario::SingleKey && id == WORKER_1 {
            worker.warm = vec!["x".into()];
        }
        SystemConfig::Worker(ScriptedWorkerConfig { worker, bodies: bodies.clone() })
    };
    let mut storage = StorageConfig::new(STORAGE, ring.clone(), 1);
    storage.lease_period = None;
    storage.mutant = match mutant {
        Some(Mutant::Kvs(m)) => Some(m),
        _ => None,
    };
    let mut writer = ClientConfig::new(WRITER, ring.clone(), 1);
    writer.max_attempts = 1;
    writer.retry_after = Duration::from_millis(100);
    let ops: Vec<Op> = puts
        .into_iter()
        .map(|(key, value)| Op::Put { key: key.into(), value, durability: Durability::One })
        .collect();
    let mut nodes = vec![
        SystemConfig::Scheduler(scheduler),
        worker(WORKER_0),
        worker(WORKER_1),
        SystemConfig::Storage(storage),
    ];
    if !ops.is_empty() {
        nodes.push(SystemConfig::Client(ScriptConfig::new(writer, ops)));
    }
    nodes
}

/// Only worker 0 crashes, at most once.
fn worker_0_crashes_at_most_once(_: &(), state: &ActorModelState<SessionActor>) -> bool {
    let worker = usize::try_from(WORKER_0.0).expect("small id");
    let others_up = state.crashed.iter().enumerate().all(|(i, down)| i == worker || !down);
    let restarts =
        state.actor_storages[worker].as_ref().map_or(0, |s| s.incarnation.saturating_sub(1));
    others_up && restarts + u32::from(state.crashed[worker]) <= 1
}

/// The model of `scenario` with its properties.
pub fn model(scenario: Scenario, depth: Depth, mutant: Option<Mutant>) -> SessionModel {
    let model = ActorModel::new((), ())
        .actors(configs(scenario, mutant).into_iter().map(|cfg| Adapter { cfg }))
        .init_network(Network::new_unordered_duplicating([]))
        .lossy_network(LossyNetwork::No);
    let model = match scenario {
        Scenario::DsrrCrash if depth == Depth::Everyday => {
            model.max_crashes(1).within_boundary(worker_0_crashes_once_within_13_messages)
        }
        Scenario::DsrrCrash => model.max_crashes(1).within_boundary(worker_0_crashes_at_most_once),
        Scenario::Causal if depth == Depth::Everyday => {
            model.within_boundary(at_most_16_messages_or_13_if_aborted)
        }
        Scenario::Causal => model.within_boundary(at_most_16_messages),
        Scenario::SingleKey => model.within_boundary(at_most_12_messages),
        _ => model,
    };
    let model = model.property(Expectation::Sometimes, "SESS-L1 a result is recorded", |m, s| {
        invariants::some_result(&node_states(m, s))
    });
    // Without a writer, nothing can make a cache wrong or a read unrepeatable: `dsrr-retry`
    // leaves those properties to the other models.
    let model = match scenario {
        Scenario::DsrrRetry => model,
        _ => model
            .property(
                Expectation::Always,
                "CACHE-I1 a cache holds and returns only joins of written values",
                |m, s| cache_invariants::no_thin_air(&node_states(m, s)),
            )
            .property(
                Expectation::Always,
                "CACHE-I2 a cached value never goes backwards",
                |_, s| no_step_violation(s, cache_invariants::MONOTONE_READS),
            )
            .property(
                Expectation::Always,
                "CACHE-I3 once quiescent, every subscribed cached key equals the KVS value",
                |m, s| cache_invariants::fresh_when_quiescent(&node_states(m, s)),
            ),
    };
    let model = match scenario {
        Scenario::Dsrr | Scenario::DsrrCrash => model.property(
            Expectation::Always,
            "SESS-I1 every completed session read one version per key",
            |m, s| invariants::levels_hold(&node_states(m, s), invariants::REPEATABLE_READ),
        ),
        _ => model,
    };
    let model = match scenario {
        Scenario::Dsrr | Scenario::DsrrCrash | Scenario::DsrrRetry => model
            .property(
                Expectation::Always,
                "SESS-I2 a pinned version stays pinned while its session can read it",
                |m, s| {
                    let in_flight = s.network.iter_all().map(|e| &**e.msg);
                    invariants::pins_held(&node_states(m, s), in_flight)
                },
            )
            .property(Expectation::Always, "SESS-I3 after quiescence no pin remains", |m, s| {
                invariants::no_leaked_pins(&node_states(m, s))
            }),
        Scenario::Causal => model
            .property(
                Expectation::Always,
                "SESS-SK a key's versions never go backwards along the DAG",
                |m, s| invariants::levels_hold(&node_states(m, s), invariants::SINGLE_KEY),
            )
            .property(Expectation::Always, "SESS-MK each function reads a causal cut", |m, s| {
                invariants::levels_hold(&node_states(m, s), invariants::MULTI_KEY)
            })
            .property(
                Expectation::Always,
                "SESS-DSC downstream reads repeat upstream reads and cover their dependencies",
                |m, s| invariants::levels_hold(&node_states(m, s), invariants::DISTRIBUTED_CAUSAL),
            )
            .property(
                Expectation::Always,
                "SESS-W a causal write covers what its session read",
                |m, s| invariants::levels_hold(&node_states(m, s), invariants::CAUSAL_WRITES),
            ),
        Scenario::SingleKey => model.property(
            Expectation::Always,
            "SESS-SK a key's versions never go backwards along the DAG",
            |m, s| invariants::levels_hold(&node_states(m, s), invariants::SINGLE_KEY),
        ),
    };
    // Retries: only `dsrr-retry` runs two attempts.
    match scenario {
        Scenario::DsrrRetry => model
            .property(
                Expectation::Always,
                "SESS-I4 a request fails only after its last attempt aborted",
                |m, s| invariants::retried(&node_states(m, s)),
            )
            .property(
                Expectation::Always,
                "SESS-I5 every request's result is recorded once",
                |m, s| {
                    invariants::result_once(&node_states(m, s))
                        && no_step_violation(s, invariants::RESULT_ONCE)
                },
            )
            .property(
                Expectation::Sometimes,
                "SESS-L2 a request completes after a session of it aborted",
                |m, s| invariants::completed_after_retry(&node_states(m, s)),
            ),
        _ => model,
    }
}

/// The mutants each scenario catches, by command-line name.
pub fn mutants(scenario: Scenario) -> Vec<(&'static str, Mutant)> {
    use session::Mutant::*;
    let sessions: &[session::Mutant] = match scenario {
        Scenario::Dsrr => {
            &[SkipRemoteRead, ReleaseBeforeSink, IgnoreRelease, EveryFunctionPrecedes]
        }
        Scenario::DsrrRetry => {
            &[PinByClient, IgnoreRelease, RecordEveryResult, GiveUpOnAbort, EveryFunctionPrecedes]
        }
        Scenario::DsrrCrash => {
            &[SkipRemoteRead, ReleaseBeforeSink, IgnoreRelease, EveryFunctionPrecedes, StaleHoldOk]
        }
        // In `causal`, `skip-remote-read` is held back by the upstream snapshot the reads
        // are checked against, and `ignore-frontier` needs longer runs than the bound: `sk`
        // catches the first, the simulator both (impl/tests/session_sim.rs).
        Scenario::Causal => &[ExposeBeforeDeps, EveryFunctionPrecedes, WriteWithoutDeps],
        Scenario::SingleKey => &[SkipRemoteRead, EveryFunctionPrecedes],
    };
    // The caches' properties: every model that checks them shows each can fail.
    // `push-overwrites` needs two writes to one key, which these models do not make: the cache
    // models catch it.
    let caches: &[Mutant] = match scenario {
        Scenario::DsrrRetry => &[],
        _ => &[
            Mutant::Cache(cache::Mutant::CacheMissAsBottom),
            Mutant::Cache(cache::Mutant::IgnorePushes),
        ],
    };
    sessions
        .iter()
        .map(|m| Mutant::Session(*m))
        .chain(caches.iter().copied())
        .map(|m| (m.bare_name(), m))
        .collect()
}

/// The causal model is searched among runs that send at most 16 distinct messages: unbounded,
/// its duplicating network grows past a million states within minutes (the simulator covers
/// longer runs).
fn at_most_16_messages(_: &(), state: &ActorModelState<SessionActor>) -> bool {
    state.network.len() <= 16
}

/// `causal` every day: [`at_most_16_messages`], but a run in which the session is aborted
/// may send at most 13. Aborts are not what this model is about (`dsrr-retry` and
/// `dsrr-crash` check them); they triple its states at 16 messages. Short aborted runs stay:
/// an early abort is the quickest way to a quiescent system, where `ignore-pushes` shows
/// (it needs 12).
fn at_most_16_messages_or_13_if_aborted(_: &(), state: &ActorModelState<SessionActor>) -> bool {
    let scheduler = usize::try_from(SCHEDULER.0).expect("small id");
    let aborted = match &*state.actor_states[scheduler].node {
        SystemNode::Scheduler(s) => s
            .requests()
            .values()
            .any(|r| matches!(r.outcome, Some(session::Outcome::Failed { .. }))),
        _ => false,
    };
    state.network.len() <= if aborted { 13 } else { 16 }
}

/// `dsrr-crash` every day: [`worker_0_crashes_at_most_once`], among runs that send at most 13
/// distinct messages — enough for the crash to strike at every step of the call, and for
/// every mutant of the model to show.
fn worker_0_crashes_once_within_13_messages(
    cfg: &(),
    state: &ActorModelState<SessionActor>,
) -> bool {
    state.network.len() <= 13 && worker_0_crashes_at_most_once(cfg, state)
}

/// The `sk` model is searched among runs that send at most 12 distinct messages: enough for
/// the call to complete over a stale warm cache (and for `skip-remote-read` to show).
fn at_most_12_messages(_: &(), state: &ActorModelState<SessionActor>) -> bool {
    state.network.len() <= 12
}
