//! The node contract: one sans-IO state machine per protocol role.

use std::fmt::{self, Debug};
use std::hash::Hash;
use std::time::Duration;

/// The address of a node: a protocol role instance (replica, storage node, cache, client, ...).
///
/// Harnesses map it to their own addressing (a Stateright `Id`, a socket address, a pending RPC)
/// without the node knowing.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NodeId(pub u64);

/// Compact, for traces: `n3` (Stateright prints the same node as `Id(3)`).
impl Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// One event delivered to a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input<N: Node> {
    /// A message from another node.
    Receive {
        /// The sender.
        from: NodeId,
        /// The message.
        msg: N::Msg,
    },
    /// A timer the node set earlier has fired.
    Timeout(N::Timer),
}

/// One effect a node asks its harness to perform. Effects are data; the harness executes them
/// in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output<N: Node> {
    /// Send `msg` to `to`, over a transport that may drop, duplicate and reorder it. Replies to
    /// local callers (a client RPC waiting in the cluster runtime) are sends to the caller's id.
    Send {
        /// The recipient.
        to: NodeId,
        /// The message.
        msg: N::Msg,
    },
    /// Arm `timer` to fire after about `after`. A timer is identified by its value: arming an
    /// armed timer re-arms it.
    SetTimer {
        /// Which timer.
        timer: N::Timer,
        /// The delay; harnesses may fire earlier or later (the model checker ignores it).
        after: Duration,
    },
    /// Disarm `timer`, if armed.
    CancelTimer(N::Timer),
    /// Store `durable` on stable storage, replacing what was stored, before executing the
    /// outputs after this one. After a crash the node restarts from it (see [`Node::init`]).
    Persist(N::Durable),
    /// The input was stale, duplicated or unexpected and was ignored. Harnesses count these; it
    /// is never an error.
    Ignored {
        /// Why, as a short static phrase (a metrics label).
        reason: &'static str,
    },
}

/// The outputs of one `init` or `handle` call, in the order the node emitted them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Outbox<N: Node>(Vec<Output<N>>);

impl<N: Node> Default for Outbox<N> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<N: Node> Outbox<N> {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Emits [`Output::Send`].
    pub fn send(&mut self, to: NodeId, msg: N::Msg) {
        self.0.push(Output::Send { to, msg });
    }

    /// Emits [`Output::SetTimer`].
    pub fn set_timer(&mut self, timer: N::Timer, after: Duration) {
        self.0.push(Output::SetTimer { timer, after });
    }

    /// Emits [`Output::CancelTimer`].
    pub fn cancel_timer(&mut self, timer: N::Timer) {
        self.0.push(Output::CancelTimer(timer));
    }

    /// Emits [`Output::Persist`].
    pub fn persist(&mut self, durable: N::Durable) {
        self.0.push(Output::Persist(durable));
    }

    /// Emits [`Output::Ignored`].
    pub fn ignore(&mut self, reason: &'static str) {
        self.0.push(Output::Ignored { reason });
    }

    /// Whether nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `output` was emitted.
    pub fn contains(&self, output: &Output<N>) -> bool {
        self.0.contains(output)
    }

    /// The outputs emitted so far.
    pub fn as_slice(&self) -> &[Output<N>] {
        &self.0
    }

    /// Takes the outputs, leaving the outbox empty for the next call.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output<N>> {
        self.0.drain(..)
    }
}

impl<N: Node> IntoIterator for Outbox<N> {
    type Item = Output<N>;
    type IntoIter = std::vec::IntoIter<Output<N>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A broken invariant, named by its stable id (see `docs/invariants.md`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
#[error("{id}: {detail}")]
pub struct Violation {
    /// The invariant id, e.g. `GOSSIP-I2`.
    pub id: &'static str,
    /// What was observed.
    pub detail: String,
}

/// A protocol role as a deterministic state machine.
///
/// # The driving contract
///
/// A harness owns the node value and the node's `Config` (its identity, peers and bounds,
/// which never change while it runs).
///
/// 1. It calls [`Node::init`] once when the node starts — and again after a crash, which
///    loses all state but the last [`Output::Persist`]ed `Durable` value — and executes the
///    emitted outputs.
/// 2. Then, one at a time, it calls [`Node::handle`] with each message that arrives and each
///    timer that fires, and executes the outputs in the order emitted. Calls are never
///    concurrent; the node never sees a clock or a random number, only inputs.
/// 3. The transport is weak: a sent message may be dropped, duplicated, delayed or reordered,
///    and timers may fire early or late. A node must stay safe under all of it; inputs that are
///    stale or unexpected are ignored with [`Outbox::ignore`], never treated as errors.
/// 4. After each `handle`, a checking harness calls [`Node::check_step`] on the states before
///    and after (see [`handle_checked`]); the model checker, the simulator and debug builds of
///    the cluster all do.
///
/// State must be a canonical value — `BTreeMap`/`BTreeSet`, no `HashMap`, `Rc`, locks, clocks
/// or RNGs — so that equal states hash equally and the model checker can deduplicate them.
pub trait Node: Clone + Eq + Hash + Debug + Sized {
    /// Immutable per-node configuration: identity, peers, timer periods, bounds.
    type Config: Clone + Debug;
    /// The protocol's message enum, shared by all its roles.
    type Msg: Clone + Eq + Ord + Hash + Debug;
    /// The node's timers.
    type Timer: Clone + Eq + Ord + Hash + Debug;
    /// What survives a crash: the last value the node persisted, `Default` before any. `()`
    /// for roles that keep nothing.
    type Durable: Clone + Eq + Hash + Debug + Default;

    /// Builds the node's initial state from what it last persisted (`Default` on its very
    /// first start), emitting its first outputs (for example, arming timers or sending a first
    /// request).
    fn init(cfg: &Self::Config, durable: &Self::Durable, out: &mut Outbox<Self>) -> Self;

    /// Advances the node by one input.
    fn handle(&mut self, cfg: &Self::Config, input: Input<Self>, out: &mut Outbox<Self>);

    /// Checks the invariants that relate a state to the next one (for example "values only
    /// grow"). The default checks nothing.
    fn check_step(cfg: &Self::Config, before: &Self, after: &Self) -> Result<(), Violation> {
        let _ = (cfg, before, after);
        Ok(())
    }
}

/// Runs [`Node::handle`] and then [`Node::check_step`] on the states before and after.
pub fn handle_checked<N: Node>(
    node: &mut N,
    cfg: &N::Config,
    input: Input<N>,
    out: &mut Outbox<N>,
) -> Result<(), Violation> {
    let before = node.clone();
    node.handle(cfg, input, out);
    N::check_step(cfg, &before, node)
}
