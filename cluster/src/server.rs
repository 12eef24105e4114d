//! The RPC port: accepts connections (up to a limit), decodes calls and hands them to the
//! node's runtime. Calls come from clients and from the cluster's nodes that send requests
//! ([`Callers`]).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use squall_proto::{Calls, NodeId};
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;

use crate::config::CLIENT_ID_BASE;
use crate::port::{Conn, ConnLimits, Framed, Port};
use crate::rpc::{CallError, NodeStats, Squall};
use crate::runtime::{NodeHandle, Served};

/// Limits the RPC port enforces.
#[derive(Clone, Copy, Debug)]
pub struct PortLimits {
    /// Largest frame; a larger one closes the connection.
    pub max_frame: usize,
    /// Largest encoded request accepted by `call`.
    pub max_request: usize,
    /// Connection budgets and timeouts.
    pub connections: ConnLimits,
    /// Requests in flight per connection; more are answered with an error.
    pub max_in_flight: usize,
}

/// Who may call a node: clients (ids at or above [`CLIENT_ID_BASE`]) and these nodes of the
/// cluster.
pub type Callers = Arc<HashSet<NodeId>>;

/// The tarpc service of one node.
#[derive(Debug)]
struct Service<N: Served> {
    node: NodeHandle<N>,
    max_request: usize,
    /// Nodes of the cluster that may send requests (workers, whose caches write through to
    /// storage nodes), besides clients.
    callers: Arc<HashSet<NodeId>>,
    /// The connection this copy of the service answers on.
    conn: Option<Arc<Conn>>,
}

impl<N: Served> Clone for Service<N> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            max_request: self.max_request,
            callers: self.callers.clone(),
            conn: self.conn.clone(),
        }
    }
}

impl<N: Served> Service<N> {
    /// The connection carries a node of the cluster's messages: it moves to the peers' budget.
    fn identify_peer(&self) {
        if let Some(conn) = &self.conn {
            conn.identify_peer();
        }
    }
}

impl<N: Served> Squall for Service<N> {
    async fn deliver(self, _: Context, from: NodeId, msgs: Vec<Bytes>) {
        if from.0 < CLIENT_ID_BASE {
            self.identify_peer();
        }
        for bytes in msgs {
            match crate::rpc::decode::<N::Msg>(&bytes) {
                Ok(msg) => self.node.deliver_wire(from, msg, bytes.len()),
                Err(e) => tracing::debug!(%from, error = %e, "undecodable peer message dropped"),
            }
        }
    }

    async fn call(self, _: Context, from: NodeId, msg: Bytes) -> Result<Bytes, CallError> {
        if from.0 < CLIENT_ID_BASE && !self.callers.contains(&from) {
            return Err(CallError::InvalidCaller(from.0));
        }
        if from.0 < CLIENT_ID_BASE {
            self.identify_peer();
        }
        if msg.len() > self.max_request {
            return Err(CallError::TooLarge { bytes: msg.len(), max: self.max_request });
        }
        let request: N::Msg =
            crate::rpc::decode(&msg).map_err(|e| CallError::Malformed(e.to_string()))?;
        if request.request().is_none() {
            return Err(CallError::NotARequest);
        }
        let answer = self.node.call_wire(from, request, msg.len()).await?;
        crate::rpc::encode(answer)
            .map_err(|e| CallError::Malformed(format!("cannot encode the answer: {e}")))
    }

    async fn ping(self, _: Context) -> NodeId {
        self.node.id()
    }

    async fn stats(self, _: Context) -> NodeStats {
        self.node.stats()
    }
}

/// Serves `node` on `listener`. A connection that sends garbage or an oversized frame, holds a
/// frame part-way too long, or would take the port over its buffer budget is closed; the others
/// and the node go on. Connections carrying a cluster node's messages (deliveries, or calls
/// from a worker) count against the peers' budget, the rest against the clients'.
pub fn serve<N: Served>(
    listener: TcpListener,
    node: NodeHandle<N>,
    limits: PortLimits,
    callers: Callers,
) -> Port {
    let service = Service { node, max_request: limits.max_request, callers, conn: None };
    Port::spawn(listener, limits.connections, None, move |stream, conn| {
        let service = Service { conn: Some(conn.clone()), ..service.clone() };
        async move {
            let framed = Framed::new(stream, conn, limits.max_frame);
            let transport = crate::codec::transport(framed, limits.max_frame);
            BaseChannel::with_defaults(transport)
                .max_concurrent_requests(limits.max_in_flight)
                .execute(service.serve())
                .for_each(|response| async {
                    tokio::spawn(response);
                })
                .await;
        }
    })
}
