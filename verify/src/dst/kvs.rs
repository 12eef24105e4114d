//! The KVS world: 3–7 storage nodes at replication 3, 2–4 caches each with one executor
//! reading and writing through it, and two clients routing by the ring themselves; four LWW
//! keys. Each client session writes at one durability (one, majority or all); a direct client
//! may also put a value of the wrong lattice type, which must be refused.
//!
//! Half the seeds (*crash* shape) let one storage node and the caches crash and restart; the
//! other half (*membership* shape) add a joining storage node and ask a member to leave, with
//! only caches crashing. History: every client operation with its invocation and completion
//! (the simulator's event count) and what every replica of each key settled on.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use squall_proto::NodeId;
use squall_proto::cache::{CacheConfig, invariants as cache_invariants};
use squall_proto::kvs::{
    ClientConfig, Durability, KvsConfig, KvsNode, Op as KvsOp, Outcome, Ring, StorageConfig,
    invariants,
};
use squall_proto::lattice::{LatticeType, LatticeValue, Lww, SetUnion, Stamp, WriterId};
use squall_proto::sim::Sim;

use super::{
    Failure, Mutant, Partition, Versions, WorldReport, faults, judge, liveness, rng, safety, tail,
};
use crate::history::{Held, History, INITIAL, Level, Op, Status};

const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
const REPLICATION: usize = 3;
const SAFETY_STEPS: u64 = 5_000;
const LIVENESS_STEPS: u64 = 400_000;

/// One client session: its operations, the level they promise, and what became of them.
struct Session {
    id: NodeId,
    level: Level,
    ops: Vec<KvsOp>,
    /// Which of `ops` are puts of the wrong lattice type.
    mistyped: Vec<bool>,
    /// For each finished operation: (invoked, completed) in simulator events.
    times: Vec<(u64, u64)>,
}

fn level(durability: Durability) -> Level {
    match durability {
        Durability::One => Level::One,
        Durability::Majority => Level::Majority,
        Durability::All => Level::All,
    }
}

/// Runs the KVS world of `seed`.
pub fn run(seed: u64, mutant: Option<Mutant>) -> WorldReport {
    let mut rng = rng(seed);
    let membership = rng.random_bool(0.5);
    let members = if membership { rng.random_range(4..=6) } else { rng.random_range(3..=7) };
    let ring = Ring::with_members(16, (0..members).map(NodeId));
    let kvs_mutant = match mutant {
        Some(Mutant::Kvs(m)) => Some(m),
        _ => None,
    };
    let schema = BTreeMap::from([("k".to_owned(), LatticeType::Lww)]);
    let mut configs: Vec<(NodeId, KvsConfig)> = Vec::new();
    let mut next_id = 0;
    let mut fresh = || {
        next_id += 1;
        NodeId(next_id - 1)
    };
    let storage_ids: Vec<NodeId> = (0..members + u64::from(membership)).map(|_| fresh()).collect();
    for &id in &storage_ids {
        let mut cfg = StorageConfig::new(id, ring.clone(), REPLICATION);
        cfg.schema = schema.clone();
        cfg.join = id.0 >= members;
        // Caches renew well within a lease even when timers fire in a random order.
        cfg.lease_period = cfg.lease_period.max(Duration::from_secs(3));
        cfg.mutant = kvs_mutant;
        configs.push((id, KvsConfig::Storage(cfg)));
    }
    let caches: Vec<NodeId> = (0..rng.random_range(2..=4)).map(|_| fresh()).collect();
    for &id in &caches {
        let mut cfg = CacheConfig::new(id, ring.clone(), REPLICATION);
        // Two keys of four: evictions race pushes and fetches.
        cfg.max_keys = 2;
        cfg.mutant = kvs_mutant;
        configs.push((id, KvsConfig::Cache(cfg)));
    }

    let mut versions = Versions::default();
    let mut next_version = 1;
    let mut sessions: Vec<Session> = Vec::new();
    let vias: Vec<Option<NodeId>> = caches.iter().map(|c| Some(*c)).chain([None, None]).collect();
    for via in vias {
        let id = fresh();
        let durability =
            [Durability::One, Durability::Majority, Durability::All][rng.random_range(0..3)];
        let (mut ops, mut mistyped) = (Vec::new(), Vec::new());
        for _ in 0..rng.random_range(4..=8) {
            let key = KEYS[rng.random_range(0..KEYS.len())].to_owned();
            if rng.random_bool(0.5) {
                let value = LatticeValue::Lww(Lww::new(
                    Stamp::new(next_version, WriterId(id.0)),
                    Bytes::from(next_version.to_string()),
                ));
                versions.add(&key, value.clone(), next_version);
                next_version += 1;
                ops.push(KvsOp::Put { key, value, durability });
            } else {
                ops.push(KvsOp::Get { key });
            }
            mistyped.push(false);
        }
        if via.is_none() && rng.random_bool(0.5) {
            let at = rng.random_range(0..=ops.len());
            let value = LatticeValue::Set(SetUnion::singleton(Bytes::from_static(b"wrong type")));
            ops.insert(at, KvsOp::Put { key: KEYS[0].to_owned(), value, durability });
            mistyped.insert(at, true);
        }
        let mut cfg = ClientConfig::new(id, ring.clone(), REPLICATION, ops.clone());
        cfg.via = via;
        cfg.max_attempts = 20;
        cfg.mutant = kvs_mutant;
        configs.push((id, KvsConfig::Client(cfg)));
        // A restarted storage node is empty until its peers repopulate it, and serves reads
        // meanwhile: with storage crashes, writes at `all` promise no more than at majority.
        let level = match durability {
            Durability::All if !membership => Level::Majority,
            durability => level(durability),
        };
        sessions.push(Session { id, level, ops, mistyped, times: Vec::new() });
    }
    let mut crashable = caches.clone();
    let mut leaver = None;
    if membership {
        let node = NodeId(rng.random_range(0..members));
        leaver = Some(node);
        let id = fresh();
        let mut cfg = ClientConfig::new(id, ring.clone(), REPLICATION, vec![KvsOp::Leave { node }]);
        cfg.max_attempts = 1_000;
        cfg.mutant = kvs_mutant;
        configs.push((id, KvsConfig::Client(cfg)));
    } else {
        crashable.push(NodeId(rng.random_range(0..members)));
    }
    let setup = format!(
        "{members} storage nodes{}, {} caches with executors, 2 clients; {}",
        if membership { " + 1 joining" } else { "" },
        caches.len(),
        match leaver {
            Some(node) => format!("n{} leaves, no storage crash", node.0),
            None => format!("n{} may crash", crashable.last().expect("a storage node").0),
        }
    );
    let faults = faults(&mut rng, 4);
    let all: Vec<NodeId> = configs.iter().map(|(id, _)| *id).collect();
    let partition = Partition::draw(&mut rng, &all, SAFETY_STEPS);
    let mut sim: Sim<KvsNode> = Sim::new(seed, faults, configs);
    sim.set_crashable(crashable);

    let mut after_step = |sim: &Sim<KvsNode>, _| {
        record(sim, &mut sessions);
        let states = sim.states();
        let durable = if membership {
            (invariants::acknowledged_writes_held(&states), invariants::HANDOFF)
        } else {
            (invariants::acknowledged_writes_survive(&states), invariants::DURABLE)
        };
        let broken = [
            (invariants::no_thin_air(&states), invariants::NO_THIN_AIR),
            (invariants::typed(&states), invariants::TYPED),
            durable,
            (cache_invariants::no_thin_air(&states), cache_invariants::NO_THIN_AIR),
            (cache_invariants::leased(&states), cache_invariants::LEASED),
        ];
        broken.iter().find(|(holds, _)| !holds).map(|(_, id)| format!("{id} broken"))
    };
    let phase = safety(&mut sim, SAFETY_STEPS, partition.as_ref(), &mut after_step);
    let mut failure = phase.failure;
    let healed_at = sim.trace().len() as u64;
    if failure.is_none() {
        let settled = |sim: &Sim<KvsNode>| invariants::quiescent(&sim.states());
        failure = liveness(&mut sim, LIVENESS_STEPS, settled, &mut after_step);
    }
    if let Some(("liveness", what)) = &mut failure {
        what.push_str(&busy(&sim));
    }
    if failure.is_none() {
        failure = failed_after_healing(&sim, &sessions, healed_at).map(|what| ("liveness", what));
    }
    if failure.is_none() {
        let states = sim.states();
        let settled = [
            (invariants::converged_when_quiescent(&states), invariants::CONVERGENCE),
            (invariants::ownership_converged_when_quiescent(&states), invariants::OWNERSHIP),
            (cache_invariants::fresh_when_quiescent(&states), cache_invariants::FRESH),
        ];
        failure = settled
            .iter()
            .find(|(holds, _)| !holds)
            .map(|(_, id)| ("liveness", format!("{id} broken once settled")));
    }
    if failure.is_none() {
        failure = mistyped_acknowledged(&sim, &sessions).map(|what| ("history", what));
    }

    let mut history = History::default();
    let mut txn = 0;
    for session in &sessions {
        let outcomes = match sim.node(session.id) {
            Some(KvsNode::Client(client)) => client.outcomes().to_vec(),
            _ => Vec::new(),
        };
        for (i, op) in session.ops.iter().enumerate() {
            txn += 1;
            let (invoke, complete) = match session.times.get(i) {
                Some(&(invoke, complete)) => (invoke, Some(complete)),
                None => (session.times.last().map_or(0, |t| t.1), None),
            };
            let (kind_op, status) = match (op, outcomes.get(i)) {
                (KvsOp::Get { key }, Some(Outcome::Read(value))) => {
                    let version = value.as_ref().map_or(INITIAL, |v| versions.of(key, v));
                    (Op::read(session.id.0, txn, session.level, key, version), Status::Ok)
                }
                (KvsOp::Get { key }, _) => {
                    (Op::read(session.id.0, txn, session.level, key, INITIAL), Status::Unknown)
                }
                (KvsOp::Put { key, value, .. }, outcome) => {
                    if session.mistyped[i] {
                        continue;
                    }
                    let version = versions.of(key, value);
                    let status = match outcome {
                        Some(Outcome::Written) => Status::Ok,
                        Some(Outcome::Rejected(_)) => Status::Failed,
                        _ => Status::Unknown,
                    };
                    (Op::write(session.id.0, txn, session.level, key, version), status)
                }
                (KvsOp::Leave { .. }, _) => continue,
            };
            history.ops.push(kind_op.at(invoke, complete).with_status(status));
        }
    }
    if failure.is_none() {
        history.settled = settled(&sim, &mut versions);
        failure = judge(&history).map(|what| ("history", what));
    }
    WorldReport {
        world: "kvs",
        setup,
        stats: sim.stats(),
        partitioned: phase.partitioned,
        failure: failure.map(|(phase, what)| Failure {
            world: "kvs",
            phase,
            what,
            trace: tail(&sim),
        }),
        history,
    }
}

/// Records the invocation and completion of every operation that finished since the last call.
fn record(sim: &Sim<KvsNode>, sessions: &mut [Session]) {
    let now = sim.trace().len() as u64;
    for session in sessions {
        let Some(KvsNode::Client(client)) = sim.node(session.id) else { continue };
        while session.times.len() < client.outcomes().len() {
            let invoked = session.times.last().map_or(0, |t| t.1);
            session.times.push((invoked, now));
        }
    }
}

/// An operation invoked on the healed network that still ended without a definite outcome,
/// if any: with no faults left, every attempt is answered.
fn failed_after_healing(
    sim: &Sim<KvsNode>,
    sessions: &[Session],
    healed_at: u64,
) -> Option<String> {
    sessions.iter().find_map(|session| {
        let Some(KvsNode::Client(client)) = sim.node(session.id) else { return None };
        let outcomes = client.outcomes().iter().zip(&session.times).zip(&session.ops);
        outcomes
            .filter(|((outcome, (invoked, _)), _)| !outcome.is_definite() && *invoked >= healed_at)
            .find_map(|(_, op)| {
                Some(format!(
                    "client n{}: {op:?} invoked on the healed network never got an answer",
                    session.id.0
                ))
            })
    })
}

/// The nodes keeping the run from quiescence, as "; busy: n1 (storage), ...".
fn busy(sim: &Sim<KvsNode>) -> String {
    let busy: Vec<String> = sim
        .nodes()
        .filter(|(_, cfg, node)| !invariants::quiescent(&[(*cfg, *node)]))
        .map(|(id, cfg, _node)| {
            let role = match cfg {
                KvsConfig::Storage(_) => "storage",
                KvsConfig::Cache(_) => "cache",
                KvsConfig::Client(_) => "client",
            };
            if std::env::var_os("SQUALL_DST_DEBUG").is_some() {
                eprintln!("{:#?}", _node);
            }
            format!("n{} ({role})", id.0)
        })
        .collect();
    format!("; busy: {}", busy.join(", "))
}

/// A put of the wrong lattice type that was acknowledged, if any.
fn mistyped_acknowledged(sim: &Sim<KvsNode>, sessions: &[Session]) -> Option<String> {
    sessions.iter().find_map(|session| {
        let Some(KvsNode::Client(client)) = sim.node(session.id) else { return None };
        client.outcomes().iter().zip(&session.mistyped).find_map(|(outcome, mistyped)| {
            (*mistyped && *outcome == Outcome::Written).then(|| {
                format!("{}: a put of the wrong lattice type was acknowledged", invariants::TYPED)
            })
        })
    })
}

/// What every replica of each key holds, by the newest ring any storage node knows.
fn settled(sim: &Sim<KvsNode>, versions: &mut Versions) -> Vec<Held> {
    let storages: Vec<_> = sim
        .nodes()
        .filter_map(|(id, _, node)| match node {
            Some(KvsNode::Storage(storage)) => Some((id, storage)),
            _ => None,
        })
        .collect();
    let Some(ring) = storages.iter().map(|(_, s)| s.ring()).max_by_key(|r| r.epoch()) else {
        return Vec::new();
    };
    let mut held = Vec::new();
    for key in KEYS {
        for replica in ring.responsible(key, REPLICATION) {
            let Some((_, storage)) = storages.iter().find(|(id, _)| *id == replica) else {
                continue;
            };
            let version = storage.store().get(key).map_or(INITIAL, |v| versions.of(key, v));
            held.push(Held { replica: replica.0, key: key.to_owned(), version });
        }
    }
    held
}
