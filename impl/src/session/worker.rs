//! A worker: one cache and its executor. The cache keeps each key's latest value and a causal
//! cut, pins versions per session and serves them to other workers; the executor runs a
//! function once all its triggers arrived, reading its keys as the session's level demands.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{
    Dag, FnId, Level, Meta, Mutant, Out, Pin, Read, SessionId, SessionInfo, SessionMsg,
    SessionNode, SessionTimer, VersionId, clock, covers, dependencies,
};
use crate::base::{Key, seeded_defects};
use crate::lattice::LatticeValue;
use crate::node::{Input, NodeId};

/// How a worker is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WorkerConfig {
    /// This worker.
    pub id: NodeId,
    /// The store it reads from.
    pub store: NodeId,
    /// The scheduler it reports to.
    pub scheduler: NodeId,
    /// The DAG its functions belong to.
    pub dag: Dag,
    /// The `Retry` period: unanswered holds, store reads and remote reads are re-sent, and
    /// functions waiting for triggers age (see `max_wait`).
    pub retry: Duration,
    /// `Retry` ticks a function waits for its other predecessors' triggers before it aborts
    /// its session (one of them was lost, or the session already ended).
    pub max_wait: u32,
    /// Pins unused for two of these periods expire (a backstop for a scheduler that never
    /// releases them), as do tombstones and records of functions run; `None`: they live until
    /// released. Must exceed the sessions' deadline. Default 30 s.
    pub pin_lease: Option<Duration>,
    /// What the cache holds when the worker first starts (the store must list it among the
    /// keys' subscribers); a restarted worker comes back empty.
    pub warm: BTreeMap<Key, LatticeValue>,
    /// The seeded defect it carries, if any.
    #[cfg(feature = "mutants")]
    #[cfg_attr(feature = "serde", serde(skip))]
    pub mutant: Option<Mutant>,
}

impl WorkerConfig {
    /// A correct worker `id` with default periods.
    pub fn new(id: NodeId, store: NodeId, scheduler: NodeId, dag: Dag) -> Self {
        Self {
            id,
            store,
            scheduler,
            dag,
            retry: Duration::from_millis(200),
            max_wait: 10,
            pin_lease: Some(Duration::from_secs(30)),
            warm: BTreeMap::new(),
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }
}

seeded_defects!(WorkerConfig, Mutant);

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
    /// From this cache when the function finishes (the latest value, or the causal cut).
    /// `checked`: whether it must agree with the session's snapshot (causal levels).
    Local { checked: bool },
    /// Already read: from this worker's pins, or a local copy of exactly the pinned version.
    Have(Option<LatticeValue>),
    /// From the worker that pinned it; waiting for its answer.
    Remote(Pin),
}

/// A function waiting for its other predecessors' triggers: what the session runs, the
/// metadata each predecessor sent, and the `Retry` ticks waited.
type Waiting = (SessionInfo, BTreeMap<FnId, Meta>, u32);

/// A function being run: its reads are being gathered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Exec {
    info: SessionInfo,
    meta: Meta,
    plan: BTreeMap<Key, Plan>,
}

/// A worker's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Worker {
    incarnation: u32,
    /// Each key's latest value: the join of everything the store sent.
    latest: BTreeMap<Key, Option<LatticeValue>>,
    /// The causal cut: versions whose dependencies are all in the cut too.
    cut: BTreeMap<Key, Option<LatticeValue>>,
    /// Keys asked of the store and not yet answered.
    getting: BTreeSet<Key>,
    /// Triggers received for functions still missing some predecessor's.
    /// Each with the `Retry` ticks it has waited: a trigger lost upstream would otherwise
    /// leave it waiting for ever, so after `max_wait` ticks it aborts its session.
    waiting: BTreeMap<(SessionId, FnId), Waiting>,
    running: BTreeMap<(SessionId, FnId), Exec>,
    /// Pins by session (by client, in a defective worker).
    pins: BTreeMap<SessionId, Pins>,
    /// Functions run here, with the `Lease` ticks since: a duplicate trigger is ignored.
    /// Forgotten when the session is released here, or after two ticks with a pin lease
    /// (without one, a worker that pins nothing for a session keeps these for ever).
    ran: BTreeMap<(SessionId, FnId), u8>,
    /// Sessions released here, with the `Lease` ticks since: a late trigger of one is
    /// ignored rather than pinning again. Kept for two ticks with a pin lease, else for ever.
    released: BTreeMap<SessionId, u8>,
}

impl Worker {
    pub(super) fn init(cfg: &WorkerConfig, persisted: u32, out: &mut Out) -> Self {
        let incarnation = persisted + 1;
        out.persist(incarnation);
        let warm: BTreeMap<Key, Option<LatticeValue>> = match persisted {
            0 => cfg.warm.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect(),
            _ => BTreeMap::new(),
        };
        // Warm values must be their own causal cut (as initial values, with no dependencies).
        Self {
            incarnation,
            latest: warm.clone(),
            cut: warm,
            getting: BTreeSet::new(),
            waiting: BTreeMap::new(),
            running: BTreeMap::new(),
            pins: BTreeMap::new(),
            ran: BTreeMap::new(),
            released: BTreeMap::new(),
        }
    }

    /// How many times this worker started.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The version of `key` this worker would serve to `session`, if it pinned one.
    pub fn pinned(
        &self,
        cfg: &WorkerConfig,
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
        let waiting = self
            .waiting
            .iter()
            .flat_map(|((s, _), (info, got, _))| got.values().map(move |meta| (*s, info, meta)));
        running.chain(waiting)
    }

    /// Whether nothing is in progress: no function waiting or running, no unanswered store
    /// read, every pin acknowledged by the scheduler.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty()
            && self.running.is_empty()
            && self.getting.is_empty()
            && self.pins.values().all(|p| p.held)
    }

    pub(super) fn handle(&mut self, cfg: &WorkerConfig, input: Input<SessionNode>, out: &mut Out) {
        let was_idle = self.is_idle();
        self.step(cfg, input, out);
        // The `Retry` timer runs while there is work to re-send; it is armed when work starts,
        // never pushed back.
        if was_idle && !self.is_idle() {
            out.set_timer(SessionTimer::Retry, cfg.retry);
        }
    }

    fn step(&mut self, cfg: &WorkerConfig, input: Input<SessionNode>, out: &mut Out) {
        match input {
            Input::Receive {
                msg: SessionMsg::Trigger { session, info, function, from, meta },
                ..
            } => self.trigger(cfg, session, info, function, from, meta, out),
            Input::Receive { msg: SessionMsg::Value { key, value }, .. } => {
                self.getting.remove(&key);
                let grew = match (self.latest.get_mut(&key), value) {
                    (Some(Some(have)), Some(value)) => have.merge(value).unwrap_or(false),
                    (Some(have @ None), Some(value)) => {
                        *have = Some(value);
                        true
                    }
                    (Some(_), None) => false,
                    (None, value) => {
                        self.latest.insert(key, value);
                        true
                    }
                };
                if !grew {
                    return out.ignore("a value the cache already has");
                }
                self.promote(cfg, out);
                self.progress(cfg, out);
            }
            Input::Receive {
                from,
                msg: SessionMsg::Fetch { session, client, key, incarnation },
            } => {
                let slot = pin_key(cfg, session, client);
                let pinned = match self.pins.get_mut(&slot) {
                    Some(pins) if incarnation == self.incarnation => {
                        pins.idle = 0;
                        pins.values.get(&key).cloned()
                    }
                    _ => None,
                };
                out.send(from, SessionMsg::Fetched { session, key, pinned });
            }
            Input::Receive { msg: SessionMsg::Fetched { session, key, pinned }, .. } => {
                self.fetched(cfg, session, key, pinned, out)
            }
            Input::Receive { msg: SessionMsg::HoldOk { session, incarnation }, .. } => {
                if incarnation != self.incarnation && !cfg.has(Mutant::StaleHoldOk) {
                    return out.ignore("a hold acknowledged to an earlier incarnation");
                }
                for pins in self.pins.values_mut() {
                    if pins.session.is_some_and(|(s, _)| s == session) {
                        pins.held = true;
                    }
                }
            }
            Input::Receive { from, msg: SessionMsg::Release { session, client } } => {
                self.arm_lease(cfg, out);
                if !cfg.has(Mutant::IgnoreRelease) {
                    self.pins.remove(&pin_key(cfg, session, client));
                }
                self.ran.retain(|(s, _), _| *s != session);
                self.released.insert(session, 0);
                self.waiting.retain(|(s, _), _| *s != session);
                self.running.retain(|(s, _), _| *s != session);
                out.send(from, SessionMsg::ReleaseOk { session });
            }
            Input::Receive { .. } => out.ignore("message a worker does not expect"),
            Input::Timeout(SessionTimer::Retry) => self.retry(cfg, out),
            Input::Timeout(SessionTimer::Lease) => {
                self.pins.retain(|_, pins| pins.idle < 2);
                self.pins.values_mut().for_each(|pins| pins.idle += 1);
                self.released.retain(|_, idle| *idle < 2);
                self.released.values_mut().for_each(|idle| *idle += 1);
                self.ran.retain(|_, idle| *idle < 2);
                self.ran.values_mut().for_each(|idle| *idle += 1);
                if let (Some(lease), false) = (cfg.pin_lease, self.leased_is_empty()) {
                    out.set_timer(SessionTimer::Lease, lease);
                }
            }
            Input::Timeout(_) => out.ignore("another role's timer"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn trigger(
        &mut self,
        cfg: &WorkerConfig,
        session: SessionId,
        info: SessionInfo,
        function: FnId,
        from: Option<FnId>,
        meta: Meta,
        out: &mut Out,
    ) {
        let id = (session, function);
        if function as usize >= cfg.dag.len() {
            return out.ignore("trigger of a function the DAG does not have");
        }
        if self.ran.contains_key(&id) || self.running.contains_key(&id) {
            return out.ignore("duplicate trigger");
        }
        if self.released.contains_key(&session) {
            return out.ignore("trigger of a released session");
        }
        let every_other: BTreeSet<FnId>;
        let preds = if cfg.has(Mutant::EveryFunctionPrecedes) {
            every_other = (0..cfg.dag.len() as FnId).filter(|&f| f != function).collect();
            &every_other
        } else {
            cfg.dag.preds(function)
        };
        let meta = match from {
            None if preds.is_empty() => meta,
            Some(pred) if preds.contains(&pred) => {
                let (_, got, _) =
                    self.waiting.entry(id).or_insert_with(|| (info.clone(), BTreeMap::new(), 0));
                got.insert(pred, meta);
                if got.len() < preds.len() {
                    return;
                }
                let (_, got, _) = self.waiting.remove(&id).expect("just filled");
                let mut joined = Meta::default();
                for meta in got.into_values() {
                    if let Err(key) = joined.join(meta, info.level) {
                        let reason = format!("upstream branches read different versions of {key}");
                        return out.send(cfg.scheduler, SessionMsg::Abort { session, reason });
                    }
                }
                joined
            }
            _ => return out.ignore("trigger from a function that does not precede this one"),
        };
        self.run(cfg, session, info, function, meta, out);
    }

    /// Starts `function`: decides where each key is read from.
    fn run(
        &mut self,
        cfg: &WorkerConfig,
        session: SessionId,
        info: SessionInfo,
        function: FnId,
        meta: Meta,
        out: &mut Out,
    ) {
        self.arm_lease(cfg, out);
        self.ran.insert((session, function), 0);
        let level = info.level;
        let mut plan = BTreeMap::new();
        let own = self.pins.get(&pin_key(cfg, session, info.client));
        for key in &cfg.dag.function(function).reads {
            let pin = meta.pins.get(key).filter(|pin| level.pins() && self.honours(cfg, pin));
            let own_pin = own.and_then(|pins| pins.values.get(key));
            let step = match pin {
                // A sibling branch pinned the key here: read that, so the branches agree.
                None if matches!(level, Level::Dsrr | Level::Dsc) && own_pin.is_some() => {
                    Plan::Have(own_pin.expect("matched").clone())
                }
                None => {
                    Plan::Local { checked: level == Level::Dsc && !meta.pins.contains_key(key) }
                }
                Some(pin) if pin.cache == cfg.id && pin.incarnation == self.incarnation => {
                    match own_pin {
                        Some(value) if matches_pin(level, pin, value) => Plan::Have(value.clone()),
                        _ => {
                            let reason = format!("this worker's pin of {key} is gone or moved");
                            return self.abort(cfg, session, reason, out);
                        }
                    }
                }
                Some(pin) => {
                    let local = self.local(level, key);
                    match local {
                        Some(value) if VersionId::of(value) == pin.version => {
                            Plan::Have(value.clone())
                        }
                        Some(value)
                            if level == Level::SingleKey
                                && pin.version.le(&VersionId::of(value)) =>
                        {
                            Plan::Local { checked: false }
                        }
                        _ => Plan::Remote(pin.clone()),
                    }
                }
            };
            plan.insert(key.clone(), step);
        }
        for (key, step) in &plan {
            match step {
                Plan::Remote(pin) => out.send(
                    pin.cache,
                    SessionMsg::Fetch {
                        session,
                        client: info.client,
                        key: key.clone(),
                        incarnation: pin.incarnation,
                    },
                ),
                Plan::Local { .. }
                    if !self.latest.contains_key(key) && self.getting.insert(key.clone()) =>
                {
                    out.send(cfg.store, SessionMsg::Get { key: key.clone() });
                }
                _ => {}
            }
        }
        self.running.insert((session, function), Exec { info, meta, plan });
        self.progress(cfg, out);
    }

    /// Whether this worker reads `pin` rather than its own cache (a defective one skips some).
    fn honours(&self, cfg: &WorkerConfig, pin: &Pin) -> bool {
        if cfg.has(Mutant::SkipRemoteRead) && pin.cache != cfg.id {
            return false;
        }
        !cfg.has(Mutant::IgnoreFrontier) || pin.read
    }

    /// This cache's value of `key` for reads at `level`, if it has one.
    fn local(&self, level: Level, key: &str) -> Option<&Option<LatticeValue>> {
        if level.reads_cut() { self.cut.get(key) } else { self.latest.get(key) }
    }

    fn fetched(
        &mut self,
        cfg: &WorkerConfig,
        session: SessionId,
        key: Key,
        pinned: Option<Option<LatticeValue>>,
        out: &mut Out,
    ) {
        let waiting: Vec<(SessionId, FnId)> = self
            .running
            .iter()
            .filter(|((s, _), exec)| {
                *s == session && matches!(exec.plan.get(&key), Some(Plan::Remote(_)))
            })
            .map(|(id, _)| *id)
            .collect();
        if waiting.is_empty() {
            return out.ignore("a pinned version nobody waits for");
        }
        for id in waiting {
            // An abort below drops every running function of the session.
            let Some(exec) = self.running.get_mut(&id) else { continue };
            let Some(Plan::Remote(pin)) = exec.plan.get(&key) else { unreachable!("filtered") };
            match &pinned {
                None => {
                    self.running.remove(&id);
                    self.abort(cfg, session, format!("the pinned version of {key} is gone"), out);
                }
                Some(value) if !matches_pin(exec.info.level, pin, value) => {
                    self.running.remove(&id);
                    self.abort(cfg, session, format!("{key} is pinned at another version"), out);
                }
                Some(value) => {
                    exec.plan.insert(key.clone(), Plan::Have(value.clone()));
                }
            }
        }
        self.progress(cfg, out);
    }

    fn abort(&mut self, cfg: &WorkerConfig, session: SessionId, reason: String, out: &mut Out) {
        self.running.retain(|(s, _), _| *s != session);
        out.send(cfg.scheduler, SessionMsg::Abort { session, reason });
    }

    /// Finishes every running function whose reads are all available.
    fn progress(&mut self, cfg: &WorkerConfig, out: &mut Out) {
        let ready: Vec<(SessionId, FnId)> = self
            .running
            .iter()
            .filter(|(_, exec)| {
                exec.plan.iter().all(|(key, step)| match step {
                    Plan::Local { .. } => self.local(exec.info.level, key).is_some(),
                    Plan::Have(_) => true,
                    Plan::Remote(_) => false,
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for (session, function) in ready {
            if let Some(exec) = self.running.remove(&(session, function)) {
                self.finish(cfg, session, function, exec, out);
            }
        }
    }

    /// Reads the local keys, checks the read set against the session, pins what downstream
    /// functions may read and triggers them (or reports the result from the sink).
    fn finish(
        &mut self,
        cfg: &WorkerConfig,
        session: SessionId,
        function: FnId,
        exec: Exec,
        out: &mut Out,
    ) {
        let Exec { info, mut meta, plan, .. } = exec;
        let level = info.level;
        let mut reads: BTreeMap<Key, Option<LatticeValue>> = BTreeMap::new();
        let mut checked = BTreeSet::new();
        for (key, step) in plan {
            let value = match step {
                Plan::Have(value) => value,
                Plan::Local { checked: check } => {
                    if check {
                        checked.insert(key.clone());
                    }
                    self.local(level, &key).cloned().expect("ready")
                }
                Plan::Remote(_) => unreachable!("ready functions wait for nothing"),
            };
            reads.insert(key, value);
        }
        let checks = !cfg.has(Mutant::ExposeBeforeDeps) && !cfg.has(Mutant::IgnoreFrontier);
        if checks && let Some(key) = conflict(&meta, &reads, &checked) {
            let reason = format!("{key} in this cache conflicts with the session's snapshot");
            return self.abort(cfg, session, reason, out);
        }
        meta.log.extend(reads.iter().map(|(key, value)| Read {
            function,
            key: key.clone(),
            value: value.clone(),
        }));
        meta.log.sort();
        for (key, value) in &reads {
            constrain(&mut meta, key, value);
        }
        let future = cfg.dag.future_reads(function);
        let mut pinned = Vec::new();
        if level.pins() {
            for (key, value) in &reads {
                let same =
                    meta.pins.get(key).is_some_and(|pin| pin.version == VersionId::of(value));
                if future.contains(key) && !same {
                    pinned.push((key.clone(), value.clone(), true));
                }
            }
        }
        let incarnation = self.incarnation;
        let pin = |meta: &mut Meta, key: &Key, value: &Option<LatticeValue>, read: bool| {
            constrain(meta, key, value);
            let version = VersionId::of(value);
            meta.pins.insert(key.clone(), Pin { cache: cfg.id, incarnation, version, read });
        };
        for (key, value, read) in &pinned {
            pin(&mut meta, key, value, *read);
        }
        if level == Level::Dsc {
            // A causal snapshot: the cut's versions of other keys downstream may read, where
            // they agree with everything the session pinned so far.
            for key in future {
                let Some(value) = self.cut.get(key) else { continue };
                if meta.pins.contains_key(key) {
                    continue;
                }
                if covers(value, &meta.required(key)) && agrees_with_session(&meta, value) {
                    pin(&mut meta, key, value, false);
                    pinned.push((key.clone(), value.clone(), false));
                }
            }
        }
        if !pinned.is_empty() {
            self.arm_lease(cfg, out);
            let slot = pin_key(cfg, session, info.client);
            let pins = self.pins.entry(slot).or_default();
            pins.idle = 0;
            pins.held = pins.held && pins.session == Some((session, info.client));
            pins.session = Some((session, info.client));
            pins.values.extend(pinned.into_iter().map(|(key, value, _)| (key, value)));
            if !pins.held {
                let client = info.client;
                out.send(cfg.scheduler, SessionMsg::Hold { session, client, incarnation });
            }
        }
        let next = &cfg.dag.function(function).next;
        if next.is_empty() {
            let SessionInfo { client, req, .. } = info;
            return out
                .send(cfg.scheduler, SessionMsg::Result { session, client, req, log: meta.log });
        }
        for &next in next {
            let to = info.placement[next as usize];
            let msg = SessionMsg::Trigger {
                session,
                info: info.clone(),
                function: next,
                from: Some(function),
                meta: meta.clone(),
            };
            out.send(to, msg);
        }
        if cfg.has(Mutant::ReleaseBeforeSink) {
            self.pins.remove(&pin_key(cfg, session, info.client));
        }
    }

    /// A `Retry` tick: re-sends unanswered holds, store reads and remote reads. (A session
    /// whose remote read is never answered is aborted by the scheduler's deadline.)
    fn retry(&mut self, cfg: &WorkerConfig, out: &mut Out) {
        for pins in self.pins.values() {
            if let (false, Some((session, client))) = (pins.held, pins.session) {
                let incarnation = self.incarnation;
                out.send(cfg.scheduler, SessionMsg::Hold { session, client, incarnation });
            }
        }
        for key in &self.getting {
            out.send(cfg.store, SessionMsg::Get { key: key.clone() });
        }
        let mut late = BTreeSet::new();
        for (&(session, function), (_, _, ticks)) in &mut self.waiting {
            *ticks += 1;
            if *ticks > cfg.max_wait {
                late.insert((session, function));
            }
        }
        for (session, function) in late {
            self.waiting.remove(&(session, function));
            let reason = format!("function {function} waited too long for its triggers");
            out.send(cfg.scheduler, SessionMsg::Abort { session, reason });
        }
        for ((session, _), exec) in &self.running {
            for (key, step) in &exec.plan {
                if let Plan::Remote(pin) = step {
                    let msg = SessionMsg::Fetch {
                        session: *session,
                        client: exec.info.client,
                        key: key.clone(),
                        incarnation: pin.incarnation,
                    };
                    out.send(pin.cache, msg);
                }
            }
        }
        self.arm_retry(cfg, out);
    }

    /// Whether the worker holds nothing the `Lease` timer ages: no pin, tombstone or record
    /// of a function run.
    fn leased_is_empty(&self) -> bool {
        self.pins.is_empty() && self.released.is_empty() && self.ran.is_empty()
    }

    /// Arms the `Lease` timer if the worker is about to hold its first pin, tombstone or
    /// record of a run (it stays armed while it holds any, and is never pushed back).
    fn arm_lease(&self, cfg: &WorkerConfig, out: &mut Out) {
        if let (Some(lease), true) = (cfg.pin_lease, self.leased_is_empty()) {
            out.set_timer(SessionTimer::Lease, lease);
        }
    }

    fn arm_retry(&self, cfg: &WorkerConfig, out: &mut Out) {
        if !self.is_idle() {
            out.set_timer(SessionTimer::Retry, cfg.retry);
        }
    }

    /// Moves into the causal cut every latest version whose dependencies the cut (with the
    /// other versions moving in) covers; asks the store for dependencies it lacks.
    fn promote(&mut self, cfg: &WorkerConfig, out: &mut Out) {
        let mut moving: BTreeSet<Key> = self
            .latest
            .iter()
            .filter(|(key, value)| self.cut.get(*key) != Some(value))
            .map(|(key, _)| key.clone())
            .collect();
        let mut missing = BTreeSet::new();
        if !cfg.has(Mutant::ExposeBeforeDeps) {
            loop {
                let stuck: Vec<Key> = moving
                    .iter()
                    .filter(|key| {
                        dependencies(&self.latest[*key]).iter().any(|(dep, clock)| {
                            let via_latest =
                                moving.contains(dep) && covers(&self.latest[dep], clock);
                            let via_cut = self.cut.get(dep).is_some_and(|v| covers(v, clock));
                            let ok = via_latest || via_cut;
                            if !ok && !self.latest.get(dep).is_some_and(|v| covers(v, clock)) {
                                missing.insert(dep.clone());
                            }
                            !ok
                        })
                    })
                    .cloned()
                    .collect();
                if stuck.is_empty() {
                    break;
                }
                for key in stuck {
                    moving.remove(&key);
                }
            }
        }
        for key in moving {
            self.cut.insert(key.clone(), self.latest[&key].clone());
        }
        for dep in missing {
            if self.getting.insert(dep.clone()) {
                out.send(cfg.store, SessionMsg::Get { key: dep });
            }
        }
    }
}

/// Whether a pinned `value` serves a read that metadata `pin` names: exactly that version,
/// or at SK (where a worker may re-pin a newer version) one at or above it.
fn matches_pin(level: Level, pin: &Pin, value: &Option<LatticeValue>) -> bool {
    let version = VersionId::of(value);
    version == pin.version || (level == Level::SingleKey && pin.version.le(&version))
}

/// Where pins of `session` are kept: by session (by client in a defective worker).
fn pin_key(cfg: &WorkerConfig, session: SessionId, client: NodeId) -> SessionId {
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
