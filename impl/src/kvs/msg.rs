//! The messages, timers and client-visible errors of the KVS protocol.

use std::collections::{BTreeMap, BTreeSet};

use super::ring::{Epoch, Membership};
pub use crate::base::{Key, ReqId};
use crate::lattice::{LatticeType, LatticeValue, TypeMismatch};
use crate::node::{Calls, NodeId, Refusal};

/// How many replicas must hold a write before its client is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Durability {
    /// The coordinating replica alone. Lost if that replica crashes before gossiping it.
    One,
    /// A majority of the key's replicas: survives any minority of crashes. The default.
    Majority,
    /// Every replica of the key.
    All,
}

impl Durability {
    /// The number of replicas, out of `replicas`, that must hold a write.
    pub fn replicas_needed(self, replicas: usize) -> usize {
        match self {
            Self::One => replicas.min(1),
            Self::Majority => replicas / 2 + usize::from(replicas > 0),
            Self::All => replicas,
        }
    }
}

/// Why a put was rejected. Every variant is *definite*: the write did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PutError {
    /// The key holds, or is declared to hold, another lattice type.
    #[error(transparent)]
    TypeMismatch(#[from] TypeMismatch),
    /// The put would create a key on a replica already holding its maximum number of keys.
    #[error("the replica already holds its maximum of {max_keys} keys")]
    StoreFull {
        /// The replica's bound.
        max_keys: u32,
    },
    /// The replica already tracks its maximum of unacknowledged puts; retry later.
    #[error("the replica is tracking too many unacknowledged puts; retry later")]
    Overloaded,
}

impl PutError {
    /// The mismatch error for a value of type `incoming` put to a key of type `stored`.
    pub fn mismatch(stored: LatticeType, incoming: LatticeType) -> Self {
        Self::TypeMismatch(TypeMismatch { stored, incoming })
    }
}

/// One call an application makes of its client.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Op {
    /// Read a key.
    Get {
        /// The key.
        key: Key,
    },
    /// Merge a value into a key.
    Put {
        /// The key.
        key: Key,
        /// The value.
        value: LatticeValue,
        /// How many replicas must hold it before the put is acknowledged.
        durability: Durability,
    },
    /// Ask a storage node to leave the ring (an operator's request); ends when it has.
    Leave {
        /// The node.
        node: NodeId,
    },
}

impl Op {
    /// The key the operation is about, if any.
    pub fn key(&self) -> Option<&Key> {
        match self {
            Self::Get { key } | Self::Put { key, .. } => Some(key),
            Self::Leave { .. } => None,
        }
    }

    /// The request that carries this operation to a storage node (or a cache), numbered `req`.
    pub fn request(&self, req: ReqId) -> KvsMsg {
        match self.clone() {
            Self::Get { key } => KvsMsg::Get { req, key },
            Self::Put { key, value, durability } => KvsMsg::Put { req, key, value, durability },
            Self::Leave { .. } => KvsMsg::Leave { req },
        }
    }
}

/// How a call ended, as the client tells its application.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Outcome {
    /// A get answered: the replica's value, or `None` for a key it does not hold.
    Read(Option<LatticeValue>),
    /// A put acknowledged at its durability.
    Written,
    /// A put refused by the replica its first attempt reached; definite: it did not happen.
    Rejected(PutError),
    /// The node asked to leave has left the ring.
    Left,
    /// The node asked to leave is the ring's last member and stays; definite.
    LeaveRefused,
    /// No answer settled it.
    Failed(Failure),
}

impl Outcome {
    /// Whether the outcome is certain: the call happened, or certainly did not.
    pub fn is_definite(&self) -> bool {
        !matches!(self, Self::Failed(Failure::Indefinite { .. }))
    }
}

/// Why a call failed, and whether it may still have happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Failure {
    /// No replica took it — each attempt was refused, redirected or could not be delivered,
    /// or there was no replica to ask (`last`: the last refusal, if there was one). Definite:
    /// it did not happen. A read that got no answer is one too: a read changes nothing.
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last refusal heard, if any.
        last: Option<Refusal>,
    },
    /// The request itself was refused as invalid, so no replica would take it; definite.
    Invalid(Refusal),
    /// An attempt may have reached a replica that took it, but no answer came: the write may
    /// or may not have happened.
    Indefinite {
        /// Attempts made.
        attempts: u32,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable { attempts, last: Some(last) } => {
                write!(f, "no replica took it after {attempts} attempts (last: {last})")
            }
            Self::Unavailable { attempts, last: None } => {
                write!(f, "no replica took it after {attempts} attempts")
            }
            Self::Invalid(refusal) => write!(f, "refused: {refusal}"),
            Self::Indefinite { attempts } => write!(
                f,
                "no definite answer after {attempts} attempts; it may or may not have happened"
            ),
        }
    }
}

/// The messages of the KVS protocol: between applications and their clients, clients and
/// storage nodes (or caches), and among storage nodes and caches.
///
/// `req` numbers a sender's requests; a retry is a new request with a new number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum KvsMsg {
    /// Client → replica: read `key`.
    Get {
        /// The client's request number.
        req: ReqId,
        /// The key.
        key: Key,
    },
    /// Replica → client: the replica's value of the key, `None` when it holds no such key
    /// (distinct from a key holding bottom).
    GetOk {
        /// The request answered.
        req: ReqId,
        /// The value, if the key exists here.
        value: Option<LatticeValue>,
    },
    /// Client → replica: merge `value` into `key`; acknowledge once `durability` is met.
    Put {
        /// The client's request number.
        req: ReqId,
        /// The key.
        key: Key,
        /// The value to merge.
        value: LatticeValue,
        /// How many replicas must hold it before the acknowledgement.
        durability: Durability,
    },
    /// Replica → client: the put is held by as many replicas as it asked for.
    PutOk {
        /// The request answered.
        req: ReqId,
    },
    /// Replica → client: the put was refused and did not happen.
    PutRejected {
        /// The request answered.
        req: ReqId,
        /// Why.
        error: PutError,
    },
    /// Replica → client: this replica is not responsible for `key` under ring `epoch`; these
    /// are the responsible replicas, primary first.
    Redirect {
        /// The request answered.
        req: ReqId,
        /// The key.
        key: Key,
        /// The ring epoch the answer comes from.
        epoch: Epoch,
        /// The key's responsible replicas under that epoch.
        owners: Vec<NodeId>,
    },
    /// Replica → replica: my values of these keys (a batch), from my incarnation `incarnation`.
    Gossip {
        /// The sender's incarnation.
        incarnation: u32,
        /// Key → the sender's value.
        entries: BTreeMap<Key, LatticeValue>,
    },
    /// Replica → replica: my values of the keys you gossiped, after merging them.
    GossipAck {
        /// The acknowledging replica's incarnation.
        incarnation: u32,
        /// Key → the acknowledging replica's value.
        entries: BTreeMap<Key, LatticeValue>,
    },
    /// Restarted replica → replica: I restarted empty as incarnation `incarnation`; send me
    /// what I am responsible for, and stop trusting my earlier acknowledgements.
    Hello {
        /// The restarted replica's new incarnation.
        incarnation: u32,
    },
    /// Replica → restarted replica: your `Hello` of `incarnation` was received; here is my view
    /// of the membership (a restarted node starts from its configured ring, which may be stale).
    HelloAck {
        /// The incarnation acknowledged.
        incarnation: u32,
        /// The responder's membership.
        members: Membership,
    },
    /// Replica → replica: my view of the membership changed; merge it. Re-sent until answered.
    RingUpdate {
        /// The sender's incarnation (a peer that learns of the sender only from a view must
        /// still learn that it restarted).
        incarnation: u32,
        /// The sender's membership.
        members: Membership,
    },
    /// Replica → replica: my membership after merging your `RingUpdate`.
    RingAck {
        /// The responder's incarnation.
        incarnation: u32,
        /// The responder's membership.
        members: Membership,
    },
    /// Operator → storage node: leave the ring, handing every key to its new owners.
    Leave {
        /// The operator's request number.
        req: ReqId,
    },
    /// Cache → replica: I hold these keys; push me their values when they grow. Sent again
    /// every renewal period, which renews each subscription's lease; a subscription that is
    /// new is answered with the value.
    Subscribe {
        /// The cache's incarnation: a replica ignores what an earlier one sent, and forgets an
        /// earlier one's subscriptions when a later one speaks.
        incarnation: u32,
        /// The keys.
        keys: BTreeSet<Key>,
    },
    /// Cache → replica: I am fetching these keys: subscribe me and push me their values now
    /// (even if I am subscribed already, since a renewal would push nothing). Re-sent every
    /// renewal period while the fetch lasts.
    Fetch {
        /// The cache's incarnation: a replica ignores what an earlier one sent, and forgets an
        /// earlier one's subscriptions when a later one speaks.
        incarnation: u32,
        /// The keys.
        keys: BTreeSet<Key>,
        /// The cache's fetch epoch when it sent this: the replica remembers, per key, the
        /// latest it heard, and stamps every push of the key with it (`Push::epochs`).
        epoch: u64,
    },
    /// Cache → replica: I no longer hold these keys (evicted, or pushed but not held).
    Unsubscribe {
        /// The cache's incarnation: a replica ignores what an earlier one sent, and forgets an
        /// earlier one's subscriptions when a later one speaks.
        incarnation: u32,
        /// The keys.
        keys: BTreeSet<Key>,
    },
    /// Replica → cache: the replica's values of subscribed keys (`None`: it holds no such key).
    Push {
        /// The incarnation of the cache it is for: a restarted cache ignores pushes meant for
        /// its predecessor (they may answer fetches from before a write).
        incarnation: u32,
        /// Key → the replica's value.
        entries: BTreeMap<Key, Option<LatticeValue>>,
        /// Per key, the latest `Fetch` epoch the replica had heard from this cache when it sent
        /// this (absent: none, or 0). A cache resolves a fetch only with a push stamped at or
        /// after the fetch's epoch: the replica sent it after hearing a `Fetch` the cache sent
        /// since the fetch began, so after every write the cache had acknowledged before;
        /// anything older (a delayed push, an answer to a fetch of a key since evicted) may
        /// predate such a write.
        epochs: BTreeMap<Key, u64>,
    },
    /// Cache → replica: the cache's values of the pushed keys it holds, after merging.
    PushAck {
        /// The cache's incarnation.
        incarnation: u32,
        /// Key → the cache's value.
        entries: BTreeMap<Key, LatticeValue>,
    },
    /// Storage node → operator: this node is the ring's last member and cannot leave: its keys
    /// would have nowhere to go. Definite: nothing changed.
    LeaveRefused {
        /// The request answered.
        req: ReqId,
    },
    /// Storage node → operator: this node has left: its keys are held by their new owners, no
    /// put it coordinated is waiting, every peer knows, and it may be stopped.
    LeaveOk {
        /// The request answered.
        req: ReqId,
    },
    /// Application → client: perform `op`; `req` is the application's number for the call.
    Call {
        /// The application's request number.
        req: ReqId,
        /// What to do.
        op: Op,
    },
    /// Client → application: how call `req` ended.
    Done {
        /// The call answered.
        req: ReqId,
        /// How it ended.
        outcome: Outcome,
    },
    /// A harness → the sender of request `req`: it did not happen at the node it was sent to
    /// (see [`Refusal`]). Sent on that node's behalf, from its id, by the transport or the
    /// node's runtime; protocol nodes never send it.
    Refused {
        /// The request answered.
        req: ReqId,
        /// Why it did not happen there.
        refusal: Refusal,
    },
}

impl Calls for KvsMsg {
    /// `Get`, `Put`, `Leave` (to a storage node or a cache) and `Call` (to a client).
    fn request(&self) -> Option<ReqId> {
        match self {
            Self::Get { req, .. }
            | Self::Put { req, .. }
            | Self::Leave { req }
            | Self::Call { req, .. } => Some(*req),
            _ => None,
        }
    }

    /// A storage node's or cache's answers (`GetOk`, `PutOk`, `PutRejected`, `Redirect`,
    /// `LeaveOk`, `LeaveRefused`), a harness's `Refused`, and a client's `Done`.
    fn answers(&self) -> Option<ReqId> {
        match self {
            Self::GetOk { req, .. }
            | Self::PutOk { req }
            | Self::PutRejected { req, .. }
            | Self::Redirect { req, .. }
            | Self::LeaveOk { req }
            | Self::LeaveRefused { req }
            | Self::Refused { req, .. }
            | Self::Done { req, .. } => Some(*req),
            _ => None,
        }
    }

    fn refused(req: ReqId, refusal: Refusal) -> Self {
        Self::Refused { req, refusal }
    }

    /// A `Put`.
    fn writes(&self) -> bool {
        matches!(self, Self::Put { .. })
    }
}

/// The timers of the KVS protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum KvsTimer {
    /// Storage node: send gossip to replicas that are behind.
    Gossip,
    /// Storage node: re-send `Hello` to peers that have not acknowledged it.
    Hello,
    /// Storage node: re-send `RingUpdate` to peers not known to hold this node's membership.
    Ring,
    /// Client: the attempt sent as request `0` got no answer in time.
    Attempt(ReqId),
    /// Storage node: re-send pushes that caches have not acknowledged.
    Push,
    /// Storage node: drop caches that did not renew since the last tick.
    Lease,
    /// Cache: renew subscriptions (and re-send lost fetches).
    Renew,
    /// Cache: re-send write-through puts the KVS has not answered.
    WriteRetry,
}
