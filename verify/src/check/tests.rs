//! Each checker on hand-written histories it must accept and histories it must reject.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::history::{Held, KeyKind};

fn history(ops: Vec<Op>) -> History {
    History { ops, ..History::default() }
}

fn held(replica: u64, key: &str, version: Version) -> Held {
    Held { replica, key: key.to_owned(), version }
}

/// A DAG of `f → g` in every transaction of `txns`.
fn f_before_g(mut history: History, txns: &[u64]) -> History {
    for txn in txns {
        let pairs = BTreeSet::from([("f".to_owned(), "g".to_owned())]);
        history.precedes.insert(*txn, pairs);
    }
    history
}

/// The same history with no function preceding another.
fn without_paths(mut history: History) -> History {
    history.precedes.clear();
    history
}

fn causal(mut history: History, keys: &[&str]) -> History {
    history.kinds = keys.iter().map(|k| ((*k).to_owned(), KeyKind::Causal)).collect();
    history
}

fn rejected_by(verdict: Verdict, check: &str) {
    let anomaly = verdict.expect_err("the checker accepted an anomalous history");
    assert_eq!(anomaly.check, check, "{anomaly}");
}

#[test]
fn convergence_wants_one_version_per_key() {
    let mut h = History {
        settled: vec![held(0, "x", 2), held(1, "x", 2), held(0, "y", 1)],
        ..History::default()
    };
    assert_eq!(convergence(&h), Ok(()));
    h.settled.push(held(2, "x", 1));
    rejected_by(convergence(&h), "convergence");
}

#[test]
fn convergence_wants_reads_after_settling_to_see_the_settled_version() {
    let mut h = history(vec![
        Op::write(1, 1, Level::Majority, "x", 2),
        // Before the replicas settled, a stale read is fine.
        Op::read(2, 2, Level::Majority, "x", 1).at(5, Some(6)),
        Op::read(2, 3, Level::Majority, "x", 2).at(10, Some(11)),
    ]);
    h.settled = vec![held(0, "x", 2), held(1, "x", 2)];
    h.settled_at = Some(10);
    assert_eq!(convergence(&h), Ok(()));
    h.ops.push(Op::read(3, 4, Level::Majority, "x", 1).at(12, Some(13)));
    rejected_by(convergence(&h), "convergence");
    // Without a settling time, only the replicas are compared.
    h.settled_at = None;
    assert_eq!(convergence(&h), Ok(()));
}

#[test]
fn an_anomaly_names_the_operation_it_is_about() {
    let h = history(vec![Op::read(2, 6, Level::Majority, "x", 6).by("f")]);
    let anomaly = thin_air(&h).expect_err("x@6 was never written");
    assert_eq!(
        anomaly.to_string(),
        "thin-air: read x@6 (session 2, txn 6 by f): no write that took effect wrote it"
    );
    let h = history(vec![Op::write(1, 3, Level::Majority, "y", 2)]);
    let h = History { settled: vec![held(4, "y", INITIAL)], ..h };
    let anomaly = lost_write(&h).expect_err("y@2 is on no replica");
    assert_eq!(
        anomaly.to_string(),
        "lost-write: write y@2 (session 1, txn 3) acknowledged, but replica 4 settled on 0"
    );
}

#[test]
fn thin_air_accepts_initial_and_written_versions_only() {
    let mut h = history(vec![
        Op::write(1, 1, Level::Majority, "x", 5),
        Op::read(2, 2, Level::Majority, "x", 5),
        Op::read(2, 3, Level::Majority, "y", INITIAL),
        // An indefinite write may have taken effect: reading it is fine.
        Op::write(1, 4, Level::Majority, "y", 7).with_status(Status::Unknown),
        Op::read(2, 5, Level::Majority, "y", 7),
    ]);
    assert_eq!(thin_air(&h), Ok(()));
    h.ops.push(Op::read(2, 6, Level::Majority, "x", 6));
    rejected_by(thin_air(&h), "thin-air");
    // A refused write must never be read.
    let refused = history(vec![
        Op::write(1, 1, Level::One, "x", 3).with_status(Status::Failed),
        Op::read(2, 2, Level::One, "x", 3),
    ]);
    rejected_by(thin_air(&refused), "thin-air");
    // Nor may a replica settle on a value nobody wrote.
    let mut settled = history(vec![Op::write(1, 1, Level::One, "x", 3)]);
    settled.settled = vec![held(0, "x", 3), held(1, "x", 4)];
    rejected_by(thin_air(&settled), "thin-air");
}

#[test]
fn lost_write_wants_every_replica_at_or_after_each_durable_acknowledged_write() {
    let mut h = history(vec![
        Op::write(1, 1, Level::Majority, "x", 1),
        Op::write(2, 2, Level::All, "x", 2),
        // Lost writes at durability one, or unacknowledged ones, are allowed.
        Op::write(3, 3, Level::One, "y", 9),
        Op::write(3, 4, Level::Majority, "y", 10).with_status(Status::Unknown),
    ]);
    h.settled = vec![held(0, "x", 2), held(1, "x", 2)];
    assert_eq!(lost_write(&h), Ok(()));
    h.settled[1].version = 1;
    rejected_by(lost_write(&h), "lost-write");
    // A key no replica holds lost its acknowledged write.
    h.settled = vec![held(0, "y", 9)];
    rejected_by(lost_write(&h), "lost-write");
}

#[test]
fn lost_write_counts_a_replica_holding_the_initial_version_as_having_lost_it() {
    // Recorders write a replica that lacks the key as holding version 0 (the initial value):
    // that replica is a replica like any other, and it lost the acknowledged write.
    let mut h = history(vec![Op::write(1, 1, Level::Majority, "x", 1)]);
    h.settled = vec![held(0, "x", 1), held(1, "x", INITIAL)];
    rejected_by(lost_write(&h), "lost-write");
    h.settled = vec![held(0, "x", INITIAL), held(1, "x", INITIAL)];
    rejected_by(lost_write(&h), "lost-write");
    h.settled = vec![held(0, "x", 1), held(1, "x", 1)];
    assert_eq!(lost_write(&h), Ok(()));
}

#[test]
fn lost_write_follows_the_causal_order_of_causal_keys() {
    // x@2 was acknowledged; x@3 depends on it, so settling on 3 keeps it. x@4 is concurrent.
    let mut h = causal(
        history(vec![
            Op::write(1, 1, Level::Majority, "x", 2),
            Op::write(1, 2, Level::Majority, "x", 3).after(&[("x", 2)]),
            Op::write(2, 3, Level::Majority, "x", 4).with_status(Status::Unknown),
        ]),
        &["x"],
    );
    h.settled = vec![held(0, "x", 3)];
    assert_eq!(lost_write(&h), Ok(()));
    h.settled = vec![held(0, "x", 4)];
    rejected_by(lost_write(&h), "lost-write");
}

#[test]
fn repeatable_read_wants_one_version_per_key_and_transaction() {
    let mut h = history(vec![
        Op::read(1, 1, Level::Dsrr, "x", 1).by("f"),
        Op::read(1, 1, Level::Dsrr, "x", 1).by("g"),
        // Another transaction, and an LWW one, may read other versions.
        Op::read(1, 2, Level::Dsrr, "x", 2).by("f"),
        Op::read(1, 3, Level::Lww, "x", 1).by("f"),
        Op::read(1, 3, Level::Lww, "x", 2).by("g"),
    ]);
    assert_eq!(repeatable_read(&h), Ok(()));
    h.ops.push(Op::read(1, 2, Level::Dsrr, "x", 3).by("g"));
    rejected_by(repeatable_read(&h), "repeatable-read");
}

#[test]
fn monotonic_reads_forbid_going_backwards_downstream_only() {
    let ok = f_before_g(
        history(vec![
            Op::read(1, 1, Level::SingleKey, "x", 1).by("f"),
            Op::read(1, 1, Level::SingleKey, "x", 2).by("g"),
        ]),
        &[1],
    );
    assert_eq!(monotonic_reads(&ok), Ok(()));
    let backwards = f_before_g(
        history(vec![
            Op::read(1, 1, Level::SingleKey, "x", 2).by("f"),
            Op::read(1, 1, Level::SingleKey, "x", 1).by("g"),
        ]),
        &[1],
    );
    rejected_by(monotonic_reads(&backwards), "monotonic-reads");
    // Unordered functions (siblings), and LWW, may disagree.
    let siblings = without_paths(backwards.clone());
    assert_eq!(monotonic_reads(&siblings), Ok(()));
    let mut lww = backwards;
    lww.ops.iter_mut().for_each(|op| op.level = Level::Lww);
    assert_eq!(monotonic_reads(&lww), Ok(()));
}

/// y@1 is written first; x@2 depends on it.
fn causal_writes() -> Vec<Op> {
    vec![
        Op::write(9, 100, Level::Majority, "y", 1),
        Op::write(9, 101, Level::Majority, "x", 2).after(&[("y", 1)]),
    ]
}

#[test]
fn a_causal_cut_reads_dependencies_at_or_after_what_was_seen() {
    let cut = |x, y, level| {
        let mut ops = causal_writes();
        ops.push(Op::read(1, 1, level, "x", x).by("f"));
        ops.push(Op::read(1, 1, level, "y", y).by("f"));
        causal(history(ops), &["x", "y"])
    };
    assert_eq!(causal_cut(&cut(2, 1, Level::MultiKey)), Ok(()));
    assert_eq!(causal_cut(&cut(INITIAL, INITIAL, Level::MultiKey)), Ok(()));
    assert_eq!(causal_cut(&cut(INITIAL, 1, Level::MultiKey)), Ok(()));
    // x@2 with y@0: torn.
    rejected_by(causal_cut(&cut(2, INITIAL, Level::MultiKey)), "causal-cut");
    rejected_by(causal_cut(&cut(2, INITIAL, Level::Dsc)), "causal-cut");
    // At LWW nobody promised a cut.
    assert_eq!(causal_cut(&cut(2, INITIAL, Level::Lww)), Ok(()));
    // Reads of different functions are not one cut at MK.
    let mut split = cut(2, INITIAL, Level::MultiKey);
    split.ops[3].function = Some("g".to_owned());
    assert_eq!(causal_cut(&split), Ok(()));
}

#[test]
fn session_causal_carries_versions_and_cuts_along_paths() {
    let session = |reads: Vec<Op>| {
        let mut ops = causal_writes();
        ops.extend(reads);
        f_before_g(causal(history(ops), &["x", "y"]), &[1])
    };
    let good = session(vec![
        Op::read(1, 1, Level::Dsc, "x", 2).by("f"),
        Op::read(1, 1, Level::Dsc, "x", 2).by("g"),
        Op::read(1, 1, Level::Dsc, "y", 1).by("g"),
    ]);
    assert_eq!(session_causal(&good), Ok(()));
    // g reads y older than what f's x depends on: each function alone is a cut.
    let stale = session(vec![
        Op::read(1, 1, Level::Dsc, "x", 2).by("f"),
        Op::read(1, 1, Level::Dsc, "y", INITIAL).by("g"),
    ]);
    assert_eq!(causal_cut(&stale), Ok(()));
    rejected_by(session_causal(&stale), "session-causal");
    // The other direction: f read y@0, then g reads x@2 (which depends on y@1).
    let newer = session(vec![
        Op::read(1, 1, Level::Dsc, "y", INITIAL).by("f"),
        Op::read(1, 1, Level::Dsc, "x", 2).by("g"),
    ]);
    rejected_by(session_causal(&newer), "session-causal");
    // A different version of the same key downstream.
    let moved = session(vec![
        Op::read(1, 1, Level::Dsc, "y", INITIAL).by("f"),
        Op::read(1, 1, Level::Dsc, "y", 1).by("g"),
    ]);
    rejected_by(session_causal(&moved), "session-causal");
    // Without a path between f and g, none of it applies.
    assert_eq!(session_causal(&without_paths(moved)), Ok(()));
}

#[test]
fn read_your_writes_sees_the_sessions_own_completed_writes() {
    let h = |read: Version, invoke: u64| {
        history(vec![
            Op::write(1, 1, Level::All, "x", 4).at(10, Some(20)),
            Op::read(1, 2, Level::All, "x", read).at(invoke, Some(invoke + 5)),
        ])
    };
    assert_eq!(read_your_writes(&h(4, 20)), Ok(()));
    assert_eq!(read_your_writes(&h(6, 30)), Ok(()));
    rejected_by(read_your_writes(&h(3, 20)), "read-your-writes");
    // A read invoked before the write completed may miss it.
    assert_eq!(read_your_writes(&h(3, 15)), Ok(()));
    // Another session's write is not "yours"; a majority session promised nothing.
    let mut other = h(3, 30);
    other.ops[0].session = 2;
    assert_eq!(read_your_writes(&other), Ok(()));
    let mut majority = h(3, 30);
    majority.ops.iter_mut().for_each(|op| op.level = Level::Majority);
    assert_eq!(read_your_writes(&majority), Ok(()));
}

/// One history per checker that it, and only it, rejects.
fn caught_only_by(check: &str) -> History {
    match check {
        "convergence" => {
            let writes =
                vec![Op::write(9, 9, Level::One, "x", 1), Op::write(9, 10, Level::One, "x", 2)];
            History { settled: vec![held(0, "x", 1), held(1, "x", 2)], ..history(writes) }
        }
        "thin-air" => history(vec![Op::read(1, 1, Level::One, "x", 3)]),
        "lost-write" => {
            let mut h = history(vec![Op::write(1, 1, Level::Majority, "x", 1)]);
            h.settled = vec![held(0, "x", INITIAL)];
            h
        }
        "repeatable-read" => history(vec![
            Op::write(9, 9, Level::One, "x", 1),
            Op::read(1, 1, Level::Dsrr, "x", INITIAL).by("f"),
            Op::read(1, 1, Level::Dsrr, "x", 1).by("g"),
        ]),
        "monotonic-reads" => f_before_g(
            history(vec![
                Op::write(9, 9, Level::One, "x", 1),
                Op::read(1, 1, Level::SingleKey, "x", 1).by("f"),
                Op::read(1, 1, Level::SingleKey, "x", INITIAL).by("g"),
            ]),
            &[1],
        ),
        "causal-cut" => {
            let mut ops = causal_writes();
            ops.push(Op::read(1, 1, Level::MultiKey, "x", 2).by("f"));
            ops.push(Op::read(1, 1, Level::MultiKey, "y", INITIAL).by("f"));
            causal(history(ops), &["x", "y"])
        }
        "session-causal" => {
            let mut ops = causal_writes();
            ops.push(Op::read(1, 1, Level::Dsc, "x", 2).by("f"));
            ops.push(Op::read(1, 1, Level::Dsc, "y", INITIAL).by("g"));
            f_before_g(causal(history(ops), &["x", "y"]), &[1])
        }
        "read-your-writes" => history(vec![
            Op::write(1, 1, Level::All, "x", 4).at(10, Some(20)),
            Op::write(2, 2, Level::All, "x", 3).at(10, Some(20)),
            Op::read(1, 3, Level::All, "x", 3).at(30, Some(31)),
        ]),
        other => panic!("no history for checker {other}"),
    }
}

#[test]
fn all_runs_every_checker_under_its_own_name() {
    assert_eq!(all(&History::default()), Ok(()));
    assert_eq!(ALL.len(), BTreeMap::from(ALL).len(), "checker names are unique");
    for (name, _) in ALL {
        let h = caught_only_by(name);
        // Each listed checker rejects its history, reporting its own name, and no other
        // checker does: so a name paired with the wrong function fails here.
        for (other, check) in ALL {
            let verdict = check(&h).map_err(|anomaly| anomaly.check);
            let expected = if other == name { Err(name) } else { Ok(()) };
            assert_eq!(verdict, expected, "checker {other} on the history only {name} rejects");
        }
        assert_eq!(
            all(&h).map_err(|anomaly| anomaly.check),
            Err(name),
            "all() on {name}'s history"
        );
    }
}
