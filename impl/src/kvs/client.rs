//! The KVS client: the one state machine every user of the KVS goes through — the models, the
//! simulator and the reference cluster's client library alike.
//!
//! An application drives it by calls: it sends the client `Call { req, op }` with a number of
//! its own choosing and gets back exactly one `Done { req, outcome }`. For each call the client
//! routes the key by its copy of the ring (or by the owners a redirect named, or through its
//! cache), sends the request as a new request number, and waits up to `retry_after` for the
//! answer. It retries at the key's next replica when an attempt gets no answer, is refused by
//! the transport, or is redirected; it follows a redirect only from a strictly newer ring epoch
//! (KVS-I9). When no answer settles the call, it says whether the call certainly did not
//! happen ([`Failure::Unavailable`], [`Failure::Invalid`]) or may have
//! ([`Failure::Indefinite`]): a put is indefinite once any attempt may have reached a replica
//! that took it. Lattice merges are idempotent, so re-sending a put is safe.
//!
//! [`ScriptedClient`](super::ScriptedClient) wraps it with a fixed list of calls, for models
//! and simulations.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::msg::{Failure, Key, KvsMsg, KvsTimer, Op, Outcome, ReqId};
use super::ring::{Epoch, Ring, fnv1a64};
use super::{Mutant, invariants};
use crate::base::seeded_defects;
use crate::node::{Input, Node, NodeId, Outbox, Refusal, Violation};

type Out = Outbox<KvsClient>;

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
    /// How long one attempt of a get or put waits for its answer.
    pub retry_after: Duration,
    /// How long one attempt of a leave waits: the node answers once it has handed off
    /// everything.
    pub leave_after: Duration,
    /// Attempts per call before it fails.
    pub max_attempts: u32,
    /// The cache every get and put goes through (an executor's client); `None` routes by the
    /// ring.
    pub via: Option<NodeId>,
    /// A node asked first among a key's replicas whenever it is one (the storage node in the
    /// client's own process).
    pub prefer: Option<NodeId>,
    /// Nodes asked instead of a key's replicas (one chosen by the key's hash, then the next
    /// ones in turn) until a redirect names the key's owners: to read through chosen nodes, or
    /// to load a subset of a cluster. Empty: route by the ring.
    pub targets: Vec<NodeId>,
    /// The most calls in progress; more are refused at once (`Overloaded`).
    pub max_calls: u32,
    /// The most keys whose owners a redirect named that are remembered; beyond it the routes
    /// are forgotten (they are hints: the ring is the fallback).
    pub max_routes: u32,
    /// After an attempt at a node gets no answer in time, the next this many calls ask that
    /// node last among a key's nodes (a paused or cut-off node then costs one deadline, not
    /// one per call); then one call asks it first again, as a probe, and if that one gets no
    /// answer either the window doubles, up to 64 times this. Any answer from the node ends
    /// the suspicion. 0: never (every call asks in ring order).
    pub suspect_calls: u32,
    /// The seeded defect this client carries, if any.
    #[cfg(feature = "mutants")]
    #[cfg_attr(feature = "serde", serde(skip))]
    pub mutant: Option<Mutant>,
}

impl ClientConfig {
    /// A correct client `id` routing by `ring`, with default periods and bounds.
    pub fn new(id: NodeId, ring: Ring, replication: usize) -> Self {
        Self {
            id,
            ring,
            replication,
            retry_after: Duration::from_millis(100),
            leave_after: Duration::from_secs(30),
            max_attempts: 3,
            via: None,
            prefer: None,
            targets: Vec::new(),
            max_calls: 100_000,
            max_routes: 1 << 20,
            suspect_calls: 0,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }
}

seeded_defects!(ClientConfig, Mutant);

/// A call in progress.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Call {
    /// Who called, and its number for the call.
    caller: (NodeId, ReqId),
    op: Op,
    /// Attempts made so far, the current one included.
    attempts: u32,
    /// Whether an earlier attempt may have reached a replica that took it.
    maybe: bool,
    /// The node the current attempt went to.
    to: NodeId,
    /// Nodes that said they are shutting down: not asked again by this call.
    stopping: BTreeSet<NodeId>,
    /// Nodes suspected when the call began: asked last by every attempt of it.
    demoted: BTreeSet<NodeId>,
    /// The last refusal heard.
    last: Option<Refusal>,
}

/// A client's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KvsClient {
    /// The number of the next request sent.
    next_req: ReqId,
    /// The calls in progress, by the request number of their current attempt.
    calls: BTreeMap<ReqId, Call>,
    /// The callers of `calls` (an index: a duplicate call is found without a scan of every
    /// call in flight, which pipelined clients made the hottest loop of a node).
    callers: BTreeSet<(NodeId, ReqId)>,
    /// Owners learned from redirects, with the epoch they came from.
    routes: BTreeMap<Key, (Epoch, Vec<NodeId>)>,
    /// Nodes an attempt timed out at, asked last meanwhile (see
    /// [`ClientConfig::suspect_calls`]).
    suspects: BTreeMap<NodeId, Suspect>,
}

/// A node suspected of not answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Suspect {
    /// Calls left that ask it last; at 0 the next call asks it as usual (a probe).
    left: u32,
    /// The calls it is asked last for after its next timeout.
    window: u32,
}

impl KvsClient {
    /// The calls in progress.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// The owners a redirect named for `key`, with their epoch.
    pub fn route(&self, key: &str) -> Option<&(Epoch, Vec<NodeId>)> {
        self.routes.get(key)
    }

    /// The same client with `route` for `key`, whatever its epoch (to test KVS-I9).
    #[cfg(test)]
    pub(super) fn with_route(mut self, key: &str, epoch: Epoch, owners: Vec<NodeId>) -> Self {
        self.routes.insert(key.to_owned(), (epoch, owners));
        self
    }

    /// Removes the call whose current attempt is request `req`.
    fn take(&mut self, req: ReqId) -> Option<Call> {
        let call = self.calls.remove(&req)?;
        self.callers.remove(&call.caller);
        Some(call)
    }

    /// An application's call.
    fn call(&mut self, cfg: &ClientConfig, caller: (NodeId, ReqId), op: Op, out: &mut Out) {
        if self.callers.contains(&caller) {
            return out.ignore("a call already in progress");
        }
        if self.calls.len() >= cfg.max_calls as usize {
            let failure = Failure::Unavailable { attempts: 0, last: Some(Refusal::Overloaded) };
            return answer(caller, Outcome::Failed(failure), out);
        }
        let mut demoted = BTreeSet::new();
        for (node, suspect) in &mut self.suspects {
            if suspect.left > 0 {
                suspect.left -= 1;
                demoted.insert(*node);
            }
        }
        let call = Call {
            caller,
            op,
            attempts: 0,
            maybe: false,
            to: cfg.id,
            stopping: BTreeSet::new(),
            demoted,
            last: None,
        };
        self.attempt(cfg, call, out);
    }

    /// Sends `call`'s next attempt to the next node in turn, or ends it when it has none left.
    fn attempt(&mut self, cfg: &ClientConfig, mut call: Call, out: &mut Out) {
        if call.attempts >= cfg.max_attempts {
            return answer(call.caller, call.failed(), out);
        }
        let mut owners = self.owners(cfg, &call.op);
        // Suspects last, in their order (a stable sort).
        owners.sort_by_key(|node| call.demoted.contains(node));
        owners.retain(|node| !call.stopping.contains(node));
        let Some(&to) = owners.get(call.attempts as usize % owners.len().max(1)) else {
            // No node to ask: nothing was sent for this attempt, though an earlier one may
            // have been.
            return answer(call.caller, call.failed(), out);
        };
        let req = self.next_req;
        self.next_req += 1;
        call.attempts += 1;
        call.to = to;
        let wait = match call.op {
            Op::Leave { .. } => cfg.leave_after,
            Op::Get { .. } | Op::Put { .. } => cfg.retry_after,
        };
        out.send(to, call.op.request(req));
        out.set_timer(KvsTimer::Attempt(req), wait);
        self.callers.insert(call.caller);
        self.calls.insert(req, call);
    }

    /// The nodes to try for `op`, in order.
    fn owners(&self, cfg: &ClientConfig, op: &Op) -> Vec<NodeId> {
        let key = match op {
            Op::Leave { node } => return vec![*node],
            _ if cfg.via.is_some() => return cfg.via.into_iter().collect(),
            Op::Get { key } | Op::Put { key, .. } => key,
        };
        let mut owners = match self.routes.get(key) {
            Some((_, owners)) if !owners.is_empty() => owners.clone(),
            _ if !cfg.targets.is_empty() => {
                let mut targets = cfg.targets.clone();
                let first = fnv1a64(key.as_bytes()) % targets.len() as u64;
                targets.rotate_left(first as usize);
                targets
            }
            _ => cfg.ring.responsible(key, cfg.replication),
        };
        if let Some(at) = cfg.prefer.and_then(|p| owners.iter().position(|n| *n == p)) {
            owners.rotate_left(at);
        }
        owners
    }

    /// An attempt at `node` got no answer in time: ask it last for a while.
    fn suspect(&mut self, cfg: &ClientConfig, node: NodeId) {
        if cfg.suspect_calls == 0 {
            return;
        }
        let max = cfg.suspect_calls.saturating_mul(64);
        let suspect = self
            .suspects
            .entry(node)
            .and_modify(|s| {
                // A probe that went unanswered: a longer window. Otherwise another call sent
                // before the suspicion timed out too: the same window again.
                if s.left == 0 {
                    s.window = s.window.saturating_mul(2).min(max);
                }
            })
            .or_insert(Suspect { left: 0, window: cfg.suspect_calls });
        suspect.left = suspect.window;
    }

    /// The answer to request `req` of a call in progress.
    fn answered(&mut self, cfg: &ClientConfig, req: ReqId, msg: KvsMsg, out: &mut Out) {
        let Some(mut call) = self.take(req) else {
            return out.ignore("an answer to no call in progress");
        };
        out.cancel_timer(KvsTimer::Attempt(req));
        let outcome = match msg {
            KvsMsg::GetOk { value, .. } => Outcome::Read(value),
            KvsMsg::PutOk { .. } => Outcome::Written,
            KvsMsg::LeaveOk { .. } => Outcome::Left,
            KvsMsg::LeaveRefused { .. } => Outcome::LeaveRefused,
            // Definite only if no earlier attempt may have reached a replica that took it.
            KvsMsg::PutRejected { error, .. } if !call.maybe => Outcome::Rejected(error),
            KvsMsg::PutRejected { .. } => call.failed(),
            KvsMsg::Refused { refusal, .. } if refusal.is_invalid() && !call.maybe => {
                Outcome::Failed(Failure::Invalid(refusal))
            }
            KvsMsg::Refused { refusal, .. } if refusal.is_invalid() => call.failed(),
            KvsMsg::Refused { refusal, .. } => {
                // Not taken there: try the next node.
                if refusal == Refusal::ShuttingDown {
                    call.stopping.insert(call.to);
                }
                call.last = Some(refusal);
                return self.attempt(cfg, call, out);
            }
            KvsMsg::Redirect { key, epoch, owners, .. } => {
                // Not taken there either; follow the owners it names if they are news.
                self.redirect(cfg, key, epoch, owners, out);
                return self.attempt(cfg, call, out);
            }
            _ => unreachable!("only answers are passed here"),
        };
        answer(call.caller, outcome, out);
    }

    /// Learns a redirect's owners if it is newer than what the client routes `key` by; a stale
    /// one (an older or equal epoch) could send it back to a node it just left.
    fn redirect(
        &mut self,
        cfg: &ClientConfig,
        key: Key,
        epoch: Epoch,
        owners: Vec<NodeId>,
        out: &mut Out,
    ) {
        let known = self.routes.get(&key).map_or(cfg.ring.epoch(), |(epoch, _)| *epoch);
        if epoch <= known && !cfg.has(Mutant::FollowStaleRedirect) {
            return out.ignore("a redirect from a stale epoch");
        }
        if self.routes.len() >= cfg.max_routes as usize && !self.routes.contains_key(&key) {
            self.routes.clear();
        }
        self.routes.insert(key, (epoch, owners));
    }
}

impl Call {
    /// How the call ends when no answer settled it.
    fn failed(&self) -> Outcome {
        let attempts = self.attempts;
        // A read changes nothing: whatever became of it, it did not happen.
        let maybe = self.maybe && !matches!(self.op, Op::Get { .. });
        Outcome::Failed(if maybe {
            Failure::Indefinite { attempts }
        } else {
            Failure::Unavailable { attempts, last: self.last }
        })
    }
}

/// Tells `caller` how its call ended.
fn answer(caller: (NodeId, ReqId), outcome: Outcome, out: &mut Out) {
    out.send(caller.0, KvsMsg::Done { req: caller.1, outcome });
}

impl Node for KvsClient {
    type Config = ClientConfig;
    type Msg = KvsMsg;
    type Timer = KvsTimer;
    /// A client keeps nothing across a crash.
    type Durable = ();

    fn init(_: &ClientConfig, _: &(), _: &mut Out) -> Self {
        Self {
            next_req: 0,
            calls: BTreeMap::new(),
            callers: BTreeSet::new(),
            routes: BTreeMap::new(),
            suspects: BTreeMap::new(),
        }
    }

    fn handle(&mut self, cfg: &ClientConfig, input: Input<Self>, out: &mut Out) {
        match input {
            Input::Receive { from, msg: KvsMsg::Call { req, op } } => {
                self.call(cfg, (from, req), op, out);
            }
            Input::Receive {
                msg:
                    msg @ (KvsMsg::GetOk { req, .. }
                    | KvsMsg::PutOk { req }
                    | KvsMsg::PutRejected { req, .. }
                    | KvsMsg::Redirect { req, .. }
                    | KvsMsg::LeaveOk { req }
                    | KvsMsg::LeaveRefused { req }
                    | KvsMsg::Refused { req, .. }),
                from,
            } => {
                self.suspects.remove(&from);
                self.answered(cfg, req, msg, out);
            }
            Input::Receive { .. } => out.ignore("a message a client does not expect"),
            Input::Timeout(KvsTimer::Attempt(req)) => match self.take(req) {
                Some(mut call) => {
                    // The request may have reached a replica that took it.
                    call.maybe = true;
                    self.suspect(cfg, call.to);
                    self.attempt(cfg, call, out);
                }
                None => out.ignore("the deadline of an attempt already answered"),
            },
            Input::Timeout(_) => out.ignore("another role's timer"),
        }
    }

    /// KVS-I9: a route to a key is only ever replaced by one from a strictly newer epoch (so a
    /// client follows at most one redirect per membership change, and never goes back to an
    /// older ring).
    fn check_step(cfg: &ClientConfig, before: &Self, after: &Self) -> Result<(), Violation> {
        for (key, route) in &after.routes {
            let old = before.routes.get(key);
            let old_epoch = old.map_or(cfg.ring.epoch(), |(epoch, _)| *epoch);
            if old != Some(route) && route.0 <= old_epoch {
                return Err(Violation {
                    id: invariants::ROUTING,
                    detail: format!("{key}: route from {old_epoch:?} replaced by {route:?}"),
                });
            }
        }
        Ok(())
    }

    fn is_idle(&self, _: &ClientConfig) -> bool {
        self.calls.is_empty()
    }
}
