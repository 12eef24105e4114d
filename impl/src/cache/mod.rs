//! The per-worker cache: serves its executors' gets and puts at memory speed, fetches misses
//! from the KVS, writes puts through, and keeps cached keys fresh by subscribing to them.
//!
//! A miss subscribes to the key at every replica (a `Fetch`, carrying the cache's fetch
//! epoch); the first push of the key stamped at or after that epoch (with `None` for a key the
//! replica does not hold) fills the entry and answers every executor waiting on it, so one
//! fetch per key is in flight however many executors miss. While the key stays cached,
//! each replica pushes its value whenever the key grows, and re-sends until the cache
//! acknowledges a value covering it; the cache merges every push, so pushes from replicas in
//! any order only ever move an entry forward. The cache renews its subscriptions every
//! `renew_period`, which also keeps its lease at each replica and re-sends lost fetches.
//!
//! A put is written through to the key's replicas at the executor's durability, and the
//! executor is acknowledged only once the KVS acknowledged it. Entries are evicted least
//! recently used first, by a logical access counter, beyond `max_keys`; eviction unsubscribes.
//! A cache that restarts comes back empty.
//!
//! Specified on [the cache page](crate::spec::cache).

pub mod invariants;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::base::{mutants, seeded_defects};
use crate::kvs::{
    Durability, Key, KvsMsg, KvsTimer, Membership, PutError, ReqId, Ring, ScriptedClient,
    StorageNode,
};
use crate::lattice::LatticeValue;
use crate::node::{Input, Node, NodeId, Outbox, Violation};

type Out = Outbox<CacheNode>;

mutants! {
    /// Seeded defects of the cache that the model checker and the simulator must catch. (The
    /// storage side of subscriptions has its own, in [`crate::kvs::Mutant`].)
    pub enum Mutant {
        /// The cache acknowledges an executor's put before the KVS acknowledged it.
        AckExecutorEarly => "ack-executor-early",
        /// A push replaces the cached value instead of merging into it (Anna's cache on a type
        /// change), so a push from a lagging replica takes the cache back.
        PushOverwrites => "push-overwrites",
        /// The cache acknowledges pushes but does not apply them.
        IgnorePushes => "ignore-pushes",
        /// A cache miss on a key the KVS does not hold caches and returns bottom.
        CacheMissAsBottom => "cache-miss-as-bottom",
        /// The cache never passes the KVS's acknowledgement of a write-through on to its
        /// executor.
        ForgetExecutorAck => "forget-executor-ack",
        /// A restarted cache takes pushes meant for its predecessor, which may answer fetches
        /// made before a write.
        PushIgnoresIncarnation => "push-ignores-incarnation",
    }
}

crate::world! {
    /// A KVS with caches: storage nodes, caches, and scripted applications with their clients
    /// (an executor is one whose client goes through a cache: `ClientConfig::via`).
    pub enum CachedKvsNode, config CachedKvsConfig {
        msg: KvsMsg, timer: KvsTimer, durable: crate::kvs::Stored;
        /// A storage node.
        Storage(StorageNode),
        /// A scripted application (or executor) with its client.
        Client(ScriptedClient),
        /// A cache.
        Cache(CacheNode),
    }
}

/// How a cache is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CacheConfig {
    /// This cache.
    pub id: NodeId,
    /// The ring the cache starts routing fetches, subscriptions and write-throughs by; views
    /// learned from storage nodes then update it.
    pub ring: Ring,
    /// The replication factor of every key.
    pub replication: usize,
    /// The most keys the cache holds; beyond it the least recently used is evicted.
    pub max_keys: u32,
    /// The most bytes of keys and payloads ([`LatticeValue::payload_len`]) the cache holds;
    /// beyond it the least recently used entries are evicted. An entry larger than this on its
    /// own is still cached, alone.
    pub max_bytes: u64,
    /// The most write-throughs in flight; more are refused as overloaded.
    pub max_writes: u32,
    /// How often subscriptions are renewed (well under the replicas' `lease_period`), which
    /// also re-sends lost fetches. `None`: never — only for a network that loses nothing,
    /// against replicas without leases (a model checking other things).
    pub renew_period: Option<Duration>,
    /// How long to wait for the KVS to answer a write-through before re-sending it.
    pub retry_after: Duration,
    /// Attempts per write-through before leaving the executor to time out (indefinite).
    pub max_attempts: u32,
    /// The seeded defect this cache carries, if any.
    #[cfg(feature = "mutants")]
    #[cfg_attr(feature = "serde", serde(skip))]
    pub mutant: Option<Mutant>,
}

impl CacheConfig {
    /// A correct cache `id` over `ring` with default bounds and periods.
    pub fn new(id: NodeId, ring: Ring, replication: usize) -> Self {
        Self {
            id,
            ring,
            replication,
            max_keys: 100_000,
            max_bytes: 256 << 20,
            max_writes: 10_000,
            renew_period: Some(Duration::from_secs(1)),
            retry_after: Duration::from_millis(100),
            max_attempts: 3,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }
}

/// A cached key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The value, `None` for a key the KVS did not hold when fetched.
    pub value: Option<LatticeValue>,
    /// The access counter at the entry's last use.
    used: u64,
}

/// A put being written through to the KVS.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct WriteThrough {
    executor: NodeId,
    req: ReqId,
    key: Key,
    value: LatticeValue,
    durability: Durability,
    /// Attempts made so far, the first being 0. Every attempt uses the same request number,
    /// so an acknowledgement of any of them settles the write.
    attempt: u32,
    /// Whether a `WriteRetry` tick has passed since the last attempt: the next tick retries.
    waited: bool,
    /// The replicas a redirect named, which later attempts use instead of the cache's ring.
    route: Option<Vec<NodeId>>,
}

/// A cache's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheNode {
    /// How many times this cache has started, persisted: replicas ignore what an earlier
    /// incarnation sent.
    incarnation: u32,
    /// The cache's view of the ring: the configured one, merged with every view a storage
    /// node sent it.
    ring: Ring,
    entries: BTreeMap<Key, Entry>,
    /// The bytes of keys and payloads of `entries`.
    bytes: u64,
    /// The logical access counter.
    clock: u64,
    /// Keys being fetched: the epoch each fetch began at, and the `(executor, request)` gets
    /// waiting on it.
    fetching: BTreeMap<Key, (u64, BTreeSet<(NodeId, ReqId)>)>,
    /// The fetch epoch, carried by every `Fetch`; replicas stamp their pushes of a key with
    /// the latest epoch the cache fetched it at. It advances when a key leaves the cache and
    /// when a write-through of a key being fetched is acknowledged, so a push sent before
    /// either can no longer resolve a fetch: it may predate a write an executor has seen
    /// acknowledged.
    epoch: u64,
    /// Write-throughs by the cache's own request number.
    writes: BTreeMap<ReqId, WriteThrough>,
    /// The next write-through's request number: the incarnation in the high 32 bits, so an
    /// answer to a request from before a restart never matches a new one.
    next_req: ReqId,
    /// The highest request number seen from each executor: an executor numbers its requests
    /// in order, so anything at or below it is a duplicate (or older than an answered one)
    /// and is ignored. Without this, duplicated gets would advance the access counter for
    /// ever, and a duplicated put would be written through twice.
    seen: BTreeMap<NodeId, ReqId>,
}

impl CacheNode {
    /// See [`Node::init`].
    fn start(cfg: &CacheConfig, persisted: u32, out: &mut Out) -> Self {
        let incarnation = persisted + 1;
        out.persist(incarnation);
        Self {
            incarnation,
            ring: cfg.ring.clone(),
            entries: BTreeMap::new(),
            bytes: 0,
            clock: 0,
            fetching: BTreeMap::new(),
            epoch: 0,
            writes: BTreeMap::new(),
            next_req: ReqId::from(incarnation) << 32,
            seen: BTreeMap::new(),
        }
    }

    /// The replicas of `key` by the cache's view of the ring.
    fn replicas(&self, cfg: &CacheConfig, key: &str) -> Vec<NodeId> {
        self.ring.responsible(key, cfg.replication)
    }

    /// How many times this cache has started.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The cache's view of the ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The cached entries.
    pub fn entries(&self) -> &BTreeMap<Key, Entry> {
        &self.entries
    }

    /// The bytes of keys and payloads cached.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing is in flight: no fetch, no write-through.
    pub fn is_idle(&self) -> bool {
        self.fetching.is_empty() && self.writes.is_empty()
    }

    fn step(&mut self, cfg: &CacheConfig, input: Input<Self>, out: &mut Out) {
        match input {
            Input::Receive { from, msg: KvsMsg::Get { req, .. } | KvsMsg::Put { req, .. } }
                if self.seen.get(&from).is_some_and(|seen| req <= *seen) =>
            {
                out.ignore("duplicate or outdated executor request");
            }
            Input::Receive { from, msg: KvsMsg::Get { req, key } } => {
                self.seen.insert(from, req);
                self.get(cfg, from, req, key, out);
            }
            Input::Receive { from, msg: KvsMsg::Put { req, key, value, durability } } => {
                self.seen.insert(from, req);
                let write = WriteThrough {
                    executor: from,
                    req,
                    key,
                    value,
                    durability,
                    attempt: 0,
                    waited: false,
                    route: None,
                };
                self.put(cfg, write, out);
            }
            Input::Receive { msg: KvsMsg::Push { incarnation, .. }, .. }
                if incarnation != self.incarnation && !cfg.has(Mutant::PushIgnoresIncarnation) =>
            {
                out.ignore("a push meant for another incarnation of this cache");
            }
            Input::Receive { from, msg: KvsMsg::Push { entries, epochs, .. } } => {
                self.push(cfg, from, entries, epochs, out)
            }
            Input::Receive { msg: KvsMsg::PutOk { req }, .. } if self.writes.contains_key(&req) => {
                let write = self.writes.remove(&req).expect("guarded");
                // The KVS holds it now; types were checked when the put arrived.
                self.update(&write.key, |entry| match &mut entry.value {
                    Some(cached) => {
                        let _ = cached.merge(write.value.clone());
                    }
                    None => entry.value = Some(write.value.clone()),
                });
                self.evict(cfg, &write.key, out);
                if self.fetching.contains_key(&write.key) {
                    // An answer already on its way may predate this write: wait for a newer.
                    self.epoch += 1;
                    self.refetch(cfg, &write.key, out);
                }
                if !cfg.has(Mutant::AckExecutorEarly) && !cfg.has(Mutant::ForgetExecutorAck) {
                    out.send(write.executor, KvsMsg::PutOk { req: write.req });
                }
            }
            Input::Receive { msg: KvsMsg::PutRejected { req, error }, .. }
                if self.writes.contains_key(&req) =>
            {
                let write = self.writes.remove(&req).expect("guarded");
                // Definite only for the first attempt; otherwise the executor times out.
                if write.attempt == 0 {
                    out.send(write.executor, KvsMsg::PutRejected { req: write.req, error });
                }
            }
            Input::Receive { msg: KvsMsg::Redirect { req, owners, .. }, .. }
                if self.writes.contains_key(&req) =>
            {
                let mut write = self.writes.remove(&req).expect("guarded");
                write.attempt += 1;
                write.route = Some(owners);
                self.send_attempt(cfg, req, write, out);
            }
            Input::Receive { msg: KvsMsg::RingUpdate { members, .. }, .. } => {
                self.adopt(cfg, &members, out);
            }
            Input::Receive { .. } => out.ignore("message a cache does not expect"),
            Input::Timeout(KvsTimer::Renew) => self.renew(cfg, out),
            Input::Timeout(KvsTimer::WriteRetry) => self.retry_writes(cfg, out),
            Input::Timeout(_) => out.ignore("another role's timer"),
        }
    }

    fn get(&mut self, cfg: &CacheConfig, executor: NodeId, req: ReqId, key: Key, out: &mut Out) {
        self.clock += 1;
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.used = self.clock;
            return out.send(executor, KvsMsg::GetOk { req, value: entry.value.clone() });
        }
        if let Some((_, waiting)) = self.fetching.get_mut(&key) {
            waiting.insert((executor, req));
            return;
        }
        let was_idle = self.entries.is_empty() && self.fetching.is_empty();
        self.fetching.insert(key.clone(), (self.epoch, BTreeSet::from([(executor, req)])));
        self.refetch(cfg, &key, out);
        if was_idle && let Some(period) = cfg.renew_period {
            out.set_timer(KvsTimer::Renew, period);
        }
    }

    /// (Re)starts the fetch of `key` at the current epoch: a `Fetch` to each replica.
    fn refetch(&mut self, cfg: &CacheConfig, key: &Key, out: &mut Out) {
        let Some((since, _)) = self.fetching.get_mut(key) else { return };
        *since = self.epoch;
        for replica in self.replicas(cfg, key) {
            let (incarnation, epoch) = (self.incarnation, self.epoch);
            let keys = BTreeSet::from([key.clone()]);
            out.send(replica, KvsMsg::Fetch { incarnation, keys, epoch });
        }
    }

    fn put(&mut self, cfg: &CacheConfig, write: WriteThrough, out: &mut Out) {
        let cached = self.entries.get(&write.key).and_then(|e| e.value.as_ref());
        if let Some(cached) = cached
            && cached.lattice_type() != write.value.lattice_type()
        {
            let error = PutError::mismatch(cached.lattice_type(), write.value.lattice_type());
            return out.send(write.executor, KvsMsg::PutRejected { req: write.req, error });
        }
        if self.writes.len() >= cfg.max_writes as usize {
            let error = PutError::Overloaded;
            return out.send(write.executor, KvsMsg::PutRejected { req: write.req, error });
        }
        if cfg.has(Mutant::AckExecutorEarly) {
            out.send(write.executor, KvsMsg::PutOk { req: write.req });
        }
        self.start_write(cfg, write, out);
    }

    /// Starts a write-through under a new request number, which all its attempts share.
    fn start_write(&mut self, cfg: &CacheConfig, write: WriteThrough, out: &mut Out) {
        let req = self.next_req;
        self.next_req += 1;
        if self.writes.is_empty() {
            out.set_timer(KvsTimer::WriteRetry, cfg.retry_after);
        }
        self.send_attempt(cfg, req, write, out);
    }

    /// Sends attempt `write.attempt` to the next replica in turn (of the redirect's owners,
    /// if one came), or gives up after `max_attempts` (the executor then times out).
    fn send_attempt(
        &mut self,
        cfg: &CacheConfig,
        req: ReqId,
        mut write: WriteThrough,
        out: &mut Out,
    ) {
        if write.attempt >= cfg.max_attempts {
            return out.ignore("write-through out of attempts; the executor times out");
        }
        let owners = write.route.clone().unwrap_or_else(|| self.replicas(cfg, &write.key));
        let Some(to) = owners.get(write.attempt as usize % owners.len().max(1)).copied() else {
            return out.ignore("no storage node to write through to");
        };
        let (key, value, durability) = (write.key.clone(), write.value.clone(), write.durability);
        out.send(to, KvsMsg::Put { req, key, value, durability });
        write.waited = false;
        self.writes.insert(req, write);
    }

    /// A `WriteRetry` tick: every write-through that has waited a whole tick is sent again;
    /// the others start waiting. Each write waits between one and two periods, and the timer
    /// is never pushed back by new writes.
    fn retry_writes(&mut self, cfg: &CacheConfig, out: &mut Out) {
        let due: Vec<ReqId> =
            self.writes.iter().filter(|(_, w)| w.waited).map(|(req, _)| *req).collect();
        self.writes.values_mut().for_each(|write| write.waited = true);
        for req in due {
            let mut write = self.writes.remove(&req).expect("due writes are pending");
            write.attempt += 1;
            self.send_attempt(cfg, req, write, out);
        }
        if !self.writes.is_empty() {
            out.set_timer(KvsTimer::WriteRetry, cfg.retry_after);
        }
    }

    fn push(
        &mut self,
        cfg: &CacheConfig,
        replica: NodeId,
        entries: BTreeMap<Key, Option<LatticeValue>>,
        epochs: BTreeMap<Key, u64>,
        out: &mut Out,
    ) {
        let (mut acked, mut unwanted) = (BTreeMap::new(), BTreeSet::new());
        for (key, pushed) in entries {
            if let Some((since, _)) = self.fetching.get(&key)
                && epochs.get(&key).copied().unwrap_or(0) < *since
            {
                // Sent before this fetch began: not its answer, nor acknowledged (the replica
                // re-sends a push of grown keys, and answers the fetch's own `Fetch`).
                out.ignore("a push older than the fetch it would answer");
                continue;
            }
            if let Some((_, waiting)) = self.fetching.remove(&key) {
                let pushed = match pushed {
                    None if cfg.has(Mutant::CacheMissAsBottom) => {
                        Some(LatticeValue::bottom(crate::lattice::LatticeType::Lww))
                    }
                    pushed => pushed,
                };
                self.clock += 1;
                let entry = Entry { value: pushed.clone(), used: self.clock };
                for (executor, req) in waiting {
                    out.send(executor, KvsMsg::GetOk { req, value: pushed.clone() });
                }
                self.bytes += entry_bytes(&key, &entry);
                self.entries.insert(key.clone(), entry);
                self.evict(cfg, &key, out);
            } else if self.entries.contains_key(&key) {
                if cfg.has(Mutant::IgnorePushes) {
                    // Claims the pushed value without taking it.
                    acked.extend(pushed.map(|v| (key, v)));
                    continue;
                }
                self.update(&key, |entry| apply(cfg, entry, pushed));
                self.evict(cfg, &key, out);
            } else {
                unwanted.insert(key);
                continue;
            }
            if let Some(Entry { value: Some(value), .. }) = self.entries.get(&key) {
                acked.insert(key, value.clone());
            }
        }
        if !acked.is_empty() {
            out.send(replica, KvsMsg::PushAck { incarnation: self.incarnation, entries: acked });
        }
        if !unwanted.is_empty() {
            out.send(
                replica,
                KvsMsg::Unsubscribe { incarnation: self.incarnation, keys: unwanted },
            );
        }
    }

    /// Changes the entry of `key`, if cached, keeping `bytes` up to date.
    fn update(&mut self, key: &str, change: impl FnOnce(&mut Entry)) {
        if let Some(entry) = self.entries.get_mut(key) {
            self.bytes -= entry_bytes(key, entry);
            change(entry);
            self.bytes += entry_bytes(key, entry);
        }
    }

    /// Evicts least recently used entries other than `keep` down to `max_keys` and
    /// `max_bytes`.
    fn evict(&mut self, cfg: &CacheConfig, keep: &str, out: &mut Out) {
        while self.entries.len() > cfg.max_keys as usize || self.bytes > cfg.max_bytes {
            let victim = self
                .entries
                .iter()
                .filter(|(key, _)| key.as_str() != keep)
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone());
            let Some(victim) = victim else { return };
            let entry = self.entries.remove(&victim).expect("chosen among the entries");
            self.bytes -= entry_bytes(&victim, &entry);
            // A later fetch of it must not take an answer from before (see `epoch`).
            self.epoch += 1;
            for replica in self.replicas(cfg, &victim) {
                let keys = BTreeSet::from([victim.clone()]);
                out.send(replica, KvsMsg::Unsubscribe { incarnation: self.incarnation, keys });
            }
        }
    }

    /// Merges a storage node's view of the membership; every key whose replicas changed is
    /// subscribed at its new replicas (the old ones dropped it when they learned the view).
    fn adopt(&mut self, cfg: &CacheConfig, members: &Membership, out: &mut Out) {
        if self.ring.covers(members) {
            return out.ignore("a view the cache already has");
        }
        let old = self.ring.clone();
        self.ring.merge(members);
        self.subscribe_where(
            cfg,
            |(replica, key)| !old.responsible(key, cfg.replication).contains(replica),
            out,
        );
    }

    /// Renews every subscription and re-sends every fetch, at most two messages per replica.
    fn renew(&mut self, cfg: &CacheConfig, out: &mut Out) {
        let sent = self.subscribe_where(cfg, |_| true, out);
        if !sent {
            return out.ignore("renewal with nothing cached");
        }
        if let Some(period) = cfg.renew_period {
            out.set_timer(KvsTimer::Renew, period);
        }
    }

    /// Sends, to every replica `to` for which `wanted(to, key)`, a `Subscribe` of the cached
    /// keys and a `Fetch` of the keys being fetched; returns whether it sent anything.
    fn subscribe_where(
        &self,
        cfg: &CacheConfig,
        wanted: impl Fn(&(NodeId, &Key)) -> bool,
        out: &mut Out,
    ) -> bool {
        let batches = |keys: &mut dyn Iterator<Item = &Key>| {
            let mut batches: BTreeMap<NodeId, BTreeSet<Key>> = BTreeMap::new();
            for key in keys {
                for replica in self.replicas(cfg, key) {
                    if wanted(&(replica, key)) {
                        batches.entry(replica).or_default().insert(key.clone());
                    }
                }
            }
            batches
        };
        let subscribe = batches(&mut self.entries.keys());
        let fetch = batches(&mut self.fetching.keys());
        let sent = !subscribe.is_empty() || !fetch.is_empty();
        for (replica, keys) in subscribe {
            out.send(replica, KvsMsg::Subscribe { incarnation: self.incarnation, keys });
        }
        for (replica, keys) in fetch {
            let (incarnation, epoch) = (self.incarnation, self.epoch);
            out.send(replica, KvsMsg::Fetch { incarnation, keys, epoch });
        }
        sent
    }

    /// CACHE-I2: while a key stays cached, its value never goes backwards.
    fn monotone(before: &Self, after: &Self) -> Result<(), Violation> {
        for (key, old) in &before.entries {
            let Some(new) = after.entries.get(key) else { continue };
            let forward = match (&old.value, &new.value) {
                (None, _) => true,
                (Some(old), Some(new)) => old.lattice_le(new),
                (Some(_), None) => false,
            };
            if !forward {
                return Err(Violation {
                    id: invariants::MONOTONE_READS,
                    detail: format!("{key}: {:?} became {:?}", old.value, new.value),
                });
            }
        }
        Ok(())
    }
}

/// The bytes an entry counts against `max_bytes`.
fn entry_bytes(key: &str, entry: &Entry) -> u64 {
    (key.len() + entry.value.as_ref().map_or(0, LatticeValue::payload_len)) as u64
}

/// Applies a pushed value to a cached entry: a merge (a push of another type is ignored).
fn apply(cfg: &CacheConfig, entry: &mut Entry, pushed: Option<LatticeValue>) {
    let Some(pushed) = pushed else { return };
    match &mut entry.value {
        None => entry.value = Some(pushed),
        Some(_) if cfg.has(Mutant::PushOverwrites) => entry.value = Some(pushed),
        Some(cached) => {
            let _ = cached.merge(pushed);
        }
    }
}

seeded_defects!(CacheConfig, Mutant);

impl Node for CacheNode {
    type Config = CacheConfig;
    type Msg = KvsMsg;
    type Timer = KvsTimer;
    /// The cache's incarnation.
    type Durable = u32;

    /// Starts (or restarts, with the incarnation it persisted) a cache: empty, routing by the
    /// configured ring, numbering its requests from its new incarnation.
    fn init(cfg: &CacheConfig, persisted: &u32, out: &mut Out) -> Self {
        Self::start(cfg, *persisted, out)
    }

    fn handle(&mut self, cfg: &CacheConfig, input: Input<Self>, out: &mut Out) {
        self.step(cfg, input, out);
    }

    /// CACHE-I2: while a key stays cached, its value never goes backwards.
    fn check_step(_: &CacheConfig, before: &Self, after: &Self) -> Result<(), Violation> {
        Self::monotone(before, after)
    }

    /// No fetch and no write-through in flight.
    fn is_idle(&self, _: &CacheConfig) -> bool {
        self.is_idle()
    }
}
