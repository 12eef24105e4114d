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

#[cfg(squall_loom)]
pub(crate) use loom::thread::yield_now;
#[cfg(not(squall_loom))]
pub(crate) use std::thread::yield_now;

/// Whether a thread that started polling at `start` for up to `spin` (and polled `polls`
/// times) polls again. Under loom a clock would make executions unrepeatable, so there it polls
/// twice whatever `spin` says.
#[cfg(not(squall_loom))]
pub(crate) fn keep_polling(start: std::time::Instant, spin: std::time::Duration, _: u32) -> bool {
    start.elapsed() < spin
}

/// See the std version.
#[cfg(squall_loom)]
pub(crate) fn keep_polling(_: std::time::Instant, _: std::time::Duration, polls: u32) -> bool {
    polls < 2
}
