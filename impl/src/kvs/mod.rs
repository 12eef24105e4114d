//! The Anna key-value store protocol: placement, replication, gossip and membership.
//!
//! Built so far: the placement function, [`ring`]. The storage node, client and membership
//! roles follow (see `docs/protocols/kvs.md` for the plan they implement).

pub mod ring;

pub use ring::{Epoch, Ring, fnv1a64};

#[cfg(test)]
mod ring_tests;
