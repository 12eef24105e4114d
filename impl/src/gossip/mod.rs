//! Lattice gossip: replicas of one last-writer-wins register that accept client writes and
//! gossip their state to each other until every replica holds the join of every write.
//!
//! This is the core of Anna's coordination-free replication, reduced to one key so it can be
//! model-checked exhaustively: no replica ever waits for another, yet over a network that
//! drops, duplicates and reorders, all replicas converge. Unlike Anna's fire-and-forget gossip,
//! each replica remembers what every peer has acknowledged and re-sends until the peer holds at
//! least its value, so convergence survives message loss. The protocol is specified on
//! [the gossip page](crate::spec::gossip); its invariants are [`invariants`].
//!
//! Roles: [`Replica`] and [`Client`], hosted together by [`GossipNode`] so that a model or a
//! simulation runs one node type over both.

mod client;
pub mod invariants;
mod replica;

use std::time::Duration;

pub use client::{Client, ClientConfig};
pub use replica::{Replica, ReplicaConfig};

use crate::base::mutants;
use crate::lattice::Lww;
use crate::node::{Input, Node, Outbox, Violation};

/// The messages of the gossip protocol.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum GossipMsg<V: Ord> {
    /// Client → replica: merge this write. `seq` numbers the client's writes.
    Put {
        /// The client's sequence number of the write.
        seq: u32,
        /// The write.
        value: Lww<V>,
    },
    /// Replica → client: the write numbered `seq` has been merged.
    PutOk {
        /// The acknowledged sequence number.
        seq: u32,
    },
    /// Replica → replica: my current value.
    Gossip {
        /// The sender's value.
        value: Lww<V>,
    },
    /// Replica → replica: my value after merging your gossip.
    GossipAck {
        /// The acknowledging replica's value.
        value: Lww<V>,
    },
}

/// The timers of the gossip protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum GossipTimer {
    /// Replica: send gossip to every peer not yet known to hold the value.
    Gossip,
    /// Client: re-send the unacknowledged write.
    Retry,
}

mutants! {
    /// Seeded defects that the model checker and the simulator must catch. A replica carries
    /// one only through `ReplicaConfig::mutant`, which exists only with the `mutants` feature
    /// that production builds do not enable.
    pub enum Mutant {
        /// A replica replaces its value with incoming gossip instead of joining it.
        OverwriteMerge => "overwrite-merge",
        /// A replica merges stamp and value independently, producing a write nobody made.
        TornLww => "torn-lww",
        /// A replica merges with Anna's LWW rule: the incoming write wins on equal times.
        LwwIgnoresWriter => "lww-ignores-writer",
        /// A replica's gossip skips its last peer yet records that peer as up to date.
        SkipPeer => "skip-peer",
        /// A replica never acknowledges gossip, so its peers re-send for ever.
        DropGossipAck => "drop-gossip-ack",
        /// A replica sends gossip once and does not re-arm its timer (Anna's fire-and-forget),
        /// so a lost gossip message is never replaced.
        NoRetransmit => "no-retransmit",
        /// A replica stores a winning delete as a hole (the key removed, as a store without
        /// tombstones would), so a peer that missed the delete gossips the older write back.
        DeleteAsHole => "delete-as-hole",
    }
}

/// Either role of the gossip protocol, so one node type can host both in a model or simulation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GossipNode<V: Ord> {
    /// A replica of the register.
    Replica(Replica<V>),
    /// A client writing to one replica.
    Client(Client),
}

/// The configuration of a [`GossipNode`]: which role, configured how.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum GossipConfig<V: Ord> {
    /// Configures a [`Replica`].
    Replica(ReplicaConfig),
    /// Configures a [`Client`].
    Client(ClientConfig<V>),
}

impl<V: Value> Node for GossipNode<V> {
    type Config = GossipConfig<V>;
    type Msg = GossipMsg<V>;
    type Timer = GossipTimer;
    type Durable = ();

    fn init(cfg: &Self::Config, _: &(), out: &mut Outbox<Self>) -> Self {
        match cfg {
            GossipConfig::Replica(cfg) => Self::Replica(Replica::init(cfg, out)),
            GossipConfig::Client(cfg) => Self::Client(Client::init(cfg, out)),
        }
    }

    fn handle(&mut self, cfg: &Self::Config, input: Input<Self>, out: &mut Outbox<Self>) {
        match (self, cfg) {
            (Self::Replica(replica), GossipConfig::Replica(cfg)) => replica.handle(cfg, input, out),
            (Self::Client(client), GossipConfig::Client(cfg)) => client.handle(cfg, input, out),
            _ => unreachable!("a gossip node is always run with the config of its own role"),
        }
    }

    fn check_step(_: &Self::Config, before: &Self, after: &Self) -> Result<(), Violation> {
        match (before, after) {
            (Self::Replica(before), Self::Replica(after)) => Replica::check_step(before, after),
            _ => Ok(()),
        }
    }
}

/// What a register may hold: the bounds every protocol value type meets.
pub trait Value: Ord + Clone + std::hash::Hash + std::fmt::Debug {}

impl<T: Ord + Clone + std::hash::Hash + std::fmt::Debug> Value for T {}

/// The default gossip period of a replica.
pub const GOSSIP_PERIOD: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests;
