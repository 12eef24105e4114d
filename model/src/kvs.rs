//! The KVS models: three storage nodes replicating one LWW key over a duplicating, reordering
//! network, with clients writing it.
//!
//! - `kvs` ([`Scenario::CrashStop`]): one client puts at majority and then reads the key,
//!   another puts a value of the wrong type; at most one storage node crashes and stays down.
//!   (A second concurrent write multiplies the states twelvefold; concurrent writers are
//!   checked by the gossip model and the simulator.)
//! - `kvs-restart` ([`Scenario::Restart`]): one client puts; at most one storage node crashes,
//!   losing what it had not persisted, and may restart from its disk with a new incarnation.
//!
//! - `membership-join` ([`Scenario::Join`]): a third storage node joins the ring of two (at
//!   replication 2) while a client puts at durability one; the joiner takes over one replica
//!   of the key from a node that must hand it off.
//! - `membership-leave` ([`Scenario::Leave`]): the key's primary, one of three storage nodes
//!   at replication 2, is asked to leave while a client puts at durability one; the key moves
//!   to its new owner, a put reaching the leaving node is redirected, and the leaving node
//!   departs once it holds nothing.
//!
//! The membership scenarios have no crash, so every acknowledged put, even at durability one,
//! must survive every handoff (KVS-I7); the writer has a second attempt, to follow a redirect
//! or to reach the key's other replica after a timeout. (A read, or a put at majority, makes
//! the leave scenario several times larger; reads during membership changes are checked by
//! the simulator.)
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
    ClientConfig, Durability, KvsConfig, KvsNode, Mutant, Op, Ring, ScriptConfig, StorageConfig,
};
use squall_proto::lattice::{LatticeType, LatticeValue, Lww, SetUnion, Stamp, WriterId};
use stateright::Expectation;
use stateright::actor::{ActorModel, ActorModelState, Network};

use crate::Depth;
use crate::adapter::{Adapter, no_step_violation, node_states};

/// The node type the model runs.
pub type KvsActor = Adapter<KvsNode>;
/// The Stateright model.
pub type KvsModel = ActorModel<KvsActor, (), ()>;

/// The storage nodes of the crash scenarios.
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
    /// One client's put; one storage node may crash and restart from its disk.
    Restart,
    /// A third storage node joins a ring of two (replication 2) while a client puts at
    /// durability one; no crash.
    Join,
    /// The key's primary, one of three storage nodes at replication 2, is asked to leave
    /// while a client puts at durability one; no crash.
    Leave,
}

impl Scenario {
    /// Every scenario, in the order `check all` runs them.
    pub const ALL: [Self; 4] = [Self::CrashStop, Self::Restart, Self::Join, Self::Leave];

    /// The scenario's model name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::CrashStop => "kvs",
            Self::Restart => "kvs-restart",
            Self::Join => "membership-join",
            Self::Leave => "membership-leave",
        }
    }

    /// The scenario named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// What the scenario models, in one line.
    pub fn about(self) -> &'static str {
        match self {
            Self::CrashStop => "3 storage nodes, a put+get and a wrong-type put, one crash-stop",
            Self::Restart => "3 storage nodes, a majority put, one crash and restart from disk",
            Self::Join => "a 3rd storage node joins a ring of 2 during a put; handoff to it",
            Self::Leave => "the key's primary leaves 3 nodes during a put; handoff, redirects",
        }
    }

    /// What the everyday bounds leave out of the deep ones.
    pub fn everyday(self) -> Option<&'static str> {
        match self {
            Self::CrashStop | Self::Join => None,
            Self::Restart => Some("2 storage nodes at replication 2, not 3 at 3"),
            Self::Leave => Some("runs that send at most 14 distinct messages; deep: unbounded"),
        }
    }

    /// The storage nodes, joiner included: three, but two in `kvs-restart` every day.
    fn storage_nodes(self, depth: Depth) -> u64 {
        match (self, depth) {
            (Self::Restart, Depth::Everyday) => 2,
            _ => STORAGE_NODES,
        }
    }

    /// Every key's replication factor: every node in the crash scenarios, two of three in
    /// the membership scenarios, so that a membership change moves a replica.
    fn replication(self, depth: Depth) -> usize {
        match self {
            Self::CrashStop | Self::Restart => self.storage_nodes(depth) as usize,
            Self::Join | Self::Leave => 2,
        }
    }

    /// The key the clients use. On the ring of nodes 0 and 1, "e" is on [1, 0]; when node 2
    /// joins it moves to [2, 1]. On the ring of nodes 0, 1 and 2, "a" is on [1, 0]; when node
    /// 1 leaves it moves to [0, 2].
    fn key(self) -> &'static str {
        match self {
            Self::Join => "e",
            Self::CrashStop | Self::Restart | Self::Leave => "a",
        }
    }
}

/// The configurations of every node, indexed by node id: storage nodes, then clients.
pub fn configs(scenario: Scenario, depth: Depth, mutant: Option<Mutant>) -> Vec<KvsConfig> {
    let storage_nodes = scenario.storage_nodes(depth);
    let replication = scenario.replication(depth);
    let ids: Vec<NodeId> = (0..storage_nodes).map(NodeId).collect();
    // The joiner (the last storage node) is not on the initial ring.
    let initial = match scenario {
        Scenario::Join => &ids[..ids.len() - 1],
        _ => &ids[..],
    };
    let ring = Ring::with_members(4, initial.iter().copied());
    let storage = ids.iter().map(|&id| {
        let mut cfg = StorageConfig::new(id, ring.clone(), replication);
        cfg.schema = BTreeMap::from([(scenario.key().to_owned(), LatticeType::Lww)]);
        cfg.join = !ring.members().contains(&id);
        cfg.mutant = mutant;
        KvsConfig::Storage(cfg)
    });
    let key = scenario.key();
    let put = |value: LatticeValue, durability| Op::Put { key: key.into(), value, durability };
    let get = Op::Get { key: key.into() };
    let wrong_type = LatticeValue::Set(SetUnion::singleton(Bytes::from_static(b"z")));
    let clients = match scenario {
        Scenario::CrashStop => vec![
            vec![put(lww(1, 3, "x"), Durability::Majority), get.clone()],
            vec![put(wrong_type, Durability::One)],
        ],
        Scenario::Restart => vec![vec![put(lww(1, 3, "x"), Durability::Majority)]],
        Scenario::Join => vec![vec![put(lww(1, 4, "x"), Durability::One)]],
        // Node 1 is the primary of the key.
        Scenario::Leave => {
            vec![vec![put(lww(1, 4, "x"), Durability::One)], vec![Op::Leave { node: NodeId(1) }]]
        }
    };
    let clients = clients.into_iter().enumerate().map(|(i, ops)| {
        let id = NodeId(storage_nodes + i as u64);
        // In the membership scenarios the writer has a second attempt: to follow a redirect
        // (which uses one up), or after a timeout to put through the key's other replica.
        let membership = matches!(scenario, Scenario::Join | Scenario::Leave);
        let writer = membership && matches!(ops[0], Op::Put { .. });
        let mut cfg = ClientConfig::new(id, ring.clone(), replication);
        cfg.max_attempts = if writer { 2 } else { 1 };
        cfg.mutant = mutant;
        KvsConfig::Client(ScriptConfig::new(cfg, ops))
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
        .map(|stored| stored.incarnation.saturating_sub(1))
        .sum();
    let down = state.crashed.iter().filter(|c| **c).count() as u32;
    let nodes = state.actor_states.iter().zip(&state.crashed);
    let clients_up = nodes.filter(|(s, _)| matches!(*s.node, KvsNode::Client(_))).all(|(_, c)| !c);
    clients_up && restarts + down <= 1
}

/// [`at_most_one_crash`], and a crashed node stays down.
fn one_crash_stop(cfg: &(), state: &ActorModelState<KvsActor>) -> bool {
    let restarted = state.actor_storages.iter().flatten().any(|stored| stored.incarnation > 1);
    !restarted && at_most_one_crash(cfg, state)
}

/// `membership-leave` every day is searched among runs that send at most 14 distinct
/// messages: enough for the put, the leave, the handoff, a redirect followed and the
/// departure, and for every mutant of the model to show (at 12 `silent-departure` is caught
/// only by the liveness property, a sign the bound cuts into complete runs).
fn at_most_14_messages(_: &(), state: &ActorModelState<KvsActor>) -> bool {
    state.network.len() <= 14
}

/// The model of `scenario` with its properties.
pub fn model(scenario: Scenario, depth: Depth, mutant: Option<Mutant>) -> KvsModel {
    let model = ActorModel::new((), ())
        .actors(configs(scenario, depth, mutant).into_iter().map(|cfg| Adapter { cfg }))
        .init_network(Network::new_unordered_duplicating([]));
    let model = match scenario {
        Scenario::CrashStop => model.max_crashes(1).within_boundary(one_crash_stop),
        Scenario::Restart => model.max_crashes(1).within_boundary(at_most_one_crash),
        Scenario::Leave if depth == Depth::Everyday => model.within_boundary(at_most_14_messages),
        Scenario::Join | Scenario::Leave => model,
    };
    PROPERTIES
        .iter()
        .filter(|p| p.scope.covers(scenario))
        .fold(model, |model, p| model.property(p.expectation.clone(), p.name, p.condition))
}

/// Which scenarios check a property.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every scenario.
    All,
    /// The crash scenarios: a node crashes.
    Crash,
    /// The crash-stop scenario alone: the only one whose clients read and put the wrong type
    /// (elsewhere KVS-I2 and KVS-I6 would hold vacuously).
    CrashStop,
    /// The membership scenarios, which have no crash.
    Membership,
}

impl Scope {
    /// Whether properties of this scope are checked in `scenario`.
    fn covers(self, scenario: Scenario) -> bool {
        match self {
            Self::All => true,
            Self::Crash => matches!(scenario, Scenario::CrashStop | Scenario::Restart),
            Self::CrashStop => scenario == Scenario::CrashStop,
            Self::Membership => matches!(scenario, Scenario::Join | Scenario::Leave),
        }
    }
}

struct KvsProperty {
    scope: Scope,
    expectation: Expectation,
    name: &'static str,
    condition: fn(&KvsModel, &ActorModelState<KvsActor>) -> bool,
}

/// Every property, in report order.
const PROPERTIES: [KvsProperty; 11] = [
    KvsProperty {
        scope: Scope::CrashStop,
        expectation: Expectation::Always,
        name: "KVS-I2 a read returns nothing or a join of written values",
        condition: |m, s| invariants::no_thin_air(&node_states(m, s)),
    },
    KvsProperty {
        scope: Scope::All,
        expectation: Expectation::Always,
        name: "KVS-I3 a replica never loses a key it owns or shrinks a value",
        condition: |_, s| no_step_violation(s, invariants::MONOTONE),
    },
    KvsProperty {
        scope: Scope::Crash,
        expectation: Expectation::Always,
        name: "KVS-I4 a put acknowledged at majority survives one crash",
        condition: |m, s| invariants::acknowledged_writes_survive(&node_states(m, s)),
    },
    KvsProperty {
        scope: Scope::All,
        expectation: Expectation::Always,
        name: "KVS-I5 once quiescent, replicas agree and hold every acknowledged put",
        condition: |m, s| invariants::converged_when_quiescent(&node_states(m, s)),
    },
    KvsProperty {
        scope: Scope::CrashStop,
        expectation: Expectation::Always,
        name: "KVS-I6 a put of the wrong type is never acknowledged",
        condition: |m, s| invariants::typed(&node_states(m, s)),
    },
    KvsProperty {
        scope: Scope::Membership,
        expectation: Expectation::Always,
        name: "KVS-I7 no acknowledged put is lost through a handoff",
        condition: |m, s| invariants::acknowledged_writes_held(&node_states(m, s)),
    },
    KvsProperty {
        scope: Scope::Membership,
        expectation: Expectation::Always,
        name: "KVS-I8 once quiescent, one ring everywhere and every key only on its owners",
        condition: |m, s| invariants::ownership_converged_when_quiescent(&node_states(m, s)),
    },
    KvsProperty {
        scope: Scope::Membership,
        expectation: Expectation::Always,
        name: "KVS-I9 a client replaces a route only with one from a newer ring",
        condition: |_, s| no_step_violation(s, invariants::ROUTING),
    },
    KvsProperty {
        scope: Scope::All,
        expectation: Expectation::Always,
        name: "KVS-D1 an acknowledged put is on as many replicas' disks as its durability asks",
        condition: |m, s| {
            let disks = s.actor_storages.iter().flatten().map(|disk| &**disk);
            invariants::acknowledged_writes_persisted(&node_states(m, s), disks)
        },
    },
    KvsProperty {
        scope: Scope::Crash,
        expectation: Expectation::Always,
        name: "KVS-D2 a running storage node holds everything it persisted of its keys",
        condition: |m, s| {
            m.actors.iter().zip(&s.actor_states).zip(&s.crashed).all(|((actor, checked), down)| {
                match (&actor.cfg, &*checked.node) {
                    (KvsConfig::Storage(cfg), KvsNode::Storage(node)) if !down => {
                        invariants::persisted_values_held(cfg, node, &checked.durable)
                    }
                    _ => true,
                }
            })
        },
    },
    KvsProperty {
        scope: Scope::All,
        expectation: Expectation::Sometimes,
        name: "KVS-L1 quiescence with every well-typed put acknowledged and every leave done is reachable",
        condition: |m, s| invariants::quiescent_with_puts_acknowledged(&node_states(m, s)),
    },
];

/// The mutants each scenario must catch, by command-line name.
pub fn mutants(scenario: Scenario) -> Vec<(&'static str, Mutant)> {
    use Mutant::*;
    let list: &[Mutant] = match scenario {
        Scenario::CrashStop => &[
            AckBeforeReplicas,
            GossipSkipsReplica,
            AcceptMismatch,
            MissingAsBottom,
            RollbackOnReject,
            AcksNeverRecorded,
        ],
        // `ignore-incarnation` is harmless here: a restarted node comes back with everything
        // it persisted, and what it missed is still behind at its peers. (It would lose data
        // only with a disk lost or replaced, which no model explores.)
        Scenario::Restart => {
            &[AckBeforeReplicas, AckBeforePersist, GossipAckBeforePersist, RestartEmpty]
        }
        Scenario::Join => &[
            DeleteBeforeHandoffAck,
            KeepHandedOff,
            ForgetNewOwner,
            ReleaseOwnedKeys,
            RingAcksIgnored,
        ],
        Scenario::Leave => &[
            FollowStaleRedirect,
            DeleteBeforeHandoffAck,
            ForgetNewOwner,
            ReleaseOwnedKeys,
            RingAcksIgnored,
            SilentDeparture,
        ],
    };
    list.iter().map(|m| (m.name(), *m)).collect()
}
