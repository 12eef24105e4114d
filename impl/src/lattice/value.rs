//! `LatticeValue`: what a storage node holds under a key, tagged with its lattice type.

use bytes::Bytes;

use super::{Lww, Max, Merge, Min, MultiKeyCausal, PnCounter, Priority, SetUnion, SingleKeyCausal};

/// The lattice type of a stored key. A key keeps the type of its first write for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LatticeType {
    /// [`Lww`] of bytes.
    Lww,
    /// [`SetUnion`] of byte strings.
    Set,
    /// [`Max`] of `u64`, a grow-only counter.
    Max,
    /// [`Min`] of `u64`.
    Min,
    /// [`Priority`] of bytes.
    Priority,
    /// [`SingleKeyCausal`] of bytes.
    SingleKeyCausal,
    /// [`MultiKeyCausal`] of bytes, with dependencies on string keys.
    MultiKeyCausal,
    /// [`PnCounter`], a counter many writers increment and decrement.
    PnCounter,
}

impl LatticeType {
    /// Every lattice type, in declaration order.
    pub const ALL: [Self; 8] = [
        Self::Lww,
        Self::Set,
        Self::Max,
        Self::Min,
        Self::Priority,
        Self::SingleKeyCausal,
        Self::MultiKeyCausal,
        Self::PnCounter,
    ];

    /// The type's name in messages and on command lines: `lww`, `set`, `max`, `min`,
    /// `priority`, `single-key-causal`, `multi-key-causal`, `pn-counter`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lww => "lww",
            Self::Set => "set",
            Self::Max => "max",
            Self::Min => "min",
            Self::Priority => "priority",
            Self::SingleKeyCausal => "single-key-causal",
            Self::MultiKeyCausal => "multi-key-causal",
            Self::PnCounter => "pn-counter",
        }
    }
}

impl std::fmt::Display for LatticeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a lattice type's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown lattice type {0:?} (expected one of lww, set, max, min, priority, single-key-causal, multi-key-causal, pn-counter)"
)]
pub struct UnknownLatticeType(pub String);

impl std::str::FromStr for LatticeType {
    type Err = UnknownLatticeType;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|lattice| lattice.name() == name)
            .ok_or_else(|| UnknownLatticeType(name.to_owned()))
    }
}

/// A merge of two values of different lattice types: the write is rejected and the stored
/// value is unchanged. (Anna logged this case and answered success.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[error("cannot merge a {incoming} value into a key that holds {stored}")]
pub struct TypeMismatch {
    /// The type the key holds.
    pub stored: LatticeType,
    /// The type of the rejected value.
    pub incoming: LatticeType,
}

/// A lattice value tagged with its type: the unit of storage, gossip and caching.
///
/// It is not itself a lattice — values of different types have no join — so it has no
/// [`Merge`] impl; [`LatticeValue::merge`] returns a [`TypeMismatch`] instead of guessing.
///
/// Its `Ord` is a total order on representations (type tag, then contents), so that messages
/// carrying values can live in ordered collections and model-checker networks. It is *not* the
/// lattice order, which is [`LatticeValue::lattice_le`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[allow(missing_docs)] // Each variant holds the lattice of the same name.
pub enum LatticeValue {
    Lww(Lww<Bytes>),
    Set(SetUnion<Bytes>),
    Max(Max<u64>),
    Min(Min<u64>),
    Priority(Priority<Bytes>),
    SingleKeyCausal(SingleKeyCausal<Bytes>),
    MultiKeyCausal(MultiKeyCausal<String, Bytes>),
    PnCounter(PnCounter),
}

impl LatticeValue {
    /// The bottom value of a type: what a key of that type holds before any write.
    pub fn bottom(lattice: LatticeType) -> Self {
        match lattice {
            LatticeType::Lww => Self::Lww(Lww::default()),
            LatticeType::Set => Self::Set(SetUnion::default()),
            LatticeType::Max => Self::Max(Max::default()),
            LatticeType::Min => Self::Min(Min::default()),
            LatticeType::Priority => Self::Priority(Priority::default()),
            LatticeType::SingleKeyCausal => Self::SingleKeyCausal(SingleKeyCausal::default()),
            LatticeType::MultiKeyCausal => Self::MultiKeyCausal(MultiKeyCausal::default()),
            LatticeType::PnCounter => Self::PnCounter(PnCounter::default()),
        }
    }

    /// The type tag.
    pub fn lattice_type(&self) -> LatticeType {
        match self {
            Self::Lww(_) => LatticeType::Lww,
            Self::Set(_) => LatticeType::Set,
            Self::Max(_) => LatticeType::Max,
            Self::Min(_) => LatticeType::Min,
            Self::Priority(_) => LatticeType::Priority,
            Self::SingleKeyCausal(_) => LatticeType::SingleKeyCausal,
            Self::MultiKeyCausal(_) => LatticeType::MultiKeyCausal,
            Self::PnCounter(_) => LatticeType::PnCounter,
        }
    }

    /// Merges a value of the same type; returns whether `self` grew. A value of another type is
    /// rejected and `self` is left as it was.
    pub fn merge(&mut self, other: Self) -> Result<bool, TypeMismatch> {
        match (self, other) {
            (Self::Lww(a), Self::Lww(b)) => Ok(a.merge(b)),
            (Self::Set(a), Self::Set(b)) => Ok(a.merge(b)),
            (Self::Max(a), Self::Max(b)) => Ok(a.merge(b)),
            (Self::Min(a), Self::Min(b)) => Ok(a.merge(b)),
            (Self::Priority(a), Self::Priority(b)) => Ok(a.merge(b)),
            (Self::SingleKeyCausal(a), Self::SingleKeyCausal(b)) => Ok(a.merge(b)),
            (Self::MultiKeyCausal(a), Self::MultiKeyCausal(b)) => Ok(a.merge(b)),
            (Self::PnCounter(a), Self::PnCounter(b)) => Ok(a.merge(b)),
            (stored, incoming) => Err(TypeMismatch {
                stored: stored.lattice_type(),
                incoming: incoming.lattice_type(),
            }),
        }
    }

    /// Whether the value is a deleted last-writer-wins register (a tombstone): the key reads as
    /// missing, though its replicas keep the tombstone so that the delete sticks.
    pub fn is_deleted(&self) -> bool {
        matches!(self, Self::Lww(lww) if lww.is_deleted())
    }

    /// The bytes of user payload the value carries: written values and set elements, 8 for a
    /// counter. Metadata (stamps, clocks, dependencies) is not counted. Caches bound their
    /// size by it.
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Lww(lww) => lww.value().map_or(0, Bytes::len),
            Self::Set(set) => set.as_set().iter().map(Bytes::len).sum(),
            Self::Max(_) | Self::Min(_) | Self::PnCounter(_) => 8,
            Self::Priority(priority) => priority.value().map_or(0, Bytes::len),
            Self::SingleKeyCausal(causal) => causal.values().map(Bytes::len).sum(),
            Self::MultiKeyCausal(causal) => causal.values().map(Bytes::len).sum(),
        }
    }

    /// Whether `self` is at or below `other` in the lattice order; values of different types
    /// are unordered. (The `Ord` of `LatticeValue` is a representation order, not this.)
    pub fn lattice_le(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Lww(a), Self::Lww(b)) => a <= b,
            (Self::Set(a), Self::Set(b)) => a <= b,
            (Self::Max(a), Self::Max(b)) => a <= b,
            (Self::Min(a), Self::Min(b)) => a <= b,
            (Self::Priority(a), Self::Priority(b)) => a <= b,
            (Self::SingleKeyCausal(a), Self::SingleKeyCausal(b)) => a <= b,
            (Self::MultiKeyCausal(a), Self::MultiKeyCausal(b)) => a <= b,
            (Self::PnCounter(a), Self::PnCounter(b)) => a <= b,
            _ => false,
        }
    }
}

impl Ord for LatticeValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Self::Lww(a), Self::Lww(b)) => a.cmp(b),
            (Self::Set(a), Self::Set(b)) => a.as_set().cmp(b.as_set()),
            (Self::Max(a), Self::Max(b)) => a.cmp(b),
            (Self::Min(a), Self::Min(b)) => a.cmp(b),
            (Self::Priority(a), Self::Priority(b)) => a.cmp(b),
            (Self::SingleKeyCausal(a), Self::SingleKeyCausal(b)) => a.versions().cmp(b.versions()),
            (Self::MultiKeyCausal(a), Self::MultiKeyCausal(b)) => a.versions().cmp(b.versions()),
            (Self::PnCounter(a), Self::PnCounter(b)) => a.total_cmp(b),
            (a, b) => {
                let order = a.lattice_type().cmp(&b.lattice_type());
                debug_assert_ne!(order, Ordering::Equal, "same type handled above");
                order
            }
        }
    }
}

impl PartialOrd for LatticeValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
