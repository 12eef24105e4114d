//! The one history type every level of testing records: the models, the simulator and the
//! cluster tests.
//!
//! A [`History`] is a list of operations. Each [`Op`] belongs to a client *session* and a
//! *transaction* (one DAG execution; a plain KVS operation is a transaction of its own), and is
//! a read or a write of one key at one *version*. Versions are numbers chosen by whoever
//! generated the workload, unique per key, with `0` reserved for the initial value (a key
//! nobody wrote). A write also names the versions it causally depends on, so checkers can
//! rebuild the causal order without knowing anything about vector clocks.
//!
//! The order of a key's versions depends on its [`KeyKind`]: an LWW register orders versions
//! by number (the workload gives later timestamps larger numbers); a causal key orders them by
//! the dependencies writes declare.
//!
//! Histories serialize as JSON lines ([`History::to_jsonl`]) and in the plain text format of
//! published transactional consistency checkers ([`History::to_text`]); [`crate::export`]
//! splits a world's history into files, each of which such a checker can judge.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// A key's name.
pub type Key = String;

/// A version of a key: unique per key, `0` for the initial value.
pub type Version = u64;

/// The version every key starts at.
pub const INITIAL: Version = 0;

/// What an operation promised, which decides the checks that apply to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// A KVS operation of a session whose writes are acknowledged by one replica: may be lost
    /// if that replica crashes before passing it on.
    One,
    /// A KVS operation of a session whose writes are acknowledged by a majority of replicas.
    Majority,
    /// A KVS operation of a session whose writes are acknowledged by every replica: the
    /// session reads its own writes.
    All,
    /// A function's read with no cross-function guarantee.
    Lww,
    /// Distributed-session repeatable read.
    Dsrr,
    /// Single-key causal: a key's versions never go backwards along a DAG path.
    SingleKey,
    /// Multi-key causal: each function's reads form a causal cut.
    MultiKey,
    /// Distributed-session causal.
    Dsc,
}

impl Level {
    /// Whether an acknowledged write at this level must survive a crash of one replica.
    pub fn durable(self) -> bool {
        !matches!(self, Self::One)
    }
}

/// Whether an operation read or wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A read, returning `version`.
    Read,
    /// A write of `version`.
    Write,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// It completed: a read returned, a write was acknowledged.
    Ok,
    /// It certainly did not happen (a write refused at its first attempt).
    Failed,
    /// It may or may not have happened (every attempt timed out, or it never ended).
    Unknown,
}

/// How a key's versions are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// A last-writer-wins register: versions ordered by number.
    #[default]
    Lww,
    /// A causal key: `a` precedes `b` when `b`'s write depends on `a`, transitively.
    Causal,
}

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client session.
    pub session: u64,
    /// The transaction: one DAG execution, or the operation itself.
    pub txn: u64,
    /// The function of the DAG that performed it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// What it promised.
    pub level: Level,
    /// Read or write.
    pub kind: Kind,
    /// The key.
    pub key: Key,
    /// The version written, or read ([`INITIAL`] for a key read before any write).
    pub version: Version,
    /// For a write: the versions it causally depends on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<(Key, Version)>,
    /// When it was invoked (a logical time: the simulator's step).
    pub invoke: u64,
    /// When it completed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<u64>,
    /// How it ended.
    pub status: Status,
}

impl Op {
    /// A completed read.
    pub fn read(session: u64, txn: u64, level: Level, key: &str, version: Version) -> Self {
        Self {
            session,
            txn,
            function: None,
            level,
            kind: Kind::Read,
            key: key.to_owned(),
            version,
            deps: Vec::new(),
            invoke: 0,
            complete: Some(0),
            status: Status::Ok,
        }
    }

    /// An acknowledged write.
    pub fn write(session: u64, txn: u64, level: Level, key: &str, version: Version) -> Self {
        Self { kind: Kind::Write, ..Self::read(session, txn, level, key, version) }
    }

    /// The same operation, performed by `function`.
    pub fn by(mut self, function: &str) -> Self {
        self.function = Some(function.to_owned());
        self
    }

    /// The same operation, invoked at `invoke` and completed at `complete`.
    pub fn at(mut self, invoke: u64, complete: Option<u64>) -> Self {
        self.invoke = invoke;
        self.complete = complete;
        self
    }

    /// The same operation, ending with `status`.
    pub fn with_status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    /// The same write, depending on `deps`.
    pub fn after(mut self, deps: &[(&str, Version)]) -> Self {
        self.deps = deps.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        self
    }

    /// Whether this is a completed read.
    pub fn is_read(&self) -> bool {
        self.kind == Kind::Read && self.status == Status::Ok
    }

    /// Whether this is a write.
    pub fn is_write(&self) -> bool {
        self.kind == Kind::Write
    }
}

/// What one replica held of one key once the system was quiescent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Held {
    /// The replica.
    pub replica: u64,
    /// The key.
    pub key: Key,
    /// Its version ([`INITIAL`] if the replica does not hold the key).
    pub version: Version,
}

/// A recorded history. See the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The operations, in the order recorded.
    pub ops: Vec<Op>,
    /// How each key's versions are ordered; keys not listed are LWW registers.
    pub kinds: BTreeMap<Key, KeyKind>,
    /// Per transaction, the pairs `(upstream, downstream)` of functions where the first
    /// precedes the second along a DAG path (transitively closed).
    pub precedes: BTreeMap<u64, BTreeSet<(String, String)>>,
    /// What every replica held once quiescent; empty if the run never was.
    pub settled: Vec<Held>,
    /// When the replicas had reached `settled`, if known: nothing wrote their keys after, so
    /// reads invoked from then on must return those versions (or later ones).
    pub settled_at: Option<u64>,
}

/// One line of the JSON-lines export: an operation, a key's kind, a DAG edge or a replica's
/// final value.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Line {
    Op(Op),
    Kind { key: Key, kind: KeyKind },
    Precedes { txn: u64, upstream: String, downstream: String },
    Held(Held),
    SettledAt { time: u64 },
}

/// What [`History::to_text`] adds to a version to make the value it writes: the initial
/// version 0 is written as 1, and no value is 0.
pub const TEXT_VALUE_OFFSET: u64 = 1;

/// A text history that could not be read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct TextParseError {
    /// The 1-based line number.
    pub line: usize,
    /// What was wrong with it.
    pub what: String,
}

/// One line of [`History::to_text`]'s format, its value turned back into a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TextLine {
    /// The 1-based line number.
    pub(crate) line: usize,
    pub(crate) kind: Kind,
    pub(crate) key: u64,
    pub(crate) version: Version,
    pub(crate) session: u64,
    pub(crate) txn: u64,
}

/// The operations of a text history, blank lines skipped.
pub(crate) fn text_lines(text: &str) -> impl Iterator<Item = Result<TextLine, TextParseError>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, raw)| text_line(i + 1, raw.trim()))
}

fn text_line(line: usize, raw: &str) -> Result<TextLine, TextParseError> {
    let bad = |what: String| TextParseError { line, what };
    let (kind, rest) = match raw.split_at_checked(1) {
        Some(("r", rest)) => (Kind::Read, rest),
        Some(("w", rest)) => (Kind::Write, rest),
        _ => return Err(bad(format!("`{raw}` is neither r(...) nor w(...)"))),
    };
    let fields = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad(format!("`{raw}`: expected four numbers in parentheses")))?;
    let fields: Vec<u64> = fields
        .split(',')
        .map(|f| f.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("`{raw}`: {e}")))?;
    let &[key, value, session, txn] = fields.as_slice() else {
        return Err(bad(format!("`{raw}`: {} fields, expected 4", fields.len())));
    };
    let version = value
        .checked_sub(TEXT_VALUE_OFFSET)
        .ok_or_else(|| bad(format!("`{raw}`: value 0 (values start at 1)")))?;
    Ok(TextLine { line, kind, key, version, session, txn })
}

/// A history export that could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {source}")]
pub struct ParseError {
    /// The 1-based line number.
    pub line: usize,
    /// What was wrong with it.
    pub source: serde_json::Error,
}

impl History {
    /// The causal order on versions: `le(key, a, b)` when version `a` of `key` is at or before
    /// `b`. [`INITIAL`] is before everything.
    pub fn order(&self) -> Order<'_> {
        let mut deps: BTreeMap<(Key, Version), Vec<(Key, Version)>> = BTreeMap::new();
        for op in self.ops.iter().filter(|op| op.is_write()) {
            let entry = deps.entry((op.key.clone(), op.version)).or_default();
            entry.extend(op.deps.iter().cloned());
        }
        Order { history: self, deps }
    }

    /// The kind of `key`.
    pub fn kind(&self, key: &str) -> KeyKind {
        self.kinds.get(key).copied().unwrap_or_default()
    }

    /// Whether function `upstream` precedes `downstream` in transaction `txn`.
    pub fn precedes(&self, txn: u64, upstream: &str, downstream: &str) -> bool {
        self.precedes
            .get(&txn)
            .is_some_and(|pairs| pairs.contains(&(upstream.to_owned(), downstream.to_owned())))
    }

    /// The history as JSON lines: one object per line, each with a `type` of `op`, `kind`,
    /// `precedes`, `held` or `settled-at`.
    pub fn to_jsonl(&self) -> String {
        let mut lines = Vec::new();
        for (key, kind) in &self.kinds {
            lines.push(Line::Kind { key: key.clone(), kind: *kind });
        }
        for (txn, pairs) in &self.precedes {
            for (upstream, downstream) in pairs {
                let (upstream, downstream) = (upstream.clone(), downstream.clone());
                lines.push(Line::Precedes { txn: *txn, upstream, downstream });
            }
        }
        lines.extend(self.ops.iter().cloned().map(Line::Op));
        lines.extend(self.settled.iter().cloned().map(Line::Held));
        lines.extend(self.settled_at.map(|time| Line::SettledAt { time }));
        let mut out = String::new();
        for line in lines {
            out.push_str(&serde_json::to_string(&line).expect("history lines serialize"));
            out.push('\n');
        }
        out
    }

    /// Reads a history back from [`History::to_jsonl`]'s format.
    pub fn from_jsonl(text: &str) -> Result<Self, ParseError> {
        let mut history = Self::default();
        for (i, raw) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let line =
                serde_json::from_str(raw).map_err(|source| ParseError { line: i + 1, source })?;
            match line {
                Line::Op(op) => history.ops.push(op),
                Line::Kind { key, kind } => {
                    history.kinds.insert(key, kind);
                }
                Line::Precedes { txn, upstream, downstream } => {
                    history.precedes.entry(txn).or_default().insert((upstream, downstream));
                }
                Line::Held(held) => history.settled.push(held),
                Line::SettledAt { time } => history.settled_at = Some(time),
            }
        }
        Ok(history)
    }

    /// The history in the text format of published transactional consistency checkers:
    /// `w(key,value,session,txn)` and `r(key,value,session,txn)`, one operation per line,
    /// grouped by transaction in the order of their first operation.
    ///
    /// Keys are numbered from 0 in sorted order (the mapping is [`History::key_numbers`]).
    /// Values are versions plus one ([`TEXT_VALUE_OFFSET`]), so no line carries the value 0
    /// that checkers read as an implicit, unordered initial state: an export that wants the
    /// initial values ordered writes them (version 0, value 1) in a transaction of its own, as
    /// [`crate::export`] does. Only operations that may have taken effect are written:
    /// completed reads, and writes not known to have failed (the format cannot mark an abort).
    /// Sessions and transactions keep their numbers. [`History::from_text`] reads it back.
    pub fn to_text(&self) -> String {
        let keys = self.key_numbers();
        let mut order: Vec<u64> = Vec::new();
        let mut txns: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
        for op in &self.ops {
            let exported = match op.kind {
                Kind::Read => op.status == Status::Ok,
                Kind::Write => op.status != Status::Failed,
            };
            if exported {
                if !txns.contains_key(&op.txn) {
                    order.push(op.txn);
                }
                txns.entry(op.txn).or_default().push(op);
            }
        }
        let mut out = String::new();
        for txn in order {
            for op in &txns[&txn] {
                let letter = if op.kind == Kind::Read { 'r' } else { 'w' };
                let key = keys[op.key.as_str()];
                let value = op.version + TEXT_VALUE_OFFSET;
                writeln!(out, "{letter}({key},{value},{},{})", op.session, op.txn)
                    .expect("writing to a string cannot fail");
            }
        }
        out
    }

    /// Reads back a history from [`History::to_text`]'s format, the way a published checker
    /// reads it: what the text does not say is taken from what the format means.
    ///
    /// - Keys are named by their numbers (`"0"`, `"1"`, ...); those in `causal` order their
    ///   versions by dependencies, the others by number.
    /// - Every operation promised `level`; all completed (the format holds no others). Each
    ///   line is invoked and completes at its line number, so a session's operations are
    ///   ordered as they are listed.
    /// - A write depends on its session's previous write and what the session read since
    ///   (so, transitively, on everything its session wrote or read before it: session order
    ///   and reads-from, the causality a checker infers), initial values aside.
    /// - A transaction's operations are steps of one DAG path in the order listed (each earlier
    ///   step upstream of each later one), except at [`Level::MultiKey`], where a transaction
    ///   is one function.
    pub fn from_text(
        text: &str,
        level: Level,
        causal: &BTreeSet<usize>,
    ) -> Result<Self, TextParseError> {
        let mut history = Self::default();
        // What each session's next write depends on: its last write, and what it read since
        // (the write's own dependencies hold the rest, transitively).
        let mut session_past: BTreeMap<u64, Vec<(Key, Version)>> = BTreeMap::new();
        let mut steps: BTreeMap<u64, usize> = BTreeMap::new();
        for line in text_lines(text) {
            let TextLine { line, kind, key, version, session, txn } = line?;
            let key_name = key.to_string();
            if causal.contains(&(key as usize)) {
                history.kinds.insert(key_name.clone(), KeyKind::Causal);
            }
            let step = steps.entry(txn).or_default();
            let function = (level != Level::MultiKey).then(|| step.to_string());
            if level != Level::MultiKey {
                let pairs = history.precedes.entry(txn).or_default();
                pairs.extend((0..*step).map(|up| (up.to_string(), step.to_string())));
            }
            *step += 1;
            let past = session_past.entry(session).or_default();
            let mut deps = Vec::new();
            if kind == Kind::Write && version != INITIAL {
                deps = std::mem::take(past);
            }
            if version != INITIAL {
                past.push((key_name.clone(), version));
            }
            history.ops.push(Op {
                session,
                txn,
                function,
                level,
                kind,
                key: key_name,
                version,
                deps,
                invoke: line as u64,
                complete: Some(line as u64),
                status: Status::Ok,
            });
        }
        Ok(history)
    }

    /// The number [`History::to_text`] gives each key: its rank in sorted order.
    pub fn key_numbers(&self) -> BTreeMap<&str, usize> {
        let keys: BTreeSet<&str> = self.ops.iter().map(|op| op.key.as_str()).collect();
        keys.into_iter().enumerate().map(|(i, k)| (k, i)).collect()
    }
}

/// The versions of one key at or before one version, from [`Order::below`].
#[derive(Debug)]
pub struct Below {
    kind: KeyKind,
    b: Version,
    past: BTreeSet<Version>,
}

impl Below {
    /// Whether version `a` is at or before the version this was made for.
    pub fn contains(&self, a: Version) -> bool {
        if a == self.b || a == INITIAL {
            return true;
        }
        match self.kind {
            KeyKind::Lww => a <= self.b,
            KeyKind::Causal => self.past.contains(&a),
        }
    }
}

/// The version order of a [`History`], from [`History::order`].
#[derive(Debug)]
pub struct Order<'a> {
    history: &'a History,
    /// Per written version, the versions its write depends on.
    deps: BTreeMap<(Key, Version), Vec<(Key, Version)>>,
}

impl Order<'_> {
    /// Whether version `a` of `key` is at or before version `b`.
    pub fn le(&self, key: &str, a: Version, b: Version) -> bool {
        if a == b || a == INITIAL {
            return true;
        }
        match self.history.kind(key) {
            KeyKind::Lww => a <= b,
            KeyKind::Causal => self.past(key, b).contains(&(key.to_owned(), a)),
        }
    }

    /// What is at or before version `b` of `key`, walked once, for comparing many versions
    /// against it ([`Below::contains`] answers as [`Order::le`] would).
    pub fn below(&self, key: &str, b: Version) -> Below {
        let past = match self.history.kind(key) {
            KeyKind::Lww => BTreeSet::new(),
            KeyKind::Causal => {
                self.past(key, b).into_iter().filter(|(k, _)| k == key).map(|(_, v)| v).collect()
            }
        };
        Below { kind: self.history.kind(key), b, past }
    }

    /// The causal past of version `version` of `key`: every version its write depends on,
    /// transitively (not including itself).
    pub fn past(&self, key: &str, version: Version) -> BTreeSet<(Key, Version)> {
        let mut seen: BTreeSet<(Key, Version)> = BTreeSet::new();
        let mut stack: Vec<(Key, Version)> = vec![(key.to_owned(), version)];
        while let Some(at) = stack.pop() {
            for dep in self.deps.get(&at).map(Vec::as_slice).unwrap_or_default() {
                if seen.insert(dep.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        seen
    }
}
