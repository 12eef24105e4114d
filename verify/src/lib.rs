//! Histories, consistency checkers, the deterministic simulator at scale and conformance
//! traces for Squall.
//!
//! This crate is the independent judge of the protocol crate: its checkers read recorded
//! histories and never call protocol code to decide a verdict. It is filled in by the
//! simulation and history-checking work; for now it only fixes the crate's place in the
//! dependency graph (`squall-proto` ← `squall-verify` ← `squall-model`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]
