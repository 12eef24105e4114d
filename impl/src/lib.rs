//! Squall's protocols as deterministic sans-IO state machines.
//!
//! This crate is the single source of protocol truth. Every role of every protocol — replicas
//! gossiping a lattice, storage nodes, caches, executors, schedulers, clients — is a value that
//! implements [`Node`]: it is built by [`Node::init`] and advanced by [`Node::handle`], one
//! [`Input`] at a time, and it answers with [`Output`]s as data. There is no I/O, no clock and no
//! randomness here: time arrives as timer events and timestamps chosen by the caller. The same
//! node values are driven by three harnesses:
//!
//! * the Stateright model checker (`squall-model`), which explores every interleaving at small
//!   bounds;
//! * the deterministic [`sim`]ulator, seeded, with faults, for scenario tests at larger scale;
//! * the tokio/tarpc reference cluster (`squall-cluster`).
//!
//! # Driving a node
//!
//! ```
//! use std::time::Duration;
//! use squall_proto::gossip::{GossipConfig, GossipMsg, GossipNode, GossipTimer, ReplicaConfig};
//! use squall_proto::lattice::{Lww, Stamp, WriterId};
//! use squall_proto::{Input, Node, NodeId, Outbox, Output};
//!
//! let period = Duration::from_millis(10);
//! let cfg = GossipConfig::Replica(ReplicaConfig::new(NodeId(0), [NodeId(1)], period));
//! let mut out = Outbox::new();
//! let mut replica: GossipNode<u8> = Node::init(&cfg, &(), &mut out);
//! assert!(out.is_empty());
//!
//! // A client merges a write: the replica acknowledges it and, because its value grew,
//! // arms the gossip timer. The harness executes these outputs in order.
//! let write = Lww::new(Stamp::new(1, WriterId(7)), 42);
//! let put = GossipMsg::Put { seq: 0, value: write.clone() };
//! replica.handle(&cfg, Input::Receive { from: NodeId(9), msg: put }, &mut out);
//! let outputs: Vec<_> = out.drain().collect();
//! assert_eq!(outputs, [
//!     Output::Send { to: NodeId(9), msg: GossipMsg::PutOk { seq: 0 } },
//!     Output::SetTimer { timer: GossipTimer::Gossip, after: period },
//! ]);
//!
//! // When the timer fires, the replica gossips to the peer that does not have the write yet.
//! replica.handle(&cfg, Input::Timeout(GossipTimer::Gossip), &mut out);
//! assert!(out.contains(&Output::Send { to: NodeId(1), msg: GossipMsg::Gossip { value: write } }));
//! ```
//!
//! # The specification
//!
//! [`spec`] mounts the protocol pages of `docs/` into this crate's documentation, so the spec
//! is built, link-checked and doc-tested with the code.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod base;
pub mod cache;
pub mod gossip;
pub mod kvs;
pub mod lattice;
pub mod mutants;
mod node;
pub mod session;
pub mod sim;
pub mod spec;
pub mod worker;

pub use node::{
    Calls, DurableState, Hosts, Input, Node, NodeId, Nodes, Outbox, Output, Refusal, Violation,
    Within, handle_checked, handle_within, init_within, live, quiescent, roles,
};
