//! Consistency checkers: small pure functions of a [`History`], independent of the protocol
//! code. Each returns the first [`Anomaly`] it finds.
//!
//! | checker | applies to | holds when |
//! |---|---|---|
//! | [`convergence`] | the settled replicas, and reads invoked once settled | every replica of a key holds the same version, and later reads return it (or a later one) |
//! | [`thin_air`] | every read and settled value | it is the initial value or a version some write that did not fail wrote |
//! | [`lost_write`] | acknowledged writes at a [durable](Level::durable) level | every settled replica of the key holds that version or a later one |
//! | [`repeatable_read`] | reads at [`Level::Dsrr`] | every read of a key in one transaction returns the same version |
//! | [`monotonic_reads`] | reads at DSRR, SK and DSC | a function reads a key at or after what an upstream function read |
//! | [`causal_cut`] | functions at MK and DSC | for each version a function read, its reads of the version's causal past are at or after it |
//! | [`session_causal`] | transactions at DSC | along every DAG path: the same version of a key, and a causal cut across the two functions |
//! | [`read_your_writes`] | sessions at [`Level::All`] | a read returns the session's own earlier acknowledged write of the key, or a later version |

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{History, INITIAL, Key, Kind, Level, Op, Status, Version};

/// A violated consistency property, named by its checker.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {detail}")]
pub struct Anomaly {
    /// The checker that found it (for example `lost-write`).
    pub check: &'static str,
    /// What was observed.
    pub detail: String,
}

/// A checker's verdict.
pub type Verdict = Result<(), Anomaly>;

/// A named checker.
pub type Checker = fn(&History) -> Verdict;

/// Every checker, with its name, in the order of the module table.
pub const ALL: [(&str, Checker); 8] = [
    ("convergence", convergence),
    ("thin-air", thin_air),
    ("lost-write", lost_write),
    ("repeatable-read", repeatable_read),
    ("monotonic-reads", monotonic_reads),
    ("causal-cut", causal_cut),
    ("session-causal", session_causal),
    ("read-your-writes", read_your_writes),
];

/// Runs every checker; the first anomaly found, if any.
pub fn all(history: &History) -> Verdict {
    ALL.iter().try_for_each(|(_, check)| check(history))
}

fn anomaly(check: &'static str, detail: String) -> Verdict {
    Err(Anomaly { check, detail })
}

fn describe(op: &Op) -> String {
    let what = if op.kind == Kind::Read { "read" } else { "write" };
    let by = op.function.as_deref().map(|f| format!(" by {f}")).unwrap_or_default();
    format!("{what} {}@{} (session {}, txn {}{by})", op.key, op.version, op.session, op.txn)
}

/// Every replica that holds a key once quiescent holds the same version of it, and a read
/// invoked once the replicas had settled (see [`History::settled_at`]) returns that version or
/// a later one: no cache or replica is left behind.
pub fn convergence(history: &History) -> Verdict {
    let mut seen: BTreeMap<&str, (u64, Version)> = BTreeMap::new();
    for held in &history.settled {
        match seen.get(held.key.as_str()) {
            Some(&(replica, version)) if version != held.version => {
                return anomaly(
                    "convergence",
                    format!(
                        "{} is {version} on replica {replica} but {} on replica {}",
                        held.key, held.version, held.replica
                    ),
                );
            }
            Some(_) => {}
            None => {
                seen.insert(&held.key, (held.replica, held.version));
            }
        }
    }
    let Some(settled_at) = history.settled_at else { return Ok(()) };
    let order = history.order();
    let late = history.ops.iter().filter(|op| op.is_read() && op.invoke >= settled_at);
    for op in late {
        if let Some(&(replica, version)) = seen.get(op.key.as_str())
            && !order.le(&op.key, version, op.version)
        {
            return anomaly(
                "convergence",
                format!(
                    "{} after the replicas settled (replica {replica} holds {version})",
                    describe(op)
                ),
            );
        }
    }
    Ok(())
}

/// Every completed read, and every settled value, is the initial value or a version written
/// by a write that did not certainly fail.
pub fn thin_air(history: &History) -> Verdict {
    let written: BTreeSet<(&str, Version)> = history
        .ops
        .iter()
        .filter(|op| op.is_write() && op.status != Status::Failed)
        .map(|op| (op.key.as_str(), op.version))
        .collect();
    let known = |key: &str, version| version == INITIAL || written.contains(&(key, version));
    if let Some(op) = history.ops.iter().find(|op| op.is_read() && !known(&op.key, op.version)) {
        return anomaly(
            "thin-air",
            format!("{}: no write that took effect wrote it", describe(op)),
        );
    }
    if let Some(held) = history.settled.iter().find(|h| !known(&h.key, h.version)) {
        return anomaly(
            "thin-air",
            format!(
                "replica {} settled on {}@{}, which nobody wrote",
                held.replica, held.key, held.version
            ),
        );
    }
    Ok(())
}

/// Every acknowledged write at a durable level is held, once quiescent, by every replica of
/// its key at that version or a later one. Vacuous if the history never settled.
pub fn lost_write(history: &History) -> Verdict {
    if history.settled.is_empty() {
        return Ok(());
    }
    let order = history.order();
    let mut settled: BTreeMap<&str, Vec<(u64, Version)>> = BTreeMap::new();
    for held in &history.settled {
        settled.entry(&held.key).or_default().push((held.replica, held.version));
    }
    let acknowledged = history
        .ops
        .iter()
        .filter(|op| op.is_write() && op.status == Status::Ok && op.level.durable());
    for op in acknowledged {
        let Some(replicas) = settled.get(op.key.as_str()) else {
            return anomaly(
                "lost-write",
                format!("{} acknowledged, but no replica holds the key", describe(op)),
            );
        };
        if let Some((replica, version)) =
            replicas.iter().find(|(_, version)| !order.le(&op.key, op.version, *version))
        {
            return anomaly(
                "lost-write",
                format!(
                    "{} acknowledged, but replica {replica} settled on {version}",
                    describe(op)
                ),
            );
        }
    }
    Ok(())
}

/// The completed reads of each transaction, grouped by function (`""` for none).
fn reads_by_txn(history: &History) -> BTreeMap<u64, Vec<&Op>> {
    let mut txns: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.is_read()) {
        txns.entry(op.txn).or_default().push(op);
    }
    txns
}

/// In a transaction at DSRR, every read of a key returns the same version.
pub fn repeatable_read(history: &History) -> Verdict {
    for reads in reads_by_txn(history).values() {
        let mut first: BTreeMap<&str, &Op> = BTreeMap::new();
        for op in reads.iter().filter(|op| op.level == Level::Dsrr) {
            let earlier = *first.entry(&op.key).or_insert(op);
            if earlier.version != op.version {
                return anomaly(
                    "repeatable-read",
                    format!("{} after {}", describe(op), describe(earlier)),
                );
            }
        }
    }
    Ok(())
}

/// Pairs of reads `(upstream, downstream)` of one transaction where the first's function
/// precedes the second's, among reads at one of `levels`.
fn along_paths<'h>(
    history: &'h History,
    levels: &[Level],
) -> impl Iterator<Item = (&'h Op, &'h Op)> + 'h {
    let levels = levels.to_vec();
    reads_by_txn(history).into_values().flat_map(move |reads| {
        let reads: Vec<&Op> = reads.into_iter().filter(|op| levels.contains(&op.level)).collect();
        let mut pairs = Vec::new();
        for up in &reads {
            for down in &reads {
                let (Some(f), Some(g)) = (&up.function, &down.function) else { continue };
                if history.precedes(up.txn, f, g) {
                    pairs.push((*up, *down));
                }
            }
        }
        pairs
    })
}

/// Along every DAG path of a transaction at DSRR, SK or DSC, a key's versions never go
/// backwards: a downstream function reads it at or after the version an upstream one read.
pub fn monotonic_reads(history: &History) -> Verdict {
    let order = history.order();
    for (up, down) in along_paths(history, &[Level::Dsrr, Level::SingleKey, Level::Dsc]) {
        if up.key == down.key && !order.le(&up.key, up.version, down.version) {
            return anomaly(
                "monotonic-reads",
                format!("{} after {}", describe(down), describe(up)),
            );
        }
    }
    Ok(())
}

/// Whether `read` and `other` are consistent as one causal cut: `other`'s version of its key
/// is at or after every version of that key in `read`'s causal past.
fn cut_holds(order: &crate::history::Order<'_>, read: &Op, other: &Op) -> bool {
    let past = order.past(&read.key, read.version);
    let mut earlier = past.iter().filter(|(key, _)| *key == other.key).peekable();
    if earlier.peek().is_none() {
        return true;
    }
    // `other`'s own past, walked once rather than once per version compared.
    let below = order.below(&other.key, other.version);
    earlier.all(|(_, version)| below.contains(*version))
}

/// Each function at MK or DSC reads a causal cut: for every version it read, its read of any
/// key in that version's causal past is at or after the version there.
pub fn causal_cut(history: &History) -> Verdict {
    let order = history.order();
    let mut functions: BTreeMap<(u64, Option<&str>), Vec<&Op>> = BTreeMap::new();
    let cut_levels = [Level::MultiKey, Level::Dsc];
    for op in history.ops.iter().filter(|op| op.is_read() && cut_levels.contains(&op.level)) {
        functions.entry((op.txn, op.function.as_deref())).or_default().push(op);
    }
    for reads in functions.values() {
        for read in reads {
            if let Some(other) = reads.iter().find(|other| !cut_holds(&order, read, other)) {
                return anomaly(
                    "causal-cut",
                    format!("{} is older than what {} depends on", describe(other), describe(read)),
                );
            }
        }
    }
    Ok(())
}

/// Along every DAG path of a transaction at DSC: a downstream function reads a key at exactly
/// the version an upstream one read, and the two functions' reads form one causal cut (in both
/// directions). Together with [`causal_cut`] per function, this is distributed-session causal
/// consistency.
pub fn session_causal(history: &History) -> Verdict {
    let order = history.order();
    for (up, down) in along_paths(history, &[Level::Dsc]) {
        if up.key == down.key && up.version != down.version {
            return anomaly(
                "session-causal",
                format!("{} after {}: not the same version", describe(down), describe(up)),
            );
        }
        if !cut_holds(&order, up, down) || !cut_holds(&order, down, up) {
            return anomaly(
                "session-causal",
                format!("{} and upstream {} are not one causal cut", describe(down), describe(up)),
            );
        }
    }
    Ok(())
}

/// In a session at [`Level::All`], a read returns the session's own acknowledged write of the
/// key (completed before the read was invoked) or a later version.
pub fn read_your_writes(history: &History) -> Verdict {
    let order = history.order();
    let mut sessions: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.level == Level::All && op.status == Status::Ok) {
        sessions.entry(op.session).or_default().push(op);
    }
    for ops in sessions.values() {
        let mut writes: BTreeMap<&Key, Vec<&Op>> = BTreeMap::new();
        for op in ops.iter().filter(|op| op.is_write()) {
            writes.entry(&op.key).or_default().push(op);
        }
        for read in ops.iter().filter(|op| op.is_read()) {
            let earlier = writes
                .get(&read.key)
                .into_iter()
                .flatten()
                .filter(|w| w.complete.is_some_and(|done| done <= read.invoke));
            for write in earlier {
                if !order.le(&read.key, write.version, read.version) {
                    return anomaly(
                        "read-your-writes",
                        format!("{} after its own {}", describe(read), describe(write)),
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
