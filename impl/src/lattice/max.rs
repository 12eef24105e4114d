//! `Max` and `Min`: totally ordered values that only move one way.

use std::cmp::Ordering;

use super::Merge;

/// Types with a least and a greatest element, so that [`Max`] and [`Min`] have a bottom.
///
/// Implemented for the unsigned integers and `bool`; a signed integer's `Default` (zero) is not
/// its minimum, so it cannot serve as the bottom of `Max` without a wrapper.
pub trait Bounded: Ord + Copy {
    /// The least element.
    const MIN: Self;
    /// The greatest element.
    const MAX: Self;
}

macro_rules! bounded {
    ($($t:ty),*) => {$(
        impl Bounded for $t {
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
        }
    )*};
}
bounded!(u8, u16, u32, u64, u128, usize);

impl Bounded for bool {
    const MIN: Self = false;
    const MAX: Self = true;
}

/// The lattice of a total order under `max`: merge keeps the larger value. Bottom is the
/// type's minimum. Used for counters and the entries of a [`VectorClock`](super::VectorClock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Max<T>(T);

impl<T: Bounded> Max<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The current value.
    pub fn get(&self) -> T {
        self.0
    }
}

impl<T: Bounded> Default for Max<T> {
    fn default() -> Self {
        Self(T::MIN)
    }
}

impl<T: Bounded> Merge for Max<T> {
    fn merge(&mut self, other: Self) -> bool {
        if other.0 > self.0 {
            self.0 = other.0;
            true
        } else {
            false
        }
    }
}

impl<T: Bounded> PartialOrd for Max<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The lattice order of `Max` is total, so it is also its `Ord`.
impl<T: Bounded> Ord for Max<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// The dual of [`Max`]: merge keeps the smaller value, and bottom is the type's maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Min<T>(T);

impl<T: Bounded> Min<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The current value.
    pub fn get(&self) -> T {
        self.0
    }
}

impl<T: Bounded> Default for Min<T> {
    fn default() -> Self {
        Self(T::MAX)
    }
}

impl<T: Bounded> Merge for Min<T> {
    fn merge(&mut self, other: Self) -> bool {
        if other.0 < self.0 {
            self.0 = other.0;
            true
        } else {
            false
        }
    }
}

impl<T: Bounded> PartialOrd for Min<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The lattice order of `Min` is total, so it is also its `Ord`: smaller values are higher.
impl<T: Bounded> Ord for Min<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.cmp(&self.0)
    }
}
