//! The cache protocol's invariants, by id, over the nodes of a run (configuration and state,
//! `None` for a crashed node). Executors are KVS clients whose operations go through a cache,
//! so the KVS invariants about clients apply to them unchanged.

use crate::kvs::invariants::{KvsWorld, finished, joins_some, live_storages, written};
use crate::kvs::{Op, Outcome};
use crate::lattice::LatticeValue;
use crate::node::{Hosts, Nodes, live};

use super::{CacheConfig, CacheNode};

/// CACHE-I1: a cached value, and so every read through a cache, is a join of values clients
/// wrote to its key.
pub const NO_THIN_AIR: &str = "CACHE-I1";
/// CACHE-I2: while a key stays cached, its value never goes backwards.
pub const MONOTONE_READS: &str = "CACHE-I2";
/// CACHE-I3: once quiescent, every cached key subscribed at all its replicas equals their value.
pub const FRESH: &str = "CACHE-I3";
/// CACHE-I4: a storage node drops a subscription that missed two lease ticks.
pub const LEASED: &str = "CACHE-I4";
/// CACHE-I5: a put acknowledged to an executor is in the KVS (no crash in the cache model).
pub const WRITE_THROUGH: &str = "CACHE-I5";
/// CACHE-L1: quiescence with every put acknowledged is reachable.
pub const QUIESCENCE_REACHABLE: &str = "CACHE-L1";

/// A world the cache invariants judge: a KVS world that hosts caches too.
pub trait CacheWorld: KvsWorld + Hosts<CacheNode> {}

impl<W: KvsWorld + Hosts<CacheNode>> CacheWorld for W {}

fn caches<'a, W: CacheWorld>(
    nodes: &'a Nodes<'a, W>,
) -> impl Iterator<Item = (&'a CacheConfig, &'a CacheNode)> + 'a {
    live::<CacheNode, W>(nodes)
}

/// CACHE-I1 over every live cache's entries and every executor's reads.
pub fn no_thin_air<W: CacheWorld>(nodes: &Nodes<'_, W>) -> bool {
    let entries = caches(nodes).all(|(_, cache)| {
        cache.entries().iter().all(|(key, entry)| {
            entry.value.as_ref().is_none_or(|value| joins_some(value, &written(nodes, key)))
        })
    });
    entries && crate::kvs::invariants::no_thin_air(nodes)
}

/// Whether every node is up, every client done, and every storage node and cache idle (the
/// KVS's quiescence, which counts caches too).
pub use crate::kvs::invariants::quiescent;

/// CACHE-I3: quiescent ⇒ every cached key that all its live replicas list the cache as a
/// subscriber of holds exactly their value (`None` where they hold none).
pub fn fresh_when_quiescent<W: CacheWorld>(nodes: &Nodes<'_, W>) -> bool {
    !quiescent(nodes)
        || fresh_checked(nodes).iter().all(|(cached, held)| held.iter().all(|h| h == cached))
}

/// How many cached entries CACHE-I3 compares with their replicas (those subscribed at every
/// live replica): a test that claims CACHE-I3 held must also see this above zero.
pub fn fresh_checked_count<W: CacheWorld>(nodes: &Nodes<'_, W>) -> usize {
    fresh_checked(nodes).len()
}

/// A cached value and what each of its key's live replicas holds.
type Compared<'a> = (Option<&'a LatticeValue>, Vec<Option<&'a LatticeValue>>);

/// The cached entries CACHE-I3 applies to, each with its live replicas' values.
fn fresh_checked<'a, W: CacheWorld>(nodes: &'a Nodes<'a, W>) -> Vec<Compared<'a>> {
    let storages = live_storages(nodes);
    let mut compared = Vec::new();
    for (cfg, cache) in caches(nodes) {
        for (key, entry) in cache.entries() {
            let replicas: Vec<_> = storages
                .iter()
                .filter(|(s_cfg, s)| s.ring().is_responsible(s_cfg.id, key, s_cfg.replication))
                .collect();
            if replicas.iter().all(|(_, s)| s.subscriptions().is_subscribed(cfg.id, key)) {
                let held = replicas.iter().map(|(_, s)| s.store().get(key)).collect();
                compared.push((entry.value.as_ref(), held));
            }
        }
    }
    compared
}

/// CACHE-I4 over every live storage node.
pub fn leased<W: CacheWorld>(nodes: &Nodes<'_, W>) -> bool {
    live_storages(nodes).iter().all(|(_, s)| s.subscriptions().leases_current())
}

/// CACHE-I5: every put acknowledged to an executor is below the join of the storage nodes'
/// values of its key.
pub fn acknowledged_puts_in_kvs<W: CacheWorld>(nodes: &Nodes<'_, W>) -> bool {
    crate::kvs::invariants::acknowledged_writes_held(nodes)
}

/// Whether the run is quiescent with every put acknowledged: the states CACHE-L1 asks for.
pub fn quiescent_with_puts_acknowledged<W: CacheWorld>(nodes: &Nodes<'_, W>) -> bool {
    quiescent(nodes)
        && finished(nodes).all(|(op, outcome)| match op {
            Op::Put { .. } => *outcome == Outcome::Written,
            _ => true,
        })
}
