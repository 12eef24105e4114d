//! The cache model: one storage node, two caches, a writer and a reader, each an executor
//! behind its own cache, over a duplicating, reordering network.
//!
//! The writer puts two versions of key `x` through cache 1; the reader reads `x` through
//! cache 2, which fetches it and then holds it subscribed. Pushes, renewals (any time: the
//! cache's `Renew` timer) and lease checks (any time: the storage node's `Lease` timer)
//! interleave with everything, so a lease may lapse between two renewals and a late push may
//! arrive after a newer one. Each executor and cache makes one attempt per request, and nothing
//! crashes or is evicted: cache crashes, evictions, retries and membership changes are
//! exercised by the simulator (`impl/tests/cache_sim.rs`), which would multiply the model's
//! states. The properties are the cache invariants of `squall_proto::cache::invariants`.

use std::collections::BTreeMap;

use bytes::Bytes;
use squall_proto::NodeId;
use squall_proto::cache::{self, CacheConfig, CachedKvsConfig, CachedKvsNode, invariants};
use squall_proto::kvs::{self, ClientConfig, Durability, Op, Ring, ScriptConfig, StorageConfig};
use squall_proto::lattice::{LatticeType, LatticeValue, Lww, Stamp, WriterId};
use squall_proto::mutants::Mutant;
use stateright::Expectation;
use stateright::actor::{ActorModel, ActorModelState, Network};

use crate::Depth;
use crate::adapter::{Adapter, no_step_violation, node_states};

/// The node type the model runs.
pub type CacheActor = Adapter<CachedKvsNode>;
/// The Stateright model.
pub type CacheModel = ActorModel<CacheActor, (), ()>;

const STORAGE: NodeId = NodeId(0);
const WRITER_CACHE: NodeId = NodeId(1);
const READER_CACHE: NodeId = NodeId(2);
const WRITER: NodeId = NodeId(3);
const READER: NodeId = NodeId(4);

fn lww(time: u64) -> LatticeValue {
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(3)), Bytes::from_static(b"v")))
}

/// The configurations of every node, indexed by node id. A storage-side mutant goes to the
/// storage node, a cache mutant to both caches.
pub fn configs(scenario: Scenario, depth: Depth, mutant: Option<Mutant>) -> Vec<CachedKvsConfig> {
    let ring = Ring::with_members(4, [STORAGE]);
    let mut storage = StorageConfig::new(STORAGE, ring.clone(), 1);
    storage.schema = BTreeMap::from([("".to_owned(), LatticeType::Lww)]);
    storage.mutant = match mutant {
        Some(Mutant::Kvs(m)) => Some(m),
        _ => None,
    };
    let cache = |id, max_keys| {
        let mut cfg = CacheConfig::new(id, ring.clone(), 1);
        cfg.max_keys = max_keys;
        cfg.max_attempts = 1;
        cfg.mutant = match mutant {
            Some(Mutant::Cache(m)) => Some(m),
            _ => None,
        };
        CachedKvsConfig::Cache(cfg)
    };
    let executor = |id, via, ops| {
        let mut cfg = ClientConfig::new(id, ring.clone(), 1);
        cfg.via = Some(via);
        cfg.max_attempts = 1;
        CachedKvsConfig::Client(ScriptConfig::new(cfg, ops))
    };
    let put = |time| Op::Put { key: "x".into(), value: lww(time), durability: Durability::One };
    let get = |key: &str| Op::Get { key: key.into() };
    // Every day, the reader's cache crashes around one write, not two.
    let writes = match (scenario, depth) {
        (Scenario::Restart, Depth::Everyday) => vec![put(1)],
        _ => vec![put(1), put(2)],
    };
    vec![
        CachedKvsConfig::Storage(storage),
        cache(WRITER_CACHE, 100),
        cache(READER_CACHE, 100),
        executor(WRITER, WRITER_CACHE, writes),
        executor(READER, READER_CACHE, vec![get("x")]),
    ]
}

/// The only crash is of the reader's cache, at most once (it then restarts empty, with a new
/// incarnation): restarts so far plus caches down now. The storage node and the executors do
/// not crash here; storage crashes are the KVS models' business.
fn reader_cache_crashes_at_most_once(_: &(), state: &ActorModelState<CacheActor>) -> bool {
    let reader_cache = usize::try_from(READER_CACHE.0).expect("small id");
    let others_up = state.crashed.iter().enumerate().all(|(i, down)| i == reader_cache || !down);
    let restarts =
        state.actor_storages[reader_cache].as_ref().map_or(0, |s| s.incarnation.saturating_sub(1));
    let down = u32::from(state.crashed[reader_cache]);
    others_up && restarts + down <= 1
}

/// The model of `scenario` with its properties.
pub fn model(scenario: Scenario, depth: Depth, mutant: Option<Mutant>) -> CacheModel {
    let model = ActorModel::new((), ())
        .actors(configs(scenario, depth, mutant).into_iter().map(|cfg| Adapter { cfg }))
        .init_network(Network::new_unordered_duplicating([]));
    let model = match scenario {
        Scenario::NoCrash => model,
        Scenario::Restart => {
            model.max_crashes(1).within_boundary(reader_cache_crashes_at_most_once)
        }
    };
    model
        .property(
            Expectation::Always,
            "CACHE-I1 a cache holds and returns only joins of written values",
            |m, s| invariants::no_thin_air(&node_states(m, s)),
        )
        .property(Expectation::Always, "CACHE-I2 a cached value never goes backwards", |_, s| {
            no_step_violation(s, invariants::MONOTONE_READS)
        })
        .property(
            Expectation::Always,
            "CACHE-I3 once quiescent, every subscribed cached key equals the KVS value",
            |m, s| invariants::fresh_when_quiescent(&node_states(m, s)),
        )
        .property(
            Expectation::Always,
            "CACHE-I4 a subscription that missed two lease ticks is dropped",
            |m, s| invariants::leased(&node_states(m, s)),
        )
        .property(
            Expectation::Always,
            "CACHE-I5 a put acknowledged to an executor is in the KVS",
            |m, s| invariants::acknowledged_puts_in_kvs(&node_states(m, s)),
        )
        .property(
            Expectation::Sometimes,
            "CACHE-L1 quiescence with every put acknowledged is reachable",
            |m, s| invariants::quiescent_with_puts_acknowledged(&node_states(m, s)),
        )
}

/// Which failures a cache model explores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// No node crashes: model `cache`.
    NoCrash,
    /// The reader's cache may crash once and restart empty: model `cache-restart` (3.5 M
    /// states, about two minutes in release mode).
    Restart,
}

/// The mutants each scenario catches, by command-line name.
pub fn mutants(scenario: Scenario) -> Vec<(&'static str, Mutant)> {
    let list = match scenario {
        Scenario::NoCrash => vec![
            Mutant::Cache(cache::Mutant::CacheMissAsBottom),
            Mutant::Cache(cache::Mutant::PushOverwrites),
            Mutant::Cache(cache::Mutant::IgnorePushes),
            Mutant::Kvs(kvs::Mutant::RenewalClearsPushes),
            Mutant::Kvs(kvs::Mutant::KeepLapsedSubscribers),
            Mutant::Cache(cache::Mutant::AckExecutorEarly),
            Mutant::Cache(cache::Mutant::ForgetExecutorAck),
        ],
        Scenario::Restart => vec![Mutant::Cache(cache::Mutant::PushIgnoresIncarnation)],
    };
    list.into_iter().map(|m| (m.bare_name(), m)).collect()
}
