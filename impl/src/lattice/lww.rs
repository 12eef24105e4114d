//! `Lww`: a last-writer-wins register whose ties cannot happen.

use std::cmp::Ordering;

use super::{Merge, WriterId};

/// When a write happened, as its writer stamped it: a (hybrid logical) time and the writer's
/// identity. Stamps order lexicographically by `(time, writer)`, so two different writers never
/// produce equal stamps, and a writer that never reuses a time never does either.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stamp {
    /// The writer's clock reading; the runtime stamps it, the protocol only compares it.
    pub time: u64,
    /// The writer, which breaks ties between equal times.
    pub writer: WriterId,
}

/// Compact, for model-checker traces: `t1.w0` is time 1 by writer 0.
impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t{}.{:?}", self.time, self.writer)
    }
}

impl Stamp {
    /// The stamp of `writer` at `time`.
    pub fn new(time: u64, writer: WriterId) -> Self {
        Self { time, writer }
    }
}

/// A last-writer-wins register: merge keeps the write with the larger [`Stamp`]. Bottom is the
/// empty register (no write).
///
/// A *delete* is a write too: a tombstone ([`Lww::deleted`]) carries a stamp and no value, and
/// wins or loses by the same stamp order as any write, so a delete concurrent with a write
/// resolves the same way on every replica, and a replica that missed the delete can never bring
/// an older write back (its write is below the tombstone). A register holding a tombstone reads
/// as empty ([`Lww::value`] is `None`) but is not bottom: it keeps its stamp, which is what
/// makes the delete stick. Tombstones are never collected (see the lattices page).
///
/// Anna let the incoming value win on equal timestamps, so merge was not commutative and
/// replicas could disagree forever. Here stamps include the writer, and — should a writer ever
/// reuse a stamp, a programmer error — the value itself breaks the tie, so merge is the join of
/// a total order and always obeys the lattice laws.
#[derive(Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Lww<V>(Option<(Stamp, Option<V>)>);

/// Compact, for model-checker traces: `Lww(⊥)`, `Lww(7 @ t1.w0)` or `Lww(deleted @ t2.w1)`.
impl<V: std::fmt::Debug> std::fmt::Debug for Lww<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => write!(f, "Lww(⊥)"),
            Some((stamp, Some(value))) => write!(f, "Lww({value:?} @ {stamp:?})"),
            Some((stamp, None)) => write!(f, "Lww(deleted @ {stamp:?})"),
        }
    }
}

impl<V: Ord> Lww<V> {
    /// The register holding one write.
    pub fn new(stamp: Stamp, value: V) -> Self {
        Self(Some((stamp, Some(value))))
    }

    /// The register holding one delete: a tombstone stamped `stamp`, which wins over every
    /// write stamped below it and loses to every write stamped above.
    pub fn deleted(stamp: Stamp) -> Self {
        Self(Some((stamp, None)))
    }

    /// The stamp of the winning write or delete, if any.
    pub fn stamp(&self) -> Option<Stamp> {
        self.0.as_ref().map(|(stamp, _)| *stamp)
    }

    /// The value of the winning write: `None` for the empty register and for a deleted one.
    pub fn value(&self) -> Option<&V> {
        self.0.as_ref().and_then(|(_, value)| value.as_ref())
    }

    /// Whether the winning write is a delete.
    pub fn is_deleted(&self) -> bool {
        matches!(self.0, Some((_, None)))
    }

    /// The winning write or delete, if any: its stamp, and its value (`None` for a delete).
    pub fn write(&self) -> Option<(Stamp, Option<&V>)> {
        self.0.as_ref().map(|(stamp, value)| (*stamp, value.as_ref()))
    }
}

impl<V> Default for Lww<V> {
    fn default() -> Self {
        Self(None)
    }
}

impl<V: Ord> Merge for Lww<V> {
    fn merge(&mut self, other: Self) -> bool {
        // `Option` orders `None` (bottom) below every write; writes order by stamp, then value
        // (on a reused stamp, a delete's `None` below any value).
        if other.0 > self.0 {
            self.0 = other.0;
            true
        } else {
            false
        }
    }
}

impl<V: Ord> PartialOrd for Lww<V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The lattice order of `Lww` is total (a chain), so it is also its `Ord`.
impl<V: Ord> Ord for Lww<V> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// Defective merges, kept to prove that the laws tests and the models catch them. Never used by
/// a correct protocol.
#[cfg(any(test, feature = "mutants"))]
impl<V: Ord + Clone> Lww<V> {
    /// Anna's rule: the incoming write wins when its time is at least the stored one, ignoring
    /// the writer. Not commutative when two writers use the same time.
    pub fn merge_ignoring_writer(&mut self, other: Self) -> bool {
        let wins = match (&self.0, &other.0) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some((mine, _)), Some((theirs, _))) => theirs.time >= mine.time,
        };
        if wins && self.0 != other.0 {
            self.0 = other.0;
            true
        } else {
            false
        }
    }

    /// Merges stamp and value as if they were independent registers: a torn write that pairs
    /// one writer's stamp with another writer's value, which nobody wrote.
    pub fn merge_torn(&mut self, other: Self) -> bool {
        let merged = match (self.0.clone(), other.0) {
            (None, theirs) => theirs,
            (mine, None) => mine,
            (Some((mine, a)), Some((theirs, b))) => Some((mine.max(theirs), a.max(b))),
        };
        let grew = merged != self.0;
        self.0 = merged;
        grew
    }
}
