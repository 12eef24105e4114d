//! `Priority`: the register whose lowest-priority write wins.

use std::cmp::Ordering;

use super::{Merge, WriterId};

/// A register in which the write with the *lowest* priority wins, as in Anna's
/// `PriorityLattice` (used, for example, to keep the best candidate seen so far). Equal
/// priorities are broken by the lower writer id, then the lower value, so merge is the join of a
/// total order. Bottom is the empty register, which every write beats.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Priority<V>(Option<(u64, WriterId, V)>);

impl<V: Ord> Priority<V> {
    /// The register holding one write.
    pub fn new(priority: u64, writer: WriterId, value: V) -> Self {
        Self(Some((priority, writer, value)))
    }

    /// The priority of the winning write, if any.
    pub fn priority(&self) -> Option<u64> {
        self.0.as_ref().map(|(priority, _, _)| *priority)
    }

    /// The value of the winning write, if any.
    pub fn value(&self) -> Option<&V> {
        self.0.as_ref().map(|(_, _, value)| value)
    }
}

impl<V> Default for Priority<V> {
    fn default() -> Self {
        Self(None)
    }
}

/// The lattice order: bottom first, then writes from the highest to the lowest priority.
fn rank<V: Ord>(a: &Option<(u64, WriterId, V)>, b: &Option<(u64, WriterId, V)>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(a),
    }
}

impl<V: Ord> Merge for Priority<V> {
    fn merge(&mut self, other: Self) -> bool {
        if rank(&other.0, &self.0) == Ordering::Greater {
            self.0 = other.0;
            true
        } else {
            false
        }
    }
}

impl<V: Ord> PartialOrd for Priority<V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The lattice order of `Priority` is total, so it is also its `Ord`.
impl<V: Ord> Ord for Priority<V> {
    fn cmp(&self, other: &Self) -> Ordering {
        rank(&self.0, &other.0)
    }
}
