//! Squall's reference cluster: the `squall-proto` state machines driven by tokio and tarpc.
//!
//! - [`runtime`]: one generic node runtime (a task owns the node; inbox, timers, outputs).
//! - [`rpc`] and [`server`]: the tarpc service every node serves, postcard over TCP
//!   ([`codec`]), with limits on frames, requests, connections and calls in flight.
//! - [`client`]: the KVS client library (routing, redirects, retries, LWW clock).
//! - [`faas`]: the functions client library (register DAGs and modules, call them at a
//!   consistency level); [`exec`]: the executors that run function code next to a worker's
//!   cache, native functions; [`wasm`]: uploaded WebAssembly functions and their ABI.
//! - [`resp`]: the Redis-protocol front end.
//! - [`local`]: starting nodes in this process (`squall up`, `squall node`, tests);
//!   [`port`]: listening ports with connection limits and graceful stop.
//! - [`bench`](mod@bench): `squall bench kv`.
//! - [`config`]: the TOML configuration with its embedded default.
//!
//! Operating it is described in `docs/operations.md`, functions in `docs/faas.md`; figures in
//! `docs/performance.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod bench_dag;
pub mod client;
pub mod codec;
pub mod config;
pub mod disk;
pub mod exec;
pub mod faas;
pub mod local;
pub mod port;
pub mod resp;
pub mod rpc;
pub mod runtime;
pub mod server;
mod sync;
pub mod wasm;

/// The operator's and benchmark pages of `docs/`, compiled with the code.
pub mod guide {
    #[doc = include_str!("../../docs/operations.md")]
    pub mod operations {}

    #[doc = include_str!("../../docs/performance.md")]
    pub mod performance {}

    #[doc = include_str!("../../docs/faas.md")]
    pub mod faas {}
}
