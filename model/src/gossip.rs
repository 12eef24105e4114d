//! The `gossip` model: replicas of an LWW register, clients writing to them, and a network that
//! duplicates and reorders every message (and loses any, implicitly: see [`Bounds::lossy`]).
//!
//! Each client writes its values, one at a time, to one replica and re-sends until
//! acknowledged. Clients' first writes share a time, so only the writer id orders them: the
//! tie-break is exercised on every run. The last write of the last client is a delete (a
//! tombstone), concurrent with the other client's last write and ordered after it. Every
//! replica gossips its value to the peers that have not acknowledged it, re-sending on a timer.
//! The properties are the gossip invariants of `squall_proto::gossip::invariants`, named by id.

use squall_proto::NodeId;
use squall_proto::gossip::invariants;
use squall_proto::gossip::{
    ClientConfig, GOSSIP_PERIOD, GossipConfig, GossipMsg, GossipNode, Mutant, ReplicaConfig,
};
use squall_proto::lattice::{Lww, Stamp, WriterId};
use stateright::actor::{ActorModel, LossyNetwork, Network};

use crate::Depth;
use crate::adapter::{Adapter, no_step_violation, node_id, node_states};

/// The node type the model runs.
pub type GossipActor = Adapter<GossipNode<u8>>;
/// The Stateright model.
pub type GossipModel = ActorModel<GossipActor, (), ()>;

/// The size of a gossip model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Replicas of the register.
    pub replicas: usize,
    /// Clients; client `c` writes to replica `c mod replicas`.
    pub clients: usize,
    /// Writes each client makes.
    pub writes_per_client: usize,
    /// Let the checker drop messages explicitly. Off by default: in the duplicating network
    /// every sent message stays deliverable, so a lost message is a path on which it is never
    /// delivered, and the node states reachable — all the properties look at — are the same.
    /// Explicit drops only multiply network states (see docs/protocols/gossip.md).
    pub lossy: bool,
}

impl Bounds {
    /// The bounds `check gossip` uses at `depth`: every day 2 replicas and 2 clients writing
    /// twice each (successive writes, and a tie on time between the clients' every write);
    /// deep, 3 replicas (gossip to two peers, acknowledged apart) and one write per client.
    pub fn at(depth: Depth) -> Self {
        let (replicas, writes_per_client) = match depth {
            Depth::Everyday => (2, 2),
            Depth::Deep => (3, 1),
        };
        Self { replicas, clients: 2, writes_per_client, lossy: false }
    }
}

/// The writes of client `c`: write `k` is stamped `(k + 1, c)`, so the clients' `k`-th writes
/// tie on time, and carries a value that makes a torn merge (larger stamp from one write,
/// larger value from another) a write nobody made. The last client's last write is a delete,
/// concurrent with (and, by stamp, after) the others' last writes: the register ends deleted.
fn writes(bounds: Bounds, client: usize) -> Vec<Lww<u8>> {
    (0..bounds.writes_per_client)
        .map(|k| {
            let stamp = Stamp::new(k as u64 + 1, WriterId(client as u64));
            if client + 1 == bounds.clients && k + 1 == bounds.writes_per_client {
                return Lww::deleted(stamp);
            }
            let value = u8::try_from(10 * k + bounds.clients - client).expect("small bounds");
            Lww::new(stamp, value)
        })
        .collect()
}

/// The configurations of every node, indexed by node id: replicas first, then clients.
pub fn configs(bounds: Bounds, mutant: Option<Mutant>) -> Vec<GossipConfig<u8>> {
    let replica_ids: Vec<NodeId> = (0..bounds.replicas as u64).map(NodeId).collect();
    let replicas = replica_ids.iter().map(|&id| {
        let mut cfg = ReplicaConfig::new(id, replica_ids.iter().copied(), GOSSIP_PERIOD);
        cfg.mutant = mutant;
        GossipConfig::Replica(cfg)
    });
    let clients = (0..bounds.clients).map(|c| {
        GossipConfig::Client(ClientConfig::new(
            NodeId((bounds.replicas + c) as u64),
            replica_ids[c % bounds.replicas],
            writes(bounds, c),
            GOSSIP_PERIOD,
        ))
    });
    replicas.chain(clients).collect()
}

/// The model with its properties, over a duplicating, reordering network (explicitly lossy
/// with [`Bounds::lossy`]).
pub fn model(bounds: Bounds, mutant: Option<Mutant>) -> GossipModel {
    ActorModel::new((), ())
        .actors(configs(bounds, mutant).into_iter().map(|cfg| Adapter { cfg }))
        .init_network(Network::new_unordered_duplicating([]))
        .lossy_network(if bounds.lossy { LossyNetwork::Yes } else { LossyNetwork::No })
        .property(
            stateright::Expectation::Always,
            "GOSSIP-I1 no replica holds a value no client wrote",
            |model, state| invariants::no_thin_air(&node_states(model, state)),
        )
        .property(
            stateright::Expectation::Always,
            "GOSSIP-I2 a replica's value only grows",
            |_, state| no_step_violation(state, invariants::MONOTONE),
        )
        .property(
            stateright::Expectation::Always,
            "GOSSIP-I3 once quiescent, every replica holds the join of all writes",
            |model, state| invariants::converged_when_quiescent(&node_states(model, state)),
        )
        .property(
            stateright::Expectation::Always,
            "GOSSIP-I4 whoever still has something to deliver has its retransmission timer armed",
            |model, state| {
                let timers = state.timers_set.iter();
                let nodes = model.actors.iter().zip(&state.actor_states).zip(&state.crashed);
                nodes.zip(timers).all(|(((actor, checked), crashed), timers)| {
                    *crashed
                        || invariants::retransmission_armed(&actor.cfg, &checked.node, |timer| {
                            timers.iter().any(|armed| *armed == timer)
                        })
                })
            },
        )
        .property(
            stateright::Expectation::Always,
            "GOSSIP-I5 a replica that acknowledged a delete never holds an older write",
            |model, state| {
                let acknowledged =
                    state.network.iter_all().filter_map(|envelope| match &**envelope.msg {
                        GossipMsg::PutOk { seq } => {
                            Some((node_id(envelope.src), node_id(envelope.dst), *seq))
                        }
                        _ => None,
                    });
                invariants::deletes_stick(&node_states(model, state), acknowledged)
            },
        )
        .property(
            stateright::Expectation::Sometimes,
            "GOSSIP-L1 quiescence is reachable",
            |model, state| invariants::quiescent(&node_states(model, state)),
        )
}

/// The mutants of this model, by command-line name.
pub fn mutants() -> Vec<(&'static str, Mutant)> {
    Mutant::ALL.iter().map(|m| (m.name(), *m)).collect()
}
