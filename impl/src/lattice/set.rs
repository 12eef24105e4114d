//! `SetUnion`: a grow-only set.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::{Merge, partial_cmp_by_le};

/// A grow-only set; merge is union, the order is inclusion and bottom is the empty set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct SetUnion<T: Ord>(BTreeSet<T>);

impl<T: Ord> SetUnion<T> {
    /// The set of the given elements.
    pub fn new(elements: impl IntoIterator<Item = T>) -> Self {
        Self(elements.into_iter().collect())
    }

    /// A set of one element.
    pub fn singleton(element: T) -> Self {
        Self(BTreeSet::from([element]))
    }

    /// The elements, in order.
    pub fn as_set(&self) -> &BTreeSet<T> {
        &self.0
    }

    /// Adds one element; returns whether the set grew.
    pub fn insert(&mut self, element: T) -> bool {
        self.0.insert(element)
    }
}

impl<T: Ord> Default for SetUnion<T> {
    fn default() -> Self {
        Self(BTreeSet::new())
    }
}

impl<T: Ord> Merge for SetUnion<T> {
    fn merge(&mut self, other: Self) -> bool {
        let before = self.0.len();
        if self.0.is_empty() {
            self.0 = other.0;
        } else {
            self.0.extend(other.0);
        }
        self.0.len() != before
    }
}

impl<T: Ord> PartialOrd for SetUnion<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        partial_cmp_by_le(self, other, |a, b| a.0.is_subset(&b.0))
    }
}
