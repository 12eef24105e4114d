//! The replica role.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{GOSSIP_PERIOD, GossipMsg, GossipNode, GossipTimer, Value};
use crate::lattice::{Lww, Merge};
use crate::node::{Input, NodeId, Outbox, Violation};

/// How a replica is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReplicaConfig {
    /// This replica.
    pub id: NodeId,
    /// The other replicas of the register, all of which must come to hold every write.
    pub peers: Vec<NodeId>,
    /// How long after growing the replica sends gossip, and how often it re-sends to peers that
    /// have not acknowledged its value. Batches the gossip of bursts of writes.
    pub gossip_period: Duration,
    /// The seeded defect this replica carries, if any.
    #[cfg(feature = "mutants")]
    #[cfg_attr(feature = "serde", serde(skip))]
    pub mutant: Option<super::Mutant>,
}

impl ReplicaConfig {
    /// A correct replica `id` with the given peers.
    pub fn new(
        id: NodeId,
        peers: impl IntoIterator<Item = NodeId>,
        gossip_period: Duration,
    ) -> Self {
        Self {
            id,
            peers: peers.into_iter().filter(|peer| *peer != id).collect(),
            gossip_period,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }

    /// A correct replica `id` with the default gossip period.
    pub fn with_default_period(id: NodeId, peers: impl IntoIterator<Item = NodeId>) -> Self {
        Self::new(id, peers, GOSSIP_PERIOD)
    }
}

/// One replica of the register.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Replica<V: Ord> {
    /// The join of every write and gossip merged here.
    value: Lww<V>,
    /// For each peer, the largest value it is known to hold (from its gossip and its
    /// acknowledgements). The replica gossips to a peer while its own value is not below this.
    acked: BTreeMap<NodeId, Lww<V>>,
}

impl<V: Value> Replica<V> {
    /// A replica holding bottom, with nothing to gossip.
    pub fn init(cfg: &ReplicaConfig, _out: &mut Outbox<GossipNode<V>>) -> Self {
        Self {
            value: Lww::default(),
            acked: cfg.peers.iter().map(|peer| (*peer, Lww::default())).collect(),
        }
    }

    /// The replica's current value.
    pub fn value(&self) -> &Lww<V> {
        &self.value
    }

    /// The peers not yet known to hold this replica's value.
    pub fn behind_peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.acked.iter().filter(|(_, theirs)| self.value > **theirs).map(|(peer, _)| *peer)
    }

    /// Whether some peer is not yet known to hold this replica's value.
    pub fn has_pending_gossip(&self) -> bool {
        self.behind_peers().next().is_some()
    }

    /// Advances the replica by one input.
    pub fn handle(
        &mut self,
        cfg: &ReplicaConfig,
        input: Input<GossipNode<V>>,
        out: &mut Outbox<GossipNode<V>>,
    ) {
        match input {
            Input::Receive { from, msg: GossipMsg::Put { seq, value } } => {
                let grew = self.absorb(cfg, value);
                out.send(from, GossipMsg::PutOk { seq });
                self.schedule_gossip(cfg, grew, out);
            }
            Input::Receive { from, msg: GossipMsg::Gossip { value } }
                if self.acked.contains_key(&from) =>
            {
                self.note_peer_holds(from, value.clone());
                let grew = self.absorb(cfg, value);
                if !mutant(cfg, super::Mutant::DropGossipAck) {
                    out.send(from, GossipMsg::GossipAck { value: self.value.clone() });
                }
                self.schedule_gossip(cfg, grew, out);
            }
            Input::Receive { from, msg: GossipMsg::GossipAck { value } }
                if self.acked.contains_key(&from) =>
            {
                self.note_peer_holds(from, value);
                if !self.has_pending_gossip() {
                    out.cancel_timer(GossipTimer::Gossip);
                }
            }
            Input::Receive { .. } => out.ignore("message a replica does not expect"),
            Input::Timeout(GossipTimer::Gossip) => self.gossip(cfg, out),
            Input::Timeout(GossipTimer::Retry) => out.ignore("client timer at a replica"),
        }
    }

    /// Merges a write or gossip into the value; returns whether the value grew.
    fn absorb(&mut self, cfg: &ReplicaConfig, incoming: Lww<V>) -> bool {
        #[cfg(feature = "mutants")]
        match cfg.mutant {
            Some(super::Mutant::OverwriteMerge) => {
                let changed = self.value != incoming;
                self.value = incoming;
                return changed;
            }
            Some(super::Mutant::TornLww) => return self.value.merge_torn(incoming),
            Some(super::Mutant::LwwIgnoresWriter) => {
                return self.value.merge_ignoring_writer(incoming);
            }
            Some(super::Mutant::DeleteAsHole) => {
                let grew = self.value.merge(incoming);
                if self.value.is_deleted() {
                    self.value = Lww::default();
                }
                return grew;
            }
            _ => {}
        }
        let _ = cfg;
        self.value.merge(incoming)
    }

    fn note_peer_holds(&mut self, peer: NodeId, value: Lww<V>) {
        if let Some(theirs) = self.acked.get_mut(&peer) {
            theirs.merge(value);
        }
    }

    fn schedule_gossip(&self, cfg: &ReplicaConfig, grew: bool, out: &mut Outbox<GossipNode<V>>) {
        if grew && self.has_pending_gossip() {
            out.set_timer(GossipTimer::Gossip, cfg.gossip_period);
        }
    }

    /// Sends the value to every peer not known to hold it, and re-arms the timer to re-send
    /// until each has acknowledged.
    fn gossip(&mut self, cfg: &ReplicaConfig, out: &mut Outbox<GossipNode<V>>) {
        let mut behind: Vec<NodeId> = self.behind_peers().collect();
        if mutant(cfg, super::Mutant::SkipPeer)
            && behind.last() == self.acked.keys().last()
            && let Some(skipped) = behind.pop()
        {
            self.acked.insert(skipped, self.value.clone());
        }
        for peer in &behind {
            out.send(*peer, GossipMsg::Gossip { value: self.value.clone() });
        }
        if behind.is_empty() {
            out.ignore("gossip timer with every peer up to date");
        } else if !mutant(cfg, super::Mutant::NoRetransmit) {
            out.set_timer(GossipTimer::Gossip, cfg.gossip_period);
        }
    }

    /// GOSSIP-I2: a replica's value and its knowledge of its peers only grow.
    pub fn check_step(before: &Self, after: &Self) -> Result<(), Violation> {
        if before.value > after.value {
            return Err(Violation {
                id: super::invariants::MONOTONE,
                detail: format!("value went from {:?} to {:?}", before.value, after.value),
            });
        }
        for (peer, known) in &before.acked {
            if after.acked.get(peer).is_none_or(|now| known > now) {
                return Err(Violation {
                    id: super::invariants::MONOTONE,
                    detail: format!(
                        "knowledge of {peer} went from {known:?} to {:?}",
                        after.acked.get(peer)
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(feature = "mutants")]
fn mutant(cfg: &ReplicaConfig, which: super::Mutant) -> bool {
    cfg.mutant == Some(which)
}

#[cfg(not(feature = "mutants"))]
fn mutant(_: &ReplicaConfig, _: super::Mutant) -> bool {
    false
}
