//! The KVS models: three storage nodes replicating one LWW key over a duplicating, reordering
//! network, with clients writing it at majority durability.
//!
//! - `kvs` ([`Scenario::CrashStop`]): one client puts at majority and then reads the key,
//!   another puts a value of the wrong type; at most one storage node crashes and stays down.
//!   (A second concurrent write multiplies the states twelvefold; concurrent writers are
//!   checked by the gossip model and the simulator.)
//! - `kvs-restart` ([`Scenario::Restart`]): one client puts; at most one storage node crashes
//!   and may restart empty with a new incarnation, which its peers must repopulate.
//!
//! Restarts are split off because the restart protocol (`Hello`, incarnations) multiplies the
//! state space: together the scenarios check in seconds, combined they would take many minutes.
//! The properties are the KVS invariants of `squall_proto::kvs::invariants`, named by id. The
//! crash bound is a boundary on the state space: the persisted incarnations (each restart adds
//! one) plus the crashed nodes may not exceed one.

use std::collections::BTreeMap;

use bytes::Bytes;
use squall_proto::NodeId;
use squall_proto::kvs::invariants;
use squall_proto::kvs::{
    ClientConfig, Durability, KvsConfig, KvsNode, Mutant, Op, Ring, StorageConfig,
};
use squall_proto::lattice::{LatticeType, LatticeValue, Lww, SetUnion, Stamp, WriterId};
use stateright::Expectation;
use stateright::actor::{ActorModel, ActorModelState, Network};

use crate::adapter::{Adapter, no_step_violation, node_states};

/// The node type the model runs.
pub type KvsActor = Adapter<KvsNode>;
/// The Stateright model.
pub type KvsModel = ActorModel<KvsActor, (), ()>;

const STORAGE_NODES: u64 = 3;

fn lww(time: u64, writer: u64, value: &'static str) -> LatticeValue {
    let value = Bytes::from_static(value.as_bytes());
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(writer)), value))
}

/// Which failures a KVS model explores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Two clients (a majority put and a get; a wrong-type put), one storage node may crash
    /// for good.
    CrashStop,
    /// One client's put; one storage node may crash and restart empty.
    Restart,
}

/// The configurations of every node, indexed by node id: storage nodes, then clients.
pub fn configs(scenario: Scenario, mutant: Option<Mutant>) -> Vec<KvsConfig> {
    let ids: Vec<NodeId> = (0..STORAGE_NODES).map(NodeId).collect();
    let ring = Ring::with_members(4, ids.iter().copied());
    let storage = ids.iter().map(|&id| {
        let mut cfg = StorageConfig::new(id, ring.clone(), 3);
        cfg.schema = BTreeMap::from([("a".to_owned(), LatticeType::Lww)]);
        cfg.mutant = mutant;
        KvsConfig::Storage(cfg)
    });
    let put = |value: LatticeValue, durability| Op::Put { key: "a".into(), value, durability };
    let wrong_type = LatticeValue::Set(SetUnion::singleton(Bytes::from_static(b"z")));
    let clients = match scenario {
        Scenario::CrashStop => vec![
            vec![put(lww(1, 3, "x"), Durability::Majority), Op::Get { key: "a".into() }],
            vec![put(wrong_type, Durability::One)],
        ],
        Scenario::Restart => vec![vec![put(lww(1, 3, "x"), Durability::Majority)]],
    };
    let clients = clients.into_iter().enumerate().map(|(i, ops)| {
        let mut cfg = ClientConfig::new(NodeId(STORAGE_NODES + i as u64), ring.clone(), 3, ops);
        cfg.max_attempts = 1;
        cfg.mutant = mutant;
        KvsConfig::Client(cfg)
    });
    storage.chain(clients).collect()
}

/// At most one crash in the whole run, of a storage node: restarts so far (persisted
/// incarnations above one) plus nodes down now. Clients hold no data, so their crashes would
/// only multiply states.
fn at_most_one_crash(_: &(), state: &ActorModelState<KvsActor>) -> bool {
    let restarts: u32 = state
        .actor_storages
        .iter()
        .flatten()
        .map(|incarnation| incarnation.saturating_sub(1))
        .sum();
    let down = state.crashed.iter().filter(|c| **c).count() as u32;
    let clients_up = state.crashed[STORAGE_NODES as usize..].iter().all(|crashed| !crashed);
    clients_up && restarts + down <= 1
}

/// [`at_most_one_crash`], and a crashed node stays down.
fn one_crash_stop(cfg: &(), state: &ActorModelState<KvsActor>) -> bool {
    let restarted = state.actor_storages.iter().flatten().any(|incarnation| *incarnation > 1);
    !restarted && at_most_one_crash(cfg, state)
}

/// The model of `scenario` with its properties.
pub fn model(scenario: Scenario, mutant: Option<Mutant>) -> KvsModel {
    let boundary = match scenario {
        Scenario::CrashStop => one_crash_stop,
        Scenario::Restart => at_most_one_crash,
    };
    ActorModel::new((), ())
        .actors(configs(scenario, mutant).into_iter().map(|cfg| Adapter { cfg }))
        .init_network(Network::new_unordered_duplicating([]))
        .max_crashes(1)
        .within_boundary(boundary)
        .property(
            Expectation::Always,
            "KVS-I2 a read returns nothing or a join of written values",
            |m, s| invariants::no_thin_air(&node_states(m, s)),
        )
        .property(
            Expectation::Always,
            "KVS-I3 a replica never loses a key or shrinks a value",
            |_, s| no_step_violation(s, invariants::MONOTONE),
        )
        .property(
            Expectation::Always,
            "KVS-I4 a put acknowledged at majority survives one crash",
            |m, s| invariants::acknowledged_writes_survive(&node_states(m, s)),
        )
        .property(
            Expectation::Always,
            "KVS-I5 once quiescent, replicas agree and hold every acknowledged put",
            |m, s| invariants::converged_when_quiescent(&node_states(m, s)),
        )
        .property(
            Expectation::Always,
            "KVS-I6 a put of the wrong type is never acknowledged",
            |m, s| invariants::typed(&node_states(m, s)),
        )
        .property(
            Expectation::Sometimes,
            "KVS-L1 quiescence with every well-typed put acknowledged is reachable",
            |m, s| invariants::quiescent_with_puts_acknowledged(&node_states(m, s)),
        )
}

/// The mutants each scenario must catch, by command-line name.
pub fn mutants(scenario: Scenario) -> Vec<(&'static str, Mutant)> {
    let list: &[Mutant] = match scenario {
        Scenario::CrashStop => &Mutant::KVS,
        Scenario::Restart => &Mutant::KVS_RESTART,
    };
    list.iter().map(|m| (m.name(), *m)).collect()
}
