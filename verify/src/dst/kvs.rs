//! The KVS world: 3–7 storage nodes at replication 1–3, 2–4 caches (of 2 keys, or of 16) each
//! with one executor reading and writing through it, and two clients routing by the ring
//! themselves; four LWW keys. Each client session writes at one durability (one, majority or
//! all); a direct client may also put a value of the wrong lattice type, which must be refused.
//!
//! Half the seeds (*crash* shape) let one storage node (at replication 2 or 3) and the caches
//! crash and restart; the other half (*membership* shape) add a joining storage node and ask
//! one or two members to leave, with only caches crashing. Once settled, the late phases:
//! sessions that read every key and write one of their own; a faulty phase in which a writer
//! updates every key while sessions behind the caches write and read back every key; and
//! sessions that must read the settled values. History: every client operation with its
//! invocation and completion (the simulator's event count) and what every replica of each key
//! settled on, and when.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use squall_proto::cache::{
    CacheConfig, CachedKvsConfig, CachedKvsNode, invariants as cache_invariants,
};
use squall_proto::kvs::{
    ClientConfig, Durability, Op as KvsOp, Outcome, Ring, ScriptConfig, StorageConfig, StorageNode,
    invariants,
};
use squall_proto::lattice::{LatticeType, LatticeValue, Lww, SetUnion, Stamp, WriterId};
use squall_proto::sim::{Faults, Sim};
use squall_proto::{Hosts, NodeId};

use super::{
    Mutant, Partition, Phase, Timing, Versions, WorldReport, faults, judge, liveness,
    protocol_checks, rng, safety,
};
use crate::history::{Held, History, INITIAL, Level, Op, Status};

const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
const SAFETY_STEPS: u64 = 5_000;
const LIVENESS_STEPS: u64 = 400_000;
/// Steps of the late writer's faulty phase.
const LATE_STEPS: u64 = 3_000;

/// One client session: its operations, the level they promise, and what became of them.
struct Session {
    id: NodeId,
    level: Level,
    ops: Vec<KvsOp>,
    /// Which of `ops` are puts of the wrong lattice type.
    mistyped: Vec<bool>,
    /// When the session started, in simulator events.
    started: u64,
    /// For each finished operation: (invoked, completed) in simulator events.
    times: Vec<(u64, u64)>,
    /// Whether every operation must succeed (a late session on a healed network).
    must_succeed: bool,
}

fn level(durability: Durability) -> Level {
    match durability {
        Durability::One => Level::One,
        Durability::Majority => Level::Majority,
        Durability::All => Level::All,
    }
}

/// A KVS world as drawn for its seed, and the ids and versions it hands out as it runs.
struct World {
    ring: Ring,
    replication: usize,
    /// The *membership* shape (a node joins, members leave), or the *crash* shape.
    membership: bool,
    members: u64,
    caches: Vec<NodeId>,
    /// The nodes that may crash in the first phase: the caches, and perhaps a storage node.
    crashable: Vec<NodeId>,
    /// The members asked to leave (membership shape).
    leavers: Vec<NodeId>,
    /// Whether caches hold 2 keys of the 4 (and evict), or room for all.
    evicting: bool,
    /// The storage nodes' gossip batch (keys) and backoff (ticks).
    gossip: (usize, u32),
    /// How often caches renew their subscriptions.
    renew: Duration,
    mutant: Option<squall_proto::kvs::Mutant>,
    sessions: Vec<Session>,
    versions: Versions,
    next_version: u64,
    next_id: u64,
}

/// Runs the KVS world of `seed`.
pub fn run(seed: u64, mutant: Option<Mutant>) -> WorldReport {
    let mut rng = rng(seed);
    let (mut world, configs) = World::draw(&mut rng, mutant);
    let setup = world.setup();
    // Crash-shape worlds get one of two disk faults (by the seed's parity, so no draw shifts):
    // a quarter of storage restarts lose their data disk (the incarnation rule must repair
    // them), or whole-cluster power failures (every storage node down at once: what was
    // acknowledged must be on disk).
    let (disk_loss, power) = match (world.membership, seed % 2) {
        (true, _) => (0, 0),
        (false, 0) => (0, 2),
        (false, _) => (250, 0),
    };
    let faults = Faults {
        disk_loss_per_mille: disk_loss,
        power_failure_per_mille: power,
        ..faults(&mut rng, 4)
    };
    let all: Vec<NodeId> = configs.iter().map(|(id, _)| *id).collect();
    let partition = Partition::draw(&mut rng, &all, SAFETY_STEPS);
    let timing = Timing::draw(&mut rng);
    let setup = format!("{setup}; {}", timing.name());
    let mut sim: Sim<CachedKvsNode> = Sim::new(seed, faults, configs);
    sim.set_crashable(world.crashable.clone());
    sim.set_power_domain((0..world.members).map(NodeId));
    timing.apply(&mut sim);

    let phase = world.faulty(&mut sim, SAFETY_STEPS, partition.as_ref());
    let mut failure = phase.failure;
    if failure.is_none() {
        failure = world.settle(&mut sim);
    }
    if failure.is_none() {
        failure = mistyped_acknowledged(&sim, &world.sessions).map(|what| ("history", what));
    }
    // The late phases, once the cluster settled (see the module docs).
    let mut keys: Vec<String> = KEYS.iter().map(|k| (*k).to_owned()).collect();
    if failure.is_none() {
        failure = world.warm_up(&mut sim, &mut keys);
    }
    if failure.is_none() {
        failure = world.late_writes(&mut sim, &mut rng);
    }
    let mut settled_at = None;
    if failure.is_none() {
        settled_at = Some(sim.trace().len() as u64);
        failure = world.final_reads(&mut sim);
    }
    if failure.is_none() {
        failure = late_failed(&sim, &world.sessions).map(|what| ("liveness", what));
    }
    let mut history = world.history(&sim);
    if failure.is_none() {
        history.settled = settled(&sim, &keys, world.replication, &mut world.versions);
        history.settled_at = settled_at;
        failure = judge(&history).map(|what| ("history", what));
    }
    WorldReport::new("kvs", setup, &sim, phase.partitioned, history, failure)
}

impl World {
    /// Draws the world of a seed: its storage nodes and caches, the client sessions of the
    /// first phase, and which nodes may crash or leave. Returns the nodes' configurations too.
    fn draw(
        rng: &mut ChaCha8Rng,
        mutant: Option<Mutant>,
    ) -> (Self, Vec<(NodeId, CachedKvsConfig)>) {
        let membership = rng.random_bool(0.5);
        // Mostly three replicas; one or two in some seeds, where a cache hears of a key from
        // fewer replicas and a lost push is not covered by another replica's.
        let replication = rng.random_range(1..=3);
        let members = if membership { rng.random_range(4..=6) } else { rng.random_range(3..=7) };
        let kvs_mutant = match mutant {
            Some(Mutant::Kvs(m)) => Some(m),
            _ => None,
        };
        let cache_mutant = match mutant {
            Some(Mutant::Cache(m)) => Some(m),
            _ => None,
        };
        let mut world = World {
            ring: Ring::with_members(16, (0..members).map(NodeId)),
            replication,
            membership,
            members,
            caches: Vec::new(),
            crashable: Vec::new(),
            leavers: Vec::new(),
            evicting: false,
            gossip: (1024, 1),
            renew: Duration::ZERO,
            mutant: kvs_mutant,
            sessions: Vec::new(),
            versions: Versions::default(),
            next_version: 1,
            next_id: 0,
        };
        let schema = BTreeMap::from([("k".to_owned(), LatticeType::Lww)]);
        // Gossip in batches of one or two keys (or all of them), with or without a backoff
        // for silent replicas — drawn from a stream of their own, so that the rest of each
        // seed's world is what it was before batching existed.
        let mut side = rng.clone();
        side.set_stream(1);
        world.gossip = ([1024, 1, 2][side.random_range(0..3)], [1, 4][side.random_range(0..2)]);
        let mut configs: Vec<(NodeId, CachedKvsConfig)> = Vec::new();
        for _ in 0..members + u64::from(membership) {
            let id = world.fresh();
            let mut cfg = StorageConfig::new(id, world.ring.clone(), replication);
            cfg.schema = schema.clone();
            cfg.join = id.0 >= members;
            // Caches renew well within a lease even when timers fire in a random order.
            cfg.lease_period = Some(Duration::from_secs(3));
            (cfg.gossip_batch, cfg.gossip_backoff) = world.gossip;
            cfg.mutant = kvs_mutant;
            configs.push((id, CachedKvsConfig::Storage(cfg)));
        }
        world.caches = (0..rng.random_range(2..=4)).map(|_| world.fresh()).collect();
        let renew_ms = [20, 50, 200, 1_000][rng.random_range(0..4)];
        world.evicting = rng.random_bool(0.5);
        world.renew = Duration::from_millis(renew_ms);
        for &id in &world.caches {
            let mut cfg = CacheConfig::new(id, world.ring.clone(), replication);
            // Two keys of four (evictions race pushes and fetches), or room for all.
            cfg.max_keys = if world.evicting { 2 } else { 16 };
            // Renewals from every 20 ms to every second (leases last 3 s): frequent renewals
            // race the pushes they must not cancel.
            cfg.renew_period = Some(world.renew);
            cfg.mutant = cache_mutant;
            configs.push((id, CachedKvsConfig::Cache(cfg)));
        }
        let vias: Vec<Option<NodeId>> =
            world.caches.iter().map(|c| Some(*c)).chain([None, None]).collect();
        for via in vias {
            let (id, cfg) = world.first_session(rng, via);
            configs.push((id, cfg));
        }
        world.crashable = world.caches.clone();
        if membership {
            // One or two members leave, each asked by its own operator, while a node joins.
            let first = rng.random_range(0..members);
            world.leavers.push(NodeId(first));
            if rng.random_bool(0.5) {
                world
                    .leavers
                    .push(NodeId((first + 1 + rng.random_range(0..members - 1)) % members));
            }
            for node in world.leavers.clone() {
                let id = world.fresh();
                let mut cfg = ClientConfig::new(id, world.ring.clone(), replication);
                cfg.max_attempts = 1_000;
                cfg.leave_after = cfg.retry_after;
                cfg.mutant = kvs_mutant;
                let ops = vec![KvsOp::Leave { node }];
                configs.push((id, CachedKvsConfig::Client(ScriptConfig::new(cfg, ops))));
            }
        } else if replication > 1 {
            // One storage node may crash: a write acknowledged by two replicas keeps a copy.
            world.crashable.push(NodeId(rng.random_range(0..members)));
        }
        (world, configs)
    }

    /// A client session of the first phase (behind cache `via`, or routing itself): 4–8 gets
    /// and puts at one durability, and from a direct client perhaps a put of the wrong type.
    fn first_session(
        &mut self,
        rng: &mut ChaCha8Rng,
        via: Option<NodeId>,
    ) -> (NodeId, CachedKvsConfig) {
        let id = self.fresh();
        let durability =
            [Durability::One, Durability::Majority, Durability::All][rng.random_range(0..3)];
        let (mut ops, mut mistyped) = (Vec::new(), Vec::new());
        for _ in 0..rng.random_range(4..=8) {
            let key = KEYS[rng.random_range(0..KEYS.len())];
            if rng.random_bool(0.5) {
                let value = self.stamp(key, id);
                ops.push(KvsOp::Put { key: key.to_owned(), value, durability });
            } else {
                ops.push(get(key));
            }
            mistyped.push(false);
        }
        if via.is_none() && rng.random_bool(0.5) {
            let at = rng.random_range(0..=ops.len());
            let value = LatticeValue::Set(SetUnion::singleton(Bytes::from_static(b"wrong type")));
            ops.insert(at, KvsOp::Put { key: KEYS[0].to_owned(), value, durability });
            mistyped.insert(at, true);
        }
        let mut cfg = ClientConfig::new(id, self.ring.clone(), self.replication);
        cfg.via = via;
        cfg.max_attempts = 20;
        cfg.mutant = self.mutant;
        // A restarted storage node is empty until its peers repopulate it, and serves reads
        // meanwhile: with storage crashes, writes at `all` promise no more than at majority.
        let level = match durability {
            Durability::All if !self.membership => Level::Majority,
            durability => level(durability),
        };
        let session = Session {
            id,
            level,
            ops: ops.clone(),
            mistyped,
            started: 0,
            times: Vec::new(),
            must_succeed: false,
        };
        self.sessions.push(session);
        (id, CachedKvsConfig::Client(ScriptConfig::new(cfg, ops)))
    }

    /// The world in one line, for reports.
    fn setup(&self) -> String {
        format!(
            "{} storage nodes{} at replication {} (gossip batch {}, backoff {}), {} caches{} \
             with executors, 2 clients; {}",
            self.members,
            if self.membership { " + 1 joining" } else { "" },
            self.replication,
            self.gossip.0,
            self.gossip.1,
            self.caches.len(),
            if self.evicting { " of 2 keys" } else { "" },
            if !self.leavers.is_empty() {
                let names: Vec<String> = self.leavers.iter().map(|n| format!("n{}", n.0)).collect();
                format!("{} leave, no storage crash", names.join(" and "))
            } else if self.replication == 1 {
                "no storage crash".to_owned()
            } else {
                format!("n{} may crash", self.crashable.last().expect("a storage node").0)
            }
        )
    }

    /// A node id not used yet.
    fn fresh(&mut self) -> NodeId {
        self.next_id += 1;
        NodeId(self.next_id - 1)
    }

    /// The next version of `key`, written by `writer`.
    fn stamp(&mut self, key: &str, writer: NodeId) -> LatticeValue {
        let value = lww(self.next_version, writer);
        self.versions.add(key, value.clone(), self.next_version);
        self.next_version += 1;
        value
    }

    /// A faulty phase of `steps` (see [`safety`]): records when client operations complete
    /// and checks the step invariants after every step.
    fn faulty(
        &mut self,
        sim: &mut Sim<CachedKvsNode>,
        steps: u64,
        partition: Option<&Partition>,
    ) -> Phase {
        let (sessions, membership) = (&mut self.sessions, self.membership);
        safety(sim, steps, partition, None, |sim, _| {
            record(sim, sessions);
            broken(sim, membership)
        })
    }

    /// Settles the cluster (see [`settle`]).
    fn settle(&mut self, sim: &mut Sim<CachedKvsNode>) -> Option<(&'static str, String)> {
        settle(sim, &mut self.sessions, self.membership, self.renew)
    }

    /// First late phase: behind each cache and directly, a session reads every key, then
    /// writes a key of its own at `all` and reads it back; all must succeed.
    fn warm_up(
        &mut self,
        sim: &mut Sim<CachedKvsNode>,
        keys: &mut Vec<String>,
    ) -> Option<(&'static str, String)> {
        for via in self.vias() {
            let id = self.fresh();
            let key = format!("k-late-{}", id.0);
            let value = self.stamp(&key, id);
            let mut ops: Vec<KvsOp> = KEYS.iter().map(|k| get(k)).collect();
            ops.push(KvsOp::Put { key: key.clone(), value, durability: Durability::All });
            ops.push(get(&key));
            self.add_late(sim, id, via, ops, true);
            keys.push(key);
        }
        self.settle(sim)
    }

    /// Second late phase, faulty: a writer updates every key three times while a session
    /// behind each cache writes and reads back every key, under drops, duplicates, replays and
    /// cache crashes. Under drops every attempt may fail, in principle: none need succeed; the
    /// sessions write at `all`, so they must read their own writes, across restarts of their
    /// cache.
    fn late_writes(
        &mut self,
        sim: &mut Sim<CachedKvsNode>,
        rng: &mut ChaCha8Rng,
    ) -> Option<(&'static str, String)> {
        let id = self.fresh();
        let mut ops = Vec::new();
        for _ in 0..3 {
            for key in KEYS {
                let value = self.stamp(key, id);
                ops.push(KvsOp::Put { key: key.to_owned(), value, durability: Durability::All });
            }
        }
        self.add_late(sim, id, None, ops, false);
        for cache in self.caches.clone() {
            let id = self.fresh();
            let mut ops = Vec::new();
            for _ in 0..3 {
                for key in KEYS.iter().rev() {
                    let value = self.stamp(key, id);
                    let durability = Durability::All;
                    ops.push(KvsOp::Put { key: (*key).to_owned(), value, durability });
                    ops.push(get(key));
                }
            }
            self.add_late(sim, id, Some(cache), ops, false);
        }
        sim.set_faults(Faults {
            drop_per_mille: 200,
            duplicate_per_mille: 100,
            crash_per_mille: 4,
            restart_per_mille: 40,
            replay_per_mille: 300,
            disk_loss_per_mille: 0,
            power_failure_per_mille: 0,
        });
        sim.set_crashable(self.caches.iter().copied());
        // Timed, with delays; or adversarial, where a push may arrive arbitrarily late: after
        // its key was evicted and fetched again, or after its cache restarted.
        if rng.random_bool(0.5) {
            sim.set_timed(false);
        } else {
            sim.set_delay(Duration::ZERO, Duration::from_millis(20));
        }
        let failure = self.faulty(sim, LATE_STEPS, None).failure;
        failure.or_else(|| self.settle(sim))
    }

    /// Last late phase: behind each cache and directly, a session reads every key, newest
    /// first (the keys a cache still holds are read before misses evict them); all must
    /// succeed.
    fn final_reads(&mut self, sim: &mut Sim<CachedKvsNode>) -> Option<(&'static str, String)> {
        for via in self.vias() {
            let ops = KEYS.iter().rev().map(|k| get(k)).collect();
            let id = self.fresh();
            self.add_late(sim, id, via, ops, true);
        }
        self.settle(sim)
    }

    /// Each cache, then none (a client routing itself): where late sessions run.
    fn vias(&self) -> Vec<Option<NodeId>> {
        self.caches.iter().map(|c| Some(*c)).chain([None]).collect()
    }

    /// Starts a late session `id` (behind cache `via`, if any) running `ops` at level `all`.
    fn add_late(
        &mut self,
        sim: &mut Sim<CachedKvsNode>,
        id: NodeId,
        via: Option<NodeId>,
        ops: Vec<KvsOp>,
        must_succeed: bool,
    ) {
        let mut cfg = ClientConfig::new(id, self.ring.clone(), self.replication);
        cfg.via = via;
        cfg.max_attempts = 20;
        cfg.mutant = self.mutant;
        let started = sim.trace().len() as u64;
        sim.add_node(id, CachedKvsConfig::Client(ScriptConfig::new(cfg, ops.clone())));
        let mistyped = vec![false; ops.len()];
        self.sessions.push(Session {
            id,
            level: Level::All,
            ops,
            mistyped,
            started,
            times: Vec::new(),
            must_succeed,
        });
    }

    /// Every client operation, with its invocation, completion and outcome (puts of the wrong
    /// type and leaves left out).
    fn history(&mut self, sim: &Sim<CachedKvsNode>) -> History {
        let mut history = History::default();
        let mut txn = 0;
        for session in &self.sessions {
            let outcomes = match sim.node(session.id) {
                Some(CachedKvsNode::Client(client)) => client.outcomes().to_vec(),
                _ => Vec::new(),
            };
            // A script makes its calls one at a time: call `i` was made only once `i - 1`
            // ended, so those after the one in progress were never made.
            let made = session.times.len().max(outcomes.len()) + 1;
            for (i, op) in session.ops.iter().enumerate().take(made) {
                txn += 1;
                let (invoke, complete) = match session.times.get(i) {
                    Some(&(invoke, complete)) => (invoke, Some(complete)),
                    None => (session.times.last().map_or(session.started, |t| t.1), None),
                };
                let (id, level) = (session.id.0, session.level);
                let (kind_op, status) = match (op, outcomes.get(i)) {
                    (KvsOp::Get { key }, Some(Outcome::Read(value))) => {
                        let version = value.as_ref().map_or(INITIAL, |v| self.versions.of(key, v));
                        (Op::read(id, txn, level, key, version), Status::Ok)
                    }
                    (KvsOp::Get { key }, _) => {
                        (Op::read(id, txn, level, key, INITIAL), Status::Unknown)
                    }
                    (KvsOp::Put { key, value, .. }, outcome) => {
                        if session.mistyped[i] {
                            continue;
                        }
                        let version = self.versions.of(key, value);
                        let status = match outcome {
                            Some(Outcome::Written) => Status::Ok,
                            Some(outcome) if outcome.is_definite() => Status::Failed,
                            _ => Status::Unknown,
                        };
                        (Op::write(id, txn, level, key, version), status)
                    }
                    (KvsOp::Leave { .. }, _) => continue,
                };
                history.ops.push(kind_op.at(invoke, complete).with_status(status));
            }
        }
        history
    }
}

/// An LWW value stamped `version` by `writer`.
fn lww(version: u64, writer: NodeId) -> LatticeValue {
    LatticeValue::Lww(Lww::new(
        Stamp::new(version, WriterId(writer.0)),
        Bytes::from(version.to_string()),
    ))
}

fn get(key: &str) -> KvsOp {
    KvsOp::Get { key: key.to_owned() }
}

/// The step invariants broken now, if any.
fn broken(sim: &Sim<CachedKvsNode>, membership: bool) -> Option<String> {
    let states = sim.states();
    // KVS-I4 promises that a write survives one crash in the live replicas; after a power
    // failure, KVS-D1 (on disk) is what holds.
    let power_failed = sim.stats().power_failures > 0;
    let durable = if membership {
        (invariants::acknowledged_writes_held(&states), invariants::HANDOFF)
    } else {
        let holds = power_failed || invariants::acknowledged_writes_survive(&states);
        (holds, invariants::DURABLE)
    };
    // A lost data disk breaks what KVS-D1 promises, so the world checks it until the first loss.
    let persisted = sim.stats().disks_lost > 0
        || invariants::acknowledged_writes_persisted(&states, sim.disks());
    let recovered = sim.nodes().all(|(id, cfg, node)| {
        let (Some(cfg), Some(storage), Some(disk)) = (
            <CachedKvsNode as Hosts<StorageNode>>::role_config(cfg),
            node.and_then(|n| <CachedKvsNode as Hosts<StorageNode>>::role(n)),
            sim.disk(id),
        ) else {
            return true;
        };
        invariants::persisted_values_held(cfg, storage, disk)
    });
    let broken = [
        (invariants::no_thin_air(&states), invariants::NO_THIN_AIR),
        (invariants::typed(&states), invariants::TYPED),
        durable,
        (persisted, invariants::PERSISTED),
        (recovered, invariants::RECOVERED),
        (cache_invariants::no_thin_air(&states), cache_invariants::NO_THIN_AIR),
        (cache_invariants::leased(&states), cache_invariants::LEASED),
    ];
    broken.iter().find(|(holds, _)| !holds).map(|(_, id)| format!("{id} broken"))
}

/// The liveness phase: settle on a healed network, then check what must hold once settled.
fn settle(
    sim: &mut Sim<CachedKvsNode>,
    sessions: &mut [Session],
    membership: bool,
    renew: Duration,
) -> Option<(&'static str, String)> {
    let healed_at = sim.trace().len() as u64;
    // Settled once quiescent and every cache renewed its subscriptions since healing (a
    // subscription lapsed while renewals were lost leaves its cache stale until then).
    let renewed = sim.now() + 2 * renew;
    let quiescent = |sim: &Sim<CachedKvsNode>| {
        (sim.now() >= renewed || sim.is_quiet()) && invariants::quiescent(&sim.states())
    };
    if let Some((phase, mut what)) = liveness(sim, LIVENESS_STEPS, quiescent, |sim, _| {
        record(sim, sessions);
        broken(sim, membership)
    }) {
        what.push_str(&busy(sim));
        return Some((phase, what));
    }
    if let Some(what) = failed_after_healing(sim, sessions, healed_at) {
        return Some(("liveness", what));
    }
    if !protocol_checks() {
        return None;
    }
    let states = sim.states();
    let settled = [
        (invariants::converged_when_quiescent(&states), invariants::CONVERGENCE),
        (invariants::ownership_converged_when_quiescent(&states), invariants::OWNERSHIP),
        (cache_invariants::fresh_when_quiescent(&states), cache_invariants::FRESH),
    ];
    settled
        .iter()
        .find(|(holds, _)| !holds)
        .map(|(_, id)| ("liveness", format!("{id} broken once settled")))
}

/// A late session's operation that did not succeed, if any: on a settled, healed cluster every
/// read answers and every put is acknowledged.
fn late_failed(sim: &Sim<CachedKvsNode>, sessions: &[Session]) -> Option<String> {
    sessions.iter().filter(|s| s.must_succeed).find_map(|session| {
        let Some(CachedKvsNode::Client(client)) = sim.node(session.id) else { return None };
        client.outcomes().iter().zip(&session.ops).find_map(|(outcome, op)| {
            (!matches!(outcome, Outcome::Read(_) | Outcome::Written)).then(|| {
                format!(
                    "late client n{}: {op:?} ended {outcome:?} on a settled cluster",
                    session.id.0
                )
            })
        })
    })
}

/// Records the invocation and completion of every operation that finished since the last call.
fn record(sim: &Sim<CachedKvsNode>, sessions: &mut [Session]) {
    let now = sim.trace().len() as u64;
    for session in sessions {
        let Some(CachedKvsNode::Client(client)) = sim.node(session.id) else { continue };
        while session.times.len() < client.outcomes().len() {
            let invoked = session.times.last().map_or(session.started, |t| t.1);
            session.times.push((invoked, now));
        }
    }
}

/// An operation invoked on the healed network that still ended without a definite outcome,
/// if any: with no faults left, every attempt is answered.
fn failed_after_healing(
    sim: &Sim<CachedKvsNode>,
    sessions: &[Session],
    healed_at: u64,
) -> Option<String> {
    sessions.iter().find_map(|session| {
        let Some(CachedKvsNode::Client(client)) = sim.node(session.id) else { return None };
        let outcomes = client.outcomes().iter().zip(&session.times).zip(&session.ops);
        outcomes
            .filter(|((outcome, (invoked, _)), _)| !outcome.is_definite() && *invoked >= healed_at)
            .map(|(_, op)| {
                format!(
                    "client n{}: {op:?} invoked on the healed network never got an answer",
                    session.id.0
                )
            })
            .next()
    })
}

/// The nodes keeping the run from quiescence, as "; busy: n1 (storage), ...".
fn busy(sim: &Sim<CachedKvsNode>) -> String {
    let busy: Vec<String> = sim
        .nodes()
        .filter(|(_, cfg, node)| !invariants::quiescent(&[(*cfg, *node)]))
        .map(|(id, cfg, _)| {
            let role = match cfg {
                CachedKvsConfig::Storage(_) => "storage",
                CachedKvsConfig::Cache(_) => "cache",
                CachedKvsConfig::Client(_) => "client",
            };
            format!("n{} ({role})", id.0)
        })
        .collect();
    format!("; busy: {}", busy.join(", "))
}

/// A put of the wrong lattice type that was acknowledged, if any.
fn mistyped_acknowledged(sim: &Sim<CachedKvsNode>, sessions: &[Session]) -> Option<String> {
    sessions.iter().find_map(|session| {
        let Some(CachedKvsNode::Client(client)) = sim.node(session.id) else { return None };
        client.outcomes().iter().zip(&session.mistyped).find_map(|(outcome, mistyped)| {
            (*mistyped && *outcome == Outcome::Written).then(|| {
                format!("{}: a put of the wrong lattice type was acknowledged", invariants::TYPED)
            })
        })
    })
}

/// What every replica of each key holds, by the newest ring any storage node knows.
fn settled(
    sim: &Sim<CachedKvsNode>,
    keys: &[String],
    replication: usize,
    versions: &mut Versions,
) -> Vec<Held> {
    let storages: Vec<_> = sim
        .nodes()
        .filter_map(|(id, _, node)| match node {
            Some(CachedKvsNode::Storage(storage)) => Some((id, storage)),
            _ => None,
        })
        .collect();
    let Some(ring) = storages.iter().map(|(_, s)| s.ring()).max_by_key(|r| r.epoch()) else {
        return Vec::new();
    };
    let mut held = Vec::new();
    for key in keys {
        let key = key.as_str();
        for replica in ring.responsible(key, replication) {
            let Some((_, storage)) = storages.iter().find(|(id, _)| *id == replica) else {
                continue;
            };
            let version = storage.store().get(key).map_or(INITIAL, |v| versions.of(key, v));
            held.push(Held { replica: replica.0, key: key.to_owned(), version });
        }
    }
    held
}
