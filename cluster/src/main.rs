//! `squall`: run a Squall cluster and talk to it.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use squall_cluster::bench::{self, KvBenchArgs};
use squall_cluster::client::{KvClient, KvError, LeaveOutcome};
use squall_cluster::config::{ClusterConfig, DEFAULT_TOML, WriteDurability};
use squall_cluster::exec::{Registry, Value};
use squall_cluster::faas::{DagSpec, FaasError, FnClient};
use squall_cluster::local::{LocalCluster, LocalNode, LocalRole};
use squall_cluster::runtime::LocalPeers;
use squall_proto::kvs::PutError;
use squall_proto::lattice::LatticeType;
use squall_proto::lattice::{
    LatticeValue, Max, Min, MultiKeyCausal, PnCounter, Priority, SetUnion, SingleKeyCausal,
    VectorClock, WriterId,
};
use squall_proto::session::Level;
use std::sync::Arc;

/// A node allocates per command (messages, futures, buffers); mimalloc makes that cheaper than
/// glibc's allocator, as jemalloc does for redis-server (docs/performance.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Squall: a lattice key-value store with stateful functions next to its caches, which you can
/// run locally.
///
/// Without --config every command uses the embedded default: three storage nodes on loopback,
/// RPC ports 7700-7702, RESP (Redis protocol) ports 6380-6382, data in ./squall-data; a
/// scheduler on 7710 and two workers (two executors each) on 7720-7721.
#[derive(Debug, Parser)]
#[command(name = "squall", version)]
struct Cli {
    /// A TOML configuration (see `squall config` and docs/operations.md).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Override the configuration's data directory.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Override the configuration's sync policy: `always` syncs every write before it is
    /// acknowledged, `batch` (the default) syncs once per batch of writes a node took
    /// together (still before acknowledging them), `never` leaves syncing to the operating
    /// system (survives a crash of squall, not of the machine).
    #[arg(long, global = true, value_enum)]
    sync: Option<squall_cluster::disk::SyncPolicy>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start every node of the configuration in this process (storage nodes, the scheduler,
    /// the workers); Ctrl-C stops them gracefully.
    Up,
    /// Run one node of the configuration (for clusters across hosts); Ctrl-C stops it.
    Node {
        /// The id in the configuration (a `[[node]]`, the `[scheduler]` or a `[[worker]]`).
        #[arg(long)]
        id: u64,
        /// Which role the id names.
        #[arg(long, value_enum, default_value = "storage")]
        role: Role,
    },
    /// Call and list functions.
    Fn {
        #[command(subcommand)]
        command: FnCommand,
    },
    /// Register, show and call DAGs of functions.
    Dag {
        #[command(subcommand)]
        command: DagCommand,
    },
    /// Read and write keys.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Ask a storage node to leave the ring gracefully, handing its keys to the others.
    Leave {
        /// The node's id.
        #[arg(long)]
        id: u64,
        /// How long to wait for the hand-off, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Load generators.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Print the embedded default configuration (a starting point for your own); with
    /// --config, check that file and print it.
    Config,
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// Merge a value into a key.
    Put {
        /// The key.
        key: String,
        /// The value: bytes for lww, priority and the causal types, one element for set, an
        /// unsigned integer for max and min, a signed integer to add for pn-counter (as `kv
        /// incr`). `-` reads it from standard input (for values too large for a command line,
        /// or not text).
        #[arg(
            required_unless_present = "file",
            conflicts_with = "file",
            allow_negative_numbers = true
        )]
        value: Option<String>,
        /// Read the value from this file instead.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The lattice type.
        #[arg(long = "type", short = 't', default_value = "lww", value_parser = lattice_types())]
        kind: LatticeType,
        /// The priority, for --type priority (lower wins).
        #[arg(long)]
        priority: Option<u64>,
        /// Acknowledge once this many replicas hold it (default: the configuration's).
        #[arg(long, value_enum)]
        durability: Option<WriteDurability>,
    },
    /// Read a key. Exit status 1 when no replica holds it.
    Get {
        /// The key.
        key: String,
    },
    /// Delete LWW keys and print how many held a value (as Redis's DEL counts). A delete is a
    /// stamped tombstone: it wins over every older write wherever the two meet, so a replica
    /// that missed it cannot bring the value back; a later put writes the key again.
    Del {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
        /// Acknowledge once this many replicas hold each delete (default: the configuration's).
        #[arg(long, value_enum)]
        durability: Option<WriteDurability>,
    },
    /// List the keys one storage node holds (deleted ones left out), through its RESP port's
    /// SCAN: per node, as SCAN is — with replication below the node count, each node holds its
    /// share of the keys.
    Keys {
        /// The node to ask (default: the first one that serves RESP).
        #[arg(long)]
        node: Option<u64>,
        /// Only keys matching this glob (`*` any run of bytes, `?` one byte).
        #[arg(long = "match", value_name = "GLOB")]
        pattern: Option<String>,
    },
    /// Add to a counter (a pn-counter key; a missing key counts from 0) and print its value
    /// as the replica read just before knew it, with this increment. Concurrent increments
    /// from any number of clients and nodes are never lost.
    Incr {
        /// The key.
        key: String,
        /// How much to add; negative to subtract.
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
        /// Acknowledge once this many replicas hold it (default: the configuration's).
        #[arg(long, value_enum)]
        durability: Option<WriteDurability>,
    },
}

/// A role `squall node` runs.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Role {
    /// A storage node (`[[node]]`).
    Storage,
    /// The scheduler (`[scheduler]`).
    Scheduler,
    /// A worker with its executors (`[[worker]]`).
    Worker,
}

/// The `--consistency` parser: every level's name.
fn levels() -> impl clap::builder::TypedValueParser<Value = Level> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Level::ALL.map(Level::name))
        .map(|name| *Level::ALL.iter().find(|l| l.name() == name).expect("a listed level name"))
}

/// What a function or DAG call takes on the command line.
#[derive(Debug, clap::Args)]
struct CallArgs {
    /// The arguments (of every source function, for a DAG).
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// The consistency level: lww, dsrr (repeatable read), sk (single-key causal), mk
    /// (multi-key causal), dsc (distributed-session causal).
    #[arg(long, default_value = "lww", value_parser = levels())]
    consistency: Level,
}

impl CallArgs {
    fn values(&self) -> Vec<Value> {
        self.args.iter().map(|a| Value::parse_arg(a)).collect()
    }
}

#[derive(Debug, Subcommand)]
enum FnCommand {
    /// Call one function. Arguments that look like integers are passed as integers, `@KEY`
    /// passes the value of KEY (read at the call's consistency level), anything else as text:
    /// `squall fn call increment 41` prints 42.
    Call {
        /// The function.
        name: String,
        #[command(flatten)]
        call: CallArgs,
        /// Keys the function reads (a built-in function's key arguments are added by
        /// themselves); levels above lww serve only declared keys.
        #[arg(long, value_delimiter = ',')]
        reads: Vec<String>,
    },
    /// Upload a WebAssembly function (text `.wat` or binary `.wasm`; `-` reads stdin). It is
    /// kept in the KVS, where every worker loads it from; see docs/faas.md for the ABI.
    Register {
        /// The function's name.
        name: String,
        /// The module.
        file: PathBuf,
    },
    /// List the built-in and uploaded functions and the registered DAGs.
    List,
}

#[derive(Debug, Subcommand)]
enum DagCommand {
    /// Register a DAG: each item is a chain `a -> b -> c` or a single function; one function
    /// must trigger nothing (the sink, whose result is the call's). `square#2` is a second
    /// `square`. Example: `squall dag register sq 'increment -> square'`.
    Register {
        /// The DAG's name.
        name: String,
        /// Its chains.
        #[arg(required = true)]
        items: Vec<String>,
        /// Keys a function reads: `FUNCTION=KEY1,KEY2` (repeatable).
        #[arg(long)]
        reads: Vec<String>,
    },
    /// Call a registered DAG; the arguments go to every source function (see `fn call`).
    Call {
        /// The DAG's name.
        name: String,
        #[command(flatten)]
        call: CallArgs,
        /// Do not wait: print the key the result will be written to (`squall kv get KEY`
        /// reads it once the call finished; a failed call writes nothing there).
        #[arg(long = "async")]
        submit: bool,
    },
    /// Print a registered DAG.
    Show {
        /// The DAG's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Closed-loop GET/SET load with HDR latency percentiles and a ping baseline.
    Kv(KvBenchArgs),
    /// Function composition: square(increment(x)) native and wasm beside a loopback ping and
    /// an in-process call; or, with --anomalies, the anomalies each consistency level shows.
    /// Starts its own cluster in this process (the configuration's roles on free ports).
    Dag(squall_cluster::bench_dag::DagBenchArgs),
}

/// The `--type` parser: every lattice type's name, listed in `--help`.
fn lattice_types() -> impl clap::builder::TypedValueParser<Value = LatticeType> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(LatticeType::ALL.map(LatticeType::name))
        .map(|name| name.parse::<LatticeType>().expect("a listed lattice type name"))
}

fn main() -> ExitCode {
    use std::io::IsTerminal as _;
    // Warnings by default, without tarpc's own lines (a timed-out call is reported once, by
    // the command, in its words); colour only on a terminal. RUST_LOG overrides the filter.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,tarpc=off")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "squall: {e:#}");
    ExitCode::from(2)
}

fn say(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn load(cli: &Cli) -> anyhow::Result<ClusterConfig> {
    let mut config = match &cli.config {
        Some(path) => ClusterConfig::load(path)?,
        None => ClusterConfig::embedded(),
    };
    if let Some(dir) = &cli.data_dir {
        config.cluster.data_dir = dir.clone();
    }
    if let Some(sync) = cli.sync {
        config.cluster.sync = sync;
    }
    Ok(config)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = load(&cli)?;
    match cli.command {
        // The embedded default, comments and all; with --config, the file, once it has been
        // read and checked (the overrides of --data-dir and --sync apply to a file's use, not
        // to its text, so they are refused here rather than silently ignored).
        Command::Config => {
            anyhow::ensure!(
                cli.data_dir.is_none() && cli.sync.is_none(),
                "`squall config` prints a configuration file; --data-dir and --sync override \
                 one when it is used (e.g. `squall --config FILE --data-dir DIR up`)"
            );
            match &cli.config {
                Some(path) => say(std::fs::read_to_string(path)?.trim_end()),
                None => say(DEFAULT_TOML.trim_end()),
            }
        }
        Command::Up => {
            let cluster = LocalCluster::start(&config).await?;
            say(format!(
                "squall: {} storage nodes up (replication {}, {} writes, data in {}, sync {})",
                cluster.nodes.len(),
                config.cluster.replication,
                config
                    .cluster
                    .durability
                    .to_possible_value()
                    .map_or("?".into(), |v| v.get_name().to_owned()),
                config.cluster.data_dir.display(),
                config
                    .cluster
                    .sync
                    .to_possible_value()
                    .map_or("?".into(), |v| v.get_name().to_owned())
            ));
            for (node, entry) in cluster.nodes.iter().zip(config.nodes.iter().filter(|n| !n.join)) {
                let resp = node.resp_addr.map_or("-".to_owned(), |a| a.to_string());
                say(format!("  node {}: rpc {}  resp {}", entry.id, node.rpc_addr, resp));
                say(format!("    {}", node.recovered));
            }
            if let (Some(scheduler), Some(entry)) = (&cluster.scheduler, &config.scheduler) {
                say(format!("  scheduler {}: rpc {}", entry.id, scheduler.rpc_addr));
            }
            for (worker, entry) in cluster.workers.iter().zip(&config.workers) {
                let executors = config.executors(entry).len();
                say(format!(
                    "  worker {}: rpc {}  {executors} executors",
                    entry.id, worker.rpc_addr
                ));
            }
            // The hints name this configuration, so they work as printed.
            let squall = match &cli.config {
                Some(path) => format!("squall --config {}", path.display()),
                None => "squall".to_owned(),
            };
            let redis = cluster
                .nodes
                .iter()
                .find_map(|node| node.resp_addr)
                .map_or(String::new(), |addr| {
                    format!("   (or redis-cli -h {} -p {})", addr.ip(), addr.port())
                });
            say(format!("try: {squall} kv put hello world && {squall} kv get hello{redis}"));
            if cluster.scheduler.is_some() {
                say(format!("     {squall} fn call increment 41"));
            }
            say("Ctrl-C stops the cluster.");
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            say("squall: stopping (draining in-flight requests)");
            cluster.stop().await?;
            say("squall: stopped");
        }
        Command::Node { id, role: Role::Scheduler } => {
            let entry =
                config.scheduler.as_ref().context("the configuration has no [scheduler]")?;
            anyhow::ensure!(entry.id == id, "the scheduler's id is {}, not {id}", entry.id);
            let scheduler = LocalRole::scheduler(&config, &LocalPeers::default()).await?;
            say(format!("squall: scheduler {id} up: rpc {}", scheduler.rpc_addr));
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            scheduler.stop().await?;
        }
        Command::Node { id, role: Role::Worker } => {
            let worker = LocalRole::worker(
                &config,
                id,
                Arc::new(Registry::builtin()),
                &LocalPeers::default(),
            )
            .await?;
            say(format!("squall: worker {id} up: rpc {}", worker.rpc_addr));
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            worker.stop().await?;
        }
        Command::Fn { command } => return functions(&config, command).await,
        Command::Dag { command } => return dags(&config, command).await,
        Command::Node { id, role: Role::Storage } => {
            let node = LocalNode::start(&config, id).await?;
            let resp = node.resp_addr.map_or("-".to_owned(), |a| a.to_string());
            say(format!("squall: node {id} up: rpc {}  resp {resp}", node.rpc_addr));
            say(format!("  {}", node.recovered));
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            say(format!("squall: node {id} stopping"));
            node.stop().await?;
        }
        Command::Leave { id, timeout } => {
            anyhow::ensure!(config.node(id).is_some(), "node {id} is not in the configuration");
            let client = KvClient::new(&config);
            match client.leave(squall_proto::NodeId(id), Duration::from_secs(timeout)).await {
                Ok(LeaveOutcome::Left) => {
                    say(format!("node {id} has left the ring; it may be stopped"))
                }
                Ok(LeaveOutcome::Refused) => {
                    say(format!("node {id} is the ring's last member and stays"));
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Ok(kv_failure(&e)),
            }
        }
        Command::Kv { command } => return kv(&config, command).await,
        Command::Bench { command: BenchCommand::Dag(args) } if args.anomalies => {
            let rows = squall_cluster::bench_dag::anomalies(&config, &args).await?;
            say(format!(
                "anomalies per level ({:.0} s each, {} readers; each reader call is judged by every checker)",
                args.duration, args.readers
            ));
            say(squall_cluster::bench_dag::LevelRow::header());
            let mut violated = false;
            for row in &rows {
                say(row.render());
                if !row.violations().is_empty() {
                    violated = true;
                    say(format!(
                        "  {} shows anomalies it rules out: {:?}",
                        row.level,
                        row.violations()
                    ));
                }
            }
            if violated {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Bench { command: BenchCommand::Dag(args) } => {
            let phases = squall_cluster::bench_dag::composition(&config, &args).await?;
            for phase in &phases {
                say(phase.render());
            }
            if let [ping, floor, native, wasm, apart] = &phases[..] {
                let rts = |phase: &squall_cluster::bench_dag::Phase| {
                    phase.round_trips().unwrap_or(f64::NAN)
                };
                say(format!(
                    "median in loopback round trips (each against the pings alongside it): \
                     native {:.2}, wasm {:.2} (goal <= 3); roles over TCP {:.2}; \
                     in-process floor {:.4} (against the ping alone)",
                    rts(native),
                    rts(wasm),
                    rts(apart),
                    floor.median_us() / ping.median_us().max(1e-9)
                ));
            }
        }
        Command::Bench { command: BenchCommand::Kv(args) } => {
            let phases = bench::run(&config, &args).await?;
            for phase in &phases {
                say(phase.render());
            }
            if let [baseline, kv] = &phases[..] {
                say(format!(
                    "kv throughput / ping baseline throughput = {:.2}",
                    kv.throughput() / baseline.throughput().max(1e-9)
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reports a failed function or DAG call: exit 2 when it certainly did not run (or failed),
/// 3 when its outcome is unknown.
fn fn_failure(e: &FaasError) -> ExitCode {
    let unknown = matches!(e, FaasError::Call(c) if !c.is_definite())
        || matches!(e, FaasError::Kv(k) if !k.is_definite());
    let kind = if unknown { "outcome unknown" } else { "failed" };
    let _ = writeln!(std::io::stderr(), "squall: {kind}: {e}");
    ExitCode::from(if unknown { 3 } else { 2 })
}

async fn functions(config: &ClusterConfig, command: FnCommand) -> anyhow::Result<ExitCode> {
    let registry = Registry::builtin();
    let client = FnClient::new(config, registry.clone())?;
    match command {
        FnCommand::Call { name, call, reads } => {
            match client.call_fn(&name, call.values(), call.consistency, &reads).await {
                Ok(value) => say(value),
                Err(e) => return Ok(fn_failure(&e)),
            }
        }
        FnCommand::Register { name, file } => {
            let source = if file.as_os_str() == "-" {
                let mut source = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut source)
                    .context("reading the module from stdin")?;
                source
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            match client.register_fn(&name, &source).await {
                Ok(size) => say(format!("registered {name} ({size} bytes of WebAssembly)")),
                Err(e) => return Ok(fn_failure(&e)),
            }
        }
        FnCommand::List => {
            say("built-in functions:");
            for native in registry.natives() {
                say(format!("  {:<10} {}", native.name, native.about));
            }
            match client.functions().await {
                Ok(names) if names.is_empty() => say("uploaded functions: none"),
                Ok(names) => say(format!("uploaded functions: {}", names.join(", "))),
                Err(e) => return Ok(fn_failure(&e)),
            }
            match client.dags().await {
                Ok(dags) if dags.is_empty() => say("registered DAGs: none"),
                Ok(dags) => {
                    say("registered DAGs:");
                    for name in dags {
                        let spec = client.dag(&name).await.map(|s| s.describe());
                        let spec = spec.unwrap_or_else(|e| e.to_string()).replace('\n', "; ");
                        say(format!("  {name:<10} {spec}"));
                    }
                }
                Err(e) => return Ok(fn_failure(&e)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn dags(config: &ClusterConfig, command: DagCommand) -> anyhow::Result<ExitCode> {
    let client = FnClient::new(config, Registry::builtin())?;
    let result = match command {
        DagCommand::Register { name, items, reads } => {
            let spec = match DagSpec::parse(&items, &reads) {
                Ok(spec) => spec,
                Err(e) => return Ok(fn_failure(&e)),
            };
            client
                .register_dag(&name, &spec)
                .await
                .map(|()| format!("registered {name}:\n{}", spec.describe()))
        }
        DagCommand::Call { name, call, submit: true } => {
            client.submit_dag(&name, call.values(), call.consistency).await
        }
        DagCommand::Call { name, call, submit: false } => {
            client.call_dag(&name, call.values(), call.consistency).await.map(|v| v.to_string())
        }
        DagCommand::Show { name } => client.dag(&name).await.map(|spec| spec.describe()),
    };
    match result {
        Ok(text) => say(text),
        Err(e) => return Ok(fn_failure(&e)),
    }
    Ok(ExitCode::SUCCESS)
}

fn kv_failure(e: &KvError) -> ExitCode {
    let kind = if e.is_definite() { "failed" } else { "outcome unknown" };
    let _ = writeln!(std::io::stderr(), "squall: {kind}: {e}");
    ExitCode::from(if e.is_definite() { 2 } else { 3 })
}

async fn kv(config: &ClusterConfig, command: KvCommand) -> anyhow::Result<ExitCode> {
    let client = KvClient::new(config);
    match command {
        KvCommand::Put { key, value, file, kind, priority, durability } => {
            let writer = WriterId(client.id().0);
            let bytes = match (value.as_deref(), &file) {
                (_, Some(path)) => Bytes::from(
                    std::fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                (Some("-"), None) => {
                    let mut input = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut input)
                        .context("cannot read the value from standard input")?;
                    Bytes::from(input)
                }
                (Some(value), None) => Bytes::from(value.to_owned().into_bytes()),
                (None, None) => anyhow::bail!("a value, `-` or --file is needed"),
            };
            let lattice = match kind {
                LatticeType::Lww => client.lww(bytes),
                LatticeType::Set => LatticeValue::Set(SetUnion::singleton(bytes)),
                LatticeType::Max => {
                    LatticeValue::Max(Max::new(number(&bytes, "an unsigned integer")?))
                }
                LatticeType::Min => {
                    LatticeValue::Min(Min::new(number(&bytes, "an unsigned integer")?))
                }
                LatticeType::Priority => {
                    let p = priority.context("--type priority needs --priority N")?;
                    LatticeValue::Priority(Priority::new(p, writer, bytes))
                }
                LatticeType::SingleKeyCausal => LatticeValue::SingleKeyCausal(
                    SingleKeyCausal::new(VectorClock::new([(writer, stamp())]), bytes),
                ),
                LatticeType::MultiKeyCausal => LatticeValue::MultiKeyCausal(MultiKeyCausal::new(
                    VectorClock::new([(writer, stamp())]),
                    Default::default(),
                    bytes,
                )),
                // This invocation is a writer of its own: its totals are just this amount.
                LatticeType::PnCounter => {
                    let by = number(&bytes, "an integer")?;
                    let mut counter = PnCounter::default();
                    counter.add(writer, by).context("a total would overflow")?;
                    LatticeValue::PnCounter(counter)
                }
            };
            let durability = durability.unwrap_or(config.cluster.durability);
            match client.put_with(&key, lattice, durability.into()).await {
                Ok(()) => say("OK"),
                Err(e) => return Ok(kv_failure(&e)),
            }
        }
        KvCommand::Incr { key, by, durability } => {
            let durability = durability.unwrap_or(config.cluster.durability);
            match client.add_with(&key, by, durability.into()).await {
                Ok(value) => say(value),
                Err(e) => return Ok(kv_failure(&e)),
            }
        }
        KvCommand::Del { keys, durability } => {
            let durability = durability.unwrap_or(config.cluster.durability).into();
            let mut deleted = 0;
            for key in &keys {
                match client.delete_with(key, durability).await {
                    Ok(existed) => deleted += usize::from(existed),
                    Err(KvError::Rejected(PutError::TypeMismatch(m))) => {
                        let _ = writeln!(
                            std::io::stderr(),
                            "squall: cannot delete {key:?}: it holds a {} lattice, and only lww \
                             keys can be deleted",
                            m.stored
                        );
                        return Ok(ExitCode::from(2));
                    }
                    Err(e) => {
                        let _ = writeln!(std::io::stderr(), "squall: deleting {key:?}:");
                        return Ok(kv_failure(&e));
                    }
                }
            }
            say(deleted);
        }
        KvCommand::Keys { node, pattern } => {
            let served = config.nodes.iter().filter(|n| node.is_none_or(|id| id == n.id));
            let Some((id, addr)) = served.filter_map(|n| Some((n.id, n.resp?))).next() else {
                anyhow::bail!(match node {
                    Some(id) =>
                        format!("node {id} is not in the configuration or serves no RESP port"),
                    None => "no node of the configuration serves a RESP port".to_owned(),
                });
            };
            let keys = scan_keys(addr, pattern.as_deref())
                .await
                .with_context(|| format!("listing the keys of node {id} at {addr}"))?;
            let mut out = std::io::stdout().lock();
            for key in keys {
                writeln!(out, "{key}")?;
            }
        }
        KvCommand::Get { key } => match client.get(&key).await {
            Ok(Some(value)) if !value.is_deleted() => say(render(&value)),
            Ok(Some(_)) => {
                let _ = writeln!(std::io::stderr(), "squall: no such key: {key:?} (deleted)");
                return Ok(ExitCode::from(1));
            }
            Ok(None) => {
                let _ = writeln!(std::io::stderr(), "squall: no such key: {key:?}");
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Ok(kv_failure(&e)),
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Every key a node's RESP port lists, by SCAN from cursor 0 until it returns to 0.
async fn scan_keys(
    addr: std::net::SocketAddr,
    pattern: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    use redis_protocol::resp2::decode::decode_bytes_mut;
    use redis_protocol::resp2::encode::extend_encode;
    use redis_protocol::resp2::types::BytesFrame as Frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut keys, mut cursor) = (Vec::new(), "0".to_owned());
    let mut input = bytes::BytesMut::new();
    loop {
        let mut words = vec!["SCAN", cursor.as_str(), "COUNT", "1000"];
        if let Some(glob) = pattern {
            words.extend(["MATCH", glob]);
        }
        let words = words.into_iter().map(|w| Frame::BulkString(Bytes::from(w.to_owned())));
        let mut request = bytes::BytesMut::new();
        extend_encode(&mut request, &Frame::Array(words.collect()), false)?;
        stream.write_all(&request).await?;
        let reply = loop {
            if let Some((frame, ..)) = decode_bytes_mut(&mut input)? {
                break frame;
            }
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut input))
                .await
                .context("no answer to SCAN within 10 s")??;
            anyhow::ensure!(read > 0, "the node closed the connection");
        };
        let (next, page) = match reply {
            Frame::Array(parts) => match <[Frame; 2]>::try_from(parts) {
                Ok([Frame::BulkString(next), Frame::Array(page)]) => (next, page),
                Ok(other) => anyhow::bail!("an unexpected SCAN reply: {other:?}"),
                Err(parts) => anyhow::bail!("an unexpected SCAN reply: {parts:?}"),
            },
            Frame::Error(e) => anyhow::bail!("the node answered: {e}"),
            other => anyhow::bail!("an unexpected SCAN reply: {other:?}"),
        };
        for key in page {
            match key {
                Frame::BulkString(key) => keys.push(String::from_utf8_lossy(&key).into_owned()),
                other => anyhow::bail!("an unexpected key in a SCAN reply: {other:?}"),
            }
        }
        cursor = String::from_utf8_lossy(&next).into_owned();
        if cursor == "0" {
            return Ok(keys);
        }
    }
}

/// A number given as the value's text (surrounding whitespace ignored); the error says it is
/// not `what`.
fn number<T>(bytes: &Bytes, what: &str) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    text.parse().with_context(|| format!("{text:?} is not {what}"))
}

/// A per-process counter for causal versions written from the command line: the wall clock in
/// microseconds, so successive invocations by one writer id increase.
fn stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

fn text(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A value as `squall kv get` prints it.
fn render(value: &LatticeValue) -> String {
    match value {
        LatticeValue::Lww(lww) => lww.value().map_or("(empty)".into(), text),
        LatticeValue::Set(set) => {
            let items: Vec<String> = set.as_set().iter().map(text).collect();
            format!("{{{}}}", items.join(", "))
        }
        LatticeValue::Max(max) => max.get().to_string(),
        LatticeValue::Min(min) => min.get().to_string(),
        LatticeValue::Priority(p) => match (p.priority(), p.value()) {
            (Some(priority), Some(v)) => format!("{} (priority {priority})", text(v)),
            _ => "(empty)".into(),
        },
        LatticeValue::SingleKeyCausal(c) => siblings(c.values()),
        LatticeValue::MultiKeyCausal(c) => siblings(c.values()),
        LatticeValue::PnCounter(counter) => counter.value().to_string(),
    }
}

fn siblings<'a>(values: impl Iterator<Item = &'a Bytes>) -> String {
    let items: Vec<String> = values.map(text).collect();
    match items.len() {
        1 => items.into_iter().next().unwrap_or_default(),
        _ => format!("siblings: [{}]", items.join(", ")),
    }
}
