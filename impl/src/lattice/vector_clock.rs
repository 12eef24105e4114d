//! `VectorClock`: causal time as a map from writer to counter.

use std::cmp::Ordering;

use super::{MapUnion, Max, Merge, WriterId};

/// A vector clock: for each writer, how many of its events are known. Merge is the pointwise
/// maximum; the order is the happened-before order, under which two clocks may be concurrent
/// (`partial_cmp` returns `None`). Bottom is the empty clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct VectorClock(MapUnion<WriterId, Max<u64>>);

impl VectorClock {
    /// The clock with the given counters; zero counters are dropped.
    pub fn new(entries: impl IntoIterator<Item = (WriterId, u64)>) -> Self {
        Self(MapUnion::new(entries.into_iter().map(|(w, n)| (w, Max::new(n)))))
    }

    /// The counter of `writer` (zero when absent).
    pub fn get(&self, writer: WriterId) -> u64 {
        self.0.get(&writer).map_or(0, Max::get)
    }

    /// The non-zero counters, in writer order.
    pub fn iter(&self) -> impl Iterator<Item = (WriterId, u64)> + '_ {
        self.0.iter().map(|(w, n)| (*w, n.get()))
    }

    /// Records one more event of `writer`: the clock a write by `writer` carries after having
    /// seen `self`.
    ///
    /// # Panics
    /// When the counter would overflow `u64`, which no real writer reaches.
    pub fn increment(&mut self, writer: WriterId) {
        let next = self.get(writer).checked_add(1).expect("vector clock counter overflow");
        self.0.merge_key(writer, Max::new(next));
    }

    /// Whether neither clock happened before the other.
    pub fn concurrent(&self, other: &Self) -> bool {
        self.partial_cmp(other).is_none()
    }
}

impl Merge for VectorClock {
    fn merge(&mut self, other: Self) -> bool {
        self.0.merge(other.0)
    }
}

impl PartialOrd for VectorClock {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.0.partial_cmp(&other.0)
    }
}

impl VectorClock {
    /// A total order on clocks for storing them in ordered collections: lexicographic over
    /// `(writer, counter)` entries. It says nothing about causality; use `partial_cmp` for that.
    pub fn total_cmp(&self, other: &Self) -> Ordering {
        self.iter().cmp(other.iter())
    }
}
