//! Histories a published isolation checker can judge: a world's history split into files, each
//! asking one question at one level.
//!
//! A recorded [`History`] mixes what many operations promised — a DSRR call, an SK call and a
//! writer's puts side by side — and records DAG executions as they ran, siblings unordered.
//! Fed as it is to a checker that takes one isolation level per file, it is judged by the
//! wrong rules. [`export`] regroups it so that each file's transactions and sessions mean what
//! such a checker assumes:
//!
//! | world | file | transactions | checker level |
//! |---|---|---|---|
//! | session | `session-lww` | one per function, each its own session | read committed |
//! | session | `session-dsrr` | one per DAG execution, each its own session | read atomic |
//! | session | `session-sk` | one per DAG path (functions in path order), each its own session | read committed |
//! | session | `session-mk` | one per function, each its own session | causal |
//! | session | `session-dsc` | one per DAG path, each its own session | causal |
//! | kvs | `kvs-committed` | one per operation, each its own session | read committed |
//! | gossip | `gossip-converged` | one per write, each its own session; one reading what every replica settled on | read atomic |
//!
//! Every file starts with an explicit initial transaction writing version 0 of each key it
//! names. In the session world it is the first transaction of the writer's session, so session
//! order puts it before every put: a checker cannot order a read of an initial value after a
//! read that saw a later one. The writer is the one session with more than one transaction:
//! its puts ran one at a time, and at the causal levels each depends on the one before, which
//! is what session order tells a checker. A read that repeats the version its key was last read
//! at in the transaction (two functions of one path, two replicas) is written once; a read of
//! another version is always written, so a key going back (`x@3`, `x@5`, `x@3`) stays visible,
//! and every level here but read committed rejects two versions of a key in one transaction.
//! Writes that certainly failed are kept in each file's JSON lines with status `failed` and
//! listed in the manifest: the text format cannot mark an abort, so there a read of one shows
//! as a read of a value nobody wrote.
//!
//! DSC is exported per path, not also per DAG: it promises nothing between functions on no
//! common path, so a file holding a whole execution as one causal transaction would ask more
//! than the level promises.
//!
//! What no file can say is listed by [`checked_here_only`], with the reason.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::{History, INITIAL, Key, KeyKind, Kind, Level, Op, Status, Version};

/// The isolation level a published checker should judge a file at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Read committed: every read returns a committed value, and within a transaction, a key
    /// never reads older than a write that an earlier read of the transaction saw.
    ReadCommitted,
    /// Read atomic: a transaction sees all or none of what another transaction wrote, and
    /// never two versions of one key.
    ReadAtomic,
    /// Transactional causal consistency.
    Causal,
}

impl Isolation {
    /// The level's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReadCommitted => "read committed",
            Self::ReadAtomic => "read atomic",
            Self::Causal => "causal",
        }
    }

    /// The level's name in Plume's `-i` option.
    pub fn plume(self) -> &'static str {
        match self {
            Self::ReadCommitted => "RC",
            Self::ReadAtomic => "RA",
            Self::Causal => "TCC",
        }
    }
}

/// One exported file: a history regrouped to ask one question.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The file's name without seed or extension (for example `session-dsc`).
    pub name: &'static str,
    /// The world it came from.
    pub world: &'static str,
    /// The level a published checker should judge it at.
    pub isolation: Isolation,
    /// The level squall-verify's own checkers read it back at ([`History::from_text`]): what
    /// its operations promised, or for `gossip-converged`, DSRR, whose repeatable read is the
    /// question its one reading transaction asks (gossip promises no level of its own).
    pub level: Level,
    /// How operations are grouped into transactions and sessions.
    pub grouping: &'static str,
    /// Why that level at that grouping is what the protocol promises.
    pub why: &'static str,
    /// The regrouped history, its initial transaction first.
    pub history: History,
}

impl Exported {
    /// The keys whose versions are ordered by dependencies, by their text numbers.
    pub fn causal_keys(&self) -> BTreeSet<usize> {
        let numbers = self.history.key_numbers();
        numbers
            .iter()
            .filter(|(key, _)| self.history.kind(key) == KeyKind::Causal)
            .map(|(_, n)| *n)
            .collect()
    }

    /// The file's manifest entry, naming its text and JSON-lines files `{prefix}.txt` and
    /// `{prefix}.jsonl`.
    pub fn entry(&self, prefix: &str) -> ManifestEntry {
        let ops = &self.history.ops;
        let sessions: BTreeSet<u64> = ops.iter().map(|op| op.session).collect();
        let txns: BTreeSet<u64> = ops.iter().map(|op| op.txn).collect();
        let aborted = ops
            .iter()
            .filter(|op| op.is_write() && op.status == Status::Failed)
            .map(|op| Aborted { key: op.key.clone(), version: op.version })
            .collect();
        ManifestEntry {
            text: format!("{prefix}.txt"),
            jsonl: format!("{prefix}.jsonl"),
            world: self.world.to_owned(),
            isolation: self.isolation,
            plume: self.isolation.plume().to_owned(),
            level: self.level,
            grouping: self.grouping.to_owned(),
            why: self.why.to_owned(),
            keys: self.history.key_numbers().into_iter().map(|(k, n)| (k.to_owned(), n)).collect(),
            causal_keys: self.causal_keys().into_iter().collect(),
            values: "the version plus 1: value 1 is the initial value, written by the first \
                     transaction"
                .to_owned(),
            sessions: sessions.len(),
            transactions: txns.len(),
            operations: ops.len(),
            aborted,
        }
    }
}

/// A write that certainly failed, listed because the text format cannot mark it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aborted {
    /// The key.
    pub key: Key,
    /// The version it would have written.
    pub version: Version,
}

/// One file's line in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The text file, for a published checker.
    pub text: String,
    /// The same history as JSON lines, for squall-verify (with aborted writes and
    /// dependencies).
    pub jsonl: String,
    /// The world it came from.
    pub world: String,
    /// The level to judge it at.
    pub isolation: Isolation,
    /// That level as Plume's `-i` option names it.
    pub plume: String,
    /// The level squall-verify's own checkers read it back at (see [`Exported::level`]).
    pub level: Level,
    /// How operations are grouped.
    pub grouping: String,
    /// Why that level at that grouping.
    pub why: String,
    /// Each key's number in the text file.
    pub keys: BTreeMap<Key, usize>,
    /// The numbers of the keys whose versions are ordered by dependencies (the others are
    /// last-writer-wins registers, ordered by version).
    pub causal_keys: Vec<usize>,
    /// How text values relate to versions.
    pub values: String,
    /// How many sessions.
    pub sessions: usize,
    /// How many transactions.
    pub transactions: usize,
    /// How many operations (the JSON lines' count, aborted writes included).
    pub operations: usize,
    /// Writes that certainly failed: in the JSON lines, not in the text.
    pub aborted: Vec<Aborted>,
}

/// The manifest of one seed's export (`seed-S-manifest.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The seed.
    pub seed: u64,
    /// The mutant the run had, if any.
    pub mutant: Option<String>,
    /// Each exported file.
    pub files: Vec<ManifestEntry>,
    /// The promises no file states, which only squall-verify's checkers judge.
    pub checked_here_only: Vec<CheckedHereOnly>,
}

/// Which judge rejected an exported file, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rejected by the {by}: {why}")]
pub struct Rejection {
    /// The judge: the isolation checker, or squall-verify's checkers on the text or on the
    /// JSON lines.
    pub by: &'static str,
    /// What it found.
    pub why: String,
}

/// Judges one exported file three ways: its `text` by the black-box
/// [isolation checker](crate::isolation) at `isolation`; and by squall-verify's
/// [checkers](crate::check), the text as read back ([`History::from_text`], `from_text`) and
/// the JSON lines (`from_jsonl`). The first judge that rejects it, if any.
pub fn judge(
    text: &str,
    isolation: Isolation,
    from_text: &History,
    from_jsonl: &History,
) -> Result<(), Rejection> {
    let rejection = |by, why: String| Rejection { by, why };
    crate::isolation::check(text, isolation)
        .map_err(|e| rejection("isolation checker", e.to_string()))?;
    crate::check::all(from_text)
        .map_err(|e| rejection("own checkers on the text", e.to_string()))?;
    crate::check::all(from_jsonl)
        .map_err(|e| rejection("own checkers on the JSON lines", e.to_string()))
}

/// A promise of a world that no exported file states, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedHereOnly {
    /// The world.
    pub world: String,
    /// The promise.
    pub promise: String,
    /// The squall-verify checker that judges it.
    pub checker: String,
    /// Why a published isolation checker cannot be asked.
    pub reason: String,
}

/// The promises of `world` that only squall-verify's own checkers judge, with the reasons
/// (none for a world it does not know).
pub fn checked_here_only(world: &str) -> Vec<CheckedHereOnly> {
    let promises: &[(&str, &str, &str)] = match world {
        "gossip" => &GOSSIP_ONLY,
        "kvs" => &KVS_ONLY,
        "session" => &SESSION_ONLY,
        _ => &[],
    };
    promises
        .iter()
        .map(|&(promise, checker, reason)| CheckedHereOnly {
            world: world.to_owned(),
            promise: promise.to_owned(),
            checker: checker.to_owned(),
            reason: reason.to_owned(),
        })
        .collect()
}

/// `(promise, checker, reason)` of the gossip world.
const GOSSIP_ONLY: [(&str, &str, &str); 1] = [(
    "an acknowledged write is never lost: replicas settle on the highest stamp",
    "lost-write",
    "the winner is the write with the highest stamp, an order the clients chose; a checker \
     infers a commit order from sessions and reads, and may choose any",
)];

/// `(promise, checker, reason)` of the KVS world.
const KVS_ONLY: [(&str, &str, &str); 2] = [
    (
        "a session at `all` reads its own acknowledged writes",
        "read-your-writes",
        "last-writer-wins orders a key's versions by the writers' stamps, which the format \
         cannot state; a checker free to choose the commit order accepts a session reading an \
         older-stamped write after its own. And read-your-writes alone is weaker than every \
         level these checkers take: a later read may go back when a write at `one` is lost, \
         which read atomic or causal would reject",
    ),
    (
        "an acknowledged write at `majority` or `all` survives, and replicas converge",
        "lost-write, convergence",
        "these are about what replicas hold once settled, not what reads returned",
    ),
];

/// `(promise, checker, reason)` of the session world.
const SESSION_ONLY: [(&str, &str, &str); 1] = [(
    "a causal sink's write (at SK, MK or DSC) is one the call made",
    "the session world's SESS-W invariant",
    "two attempts of one call write concurrent versions whose join no single write made, \
     which no transaction in the format can express",
)];

/// The files of one world's history (none for a world it does not know). The session
/// world's writer is told apart by its operations naming no function.
pub fn export(world: &str, history: &History) -> Vec<Exported> {
    match world {
        "gossip" => gossip(history).into_iter().collect(),
        "kvs" => vec![kvs(history)],
        "session" => session(history),
        _ => Vec::new(),
    }
}

/// Builds one file: renumbers sessions and transactions, adds the initial transaction.
struct Builder<'h> {
    source: &'h History,
    level: Level,
    ops: Vec<Op>,
    precedes: BTreeMap<u64, BTreeSet<(String, String)>>,
    next_session: u64,
    next_txn: u64,
    /// The session the initial transaction opens, if it opens one of the workload's.
    initial_in: Option<u64>,
}

impl<'h> Builder<'h> {
    fn new(source: &'h History, level: Level) -> Self {
        Self {
            source,
            level,
            ops: Vec::new(),
            precedes: BTreeMap::new(),
            next_session: 1,
            next_txn: 1,
            initial_in: None,
        }
    }

    /// A new session's number.
    fn session(&mut self) -> u64 {
        self.next_session += 1;
        self.next_session - 1
    }

    /// Appends a transaction of `ops` to `session`, leaving out a read of the version its key
    /// was last read at in the transaction; the functions in `path` (in order) are recorded as
    /// each preceding the later ones.
    fn txn<'a>(&mut self, session: u64, ops: impl IntoIterator<Item = &'a Op>, path: &[&str]) {
        let txn = self.next_txn;
        self.next_txn += 1;
        // The version each key was last read at: a read repeating it adds nothing.
        let mut last: BTreeMap<&str, Version> = BTreeMap::new();
        for op in ops {
            if op.kind == Kind::Read && last.insert(&op.key, op.version) == Some(op.version) {
                continue;
            }
            self.ops.push(Op { session, txn, level: self.level, ..op.clone() });
        }
        let pairs: BTreeSet<(String, String)> = path
            .iter()
            .enumerate()
            .flat_map(|(i, up)| path[i + 1..].iter().map(move |down| (*up, *down)))
            .map(|(up, down)| (up.to_owned(), down.to_owned()))
            .collect();
        if !pairs.is_empty() {
            self.precedes.insert(txn, pairs);
        }
    }

    /// The file: the initial transaction (txn 0, in `initial_in` or a session of its own)
    /// writing version 0 of every key named, then the transactions in the order added.
    fn finish(
        self,
        name: &'static str,
        isolation: Isolation,
        grouping: &'static str,
        why: &'static str,
    ) -> Exported {
        let keys: BTreeSet<&Key> = self.ops.iter().map(|op| &op.key).collect();
        let session = self.initial_in.unwrap_or(0);
        let mut ops: Vec<Op> = keys
            .iter()
            .map(|key| Op::write(session, 0, self.level, key, INITIAL).at(0, Some(0)))
            .collect();
        let kinds = keys
            .iter()
            .filter(|key| self.source.kind(key) == KeyKind::Causal)
            .map(|key| ((*key).clone(), KeyKind::Causal))
            .collect();
        ops.extend(self.ops);
        let history = History { ops, kinds, precedes: self.precedes, ..History::default() };
        Exported {
            name,
            world: world_of(name),
            isolation,
            level: self.level,
            grouping,
            why,
            history,
        }
    }
}

fn world_of(name: &'static str) -> &'static str {
    name.split('-').next().unwrap_or(name)
}

/// One of the session world's files: which calls, and how a checker should read them.
struct SessionFile {
    level: Level,
    name: &'static str,
    isolation: Isolation,
    grouping: &'static str,
    why: &'static str,
}

/// How the session world's calls of each level are grouped.
const SESSION_FILES: [SessionFile; 5] = [
    SessionFile {
        level: Level::Lww,
        name: "session-lww",
        isolation: Isolation::ReadCommitted,
        grouping: "one transaction per function, each in a session of its own",
        why: "an LWW call promises only that each read returns a value some write wrote",
    },
    SessionFile {
        level: Level::Dsrr,
        name: "session-dsrr",
        isolation: Isolation::ReadAtomic,
        grouping: "one transaction per DAG execution (functions in a topological order), each \
                   in a session of its own",
        why: "DSRR promises every function of an execution the same version of a key; \
              siblings run in no order, which read atomic does not need",
    },
    SessionFile {
        level: Level::SingleKey,
        name: "session-sk",
        isolation: Isolation::ReadCommitted,
        grouping: "one transaction per DAG path (functions in path order), each in a session \
                   of its own",
        why: "SK promises a key's versions never go backwards along a path; sibling paths may \
              read different versions, and read committed orders only reads within a \
              transaction",
    },
    SessionFile {
        level: Level::MultiKey,
        name: "session-mk",
        isolation: Isolation::Causal,
        grouping: "one transaction per function, each in a session of its own",
        why: "MK promises each function a causal cut, and nothing across functions",
    },
    SessionFile {
        level: Level::Dsc,
        name: "session-dsc",
        isolation: Isolation::Causal,
        grouping: "one transaction per DAG path (functions in path order), each in a session \
                   of its own",
        why: "DSC promises along every path the same version of a key and one causal cut; \
              sibling paths are not ordered",
    },
];

/// The session world: one file per level its calls ran at.
fn session(history: &History) -> Vec<Exported> {
    let writer: Vec<&Op> = history.ops.iter().filter(|op| op.function.is_none()).collect();
    let mut out = Vec::new();
    for spec in &SESSION_FILES {
        let mut calls: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
        for op in history.ops.iter().filter(|op| op.function.is_some() && op.level == spec.level) {
            calls.entry(op.txn).or_default().push(op);
        }
        if calls.is_empty() {
            continue;
        }
        let mut file = Builder::new(history, spec.level);
        let writer_session = file.session();
        file.initial_in = Some(writer_session);
        for op in &writer {
            file.txn(writer_session, [*op], &[]);
        }
        for (txn, ops) in &calls {
            execution(&mut file, history, *txn, ops);
        }
        out.push(file.finish(spec.name, spec.isolation, spec.grouping, spec.why));
    }
    out
}

/// Adds DAG execution `txn`'s operations to `file`, grouped as its level's file groups them.
fn execution(file: &mut Builder<'_>, history: &History, txn: u64, ops: &[&Op]) {
    let by_function = by_function(ops);
    match file.level {
        Level::Lww | Level::MultiKey => {
            for ops in by_function.values() {
                let session = file.session();
                file.txn(session, ops.iter().copied(), &[]);
            }
        }
        Level::Dsrr => {
            let order = topological(history, txn, &by_function);
            let ops = order.iter().flat_map(|f| by_function[f].iter().copied());
            let session = file.session();
            file.txn(session, ops, &order);
        }
        _ => {
            let paths = paths(history, txn, &by_function);
            // A function's writes belong to one transaction: the first path through it.
            let first_path = |f: &str| paths.iter().position(|p| p.contains(&f));
            for (i, path) in paths.iter().enumerate() {
                let ops = path.iter().flat_map(|f| by_function[f].iter().copied()).filter(|op| {
                    op.kind == Kind::Read
                        || first_path(op.function.as_deref().unwrap_or("")) == Some(i)
                });
                let session = file.session();
                file.txn(session, ops, path);
            }
        }
    }
}

/// A DAG execution's operations by function, each function's in the order recorded.
fn by_function<'h>(ops: &[&'h Op]) -> BTreeMap<&'h str, Vec<&'h Op>> {
    let mut functions: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        functions.entry(op.function.as_deref().unwrap_or("")).or_default().push(op);
    }
    functions
}

/// The functions of transaction `txn` in a topological order: by how many precede each.
fn topological<'h>(
    history: &History,
    txn: u64,
    functions: &BTreeMap<&'h str, Vec<&Op>>,
) -> Vec<&'h str> {
    let mut order: Vec<&str> = functions.keys().copied().collect();
    let upstream = |f: &str| functions.keys().filter(|g| history.precedes(txn, g, f)).count();
    order.sort_by_key(|f| upstream(f));
    order
}

/// The maximal paths through the functions of transaction `txn` (chains of the precedes
/// relation, each function followed by those directly after it).
fn paths<'h>(
    history: &History,
    txn: u64,
    functions: &BTreeMap<&'h str, Vec<&Op>>,
) -> Vec<Vec<&'h str>> {
    let names: Vec<&str> = functions.keys().copied().collect();
    let before = |f: &str, g: &str| history.precedes(txn, f, g);
    let next = |f: &str| -> Vec<&'h str> {
        names
            .iter()
            .copied()
            .filter(|g| before(f, g) && !names.iter().any(|h| before(f, h) && before(h, g)))
            .collect()
    };
    let mut paths = Vec::new();
    let mut stack: Vec<Vec<&str>> = names
        .iter()
        .copied()
        .filter(|g| !names.iter().any(|f| before(f, g)))
        .map(|f| vec![f])
        .collect();
    while let Some(path) = stack.pop() {
        let last = *path.last().expect("paths are not empty");
        let after = next(last);
        for &g in &after {
            let mut longer = path.clone();
            longer.push(g);
            stack.push(longer);
        }
        if after.is_empty() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
}

/// The KVS world: every operation a transaction and a session of its own.
fn kvs(history: &History) -> Exported {
    let mut file = Builder::new(history, Level::One);
    for op in &history.ops {
        let session = file.session();
        file.txn(session, [op], &[]);
    }
    file.finish(
        "kvs-committed",
        Isolation::ReadCommitted,
        "one transaction per operation, each in a session of its own",
        "every KVS read returns a value some write wrote (or the initial one); what more a \
         level promises is not stated here (see the manifest's checked_here_only)",
    )
}

/// The gossip world: each write a session of its own, then one transaction reading what every
/// replica settled on (once), which read atomic rejects if two replicas differ.
fn gossip(history: &History) -> Option<Exported> {
    if history.settled.is_empty() {
        return None;
    }
    let mut file = Builder::new(history, Level::Dsrr);
    for op in &history.ops {
        let session = file.session();
        file.txn(session, [op], &[]);
    }
    let reads: Vec<Op> = history
        .settled
        .iter()
        .map(|held| {
            let op = Op::read(0, 0, Level::Dsrr, &held.key, held.version);
            op.by(&format!("replica-{}", held.replica))
        })
        .collect();
    let session = file.session();
    file.txn(session, &reads, &[]);
    Some(file.finish(
        "gossip-converged",
        Isolation::ReadAtomic,
        "one transaction per client write, each in a session of its own; last, one transaction \
         reading the register from every replica once the network healed",
        "once quiet, every replica holds the same version: read as one transaction, two \
         different versions are a fractured read (squall-verify reads it back at DSRR, whose \
         repeatable read asks the same)",
    ))
}
