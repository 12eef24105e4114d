//! The cluster configuration: a TOML file, with an embedded default for `squall up`.
//!
//! Every field is documented in `docs/operations.md`; [`DEFAULT_TOML`] is the embedded default
//! (three storage nodes on fixed loopback ports). Parsing is strict: unknown fields, duplicate
//! ids or addresses, zero periods and impossible limits are errors that name the field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use squall_proto::NodeId;

use crate::disk::SyncPolicy;
use squall_proto::kvs::{Durability, Ring, StorageConfig};

/// The embedded default configuration: three storage nodes on loopback, replication 3,
/// majority writes. `squall up` runs it when no `--config` is given.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Node ids at or above this value are reserved for clients: a client library picks a random
/// id with the top bit set, so it can never be mistaken for a storage node.
pub const CLIENT_ID_BASE: u64 = 1 << 63;

/// Deserializes `host:port`, resolving a host name to its first address.
fn address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    use serde::de::Error as _;
    use std::net::ToSocketAddrs as _;
    let text = String::deserialize(d)?;
    let resolved = text
        .to_socket_addrs()
        .map_err(|e| D::Error::custom(format!("`{text}` is not an address (host:port): {e}")))?;
    resolved.into_iter().next().ok_or_else(|| D::Error::custom(format!("`{text}` has no address")))
}

/// [`address`], for an optional field.
fn some_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    address(d).map(Some)
}

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not valid TOML for this schema (the parser's message, with where).
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// The configuration parsed but is inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A whole cluster's configuration, as read from TOML.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Placement, durability and storage.
    pub cluster: ClusterSection,
    /// Protocol timer periods.
    #[serde(default)]
    pub timers: Timers,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Client library defaults.
    #[serde(default)]
    pub client: ClientSection,
    /// The storage nodes.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeEntry>,
    /// Functions: executors, wasm limits, sessions.
    #[serde(default)]
    pub functions: FunctionsSection,
    /// The scheduler that starts DAG calls, if the cluster runs functions.
    #[serde(default)]
    pub scheduler: Option<RoleEntry>,
    /// The workers: each a cache with its session layer and executors.
    #[serde(default, rename = "worker")]
    pub workers: Vec<RoleEntry>,
}

/// A `[scheduler]` or `[[worker]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleEntry {
    /// Its id, unique among every node, scheduler and worker, below 2^47 (a worker's
    /// executors take ids `id * 65536 + 1 ...`).
    pub id: u64,
    /// The address of its RPC port (`host:port`; a name is resolved when the configuration
    /// is read).
    #[serde(deserialize_with = "address")]
    pub rpc: SocketAddr,
    /// Executors (a worker's; each runs one function at a time). Default:
    /// `functions.executors`.
    #[serde(default)]
    pub executors: Option<usize>,
}

/// The `[functions]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionsSection {
    /// Executors per worker, unless the worker says otherwise.
    pub executors: usize,
    /// WebAssembly fuel per call (about one unit per instruction): a call that runs out traps.
    pub wasm_fuel: u64,
    /// The most linear memory a WebAssembly function may grow to, in bytes.
    pub wasm_memory_bytes: usize,
    /// The scheduler's deadline tick, in milliseconds: a DAG execution still running after
    /// `deadline_ticks` of them is aborted and retried (on other workers).
    pub deadline_ms: u64,
    /// Ticks before a DAG execution is aborted.
    pub deadline_ticks: u32,
    /// Executions per call before it fails.
    pub attempts: u32,
    /// The largest argument list or result a function call may carry, in bytes.
    pub max_arg_bytes: usize,
    /// How long an executor keeps polling for its next message (the answer to its function's
    /// read, the next function of a DAG) before its thread sleeps, in microseconds; `0` sleeps
    /// at once. Polling yields the core between polls; it costs CPU only while calls come.
    pub executor_spin_us: u64,
    /// The most keys a worker names when it tells the scheduler what its cache holds (after a
    /// DAG execution, if that changed), for `local` placement; `0`: no reports (placement
    /// then follows the hash of a DAG's keys and load only).
    pub report_keys: usize,
    /// Where the scheduler runs a DAG's functions: `local` (the default: all on one worker,
    /// chosen by the DAG's keys and the workers' load, so results pass executor to executor
    /// inside it) or `spread` (function *i* on worker *i*, so sessions span workers; retries
    /// run on one worker in turn).
    pub placement: PlacementSetting,
}

/// `functions.placement`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementSetting {
    /// [`squall_proto::session::Placement::Local`].
    #[default]
    Local,
    /// [`squall_proto::session::Placement::RetryOnOne`].
    Spread,
}

impl Default for FunctionsSection {
    fn default() -> Self {
        Self {
            executors: 2,
            wasm_fuel: 100_000_000,
            wasm_memory_bytes: 16 << 20,
            deadline_ms: 1_000,
            deadline_ticks: 5,
            attempts: 3,
            max_arg_bytes: 1 << 20,
            executor_spin_us: 200,
            report_keys: 1024,
            placement: PlacementSetting::Local,
        }
    }
}

/// The `[cluster]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Replicas per key (capped by the number of nodes).
    pub replication: usize,
    /// Virtual nodes per storage node on the hash ring.
    #[serde(default = "default_virtual_nodes")]
    pub virtual_nodes: u32,
    /// The durability of writes that do not ask for one: `one`, `majority` or `all`.
    #[serde(default)]
    pub durability: WriteDurability,
    /// Where nodes keep what survives a restart (every key and the node's incarnation), one
    /// directory per node (`node-ID`). A relative path is relative to the working directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// When nodes sync what they persist: `always` (once per write), `batch` (once per batch
    /// of writes the node took together; the default) or `never` (survives a process crash,
    /// not a power failure). See docs/operations.md.
    #[serde(default)]
    pub sync: SyncPolicy,
}

/// A write durability as spelled in the configuration and on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WriteDurability {
    /// Acknowledged once the coordinating replica holds the write.
    One,
    /// Acknowledged once a majority of the key's replicas hold it: survives one crash of
    /// three.
    #[default]
    Majority,
    /// Acknowledged once every replica holds it.
    All,
}

impl From<WriteDurability> for Durability {
    fn from(value: WriteDurability) -> Self {
        match value {
            WriteDurability::One => Self::One,
            WriteDurability::Majority => Self::Majority,
            WriteDurability::All => Self::All,
        }
    }
}

/// The `[timers]` section, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timers {
    /// Re-send gossip to replicas that are behind.
    pub gossip_ms: u64,
    /// Re-send `Hello` after a restart.
    pub hello_ms: u64,
    /// Re-send a changed membership view.
    pub ring_ms: u64,
    /// Flush pushes to subscribed caches.
    pub push_ms: u64,
    /// Check cache leases.
    pub lease_ms: u64,
    /// The most gossip periods between two batches to a replica that acknowledges none (a
    /// dead or paused node): the wait doubles from one period up to this.
    pub gossip_backoff: u32,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            gossip_ms: 10,
            hello_ms: 100,
            ring_ms: 100,
            push_ms: 5,
            lease_ms: 3000,
            gossip_backoff: 64,
        }
    }
}

/// The `[limits]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The largest frame accepted on the RPC port, in bytes; a larger one closes the
    /// connection.
    pub max_frame_bytes: usize,
    /// The largest value payload a put may carry, in bytes; larger puts are refused.
    pub max_value_bytes: usize,
    /// Client connections per port (RPC and RESP each). At the limit a new connection closes
    /// the client connection quiet longest (for at least a second), or is refused if all are
    /// busy.
    pub max_connections: usize,
    /// Connections from the cluster's nodes per RPC port, apart from clients': a client flood
    /// never closes them.
    pub max_peer_connections: usize,
    /// A client connection that received no whole frame and sent nothing for this long is
    /// closed, in milliseconds; 0: never.
    pub idle_timeout_ms: u64,
    /// A frame (or RESP command) begun must arrive whole within this long, in milliseconds, or
    /// its connection is closed (slow senders hold buffers).
    pub frame_timeout_ms: u64,
    /// Bytes a port's connections may hold in unfinished frames (RPC frames are charged their
    /// declared length, which is reserved at once), summed; a frame taking the port over it
    /// closes its connection. At least `max_frame_bytes`.
    pub max_buffered_bytes: usize,
    /// Requests in flight per RPC connection; more are answered with an error.
    pub max_in_flight: usize,
    /// Keys per storage node; puts creating more are rejected.
    pub max_keys: u32,
    /// Unacknowledged puts per storage node; more are rejected as overloaded.
    pub max_pending: u32,
    /// Inputs queued for a node before new client calls are refused as overloaded (and peer
    /// messages dropped, which the protocol re-sends).
    pub inbox: usize,
    /// Encoded bytes of the requests and peer messages from the network queued for a node at
    /// once; beyond them the same happens as at `inbox`. At least `max_frame_bytes`.
    pub max_inbox_bytes: usize,
    /// How long a graceful shutdown waits for in-flight calls, in milliseconds.
    pub drain_ms: u64,
    /// The most keys one gossip message to one replica carries (and at most half a frame of
    /// them): a replica behind on more gets them a batch at a time, the next as soon as it
    /// acknowledges the last.
    pub gossip_batch_keys: usize,
    /// Free space a storage node keeps on its data directory's file system: below it, puts
    /// are refused (definitely, so clients try another replica) while reads, and replication
    /// from peers, go on. Measured every second.
    pub min_free_disk_bytes: u64,
}

impl Limits {
    /// The connection budgets and timeouts of one port; `peers`: whether cluster nodes connect
    /// to it (the RPC port) or only clients (RESP).
    pub fn connections(&self, peers: bool) -> crate::port::ConnLimits {
        crate::port::ConnLimits {
            clients: self.max_connections,
            peers: if peers { self.max_peer_connections } else { 0 },
            idle: (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms)),
            frame: Duration::from_millis(self.frame_timeout_ms),
            buffered: self.max_buffered_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 << 20,
            max_value_bytes: 4 << 20,
            max_connections: 1024,
            max_peer_connections: 256,
            idle_timeout_ms: 300_000,
            frame_timeout_ms: 10_000,
            max_buffered_bytes: 256 << 20,
            max_in_flight: 1024,
            max_keys: 10_000_000,
            max_pending: 100_000,
            inbox: 65_536,
            max_inbox_bytes: 256 << 20,
            drain_ms: 2_000,
            gossip_batch_keys: 128,
            min_free_disk_bytes: 64 << 20,
        }
    }
}

/// The `[client]` section: defaults of the client library and of `squall kv`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSection {
    /// How long one attempt waits for an answer, in milliseconds.
    pub timeout_ms: u64,
    /// Attempts per operation (across the key's replicas) before an indefinite failure.
    pub attempts: u32,
    /// After an attempt at a node times out, the client's next this many operations ask that
    /// node last among a key's replicas (doubling per further timeout, up to 64 times); 0:
    /// never.
    pub suspect_calls: u32,
}

impl Default for ClientSection {
    fn default() -> Self {
        Self { timeout_ms: 2_000, attempts: 4, suspect_calls: 256 }
    }
}

/// One `[[node]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The node's id, unique, below 2^63.
    pub id: u64,
    /// The address of the RPC port (peers and clients, tarpc over TCP): `host:port`, a name
    /// resolved when the configuration is read.
    #[serde(deserialize_with = "address")]
    pub rpc: SocketAddr,
    /// The address of the RESP (Redis protocol) port, if the node serves one.
    #[serde(default, deserialize_with = "some_address")]
    pub resp: Option<SocketAddr>,
    /// Whether the node starts outside the ring and joins it (for growing a cluster).
    #[serde(default)]
    pub join: bool,
}

fn default_virtual_nodes() -> u32 {
    64
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("squall-data")
}

impl ClusterConfig {
    /// The embedded default.
    pub fn embedded() -> Self {
        Self::parse(DEFAULT_TOML).expect("the embedded default configuration is valid")
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file; errors name it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            ConfigError::Invalid(m) => ConfigError::Invalid(format!("{}: {m}", path.display())),
            read @ ConfigError::Read { .. } => read,
        })
    }

    /// Checks what the schema cannot: unique ids and addresses, at least one initial member,
    /// non-zero periods and limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.nodes.is_empty() {
            return invalid("no [[node]] entries".into());
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for role in self.scheduler.iter().chain(&self.workers) {
            if role.id >= 1 << 47 {
                return invalid(format!(
                    "scheduler and worker ids must be below 2^47 ({})",
                    role.id
                ));
            }
            if role.executors == Some(0) {
                return invalid(format!("worker {} has no executors", role.id));
            }
            if !ids.insert(role.id) {
                return invalid(format!("id {} appears twice", role.id));
            }
            if !addrs.insert(role.rpc) {
                return invalid(format!("address {} is used twice", role.rpc));
            }
        }
        if !self.workers.is_empty() && self.scheduler.is_none() {
            return invalid("[[worker]] entries need a [scheduler]".into());
        }
        if self.scheduler.is_some() && self.workers.is_empty() {
            return invalid("a [scheduler] needs at least one [[worker]]".into());
        }
        let executor_ids: BTreeSet<u64> =
            self.workers.iter().flat_map(|w| self.executors(w)).map(|e| e.0).collect();
        if let Some(id) = self.nodes.iter().map(|n| n.id).find(|id| executor_ids.contains(id)) {
            return invalid(format!("node id {id} is an executor id of a worker"));
        }
        for node in &self.nodes {
            if node.id >= CLIENT_ID_BASE {
                return invalid(format!(
                    "node id {} is reserved for clients (ids < 2^63)",
                    node.id
                ));
            }
            if !ids.insert(node.id) {
                return invalid(format!("node id {} appears twice", node.id));
            }
            for addr in std::iter::once(node.rpc).chain(node.resp) {
                if !addrs.insert(addr) {
                    return invalid(format!("address {addr} is used twice"));
                }
            }
        }
        if self.nodes.iter().all(|node| node.join) {
            return invalid("every node has join = true: the ring needs one initial member".into());
        }
        if self.cluster.replication == 0 {
            return invalid("cluster.replication must be at least 1".into());
        }
        if self.cluster.virtual_nodes == 0 {
            return invalid("cluster.virtual_nodes must be at least 1".into());
        }
        let t = &self.timers;
        for (name, ms) in [
            ("gossip_ms", t.gossip_ms),
            ("hello_ms", t.hello_ms),
            ("ring_ms", t.ring_ms),
            ("push_ms", t.push_ms),
            ("lease_ms", t.lease_ms),
            ("gossip_backoff", u64::from(t.gossip_backoff)),
        ] {
            if ms == 0 {
                return invalid(format!("timers.{name} must be positive"));
            }
        }
        let l = &self.limits;
        for (name, value) in [
            ("max_frame_bytes", l.max_frame_bytes),
            ("max_value_bytes", l.max_value_bytes),
            ("max_connections", l.max_connections),
            ("max_peer_connections", l.max_peer_connections),
            ("frame_timeout_ms", l.frame_timeout_ms as usize),
            ("max_in_flight", l.max_in_flight),
            ("max_keys", l.max_keys as usize),
            ("max_pending", l.max_pending as usize),
            ("inbox", l.inbox),
            ("max_inbox_bytes", l.max_inbox_bytes),
            ("gossip_batch_keys", l.gossip_batch_keys),
        ] {
            if value == 0 {
                return invalid(format!("limits.{name} must be positive"));
            }
        }
        if l.max_value_bytes + 1024 > l.max_frame_bytes {
            return invalid(format!(
                "limits.max_value_bytes ({}) must leave room for framing below \
                 limits.max_frame_bytes ({}); keep it at least 1 KiB smaller",
                l.max_value_bytes, l.max_frame_bytes
            ));
        }
        if l.max_inbox_bytes < l.max_frame_bytes {
            return invalid(format!(
                "limits.max_inbox_bytes ({}) must hold at least one whole frame \
                 (limits.max_frame_bytes, {})",
                l.max_inbox_bytes, l.max_frame_bytes
            ));
        }
        if l.max_buffered_bytes < l.max_frame_bytes {
            return invalid(format!(
                "limits.max_buffered_bytes ({}) must hold at least one whole frame \
                 (limits.max_frame_bytes, {})",
                l.max_buffered_bytes, l.max_frame_bytes
            ));
        }
        if self.client.attempts == 0 || self.client.timeout_ms == 0 {
            return invalid("client.attempts and client.timeout_ms must be positive".into());
        }
        let f = &self.functions;
        if f.executors == 0 || f.deadline_ms == 0 || f.deadline_ticks == 0 || f.attempts == 0 {
            return invalid(
                "functions.executors, deadline_ms, deadline_ticks and attempts must be positive"
                    .into(),
            );
        }
        if self.scheduler.is_some() && f.max_arg_bytes + 1024 > self.limits.max_frame_bytes {
            return invalid(
                "functions.max_arg_bytes must be at least 1 KiB below limits.max_frame_bytes"
                    .into(),
            );
        }
        Ok(())
    }

    /// The entry of node `id`.
    pub fn node(&self, id: u64) -> Option<&NodeEntry> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// The ring every node starts from: the nodes without `join`.
    pub fn initial_ring(&self) -> Ring {
        Ring::with_members(
            self.cluster.virtual_nodes,
            self.nodes.iter().filter(|node| !node.join).map(|node| NodeId(node.id)),
        )
    }

    /// The RPC address of every storage node, by id.
    pub fn rpc_addresses(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.nodes.iter().map(|node| (NodeId(node.id), node.rpc)).collect()
    }

    /// The RPC address of every storage node, the scheduler and every worker, by id: where
    /// any role sends its peer messages.
    pub fn all_addresses(&self) -> BTreeMap<NodeId, SocketAddr> {
        let roles = self.scheduler.iter().chain(&self.workers);
        let mut all = self.rpc_addresses();
        all.extend(roles.map(|role| (NodeId(role.id), role.rpc)));
        all
    }

    /// The workers' ids: the nodes of the cluster, besides clients, that send storage nodes
    /// requests (their caches' write-throughs).
    pub fn worker_ids(&self) -> Vec<NodeId> {
        self.workers.iter().map(|w| NodeId(w.id)).collect()
    }

    /// The entry of worker `id`.
    pub fn worker(&self, id: u64) -> Option<&RoleEntry> {
        self.workers.iter().find(|w| w.id == id)
    }

    /// The executor ids of a worker: `id * 65536 + 1`, `+ 2`, ...
    pub fn executors(&self, worker: &RoleEntry) -> Vec<NodeId> {
        let count = worker.executors.unwrap_or(self.functions.executors) as u64;
        (1..=count).map(|i| NodeId((worker.id << 16) + i)).collect()
    }

    /// The worker state machine's configuration for worker `id`.
    pub fn worker_config(&self, id: u64) -> Option<squall_proto::worker::WorkerConfig> {
        let entry = self.worker(id)?;
        let scheduler = NodeId(self.scheduler.as_ref()?.id);
        let mut cache = squall_proto::cache::CacheConfig::new(
            NodeId(id),
            self.initial_ring(),
            self.cluster.replication,
        );
        cache.renew_period =
            Some(Duration::from_millis(self.timers.lease_ms / 3).max(Duration::from_millis(1)));
        let mut cfg =
            squall_proto::worker::WorkerConfig::new(cache, scheduler, self.executors(entry));
        cfg.session.durability = self.cluster.durability.into();
        cfg.session.pin_lease = Some(
            Duration::from_millis(
                self.functions.deadline_ms * u64::from(self.functions.deadline_ticks) * 4,
            )
            .max(Duration::from_secs(30)),
        );
        cfg.report_keys = self.functions.report_keys;
        Some(cfg)
    }

    /// The scheduler state machine's configuration, if there is a scheduler.
    pub fn scheduler_config(&self) -> Option<squall_proto::session::SchedulerConfig> {
        let entry = self.scheduler.as_ref()?;
        let mut cfg =
            squall_proto::session::SchedulerConfig::new(NodeId(entry.id), self.worker_ids());
        cfg.deadline = Duration::from_millis(self.functions.deadline_ms);
        cfg.deadline_ticks = self.functions.deadline_ticks;
        cfg.max_attempts = self.functions.attempts;
        cfg.placement = match self.functions.placement {
            PlacementSetting::Local => squall_proto::session::Placement::Local,
            PlacementSetting::Spread => squall_proto::session::Placement::RetryOnOne,
        };
        Some(cfg)
    }

    /// The storage state machine's configuration for node `id`.
    pub fn storage(&self, id: u64) -> Option<StorageConfig> {
        let entry = self.node(id)?;
        let mut cfg = StorageConfig::new(NodeId(id), self.initial_ring(), self.cluster.replication);
        let t = &self.timers;
        cfg.gossip_period = Duration::from_millis(t.gossip_ms);
        cfg.hello_period = Duration::from_millis(t.hello_ms);
        cfg.ring_period = Duration::from_millis(t.ring_ms);
        cfg.push_period = Duration::from_millis(t.push_ms);
        cfg.lease_period = Some(Duration::from_millis(t.lease_ms));
        cfg.max_keys = self.limits.max_keys;
        cfg.max_pending = self.limits.max_pending;
        cfg.gossip_batch = self.limits.gossip_batch_keys;
        cfg.gossip_batch_bytes = self.limits.max_frame_bytes / 2;
        cfg.gossip_backoff = t.gossip_backoff;
        cfg.join = entry.join;
        Some(cfg)
    }

    /// The same cluster on free loopback ports (RPC only, no RESP), keeping its data in
    /// `data_dir`: for runs in this process next to a cluster that may already use the
    /// configured ports (`squall bench dag`).
    pub fn on_free_ports(&self, data_dir: &Path) -> std::io::Result<Self> {
        let mut config = self.clone();
        let mut taken = BTreeSet::new();
        let mut free = || -> std::io::Result<SocketAddr> {
            loop {
                let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
                if taken.insert(addr) {
                    return Ok(addr);
                }
            }
        };
        for node in &mut config.nodes {
            node.rpc = free()?;
            node.resp = None;
        }
        for role in config.scheduler.iter_mut().chain(&mut config.workers) {
            role.rpc = free()?;
        }
        config.cluster.data_dir = data_dir.to_owned();
        Ok(config)
    }

    /// The directory where node `id` keeps what survives a restart.
    pub fn data_path(&self, id: u64) -> PathBuf {
        self.cluster.data_dir.join(format!("node-{id}"))
    }

    /// The file where node `id` kept its incarnation before data was persisted (read once,
    /// to carry the incarnation over, then renamed).
    pub fn legacy_state_path(&self, id: u64) -> PathBuf {
        self.cluster.data_dir.join(format!("node-{id}.state"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_three_nodes_on_fixed_loopback_ports() {
        let config = ClusterConfig::embedded();
        let rpc: Vec<String> = config.nodes.iter().map(|n| n.rpc.to_string()).collect();
        let resp: Vec<String> =
            config.nodes.iter().map(|n| n.resp.expect("resp port").to_string()).collect();
        assert_eq!(rpc, ["127.0.0.1:7700", "127.0.0.1:7701", "127.0.0.1:7702"]);
        assert_eq!(resp, ["127.0.0.1:6380", "127.0.0.1:6381", "127.0.0.1:6382"]);
        assert_eq!(config.cluster.replication, 3);
        assert_eq!(config.cluster.durability, WriteDurability::Majority);
        assert_eq!(config.initial_ring().members().len(), 3);
    }

    fn error_of(text: &str) -> String {
        ClusterConfig::parse(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn bad_configurations_are_refused_with_the_field_named() {
        let node =
            |id: u64, port: u16| format!("[[node]]\nid = {id}\nrpc = \"127.0.0.1:{port}\"\n");
        let head = "[cluster]\nreplication = 2\n";
        assert!(
            error_of(&format!("{head}{}{}", node(1, 1), node(1, 2))).contains("id 1 appears twice")
        );
        assert!(error_of(&format!("{head}{}{}", node(1, 1), node(2, 1))).contains("used twice"));
        assert!(error_of(head).contains("node"));
        assert!(
            error_of(&format!("{head}[timers]\ngossip_ms = 0\n{}", node(1, 1)))
                .contains("gossip_ms")
        );
        assert!(error_of(&format!("{head}colour = 3\n{}", node(1, 1))).contains("colour"));
        assert!(
            error_of(&format!("[cluster]\nreplication = 0\n{}", node(1, 1)))
                .contains("replication")
        );
        assert!(
            error_of(&format!(
                "{head}[limits]\nmax_value_bytes = 100\nmax_frame_bytes = 100\n{}",
                node(1, 1)
            ))
            .contains("max_value_bytes")
        );
        assert!(
            error_of(&format!("{head}{}", node(CLIENT_ID_BASE, 1)))
                .contains("reserved for clients")
        );
        assert!(error_of(&format!("{head}[cluster.x]\n")).contains("invalid configuration"));
        let role = |what: &str, id: u64, port: u16| {
            format!("[{what}]\nid = {id}\nrpc = \"127.0.0.1:{port}\"\n")
        };
        let worker = |id: u64, port: u16| role("[worker]", id, port);
        assert!(
            error_of(&format!("{head}{}{}", node(1, 1), worker(5, 2)))
                .contains("need a [scheduler]")
        );
        assert!(
            error_of(&format!("{head}{}{}", node(1, 1), role("scheduler", 4, 2)))
                .contains("at least one [[worker]]")
        );
        assert!(
            error_of(&format!("{head}{}{}{}", node(1, 1), role("scheduler", 1, 2), worker(5, 3)))
                .contains("id 1 appears twice")
        );
        assert!(
            error_of(&format!(
                "{head}{}{}{}",
                node(65537, 1),
                role("scheduler", 4, 2),
                worker(1, 3)
            ))
            .contains("executor id")
        );
        let faas = format!("{head}{}{}{}", node(1, 1), role("scheduler", 4, 2), worker(5, 3));
        let faas = ClusterConfig::parse(&faas).expect("valid");
        assert_eq!(faas.executors(&faas.workers[0]), [NodeId(5 << 16 | 1), NodeId(5 << 16 | 2)]);
        assert_eq!(faas.all_addresses().len(), 3);
        let ok = ClusterConfig::parse(&format!("{head}{}", node(1, 1))).expect("valid");
        assert_eq!(ok.limits, Limits::default());
        assert_eq!(ok.storage(1).expect("node 1").replication, 2);
        assert!(ok.storage(2).is_none());
        assert!(
            error_of(&format!("{head}[limits]\nmax_inbox_bytes = 1000\n{}", node(1, 1)))
                .contains("max_inbox_bytes")
        );
    }

    #[test]
    fn addresses_may_name_hosts_and_a_bad_one_is_named() {
        let text = "[cluster]\nreplication = 1\n\
                    [[node]]\nid = 0\nrpc = \"localhost:7700\"\nresp = \"localhost:6380\"\n";
        let config = ClusterConfig::parse(text).expect("a host name resolves");
        assert!(config.nodes[0].rpc.ip().is_loopback());
        assert_eq!(config.nodes[0].resp.map(|a| a.port()), Some(6380));
        let error =
            error_of("[cluster]\nreplication = 1\n[[node]]\nid = 0\nrpc = \"no-port-here\"\n");
        assert!(error.contains("`no-port-here` is not an address"), "{error}");
    }

    #[test]
    fn a_file_error_names_the_file_and_says_it_once() {
        let path = std::env::temp_dir().join(format!("squall-bad-{}.toml", std::process::id()));
        std::fs::write(&path, "[cluster]\nreplication = \"x\"\n").expect("write");
        let error = format!("{:#}", anyhow::Error::from(ClusterConfig::load(&path).unwrap_err()));
        let _ = std::fs::remove_file(&path);
        assert!(
            error.starts_with(&format!("invalid configuration: {}:", path.display())),
            "{error}"
        );
        assert_eq!(error.matches("TOML parse error").count(), 1, "{error}");
    }
}
