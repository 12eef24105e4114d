//! Shared helpers of the loopback cluster tests: configurations on free ports, waiting for
//! quiescence, and recording histories for `squall-verify`'s checkers.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use squall_cluster::client::{KvClient, KvError};
use squall_cluster::config::ClusterConfig;
use squall_cluster::local::LocalNode;
use squall_proto::kvs::Key;
use squall_proto::lattice::{LatticeValue, Stamp};
use squall_verify::history::{Held, History, Level, Op, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client that begins a frame and then sends one byte every 100 ms (never finishing it):
/// returns how long the port kept it open, or `None` if it outlived `limit`.
pub async fn slow_sender(
    addr: SocketAddr,
    head: &'static [u8],
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.ok()?;
    if stream.write_all(head).await.is_err() {
        return Some(started.elapsed());
    }
    let (mut read, mut write) = stream.split();
    let drip = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b"x").await.is_err() {
                return;
            }
        }
    };
    let mut buf = [0u8; 64];
    let closed = async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = drip => Some(started.elapsed()),
        () = closed => Some(started.elapsed()),
        () = tokio::time::sleep(limit) => None,
    }
}

/// How long a new RPC client takes to connect to `addr` and be answered a ping.
pub async fn rpc_ping(addr: SocketAddr, max_frame: usize) -> Duration {
    let started = Instant::now();
    let client = squall_cluster::runtime::connect(addr, max_frame).await.expect("connect");
    client.ping(tarpc::context::current()).await.expect("a new RPC client is served");
    started.elapsed()
}

/// The hot keys the fault workloads write over and over.
pub const HOT_KEYS: usize = 24;

/// Hot key `i`.
pub fn key(i: usize) -> String {
    format!("k{i}")
}

/// What a fault workload's session does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read a hot key.
    Read(String),
    /// Write a key: a hot one, or one nobody writes again — were that acknowledged write
    /// lost, no later write could hide it from `lost-write`.
    Write(String),
}

/// One session's walk over the hot keys (a quarter of them read, the rest written), writing
/// a key nobody writes again every `unique_every`-th step.
pub fn walk(session: u64, unique_every: u64) -> impl Iterator<Item = Step> {
    let mut i = session as usize;
    (1u64..).map(move |n| {
        i = (i * 7 + 3) % HOT_KEYS;
        if i.is_multiple_of(4) {
            Step::Read(key(i))
        } else if n % unique_every == 1 % unique_every {
            Step::Write(format!("u{session}-{n}"))
        } else {
            Step::Write(key(i))
        }
    })
}

/// Takes `step` through `client` into `recorder`'s history; whether it was a write, and
/// whether it succeeded.
pub async fn take(
    recorder: &Recorder,
    client: &KvClient,
    session: u64,
    step: Step,
) -> (bool, bool) {
    match step {
        Step::Read(key) => (false, recorder.get(client, session, &key).await.is_ok()),
        Step::Write(key) => (true, recorder.put(client, session, &key).await.is_ok()),
    }
}

/// After quiescence: the time the replicas settled at, then one read of every hot key through
/// each of `members`' own replicas (each must see the settled version).
pub async fn late_reads(config: &ClusterConfig, recorder: &Recorder, members: &[u64]) -> u64 {
    let settled_at = recorder.now();
    for id in members {
        let client = KvClient::new(config).with_targets(vec![squall_proto::NodeId(*id)]);
        for i in 0..HOT_KEYS {
            recorder.get(&client, 1000 + id, &key(i)).await.expect("late read");
        }
    }
    settled_at
}

/// A free loopback port (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A fresh, empty data directory for test `name`.
pub fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("squall-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A configuration of `initial` nodes plus `joiners` that join later, on free ports, with
/// short timers and client timeouts.
pub fn config(name: &str, initial: usize, joiners: usize, replication: usize) -> ClusterConfig {
    ClusterConfig::parse(&config_text(name, initial, joiners, replication))
        .expect("test configuration is valid")
}

/// The TOML text of [`config`], for a `squall` process to read.
pub fn config_text(name: &str, initial: usize, joiners: usize, replication: usize) -> String {
    let mut text = format!(
        "[cluster]\nreplication = {replication}\nvirtual_nodes = 16\ndata_dir = {:?}\n\
         [client]\ntimeout_ms = 500\nattempts = 6\n\
         [limits]\nmax_value_bytes = 65536\nmax_frame_bytes = 131072\ndrain_ms = 500\n",
        data_dir(name)
    );
    // Two ports the system handed out in turn may be the same one: draw until all differ.
    let mut ports = std::collections::BTreeSet::new();
    while ports.len() < 2 * (initial + joiners) {
        ports.insert(free_port());
    }
    let mut ports = ports.into_iter();
    for id in 0..initial + joiners {
        let (rpc, resp) = (ports.next().expect("drawn"), ports.next().expect("drawn"));
        text.push_str(&format!(
            "[[node]]\nid = {id}\nrpc = \"127.0.0.1:{rpc}\"\nresp = \"127.0.0.1:{resp}\"\njoin = {}\n",
            id >= initial
        ));
    }
    text
}

/// Starts node `id`, retrying while its old ports are still being released.
pub async fn start(config: &ClusterConfig, id: u64) -> LocalNode {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match LocalNode::start(config, id).await {
            Ok(node) => return node,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("node {id} did not start: {e:#}"),
        }
    }
}

/// A node's store, if it is a storage node that answered.
pub async fn store(node: &LocalNode) -> Option<(bool, BTreeMap<Key, LatticeValue>)> {
    node.handle().inspect(|s| (s.is_idle(), s.store().clone())).await
}

/// Waits until every node is idle (nothing behind, nothing pending) with identical stores, and
/// returns the stores; panics after `limit`.
pub async fn quiesce(nodes: &[&LocalNode], limit: Duration) -> Vec<BTreeMap<Key, LatticeValue>> {
    let deadline = Instant::now() + limit;
    loop {
        let mut stores = Vec::new();
        let mut idle = true;
        for node in nodes {
            let (is_idle, store) = store(node).await.expect("storage node answers");
            idle &= is_idle;
            stores.push(store);
        }
        if idle && stores.windows(2).all(|w| w[0] == w[1]) {
            return stores;
        }
        assert!(Instant::now() < deadline, "the cluster did not quiesce within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `nodes` hold identical stores, unchanged over two polls 100 ms apart, and
/// returns them; panics after `limit`. For survivors of a node killed for good, which stay
/// busy re-sending to it (so [`quiesce`] would never return) but agree among themselves.
pub async fn agree(nodes: &[&LocalNode], limit: Duration) -> Vec<BTreeMap<Key, LatticeValue>> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        let mut stores = Vec::new();
        for node in nodes {
            stores.push(store(node).await.expect("storage node answers").1);
        }
        let agreed = stores.windows(2).all(|w| w[0] == w[1]);
        if agreed && last.as_ref() == Some(&stores) {
            return stores;
        }
        assert!(Instant::now() < deadline, "the nodes did not agree within {limit:?}");
        last = agreed.then_some(stores);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One recorded operation before versions are assigned: LWW stamps stand for versions until
/// [`Recorder::history`] ranks them.
#[derive(Clone, Debug)]
struct Raw {
    session: u64,
    txn: u64,
    write: bool,
    key: Key,
    stamp: Option<Stamp>,
    invoke: u64,
    complete: Option<u64>,
    status: Status,
}

/// Records a history of LWW operations from many tasks; a logical clock orders invocations and
/// completions.
#[derive(Debug, Default)]
pub struct Recorder {
    clock: AtomicU64,
    txns: AtomicU64,
    ops: std::sync::Mutex<Vec<Raw>>,
}

fn stamp_of(value: &LatticeValue) -> Option<Stamp> {
    match value {
        LatticeValue::Lww(lww) => lww.stamp(),
        _ => None,
    }
}

impl Recorder {
    /// A new recorder, shared by the workload tasks.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The current logical time.
    pub fn now(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Writes `key` through `client` as session `session`, recording the outcome.
    pub async fn put(&self, client: &KvClient, session: u64, key: &str) -> Result<(), KvError> {
        let value = client.lww(bytes::Bytes::from(format!("s{session}")));
        let stamp = stamp_of(&value);
        let invoke = self.now();
        let result = client.put(key, value).await;
        let complete = self.now();
        let status = match &result {
            Ok(()) => Status::Ok,
            Err(e) if e.is_definite() => Status::Failed,
            Err(_) => Status::Unknown,
        };
        self.push(Raw {
            session,
            txn: self.txns.fetch_add(1, Ordering::SeqCst),
            write: true,
            key: key.to_owned(),
            stamp,
            invoke,
            complete: (status == Status::Ok).then_some(complete),
            status,
        });
        result
    }

    /// Reads `key` through `client` as session `session`, recording what it returned.
    pub async fn get(&self, client: &KvClient, session: u64, key: &str) -> Result<(), KvError> {
        let invoke = self.now();
        let result = client.get(key).await;
        let complete = self.now();
        let (stamp, status) = match &result {
            Ok(value) => (value.as_ref().and_then(stamp_of), Status::Ok),
            Err(_) => (None, Status::Unknown),
        };
        self.push(Raw {
            session,
            txn: self.txns.fetch_add(1, Ordering::SeqCst),
            write: false,
            key: key.to_owned(),
            stamp,
            invoke,
            complete: (status == Status::Ok).then_some(complete),
            status,
        });
        result.map(|_| ())
    }

    fn push(&self, raw: Raw) {
        self.ops.lock().expect("recorder lock").push(raw);
    }

    /// The history: every key's LWW stamps ranked into versions `1..` (stamp order is LWW
    /// order), reads mapped to the versions they returned (a stamp nobody wrote gets a version
    /// of its own, which `thin-air` reports), and `settled` built from the replicas' final
    /// stores, a replica missing a key holding version 0.
    pub fn history(
        &self,
        settled: &[(u64, BTreeMap<Key, LatticeValue>)],
        settled_at: Option<u64>,
    ) -> History {
        let ops = self.ops.lock().expect("recorder lock").clone();
        let mut stamps: BTreeMap<Key, Vec<Stamp>> = BTreeMap::new();
        for raw in ops.iter().filter(|raw| raw.write) {
            stamps.entry(raw.key.clone()).or_default().extend(raw.stamp);
        }
        // Each key's stamps in LWW order, ranked once: version = rank + 1.
        let mut ranks: std::collections::HashMap<(&str, Stamp), u64> = Default::default();
        for (key, stamps) in &stamps {
            let mut sorted = stamps.clone();
            sorted.sort();
            for (rank, stamp) in sorted.into_iter().enumerate() {
                ranks.entry((key.as_str(), stamp)).or_insert(rank as u64 + 1);
            }
        }
        let mut unknown = 1_000_000_000;
        let mut version = |key: &str, stamp: Option<Stamp>| -> u64 {
            let Some(stamp) = stamp else { return 0 };
            ranks.get(&(key, stamp)).copied().unwrap_or_else(|| {
                unknown += 1;
                unknown
            })
        };
        let mut history = History::default();
        for raw in &ops {
            let v = version(&raw.key, raw.stamp);
            let op = if raw.write {
                Op::write(raw.session, raw.txn, Level::Majority, &raw.key, v)
            } else {
                Op::read(raw.session, raw.txn, Level::Majority, &raw.key, v)
            };
            history.ops.push(op.at(raw.invoke, raw.complete).with_status(raw.status));
        }
        let keys: Vec<Key> = stamps.keys().cloned().collect();
        for (replica, store) in settled {
            for key in &keys {
                let v = version(key, store.get(key).and_then(stamp_of));
                history.settled.push(Held { replica: *replica, key: key.clone(), version: v });
            }
        }
        history.settled_at = settled_at;
        history
    }

    /// Every key written (whatever the outcome), once each.
    pub fn written_keys(&self) -> Vec<String> {
        let ops = self.ops.lock().expect("recorder lock");
        let keys: std::collections::BTreeSet<String> =
            ops.iter().filter(|r| r.write).map(|r| r.key.clone()).collect();
        keys.into_iter().collect()
    }

    /// Keys some read invoked at or after `after` returned older than (or without) the newest
    /// acknowledged write to them: acknowledged writes that were lost.
    pub fn acknowledged_but_unread(&self, after: u64) -> Vec<String> {
        let ops = self.ops.lock().expect("recorder lock");
        let mut newest: BTreeMap<&str, Stamp> = BTreeMap::new();
        for raw in ops.iter().filter(|r| r.write && r.status == Status::Ok) {
            if let Some(stamp) = raw.stamp {
                let entry = newest.entry(&raw.key).or_insert(stamp);
                *entry = (*entry).max(stamp);
            }
        }
        let mut lost: Vec<String> = ops
            .iter()
            .filter(|r| !r.write && r.status == Status::Ok && r.invoke >= after)
            .filter(|r| newest.get(r.key.as_str()).is_some_and(|acked| r.stamp < Some(*acked)))
            .map(|r| r.key.clone())
            .collect();
        lost.dedup();
        lost
    }

    /// Counts of (acknowledged, definitely failed, unknown) writes.
    pub fn write_outcomes(&self) -> (usize, usize, usize) {
        let ops = self.ops.lock().expect("recorder lock");
        let count = |s| ops.iter().filter(|r| r.write && r.status == s).count();
        (count(Status::Ok), count(Status::Failed), count(Status::Unknown))
    }
}
