//! The KVS client library: routing by the hash ring, redirects, retries, LWW clocks.
//!
//! A [`KvClient`] routes each key to its replicas by its own copy of the ring, caches the
//! owners it learns from redirects (only ever replacing a route by one from a newer epoch),
//! retries across replicas (lattice merges are idempotent, so re-sending a put is safe), and
//! says whether a failure is *definite* (the operation did not happen) or *indefinite* (it may
//! have). LWW values are stamped by a hybrid logical clock ([`Hlc`]) with the client's id as
//! the tie-breaker. One client may be shared by many tasks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use squall_proto::NodeId;
use squall_proto::kvs::{Durability, Epoch, Key, KvsMsg, KvsNode, PutError, Ring};
use squall_proto::lattice::{LatticeValue, Lww, Stamp, WriterId};

use crate::config::{CLIENT_ID_BASE, ClusterConfig};
use crate::rpc::{CallError, SquallClient};
use crate::runtime::{NodeHandle, connect};
use crate::sync::{AtomicU64, Mutex, Ordering};

/// Why an operation failed, and whether it certainly did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The put was refused by its first replica; it did not happen.
    #[error("put rejected: {0}")]
    Rejected(PutError),
    /// The value is larger than the cluster accepts; nothing was sent.
    #[error("the request is {bytes} bytes; the cluster accepts at most {max}")]
    TooLarge {
        /// The encoded request's size.
        bytes: usize,
        /// `limits.max_value_bytes`.
        max: usize,
    },
    /// A node refused the request as invalid; it did not happen.
    #[error("node {node} refused the request: {error}")]
    Refused {
        /// The node.
        node: NodeId,
        /// Why.
        error: CallError,
    },
    /// No replica could be reached, or every one refused to take the request (overloaded,
    /// shutting down); the operation did not happen.
    #[error("no replica of {key:?} took the request after {attempts} attempts (last: {last})")]
    Unavailable {
        /// The key.
        key: Key,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// No definite answer: a request reached a replica but its answer was lost or late, so the
    /// write may or may not have happened.
    #[error(
        "no definite answer for {key:?} after {attempts} attempts (last: {last}); \
         the operation may or may not have happened"
    )]
    Indefinite {
        /// The key.
        key: Key,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The node answered with a message that does not answer the request (a bug).
    #[error("node {node} answered with an unexpected message: {answer}")]
    Protocol {
        /// The node.
        node: NodeId,
        /// The answer, debug-printed.
        answer: String,
    },
}

impl KvError {
    /// Whether the operation certainly did not happen.
    pub fn is_definite(&self) -> bool {
        !matches!(self, Self::Indefinite { .. } | Self::Protocol { .. })
    }
}

/// A hybrid logical clock: readings are microseconds since the Unix epoch, strictly increasing
/// across every thread that shares the clock, and never behind a stamp the client observed.
#[derive(Debug)]
pub struct Hlc {
    last: AtomicU64,
}

impl Default for Hlc {
    fn default() -> Self {
        Self::new()
    }
}

impl Hlc {
    /// A clock that has read nothing yet.
    pub fn new() -> Self {
        Self { last: AtomicU64::new(0) }
    }

    /// A reading at least one above every earlier reading and observation, and at least
    /// `physical`.
    pub fn tick(&self, physical: u64) -> u64 {
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let next = physical.max(last + 1);
            match self.last.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Moves the clock to at least `time` (a stamp read from the store), so later writes by this
    /// client order after what it read.
    pub fn observe(&self, time: u64) {
        self.last.fetch_max(time, Ordering::AcqRel);
    }

    /// A reading from the system clock.
    pub fn now(&self) -> u64 {
        let physical = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.tick(physical)
    }
}

/// Owners learned from redirects, by key. A route is only ever replaced by one from a strictly
/// newer ring epoch (the client-side half of `KVS-I9`), whatever order concurrent tasks learn
/// them in.
#[derive(Debug)]
pub struct RouteCache {
    routes: Mutex<HashMap<Key, (Epoch, Vec<NodeId>)>>,
    capacity: usize,
}

impl RouteCache {
    /// An empty cache holding at most `capacity` routes (it is cleared when full: routes are
    /// hints, the ring is the fallback).
    pub fn new(capacity: usize) -> Self {
        Self { routes: Mutex::new(HashMap::new()), capacity }
    }

    /// The cached route of `key`.
    pub fn get(&self, key: &str) -> Option<(Epoch, Vec<NodeId>)> {
        self.routes.lock().expect("route cache lock").get(key).cloned()
    }

    /// Records `owners` for `key` if `epoch` is newer than both `floor` (the epoch of the ring
    /// the client routes by) and the cached route. Returns whether it did.
    pub fn learn(&self, key: &str, epoch: Epoch, owners: Vec<NodeId>, floor: Epoch) -> bool {
        let mut routes = self.routes.lock().expect("route cache lock");
        let known = routes.get(key).map_or(floor, |(cached, _)| (*cached).max(floor));
        if epoch <= known {
            return false;
        }
        if routes.len() >= self.capacity && !routes.contains_key(key) {
            routes.clear();
        }
        routes.insert(key.to_owned(), (epoch, owners));
        true
    }
}

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// One attempt's deadline.
    pub timeout: Duration,
    /// Attempts per operation.
    pub attempts: u32,
    /// The durability of [`KvClient::put`].
    pub durability: Durability,
    /// The largest encoded request the cluster accepts.
    pub max_request: usize,
    /// The largest frame.
    pub max_frame: usize,
}

impl ClientSettings {
    /// The settings a configuration gives its clients.
    pub fn from_config(config: &ClusterConfig) -> Self {
        Self {
            timeout: Duration::from_millis(config.client.timeout_ms),
            attempts: config.client.attempts,
            durability: config.cluster.durability.into(),
            max_request: config.limits.max_value_bytes,
            max_frame: config.limits.max_frame_bytes,
        }
    }
}

/// A client of a Squall cluster.
#[derive(Debug)]
pub struct KvClient {
    id: NodeId,
    ring: Ring,
    replication: usize,
    addresses: HashMap<NodeId, SocketAddr>,
    connections: Mutex<HashMap<NodeId, SquallClient>>,
    local: Option<NodeHandle<KvsNode>>,
    targets: Vec<NodeId>,
    routes: RouteCache,
    clock: Hlc,
    next_req: AtomicU64,
    settings: ClientSettings,
}

/// What became of a request to leave the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveOutcome {
    /// The node handed off its keys and left; it may be stopped.
    Left,
    /// The node is the ring's last member and stays.
    Refused,
}

enum Attempt {
    Answer(KvsMsg),
    /// The node did not take the request: nothing happened.
    NotTaken(String),
    /// The node is shutting down and did not take the request.
    Stopping,
    /// The request may have reached the node.
    Unknown(String),
    /// The node refused the request as invalid: nothing happened, and no replica would take it.
    Refused(CallError),
}

impl KvClient {
    /// A client of the cluster `config` describes, with a random client id.
    pub fn new(config: &ClusterConfig) -> Self {
        Self::with_id(config, NodeId(CLIENT_ID_BASE | rand::random::<u64>()))
    }

    /// A client with a chosen id (at or above 2^63).
    pub fn with_id(config: &ClusterConfig, id: NodeId) -> Self {
        Self {
            id,
            ring: config.initial_ring(),
            replication: config.cluster.replication,
            addresses: config.rpc_addresses().into_iter().collect(),
            connections: Mutex::new(HashMap::new()),
            local: None,
            targets: Vec::new(),
            routes: RouteCache::new(1 << 20),
            clock: Hlc::new(),
            next_req: AtomicU64::new(0),
            settings: ClientSettings::from_config(config),
        }
    }

    /// Sends requests for `handle`'s node straight into its inbox instead of over TCP, and
    /// prefers it among a key's replicas (the RESP front end's client).
    pub fn with_local(mut self, handle: NodeHandle<KvsNode>) -> Self {
        self.local = Some(handle);
        self
    }

    /// Sends every request to one of `targets` (chosen by key) instead of the key's replicas
    /// by the ring, until a redirect names the owners: for reading through particular nodes,
    /// and for benchmarking a subset of a cluster.
    pub fn with_targets(mut self, targets: Vec<NodeId>) -> Self {
        self.targets = targets;
        self
    }

    /// Changes the settings.
    pub fn with_settings(mut self, settings: ClientSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The client's id (also the writer id of its LWW stamps).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// An LWW value stamped now by this client's clock.
    pub fn lww(&self, value: Bytes) -> LatticeValue {
        LatticeValue::Lww(Lww::new(Stamp::new(self.clock.now(), WriterId(self.id.0)), value))
    }

    /// Reads `key`: `None` when no replica asked holds it.
    pub async fn get(&self, key: &str) -> Result<Option<LatticeValue>, KvError> {
        let answer = self
            .request(key, |req| KvsMsg::Get { req, key: key.to_owned() })
            .await
            .map_err(|e| match e {
                // A read changes nothing: whatever became of it, it did not happen.
                KvError::Indefinite { key, attempts, last } => {
                    KvError::Unavailable { key, attempts, last }
                }
                other => other,
            })?;
        match answer {
            (_, KvsMsg::GetOk { value, .. }) => {
                if let Some(LatticeValue::Lww(lww)) = &value
                    && let Some(stamp) = lww.stamp()
                {
                    self.clock.observe(stamp.time);
                }
                Ok(value)
            }
            (node, other) => Err(KvError::Protocol { node, answer: format!("{other:?}") }),
        }
    }

    /// Merges `value` into `key` at the configured default durability.
    pub async fn put(&self, key: &str, value: LatticeValue) -> Result<(), KvError> {
        self.put_with(key, value, self.settings.durability).await
    }

    /// Merges `value` into `key`, acknowledged once `durability` replicas hold it.
    pub async fn put_with(
        &self,
        key: &str,
        value: LatticeValue,
        durability: Durability,
    ) -> Result<(), KvError> {
        let make = |req| KvsMsg::Put { req, key: key.to_owned(), value: value.clone(), durability };
        let size = postcard::experimental::serialized_size(&make(0)).unwrap_or(usize::MAX);
        if size > self.settings.max_request {
            return Err(KvError::TooLarge { bytes: size, max: self.settings.max_request });
        }
        match self.request(key, make).await? {
            (_, KvsMsg::PutOk { .. }) => Ok(()),
            (node, other) => Err(KvError::Protocol { node, answer: format!("{other:?}") }),
        }
    }

    /// Asks storage node `node` to leave the ring, handing its keys to their new owners;
    /// waits up to `timeout` for it to finish.
    pub async fn leave(&self, node: NodeId, timeout: Duration) -> Result<LeaveOutcome, KvError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let key = format!("<leave {node}>");
        match self.attempt(node, KvsMsg::Leave { req }, timeout).await {
            Attempt::Answer(KvsMsg::LeaveOk { .. }) => Ok(LeaveOutcome::Left),
            Attempt::Answer(KvsMsg::LeaveRefused { .. }) => Ok(LeaveOutcome::Refused),
            Attempt::Answer(other) => Err(KvError::Protocol { node, answer: format!("{other:?}") }),
            Attempt::NotTaken(last) => Err(KvError::Unavailable { key, attempts: 1, last }),
            Attempt::Stopping => Err(KvError::Unavailable {
                key,
                attempts: 1,
                last: CallError::ShuttingDown.to_string(),
            }),
            Attempt::Unknown(last) => Err(KvError::Indefinite { key, attempts: 1, last }),
            Attempt::Refused(error) => Err(KvError::Refused { node, error }),
        }
    }

    /// The replicas to try for `key`, this process's own node first when it is one.
    fn owners(&self, key: &str) -> Vec<NodeId> {
        let mut owners = match self.routes.get(key) {
            Some((_, owners)) if !owners.is_empty() => owners,
            _ if !self.targets.is_empty() => {
                let mut targets = self.targets.clone();
                let at = squall_proto::kvs::fnv1a64(key.as_bytes()) as usize % targets.len();
                targets.rotate_left(at);
                targets
            }
            _ => self.ring.responsible(key, self.replication),
        };
        if let Some(local) = &self.local
            && let Some(at) = owners.iter().position(|n| *n == local.id())
        {
            owners.rotate_left(at);
        }
        owners
    }

    /// Runs one get or put: tries the key's replicas in turn, follows redirects from newer
    /// epochs, and classifies the failure when no attempt gets a definite answer.
    async fn request(
        &self,
        key: &str,
        make: impl Fn(u64) -> KvsMsg,
    ) -> Result<(NodeId, KvsMsg), KvError> {
        let mut maybe_happened = false;
        // Why the outcome is unknown: the first attempt that may have taken effect.
        let mut uncertain = String::new();
        let mut last = String::from("no attempt");
        let attempts = self.settings.attempts;
        // Nodes that said they are shutting down: not asked again by this operation.
        let mut stopping: Vec<NodeId> = Vec::new();
        for attempt in 0..attempts {
            let mut owners = self.owners(key);
            owners.retain(|n| !stopping.contains(n));
            let Some(&node) = owners.get(attempt as usize % owners.len().max(1)) else {
                let why = if stopping.is_empty() {
                    "the ring has no members".to_owned()
                } else {
                    format!("every replica asked is shutting down (last: {last})")
                };
                return Err(if maybe_happened {
                    KvError::Indefinite {
                        key: key.to_owned(),
                        attempts: attempt,
                        last: why + &uncertain,
                    }
                } else {
                    KvError::Unavailable { key: key.to_owned(), attempts: attempt, last: why }
                });
            };
            let req = self.next_req.fetch_add(1, Ordering::Relaxed);
            match self.attempt(node, make(req), self.settings.timeout).await {
                Attempt::Answer(KvsMsg::Redirect { key: redirected, epoch, owners, .. }) => {
                    self.routes.learn(&redirected, epoch, owners, self.ring.epoch());
                    last = format!("redirected by {node} (epoch {})", epoch.0);
                }
                Attempt::Answer(KvsMsg::PutRejected { error, .. }) => {
                    // Definite only if no earlier attempt may have landed.
                    return Err(if maybe_happened {
                        KvError::Indefinite {
                            key: key.to_owned(),
                            attempts: attempt + 1,
                            last: format!("{node} rejected a retry: {error}"),
                        }
                    } else {
                        KvError::Rejected(error)
                    });
                }
                Attempt::Answer(answer) => return Ok((node, answer)),
                Attempt::Refused(error) if !maybe_happened => {
                    return Err(KvError::Refused { node, error });
                }
                Attempt::Refused(error) => {
                    return Err(KvError::Indefinite {
                        key: key.to_owned(),
                        attempts: attempt + 1,
                        last: format!("{node} refused a retry: {error}"),
                    });
                }
                Attempt::NotTaken(why) => last = format!("{node}: {why}"),
                Attempt::Stopping => {
                    stopping.push(node);
                    last = format!("{node}: {}", CallError::ShuttingDown);
                }
                Attempt::Unknown(why) => {
                    if !maybe_happened {
                        uncertain =
                            format!("; attempt {} to {node} may have landed: {why}", attempt + 1);
                    }
                    maybe_happened = true;
                    last = format!("{node}: {why}");
                }
            }
        }
        let key = key.to_owned();
        Err(if maybe_happened {
            KvError::Indefinite { key, attempts, last: format!("{last}{uncertain}") }
        } else {
            KvError::Unavailable { key, attempts, last }
        })
    }

    async fn attempt(&self, node: NodeId, msg: KvsMsg, timeout: Duration) -> Attempt {
        if let Some(local) = self.local.as_ref().filter(|local| local.id() == node) {
            return match tokio::time::timeout(timeout, local.call(self.id, msg)).await {
                Ok(Ok(answer)) => Attempt::Answer(answer),
                Ok(Err(e)) => Self::classify(node, e),
                Err(_) => Attempt::Unknown("no answer before the deadline".into()),
            };
        }
        let client = match self.connection(node).await {
            Ok(client) => client,
            Err(why) => return Attempt::NotTaken(why),
        };
        let bytes = match postcard::to_allocvec(&msg) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => return Attempt::NotTaken(format!("cannot encode: {e}")),
        };
        let mut ctx = tarpc::context::current();
        ctx.deadline = std::time::Instant::now() + timeout;
        match client.call(ctx, self.id, bytes).await {
            Ok(Ok(answer)) => match postcard::from_bytes::<KvsMsg>(&answer) {
                Ok(answer) => Attempt::Answer(answer),
                Err(e) => Attempt::Unknown(format!("undecodable answer: {e}")),
            },
            Ok(Err(e)) => Self::classify(node, e),
            Err(e) => {
                if !matches!(e, tarpc::client::RpcError::Server(_)) {
                    // The connection is suspect: reconnect on the next attempt.
                    self.connections.lock().expect("connections lock").remove(&node);
                }
                match e {
                    // The server throttled it (over `max_in_flight`) without running it.
                    tarpc::client::RpcError::Server(ref server)
                        if server.kind == std::io::ErrorKind::WouldBlock =>
                    {
                        Attempt::NotTaken(format!("throttled: {}", server.detail))
                    }
                    // tarpc reports a connection that closed before the answer the same way
                    // whether or not the request had left: the outcome is unknown.
                    _ => Attempt::Unknown(format!("rpc failed: {e}")),
                }
            }
        }
    }

    fn classify(node: NodeId, error: CallError) -> Attempt {
        match error {
            CallError::Overloaded => Attempt::NotTaken(format!("{node}: {error}")),
            CallError::ShuttingDown => Attempt::Stopping,
            CallError::Timeout | CallError::Abandoned => Attempt::Unknown(error.to_string()),
            // Invalid requests are definite, and retrying elsewhere would not help.
            other => Attempt::Refused(other),
        }
    }

    async fn connection(&self, node: NodeId) -> Result<SquallClient, String> {
        if let Some(client) = self.connections.lock().expect("connections lock").get(&node) {
            return Ok(client.clone());
        }
        let addr = *self.addresses.get(&node).ok_or_else(|| format!("no address for {node}"))?;
        let client =
            tokio::time::timeout(self.settings.timeout, connect(addr, self.settings.max_frame))
                .await
                .map_err(|_| format!("connecting to {addr} timed out"))?
                .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let mut connections = self.connections.lock().expect("connections lock");
        Ok(connections.entry(node).or_insert(client).clone())
    }
}
