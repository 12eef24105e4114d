//! WebAssembly functions: uploaded modules run by executors under [wasmi], with a per-call
//! fuel and memory limit, and nothing but the host functions below — no filesystem, no
//! network, no clock. (Why wasmi rather than wasmtime: docs/performance.md, "WebAssembly
//! engine for executors".)
//!
//! # The function ABI
//!
//! A module exports `run: [] -> [i64]` and, if it passes bytes, its `memory`. It may import
//! these functions from module `squall` (any other import is refused when it is registered):
//!
//! | import | type | what it does |
//! |---|---|---|
//! | `arg_count` | `[] -> [i32]` | how many arguments the call has |
//! | `arg_int` | `[i32] -> [i64]` | argument *i* as an integer (traps if it is not one) |
//! | `arg_len` | `[i32] -> [i32]` | the length of argument *i*'s bytes (an integer's decimal text) |
//! | `arg_read` | `[i32 i32] -> []` | copies argument *i*'s bytes to memory at the pointer |
//! | `get_int` | `[i32 i32] -> [i64]` | reads the key named by (pointer, length) as an integer; 0 if it has no value |
//! | `get` | `[i32 i32 i32 i32] -> [i32]` | reads the key (pointer, length) into the buffer (pointer, capacity): returns the value's length (copying at most the capacity), -1 if it has none |
//! | `put_int` | `[i32 i32 i64] -> []` | writes an integer to the key |
//! | `put` | `[i32 i32 i32 i32] -> []` | writes the bytes (pointer, length) to the key |
//! | `result_bytes` | `[i32 i32] -> []` | makes these bytes the call's result (instead of `run`'s integer) |
//! | `send` | `[i32 i32 i32 i32] -> []` | sends the bytes (pointer, length) to the DAG's function labelled (pointer, length) |
//! | `send_int` | `[i32 i32 i64] -> []` | sends an integer to the function labelled (pointer, length) |
//! | `recv` | `[i32 i32] -> [i32]` | waits for a message to this function; copies it into the buffer (pointer, capacity) and returns its length (copying at most the capacity) |
//! | `recv_int` | `[] -> [i64]` | waits for a message and returns it as an integer (traps if it is not one) |
//! | `call_id` | `[] -> [i64]` | the call's session number |
//!
//! Reads and writes go through the worker at the call's consistency level, exactly as a
//! native function's do, and messages as a native function's ([`Ctx::send`], [`Ctx::recv`]);
//! a refused read, write or send traps, and the trap is the call's error.
//! The call's result is `run`'s integer unless it called `result_bytes`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmi::{
    Caller, Config, Engine, Extern, Linker, Module, Store, StoreLimits, StoreLimitsBuilder,
};

use crate::exec::{Ctx, FnError, Value};

/// The imports a module may use: (name, parameters, results) as wasm types.
const IMPORTS: &[&str] = &[
    "arg_count",
    "arg_int",
    "arg_len",
    "arg_read",
    "get_int",
    "get",
    "put_int",
    "put",
    "result_bytes",
    "send",
    "send_int",
    "recv",
    "recv_int",
    "call_id",
];

/// Why a module cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The text is not WebAssembly text.
    #[error("not valid WebAssembly text: {0}")]
    Wat(String),
    /// The bytes are not a valid module.
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    /// It imports something the host does not provide.
    #[error("the module imports {module}.{name}, which functions may not use (allowed: squall.{{{}}})", IMPORTS.join(", "))]
    UnknownImport {
        /// The import's module.
        module: String,
        /// Its name.
        name: String,
    },
    /// It exports no `run` function.
    #[error("the module exports no `run` function (`run: [] -> [i64]`)")]
    NoRun,
}

/// How long a loaded module is trusted before the executor checks the KVS for a newer one.
pub const FRESH: Duration = Duration::from_secs(1);

/// What each call may use.
#[derive(Clone, Copy, Debug)]
pub struct WasmLimits {
    /// Fuel per call (about one unit per instruction).
    pub fuel: u64,
    /// The most linear memory, in bytes.
    pub memory: usize,
}

/// The engine every executor of a process shares, with the modules it compiled, by name.
#[derive(Debug)]
pub struct Wasm {
    engine: Engine,
    limits: WasmLimits,
    modules: Mutex<HashMap<String, Loaded>>,
}

#[derive(Debug, Clone)]
struct Loaded {
    /// The stored bytes it was compiled from (compared to see whether it changed).
    source: Bytes,
    module: Module,
    checked: Instant,
}

impl Wasm {
    /// An engine with fuel metering, calls limited by `limits`.
    pub fn new(limits: WasmLimits) -> Self {
        let mut config = Config::default();
        config.consume_fuel(true);
        Self { engine: Engine::new(&config), limits, modules: Mutex::default() }
    }

    /// Compiles text (`.wat`) or binary WebAssembly and checks it against the ABI; returns
    /// the binary to store.
    pub fn prepare(&self, source: &[u8]) -> Result<Bytes, ModuleError> {
        let binary = if source.starts_with(b"\0asm") {
            source.to_vec()
        } else {
            wat::parse_bytes(source).map_err(|e| ModuleError::Wat(e.to_string()))?.into_owned()
        };
        self.compile(&binary)?;
        Ok(Bytes::from(binary))
    }

    fn compile(&self, binary: &[u8]) -> Result<Module, ModuleError> {
        let module =
            Module::new(&self.engine, binary).map_err(|e| ModuleError::Invalid(e.to_string()))?;
        for import in module.imports() {
            if import.module() != "squall" || !IMPORTS.contains(&import.name()) {
                return Err(ModuleError::UnknownImport {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                });
            }
        }
        if !module.exports().any(|e| e.name() == "run") {
            return Err(ModuleError::NoRun);
        }
        Ok(module)
    }

    /// The module of function `name`, compiled from `fetch()`'s bytes when it is not loaded
    /// or was checked more than [`FRESH`] ago; `None` if there is no such function.
    pub fn module(
        &self,
        name: &str,
        fetch: impl FnOnce() -> Result<Option<Bytes>, FnError>,
    ) -> Result<Option<Module>, FnError> {
        let cached = self.modules.lock().expect("module cache lock").get(name).cloned();
        if let Some(loaded) = &cached
            && loaded.checked.elapsed() < FRESH
        {
            return Ok(Some(loaded.module.clone()));
        }
        let Some(source) = fetch()? else {
            self.modules.lock().expect("module cache lock").remove(name);
            return Ok(None);
        };
        let module = match cached {
            Some(loaded) if loaded.source == source => loaded.module,
            _ => self
                .compile(&source)
                .map_err(|e| FnError::Failed(format!("stored module {name:?}: {e}")))?,
        };
        let loaded = Loaded { source, module: module.clone(), checked: Instant::now() };
        self.modules.lock().expect("module cache lock").insert(name.to_owned(), loaded);
        Ok(Some(module))
    }

    /// Runs `module`'s `run` with `args`, its reads and writes going through `ctx`. Returns
    /// the context (the executor's mailbox is in it) with the outcome.
    pub fn run(
        &self,
        module: &Module,
        ctx: Ctx,
        args: Vec<Value>,
    ) -> (Ctx, Result<Value, FnError>) {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory)
            .trap_on_grow_failure(true)
            .build();
        let host = Host { ctx, args, result: None, error: None, limits };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|host| &mut host.limits);
        let outcome = self.call(module, &mut store);
        let host = store.into_data();
        let outcome = match (outcome, host.error) {
            // A refused read or write trapped the module: its error is the call's.
            (_, Some(error)) => Err(error),
            (Ok(n), None) => Ok(host.result.unwrap_or(Value::Int(n))),
            (Err(e), None) => Err(FnError::Failed(format!("trapped: {e}"))),
        };
        (host.ctx, outcome)
    }

    fn call(&self, module: &Module, store: &mut Store<Host>) -> Result<i64, wasmi::Error> {
        store.set_fuel(self.limits.fuel)?;
        let linker = linker(&self.engine)?;
        let instance = linker.instantiate_and_start(&mut *store, module)?;
        let run = instance.get_typed_func::<(), i64>(&*store, "run")?;
        run.call(&mut *store, ())
    }
}

/// What a running module's host functions reach.
struct Host {
    ctx: Ctx,
    args: Vec<Value>,
    result: Option<Value>,
    /// The error a refused read or write trapped with.
    error: Option<FnError>,
    limits: StoreLimits,
}

fn trap(host: &mut Host, error: FnError) -> wasmi::Error {
    let message = error.to_string();
    host.error = Some(error);
    wasmi::Error::new(message)
}

fn memory(caller: &Caller<'_, Host>) -> Result<wasmi::Memory, wasmi::Error> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| wasmi::Error::new("the module passes bytes but exports no memory"))
}

fn read(caller: &Caller<'_, Host>, ptr: i32, len: i32) -> Result<Vec<u8>, wasmi::Error> {
    let mut buf = vec![0; usize::try_from(len).map_err(|_| wasmi::Error::new("negative length"))?];
    let offset = usize::try_from(ptr).map_err(|_| wasmi::Error::new("negative pointer"))?;
    memory(caller)?.read(caller, offset, &mut buf).map_err(|e| wasmi::Error::new(e.to_string()))?;
    Ok(buf)
}

fn write(caller: &mut Caller<'_, Host>, ptr: i32, bytes: &[u8]) -> Result<(), wasmi::Error> {
    let offset = usize::try_from(ptr).map_err(|_| wasmi::Error::new("negative pointer"))?;
    let memory = memory(caller)?;
    memory.write(caller, offset, bytes).map_err(|e| wasmi::Error::new(e.to_string()))
}

fn key(caller: &Caller<'_, Host>, ptr: i32, len: i32) -> Result<String, wasmi::Error> {
    String::from_utf8(read(caller, ptr, len)?).map_err(|_| wasmi::Error::new("a key must be UTF-8"))
}

fn arg(host: &Host, i: i32) -> Result<&Value, wasmi::Error> {
    usize::try_from(i)
        .ok()
        .and_then(|i| host.args.get(i))
        .ok_or_else(|| wasmi::Error::new(format!("no argument {i} ({} given)", host.args.len())))
}

/// The host functions of the ABI.
fn linker(engine: &Engine) -> Result<Linker<Host>, wasmi::Error> {
    let mut linker = Linker::<Host>::new(engine);
    linker.func_wrap("squall", "arg_count", |caller: Caller<'_, Host>| {
        caller.data().args.len() as i32
    })?;
    linker.func_wrap("squall", "arg_int", |caller: Caller<'_, Host>, i: i32| {
        let value = arg(caller.data(), i)?;
        value
            .as_int()
            .ok_or_else(|| wasmi::Error::new(format!("argument {i} is not an integer: {value}")))
    })?;
    linker.func_wrap("squall", "arg_len", |caller: Caller<'_, Host>, i: i32| {
        Ok::<i32, wasmi::Error>(arg(caller.data(), i)?.stored_bytes().len() as i32)
    })?;
    linker.func_wrap("squall", "arg_read", |mut caller: Caller<'_, Host>, i: i32, ptr: i32| {
        let bytes = arg(caller.data(), i)?.stored_bytes();
        write(&mut caller, ptr, &bytes)
    })?;
    linker.func_wrap("squall", "get_int", |mut caller: Caller<'_, Host>, ptr: i32, len: i32| {
        let key = key(&caller, ptr, len)?;
        let host = caller.data_mut();
        host.ctx.get_int(&key).map_err(|e| trap(host, e))
    })?;
    linker.func_wrap(
        "squall",
        "get",
        |mut caller: Caller<'_, Host>, ptr: i32, len: i32, buf: i32, cap: i32| {
            let key = key(&caller, ptr, len)?;
            let host = caller.data_mut();
            let value = host.ctx.get(&key).map_err(|e| trap(host, e))?;
            if value == Value::Nil {
                return Ok(-1);
            }
            let bytes = value.stored_bytes();
            let n = bytes.len().min(usize::try_from(cap).unwrap_or(0));
            write(&mut caller, buf, &bytes[..n])?;
            Ok(bytes.len() as i32)
        },
    )?;
    linker.func_wrap(
        "squall",
        "put_int",
        |mut caller: Caller<'_, Host>, ptr: i32, len: i32, v: i64| {
            let key = key(&caller, ptr, len)?;
            let host = caller.data_mut();
            host.ctx.put(&key, &Value::Int(v)).map_err(|e| trap(host, e))
        },
    )?;
    linker.func_wrap(
        "squall",
        "put",
        |mut caller: Caller<'_, Host>, ptr: i32, len: i32, vptr: i32, vlen: i32| {
            let key = key(&caller, ptr, len)?;
            let value = Value::Bytes(Bytes::from(read(&caller, vptr, vlen)?));
            let host = caller.data_mut();
            host.ctx.put(&key, &value).map_err(|e| trap(host, e))
        },
    )?;
    linker.func_wrap(
        "squall",
        "result_bytes",
        |mut caller: Caller<'_, Host>, ptr: i32, len: i32| {
            let bytes = read(&caller, ptr, len)?;
            let value = match String::from_utf8(bytes) {
                Ok(text) => Value::Text(text),
                Err(e) => Value::Bytes(Bytes::from(e.into_bytes())),
            };
            caller.data_mut().result = Some(value);
            Ok::<(), wasmi::Error>(())
        },
    )?;
    linker.func_wrap(
        "squall",
        "send",
        |mut caller: Caller<'_, Host>, to_ptr: i32, to_len: i32, ptr: i32, len: i32| {
            let to = key(&caller, to_ptr, to_len)?;
            let value = Value::Bytes(Bytes::from(read(&caller, ptr, len)?));
            let host = caller.data_mut();
            host.ctx.send(&to, &value).map_err(|e| trap(host, e))
        },
    )?;
    linker.func_wrap(
        "squall",
        "send_int",
        |mut caller: Caller<'_, Host>, to_ptr: i32, to_len: i32, v: i64| {
            let to = key(&caller, to_ptr, to_len)?;
            let host = caller.data_mut();
            host.ctx.send(&to, &Value::Int(v)).map_err(|e| trap(host, e))
        },
    )?;
    linker.func_wrap("squall", "recv", |mut caller: Caller<'_, Host>, buf: i32, cap: i32| {
        let host = caller.data_mut();
        let (_, value) = host.ctx.recv().map_err(|e| trap(host, e))?;
        let bytes = value.stored_bytes();
        let n = bytes.len().min(usize::try_from(cap).unwrap_or(0));
        write(&mut caller, buf, &bytes[..n])?;
        Ok(bytes.len() as i32)
    })?;
    linker.func_wrap("squall", "recv_int", |mut caller: Caller<'_, Host>| {
        let host = caller.data_mut();
        let (from, value) = host.ctx.recv().map_err(|e| trap(host, e))?;
        value.as_int().ok_or_else(|| {
            let error =
                FnError::BadArgument(format!("a message from {from:?} is {value}, not an integer"));
            trap(caller.data_mut(), error)
        })
    })?;
    linker.func_wrap("squall", "call_id", |caller: Caller<'_, Host>| {
        caller.data().ctx.call_id().0.seq as i64
    })?;
    Ok(linker)
}

/// The example module of docs/faas.md (`docs/examples/inc_sq.wat`): `inc_sq(x) = (x + 1)²`.
pub const EXAMPLE_WAT: &str = include_str!("../../docs/examples/inc_sq.wat");

/// Shared between the executors of one process.
pub type SharedWasm = Arc<Wasm>;
