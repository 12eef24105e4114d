//! Histories, consistency checkers, the deterministic simulator at scale and conformance
//! traces for Squall.
//!
//! This crate is the independent judge of the protocol crate: its [checkers](check) read
//! recorded [histories](history) and never call protocol code to decide a verdict. The
//! [deterministic simulator](dst) runs the protocol state machines at scale under faults and
//! records their histories; [export] splits a history into files a published isolation
//! checker can judge, one per world and promised level, and [isolation] is such a checker,
//! black-box, for the tests to judge them with; [conformance] traces record every role's
//! inputs and outputs, and [conform] replays them against a program in any language.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod canonical;
pub mod check;
pub mod conform;
pub mod conformance;

pub mod dst;
pub mod export;
pub mod history;
pub mod isolation;

pub use check::Anomaly;
pub use history::{History, Op};
