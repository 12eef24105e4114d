//! The storage node's side of cache update propagation: which caches hold which keys, their
//! leases, and which of them are not yet known to hold a key's current value.
//!
//! A cache subscribes to a key at every replica of it (`Subscribe`), and renews each of its
//! subscriptions the same way every renewal period. A replica pushes a key's value to its
//! subscribers when the key grows, re-sends it until each acknowledges a value covering it
//! (`PushAck`), and drops a subscription whose lease lapsed: one not renewed between two
//! `Lease` timer ticks. Leases are per subscription, so a subscription a cache no longer wants
//! — a lost `Unsubscribe`, a stale `Subscribe` delivered late, a cache that restarted empty —
//! lives at most two lease periods.

use std::collections::{BTreeMap, BTreeSet};

use super::msg::Key;
use crate::node::NodeId;

/// One cache's subscription to one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct Lease {
    /// `Lease` ticks since its last renewal (0 or 1; a subscription that misses a second tick
    /// is dropped).
    missed: u8,
    /// The latest fetch epoch the cache sent for the key (0: none), which stamps every push of
    /// it (see `KvsMsg::Push`).
    epoch: u64,
}

/// The subscription index of one storage node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Subscriptions {
    /// Key → subscribed cache → its lease.
    subscribers: BTreeMap<Key, BTreeMap<NodeId, Lease>>,
    /// Key → subscribers not known to hold this node's current value. Never an empty set.
    behind: BTreeMap<Key, BTreeSet<NodeId>>,
    /// The latest incarnation heard from each cache (one entry per cache that ever spoke).
    incarnations: BTreeMap<NodeId, u32>,
}

impl Subscriptions {
    /// Whether a message from `cache`'s `incarnation` counts: not if a later incarnation
    /// spoke already. A later incarnation restarted empty: its predecessor's subscriptions
    /// and acknowledgements are forgotten.
    pub fn current(&mut self, cache: NodeId, incarnation: u32) -> bool {
        let known = self.incarnations.get(&cache).copied().unwrap_or(0);
        if incarnation < known {
            return false;
        }
        if incarnation > known {
            self.incarnations.insert(cache, incarnation);
            self.subscribers.values_mut().for_each(|caches| {
                caches.remove(&cache);
            });
            self.subscribers.retain(|_, caches| !caches.is_empty());
            self.behind.values_mut().for_each(|caches| {
                caches.remove(&cache);
            });
            self.behind.retain(|_, caches| !caches.is_empty());
        }
        true
    }

    /// The latest incarnation heard from `cache` (0 if none).
    pub fn incarnation(&self, cache: NodeId) -> u32 {
        self.incarnations.get(&cache).copied().unwrap_or(0)
    }

    /// Subscribes `cache` to `key`, or renews the subscription, noting the epoch of a fetch;
    /// returns whether it is new.
    pub fn subscribe(&mut self, cache: NodeId, key: &str, fetch: Option<u64>) -> bool {
        let caches = self.subscribers.entry(key.to_owned()).or_default();
        let new = !caches.contains_key(&cache);
        let lease = caches.entry(cache).or_default();
        lease.missed = 0;
        lease.epoch = lease.epoch.max(fetch.unwrap_or(0));
        new
    }

    /// The fetch epochs `cache` sent for `keys` (those above 0), to stamp a push with.
    pub fn epochs<'a>(
        &self,
        cache: NodeId,
        keys: impl IntoIterator<Item = &'a Key>,
    ) -> BTreeMap<Key, u64> {
        keys.into_iter()
            .filter_map(|key| {
                let epoch = self.subscribers.get(key)?.get(&cache)?.epoch;
                (epoch > 0).then(|| (key.clone(), epoch))
            })
            .collect()
    }

    /// Unsubscribes `cache` from `key`.
    pub fn unsubscribe(&mut self, cache: NodeId, key: &str) {
        if let Some(caches) = self.subscribers.get_mut(key) {
            caches.remove(&cache);
            if caches.is_empty() {
                self.subscribers.remove(key);
            }
        }
        self.holds(cache, key);
    }

    /// Every subscriber of `key` is behind its new value; returns them.
    pub fn grew(&mut self, key: &str) -> BTreeSet<NodeId> {
        let caches: BTreeSet<NodeId> =
            self.subscribers.get(key).map(|c| c.keys().copied().collect()).unwrap_or_default();
        if !caches.is_empty() {
            self.behind.insert(key.to_owned(), caches.clone());
        }
        caches
    }

    /// `cache` must be sent `key`'s current value.
    pub fn mark_behind(&mut self, cache: NodeId, key: &str) {
        self.behind.entry(key.to_owned()).or_default().insert(cache);
    }

    /// `cache` holds `key`'s current value.
    pub fn holds(&mut self, cache: NodeId, key: &str) {
        if let Some(caches) = self.behind.get_mut(key) {
            caches.remove(&cache);
            if caches.is_empty() {
                self.behind.remove(key);
            }
        }
    }

    /// A `Lease` tick: drops every subscription not renewed since the last tick (with
    /// `keep_lapsed`, a seeded defect, it is kept and only counted); returns whether any
    /// subscription is left.
    pub fn tick(&mut self, keep_lapsed: bool) -> bool {
        for (key, caches) in &mut self.subscribers {
            caches.retain(|cache, lease| {
                lease.missed = lease.missed.saturating_add(1).min(2);
                let keep = lease.missed < 2 || keep_lapsed;
                if !keep && let Some(behind) = self.behind.get_mut(key) {
                    behind.remove(cache);
                }
                keep
            });
        }
        self.subscribers.retain(|_, caches| !caches.is_empty());
        self.behind.retain(|_, caches| !caches.is_empty());
        !self.subscribers.is_empty()
    }

    /// Whether every subscription was renewed within the last lease tick (CACHE-I4).
    pub fn leases_current(&self) -> bool {
        self.subscribers.values().flat_map(|caches| caches.values()).all(|lease| lease.missed < 2)
    }

    /// Per cache, the keys it is behind on.
    pub fn behind_by_cache(&self) -> BTreeMap<NodeId, BTreeSet<Key>> {
        let mut batches: BTreeMap<NodeId, BTreeSet<Key>> = BTreeMap::new();
        for (key, caches) in &self.behind {
            for cache in caches {
                batches.entry(*cache).or_default().insert(key.clone());
            }
        }
        batches
    }

    /// Whether no push is waiting for an acknowledgement.
    pub fn is_settled(&self) -> bool {
        self.behind.is_empty()
    }

    /// Whether there is no subscription (the `Lease` timer is armed exactly when there is).
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    /// Whether `cache` is subscribed to `key` here.
    pub fn is_subscribed(&self, cache: NodeId, key: &str) -> bool {
        self.subscribers.get(key).is_some_and(|caches| caches.contains_key(&cache))
    }

    /// Keeps only the subscriptions to keys for which `keep` holds (those this node owns);
    /// returns the caches that lost one.
    pub fn retain_keys(&mut self, keep: impl Fn(&str) -> bool) -> BTreeSet<NodeId> {
        let mut dropped = BTreeSet::new();
        self.subscribers.retain(|key, caches| {
            let kept = keep(key);
            if !kept {
                dropped.extend(caches.keys().copied());
            }
            kept
        });
        self.behind.retain(|key, _| keep(key));
        dropped
    }
}
