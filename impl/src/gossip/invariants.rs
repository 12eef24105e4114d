//! The gossip protocol's invariants, by id. Each is a plain function over the nodes of a run,
//! used as a Stateright property, a simulator check and (for step invariants) a debug check.
//! `docs/invariants.md` traces each id to its model property and tests.
//!
//! The functions take every node of the run as `(config, state)`, with `None` for the state of
//! a crashed node: a crashed client's writes still count as written.

use super::{GossipConfig, GossipNode, GossipTimer, Value};
use crate::NodeId;
use crate::lattice::{Lattice, Lww, Merge};

/// GOSSIP-I1: every replica holds bottom or a write some client made (no value from thin air).
pub const NO_THIN_AIR: &str = "GOSSIP-I1";
/// GOSSIP-I2: a replica's value only grows (checked on every step by `Replica::check_step`).
pub const MONOTONE: &str = "GOSSIP-I2";
/// GOSSIP-I3: once quiescent (every client acknowledged, no replica has a peer behind it),
/// every replica holds the join of all writes.
pub const CONVERGENCE: &str = "GOSSIP-I3";
/// GOSSIP-I4: a replica with a peer behind has its gossip timer armed, and a client with writes
/// left has its retry timer armed, so a lost message delays progress but never stops it.
pub const RETRANSMISSION: &str = "GOSSIP-I4";
/// GOSSIP-I5: a replica that acknowledged a client's delete never holds a write older than the
/// delete: a deleted register does not come back with an older value.
pub const DELETES_STICK: &str = "GOSSIP-I5";
/// GOSSIP-L1: quiescence is reachable (the convergence property is not vacuous).
pub const QUIESCENCE_REACHABLE: &str = "GOSSIP-L1";

fn writes<'a, V: Value>(
    nodes: &'a [(&'a GossipConfig<V>, Option<&'a GossipNode<V>>)],
) -> impl Iterator<Item = &'a Lww<V>> {
    nodes.iter().flat_map(|(cfg, _)| match cfg {
        GossipConfig::Client(cfg) => cfg.writes.as_slice(),
        GossipConfig::Replica(_) => &[],
    })
}

fn replicas<'a, V: Value>(
    nodes: &'a [(&'a GossipConfig<V>, Option<&'a GossipNode<V>>)],
) -> impl Iterator<Item = &'a super::Replica<V>> {
    nodes.iter().filter_map(|(_, node)| match node {
        Some(GossipNode::Replica(replica)) => Some(replica),
        _ => None,
    })
}

/// GOSSIP-I1 over the nodes of a run.
pub fn no_thin_air<V: Value>(nodes: &[(&GossipConfig<V>, Option<&GossipNode<V>>)]) -> bool {
    replicas(nodes)
        .all(|replica| replica.value().is_bottom() || writes(nodes).any(|w| w == replica.value()))
}

/// Whether the run is quiescent: every node is up, every client's writes are acknowledged and
/// every replica knows each peer holds at least its value.
pub fn quiescent<V: Value>(nodes: &[(&GossipConfig<V>, Option<&GossipNode<V>>)]) -> bool {
    nodes.iter().all(|(cfg, node)| match (cfg, node) {
        (GossipConfig::Client(cfg), Some(GossipNode::Client(client))) => client.is_done(cfg),
        (GossipConfig::Replica(_), Some(GossipNode::Replica(replica))) => {
            !replica.has_pending_gossip()
        }
        _ => false,
    })
}

/// GOSSIP-I3: quiescent ⇒ every replica holds the join of all writes.
pub fn converged_when_quiescent<V: Value>(
    nodes: &[(&GossipConfig<V>, Option<&GossipNode<V>>)],
) -> bool {
    if !quiescent(nodes) {
        return true;
    }
    let join = writes(nodes).fold(Lww::default(), |acc, w| Merge::join(acc, w.clone()));
    replicas(nodes).all(|replica| *replica.value() == join)
}

/// GOSSIP-I4 for one live node, given which of its timers are armed.
pub fn retransmission_armed<V: Value>(
    cfg: &GossipConfig<V>,
    node: &GossipNode<V>,
    armed: impl Fn(GossipTimer) -> bool,
) -> bool {
    match (cfg, node) {
        (_, GossipNode::Replica(replica)) => {
            !replica.has_pending_gossip() || armed(GossipTimer::Gossip)
        }
        (GossipConfig::Client(cfg), GossipNode::Client(client)) => {
            client.is_done(cfg) || armed(GossipTimer::Retry)
        }
        (GossipConfig::Replica(_), GossipNode::Client(_)) => false,
    }
}

/// GOSSIP-I5 over the nodes of a run, indexed by node id, given every acknowledgement a replica
/// has sent a client as `(replica, client, seq)` (in a model, the `PutOk`s in the network).
pub fn deletes_stick<V: Value>(
    nodes: &[(&GossipConfig<V>, Option<&GossipNode<V>>)],
    acknowledged: impl IntoIterator<Item = (NodeId, NodeId, u32)>,
) -> bool {
    acknowledged.into_iter().all(|(replica, client, seq)| {
        let delete = match nodes.get(client.0 as usize) {
            Some((GossipConfig::Client(cfg), _)) => cfg.writes.get(seq as usize),
            _ => None,
        };
        let Some(deleted_at) = delete.filter(|w| w.is_deleted()).and_then(Lww::stamp) else {
            return true;
        };
        match nodes.get(replica.0 as usize) {
            Some((_, Some(GossipNode::Replica(replica)))) => match replica.value().write() {
                Some((stamp, Some(_))) => stamp > deleted_at,
                _ => true,
            },
            _ => true,
        }
    })
}
