//! Cache scenarios on the deterministic simulator: three storage nodes (replication 2), two
//! caches of two keys each, executors writing and reading three keys through them; drops,
//! duplicates and reordering, so pushes are lost, duplicated and race miss fetches, and
//! evictions race pushes; caches and one storage node crash and restart. Safety after every
//! step; after healing, every cache must settle with every subscribed key fresh.

use bytes::Bytes;
use squall_proto::NodeId;
use squall_proto::cache::{CacheConfig, CachedKvsConfig, CachedKvsNode, invariants};
use squall_proto::kvs::invariants as kvs_invariants;
use squall_proto::kvs::{ClientConfig, Durability, Op, Outcome, Ring, ScriptConfig, StorageConfig};
use squall_proto::lattice::{LatticeValue, Lww, Stamp, WriterId};
use squall_proto::sim::{Faults, Sim};

const STORAGE: u64 = 3;
const CACHES: [NodeId; 2] = [NodeId(3), NodeId(4)];
const KEYS: [&str; 3] = ["k0", "k1", "k2"];

fn lww(time: u64, writer: u64) -> LatticeValue {
    let value = Bytes::from(format!("{writer}@{time}"));
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(writer)), value))
}

fn configs() -> Vec<(NodeId, CachedKvsConfig)> {
    let ring = Ring::with_members(16, (0..STORAGE).map(NodeId));
    let mut configs: Vec<(NodeId, CachedKvsConfig)> = (0..STORAGE)
        .map(|id| {
            let mut cfg = StorageConfig::new(NodeId(id), ring.clone(), 2);
            cfg.lease_period = Some(std::time::Duration::from_secs(3));
            (NodeId(id), CachedKvsConfig::Storage(cfg))
        })
        .collect();
    for id in CACHES {
        let mut cfg = CacheConfig::new(id, ring.clone(), 2);
        cfg.max_keys = 2;
        configs.push((id, CachedKvsConfig::Cache(cfg)));
    }
    // Two writers, one behind each cache, and a reader behind the second.
    let executors =
        [(NodeId(5), CACHES[0], true), (NodeId(6), CACHES[1], true), (NodeId(7), CACHES[1], false)];
    for (id, via, writes) in executors {
        let mut ops = Vec::new();
        for round in 1..=4u64 {
            for key in KEYS {
                if writes {
                    let value = lww(round * 10 + id.0, id.0);
                    ops.push(Op::Put { key: key.into(), value, durability: Durability::Majority });
                }
                ops.push(Op::Get { key: key.into() });
            }
        }
        let mut cfg = ClientConfig::new(id, ring.clone(), 2);
        cfg.via = Some(via);
        cfg.max_attempts = 5;
        configs.push((id, CachedKvsConfig::Client(ScriptConfig::new(cfg, ops))));
    }
    configs
}

fn faults() -> Faults {
    Faults {
        drop_per_mille: 100,
        duplicate_per_mille: 100,
        crash_per_mille: 3,
        restart_per_mille: 30,
        replay_per_mille: 0,
        disk_loss_per_mille: 0,
        power_failure_per_mille: 0,
    }
}

fn check_safety(seed: u64, sim: &Sim<CachedKvsNode>) {
    let states = sim.states();
    let last = sim.trace().last();
    assert!(invariants::no_thin_air(&states), "seed {seed}: CACHE-I1 after {last:?}");
    assert!(invariants::leased(&states), "seed {seed}: CACHE-I4 after {last:?}");
    assert!(
        kvs_invariants::acknowledged_writes_survive(&states),
        "seed {seed}: KVS-I4 after {last:?}"
    );
}

#[test]
fn caches_stay_safe_under_faults_and_settle_fresh_after_healing() {
    let (mut newer_reads, mut restarts, mut checked) = (0, 0, 0);
    for seed in 0..40 {
        let mut sim = Sim::new(seed, faults(), configs());
        // Both caches may crash (they hold nothing durable), and one storage node: majority
        // puts at replication 2 are on both replicas.
        sim.set_crashable([CACHES[0], CACHES[1], NodeId(0)]);
        for _ in 0..6_000 {
            let progressed = sim.step().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            check_safety(seed, &sim);
            if !progressed {
                break;
            }
        }
        restarts += sim.stats().restarts;
        sim.run_until_settled(400_000, |sim| invariants::quiescent(&sim.states()))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        check_safety(seed, &sim);
        let states = sim.states();
        assert!(invariants::fresh_when_quiescent(&states), "seed {seed}: CACHE-I3");
        assert!(kvs_invariants::converged_when_quiescent(&states), "seed {seed}: KVS-I5");
        // CACHE-I3 was not vacuous: it compared some cached entry with its replicas.
        checked += invariants::fresh_checked_count(&states);
        // The reader saw a key change between two of its reads: a push (or a refetch) moved
        // its cache forward.
        if let Some(CachedKvsNode::Client(reader)) = sim.node(NodeId(7)) {
            let reads: Vec<&Outcome> = reader.outcomes().iter().step_by(KEYS.len()).collect();
            newer_reads += reads.windows(2).filter(|pair| pair[0] != pair[1]).count();
        }
    }
    assert!(restarts > 0, "nothing restarted: the test proved nothing about restarts");
    assert!(newer_reads > 0, "no reader ever saw a newer value");
    assert!(
        checked > 0,
        "no cached entry was subscribed at its replicas: CACHE-I3 checked nothing"
    );
}

#[test]
fn subscriptions_follow_keys_to_a_joining_storage_node() {
    const JOINER: NodeId = NodeId(8);
    let (mut moved, mut checked) = (0, 0);
    for seed in 0..30 {
        let mut configs = configs();
        let ring = Ring::with_members(16, (0..STORAGE).map(NodeId));
        let mut joiner = StorageConfig::new(JOINER, ring, 2);
        joiner.join = true;
        configs.push((JOINER, CachedKvsConfig::Storage(joiner)));
        let mut sim = Sim::new(seed, faults(), configs);
        // No crash: a restarted cache comes back empty, and there would be nothing to move.
        sim.set_crashable([]);
        for _ in 0..6_000 {
            let progressed = sim.step().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            check_safety(seed, &sim);
            if !progressed {
                break;
            }
        }
        sim.run_until_settled(400_000, |sim| invariants::quiescent(&sim.states()))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let states = sim.states();
        assert!(invariants::fresh_when_quiescent(&states), "seed {seed}: CACHE-I3");
        checked += invariants::fresh_checked_count(&states);
        let Some(CachedKvsNode::Storage(joined)) = sim.node(JOINER) else { panic!("storage") };
        // A cache learns a view lazily, from the replicas of the keys it holds or fetches:
        // every key it holds must be routed by the current view.
        for cache in CACHES {
            if let Some(CachedKvsNode::Cache(cache)) = sim.node(cache) {
                for key in cache.entries().keys() {
                    let now = joined.ring().responsible(key, 2);
                    assert_eq!(cache.ring().responsible(key, 2), now, "seed {seed}: {key}");
                }
            }
        }
        moved += usize::from(!joined.subscriptions().is_empty());
    }
    assert!(moved > 0, "no cache ever subscribed at the joiner: nothing moved");
    assert!(
        checked > 0,
        "no cached entry was subscribed at its replicas: CACHE-I3 checked nothing"
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut sim: Sim<CachedKvsNode> = Sim::new(seed, faults(), configs());
        sim.run(3_000).unwrap();
        (sim.trace().to_vec(), sim.stats())
    };
    assert_eq!(run(5), run(5));
}

#[cfg(feature = "mutants")]
mod mutants {
    use squall_proto::cache::Mutant;
    use squall_proto::sim::SimError;

    use super::*;

    fn with(mutant: Mutant) -> Vec<(NodeId, CachedKvsConfig)> {
        configs()
            .into_iter()
            .map(|(id, cfg)| match cfg {
                CachedKvsConfig::Cache(mut cfg) => {
                    cfg.mutant = Some(mutant);
                    (id, CachedKvsConfig::Cache(cfg))
                }
                other => (id, other),
            })
            .collect()
    }

    #[test]
    fn a_push_that_overwrites_takes_a_cache_backwards() {
        let caught = (0..40).find_map(|seed| {
            let mut sim: Sim<CachedKvsNode> =
                Sim::new(seed, faults(), with(Mutant::PushOverwrites));
            sim.set_crashable([]);
            sim.run(6_000).err()
        });
        let error = caught.expect("push-overwrites escaped 40 seeds");
        assert!(
            matches!(error, SimError::Violation { ref violation, .. } if violation.id == invariants::MONOTONE_READS),
            "{error}"
        );
    }

    #[test]
    fn a_cache_that_ignores_pushes_is_left_stale() {
        let stale = (0..40).any(|seed| {
            let mut sim: Sim<CachedKvsNode> = Sim::new(seed, faults(), with(Mutant::IgnorePushes));
            sim.set_crashable([]);
            sim.run(6_000).expect("no step invariant covers this mutant");
            sim.run_until_settled(400_000, |sim| invariants::quiescent(&sim.states()))
                .expect("settles");
            !invariants::fresh_when_quiescent(&sim.states())
        });
        assert!(stale, "ignore-pushes left no cache stale in 40 seeds");
    }
}
