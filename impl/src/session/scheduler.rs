//! The scheduler: starts sessions, records results once per request, re-executes aborted
//! sessions under new ids, and releases every session's pins once it ended.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;

use super::{
    Dag, Level, Mutant, Read, SessionId, SessionInfo, SessionMsg, SessionTimer, invariants,
};
use crate::base::{Key, ReqId, seeded_defects};
use crate::node::{Input, Node, NodeId, Outbox, Violation};

type Out = Outbox<Scheduler>;

/// A call the scheduler starts on its own, from its configuration (models and simulations).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Call {
    /// The client it is recorded for.
    pub client: NodeId,
    /// The client's request number.
    pub req: ReqId,
    /// The consistency asked for.
    pub level: Level,
    /// What to run.
    pub dag: Dag,
    /// The sources' arguments.
    pub args: Vec<Bytes>,
}

/// Where a scheduler runs each function of a DAG. Any placement is correct — the session
/// protocol makes no assumption about it — but they differ in what a dead worker costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Placement {
    /// Function *i* runs on `workers[i mod |workers|]` in every attempt: versions are pinned
    /// at one worker and read at another in every attempt, the hardest case for the session
    /// protocol (what the models check). A DAG that spans every worker cannot finish while one
    /// of them is down.
    #[default]
    Spread,
    /// The first attempt spreads as [`Placement::Spread`]; attempt *a* > 1 (a retry) runs every
    /// function on `workers[(a - 1) mod |workers|]`, so whichever one worker died, one of the
    /// next `|workers|` attempts avoids it.
    RetryOnOne,
    /// Every function of an execution on one worker, so results pass executor to executor
    /// inside it. By load, among the workers running at most [`LOCAL_SLACK`] sessions more
    /// than the least loaded one (by this scheduler's count of running sessions); by locality
    /// among those: the worker whose cache holds the most of the DAG's declared keys (as the
    /// workers last reported, [`SessionMsg::Cached`]), then the worker the keys hash to (whose
    /// cache earlier calls on them warmed, before any report), then the least loaded (ties:
    /// the lowest index). A DAG that reads no key goes to the least loaded. Attempt *a* > 1
    /// moves *a* − 1 workers on from the first attempt's, so a dead worker is avoided as with
    /// [`Placement::RetryOnOne`]. What the cluster runs by default.
    Local,
}

/// How many more running sessions than the least loaded worker a worker may have and still
/// be chosen for locality ([`Placement::Local`]).
pub const LOCAL_SLACK: usize = 2;

/// How a scheduler is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SchedulerConfig {
    /// This scheduler.
    pub id: NodeId,
    /// The workers functions run on.
    pub workers: Vec<NodeId>,
    /// Which worker runs which function in which attempt.
    pub placement: Placement,
    /// Calls to start at once, besides those clients send.
    pub calls: Vec<Call>,
    /// The most requests remembered (running, or ended with their outcome); beyond it the
    /// first ended one by client and number is forgotten, and a call is refused as overloaded
    /// only when all are running.
    pub max_requests: u32,
    /// Sessions per request before it fails.
    pub max_attempts: u32,
    /// The `Deadline` tick period.
    pub deadline: Duration,
    /// A session still running after this many `Deadline` ticks is aborted: it has run for
    /// between `deadline_ticks - 1` and `deadline_ticks` periods.
    pub deadline_ticks: u32,
    /// How long to wait for a release to be acknowledged before re-sending it.
    pub release_retry: Duration,
    /// The seeded defect it carries, if any.
    #[cfg(feature = "mutants")]
    #[cfg_attr(feature = "serde", serde(skip))]
    pub mutant: Option<Mutant>,
}

impl SchedulerConfig {
    /// A correct scheduler `id` placing functions on `workers`, with default bounds.
    pub fn new(id: NodeId, workers: Vec<NodeId>) -> Self {
        Self {
            id,
            workers,
            placement: Placement::Spread,
            calls: Vec::new(),
            max_requests: 100_000,
            max_attempts: 3,
            deadline: Duration::from_millis(500),
            deadline_ticks: 3,
            release_retry: Duration::from_millis(100),
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }
}

seeded_defects!(SchedulerConfig, Mutant);

/// What a sink reports, as the scheduler records it.
struct Recording {
    output: Bytes,
    log: Vec<Read>,
    writes: Vec<Read>,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Outcome {
    /// A session completed; its result is recorded.
    Completed {
        /// The session whose result counts.
        session: SessionId,
        /// The sink's output.
        output: Bytes,
    },
    /// Every attempt aborted.
    Failed {
        /// Sessions started.
        attempts: u32,
        /// Why the last one aborted.
        reason: String,
    },
}

/// A request: a call of the DAG, run by one session at a time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    /// The consistency asked for.
    pub level: Level,
    /// What it runs.
    pub dag: Dag,
    /// The sources' arguments.
    pub args: Vec<Bytes>,
    /// Sessions started so far.
    pub attempts: u32,
    /// The running session, if any.
    pub session: Option<SessionId>,
    /// How it ended, once it did.
    pub outcome: Option<Outcome>,
    /// Where the running (or last) session's functions run, by function id.
    pub placement: Vec<NodeId>,
    /// Whether the client sent it (and so is answered), rather than the configuration.
    reply: bool,
    /// `Deadline` ticks since the session started.
    ticks: u32,
}

/// A result as the scheduler recorded it: the write of the request's output.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Recorded {
    /// The client.
    pub client: NodeId,
    /// The client's request number.
    pub req: ReqId,
    /// The session that produced it.
    pub session: SessionId,
    /// The level it ran at.
    pub level: Level,
    /// The sink's output.
    pub output: Bytes,
    /// Every read of every function.
    pub log: Vec<Read>,
    /// Every write of every function.
    pub writes: Vec<Read>,
}

/// A scheduler's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scheduler {
    incarnation: u32,
    /// The next session's number (low 32 bits; the incarnation is in the high ones).
    next_seq: u64,
    requests: BTreeMap<(NodeId, ReqId), Request>,
    /// The running sessions, each with its request.
    sessions: BTreeMap<SessionId, (NodeId, ReqId)>,
    /// The workers that said they hold pins of a running session.
    holders: BTreeMap<SessionId, BTreeSet<NodeId>>,
    /// Ended sessions with the workers that have not yet acknowledged their release.
    releasing: BTreeMap<SessionId, (NodeId, BTreeSet<NodeId>)>,
    /// Every result recorded, in order; append-only.
    recorded: Vec<Recorded>,
    /// The keys each worker last reported its cache holds ([`SessionMsg::Cached`]).
    cached: BTreeMap<NodeId, BTreeSet<Key>>,
}

impl Scheduler {
    fn start_up(cfg: &SchedulerConfig, persisted: u32, out: &mut Out) -> Self {
        let incarnation = persisted + 1;
        out.persist(incarnation);
        let mut scheduler = Self {
            incarnation,
            next_seq: 0,
            requests: BTreeMap::new(),
            sessions: BTreeMap::new(),
            holders: BTreeMap::new(),
            releasing: BTreeMap::new(),
            recorded: Vec::new(),
            cached: BTreeMap::new(),
        };
        for call in &cfg.calls {
            let Call { client, req, level, dag, args } = call.clone();
            scheduler.call(cfg, (client, req), level, dag, args, false, out);
        }
        scheduler
    }

    /// The requests, by client and request number.
    pub fn requests(&self) -> &BTreeMap<(NodeId, ReqId), Request> {
        &self.requests
    }

    /// The keys each worker last reported its cache holds.
    pub fn cached(&self) -> &BTreeMap<NodeId, BTreeSet<Key>> {
        &self.cached
    }

    /// The running sessions, each with its request.
    pub fn sessions(&self) -> &BTreeMap<SessionId, (NodeId, ReqId)> {
        &self.sessions
    }

    /// Every result recorded, in order.
    pub fn recorded(&self) -> &[Recorded] {
        &self.recorded
    }

    /// Whether nothing is in progress: no running session, no unacknowledged release.
    pub fn is_idle(&self) -> bool {
        self.sessions.is_empty() && self.releasing.is_empty()
    }

    fn step(&mut self, cfg: &SchedulerConfig, input: Input<Self>, out: &mut Out) {
        match input {
            Input::Receive { from, msg: SessionMsg::Call { req, level, dag, args } } => {
                match self.requests.get(&(from, req)) {
                    Some(Request { outcome: Some(outcome), .. }) => {
                        out.send(from, SessionMsg::Done { req, outcome: outcome.clone() })
                    }
                    Some(_) => out.ignore("a call already running"),
                    None => {
                        self.new_call(cfg, (from, req), (level, dag, args), true, out);
                    }
                }
            }
            Input::Receive { from, msg: SessionMsg::Submit { req, level, dag, args } } => {
                // Accepted again if repeated; run once.
                if self.requests.contains_key(&(from, req)) {
                    return out.send(from, SessionMsg::Accepted { req });
                }
                if self.new_call(cfg, (from, req), (level, dag, args), false, out) {
                    out.send(from, SessionMsg::Accepted { req });
                }
            }
            Input::Receive {
                msg: SessionMsg::Result { session, client, req, output, log, writes },
                ..
            } => self.result(cfg, session, (client, req), Recording { output, log, writes }, out),
            Input::Receive { msg: SessionMsg::Abort { session, reason }, .. } => {
                if self.sessions.contains_key(&session) {
                    self.abort(cfg, session, reason, out);
                } else {
                    out.ignore("abort of a session that already ended");
                }
            }
            Input::Receive { from, msg: SessionMsg::Hold { session, client, incarnation } } => {
                if self.sessions.contains_key(&session) {
                    self.holders.entry(session).or_default().insert(from);
                    out.send(from, SessionMsg::HoldOk { session, incarnation });
                } else {
                    // A late function of an ended session pinned something: release it too.
                    self.release(cfg, session, client, BTreeSet::from([from]), out);
                }
            }
            Input::Receive { from, msg: SessionMsg::ReleaseOk { session } } => {
                if let Some((_, waiting)) = self.releasing.get_mut(&session) {
                    waiting.remove(&from);
                    if waiting.is_empty() {
                        self.releasing.remove(&session);
                    }
                }
            }
            Input::Receive { from, msg: SessionMsg::Cached { keys } } => {
                if cfg.workers.contains(&from) {
                    self.cached.insert(from, keys);
                } else {
                    out.ignore("a cache report from a node that is not a worker");
                }
            }
            Input::Receive { .. } => out.ignore("message a scheduler does not expect"),
            Input::Timeout(SessionTimer::Deadline) => self.deadline(cfg, out),
            Input::Timeout(SessionTimer::Release) => {
                for (&session, (client, waiting)) in &self.releasing {
                    for &worker in waiting {
                        out.send(worker, SessionMsg::Release { session, client: *client });
                    }
                }
                if !self.releasing.is_empty() {
                    out.set_timer(SessionTimer::Release, cfg.release_retry);
                }
            }
            Input::Timeout(_) => out.ignore("another role's timer"),
        }
    }

    /// A client's new call: started if there is room for it (true), refused (definitely) if
    /// not. Its outcome is sent to the client when it ends if `reply`.
    fn new_call(
        &mut self,
        cfg: &SchedulerConfig,
        (client, req): (NodeId, ReqId),
        (level, dag, args): (Level, Dag, Vec<Bytes>),
        reply: bool,
        out: &mut Out,
    ) -> bool {
        if !self.make_room(cfg) {
            let refusal = crate::node::Refusal::Overloaded;
            out.send(client, SessionMsg::Refused { req, refusal });
            return false;
        }
        self.call(cfg, (client, req), level, dag, args, reply, out);
        true
    }

    /// Makes room for one more request under `max_requests`, forgetting an ended one (the
    /// first by client and number) if need be; a repeat of a forgotten call runs again. False when every remembered
    /// request is still running.
    fn make_room(&mut self, cfg: &SchedulerConfig) -> bool {
        if self.requests.len() < cfg.max_requests as usize {
            return true;
        }
        let ended = self.requests.iter().find(|(_, r)| r.outcome.is_some()).map(|(id, _)| *id);
        ended.is_some_and(|id| self.requests.remove(&id).is_some())
    }

    #[allow(clippy::too_many_arguments)] // The fields of one `Call`, and where it came from.
    fn call(
        &mut self,
        cfg: &SchedulerConfig,
        (client, req): (NodeId, ReqId),
        level: Level,
        dag: Dag,
        args: Vec<Bytes>,
        reply: bool,
        out: &mut Out,
    ) {
        let request = Request {
            level,
            dag,
            args,
            attempts: 0,
            session: None,
            outcome: None,
            placement: Vec::new(),
            reply,
            ticks: 0,
        };
        self.requests.insert((client, req), request);
        self.start(cfg, client, req, out);
    }

    /// Starts a new session of request `(client, req)`: triggers the DAG's sources.
    fn start(&mut self, cfg: &SchedulerConfig, client: NodeId, req: ReqId, out: &mut Out) {
        let session = SessionId {
            scheduler: cfg.id,
            seq: (u64::from(self.incarnation) << 32) | self.next_seq,
        };
        self.next_seq += 1;
        let load = if cfg.placement == Placement::Local { self.load(cfg) } else { Vec::new() };
        let request = self.requests.get_mut(&(client, req)).expect("started requests exist");
        request.attempts += 1;
        request.session = Some(session);
        request.ticks = 0;
        if self.sessions.is_empty() {
            out.set_timer(SessionTimer::Deadline, cfg.deadline);
        }
        self.sessions.insert(session, (client, req));
        let dag = request.dag.clone();
        let placement = Self::place(cfg, &dag, request.attempts, &load, &self.cached);
        request.placement = placement.clone();
        let args = request.args.clone();
        let info = SessionInfo { client, req, level: request.level, dag, placement };
        for source in info.dag.sources() {
            out.send(
                info.placement[source as usize],
                SessionMsg::Trigger {
                    session,
                    info: info.clone(),
                    function: source,
                    from: None,
                    meta: Default::default(),
                    args: args.clone(),
                },
            );
        }
    }

    /// Where each function of `dag` runs in attempt `attempt` (from 1), given how many
    /// sessions run on each worker (by index in `cfg.workers`) and the keys each worker
    /// reported its cache holds: see [`Placement`].
    pub fn place(
        cfg: &SchedulerConfig,
        dag: &Dag,
        attempt: u32,
        load: &[usize],
        cached: &BTreeMap<NodeId, BTreeSet<Key>>,
    ) -> Vec<NodeId> {
        let n = cfg.workers.len().max(1);
        let retry = attempt.saturating_sub(1) as usize;
        let one = |i: usize| vec![cfg.workers[i % n]; dag.len()];
        match cfg.placement {
            Placement::Spread => (0..dag.len()).map(|f| cfg.workers[f % n]).collect(),
            Placement::RetryOnOne if retry > 0 => one(retry),
            Placement::RetryOnOne => (0..dag.len()).map(|f| cfg.workers[f % n]).collect(),
            Placement::Local => {
                let load = |i: usize| load.get(i).copied().unwrap_or(0);
                let least = (0..n).min_by_key(|&i| (load(i), i)).unwrap_or(0);
                let keys: BTreeSet<&Key> =
                    dag.functions().iter().flat_map(|f| f.reads.iter()).collect();
                let first = if keys.is_empty() {
                    least
                } else {
                    let joined: Vec<u8> = keys.iter().flat_map(|k| k.bytes().chain([0])).collect();
                    let affine = (crate::kvs::ring_hash(&joined) % n as u64) as usize;
                    let held = |i: usize| {
                        cached.get(&cfg.workers[i]).map_or(0, |held| {
                            keys.iter().filter(|k| held.contains(k.as_str())).count()
                        })
                    };
                    (0..n)
                        .filter(|&i| load(i) <= load(least) + LOCAL_SLACK)
                        .max_by_key(|&i| (held(i), i == affine, i == least, std::cmp::Reverse(i)))
                        .unwrap_or(least)
                };
                one(first + retry)
            }
        }
    }

    /// How many running sessions each worker (by index in `cfg.workers`) has functions of.
    fn load(&self, cfg: &SchedulerConfig) -> Vec<usize> {
        let mut load = vec![0; cfg.workers.len()];
        for request in self.sessions.values().filter_map(|r| self.requests.get(r)) {
            let used: BTreeSet<&NodeId> = request.placement.iter().collect();
            for (i, worker) in cfg.workers.iter().enumerate() {
                load[i] += usize::from(used.contains(worker));
            }
        }
        load
    }

    fn result(
        &mut self,
        cfg: &SchedulerConfig,
        session: SessionId,
        request: (NodeId, ReqId),
        recording: Recording,
        out: &mut Out,
    ) {
        let running = self.sessions.get(&session) == Some(&request);
        let superseded = cfg.has(Mutant::RecordEveryResult) && self.requests.contains_key(&request);
        if !running && !superseded {
            return out.ignore("result of a session that already ended");
        }
        let (client, req) = request;
        let entry = self.requests.get_mut(&request).expect("checked above");
        let Recording { output, log, writes } = recording;
        let level = entry.level;
        self.recorded.push(Recorded {
            client,
            req,
            session,
            level,
            output: output.clone(),
            log,
            writes,
        });
        if entry.outcome.is_none() {
            let outcome = Outcome::Completed { session, output };
            entry.outcome = Some(outcome.clone());
            if entry.reply {
                out.send(client, SessionMsg::Done { req, outcome });
            }
        }
        if running {
            self.end(cfg, session, out);
        }
    }

    /// Ends `session` without a result and starts the next attempt, or fails the request.
    fn abort(&mut self, cfg: &SchedulerConfig, session: SessionId, reason: String, out: &mut Out) {
        let (client, req) = self.end(cfg, session, out);
        let request = self.requests.get_mut(&(client, req)).expect("sessions belong to requests");
        request.session = None;
        if request.attempts < cfg.max_attempts && !cfg.has(Mutant::GiveUpOnAbort) {
            return self.start(cfg, client, req, out);
        }
        let outcome = Outcome::Failed { attempts: request.attempts, reason };
        request.outcome = Some(outcome.clone());
        if request.reply {
            out.send(client, SessionMsg::Done { req, outcome });
        }
    }

    /// Ends a running session: releases its pins wherever they are held.
    fn end(&mut self, cfg: &SchedulerConfig, session: SessionId, out: &mut Out) -> (NodeId, ReqId) {
        let (client, req) = self.sessions.remove(&session).expect("ending a running session");
        if let Some(request) = self.requests.get_mut(&(client, req))
            && request.session == Some(session)
        {
            request.session = None;
        }
        let holders = self.holders.remove(&session).unwrap_or_default();
        self.release(cfg, session, client, holders, out);
        (client, req)
    }

    /// Sends `Release` to `workers` and re-sends it until each acknowledged.
    fn release(
        &mut self,
        cfg: &SchedulerConfig,
        session: SessionId,
        client: NodeId,
        workers: BTreeSet<NodeId>,
        out: &mut Out,
    ) {
        if workers.is_empty() {
            return;
        }
        for &worker in &workers {
            out.send(worker, SessionMsg::Release { session, client });
        }
        if self.releasing.is_empty() {
            out.set_timer(SessionTimer::Release, cfg.release_retry);
        }
        self.releasing.entry(session).or_insert((client, BTreeSet::new())).1.extend(workers);
    }

    /// A `Deadline` tick: sessions that ran for `deadline_ticks` ticks are aborted (and
    /// retried).
    fn deadline(&mut self, cfg: &SchedulerConfig, out: &mut Out) {
        let mut due = Vec::new();
        for (&session, request) in &self.sessions {
            let request = self.requests.get_mut(request).expect("sessions belong to requests");
            request.ticks += 1;
            if request.ticks >= cfg.deadline_ticks {
                due.push(session);
            }
        }
        for session in due {
            self.abort(cfg, session, "deadline passed".into(), out);
        }
        if !self.sessions.is_empty() {
            out.set_timer(SessionTimer::Deadline, cfg.deadline);
        }
    }

    /// SESS-I5, step form: recorded results are never changed or forgotten.
    fn result_kept(before: &Self, after: &Self) -> Result<(), Violation> {
        if after.recorded.starts_with(&before.recorded) {
            return Ok(());
        }
        Err(Violation {
            id: invariants::RESULT_ONCE,
            detail: "a recorded result was changed or forgotten".into(),
        })
    }
}

impl Node for Scheduler {
    type Config = SchedulerConfig;
    type Msg = SessionMsg;
    type Timer = SessionTimer;
    /// The scheduler's incarnation, which goes into its session ids.
    type Durable = u32;

    fn init(cfg: &SchedulerConfig, persisted: &u32, out: &mut Out) -> Self {
        Self::start_up(cfg, *persisted, out)
    }

    fn handle(&mut self, cfg: &SchedulerConfig, input: Input<Self>, out: &mut Out) {
        self.step(cfg, input, out);
    }

    /// SESS-I5, step form: recorded results are never changed or forgotten.
    fn check_step(_: &SchedulerConfig, before: &Self, after: &Self) -> Result<(), Violation> {
        Self::result_kept(before, after)
    }

    /// No running session, no unacknowledged release.
    fn is_idle(&self, _: &SchedulerConfig) -> bool {
        self.is_idle()
    }
}
