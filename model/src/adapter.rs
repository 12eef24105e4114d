//! The one generic bridge from `squall-proto` nodes to Stateright actors.
//!
//! This is the only module that knows Stateright's actor API. It holds no protocol meaning: it
//! forwards inputs to [`Node::handle`], turns [`Output`]s into Stateright commands, and keeps
//! the first failed step invariant ([`Node::check_step`]) in the actor state, where a property
//! can see it.

use std::borrow::Cow;

use squall_proto::{DurableState, Input, Node, NodeId, Outbox, Output, Violation, handle_checked};
use stateright::actor::{Actor, ActorModel, ActorModelState, Id, Out};

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
    pub node: N,
    /// The merge of every delta the node persisted, as Stateright's actor storage also holds
    /// it (Stateright replaces its storage on a save, so the adapter keeps the merge here and
    /// saves it whole; it adds no states, as it always equals the storage while running).
    pub durable: N::Durable,
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
        let mut node = state.node.clone();
        let mut out = Outbox::new();
        let checked = handle_checked(&mut node, &self.cfg, input, &mut out);
        let violation = state.violation.clone().or(checked.err());
        let mut durable = state.durable.clone();
        execute(out, &mut durable, o);
        if node != state.node || violation != state.violation || durable != state.durable {
            *state.to_mut() = Checked { node, durable, violation };
        }
    }
}

/// Turns outputs into Stateright commands; persisted deltas are merged into `durable`, which
/// is saved whole (a step's outputs take effect together, so a save is never behind a send
/// of the same step).
fn execute<N: Node>(out: Outbox<N>, durable: &mut N::Durable, o: &mut Out<Adapter<N>>) {
    let mut persisted = false;
    for output in out {
        match output {
            Output::Send { to, msg } => o.send(actor_id(to), msg),
            // Stateright wants a non-empty range (its runtime draws from it; the checker ignores it).
            Output::SetTimer { timer, after } => {
                o.set_timer(timer, after..after + std::time::Duration::from_millis(1));
            }
            Output::CancelTimer(timer) => o.cancel_timer(timer),
            Output::Persist(delta) => {
                durable.merge_delta(delta);
                persisted = true;
            }
            Output::Ignored { .. } => {}
        }
    }
    if persisted {
        o.save(durable.clone());
    }
}

impl<N: Node> Actor for Adapter<N> {
    type Msg = N::Msg;
    type Timer = N::Timer;
    type State = Checked<N>;
    type Storage = N::Durable;
    type Random = ();

    fn on_start(&self, _: Id, durable: &Option<N::Durable>, o: &mut Out<Self>) -> Checked<N> {
        let mut durable = durable.clone().unwrap_or_default();
        let mut out = Outbox::new();
        let node = N::init(&self.cfg, &durable, &mut out);
        execute(out, &mut durable, o);
        Checked { node, durable, violation: None }
    }

    fn on_msg(
        &self,
        _: Id,
        state: &mut Cow<'_, Checked<N>>,
        src: Id,
        msg: N::Msg,
        o: &mut Out<Self>,
    ) {
        self.step(state, Input::Receive { from: node_id(src), msg }, o);
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
        .map(|((actor, checked), crashed)| (&actor.cfg, (!crashed).then_some(&checked.node)))
        .collect()
}

/// Whether no node broke the step invariant `id` on the way to `state`.
pub fn no_step_violation<N: Node>(state: &ActorModelState<Adapter<N>>, id: &str) -> bool {
    state.actor_states.iter().all(|s| s.violation.as_ref().is_none_or(|v| v.id != id))
}
