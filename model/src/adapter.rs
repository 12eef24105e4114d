//! The one generic bridge from `squall-proto` nodes to Stateright actors.
//!
//! This is the only module that knows Stateright's actor API. It holds no protocol meaning: it
//! forwards inputs to [`Node::handle`], turns [`Output`]s into Stateright commands, and keeps
//! the first failed step invariant ([`Node::check_step`]) in the actor state, where a property
//! can see it.
//!
//! It also decides how a model state is represented, which is most of what a check costs: the
//! checker clones and hashes every state it generates, and a state is mostly the same
//! messages and node states as its parent's. Messages, node states and persisted data are
//! therefore [`Hashed`]: shared, not copied, and hashed once when made, not at every state
//! that holds them.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use squall_proto::{DurableState, Input, Node, NodeId, Outbox, Output, Violation, handle_checked};
use stateright::actor::{Actor, ActorModel, ActorModelState, Id, Out};

/// A value shared between the states that hold it, with its hash computed once.
///
/// Equal values have equal hashes (the hash is computed from the value, with a fixed-seed
/// hasher, so it is the same in every thread); comparisons look at the hash first and
/// the values only when the hashes agree.
#[derive(Clone)]
pub struct Hashed<T> {
    hash: u64,
    value: Arc<T>,
}

impl<T: Hash> Hashed<T> {
    /// Wraps `value`, hashing it.
    pub fn new(value: T) -> Self {
        // Fixed seeds, as Stateright's own fingerprints use: the same hash in every thread.
        let hash = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(&value);
        Self { hash, value: Arc::new(value) }
    }
}

impl<T: Clone> Hashed<T> {
    /// The value, cloned only if another state still shares it.
    pub fn into_inner(self) -> T {
        Arc::unwrap_or_clone(self.value)
    }
}

impl<T> Deref for Hashed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for Hashed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && (Arc::ptr_eq(&self.value, &other.value) || self.value == other.value)
    }
}

impl<T: Eq> Eq for Hashed<T> {}

impl<T> Hash for Hashed<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<T: Ord> PartialOrd for Hashed<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: Ord> Ord for Hashed<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.cmp(&other.value)
    }
}

impl<T: fmt::Debug> fmt::Debug for Hashed<T> {
    /// Only the value: traces read as if it were not wrapped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// A Stateright actor running node `N` with configuration `cfg`. An actor's index in the model
/// must equal its node id.
#[derive(Clone, Debug)]
pub struct Adapter<N: Node> {
    /// The node's configuration (Stateright's `&self`).
    pub cfg: N::Config,
}

/// An actor's state: the node, what it persisted, and the first step invariant it broke.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Checked<N: Node> {
    /// The protocol node.
    pub node: Hashed<N>,
    /// The merge of every delta the node persisted, as Stateright's actor storage also holds
    /// it (Stateright replaces its storage on a save, so the adapter keeps the merge here and
    /// saves it whole; it adds no states, as it always equals the storage while running).
    pub durable: Hashed<N::Durable>,
    /// The first [`Node::check_step`] failure on the path to this state. It is sticky, so only
    /// states after a failure differ by it.
    pub violation: Option<Violation>,
}

/// The node id of a Stateright actor id.
pub fn node_id(id: Id) -> NodeId {
    NodeId(usize::from(id) as u64)
}

fn actor_id(id: NodeId) -> Id {
    Id::from(usize::try_from(id.0).expect("node ids index the model's actors"))
}

impl<N: Node> Adapter<N> {
    fn step(&self, state: &mut Cow<'_, Checked<N>>, input: Input<N>, o: &mut Out<Self>) {
        let mut node = N::clone(&state.node);
        let mut out = Outbox::new();
        let checked = handle_checked(&mut node, &self.cfg, input, &mut out);
        let violation = state.violation.clone().or(checked.err());
        let durable = execute(out, &state.durable, o);
        let node_changed = node != *state.node;
        if node_changed || violation != state.violation || durable.is_some() {
            let node = if node_changed { Hashed::new(node) } else { state.node.clone() };
            let durable = durable.unwrap_or_else(|| state.durable.clone());
            *state.to_mut() = Checked { node, durable, violation };
        }
    }
}

/// Turns outputs into Stateright commands. Persisted deltas are merged into a copy of
/// `durable`, which is saved whole (a step's outputs take effect together, so a save is never
/// behind a send of the same step) and returned if it changed.
fn execute<N: Node>(
    out: Outbox<N>,
    durable: &Hashed<N::Durable>,
    o: &mut Out<Adapter<N>>,
) -> Option<Hashed<N::Durable>> {
    let mut merged: Option<N::Durable> = None;
    for output in out {
        match output {
            Output::Send { to, msg } => o.send(actor_id(to), Hashed::new(msg)),
            // Stateright wants a non-empty range (its runtime draws from it; the checker ignores it).
            Output::SetTimer { timer, after } => {
                o.set_timer(timer, after..after + std::time::Duration::from_millis(1));
            }
            Output::CancelTimer(timer) => o.cancel_timer(timer),
            Output::Persist(delta) => {
                merged.get_or_insert_with(|| N::Durable::clone(durable)).merge_delta(delta);
            }
            Output::Ignored { .. } => {}
        }
    }
    let merged = merged?;
    // Saved even when unchanged, as a node's save is (the storage is the same either way).
    let changed = merged != **durable;
    let merged = if changed { Hashed::new(merged) } else { durable.clone() };
    o.save(merged.clone());
    changed.then_some(merged)
}

impl<N: Node> Actor for Adapter<N> {
    type Msg = Hashed<N::Msg>;
    type Timer = N::Timer;
    type State = Checked<N>;
    type Storage = Hashed<N::Durable>;
    type Random = ();

    fn on_start(
        &self,
        _: Id,
        durable: &Option<Hashed<N::Durable>>,
        o: &mut Out<Self>,
    ) -> Checked<N> {
        let durable = durable.clone().unwrap_or_else(|| Hashed::new(N::Durable::default()));
        let mut out = Outbox::new();
        let node = N::init(&self.cfg, &durable, &mut out);
        let durable = execute(out, &durable, o).unwrap_or(durable);
        Checked { node: Hashed::new(node), durable, violation: None }
    }

    fn on_msg(
        &self,
        _: Id,
        state: &mut Cow<'_, Checked<N>>,
        src: Id,
        msg: Hashed<N::Msg>,
        o: &mut Out<Self>,
    ) {
        self.step(state, Input::Receive { from: node_id(src), msg: msg.into_inner() }, o);
    }

    fn on_timeout(
        &self,
        _: Id,
        state: &mut Cow<'_, Checked<N>>,
        timer: &N::Timer,
        o: &mut Out<Self>,
    ) {
        self.step(state, Input::Timeout(timer.clone()), o);
    }
}

/// Every node of a model state with its configuration, `None` for a crashed node: the shape
/// the invariant functions of `squall-proto` take.
pub fn node_states<'a, N: Node>(
    model: &'a ActorModel<Adapter<N>, (), ()>,
    state: &'a ActorModelState<Adapter<N>>,
) -> Vec<(&'a N::Config, Option<&'a N>)>
where
    N::Msg: Ord,
    N::Timer: Ord,
{
    model
        .actors
        .iter()
        .zip(&state.actor_states)
        .zip(&state.crashed)
        .map(|((actor, checked), crashed)| (&actor.cfg, (!crashed).then_some(&*checked.node)))
        .collect()
}

/// Whether no node broke the step invariant `id` on the way to `state`.
pub fn no_step_violation<N: Node>(state: &ActorModelState<Adapter<N>>, id: &str) -> bool {
    state.actor_states.iter().all(|s| s.violation.as_ref().is_none_or(|v| v.id != id))
}
