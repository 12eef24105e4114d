//! `PnCounter`: a counter that many writers increment and decrement without coordination.

use std::cmp::Ordering;

use super::{MapUnion, Max, Merge, WriterId, partial_cmp_by_le};

/// A positive-negative counter: for each writer, the running total of its increments and,
/// apart, of its decrements. Its value is the sum of the increments less the sum of the
/// decrements.
///
/// Each entry is a running total under `max`, never a delta: merging a value twice, or an
/// older value of one writer after a newer one, changes nothing, so a replica can take the
/// same state any number of times and in any order. The price is that a writer must know its
/// own totals (and only it may raise them): a writer increments by putting its new totals,
/// `add(writer, by)` applied to the last counter it wrote, not to a replica's possibly stale
/// copy. Merge is the pointwise maximum of both maps; the order is pointwise on both (so two
/// counters with different writers' updates are concurrent); bottom is no entry at all, the
/// counter 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PnCounter {
    /// Each writer's total of increments.
    increments: MapUnion<WriterId, Max<u64>>,
    /// Each writer's total of decrements.
    decrements: MapUnion<WriterId, Max<u64>>,
}

/// An update that would take a writer's total past `u64::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a writer's running total of increments or decrements would overflow")]
pub struct CounterOverflow;

impl PnCounter {
    /// The counter with the given `(writer, increments, decrements)` totals.
    pub fn new(totals: impl IntoIterator<Item = (WriterId, u64, u64)>) -> Self {
        let mut counter = Self::default();
        for (writer, up, down) in totals {
            counter.increments.merge_key(writer, Max::new(up));
            counter.decrements.merge_key(writer, Max::new(down));
        }
        counter
    }

    /// The counter's value: every increment less every decrement. An `i128` holds the sum of
    /// up to 2^63 writers' `u64` totals.
    pub fn value(&self) -> i128 {
        let sum = |m: &MapUnion<WriterId, Max<u64>>| {
            m.iter().map(|(_, n)| i128::from(n.get())).sum::<i128>()
        };
        sum(&self.increments) - sum(&self.decrements)
    }

    /// `writer`'s totals: `(increments, decrements)`.
    pub fn totals(&self, writer: WriterId) -> (u64, u64) {
        let total = |m: &MapUnion<WriterId, Max<u64>>| m.get(&writer).map_or(0, Max::get);
        (total(&self.increments), total(&self.decrements))
    }

    /// Adds `by` (negative to subtract) to `writer`'s totals: the value grows by exactly `by`.
    ///
    /// # Errors
    /// [`CounterOverflow`] when the writer's total would pass `u64::MAX`; the counter is then
    /// unchanged.
    pub fn add(&mut self, writer: WriterId, by: i64) -> Result<(), CounterOverflow> {
        let (up, down) = self.totals(writer);
        let magnitude = by.unsigned_abs();
        let (map, next) = if by >= 0 {
            (&mut self.increments, up.checked_add(magnitude))
        } else {
            (&mut self.decrements, down.checked_add(magnitude))
        };
        map.merge_key(writer, Max::new(next.ok_or(CounterOverflow)?));
        Ok(())
    }

    /// Every writer's totals, `(writer, increments, decrements)`, in writer order.
    pub fn iter(&self) -> impl Iterator<Item = (WriterId, u64, u64)> + '_ {
        let writers: std::collections::BTreeSet<WriterId> =
            self.increments.iter().chain(self.decrements.iter()).map(|(w, _)| *w).collect();
        writers.into_iter().map(|w| {
            let (up, down) = self.totals(w);
            (w, up, down)
        })
    }

    /// A total order for ordered collections: lexicographic over [`iter`](Self::iter). It says
    /// nothing about the lattice order; use `partial_cmp` for that.
    pub fn total_cmp(&self, other: &Self) -> Ordering {
        self.iter().cmp(other.iter())
    }
}

impl Merge for PnCounter {
    fn merge(&mut self, other: Self) -> bool {
        let up = self.increments.merge(other.increments);
        let down = self.decrements.merge(other.decrements);
        up || down
    }
}

impl PartialOrd for PnCounter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        partial_cmp_by_le(self, other, |a, b| {
            a.increments <= b.increments && a.decrements <= b.decrements
        })
    }
}
