//! A black-box isolation checker for the text format, judging a file as a published checker
//! would: only from its transactions, sessions and the values read and written.
//!
//! It follows the axioms of Biswas and Enea ("On the complexity of checking transactional
//! consistency", OOPSLA 2019). Every value is written once, so each read names the transaction
//! it read from (*write-read*, `wr`); *session order* (`so`) orders a session's transactions as
//! listed. A history is consistent at a level when some commit order — a total order of the
//! transactions containing `so ∪ wr` — satisfies the level's axiom. For each read `α` of key
//! `x` in transaction `t3`, reading from `t1`, and each other transaction `t2` writing `x`,
//! `t2` must commit before `t1` when:
//!
//! | level | `t2` must precede `t1` when |
//! |---|---|
//! | read committed | `t3` read from `t2` in an earlier read than `α` |
//! | read atomic | `t2 (so ∪ wr) t3`: `t2` is earlier in `t3`'s session, or `t3` read from it |
//! | causal | `t2 (so ∪ wr)+ t3`: `t2` is in `t3`'s causal past |
//!
//! None of these premises mentions the commit order, so adding every forced edge once and
//! checking `so ∪ wr ∪ forced` for a cycle decides consistency (their Theorem: these levels
//! are checkable in polynomial time by this saturation).
//!
//! The checker is independent of the protocols and of squall-verify's other checkers: the
//! tests run it on [exported](crate::export) files to show that a published checker, asked
//! the question each file asks, accepts correct runs and rejects a seeded mutant's.

use std::collections::BTreeMap;

use crate::export::Isolation;
use crate::history::{Kind, TEXT_VALUE_OFFSET, TextLine, TextParseError, Version, text_lines};

/// Why a text history is not consistent at the level asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The text did not parse.
    #[error(transparent)]
    Parse(#[from] TextParseError),
    /// Two transactions wrote the same value of a key, so reads cannot name their writer.
    #[error("key {key} value {value} is written by transactions {first} and {second}")]
    DuplicateWrite {
        /// The key's number.
        key: u64,
        /// The value (as written in the text).
        value: u64,
        /// One writer.
        first: u64,
        /// The other.
        second: u64,
    },
    /// A read of a value no transaction wrote (from thin air, or from an aborted write).
    #[error("transaction {txn} reads key {key} value {value}, which no transaction wrote")]
    ThinAir {
        /// The reader.
        txn: u64,
        /// The key's number.
        key: u64,
        /// The value.
        value: u64,
    },
    /// A transaction that wrote a key reads, after that write, another value of it; or reads
    /// its own write before making it.
    #[error("transaction {txn} reads key {key} value {value}, not its own latest write of it")]
    Internal {
        /// The transaction.
        txn: u64,
        /// The key's number.
        key: u64,
        /// The value read.
        value: u64,
    },
    /// No commit order satisfies the level: the forced order has a cycle.
    #[error("no commit order: transactions {} must each commit before the next", cycle_text(.0))]
    Cycle(Vec<u64>),
}

fn cycle_text(txns: &[u64]) -> String {
    let mut names: Vec<String> = txns.iter().map(u64::to_string).collect();
    if let Some(first) = txns.first() {
        names.push(first.to_string());
    }
    names.join(" → ")
}

fn value(version: Version) -> u64 {
    version + TEXT_VALUE_OFFSET
}

/// One transaction as the text lists it.
#[derive(Debug)]
struct Txn {
    id: u64,
    session: u64,
    /// `(kind, key, version)`, in order.
    ops: Vec<(Kind, u64, Version)>,
}

/// A read of another transaction's write: `(key, writer)`, in the reader's order.
type ExternalReads = Vec<(u64, usize)>;

/// Checks `text` (the format of [`History::to_text`](crate::History::to_text)) at `level`.
pub fn check(text: &str, level: Isolation) -> Result<(), Violation> {
    let txns = transactions(text)?;
    let writers = Writers::of(&txns)?;
    let reads = external_reads(&txns, &writers)?;
    let mut order = Graph::new(txns.len());
    let mut last_in_session: BTreeMap<u64, usize> = BTreeMap::new();
    for (t, txn) in txns.iter().enumerate() {
        if let Some(prev) = last_in_session.insert(txn.session, t) {
            order.add(prev, t);
        }
        for &(_, from) in &reads[t] {
            order.add(from, t);
        }
    }
    let forced = forced_edges(&txns, &writers, &reads, &order, level);
    for (before, after) in forced {
        order.add(before, after);
    }
    match order.cycle() {
        Some(cycle) => Err(Violation::Cycle(cycle.into_iter().map(|t| txns[t].id).collect())),
        None => Ok(()),
    }
}

/// The text's transactions, in order of first appearance.
fn transactions(text: &str) -> Result<Vec<Txn>, Violation> {
    let mut index: BTreeMap<u64, usize> = BTreeMap::new();
    let mut txns: Vec<Txn> = Vec::new();
    for line in text_lines(text) {
        let TextLine { kind, key, version, session, txn, .. } = line?;
        let i = *index.entry(txn).or_insert_with(|| {
            txns.push(Txn { id: txn, session, ops: Vec::new() });
            txns.len() - 1
        });
        txns[i].ops.push((kind, key, version));
    }
    Ok(txns)
}

/// Who wrote each value of each key: the transaction of its last write there.
struct Writers {
    of_value: BTreeMap<(u64, Version), usize>,
    of_key: BTreeMap<u64, Vec<usize>>,
}

impl Writers {
    fn of(txns: &[Txn]) -> Result<Self, Violation> {
        let mut writers = Self { of_value: BTreeMap::new(), of_key: BTreeMap::new() };
        for (t, txn) in txns.iter().enumerate() {
            for &(kind, key, version) in &txn.ops {
                if kind != Kind::Write {
                    continue;
                }
                if let Some(&other) = writers.of_value.get(&(key, version))
                    && other != t
                {
                    return Err(Violation::DuplicateWrite {
                        key,
                        value: value(version),
                        first: txns[other].id,
                        second: txn.id,
                    });
                }
                writers.of_value.insert((key, version), t);
                let list = writers.of_key.entry(key).or_default();
                if list.last() != Some(&t) {
                    list.push(t);
                }
            }
        }
        Ok(writers)
    }
}

/// Each transaction's reads of other transactions' writes; a read of a key the transaction
/// wrote must return its own latest write (and a read of its own write must follow it).
fn external_reads(txns: &[Txn], writers: &Writers) -> Result<Vec<ExternalReads>, Violation> {
    let mut all = Vec::with_capacity(txns.len());
    for (t, txn) in txns.iter().enumerate() {
        let mut own: BTreeMap<u64, Version> = BTreeMap::new();
        let mut reads = Vec::new();
        for &(kind, key, version) in &txn.ops {
            if kind == Kind::Write {
                own.insert(key, version);
                continue;
            }
            let Some(&from) = writers.of_value.get(&(key, version)) else {
                return Err(Violation::ThinAir { txn: txn.id, key, value: value(version) });
            };
            let internal = match own.get(&key) {
                Some(&latest) => latest == version,
                None => from != t,
            };
            if !internal {
                return Err(Violation::Internal { txn: txn.id, key, value: value(version) });
            }
            if from != t {
                reads.push((key, from));
            }
        }
        all.push(reads);
    }
    Ok(all)
}

/// The commit-order edges `(t2, t1)` the level's axiom forces: for each read of a key from
/// `t1` by `t3`, each other writer `t2` of the key that the level says `t3` has seen.
fn forced_edges(
    txns: &[Txn],
    writers: &Writers,
    reads: &[ExternalReads],
    so_wr: &Graph,
    level: Isolation,
) -> Vec<(usize, usize)> {
    let reach = (level == Isolation::Causal).then(|| so_wr.reachability());
    let mut forced = Vec::new();
    for (t3, txn_reads) in reads.iter().enumerate() {
        for (i, &(key, t1)) in txn_reads.iter().enumerate() {
            for &t2 in writers.of_key.get(&key).map(Vec::as_slice).unwrap_or_default() {
                if t2 == t1 || t2 == t3 {
                    continue;
                }
                let seen = match level {
                    Isolation::ReadCommitted => txn_reads[..i].iter().any(|&(_, w)| w == t2),
                    Isolation::ReadAtomic => {
                        txn_reads.iter().any(|&(_, w)| w == t2)
                            || (txns[t2].session == txns[t3].session && t2 < t3)
                    }
                    Isolation::Causal => reach.as_ref().is_some_and(|r| r[t2][t3]),
                };
                if seen {
                    forced.push((t2, t1));
                }
            }
        }
    }
    forced
}

/// A directed graph over transactions `0..n`.
#[derive(Clone, Debug)]
struct Graph {
    edges: Vec<Vec<usize>>,
}

impl Graph {
    fn new(n: usize) -> Self {
        Self { edges: vec![Vec::new(); n] }
    }

    fn add(&mut self, from: usize, to: usize) {
        if !self.edges[from].contains(&to) {
            self.edges[from].push(to);
        }
    }

    /// `reach[u][t]`: whether `u` reaches `t` by one or more edges.
    fn reachability(&self) -> Vec<Vec<bool>> {
        let n = self.edges.len();
        self.edges
            .iter()
            .map(|first| {
                let mut reached = vec![false; n];
                let mut stack = first.clone();
                while let Some(t) = stack.pop() {
                    if !reached[t] {
                        reached[t] = true;
                        stack.extend(self.edges[t].iter().copied());
                    }
                }
                reached
            })
            .collect()
    }

    /// A cycle, if there is one, as the transactions along it.
    fn cycle(&self) -> Option<Vec<usize>> {
        // 0 unvisited, 1 on the current path, 2 done.
        let n = self.edges.len();
        let mut state = vec![0u8; n];
        for root in 0..n {
            if state[root] != 0 {
                continue;
            }
            let mut path: Vec<(usize, usize)> = vec![(root, 0)];
            state[root] = 1;
            while let Some(&mut (t, ref mut next)) = path.last_mut() {
                if let Some(&u) = self.edges[t].get(*next) {
                    *next += 1;
                    match state[u] {
                        0 => {
                            state[u] = 1;
                            path.push((u, 0));
                        }
                        1 => {
                            let from = path.iter().position(|&(p, _)| p == u).expect("on path");
                            return Some(path[from..].iter().map(|&(p, _)| p).collect());
                        }
                        _ => {}
                    }
                } else {
                    state[t] = 2;
                    path.pop();
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str, level: Isolation) -> bool {
        match check(text, level) {
            Ok(()) => true,
            Err(Violation::Cycle(_)) => false,
            Err(other) => panic!("{other}"),
        }
    }

    /// Initial values (value 1) in transaction 0, opening session 1, the writer's, as the
    /// session world's export writes them.
    const INIT: &str = "w(0,1,1,0)\nw(1,1,1,0)\n";

    #[test]
    fn a_fractured_read_is_read_committed_but_not_read_atomic() {
        // Transaction 1 writes both keys; transaction 2 misses its write of y, then sees its
        // write of x. (In the other order, having seen transaction 1, a read committed
        // transaction may not read past it.)
        let text = format!("{INIT}w(0,2,1,1)\nw(1,2,1,1)\nr(1,1,2,2)\nr(0,2,2,2)\n");
        assert!(ok(&text, Isolation::ReadCommitted));
        let seen_first = format!("{INIT}w(0,2,1,1)\nw(1,2,1,1)\nr(0,2,2,2)\nr(1,1,2,2)\n");
        assert!(!ok(&seen_first, Isolation::ReadCommitted));
        assert!(!ok(&text, Isolation::ReadAtomic));
        assert!(!ok(&text, Isolation::Causal));
    }

    #[test]
    fn a_non_repeatable_read_is_read_committed_but_not_read_atomic() {
        let text = format!("{INIT}w(0,2,1,1)\nr(0,2,2,2)\nr(0,1,2,2)\n");
        assert!(!ok(&text, Isolation::ReadCommitted), "going back to an older write");
        let text = format!("{INIT}w(0,2,1,1)\nr(0,1,2,2)\nr(0,2,2,2)\n");
        assert!(ok(&text, Isolation::ReadCommitted), "moving forward within a transaction");
        assert!(!ok(&text, Isolation::ReadAtomic));
    }

    #[test]
    fn a_causality_violation_is_read_atomic_but_not_causal() {
        // Session 1 writes x then y; a reader sees y's new value and x's initial one. Session
        // order makes x's write part of y's causal past, but read atomic looks one step only.
        let text = format!("{INIT}w(0,2,1,1)\nw(1,2,1,2)\nr(1,2,2,3)\nr(0,1,2,3)\n");
        assert!(ok(&text, Isolation::ReadAtomic));
        assert!(!ok(&text, Isolation::Causal));
        // The same through a reads-from chain: a third session read x's write before writing y.
        let text = format!("{INIT}w(0,2,1,1)\nr(0,2,3,2)\nw(1,2,3,2)\nr(1,2,2,3)\nr(0,1,2,3)\n");
        assert!(!ok(&text, Isolation::Causal));
    }

    #[test]
    fn initial_values_are_ordered_only_when_a_session_orders_them() {
        // The blind spot of an unordered initial state: a writer writes x; a reader sees the new
        // value, then, in a later transaction of its session, x's initial value. With the
        // initial transaction in a session of its own, a commit order can put it after the
        // writer's write, and a causal checker accepts.
        let unordered = "w(0,1,0,0)\nw(0,2,1,1)\nr(0,2,2,2)\nr(0,1,2,3)\n";
        assert!(ok(unordered, Isolation::Causal));
        // With the initial transaction opening the writer's session, it cannot.
        let ordered = "w(0,1,1,0)\nw(0,2,1,1)\nr(0,2,2,2)\nr(0,1,2,3)\n";
        assert!(!ok(ordered, Isolation::Causal));
    }

    #[test]
    fn reads_of_values_nobody_wrote_and_duplicate_writes_are_refused() {
        let thin = format!("{INIT}r(0,7,1,1)\n");
        assert!(matches!(check(&thin, Isolation::ReadCommitted), Err(Violation::ThinAir { .. })));
        let twice = format!("{INIT}w(0,2,1,1)\nw(0,2,2,2)\n");
        let err = check(&twice, Isolation::ReadCommitted).expect_err("a value written twice");
        assert!(matches!(err, Violation::DuplicateWrite { .. }), "{err}");
        let bad = check("r(0,1)\n", Isolation::Causal).expect_err("three fields");
        assert!(bad.to_string().contains("line 1"), "{bad}");
    }

    #[test]
    fn a_transaction_reads_its_own_latest_write_of_a_key() {
        let own = format!("{INIT}w(0,2,2,1)\nr(0,2,2,1)\n");
        assert_eq!(check(&own, Isolation::ReadCommitted), Ok(()));
        let other = format!("{INIT}w(0,2,2,1)\nr(0,1,2,1)\n");
        let err = check(&other, Isolation::ReadCommitted).expect_err("not its own write");
        assert!(matches!(err, Violation::Internal { txn: 1, key: 0, value: 1 }), "{err}");
        let early = format!("{INIT}r(0,2,2,1)\nw(0,2,2,1)\n");
        let err = check(&early, Isolation::ReadCommitted).expect_err("before writing it");
        assert!(matches!(err, Violation::Internal { .. }), "{err}");
    }

    #[test]
    fn a_cycle_names_its_transactions() {
        let text = format!("{INIT}w(0,2,1,1)\nw(1,2,1,1)\nr(0,2,2,2)\nr(1,1,2,2)\n");
        let err = check(&text, Isolation::ReadAtomic).expect_err("fractured");
        let Violation::Cycle(txns) = &err else { panic!("{err}") };
        assert!(txns.contains(&0) && txns.contains(&1), "{err}");
        assert!(err.to_string().contains(" → "), "{err}");
    }
}
