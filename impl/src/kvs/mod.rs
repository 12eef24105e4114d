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
//! Specified on [the KVS page](crate::spec::kvs); invariants in [`invariants`].

/// Gives a configuration type `has(mutant)`: whether it carries that seeded defect (always
/// false without the `mutants` feature, where the `mutant` field does not exist). The mutant
/// type is the KVS protocol's unless named.
macro_rules! seeded_defects {
    ($config:ty) => {
        $crate::kvs::seeded_defects!($config, $crate::kvs::Mutant);
    };
    ($config:ty, $mutant:ty) => {
        impl $config {
            #[cfg(feature = "mutants")]
            fn has(&self, mutant: $mutant) -> bool {
                self.mutant == Some(mutant)
            }

            #[cfg(not(feature = "mutants"))]
            fn has(&self, _: $mutant) -> bool {
                false
            }
        }
    };
}
pub(crate) use seeded_defects;

mod client;
pub mod invariants;
mod msg;
pub mod ring;
mod storage;
mod subscriptions;

pub use client::{ClientConfig, KvsClient, Op, Outcome};
pub use msg::{Durability, Key, KvsMsg, KvsTimer, PutError, ReqId};
pub use ring::{Epoch, Membership, Ring, Status, fnv1a64, ring_hash};
pub use storage::{StorageConfig, StorageNode};
pub use subscriptions::Subscriptions;

use crate::cache::{CacheConfig, CacheNode};
use crate::node::{Input, Node, Outbox, Violation};

/// Seeded defects that the model checker and the simulator must catch. A node carries one only
/// through its config's `mutant` field, which exists only with the `mutants` feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mutant {
    /// The coordinator acknowledges a put as soon as it merged it, whatever the durability.
    AckBeforeReplicas,
    /// Gossip never reaches a key's last replica.
    GossipSkipsReplica,
    /// A put of the wrong lattice type is answered with success and dropped (Anna's behavior).
    AcceptMismatch,
    /// A newer incarnation of a peer is recorded but its keys are not sent to it again.
    IgnoreIncarnation,
    /// A get of a missing key answers bottom instead of "no such key".
    MissingAsBottom,
    /// Gossip replaces a replica's value instead of merging into it.
    OverwriteMerge,
    /// Rejecting a put of the wrong type "rolls back" by removing the key.
    RollbackOnReject,
    /// What peers say they hold is never recorded, so every value stays "behind" and gossip is
    /// re-sent for ever.
    AcksNeverRecorded,
    /// The client follows a redirect from an epoch no newer than its own.
    FollowStaleRedirect,
    /// A node that no longer owns a key sends it to the new replicas once and deletes it at
    /// once, without waiting for their acknowledgement.
    DeleteBeforeHandoffAck,
    /// A node keeps the keys it handed off for ever.
    KeepHandedOff,
    /// On a ring change, replicas that are new for a key are not marked behind, so they get
    /// it only if it is written again.
    ForgetNewOwner,
    /// A node deletes every key whose replicas all hold its value, owned or not: "handed off"
    /// confused with "replicated".
    ReleaseOwnedKeys,
    /// Acknowledgements of membership views are never recorded, so a view is re-sent for ever.
    RingAcksIgnored,
    /// A leaving node that has handed everything off records its departure without telling
    /// its peers.
    SilentDeparture,
    /// A lease check drops a lapsed cache's lease but keeps its subscriptions.
    KeepLapsedSubscribers,
    /// The cache acknowledges an executor's put before the KVS acknowledged it.
    AckExecutorEarly,
    /// A push replaces the cached value instead of merging into it (Anna's cache on a type
    /// change), so a push from a lagging replica takes the cache back.
    PushOverwrites,
    /// The cache acknowledges pushes but does not apply them.
    IgnorePushes,
    /// A cache miss on a key the KVS does not hold caches and returns bottom.
    CacheMissAsBottom,
    /// The cache never passes the KVS's acknowledgement of a write-through on to its executor.
    ForgetExecutorAck,
    /// A renewal is taken to mean the cache holds the key's current value, so pushes still
    /// waiting for it are forgotten.
    RenewalClearsPushes,
    /// A restarted cache takes pushes meant for its predecessor, which may answer fetches
    /// made before a write.
    PushIgnoresIncarnation,
}

impl Mutant {
    /// Every mutant, in declaration order.
    pub const ALL: [Self; 23] = [
        Self::AckBeforeReplicas,
        Self::GossipSkipsReplica,
        Self::AcceptMismatch,
        Self::IgnoreIncarnation,
        Self::MissingAsBottom,
        Self::OverwriteMerge,
        Self::RollbackOnReject,
        Self::AcksNeverRecorded,
        Self::FollowStaleRedirect,
        Self::DeleteBeforeHandoffAck,
        Self::KeepHandedOff,
        Self::ForgetNewOwner,
        Self::ReleaseOwnedKeys,
        Self::RingAcksIgnored,
        Self::SilentDeparture,
        Self::KeepLapsedSubscribers,
        Self::AckExecutorEarly,
        Self::PushOverwrites,
        Self::IgnorePushes,
        Self::CacheMissAsBottom,
        Self::ForgetExecutorAck,
        Self::RenewalClearsPushes,
        Self::PushIgnoresIncarnation,
    ];

    /// The mutants the `kvs` model (crash-stop) catches, in a stable order.
    pub const KVS: [Self; 6] = [
        Self::AckBeforeReplicas,
        Self::GossipSkipsReplica,
        Self::AcceptMismatch,
        Self::MissingAsBottom,
        Self::RollbackOnReject,
        Self::AcksNeverRecorded,
    ];

    /// The mutants the `kvs-restart` model catches.
    pub const KVS_RESTART: [Self; 2] = [Self::IgnoreIncarnation, Self::AckBeforeReplicas];

    /// The mutants the `cache` model catches.
    pub const CACHE: [Self; 7] = [
        Self::CacheMissAsBottom,
        Self::PushOverwrites,
        Self::IgnorePushes,
        Self::RenewalClearsPushes,
        Self::KeepLapsedSubscribers,
        Self::AckExecutorEarly,
        Self::ForgetExecutorAck,
    ];

    /// The mutants the `cache-restart` model catches.
    pub const CACHE_RESTART: [Self; 1] = [Self::PushIgnoresIncarnation];

    /// The mutants the `membership-join` model catches.
    pub const MEMBERSHIP_JOIN: [Self; 5] = [
        Self::DeleteBeforeHandoffAck,
        Self::KeepHandedOff,
        Self::ForgetNewOwner,
        Self::ReleaseOwnedKeys,
        Self::RingAcksIgnored,
    ];

    /// The mutants the `membership-leave` model catches.
    pub const MEMBERSHIP_LEAVE: [Self; 6] = [
        Self::FollowStaleRedirect,
        Self::DeleteBeforeHandoffAck,
        Self::ForgetNewOwner,
        Self::ReleaseOwnedKeys,
        Self::RingAcksIgnored,
        Self::SilentDeparture,
    ];

    /// The mutant's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::AckBeforeReplicas => "ack-before-replicas",
            Self::GossipSkipsReplica => "gossip-skips-replica",
            Self::AcceptMismatch => "accept-mismatch",
            Self::IgnoreIncarnation => "ignore-incarnation",
            Self::MissingAsBottom => "missing-as-bottom",
            Self::OverwriteMerge => "overwrite-merge",
            Self::RollbackOnReject => "rollback-on-reject",
            Self::AcksNeverRecorded => "acks-never-recorded",
            Self::FollowStaleRedirect => "follow-stale-redirect",
            Self::DeleteBeforeHandoffAck => "delete-before-handoff-ack",
            Self::KeepHandedOff => "keep-handed-off",
            Self::ForgetNewOwner => "forget-new-owner",
            Self::ReleaseOwnedKeys => "release-owned-keys",
            Self::RingAcksIgnored => "ring-acks-ignored",
            Self::SilentDeparture => "silent-departure",
            Self::KeepLapsedSubscribers => "keep-lapsed-subscribers",
            Self::AckExecutorEarly => "ack-executor-early",
            Self::PushOverwrites => "push-overwrites",
            Self::IgnorePushes => "ignore-pushes",
            Self::CacheMissAsBottom => "cache-miss-as-bottom",
            Self::ForgetExecutorAck => "forget-executor-ack",
            Self::RenewalClearsPushes => "renewal-clears-pushes",
            Self::PushIgnoresIncarnation => "push-ignores-incarnation",
        }
    }
}

/// Every role that speaks the KVS protocol: storage nodes, clients (and executors, which are
/// clients of a cache), and caches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvsNode {
    /// A storage node.
    Storage(StorageNode),
    /// A client.
    Client(KvsClient),
    /// A cache.
    Cache(CacheNode),
}

/// The configuration of a [`KvsNode`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum KvsConfig {
    /// Configures a [`StorageNode`].
    Storage(StorageConfig),
    /// Configures a [`KvsClient`].
    Client(ClientConfig),
    /// Configures a [`CacheNode`].
    Cache(CacheConfig),
}

impl Node for KvsNode {
    type Config = KvsConfig;
    type Msg = KvsMsg;
    type Timer = KvsTimer;
    /// A storage node's or a cache's incarnation; clients persist nothing.
    type Durable = u32;

    fn init(cfg: &KvsConfig, durable: &u32, out: &mut Outbox<Self>) -> Self {
        match cfg {
            KvsConfig::Storage(cfg) => Self::Storage(StorageNode::init(cfg, *durable, out)),
            KvsConfig::Client(cfg) => Self::Client(KvsClient::init(cfg, out)),
            KvsConfig::Cache(cfg) => Self::Cache(CacheNode::init(cfg, *durable, out)),
        }
    }

    fn handle(&mut self, cfg: &KvsConfig, input: Input<Self>, out: &mut Outbox<Self>) {
        match (self, cfg) {
            (Self::Storage(node), KvsConfig::Storage(cfg)) => node.handle(cfg, input, out),
            (Self::Client(client), KvsConfig::Client(cfg)) => client.handle(cfg, input, out),
            (Self::Cache(cache), KvsConfig::Cache(cfg)) => cache.handle(cfg, input, out),
            _ => unreachable!("a KVS node is always run with the config of its own role"),
        }
    }

    fn check_step(cfg: &KvsConfig, before: &Self, after: &Self) -> Result<(), Violation> {
        match (cfg, before, after) {
            (KvsConfig::Storage(cfg), Self::Storage(before), Self::Storage(after)) => {
                StorageNode::check_step(cfg, before, after)
            }
            (KvsConfig::Client(cfg), Self::Client(before), Self::Client(after)) => {
                KvsClient::check_step(cfg, before, after)
            }
            (KvsConfig::Cache(_), Self::Cache(before), Self::Cache(after)) => {
                CacheNode::check_step(before, after)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod ring_tests;
#[cfg(test)]
mod tests;
