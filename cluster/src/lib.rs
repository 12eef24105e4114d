//! Squall's reference cluster: the `squall-proto` state machines driven by tokio and tarpc.
//!
//! The runtime, transport, client library and the `squall` binary arrive with the reference
//! cluster work; this crate currently fixes its place in the dependency graph
//! (`squall-proto` ← `squall-cluster`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]
