//! Which replicas are behind which keys: the one thing a storage node keeps for a lagging
//! replica.
//!
//! A replica that lags (or is down) costs its peers one entry per key it lacks, never a queue
//! of values: gossip reads the values from the store when it sends them. So what is kept for
//! a lagging replica is bounded by the keys the node stores (`max_keys`), however long it lags
//! and however often the keys are written meanwhile. The index also counts the keys each peer
//! lags on, so that a gossip tick can skip the peers that lag on nothing, and hands out the
//! keys of one peer a bounded batch at a time, resuming where the last batch stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::base::Key;
use crate::node::NodeId;

/// Per key, the other replicas not known to hold this node's current value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Behind {
    /// Never holds an empty set.
    by_key: BTreeMap<Key, BTreeSet<NodeId>>,
    /// How many keys each peer is behind on; never zero. A function of `by_key`.
    count: BTreeMap<NodeId, usize>,
}

impl Behind {
    /// Whether every replica is up to date.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Whether some replica is behind on `key`.
    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// The replicas behind on `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&BTreeSet<NodeId>> {
        self.by_key.get(key)
    }

    /// Whether `peer` is behind on any key.
    pub(crate) fn lags(&self, peer: NodeId) -> bool {
        self.count.contains_key(&peer)
    }

    /// The peers behind on some key.
    pub(crate) fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.count.keys().copied()
    }

    /// Makes exactly `peers` behind on `key`.
    pub(crate) fn set(&mut self, key: Key, peers: BTreeSet<NodeId>) {
        self.remove(&key);
        if peers.is_empty() {
            return;
        }
        for peer in &peers {
            *self.count.entry(*peer).or_default() += 1;
        }
        self.by_key.insert(key, peers);
    }

    /// No replica is behind on `key` any more; returns those that were.
    pub(crate) fn remove(&mut self, key: &str) -> Option<BTreeSet<NodeId>> {
        let peers = self.by_key.remove(key)?;
        for peer in &peers {
            self.uncount(*peer);
        }
        Some(peers)
    }

    /// `peer` is behind on `key`.
    pub(crate) fn add(&mut self, key: Key, peer: NodeId) {
        if self.by_key.entry(key).or_default().insert(peer) {
            *self.count.entry(peer).or_default() += 1;
        }
    }

    /// `peer` is no longer behind on `key`.
    pub(crate) fn clear(&mut self, key: &str, peer: NodeId) {
        let Some(peers) = self.by_key.get_mut(key) else { return };
        let removed = peers.remove(&peer);
        if peers.is_empty() {
            self.by_key.remove(key);
        }
        if removed {
            self.uncount(peer);
        }
    }

    /// Keeps only the keys `keep` says.
    pub(crate) fn retain_keys(&mut self, mut keep: impl FnMut(&Key) -> bool) {
        let gone: Vec<Key> = self.by_key.keys().filter(|key| !keep(key)).cloned().collect();
        for key in gone {
            self.remove(&key);
        }
    }

    fn uncount(&mut self, peer: NodeId) {
        if let Some(n) = self.count.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.count.remove(&peer);
            }
        }
    }

    /// Up to `max` keys `peer` is behind on, in key order from just after `after` (wrapping
    /// around once), looking at no more than `scan` keys; with the key to resume after, or
    /// `None` if the whole index was looked at (the next batch starts from the beginning).
    pub(crate) fn batch(
        &self,
        peer: NodeId,
        after: Option<&Key>,
        max: usize,
        scan: usize,
    ) -> (Vec<Key>, Option<Key>) {
        let (tail, head) = match after {
            Some(after) => (
                self.by_key.range::<Key, _>((Bound::Excluded(after), Bound::Unbounded)),
                Some(self.by_key.range::<Key, _>((Bound::Unbounded, Bound::Included(after)))),
            ),
            None => (self.by_key.range::<Key, _>(..), None),
        };
        let mut keys = Vec::new();
        let mut last = after;
        for (scanned, (key, peers)) in tail.chain(head.into_iter().flatten()).enumerate() {
            if keys.len() >= max || scanned >= scan {
                return (keys, last.cloned());
            }
            if peers.contains(&peer) {
                keys.push(key.clone());
            }
            last = Some(key);
        }
        (keys, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: u64) -> NodeId {
        NodeId(id)
    }

    fn index(keys: usize) -> Behind {
        let mut behind = Behind::default();
        for i in 0..keys {
            let peers = if i % 2 == 0 { [n(1), n(2)].into() } else { [n(2)].into() };
            behind.set(format!("k{i:02}"), peers);
        }
        behind
    }

    #[test]
    fn counts_follow_every_change_and_never_hold_zero() {
        let mut behind = index(4);
        assert_eq!(behind.count, BTreeMap::from([(n(1), 2), (n(2), 4)]));
        behind.clear("k00", n(1));
        behind.clear("k00", n(1));
        behind.clear("k02", n(1));
        assert!(!behind.lags(n(1)));
        assert_eq!(behind.count, BTreeMap::from([(n(2), 4)]));
        behind.add("k01".into(), n(3));
        behind.add("k01".into(), n(3));
        assert_eq!(behind.count[&n(3)], 1);
        behind.retain_keys(|key| key != "k01");
        assert!(!behind.lags(n(3)));
        behind.set("k03".into(), BTreeSet::new());
        assert!(!behind.contains_key("k03"));
        assert_eq!(behind.count, BTreeMap::from([(n(2), 2)]));
        for key in ["k00", "k02"] {
            behind.clear(key, n(2));
        }
        assert!(behind.is_empty() && behind.count.is_empty());
    }

    #[test]
    fn batches_cover_every_key_of_a_peer_once_per_cycle_and_resume_where_they_stopped() {
        let behind = index(10);
        // Peer 1 lags on the even keys: batches of 2 cover them in order, round and round.
        let mut after = None;
        let mut sent = Vec::new();
        for _ in 0..3 {
            let (keys, next) = behind.batch(n(1), after.as_ref(), 2, 100);
            sent.extend(keys);
            after = next;
        }
        assert_eq!(sent, ["k00", "k02", "k04", "k06", "k08", "k00"]);
        assert_eq!(after.as_deref(), Some("k00"));
        // A batch with room for every key looks at the whole index: the next starts over.
        let (keys, next) = behind.batch(n(2), after.as_ref(), 100, 100);
        assert_eq!((keys.len(), next), (10, None));
        // A bounded scan stops early and resumes just after the last key it looked at.
        let (keys, next) = behind.batch(n(1), None, 10, 3);
        assert_eq!((keys, next.as_deref()), (vec!["k00".into(), "k02".into()], Some("k02")));
        let (keys, _) = behind.batch(n(1), next.as_ref(), 10, 3);
        assert_eq!(keys, ["k04"]);
        // Resuming near the end wraps around to the beginning.
        let (keys, next) = behind.batch(n(1), Some(&"k07".to_owned()), 2, 100);
        assert_eq!((keys, next.as_deref()), (vec!["k08".into(), "k00".into()], Some("k00")));
        // A peer that lags on nothing gets nothing.
        assert_eq!(behind.batch(n(9), None, 10, 100), (vec![], None));
    }
}
