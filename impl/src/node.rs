//! The node contract: one sans-IO state machine per protocol role.

use std::fmt::{self, Debug};
use std::hash::Hash;
use std::time::Duration;

use crate::base::ReqId;

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
    /// Merge the delta `durable` into what the node stored on stable storage
    /// ([`DurableState::merge_delta`]) before executing the outputs after this one. After a
    /// crash the node restarts from the merged value (see [`Node::init`]); a crash loses
    /// exactly the deltas not persisted yet.
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

    /// Appends the outputs of role `R`, as this world's: the outputs of a role this world
    /// hosts (see [`handle_within`]).
    pub fn absorb<R: Node>(&mut self, inner: Outbox<R>)
    where
        R::Msg: Within<N::Msg>,
        R::Timer: Within<N::Timer>,
        R::Durable: Within<N::Durable>,
    {
        self.0.reserve(inner.0.len());
        for output in inner {
            self.absorb_one(output);
        }
    }

    /// Appends one output of role `R`, as this world's (see [`Outbox::absorb`]).
    pub fn absorb_one<R: Node>(&mut self, output: Output<R>)
    where
        R::Msg: Within<N::Msg>,
        R::Timer: Within<N::Timer>,
        R::Durable: Within<N::Durable>,
    {
        self.0.push(match output {
            Output::Send { to, msg } => Output::Send { to, msg: msg.into_world() },
            Output::SetTimer { timer, after } => {
                Output::SetTimer { timer: timer.into_world(), after }
            }
            Output::CancelTimer(timer) => Output::CancelTimer(timer.into_world()),
            Output::Persist(durable) => Output::Persist(durable.into_world()),
            Output::Ignored { reason } => Output::Ignored { reason },
        });
    }
}

impl<N: Node> IntoIterator for Outbox<N> {
    type Item = Output<N>;
    type IntoIter = std::vec::IntoIter<Output<N>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// What a node keeps across crashes: a join-semilattice. A node persists *deltas*
/// ([`Output::Persist`]) and its harness merges each into what it stored, so persisting one
/// changed key costs one key, and the stored value only grows.
pub trait DurableState: Clone + Eq + Hash + Debug + Default {
    /// Merges a persisted delta into the stored value (a join: commutative, associative,
    /// idempotent).
    fn merge_delta(&mut self, delta: Self);

    /// The delta split into independent parts, each named by a record key, for a harness
    /// that stores records: it keeps one record per name, merging parts of the same name, and
    /// the stored value is the merge of all records. The default: one record.
    fn parts(self) -> Vec<(Vec<u8>, Self)> {
        vec![(Vec::new(), self)]
    }

    /// What is left after the disk lost its data but kept the small, always-synced record
    /// of who the node is (a replaced data disk, or the unsynced tail of a store run with
    /// sync policy `never` after a power failure). The default loses nothing.
    fn lose_data(&mut self) {}
}

/// Nothing persisted.
impl DurableState for () {
    fn merge_delta(&mut self, (): ()) {}
}

/// An incarnation number: the larger wins.
impl DurableState for u32 {
    fn merge_delta(&mut self, delta: u32) {
        *self = (*self).max(delta);
    }
}

/// Why a request did not happen at the node it was sent to, as its harness or the transport
/// says: the request was not delivered, or the node's harness did not take it. Definite in
/// every case — but only for that attempt at that node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Refusal {
    /// The node could not be reached (no connection): the request was not delivered.
    Unreachable,
    /// The node's harness was over its limits and did not take the request; later, or another
    /// node, may.
    Overloaded,
    /// The node is shutting down and took no new request.
    ShuttingDown,
    /// The request did not decode.
    Malformed,
    /// The request was larger than the node accepts.
    TooLarge,
    /// The message is not a request.
    NotARequest,
    /// The caller's id is not one the node accepts calls from.
    InvalidCaller,
    /// A request with this caller and number is already waiting at the node.
    Duplicate,
    /// The node's disk is (nearly) full: its harness takes no request that writes, and still
    /// serves the others. Another replica may take it.
    DiskFull,
}

impl Refusal {
    /// Whether the request itself is at fault, so that no node would take it.
    pub fn is_invalid(self) -> bool {
        !matches!(self, Self::Unreachable | Self::Overloaded | Self::ShuttingDown | Self::DiskFull)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unreachable => "the node could not be reached",
            Self::Overloaded => "the node is overloaded",
            Self::ShuttingDown => "the node is shutting down",
            Self::Malformed => "the request did not decode",
            Self::TooLarge => "the request is larger than the node accepts",
            Self::NotARequest => "the message is not a request",
            Self::InvalidCaller => "the caller id is not accepted",
            Self::Duplicate => "a request with this number is already waiting",
            Self::DiskFull => "the node's disk is full; it takes no writes",
        })
    }
}

/// What a harness needs to know of a protocol's messages to carry request/response calls (an
/// application calling a client, a client calling a storage node) over a transport whose
/// other messages are one-way. A harness knows nothing else of what messages mean.
pub trait Calls: Sized {
    /// The request number of a request message; `None` for every other message.
    fn request(&self) -> Option<ReqId>;
    /// The request a message answers; `None` for every other message.
    fn answers(&self) -> Option<ReqId>;
    /// The answer by which a harness tells a requester that its request `req` did not happen
    /// at the node it was sent to.
    fn refused(req: ReqId, refusal: Refusal) -> Self;
    /// How to refuse this request: [`Calls::refused`] unless the message type carries several
    /// protocols' requests, each refused in its own protocol's words. A harness takes it before
    /// it sends the request away, to answer for it if the request cannot be delivered.
    fn refuser(&self) -> fn(ReqId, Refusal) -> Self {
        Self::refused
    }
    /// Whether a request may change what the node persists: a harness whose disk is full
    /// refuses these ([`Refusal::DiskFull`]) and keeps taking the rest. None, by default.
    fn writes(&self) -> bool {
        false
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
///    loses all state but the merge of the [`Output::Persist`]ed `Durable` deltas — and executes the
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
    /// What survives a crash: the merge of every delta the node persisted, `Default` before
    /// any. `()` for roles that keep nothing.
    type Durable: DurableState;

    /// Builds the node's initial state from what it persisted (`Default` on its very
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

    /// Whether the node has nothing left to do of its own accord: no request waiting for an
    /// answer, nothing to re-send. A system is *quiescent* when every node is up and idle
    /// ([`quiescent`]); harnesses judge convergence there. The default: always idle.
    fn is_idle(&self, cfg: &Self::Config) -> bool {
        let _ = cfg;
        true
    }
}

/// `Self` is one of the cases of a world's type `W` (its message, timer or durable type): how
/// a role's own type embeds in the world that hosts it. Every type is trivially within itself;
/// a world whose roles speak several protocols implements it for each protocol's type.
pub trait Within<W>: Sized {
    /// The world's value for this one.
    fn into_world(self) -> W;
    /// This case of the world's value, if it is one.
    fn from_world(world: W) -> Option<Self>;
}

impl<T> Within<T> for T {
    fn into_world(self) -> T {
        self
    }

    fn from_world(world: T) -> Option<T> {
        Some(world)
    }
}

/// A role that persists nothing, hosted where others persist an incarnation: it is never asked
/// to persist, and starts from nothing.
impl Within<u32> for () {
    fn into_world(self) -> u32 {
        0
    }

    fn from_world(_: u32) -> Option<()> {
        Some(())
    }
}

/// A node type that hosts role `R` among others (a *world*, built by [`world!`](crate::world!)): where its
/// node and configuration are that role's.
pub trait Hosts<R: Node>: Node {
    /// The role's state, if this node is one.
    fn role(&self) -> Option<&R>;
    /// The role's configuration, if this configuration is one.
    fn role_config(cfg: &Self::Config) -> Option<&R::Config>;
}

/// The nodes of a run as invariant functions take them: each configuration with the node's
/// state, `None` while it is crashed.
pub type Nodes<'a, W> = [(&'a <W as Node>::Config, Option<&'a W>)];

/// Every node of role `R` among `nodes`: its configuration, and its state (`None` while
/// crashed).
pub fn roles<'a, R: Node + 'a, W: Hosts<R>>(
    nodes: &'a Nodes<'a, W>,
) -> impl Iterator<Item = (&'a R::Config, Option<&'a R>)> + 'a {
    nodes.iter().filter_map(|(cfg, node)| {
        let cfg = W::role_config(cfg)?;
        Some((cfg, node.and_then(|node| node.role())))
    })
}

/// Every live node of role `R` among `nodes`, with its configuration.
pub fn live<'a, R: Node + 'a, W: Hosts<R>>(
    nodes: &'a Nodes<'a, W>,
) -> impl Iterator<Item = (&'a R::Config, &'a R)> + 'a {
    roles(nodes).filter_map(|(cfg, node)| Some((cfg, node?)))
}

/// Whether every node is up and idle ([`Node::is_idle`]).
pub fn quiescent<W: Node>(nodes: &Nodes<'_, W>) -> bool {
    nodes.iter().all(|(cfg, node)| node.is_some_and(|node| node.is_idle(cfg)))
}

/// Runs [`Node::init`] of role `R` for a world `W` that hosts it: the world's durable value
/// goes in as the role's (the role's default if it is another case), the outputs come out as
/// the world's.
pub fn init_within<R: Node, W: Node>(
    cfg: &R::Config,
    durable: &W::Durable,
    out: &mut Outbox<W>,
) -> R
where
    R::Msg: Within<W::Msg>,
    R::Timer: Within<W::Timer>,
    R::Durable: Within<W::Durable>,
{
    let durable = R::Durable::from_world(durable.clone()).unwrap_or_default();
    let mut inner = Outbox::new();
    let node = R::init(cfg, &durable, &mut inner);
    out.absorb(inner);
    node
}

/// Runs [`Node::handle`] of role `R` for a world `W` that hosts it: a message or timer that is
/// not one of the role's is ignored, the outputs come out as the world's.
pub fn handle_within<R: Node, W: Node>(
    node: &mut R,
    cfg: &R::Config,
    input: Input<W>,
    out: &mut Outbox<W>,
) where
    R::Msg: Within<W::Msg>,
    R::Timer: Within<W::Timer>,
    R::Durable: Within<W::Durable>,
{
    let input = match input {
        Input::Receive { from, msg } => match R::Msg::from_world(msg) {
            Some(msg) => Input::Receive { from, msg },
            None => return out.ignore("a message of a protocol this role does not speak"),
        },
        Input::Timeout(timer) => match R::Timer::from_world(timer) {
            Some(timer) => Input::Timeout(timer),
            None => return out.ignore("a timer of another role"),
        },
    };
    let mut inner = Outbox::new();
    node.handle(cfg, input, &mut inner);
    out.absorb(inner);
}

/// Declares a *world*: one node type hosting several roles, so that a model or a simulation
/// runs one node type over them all. Each role is a [`Node`] of its own; the world's message,
/// timer and durable types contain each role's (see [`Within`]). Generates the node enum, its
/// configuration enum, the [`Node`] implementation (each call delegated to the role, inputs and
/// outputs converted) and a [`Hosts`] implementation per role.
///
/// ```text
/// world! {
///     /// Storage nodes and clients.
///     pub enum KvsNode, config KvsConfig {
///         msg: KvsMsg, timer: KvsTimer, durable: u32;
///         /// A storage node.
///         Storage(StorageNode),
///         /// A client.
///         Client(ScriptedClient),
///     }
/// }
/// ```
#[macro_export]
macro_rules! world {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident, config $config:ident {
            msg: $msg:ty, timer: $timer:ty, durable: $durable:ty;
            $( $(#[$role_meta:meta])* $variant:ident($role:ty) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        // Roles differ in size; a world is model and simulator state, cloned whole at every
        // step, where boxing the large roles would only add an allocation.
        #[allow(clippy::large_enum_variant)]
        $vis enum $name {
            $( $(#[$role_meta])* $variant($role) ),+
        }

        #[doc = concat!("The configuration of a [`", stringify!($name), "`]: which role, configured how.")]
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        $vis enum $config {
            $( $(#[$role_meta])* $variant(<$role as $crate::Node>::Config) ),+
        }

        impl $crate::Node for $name {
            type Config = $config;
            type Msg = $msg;
            type Timer = $timer;
            type Durable = $durable;

            fn init(cfg: &$config, durable: &$durable, out: &mut $crate::Outbox<Self>) -> Self {
                match cfg {
                    $( $config::$variant(cfg) => {
                        Self::$variant($crate::init_within::<$role, Self>(cfg, durable, out))
                    } )+
                }
            }

            fn handle(
                &mut self,
                cfg: &$config,
                input: $crate::Input<Self>,
                out: &mut $crate::Outbox<Self>,
            ) {
                match (self, cfg) {
                    $( (Self::$variant(node), $config::$variant(cfg)) => {
                        $crate::handle_within(node, cfg, input, out)
                    } )+
                    #[allow(unreachable_patterns)]
                    _ => unreachable!("a node always runs with the configuration of its own role"),
                }
            }

            fn check_step(
                cfg: &$config,
                before: &Self,
                after: &Self,
            ) -> Result<(), $crate::Violation> {
                match (cfg, before, after) {
                    $( ($config::$variant(cfg), Self::$variant(before), Self::$variant(after)) => {
                        <$role as $crate::Node>::check_step(cfg, before, after)
                    } )+
                    #[allow(unreachable_patterns)]
                    _ => Ok(()),
                }
            }

            fn is_idle(&self, cfg: &$config) -> bool {
                match (self, cfg) {
                    $( (Self::$variant(node), $config::$variant(cfg)) => {
                        <$role as $crate::Node>::is_idle(node, cfg)
                    } )+
                    #[allow(unreachable_patterns)]
                    _ => false,
                }
            }
        }

        $(
            impl $crate::Hosts<$role> for $name {
                fn role(&self) -> Option<&$role> {
                    match self {
                        Self::$variant(node) => Some(node),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }

                fn role_config(cfg: &$config) -> Option<&<$role as $crate::Node>::Config> {
                    match cfg {
                        $config::$variant(cfg) => Some(cfg),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )+
    };
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
