//! The functions client library: register DAGs, call functions and DAGs at a consistency
//! level.
//!
//! A call is one request to the scheduler ([`SessionMsg::Call`]), answered once the DAG's
//! sink finished (or every attempt failed). Everything else — placing functions on workers,
//! reading at the level, passing results executor to executor, retrying an execution whose
//! worker died, recording one result per request — is the scheduler's and the workers' state
//! machines. What this module adds: DAGs kept in the KVS by name (as Cloudburst keeps them in
//! Anna), the keys a call's sources read (from native functions' key arguments and `@key`
//! references), size checks before anything is sent, and typed errors.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use squall_proto::NodeId;
use squall_proto::lattice::{LatticeValue, SetUnion};
use squall_proto::session::{Dag, DagError, Function, Level, Outcome, SessionMsg};
use squall_proto::worker::SystemMsg;
use squall_proto::{Refusal, base::ReqId};
use tokio::sync::Mutex;

use crate::client::{KvClient, KvError};
use crate::config::{CLIENT_ID_BASE, ClusterConfig};
use crate::exec::{Registry, Value};
use crate::rpc::{CallError, SquallClient};
use crate::sync::{AtomicU64, Ordering};

/// The key under which a DAG named `name` is kept.
pub fn dag_key(name: &str) -> String {
    format!("squall/dag/{name}")
}

/// The key of the set of registered DAG names.
pub const DAG_INDEX: &str = "squall/dags";

/// The key under which the module of an uploaded function `name` is kept.
pub fn fn_key(name: &str) -> String {
    format!("squall/fn/{name}")
}

/// The key of the set of uploaded function names.
pub const FN_INDEX: &str = "squall/fns";

/// Why a function or DAG call, or a registration, failed.
#[derive(Debug, thiserror::Error)]
pub enum FaasError {
    /// The configuration has no scheduler.
    #[error("the configuration has no [scheduler]: this cluster runs no functions")]
    NoScheduler,
    /// No function of that name is built in or registered.
    #[error("unknown function {0:?} (see `squall fn list`)")]
    UnknownFunction(String),
    /// No DAG of that name is registered.
    #[error("unknown DAG {0:?} (see `squall fn list`)")]
    UnknownDag(String),
    /// The module cannot be registered.
    #[error(transparent)]
    Module(#[from] crate::wasm::ModuleError),
    /// The name is a built-in function's.
    #[error("{0:?} is a built-in function; pick another name")]
    Builtin(String),
    /// The DAG is not valid.
    #[error("invalid DAG: {0}")]
    Dag(#[from] DagError),
    /// The DAG's description does not parse.
    #[error("invalid DAG description: {0}")]
    Spec(String),
    /// The arguments do not fit the function.
    #[error("{0}")]
    BadArguments(String),
    /// The arguments are larger than the cluster accepts; nothing was sent.
    #[error("the arguments are {bytes} bytes; the cluster accepts at most {max}")]
    TooLarge {
        /// Their encoded size.
        bytes: usize,
        /// `functions.max_arg_bytes`.
        max: usize,
    },
    /// Every execution of the call failed; the last one's reason.
    #[error("the call failed after {attempts} attempt(s): {reason}")]
    Failed {
        /// Executions started.
        attempts: u32,
        /// Why the last one failed.
        reason: String,
    },
    /// The scheduler refused the call; it did not run.
    #[error("the scheduler refused the call: {0}")]
    Refused(Refusal),
    /// The scheduler refused or did not answer the request.
    #[error("the scheduler did not answer: {0}")]
    Call(#[from] CallError),
    /// No connection to the scheduler could be made; the call was not sent.
    #[error("cannot reach the scheduler at {addr}: {error} (is `squall up` running?)")]
    Unreachable {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        error: String,
    },
    /// The result is not a function value.
    #[error("the result does not decode: {0}")]
    Result(String),
    /// Reading or writing the registry in the KVS failed.
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// One function of a DAG as registered: the function to run, the keys it reads, and the
/// functions (by index) it triggers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DagSpec {
    /// The functions, by index; `name#label` runs function `name` (so one function can
    /// appear twice).
    pub functions: Vec<Function>,
}

impl DagSpec {
    /// Parses the command line's description: each item is a chain `a -> b -> c` or a single
    /// function `a`; a function appears once per distinct name (`square#2` is a second
    /// `square`); `reads` gives `label=key1,key2` for the keys a function reads. Sources are
    /// the functions nothing triggers; exactly one function may trigger nothing.
    pub fn parse(items: &[String], reads: &[String]) -> Result<Self, FaasError> {
        let mut functions: Vec<Function> = Vec::new();
        let index = |label: &str, functions: &mut Vec<Function>| -> Result<u32, FaasError> {
            let label = label.trim();
            if label.is_empty() || label.contains(char::is_whitespace) {
                return Err(FaasError::Spec(format!("{label:?} is not a function name")));
            }
            Ok(match functions.iter().position(|f| f.name == label) {
                Some(i) => i as u32,
                None => {
                    functions.push(Function::new(label, &[], &[]));
                    (functions.len() - 1) as u32
                }
            })
        };
        for item in items {
            let chain: Vec<&str> = item.split("->").collect();
            let mut prev: Option<u32> = None;
            for label in chain {
                let id = index(label, &mut functions)?;
                if let Some(p) = prev
                    && !functions[p as usize].next.contains(&id)
                {
                    functions[p as usize].next.push(id);
                }
                prev = Some(id);
            }
        }
        for read in reads {
            let (label, keys) = read.split_once('=').ok_or_else(|| {
                FaasError::Spec(format!("--reads {read:?}: expected LABEL=KEY,..."))
            })?;
            let function =
                functions.iter_mut().find(|f| f.name == label.trim()).ok_or_else(|| {
                    FaasError::Spec(format!("--reads names {label:?}, not in the DAG"))
                })?;
            function
                .reads
                .extend(keys.split(',').map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()));
        }
        let spec = Self { functions };
        spec.dag()?;
        Ok(spec)
    }

    /// The validated DAG.
    pub fn dag(&self) -> Result<Dag, DagError> {
        Dag::new(self.functions.clone())
    }

    /// A description `squall dag show` prints.
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        for f in &self.functions {
            let next: Vec<&str> =
                f.next.iter().map(|&n| self.functions[n as usize].name.as_str()).collect();
            let reads = if f.reads.is_empty() {
                String::new()
            } else {
                format!("  reads {}", f.reads.join(","))
            };
            match next.is_empty() {
                true => lines.push(format!("{} (sink){reads}", f.name)),
                false => lines.push(format!("{} -> {}{reads}", f.name, next.join(", "))),
            }
        }
        lines.join("\n")
    }
}

/// The function a DAG node labelled `label` runs: the label up to a `#`.
pub fn function_of(label: &str) -> &str {
    label.split_once('#').map_or(label, |(name, _)| name)
}

/// A client of the cluster's functions. One may be shared by many tasks.
#[derive(Debug)]
pub struct FnClient {
    id: NodeId,
    scheduler: SocketAddr,
    max_frame: usize,
    max_args: usize,
    /// How long one call may wait for its answer: every attempt's deadline, and some.
    patience: Duration,
    kv: KvClient,
    registry: Registry,
    wasm: crate::wasm::Wasm,
    connection: Mutex<Option<SquallClient>>,
    next_req: AtomicU64,
}

impl FnClient {
    /// A client of `config`'s scheduler, which knows `registry`'s native functions (for their
    /// key arguments and arity).
    pub fn new(config: &ClusterConfig, registry: Registry) -> Result<Self, FaasError> {
        let scheduler = config.scheduler.as_ref().ok_or(FaasError::NoScheduler)?.rpc;
        let f = &config.functions;
        let execution = Duration::from_millis(f.deadline_ms * u64::from(f.deadline_ticks));
        Ok(Self {
            id: NodeId(CLIENT_ID_BASE | rand::random::<u64>()),
            scheduler,
            max_frame: config.limits.max_frame_bytes,
            max_args: f.max_arg_bytes,
            patience: execution * (f.attempts + 1) + Duration::from_secs(5),
            kv: KvClient::new(config),
            registry,
            wasm: crate::wasm::Wasm::new(crate::wasm::WasmLimits {
                fuel: f.wasm_fuel,
                memory: f.wasm_memory_bytes,
            }),
            connection: Mutex::new(None),
            next_req: AtomicU64::new(1),
        })
    }

    /// The KVS client it keeps the registry with.
    pub fn kv(&self) -> &KvClient {
        &self.kv
    }

    /// Calls function `name` alone with `args` at `level`; `reads` adds keys it reads (a
    /// native function's key arguments are added by themselves).
    pub async fn call_fn(
        &self,
        name: &str,
        args: Vec<Value>,
        level: Level,
        reads: &[String],
    ) -> Result<Value, FaasError> {
        self.check_function(name, Some(args.len())).await?;
        let mut function = Function::new(name, &[], &[]);
        function.reads.extend(reads.iter().cloned());
        self.run(DagSpec { functions: vec![function] }, args, level).await
    }

    /// Calls the registered DAG `name` with `args` (for every source) at `level`.
    pub async fn call_dag(
        &self,
        name: &str,
        args: Vec<Value>,
        level: Level,
    ) -> Result<Value, FaasError> {
        let spec = self.dag(name).await?;
        self.run(spec, args, level).await
    }

    /// Registers DAG `name` (replacing one of that name), after checking every function it
    /// runs exists.
    pub async fn register_dag(&self, name: &str, spec: &DagSpec) -> Result<(), FaasError> {
        spec.dag()?;
        for f in &spec.functions {
            self.check_function(function_of(&f.name), None).await?;
        }
        let bytes = postcard::to_allocvec(spec).expect("a DAG spec encodes");
        self.kv.put(&dag_key(name), self.kv.lww(Bytes::from(bytes))).await?;
        let index = LatticeValue::Set(SetUnion::singleton(Bytes::from(name.to_owned())));
        self.kv.put(DAG_INDEX, index).await?;
        Ok(())
    }

    /// Registers (or replaces) the uploaded function `name`: WebAssembly text or binary,
    /// checked against the function ABI ([`crate::wasm`]) and stored in the KVS, where every
    /// worker loads it from (a replaced module is in use everywhere within
    /// [`crate::wasm::FRESH`]). Returns the stored module's size.
    pub async fn register_fn(&self, name: &str, source: &[u8]) -> Result<usize, FaasError> {
        if self.registry.native(name).is_some() {
            return Err(FaasError::Builtin(name.to_owned()));
        }
        if name.is_empty() || name.contains(['#', '/']) || name.contains(char::is_whitespace) {
            return Err(FaasError::BadArguments(format!(
                "{name:?} is not a function name (no '#', '/' or spaces)"
            )));
        }
        let binary = self.wasm.prepare(source)?;
        let size = binary.len();
        self.kv.put(&fn_key(name), self.kv.lww(binary)).await?;
        let index = LatticeValue::Set(SetUnion::singleton(Bytes::from(name.to_owned())));
        self.kv.put(FN_INDEX, index).await?;
        Ok(size)
    }

    /// The names of the uploaded functions.
    pub async fn functions(&self) -> Result<Vec<String>, FaasError> {
        self.names(FN_INDEX).await
    }

    /// The registered DAG `name`.
    pub async fn dag(&self, name: &str) -> Result<DagSpec, FaasError> {
        match self.kv.get(&dag_key(name)).await? {
            Some(LatticeValue::Lww(lww)) => {
                let bytes = lww.value().ok_or_else(|| FaasError::UnknownDag(name.to_owned()))?;
                postcard::from_bytes(bytes).map_err(|e| {
                    FaasError::Spec(format!("stored DAG {name:?} does not decode: {e}"))
                })
            }
            _ => Err(FaasError::UnknownDag(name.to_owned())),
        }
    }

    /// The names of the registered DAGs.
    pub async fn dags(&self) -> Result<Vec<String>, FaasError> {
        self.names(DAG_INDEX).await
    }

    async fn names(&self, index: &str) -> Result<Vec<String>, FaasError> {
        Ok(match self.kv.get(index).await? {
            Some(LatticeValue::Set(set)) => {
                set.as_set().iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
            }
            _ => Vec::new(),
        })
    }

    /// Checks that function `name` exists (and, for a native one, takes `arity` arguments).
    async fn check_function(&self, name: &str, arity: Option<usize>) -> Result<(), FaasError> {
        match self.registry.native(name) {
            Some(native) => match arity {
                Some(n) if n != native.arity => Err(FaasError::BadArguments(format!(
                    "{name} takes {} argument{}, got {n}",
                    native.arity,
                    if native.arity == 1 { "" } else { "s" }
                ))),
                _ => Ok(()),
            },
            None => match self.kv.get(&fn_key(name)).await? {
                Some(_) => Ok(()),
                None => Err(FaasError::UnknownFunction(name.to_owned())),
            },
        }
    }

    /// Runs `spec` with `args` at `level`: declares what the sources read, sends the call, and
    /// waits for its one answer.
    pub async fn run(
        &self,
        spec: DagSpec,
        args: Vec<Value>,
        level: Level,
    ) -> Result<Value, FaasError> {
        let (dag, args) = self.prepare(spec, args)?;
        let req: ReqId = self.next_req.fetch_add(1, Ordering::Relaxed);
        match self.request(SessionMsg::Call { req, level, dag, args }).await? {
            SessionMsg::Done { outcome: Outcome::Completed { output, .. }, .. } => {
                Value::decode(&output).map_err(|e| FaasError::Result(e.to_string()))
            }
            SessionMsg::Done { outcome: Outcome::Failed { attempts, reason }, .. } => {
                Err(FaasError::Failed { attempts, reason })
            }
            SessionMsg::Refused { refusal, .. } => Err(FaasError::Refused(refusal)),
            other => Err(FaasError::Result(format!("unexpected answer {other:?}"))),
        }
    }

    /// Declares what the sources of `spec` read (their own declared keys, a native
    /// function's key arguments, `@key` references), validates the DAG, and encodes and
    /// size-checks the arguments.
    fn prepare(&self, mut spec: DagSpec, args: Vec<Value>) -> Result<(Dag, Vec<Bytes>), FaasError> {
        let dag = spec.dag()?;
        for source in dag.sources().collect::<Vec<_>>() {
            let function = &mut spec.functions[source as usize];
            let mut reads: BTreeSet<String> = function.reads.iter().cloned().collect();
            if let Some(native) = self.registry.native(function_of(&function.name)) {
                for &i in native.key_args {
                    if let Some(Value::Text(key)) = args.get(i) {
                        reads.insert(key.clone());
                    }
                }
            }
            reads.extend(args.iter().filter_map(|a| match a {
                Value::Key(key) => Some(key.clone()),
                _ => None,
            }));
            function.reads = reads.into_iter().collect();
        }
        let dag = spec.dag()?;
        let args: Vec<Bytes> = args.iter().map(Value::encode).collect();
        let size: usize = args.iter().map(Bytes::len).sum();
        if size > self.max_args {
            return Err(FaasError::TooLarge { bytes: size, max: self.max_args });
        }
        Ok((dag, args))
    }

    /// Submits the registered DAG `name` with `args` at `level` without waiting for it: the
    /// DAG's result is written, as the call's last step, to a fresh key under
    /// `squall/result/`, which is returned at once (the call is accepted and will run once;
    /// `squall kv get KEY` reads its result when it is there). A call that fails writes
    /// nothing there.
    pub async fn submit_dag(
        &self,
        name: &str,
        args: Vec<Value>,
        level: Level,
    ) -> Result<String, FaasError> {
        let mut spec = self.dag(name).await?;
        let key = format!("squall/result/{:016x}", rand::random::<u64>());
        let sink = spec.dag()?.sink();
        let store = spec.functions.len() as u32;
        spec.functions[sink as usize].next.push(store);
        spec.functions.push(Function::new(&format!("store#{key}"), &[], &[]));
        let (dag, args) = self.prepare(spec, args)?;
        let req: ReqId = self.next_req.fetch_add(1, Ordering::Relaxed);
        match self.request(SessionMsg::Submit { req, level, dag, args }).await? {
            SessionMsg::Accepted { .. } => Ok(key),
            SessionMsg::Refused { refusal, .. } => Err(FaasError::Refused(refusal)),
            other => Err(FaasError::Result(format!("unexpected answer {other:?}"))),
        }
    }

    /// Sends one request to the scheduler, again under the same number if the connection
    /// fails before an answer, and returns the answer.
    async fn request(&self, msg: SessionMsg) -> Result<SessionMsg, FaasError> {
        let bytes = crate::rpc::encode(SystemMsg::Session(msg)).expect("a request encodes");
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut sent = false;
        loop {
            match self.send(bytes.clone(), deadline).await {
                Ok(answer) => return Ok(answer),
                // The connection failed before an answer: the scheduler keeps the call (or its
                // result) under this request number, so sending it again is safe.
                Err(Failure::Lost) if tokio::time::Instant::now() < deadline => {
                    sent = true;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(Failure::Lost) => return Err(CallError::Timeout.into()),
                Err(Failure::Unreachable(error)) if !sent => {
                    return Err(FaasError::Unreachable { addr: self.scheduler, error });
                }
                Err(Failure::Unreachable(_)) => return Err(CallError::Timeout.into()),
                Err(Failure::Error(e)) => return Err(e.into()),
            }
        }
    }

    /// One attempt to send the call and hear its answer.
    async fn send(
        &self,
        bytes: Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<SessionMsg, Failure> {
        let client = {
            let mut connection = self.connection.lock().await;
            match &*connection {
                Some(client) => client.clone(),
                None => {
                    let client = crate::runtime::connect(self.scheduler, self.max_frame)
                        .await
                        .map_err(|e| Failure::Unreachable(e.to_string()))?;
                    *connection = Some(client.clone());
                    client
                }
            }
        };
        let mut ctx = tarpc::context::current();
        ctx.deadline = deadline.into_std();
        match client.call(ctx, self.id, bytes).await {
            Ok(Ok(answer)) => crate::rpc::decode(&answer)
                .map_err(|e| Failure::Error(CallError::Malformed(e.to_string()))),
            Ok(Err(error)) => Err(Failure::Error(error)),
            Err(_) => {
                *self.connection.lock().await = None;
                Err(Failure::Lost)
            }
        }
    }
}

/// How one attempt to send a call failed.
enum Failure {
    /// No connection could be made.
    Unreachable(String),
    /// The connection failed or the deadline passed without an answer.
    Lost,
    /// The scheduler's runtime answered with an error.
    Error(CallError),
}
