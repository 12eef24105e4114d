//! Scenario tests of the gossip protocol on the deterministic simulator: many seeds of a
//! faulty network (drops, duplicates, reordering, client crashes), safety checked after every
//! step, then convergence after healing.

use std::collections::BTreeMap;
use std::time::Duration;

use squall_proto::NodeId;
use squall_proto::gossip::invariants;
use squall_proto::gossip::{ClientConfig, GossipConfig, GossipNode, ReplicaConfig};
use squall_proto::lattice::{Lww, Merge, Stamp, WriterId};
use squall_proto::sim::{Event, Faults, REPLAY_WINDOW, Sim};

const PERIOD: Duration = Duration::from_millis(10);
const REPLICAS: u64 = 4;
const CLIENTS: u64 = 3;
const WRITES: u64 = 3;

fn configs() -> Vec<(NodeId, GossipConfig<u16>)> {
    let replicas: Vec<NodeId> = (0..REPLICAS).map(NodeId).collect();
    let mut configs: Vec<_> = replicas
        .iter()
        .map(|&id| (id, GossipConfig::Replica(ReplicaConfig::new(id, replicas.clone(), PERIOD))))
        .collect();
    for c in 0..CLIENTS {
        let id = NodeId(REPLICAS + c);
        // Every client's k-th write shares a time, so ties are broken by the writer. The last
        // client's last write is a delete, the largest stamp of all: the register ends deleted.
        let writes = (0..WRITES)
            .map(|k| {
                let stamp = Stamp::new(k + 1, WriterId(c));
                if c + 1 == CLIENTS && k + 1 == WRITES {
                    Lww::deleted(stamp)
                } else {
                    Lww::new(stamp, (100 * c + k) as u16)
                }
            })
            .collect();
        let cfg = ClientConfig::new(id, replicas[(c % REPLICAS) as usize], writes, PERIOD);
        configs.push((id, GossipConfig::Client(cfg)));
    }
    configs
}

fn faulty() -> Faults {
    Faults {
        drop_per_mille: 200,
        duplicate_per_mille: 200,
        crash_per_mille: 5,
        restart_per_mille: 50,
        replay_per_mille: 0,
        disk_loss_per_mille: 0,
        power_failure_per_mille: 0,
    }
}

fn client_ids() -> impl Iterator<Item = NodeId> {
    (REPLICAS..REPLICAS + CLIENTS).map(NodeId)
}

/// Runs one seed: a faulty phase checking GOSSIP-I1 after every step (GOSSIP-I2 is checked by
/// the simulator itself), then the healed liveness phase, and returns the final simulation.
fn run(
    seed: u64,
    configs: Vec<(NodeId, GossipConfig<u16>)>,
) -> Result<Sim<GossipNode<u16>>, String> {
    let mut sim = Sim::new(seed, faulty(), configs);
    sim.set_crashable(client_ids());
    for _ in 0..3_000 {
        let progressed = sim.step().map_err(|e| format!("seed {seed}: {e}"))?;
        if !invariants::no_thin_air(&sim.states()) {
            return Err(format!("seed {seed}: GOSSIP-I1 broken after {:?}", sim.trace().last()));
        }
        let armed = sim.nodes().all(|(id, cfg, node)| {
            node.is_none_or(|node| {
                invariants::retransmission_armed(cfg, node, |timer| sim.is_armed(id, &timer))
            })
        });
        if !armed {
            return Err(format!("seed {seed}: GOSSIP-I4 broken after {:?}", sim.trace().last()));
        }
        if !progressed {
            break;
        }
    }
    sim.run_until_quiet(100_000).map_err(|e| format!("seed {seed}: {e}"))?;
    Ok(sim)
}

fn join_of_all_writes() -> Lww<u16> {
    configs()
        .into_iter()
        .filter_map(|(_, cfg)| match cfg {
            GossipConfig::Client(cfg) => Some(cfg.writes),
            GossipConfig::Replica(_) => None,
        })
        .flatten()
        .fold(Lww::default(), Merge::join)
}

#[test]
fn replicas_converge_to_the_join_of_all_writes_under_faults() {
    let expected = join_of_all_writes();
    // The delete wins everywhere; no replica ends with an older write.
    assert!(expected.is_deleted(), "{expected:?}");
    let mut crashes = 0;
    let mut dropped = 0;
    let mut duplicated = 0;
    for seed in 0..100 {
        let sim = run(seed, configs()).unwrap();
        let states = sim.states();
        assert!(invariants::quiescent(&states), "seed {seed}: quiet but not quiescent");
        assert!(invariants::converged_when_quiescent(&states), "seed {seed}: diverged");
        for (_, node) in &states {
            if let Some(GossipNode::Replica(replica)) = node {
                assert_eq!(replica.value(), &expected, "seed {seed}");
            }
        }
        let stats = sim.stats();
        crashes += stats.crashes;
        dropped += stats.dropped;
        duplicated += stats.duplicated;
    }
    // The faults really happened, or the test proves nothing about them.
    assert!(crashes > 0 && dropped > 0 && duplicated > 0, "{crashes} {dropped} {duplicated}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = run(7, configs()).unwrap();
    let b = run(7, configs()).unwrap();
    assert_eq!(a.trace(), b.trace());
    assert_eq!(a.stats(), b.stats());
    let c = run(8, configs()).unwrap();
    assert_ne!(a.trace(), c.trace(), "different seeds should explore different runs");
}

#[test]
fn replica_crashes_never_break_safety() {
    // Replicas keep no durable state, so a crash may lose writes and liveness is not expected;
    // values must still come from clients and only grow while a replica lives.
    let mut replica_crashes = 0;
    for seed in 0..50 {
        let mut sim = Sim::new(seed, faulty(), configs());
        for _ in 0..2_000 {
            match sim.step() {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => panic!("seed {seed}: {error}"),
            }
            assert!(invariants::no_thin_air(&sim.states()), "seed {seed}");
        }
        let replica_crash =
            |e: &Event<GossipNode<u16>>| matches!(e, Event::Crash(id) if id.0 < REPLICAS);
        replica_crashes += sim.trace().iter().filter(|e| replica_crash(e)).count();
    }
    assert!(replica_crashes > 0, "no replica ever crashed: the test proved nothing");
}

#[test]
fn the_replay_fault_re_sends_what_a_restarted_node_was_sent_before() {
    // With every message replayed, each restart puts back in flight exactly the messages
    // addressed to the node since its previous start (the last `REPLAY_WINDOW` of them), and
    // each of them reaches the node (or is lost) again later.
    let often =
        Faults { crash_per_mille: 50, restart_per_mille: 200, replay_per_mille: 1_000, ..faulty() };
    let mut sim: Sim<GossipNode<u16>> = Sim::new(3, often, configs());
    sim.run(3_000).expect("the gossip protocol takes replays in its stride");
    let (faulty_end, replayed) = (sim.trace().len(), sim.stats().replayed);
    // Healing delivers everything still in flight (restarting with the fault off replays
    // nothing).
    sim.run_until_quiet(100_000).expect("settles");
    assert_eq!(sim.stats().replayed, replayed);
    let trace = sim.trace();
    let addressed_to = |event: &Event<GossipNode<u16>>| match event {
        Event::Deliver { from, to, msg, .. } | Event::Drop { from, to, msg } => {
            Some((*from, *to, msg.clone()))
        }
        _ => None,
    };
    let mut since_start: BTreeMap<NodeId, Vec<_>> = BTreeMap::new();
    let mut expected = 0;
    for (i, event) in trace[..faulty_end].iter().enumerate() {
        if let Some((from, to, msg)) = addressed_to(event) {
            since_start.entry(to).or_default().push((from, msg));
        }
        let Event::Restart(id) = event else { continue };
        let addressed = since_start.remove(id).unwrap_or_default();
        let window = &addressed[addressed.len().saturating_sub(REPLAY_WINDOW)..];
        expected += window.len() as u64;
        for (from, msg) in window {
            let copies = window.iter().filter(|(f, m)| f == from && m == msg).count();
            let again = trace[i + 1..]
                .iter()
                .filter_map(addressed_to)
                .filter(|(f, t, m)| f == from && t == id && m == msg)
                .count();
            assert!(again >= copies, "{msg:?} from {from} to {id} was not replayed");
        }
    }
    assert!(expected > 0, "nothing was addressed to a restarted node: the test proved nothing");
    assert_eq!(replayed, expected);
}

#[cfg(feature = "mutants")]
mod mutants {
    use super::*;
    use squall_proto::gossip::Mutant;
    use squall_proto::sim::SimError;

    fn with_mutant(mutant: Mutant) -> Vec<(NodeId, GossipConfig<u16>)> {
        configs()
            .into_iter()
            .map(|(id, cfg)| match cfg {
                GossipConfig::Replica(mut cfg) => {
                    cfg.mutant = Some(mutant);
                    (id, GossipConfig::Replica(cfg))
                }
                client => (id, client),
            })
            .collect()
    }

    /// The first seed under 50 at which the mutant breaks safety or convergence, if any.
    fn caught(mutant: Mutant) -> Option<(u64, String)> {
        (0..50).find_map(|seed| match run(seed, with_mutant(mutant)) {
            Err(error) => Some((seed, error)),
            Ok(sim) => (!invariants::converged_when_quiescent(&sim.states()))
                .then(|| (seed, "GOSSIP-I3 diverged".to_owned())),
        })
    }

    #[test]
    fn every_mutant_is_caught_within_fifty_seeds() {
        let expected = [
            (Mutant::OverwriteMerge, "GOSSIP-I2"),
            (Mutant::TornLww, "GOSSIP-I1"),
            (Mutant::LwwIgnoresWriter, "GOSSIP-I2"),
            (Mutant::SkipPeer, "GOSSIP-I3"),
            // Without acknowledgements gossip is re-sent for ever: the healed run never settles.
            (Mutant::DropGossipAck, "not quiet"),
            (Mutant::NoRetransmit, "GOSSIP-I4"),
            (Mutant::DeleteAsHole, "GOSSIP-I2"),
        ];
        assert_eq!(expected.len(), Mutant::ALL.len());
        for (mutant, symptom) in expected {
            let (seed, why) = caught(mutant).unwrap_or_else(|| panic!("{mutant:?} escaped"));
            assert!(why.contains(symptom), "{mutant:?} at seed {seed}: {why}");
        }
    }

    #[test]
    fn overwrite_merge_breaks_monotonicity_in_the_simulator() {
        let error = (0..50)
            .find_map(|seed| {
                let mut sim: Sim<GossipNode<u16>> =
                    Sim::new(seed, faulty(), with_mutant(Mutant::OverwriteMerge));
                sim.run(3_000).err()
            })
            .expect("caught");
        assert!(
            matches!(error, SimError::Violation { violation, .. } if violation.id == "GOSSIP-I2")
        );
    }
}
