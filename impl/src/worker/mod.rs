//! A worker: one cache, its session layer, and the executors that run function bodies.
//!
//! The worker is the unit Cloudburst calls a function VM: the [cache](crate::cache), which
//! storage nodes fetch into and push to, sits next to executors; the
//! [session layer](crate::session::SessionLayer) gives each DAG execution the consistency it
//! asked for on top of that cache. The worker composes the two and speaks to its executors by
//! messages ([`ExecMsg`]): it invokes a function with the keys the function declared, answers
//! the function's reads and writes, and hears when it is done. A function body is opaque
//! here: the models and simulations script it ([`ScriptedWorker`]); the cluster runs real code.
//!
//! The worker asks its cache for keys and writes through it exactly as an executor of a cache
//! would (`Get` and `Put` under the worker's own id, answered by `GetOk`, `PutOk` and
//! `PutRejected`), so the cache runs unchanged, with every check it has on its own. Executors
//! live in the worker's process: the channel between them is not lost or duplicated, and dies
//! with the worker.
//!
//! [`SystemNode`] hosts every role of the whole system — storage nodes, applications with
//! their KVS clients, workers and schedulers — for the models and simulations that check them
//! together.

mod script;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

pub use script::{ScriptedWorker, ScriptedWorkerConfig, Step};

use crate::base::{Key, ReqId};
use crate::cache::{CacheConfig, CacheNode};
use crate::kvs::{KvsMsg, KvsTimer, ScriptedClient, StorageNode};
use crate::lattice::LatticeValue;
use crate::node::{Calls, Refusal};
use crate::node::{Hosts, Input, Node, NodeId, Outbox, Output, Violation, Within};
use crate::session::{
    CallId, Effect, Effects, FnId, LayerConfig, Level, Scheduler, SessionLayer, SessionMsg,
    SessionTimer, Write, WriteError,
};

/// The messages between a worker and its executors.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ExecMsg {
    /// Worker → executor: run `function` for `call`.
    Invoke {
        /// The run.
        call: CallId,
        /// The function's name.
        function: String,
        /// The session's consistency level: a write is [`Write::Value`] at `lww` and `dsrr`,
        /// [`Write::Causal`] at the causal levels.
        level: Level,
        /// Its inputs: its predecessors' outputs, or the call's arguments.
        args: Vec<Bytes>,
        /// The keys it declared, as its session reads them.
        reads: BTreeMap<Key, Option<LatticeValue>>,
    },
    /// Executor → worker: the function reads `key`.
    Get {
        /// The run.
        call: CallId,
        /// The function's request number.
        req: u32,
        /// The key.
        key: Key,
    },
    /// Worker → executor: the answer to `Get`.
    GetOk {
        /// The run.
        call: CallId,
        /// The request answered.
        req: u32,
        /// The value (`None`: the key has none), or why not.
        value: Result<Option<LatticeValue>, WriteError>,
    },
    /// Executor → worker: the function writes `key`.
    Put {
        /// The run.
        call: CallId,
        /// The function's request number.
        req: u32,
        /// The key.
        key: Key,
        /// What it writes.
        write: Write,
    },
    /// Worker → executor: the answer to `Put`.
    PutOk {
        /// The run.
        call: CallId,
        /// The request answered.
        req: u32,
        /// Whether the KVS holds it.
        result: Result<(), WriteError>,
    },
    /// Executor → worker: the function finished with an output, or failed.
    Done {
        /// The run.
        call: CallId,
        /// Its output, or why it failed.
        result: Result<Bytes, String>,
    },
    /// Worker → executor: the run's session ended; stop it.
    Cancel {
        /// The run.
        call: CallId,
    },
    /// Executor → worker: the function sends `bytes` to the function of its session
    /// labelled `to` (see [`SessionMsg::Message`]).
    Send {
        /// The run.
        call: CallId,
        /// The function's request number.
        req: u32,
        /// The receiving function's label in the DAG.
        to: String,
        /// What it says.
        bytes: Bytes,
    },
    /// Worker → executor: the answer to `Send`: handed on (which does not say delivered),
    /// or why not.
    Sent {
        /// The run.
        call: CallId,
        /// The request answered.
        req: u32,
        /// Handed on, or why not.
        result: Result<(), SendError>,
    },
    /// Executor → worker: the function takes the next message sent to it. If none is there
    /// it waits for one (`wait`; until a message comes or the run is cancelled) or is
    /// answered `None` at once.
    Recv {
        /// The run.
        call: CallId,
        /// The function's request number.
        req: u32,
        /// Whether to wait for a message.
        wait: bool,
    },
    /// Worker → executor: the answer to `Recv`: the sender's label and what it said.
    Received {
        /// The run.
        call: CallId,
        /// The request answered.
        req: u32,
        /// The message, if any.
        message: Option<(String, Bytes)>,
    },
}

/// Why a function's message was not sent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SendError {
    /// No function of the session's DAG has this label.
    #[error("no function {0:?} in this DAG")]
    NoSuchFunction(String),
    /// The receiving worker's mailboxes are full (it is this worker).
    #[error("the receiver's worker holds {0} unread messages already")]
    Full(usize),
}

/// The messages of the whole system: the KVS's (storage nodes, clients, caches), the
/// sessions' (schedulers, workers) and the executors'.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SystemMsg {
    /// A KVS message.
    Kvs(KvsMsg),
    /// A session message.
    Session(SessionMsg),
    /// A worker's message to or from an executor.
    Exec(ExecMsg),
}

/// The timers of the whole system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SystemTimer {
    /// A KVS timer (storage nodes, clients, caches).
    Kvs(KvsTimer),
    /// A session timer (schedulers, session layers).
    Session(SessionTimer),
}

/// Requests and answers are the KVS's and the sessions' (executors send none: their channel
/// to the worker is in-process).
impl Calls for SystemMsg {
    fn request(&self) -> Option<ReqId> {
        match self {
            Self::Kvs(msg) => msg.request(),
            Self::Session(msg) => msg.request(),
            Self::Exec(_) => None,
        }
    }

    fn answers(&self) -> Option<ReqId> {
        match self {
            Self::Kvs(msg) => msg.answers(),
            Self::Session(msg) => msg.answers(),
            Self::Exec(_) => None,
        }
    }

    /// A refusal in the KVS's words; [`Calls::refuser`] picks the request's own protocol.
    fn refused(req: ReqId, refusal: Refusal) -> Self {
        Self::Kvs(KvsMsg::refused(req, refusal))
    }

    fn refuser(&self) -> fn(ReqId, Refusal) -> Self {
        match self {
            Self::Session(_) => |req, refusal| Self::Session(SessionMsg::refused(req, refusal)),
            _ => Self::refused,
        }
    }

    fn writes(&self) -> bool {
        match self {
            Self::Kvs(msg) => msg.writes(),
            Self::Session(msg) => msg.writes(),
            Self::Exec(_) => false,
        }
    }
}

macro_rules! within {
    ($whole:ident :: $case:ident ( $part:ty )) => {
        impl Within<$whole> for $part {
            fn into_world(self) -> $whole {
                $whole::$case(self)
            }

            fn from_world(world: $whole) -> Option<Self> {
                match world {
                    $whole::$case(part) => Some(part),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }
    };
}

within!(SystemMsg::Kvs(KvsMsg));
within!(SystemMsg::Session(SessionMsg));
within!(SystemMsg::Exec(ExecMsg));
within!(SystemTimer::Kvs(KvsTimer));
within!(SystemTimer::Session(SessionTimer));

/// How a worker is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WorkerConfig {
    /// This worker (also its cache's and its session layer's id).
    pub id: NodeId,
    /// Its cache.
    pub cache: CacheConfig,
    /// Its session layer.
    pub session: LayerConfig,
    /// Its executors; each runs one function at a time.
    pub executors: Vec<NodeId>,
    /// `Retry` ticks a function's write may wait for the KVS before the function is told its
    /// outcome is unknown.
    pub write_ticks: u32,
    /// Keys the cache fetches, and so subscribes to, as soon as the worker starts (and again
    /// after every restart): a deployment's hot keys, whose first read then need not wait for
    /// storage. Pushes keep them fresh like any cached key; eviction may still drop them.
    pub warm: Vec<Key>,
    /// The most messages between functions ([`SessionMsg::Message`]) the worker holds unread;
    /// one more is dropped (its sender, if on this worker, is told [`SendError::Full`]).
    pub max_messages: usize,
    /// `Retry` ticks a message is kept for a function that is not running here (not yet,
    /// or no longer) before it is dropped.
    pub message_ticks: u8,
    /// The most keys a report of what the cache holds names ([`SessionMsg::Cached`], sent to
    /// the scheduler after a DAG execution finished here, if the keys changed); `0` sends
    /// none.
    pub report_keys: usize,
}

impl WorkerConfig {
    /// A correct worker `id` with `executors`, reporting to `scheduler`, caching by `cache`
    /// (whose id must be `id`), with default periods and bounds.
    pub fn new(cache: CacheConfig, scheduler: NodeId, executors: Vec<NodeId>) -> Self {
        let id = cache.id;
        let session = LayerConfig::new(id, scheduler);
        Self {
            id,
            session,
            cache,
            executors,
            write_ticks: 10,
            warm: Vec::new(),
            max_messages: 1024,
            message_ticks: 5,
            report_keys: 0,
        }
    }
}

/// What the worker asked its cache for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Ask {
    /// To hold this key (a read waits for it).
    Key(Key),
    /// A function's write, with the `Retry` ticks it has waited.
    Write { call: CallId, req: u32, ticks: u32 },
}

/// A function ready to run, waiting for an executor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Invocation {
    function: String,
    level: Level,
    args: Vec<Bytes>,
    reads: BTreeMap<Key, Option<LatticeValue>>,
}

/// The messages for one function run, and its executor's waiting `Recv`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Inbox {
    /// Unread, in arrival order: the sender and the bytes.
    messages: std::collections::VecDeque<(FnId, Bytes)>,
    /// The request number of a `Recv` waiting for a message.
    waiting: Option<u32>,
    /// `Retry` ticks the run has not been running here while the inbox held messages.
    ticks: u8,
}

/// A worker's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Worker {
    cache: CacheNode,
    layer: SessionLayer,
    /// Requests to the cache in flight, by request number.
    asks: BTreeMap<ReqId, Ask>,
    /// Keys asked of the cache and not yet answered (one request each).
    asked: BTreeSet<Key>,
    /// The next request number to the cache.
    next_ask: ReqId,
    /// Executors running a function, and which.
    busy: BTreeMap<NodeId, CallId>,
    /// Functions ready to run, waiting for a free executor, in order.
    queue: BTreeMap<CallId, Invocation>,
    /// Messages between functions, by the run they are for.
    inboxes: BTreeMap<CallId, Inbox>,
    /// The keys last reported to the scheduler as cached ([`WorkerConfig::report_keys`]).
    reported: BTreeSet<Key>,
}

type Out = Outbox<Worker>;

impl Worker {
    /// The cache.
    pub fn cache(&self) -> &CacheNode {
        &self.cache
    }

    /// The session layer.
    pub fn layer(&self) -> &SessionLayer {
        &self.layer
    }

    /// Which function each busy executor runs.
    pub fn busy(&self) -> &BTreeMap<NodeId, CallId> {
        &self.busy
    }

    /// How many functions wait for a free executor.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// How many messages between functions wait here to be read.
    pub fn unread(&self) -> usize {
        self.inboxes.values().map(|inbox| inbox.messages.len()).sum()
    }

    /// Passes a KVS input to the cache; its answers to the worker's own requests come back
    /// here, the rest go out.
    fn drive_cache(&mut self, cfg: &WorkerConfig, input: Input<CacheNode>, out: &mut Out) {
        let mut inner = Outbox::new();
        self.cache.handle(&cfg.cache, input, &mut inner);
        let mut fx = Effects::new();
        for output in inner {
            match output {
                Output::Send { to, msg } if to == cfg.id => self.answered(msg, &mut fx),
                other => out.absorb_one(other),
            }
        }
        self.layer.cache_changed(&cfg.session, self.cache.entries(), &mut fx);
        self.apply(cfg, fx, out);
    }

    /// The cache answered request `req` of the worker's.
    fn answered(&mut self, msg: KvsMsg, fx: &mut Effects) {
        let (req, result) = match msg {
            KvsMsg::GetOk { req, .. } => (req, Ok(())),
            KvsMsg::PutOk { req } => (req, Ok(())),
            KvsMsg::PutRejected { req, error } => (req, Err(WriteError::Rejected(error))),
            _ => return fx.push(Effect::Ignore("a cache message the worker does not expect")),
        };
        match self.asks.remove(&req) {
            // The key is in the cache now (unless already evicted): the layer looks.
            Some(Ask::Key(key)) => {
                self.asked.remove(&key);
            }
            Some(Ask::Write { call, req, .. }) => self.layer.written(call, req, result, fx),
            None => fx.push(Effect::Ignore("a cache answer to no request of the worker's")),
        }
    }

    /// Asks the cache (as its executor would) for `msg`, numbered by the worker.
    fn ask(
        &mut self,
        cfg: &WorkerConfig,
        ask: Ask,
        make: impl FnOnce(ReqId) -> KvsMsg,
        out: &mut Out,
    ) {
        let req = self.next_ask;
        self.next_ask += 1;
        self.asks.insert(req, ask);
        self.drive_cache(cfg, Input::Receive { from: cfg.id, msg: make(req) }, out);
    }

    /// Carries out the session layer's effects.
    fn apply(&mut self, cfg: &WorkerConfig, fx: Effects, out: &mut Out) {
        let mut finished = false;
        for effect in fx {
            match effect {
                Effect::Send { to, msg } => {
                    finished |= matches!(msg, SessionMsg::Result { .. });
                    out.send(to, SystemMsg::Session(msg))
                }
                Effect::SetTimer { timer, after } => {
                    out.set_timer(SystemTimer::Session(timer), after)
                }
                // A key the cache holds is subscribed: newer versions come as pushes.
                Effect::Want(key)
                    if !self.cache.entries().contains_key(&key)
                        && self.asked.insert(key.clone()) =>
                {
                    let ask = Ask::Key(key.clone());
                    self.ask(cfg, ask, |req| KvsMsg::Get { req, key }, out);
                }
                Effect::Want(_) => {}
                Effect::Invoke { call, function, level, args, reads } => {
                    self.queue.insert(call, Invocation { function, level, args, reads });
                    self.dispatch(cfg, out);
                }
                Effect::Got { call, req, value } => {
                    self.to_executor(call, ExecMsg::GetOk { call, req, value }, out);
                }
                Effect::Write { call, req, key, value, durability } => {
                    let ask = Ask::Write { call, req, ticks: 0 };
                    self.ask(cfg, ask, |r| KvsMsg::Put { req: r, key, value, durability }, out);
                }
                Effect::Wrote { call, req, result } => {
                    self.to_executor(call, ExecMsg::PutOk { call, req, result }, out);
                }
                Effect::Cancel(call) => {
                    self.queue.remove(&call);
                    self.inboxes.remove(&call);
                    if let Some((&executor, _)) = self.busy.iter().find(|(_, c)| **c == call) {
                        self.busy.remove(&executor);
                        out.send(executor, SystemMsg::Exec(ExecMsg::Cancel { call }));
                        self.dispatch(cfg, out);
                    }
                }
                Effect::Ignore(reason) => out.ignore(reason),
            }
        }
        if finished {
            self.report_cached(cfg, out);
        }
    }

    /// Tells the scheduler which keys the cache holds (the first `report_keys`), if they
    /// changed since the last report.
    fn report_cached(&mut self, cfg: &WorkerConfig, out: &mut Out) {
        if cfg.report_keys == 0 {
            return;
        }
        let held = self.cache.entries().keys().take(cfg.report_keys);
        if held.clone().eq(self.reported.iter()) {
            return;
        }
        self.reported = held.cloned().collect();
        let keys = self.reported.clone();
        out.send(cfg.session.scheduler, SystemMsg::Session(SessionMsg::Cached { keys }));
    }

    /// Hands queued functions to free executors, in order.
    fn dispatch(&mut self, cfg: &WorkerConfig, out: &mut Out) {
        for &executor in &cfg.executors {
            if self.busy.contains_key(&executor) {
                continue;
            }
            let Some((call, Invocation { function, level, args, reads })) = self.queue.pop_first()
            else {
                return;
            };
            self.busy.insert(executor, call);
            let invoke = ExecMsg::Invoke { call, function, level, args, reads };
            out.send(executor, SystemMsg::Exec(invoke));
        }
    }

    fn to_executor(&self, call: CallId, msg: ExecMsg, out: &mut Out) {
        match self.busy.iter().find(|(_, c)| **c == call) {
            Some((&executor, _)) => out.send(executor, SystemMsg::Exec(msg)),
            None => out.ignore("an answer for a function no executor runs"),
        }
    }

    /// An executor's message.
    fn on_executor(&mut self, cfg: &WorkerConfig, executor: NodeId, msg: ExecMsg, out: &mut Out) {
        let call = match &msg {
            ExecMsg::Get { call, .. }
            | ExecMsg::Put { call, .. }
            | ExecMsg::Done { call, .. }
            | ExecMsg::Send { call, .. }
            | ExecMsg::Recv { call, .. } => *call,
            _ => return out.ignore("an executor message a worker does not expect"),
        };
        if self.busy.get(&executor) != Some(&call) {
            return out.ignore("a message for a run this executor does not hold");
        }
        let (entries, mut fx) = (self.cache.entries(), Effects::new());
        let layer = &cfg.session;
        match msg {
            ExecMsg::Send { req, to, bytes, .. } => {
                let result = self.send(cfg, call, &to, bytes, out);
                return out.send(executor, SystemMsg::Exec(ExecMsg::Sent { call, req, result }));
            }
            ExecMsg::Recv { req, wait, .. } => return self.recv(cfg, call, req, wait, out),
            ExecMsg::Get { req, key, .. } => {
                self.layer.get(layer, call, req, key, entries, &mut fx)
            }
            ExecMsg::Put { req, key, write, .. } => {
                self.layer.put(layer, call, req, key, write, &mut fx)
            }
            ExecMsg::Done { result, .. } => {
                self.busy.remove(&executor);
                self.inboxes.remove(&call);
                self.layer.finished(layer, call, result, &mut fx);
            }
            _ => unreachable!("matched above"),
        }
        self.apply(cfg, fx, out);
        self.dispatch(cfg, out);
    }

    /// Run `call`'s message `bytes` to the function labelled `to` in its session: delivered
    /// here, or sent to the worker the session placed that function on.
    fn send(
        &mut self,
        cfg: &WorkerConfig,
        call: CallId,
        to: &str,
        bytes: Bytes,
        out: &mut Out,
    ) -> Result<(), SendError> {
        let (session, from) = call;
        let info = self.layer.info(call).ok_or_else(|| SendError::NoSuchFunction(to.into()))?;
        let target = info.dag.functions().iter().position(|f| f.name == to);
        let target = target.ok_or_else(|| SendError::NoSuchFunction(to.into()))? as FnId;
        match info.placement.get(target as usize) {
            Some(&worker) if worker != cfg.id => {
                let msg = SessionMsg::Message { session, from, to: target, bytes };
                out.send(worker, SystemMsg::Session(msg));
                Ok(())
            }
            _ => self.deliver(cfg, (session, target), from, bytes, out),
        }
    }

    /// A message for run `to`, from function `from` of its session: answers the run's waiting
    /// `Recv`, or waits in its inbox (if there is room).
    fn deliver(
        &mut self,
        cfg: &WorkerConfig,
        to: CallId,
        from: FnId,
        bytes: Bytes,
        out: &mut Out,
    ) -> Result<(), SendError> {
        let waiting = self.inboxes.get_mut(&to).and_then(|inbox| inbox.waiting.take());
        if let Some(req) = waiting {
            // A `Recv` waits only on an empty inbox: it is empty still.
            self.inboxes.remove(&to);
            let message = Some((self.label(to, from), bytes));
            self.to_executor(to, ExecMsg::Received { call: to, req, message }, out);
            return Ok(());
        }
        let unread = self.unread();
        if unread >= cfg.max_messages {
            out.ignore("a message for a worker whose inboxes are full");
            return Err(SendError::Full(unread));
        }
        let inbox = self.inboxes.entry(to).or_default();
        inbox.messages.push_back((from, bytes));
        Ok(())
    }

    /// The label of function `from` in run `call`'s session (its number if the run is gone).
    fn label(&self, call: CallId, from: FnId) -> String {
        match self.layer.info(call) {
            Some(info) if (from as usize) < info.dag.len() => info.dag.function(from).name.clone(),
            _ => format!("#{from}"),
        }
    }

    /// Run `call`'s executor takes its next message, or waits for one. A wait holds the
    /// session at the scheduler (see [`SessionLayer::hold_while_waiting`]): if the message
    /// never comes, the session's end still reaches this worker and stops the run.
    fn recv(&mut self, cfg: &WorkerConfig, call: CallId, req: u32, wait: bool, out: &mut Out) {
        let inbox = self.inboxes.entry(call).or_default();
        let message = match inbox.messages.pop_front() {
            Some((from, bytes)) => Some((from, bytes)),
            None if wait => {
                inbox.waiting = Some(req);
                let mut fx = Effects::new();
                self.layer.hold_while_waiting(&cfg.session, call, &mut fx);
                return self.apply(cfg, fx, out);
            }
            None => None,
        };
        if inbox.messages.is_empty() && inbox.waiting.is_none() {
            self.inboxes.remove(&call);
        }
        let message = message.map(|(from, bytes)| (self.label(call, from), bytes));
        self.to_executor(call, ExecMsg::Received { call, req, message }, out);
    }

    /// A `Retry` tick ages the inboxes of runs not running here: a message for a function
    /// that never runs here (its session ended, or it runs elsewhere) does not stay for ever.
    fn age_inboxes(&mut self, cfg: &WorkerConfig) {
        let running: BTreeSet<CallId> = self.busy.values().copied().collect();
        self.inboxes.retain(|call, inbox| {
            if running.contains(call) || self.layer.is_running(*call) {
                inbox.ticks = 0;
                return true;
            }
            inbox.ticks += 1;
            inbox.ticks <= cfg.message_ticks
        });
    }

    /// A `Retry` tick ages the writes waiting for the KVS: the cache gives up on a write
    /// silently after its attempts, so one unanswered for `write_ticks` ticks is indefinite.
    fn age_writes(&mut self, cfg: &WorkerConfig, fx: &mut Effects) {
        let mut late = Vec::new();
        for (&ask, kind) in &mut self.asks {
            if let Ask::Write { ticks, .. } = kind {
                *ticks += 1;
                if *ticks > cfg.write_ticks {
                    late.push(ask);
                }
            }
        }
        for ask in late {
            if let Some(Ask::Write { call, req, .. }) = self.asks.remove(&ask) {
                self.layer.written(call, req, Err(WriteError::Indefinite), fx);
            }
        }
    }
}

impl Node for Worker {
    type Config = WorkerConfig;
    type Msg = SystemMsg;
    type Timer = SystemTimer;
    /// The worker's incarnation (its cache's and its session layer's).
    type Durable = u32;

    fn init(cfg: &WorkerConfig, persisted: &u32, out: &mut Out) -> Self {
        let mut inner = Outbox::new();
        let cache = CacheNode::init(&cfg.cache, persisted, &mut inner);
        out.absorb(inner);
        let mut worker = Self {
            cache,
            layer: SessionLayer::new(persisted + 1),
            asks: BTreeMap::new(),
            asked: BTreeSet::new(),
            next_ask: 0,
            busy: BTreeMap::new(),
            queue: BTreeMap::new(),
            inboxes: BTreeMap::new(),
            reported: BTreeSet::new(),
        };
        let warm = cfg.warm.iter().cloned().map(Effect::Want).collect();
        worker.apply(cfg, warm, out);
        worker
    }

    fn handle(&mut self, cfg: &WorkerConfig, input: Input<Self>, out: &mut Out) {
        match input {
            Input::Receive { from, msg: SystemMsg::Kvs(msg) } => {
                self.drive_cache(cfg, Input::Receive { from, msg }, out);
            }
            Input::Timeout(SystemTimer::Kvs(timer)) => {
                self.drive_cache(cfg, Input::Timeout(timer), out)
            }
            Input::Receive {
                msg: SystemMsg::Session(SessionMsg::Message { session, from, to, bytes }),
                ..
            } => {
                // Best effort: a message for a full worker is dropped (the sender has gone on).
                let _ = self.deliver(cfg, (session, to), from, bytes, out);
            }
            Input::Receive { from, msg: SystemMsg::Session(msg) } => {
                let mut fx = Effects::new();
                self.layer.receive(&cfg.session, from, msg, self.cache.entries(), &mut fx);
                self.apply(cfg, fx, out);
            }
            Input::Timeout(SystemTimer::Session(timer)) => {
                let mut fx = Effects::new();
                if timer == SessionTimer::Retry {
                    self.age_writes(cfg, &mut fx);
                    self.age_inboxes(cfg);
                }
                self.layer.timeout(&cfg.session, timer, self.cache.entries(), &mut fx);
                self.apply(cfg, fx, out);
            }
            Input::Receive { from, msg: SystemMsg::Exec(msg) } => {
                self.on_executor(cfg, from, msg, out);
            }
        }
    }

    /// CACHE-I2 on the cache.
    fn check_step(cfg: &WorkerConfig, before: &Self, after: &Self) -> Result<(), Violation> {
        CacheNode::check_step(&cfg.cache, &before.cache, &after.cache)
    }

    /// Nothing in flight: the cache idle, the layer idle, no request to the cache unanswered,
    /// no function queued or running.
    fn is_idle(&self, _: &WorkerConfig) -> bool {
        self.cache.is_idle()
            && self.layer.is_idle()
            && self.asks.is_empty()
            && self.busy.is_empty()
            && self.queue.is_empty()
    }
}

crate::world! {
    /// The whole system: storage nodes, applications with their KVS clients (a concurrent
    /// writer, say), workers with scripted function bodies, and schedulers.
    pub enum SystemNode, config SystemConfig {
        msg: SystemMsg, timer: SystemTimer, durable: crate::kvs::Stored;
        /// A storage node.
        Storage(StorageNode),
        /// A scripted application with its client.
        Client(ScriptedClient),
        /// A worker whose functions are scripted.
        Worker(ScriptedWorker),
        /// A scheduler.
        Scheduler(Scheduler),
    }
}

/// A worker's cache, so the cache invariants judge the caches of the whole system.
impl Hosts<CacheNode> for SystemNode {
    fn role(&self) -> Option<&CacheNode> {
        match self {
            Self::Worker(worker) => Some(worker.worker().cache()),
            _ => None,
        }
    }

    fn role_config(cfg: &SystemConfig) -> Option<&CacheConfig> {
        match cfg {
            SystemConfig::Worker(cfg) => Some(&cfg.worker.cache),
            _ => None,
        }
    }
}

impl crate::session::invariants::SessionWorld for SystemNode {
    fn layer(&self) -> Option<&SessionLayer> {
        match self {
            Self::Worker(worker) => Some(worker.worker().layer()),
            _ => None,
        }
    }

    fn layer_config(cfg: &SystemConfig) -> Option<&LayerConfig> {
        match cfg {
            SystemConfig::Worker(cfg) => Some(&cfg.worker.session),
            _ => None,
        }
    }

    fn session_msg(msg: &SystemMsg) -> Option<&SessionMsg> {
        match msg {
            SystemMsg::Session(msg) => Some(msg),
            _ => None,
        }
    }
}
