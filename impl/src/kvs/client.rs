//! The KVS client role: runs a fixed list of operations, one at a time, routing each by its own
//! copy of the ring, following redirects and retrying with new request numbers.

use std::collections::BTreeMap;
use std::time::Duration;

use super::KvsNode;
use super::msg::{Durability, Key, KvsMsg, KvsTimer, PutError, ReqId};
use super::ring::{Epoch, Ring};
use crate::lattice::LatticeValue;
use crate::node::{Input, NodeId, Outbox, Violation};

type Out = Outbox<KvsNode>;

/// One operation a client performs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Op {
    /// Read a key.
    Get {
        /// The key.
        key: Key,
    },
    /// Merge a value into a key.
    Put {
        /// The key.
        key: Key,
        /// The value.
        value: LatticeValue,
        /// How many replicas must hold it before the put is acknowledged.
        durability: Durability,
    },
    /// Ask a storage node to leave the ring (an operator's request); finishes when it has.
    Leave {
        /// The node.
        node: NodeId,
    },
}

impl Op {
    /// The key the operation is about, if any.
    pub fn key(&self) -> Option<&Key> {
        match self {
            Self::Get { key } | Self::Put { key, .. } => Some(key),
            Self::Leave { .. } => None,
        }
    }
}

/// What became of an operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A get answered: the replica's value, or `None` for a key it does not hold.
    Read(Option<LatticeValue>),
    /// A put acknowledged at its durability.
    Written,
    /// A put refused at its first attempt; definite: it did not happen. (A refusal of a retry
    /// is recorded as [`Outcome::Failed`]: an earlier attempt may have landed.)
    Rejected(PutError),
    /// Every attempt timed out; indefinite: a put may or may not have happened.
    Failed,
    /// The node asked to leave has left the ring.
    Left,
    /// The node asked to leave is the ring's last member and stays; definite.
    LeaveRefused,
}

impl Outcome {
    /// Whether the outcome is certain (the operation happened, or certainly did not).
    pub fn is_definite(&self) -> bool {
        !matches!(self, Self::Failed)
    }
}

/// How a client is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClientConfig {
    /// This client.
    pub id: NodeId,
    /// The ring the client routes by until a redirect from a newer epoch corrects it.
    pub ring: Ring,
    /// The replication factor of every key.
    pub replication: usize,
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// How long to wait for an answer before retrying.
    pub retry_after: Duration,
    /// Attempts per operation before giving up with [`Outcome::Failed`].
    pub max_attempts: u32,
    /// The cache every get and put goes through, for an executor; `None` routes by the ring.
    pub via: Option<NodeId>,
    /// The seeded defect this client carries, if any.
    #[cfg(feature = "mutants")]
    #[cfg_attr(feature = "serde", serde(skip))]
    pub mutant: Option<super::Mutant>,
}

impl ClientConfig {
    /// A correct client `id` running `ops`.
    pub fn new(id: NodeId, ring: Ring, replication: usize, ops: Vec<Op>) -> Self {
        Self {
            id,
            ring,
            replication,
            ops,
            retry_after: Duration::from_millis(100),
            max_attempts: 3,
            via: None,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }
}

/// A client's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KvsClient {
    /// The number of the next request; the current one is `next_req - 1`.
    next_req: ReqId,
    /// Attempts made at the current operation.
    attempt: u32,
    /// Outcomes of the finished operations, in order; the current one is `outcomes.len()`.
    outcomes: Vec<Outcome>,
    /// Owners learned from redirects, with the epoch they came from.
    routes: BTreeMap<Key, (Epoch, Vec<NodeId>)>,
}

impl KvsClient {
    /// A client that starts its first operation.
    pub fn init(cfg: &ClientConfig, out: &mut Out) -> Self {
        let mut client =
            Self { next_req: 0, attempt: 0, outcomes: Vec::new(), routes: BTreeMap::new() };
        client.send_current(cfg, out);
        client
    }

    /// The outcomes of the finished operations, in order.
    pub fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    /// Whether every operation has an outcome.
    pub fn is_done(&self, cfg: &ClientConfig) -> bool {
        self.outcomes.len() >= cfg.ops.len()
    }

    /// Advances the client by one input.
    pub fn handle(&mut self, cfg: &ClientConfig, input: Input<KvsNode>, out: &mut Out) {
        // The request in flight, if any: a late answer to the last request of a finished client
        // must not be taken for an answer to an operation that does not exist.
        let current = (!self.is_done(cfg)).then(|| self.next_req.wrapping_sub(1));
        match input {
            Input::Receive { msg: KvsMsg::GetOk { req, value }, .. } if Some(req) == current => {
                self.finish(cfg, Outcome::Read(value), out);
            }
            Input::Receive { msg: KvsMsg::PutOk { req }, .. } if Some(req) == current => {
                self.finish(cfg, Outcome::Written, out);
            }
            Input::Receive { msg: KvsMsg::LeaveOk { req }, .. } if Some(req) == current => {
                self.finish(cfg, Outcome::Left, out);
            }
            Input::Receive { msg: KvsMsg::LeaveRefused { req }, .. } if Some(req) == current => {
                self.finish(cfg, Outcome::LeaveRefused, out);
            }
            Input::Receive { msg: KvsMsg::PutRejected { req, error }, .. }
                if Some(req) == current =>
            {
                // A rejection is definite only for the first attempt: an earlier attempt may
                // have reached another replica that took the write.
                let outcome =
                    if self.attempt == 0 { Outcome::Rejected(error) } else { Outcome::Failed };
                self.finish(cfg, outcome, out);
            }
            Input::Receive { msg: KvsMsg::Redirect { req, key, epoch, owners }, .. }
                if Some(req) == current =>
            {
                self.redirect(cfg, key, epoch, owners, out);
            }
            Input::Receive { .. } => out.ignore("stale or unexpected answer"),
            Input::Timeout(KvsTimer::Retry) if !self.is_done(cfg) => {
                self.attempt += 1;
                if self.attempt >= cfg.max_attempts {
                    self.finish(cfg, Outcome::Failed, out);
                } else {
                    self.send_current(cfg, out);
                }
            }
            Input::Timeout(_) => out.ignore("timer a client does not expect"),
        }
    }

    /// Follows a redirect that is newer than what the client routes by; a stale one (an older
    /// or equal epoch) could send it back to a node it just left, so it is ignored.
    fn redirect(
        &mut self,
        cfg: &ClientConfig,
        key: Key,
        epoch: Epoch,
        owners: Vec<NodeId>,
        out: &mut Out,
    ) {
        let known = self.routes.get(&key).map_or(cfg.ring.epoch(), |(epoch, _)| *epoch);
        if epoch <= known && !cfg.has(super::Mutant::FollowStaleRedirect) {
            return out.ignore("redirect from a stale epoch");
        }
        self.routes.insert(key, (epoch, owners));
        self.attempt += 1;
        if self.attempt >= cfg.max_attempts {
            self.finish(cfg, Outcome::Failed, out);
        } else {
            self.send_current(cfg, out);
        }
    }

    /// KVS-I9: a route to a key is only ever replaced by one from a strictly newer epoch (so a
    /// client follows at most one redirect per membership change, and never goes back to an
    /// older ring).
    pub fn check_step(cfg: &ClientConfig, before: &Self, after: &Self) -> Result<(), Violation> {
        for (key, route) in &after.routes {
            let old = before.routes.get(key);
            let old_epoch = old.map_or(cfg.ring.epoch(), |(epoch, _)| *epoch);
            if old != Some(route) && route.0 <= old_epoch {
                return Err(Violation {
                    id: super::invariants::ROUTING,
                    detail: format!("{key}: route from {old_epoch:?} replaced by {route:?}"),
                });
            }
        }
        Ok(())
    }

    fn finish(&mut self, cfg: &ClientConfig, outcome: Outcome, out: &mut Out) {
        self.outcomes.push(outcome);
        self.attempt = 0;
        self.send_current(cfg, out);
    }

    /// Sends the current operation as a new request to the next owner in turn, or stops.
    fn send_current(&mut self, cfg: &ClientConfig, out: &mut Out) {
        let Some(op) = cfg.ops.get(self.outcomes.len()) else {
            return out.cancel_timer(KvsTimer::Retry);
        };
        let owners = match op {
            Op::Leave { node } => vec![*node],
            Op::Get { .. } | Op::Put { .. } if cfg.via.is_some() => cfg.via.into_iter().collect(),
            Op::Get { key } | Op::Put { key, .. } => match self.routes.get(key) {
                Some((_, owners)) => owners.clone(),
                None => cfg.ring.responsible(key, cfg.replication),
            },
        };
        if owners.is_empty() {
            // No storage node to ask: record a failure and move on. (Nothing was sent for this
            // attempt, but an earlier one may have been, so it stays indefinite.)
            return self.finish(cfg, Outcome::Failed, out);
        }
        let to = owners[self.attempt as usize % owners.len()];
        let req = self.next_req;
        self.next_req += 1;
        let msg = match op.clone() {
            Op::Get { key } => KvsMsg::Get { req, key },
            Op::Put { key, value, durability } => KvsMsg::Put { req, key, value, durability },
            Op::Leave { .. } => KvsMsg::Leave { req },
        };
        out.send(to, msg);
        out.set_timer(KvsTimer::Retry, cfg.retry_after);
    }
}

seeded_defects!(ClientConfig);
