//! The scheduler: starts sessions, records results once per request, re-executes aborted
//! sessions under new ids, and releases every session's pins once it ended.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{
    Dag, Level, Mutant, Out, Read, SessionId, SessionInfo, SessionMsg, SessionNode, SessionTimer,
    invariants,
};
use crate::base::{ReqId, seeded_defects};
use crate::node::{Input, NodeId, Violation};

/// How a scheduler is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SchedulerConfig {
    /// This scheduler.
    pub id: NodeId,
    /// The DAG it runs.
    pub dag: Dag,
    /// The workers; function *i* runs on `workers[i % workers.len()]`.
    pub workers: Vec<NodeId>,
    /// Calls to start at once, as `(client, request, level)`, besides those clients send.
    pub calls: Vec<(NodeId, ReqId, Level)>,
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
    /// A correct scheduler `id` running `dag` on `workers`, with default bounds.
    pub fn new(id: NodeId, dag: Dag, workers: Vec<NodeId>) -> Self {
        Self {
            id,
            dag,
            workers,
            calls: Vec::new(),
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

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Outcome {
    /// A session completed; its result is recorded.
    Completed {
        /// The session whose result counts.
        session: SessionId,
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
    /// Sessions started so far.
    pub attempts: u32,
    /// The running session, if any.
    pub session: Option<SessionId>,
    /// How it ended, once it did.
    pub outcome: Option<Outcome>,
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
    /// Its output: every read of every function.
    pub log: Vec<Read>,
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
}

impl Scheduler {
    pub(super) fn init(cfg: &SchedulerConfig, persisted: u32, out: &mut Out) -> Self {
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
        };
        for &(client, req, level) in &cfg.calls {
            scheduler.call(cfg, client, req, level, false, out);
        }
        scheduler
    }

    /// The requests, by client and request number.
    pub fn requests(&self) -> &BTreeMap<(NodeId, ReqId), Request> {
        &self.requests
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

    pub(super) fn handle(
        &mut self,
        cfg: &SchedulerConfig,
        input: Input<SessionNode>,
        out: &mut Out,
    ) {
        match input {
            Input::Receive { from, msg: SessionMsg::Call { req, level } } => {
                match self.requests.get(&(from, req)) {
                    Some(Request { outcome: Some(outcome), .. }) => {
                        out.send(from, SessionMsg::Done { req, outcome: outcome.clone() })
                    }
                    Some(_) => out.ignore("a call already running"),
                    None => self.call(cfg, from, req, level, true, out),
                }
            }
            Input::Receive { msg: SessionMsg::Result { session, client, req, log }, .. } => {
                self.result(cfg, session, (client, req), log, out)
            }
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

    fn call(
        &mut self,
        cfg: &SchedulerConfig,
        client: NodeId,
        req: ReqId,
        level: Level,
        reply: bool,
        out: &mut Out,
    ) {
        let request = Request { level, attempts: 0, session: None, outcome: None, reply, ticks: 0 };
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
        let request = self.requests.get_mut(&(client, req)).expect("started requests exist");
        request.attempts += 1;
        request.session = Some(session);
        request.ticks = 0;
        if self.sessions.is_empty() {
            out.set_timer(SessionTimer::Deadline, cfg.deadline);
        }
        self.sessions.insert(session, (client, req));
        let placement: Vec<NodeId> =
            (0..cfg.dag.len()).map(|f| cfg.workers[f % cfg.workers.len().max(1)]).collect();
        let info = SessionInfo { client, req, level: request.level, placement };
        for source in cfg.dag.sources() {
            out.send(
                info.placement[source as usize],
                SessionMsg::Trigger {
                    session,
                    info: info.clone(),
                    function: source,
                    from: None,
                    meta: Default::default(),
                },
            );
        }
    }

    fn result(
        &mut self,
        cfg: &SchedulerConfig,
        session: SessionId,
        request: (NodeId, ReqId),
        log: Vec<Read>,
        out: &mut Out,
    ) {
        let running = self.sessions.get(&session) == Some(&request);
        let superseded = cfg.has(Mutant::RecordEveryResult) && self.requests.contains_key(&request);
        if !running && !superseded {
            return out.ignore("result of a session that already ended");
        }
        let (client, req) = request;
        let entry = self.requests.get_mut(&request).expect("checked above");
        self.recorded.push(Recorded { client, req, session, level: entry.level, log });
        if entry.outcome.is_none() {
            let outcome = Outcome::Completed { session };
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
    pub(super) fn check_step(before: &Self, after: &Self) -> Result<(), Violation> {
        if after.recorded.starts_with(&before.recorded) {
            return Ok(());
        }
        Err(Violation {
            id: invariants::RESULT_ONCE,
            detail: "a recorded result was changed or forgotten".into(),
        })
    }
}
