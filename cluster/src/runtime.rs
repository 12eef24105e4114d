//! The generic node runtime: one task owns one `squall-proto` node and drives it.
//!
//! The task is the node's only owner (no lock around protocol state). It takes inputs from an
//! inbox — peer messages, client calls, inspections — and from its timers (a `DelayQueue`
//! keyed by the node's timer values), calls `Node::handle`, and executes the outputs in order:
//! sends go to per-peer sender tasks or answer a waiting client call, timers are armed and
//! disarmed, `Persist` stages a delta on the node's [`Disk`], and every output after it waits
//! until the disk committed it (group commit: one sync per batch of inputs the task took
//! together, or per input under [`SyncPolicy::Always`]).
//! Nothing here knows what a message means; the only protocol facts it uses are which
//! messages are requests, which answer them, and how to say a request was refused
//! ([`Calls`]). A request the node sends a peer (a client's get, say) goes out as an RPC call,
//! and its answer — or the refusal the transport reports — comes back as an input.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use squall_proto::base::ReqId;
use squall_proto::worker::SystemMsg;
use squall_proto::{
    Calls, DurableState, Input, Node, NodeId, Outbox, Output, Refusal, Within, handle_checked,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue;

use crate::disk::{Disk, DiskError, Recovery, SyncPolicy};
use crate::rpc::{CallError, NodeStats, SquallClient};

/// A node the runtime can serve: any [`Node`] whose messages say which are requests and
/// which answer them ([`Calls`]) and travel as part of the wire's [`SystemMsg`].
pub trait Served:
    Node<
        Msg: Calls + Within<SystemMsg> + Send + Sync + 'static,
        Timer: Send + Sync + 'static,
        Durable: Serialize + DeserializeOwned + Send + 'static,
        Config: Send + Sync + 'static,
    > + Send
    + Sync
    + 'static
{
}

impl<N> Served for N where
    N: Node<
            Msg: Calls + Within<SystemMsg> + Send + Sync + 'static,
            Timer: Send + Sync + 'static,
            Durable: Serialize + DeserializeOwned + Send + 'static,
            Config: Send + Sync + 'static,
        > + Send
        + Sync
        + 'static
{
}

/// A node in this process that takes messages of type `M` directly, without TCP: what
/// [`RuntimeSettings::local`] lists (the RESP front end's client reaches its own storage node
/// this way, and a worker its executors).
pub trait LocalCall<M>: Send + Sync + fmt::Debug {
    /// The node's id.
    fn id(&self) -> NodeId;
    /// Sends request `msg` from `from` and waits for the answer.
    fn call(
        &self,
        from: NodeId,
        msg: M,
    ) -> futures::future::BoxFuture<'static, Result<M, CallError>>;
    /// Delivers a one-way message from `from`.
    fn deliver(&self, from: NodeId, msg: M);
}

impl<N: Served> LocalCall<N::Msg> for NodeHandle<N> {
    fn id(&self) -> NodeId {
        self.id
    }

    fn deliver(&self, from: NodeId, msg: N::Msg) {
        NodeHandle::deliver(self, from, msg)
    }

    fn call(
        &self,
        from: NodeId,
        msg: N::Msg,
    ) -> futures::future::BoxFuture<'static, Result<N::Msg, CallError>> {
        let handle = self.clone();
        Box::pin(async move { NodeHandle::call(&handle, from, msg).await })
    }
}

/// The nodes of this process a node reaches without TCP ([`RuntimeSettings::local`]): its own
/// (a worker's executors), and the roles that share a registry — `squall up` runs the
/// scheduler and the workers in one process, each registers once it runs and leaves when it
/// stops, and they hand each other messages straight into their inboxes, as the wire's
/// [`SystemMsg`] (so roles of different message types reach each other). Requests and one-way
/// messages to a registered node skip the kernel; a cut link still loses them.
pub struct LocalPeers<M> {
    own: Vec<Arc<dyn LocalCall<M>>>,
    shared: Option<Arc<std::sync::RwLock<Registered>>>,
}

/// The roles registered in a [`LocalPeers`] registry.
type Registered = Vec<Arc<dyn LocalCall<SystemMsg>>>;

impl<M> Clone for LocalPeers<M> {
    fn clone(&self) -> Self {
        Self { own: self.own.clone(), shared: self.shared.clone() }
    }
}

impl<M> Default for LocalPeers<M> {
    fn default() -> Self {
        Self { own: Vec::new(), shared: None }
    }
}

impl<M> fmt::Debug for LocalPeers<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.shared.as_ref().map(|shared| {
            shared.read().expect("local peers lock").iter().map(|n| n.id()).collect::<Vec<_>>()
        });
        f.debug_struct("LocalPeers")
            .field("own", &self.own.iter().map(|n| n.id()).collect::<Vec<_>>())
            .field("shared", &shared)
            .finish()
    }
}

/// A node of any message type, reached with the wire's [`SystemMsg`].
struct Wired<N: Served>(NodeHandle<N>);

impl<N: Served> fmt::Debug for Wired<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<N: Served> LocalCall<SystemMsg> for Wired<N> {
    fn id(&self) -> NodeId {
        self.0.id
    }

    fn call(
        &self,
        from: NodeId,
        msg: SystemMsg,
    ) -> futures::future::BoxFuture<'static, Result<SystemMsg, CallError>> {
        let handle = self.0.clone();
        Box::pin(async move {
            let msg = N::Msg::from_world(msg)
                .ok_or_else(|| CallError::Malformed("a message of another protocol".into()))?;
            Ok(handle.call(from, msg).await?.into_world())
        })
    }

    fn deliver(&self, from: NodeId, msg: SystemMsg) {
        match N::Msg::from_world(msg) {
            Some(msg) => self.0.deliver(from, msg),
            None => bump(&self.0.counters.dropped),
        }
    }
}

impl<M: Within<SystemMsg> + Send + 'static> LocalPeers<M> {
    /// Only `own`: nodes of this one alone (no registry).
    pub fn only(own: Vec<Arc<dyn LocalCall<M>>>) -> Self {
        Self { own, shared: None }
    }

    /// An empty registry that roles of this process join with [`LocalPeers::register`].
    pub fn registry() -> Self {
        Self { own: Vec::new(), shared: Some(Arc::default()) }
    }

    /// This registry, seen by a node of message type `N` whose own local nodes are `own`.
    pub fn with_own<N>(&self, own: Vec<Arc<dyn LocalCall<N>>>) -> LocalPeers<N> {
        LocalPeers { own, shared: self.shared.clone() }
    }

    /// Adds the node of `handle` to the registry (replacing one of the same id: a restarted
    /// role); a no-op without a registry.
    pub fn register<N: Served>(&self, handle: NodeHandle<N>) {
        if let Some(shared) = &self.shared {
            let mut nodes = shared.write().expect("local peers lock");
            nodes.retain(|n| n.id() != handle.id);
            nodes.push(Arc::new(Wired(handle)));
        }
    }

    /// Removes node `id` from the registry: from now on it is reached over TCP, if at all.
    pub fn unregister(&self, id: NodeId) {
        if let Some(shared) = &self.shared {
            shared.write().expect("local peers lock").retain(|n| n.id() != id);
        }
    }

    fn shared(&self, id: NodeId) -> Option<Arc<dyn LocalCall<SystemMsg>>> {
        let shared = self.shared.as_ref()?.read().expect("local peers lock");
        shared.iter().find(|node| node.id() == id).cloned()
    }

    /// Delivers `msg` to local node `to`, or gives it back if `to` is not in this process.
    fn deliver(&self, from: NodeId, to: NodeId, msg: M) -> Result<(), M> {
        if let Some(node) = self.own.iter().find(|node| node.id() == to) {
            node.deliver(from, msg);
            return Ok(());
        }
        match self.shared(to) {
            Some(node) => {
                node.deliver(from, msg.into_world());
                Ok(())
            }
            None => Err(msg),
        }
    }

    /// Calls local node `to` with request `msg`, or gives it back if `to` is not in this
    /// process.
    #[allow(clippy::type_complexity)]
    fn call(
        &self,
        from: NodeId,
        to: NodeId,
        msg: M,
    ) -> Result<futures::future::BoxFuture<'static, Result<M, CallError>>, M> {
        if let Some(node) = self.own.iter().find(|node| node.id() == to) {
            return Ok(node.call(from, msg));
        }
        let Some(node) = self.shared(to) else { return Err(msg) };
        let answer = node.call(from, msg.into_world());
        Ok(Box::pin(async move {
            M::from_world(answer.await?)
                .ok_or_else(|| CallError::Malformed("an answer of another protocol".into()))
        }))
    }
}

/// Why a node stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The node's disk could not be opened, read or written. A node that cannot persist
    /// stops (fail-stop): it never acknowledges what its disk does not hold.
    #[error(transparent)]
    Disk(#[from] DiskError),
}

/// Where and how a node keeps what it persists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSettings {
    /// The node's data directory.
    pub dir: PathBuf,
    /// When persisted deltas are synced.
    pub sync: SyncPolicy,
    /// Free bytes to keep on the directory's file system: below them the node refuses
    /// requests that write ([`Calls::writes`]), definitely, and serves the rest.
    pub reserve: u64,
}

/// Settings of one node's runtime, for a node of message type `M`.
#[derive(Clone, Debug)]
pub struct RuntimeSettings<M> {
    /// Inputs queued before calls are refused and peer messages dropped.
    pub inbox: usize,
    /// Bytes (encoded) of the messages from the network queued at once, at most: beyond them
    /// calls are refused as overloaded and peer messages dropped. At least `max_frame`.
    pub inbox_bytes: usize,
    /// The largest RPC frame sent to peers.
    pub max_frame: usize,
    /// Where the node's durable state lives; `None` keeps it in memory only.
    pub disk: Option<DiskSettings>,
    /// The RPC address of every peer.
    pub peers: HashMap<NodeId, SocketAddr>,
    /// Peers in this process, called directly (requests to them skip TCP).
    pub local: LocalPeers<M>,
    /// How long a request sent to a peer as an RPC call may wait for its answer. The node's
    /// own timers decide when to give up on it; this only bounds the call.
    pub call_deadline: Duration,
}

/// Counters shared by the node task and its handles (metrics only: relaxed, no protocol
/// decision reads them).
#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    calls: AtomicU64,
    /// Calls that reached the handle, taken or refused (a stopping node's ports linger while
    /// these keep coming, see [`NodeHandle::arrivals`]).
    arrivals: AtomicU64,
    ignored: AtomicU64,
    dropped: AtomicU64,
    timers: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Peers a node's links to are cut (a fault injected by tests and operators): messages to and
/// from them are dropped and counted, as a network partition would lose them. Client calls
/// are not affected.
#[derive(Debug, Default)]
struct Links {
    /// Whether any link is cut: the common case costs one relaxed load per message.
    any: AtomicBool,
    cut: std::sync::RwLock<std::collections::HashSet<NodeId>>,
}

impl Links {
    fn is_cut(&self, peer: NodeId) -> bool {
        self.any.load(Ordering::Relaxed) && self.cut.read().expect("links lock").contains(&peer)
    }

    fn set(&self, peers: std::collections::HashSet<NodeId>) {
        let mut cut = self.cut.write().expect("links lock");
        self.any.store(!peers.is_empty(), Ordering::Relaxed);
        *cut = peers;
    }
}

type Inspection<N> = Box<dyn FnOnce(&N) + Send>;

/// The bytes a queued message from the network holds of its node's inbox budget, released
/// when the node has taken it (or it is dropped unhandled).
#[derive(Debug, Default)]
struct Charge {
    held: Option<(Arc<AtomicUsize>, usize)>,
}

/// Adds `bytes` to `held` if that keeps it within `max`; whether it did. Something larger
/// than the whole budget fits only when nothing else is held.
fn reserve(held: &AtomicUsize, max: usize, bytes: usize) -> bool {
    held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
        let after = now.checked_add(bytes)?;
        (now == 0 || after <= max).then_some(after)
    })
    .is_ok()
}

impl Charge {
    /// Charges `bytes` to the inbox's budget (`held` of at most `max`; see [`reserve`]), or
    /// `None` if they do not fit.
    fn take(held: &Arc<AtomicUsize>, max: usize, bytes: usize) -> Option<Self> {
        reserve(held, max, bytes).then(|| Self { held: Some((held.clone(), bytes)) })
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some((held, bytes)) = self.held.take() {
            held.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

enum Event<N: Node> {
    Deliver {
        from: NodeId,
        msg: N::Msg,
        charge: Charge,
    },
    Call {
        from: NodeId,
        msg: N::Msg,
        reply: oneshot::Sender<Result<N::Msg, CallError>>,
        charge: Charge,
    },
    Inspect(Inspection<N>),
    Shutdown {
        drain: Duration,
    },
}

/// A cheap, cloneable handle to a running node.
pub struct NodeHandle<N: Served> {
    id: NodeId,
    inbox: mpsc::Sender<Event<N>>,
    closing: Arc<AtomicBool>,
    counters: Arc<Counters>,
    links: Arc<Links>,
    /// Encoded bytes of the network's messages now in the inbox, and the most it may hold.
    inbox_bytes: Arc<AtomicUsize>,
    max_inbox_bytes: usize,
}

impl<N: Served> Clone for NodeHandle<N> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            inbox: self.inbox.clone(),
            closing: self.closing.clone(),
            counters: self.counters.clone(),
            links: self.links.clone(),
            inbox_bytes: self.inbox_bytes.clone(),
            max_inbox_bytes: self.max_inbox_bytes,
        }
    }
}

impl<N: Served> fmt::Debug for NodeHandle<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeHandle").field("id", &self.id).finish_non_exhaustive()
    }
}

impl<N: Served> NodeHandle<N> {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Whether the node is shutting down or stopped.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire) || self.inbox.is_closed()
    }

    /// Delivers a peer message; dropped (and counted) when the inbox is full, the node is
    /// stopped or its link to `from` is cut: the transport is allowed to lose messages.
    pub fn deliver(&self, from: NodeId, msg: N::Msg) {
        self.deliver_charged(from, msg, Charge::default());
    }

    /// Delivers a peer message that came over the network, `bytes` long encoded: dropped
    /// (and counted) as [`NodeHandle::deliver`] says, and also when the inbox holds its
    /// budget of such bytes ([`RuntimeSettings::inbox_bytes`]).
    pub fn deliver_wire(&self, from: NodeId, msg: N::Msg, bytes: usize) {
        match Charge::take(&self.inbox_bytes, self.max_inbox_bytes, bytes) {
            Some(charge) => self.deliver_charged(from, msg, charge),
            None => bump(&self.counters.dropped),
        }
    }

    fn deliver_charged(&self, from: NodeId, msg: N::Msg, charge: Charge) {
        let event = Event::Deliver { from, msg, charge };
        if self.links.is_cut(from) || self.inbox.try_send(event).is_err() {
            bump(&self.counters.dropped);
        }
    }

    /// Delivers a message from a thread outside the async runtime (an executor), waiting for
    /// room in the inbox rather than dropping it: that channel must not lose messages. False
    /// if the node stopped.
    pub fn deliver_blocking(&self, from: NodeId, msg: N::Msg) -> bool {
        bump(&self.counters.delivered);
        self.inbox.blocking_send(Event::Deliver { from, msg, charge: Charge::default() }).is_ok()
    }

    /// Cuts the node's links to `peers` (replacing any earlier cut): from now on, messages it
    /// sends them and messages they send it are lost, as in a network partition. Client calls
    /// still reach it. A fault for tests and drills; [`NodeHandle::heal`] undoes it.
    pub fn cut_off(&self, peers: impl IntoIterator<Item = NodeId>) {
        self.links.set(peers.into_iter().collect());
    }

    /// Restores every link [`NodeHandle::cut_off`] cut.
    pub fn heal(&self) {
        self.links.set(Default::default());
    }

    /// Sends a client request from `from` and waits for the node's answer.
    pub async fn call(&self, from: NodeId, msg: N::Msg) -> Result<N::Msg, CallError> {
        self.call_charged(from, msg, None).await
    }

    /// Sends a client request that came over the network, `bytes` long encoded, and waits
    /// for the node's answer: refused as overloaded, too, when the inbox holds its budget of
    /// such bytes ([`RuntimeSettings::inbox_bytes`]).
    pub async fn call_wire(
        &self,
        from: NodeId,
        msg: N::Msg,
        bytes: usize,
    ) -> Result<N::Msg, CallError> {
        self.call_charged(from, msg, Some(bytes)).await
    }

    async fn call_charged(
        &self,
        from: NodeId,
        msg: N::Msg,
        bytes: Option<usize>,
    ) -> Result<N::Msg, CallError> {
        bump(&self.counters.arrivals);
        if self.closing.load(Ordering::Acquire) {
            return Err(CallError::ShuttingDown);
        }
        let charge = match bytes {
            Some(bytes) => Charge::take(&self.inbox_bytes, self.max_inbox_bytes, bytes)
                .ok_or(CallError::Overloaded)?,
            None => Charge::default(),
        };
        let (reply, answer) = oneshot::channel();
        self.inbox.try_send(Event::Call { from, msg, reply, charge }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CallError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => CallError::ShuttingDown,
        })?;
        // The node drops the sender only when it stops with the call unanswered; it had taken
        // the request, so what became of it is unknown.
        answer.await.map_err(|_| CallError::Abandoned)?
    }

    /// Runs `f` on the node's current state, between two inputs. `None` if the node stopped.
    pub async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&N) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let inspection: Inspection<N> = Box::new(move |node| {
            let _ = tx.send(f(node));
        });
        self.inbox.send(Event::Inspect(inspection)).await.ok()?;
        rx.await.ok()
    }

    /// The node's counters.
    pub fn stats(&self) -> NodeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        NodeStats {
            id: self.id,
            delivered: get(&c.delivered),
            calls: get(&c.calls),
            ignored: get(&c.ignored),
            dropped: get(&c.dropped),
            timers: get(&c.timers),
        }
    }

    /// How many calls have reached the node through this handle or its clones, taken or
    /// refused: a stopping node keeps its connections open while this still grows, so calls
    /// already on their way are answered (refused) rather than cut off.
    pub fn arrivals(&self) -> u64 {
        self.counters.arrivals.load(Ordering::Relaxed)
    }

    /// Starts a graceful shutdown: new calls are refused at once, calls in flight get up to
    /// `drain` to be answered, then the node stops (see [`Running::wait`]).
    pub async fn shutdown(&self, drain: Duration) {
        self.closing.store(true, Ordering::Release);
        let _ = self.inbox.send(Event::Shutdown { drain }).await;
    }
}

/// A node running on the current tokio runtime.
#[derive(Debug)]
pub struct Running<N: Served> {
    /// A handle to it.
    pub handle: NodeHandle<N>,
    /// What it found on its disk at start (`None` without a disk).
    pub recovery: Option<Recovery>,
    task: JoinHandle<Result<N, RuntimeError>>,
    killed: Arc<AtomicBool>,
}

impl<N: Served> Running<N> {
    /// Waits for the node to stop (after [`NodeHandle::shutdown`]) and returns its last state.
    pub async fn wait(self) -> Result<N, RuntimeError> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    /// The handle and a way to abort the node's task, for an owner that keeps the node for
    /// its whole life and stops it by aborting (a client library's own client node).
    pub fn detach(self) -> (NodeHandle<N>, tokio::task::AbortHandle) {
        let abort = self.task.abort_handle();
        (self.handle, abort)
    }

    /// Kills the node at once, as a crash would: no drain, nothing flushed. What it persisted
    /// survives.
    pub fn kill(self) {
        self.handle.closing.store(true, Ordering::Release);
        // The node's peer senders die with it: messages still queued for peers are lost, as
        // they would be in a crash.
        self.killed.store(true, Ordering::Release);
        self.task.abort();
    }
}

/// Starts node `id` with `cfg`: reads what it persisted (if `settings.disk` names a data
/// directory), joins `floor` into it — what the harness knows before the node starts, such as
/// an incarnation floor; `Default` for nothing — runs `Node::init`, and spawns the task that
/// owns it. The floor reaches the disk in the same synced commit as `init`'s own outputs.
pub fn start<N: Served>(
    id: NodeId,
    cfg: N::Config,
    settings: RuntimeSettings<N::Msg>,
    floor: N::Durable,
) -> Result<Running<N>, RuntimeError> {
    let (disk, mut durable, recovery) = match &settings.disk {
        Some(d) => {
            let (mut disk, durable, recovery) = Disk::open(&d.dir, d.sync)?;
            if floor != N::Durable::default() {
                disk.stage(floor.clone())?;
            }
            (Some(disk), durable, Some(recovery))
        }
        None => (None, N::Durable::default(), None),
    };
    durable.merge_delta(floor);
    let (tx, rx) = mpsc::channel(settings.inbox);
    let counters = Arc::new(Counters::default());
    let handle = NodeHandle {
        id,
        inbox: tx,
        closing: Arc::new(AtomicBool::new(false)),
        counters,
        links: Arc::default(),
        inbox_bytes: Arc::default(),
        max_inbox_bytes: settings.inbox_bytes,
    };
    let killed = Arc::new(AtomicBool::new(false));
    let mut out = Outbox::new();
    let node = N::init(&cfg, &durable, &mut out);
    let mut driver = Driver {
        inbox: handle.inbox.downgrade(),
        connections: Arc::default(),
        id,
        node,
        cfg,
        timers: DelayQueue::new(),
        timer_keys: HashMap::new(),
        pending: HashMap::new(),
        peers: HashMap::new(),
        loopback: VecDeque::new(),
        settings,
        counters: handle.counters.clone(),
        links: handle.links.clone(),
        out: Outbox::new(),
        peer_tasks: PeerTasks { tasks: Vec::new(), killed: killed.clone() },
        disk,
        held: Vec::new(),
        disk_free: None,
    };
    driver.measure_disk();
    driver.execute_drain(&mut out)?;
    // A start's new incarnation is synced whatever the policy.
    driver.flush(true)?;
    let task = tokio::spawn(async move {
        let result = driver.run(rx).await;
        if let Err(e) = &result {
            // Fail-stop: a node that cannot persist stops rather than acknowledge what its
            // disk does not hold.
            tracing::error!(node = %id, "node stopped: {e}");
        }
        result
    });
    Ok(Running { handle, recovery, task, killed })
}

type Waiter<N> = oneshot::Sender<Result<<N as Node>::Msg, CallError>>;

struct Driver<N: Served> {
    id: NodeId,
    node: N,
    cfg: N::Config,
    timers: DelayQueue<N::Timer>,
    timer_keys: HashMap<N::Timer, delay_queue::Key>,
    /// Client calls waiting for their answer, by (caller, request number).
    pending: HashMap<(NodeId, ReqId), Waiter<N>>,
    peers: HashMap<NodeId, PeerQueue>,
    /// Messages the node sent to itself, delivered after the current outputs.
    loopback: VecDeque<N::Msg>,
    settings: RuntimeSettings<N::Msg>,
    counters: Arc<Counters>,
    links: Arc<Links>,
    out: Outbox<N>,
    /// The node's own inbox, where answers to the requests it sent come back (weak: the node
    /// stops when every handle is gone).
    inbox: mpsc::WeakSender<Event<N>>,
    /// Connections for the requests the node sends peers.
    connections: Arc<Connections>,
    peer_tasks: PeerTasks,
    /// Where the node's `Persist` deltas go (`None`: memory only).
    disk: Option<Disk<N::Durable>>,
    /// Outputs that followed a `Persist` staged on the disk, executed once it committed.
    held: Vec<Output<N>>,
    /// Free bytes on the disk's file system when last measured (`None`: no disk, or not
    /// measurable).
    disk_free: Option<u64>,
}

/// The peer sender tasks of a node: aborted with it if it is killed, left to flush their
/// queues if it stops gracefully.
struct PeerTasks {
    tasks: Vec<tokio::task::AbortHandle>,
    killed: Arc<AtomicBool>,
}

impl Drop for PeerTasks {
    fn drop(&mut self) {
        if self.killed.load(Ordering::Acquire) {
            for task in &self.tasks {
                task.abort();
            }
        }
    }
}

/// How many messages a peer sender batches into one `deliver` call at most.
const BATCH: usize = 512;
/// How long a peer sender waits after a failed connection before trying again.
const RECONNECT: Duration = Duration::from_millis(50);
/// How often calls whose caller gave up are forgotten.
const SWEEP: Duration = Duration::from_secs(1);
/// How many queued inputs the task takes together, sharing one disk sync, at most.
const GROUP: usize = 256;

impl<N: Served> Driver<N> {
    async fn run(mut self, mut inbox: mpsc::Receiver<Event<N>>) -> Result<N, RuntimeError> {
        let mut sweep = tokio::time::interval(SWEEP);
        let mut draining: Option<tokio::time::Instant> = None;
        loop {
            if let Some(deadline) = draining
                && (self.pending.is_empty() || tokio::time::Instant::now() >= deadline)
            {
                break;
            }
            tokio::select! {
                event = inbox.recv() => match event {
                    Some(event) => {
                        self.take(event, &mut draining)?;
                        // Group commit: whatever else is queued shares this batch's sync.
                        for _ in 1..GROUP {
                            match inbox.try_recv() {
                                Ok(event) => self.take(event, &mut draining)?,
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                Some(expired) = self.timers.next(), if !self.timers.is_empty() => {
                    let timer = expired.into_inner();
                    self.timer_keys.remove(&timer);
                    bump(&self.counters.timers);
                    self.step(Input::Timeout(timer))?;
                }
                _ = sweep.tick() => {
                    self.pending.retain(|_, waiter| !waiter.is_closed());
                    self.measure_disk();
                }
                () = tokio::time::sleep(Duration::from_millis(20)), if draining.is_some() => {}
            }
            self.flush(false)?;
        }
        // Calls that slipped into the inbox as the shutdown began were never handled: they
        // certainly did not happen, and their callers hear so.
        inbox.close();
        while let Ok(event) = inbox.try_recv() {
            if let Event::Call { reply, .. } = event {
                let _ = reply.send(Err(CallError::ShuttingDown));
            }
        }
        Ok(self.node)
    }

    /// Takes one event from the inbox.
    fn take(
        &mut self,
        event: Event<N>,
        draining: &mut Option<tokio::time::Instant>,
    ) -> Result<(), RuntimeError> {
        match event {
            // A charge is released once its message is handled (at the end of its arm).
            Event::Deliver { from, msg, charge: _charge } => {
                bump(&self.counters.delivered);
                self.step(Input::Receive { from, msg })
            }
            Event::Call { from, msg, reply, charge: _charge } => {
                bump(&self.counters.calls);
                self.call(from, msg, reply)
            }
            Event::Inspect(f) => {
                f(&self.node);
                Ok(())
            }
            Event::Shutdown { drain } => {
                *draining = Some(tokio::time::Instant::now() + drain);
                Ok(())
            }
        }
    }

    fn call(&mut self, from: NodeId, msg: N::Msg, reply: Waiter<N>) -> Result<(), RuntimeError> {
        let Some(req) = msg.request() else {
            let _ = reply.send(Err(CallError::NotARequest));
            return Ok(());
        };
        if msg.writes()
            && let Some(full) = self.disk_full()
        {
            let _ = reply.send(Err(full));
            return Ok(());
        }
        if self.pending.get(&(from, req)).is_some_and(|waiter| !waiter.is_closed()) {
            let _ = reply.send(Err(CallError::Duplicate));
            return Ok(());
        }
        self.pending.insert((from, req), reply);
        self.step(Input::Receive { from, msg })
    }

    /// Measures the free space of the disk's file system.
    fn measure_disk(&mut self) {
        let Some(settings) = &self.settings.disk else { return };
        match fs4::available_space(&settings.dir) {
            Ok(free) => {
                let reserve = settings.reserve;
                let was_full = self.disk_free.is_some_and(|f| f < reserve);
                if free < reserve && !was_full {
                    tracing::warn!(node = %self.id, free, reserve, "disk nearly full: refusing puts");
                } else if free >= reserve && was_full {
                    tracing::info!(node = %self.id, free, reserve, "disk space back: taking puts");
                }
                self.disk_free = Some(free);
            }
            Err(e) => {
                if self.disk_free.is_some() {
                    tracing::warn!(node = %self.id, "cannot measure free disk space: {e}");
                }
                self.disk_free = None;
            }
        }
    }

    /// Why requests that write are refused now, if they are.
    fn disk_full(&self) -> Option<CallError> {
        let reserve = self.settings.disk.as_ref()?.reserve;
        let free = self.disk_free?;
        (free < reserve).then_some(CallError::DiskFull { free, reserve })
    }

    /// Hands one input to the node and executes what it emits (what follows a `Persist` waits
    /// for the disk); under [`SyncPolicy::Always`], commits at once.
    fn step(&mut self, input: Input<N>) -> Result<(), RuntimeError> {
        self.handle(input)?;
        if self.disk.as_ref().is_some_and(|disk| disk.policy() == SyncPolicy::Always) {
            self.flush(false)?;
        }
        Ok(())
    }

    /// Commits what the disk staged (synced as the policy says, or at once when
    /// `force_sync`), then executes the outputs that waited for it and whatever they sent the
    /// node itself, until nothing waits.
    fn flush(&mut self, force_sync: bool) -> Result<(), RuntimeError> {
        loop {
            if let Some(disk) = &mut self.disk {
                disk.commit(force_sync)?;
            }
            if self.held.is_empty() {
                return Ok(());
            }
            for output in std::mem::take(&mut self.held) {
                self.execute(output);
            }
            self.deliver_loopback()?;
        }
    }

    /// Hands one input to the node (checking its step invariants in debug builds) and
    /// executes what it emits, then whatever it sent itself.
    fn handle(&mut self, input: Input<N>) -> Result<(), RuntimeError> {
        let mut out = std::mem::take(&mut self.out);
        if cfg!(debug_assertions) {
            if let Err(violation) = handle_checked(&mut self.node, &self.cfg, input, &mut out) {
                panic!("node {} broke an invariant: {violation}", self.id);
            }
        } else {
            self.node.handle(&self.cfg, input, &mut out);
        }
        let result = self.execute_drain(&mut out);
        self.out = out;
        result?;
        self.deliver_loopback()
    }

    /// Hands the node what it sent itself, in order.
    fn deliver_loopback(&mut self) -> Result<(), RuntimeError> {
        while let Some(msg) = self.loopback.pop_front() {
            self.handle(Input::Receive { from: self.id, msg })?;
        }
        Ok(())
    }

    /// Executes `out` in order: a `Persist` is staged on the disk, and every output after
    /// it waits in `held` until the disk committed it.
    fn execute_drain(&mut self, out: &mut Outbox<N>) -> Result<(), RuntimeError> {
        for output in out.drain() {
            match (output, &mut self.disk) {
                (Output::Persist(delta), Some(disk)) => disk.stage(delta)?,
                (Output::Persist(_), None) => {}
                (output, Some(disk)) if disk.is_dirty() => self.held.push(output),
                (output, _) => self.execute(output),
            }
        }
        Ok(())
    }

    /// Executes one output that does not wait for the disk.
    fn execute(&mut self, output: Output<N>) {
        match output {
            Output::Send { to, msg } => self.send(to, msg),
            Output::SetTimer { timer, after } => match self.timer_keys.get(&timer) {
                Some(key) => self.timers.reset(key, after),
                None => {
                    let key = self.timers.insert(timer.clone(), after);
                    self.timer_keys.insert(timer, key);
                }
            },
            Output::CancelTimer(timer) => {
                if let Some(key) = self.timer_keys.remove(&timer) {
                    self.timers.remove(&key);
                }
            }
            // Staged by `execute_drain`, never held: nothing to do here.
            Output::Persist(_) => {}
            Output::Ignored { reason } => {
                bump(&self.counters.ignored);
                tracing::trace!(node = %self.id, reason, "ignored input");
            }
        }
    }

    fn send(&mut self, to: NodeId, msg: N::Msg) {
        if to == self.id {
            return self.loopback.push_back(msg);
        }
        if let Some(req) = msg.answers()
            && let Some(waiter) = self.pending.remove(&(to, req))
        {
            // A caller that gave up is simply not answered.
            let _ = waiter.send(Ok(msg));
            return;
        }
        if let Some(req) = msg.request() {
            return self.call_peer(to, req, msg);
        }
        if self.links.is_cut(to) {
            return bump(&self.counters.dropped);
        }
        let Err(msg) = self.settings.local.deliver(self.id, to, msg) else { return };
        let Some(addr) = self.settings.peers.get(&to).copied() else {
            // An answer to a call that was given up on, or a node this one has no address for.
            bump(&self.counters.dropped);
            return;
        };
        let Ok(bytes) = crate::rpc::encode(msg) else {
            return bump(&self.counters.dropped);
        };
        let (id, max_frame, counters) = (self.id, self.settings.max_frame, self.counters.clone());
        let tasks = &mut self.peer_tasks.tasks;
        let queue = self.peers.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(4 * BATCH);
            let queued = Arc::new(AtomicUsize::new(0));
            let sender = peer_sender(id, addr, max_frame, rx, queued.clone(), counters);
            tasks.push(tokio::spawn(sender).abort_handle());
            PeerQueue { tx, queued }
        });
        let max = PEER_QUEUE_FRAMES * max_frame;
        let len = bytes.len();
        if !reserve(&queue.queued, max, len) {
            return bump(&self.counters.dropped);
        }
        if queue.tx.try_send(bytes).is_err() {
            queue.queued.fetch_sub(len, Ordering::Relaxed);
            bump(&self.counters.dropped);
        }
    }
}

impl<N: Served> Driver<N> {
    /// Sends request `msg` (numbered `req`) to peer `to` as a call, in a task of its own: the
    /// answer comes back as an input from `to`; a call the transport or the peer's runtime
    /// refused comes back as the protocol's refusal; a call that may have been taken but got
    /// no answer comes back as nothing (the node's own timers decide what then).
    fn call_peer(&mut self, to: NodeId, req: ReqId, msg: N::Msg) {
        if self.links.is_cut(to) {
            return bump(&self.counters.dropped);
        }
        let refused = msg.refuser();
        // In this process: the answer to wait for; elsewhere: the message back, to send.
        let local = self.settings.local.call(self.id, to, msg);
        let addr = self.settings.peers.get(&to).copied();
        let inbox = self.inbox.clone();
        let (from, max_frame) = (self.id, self.settings.max_frame);
        let (deadline, connections) = (self.settings.call_deadline, self.connections.clone());
        tokio::spawn(async move {
            let answer = match (local, addr) {
                (Ok(answer), _) => match answer.await {
                    Ok(answer) => Some(answer),
                    Err(error) => error.refusal().map(|refusal| refused(req, refusal)),
                },
                (Err(msg), Some(addr)) => {
                    let call = RemoteCall { from, to, addr, max_frame, deadline };
                    call.run(&connections, req, msg, refused).await
                }
                (Err(_), None) => Some(refused(req, Refusal::Unreachable)),
            };
            if let (Some(msg), Some(inbox)) = (answer, inbox.upgrade()) {
                let _ = inbox.try_send(Event::Deliver { from: to, msg, charge: Charge::default() });
            }
        });
    }
}

/// How long connecting to a peer may take before a request to it counts as undeliverable.
const CONNECT: Duration = Duration::from_secs(2);

/// The connections a node's requests to its peers go over, one per peer, shared by the calls
/// in flight.
#[derive(Debug, Default)]
struct Connections(std::sync::Mutex<HashMap<NodeId, SquallClient>>);

impl Connections {
    /// The connection to `node`, made if there is none.
    async fn get(
        &self,
        node: NodeId,
        addr: SocketAddr,
        max_frame: usize,
    ) -> std::io::Result<SquallClient> {
        if let Some(client) = self.0.lock().expect("connections lock").get(&node) {
            return Ok(client.clone());
        }
        let client = tokio::time::timeout(CONNECT, connect(addr, max_frame))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        Ok(self.0.lock().expect("connections lock").entry(node).or_insert(client).clone())
    }

    /// Drops the connection to `node` (it failed): the next call connects again.
    fn forget(&self, node: NodeId) {
        self.0.lock().expect("connections lock").remove(&node);
    }
}

/// One request to a peer over TCP.
struct RemoteCall {
    from: NodeId,
    to: NodeId,
    addr: SocketAddr,
    max_frame: usize,
    deadline: Duration,
}

impl RemoteCall {
    /// The answer to `msg`, or the refusal that says it did not happen there, or nothing when
    /// it may have.
    async fn run<M: Calls + Within<SystemMsg>>(
        self,
        connections: &Connections,
        req: ReqId,
        msg: M,
        refused: fn(ReqId, Refusal) -> M,
    ) -> Option<M> {
        let client = match connections.get(self.to, self.addr, self.max_frame).await {
            Ok(client) => client,
            Err(error) => {
                tracing::debug!(to = %self.to, %error, "peer unreachable");
                return Some(refused(req, Refusal::Unreachable));
            }
        };
        let Ok(bytes) = crate::rpc::encode(msg) else {
            return Some(refused(req, Refusal::Malformed));
        };
        let mut ctx = tarpc::context::current();
        ctx.deadline = std::time::Instant::now() + self.deadline;
        match client.call(ctx, self.from, bytes).await {
            // An answer that does not decode says nothing definite.
            Ok(Ok(answer)) => crate::rpc::decode(&answer).ok(),
            Ok(Err(error)) => error.refusal().map(|refusal| refused(req, refusal)),
            // The server throttled it (over `max_in_flight`) without running it.
            Err(tarpc::client::RpcError::Server(server))
                if server.kind == std::io::ErrorKind::WouldBlock =>
            {
                Some(refused(req, Refusal::Overloaded))
            }
            // A slow or paused peer: the connection is fine, and a new one would only pile up
            // beside it in the peer's kernel until it resumes.
            Err(tarpc::client::RpcError::DeadlineExceeded) => None,
            // tarpc reports a connection that closed before the answer the same way whether or
            // not the request had left: the outcome is unknown. The connection is suspect.
            Err(error) => {
                tracing::debug!(to = %self.to, %error, "call failed");
                connections.forget(self.to);
                None
            }
        }
    }
}

/// Connects a tarpc client to `addr`.
pub async fn connect(addr: SocketAddr, max_frame: usize) -> std::io::Result<SquallClient> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let transport = crate::codec::transport(stream, max_frame);
    Ok(SquallClient::new(tarpc::client::Config::default(), transport).spawn())
}

/// The queue of messages (encoded) to one peer, and the bytes in it.
struct PeerQueue {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// How many frames' worth of encoded messages may wait for one peer; more are dropped (the
/// protocols re-send).
const PEER_QUEUE_FRAMES: usize = 4;

/// Room kept in a `deliver` frame for its envelope (the call, the sender, the list lengths).
const FRAME_ENVELOPE: usize = 1024;

/// Fills `batch` with `first` and what else is queued, up to `BATCH` messages that fit in
/// `room` bytes (each counted with a few bytes of framing; `first` goes whatever its size);
/// returns the message taken that did not fit. What it takes off `queue` leaves `queued`.
fn fill_batch(
    batch: &mut Vec<Bytes>,
    first: Bytes,
    queue: &mut mpsc::Receiver<Bytes>,
    queued: &AtomicUsize,
    room: usize,
) -> Option<Bytes> {
    const FRAMING: usize = 8;
    let mut size = first.len() + FRAMING;
    batch.push(first);
    while batch.len() < BATCH {
        let Ok(msg) = queue.try_recv() else { break };
        queued.fetch_sub(msg.len(), Ordering::Relaxed);
        if size + msg.len() + FRAMING > room {
            return Some(msg);
        }
        size += msg.len() + FRAMING;
        batch.push(msg);
    }
    None
}

/// Sends one peer's messages in batches, one `deliver` call in flight at a time (which keeps
/// them in order and batches more under load; meanwhile at most `4 × BATCH` messages and
/// `PEER_QUEUE_FRAMES` frames' worth of bytes wait, and more are dropped). A batch fits in
/// one frame. A failed connection loses the batch — the protocols re-send — and is retried
/// after a pause.
async fn peer_sender(
    from: NodeId,
    addr: SocketAddr,
    max_frame: usize,
    mut queue: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
    counters: Arc<Counters>,
) {
    let mut client: Option<SquallClient> = None;
    let mut batch: Vec<Bytes> = Vec::with_capacity(BATCH);
    // A message taken off the queue that did not fit in the last batch: it starts the next.
    let mut carried: Option<Bytes> = None;
    let room = max_frame.saturating_sub(FRAME_ENVELOPE);
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(first) => {
                    queued.fetch_sub(first.len(), Ordering::Relaxed);
                    first
                }
                None => break,
            },
        };
        carried = fill_batch(&mut batch, first, &mut queue, &queued, room);
        if client.is_none() {
            match connect(addr, max_frame).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "peer unreachable");
                    counters.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                    tokio::time::sleep(RECONNECT).await;
                    continue;
                }
            }
        }
        let encoded = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        let mut ctx = tarpc::context::current();
        ctx.deadline = std::time::Instant::now() + Duration::from_secs(2);
        let failed = match &client {
            // A peer that is slow or paused (the deadline passed) keeps its connection: a new
            // one would only pile up beside it in the peer's kernel until it resumes, each
            // with its own buffered batches. A broken connection is made again.
            Some(c) => matches!(
                c.deliver(ctx, from, encoded).await,
                Err(e) if !matches!(e, tarpc::client::RpcError::DeadlineExceeded)
            ),
            None => false,
        };
        if failed {
            client = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_batch_fits_in_a_frame_and_carries_the_rest_over() {
        let (tx, mut rx) = mpsc::channel(8);
        let queued = AtomicUsize::new(0);
        for len in [40, 40, 40, 10] {
            queued.fetch_add(len, Ordering::Relaxed);
            tx.try_send(Bytes::from(vec![0u8; len])).expect("room");
        }
        let mut batch = Vec::new();
        // 48 + 48 bytes fit in 100; the third would not: it is carried to the next batch.
        let first = rx.try_recv().expect("queued");
        queued.fetch_sub(first.len(), Ordering::Relaxed);
        let carried = fill_batch(&mut batch, first, &mut rx, &queued, 100).expect("carried");
        assert_eq!(batch.iter().map(Bytes::len).collect::<Vec<_>>(), [40, 40]);
        assert_eq!(carried.len(), 40);
        assert_eq!(queued.load(Ordering::Relaxed), 10, "what is taken leaves the count");
        batch.clear();
        assert_eq!(fill_batch(&mut batch, carried, &mut rx, &queued, 100), None);
        assert_eq!(batch.iter().map(Bytes::len).collect::<Vec<_>>(), [40, 10]);
        assert_eq!(queued.load(Ordering::Relaxed), 0);
        // A message larger than a frame goes alone.
        tx.try_send(Bytes::from(vec![0u8; 5])).expect("room");
        queued.fetch_add(5, Ordering::Relaxed);
        batch.clear();
        let carried = fill_batch(&mut batch, Bytes::from(vec![0u8; 500]), &mut rx, &queued, 100);
        assert_eq!((batch.len(), carried.map(|c| c.len())), (1, Some(5)));
    }
}
