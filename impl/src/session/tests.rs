//! The session protocol's pure parts: DAG validation, the level checks on a session's reads,
//! and joining the metadata of sibling branches. (Scenarios of whole sessions over storage
//! nodes and caches are in `worker/tests.rs`.)

use bytes::Bytes;

use super::invariants::{distributed_causal, multi_key, repeatable_read, single_key};
use super::*;
use crate::lattice::{Dependencies, Lww, MultiKeyCausal};

fn lww(time: u64) -> LatticeValue {
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(7)), Bytes::from(format!("v{time}"))))
}

fn vc(entries: &[(u64, u64)]) -> VectorClock {
    VectorClock::new(entries.iter().map(|&(w, n)| (WriterId(w), n)))
}

fn causal(clock: &[(u64, u64)], deps: &[(&str, &[(u64, u64)])]) -> LatticeValue {
    let deps = Dependencies::new(deps.iter().map(|(k, c)| ((*k).to_owned(), vc(c))));
    LatticeValue::MultiKeyCausal(MultiKeyCausal::new(vc(clock), deps, Bytes::from_static(b"v")))
}

fn chain_x_x() -> Dag {
    Dag::chain(&[&["x"], &["x"]]).expect("valid")
}

#[test]
fn dag_validation_names_the_problem() {
    assert_eq!(Dag::new(vec![]), Err(DagError::Empty));
    let cyclic = vec![Function::new("a", &[], &[1]), Function::new("b", &[], &[0])];
    assert!(matches!(Dag::new(cyclic), Err(DagError::Cyclic { .. })));
    let unknown = vec![Function::new("a", &[], &[5])];
    assert!(matches!(Dag::new(unknown), Err(DagError::UnknownSuccessor { next: 5, .. })));
    let two_sinks = vec![
        Function::new("a", &[], &[1, 2]),
        Function::new("b", &[], &[]),
        Function::new("c", &[], &[]),
    ];
    let error = Dag::new(two_sinks).unwrap_err();
    assert_eq!(error, DagError::Sinks { sinks: vec!["b".into(), "c".into()] });
    assert!(error.to_string().contains("exactly one sink"));

    let diamond = Dag::new(vec![
        Function::new("f0", &["w"], &[1, 2]),
        Function::new("f1", &["x"], &[3]),
        Function::new("f2", &["y"], &[3]),
        Function::new("f3", &["z"], &[]),
    ])
    .expect("valid");
    assert_eq!(diamond.sink(), 3);
    assert_eq!(diamond.sources().collect::<Vec<_>>(), [0]);
    assert!(diamond.precedes(0, 3) && diamond.precedes(1, 3) && !diamond.precedes(1, 2));
    let future: Vec<&str> = diamond.future_reads(0).into_iter().map(String::as_str).collect();
    assert_eq!(future, ["x", "y", "z"]);
    assert!(diamond.future_reads(3).is_empty());
}

#[test]
fn level_checkers_accept_consistent_logs_and_name_anomalies() {
    let read = |function, key: &str, value| Read { function, key: key.into(), value: Some(value) };
    let dag = chain_x_x();
    // Repeatable read and single-key order.
    let same = [read(0, "x", lww(2)), read(1, "x", lww(2))];
    let newer = [read(0, "x", lww(1)), read(1, "x", lww(2))];
    let older = [read(0, "x", lww(2)), read(1, "x", lww(1))];
    assert!(repeatable_read(&same).is_ok());
    assert_eq!(repeatable_read(&newer).unwrap_err().id, invariants::REPEATABLE_READ);
    assert!(single_key(&dag, &newer).is_ok());
    assert_eq!(single_key(&dag, &older).unwrap_err().id, invariants::SINGLE_KEY);
    // A function after another in no order (siblings) may read in either order.
    let siblings = Dag::new(vec![
        Function::new("f0", &[], &[1, 2]),
        Function::new("f1", &["x"], &[3]),
        Function::new("f2", &["x"], &[3]),
        Function::new("f3", &[], &[]),
    ])
    .expect("valid");
    let crossed = [read(1, "x", lww(2)), read(2, "x", lww(1))];
    assert!(single_key(&siblings, &crossed).is_ok());

    // Multi-key: x@2 depends on y@1.
    let (y0, y1) = (causal(&[(9, 1)], &[]), causal(&[(9, 1), (4, 1)], &[]));
    let x2 = causal(&[(9, 1), (4, 2)], &[("y", &[(9, 1), (4, 1)])]);
    let cut = [read(0, "x", x2.clone()), read(0, "y", y1.clone())];
    let torn = [read(0, "x", x2.clone()), read(0, "y", y0.clone())];
    assert!(multi_key(&cut).is_ok());
    assert_eq!(multi_key(&torn).unwrap_err().id, invariants::MULTI_KEY);
    // Across functions, only DSC forbids the older y downstream.
    let across = [read(0, "x", x2.clone()), read(1, "y", y0.clone())];
    let dag_xy = Dag::chain(&[&["x"], &["y"]]).expect("valid");
    assert!(multi_key(&across).is_ok());
    let dsc = distributed_causal(&dag_xy, &across).unwrap_err();
    assert_eq!(dsc.id, invariants::DISTRIBUTED_CAUSAL);
    assert!(distributed_causal(&dag_xy, &[read(0, "x", x2.clone()), read(1, "y", y1)]).is_ok());
    // And the other way round: a downstream read depending on a newer version than upstream's.
    let dag_yx = Dag::chain(&[&["y"], &["x"]]).expect("valid");
    let reverse = [read(0, "y", y0), read(1, "x", x2)];
    assert!(multi_key(&reverse).is_ok());
    assert_eq!(
        distributed_causal(&dag_yx, &reverse).unwrap_err().id,
        invariants::DISTRIBUTED_CAUSAL
    );
}

#[test]
fn branches_carrying_different_runs_of_one_function_conflict_except_at_lww() {
    // f0 ran twice in one session (a re-sent trigger after its worker restarted) and read x
    // at different versions; each branch carries one run.
    let run = |time| Meta {
        log: vec![Read { function: 0, key: "x".into(), value: Some(lww(time)) }],
        ..Meta::default()
    };
    for level in [Level::Dsrr, Level::SingleKey, Level::MultiKey, Level::Dsc] {
        let mut meta = run(1);
        assert_eq!(meta.join(run(2), level), Err("x".to_owned()), "{level:?}");
        let mut same = run(1);
        assert_eq!(same.join(run(1), level), Ok(()), "{level:?}: one run seen twice");
    }
    let mut lww_meta = run(1);
    assert_eq!(lww_meta.join(run(2), Level::Lww), Ok(()));
}

#[test]
fn placement_spreads_concentrates_retries_or_follows_locality_and_load() {
    let workers: Vec<NodeId> = (10..13).map(NodeId).collect();
    let mut cfg = SchedulerConfig::new(NodeId(1), workers.clone());
    let chain = Dag::chain(&[&[], &[], &[]]).expect("a chain");
    let w = |i: usize| workers[i];
    let none = BTreeMap::new();
    // Spread: function i on worker i, in every attempt.
    for attempt in 1..=3 {
        assert_eq!(Scheduler::place(&cfg, &chain, attempt, &[], &none), [w(0), w(1), w(2)]);
    }
    // RetryOnOne: the first attempt spreads, retry a runs everything on worker a - 1.
    cfg.placement = Placement::RetryOnOne;
    assert_eq!(Scheduler::place(&cfg, &chain, 1, &[], &none), [w(0), w(1), w(2)]);
    assert_eq!(Scheduler::place(&cfg, &chain, 2, &[], &none), [w(1); 3]);
    assert_eq!(Scheduler::place(&cfg, &chain, 4, &[], &none), [w(0); 3]);
    // Local without keys: all on the least loaded (lowest index on ties); retries move on.
    cfg.placement = Placement::Local;
    assert_eq!(Scheduler::place(&cfg, &chain, 1, &[3, 1, 1], &none), [w(1); 3]);
    assert_eq!(Scheduler::place(&cfg, &chain, 2, &[3, 1, 1], &none), [w(2); 3]);
    // Local with keys: the same keys go to the same worker whatever the load within the
    // slack, and to the least loaded beyond it.
    let keyed = Dag::chain(&[&["a", "b"], &["b"]]).expect("a chain");
    let affine = Scheduler::place(&cfg, &keyed, 1, &[0, 0, 0], &none)[0];
    let i = workers.iter().position(|x| *x == affine).expect("a worker");
    let mut load = vec![0; 3];
    load[i] = LOCAL_SLACK;
    assert_eq!(Scheduler::place(&cfg, &keyed, 1, &load, &none), [affine; 2]);
    load[i] = LOCAL_SLACK + 1;
    let least = (0..3).find(|&j| j != i).expect("another worker");
    assert_eq!(Scheduler::place(&cfg, &keyed, 1, &load, &none), [w(least); 2]);
    // Reordered reads name the same keys: the same worker.
    let reordered = Dag::chain(&[&["b"], &["b", "a"]]).expect("a chain");
    assert_eq!(Scheduler::place(&cfg, &reordered, 1, &[0, 0, 0], &none)[0], affine);
    // Reports of what caches hold beat the hash: the worker holding more of the DAG's keys
    // takes it, within the load slack; beyond it, load wins again.
    let other = (i + 1) % 3;
    let cached = BTreeMap::from([
        (w(i), BTreeSet::from(["a".to_owned()])),
        (w(other), BTreeSet::from(["a".to_owned(), "b".to_owned()])),
    ]);
    assert_eq!(Scheduler::place(&cfg, &keyed, 1, &[0, 0, 0], &cached), [w(other); 2]);
    let mut load = vec![0; 3];
    load[other] = LOCAL_SLACK;
    assert_eq!(Scheduler::place(&cfg, &keyed, 1, &load, &cached), [w(other); 2]);
    load[other] = LOCAL_SLACK + 1;
    assert_eq!(Scheduler::place(&cfg, &keyed, 1, &load, &cached), [affine; 2]);
    // A retry still moves on from the first choice.
    assert_eq!(Scheduler::place(&cfg, &keyed, 2, &[0, 0, 0], &cached), [w((other + 1) % 3); 2]);
}
