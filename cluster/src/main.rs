//! `squall`: run a Squall cluster and talk to it.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use squall_cluster::bench::{self, KvBenchArgs};
use squall_cluster::client::{KvClient, LeaveOutcome};
use squall_cluster::config::{ClusterConfig, DEFAULT_TOML, WriteDurability};
use squall_cluster::local::{LocalCluster, LocalNode};
use squall_proto::lattice::LatticeType;
use squall_proto::lattice::{
    LatticeValue, Max, Min, MultiKeyCausal, Priority, SetUnion, SingleKeyCausal, VectorClock,
    WriterId,
};

/// Squall: a lattice key-value store (and, later, stateful functions) you can run locally.
///
/// Without --config every command uses the embedded default: three storage nodes on loopback,
/// RPC ports 7700-7702, RESP (Redis protocol) ports 6380-6382, data in ./squall-data.
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
    /// Start every node of the configuration in this process; Ctrl-C stops them gracefully.
    Up,
    /// Run one node of the configuration (for clusters across hosts); Ctrl-C stops it.
    Node {
        /// The node's id in the configuration.
        #[arg(long)]
        id: u64,
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
    /// Print the embedded default configuration (a starting point for your own).
    Config,
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// Merge a value into a key.
    Put {
        /// The key.
        key: String,
        /// The value: bytes for lww, priority and the causal types, one element for set, an
        /// unsigned integer for max and min.
        value: String,
        /// The lattice type.
        #[arg(long = "type", short, default_value = "lww", value_parser = lattice_types())]
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
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Closed-loop GET/SET load with HDR latency percentiles and a ping baseline.
    Kv(KvBenchArgs),
}

/// The `--type` parser: every lattice type's name, listed in `--help`.
fn lattice_types() -> impl clap::builder::TypedValueParser<Value = LatticeType> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(LatticeType::ALL.map(LatticeType::name))
        .map(|name| name.parse::<LatticeType>().expect("a listed lattice type name"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
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
        Command::Config => say(DEFAULT_TOML),
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
            say("try: squall kv put hello world && squall kv get hello   (or redis-cli -p 6380)");
            say("Ctrl-C stops the cluster.");
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            say("squall: stopping (draining in-flight requests)");
            cluster.stop().await?;
            say("squall: stopped");
        }
        Command::Node { id } => {
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

fn kv_failure(e: &squall_cluster::client::KvError) -> ExitCode {
    let kind = if e.is_definite() { "failed" } else { "outcome unknown" };
    let _ = writeln!(std::io::stderr(), "squall: {kind}: {e}");
    ExitCode::from(if e.is_definite() { 2 } else { 3 })
}

async fn kv(config: &ClusterConfig, command: KvCommand) -> anyhow::Result<ExitCode> {
    let client = KvClient::new(config);
    match command {
        KvCommand::Put { key, value, kind, priority, durability } => {
            let writer = WriterId(client.id().0);
            let bytes = Bytes::from(value.clone().into_bytes());
            let number = || {
                value
                    .parse::<u64>()
                    .with_context(|| format!("{value:?} is not an unsigned integer"))
            };
            let lattice = match kind {
                LatticeType::Lww => client.lww(bytes),
                LatticeType::Set => LatticeValue::Set(SetUnion::singleton(bytes)),
                LatticeType::Max => LatticeValue::Max(Max::new(number()?)),
                LatticeType::Min => LatticeValue::Min(Min::new(number()?)),
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
            };
            let durability = durability.unwrap_or(config.cluster.durability);
            match client.put_with(&key, lattice, durability.into()).await {
                Ok(()) => say("OK"),
                Err(e) => return Ok(kv_failure(&e)),
            }
        }
        KvCommand::Get { key } => match client.get(&key).await {
            Ok(Some(value)) => say(render(&value)),
            Ok(None) => {
                let _ = writeln!(std::io::stderr(), "squall: no such key: {key:?}");
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Ok(kv_failure(&e)),
        },
    }
    Ok(ExitCode::SUCCESS)
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
    }
}

fn siblings<'a>(values: impl Iterator<Item = &'a Bytes>) -> String {
    let items: Vec<String> = values.map(text).collect();
    match items.len() {
        1 => items.into_iter().next().unwrap_or_default(),
        _ => format!("siblings: [{}]", items.join(", ")),
    }
}
