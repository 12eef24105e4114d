//! `squall bench dag`: what composing functions costs, and what each consistency level buys.
//!
//! Both runs start their own cluster in this process — the configuration's roles on free
//! loopback ports, with a fresh data directory — so they need nothing running and can read
//! the scheduler's recorded results.
//!
//! - **Composition** (the default): `square(increment(x))` as a two-function DAG, of native
//!   functions and of uploaded WebAssembly ones, called closed-loop by one client, beside two
//!   references measured in the same run: the scheduler's RPC `ping` (a loopback round trip
//!   the node answers without touching protocol state) and both functions called in-process
//!   (the floor). Latencies go into HDR histograms (µs, 3 significant figures).
//! - **Anomalies** (`--anomalies`): at each level, concurrent writers and readers of two keys,
//!   recorded and judged by `squall-verify`'s checkers ([`anomalies`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use squall_proto::lattice::LatticeValue;
use squall_proto::session::{Function, Level, Recorded};
use squall_verify::History;
use squall_verify::history::{KeyKind, Level as HLevel, Op, Version};

use crate::config::ClusterConfig;
use crate::exec::{Ctx, Registry, Value};
use crate::faas::{DagSpec, FnClient};
use crate::local::LocalCluster;
use crate::rpc::SquallClient;

/// The knobs of `squall bench dag`.
#[derive(Clone, Debug, clap::Args)]
pub struct DagBenchArgs {
    /// Seconds of measured calls per phase (composition) or per level (anomalies).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Measure the anomalies each consistency level shows instead of the composition's cost.
    #[arg(long)]
    pub anomalies: bool,
    /// Concurrent readers (anomalies).
    #[arg(long, default_value_t = 4)]
    pub readers: usize,
    /// Hide the progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// One measured phase of the composition benchmark.
#[derive(Debug)]
pub struct Phase {
    /// What was measured.
    pub name: &'static str,
    /// Latencies (µs; ns for the in-process floor).
    pub latency: Histogram<u64>,
    /// The unit of `latency`.
    pub unit: &'static str,
    /// Failed calls, and the first failure.
    pub errors: (u64, Option<String>),
    /// The loopback RPC pings measured alongside, one before each call (µs): the round trip
    /// under the same load, so that the ratio does not flatter or penalise the phase for
    /// what its own calls do to the machine (busy cores answer faster than idle ones).
    pub alongside: Option<Histogram<u64>>,
}

impl Phase {
    /// The median in microseconds.
    pub fn median_us(&self) -> f64 {
        let median = self.latency.value_at_quantile(0.5) as f64;
        if self.unit == "ns" { median / 1e3 } else { median }
    }

    /// The median in loopback round trips measured alongside, if they were.
    pub fn round_trips(&self) -> Option<f64> {
        let ping = self.alongside.as_ref()?.value_at_quantile(0.5) as f64;
        Some(self.median_us() / ping.max(1.0))
    }

    /// A line of the report.
    pub fn render(&self) -> String {
        let h = &self.latency;
        let mut line = format!(
            "{:<28} n={:<8} p50 {:>7} {u}  p99 {:>7} {u}  p99.9 {:>7} {u}",
            self.name,
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            u = self.unit
        );
        if let (Some(ping), Some(rts)) = (&self.alongside, self.round_trips()) {
            line.push_str(&format!(
                "  (ping alongside p50 {} µs: {rts:.2} round trips)",
                ping.value_at_quantile(0.5)
            ));
        }
        if self.errors.0 > 0 {
            line.push_str(&format!(
                "  {} errors (first: {})",
                self.errors.0,
                self.errors.1.as_deref().unwrap_or("?")
            ));
        }
        line
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn bar(quiet: bool, message: String) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message(message);
    bar
}

/// A cluster of `config`'s roles on free ports in this process, with a fresh data directory
/// that is removed when it stops.
struct Scratch {
    cluster: LocalCluster,
    config: ClusterConfig,
    dir: std::path::PathBuf,
}

impl Scratch {
    async fn start(config: &ClusterConfig) -> anyhow::Result<Self> {
        Self::start_laid_out(config, true).await
    }

    /// With the scheduler and workers reaching each other in process (`colocated`, as on
    /// `squall up`) or over loopback TCP (as roles on separate hosts would).
    async fn start_laid_out(config: &ClusterConfig, colocated: bool) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.scheduler.is_some(),
            "the configuration has no [scheduler] and [[worker]]s: it runs no functions"
        );
        let dir = std::env::temp_dir().join(format!(
            "squall-bench-dag-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let config = config.on_free_ports(&dir).context("finding free loopback ports")?;
        let registry = Arc::new(Registry::builtin());
        let cluster = if colocated {
            LocalCluster::start_with(&config, registry).await?
        } else {
            LocalCluster::start_apart(&config, registry).await?
        };
        Ok(Self { cluster, config, dir })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.cluster.stop().await?;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

const INCREMENT_WAT: &str = r#"(module
  (import "squall" "arg_int" (func $arg (param i32) (result i64)))
  (func (export "run") (result i64) (i64.add (call $arg (i32.const 0)) (i64.const 1))))"#;
const SQUARE_WAT: &str = r#"(module
  (import "squall" "arg_int" (func $arg (param i32) (result i64)))
  (func (export "run") (result i64) (local $x i64)
    (local.set $x (call $arg (i32.const 0))) (i64.mul (local.get $x) (local.get $x))))"#;

/// The composition benchmark: ping baseline, in-process floor, native and wasm DAGs on a
/// cluster laid out as `squall up` runs it (the scheduler and workers in one process, handing
/// each other messages directly), then native again with the roles talking over loopback TCP
/// as on separate hosts.
pub async fn composition(
    config: &ClusterConfig,
    args: &DagBenchArgs,
) -> anyhow::Result<Vec<Phase>> {
    anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
    let duration = Duration::from_secs_f64(args.duration);
    let registry = Registry::builtin();
    let mut phases = Vec::new();
    let scratch = Scratch::start(config).await?;
    let client = Arc::new(FnClient::new(&scratch.config, registry.clone())?);
    client.register_fn("increment_wasm", INCREMENT_WAT.as_bytes()).await?;
    client.register_fn("square_wasm", SQUARE_WAT.as_bytes()).await?;
    let addr = scratch.config.scheduler.as_ref().expect("checked").rpc;
    let ping = crate::runtime::connect(addr, scratch.config.limits.max_frame_bytes).await?;
    phases.push(
        closed_loop("loopback RPC ping", duration, args.quiet, None, || {
            let ping = ping.clone();
            async move {
                ping.ping(tarpc::context::current()).await.map(|_| ()).map_err(|e| e.to_string())
            }
        })
        .await,
    );
    phases.push(floor(&registry, duration));
    let (native, wasm) = ("increment -> square", "increment_wasm -> square_wasm");
    phases.push(compose(&client, &ping, "square(increment(x)) native", native, args).await?);
    phases.push(compose(&client, &ping, "square(increment(x)) wasm", wasm, args).await?);
    drop(client);
    scratch.stop().await?;

    let scratch = Scratch::start_laid_out(config, false).await?;
    let client = Arc::new(FnClient::new(&scratch.config, registry)?);
    let addr = scratch.config.scheduler.as_ref().expect("checked").rpc;
    let ping = crate::runtime::connect(addr, scratch.config.limits.max_frame_bytes).await?;
    phases.push(compose(&client, &ping, "native, roles over TCP", native, args).await?);
    drop(client);
    scratch.stop().await?;
    Ok(phases)
}

/// Calls the DAG `spec` closed-loop with arguments 0, 1, 2, ..., checking every result is
/// `(x + 1)^2`, with a loopback `ping` of the scheduler before each call
/// ([`Phase::alongside`]).
async fn compose(
    client: &Arc<FnClient>,
    ping: &SquallClient,
    name: &'static str,
    spec: &str,
    args: &DagBenchArgs,
) -> anyhow::Result<Phase> {
    let spec = DagSpec::parse(&[spec.to_owned()], &[])?;
    // A first call loads the modules into the workers (not measured).
    client.run(spec.clone(), vec![Value::Int(1)], Level::Lww).await?;
    let duration = Duration::from_secs_f64(args.duration);
    let mut n = 0i64;
    Ok(closed_loop(name, duration, args.quiet, Some(ping), || {
        let (client, spec, x) = (client.clone(), spec.clone(), n);
        n = (n + 1) % 1_000_000;
        async move {
            match client.run(spec, vec![Value::Int(x)], Level::Lww).await {
                Ok(Value::Int(v)) if v == (x + 1) * (x + 1) => Ok(()),
                Ok(other) => Err(format!("wrong result {other} for {x}")),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await)
}

/// Both functions called in-process, one after the other, as one program would: the floor.
fn floor(registry: &Registry, duration: Duration) -> Phase {
    let increment = registry.native("increment").expect("built in");
    let square = registry.native("square").expect("built in");
    let mut ctx = Ctx::detached();
    let mut latency = histogram();
    let start = Instant::now();
    let mut n = 0i64;
    while start.elapsed() < duration.min(Duration::from_secs(1)) {
        let began = Instant::now();
        let once = (increment.body)(&mut ctx, &[Value::Int(n)])
            .and_then(|v| (square.body)(&mut ctx, &[v]));
        std::hint::black_box(&once);
        latency.saturating_record((began.elapsed().as_nanos() as u64).max(1));
        n += 1;
    }
    Phase { name: "in-process floor", latency, unit: "ns", errors: (0, None), alongside: None }
}

/// Runs `op` back to back for `duration`, timing each; with a `ping`, pings it before each
/// `op` and keeps those round trips too ([`Phase::alongside`]).
async fn closed_loop<F, Fut>(
    name: &'static str,
    duration: Duration,
    quiet: bool,
    ping: Option<&SquallClient>,
    mut op: F,
) -> Phase
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let bar = bar(quiet, name.to_owned());
    let mut latency = histogram();
    let mut alongside = ping.map(|_| histogram());
    let mut errors = (0, None);
    let start = Instant::now();
    while start.elapsed() < duration {
        if let (Some(ping), Some(alongside)) = (ping, &mut alongside) {
            let began = Instant::now();
            if ping.ping(tarpc::context::current()).await.is_ok() {
                alongside.saturating_record((began.elapsed().as_micros() as u64).max(1));
            }
        }
        let began = Instant::now();
        match op().await {
            Ok(()) => latency.saturating_record((began.elapsed().as_micros() as u64).max(1)),
            Err(e) => {
                errors.0 += 1;
                errors.1.get_or_insert(e);
            }
        }
    }
    bar.finish_and_clear();
    Phase { name, latency, unit: "µs", errors, alongside }
}

/// One level's row of the anomaly table.
#[derive(Debug, Clone)]
pub struct LevelRow {
    /// The level.
    pub level: Level,
    /// Reader DAG executions recorded.
    pub calls: usize,
    /// Executions where two functions read one key at different versions.
    pub repeatable_read: usize,
    /// Executions where a function downstream read a key older than an upstream one did.
    pub monotonic: usize,
    /// Executions with a function whose reads of the two keys were not a causal cut.
    pub causal_cut: usize,
    /// Executions whose functions' reads, along the DAG path, were not one causal cut.
    pub session_causal: usize,
    /// Reader call latency (µs).
    pub latency: Histogram<u64>,
    /// Failed calls.
    pub failed: u64,
}

impl LevelRow {
    /// Whether the row shows an anomaly its level rules out.
    pub fn violations(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let rules_out = |level: Level| match level {
            Level::Lww => [false, false, false, false],
            Level::Dsrr => [true, true, false, false],
            Level::SingleKey => [false, true, false, false],
            Level::MultiKey => [false, false, true, false],
            Level::Dsc => [true, true, true, true],
        };
        let [rr, mono, cut, sc] = rules_out(self.level);
        if rr && self.repeatable_read > 0 {
            v.push("repeatable read");
        }
        if mono && self.monotonic > 0 {
            v.push("monotonic reads");
        }
        if cut && self.causal_cut > 0 {
            v.push("causal cut");
        }
        if sc && self.session_causal > 0 {
            v.push("session causal");
        }
        v
    }

    /// A row of the printed table.
    pub fn render(&self) -> String {
        format!(
            "| {:<4} | {:>6} | {:>15} | {:>15} | {:>10} | {:>14} | {:>8} | {:>8} |",
            self.level.name(),
            self.calls,
            self.repeatable_read,
            self.monotonic,
            self.causal_cut,
            self.session_causal,
            self.latency.value_at_quantile(0.5),
            self.latency.value_at_quantile(0.99),
        )
    }

    /// The table's header.
    pub fn header() -> String {
        "| level | calls | repeatable-read | monotonic-reads | causal-cut | session-causal | p50 µs | p99 µs |\n\
         |---|---|---|---|---|---|---|---|"
            .to_owned()
    }
}

/// How often each writer of the anomaly benchmark writes, at most.
const WRITES_PER_SECOND: u32 = 100;

/// The anomaly benchmark. At each level, on keys of its own (`x`, `y`):
/// - a writer loops a DAG `put(x, n)` (declaring a read of `x`), `n` = 1, 2, ..., at most
///   100 times a second;
/// - another loops `put(y, n)` declaring reads of `x` and `y`, so each `y` depends on the `x`
///   its session read (causally: at the causal levels the value's dependencies say so);
/// - `readers` clients loop `noop#1 -> noop#2 -> noop#3`, each function declaring reads of
///   `x` and `y`, spread over both workers (`spread` placement, whatever the configuration
///   says).
///
/// Recorded reads and writes become a [`History`] (a value `n` is version `n`; a write depends
/// on what its session read; a read of concurrent causal siblings counts as the newest), and
/// each reader execution is judged by the checkers of every level. Returns one row per level.
pub async fn anomalies(
    config: &ClusterConfig,
    args: &DagBenchArgs,
) -> anyhow::Result<Vec<LevelRow>> {
    anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
    anyhow::ensure!(args.readers > 0, "--readers must be at least 1");
    // Sessions span both workers: the consistency levels are about reads across caches.
    let mut config = config.clone();
    config.functions.placement = crate::config::PlacementSetting::Spread;
    let scratch = Scratch::start(&config).await?;
    let client = Arc::new(FnClient::new(&scratch.config, Registry::builtin())?);
    let scheduler = scratch.cluster.scheduler.as_ref().expect("checked").handle().clone();
    let mut rows = Vec::new();
    for level in Level::ALL {
        let bar = bar(args.quiet, format!("anomalies at {level}"));
        let (x, y) = (format!("bench-{level}-x"), format!("bench-{level}-y"));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for (key, reads) in [(x.clone(), vec![x.clone()]), (y.clone(), vec![x.clone(), y.clone()])]
        {
            let (client, stop) = (client.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut function = Function::new("put", &[], &[]);
                function.reads = reads;
                let spec = DagSpec { functions: vec![function] };
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let args = vec![Value::Text(key.clone()), Value::Int(n)];
                    let _ = client.run(spec.clone(), args, level).await;
                    // About WRITES_PER_SECOND writes a second: enough to race every reader,
                    // few enough that the history stays cheap to judge.
                    tokio::time::sleep(Duration::from_secs(1) / WRITES_PER_SECOND).await;
                }
            }));
        }
        let reads =
            vec![format!("noop#1={x},{y}"), format!("noop#2={x},{y}"), format!("noop#3={x},{y}")];
        let spec = DagSpec::parse(&["noop#1 -> noop#2 -> noop#3".to_owned()], &reads)?;
        let mut readers = Vec::new();
        for _ in 0..args.readers {
            let (client, stop, spec) = (client.clone(), stop.clone(), spec.clone());
            readers.push(tokio::spawn(async move {
                let (mut latency, mut failed) = (histogram(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    match client.run(spec.clone(), vec![Value::Nil], level).await {
                        Ok(_) => {
                            latency.saturating_record((began.elapsed().as_micros() as u64).max(1))
                        }
                        Err(_) => failed += 1,
                    }
                }
                (latency, failed)
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.await?;
        }
        let (mut latency, mut failed) = (histogram(), 0);
        for reader in readers {
            let (h, f) = reader.await?;
            latency.add(&h).expect("same bounds");
            failed += f;
        }
        let recorded =
            scheduler.inspect(|s| s.recorded().to_vec()).await.context("the scheduler stopped")?;
        let recorded: Vec<Recorded> = recorded.into_iter().filter(|r| r.level == level).collect();
        let mut row = judge(level, &recorded, &x, &y);
        row.latency = latency;
        row.failed = failed;
        bar.finish_and_clear();
        rows.push(row);
    }
    scratch.stop().await?;
    Ok(rows)
}

/// The version a read or written value names: its integer (the newest of concurrent causal
/// siblings); 0 for a key without a value.
fn version(value: &Option<LatticeValue>) -> Version {
    match Value::from_stored(value) {
        Value::Int(n) => n.max(0) as Version,
        _ => 0,
    }
}

/// The writes of one level's run as history operations: a value `n` is version `n`. LWW
/// keys (at `lww` and `dsrr`) are ordered by number — each has one sequential writer — and a
/// write depends on what its session read. Causal keys are ordered as their vector clocks
/// are: a write depends on the newest versions of its key below its clock and, for each of its
/// value's dependencies, on the newest versions of that key the dependency's clock covers.
fn writes(level: Level, recorded: &[Recorded]) -> Vec<Op> {
    let causal = !matches!(level, Level::Lww | Level::Dsrr);
    let mut ops = Vec::new();
    let mut clocks: BTreeMap<String, Vec<(Version, squall_proto::lattice::VectorClock)>> =
        BTreeMap::new();
    if causal {
        for result in recorded {
            for write in &result.writes {
                if let Some(clock) = write.value.as_ref().and_then(squall_proto::session::clock) {
                    clocks
                        .entry(write.key.clone())
                        .or_default()
                        .push((version(&write.value), clock));
                }
            }
        }
    }
    // The newest versions of `key` whose clocks are at or below `bound`, excluding `except`:
    // candidates by decreasing clock size, each kept unless a kept one is above it.
    let newest_below = |key: &str, bound: &squall_proto::lattice::VectorClock, except: Version| {
        let mut below: Vec<&(Version, squall_proto::lattice::VectorClock)> = clocks
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(v, c)| *v != except && c <= bound)
            .collect();
        below.sort_by_key(|(_, c)| std::cmp::Reverse(c.iter().map(|(_, n)| n).sum::<u64>()));
        let mut kept: Vec<&(Version, squall_proto::lattice::VectorClock)> = Vec::new();
        for candidate in below {
            if !kept.iter().any(|(_, d)| candidate.1 <= *d) {
                kept.push(candidate);
            }
        }
        kept.into_iter().map(|(v, _)| (key.to_owned(), *v)).collect::<Vec<_>>()
    };
    for (txn, result) in recorded.iter().enumerate() {
        for write in &result.writes {
            let v = version(&write.value);
            let mut op = Op::write(result.client.0, txn as u64 + 1, HLevel::Lww, &write.key, v);
            op.deps = if causal {
                let own =
                    write.value.as_ref().and_then(squall_proto::session::clock).unwrap_or_default();
                let mut deps = newest_below(&write.key, &own, v);
                for (key, clock) in squall_proto::session::dependencies(&write.value) {
                    deps.extend(newest_below(&key, &clock, 0));
                }
                deps
            } else {
                let reads = result.log.iter().map(|r| (r.key.clone(), version(&r.value)));
                reads.filter(|(_, v)| *v > 0).collect()
            };
            ops.push(op);
        }
    }
    ops
}

/// Builds the history of one level's run and counts each kind of anomaly per reader
/// execution: each execution's reads are judged, as if they had been made at the level each
/// checker judges, against every write of the run.
fn judge(level: Level, recorded: &[Recorded], x: &str, y: &str) -> LevelRow {
    let mut history = History::default();
    if !matches!(level, Level::Lww | Level::Dsrr) {
        history.kinds = [x, y].iter().map(|k| ((*k).to_owned(), KeyKind::Causal)).collect();
    }
    history.ops = writes(level, recorded);
    let base = history.ops.len();
    let readers: Vec<(u64, &Recorded)> = recorded
        .iter()
        .enumerate()
        .filter(|(_, r)| r.writes.is_empty())
        .map(|(i, r)| (i as u64 + 1, r))
        .collect();
    let mut row = LevelRow {
        level,
        calls: readers.len(),
        repeatable_read: 0,
        monotonic: 0,
        causal_cut: 0,
        session_causal: 0,
        latency: histogram(),
        failed: 0,
    };
    // The reader DAG is a chain: noop#1 precedes noop#2 precedes noop#3.
    let labels = ["noop#1", "noop#2", "noop#3"];
    let precedes: BTreeSet<(String, String)> = (0..3)
        .flat_map(|a| (a + 1..3).map(move |b| (labels[a].to_owned(), labels[b].to_owned())))
        .collect();
    type Check = fn(&History) -> squall_verify::check::Verdict;
    let checks: [(HLevel, Check); 4] = [
        (HLevel::Dsrr, squall_verify::check::repeatable_read),
        (HLevel::SingleKey, squall_verify::check::monotonic_reads),
        (HLevel::MultiKey, squall_verify::check::causal_cut),
        (HLevel::Dsc, squall_verify::check::session_causal),
    ];
    for (txn, result) in readers {
        history.precedes.insert(txn, precedes.clone());
        let mut found = [false; 4];
        for (i, (as_level, check)) in checks.iter().enumerate() {
            for read in &result.log {
                let function = labels.get(read.function as usize).copied().unwrap_or("?");
                let op = Op::read(result.client.0, txn, *as_level, &read.key, version(&read.value));
                history.ops.push(op.by(function));
            }
            found[i] = check(&history).is_err();
            history.ops.truncate(base);
        }
        history.precedes.remove(&txn);
        row.repeatable_read += usize::from(found[0]);
        row.monotonic += usize::from(found[1]);
        row.causal_cut += usize::from(found[2]);
        row.session_causal += usize::from(found[3]);
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use squall_proto::NodeId;
    use squall_proto::lattice::{Lww, Stamp, WriterId};
    use squall_proto::session::{Read, SessionId};

    fn lww(n: u64) -> Option<LatticeValue> {
        let stamp = Stamp::new(n, WriterId(7));
        Some(LatticeValue::Lww(Lww::new(stamp, Bytes::from(n.to_string()))))
    }

    fn read(function: u32, key: &str, n: u64) -> Read {
        Read { function, key: key.to_owned(), value: if n == 0 { None } else { lww(n) } }
    }

    fn recorded(log: Vec<Read>, writes: Vec<Read>) -> Recorded {
        let session = SessionId { scheduler: NodeId(100), seq: 1 };
        Recorded {
            client: NodeId(1 << 63),
            req: 1,
            session,
            level: Level::Lww,
            output: Bytes::new(),
            log,
            writes,
        }
    }

    #[test]
    fn judging_counts_the_anomalies_of_each_execution() {
        // x = 1, 2; y = 1 written after reading x = 2 (so y@1 depends on x@2).
        let writers = [
            recorded(vec![], vec![read(0, "x", 1)]),
            recorded(vec![read(0, "x", 1)], vec![read(0, "x", 2)]),
            recorded(vec![read(0, "x", 2)], vec![read(0, "y", 1)]),
        ];
        // A clean execution: every function reads x@2 and y@1.
        let clean = (0..3).flat_map(|f| [read(f, "x", 2), read(f, "y", 1)]).collect();
        // noop#2 reads x older than noop#1 did; noop#3 reads y@1 beside x@1, a broken cut.
        let stale = vec![
            read(0, "x", 2),
            read(0, "y", 0),
            read(1, "x", 1),
            read(1, "y", 0),
            read(2, "x", 1),
            read(2, "y", 1),
        ];
        let mut all = writers.to_vec();
        all.push(recorded(clean, vec![]));
        all.push(recorded(stale, vec![]));
        let row = judge(Level::Lww, &all, "x", "y");
        assert_eq!(row.calls, 2);
        assert_eq!(
            (row.repeatable_read, row.monotonic, row.causal_cut, row.session_causal),
            (1, 1, 1, 1)
        );
        assert_eq!(row.violations(), Vec::<&str>::new(), "lww rules nothing out");
        let dsc = LevelRow { level: Level::Dsc, ..row };
        assert_eq!(dsc.violations().len(), 4);
    }
}
