//! Executors: the threads that run function code next to a worker's cache.
//!
//! A worker's state machine ([`squall_proto::worker::Worker`]) decides what runs where and
//! when; it speaks to its executors only by [`ExecMsg`]s: `Invoke` a function, answer its
//! `Get`s and `Put`s, hear it is `Done`, `Cancel` it when its session ended. Here each
//! executor is an OS thread with a [`Mailbox`]: the worker's runtime hands it messages through
//! an in-process endpoint (never TCP), and the thread answers into the worker's inbox, waiting
//! for room rather than dropping anything. Function code — blocking, slow, or broken — never
//! runs on the worker's task, so it cannot stall the protocol.
//!
//! What is shared between an executor thread and the worker's task is only these two queues
//! (and the [`Hlc`] the executors of one worker stamp LWW writes with, and the
//! [`Registry`] they read functions from, which never changes once the worker started).
//! Both queues are message passing; [`Mailbox`] — how an executor waits for its answer while
//! other messages arrive — is loom-tested (`tests/loom.rs`).
//!
//! A function sees one calling convention whatever it is written in ([`Ctx`]): its arguments
//! are [`Value`]s (its predecessors' results, or the call's arguments, with references to keys
//! resolved at the call's consistency level), it may `get` and `put` keys through the worker —
//! so at the session's level — and learn its call id, and it returns one value.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
// What `try_recv` returns, std's or loom's (which does not re-export it).
use std::sync::mpsc::TryRecvError;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use squall_proto::NodeId;
use squall_proto::lattice::{LatticeValue, Lww, Stamp, WriterId};
use squall_proto::session::{CallId, Level, Write, WriteError};
use squall_proto::worker::{ExecMsg, SendError, SystemMsg};

use crate::client::Hlc;
use crate::rpc::CallError;
use crate::runtime::LocalCall;
use crate::sync::mpsc;
use crate::wasm::Wasm;

/// A function's argument or result.
///
/// On the wire (between executors, and from clients) a value is its postcard encoding; in
/// the KVS it is stored as LWW bytes: an integer as its decimal text (so `squall kv get` and
/// `redis-cli` show `42`), text as UTF-8, bytes as they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Nothing: a key without a value, or a function with nothing to say.
    Nil,
    /// A signed 64-bit integer.
    Int(i64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Bytes(Bytes),
    /// A reference to a key (only in a call's arguments): the worker replaces it by the key's
    /// value as the call's session reads it.
    Key(String),
}

/// Why bytes are not a [`Value`].
#[derive(Debug, thiserror::Error)]
#[error("not a function value: {0}")]
pub struct ValueError(#[from] postcard::Error);

impl Value {
    /// Parses a command-line argument: an integer (`42`, `-7`) is an [`Value::Int`], `@key`
    /// is a reference to `key`, anything else is text.
    pub fn parse_arg(text: &str) -> Self {
        if let Ok(n) = text.parse::<i64>() {
            return Value::Int(n);
        }
        match text.strip_prefix('@') {
            Some(key) if !key.is_empty() => Value::Key(key.to_owned()),
            _ => Value::Text(text.to_owned()),
        }
    }

    /// The wire encoding.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("a value always encodes"))
    }

    /// Decodes the wire encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        Ok(postcard::from_bytes(bytes)?)
    }

    /// The value a key holds, as a function reads it: LWW bytes that are a decimal integer
    /// read as [`Value::Int`], other UTF-8 as text, the rest as bytes; a causal value with
    /// concurrent siblings reads as the largest integer among them if all are integers, else
    /// as its first sibling; a missing key as [`Value::Nil`]. Other lattice types read as their
    /// integer (max, min, pn-counter; a counter beyond `i64` as text) or first element (set,
    /// priority).
    pub fn from_stored(value: &Option<LatticeValue>) -> Self {
        let Some(value) = value else { return Value::Nil };
        let from_bytes = |bytes: &Bytes| match std::str::from_utf8(bytes) {
            Ok(text) => {
                text.parse::<i64>().map_or_else(|_| Value::Text(text.to_owned()), Value::Int)
            }
            Err(_) => Value::Bytes(bytes.clone()),
        };
        let siblings = |values: Vec<&Bytes>| {
            let read: Vec<Value> = values.into_iter().map(from_bytes).collect();
            let ints: Option<Vec<i64>> =
                read.iter().map(|v| if let Value::Int(n) = v { Some(*n) } else { None }).collect();
            match ints.and_then(|ints| ints.into_iter().max()) {
                Some(max) => Value::Int(max),
                None => read.into_iter().next().unwrap_or(Value::Nil),
            }
        };
        match value {
            LatticeValue::Lww(lww) => lww.value().map_or(Value::Nil, from_bytes),
            LatticeValue::SingleKeyCausal(v) => siblings(v.values().collect()),
            LatticeValue::MultiKeyCausal(v) => siblings(v.values().collect()),
            LatticeValue::Max(v) => Value::Int(v.get() as i64),
            LatticeValue::Min(v) => Value::Int(v.get() as i64),
            LatticeValue::Set(set) => set.as_set().iter().next().map_or(Value::Nil, from_bytes),
            LatticeValue::Priority(p) => p.value().map_or(Value::Nil, from_bytes),
            LatticeValue::PnCounter(counter) => {
                let value = counter.value();
                i64::try_from(value).map_or_else(|_| Value::Text(value.to_string()), Value::Int)
            }
        }
    }

    /// The bytes the value is stored as.
    pub fn stored_bytes(&self) -> Bytes {
        match self {
            Value::Nil => Bytes::new(),
            Value::Int(n) => Bytes::from(n.to_string()),
            Value::Text(text) | Value::Key(text) => Bytes::from(text.clone()),
            Value::Bytes(bytes) => bytes.clone(),
        }
    }

    /// The value as an integer, if it is one (text that is a decimal integer counts).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Text(text) => text.parse().ok(),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("(nil)"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Text(text) => f.write_str(text),
            Value::Bytes(bytes) => write!(f, "{}", String::from_utf8_lossy(bytes)),
            Value::Key(key) => write!(f, "@{key}"),
        }
    }
}

/// Why a function failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FnError {
    /// The function's session ended (aborted, or a later attempt finished) while it ran.
    #[error("the call's session ended")]
    Cancelled,
    /// A read was refused.
    #[error("reading {key:?}: {error}")]
    Read {
        /// The key.
        key: String,
        /// Why.
        error: WriteError,
    },
    /// A write failed.
    #[error("writing {key:?}: {error}")]
    Write {
        /// The key.
        key: String,
        /// Why.
        error: WriteError,
    },
    /// A message was not sent.
    #[error("sending to {to:?}: {error}")]
    Send {
        /// The receiving function's label.
        to: String,
        /// Why.
        error: SendError,
    },
    /// An argument is not what the function takes.
    #[error("{0}")]
    BadArgument(String),
    /// The function failed on its own terms (a trap, an overflow, a panic).
    #[error("{0}")]
    Failed(String),
    /// The worker stopped.
    #[error("the worker stopped")]
    Stopped,
}

/// A native function's body.
pub type NativeBody = fn(&mut Ctx, &[Value]) -> Result<Value, FnError>;

/// A function compiled into `squall`.
#[derive(Clone, Copy, Debug)]
pub struct NativeFn {
    /// Its name.
    pub name: &'static str,
    /// What it does, for `squall fn list`.
    pub about: &'static str,
    /// How many arguments it takes.
    pub arity: usize,
    /// Which arguments name keys it reads: a client calling it declares them as the function's
    /// reads, which the levels above `lww` require.
    pub key_args: &'static [usize],
    /// The body.
    pub body: NativeBody,
}

/// The functions an executor can run by name: native ones, and uploaded WebAssembly modules
/// it loads from the KVS.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    native: BTreeMap<&'static str, NativeFn>,
    wasm: Option<WasmSource>,
}

/// Reads the stored module of a function by name (`None`: no such function).
pub type Fetch = Arc<dyn Fn(&str) -> Result<Option<Bytes>, FnError> + Send + Sync>;

/// Where executors find uploaded functions: the engine and module cache, and the KVS.
#[derive(Clone)]
pub struct WasmSource {
    /// The engine and compiled modules.
    pub wasm: Arc<Wasm>,
    /// How to read a stored module.
    pub fetch: Fetch,
}

impl fmt::Debug for WasmSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmSource").field("wasm", &self.wasm).finish_non_exhaustive()
    }
}

impl Registry {
    /// The native functions `squall` ships.
    pub fn builtin() -> Self {
        let mut registry = Self::default();
        for native in BUILTIN {
            registry = registry.with(*native);
        }
        registry
    }

    /// Adds (or replaces) a native function.
    pub fn with(mut self, native: NativeFn) -> Self {
        self.native.insert(native.name, native);
        self
    }

    /// Runs uploaded functions from `source` too.
    pub fn with_wasm(mut self, source: WasmSource) -> Self {
        self.wasm = Some(source);
        self
    }

    /// A native function by name.
    pub fn native(&self, name: &str) -> Option<&NativeFn> {
        self.native.get(name)
    }

    /// Every native function, by name.
    pub fn natives(&self) -> impl Iterator<Item = &NativeFn> {
        self.native.values()
    }
}

fn int_arg(function: &str, args: &[Value], i: usize) -> Result<i64, FnError> {
    args[i].as_int().ok_or_else(|| {
        FnError::BadArgument(format!(
            "argument {} of {function} is not an integer: {}",
            i + 1,
            args[i]
        ))
    })
}

fn key_arg(function: &str, args: &[Value], i: usize) -> Result<String, FnError> {
    match &args[i] {
        Value::Text(key) => Ok(key.clone()),
        other => Err(FnError::BadArgument(format!(
            "argument {} of {function} must be a key name, not {other}",
            i + 1
        ))),
    }
}

fn overflow(function: &str) -> FnError {
    FnError::Failed(format!("{function}: integer overflow"))
}

/// The DAG label's suffix (`store#KEY`), which the function needs: `usage` if there is none.
fn required_suffix(ctx: &Ctx, usage: &str) -> Result<String, FnError> {
    let suffix = ctx.suffix().filter(|suffix| !suffix.is_empty());
    suffix.map(str::to_owned).ok_or_else(|| FnError::BadArgument(usage.into()))
}

/// Reads `key`'s integer (0 if missing), writes it plus `delta`, returns the new value.
fn add_to_key(ctx: &mut Ctx, function: &str, key: &str, delta: i64) -> Result<Value, FnError> {
    let next = ctx.get_int(key)?.checked_add(delta).ok_or_else(|| overflow(function))?;
    ctx.put(key, &Value::Int(next))?;
    Ok(Value::Int(next))
}

/// The native functions `squall` ships.
pub const BUILTIN: &[NativeFn] = &[
    NativeFn {
        name: "echo",
        about: "echo(x) = x",
        arity: 1,
        key_args: &[],
        body: |_, args| Ok(args[0].clone()),
    },
    NativeFn {
        name: "noop",
        about: "noop(x) = nil: does nothing but the reads the DAG declares for it",
        arity: 1,
        key_args: &[],
        body: |_, _| Ok(Value::Nil),
    },
    NativeFn {
        name: "increment",
        about: "increment(n) = n + 1",
        arity: 1,
        key_args: &[],
        body: |_, args| {
            int_arg("increment", args, 0)?
                .checked_add(1)
                .map(Value::Int)
                .ok_or_else(|| overflow("increment"))
        },
    },
    NativeFn {
        name: "square",
        about: "square(n) = n * n",
        arity: 1,
        key_args: &[],
        body: |_, args| {
            let n = int_arg("square", args, 0)?;
            n.checked_mul(n).map(Value::Int).ok_or_else(|| overflow("square"))
        },
    },
    NativeFn {
        name: "add",
        about: "add(a, b) = a + b",
        arity: 2,
        key_args: &[],
        body: |_, args| {
            let (a, b) = (int_arg("add", args, 0)?, int_arg("add", args, 1)?);
            a.checked_add(b).map(Value::Int).ok_or_else(|| overflow("add"))
        },
    },
    NativeFn {
        name: "get",
        about: "get(key) = the key's value (nil if it has none)",
        arity: 1,
        key_args: &[0],
        body: |ctx, args| ctx.get(&key_arg("get", args, 0)?),
    },
    NativeFn {
        name: "put",
        about: "put(key, v): writes v to the key; returns v",
        arity: 2,
        key_args: &[],
        body: |ctx, args| {
            ctx.put(&key_arg("put", args, 0)?, &args[1])?;
            Ok(args[1].clone())
        },
    },
    NativeFn {
        name: "store",
        about: "store#KEY(v): writes v to KEY (named in the DAG: `f -> store#out`); returns v",
        arity: 1,
        key_args: &[],
        body: |ctx, args| {
            let key = required_suffix(ctx, "store needs its key in the DAG: store#KEY")?;
            ctx.put(&key, &args[0])?;
            Ok(args[0].clone())
        },
    },
    NativeFn {
        name: "send",
        about: "send#TO(v): sends v to the DAG's function labelled TO (running or to run); returns v",
        arity: 1,
        key_args: &[],
        body: |ctx, args| {
            let to = required_suffix(ctx, "send needs its receiver in the DAG: send#TO")?;
            ctx.send(&to, &args[0])?;
            Ok(args[0].clone())
        },
    },
    NativeFn {
        name: "recv",
        about: "recv(_): waits for a message from another function of the DAG and returns it",
        arity: 1,
        key_args: &[],
        body: |ctx, _| ctx.recv().map(|(_, value)| value),
    },
    NativeFn {
        name: "rmw",
        about: "rmw(key, d): reads the key's integer (0 if missing), writes it plus d; returns the new value",
        arity: 2,
        key_args: &[0],
        body: |ctx, args| {
            add_to_key(ctx, "rmw", &key_arg("rmw", args, 0)?, int_arg("rmw", args, 1)?)
        },
    },
    NativeFn {
        name: "counter",
        about: "counter(key): adds 1 to the key's integer; returns the new value",
        arity: 1,
        key_args: &[0],
        body: |ctx, args| add_to_key(ctx, "counter", &key_arg("counter", args, 0)?, 1),
    },
];

/// How an executor waits for messages: the next function to run, or the answer to the
/// request the running function is blocked on — while `Invoke`s for later runs arrive
/// (deferred, in order), answers for runs that ended arrive late (dropped), and a `Cancel` may
/// end the running function.
///
/// The answer an executor waits for is usually a few microseconds away (the worker's next
/// step), and the next `Invoke` of a DAG often too: a mailbox made [`Mailbox::polling`] keeps
/// polling for up to its `spin`, yielding the core between polls, before the thread sleeps —
/// waking a sleeping thread (and the idle core under it) costs more than the wait.
#[derive(Debug)]
pub struct Mailbox {
    rx: mpsc::Receiver<ExecMsg>,
    deferred: VecDeque<ExecMsg>,
    spin: std::time::Duration,
}

/// What a running function's wait for an answer came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The answer.
    Got(ExecMsg),
    /// The run was cancelled.
    Cancelled,
    /// The worker is gone.
    Stopped,
}

impl Mailbox {
    /// A mailbox reading `rx` that sleeps as soon as nothing is there.
    pub fn new(rx: mpsc::Receiver<ExecMsg>) -> Self {
        Self::polling(rx, std::time::Duration::ZERO)
    }

    /// A mailbox reading `rx` that polls for up to `spin` before it sleeps.
    pub fn polling(rx: mpsc::Receiver<ExecMsg>, spin: std::time::Duration) -> Self {
        Self { rx, deferred: VecDeque::new(), spin }
    }

    /// The next message, `None` once the worker is gone.
    fn recv(&mut self) -> Option<ExecMsg> {
        if !self.spin.is_zero() {
            let start = std::time::Instant::now();
            let mut polls = 0;
            loop {
                match self.rx.try_recv() {
                    Ok(msg) => return Some(msg),
                    Err(TryRecvError::Disconnected) => return None,
                    Err(TryRecvError::Empty) => {}
                }
                polls += 1;
                if !crate::sync::keep_polling(start, self.spin, polls) {
                    break;
                }
                crate::sync::yield_now();
            }
        }
        self.rx.recv().ok()
    }

    /// The next `Invoke`, in arrival order; `None` once the worker is gone. Other messages
    /// (late answers, cancels of runs that already ended) are dropped.
    pub fn next_invoke(&mut self) -> Option<ExecMsg> {
        if let Some(invoke) = self.deferred.pop_front() {
            return Some(invoke);
        }
        loop {
            match self.recv()? {
                invoke @ ExecMsg::Invoke { .. } => return Some(invoke),
                _ => continue,
            }
        }
    }

    /// Waits for the answer to request `req` of run `call`.
    pub fn answer(&mut self, call: CallId, req: u32) -> Answer {
        loop {
            let Some(msg) = self.recv() else { return Answer::Stopped };
            match &msg {
                ExecMsg::GetOk { call: c, req: r, .. }
                | ExecMsg::PutOk { call: c, req: r, .. }
                | ExecMsg::Sent { call: c, req: r, .. }
                | ExecMsg::Received { call: c, req: r, .. }
                    if *c == call && *r == req =>
                {
                    return Answer::Got(msg);
                }
                ExecMsg::Cancel { call: c } if *c == call => return Answer::Cancelled,
                ExecMsg::Invoke { .. } => self.deferred.push_back(msg),
                _ => {}
            }
        }
    }
}

/// An executor as the worker's runtime sees it: an in-process endpoint that takes one-way
/// messages into the executor's mailbox.
#[derive(Debug)]
pub struct Endpoint {
    id: NodeId,
    tx: std::sync::Mutex<mpsc::Sender<ExecMsg>>,
}

impl LocalCall<SystemMsg> for Endpoint {
    fn id(&self) -> NodeId {
        self.id
    }

    fn call(
        &self,
        _: NodeId,
        _: SystemMsg,
    ) -> futures::future::BoxFuture<'static, Result<SystemMsg, CallError>> {
        Box::pin(async { Err(CallError::NotARequest) })
    }

    fn deliver(&self, _: NodeId, msg: SystemMsg) {
        if let SystemMsg::Exec(msg) = msg {
            // A stopped executor thread drops what it is sent; its worker is stopping too.
            let _ = self.tx.lock().expect("endpoint lock").send(msg);
        }
    }
}

/// How an executor reaches its worker: sends a message from the executor (by id) into the
/// worker's inbox, waiting for room. False if the worker stopped.
pub type ToWorker = Arc<dyn Fn(NodeId, ExecMsg) -> bool + Send + Sync>;

/// Limits every function call of an executor obeys, and how an executor waits.
#[derive(Clone, Copy, Debug)]
pub struct ExecLimits {
    /// The largest encoded result.
    pub max_result_bytes: usize,
    /// How long an executor polls for its next message before it sleeps (see [`Mailbox`]).
    pub spin: std::time::Duration,
}

/// A function's view of its call: arguments came in, reads and writes go through the
/// worker at the session's level.
pub struct Ctx {
    call: CallId,
    /// The DAG node's label (`name` or `name#suffix`).
    label: String,
    /// The largest message the function may send (encoded).
    max_message_bytes: usize,
    level: Level,
    executor: NodeId,
    next_req: u32,
    /// The executor's mailbox, lent to the call while it runs.
    mailbox: Mailbox,
    to_worker: ToWorker,
    clock: Arc<Hlc>,
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx").field("call", &self.call).field("level", &self.level).finish()
    }
}

impl Ctx {
    /// A context outside any worker, for calling a native function directly (a benchmark's
    /// floor): its reads and writes fail as if the worker had stopped.
    pub fn detached() -> Self {
        let (_, rx) = mpsc::channel();
        let session = squall_proto::session::SessionId { scheduler: NodeId(0), seq: 0 };
        Ctx {
            call: (session, 0),
            label: String::new(),
            max_message_bytes: usize::MAX,
            level: Level::Lww,
            executor: NodeId(0),
            next_req: 0,
            mailbox: Mailbox::new(rx),
            to_worker: Arc::new(|_, _| false),
            clock: Arc::new(Hlc::new()),
        }
    }

    /// The call's id: its session and the function's index in the DAG.
    pub fn call_id(&self) -> CallId {
        self.call
    }

    /// The call's consistency level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// What follows `#` in the DAG node's label (`store#out` runs `store` with suffix `out`),
    /// if anything: a constant the DAG gives the function.
    pub fn suffix(&self) -> Option<&str> {
        self.label.split_once('#').map(|(_, suffix)| suffix)
    }

    fn request(&mut self, make: impl FnOnce(u32) -> ExecMsg) -> Result<ExecMsg, FnError> {
        let req = self.next_req;
        self.next_req += 1;
        if !(self.to_worker)(self.executor, make(req)) {
            return Err(FnError::Stopped);
        }
        match self.mailbox.answer(self.call, req) {
            Answer::Got(msg) => Ok(msg),
            Answer::Cancelled => Err(FnError::Cancelled),
            Answer::Stopped => Err(FnError::Stopped),
        }
    }

    /// Reads `key` as the session's level allows (at every level but `lww`, only keys the
    /// function declared).
    pub fn get_raw(&mut self, key: &str) -> Result<Option<LatticeValue>, FnError> {
        let call = self.call;
        let msg = self.request(|req| ExecMsg::Get { call, req, key: key.to_owned() })?;
        match msg {
            ExecMsg::GetOk { value, .. } => {
                value.map_err(|error| FnError::Read { key: key.to_owned(), error })
            }
            _ => unreachable!("Mailbox::answer returns answers only"),
        }
    }

    /// Reads `key` as a [`Value`].
    pub fn get(&mut self, key: &str) -> Result<Value, FnError> {
        let value = self.get_raw(key)?;
        if let Some(LatticeValue::Lww(lww)) = &value
            && let Some(stamp) = lww.stamp()
        {
            // Writes after a read order after it.
            self.clock.observe(stamp.time);
        }
        Ok(Value::from_stored(&value))
    }

    /// Reads `key` as an integer: 0 if it has no value.
    pub fn get_int(&mut self, key: &str) -> Result<i64, FnError> {
        match self.get(key)? {
            Value::Nil => Ok(0),
            value => value.as_int().ok_or_else(|| {
                FnError::BadArgument(format!("key {key:?} holds {value}, not an integer"))
            }),
        }
    }

    /// Sends `value` to the function labelled `to` in this call's DAG, running now or later
    /// in the call: delivered at most once, in order between two functions, kept for a
    /// receiver that has not started yet for a while (`Retry` ticks) and not across a retry
    /// of the call. Returns once the worker has handed it on (not once it is read).
    pub fn send(&mut self, to: &str, value: &Value) -> Result<(), FnError> {
        let bytes = value.encode();
        if bytes.len() > self.max_message_bytes {
            return Err(FnError::BadArgument(format!(
                "a message of {} bytes; the limit is {} (functions.max_arg_bytes)",
                bytes.len(),
                self.max_message_bytes
            )));
        }
        let call = self.call;
        let msg = self.request(|req| ExecMsg::Send { call, req, to: to.to_owned(), bytes })?;
        match msg {
            ExecMsg::Sent { result, .. } => {
                result.map_err(|error| FnError::Send { to: to.to_owned(), error })
            }
            _ => unreachable!("Mailbox::answer returns answers only"),
        }
    }

    /// Waits for the next message to this function — until one comes, or the call's session
    /// ends (its deadline, say) — and returns the sender's label and the value.
    pub fn recv(&mut self) -> Result<(String, Value), FnError> {
        self.receive(true)?.ok_or_else(|| FnError::Failed("no message".into()))
    }

    /// The next message to this function, if one is there now.
    pub fn try_recv(&mut self) -> Result<Option<(String, Value)>, FnError> {
        self.receive(false)
    }

    fn receive(&mut self, wait: bool) -> Result<Option<(String, Value)>, FnError> {
        let call = self.call;
        match self.request(|req| ExecMsg::Recv { call, req, wait })? {
            ExecMsg::Received { message: None, .. } => Ok(None),
            ExecMsg::Received { message: Some((from, bytes)), .. } => {
                let value = Value::decode(&bytes).map_err(|e| {
                    FnError::Failed(format!("a message from {from:?} does not decode: {e}"))
                })?;
                Ok(Some((from, value)))
            }
            _ => unreachable!("Mailbox::answer returns answers only"),
        }
    }

    /// Writes `value` to `key`: an LWW value stamped by the worker's clock at `lww` and `dsrr`,
    /// a causal write (the session layer adds its clock and dependencies) at the causal
    /// levels. Returns once the KVS holds it at the worker's durability.
    pub fn put(&mut self, key: &str, value: &Value) -> Result<(), FnError> {
        let bytes = value.stored_bytes();
        let write = if matches!(self.level, Level::Lww | Level::Dsrr) {
            let stamp = Stamp::new(self.clock.now(), WriterId(self.executor.0));
            Write::Value(LatticeValue::Lww(Lww::new(stamp, bytes)))
        } else {
            Write::Causal(bytes)
        };
        let call = self.call;
        let msg = self.request(|req| ExecMsg::Put { call, req, key: key.to_owned(), write })?;
        match msg {
            ExecMsg::PutOk { result, .. } => {
                result.map_err(|error| FnError::Write { key: key.to_owned(), error })
            }
            _ => unreachable!("Mailbox::answer returns answers only"),
        }
    }
}

/// An executor thread's stack: room for a native function's own recursion and the
/// WebAssembly interpreter's host-call frames (reserved, not committed, until used).
const EXECUTOR_STACK: usize = 8 << 20;

/// The executors of one worker, before they run.
#[derive(Debug)]
pub struct Executors {
    mailboxes: Vec<(NodeId, Mailbox)>,
    registry: Arc<Registry>,
    limits: ExecLimits,
}

impl Executors {
    /// Executors `ids`, running functions of `registry`; returns them and the endpoints the
    /// worker's runtime delivers to ([`crate::runtime::RuntimeSettings::local`]).
    pub fn new(
        ids: &[NodeId],
        registry: Arc<Registry>,
        limits: ExecLimits,
    ) -> (Self, Vec<Arc<dyn LocalCall<SystemMsg>>>) {
        let mut mailboxes = Vec::new();
        let mut endpoints: Vec<Arc<dyn LocalCall<SystemMsg>>> = Vec::new();
        for &id in ids {
            let (tx, rx) = mpsc::channel();
            mailboxes.push((id, Mailbox::polling(rx, limits.spin)));
            endpoints.push(Arc::new(Endpoint { id, tx: std::sync::Mutex::new(tx) }));
        }
        (Self { mailboxes, registry, limits }, endpoints)
    }

    /// Starts one thread per executor, answering through `to_worker`. Each stops when the
    /// worker's runtime drops its endpoint.
    pub fn start(self, to_worker: ToWorker) -> std::io::Result<()> {
        let clock = Arc::new(Hlc::new());
        for (id, mailbox) in self.mailboxes {
            let (registry, to_worker, clock) =
                (self.registry.clone(), to_worker.clone(), clock.clone());
            let limits = self.limits;
            std::thread::Builder::new()
                .name(format!("executor-{}", id.0 & 0xffff))
                .stack_size(EXECUTOR_STACK)
                .spawn(move || run_executor(id, mailbox, &registry, &to_worker, &clock, limits))?;
        }
        Ok(())
    }
}

fn run_executor(
    id: NodeId,
    mut mailbox: Mailbox,
    registry: &Registry,
    to_worker: &ToWorker,
    clock: &Arc<Hlc>,
    limits: ExecLimits,
) {
    while let Some(ExecMsg::Invoke { call, function, level, args, reads }) = mailbox.next_invoke() {
        let ctx = Ctx {
            call,
            label: function.clone(),
            max_message_bytes: limits.max_result_bytes,
            level,
            executor: id,
            next_req: 0,
            mailbox,
            to_worker: to_worker.clone(),
            clock: clock.clone(),
        };
        let (ctx, result) = run_one(ctx, registry, &function, &args, &reads, limits);
        mailbox = ctx.mailbox;
        let result = match result {
            Err(FnError::Cancelled) => continue,
            Err(FnError::Stopped) => return,
            Ok(output) => Ok(output),
            Err(error) => {
                tracing::debug!(function, ?call, %error, "function failed");
                Err(error.to_string())
            }
        };
        if !to_worker(id, ExecMsg::Done { call, result }) {
            return;
        }
    }
}

/// Runs one call: resolves key references among the arguments, finds the function (native,
/// or a stored module), runs it (a panic or a trap is the function's failure, not the
/// executor's), and checks the result's size. Returns the context, which holds the mailbox.
fn run_one(
    mut ctx: Ctx,
    registry: &Registry,
    function: &str,
    args: &[Bytes],
    reads: &BTreeMap<String, Option<LatticeValue>>,
    limits: ExecLimits,
) -> (Ctx, Result<Bytes, FnError>) {
    let args = args
        .iter()
        .map(|bytes| match Value::decode(bytes) {
            Ok(Value::Key(key)) => match reads.get(&key) {
                Some(value) => Ok(Value::from_stored(value)),
                None => Err(FnError::BadArgument(format!("key {key:?} was not read for the call"))),
            },
            Ok(value) => Ok(value),
            Err(e) => Err(FnError::BadArgument(e.to_string())),
        })
        .collect::<Result<Vec<Value>, FnError>>();
    let args = match args {
        Ok(args) => args,
        Err(e) => return (ctx, Err(e)),
    };
    let name = crate::faas::function_of(function);
    let (ctx, output) = match registry.native(name) {
        Some(native) => {
            let output = run_native(&mut ctx, native, &args);
            (ctx, output)
        }
        None => match &registry.wasm {
            Some(source) => match source.wasm.module(name, || (source.fetch)(name)) {
                Ok(Some(module)) => source.wasm.run(&module, ctx, args),
                Ok(None) => (ctx, Err(FnError::Failed(format!("unknown function {name:?}")))),
                Err(e) => (ctx, Err(e)),
            },
            None => (ctx, Err(FnError::Failed(format!("unknown function {name:?}")))),
        },
    };
    let bytes = output.map(|value| value.encode()).and_then(|bytes| {
        if bytes.len() > limits.max_result_bytes {
            return Err(FnError::Failed(format!(
                "{name}'s result is {} bytes; the limit is {} (functions.max_arg_bytes)",
                bytes.len(),
                limits.max_result_bytes
            )));
        }
        Ok(bytes)
    });
    (ctx, bytes)
}

fn run_native(ctx: &mut Ctx, native: &NativeFn, args: &[Value]) -> Result<Value, FnError> {
    if args.len() != native.arity {
        return Err(FnError::BadArgument(format!(
            "{} takes {} argument{}, got {}",
            native.name,
            native.arity,
            if native.arity == 1 { "" } else { "s" },
            args.len()
        )));
    }
    std::panic::catch_unwind(AssertUnwindSafe(|| (native.body)(ctx, args))).unwrap_or_else(
        |panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(FnError::Failed(format!("{} panicked: {what}", native.name)))
        },
    )
}

#[cfg(all(test, not(squall_loom)))]
mod tests {
    use super::*;

    #[test]
    fn command_line_arguments_parse_as_integers_references_or_text() {
        assert_eq!(Value::parse_arg("41"), Value::Int(41));
        assert_eq!(Value::parse_arg("-7"), Value::Int(-7));
        assert_eq!(Value::parse_arg("@x"), Value::Key("x".into()));
        assert_eq!(Value::parse_arg("@"), Value::Text("@".into()));
        assert_eq!(Value::parse_arg("4x"), Value::Text("4x".into()));
        let v = Value::Bytes(Bytes::from_static(b"\xff"));
        assert_eq!(Value::decode(&v.encode()).expect("round trip"), v);
        assert!(Value::decode(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn stored_values_read_back_as_what_was_written() {
        let lww = |b: &'static [u8]| {
            Some(LatticeValue::Lww(Lww::new(Stamp::new(1, WriterId(1)), Bytes::from_static(b))))
        };
        assert_eq!(Value::from_stored(&lww(b"42")), Value::Int(42));
        assert_eq!(Value::from_stored(&lww(b"hi")), Value::Text("hi".into()));
        assert_eq!(Value::from_stored(&None), Value::Nil);
        assert_eq!(Value::Int(-3).stored_bytes(), Bytes::from_static(b"-3"));
    }
}
