//! The gossip world: 3–5 replicas of one LWW register, 2–3 clients each writing 2–3 stamped
//! values to a replica of their own (several at the same time, so ties are broken by the
//! writer; about one write in eight is a delete). Clients may crash; replicas do not (they keep
//! no durable state). History: every client write (acknowledged or not) and every replica's
//! settled value.

use std::time::Duration;

use rand::Rng;
use squall_proto::NodeId;
use squall_proto::gossip::{ClientConfig, GossipConfig, GossipNode, ReplicaConfig, invariants};
use squall_proto::lattice::{Lww, Stamp, WriterId};
use squall_proto::sim::Sim;

use super::{
    Mutant, Partition, Timing, WorldReport, faults, judge, liveness, protocol_checks, rng, safety,
};
use crate::history::{Held, History, INITIAL, Level, Op, Status, Version};

const KEY: &str = "register";
const PERIOD: Duration = Duration::from_millis(10);
const SAFETY_STEPS: u64 = 2_000;
const LIVENESS_STEPS: u64 = 100_000;

/// The version of a write stamped `(time, writer)`: ordered as the stamps are.
fn version(time: u64, writer: u64) -> Version {
    time * 100 + writer + 1
}

/// The version a replica's register holds: its stamp's, if the payload is the one that
/// stamp's write carried; else one nobody wrote.
fn held_version(value: &Lww<u16>, writes: &[Lww<u16>]) -> Version {
    match value.write() {
        None => INITIAL,
        Some((stamp, payload)) => {
            let written = writes.iter().any(|w| w.write() == Some((stamp, payload)));
            if written {
                version(stamp.time, stamp.writer.0)
            } else {
                // A torn delete (a stamp paired with no value when its write had one) gets a
                // version of its own, below every torn payload's.
                u64::MAX - payload.map_or(u64::from(u16::MAX) + 1, |p| u64::from(*p))
            }
        }
    }
}

/// Runs the gossip world of `seed`.
pub fn run(seed: u64, mutant: Option<Mutant>) -> WorldReport {
    let mut rng = rng(seed);
    let replicas: Vec<NodeId> = (0..rng.random_range(3..=5)).map(NodeId).collect();
    let clients = rng.random_range(2..=3u64);
    let mut configs: Vec<(NodeId, GossipConfig<u16>)> = replicas
        .iter()
        .map(|&id| {
            let mut cfg = ReplicaConfig::new(id, replicas.clone(), PERIOD);
            if let Some(Mutant::Gossip(m)) = mutant {
                cfg.mutant = Some(m);
            }
            (id, GossipConfig::Replica(cfg))
        })
        .collect();
    let mut history = History::default();
    let mut client_writes = Vec::new();
    for c in 0..clients {
        let id = NodeId(replicas.len() as u64 + c);
        // Increasing times per client (versions are unique), overlapping across clients.
        let mut time = 0;
        let writes: Vec<Lww<u16>> = (0..rng.random_range(2..=3))
            .map(|_| {
                time += rng.random_range(1..=2);
                // Random payloads, unrelated to the stamps' order: a merge that takes the
                // larger stamp and the larger payload separately tears the write. About one
                // write in eight is a delete (a payload's low bits decide, so the draws, and
                // every seed's faults and timing, are what they were before deletes).
                let payload: u16 = rng.random();
                let stamp = Stamp::new(time, WriterId(c));
                if payload.is_multiple_of(8) {
                    Lww::deleted(stamp)
                } else {
                    Lww::new(stamp, payload)
                }
            })
            .collect();
        client_writes.push((id, writes.clone()));
        let replica = replicas[rng.random_range(0..replicas.len())];
        configs.push((id, GossipConfig::Client(ClientConfig::new(id, replica, writes, PERIOD))));
    }
    let setup = format!("{} replicas, {clients} clients", replicas.len());
    let faults = faults(&mut rng, 5);
    let clients_ids: Vec<NodeId> = client_writes.iter().map(|(id, _)| *id).collect();
    let all: Vec<NodeId> = configs.iter().map(|(id, _)| *id).collect();
    let partition = Partition::draw(&mut rng, &all, SAFETY_STEPS);
    let timing = Timing::draw(&mut rng);
    let setup = format!("{setup}; {}", timing.name());
    let mut sim: Sim<GossipNode<u16>> = Sim::new(seed, faults, configs);
    sim.set_crashable(clients_ids);
    timing.apply(&mut sim);

    let phase = safety(&mut sim, SAFETY_STEPS, partition.as_ref(), None, |sim, _| {
        let states = sim.states();
        if !invariants::no_thin_air(&states) {
            return Some(format!(
                "{} (a replica holds a value no client wrote)",
                invariants::NO_THIN_AIR
            ));
        }
        let armed = sim.nodes().all(|(id, cfg, node)| {
            node.is_none_or(|node| {
                invariants::retransmission_armed(cfg, node, |timer| sim.is_armed(id, &timer))
            })
        });
        (!armed).then(|| {
            format!(
                "{} (a replica behind its peers has no gossip timer armed)",
                invariants::RETRANSMISSION
            )
        })
    });
    let mut failure = phase.failure;
    if failure.is_none() {
        let quiet = |sim: &Sim<GossipNode<u16>>| sim.is_quiet();
        if let Some(failed) = liveness(&mut sim, LIVENESS_STEPS, quiet, |_, _| None) {
            failure = Some(failed);
        } else if protocol_checks() && !invariants::converged_when_quiescent(&sim.states()) {
            failure = Some((
                "liveness",
                format!("{}: replicas differ when quiet", invariants::CONVERGENCE),
            ));
        }
    }

    // The history: each client's writes, acknowledged or not, and what each replica settled on.
    for (txn, (id, writes)) in client_writes.iter().enumerate() {
        let acknowledged = match sim.node(*id) {
            Some(GossipNode::Client(client)) => client.acknowledged(),
            _ => 0,
        };
        for (i, write) in writes.iter().enumerate() {
            let (stamp, _) = write.write().expect("generated writes are stamped");
            let status = if i < acknowledged { Status::Ok } else { Status::Unknown };
            // Times are not tracked here (no gossip check uses them): invoked at 0, completed
            // at 0 if acknowledged. Replicas never crash in this world, so a write one replica
            // acknowledged must reach them all: durable, recorded at `majority`.
            let op = Op::write(
                id.0,
                (txn * 10 + i) as u64,
                Level::Majority,
                KEY,
                version(stamp.time, stamp.writer.0),
            );
            let complete = (status == Status::Ok).then_some(0);
            history.ops.push(op.at(0, complete).with_status(status));
        }
    }
    if failure.is_none() {
        for id in &replicas {
            if let Some(GossipNode::Replica(replica)) = sim.node(*id) {
                let written: Vec<Lww<u16>> =
                    client_writes.iter().flat_map(|(_, w)| w.iter().cloned()).collect();
                let version = held_version(replica.value(), &written);
                history.settled.push(Held { replica: id.0, key: KEY.to_owned(), version });
            }
        }
        failure = judge(&history).map(|what| ("history", what));
    }
    WorldReport::new("gossip", setup, &sim, phase.partitioned, history, failure)
}
