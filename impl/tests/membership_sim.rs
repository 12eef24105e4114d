//! Membership scenarios on the deterministic simulator: two nodes join a ring of five at the
//! same time while two others are asked to leave, clients write throughout, and the network
//! drops, duplicates and reorders messages; one storage node may crash and restart. Safety is
//! checked after every step; after healing, every view, every key and every leave must have
//! settled.

use std::collections::BTreeMap;

use bytes::Bytes;
use squall_proto::NodeId;
use squall_proto::kvs::invariants;
use squall_proto::kvs::{
    ClientConfig, Durability, KvsConfig, KvsNode, Op, Outcome, Ring, ScriptConfig, StorageConfig,
};
use squall_proto::lattice::{LatticeType, LatticeValue, Lww, SetUnion, Stamp, WriterId};
use squall_proto::sim::{Faults, Sim};

/// Members of the initial ring.
const MEMBERS: u64 = 5;
/// Nodes that join it, concurrently.
const JOINERS: [NodeId; 2] = [NodeId(5), NodeId(6)];
/// Members asked to leave, each by its own operator.
const LEAVERS: [NodeId; 2] = [NodeId(1), NodeId(2)];
const WRITERS: u64 = 3;
const FIRST_CLIENT: u64 = MEMBERS + JOINERS.len() as u64;

fn lww(time: u64, writer: u64) -> LatticeValue {
    let value = Bytes::from(format!("{writer}@{time}"));
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(writer)), value))
}

fn member(writer: u64, n: u64) -> LatticeValue {
    LatticeValue::Set(SetUnion::singleton(Bytes::from(format!("{writer}.{n}"))))
}

/// Storage nodes, writers putting at `durability`, and one operator per leaver.
fn configs(durability: Durability) -> Vec<(NodeId, KvsConfig)> {
    let ring = Ring::with_members(16, (0..MEMBERS).map(NodeId));
    let schema =
        BTreeMap::from([("k".to_owned(), LatticeType::Lww), ("s".to_owned(), LatticeType::Set)]);
    let storage_ids = (0..MEMBERS).map(NodeId).chain(JOINERS);
    let mut configs: Vec<(NodeId, KvsConfig)> = storage_ids
        .map(|id| {
            let mut cfg = StorageConfig::new(id, ring.clone(), 3);
            cfg.schema = schema.clone();
            cfg.join = JOINERS.contains(&id);
            (id, KvsConfig::Storage(cfg))
        })
        .collect();
    for w in 0..WRITERS {
        let writer = 100 + w;
        let put = |key: &str, value| Op::Put { key: key.to_owned(), value, durability };
        let mut ops = Vec::new();
        for round in 1..=4 {
            ops.push(put(&format!("k{}", (w + round) % 4), lww(round, writer)));
            ops.push(put("s", member(writer, round)));
        }
        ops.push(Op::Get { key: "s".into() });
        let id = NodeId(FIRST_CLIENT + w);
        let mut cfg = ClientConfig::new(id, ring.clone(), 3);
        cfg.max_attempts = 20;
        configs.push((id, KvsConfig::Client(ScriptConfig::new(cfg, ops))));
    }
    for (i, leaver) in LEAVERS.into_iter().enumerate() {
        let id = NodeId(FIRST_CLIENT + WRITERS + i as u64);
        let mut cfg = ClientConfig::new(id, ring.clone(), 3);
        cfg.max_attempts = 1_000;
        cfg.leave_after = cfg.retry_after;
        let ops = vec![Op::Leave { node: leaver }];
        configs.push((id, KvsConfig::Client(ScriptConfig::new(cfg, ops))));
    }
    configs
}

fn faults(crash: bool) -> Faults {
    Faults {
        drop_per_mille: 100,
        duplicate_per_mille: 100,
        crash_per_mille: if crash { 3 } else { 0 },
        restart_per_mille: if crash { 30 } else { 0 },
        replay_per_mille: 0,
        disk_loss_per_mille: 0,
        power_failure_per_mille: 0,
    }
}

/// The settled end state: quiescent, one view with the joiners in and the leavers out, every
/// key on its owners only, and every replica of a key equal.
fn check_settled(seed: u64, sim: &Sim<KvsNode>) {
    let states = sim.states();
    assert!(invariants::quiescent(&states), "seed {seed}: quiet but not quiescent");
    assert!(invariants::converged_when_quiescent(&states), "seed {seed}: KVS-I5");
    assert!(invariants::ownership_converged_when_quiescent(&states), "seed {seed}: KVS-I8");
    let Some(KvsNode::Storage(node)) = sim.node(NodeId(0)) else { panic!("n0 is storage") };
    let members: Vec<NodeId> = node.ring().members().iter().copied().collect();
    assert_eq!(members, [NodeId(0), NodeId(3), NodeId(4), NodeId(5), NodeId(6)], "seed {seed}");
    for leaver in LEAVERS {
        let Some(KvsNode::Storage(node)) = sim.node(leaver) else { panic!("leavers are storage") };
        assert!(node.store().is_empty(), "seed {seed}: {leaver} still holds keys");
    }
}

fn outcomes(sim: &Sim<KvsNode>) -> Vec<Outcome> {
    sim.nodes()
        .filter_map(|(_, _, node)| match node {
            Some(KvsNode::Client(client)) => Some(client.outcomes().to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn concurrent_joins_and_leaves_lose_no_write_even_at_durability_one() {
    // No crash: every acknowledged put, even at durability one, must survive every handoff.
    let (mut written, mut left) = (0, 0);
    for seed in 0..40 {
        let mut sim = Sim::new(seed, faults(false), configs(Durability::One));
        for _ in 0..6_000 {
            let progressed = sim.step().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let states = sim.states();
            assert!(invariants::acknowledged_writes_held(&states), "seed {seed}: KVS-I7");
            assert!(invariants::no_thin_air(&states), "seed {seed}: KVS-I2");
            if !progressed {
                break;
            }
        }
        sim.run_until_quiet(300_000).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(invariants::acknowledged_writes_held(&sim.states()), "seed {seed}: KVS-I7");
        check_settled(seed, &sim);
        let outcomes = outcomes(&sim);
        written += outcomes.iter().filter(|o| **o == Outcome::Written).count();
        left += outcomes.iter().filter(|o| **o == Outcome::Left).count();
    }
    assert!(written > 0, "no put was acknowledged: the test proved nothing");
    assert!(left > 0, "no leave completed within a client's attempts");
}

#[test]
fn membership_changes_with_a_crash_and_restart_keep_majority_writes() {
    let mut restarts = 0;
    for seed in 0..40 {
        let mut sim = Sim::new(seed, faults(true), configs(Durability::Majority));
        // One node may crash: a member that stays, or a joiner (which rejoins on restart).
        let crashable = if seed % 2 == 0 { NodeId(0) } else { JOINERS[0] };
        sim.set_crashable([crashable]);
        for _ in 0..6_000 {
            let progressed = sim.step().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let states = sim.states();
            assert!(invariants::acknowledged_writes_survive(&states), "seed {seed}: KVS-I4");
            assert!(invariants::no_thin_air(&states), "seed {seed}: KVS-I2");
            if !progressed {
                break;
            }
        }
        sim.run_until_quiet(300_000).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(invariants::acknowledged_writes_survive(&sim.states()), "seed {seed}: KVS-I4");
        check_settled(seed, &sim);
        restarts += sim.stats().restarts;
    }
    assert!(restarts > 0, "no node restarted: the test proved nothing about restarts");
}

#[cfg(feature = "mutants")]
mod mutants {
    use squall_proto::kvs::Mutant;

    use super::*;

    fn with(mutant: Mutant) -> Vec<(NodeId, KvsConfig)> {
        configs(Durability::One)
            .into_iter()
            .map(|(id, cfg)| match cfg {
                KvsConfig::Storage(mut cfg) => {
                    cfg.mutant = Some(mutant);
                    (id, KvsConfig::Storage(cfg))
                }
                client => (id, client),
            })
            .collect()
    }

    #[test]
    fn deleting_before_the_handoff_ack_loses_writes_under_message_loss() {
        let lost = (0..40).any(|seed| {
            let mut sim: Sim<KvsNode> =
                Sim::new(seed, faults(false), with(Mutant::DeleteBeforeHandoffAck));
            (0..6_000).any(|_| {
                sim.step().expect("no step invariant covers this mutant");
                !invariants::acknowledged_writes_held(&sim.states())
            })
        });
        assert!(lost, "delete-before-handoff-ack lost nothing in 40 seeds");
    }
}
