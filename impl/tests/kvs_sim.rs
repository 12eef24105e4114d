//! Scenario tests of the KVS protocol on the deterministic simulator: five storage nodes at
//! replication 3, clients writing LWW and set keys at majority, drops, duplicates, reordering,
//! and crashes and restarts of one storage node; safety after every step, convergence after
//! healing.

use std::collections::BTreeMap;

use bytes::Bytes;
use squall_proto::NodeId;
use squall_proto::kvs::invariants;
use squall_proto::kvs::{
    ClientConfig, Durability, KvsConfig, KvsNode, Op, Outcome, Ring, ScriptConfig, StorageConfig,
};
use squall_proto::lattice::{LatticeType, LatticeValue, Lww, SetUnion, Stamp, WriterId};
use squall_proto::sim::{Faults, Sim};

const STORAGE: u64 = 5;
const CLIENTS: u64 = 3;

fn lww(time: u64, writer: u64) -> LatticeValue {
    let value = Bytes::from(format!("{writer}@{time}"));
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(writer)), value))
}

fn member(writer: u64, n: u64) -> LatticeValue {
    LatticeValue::Set(SetUnion::singleton(Bytes::from(format!("{writer}.{n}"))))
}

fn configs() -> Vec<(NodeId, KvsConfig)> {
    let ids: Vec<NodeId> = (0..STORAGE).map(NodeId).collect();
    let ring = Ring::with_members(16, ids.iter().copied());
    let schema =
        BTreeMap::from([("k".to_owned(), LatticeType::Lww), ("s".to_owned(), LatticeType::Set)]);
    let mut configs: Vec<(NodeId, KvsConfig)> = ids
        .iter()
        .map(|&id| {
            let mut cfg = StorageConfig::new(id, ring.clone(), 3);
            cfg.schema = schema.clone();
            (id, KvsConfig::Storage(cfg))
        })
        .collect();
    for c in 0..CLIENTS {
        let writer = 100 + c;
        let put = |key: &str, value, durability| Op::Put { key: key.to_owned(), value, durability };
        let ops = vec![
            put("k0", lww(1, writer), Durability::Majority),
            put("s", member(writer, 1), Durability::Majority),
            put("k1", lww(2, writer), Durability::All),
            Op::Get { key: "k0".into() },
            put("k0", member(writer, 9), Durability::One), // the wrong type: must be rejected
            put("s", member(writer, 2), Durability::Majority),
            Op::Get { key: "s".into() },
        ];
        let mut cfg = ClientConfig::new(NodeId(STORAGE + c), ring.clone(), 3);
        cfg.max_attempts = 20;
        configs.push((NodeId(STORAGE + c), KvsConfig::Client(ScriptConfig::new(cfg, ops))));
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

fn check_safety(seed: u64, sim: &Sim<KvsNode>) {
    let states = sim.states();
    assert!(invariants::no_thin_air(&states), "seed {seed}: KVS-I2 after {:?}", sim.trace().last());
    assert!(invariants::typed(&states), "seed {seed}: KVS-I6 after {:?}", sim.trace().last());
    assert!(
        invariants::acknowledged_writes_survive(&states),
        "seed {seed}: KVS-I4 after {:?}",
        sim.trace().last()
    );
}

#[test]
fn replicas_converge_and_keep_acknowledged_writes_under_faults_and_restarts() {
    let (mut restarts, mut rejected, mut written) = (0, 0, 0);
    for seed in 0..60 {
        let mut sim = Sim::new(seed, faults(), configs());
        // Only n0 crashes: every majority write then keeps a copy on a node that never does.
        sim.set_crashable([NodeId(0)]);
        for _ in 0..4_000 {
            let progressed = sim.step().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            check_safety(seed, &sim);
            if !progressed {
                break;
            }
        }
        sim.run_until_quiet(200_000).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let states = sim.states();
        check_safety(seed, &sim);
        assert!(invariants::quiescent(&states), "seed {seed}: quiet but not quiescent");
        assert!(invariants::converged_when_quiescent(&states), "seed {seed}: diverged");
        restarts += sim.stats().restarts;
        for (_, node) in &states {
            if let Some(KvsNode::Client(client)) = node {
                rejected +=
                    client.outcomes().iter().filter(|o| matches!(o, Outcome::Rejected(_))).count();
                written += client.outcomes().iter().filter(|o| **o == Outcome::Written).count();
            }
        }
    }
    assert!(restarts > 0, "no storage node restarted: the test proved nothing about restarts");
    assert!(rejected > 0 && written > 0, "rejected {rejected}, written {written}");
}

#[test]
fn a_partition_keeps_both_sides_safe_and_heals_into_agreement() {
    // n0 and n1 are cut off from the rest (and from the clients' preferred replicas for some
    // keys): majority puts on the minority side cannot be acknowledged, nothing unsafe happens,
    // and after healing every replica agrees.
    let mut cut = 0;
    for seed in 0..40 {
        let mut sim: Sim<KvsNode> = Sim::new(seed, faults(), configs());
        sim.set_crashable([]);
        sim.partition([NodeId(0), NodeId(1)]);
        for _ in 0..3_000 {
            let progressed = sim.step().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            check_safety(seed, &sim);
            if !progressed {
                break;
            }
        }
        cut += sim.stats().partitioned;
        sim.run_until_quiet(200_000).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let states = sim.states();
        check_safety(seed, &sim);
        assert!(invariants::quiescent(&states), "seed {seed}: quiet but not quiescent");
        assert!(invariants::converged_when_quiescent(&states), "seed {seed}: diverged");
    }
    assert!(cut > 0, "the partition never cut a message: the test proved nothing");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut sim: Sim<KvsNode> = Sim::new(seed, faults(), configs());
        sim.set_crashable([NodeId(0)]);
        sim.run(3_000).unwrap();
        (sim.trace().to_vec(), sim.stats())
    };
    assert_eq!(run(11), run(11));
}

#[cfg(feature = "mutants")]
mod mutants {
    use squall_proto::kvs::Mutant;
    use squall_proto::sim::SimError;

    use super::*;

    #[test]
    fn overwrite_merge_is_caught_by_the_monotonicity_check() {
        // Several clients write k0 and s concurrently, so stale gossip reaches replicas that
        // already hold a newer value; overwriting it shrinks the value (KVS-I3).
        let caught = (0..30).find_map(|seed| {
            let configs = configs().into_iter().map(|(id, cfg)| match cfg {
                KvsConfig::Storage(mut cfg) => {
                    cfg.mutant = Some(Mutant::OverwriteMerge);
                    (id, KvsConfig::Storage(cfg))
                }
                client => (id, client),
            });
            let mut sim: Sim<KvsNode> = Sim::new(seed, faults(), configs);
            sim.set_crashable([]);
            sim.run(4_000).err()
        });
        let error = caught.expect("overwrite-merge escaped 30 seeds");
        assert!(
            matches!(error, SimError::Violation { ref violation, .. } if violation.id == invariants::MONOTONE),
            "{error}"
        );
    }
}
