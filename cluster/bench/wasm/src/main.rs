//! wasmtime against wasmi for Squall's executors: what a function call costs. The function is
//! `square(increment(x))`, once computed in the module and once through a host function (the
//! shape of a KVS `get`/`put` host call). Fuel metering is on in both (a per-call time limit
//! needs it). Figures: compiling a module, a fresh instance per call (isolation between calls),
//! a call on a live instance; printed with wasmtime ÷ wasmi ratios.

use std::time::Instant;

const WAT: &str = r#"
(module
  (import "env" "increment" (func $inc (param i64) (result i64)))
  (func (export "compose") (param i64) (result i64)
    local.get 0 i64.const 1 i64.add local.tee 0 local.get 0 i64.mul)
  (func (export "compose_host") (param i64) (result i64)
    local.get 0 call $inc local.tee 0 local.get 0 i64.mul))
"#;
const COMPILES: u32 = 50;
const INSTANCES: u32 = 5_000;
const CALLS: u32 = 200_000;
const FUEL: u64 = 1_000_000;

/// Nanoseconds per: compile, instantiate, call, host call.
type Figures = [f64; 4];

fn per(start: Instant, n: u32) -> f64 {
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

#[cfg(feature = "wasmi")]
fn run_wasmi(wasm: &[u8]) -> Figures {
    use wasmi::{Config, Engine, Linker, Module, Store};
    let mut config = Config::default();
    config.consume_fuel(true);
    let engine = Engine::new(&config);
    let t = Instant::now();
    for _ in 0..COMPILES {
        Module::new(&engine, wasm).unwrap();
    }
    let compile = per(t, COMPILES);
    let module = Module::new(&engine, wasm).unwrap();
    let mut linker = Linker::<()>::new(&engine);
    linker.func_wrap("env", "increment", |x: i64| x + 1).unwrap();
    let t = Instant::now();
    let mut sum = 0;
    for i in 0..INSTANCES {
        let mut store = Store::new(&engine, ());
        store.set_fuel(FUEL).unwrap();
        let instance = linker.instantiate_and_start(&mut store, &module).unwrap();
        let f = instance.get_typed_func::<i64, i64>(&store, "compose").unwrap();
        sum += f.call(&mut store, i64::from(i)).unwrap();
    }
    let instantiate = per(t, INSTANCES);
    let mut store = Store::new(&engine, ());
    let instance = linker.instantiate_and_start(&mut store, &module).unwrap();
    let f = instance.get_typed_func::<i64, i64>(&store, "compose").unwrap();
    let h = instance.get_typed_func::<i64, i64>(&store, "compose_host").unwrap();
    let t = Instant::now();
    for i in 0..CALLS {
        store.set_fuel(FUEL).unwrap();
        sum += f.call(&mut store, i64::from(i)).unwrap();
    }
    let call = per(t, CALLS);
    let t = Instant::now();
    for i in 0..CALLS {
        store.set_fuel(FUEL).unwrap();
        sum += h.call(&mut store, i64::from(i)).unwrap();
    }
    let host = per(t, CALLS);
    std::hint::black_box(sum);
    [compile, instantiate, call, host]
}

#[cfg(feature = "wasmtime")]
fn run_wasmtime(wasm: &[u8]) -> Figures {
    use wasmtime::{Config, Engine, Linker, Module, Store};
    let mut config = Config::new();
    config.consume_fuel(true);
    let engine = Engine::new(&config).unwrap();
    let t = Instant::now();
    for _ in 0..COMPILES {
        Module::new(&engine, wasm).unwrap();
    }
    let compile = per(t, COMPILES);
    let module = Module::new(&engine, wasm).unwrap();
    let mut linker = Linker::<()>::new(&engine);
    linker.func_wrap("env", "increment", |x: i64| x + 1).unwrap();
    let pre = linker.instantiate_pre(&module).unwrap();
    let t = Instant::now();
    let mut sum = 0;
    for i in 0..INSTANCES {
        let mut store = Store::new(&engine, ());
        store.set_fuel(FUEL).unwrap();
        let instance = pre.instantiate(&mut store).unwrap();
        let f = instance.get_typed_func::<i64, i64>(&mut store, "compose").unwrap();
        sum += f.call(&mut store, i64::from(i)).unwrap();
    }
    let instantiate = per(t, INSTANCES);
    let mut store = Store::new(&engine, ());
    let instance = pre.instantiate(&mut store).unwrap();
    let f = instance.get_typed_func::<i64, i64>(&mut store, "compose").unwrap();
    let h = instance.get_typed_func::<i64, i64>(&mut store, "compose_host").unwrap();
    let t = Instant::now();
    for i in 0..CALLS {
        store.set_fuel(FUEL).unwrap();
        sum += f.call(&mut store, i64::from(i)).unwrap();
    }
    let call = per(t, CALLS);
    let t = Instant::now();
    for i in 0..CALLS {
        store.set_fuel(FUEL).unwrap();
        sum += h.call(&mut store, i64::from(i)).unwrap();
    }
    let host = per(t, CALLS);
    std::hint::black_box(sum);
    [compile, instantiate, call, host]
}

fn show(engine: &str, f: Figures) {
    println!(
        "{engine:>8}: compile {:.0} µs, fresh instance + call {:.2} µs, call {:.0} ns, call through a host function {:.0} ns",
        f[0] / 1e3,
        f[1] / 1e3,
        f[2],
        f[3]
    );
}

fn main() {
    let wasm = wat::parse_str(WAT).expect("valid text");
    // The floor: the same composition as a Rust call.
    let t = Instant::now();
    let mut sum = 0_i64;
    for i in 0..CALLS {
        let x = std::hint::black_box(i64::from(i)) + 1;
        sum += x * x;
    }
    std::hint::black_box(sum);
    println!("    rust: call {:.1} ns", per(t, CALLS));
    #[cfg(feature = "wasmi")]
    let wasmi = run_wasmi(&wasm);
    #[cfg(feature = "wasmi")]
    show("wasmi", wasmi);
    #[cfg(feature = "wasmtime")]
    let wasmtime = run_wasmtime(&wasm);
    #[cfg(feature = "wasmtime")]
    show("wasmtime", wasmtime);
    #[cfg(all(feature = "wasmi", feature = "wasmtime"))]
    println!(
        "wasmtime / wasmi: compile {:.2}x, fresh instance + call {:.2}x, call {:.2}x, host call {:.2}x (time; below 1 = wasmtime faster)",
        wasmtime[0] / wasmi[0],
        wasmtime[1] / wasmi[1],
        wasmtime[2] / wasmi[2],
        wasmtime[3] / wasmi[3]
    );
    let _ = wasm;
}
