//! A deterministic, seeded simulator that drives any [`Node`] over a faulty network.
//!
//! Scenario tests build a [`Sim`] from node configurations, a seed and a [`Faults`] schedule,
//! then step it: each step delivers, drops or duplicates one in-flight message (chosen at
//! random, so delivery order is arbitrary), fires one armed timer, or crashes or restarts a
//! node. After every step the stepped node's [`Node::check_step`] runs, and the test may check
//! system invariants over [`Sim::nodes`]. The same seed always produces the same run; a failing
//! test should print its seed and [`Sim::trace`].
//!
//! Timer delays are ignored: any armed timer may fire at any step, which is the weakest timing
//! the node contract allows. [`Sim::set_timed`] switches to the strongest instead, for liveness
//! phases of protocols that rely on timing (leases renewed more often than they lapse): every
//! message in flight is delivered before the clock moves, and timers fire in the order of their
//! deadlines. [`Sim::partition`] cuts the network in two until [`Sim::heal`].
//! With [`Faults::replay_per_mille`], messages addressed to a node before it crashed may
//! arrive again after it restarts, as if delayed past its recovery.
//! [`Sim::run_until_quiet`] is the liveness phase: no faults, no partition, every crashed node
//! restarted, until no message is in flight and no timer is armed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::node::{DurableState, Input, Node, NodeId, Outbox, Output, Violation, handle_checked};

/// SplitMix64: a tiny, well-known deterministic generator. `squall-proto` takes no `rand`
/// dependency, and the simulator needs nothing more than reproducible uniform draws.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw from `0..n`; `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "draw from an empty range");
        (self.next() % n as u64) as usize
    }

    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u16) -> bool {
        self.below(1000) < usize::from(per_mille)
    }
}

/// How often each fault happens, in events per thousand steps of the relevant kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Of the messages picked for delivery, how many are dropped instead.
    pub drop_per_mille: u16,
    /// Of the messages delivered, how many stay in flight to be delivered again.
    pub duplicate_per_mille: u16,
    /// Of all steps, how many crash a live node (losing its state and timers).
    pub crash_per_mille: u16,
    /// Of all steps, how many restart a crashed node (running `init` again).
    pub restart_per_mille: u16,
    /// Of the last [`REPLAY_WINDOW`] messages addressed to a node before it restarts, how
    /// many arrive again after the restart: messages meant for its previous incarnation,
    /// delayed past its recovery (a retransmission queued across a reconnect, say). Plain
    /// duplicates rarely outlive a crash; incarnation numbers exist for these.
    pub replay_per_mille: u16,
    /// Of restarts, how many find the node's data disk lost: the node starts from what
    /// [`DurableState::lose_data`] leaves of what it persisted. Drawn, like power failures,
    /// from a stream of its own, so turning it on does not change the other faults' draws.
    pub disk_loss_per_mille: u16,
    /// Of all steps, how many are a power failure: every live node of the power domain (see
    /// [`Sim::set_power_domain`]; all nodes by default) crashes at once, losing everything it
    /// had not persisted. The restart fault brings them back one by one.
    pub power_failure_per_mille: u16,
}

/// How many of the last messages addressed to a node the replay fault remembers.
pub const REPLAY_WINDOW: usize = 256;

impl Faults {
    /// No faults: every message is delivered once, no node crashes.
    pub const NONE: Self = Self {
        drop_per_mille: 0,
        duplicate_per_mille: 0,
        crash_per_mille: 0,
        restart_per_mille: 0,
        replay_per_mille: 0,
        disk_loss_per_mille: 0,
        power_failure_per_mille: 0,
    };
}

/// One thing that happened in a simulation step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<N: Node> {
    /// `msg` from `from` was handled by `to`.
    Deliver {
        /// Sender.
        from: NodeId,
        /// Recipient.
        to: NodeId,
        /// The message.
        msg: N::Msg,
        /// Whether a copy stays in flight.
        duplicated: bool,
    },
    /// `msg` from `from` to `to` was lost (dropped, or its recipient was down).
    Drop {
        /// Sender.
        from: NodeId,
        /// Recipient.
        to: NodeId,
        /// The message.
        msg: N::Msg,
    },
    /// `timer` of `node` fired.
    Fire {
        /// Whose timer.
        node: NodeId,
        /// The timer.
        timer: N::Timer,
    },
    /// `node` crashed.
    Crash(NodeId),
    /// `node` restarted from its initial state.
    Restart(NodeId),
}

/// What a node was asked to do, as a recording simulator ([`Sim::recording`]) keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call<N: Node> {
    /// [`Node::init`], at the first start or a restart, with the durable state it was given.
    Init(N::Durable),
    /// [`Node::handle`].
    Handle(Input<N>),
}

/// One `init` or `handle` call of a node and the outputs it emitted, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded<N: Node> {
    /// The node.
    pub node: NodeId,
    /// The call.
    pub call: Call<N>,
    /// Its outputs.
    pub outputs: Vec<Output<N>>,
}

/// Counts of what happened, for assertions that faults really were injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages handled.
    pub delivered: u64,
    /// Messages (or, when duplicated, copies) lost by the drop fault.
    pub dropped: u64,
    /// Messages discarded because their recipient was down or unknown.
    pub undeliverable: u64,
    /// Messages lost to a network partition.
    pub partitioned: u64,
    /// Messages delivered and kept in flight for redelivery.
    pub duplicated: u64,
    /// Timers fired.
    pub fired: u64,
    /// Crashes.
    pub crashes: u64,
    /// Restarts.
    pub restarts: u64,
    /// Restarts that found the node's data disk lost.
    pub disks_lost: u64,
    /// Power failures (each crashing every live node of the power domain).
    pub power_failures: u64,
    /// Messages addressed to a node's previous incarnation put in flight again after its
    /// restart, by the replay fault.
    pub replayed: u64,
    /// Inputs nodes ignored as stale, duplicate or unexpected.
    pub ignored: u64,
}

/// A simulation failure: an invariant broke, or the liveness phase did not settle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// A node's step invariant failed.
    #[error("step {step}: node {node}: {violation}")]
    Violation {
        /// The step at which it failed.
        step: u64,
        /// The node that stepped.
        node: NodeId,
        /// What failed.
        violation: Violation,
    },
    /// Messages or timers were still pending after the step budget.
    #[error("not quiet after {steps} steps")]
    NotQuiet {
        /// The budget that ran out.
        steps: u64,
    },
}

#[derive(Clone, Debug)]
struct InFlight<M> {
    from: NodeId,
    to: NodeId,
    msg: M,
    /// When it arrives, in timed mode.
    at: Duration,
}

/// A deterministic simulation of a set of nodes. See the [module docs](self).
#[derive(Debug)]
pub struct Sim<N: Node> {
    configs: BTreeMap<NodeId, N::Config>,
    /// `None` while crashed.
    nodes: BTreeMap<NodeId, Option<N>>,
    /// What each node last persisted; survives its crashes.
    durable: BTreeMap<NodeId, N::Durable>,
    in_flight: Vec<InFlight<N::Msg>>,
    /// The last messages addressed to each node since it (re)started, for the replay fault:
    /// recorded while the fault is on, replayed (or forgotten, with the fault off) at the
    /// node's next restart. A replayed message is addressed to the node again, so it may come
    /// back at later restarts too, until newer messages push it out of the window.
    addressed: BTreeMap<NodeId, VecDeque<InFlight<N::Msg>>>,
    timers: BTreeSet<(NodeId, N::Timer)>,
    /// Each armed timer's deadline on the simulated clock.
    deadlines: BTreeMap<(NodeId, N::Timer), Duration>,
    /// The simulated clock; it moves only in timed mode.
    now: Duration,
    /// Whether events happen in the order of their times (see [`Sim::set_timed`]).
    timed: bool,
    /// In timed mode, the least and the most a message takes to arrive.
    delay: (Duration, Duration),
    rng: SplitMix64,
    /// The stream of the disk-loss and power-failure faults.
    extra_rng: SplitMix64,
    /// The nodes a power failure takes down; all when `None`.
    power_domain: Option<BTreeSet<NodeId>>,
    faults: Faults,
    /// The nodes crash faults may hit; all when `None`.
    crashable: Option<BTreeSet<NodeId>>,
    /// One side of a network partition: messages between it and the rest are lost.
    partition: Option<BTreeSet<NodeId>>,
    step: u64,
    trace: Vec<Event<N>>,
    /// Every node call, when recording (see [`Sim::recording`]).
    recorded: Option<Vec<Recorded<N>>>,
    stats: Stats,
}

impl<N: Node> Sim<N> {
    /// Starts every node (running `init`) under `faults`, with randomness from `seed`.
    pub fn new(
        seed: u64,
        faults: Faults,
        configs: impl IntoIterator<Item = (NodeId, N::Config)>,
    ) -> Self {
        Self::build(seed, faults, configs, false)
    }

    /// As [`Sim::new`], recording every node call with its outputs (their first `init`s
    /// included) for [`Sim::recorded`]: what a conformance trace is made of.
    pub fn recording(
        seed: u64,
        faults: Faults,
        configs: impl IntoIterator<Item = (NodeId, N::Config)>,
    ) -> Self {
        Self::build(seed, faults, configs, true)
    }

    fn build(
        seed: u64,
        faults: Faults,
        configs: impl IntoIterator<Item = (NodeId, N::Config)>,
        recording: bool,
    ) -> Self {
        let mut sim = Self {
            configs: configs.into_iter().collect(),
            nodes: BTreeMap::new(),
            durable: BTreeMap::new(),
            in_flight: Vec::new(),
            addressed: BTreeMap::new(),
            timers: BTreeSet::new(),
            deadlines: BTreeMap::new(),
            now: Duration::ZERO,
            timed: false,
            delay: (Duration::ZERO, Duration::ZERO),
            rng: SplitMix64(seed),
            extra_rng: SplitMix64(seed ^ 0xD15C_D15C_D15C_D15C),
            power_domain: None,
            faults,
            crashable: None,
            partition: None,
            step: 0,
            trace: Vec::new(),
            recorded: recording.then(Vec::new),
            stats: Stats::default(),
        };
        let ids: Vec<NodeId> = sim.configs.keys().copied().collect();
        for id in ids {
            sim.start(id);
        }
        sim
    }

    /// The node states, `None` for crashed nodes, with their configurations.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &N::Config, Option<&N>)> {
        self.nodes.iter().map(|(id, node)| (*id, &self.configs[id], node.as_ref()))
    }

    /// What node `id` persisted (the merge of its `Persist` outputs, less what the disk-loss
    /// fault took), if it ever persisted anything.
    pub fn disk(&self, id: NodeId) -> Option<&N::Durable> {
        self.durable.get(&id)
    }

    /// What every node persisted, crashed or not.
    pub fn disks(&self) -> impl Iterator<Item = &N::Durable> + Clone {
        self.durable.values()
    }

    /// Every node's configuration and state (`None` while crashed): the shape invariant
    /// functions take.
    pub fn states(&self) -> Vec<(&N::Config, Option<&N>)> {
        self.nodes().map(|(_, cfg, node)| (cfg, node)).collect()
    }

    /// The state of node `id`, if it is live.
    pub fn node(&self, id: NodeId) -> Option<&N> {
        self.nodes.get(&id)?.as_ref()
    }

    /// Everything that happened so far, in order.
    pub fn trace(&self) -> &[Event<N>] {
        &self.trace
    }

    /// Counts of what happened so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The calls a [recording](Sim::recording) simulator made, in order (none otherwise).
    pub fn recorded(&self) -> &[Recorded<N>] {
        self.recorded.as_deref().unwrap_or_default()
    }

    /// Replaces the fault schedule (for example with [`Faults::NONE`] to heal).
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// The fault schedule in force.
    pub fn faults(&self) -> Faults {
        self.faults
    }

    /// Timed mode (see the [module docs](self)): from now on, each step takes the earliest
    /// event — a message arriving (each takes a random delay, see [`Sim::set_delay`]; none by
    /// default, so every message in flight arrives before any timer fires) or a timer reaching
    /// its deadline — and the simulated clock moves to it. Messages and timers already pending
    /// count from the moment timed mode starts.
    pub fn set_timed(&mut self, timed: bool) {
        if timed && !self.timed {
            let now = self.now;
            self.deadlines.values_mut().for_each(|deadline| *deadline = (*deadline).max(now));
            self.in_flight.iter_mut().for_each(|m| m.at = m.at.max(now));
        }
        self.timed = timed;
    }

    /// In timed mode, each message sent from now on takes a delay drawn uniformly from
    /// `min..=max` to arrive (so messages are reordered whenever their delays overlap).
    pub fn set_delay(&mut self, min: Duration, max: Duration) {
        assert!(min <= max, "the least delay exceeds the most");
        self.delay = (min, max);
    }

    /// When a message sent now arrives.
    fn arrival(&mut self) -> Duration {
        let (min, max) = self.delay;
        let spread = (max - min).as_micros() as usize;
        // No draw without a spread: untimed runs keep the random sequence they always had.
        if spread == 0 {
            return min;
        }
        min + Duration::from_micros(self.rng.below(spread + 1) as u64)
    }

    /// Limits crash faults to the given nodes (say, clients but not replicas whose protocol
    /// assumes durable state).
    pub fn set_crashable(&mut self, ids: impl IntoIterator<Item = NodeId>) {
        self.crashable = Some(ids.into_iter().collect());
    }

    /// Limits power failures to the given nodes (say, every storage node, the cluster, but not
    /// the clients judging it).
    pub fn set_power_domain(&mut self, ids: impl IntoIterator<Item = NodeId>) {
        self.power_domain = Some(ids.into_iter().collect());
    }

    /// Partitions the network: from now on, every message between a node of `side` and a node
    /// outside it is lost, until [`Sim::heal`].
    pub fn partition(&mut self, side: impl IntoIterator<Item = NodeId>) {
        self.partition = Some(side.into_iter().collect());
    }

    /// Ends a partition.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    fn partitioned(&self, from: NodeId, to: NodeId) -> bool {
        self.partition.as_ref().is_some_and(|side| side.contains(&from) != side.contains(&to))
    }

    /// The simulated clock (it moves only in timed mode).
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Whether `timer` of node `id` is armed.
    pub fn is_armed(&self, id: NodeId, timer: &N::Timer) -> bool {
        self.timers.contains(&(id, timer.clone()))
    }

    /// How many messages are in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The messages in flight.
    pub fn messages(&self) -> impl Iterator<Item = &N::Msg> {
        self.in_flight.iter().map(|m| &m.msg)
    }

    /// Whether no message is in flight and no timer is armed.
    pub fn is_quiet(&self) -> bool {
        self.in_flight.is_empty() && self.timers.is_empty()
    }

    /// Puts a message in flight as if `from` had sent it, to inject outside input.
    pub fn inject(&mut self, from: NodeId, to: NodeId, msg: N::Msg) {
        let at = self.now + self.arrival();
        self.in_flight.push(InFlight { from, to, msg, at });
    }

    /// Starts a node that was not there before (a client arriving late, say), running
    /// `init`. Panics if `id` is already a node: restart crashed nodes instead.
    pub fn add_node(&mut self, id: NodeId, cfg: N::Config) {
        assert!(!self.configs.contains_key(&id), "{id} is already a node");
        self.configs.insert(id, cfg);
        // Messages sent to the id before it existed were never meant for this node.
        self.addressed.remove(&id);
        self.start(id);
    }

    /// Restarts every crashed node.
    pub fn restart_all(&mut self) {
        let crashed: Vec<NodeId> =
            self.nodes.iter().filter(|(_, n)| n.is_none()).map(|(id, _)| *id).collect();
        for id in crashed {
            self.restart(id);
        }
    }

    /// The live nodes among `set` (all nodes when `None`).
    fn live_in(&self, set: Option<&BTreeSet<NodeId>>) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(id, n)| n.is_some() && set.is_none_or(|s| s.contains(id)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Takes one step. Returns `Ok(false)` when there was nothing to do.
    pub fn step(&mut self) -> Result<bool, SimError> {
        self.step += 1;
        if self.extra_rng.chance(self.faults.power_failure_per_mille) {
            let live = self.live_in(self.power_domain.as_ref());
            if !live.is_empty() {
                for id in live {
                    self.crash(id);
                }
                self.stats.power_failures += 1;
                return Ok(true);
            }
        }
        if self.rng.chance(self.faults.crash_per_mille) {
            let live = self.live_in(self.crashable.as_ref());
            if !live.is_empty() {
                let id = live[self.rng.below(live.len())];
                self.crash(id);
                return Ok(true);
            }
        }
        if self.rng.chance(self.faults.restart_per_mille) {
            let crashed: Vec<NodeId> =
                self.nodes.iter().filter(|(_, n)| n.is_none()).map(|(id, _)| *id).collect();
            if !crashed.is_empty() {
                let id = crashed[self.rng.below(crashed.len())];
                self.restart(id);
                return Ok(true);
            }
        }
        let choices = self.in_flight.len() + self.timers.len();
        if choices == 0 {
            return Ok(false);
        }
        if self.timed {
            let message = (0..self.in_flight.len()).min_by_key(|&i| (self.in_flight[i].at, i));
            let timer = self
                .timers
                .iter()
                .map(|key| (self.deadlines.get(key).copied().unwrap_or(self.now), key))
                .min()
                .map(|(deadline, key)| (deadline, key.clone()));
            match (message, timer) {
                (Some(i), timer)
                    if timer.as_ref().is_none_or(|(d, _)| self.in_flight[i].at <= *d) =>
                {
                    self.now = self.now.max(self.in_flight[i].at);
                    self.deliver(i)?;
                }
                (_, Some((deadline, (node, timer)))) => {
                    self.now = self.now.max(deadline);
                    self.fire(node, timer)?;
                }
                (_, None) => unreachable!("there is a message or a timer"),
            }
            return Ok(true);
        }
        let pick = self.rng.below(choices);
        if pick < self.in_flight.len() {
            self.deliver(pick)?;
        } else {
            let (node, timer) =
                self.timers.iter().nth(pick - self.in_flight.len()).cloned().expect("in range");
            self.fire(node, timer)?;
        }
        Ok(true)
    }

    fn fire(&mut self, node: NodeId, timer: N::Timer) -> Result<(), SimError> {
        self.timers.remove(&(node, timer.clone()));
        self.deadlines.remove(&(node, timer.clone()));
        self.stats.fired += 1;
        self.trace.push(Event::Fire { node, timer: timer.clone() });
        self.apply(node, Input::Timeout(timer))
    }

    /// Takes up to `steps` steps, stopping early when there is nothing to do.
    pub fn run(&mut self, steps: u64) -> Result<(), SimError> {
        for _ in 0..steps {
            if !self.step()? {
                break;
            }
        }
        Ok(())
    }

    /// The liveness phase: heals the network, restarts crashed nodes, and steps until quiet.
    pub fn run_until_quiet(&mut self, max_steps: u64) -> Result<(), SimError> {
        self.set_faults(Faults::NONE);
        self.heal();
        self.restart_all();
        for _ in 0..max_steps {
            if !self.step()? {
                return Ok(());
            }
        }
        if self.is_quiet() { Ok(()) } else { Err(SimError::NotQuiet { steps: max_steps }) }
    }

    /// The liveness phase for protocols with periodic timers (leases, renewals), which are
    /// never quiet: heals the network, restarts crashed nodes, and steps until no message is in
    /// flight and `settled` holds.
    pub fn run_until_settled(
        &mut self,
        max_steps: u64,
        settled: impl Fn(&Self) -> bool,
    ) -> Result<(), SimError> {
        self.set_faults(Faults::NONE);
        self.heal();
        self.restart_all();
        for _ in 0..max_steps {
            if self.in_flight.is_empty() && settled(self) {
                return Ok(());
            }
            self.step()?;
        }
        Err(SimError::NotQuiet { steps: max_steps })
    }

    fn deliver(&mut self, index: usize) -> Result<(), SimError> {
        let duplicated = self.rng.chance(self.faults.duplicate_per_mille);
        let dropped = self.rng.chance(self.faults.drop_per_mille);
        let InFlight { from, to, msg, .. } = if duplicated {
            // The copy left in flight arrives again later.
            let again = self.now + self.arrival();
            self.in_flight[index].at = again;
            self.in_flight[index].clone()
        } else {
            self.in_flight.swap_remove(index)
        };
        if self.faults.replay_per_mille > 0 {
            let addressed = self.addressed.entry(to).or_default();
            if addressed.len() == REPLAY_WINDOW {
                addressed.pop_front();
            }
            addressed.push_back(InFlight { from, to, msg: msg.clone(), at: self.now });
        }
        // With `duplicated`, one copy stays in flight whatever happens to this one.
        let recipient_up = matches!(self.nodes.get(&to), Some(Some(_)));
        let cut = self.partitioned(from, to);
        if dropped || !recipient_up || cut {
            if !recipient_up {
                self.stats.undeliverable += 1;
            } else if cut {
                self.stats.partitioned += 1;
            } else {
                self.stats.dropped += 1;
            }
            self.trace.push(Event::Drop { from, to, msg });
            return Ok(());
        }
        self.stats.delivered += 1;
        self.stats.duplicated += u64::from(duplicated);
        self.trace.push(Event::Deliver { from, to, msg: msg.clone(), duplicated });
        self.apply(to, Input::Receive { from, msg })
    }

    fn apply(&mut self, id: NodeId, input: Input<N>) -> Result<(), SimError> {
        let cfg = &self.configs[&id];
        let Some(Some(node)) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let mut out = Outbox::new();
        let call = self.recorded.is_some().then(|| Call::Handle(input.clone()));
        let checked = handle_checked(node, cfg, input, &mut out);
        self.record(id, call, &out);
        self.execute(id, out);
        checked.map_err(|violation| SimError::Violation { step: self.step, node: id, violation })
    }

    fn execute(&mut self, id: NodeId, out: Outbox<N>) {
        for output in out {
            match output {
                Output::Send { to, msg } => {
                    let at = self.now + self.arrival();
                    self.in_flight.push(InFlight { from: id, to, msg, at });
                }
                Output::SetTimer { timer, after } => {
                    self.deadlines.insert((id, timer.clone()), self.now + after);
                    self.timers.insert((id, timer));
                }
                Output::CancelTimer(timer) => {
                    self.deadlines.remove(&(id, timer.clone()));
                    self.timers.remove(&(id, timer));
                }
                Output::Persist(delta) => self.durable.entry(id).or_default().merge_delta(delta),
                Output::Ignored { .. } => self.stats.ignored += 1,
            }
        }
    }

    fn start(&mut self, id: NodeId) {
        let mut out = Outbox::new();
        let durable = self.durable.get(&id).cloned().unwrap_or_default();
        let node = N::init(&self.configs[&id], &durable, &mut out);
        self.nodes.insert(id, Some(node));
        let call = self.recorded.is_some().then(|| Call::Init(durable));
        self.record(id, call, &out);
        self.execute(id, out);
    }

    fn record(&mut self, node: NodeId, call: Option<Call<N>>, out: &Outbox<N>) {
        if let (Some(recorded), Some(call)) = (self.recorded.as_mut(), call) {
            recorded.push(Recorded { node, call, outputs: out.as_slice().to_vec() });
        }
    }

    fn crash(&mut self, id: NodeId) {
        self.nodes.insert(id, None);
        self.timers.retain(|(node, _)| *node != id);
        self.deadlines.retain(|(node, _), _| *node != id);
        self.stats.crashes += 1;
        self.trace.push(Event::Crash(id));
    }

    fn restart(&mut self, id: NodeId) {
        self.stats.restarts += 1;
        self.trace.push(Event::Restart(id));
        if self.extra_rng.chance(self.faults.disk_loss_per_mille) {
            if let Some(disk) = self.durable.get_mut(&id) {
                disk.lose_data();
            }
            self.stats.disks_lost += 1;
        }
        self.start(id);
        // What the previous incarnation was sent may still arrive (the replay fault).
        let addressed = self.addressed.remove(&id).unwrap_or_default();
        if self.faults.replay_per_mille == 0 {
            return;
        }
        for mut ghost in addressed {
            if self.rng.chance(self.faults.replay_per_mille) {
                ghost.at = self.now + self.arrival();
                self.in_flight.push(ghost);
                self.stats.replayed += 1;
            }
        }
    }
}
