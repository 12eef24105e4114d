//! Join semilattices: the values Squall stores, gossips and caches.
//!
//! Every replicated value in Squall is a lattice: a set of states with a *merge* (join) that is
//! idempotent, commutative and associative, so replicas that receive the same updates in any
//! order, any number of times, end in the same state. That is what lets Anna replicate without
//! coordination, and what lets every Squall protocol tolerate a network that drops, duplicates
//! and reorders messages.
//!
//! The laws, the order and why each type is built the way it is are specified in
//! [the lattices page](crate::spec::lattices). In short:
//!
//! * [`Merge::merge`] joins `other` into `self` and returns `true` exactly when `self` grew
//!   (changed). Growth is what drives gossip and cache pushes.
//! * `PartialOrd` is the lattice order: `a <= b` exactly when `a.merge(b)` yields `b`.
//! * `Default` is the bottom element, the identity of merge.
//!
//! [`laws`] checks all of this by brute force over small carriers; every type here is tested
//! with it, exhaustively and with proptest.

mod causal;
mod counter;
pub mod laws;
mod lww;
mod map;
mod max;
mod priority;
mod set;
mod value;
mod vector_clock;

use std::fmt::Debug;
use std::hash::Hash;

pub use causal::{Dependencies, MultiKeyCausal, SingleKeyCausal, Version};
pub use counter::{CounterOverflow, PnCounter};
pub use lww::{Lww, Stamp};
pub use map::MapUnion;
pub use max::{Bounded, Max, Min};
pub use priority::Priority;
pub use set::SetUnion;
pub use value::{LatticeType, LatticeValue, TypeMismatch, UnknownLatticeType};
pub use vector_clock::VectorClock;

/// Identity of a writer (a client, an executor or a storage node) as it appears in lattice
/// values: the tie-breaker of [`Lww`] and [`Priority`] and the index of a [`VectorClock`].
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WriterId(pub u64);

/// Compact, for model-checker traces: `w3`.
impl Debug for WriterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "w{}", self.0)
    }
}

/// The join of a semilattice.
///
/// Implementations must make `merge` idempotent, commutative and associative, keep `PartialOrd`
/// consistent with it and make `Default` the bottom element; [`laws::check_all`] verifies all of
/// it on a set of sample values.
pub trait Merge: Sized {
    /// Joins `other` into `self`. Returns `true` exactly when `self` changed, which for a
    /// lattice means it grew.
    fn merge(&mut self, other: Self) -> bool;

    /// Joins two values, consuming both.
    #[must_use]
    fn join(mut self, other: Self) -> Self {
        self.merge(other);
        self
    }
}

/// A join semilattice as Squall uses it: [`Merge`] with its order, its bottom and the traits
/// that let it live in canonical, hashable protocol state.
pub trait Lattice: Merge + PartialOrd + Default + Clone + Eq + Hash + Debug {
    /// Whether this is the bottom element (the value of a key nobody wrote).
    fn is_bottom(&self) -> bool {
        *self == Self::default()
    }
}

impl<T: Merge + PartialOrd + Default + Clone + Eq + Hash + Debug> Lattice for T {}

/// Compares two lattice values in the lattice order, given a `<=` on them.
///
/// Every type here implements `PartialOrd` through this helper so that `Eq` and the order can
/// never disagree.
pub(crate) fn partial_cmp_by_le<T: PartialEq>(
    a: &T,
    b: &T,
    le: impl Fn(&T, &T) -> bool,
) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering;
    if a == b {
        return Some(Ordering::Equal);
    }
    match (le(a, b), le(b, a)) {
        (true, false) => Some(Ordering::Less),
        (false, true) => Some(Ordering::Greater),
        // Both `<=` and not equal would break antisymmetry; `laws` reports it.
        _ => None,
    }
}

#[cfg(test)]
mod tests;
