//! The session models: a two-function DAG on workers behind two different caches, a
//! concurrent writer, and a lossy, duplicating, reordering network.
//!
//! Node 0 is the scheduler, nodes 1 and 2 the workers (`f0` runs on 1, `f1` on 2), node 3 the
//! store and node 4 the writer. `f0` reads `x`; `f1` reads `x` and `y`, so `f1` must repeat
//! `f0`'s read of `x` from worker 1's pin. The writer updates `x` (and, in the causal model,
//! first `y`, on which the new `x` depends) while the session runs, so the two caches can hold
//! different versions. Any message may be lost; the scheduler's deadline and the workers' retry
//! timers fire at any moment, so sessions abort and retry (at most two attempts) in every
//! interleaving. In `dsrr-crash`, worker 1 may also crash once and restart empty, losing its
//! pins. The models run without a pin lease: pins go only when the scheduler releases them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use squall_proto::NodeId;
use squall_proto::lattice::{
    Dependencies, LatticeValue, Lww, MultiKeyCausal, Stamp, VectorClock, WriterId,
};
use squall_proto::session::{
    Dag, Level, Mutant, SchedulerConfig, SessionConfig, SessionNode, StoreConfig, WorkerConfig,
    WriterConfig, invariants,
};
use stateright::Expectation;
use stateright::actor::{ActorModel, ActorModelState, LossyNetwork, Network};

use crate::adapter::{Adapter, node_states};

/// The node type the models run.
pub type SessionActor = Adapter<SessionNode>;
/// A Stateright session model.
pub type SessionModel = ActorModel<SessionActor, (), ()>;

const SCHEDULER: NodeId = NodeId(0);
const WORKER_0: NodeId = NodeId(1);
const WORKER_1: NodeId = NodeId(2);
const STORE: NodeId = NodeId(3);
/// The client the model's call comes from (not an actor: the scheduler starts the call).
const CLIENT: NodeId = NodeId(9);

/// Which session model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// `dsrr`: LWW values, a DSRR call.
    Dsrr,
    /// `dsrr-crash`: the `dsrr` model, and worker 1 may crash and restart once.
    DsrrCrash,
    /// `causal`: multi-key causal values, a DSC call.
    Causal,
}

impl Scenario {
    /// Every session model.
    pub const ALL: [Scenario; 3] = [Scenario::Dsrr, Scenario::DsrrCrash, Scenario::Causal];

    /// The model's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Dsrr => "dsrr",
            Scenario::DsrrCrash => "dsrr-crash",
            Scenario::Causal => "causal",
        }
    }

    /// One line for `list`.
    pub fn about(self) -> &'static str {
        match self {
            Scenario::Dsrr => {
                "a DSRR call of f0(x) → f1(x, y) on two workers, a concurrent writer, lossy network"
            }
            Scenario::DsrrCrash => {
                "the dsrr model, and the worker holding f0's pins may crash once"
            }
            Scenario::Causal => {
                "a DSC call of f0(x) → f1(x, y) over causal values; x's new version depends on y's"
            }
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

/// The configurations of every node, indexed by node id.
pub fn configs(scenario: Scenario, mutant: Option<Mutant>) -> Vec<SessionConfig> {
    let (dag, level, initial, puts) = match scenario {
        Scenario::Dsrr | Scenario::DsrrCrash => (
            Dag::chain(&[&["x"], &["x"]]),
            Level::Dsrr,
            BTreeMap::from([("x".to_owned(), lww(1, 9))]),
            vec![("x".to_owned(), lww(2, 4))],
        ),
        Scenario::Causal => (
            Dag::chain(&[&["x"], &["x", "y"]]),
            Level::Dsc,
            BTreeMap::from([
                ("x".to_owned(), causal(&[(9, 1)], &[])),
                ("y".to_owned(), causal(&[(9, 1)], &[])),
            ]),
            vec![
                ("y".to_owned(), causal(&[(9, 1), (4, 1)], &[])),
                ("x".to_owned(), causal(&[(9, 1), (4, 2)], &[("y", &[(9, 1), (4, 1)])])),
            ],
        ),
    };
    let dag = dag.expect("a valid chain");
    let mut scheduler = SchedulerConfig::new(SCHEDULER, dag.clone(), vec![WORKER_0, WORKER_1]);
    scheduler.calls = vec![(CLIENT, 0, level)];
    // Retries are the `dsrr` model's business: the causal model checks the levels' reads, and
    // the crash model what a lost pin does (a retry on top multiplied its states past ten
    // million; the simulator and a unit test retry after crashes).
    scheduler.max_attempts = if scenario == Scenario::Dsrr { 2 } else { 1 };
    // Any `Deadline` tick may abort the session: the model fires timers at any moment anyway.
    scheduler.deadline_ticks = 1;
    scheduler.mutant = mutant;
    // In the causal model both caches start warm with the initial values (as if earlier
    // calls had read them), so a cache can lag behind the store when a function reads it.
    let warm = scenario == Scenario::Causal;
    let worker = |id| {
        let mut cfg = WorkerConfig::new(id, STORE, SCHEDULER, dag.clone());
        cfg.mutant = mutant;
        cfg.pin_lease = None;
        if warm {
            cfg.warm = initial.clone();
        }
        SessionConfig::Worker(cfg)
    };
    let mut store = StoreConfig::new(initial.clone());
    if warm {
        store.subscribers =
            initial.keys().map(|k| (k.clone(), BTreeSet::from([WORKER_0, WORKER_1]))).collect();
    }
    vec![
        SessionConfig::Scheduler(scheduler),
        worker(WORKER_0),
        worker(WORKER_1),
        SessionConfig::Store(store),
        SessionConfig::Writer(WriterConfig {
            store: STORE,
            puts,
            retry_after: Duration::from_millis(100),
        }),
    ]
}

/// Only worker 1 crashes, at most once.
fn worker_0_crashes_at_most_once(_: &(), state: &ActorModelState<SessionActor>) -> bool {
    let worker = usize::try_from(WORKER_0.0).expect("small id");
    let others_up = state.crashed.iter().enumerate().all(|(i, down)| i == worker || !down);
    let restarts = state.actor_storages[worker].map_or(0, |inc| inc.saturating_sub(1));
    others_up && restarts + u32::from(state.crashed[worker]) <= 1
}

/// The model of `scenario` with its properties.
pub fn model(scenario: Scenario, mutant: Option<Mutant>) -> SessionModel {
    let model = ActorModel::new((), ())
        .actors(configs(scenario, mutant).into_iter().map(|cfg| Adapter { cfg }))
        .init_network(Network::new_unordered_duplicating([]))
        .lossy_network(LossyNetwork::No);
    let model = match scenario {
        Scenario::DsrrCrash => model.max_crashes(1).within_boundary(worker_0_crashes_at_most_once),
        _ => model,
    };
    let model = model.property(Expectation::Sometimes, "SESS-L1 a result is recorded", |m, s| {
        invariants::some_result(&node_states(m, s))
    });
    let model = match scenario {
        Scenario::Dsrr | Scenario::DsrrCrash => model
            .property(
                Expectation::Always,
                "SESS-I1 every completed session read one version per key",
                |m, s| invariants::levels_hold(&node_states(m, s), invariants::REPEATABLE_READ),
            )
            .property(
                Expectation::Always,
                "SESS-I2 a pinned version stays pinned while its session can read it",
                |m, s| {
                    let in_flight = s.network.iter_all().map(|e| e.msg);
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
            ),
    };
    // Retries: only `dsrr` runs two attempts.
    match scenario {
        Scenario::Dsrr => model
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
                        && crate::adapter::no_step_violation(s, invariants::RESULT_ONCE)
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
    use Mutant::*;
    let list: &[Mutant] = match scenario {
        Scenario::Dsrr => &[
            SkipRemoteRead,
            PinByClient,
            ReleaseBeforeSink,
            IgnoreRelease,
            RecordEveryResult,
            GiveUpOnAbort,
            EveryFunctionPrecedes,
        ],
        // It runs one attempt, so the retry mutants are the `dsrr` model's.
        Scenario::DsrrCrash => {
            &[SkipRemoteRead, ReleaseBeforeSink, IgnoreRelease, EveryFunctionPrecedes, StaleHoldOk]
        }
        Scenario::Causal => {
            &[SkipRemoteRead, ExposeBeforeDeps, IgnoreFrontier, EveryFunctionPrecedes]
        }
    };
    list.iter().map(|m| (m.name(), *m)).collect()
}
