//! The wire: one tarpc service per node, carrying postcard-encoded protocol messages.
//!
//! Protocol messages are one-way (the protocols tolerate loss, duplication and reordering), so
//! peers batch them into [`Squall::deliver`] calls whose answer only says the batch arrived.
//! Clients call [`Squall::call`] with one request message; the runtime turns it into an input
//! and answers with the message the node emits for it. Every payload is a version byte
//! ([`PROTOCOL_VERSION`]) and the postcard bytes of one [`SystemMsg`] — the whole system's message type, whose first byte says the protocol
//! (KVS, session, executor) — whatever the role that sends or takes it ([`encode`],
//! [`decode`]): one wire for storage nodes, schedulers and workers, so a worker's cache talks
//! to storage nodes in the storage nodes' own words. The service is the same for every role,
//! and a payload that does not decode, or belongs to a protocol the node does not speak, gets
//! a typed [`CallError`] instead of closing the connection.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use squall_proto::worker::SystemMsg;
use squall_proto::{NodeId, Refusal, Within};

/// The version of the wire's messages: the first byte of every payload. A node refuses a
/// payload of another version instead of misreading it (postcard carries no schema, so a
/// message type changed between two builds would otherwise decode as something else). Raise
/// it with every change to an encoded type; `cluster/tests/wire_spec.rs` fails until the
/// spec's message tables and test vectors (docs/wire.md) are regenerated, as a reminder.
pub const PROTOCOL_VERSION: u8 = 2;

/// Why a payload is not a message for this node.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// An empty payload.
    #[error("an empty payload")]
    Empty,
    /// A payload of another protocol version: a node or client of another build.
    #[error(
        "protocol version {theirs}, but this node speaks version {ours} (a node or client of \
         another build?)"
    )]
    Version {
        /// The version the payload says.
        theirs: u8,
        /// [`PROTOCOL_VERSION`].
        ours: u8,
    },
    /// The bytes are not a [`SystemMsg`].
    #[error("not a Squall message: {0}")]
    Postcard(#[from] postcard::Error),
    /// A message of a protocol this node does not speak (a session message sent to a storage
    /// node, say).
    #[error("a message of a protocol this node does not speak")]
    WrongProtocol,
}

/// Encodes a message of any role as the wire's [`SystemMsg`]: [`PROTOCOL_VERSION`], then the
/// message's postcard bytes.
pub fn encode<M: Within<SystemMsg>>(msg: M) -> Result<Bytes, postcard::Error> {
    postcard::to_extend(&msg.into_world(), vec![PROTOCOL_VERSION]).map(Bytes::from)
}

/// The length [`encode`] gives `msg`, without writing it.
pub fn encoded_len<M: Within<SystemMsg>>(msg: M) -> Result<usize, postcard::Error> {
    postcard::experimental::serialized_size(&msg.into_world()).map(|len| len + 1)
}

/// Decodes a wire [`SystemMsg`] as a message of the role that takes it.
pub fn decode<M: Within<SystemMsg>>(bytes: &[u8]) -> Result<M, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version { theirs: version, ours: PROTOCOL_VERSION });
    }
    let msg: SystemMsg = postcard::from_bytes(rest)?;
    M::from_world(msg).ok_or(DecodeError::WrongProtocol)
}

/// Why a call was refused or not answered. Every variant but [`CallError::Timeout`] and
/// [`CallError::Abandoned`] is *definite*: the node did not act on the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CallError {
    /// The payload is not a valid message of the node's protocol.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The message is valid but is not a request a client may send (for example a peer
    /// message sent through `call`).
    #[error("not a client request")]
    NotARequest,
    /// The caller id is not a client id (clients use ids at or above 2^63).
    #[error("caller id {0} is not a client id (clients use ids >= 2^63)")]
    InvalidCaller(u64),
    /// The encoded request is larger than the node accepts.
    #[error("the request is {bytes} bytes; this node accepts at most {max}")]
    TooLarge {
        /// The request's size.
        bytes: usize,
        /// The configured limit (`limits.max_value_bytes`).
        max: usize,
    },
    /// The node's inbox is full; retry later.
    #[error("the node is overloaded; retry later")]
    Overloaded,
    /// The node is shutting down (or stopped) and takes no new requests.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The same caller sent two requests with one request number at once.
    #[error("request number reused while the first request is in flight")]
    Duplicate,
    /// The node's disk has less free space than its reserve: it takes no writes (reads are
    /// still served). Definite.
    #[error(
        "the node's disk has {free} bytes free, below its reserve of {reserve}; it takes no writes"
    )]
    DiskFull {
        /// Free bytes on the data directory's file system when last measured.
        free: u64,
        /// The configured reserve (`limits.min_free_disk_bytes`).
        reserve: u64,
    },
    /// The node did not answer in time. Indefinite: the request may have taken effect.
    #[error("no answer before the deadline")]
    Timeout,
    /// The node took the request but stopped (crashed, or its shutdown drain ran out) before
    /// answering. Indefinite: the request may have taken effect.
    #[error("the node stopped before answering; the request may have taken effect")]
    Abandoned,
}

impl CallError {
    /// Whether the node certainly did not act on the request.
    pub fn is_definite(&self) -> bool {
        !matches!(self, Self::Timeout | Self::Abandoned)
    }

    /// The refusal a requester's protocol hears for this error: `None` when the request may
    /// have been acted on (no answer, then, is all it gets).
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::Malformed(_) => Some(Refusal::Malformed),
            Self::NotARequest => Some(Refusal::NotARequest),
            Self::InvalidCaller(_) => Some(Refusal::InvalidCaller),
            Self::TooLarge { .. } => Some(Refusal::TooLarge),
            Self::Overloaded => Some(Refusal::Overloaded),
            Self::ShuttingDown => Some(Refusal::ShuttingDown),
            Self::Duplicate => Some(Refusal::Duplicate),
            Self::DiskFull { .. } => Some(Refusal::DiskFull),
            Self::Timeout | Self::Abandoned => None,
        }
    }
}

/// What a node says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The node.
    pub id: NodeId,
    /// Peer messages delivered to the node.
    pub delivered: u64,
    /// Client calls received.
    pub calls: u64,
    /// Inputs the node ignored as stale or duplicated.
    pub ignored: u64,
    /// Messages the runtime could not send (peer queue full or unknown destination) or
    /// peer messages dropped because the inbox was full.
    pub dropped: u64,
    /// Timers fired.
    pub timers: u64,
}

/// The service every node serves on its RPC port.
#[tarpc::service]
pub trait Squall {
    /// Node → node: a batch of protocol messages from `from`, each postcard-encoded. Fire and
    /// forget in meaning: messages that do not decode, or that find the inbox full, are
    /// dropped and counted (the protocols re-send).
    async fn deliver(from: NodeId, msgs: Vec<Bytes>);
    /// Client → node: one request message; answered with the node's reply message.
    async fn call(from: NodeId, msg: Bytes) -> Result<Bytes, CallError>;
    /// Answers at once without touching the node: the RPC floor for benchmarks.
    async fn ping() -> NodeId;
    /// The node's counters.
    async fn stats() -> NodeStats;
}
