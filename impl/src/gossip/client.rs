//! The client role: writes a fixed list of values, one at a time, to one replica.

use std::time::Duration;

use super::{GossipMsg, GossipNode, GossipTimer, Value};
use crate::lattice::Lww;
use crate::node::{Input, NodeId, Outbox};

/// How a client is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClientConfig<V: Ord> {
    /// This client.
    pub id: NodeId,
    /// The replica it writes to.
    pub replica: NodeId,
    /// The writes it makes, in order, each already stamped by its writer.
    pub writes: Vec<Lww<V>>,
    /// How long it waits for an acknowledgement before re-sending a write.
    pub retry_after: Duration,
}

impl<V: Ord> ClientConfig<V> {
    /// A client `id` that writes `writes` to `replica`.
    pub fn new(id: NodeId, replica: NodeId, writes: Vec<Lww<V>>, retry_after: Duration) -> Self {
        Self { id, replica, writes, retry_after }
    }
}

/// A client: the index of its next unacknowledged write.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    next: u32,
}

impl Client {
    /// A client that sends its first write.
    pub fn init<V: Value>(cfg: &ClientConfig<V>, out: &mut Outbox<GossipNode<V>>) -> Self {
        let client = Self { next: 0 };
        client.send_next(cfg, out);
        client
    }

    /// How many of its writes have been acknowledged.
    pub fn acknowledged(&self) -> usize {
        self.next as usize
    }

    /// Whether every write has been acknowledged.
    pub fn is_done<V: Ord>(&self, cfg: &ClientConfig<V>) -> bool {
        self.acknowledged() >= cfg.writes.len()
    }

    /// Advances the client by one input.
    pub fn handle<V: Value>(
        &mut self,
        cfg: &ClientConfig<V>,
        input: Input<GossipNode<V>>,
        out: &mut Outbox<GossipNode<V>>,
    ) {
        match input {
            Input::Receive { from, msg: GossipMsg::PutOk { seq } }
                if from == cfg.replica && seq == self.next =>
            {
                self.next += 1;
                self.send_next(cfg, out);
            }
            Input::Receive { msg: GossipMsg::PutOk { .. }, .. } => {
                out.ignore("stale or duplicate acknowledgement");
            }
            Input::Receive { .. } => out.ignore("message a client does not expect"),
            Input::Timeout(GossipTimer::Retry) => self.send_next(cfg, out),
            Input::Timeout(GossipTimer::Gossip) => out.ignore("replica timer at a client"),
        }
    }

    /// Sends the next unacknowledged write and arms the retry timer, or disarms it when done.
    fn send_next<V: Value>(&self, cfg: &ClientConfig<V>, out: &mut Outbox<GossipNode<V>>) {
        match cfg.writes.get(self.acknowledged()) {
            Some(value) => {
                out.send(cfg.replica, GossipMsg::Put { seq: self.next, value: value.clone() });
                out.set_timer(GossipTimer::Retry, cfg.retry_after);
            }
            None => out.cancel_timer(GossipTimer::Retry),
        }
    }
}
