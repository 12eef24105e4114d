//! The Anna key-value store protocol: placement, replication, gossip and restarts.
//!
//! Keys hold tagged lattice values ([`LatticeValue`](crate::lattice::LatticeValue)). The
//! [`ring`] places each key on `replication` storage nodes. A client sends a put to one of them
//! (the *coordinator*), which merges it, gossips it to the key's other replicas at once, and
//! acknowledges the client when as many replicas as the put's [`Durability`] asks for are known
//! to hold the key's value. Every replica re-sends gossip to replicas that have not
//! acknowledged its value, so replicas converge whatever the network loses. A node that
//! restarts comes back empty with a higher *incarnation*; its peers then stop trusting its
//! earlier acknowledgements and send it its keys again.
//!
//! Membership is a lattice too ([`Membership`]: node → [`Status`]), gossiped until every peer
//! acknowledges it. When a node's view grows, every key it holds is handed to the replicas the
//! new ring gives it, and a key it no longer owns is deleted only once all of them hold it.
//!
//! Roles: [`StorageNode`], and [`KvsClient`], the client every user of the KVS goes through
//! (an application calls it; [`ScriptedClient`] is a scripted application around it). Both are
//! [`Node`](crate::Node)s of their own, hosted together by [`KvsNode`]. Caches
//! ([`crate::cache`]) speak these messages too, but this module knows nothing of them.
//!
//! Specified on [the KVS page](crate::spec::kvs); invariants in [`invariants`].

mod behind;
mod client;
pub mod invariants;
mod msg;
pub mod ring;
mod script;
mod storage;
mod subscriptions;

pub use client::{ClientConfig, KvsClient};
pub use msg::{Durability, Failure, Key, KvsMsg, KvsTimer, Op, Outcome, PutError, ReqId};
pub use ring::{Epoch, Membership, Ring, Status, fnv1a64, ring_hash};
pub use script::{ScriptConfig, ScriptedClient};
pub use storage::{StorageConfig, StorageNode, Stored};
pub use subscriptions::Subscriptions;

use crate::base::mutants;

mutants! {
    /// Seeded defects of storage nodes and clients that the model checker and the simulator
    /// must catch. A node carries one only through its config's `mutant` field, which exists
    /// only with the `mutants` feature.
    pub enum Mutant {
        /// The coordinator acknowledges a put as soon as it merged it, whatever the durability.
        AckBeforeReplicas => "ack-before-replicas",
        /// The coordinator does not persist a put when it takes it, only at its next gossip
        /// round (write-behind), so it may acknowledge a put its disk does not hold.
        AckBeforePersist => "ack-before-persist",
        /// A replica acknowledges gossip before persisting it (it persists at its next gossip
        /// round), so the coordinator counts a copy no disk holds.
        GossipAckBeforePersist => "gossip-ack-before-persist",
        /// A restarted storage node ignores what it persisted and starts empty.
        RestartEmpty => "restart-empty",
        /// Gossip never reaches a key's last replica.
        GossipSkipsReplica => "gossip-skips-replica",
        /// A put of the wrong lattice type is answered with success and dropped (Anna's
        /// behavior).
        AcceptMismatch => "accept-mismatch",
        /// A newer incarnation of a peer is recorded but its keys are not sent to it again.
        IgnoreIncarnation => "ignore-incarnation",
        /// A get of a missing key answers bottom instead of "no such key".
        MissingAsBottom => "missing-as-bottom",
        /// Gossip replaces a replica's value instead of merging into it.
        OverwriteMerge => "overwrite-merge",
        /// Rejecting a put of the wrong type "rolls back" by removing the key.
        RollbackOnReject => "rollback-on-reject",
        /// What peers say they hold is never recorded, so every value stays "behind" and gossip
        /// is re-sent for ever.
        AcksNeverRecorded => "acks-never-recorded",
        /// The client follows a redirect from an epoch no newer than its own.
        FollowStaleRedirect => "follow-stale-redirect",
        /// A node that no longer owns a key sends it to the new replicas once and deletes it at
        /// once, without waiting for their acknowledgement.
        DeleteBeforeHandoffAck => "delete-before-handoff-ack",
        /// A node keeps the keys it handed off for ever.
        KeepHandedOff => "keep-handed-off",
        /// On a ring change, replicas that are new for a key are not marked behind, so they get
        /// it only if it is written again.
        ForgetNewOwner => "forget-new-owner",
        /// A node deletes every key whose replicas all hold its value, owned or not: "handed
        /// off" confused with "replicated".
        ReleaseOwnedKeys => "release-owned-keys",
        /// Acknowledgements of membership views are never recorded, so a view is re-sent for
        /// ever.
        RingAcksIgnored => "ring-acks-ignored",
        /// A leaving node that has handed everything off records its departure without telling
        /// its peers.
        SilentDeparture => "silent-departure",
        /// A lease check drops a lapsed cache's lease but keeps its subscriptions.
        KeepLapsedSubscribers => "keep-lapsed-subscribers",
        /// A renewal is taken to mean the cache holds the key's current value, so pushes still
        /// waiting for it are forgotten.
        RenewalClearsPushes => "renewal-clears-pushes",
    }
}

crate::world! {
    /// Every role of the KVS proper: storage nodes, and applications with their clients. (A
    /// world with caches too is [`crate::cache::CachedKvsNode`].)
    pub enum KvsNode, config KvsConfig {
        msg: KvsMsg, timer: KvsTimer, durable: Stored;
        /// A storage node.
        Storage(StorageNode),
        /// A scripted application with its client.
        Client(ScriptedClient),
    }
}

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod ring_tests;
#[cfg(test)]
mod tests;
