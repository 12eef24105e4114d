//! `squall bench kv`: closed-loop load against a running cluster, with an RPC-floor baseline.
//!
//! `clients` tasks each run one operation at a time for the duration (reads with probability
//! `read_ratio`, otherwise LWW writes of `value_size` bytes) over keys drawn uniformly or from a
//! Zipf distribution. Latencies go into HDR histograms (microseconds, 3 significant figures).
//! Before it, unless `--no-baseline`, the same clients call `ping` — an RPC the node answers
//! without touching protocol state — for the same time: the ratio of the two throughputs says
//! how close the KVS path comes to the transport's floor on this machine, in this run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use squall_proto::NodeId;
use squall_proto::kvs::Durability;

use crate::client::KvClient;
use crate::config::{ClusterConfig, WriteDurability};

/// The knobs of `squall bench kv`.
#[derive(Clone, Debug, clap::Args)]
pub struct KvBenchArgs {
    /// Concurrent closed-loop clients (each with one operation in flight).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// TCP connections per node, shared by the clients.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Draw keys from a Zipf distribution with this exponent (e.g. 0.99) instead of uniformly.
    #[arg(long)]
    pub zipf: Option<f64>,
    /// Bytes per written value.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Fraction of operations that are reads, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Seconds of measured load (per phase).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Write durability (default: the configuration's).
    #[arg(long, value_enum)]
    pub durability: Option<WriteDurability>,
    /// Skip the ping baseline phase.
    #[arg(long)]
    pub no_baseline: bool,
    /// Send only to these node ids, which answer or redirect (default: every node, routed by
    /// key).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<u64>,
    /// Hide the progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// One phase's results.
#[derive(Debug)]
pub struct Phase {
    /// The phase's name.
    pub name: &'static str,
    /// Completed operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Wall time.
    pub elapsed: Duration,
    /// Read latencies (µs).
    pub reads: Histogram<u64>,
    /// Write latencies (µs); for the baseline, ping latencies.
    pub writes: Histogram<u64>,
    /// What the two histograms hold, for the report: `("read", "write")`, or for the baseline
    /// `("read", "ping")`.
    pub labels: (&'static str, &'static str),
}

impl Phase {
    /// Operations per second.
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A human-readable report.
    pub fn render(&self) -> String {
        let mut text = format!(
            "{}: {} ops in {:.1} s = {:.0} ops/s, {} errors\n",
            self.name,
            self.ops,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.errors
        );
        for (label, h) in [(self.labels.0, &self.reads), (self.labels.1, &self.writes)] {
            if h.is_empty() {
                continue;
            }
            text.push_str(&format!(
                "  {label:>5} n={:<9} p50 {:>6} µs  p90 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  max {:>7} µs\n",
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            ));
        }
        if let Some(e) = &self.first_error {
            text.push_str(&format!("  first error: {e}\n"));
        }
        text
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Validates the arguments.
fn check(args: &KvBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.keys > 0, "--keys must be at least 1");
    anyhow::ensure!((0.0..=1.0).contains(&args.read_ratio), "--read-ratio must be within 0..1");
    anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
    if let Some(s) = args.zipf {
        anyhow::ensure!(s > 0.0, "--zipf must be positive");
    }
    Ok(())
}

/// Runs the baseline (unless skipped) and the KVS phase against the cluster of `config`.
pub async fn run(config: &ClusterConfig, args: &KvBenchArgs) -> anyhow::Result<Vec<Phase>> {
    check(args)?;
    let mut config = config.clone();
    for id in &args.only {
        anyhow::ensure!(config.node(*id).is_some(), "--only {id}: no such node");
    }
    if let Some(d) = args.durability {
        config.cluster.durability = d;
    }
    let targets: Vec<NodeId> = args.only.iter().map(|id| NodeId(*id)).collect();
    let clients: Vec<Arc<KvClient>> = (0..args.connections)
        .map(|_| Arc::new(KvClient::new(&config).with_targets(targets.clone())))
        .collect();
    let pinged: Vec<_> = config
        .nodes
        .iter()
        .filter(|node| args.only.is_empty() || args.only.contains(&node.id))
        .collect();
    let mut phases = Vec::new();
    if !args.no_baseline {
        let mut pings = Vec::new();
        for _ in 0..args.connections {
            for node in &pinged {
                pings.push(
                    crate::runtime::connect(node.rpc, config.limits.max_frame_bytes)
                        .await
                        .with_context(|| {
                            format!("cannot connect to node {} at {}", node.id, node.rpc)
                        })?,
                );
            }
        }
        let pings = Arc::new(pings);
        let mut baseline = phase("ping baseline", args, move |i, _rng| {
            let client = pings[i % pings.len()].clone();
            async move {
                client
                    .ping(tarpc::context::current())
                    .await
                    .map(|_| false)
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        baseline.labels = ("read", "ping");
        phases.push(baseline);
    }
    preload(&clients, args).await?;
    let value = Bytes::from(vec![b'x'; args.value_size]);
    let durability: Durability = config.cluster.durability.into();
    let zipf = args.zipf.map(|s| Zipf::new(args.keys as f64, s)).transpose()?;
    let (keys, read_ratio) = (args.keys, args.read_ratio);
    phases.push(
        phase("kv", args, move |i, rng| {
            let client = clients[i % clients.len()].clone();
            let n = match &zipf {
                Some(zipf) => zipf.sample(rng) as u64 - 1,
                None => rng.random_range(0..keys),
            };
            let read = rng.random::<f64>() < read_ratio;
            let value = value.clone();
            async move {
                let key = format!("key:{n}");
                if read {
                    client.get(&key).await.map(|_| true).map_err(|e| e.to_string())
                } else {
                    let lww = client.lww(value);
                    client
                        .put_with(&key, lww, durability)
                        .await
                        .map(|()| false)
                        .map_err(|e| e.to_string())
                }
            }
        })
        .await,
    );
    Ok(phases)
}

/// Writes every key once (so reads find values), `clients` at a time.
async fn preload(clients: &[Arc<KvClient>], args: &KvBenchArgs) -> anyhow::Result<()> {
    let bar = bar(args, args.keys, "preloading keys");
    let next = Arc::new(AtomicU64::new(0));
    let value = Bytes::from(vec![b'x'; args.value_size]);
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let (client, next, value, bar) =
            (clients[i % clients.len()].clone(), next.clone(), value.clone(), bar.clone());
        let keys = args.keys;
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= keys {
                    return Ok::<(), anyhow::Error>(());
                }
                let lww = client.lww(value.clone());
                client
                    .put(&format!("key:{n}"), lww)
                    .await
                    .with_context(|| format!("preloading key:{n}"))?;
                bar.inc(1);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    bar.finish_and_clear();
    Ok(())
}

/// A progress bar on a terminal; elsewhere (a log, a pipe) one line on standard error when the
/// step begins, so a long run is not silent.
fn bar(args: &KvBenchArgs, len: u64, message: &'static str) -> ProgressBar {
    use std::io::IsTerminal as _;
    if args.quiet {
        return ProgressBar::hidden();
    }
    if !std::io::stderr().is_terminal() {
        #[allow(clippy::print_stderr)] // The progress line, where no bar can be drawn.
        {
            eprintln!("squall bench: {message}");
        }
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:40}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Runs `op` closed-loop from `args.clients` tasks for `args.duration`. `op` returns whether it
/// was a read (its latency goes to the read histogram) or the failure.
async fn phase<F, Fut>(name: &'static str, args: &KvBenchArgs, op: F) -> Phase
where
    F: Fn(usize, &mut StdRng) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<bool, String>> + Send,
{
    let duration = Duration::from_secs_f64(args.duration);
    let bar = bar(args, duration.as_millis() as u64, name);
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let (stop, ops, op) = (stop.clone(), ops.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(i as u64);
            let (mut reads, mut writes) = (histogram(), histogram());
            let (mut errors, mut first_error) = (0u64, None);
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let result = op(i, &mut rng).await;
                let micros = began.elapsed().as_micros() as u64;
                match result {
                    Ok(true) => reads.saturating_record(micros.max(1)),
                    Ok(false) => writes.saturating_record(micros.max(1)),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
            (reads, writes, errors, first_error)
        }));
    }
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        bar.set_position(start.elapsed().as_millis().min(duration.as_millis()) as u64);
        bar.set_message(format!("{name}: {} ops", ops.load(Ordering::Relaxed)));
    }
    stop.store(true, Ordering::Relaxed);
    let mut result = Phase {
        name,
        ops: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        reads: histogram(),
        writes: histogram(),
        labels: ("read", "write"),
    };
    for task in tasks {
        let (reads, writes, errors, first_error) = task.await.expect("bench client panicked");
        result.reads.add(&reads).expect("same bounds");
        result.writes.add(&writes).expect("same bounds");
        result.errors += errors;
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
    }
    result.elapsed = start.elapsed();
    result.ops = result.reads.len() + result.writes.len();
    bar.finish_and_clear();
    result
}
