//! The causal lattices: `SingleKeyCausal` and `MultiKeyCausal`.
//!
//! Anna stored a causal value as one vector clock plus a set of sibling values, merging by
//! "replace if the incoming clock dominates or equals, union if concurrent". That merge is not
//! associative: take concurrent writes `x` at `{a:1}` and `y` at `{b:1}`, and `z` at `{a:2}`,
//! which saw `x` but not `y`. `(x ⊔ y) ⊔ z` unions all three, keeping the overwritten `x`, while
//! `x ⊔ (y ⊔ z)` replaces `x` (its clock is below the joined `{a:2, b:1}`) and keeps `{y, z}`.
//! Replicas receiving the same writes in different orders disagree. Squall stores the *versions* instead: a set of `(clock, value)` pairs none of
//! which happened before another (an antichain), merged by union followed by discarding every
//! version whose clock is strictly dominated. That is the lattice of down-sets of versions, so
//! every law holds; the single clock and sibling set Anna exposed are derived from it
//! ([`SingleKeyCausal::clock`], [`SingleKeyCausal::values`]).

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::{MapUnion, Merge, VectorClock, partial_cmp_by_le};

/// One write of a causal key: the clock its writer stamped and what it wrote.
///
/// `Ord` on versions is a total order for storage only (clock entries lexicographically, then
/// the payload); causality is the partial order of the clocks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Version<P> {
    /// The writer's vector clock for this write.
    pub clock: VectorClock,
    /// What was written (for multi-key causal, the value with its dependencies).
    pub payload: P,
}

impl<P: Ord> Ord for Version<P> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.clock.total_cmp(&other.clock).then_with(|| self.payload.cmp(&other.payload))
    }
}

impl<P: Ord> PartialOrd for Version<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An antichain of versions: no version's clock is strictly below another's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        from = "BTreeSet<Version<P>>",
        into = "BTreeSet<Version<P>>",
        bound(
            serialize = "P: Ord + Clone + serde::Serialize",
            deserialize = "P: Ord + serde::Deserialize<'de>"
        )
    )
)]
struct Siblings<P: Ord>(BTreeSet<Version<P>>);

impl<P: Ord> Default for Siblings<P> {
    fn default() -> Self {
        Self(BTreeSet::new())
    }
}

impl<P: Ord> Siblings<P> {
    /// Adds `version` unless a stored version dominates it, dropping the versions it dominates.
    fn insert(&mut self, version: Version<P>) -> bool {
        if self.0.contains(&version) || self.0.iter().any(|kept| version.clock < kept.clock) {
            return false;
        }
        self.0.retain(|kept| kept.clock.partial_cmp(&version.clock) != Some(Ordering::Less));
        self.0.insert(version)
    }

    fn clock(&self) -> VectorClock {
        self.0.iter().fold(VectorClock::default(), |acc, v| acc.join(v.clock.clone()))
    }

    /// Down-set inclusion: every version of `self` is in `other` or dominated by one there.
    fn le(&self, other: &Self) -> bool {
        self.0.iter().all(|mine| {
            other.0.contains(mine) || other.0.iter().any(|theirs| mine.clock < theirs.clock)
        })
    }
}

impl<P: Ord> Merge for Siblings<P> {
    fn merge(&mut self, other: Self) -> bool {
        let mut grew = false;
        for version in other.0 {
            grew |= self.insert(version);
        }
        grew
    }
}

impl<P: Ord> From<BTreeSet<Version<P>>> for Siblings<P> {
    fn from(versions: BTreeSet<Version<P>>) -> Self {
        let mut siblings = Self::default();
        for version in versions {
            siblings.insert(version);
        }
        siblings
    }
}

impl<P: Ord> From<Siblings<P>> for BTreeSet<Version<P>> {
    fn from(siblings: Siblings<P>) -> Self {
        siblings.0
    }
}

/// A single-key causal register: the concurrent versions of one key (Anna's
/// `SINGLE_CAUSAL`). A write that saw every current version replaces them; concurrent writes
/// are kept side by side as siblings. Bottom has no version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "V: Ord + Clone + serde::Serialize",
        deserialize = "V: Ord + serde::Deserialize<'de>"
    ))
)]
pub struct SingleKeyCausal<V: Ord>(Siblings<V>);

impl<V: Ord> SingleKeyCausal<V> {
    /// The register holding one write stamped with `clock`.
    pub fn new(clock: VectorClock, value: V) -> Self {
        Self(Siblings(BTreeSet::from([Version { clock, payload: value }])))
    }

    /// The join of the siblings' clocks: the clock a writer that read this value extends.
    pub fn clock(&self) -> VectorClock {
        self.0.clock()
    }

    /// The concurrent sibling values.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.0.iter().map(|v| &v.payload)
    }

    /// The sibling versions, each with its own clock.
    pub fn versions(&self) -> impl Iterator<Item = &Version<V>> {
        self.0.0.iter()
    }
}

impl<V: Ord> Merge for SingleKeyCausal<V> {
    fn merge(&mut self, other: Self) -> bool {
        self.0.merge(other.0)
    }
}

impl<V: Ord> PartialOrd for SingleKeyCausal<V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        partial_cmp_by_le(self, other, |a, b| a.0.le(&b.0))
    }
}

/// The dependencies of a multi-key causal write: for each key it causally depends on, the
/// clock of the version of that key its writer had seen.
///
/// Its `Ord` and `PartialOrd` are a total order for storage (keys, then clocks by
/// [`VectorClock::total_cmp`]), **not** the lattice order of the map it wraps: compare
/// dependencies causally through [`Dependencies::as_map`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "K: Ord + Clone + serde::Serialize",
        deserialize = "K: Ord + serde::Deserialize<'de>"
    ))
)]
pub struct Dependencies<K: Ord>(MapUnion<K, VectorClock>);

impl<K: Ord> Dependencies<K> {
    /// The dependencies on the given `(key, clock)` pairs; clocks of a repeated key are joined.
    pub fn new(entries: impl IntoIterator<Item = (K, VectorClock)>) -> Self {
        Self(MapUnion::new(entries))
    }

    /// The dependencies as a lattice map.
    pub fn as_map(&self) -> &MapUnion<K, VectorClock> {
        &self.0
    }
}

impl<K: Ord> Ord for Dependencies<K> {
    /// A total order for storage: keys, then clocks by [`VectorClock::total_cmp`].
    fn cmp(&self, other: &Self) -> Ordering {
        let (mut mine, mut theirs) = (self.0.iter(), other.0.iter());
        loop {
            match (mine.next(), theirs.next()) {
                (None, None) => return Ordering::Equal,
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                (Some((ka, ca)), Some((kb, cb))) => {
                    let order = ka.cmp(kb).then_with(|| ca.total_cmp(cb));
                    if order != Ordering::Equal {
                        return order;
                    }
                }
            }
        }
    }
}

impl<K: Ord> PartialOrd for Dependencies<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A multi-key causal register (Anna's `MULTI_CAUSAL`): like [`SingleKeyCausal`], but every
/// version also carries its [`Dependencies`], so a reader can assemble a causal cut across keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "K: Ord + Clone + serde::Serialize, V: Ord + Clone + serde::Serialize",
        deserialize = "K: Ord + serde::Deserialize<'de>, V: Ord + serde::Deserialize<'de>"
    ))
)]
pub struct MultiKeyCausal<K: Ord, V: Ord>(Siblings<(Dependencies<K>, V)>);

impl<K: Ord, V: Ord> MultiKeyCausal<K, V> {
    /// The register holding one write stamped with `clock` that depends on `dependencies`.
    pub fn new(clock: VectorClock, dependencies: Dependencies<K>, value: V) -> Self {
        let version = Version { clock, payload: (dependencies, value) };
        Self(Siblings(BTreeSet::from([version])))
    }

    /// The join of the siblings' clocks.
    pub fn clock(&self) -> VectorClock {
        self.0.clock()
    }

    /// The join of the siblings' dependencies: for each key, the least version a reader of this
    /// value must also see of it.
    pub fn dependencies(&self) -> MapUnion<K, VectorClock>
    where
        K: Clone,
    {
        self.0.0.iter().fold(MapUnion::default(), |acc, v| acc.join(v.payload.0.as_map().clone()))
    }

    /// The concurrent sibling values.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.0.iter().map(|v| &v.payload.1)
    }

    /// The sibling versions, each with its clock, dependencies and value.
    pub fn versions(&self) -> impl Iterator<Item = &Version<(Dependencies<K>, V)>> {
        self.0.0.iter()
    }
}

impl<K: Ord, V: Ord> Merge for MultiKeyCausal<K, V> {
    fn merge(&mut self, other: Self) -> bool {
        self.0.merge(other.0)
    }
}

impl<K: Ord, V: Ord> PartialOrd for MultiKeyCausal<K, V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        partial_cmp_by_le(self, other, |a, b| a.0.le(&b.0))
    }
}

// `Default` by hand: a derive would demand `K: Default` and `V: Default`, which bottom does
// not need.
impl<V: Ord> Default for SingleKeyCausal<V> {
    fn default() -> Self {
        Self(Siblings::default())
    }
}

impl<K: Ord> Default for Dependencies<K> {
    fn default() -> Self {
        Self(MapUnion::default())
    }
}

impl<K: Ord, V: Ord> Default for MultiKeyCausal<K, V> {
    fn default() -> Self {
        Self(Siblings::default())
    }
}
