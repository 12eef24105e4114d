//! The shared-memory primitives of the cluster crate, switchable to loom's.
//!
//! Structures shared by tasks and threads (the client's clock) use these types.
//! A normal build gets `std`'s; a build with `RUSTFLAGS="--cfg squall_loom"` gets loom's, and
//! `tests/loom.rs` explores their interleavings. (`--cfg loom` would also switch tokio into its
//! loom mode, which has no networking; hence a project-specific cfg.)

#[cfg(squall_loom)]
pub(crate) use loom::sync::atomic::AtomicU64;
#[cfg(not(squall_loom))]
pub(crate) use std::sync::atomic::AtomicU64;
pub(crate) use std::sync::atomic::Ordering;

#[cfg(squall_loom)]
pub(crate) use loom::sync::mpsc;
#[cfg(not(squall_loom))]
pub(crate) use std::sync::mpsc;
