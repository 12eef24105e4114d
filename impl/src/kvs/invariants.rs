//! The KVS protocol's invariants, by id, as plain functions over the nodes of a run: every
//! node's configuration with its state, `None` for a crashed node. `docs/invariants.md` traces
//! each id to its model property and tests.

use std::collections::BTreeMap;

use super::{
    Durability, Key, Op, Outcome, ScriptConfig, ScriptedClient, Status, StorageConfig, StorageNode,
    Stored,
};
use crate::lattice::LatticeValue;
use crate::node::{Hosts, Nodes, live, roles};

/// KVS-I2: a read returns nothing, or a join of writes some client made to that key.
pub const NO_THIN_AIR: &str = "KVS-I2";
/// KVS-I3: within one incarnation a replica never loses a key or shrinks a value.
pub const MONOTONE: &str = "KVS-I3";
/// KVS-I4: a put acknowledged at majority (or all) is held by a live replica as long as at most
/// one node has crashed.
pub const DURABLE: &str = "KVS-I4";
/// KVS-I5: once quiescent, the replicas of each key hold equal values that include every put
/// acknowledged at majority or all.
pub const CONVERGENCE: &str = "KVS-I5";
/// KVS-I6: a put of a type other than its key's declared type is never acknowledged, and no
/// replica holds a value of an undeclared type.
pub const TYPED: &str = "KVS-I6";
/// KVS-I7: with no crash, every acknowledged put, at any durability, is held by some live
/// node, through every membership change and handoff.
pub const HANDOFF: &str = "KVS-I7";
/// KVS-I8: once quiescent, every storage node that has not left has the same membership view,
/// that view gives every node the status the node gives itself, and every storage node stores
/// only keys its view makes it responsible for.
pub const OWNERSHIP: &str = "KVS-I8";
/// KVS-I9: a client replaces its route to a key only with one from a strictly newer ring
/// epoch.
pub const ROUTING: &str = "KVS-I9";
/// KVS-D1: a put acknowledged at durability `d` is on the disks of at least as many of its
/// key's replicas as `d` asks for, so it survives every replica crashing at once.
pub const PERSISTED: &str = "KVS-D1";
/// KVS-D2: a running storage node holds, for every key it owns, at least what it persisted:
/// a restart loses nothing that reached the disk.
pub const RECOVERED: &str = "KVS-D2";
/// KVS-L1: a quiescent state is reachable in which every well-typed put was acknowledged (so
/// KVS-I5 is not vacuous, and the protocol can finish its work, not merely lose it).
pub const QUIESCENCE_REACHABLE: &str = "KVS-L1";

/// A world the KVS invariants judge: one that hosts storage nodes and scripted clients (and
/// perhaps other roles, which these invariants leave alone).
pub trait KvsWorld: Hosts<StorageNode> + Hosts<ScriptedClient> {}

impl<W: Hosts<StorageNode> + Hosts<ScriptedClient>> KvsWorld for W {}

/// Every scripted client with its outcomes (`None` while crashed: unknown).
fn clients<'a, W: KvsWorld>(
    nodes: &'a Nodes<'a, W>,
) -> impl Iterator<Item = (&'a ScriptConfig, Option<&'a [Outcome]>)> + 'a {
    roles::<ScriptedClient, W>(nodes).map(|(cfg, client)| (cfg, client.map(|c| c.outcomes())))
}

fn stores<'a, W: KvsWorld>(
    nodes: &'a Nodes<'a, W>,
) -> impl Iterator<Item = &'a BTreeMap<Key, LatticeValue>> + 'a {
    live::<StorageNode, W>(nodes).map(|(_, storage)| storage.store())
}

/// Every live storage node with its configuration.
pub(crate) fn live_storages<'a, W: KvsWorld>(
    nodes: &'a Nodes<'a, W>,
) -> Vec<(&'a StorageConfig, &'a StorageNode)> {
    live::<StorageNode, W>(nodes).collect()
}

/// Every finished call of every live client, with its outcome.
pub(crate) fn finished<'a, W: KvsWorld>(
    nodes: &'a Nodes<'a, W>,
) -> impl Iterator<Item = (&'a Op, &'a Outcome)> + 'a {
    clients(nodes).flat_map(|(cfg, outcomes)| cfg.ops.iter().zip(outcomes.unwrap_or(&[])))
}

/// Whether `value` has the type the cluster's schema declares for `key` (any type where the
/// schema declares none, or there is no storage node to hold a schema).
fn well_typed<W: KvsWorld>(nodes: &Nodes<'_, W>, key: &str, value: &LatticeValue) -> bool {
    let schema = roles::<StorageNode, W>(nodes).next().map(|(cfg, _)| cfg);
    schema.and_then(|s| s.declared_type(key)).is_none_or(|t| t == value.lattice_type())
}

/// Every value a client may have put to `key`: every configured put except those whose
/// outcome says definitely that they did not happen (a crashed client's outcomes are unknown).
pub(crate) fn written<'a, W: KvsWorld>(
    nodes: &'a Nodes<'a, W>,
    key: &'a str,
) -> Vec<&'a LatticeValue> {
    clients(nodes)
        .flat_map(|(cfg, outcomes)| {
            let outcomes = outcomes.unwrap_or(&[]);
            cfg.ops.iter().enumerate().filter(move |(i, _)| {
                !outcomes.get(*i).is_some_and(|o| o.is_definite() && *o != Outcome::Written)
            })
        })
        .filter_map(|(_, op)| match op {
            Op::Put { key: k, value, .. } if k == key => Some(value),
            _ => None,
        })
        .collect()
}

/// Whether `value` is the join of a non-empty subset of `writes`.
pub(crate) fn joins_some(value: &LatticeValue, writes: &[&LatticeValue]) -> bool {
    let below: Vec<&LatticeValue> =
        writes.iter().copied().filter(|w| w.lattice_le(value)).collect();
    let Some((first, rest)) = below.split_first() else { return false };
    let mut join = (*first).clone();
    for w in rest {
        if join.merge((*w).clone()).is_err() {
            return false;
        }
    }
    // The join of every write below `value` is the largest candidate: if it is not `value`,
    // no subset joins to it.
    join == *value
}

/// KVS-I2 over the outcomes of every live client.
pub fn no_thin_air<W: KvsWorld>(nodes: &Nodes<'_, W>) -> bool {
    finished(nodes).all(|(op, outcome)| match outcome {
        Outcome::Read(Some(value)) => {
            op.key().is_some_and(|key| joins_some(value, &written(nodes, key)))
        }
        _ => true,
    })
}

/// KVS-I4: every put acknowledged at majority or all is below the join of the live replicas'
/// values of its key. Meaningful while at most one node has crashed; models bound crashes so.
pub fn acknowledged_writes_survive<W: KvsWorld>(nodes: &Nodes<'_, W>) -> bool {
    acknowledged_puts_held(nodes, |durability| durability != Durability::One)
}

/// KVS-I7: every acknowledged put is below the join of the live nodes' values of its key.
/// Meaningful only in runs without crashes (a put at durability one dies with its
/// coordinator); the membership model has none.
pub fn acknowledged_writes_held<W: KvsWorld>(nodes: &Nodes<'_, W>) -> bool {
    acknowledged_puts_held(nodes, |_| true)
}

/// Whether every acknowledged put at a durability `counted` is below the join of the live
/// nodes' values of its key.
fn acknowledged_puts_held<W: KvsWorld>(
    nodes: &Nodes<'_, W>,
    counted: impl Fn(Durability) -> bool,
) -> bool {
    finished(nodes).all(|(op, outcome)| match (op, outcome) {
        (Op::Put { key, value, durability }, Outcome::Written) if counted(*durability) => {
            let mut held = LatticeValue::bottom(value.lattice_type());
            for store in stores(nodes) {
                if let Some(v) = store.get(key) {
                    let _ = held.merge(v.clone());
                }
            }
            value.lattice_le(&held)
        }
        _ => true,
    })
}

/// KVS-I8: quiescent ⇒ one membership view on every node that has not left, agreeing with
/// each node's own status, and no node stores a key it does not own under its view.
pub fn ownership_converged_when_quiescent<W: KvsWorld>(nodes: &Nodes<'_, W>) -> bool {
    if !quiescent(nodes) {
        return true;
    }
    let storages = live_storages(nodes);
    // A node that has left is no longer told of changes (it may have been stopped), so only
    // the others must agree.
    let staying: Vec<_> = storages
        .iter()
        .filter(|(cfg, s)| s.ring().status(cfg.id) != Some(Status::Left))
        .map(|(_, s)| s.ring().membership())
        .collect();
    let one_view = staying.windows(2).all(|pair| pair[0] == pair[1]);
    // And that view knows where every node is: what each node says of itself.
    let self_known = storages.iter().all(|(cfg, s)| {
        staying.iter().all(|view| view.get(&cfg.id) == s.ring().membership().get(&cfg.id))
    });
    let owned = storages.iter().all(|(cfg, s)| {
        s.store().keys().all(|key| s.ring().is_responsible(cfg.id, key, cfg.replication))
    });
    one_view && self_known && owned
}

/// Whether the run is quiescent: every node up and idle — every client done, every storage
/// node (and every other role of the world) with nothing in flight.
pub fn quiescent<W: KvsWorld>(nodes: &Nodes<'_, W>) -> bool {
    crate::node::quiescent(nodes)
}

/// KVS-I5: quiescent ⇒ for each key, every responsible live replica holds the same value, and
/// it includes every put of the key acknowledged at majority or all.
pub fn converged_when_quiescent<W: KvsWorld>(nodes: &Nodes<'_, W>) -> bool {
    if !quiescent(nodes) {
        return true;
    }
    let storages = live_storages(nodes);
    // Every stored key, and every key of an acknowledged put: a key that vanished everywhere
    // must fail the check, not escape it.
    let acknowledged = finished(nodes).filter_map(|(op, outcome)| match (op, outcome) {
        (Op::Put { key, .. }, Outcome::Written) => Some(key),
        _ => None,
    });
    let keys: std::collections::BTreeSet<&Key> =
        storages.iter().flat_map(|(_, s)| s.store().keys()).chain(acknowledged).collect();
    keys.into_iter().all(|key| {
        let values: Vec<Option<&LatticeValue>> = storages
            .iter()
            .filter(|(cfg, s)| s.ring().is_responsible(cfg.id, key, cfg.replication))
            .map(|(_, s)| s.store().get(key))
            .collect();
        let agree = values.windows(2).all(|pair| pair[0] == pair[1]);
        let acked = finished(nodes).all(|(op, outcome)| match (op, outcome) {
            // A put at durability one may die with its coordinator; only stronger ones must be
            // everywhere.
            (Op::Put { key: k, value, durability }, Outcome::Written)
                if k == key && *durability != Durability::One =>
            {
                values.iter().all(|v| v.is_some_and(|v| value.lattice_le(v)))
            }
            _ => true,
        });
        agree && acked
    })
}

/// KVS-I6 over every live node.
pub fn typed<W: KvsWorld>(nodes: &Nodes<'_, W>) -> bool {
    let stores_typed =
        stores(nodes).all(|store| store.iter().all(|(key, value)| well_typed(nodes, key, value)));
    let puts_typed = finished(nodes).all(|(op, outcome)| match (op, outcome) {
        (Op::Put { key, value, .. }, Outcome::Written) => well_typed(nodes, key, value),
        _ => true,
    });
    stores_typed && puts_typed
}

/// Whether the run is quiescent, every put of its key's declared type was acknowledged and
/// every node asked to leave has left: the states KVS-L1 asks to be reachable.
pub fn quiescent_with_puts_acknowledged<W: KvsWorld>(nodes: &Nodes<'_, W>) -> bool {
    quiescent(nodes)
        && finished(nodes).all(|(op, outcome)| match op {
            Op::Put { key, value, .. } if well_typed(nodes, key, value) => {
                *outcome == Outcome::Written
            }
            Op::Leave { .. } => *outcome == Outcome::Left,
            _ => true,
        })
}

/// KVS-D1 over `disks`, what every storage node persisted (crashed or not): every put a client
/// saw acknowledged is covered by the persisted value of its key on at least as many disks
/// as its durability asks of the key's replicas.
pub fn acknowledged_writes_persisted<'a, W: KvsWorld>(
    nodes: &Nodes<'_, W>,
    disks: impl Iterator<Item = &'a Stored> + Clone,
) -> bool {
    let replication = roles::<StorageNode, W>(nodes).next().map_or(1, |(cfg, _)| cfg.replication);
    finished(nodes).all(|(op, outcome)| match (op, outcome) {
        (Op::Put { key, value, durability }, Outcome::Written) => {
            let on_disk = disks
                .clone()
                .filter(|disk| disk.data.get(key).is_some_and(|held| value.lattice_le(held)))
                .count();
            on_disk >= durability.replicas_needed(replication)
        }
        _ => true,
    })
}

/// KVS-D2 for one running storage node and what it persisted: every persisted value of a key
/// the node owns (by its view of the ring) is below what it holds.
pub fn persisted_values_held(cfg: &StorageConfig, node: &StorageNode, disk: &Stored) -> bool {
    disk.data.iter().all(|(key, persisted)| {
        !node.ring().is_responsible(cfg.id, key, cfg.replication)
            || node.store().get(key).is_some_and(|held| persisted.lattice_le(held))
    })
}
