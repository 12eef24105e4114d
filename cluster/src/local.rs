//! Nodes running in this process — storage nodes, the scheduler, workers with their
//! executors: what `squall up`, `squall node` and the tests start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use squall_proto::NodeId;
use squall_proto::kvs::{StorageNode, Stored};
use squall_proto::session::Scheduler;
use squall_proto::worker::{SystemMsg, Worker};
use tokio::net::TcpListener;

use crate::client::KvClient;
use crate::config::ClusterConfig;
use crate::exec::{ExecLimits, Executors, Fetch, FnError, Registry, ToWorker, WasmSource};
use crate::port::Port;
use crate::resp::{self, RespContext};
use crate::runtime::{
    self, DiskSettings, LocalPeers, NodeHandle, Running, RuntimeSettings, Served,
};
use crate::server::{self, PortLimits};
use crate::wasm::{Wasm, WasmLimits};
use squall_proto::lattice::LatticeValue;

/// How long a stopping node's connections stay open after the last call arrived, to answer it.
const FLUSH: Duration = Duration::from_millis(50);

/// One storage node with its RPC port and, if configured, its RESP port.
#[derive(Debug)]
pub struct LocalNode {
    running: Running<StorageNode>,
    rpc: Port,
    resp: Option<Port>,
    /// Where the RPC port listens.
    pub rpc_addr: SocketAddr,
    /// Where the RESP port listens, if any.
    pub resp_addr: Option<SocketAddr>,
    /// What the node found in its data directory at start.
    pub recovered: Recovered,
    drain: Duration,
}

/// What a storage node found in its data directory at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The node's data directory.
    pub dir: PathBuf,
    /// Keys it serves from its disk.
    pub keys: usize,
    /// Bytes read (encoded records).
    pub bytes: u64,
    /// How long opening and reading the store took.
    pub elapsed: Duration,
}

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "recovered {} keys ({:.1} {}) from {} in {:.2} s",
            self.keys,
            if self.bytes < 1_000_000 { self.bytes as f64 / 1e3 } else { self.bytes as f64 / 1e6 },
            if self.bytes < 1_000_000 { "kB" } else { "MB" },
            self.dir.display(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// The incarnation node `id` starts from at least: the seconds since the Unix epoch, so that
/// a node whose data directory was lost, replaced or restored from a backup still comes back
/// at an incarnation newer than any its peers knew (they ignore messages from earlier
/// incarnations) — as long as its clock does not go back and it restarted less than once a
/// second on average. A node that ran before data was persisted left its incarnation in a
/// `node-ID.state` file beside the data directory; that counts too, and the file is returned
/// so it can be renamed once the node has started (and stored the floor).
fn incarnation_floor(config: &ClusterConfig, id: u64) -> anyhow::Result<(u32, Option<PathBuf>)> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let floor = u32::try_from(now.as_secs()).unwrap_or(u32::MAX - 1);
    let legacy = config.legacy_state_path(id);
    match std::fs::read(&legacy) {
        Ok(bytes) => {
            let incarnation: u32 = postcard::from_bytes(&bytes)
                .with_context(|| format!("node {id}: {} does not decode", legacy.display()))?;
            Ok((floor.max(incarnation), Some(legacy)))
        }
        Err(_) => Ok((floor, None)),
    }
}

impl LocalNode {
    /// Starts node `id` of `config`: binds its ports (failing clearly if they are taken),
    /// restores its incarnation from the data directory, and starts serving.
    pub async fn start(config: &ClusterConfig, id: u64) -> anyhow::Result<Self> {
        let entry =
            config.node(id).with_context(|| format!("node {id} is not in the configuration"))?;
        let storage = config.storage(id).expect("the node is in the configuration");
        let rpc_listener = TcpListener::bind(entry.rpc)
            .await
            .with_context(|| format!("node {id}: cannot listen on {} (RPC)", entry.rpc))?;
        let resp_listener = match entry.resp {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("node {id}: cannot listen on {addr} (RESP)"))?,
            ),
            None => None,
        };
        let settings = RuntimeSettings {
            inbox: config.limits.inbox,
            inbox_bytes: config.limits.max_inbox_bytes,
            max_frame: config.limits.max_frame_bytes,
            disk: Some(DiskSettings {
                dir: config.data_path(id),
                sync: config.cluster.sync,
                reserve: config.limits.min_free_disk_bytes,
            }),
            peers: config.all_addresses().into_iter().filter(|(node, _)| node.0 != id).collect(),
            local: LocalPeers::default(),
            // A storage node sends no requests of its own.
            call_deadline: Duration::from_secs(10),
        };
        let (floor, legacy) =
            incarnation_floor(config, id).with_context(|| format!("node {id}: cannot start"))?;
        let opened = Instant::now();
        let running = runtime::start::<StorageNode>(
            NodeId(id),
            storage,
            settings,
            Stored::incarnation(floor),
        )
        .with_context(|| format!("node {id}: cannot start"))?;
        if let Some(legacy) = legacy {
            std::fs::rename(&legacy, legacy.with_extension("state.carried-over"))
                .with_context(|| format!("node {id}: renaming {}", legacy.display()))?;
            tracing::info!(node = id, "carried the incarnation over from {}", legacy.display());
        }
        let recovered = Recovered {
            dir: config.data_path(id),
            keys: running.handle.inspect(|node| node.store().len()).await.unwrap_or(0),
            bytes: running.recovery.as_ref().map_or(0, |r| r.bytes),
            elapsed: opened.elapsed(),
        };
        tracing::info!(node = id, "{recovered}");
        let limits =
            PortLimits { max_request: config.limits.max_value_bytes, ..port_limits(config) };
        let rpc_addr = rpc_listener.local_addr()?;
        let callers = Arc::new(config.worker_ids().into_iter().collect());
        let rpc = server::serve(rpc_listener, running.handle.clone(), limits, callers);
        let (resp, resp_addr) = match resp_listener {
            Some(listener) => {
                let addr = listener.local_addr()?;
                let context = Arc::new(RespContext {
                    client: KvClient::new(config).with_local(running.handle.clone()),
                    node: running.handle.clone(),
                    max_request: config.limits.max_value_bytes,
                    max_in_flight: config.limits.max_in_flight,
                });
                let limits = config.limits.connections(false);
                (Some(resp::serve(listener, context, limits)), Some(addr))
            }
            None => (None, None),
        };
        Ok(Self {
            running,
            rpc,
            resp,
            rpc_addr,
            resp_addr,
            recovered,
            drain: Duration::from_millis(config.limits.drain_ms),
        })
    }

    /// A handle to the node.
    pub fn handle(&self) -> &NodeHandle<StorageNode> {
        &self.running.handle
    }

    /// Stops gracefully: the ports stop accepting connections, new calls are refused
    /// (definitely), calls in flight get the configured drain time to be answered over their
    /// still-open connections, then the node stops and the connections close. Returns its last
    /// state.
    pub async fn stop(self) -> anyhow::Result<StorageNode> {
        self.rpc.stop_accepting();
        if let Some(resp) = &self.resp {
            resp.stop_accepting();
        }
        let handle = self.running.handle.clone();
        handle.shutdown(self.drain).await;
        let node = self.running.wait().await;
        // Answers the node gave are on their way to the connections, and calls sent before the
        // ports stopped accepting may still be arriving on open connections (each is refused
        // at once, definitely): keep the connections open until no call arrived for a flush
        // period, at most the drain time, so that none is cut off with an unknown outcome.
        let linger = tokio::time::Instant::now() + self.drain;
        loop {
            let seen = handle.arrivals();
            tokio::time::sleep(FLUSH).await;
            if handle.arrivals() == seen || tokio::time::Instant::now() >= linger {
                break;
            }
        }
        self.rpc.close();
        if let Some(resp) = self.resp {
            resp.close();
        }
        Ok(node?)
    }

    /// Kills the node at once, as a crash would: its connections close, queued messages are
    /// lost, what it persisted survives.
    pub fn kill(self) {
        self.rpc.close();
        if let Some(resp) = self.resp {
            resp.close();
        }
        self.running.kill();
    }
}

/// A scheduler or a worker with its RPC port. They persist nothing: each starts at an
/// incarnation from the clock (see `incarnation_floor`), newer than any it ran as before, and
/// what it held (pins, sessions) is lost with it, which the session protocol tolerates.
#[derive(Debug)]
pub struct LocalRole<N: Served> {
    running: Running<N>,
    rpc: Port,
    /// The registry of roles in this process it joined (and leaves when it stops).
    colocated: LocalPeers<N::Msg>,
    /// Where the RPC port listens.
    pub rpc_addr: SocketAddr,
    drain: Duration,
}

fn port_limits(config: &ClusterConfig) -> PortLimits {
    PortLimits {
        max_frame: config.limits.max_frame_bytes,
        max_request: config.limits.max_value_bytes.max(config.functions.max_arg_bytes),
        connections: config.limits.connections(true),
        max_in_flight: config.limits.max_in_flight,
    }
}

impl<N: Served<Durable = u32>> LocalRole<N> {
    async fn start_role(
        config: &ClusterConfig,
        id: u64,
        rpc: SocketAddr,
        cfg: N::Config,
        local: LocalPeers<N::Msg>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(rpc)
            .await
            .with_context(|| format!("{id}: cannot listen on {rpc} (RPC)"))?;
        let settings = RuntimeSettings {
            inbox: config.limits.inbox,
            inbox_bytes: config.limits.max_inbox_bytes,
            max_frame: config.limits.max_frame_bytes,
            disk: None,
            peers: config.all_addresses().into_iter().filter(|(node, _)| node.0 != id).collect(),
            local: local.clone(),
            call_deadline: Duration::from_millis(config.client.timeout_ms),
        };
        let (floor, _) = incarnation_floor(config, id)?;
        let running = runtime::start::<N>(NodeId(id), cfg, settings, floor)
            .with_context(|| format!("{id}: cannot start"))?;
        local.register(running.handle.clone());
        let rpc_addr = listener.local_addr()?;
        let port =
            server::serve(listener, running.handle.clone(), port_limits(config), Arc::default());
        Ok(Self {
            running,
            rpc: port,
            colocated: local,
            rpc_addr,
            drain: Duration::from_millis(config.limits.drain_ms),
        })
    }

    /// A handle to the role's state machine.
    pub fn handle(&self) -> &NodeHandle<N> {
        &self.running.handle
    }

    /// Stops gracefully: calls in flight get the drain time to be answered.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.colocated.unregister(self.running.handle.id());
        self.rpc.stop_accepting();
        self.running.handle.shutdown(self.drain).await;
        self.running.wait().await?;
        self.rpc.close();
        Ok(())
    }

    /// Kills the role at once, as a crash would.
    pub fn kill(self) {
        self.colocated.unregister(self.running.handle.id());
        self.rpc.close();
        self.running.kill();
    }
}

impl LocalRole<Scheduler> {
    /// Starts the configuration's scheduler, joining `colocated` (the registry of the roles of
    /// this process; [`LocalPeers::default`] for none).
    pub async fn scheduler(
        config: &ClusterConfig,
        colocated: &LocalPeers<SystemMsg>,
    ) -> anyhow::Result<Self> {
        let entry = config.scheduler.as_ref().context("the configuration has no [scheduler]")?;
        let cfg = config.scheduler_config().expect("a scheduler is configured");
        Self::start_role(config, entry.id, entry.rpc, cfg, colocated.with_own(Vec::new())).await
    }
}

impl LocalRole<Worker> {
    /// Starts worker `id` with its executors, which run the functions of `registry`, joining
    /// `colocated` (the registry of the roles of this process; [`LocalPeers::default`] for
    /// none).
    pub async fn worker(
        config: &ClusterConfig,
        id: u64,
        registry: Arc<Registry>,
        colocated: &LocalPeers<SystemMsg>,
    ) -> anyhow::Result<Self> {
        let entry = config
            .worker(id)
            .with_context(|| format!("worker {id} is not in the configuration"))?;
        let cfg = config.worker_config(id).expect("the worker is configured");
        let limits = ExecLimits {
            max_result_bytes: config.functions.max_arg_bytes,
            spin: Duration::from_micros(config.functions.executor_spin_us),
        };
        let registry = Arc::new(registry.as_ref().clone().with_wasm(stored_modules(config)));
        let (executors, endpoints) = Executors::new(&cfg.executors, registry, limits);
        let role =
            Self::start_role(config, id, entry.rpc, cfg, colocated.with_own(endpoints)).await?;
        let handle = role.handle().clone();
        let to_worker: ToWorker =
            Arc::new(move |executor, msg| handle.deliver_blocking(executor, SystemMsg::Exec(msg)));
        executors
            .start(to_worker)
            .with_context(|| format!("worker {id}: cannot start executors"))?;
        Ok(role)
    }
}

/// Where a worker's executors find uploaded functions: a KVS client of the cluster, called
/// from the executor threads on this process's runtime.
fn stored_modules(config: &ClusterConfig) -> WasmSource {
    let limits =
        WasmLimits { fuel: config.functions.wasm_fuel, memory: config.functions.wasm_memory_bytes };
    let kv = KvClient::new(config);
    let runtime = tokio::runtime::Handle::current();
    let fetch: Fetch =
        Arc::new(move |name: &str| match runtime.block_on(kv.get(&crate::faas::fn_key(name))) {
            Ok(Some(LatticeValue::Lww(lww))) => Ok(lww.value().cloned()),
            Ok(_) => Ok(None),
            Err(e) => Err(FnError::Failed(format!("cannot load function {name:?}: {e}"))),
        });
    WasmSource { wasm: Arc::new(Wasm::new(limits)), fetch }
}

/// Every node of a configuration, in this process: the storage nodes, and the scheduler and
/// workers if it has them.
#[derive(Debug)]
pub struct LocalCluster {
    /// The storage nodes, in configuration order.
    pub nodes: Vec<LocalNode>,
    /// The scheduler.
    pub scheduler: Option<LocalRole<Scheduler>>,
    /// The workers, in configuration order.
    pub workers: Vec<LocalRole<Worker>>,
    /// The registry the scheduler and workers joined: a role started later (a restarted
    /// worker) joins it too.
    pub colocated: LocalPeers<SystemMsg>,
}

impl LocalCluster {
    /// Starts every node of `config` that does not join later, its scheduler and its workers
    /// (running the built-in functions).
    pub async fn start(config: &ClusterConfig) -> anyhow::Result<Self> {
        Self::start_with(config, Arc::new(Registry::builtin())).await
    }

    /// Like [`LocalCluster::start`], with workers running the functions of `registry`. The
    /// scheduler and the workers hand each other messages in process (see [`LocalPeers`]).
    pub async fn start_with(
        config: &ClusterConfig,
        registry: Arc<Registry>,
    ) -> anyhow::Result<Self> {
        Self::start_roles(config, registry, LocalPeers::registry()).await
    }

    /// Like [`LocalCluster::start_with`], with the scheduler and workers talking to each other
    /// over loopback TCP as roles on separate hosts would (benchmarks compare the two).
    pub async fn start_apart(
        config: &ClusterConfig,
        registry: Arc<Registry>,
    ) -> anyhow::Result<Self> {
        Self::start_roles(config, registry, LocalPeers::default()).await
    }

    async fn start_roles(
        config: &ClusterConfig,
        registry: Arc<Registry>,
        colocated: LocalPeers<SystemMsg>,
    ) -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        for entry in config.nodes.iter().filter(|entry| !entry.join) {
            nodes.push(LocalNode::start(config, entry.id).await?);
        }
        let scheduler = match &config.scheduler {
            Some(_) => Some(LocalRole::scheduler(config, &colocated).await?),
            None => None,
        };
        let mut workers = Vec::new();
        for entry in &config.workers {
            workers.push(LocalRole::worker(config, entry.id, registry.clone(), &colocated).await?);
        }
        Ok(Self { nodes, scheduler, workers, colocated })
    }

    /// Stops every role gracefully: the scheduler and workers first, then the storage nodes.
    pub async fn stop(self) -> anyhow::Result<()> {
        if let Some(scheduler) = self.scheduler {
            scheduler.stop().await?;
        }
        for worker in self.workers {
            worker.stop().await?;
        }
        for node in self.nodes {
            node.stop().await?;
        }
        Ok(())
    }
}
