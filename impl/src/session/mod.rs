//! Distributed-session consistency: a DAG execution reads consistent data although its
//! functions run on executors behind different caches.
//!
//! A call of a [`Dag`] at a consistency [`Level`] is a *session* with its own [`SessionId`]
//! (never the client's id). The [`Scheduler`] starts it by triggering the DAG's sources; the
//! session layer of each worker ([`SessionLayer`]: the worker's cache seen by its sessions) runs
//! a function once all its predecessors' triggers arrived — it gathers the keys the function
//! declared at the level the session asked for, hands them to the function, serves and records
//! the function's puts (causal puts carry the session's dependencies), and triggers its
//! successors with the session metadata ([`Meta`]): for each key a downstream function may
//! read, which worker *pinned* which version ([`Pin`]), and for the causal levels the dependency
//! clocks the reads impose. The sink reports the result to the scheduler, which records it once
//! under the request id and releases the session's pins at every worker that holds some. A
//! worker that cannot serve a pinned version (it restarted, or a lease expired it) makes the
//! reader abort the session; the scheduler re-executes the DAG under a new session id, a
//! bounded number of times.
//!
//! The layer reads through the worker's real cache ([`crate::cache::CacheNode`]), which storage
//! nodes fetch into and push to; composing the two with executors is [`crate::worker`]'s work.
//!
//! Specified on [the session page](crate::spec::session) and [the consistency
//! page](crate::spec::consistency); invariants in [`invariants`].

mod dag;
pub mod invariants;
mod layer;
mod scheduler;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use dag::{Dag, DagError, FnId, Function};
pub use layer::{
    CallId, Effect, Effects, Entries, LayerConfig, Pins, SessionLayer, Write, WriteError,
};
pub use scheduler::{
    Call, LOCAL_SLACK, Outcome, Placement, Recorded, Request, Scheduler, SchedulerConfig,
};

use bytes::Bytes;

use crate::base::{Key, ReqId, mutants};
use crate::lattice::{LatticeValue, Stamp, VectorClock, WriterId};
use crate::node::{Calls, NodeId, Refusal};

/// The consistency a DAG call asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Level {
    /// Plain reads of each cache's latest value (the default).
    #[default]
    Lww,
    /// Distributed-session repeatable read: every read of a key in the session returns the
    /// version its first reader saw.
    Dsrr,
    /// Single-key causal: the versions of a key the session reads never go backwards.
    SingleKey,
    /// Multi-key causal: the versions one function reads form a causal cut.
    MultiKey,
    /// Distributed-session causal: multi-key causal across the whole DAG, plus repeatable read.
    Dsc,
}

impl Level {
    /// Every level, weakest first.
    pub const ALL: [Level; 5] =
        [Level::Lww, Level::Dsrr, Level::SingleKey, Level::MultiKey, Level::Dsc];

    /// The level's short name (`lww`, `dsrr`, `sk`, `mk`, `dsc`).
    pub fn name(self) -> &'static str {
        match self {
            Level::Lww => "lww",
            Level::Dsrr => "dsrr",
            Level::SingleKey => "sk",
            Level::MultiKey => "mk",
            Level::Dsc => "dsc",
        }
    }

    /// Whether functions read the causal cut (rather than each key's latest value).
    pub fn reads_cut(self) -> bool {
        matches!(self, Level::MultiKey | Level::Dsc)
    }

    /// Whether the session pins the versions downstream functions may read.
    pub fn pins(self) -> bool {
        matches!(self, Level::Dsrr | Level::SingleKey | Level::Dsc)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A session: one execution of a DAG call, named by the scheduler that started it and a
/// sequence number it never reuses (its incarnation in the high 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SessionId {
    /// The scheduler that started it.
    pub scheduler: NodeId,
    /// Its number at that scheduler.
    pub seq: u64,
}

/// What identifies a version of a key in session metadata: enough to tell whether two reads
/// returned the same version, and which of two versions is newer, without the payload.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum VersionId {
    /// The key had no value.
    Missing,
    /// An LWW value, by its stamp (unique per write).
    Stamp(Stamp),
    /// A causal value, by the join of its versions' clocks (writers never reuse a clock).
    Clock(Vec<(WriterId, u64)>),
    /// Any other lattice type, by its (small) value.
    Value(LatticeValue),
}

impl VersionId {
    /// The id of a read value (`None`: the key had none).
    pub fn of(value: &Option<LatticeValue>) -> Self {
        match value {
            None => VersionId::Missing,
            Some(LatticeValue::Lww(lww)) => {
                lww.stamp().map_or(VersionId::Missing, VersionId::Stamp)
            }
            Some(value) => match clock(value) {
                Some(clock) => VersionId::Clock(clock.iter().collect()),
                None => VersionId::Value(value.clone()),
            },
        }
    }

    /// Whether the version `self` names is at or below the one `other` names (versions of
    /// different kinds are unordered).
    pub fn le(&self, other: &VersionId) -> bool {
        match (self, other) {
            (VersionId::Missing, _) => true,
            (VersionId::Stamp(a), VersionId::Stamp(b)) => a <= b,
            (VersionId::Clock(a), VersionId::Clock(b)) => {
                VectorClock::new(a.iter().copied()) <= VectorClock::new(b.iter().copied())
            }
            (VersionId::Value(a), VersionId::Value(b)) => a.lattice_le(b),
            _ => false,
        }
    }
}

/// The vector clock of a causal value: the join of its versions' clocks.
pub fn clock(value: &LatticeValue) -> Option<VectorClock> {
    match value {
        LatticeValue::SingleKeyCausal(v) => Some(v.clock()),
        LatticeValue::MultiKeyCausal(v) => Some(v.clock()),
        _ => None,
    }
}

/// The dependencies of a value: for a multi-key causal value, the clock of each key it
/// depends on (joined over its siblings); nothing for any other type.
pub fn dependencies(value: &Option<LatticeValue>) -> BTreeMap<Key, VectorClock> {
    match value {
        Some(LatticeValue::MultiKeyCausal(v)) => {
            v.dependencies().iter().map(|(k, c)| (k.clone(), c.clone())).collect()
        }
        _ => BTreeMap::new(),
    }
}

/// Whether `value` satisfies a requirement: its clock covers `required` (a key without a
/// value covers only the empty clock).
pub fn covers(value: &Option<LatticeValue>, required: &VectorClock) -> bool {
    let zero = VectorClock::default();
    match value.as_ref().and_then(clock) {
        Some(have) => *required <= have,
        None => *required <= zero,
    }
}

/// Where a session's version of a key is pinned, and which version it is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Pin {
    /// The worker whose cache pinned it.
    pub cache: NodeId,
    /// That worker's incarnation when it pinned it: a restarted worker has lost its pins.
    pub incarnation: u32,
    /// The version.
    pub version: VersionId,
    /// Whether an upstream function read it (rather than it being pinned as part of a causal
    /// snapshot of keys downstream functions may read).
    pub read: bool,
}

/// One read (or write) a function made: what the session layer served it (or wrote for it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Read {
    /// The function.
    pub function: FnId,
    /// The key.
    pub key: Key,
    /// What it read (`None`: the key had no value).
    pub value: Option<LatticeValue>,
}

/// The session metadata that travels with each trigger.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Meta {
    /// For each key a downstream function may read: where the session's version is pinned.
    pub pins: BTreeMap<Key, Pin>,
    /// The causal levels' frontier: for each key, the join of the clocks upstream reads
    /// depend on (and the clocks of upstream reads themselves); a later read must cover it.
    pub requires: BTreeMap<Key, Vec<(WriterId, u64)>>,
    /// Every read of every upstream function, in function order.
    pub log: Vec<Read>,
    /// Every write of every upstream function, in function order.
    pub writes: Vec<Read>,
}

impl Meta {
    /// The frontier's requirement on `key`, the empty clock if none.
    pub fn required(&self, key: &str) -> VectorClock {
        self.requires.get(key).map(|c| VectorClock::new(c.iter().copied())).unwrap_or_default()
    }

    /// Raises the frontier's requirement on `key` to cover `clock`.
    pub fn require(&mut self, key: &str, clock: &VectorClock) {
        let joined = crate::lattice::Merge::join(self.required(key), clock.clone());
        self.requires.insert(key.to_owned(), joined.iter().collect());
    }

    /// Merges the metadata of another incoming trigger (fan-in) of a session at `level`.
    /// Fails, naming the key, when the branches cannot be reconciled and the session must
    /// abort: at DSRR and DSC when they read or pinned different versions of one key (no
    /// later read can repeat both); at SK when they pinned concurrent versions (at SK the
    /// newer of two ordered pins is kept, since a later read need only be at or above both);
    /// and at every level but LWW when they carry different runs of one upstream function
    /// (found by the simulator: a re-run `f0` read `x@3` on one branch, `x@0` on the other).
    pub fn join(&mut self, other: Meta, level: Level) -> Result<(), Key> {
        for (key, pin) in other.pins {
            match self.pins.get(&key) {
                Some(mine) if mine.version == pin.version => {
                    if pin.read && !mine.read {
                        self.pins.insert(key, pin);
                    }
                }
                Some(mine) if level == Level::SingleKey && mine.version.le(&pin.version) => {
                    self.pins.insert(key, pin);
                }
                Some(mine) if level == Level::SingleKey && pin.version.le(&mine.version) => {}
                Some(_) => return Err(key),
                None => {
                    self.pins.insert(key, pin);
                }
            }
        }
        for (key, clock) in other.requires {
            self.require(&key, &VectorClock::new(clock));
        }
        self.log.extend(other.log);
        self.log.sort();
        self.log.dedup();
        self.writes.extend(other.writes);
        self.writes.sort();
        self.writes.dedup();
        if level != Level::Lww {
            // A function runs again when its trigger is re-sent or its worker restarts: two
            // branches may carry different runs of one upstream function. The session must not
            // mix them (a downstream function followed one run, the result would claim the
            // other), so differing reads by one function abort it.
            let mut runs: BTreeMap<(FnId, &Key), VersionId> = BTreeMap::new();
            for read in &self.log {
                let version = VersionId::of(&read.value);
                if runs.entry((read.function, &read.key)).or_insert_with(|| version.clone())
                    != &version
                {
                    return Err(read.key.clone());
                }
            }
        }
        if matches!(level, Level::Dsrr | Level::Dsc) {
            // Branches may read a key no later function reads (so unpinned): compare the reads.
            let mut seen: BTreeMap<&Key, VersionId> = BTreeMap::new();
            for read in &self.log {
                let version = VersionId::of(&read.value);
                if seen.entry(&read.key).or_insert_with(|| version.clone()) != &version {
                    return Err(read.key.clone());
                }
            }
        }
        Ok(())
    }
}

/// The session protocol's messages: between clients and the scheduler, the scheduler and
/// workers, and workers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SessionMsg {
    /// A client calls `dag` at `level` with `args` for its sources (client → scheduler).
    Call {
        /// The client's request number.
        req: ReqId,
        /// The consistency asked for.
        level: Level,
        /// What to run.
        dag: Dag,
        /// The arguments of every source function.
        args: Vec<Bytes>,
    },
    /// The request's outcome (scheduler → client).
    Done {
        /// The client's request number.
        req: ReqId,
        /// What happened.
        outcome: Outcome,
    },
    /// Run `function` of `session` once every predecessor's trigger arrived (scheduler →
    /// worker for sources, worker → worker after a function finished).
    Trigger {
        /// The session.
        session: SessionId,
        /// What the session runs.
        info: SessionInfo,
        /// The function to run.
        function: FnId,
        /// The predecessor that finished, `None` from the scheduler.
        from: Option<FnId>,
        /// The session metadata after the predecessor.
        meta: Meta,
        /// The predecessor's output (the call's arguments, from the scheduler).
        args: Vec<Bytes>,
    },
    /// Asks a worker for the version of `key` it pinned for `session` (worker → worker).
    Fetch {
        /// The session.
        session: SessionId,
        /// The session's client (only a defective worker keys pins by it).
        client: NodeId,
        /// The key.
        key: Key,
        /// The incarnation the pin was made in.
        incarnation: u32,
    },
    /// The answer to [`SessionMsg::Fetch`]: the pinned value, or that the worker holds no
    /// pin for it.
    Fetched {
        /// The session.
        session: SessionId,
        /// The key.
        key: Key,
        /// What the worker pinned.
        pinned: Pinned,
    },
    /// A worker holds pins of `session` (worker → scheduler), re-sent until answered.
    Hold {
        /// The session.
        session: SessionId,
        /// The session's client.
        client: NodeId,
        /// The worker's incarnation.
        incarnation: u32,
    },
    /// The scheduler will release the session's pins at this worker when it ends.
    HoldOk {
        /// The session.
        session: SessionId,
        /// The incarnation the hold came from: a restarted worker's new pins are not held.
        incarnation: u32,
    },
    /// Drop every pin of `session` (scheduler → worker), re-sent until acknowledged.
    Release {
        /// The session.
        session: SessionId,
        /// The session's client (only a defective worker keys pins by it).
        client: NodeId,
    },
    /// The worker dropped the session's pins.
    ReleaseOk {
        /// The session.
        session: SessionId,
    },
    /// The session cannot go on (worker → scheduler).
    Abort {
        /// The session.
        session: SessionId,
        /// Why, as a short phrase.
        reason: String,
    },
    /// The sink finished (worker → scheduler), with every function's reads and writes.
    Result {
        /// The session.
        session: SessionId,
        /// The session's client.
        client: NodeId,
        /// The client's request number.
        req: ReqId,
        /// The sink's output: the call's result.
        output: Bytes,
        /// Every read of every function, in function order.
        log: Vec<Read>,
        /// Every write of every function, in function order.
        writes: Vec<Read>,
    },
    /// A harness → the sender of request `req`: it did not happen where it was sent (see
    /// [`Refusal`]).
    Refused {
        /// The request answered.
        req: ReqId,
        /// Why.
        refusal: Refusal,
    },
    /// Like [`SessionMsg::Call`], answered at once by [`SessionMsg::Accepted`] rather than
    /// with the outcome (client → scheduler): the DAG keeps its result itself (a sink that
    /// writes it to a key, say). The request is still run once and its result recorded once.
    Submit {
        /// The client's request number.
        req: ReqId,
        /// The consistency asked for.
        level: Level,
        /// What to run.
        dag: Dag,
        /// The arguments of every source function.
        args: Vec<Bytes>,
    },
    /// The scheduler took request `req` (a [`SessionMsg::Submit`]) and will run it.
    Accepted {
        /// The request answered.
        req: ReqId,
    },
    /// A message from one function of a session to another, running on this worker or
    /// another (worker → worker): delivered at most once, in order between two functions.
    Message {
        /// The session (one attempt of a DAG execution).
        session: SessionId,
        /// The sending function.
        from: FnId,
        /// The function it is for.
        to: FnId,
        /// What it says.
        bytes: Bytes,
    },
    /// The keys a worker's cache holds (worker → scheduler; at most the worker's
    /// `report_keys`, the first in key order), sent after a DAG execution finished there if
    /// they changed since the last report. The scheduler places a DAG where its keys are
    /// cached ([`Placement::Local`]).
    Cached {
        /// The keys.
        keys: BTreeSet<Key>,
    },
}

/// What a worker pinned for a session's key, in [`SessionMsg::Fetched`].
///
/// An enum rather than an option of an option, so that no encoding has to tell "no pin" from
/// "pinned a key that had no value" by nesting nulls.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Pinned {
    /// No pin: released, expired, or lost in a restart.
    Gone,
    /// Pinned: the key had no value when the session read it.
    Absent,
    /// Pinned at this value.
    Value(LatticeValue),
}

impl Pinned {
    /// The pinned value (`None` for a key that had no value), or `None` with no pin.
    pub fn into_option(self) -> Option<Option<LatticeValue>> {
        match self {
            Self::Gone => None,
            Self::Absent => Some(None),
            Self::Value(value) => Some(Some(value)),
        }
    }

    /// The answer for a pin, if there is one (`None` inside for a key that had no value).
    pub fn from_option(pin: Option<Option<LatticeValue>>) -> Self {
        match pin {
            None => Self::Gone,
            Some(None) => Self::Absent,
            Some(Some(value)) => Self::Value(value),
        }
    }
}

impl Calls for SessionMsg {
    /// A client's `Call` or `Submit` of the scheduler.
    fn request(&self) -> Option<ReqId> {
        match self {
            Self::Call { req, .. } | Self::Submit { req, .. } => Some(*req),
            _ => None,
        }
    }

    /// The scheduler's `Done` and `Accepted`, and a harness's `Refused`.
    fn answers(&self) -> Option<ReqId> {
        match self {
            Self::Done { req, .. } | Self::Refused { req, .. } | Self::Accepted { req } => {
                Some(*req)
            }
            _ => None,
        }
    }

    fn refused(req: ReqId, refusal: Refusal) -> Self {
        Self::Refused { req, refusal }
    }
}

/// What a session runs, carried with each trigger so workers need no per-session setup.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SessionInfo {
    /// The client that called.
    pub client: NodeId,
    /// The client's request number.
    pub req: ReqId,
    /// The consistency level.
    pub level: Level,
    /// The DAG.
    pub dag: Dag,
    /// The worker each function runs on, by function id.
    pub placement: Vec<NodeId>,
}

/// The session protocol's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SessionTimer {
    /// Scheduler: sessions that made no progress for a whole tick are aborted.
    Deadline,
    /// Scheduler: releases not yet acknowledged are re-sent.
    Release,
    /// Worker: unanswered holds and remote reads are re-sent, waiting functions age.
    Retry,
    /// Worker: pins unused for `lease_ticks` ticks expire.
    Lease,
}

mutants! {
    /// Seeded defects that the session models must catch.
    pub enum Mutant {
        /// A downstream function reads its own cache's version of a key pinned elsewhere.
        SkipRemoteRead => "skip-remote-read",
        /// Pins are keyed by the client id instead of the session id (the reference code).
        PinByClient => "pin-by-client",
        /// A worker drops its pins of a session as soon as its function triggered the next ones.
        ReleaseBeforeSink => "release-before-sink",
        /// A worker acknowledges a release but keeps the pins.
        IgnoreRelease => "ignore-release",
        /// A cache moves a version into its causal cut without its dependencies.
        ExposeBeforeDeps => "expose-before-deps",
        /// Downstream functions ignore the upstream causal snapshot and frontier.
        IgnoreFrontier => "ignore-frontier",
        /// The scheduler records the result of a superseded session too.
        RecordEveryResult => "record-every-result",
        /// The scheduler gives up a request on its first abort.
        GiveUpOnAbort => "give-up-on-abort",
        /// A worker waits for a trigger from every other function of the DAG, not just the
        /// function's predecessors.
        EveryFunctionPrecedes => "every-function-precedes",
        /// A restarted worker takes the scheduler's acknowledgement of an earlier incarnation's
        /// hold for its new pins.
        StaleHoldOk => "stale-hold-ok",
        /// A function's causal write carries none of what its session read: a clock of its own
        /// and no dependencies.
        WriteWithoutDeps => "write-without-deps",
    }
}

#[cfg(test)]
mod tests;
