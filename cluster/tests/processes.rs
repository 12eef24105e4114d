//! The fault harness: three real `squall node` processes under a recorded majority-write load,
//! put through one fault after another — SIGKILL and restart, SIGSTOP and SIGCONT, a network
//! partition, a flood of idle and slow connections — then healed and judged by
//! `squall-verify`'s checkers: no acknowledged write lost, every replica converged, reads
//! after settling see the settled values. It reports throughput and latency per phase
//! (healthy, faulted, healed), peak RSS per node, and the survivors' CPU while a node is dead
//! and the load stopped.
//!
//! Partitions: every node reaches each other node through a loopback proxy of this harness
//! (node i's configuration names proxy (i → j) as node j's address); cutting a proxy drops its
//! connections and refuses new ones. Clients reach the nodes directly.
//!
//! CI runs it with 2 s phases in a debug build. The long run, for figures:
//! `SQUALL_FAULT_SECS=60 cargo test --release -p squall-cluster --test processes -- --nocapture`
//! (`SQUALL_FLOOD` sets the idle connections of the flood phase, 2,000 by default;
//! `SQUALL_PAUSE_SECS` the pause alone, to study a resume without the other long phases).

// The report (per-phase figures) is what the long run is for: it goes to standard output.
#![allow(clippy::print_stdout)]

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Recorder, config_text, late_reads, rpc_ping, slow_sender, take, walk};
use hdrhistogram::Histogram;
use squall_cluster::client::KvClient;
use squall_cluster::config::ClusterConfig;
use squall_proto::NodeId;
use squall_proto::kvs::Key;
use squall_proto::lattice::LatticeValue;
use squall_verify::check;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const WRITERS: u64 = 4;

/// This process's limit on open files (inherited by the nodes it starts).
fn open_files() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default();
    line.split_whitespace().nth(3).and_then(|soft| soft.parse().ok()).unwrap_or(1024)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A loopback proxy to one node, for one other node's connections to it.
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a proxy");
        let addr = listener.local_addr().expect("addr");
        let (cut, watching) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if *watching.borrow() {
                    continue;
                }
                let mut cut = watching.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }

    /// Cuts (drops every connection, refuses new ones) or heals the link.
    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// One `squall node` process.
struct Node {
    id: u64,
    config: PathBuf,
    log: PathBuf,
    resp: SocketAddr,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the node's log");
        let child = Command::new(env!("CARGO_BIN_EXE_squall"))
            .args(["node", "--config"])
            .arg(&self.config)
            .args(["--id", &self.id.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start squall node");
        self.child = Some(child);
    }

    async fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.resp).await.is_err() {
            assert!(Instant::now() < deadline, "node {} did not come up", self.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("running").to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Resident memory, in KiB.
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// CPU time used so far (user and system), in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid().expect("running")))
            .expect("read /proc stat");
        let fields: Vec<&str> = stat.rsplit_once(')').expect("stat").1.split_whitespace().collect();
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
        }
        self.kill();
    }
}

/// One phase's record: operations begun in it (latency, acknowledged, write) and the nodes'
/// peak RSS. An operation counts in the phase it began in: one that waited out a deadline at a
/// paused node belongs to the pause, even if it ended after the resume.
struct Phase {
    name: String,
    started: Instant,
    ended: Option<Instant>,
    ops: Vec<(Duration, bool, bool)>,
    peak_rss: [u64; 3],
}

#[derive(Default)]
struct Meter {
    phases: Mutex<Vec<Phase>>,
    paused: AtomicBool,
    stop: AtomicBool,
}

impl Meter {
    fn begin(&self, name: &str) {
        let mut phases = self.phases.lock().expect("meter");
        let now = Instant::now();
        if let Some(last) = phases.last_mut() {
            last.ended = Some(now);
        }
        let phase = Phase {
            name: name.to_owned(),
            started: now,
            ended: None,
            ops: Vec::new(),
            peak_rss: [0; 3],
        };
        phases.push(phase);
    }

    fn record(&self, started: Instant, ok: bool, write: bool) {
        let latency = started.elapsed();
        let mut phases = self.phases.lock().expect("meter");
        if let Some(phase) = phases.iter_mut().rev().find(|phase| phase.started <= started) {
            phase.ops.push((latency, ok, write));
        }
    }

    fn rss(&self, node: usize, kib: u64) {
        if let Some(phase) = self.phases.lock().expect("meter").last_mut() {
            phase.peak_rss[node] = phase.peak_rss[node].max(kib);
        }
    }

    fn end(&self) {
        if let Some(last) = self.phases.lock().expect("meter").last_mut() {
            last.ended = Some(Instant::now());
        }
    }

    /// Acknowledged writes in the phase named `name`.
    fn acknowledged(&self, name: &str) -> usize {
        let phases = self.phases.lock().expect("meter");
        let phase = phases.iter().find(|p| p.name == name).expect("a phase of that name");
        phase.ops.iter().filter(|(_, ok, write)| *ok && *write).count()
    }

    fn peak_rss(&self, name: &str, node: usize) -> u64 {
        let phases = self.phases.lock().expect("meter");
        phases.iter().find(|p| p.name == name).expect("a phase of that name").peak_rss[node]
    }

    fn report(&self) -> String {
        let mut out = String::from(
            "| phase | s | ops/s | acknowledged writes | failed | p50 | p99 | max | peak RSS MB (0/1/2) |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for phase in self.phases.lock().expect("meter").iter() {
            let seconds = phase.ended.unwrap_or_else(Instant::now).duration_since(phase.started);
            let mut latency =
                Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
            let mut ok = 0;
            for (took, acknowledged, _) in &phase.ops {
                if *acknowledged {
                    ok += 1;
                    latency.saturating_record(took.as_micros() as u64);
                }
            }
            let writes = phase.ops.iter().filter(|(_, ok, write)| *ok && *write).count();
            let rss = phase.peak_rss.map(|kib| format!("{}", kib / 1024));
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.0} | {writes} | {} | {:.1} ms | {:.1} ms | {:.0} ms | {} |",
                phase.name,
                seconds.as_secs_f64(),
                ok as f64 / seconds.as_secs_f64(),
                phase.ops.len() - ok,
                latency.value_at_quantile(0.5) as f64 / 1000.0,
                latency.value_at_quantile(0.99) as f64 / 1000.0,
                latency.max() as f64 / 1000.0,
                rss.join("/"),
            );
        }
        out
    }
}

/// `WRITERS` sessions writing (and now and then reading) keys until the meter stops them;
/// every sixteenth write is to a key nobody writes again.
fn workload(
    config: &ClusterConfig,
    recorder: &Arc<Recorder>,
    meter: &Arc<Meter>,
) -> Vec<JoinHandle<()>> {
    (0..WRITERS)
        .map(|session| {
            let (recorder, meter) = (recorder.clone(), meter.clone());
            let client = KvClient::new(config);
            tokio::spawn(async move {
                let mut steps = walk(session, 16);
                while !meter.stop.load(Ordering::Relaxed) {
                    if meter.paused.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    let step = steps.next().expect("an endless walk");
                    let started = Instant::now();
                    let (write, ok) = take(&recorder, &client, session, step).await;
                    meter.record(started, ok, write);
                }
            })
        })
        .collect()
}

/// Every node's value of every key in `keys`, read from its own replica, once all three agree
/// twice in a row; panics after `limit`.
async fn converged(
    config: &ClusterConfig,
    keys: &[String],
    limit: Duration,
) -> Vec<(u64, std::collections::BTreeMap<Key, LatticeValue>)> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        let mut stores = Vec::new();
        for id in 0..3u64 {
            let client = KvClient::new(config).with_targets(vec![NodeId(id)]);
            let mut store = std::collections::BTreeMap::new();
            for key in keys {
                if let Ok(Some(value)) = client.get(key).await {
                    store.insert(key.clone(), value);
                }
            }
            stores.push((id, store));
        }
        let agreed = stores.windows(2).all(|w| w[0].1 == w[1].1);
        if agreed && last.as_ref() == Some(&stores) {
            return stores;
        }
        assert!(Instant::now() < deadline, "the replicas did not converge within {limit:?}");
        last = agreed.then_some(stores);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_processes_survive_kills_pauses_partitions_and_floods() {
    let phase = Duration::from_secs(env_or("SQUALL_FAULT_SECS", 2));
    let pause = Duration::from_secs(env_or("SQUALL_PAUSE_SECS", phase.as_secs()));
    // The flood's connections count against this process's and node 0's open-file limits:
    // within half of it (CI raises the limit; a host at 1,024 floods less).
    let flood = (env_or("SQUALL_FLOOD", 2000) as usize).min(open_files() / 2 - 300);
    let text = config_text("processes", 3, 0, 3);
    let config = ClusterConfig::parse(&text).expect("valid");
    let dir = config.cluster.data_dir.clone();
    std::fs::create_dir_all(&dir).expect("data dir");

    // proxies[i][j]: node i's way to node j.
    let mut proxies: Vec<Vec<Option<Proxy>>> = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3u64 {
        let mut own = text.clone();
        let mut row = Vec::new();
        for j in 0..3u64 {
            if i == j {
                row.push(None);
                continue;
            }
            let real = config.node(j).expect("node").rpc;
            let proxy = Proxy::start(real).await;
            own = own.replace(&format!("\"{real}\""), &format!("\"{}\"", proxy.addr));
            row.push(Some(proxy));
        }
        proxies.push(row);
        let path = dir.join(format!("node-{i}.toml"));
        std::fs::write(&path, own).expect("write a node's configuration");
        let resp = config.node(i).expect("node").resp.expect("a RESP port");
        let log = dir.join(format!("node-{i}.log"));
        let mut node = Node { id: i, config: path, log, resp, child: None };
        node.spawn();
        nodes.push(node);
    }
    for node in &nodes {
        node.wait_up().await;
    }
    let nodes = Arc::new(Mutex::new(nodes));
    let cut_off = |node: usize, cut: bool| {
        for (i, row) in proxies.iter().enumerate() {
            for (j, proxy) in row.iter().enumerate() {
                if let Some(proxy) = proxy.as_ref().filter(|_| i == node || j == node) {
                    proxy.set_cut(cut);
                }
            }
        }
    };

    let recorder = Recorder::new();
    let meter = Arc::new(Meter::default());
    let sampler = {
        let (nodes, meter) = (nodes.clone(), meter.clone());
        tokio::spawn(async move {
            while !meter.stop.load(Ordering::Relaxed) {
                for (n, node) in nodes.lock().expect("nodes").iter().enumerate() {
                    if let Some(kib) = node.rss_kib() {
                        meter.rss(n, kib);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    meter.begin("healthy");
    let tasks = workload(&config, &recorder, &meter);
    tokio::time::sleep(phase).await;

    nodes.lock().expect("nodes")[2].kill();
    meter.begin("node 2 killed");
    tokio::time::sleep(phase).await;
    // The survivors with no load and a dead peer: what do they burn?
    meter.paused.store(true, Ordering::Relaxed);
    meter.begin("node 2 killed, no load");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before: Vec<u64> = nodes.lock().expect("nodes")[..2].iter().map(Node::cpu_ticks).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: Vec<u64> = nodes.lock().expect("nodes")[..2].iter().map(Node::cpu_ticks).collect();
    let idle_ticks: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    meter.paused.store(false, Ordering::Relaxed);

    nodes.lock().expect("nodes")[2].spawn();
    let restarted = nodes.lock().expect("nodes")[2].resp;
    while TcpStream::connect(restarted).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    meter.begin("node 2 restarted");
    tokio::time::sleep(phase).await;

    nodes.lock().expect("nodes")[2].signal("-STOP");
    meter.begin("node 2 paused");
    tokio::time::sleep(pause).await;
    nodes.lock().expect("nodes")[2].signal("-CONT");
    meter.begin("resumed, 1st second");
    tokio::time::sleep(Duration::from_secs(1)).await;
    meter.begin("resumed, 2nd-5th seconds");
    tokio::time::sleep(Duration::from_secs(4)).await;
    meter.begin("resumed");
    tokio::time::sleep(phase).await;

    cut_off(2, true);
    meter.begin("node 2 cut off");
    tokio::time::sleep(phase).await;
    cut_off(2, false);
    meter.begin("partition healed");
    tokio::time::sleep(phase).await;

    // A flood on node 0's RPC port: slow senders first, then idle connections.
    let rpc0 = config.node(0).expect("node 0").rpc;
    meter.begin("flood on node 0");
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..50 {
        slow.spawn(slow_sender(rpc0, &[0, 0, 1, 0], phase + Duration::from_secs(15)));
    }
    let mut idle = Vec::new();
    for _ in 0..flood {
        if let Ok(stream) = TcpStream::connect(rpc0).await {
            idle.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newcomer_wait = rpc_ping(rpc0, config.limits.max_frame_bytes).await;
    tokio::time::sleep(phase.saturating_sub(Duration::from_millis(1100))).await;
    meter.end();
    drop(idle);
    slow.abort_all();

    meter.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("workload task");
    }
    sampler.await.expect("sampler");

    let keys = recorder.written_keys();
    let stores = converged(&config, &keys, Duration::from_secs(60)).await;
    let settled_at = late_reads(&config, &recorder, &[0, 1, 2]).await;
    let history = recorder.history(&stores, Some(settled_at));

    let report = meter.report();
    println!("{report}");
    println!("survivors' CPU over 1 s idle with node 2 dead: {idle_ticks:?} ticks (of 100)");
    println!(
        "a new client under the flood ({flood} idle, 50 slow) was served in {newcomer_wait:?}"
    );
    let (acked, failed, unknown) = recorder.write_outcomes();
    println!(
        "writes: {acked} acknowledged, {failed} failed, {unknown} unknown; {} keys",
        keys.len()
    );

    if let Err(anomaly) = check::all(&history) {
        panic!("{anomaly}\n{report}");
    }
    for faulted in ["node 2 killed", "node 2 paused", "node 2 cut off", "flood on node 0"] {
        assert!(meter.acknowledged(faulted) > 0, "no write acknowledged while {faulted}\n{report}");
    }
    assert!(
        newcomer_wait < Duration::from_secs(1),
        "the flood kept a new client {newcomer_wait:?}"
    );
    let healthy = meter.peak_rss("healthy", 2);
    let resumed = ["resumed, 1st second", "resumed, 2nd-5th seconds", "resumed"]
        .into_iter()
        .map(|name| meter.peak_rss(name, 2))
        .max()
        .unwrap_or_default();
    assert!(resumed < 10 * healthy, "node 2 grew from {healthy} KiB to {resumed} KiB\n{report}");
    assert!(
        idle_ticks.iter().all(|t| *t < 30),
        "idle survivors of a dead peer burn CPU: {idle_ticks:?} ticks in 1 s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
