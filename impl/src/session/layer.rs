//! The session layer of a worker: what sessions see of the worker's cache.
//!
//! It keeps, beside the cache, the causal cut (versions whose dependencies the cut covers),
//! the versions pinned for each session, and the functions waiting for their triggers or
//! running. A function runs once every predecessor's trigger arrived: the layer gathers the
//! keys it declared — from the cache (its latest value, or the cut at the causal levels), from
//! this worker's pins, or from the worker that pinned them upstream — checks them against the
//! session's snapshot, pins what a downstream function may read, and hands them to the function
//! ([`Effect::Invoke`]). While it runs, the function may read more (undeclared keys, at LWW
//! only) and write: plain writes at LWW and DSRR, causal writes at SK, MK and DSC, whose clock
//! and dependencies the layer derives from what the session read. When it finishes, the layer
//! triggers its successors, or reports the result from the sink.
//!
//! The layer is not a node: the worker ([`crate::worker`]) drives it with session messages,
//! timers, its cache's entries and its executors' requests, and carries out the
//! [`Effect`]s it asks for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;

use super::{
    FnId, Level, Meta, Mutant, Pin, Pinned, Read, SessionId, SessionInfo, SessionMsg, SessionTimer,
    VersionId, clock, covers, dependencies,
};
use crate::base::{Key, seeded_defects};
use crate::cache::Entry;
use crate::kvs::{Durability, PutError};
use crate::lattice::{Dependencies, LatticeValue, MultiKeyCausal, VectorClock, WriterId};
use crate::node::NodeId;

/// A function's run in a session: the session and the function.
pub type CallId = (SessionId, FnId);

/// The cache's entries, as the layer reads them.
pub type Entries = BTreeMap<Key, Entry>;

/// How a worker's session layer is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerConfig {
    /// The worker.
    pub id: NodeId,
    /// The scheduler it reports to.
    pub scheduler: NodeId,
    /// The `Retry` period: unanswered holds and remote reads are re-sent, and functions waiting
    /// for triggers age (see `max_wait`).
    pub retry: Duration,
    /// `Retry` ticks a function waits for its other predecessors' triggers before it aborts
    /// its session (one of them was lost, or the session already ended).
    pub max_wait: u32,
    /// Pins unused for two of these periods expire (a backstop for a scheduler that never
    /// releases them), as do tombstones and records of functions run; `None`: they live until
    /// released. Must exceed the sessions' deadline. Default 30 s.
    pub pin_lease: Option<Duration>,
    /// How many replicas hold a function's write before the function is told it is done.
    pub durability: Durability,
    /// The most functions waiting for triggers or running at once; a trigger beyond it aborts
    /// its session.
    pub max_functions: u32,
    /// The seeded defect it carries, if any.
    #[cfg(feature = "mutants")]
    #[cfg_attr(feature = "serde", serde(skip))]
    pub mutant: Option<Mutant>,
}

impl LayerConfig {
    /// A correct layer for worker `id` reporting to `scheduler`, with default periods.
    pub fn new(id: NodeId, scheduler: NodeId) -> Self {
        Self {
            id,
            scheduler,
            retry: Duration::from_millis(200),
            max_wait: 10,
            pin_lease: Some(Duration::from_secs(30)),
            durability: Durability::Majority,
            max_functions: 10_000,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }
}

seeded_defects!(LayerConfig, Mutant);

/// What a function writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Write {
    /// A value as it is (at LWW and DSRR): merged into the key.
    Value(LatticeValue),
    /// A payload for a causal write (at SK, MK and DSC): the layer makes it a multi-key causal
    /// value whose clock follows everything the session read of the key, depending on what the
    /// session read of the others.
    Causal(Bytes),
}

/// Why a function's read or write was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum WriteError {
    /// A read of a key the function did not declare, at a level that guarantees only
    /// declared reads. Definite.
    #[error("{key:?} is not among the keys the function declared (at {level})")]
    Undeclared {
        /// The key.
        key: Key,
        /// The session's level.
        level: Level,
    },
    /// A plain value at a causal level, or a causal payload at LWW or DSRR. Definite.
    #[error("a {} write at {level}", if *causal { "causal" } else { "plain" })]
    WrongKind {
        /// Whether the write was causal.
        causal: bool,
        /// The session's level.
        level: Level,
    },
    /// The KVS refused the write. Definite.
    #[error("rejected: {0}")]
    Rejected(PutError),
    /// No answer came from the KVS: the write may or may not have happened.
    #[error("no definite answer; the write may or may not have happened")]
    Indefinite,
}

/// What the layer asks its worker to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send a session message.
    Send {
        /// The recipient.
        to: NodeId,
        /// The message.
        msg: SessionMsg,
    },
    /// Arm a session timer.
    SetTimer {
        /// Which.
        timer: SessionTimer,
        /// After how long.
        after: Duration,
    },
    /// Make the cache hold `key` (a read waits for it).
    Want(Key),
    /// Run a function: its declared reads are gathered.
    Invoke {
        /// The run.
        call: CallId,
        /// The function's name.
        function: String,
        /// The session's consistency level (which kind of write it must make).
        level: Level,
        /// Its inputs: its predecessors' outputs, or the call's arguments.
        args: Vec<Bytes>,
        /// The keys it declared, as the session reads them.
        reads: BTreeMap<Key, Option<LatticeValue>>,
    },
    /// Answer a running function's read `req`.
    Got {
        /// The run.
        call: CallId,
        /// The function's request number.
        req: u32,
        /// The value (`None`: the key has none), or why not.
        value: Result<Option<LatticeValue>, WriteError>,
    },
    /// Write `value` to `key` through the cache at `durability`; report with
    /// [`SessionLayer::written`].
    Write {
        /// The run.
        call: CallId,
        /// The function's request number.
        req: u32,
        /// The key.
        key: Key,
        /// The value, as the layer stamped it.
        value: LatticeValue,
        /// How many replicas must hold it.
        durability: Durability,
    },
    /// Answer a running function's write `req`.
    Wrote {
        /// The run.
        call: CallId,
        /// The function's request number.
        req: u32,
        /// Whether it is held by the KVS.
        result: Result<(), WriteError>,
    },
    /// The run's session ended: the function's executor may stop it.
    Cancel(CallId),
    /// An input was stale or unexpected.
    Ignore(&'static str),
}

/// The versions a worker pinned for one session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pins {
    /// Key → the pinned value (`None`: the key had no value).
    pub values: BTreeMap<Key, Option<LatticeValue>>,
    /// The session that pinned them last, and its client.
    pub session: Option<(SessionId, NodeId)>,
    /// Whether the scheduler acknowledged that it will release them.
    held: bool,
    /// `Lease` ticks since they were last used.
    idle: u8,
}

/// How a function gets one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Plan {
    /// From this worker's cache when the function starts (the latest value, or the causal
    /// cut). `checked`: whether it must agree with the session's snapshot (causal levels).
    Local { checked: bool },
    /// Already read: from this worker's pins, or a local copy of exactly the pinned version.
    Have(Option<LatticeValue>),
    /// From the worker that pinned it; waiting for its answer.
    Remote(Pin),
}

/// A function waiting for its other predecessors' triggers: what the session runs, the
/// metadata and output each predecessor sent, and the `Retry` ticks waited.
type Waiting = (SessionInfo, BTreeMap<FnId, (Meta, Vec<Bytes>)>, u32);

/// A function gathering its reads, or running.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Exec {
    info: SessionInfo,
    meta: Meta,
    args: Vec<Bytes>,
    /// While gathering: where each declared key comes from. Empty once invoked.
    plan: BTreeMap<Key, Plan>,
    /// Once invoked: what it was given and what it read since.
    reads: Option<BTreeMap<Key, Option<LatticeValue>>>,
    /// Runtime reads of undeclared keys waiting for the cache (LWW): request → key.
    gets: BTreeMap<u32, Key>,
    /// Writes waiting for the KVS: request → (key, value).
    puts: BTreeMap<u32, (Key, LatticeValue)>,
    /// Writes the KVS holds.
    writes: Vec<(Key, LatticeValue)>,
}

/// A worker's session layer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionLayer {
    /// The worker's incarnation: pins name it, and a restarted worker has lost them.
    incarnation: u32,
    /// Causal writes made in this incarnation: with the incarnation, a writer's clock entry
    /// that never repeats.
    writes_made: u64,
    /// The causal cut: versions whose dependencies are all in the cut too.
    cut: BTreeMap<Key, Option<LatticeValue>>,
    /// Triggers received for functions still missing some predecessor's.
    waiting: BTreeMap<CallId, Waiting>,
    /// Functions gathering their reads, or running.
    running: BTreeMap<CallId, Exec>,
    /// Pins by session (by client, in a defective worker).
    pins: BTreeMap<SessionId, Pins>,
    /// Functions run here, with the `Lease` ticks since: a duplicate trigger is ignored.
    /// Forgotten when the session is released here, or after two ticks with a pin lease
    /// (without one, a worker that pins nothing for a session keeps these for ever).
    ran: BTreeMap<CallId, u8>,
    /// Sessions released here, with the `Lease` ticks since: a late trigger of one is
    /// ignored rather than pinning again. Kept for two ticks with a pin lease, else for ever.
    released: BTreeMap<SessionId, u8>,
}

/// The effects of one input, in order.
pub type Effects = Vec<Effect>;

impl SessionLayer {
    /// A fresh layer for a worker in its `incarnation`: nothing pinned, nothing running.
    pub fn new(incarnation: u32) -> Self {
        Self {
            incarnation,
            writes_made: 0,
            cut: BTreeMap::new(),
            waiting: BTreeMap::new(),
            running: BTreeMap::new(),
            pins: BTreeMap::new(),
            ran: BTreeMap::new(),
            released: BTreeMap::new(),
        }
    }

    /// The worker's incarnation.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The version of `key` this worker would serve to `session`, if it pinned one.
    pub fn pinned(
        &self,
        cfg: &LayerConfig,
        session: SessionId,
        client: NodeId,
        key: &str,
    ) -> Option<&Option<LatticeValue>> {
        self.pins.get(&pin_key(cfg, session, client))?.values.get(key)
    }

    /// Every pin, by session.
    pub fn pins(&self) -> &BTreeMap<SessionId, Pins> {
        &self.pins
    }

    /// The causal cut.
    pub fn cut(&self) -> &BTreeMap<Key, Option<LatticeValue>> {
        &self.cut
    }

    /// The metadata of every trigger this worker holds for functions not yet finished: what
    /// its running and waiting functions may still read.
    pub fn held_metas(&self) -> impl Iterator<Item = (SessionId, &SessionInfo, &Meta)> {
        let running = self.running.iter().map(|((s, _), e)| (*s, &e.info, &e.meta));
        let waiting = self.waiting.iter().flat_map(|((s, _), (info, got, _))| {
            got.values().map(move |(meta, _)| (*s, info, meta))
        });
        running.chain(waiting)
    }

    /// Whether nothing is in progress: no function waiting or running, every pin
    /// acknowledged by the scheduler.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty() && self.pins.values().all(|p| p.held)
    }

    /// Handles a session message.
    pub fn receive(
        &mut self,
        cfg: &LayerConfig,
        from: NodeId,
        msg: SessionMsg,
        cache: &Entries,
        fx: &mut Effects,
    ) {
        let was_idle = self.is_idle();
        match msg {
            SessionMsg::Trigger { session, info, function, from: pred, meta, args } => {
                self.trigger(cfg, (session, function), info, pred, meta, args, cache, fx);
            }
            SessionMsg::Fetch { session, client, key, incarnation } => {
                let slot = pin_key(cfg, session, client);
                let pinned = match self.pins.get_mut(&slot) {
                    Some(pins) if incarnation == self.incarnation => {
                        pins.idle = 0;
                        pins.values.get(&key).cloned()
                    }
                    _ => None,
                };
                fx.push(Effect::Send {
                    to: from,
                    msg: SessionMsg::Fetched { session, key, pinned: Pinned::from_option(pinned) },
                });
            }
            SessionMsg::Fetched { session, key, pinned } => {
                self.fetched(cfg, session, key, pinned.into_option(), cache, fx);
            }
            SessionMsg::HoldOk { session, incarnation } => {
                if incarnation != self.incarnation && !cfg.has(Mutant::StaleHoldOk) {
                    return fx
                        .push(Effect::Ignore("a hold acknowledged to an earlier incarnation"));
                }
                for pins in self.pins.values_mut() {
                    if pins.session.is_some_and(|(s, _)| s == session) {
                        pins.held = true;
                    }
                }
            }
            SessionMsg::Release { session, client } => self.release(cfg, from, session, client, fx),
            _ => fx.push(Effect::Ignore("a session message a worker does not expect")),
        }
        self.arm_retry_if_started(cfg, was_idle, fx);
    }

    /// A function of `call` waits for a message on this worker: the scheduler is to count the
    /// worker among the session's holders (as for a pin, with `Hold`, re-sent on `Retry` until
    /// acknowledged), so that the session's end releases it here and stops the function — an
    /// abort above all, which a lost message may be the cause of. A worker that holds pins of
    /// the session is a holder already (or announces itself so on `Retry`).
    pub fn hold_while_waiting(&mut self, cfg: &LayerConfig, call: CallId, fx: &mut Effects) {
        let Some(client) = self.info(call).map(|info| info.client) else { return };
        let session = call.0;
        let slot = pin_key(cfg, session, client);
        if self.pins.contains_key(&slot) {
            return;
        }
        self.arm_lease(cfg, fx);
        self.pins.insert(slot, Pins { session: Some((session, client)), ..Pins::default() });
        let msg = SessionMsg::Hold { session, client, incarnation: self.incarnation };
        fx.push(Effect::Send { to: cfg.scheduler, msg });
    }

    /// Handles a session timer.
    pub fn timeout(
        &mut self,
        cfg: &LayerConfig,
        timer: SessionTimer,
        cache: &Entries,
        fx: &mut Effects,
    ) {
        match timer {
            SessionTimer::Retry => self.retry(cfg, cache, fx),
            SessionTimer::Lease => self.lease(cfg, fx),
            SessionTimer::Deadline | SessionTimer::Release => {
                fx.push(Effect::Ignore("a scheduler's timer"));
            }
        }
    }

    /// The cache's entries may have changed: moves what it can into the causal cut and goes on
    /// with the functions that were waiting for the cache.
    pub fn cache_changed(&mut self, cfg: &LayerConfig, cache: &Entries, fx: &mut Effects) {
        self.promote(cfg, cache, fx);
        self.answer_gets(cache, fx);
        self.progress(cfg, cache, fx);
    }

    /// A running function reads `key` (request `req`).
    pub fn get(
        &mut self,
        cfg: &LayerConfig,
        call: CallId,
        req: u32,
        key: Key,
        cache: &Entries,
        fx: &mut Effects,
    ) {
        let _ = cfg;
        let Some(exec) = self.running.get_mut(&call) else {
            return fx.push(Effect::Ignore("a read by a function not running"));
        };
        let Some(reads) = &mut exec.reads else {
            return fx.push(Effect::Ignore("a read by a function not started"));
        };
        // The function already has it: a repeated read returns the same version.
        if let Some(value) = reads.get(&key) {
            return fx.push(Effect::Got { call, req, value: Ok(value.clone()) });
        }
        let level = exec.info.level;
        if level != Level::Lww {
            let error = WriteError::Undeclared { key, level };
            return fx.push(Effect::Got { call, req, value: Err(error) });
        }
        match cache.get(&key) {
            Some(entry) => {
                let value = entry.value.clone();
                record_read(exec, call, key, value.clone());
                fx.push(Effect::Got { call, req, value: Ok(value) });
            }
            None => {
                exec.gets.insert(req, key.clone());
                fx.push(Effect::Want(key));
            }
        }
    }

    /// A running function writes `key` (request `req`).
    pub fn put(
        &mut self,
        cfg: &LayerConfig,
        call: CallId,
        req: u32,
        key: Key,
        write: Write,
        fx: &mut Effects,
    ) {
        let Some(exec) = self.running.get_mut(&call) else {
            return fx.push(Effect::Ignore("a write by a function not running"));
        };
        let Some(reads) = &exec.reads else {
            return fx.push(Effect::Ignore("a write by a function not started"));
        };
        let level = exec.info.level;
        let value = match (write, level) {
            (Write::Value(value), Level::Lww | Level::Dsrr) => value,
            (Write::Causal(payload), Level::SingleKey | Level::MultiKey | Level::Dsc) => {
                self.writes_made += 1;
                let writer =
                    (WriterId(cfg.id.0), (u64::from(self.incarnation) << 32) | self.writes_made);
                if cfg.has(Mutant::WriteWithoutDeps) {
                    causal_write(&Meta::default(), &BTreeMap::new(), &key, writer, payload)
                } else {
                    causal_write(&exec.meta, reads, &key, writer, payload)
                }
            }
            (write, level) => {
                let error =
                    WriteError::WrongKind { causal: matches!(write, Write::Causal(_)), level };
                return fx.push(Effect::Wrote { call, req, result: Err(error) });
            }
        };
        exec.puts.insert(req, (key.clone(), value.clone()));
        fx.push(Effect::Write { call, req, key, value, durability: cfg.durability });
    }

    /// The KVS answered a function's write.
    pub fn written(
        &mut self,
        call: CallId,
        req: u32,
        result: Result<(), WriteError>,
        fx: &mut Effects,
    ) {
        let Some(exec) = self.running.get_mut(&call) else {
            return fx.push(Effect::Ignore("a write of a function no longer running"));
        };
        let Some((key, value)) = exec.puts.remove(&req) else {
            return fx.push(Effect::Ignore("an answer to a write not in flight"));
        };
        if result.is_ok() {
            exec.writes.push((key, value));
        }
        fx.push(Effect::Wrote { call, req, result });
    }

    /// A function finished with `output`, or failed.
    pub fn finished(
        &mut self,
        cfg: &LayerConfig,
        call: CallId,
        result: Result<Bytes, String>,
        fx: &mut Effects,
    ) {
        let started = self.running.get(&call).is_some_and(|exec| exec.reads.is_some());
        if !started {
            return fx.push(Effect::Ignore("a function that is not running finished"));
        }
        let exec = self.running.remove(&call).expect("checked");
        match result {
            Ok(output) => self.trigger_next(cfg, call, exec, output, fx),
            Err(reason) => {
                self.abort(cfg, call.0, format!("function {} failed: {reason}", call.1), fx)
            }
        }
    }

    /// A trigger of function `id.1`: runs it once every predecessor's trigger is in.
    #[allow(clippy::too_many_arguments)] // The fields of one `Trigger`.
    fn trigger(
        &mut self,
        cfg: &LayerConfig,
        id: CallId,
        info: SessionInfo,
        pred: Option<FnId>,
        meta: Meta,
        args: Vec<Bytes>,
        cache: &Entries,
        fx: &mut Effects,
    ) {
        let (session, function) = id;
        if function as usize >= info.dag.len() {
            return fx.push(Effect::Ignore("a trigger of a function the DAG does not have"));
        }
        if self.ran.contains_key(&id) || self.running.contains_key(&id) {
            return fx.push(Effect::Ignore("a duplicate trigger"));
        }
        if self.released.contains_key(&session) {
            return fx.push(Effect::Ignore("a trigger of a released session"));
        }
        if !self.waiting.contains_key(&id)
            && self.waiting.len() + self.running.len() >= cfg.max_functions as usize
        {
            return self.abort(cfg, session, "the worker runs its maximum of functions".into(), fx);
        }
        let every_other: BTreeSet<FnId>;
        let preds = if cfg.has(Mutant::EveryFunctionPrecedes) {
            every_other = (0..info.dag.len() as FnId).filter(|&f| f != function).collect();
            &every_other
        } else {
            info.dag.preds(function)
        };
        let (meta, args) = match pred {
            None if preds.is_empty() => (meta, args),
            Some(pred) if preds.contains(&pred) => {
                let (_, got, _) =
                    self.waiting.entry(id).or_insert_with(|| (info.clone(), BTreeMap::new(), 0));
                got.insert(pred, (meta, args));
                if got.len() < preds.len() {
                    return;
                }
                let (_, got, _) = self.waiting.remove(&id).expect("just filled");
                let mut joined = Meta::default();
                let mut inputs = Vec::new();
                for (meta, args) in got.into_values() {
                    if let Err(key) = joined.join(meta, info.level) {
                        let reason = format!("upstream branches read different versions of {key}");
                        return self.abort(cfg, session, reason, fx);
                    }
                    inputs.extend(args);
                }
                (joined, inputs)
            }
            _ => {
                return fx.push(Effect::Ignore(
                    "a trigger from a function that does not precede this one",
                ));
            }
        };
        self.run(cfg, id, info, meta, args, cache, fx);
    }

    /// Starts gathering `id`'s reads: decides where each declared key comes from.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        cfg: &LayerConfig,
        id: CallId,
        info: SessionInfo,
        meta: Meta,
        args: Vec<Bytes>,
        cache: &Entries,
        fx: &mut Effects,
    ) {
        let (session, function) = id;
        self.arm_lease(cfg, fx);
        self.ran.insert(id, 0);
        let mut plan = BTreeMap::new();
        for key in &info.dag.function(function).reads {
            match self.plan(cfg, session, &info, &meta, key, cache) {
                Ok(step) => {
                    plan.insert(key.clone(), step);
                }
                Err(reason) => return self.abort(cfg, session, reason, fx),
            }
        }
        for (key, step) in &plan {
            match step {
                Plan::Remote(pin) => {
                    let msg = SessionMsg::Fetch {
                        session,
                        client: info.client,
                        key: key.clone(),
                        incarnation: pin.incarnation,
                    };
                    fx.push(Effect::Send { to: pin.cache, msg });
                }
                Plan::Local { .. } if !cache.contains_key(key) => {
                    fx.push(Effect::Want(key.clone()))
                }
                _ => {}
            }
        }
        let exec = Exec {
            info,
            meta,
            args,
            plan,
            reads: None,
            gets: BTreeMap::new(),
            puts: BTreeMap::new(),
            writes: Vec::new(),
        };
        self.running.insert(id, exec);
        self.progress(cfg, cache, fx);
    }

    /// Where `key` comes from for a function of `session` whose metadata is `meta`, or why the
    /// session must abort.
    fn plan(
        &self,
        cfg: &LayerConfig,
        session: SessionId,
        info: &SessionInfo,
        meta: &Meta,
        key: &Key,
        cache: &Entries,
    ) -> Result<Plan, String> {
        let level = info.level;
        let own = self.pins.get(&pin_key(cfg, session, info.client));
        let pin = meta.pins.get(key).filter(|pin| level.pins() && honours(cfg, pin));
        let own_pin = own.and_then(|pins| pins.values.get(key));
        Ok(match pin {
            // A sibling branch pinned the key here: read that, so the branches agree.
            None if matches!(level, Level::Dsrr | Level::Dsc) && own_pin.is_some() => {
                Plan::Have(own_pin.expect("matched").clone())
            }
            None => Plan::Local { checked: level == Level::Dsc && !meta.pins.contains_key(key) },
            Some(pin) if pin.cache == cfg.id && pin.incarnation == self.incarnation => {
                match own_pin {
                    Some(value) if matches_pin(level, pin, value) => Plan::Have(value.clone()),
                    _ => return Err(format!("this worker's pin of {key} is gone or moved")),
                }
            }
            Some(pin) => match self.local(level, key, cache) {
                Some(value) if VersionId::of(value) == pin.version => Plan::Have(value.clone()),
                Some(value)
                    if level == Level::SingleKey && pin.version.le(&VersionId::of(value)) =>
                {
                    Plan::Local { checked: false }
                }
                _ => Plan::Remote(pin.clone()),
            },
        })
    }

    /// This worker's value of `key` for reads at `level`, if it has one.
    fn local<'a>(
        &'a self,
        level: Level,
        key: &str,
        cache: &'a Entries,
    ) -> Option<&'a Option<LatticeValue>> {
        if level.reads_cut() { self.cut.get(key) } else { cache.get(key).map(|entry| &entry.value) }
    }

    fn fetched(
        &mut self,
        cfg: &LayerConfig,
        session: SessionId,
        key: Key,
        pinned: Option<Option<LatticeValue>>,
        cache: &Entries,
        fx: &mut Effects,
    ) {
        let waiting: Vec<CallId> = self
            .running
            .iter()
            .filter(|((s, _), exec)| {
                *s == session && matches!(exec.plan.get(&key), Some(Plan::Remote(_)))
            })
            .map(|(id, _)| *id)
            .collect();
        if waiting.is_empty() {
            return fx.push(Effect::Ignore("a pinned version nobody waits for"));
        }
        for id in waiting {
            // An abort below drops every running function of the session.
            let Some(exec) = self.running.get_mut(&id) else { continue };
            let Some(Plan::Remote(pin)) = exec.plan.get(&key) else { unreachable!("filtered") };
            match &pinned {
                None => {
                    return self.abort(
                        cfg,
                        session,
                        format!("the pinned version of {key} is gone"),
                        fx,
                    );
                }
                Some(value) if !matches_pin(exec.info.level, pin, value) => {
                    return self.abort(
                        cfg,
                        session,
                        format!("{key} is pinned at another version"),
                        fx,
                    );
                }
                Some(value) => {
                    exec.plan.insert(key.clone(), Plan::Have(value.clone()));
                }
            }
        }
        self.progress(cfg, cache, fx);
    }

    /// Ends `session` here (and tells the scheduler): its functions stop.
    fn abort(&mut self, cfg: &LayerConfig, session: SessionId, reason: String, fx: &mut Effects) {
        self.stop_session(session, fx);
        fx.push(Effect::Send { to: cfg.scheduler, msg: SessionMsg::Abort { session, reason } });
    }

    /// Drops every waiting and running function of `session`, cancelling the ones started.
    fn stop_session(&mut self, session: SessionId, fx: &mut Effects) {
        self.waiting.retain(|(s, _), _| *s != session);
        let stopped: Vec<CallId> =
            self.running.keys().filter(|(s, _)| *s == session).copied().collect();
        for id in stopped {
            if self.running.remove(&id).is_some_and(|exec| exec.reads.is_some()) {
                fx.push(Effect::Cancel(id));
            }
        }
    }

    /// Starts every gathering function whose reads are all available.
    fn progress(&mut self, cfg: &LayerConfig, cache: &Entries, fx: &mut Effects) {
        let ready: Vec<CallId> = self
            .running
            .iter()
            .filter(|(_, exec)| {
                exec.reads.is_none()
                    && exec.plan.iter().all(|(key, step)| match step {
                        Plan::Local { .. } => self.local(exec.info.level, key, cache).is_some(),
                        Plan::Have(_) => true,
                        Plan::Remote(_) => false,
                    })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            self.start(cfg, id, cache, fx);
        }
    }

    /// Reads `id`'s local keys, checks the read set against the session, pins what
    /// downstream functions may read, and hands the reads to the function.
    fn start(&mut self, cfg: &LayerConfig, id: CallId, cache: &Entries, fx: &mut Effects) {
        let (session, function) = id;
        let exec = self.running.get(&id).expect("ready functions are running");
        let level = exec.info.level;
        let mut reads: BTreeMap<Key, Option<LatticeValue>> = BTreeMap::new();
        let mut checked = BTreeSet::new();
        for (key, step) in &exec.plan {
            let value = match step {
                Plan::Have(value) => value.clone(),
                Plan::Local { checked: check } => {
                    if *check {
                        checked.insert(key.clone());
                    }
                    self.local(level, key, cache).cloned().expect("ready")
                }
                Plan::Remote(_) => unreachable!("ready functions wait for nothing"),
            };
            reads.insert(key.clone(), value);
        }
        let checks = !cfg.has(Mutant::ExposeBeforeDeps) && !cfg.has(Mutant::IgnoreFrontier);
        if checks && let Some(key) = conflict(&exec.meta, &reads, &checked) {
            let reason = format!("{key} in this cache conflicts with the session's snapshot");
            return self.abort(cfg, session, reason, fx);
        }
        let mut exec = self.running.remove(&id).expect("present");
        let meta = &mut exec.meta;
        meta.log.extend(reads.iter().map(|(key, value)| Read {
            function,
            key: key.clone(),
            value: value.clone(),
        }));
        meta.log.sort();
        for (key, value) in &reads {
            constrain(meta, key, value);
        }
        let pinned = self.pin_for_downstream(cfg, id, &exec.info, meta, &reads);
        if !pinned.is_empty() {
            self.keep_pins(cfg, session, exec.info.client, pinned, fx);
        }
        let name = exec.info.dag.function(function).name.clone();
        fx.push(Effect::Invoke {
            call: id,
            function: name,
            level: exec.info.level,
            args: exec.args.clone(),
            reads: reads.clone(),
        });
        exec.plan.clear();
        exec.reads = Some(reads);
        self.running.insert(id, exec);
    }

    /// What `id` pins for the functions after it: the versions it read of keys they may read
    /// and, at DSC, a causal snapshot of the other keys they may read. Updates `meta`.
    fn pin_for_downstream(
        &self,
        cfg: &LayerConfig,
        (_, function): CallId,
        info: &SessionInfo,
        meta: &mut Meta,
        reads: &BTreeMap<Key, Option<LatticeValue>>,
    ) -> Vec<(Key, Option<LatticeValue>)> {
        let level = info.level;
        let future = info.dag.future_reads(function);
        let mut pinned = Vec::new();
        if !level.pins() {
            return pinned;
        }
        let incarnation = self.incarnation;
        let mut pin = |meta: &mut Meta, key: &Key, value: &Option<LatticeValue>, read: bool| {
            constrain(meta, key, value);
            let version = VersionId::of(value);
            meta.pins.insert(key.clone(), Pin { cache: cfg.id, incarnation, version, read });
            pinned.push((key.clone(), value.clone()));
        };
        for (key, value) in reads {
            let same = meta.pins.get(key).is_some_and(|pin| pin.version == VersionId::of(value));
            if future.contains(key) && !same {
                pin(meta, key, value, true);
            }
        }
        if level == Level::Dsc {
            // A causal snapshot: the cut's versions of other keys downstream may read, where
            // they agree with everything the session pinned so far.
            for key in future {
                let Some(value) = self.cut.get(key) else { continue };
                if meta.pins.contains_key(key) {
                    continue;
                }
                if covers(value, &meta.required(key)) && agrees_with_session(meta, value) {
                    pin(meta, key, value, false);
                }
            }
        }
        pinned
    }

    /// Keeps `pinned` for `session`, and asks the scheduler to hold them.
    fn keep_pins(
        &mut self,
        cfg: &LayerConfig,
        session: SessionId,
        client: NodeId,
        pinned: Vec<(Key, Option<LatticeValue>)>,
        fx: &mut Effects,
    ) {
        self.arm_lease(cfg, fx);
        let slot = pin_key(cfg, session, client);
        let pins = self.pins.entry(slot).or_default();
        pins.idle = 0;
        pins.held = pins.held && pins.session == Some((session, client));
        pins.session = Some((session, client));
        pins.values.extend(pinned);
        if !pins.held {
            let incarnation = self.incarnation;
            let msg = SessionMsg::Hold { session, client, incarnation };
            fx.push(Effect::Send { to: cfg.scheduler, msg });
        }
    }

    /// `id` finished with `output`: triggers its successors, or reports the result.
    fn trigger_next(
        &mut self,
        cfg: &LayerConfig,
        id: CallId,
        exec: Exec,
        output: Bytes,
        fx: &mut Effects,
    ) {
        let (session, function) = id;
        let Exec { info, mut meta, writes, .. } = exec;
        meta.writes.extend(writes.into_iter().map(|(key, value)| Read {
            function,
            key,
            value: Some(value),
        }));
        meta.writes.sort();
        let next = &info.dag.function(function).next;
        if next.is_empty() {
            let SessionInfo { client, req, .. } = info;
            let Meta { log, writes, .. } = meta;
            let msg = SessionMsg::Result { session, client, req, output, log, writes };
            return fx.push(Effect::Send { to: cfg.scheduler, msg });
        }
        for &next in next {
            let to = info.placement[next as usize];
            let msg = SessionMsg::Trigger {
                session,
                info: info.clone(),
                function: next,
                from: Some(function),
                meta: meta.clone(),
                args: vec![output.clone()],
            };
            fx.push(Effect::Send { to, msg });
        }
        if cfg.has(Mutant::ReleaseBeforeSink) {
            self.pins.remove(&pin_key(cfg, session, info.client));
        }
    }

    fn release(
        &mut self,
        cfg: &LayerConfig,
        from: NodeId,
        session: SessionId,
        client: NodeId,
        fx: &mut Effects,
    ) {
        self.arm_lease(cfg, fx);
        if !cfg.has(Mutant::IgnoreRelease) {
            self.pins.remove(&pin_key(cfg, session, client));
        }
        self.ran.retain(|(s, _), _| *s != session);
        self.released.insert(session, 0);
        self.stop_session(session, fx);
        fx.push(Effect::Send { to: from, msg: SessionMsg::ReleaseOk { session } });
    }

    /// A `Retry` tick: re-sends unanswered holds and remote reads, asks the cache again for
    /// keys reads wait on, and ages waiting functions. (A session whose remote read is never
    /// answered is aborted by the scheduler's deadline.)
    fn retry(&mut self, cfg: &LayerConfig, cache: &Entries, fx: &mut Effects) {
        for pins in self.pins.values() {
            if let (false, Some((session, client))) = (pins.held, pins.session) {
                let incarnation = self.incarnation;
                let msg = SessionMsg::Hold { session, client, incarnation };
                fx.push(Effect::Send { to: cfg.scheduler, msg });
            }
        }
        let mut late = BTreeSet::new();
        for (&id, (_, _, ticks)) in &mut self.waiting {
            *ticks += 1;
            if *ticks > cfg.max_wait {
                late.insert(id);
            }
        }
        for (session, function) in late {
            if self.waiting.remove(&(session, function)).is_some() {
                let reason = format!("function {function} waited too long for its triggers");
                self.abort(cfg, session, reason, fx);
            }
        }
        for ((session, _), exec) in &self.running {
            for (key, step) in &exec.plan {
                match step {
                    Plan::Remote(pin) => {
                        let msg = SessionMsg::Fetch {
                            session: *session,
                            client: exec.info.client,
                            key: key.clone(),
                            incarnation: pin.incarnation,
                        };
                        fx.push(Effect::Send { to: pin.cache, msg });
                    }
                    Plan::Local { .. } if self.local(exec.info.level, key, cache).is_none() => {
                        fx.push(Effect::Want(key.clone()));
                    }
                    _ => {}
                }
            }
            for key in exec.gets.values() {
                fx.push(Effect::Want(key.clone()));
            }
        }
        if !self.is_idle() {
            fx.push(Effect::SetTimer { timer: SessionTimer::Retry, after: cfg.retry });
        }
    }

    /// A `Lease` tick: pins, tombstones and records of runs unused for two ticks expire.
    fn lease(&mut self, cfg: &LayerConfig, fx: &mut Effects) {
        self.pins.retain(|_, pins| pins.idle < 2);
        self.pins.values_mut().for_each(|pins| pins.idle += 1);
        self.released.retain(|_, idle| *idle < 2);
        self.released.values_mut().for_each(|idle| *idle += 1);
        self.ran.retain(|_, idle| *idle < 2);
        self.ran.values_mut().for_each(|idle| *idle += 1);
        if let (Some(lease), false) = (cfg.pin_lease, self.leased_is_empty()) {
            fx.push(Effect::SetTimer { timer: SessionTimer::Lease, after: lease });
        }
    }

    /// Whether the layer holds nothing the `Lease` timer ages: no pin, tombstone or record
    /// of a function run.
    fn leased_is_empty(&self) -> bool {
        self.pins.is_empty() && self.released.is_empty() && self.ran.is_empty()
    }

    /// Arms the `Lease` timer if the layer is about to hold its first pin, tombstone or
    /// record of a run (it stays armed while it holds any, and is never pushed back).
    fn arm_lease(&self, cfg: &LayerConfig, fx: &mut Effects) {
        if let (Some(lease), true) = (cfg.pin_lease, self.leased_is_empty()) {
            fx.push(Effect::SetTimer { timer: SessionTimer::Lease, after: lease });
        }
    }

    /// Arms the `Retry` timer when work starts: it runs while there is work to re-send, and is
    /// never pushed back.
    fn arm_retry_if_started(&self, cfg: &LayerConfig, was_idle: bool, fx: &mut Effects) {
        if was_idle && !self.is_idle() {
            fx.push(Effect::SetTimer { timer: SessionTimer::Retry, after: cfg.retry });
        }
    }

    /// Answers the runtime reads that waited for the cache.
    fn answer_gets(&mut self, cache: &Entries, fx: &mut Effects) {
        for (&call, exec) in &mut self.running {
            if exec.reads.is_none() {
                continue;
            }
            let arrived: Vec<u32> = exec
                .gets
                .iter()
                .filter(|(_, key)| cache.contains_key(*key))
                .map(|(req, _)| *req)
                .collect();
            for req in arrived {
                let key = exec.gets.remove(&req).expect("listed");
                let value = cache[&key].value.clone();
                record_read(exec, call, key, value.clone());
                fx.push(Effect::Got { call, req, value: Ok(value) });
            }
        }
    }

    /// Moves into the causal cut every cached version whose dependencies the cut (with the
    /// other versions moving in) covers, asks the cache for dependencies it lacks, and drops
    /// from the cut the keys the cache no longer holds.
    fn promote(&mut self, cfg: &LayerConfig, cache: &Entries, fx: &mut Effects) {
        self.cut.retain(|key, _| cache.contains_key(key));
        let latest = |key: &Key| &cache[key].value;
        let mut moving: BTreeSet<&Key> = cache
            .iter()
            .filter(|(key, entry)| self.cut.get(*key) != Some(&entry.value))
            .map(|(key, _)| key)
            .collect();
        let mut missing = BTreeSet::new();
        if !cfg.has(Mutant::ExposeBeforeDeps) {
            loop {
                let stuck: Vec<&Key> = moving
                    .iter()
                    .filter(|key| {
                        dependencies(latest(key)).iter().any(|(dep, clock)| {
                            let via_latest = moving.contains(dep) && covers(latest(dep), clock);
                            let via_cut = self.cut.get(dep).is_some_and(|v| covers(v, clock));
                            let ok = via_latest || via_cut;
                            if !ok && !cache.get(dep).is_some_and(|e| covers(&e.value, clock)) {
                                missing.insert(dep.clone());
                            }
                            !ok
                        })
                    })
                    .copied()
                    .collect();
                if stuck.is_empty() {
                    break;
                }
                for key in stuck {
                    moving.remove(key);
                }
            }
        }
        for key in moving {
            self.cut.insert(key.clone(), latest(key).clone());
        }
        fx.extend(missing.into_iter().map(Effect::Want));
    }

    /// Whether `id` is gathering its reads or running.
    pub fn is_running(&self, id: CallId) -> bool {
        self.running.contains_key(&id)
    }

    /// The session of function run `id`, while it gathers its reads or runs here.
    pub fn info(&self, id: CallId) -> Option<&SessionInfo> {
        self.running.get(&id).map(|exec| &exec.info)
    }
}

/// Records a runtime read of a running function: it reads the same version if it asks again,
/// and the session's log shows it.
fn record_read(exec: &mut Exec, (_, function): CallId, key: Key, value: Option<LatticeValue>) {
    exec.meta.log.push(Read { function, key: key.clone(), value: value.clone() });
    exec.meta.log.sort();
    exec.reads.get_or_insert_default().insert(key, value);
}

/// Whether this worker reads `pin` rather than its own cache (a defective one skips some).
fn honours(cfg: &LayerConfig, pin: &Pin) -> bool {
    if cfg.has(Mutant::SkipRemoteRead) && pin.cache != cfg.id {
        return false;
    }
    !cfg.has(Mutant::IgnoreFrontier) || pin.read
}

/// A causal write of `payload` to `key` by `writer` (its id and a clock entry it never used)
/// for a function whose session read `reads` with metadata `meta`: a multi-key causal
/// value (at every causal level, so a key keeps one lattice type whatever level writes it)
/// whose clock follows everything the session read of the key, and which depends on the
/// versions of every other key the session read (and their dependencies). SK promises only
/// the clock; MK and DSC the dependencies too.
fn causal_write(
    meta: &Meta,
    reads: &BTreeMap<Key, Option<LatticeValue>>,
    key: &Key,
    (writer, entry): (WriterId, u64),
    payload: Bytes,
) -> LatticeValue {
    let mut frontier = meta.clone();
    for (read, value) in reads {
        constrain(&mut frontier, read, value);
    }
    let mut clock = frontier.required(key);
    crate::lattice::Merge::merge(&mut clock, VectorClock::new([(writer, entry)]));
    let deps = frontier
        .requires
        .iter()
        .filter(|(dep, _)| *dep != key)
        .map(|(dep, entries)| (dep.clone(), VectorClock::new(entries.iter().copied())));
    LatticeValue::MultiKeyCausal(MultiKeyCausal::new(clock, Dependencies::new(deps), payload))
}

/// Whether a pinned `value` serves a read that metadata `pin` names: exactly that version,
/// or at SK (where a worker may re-pin a newer version) one at or above it.
fn matches_pin(level: Level, pin: &Pin, value: &Option<LatticeValue>) -> bool {
    let version = VersionId::of(value);
    version == pin.version || (level == Level::SingleKey && pin.version.le(&version))
}

/// Where pins of `session` are kept: by session (by client, in a defective worker).
fn pin_key(cfg: &LayerConfig, session: SessionId, client: NodeId) -> SessionId {
    if cfg.has(Mutant::PinByClient) { SessionId { scheduler: client, seq: 0 } } else { session }
}

/// Raises the session's frontier by a read or pinned value: later reads of its key must
/// cover it, and of its dependencies' keys their clocks.
fn constrain(meta: &mut Meta, key: &str, value: &Option<LatticeValue>) {
    if let Some(have) = value.as_ref().and_then(clock) {
        meta.require(key, &have);
    }
    for (dep, clock) in dependencies(value) {
        meta.require(&dep, &clock);
    }
}

/// Whether `value`'s dependencies are covered by what the session already read or pinned
/// of their keys: a version that depends on newer versions than the session's would tear its
/// causal cut.
fn agrees_with_session(meta: &Meta, value: &Option<LatticeValue>) -> bool {
    dependencies(value).iter().all(|(dep, clock)| {
        let pinned = meta
            .pins
            .get(dep)
            .is_none_or(|pin| VersionId::Clock(clock.iter().collect()).le(&pin.version));
        let read = meta.log.iter().filter(|r| &r.key == dep).all(|r| covers(&r.value, clock));
        pinned && read
    })
}

/// The first key read from this cache (`checked`) that breaks the session's causal snapshot:
/// below the frontier, depending on newer versions than the session read or pinned, or not
/// covering a dependency of another read of this function (or the other way round).
fn conflict(
    meta: &Meta,
    reads: &BTreeMap<Key, Option<LatticeValue>>,
    checked: &BTreeSet<Key>,
) -> Option<Key> {
    for key in checked {
        let value = &reads[key];
        if !covers(value, &meta.required(key)) || !agrees_with_session(meta, value) {
            return Some(key.clone());
        }
        for (other, other_value) in reads {
            let theirs = dependencies(other_value);
            let mine = dependencies(value);
            let broken = theirs.get(key).is_some_and(|c| !covers(value, c))
                || mine.get(other).is_some_and(|c| !covers(other_value, c));
            if broken {
                return Some(key.clone());
            }
        }
    }
    None
}
