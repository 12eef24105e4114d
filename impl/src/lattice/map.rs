//! `MapUnion`: a map whose values are lattices, merged key by key.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use super::{Lattice, Merge, partial_cmp_by_le};

/// A map of lattices. Merge unions the keys and merges the values of shared keys; the order is
/// pointwise; bottom is the empty map.
///
/// A key mapped to bottom means the same as an absent key, so bottoms are never stored: that
/// keeps `Eq` and `Hash` canonical (two equal maps have equal representations).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        from = "BTreeMap<K, L>",
        into = "BTreeMap<K, L>",
        bound(
            serialize = "K: Ord + Clone + serde::Serialize, L: Lattice + serde::Serialize",
            deserialize = "K: Ord + serde::Deserialize<'de>, L: Lattice + serde::Deserialize<'de>"
        )
    )
)]
pub struct MapUnion<K: Ord, L>(BTreeMap<K, L>);

impl<K: Ord, L: Lattice> MapUnion<K, L> {
    /// The map of the given entries, merging values of repeated keys and dropping bottoms.
    pub fn new(entries: impl IntoIterator<Item = (K, L)>) -> Self {
        let mut map = Self::default();
        for (key, value) in entries {
            map.merge_key(key, value);
        }
        map
    }

    /// The value of `key`, or `None` where it is bottom.
    pub fn get(&self, key: &K) -> Option<&L> {
        self.0.get(key)
    }

    /// The entries whose value is not bottom, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &L)> {
        self.0.iter()
    }

    /// The number of keys whose value is not bottom.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether every key maps to bottom.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Merges `value` into the value of `key`; returns whether the map grew.
    pub fn merge_key(&mut self, key: K, value: L) -> bool {
        if value.is_bottom() {
            return false;
        }
        match self.0.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(value);
                true
            }
            Entry::Occupied(mut slot) => slot.get_mut().merge(value),
        }
    }
}

impl<K: Ord, L> Default for MapUnion<K, L> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<K: Ord, L: Lattice> Merge for MapUnion<K, L> {
    fn merge(&mut self, other: Self) -> bool {
        let mut grew = false;
        for (key, value) in other.0 {
            grew |= self.merge_key(key, value);
        }
        grew
    }
}

impl<K: Ord, L: Lattice> PartialOrd for MapUnion<K, L> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        partial_cmp_by_le(self, other, |a, b| {
            a.0.iter().all(|(key, value)| match b.0.get(key) {
                Some(theirs) => value <= theirs,
                None => value.is_bottom(),
            })
        })
    }
}

impl<K: Ord, L: Lattice> From<BTreeMap<K, L>> for MapUnion<K, L> {
    fn from(entries: BTreeMap<K, L>) -> Self {
        Self::new(entries)
    }
}

impl<K: Ord, L> From<MapUnion<K, L>> for BTreeMap<K, L> {
    fn from(map: MapUnion<K, L>) -> Self {
        map.0
    }
}
