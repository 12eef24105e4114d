//! The KVS client library: an async front for [`squall_proto::kvs::KvsClient`].
//!
//! All the client's protocol — routing by the ring, following redirects only from newer ring
//! epochs (KVS-I9), retrying across replicas, saying whether a failure is *definite* (the
//! operation did not happen) or *indefinite* (it may have) — is the state machine of
//! `squall-proto`, the very one the model checker and the simulator check. Here it runs as a
//! node of its own on the generic runtime: each [`KvClient`] method is one call into it, and
//! its requests to storage nodes go out as RPC calls whose answers (or refusals) come back to
//! it as inputs. What this module adds is only what a library adds: LWW values stamped by a
//! hybrid logical clock ([`Hlc`]) with the client's id as the tie-breaker, a size check before
//! anything is sent, and Rust errors. One client may be shared by many tasks.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use squall_proto::kvs::{
    ClientConfig, Durability, Failure, Key, KvsClient, KvsMsg, Op, Outcome, PutError,
};
use squall_proto::lattice::{LatticeType, LatticeValue, Lww, Merge, PnCounter, Stamp, WriterId};
use squall_proto::{NodeId, Refusal};

use crate::config::{CLIENT_ID_BASE, ClusterConfig};
use crate::rpc::CallError;
use crate::runtime::{self, LocalCall, LocalPeers, NodeHandle, RuntimeSettings};
use crate::sync::{AtomicU64, Ordering};

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
    /// A node refused the request as invalid, so no replica would take it; it did not happen.
    #[error("the request for {key:?} was refused: {refusal}")]
    Invalid {
        /// The key.
        key: Key,
        /// Why.
        refusal: Refusal,
    },
    /// No replica took the request (each attempt was refused, redirected or undeliverable, or
    /// there was no replica to ask); the operation did not happen.
    #[error("no replica of {key:?} took the request after {attempts} attempts{}", last_refusal(.last))]
    Unavailable {
        /// The key.
        key: Key,
        /// Attempts made.
        attempts: u32,
        /// The last refusal heard, if any.
        last: Option<Refusal>,
    },
    /// No definite answer: a request may have reached a replica that took it, but its answer
    /// was lost or late, so the write may or may not have happened.
    #[error(
        "no definite answer for {key:?} after {attempts} attempts; \
         the operation may or may not have happened"
    )]
    Indefinite {
        /// The key.
        key: Key,
        /// Attempts made.
        attempts: u32,
    },
    /// The client answered with an outcome that does not fit the operation (a bug).
    #[error("unexpected outcome: {0}")]
    Protocol(String),
    /// An increment would take this client's running total of increments or decrements of a
    /// counter past 2^64 - 1, or the counter's value out of the signed 64-bit range; nothing
    /// was sent.
    #[error("the counter {key:?} would overflow")]
    Overflow {
        /// The key.
        key: Key,
    },
}

fn last_refusal(last: &Option<Refusal>) -> String {
    last.map(|refusal| format!(" (last: {refusal})")).unwrap_or_default()
}

impl KvError {
    /// Whether the operation certainly did not happen.
    pub fn is_definite(&self) -> bool {
        !matches!(self, Self::Indefinite { .. } | Self::Protocol(_))
    }

    fn of(key: &str, failure: Failure) -> Self {
        let key = key.to_owned();
        match failure {
            Failure::Unavailable { attempts, last } => Self::Unavailable { key, attempts, last },
            Failure::Invalid(refusal) => Self::Invalid { key, refusal },
            Failure::Indefinite { attempts } => Self::Indefinite { key, attempts },
        }
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

/// What became of a request to leave the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveOutcome {
    /// The node handed off its keys and left; it may be stopped.
    Left,
    /// The node is the ring's last member and stays.
    Refused,
}

/// The caller id under which a [`KvClient`] calls its own client node.
const APPLICATION: NodeId = NodeId(u64::MAX);
/// Calls queued for the client node before more are refused as overloaded.
const INBOX: usize = 65_536;

/// A client of a Squall cluster.
#[derive(Debug)]
pub struct KvClient {
    cfg: ClientConfig,
    peers: std::collections::HashMap<NodeId, std::net::SocketAddr>,
    local: Vec<Arc<dyn LocalCall<KvsMsg>>>,
    settings: ClientSettings,
    /// The client node, started at the first call (so that the builder methods can still
    /// change its configuration), and stopped when the client is dropped.
    node: OnceLock<ClientNode>,
    clock: Hlc,
    next_req: AtomicU64,
    /// This client's own totals of each counter it added to ([`KvClient::add`]), one lock per
    /// key: a writer's totals must only grow from its own last write.
    counters: std::sync::Mutex<std::collections::HashMap<Key, Arc<tokio::sync::Mutex<PnCounter>>>>,
}

/// The running client node.
#[derive(Debug)]
struct ClientNode {
    handle: NodeHandle<KvsClient>,
    task: tokio::task::AbortHandle,
}

impl Drop for KvClient {
    fn drop(&mut self) {
        if let Some(node) = self.node.get() {
            node.task.abort();
        }
    }
}

impl KvClient {
    /// A client of the cluster `config` describes, with a random client id.
    pub fn new(config: &ClusterConfig) -> Self {
        Self::with_id(config, NodeId(CLIENT_ID_BASE | rand::random::<u64>()))
    }

    /// A client with a chosen id (at or above 2^63). The id is also its writer id in counters:
    /// two clients with one id must not [`add`](Self::add) to one counter at the same time
    /// (each would raise the same totals, and one add would be lost).
    pub fn with_id(config: &ClusterConfig, id: NodeId) -> Self {
        let settings = ClientSettings::from_config(config);
        let mut cfg = ClientConfig::new(id, config.initial_ring(), config.cluster.replication);
        cfg.retry_after = settings.timeout;
        cfg.max_attempts = settings.attempts;
        cfg.suspect_calls = config.client.suspect_calls;
        Self {
            cfg,
            peers: config.rpc_addresses().into_iter().collect(),
            local: Vec::new(),
            settings,
            node: OnceLock::new(),
            clock: Hlc::new(),
            next_req: AtomicU64::new(0),
            counters: std::sync::Mutex::default(),
        }
    }

    /// Sends requests for `node` straight into its inbox instead of over TCP, and asks it first
    /// among a key's replicas (the RESP front end's client).
    pub fn with_local<N: runtime::Served<Msg = KvsMsg>>(mut self, node: NodeHandle<N>) -> Self {
        self.cfg.prefer = Some(node.id());
        self.local.push(Arc::new(node));
        self
    }

    /// Sends every request to one of `targets` (chosen by key) instead of the key's replicas
    /// by the ring, until a redirect names the owners: for reading through particular nodes,
    /// and for benchmarking a subset of a cluster.
    pub fn with_targets(mut self, targets: Vec<NodeId>) -> Self {
        self.cfg.targets = targets;
        self
    }

    /// Changes the settings.
    pub fn with_settings(mut self, settings: ClientSettings) -> Self {
        self.cfg.retry_after = settings.timeout;
        self.cfg.max_attempts = settings.attempts;
        self.settings = settings;
        self
    }

    /// The client's id (also the writer id of its LWW stamps).
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// An LWW value stamped now by this client's clock.
    pub fn lww(&self, value: Bytes) -> LatticeValue {
        LatticeValue::Lww(Lww::new(Stamp::new(self.clock.now(), WriterId(self.cfg.id.0)), value))
    }

    /// Reads `key`: `None` when no replica asked holds it.
    pub async fn get(&self, key: &str) -> Result<Option<LatticeValue>, KvError> {
        match self.call(key, Op::Get { key: key.to_owned() }).await? {
            Outcome::Read(value) => {
                if let Some(LatticeValue::Lww(lww)) = &value
                    && let Some(stamp) = lww.stamp()
                {
                    self.clock.observe(stamp.time);
                }
                Ok(value)
            }
            other => Err(KvError::Protocol(format!("a get ended {other:?}"))),
        }
    }

    /// [`add_with`](Self::add_with) at the configured default durability.
    pub async fn add(&self, key: &str, by: i64) -> Result<i64, KvError> {
        self.add_with(key, by, self.settings.durability).await
    }

    /// Adds `by` (negative to subtract) to the PN-counter `key` as this client's writer,
    /// acknowledged once `durability` replicas hold it, and returns the counter's value: the
    /// counter as the replica that answered a read just before the put knew it (the local node
    /// first, for the RESP front end), merged with this client's new totals. Another writer's
    /// concurrent increment may be missing from it; none is ever lost from the counter.
    ///
    /// A client's adds to one key run one at a time: each puts the client's running totals,
    /// which only its own last write may be behind. A missing key counts from 0.
    ///
    /// # Errors
    /// [`KvError::Rejected`] with a type mismatch when the key holds another lattice type,
    /// [`KvError::Overflow`] when a total or the value would leave its range (nothing is sent),
    /// and the errors of [`get`](Self::get) and [`put_with`](Self::put_with). After a definite
    /// failure the counter is unchanged; after an indefinite one the add may have happened,
    /// and this client's later adds to the key include it.
    pub async fn add_with(
        &self,
        key: &str,
        by: i64,
        durability: Durability,
    ) -> Result<i64, KvError> {
        let own = {
            let mut counters = self.counters.lock().expect("the counters lock is never poisoned");
            Arc::clone(counters.entry(key.to_owned()).or_default())
        };
        let mut own = own.lock().await;
        let stored = match self.get(key).await? {
            None => PnCounter::default(),
            Some(LatticeValue::PnCounter(counter)) => counter,
            Some(other) => {
                let mismatch = PutError::mismatch(other.lattice_type(), LatticeType::PnCounter);
                return Err(KvError::Rejected(mismatch));
            }
        };
        // Totals this writer id put before (another client with the same id, or this process
        // before a restart) count as its own: only this writer raises them, so they can only
        // be behind, and adding to less than them would be taken as a repeat and lost.
        let writer = WriterId(self.cfg.id.0);
        let (up, down) = stored.totals(writer);
        own.merge(PnCounter::new([(writer, up, down)]));
        let overflow = || KvError::Overflow { key: key.to_owned() };
        let mut next = own.clone();
        next.add(writer, by).map_err(|_| overflow())?;
        let mut known = stored;
        known.merge(next.clone());
        let value = i64::try_from(known.value()).map_err(|_| overflow())?;
        let result = self.put_with(key, LatticeValue::PnCounter(next.clone()), durability).await;
        // After an indefinite failure the put may have reached a replica: later adds must not
        // reuse these totals, or a replica holding them would take the next add as a repeat.
        if result.is_ok() || result.as_ref().is_err_and(|e| !e.is_definite()) {
            *own = next;
        }
        result.map(|()| value)
    }

    /// [`delete_with`](Self::delete_with) at the configured default durability.
    pub async fn delete(&self, key: &str) -> Result<bool, KvError> {
        self.delete_with(key, self.settings.durability).await
    }

    /// Deletes the LWW key `key`: reads it, then puts a tombstone stamped after the stamp the
    /// read saw (and after every earlier write of this client), acknowledged once `durability`
    /// replicas hold it. Returns whether the read found a value, which is what `DEL` counts.
    ///
    /// The tombstone is written even when the read found nothing, so that a write the read
    /// missed but older than the delete is deleted too. It wins over every write stamped below
    /// it wherever the two meet, and a later write brings the key back.
    ///
    /// # Errors
    /// [`KvError::Rejected`] with a type mismatch when the key holds another lattice type
    /// (only LWW keys can be deleted: a counter or a set has no write order that a delete could
    /// follow), and the errors of [`get`](Self::get) and [`put_with`](Self::put_with).
    pub async fn delete_with(&self, key: &str, durability: Durability) -> Result<bool, KvError> {
        let existed = match self.get(key).await? {
            None => false,
            Some(LatticeValue::Lww(lww)) => lww.value().is_some(),
            Some(other) => {
                let mismatch = PutError::mismatch(other.lattice_type(), LatticeType::Lww);
                return Err(KvError::Rejected(mismatch));
            }
        };
        let stamp = Stamp::new(self.clock.now(), WriterId(self.cfg.id.0));
        self.put_with(key, LatticeValue::Lww(Lww::deleted(stamp)), durability).await?;
        Ok(existed)
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
        let op = Op::Put { key: key.to_owned(), value, durability };
        let size = crate::rpc::encoded_len(op.request(0)).unwrap_or(usize::MAX);
        if size > self.settings.max_request {
            return Err(KvError::TooLarge { bytes: size, max: self.settings.max_request });
        }
        match self.call(key, op).await? {
            Outcome::Written => Ok(()),
            other => Err(KvError::Protocol(format!("a put ended {other:?}"))),
        }
    }

    /// Asks storage node `node` to leave the ring, handing its keys to their new owners;
    /// waits up to `timeout` for it to finish.
    pub async fn leave(&self, node: NodeId, timeout: Duration) -> Result<LeaveOutcome, KvError> {
        let key = format!("<leave {node}>");
        let call = self.call(&key, Op::Leave { node });
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(Outcome::Left)) => Ok(LeaveOutcome::Left),
            Ok(Ok(Outcome::LeaveRefused)) => Ok(LeaveOutcome::Refused),
            Ok(Ok(other)) => Err(KvError::Protocol(format!("a leave ended {other:?}"))),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(KvError::Indefinite { key, attempts: 1 }),
        }
    }

    /// Makes one call of the client node: its outcome, or the failure it reports.
    async fn call(&self, key: &str, op: Op) -> Result<Outcome, KvError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let answer = self.node().handle.call(APPLICATION, KvsMsg::Call { req, op }).await;
        match answer {
            Ok(KvsMsg::Done { outcome: Outcome::Failed(failure), .. }) => {
                Err(KvError::of(key, failure))
            }
            Ok(KvsMsg::Done { outcome: Outcome::Rejected(error), .. }) => {
                Err(KvError::Rejected(error))
            }
            Ok(KvsMsg::Done { outcome, .. }) => Ok(outcome),
            Ok(other) => Err(KvError::Protocol(format!("the client answered {other:?}"))),
            // The client node did not take the call: nothing was sent.
            Err(error @ (CallError::Overloaded | CallError::ShuttingDown)) => {
                let (key, last) = (key.to_owned(), error.refusal());
                Err(KvError::Unavailable { key, attempts: 0, last })
            }
            // It took the call and stopped before answering (the client is being dropped).
            Err(error) if !error.is_definite() => {
                Err(KvError::Indefinite { key: key.to_owned(), attempts: 0 })
            }
            Err(error) => Err(KvError::Protocol(format!("the client refused a call: {error}"))),
        }
    }

    /// The client node, started on first use.
    fn node(&self) -> &ClientNode {
        self.node.get_or_init(|| {
            let settings = RuntimeSettings {
                inbox: INBOX,
                // Only answers to its own requests come back to a client: no byte budget.
                inbox_bytes: usize::MAX,
                max_frame: self.settings.max_frame,
                disk: None,
                peers: self.peers.clone(),
                local: LocalPeers::only(self.local.clone()),
                // The client's own attempt timers decide when to give up on a request; a call
                // lives long enough for the slowest (a leave).
                call_deadline: self.cfg.leave_after.max(self.cfg.retry_after) * 2,
            };
            let running = runtime::start::<KvsClient>(self.cfg.id, self.cfg.clone(), settings, ())
                .expect("a client node persists nothing, so it always starts");
            let (handle, task) = running.detach();
            ClientNode { handle, task }
        })
    }
}
