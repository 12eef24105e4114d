//! The deterministic simulator: reproducible per seed, passing on the correct protocols with
//! every kind of fault injected, exporting histories as JSON lines, and catching every
//! seeded mutant within a bounded number of seeds.

use squall_verify::History;
use squall_verify::dst::{self, Mutant, SeedReport};

#[test]
fn a_seed_runs_the_same_way_twice() {
    for seed in [0, 7, 41] {
        let (first, second) = (dst::run_seed(seed, None), dst::run_seed(seed, None));
        assert_eq!(first.render(), second.render(), "seed {seed}");
        assert_eq!(first, second, "seed {seed}");
    }
}

#[test]
fn the_correct_protocols_pass_under_every_kind_of_fault() {
    let reports: Vec<SeedReport> = (0..16).map(|seed| dst::run_seed(seed, None)).collect();
    for report in &reports {
        assert_eq!(report.failure(), None, "{}", report.render());
        assert_eq!(report.worlds.len(), 3);
    }
    let worlds = || reports.iter().flat_map(|r| &r.worlds);
    let total =
        |f: fn(&squall_proto::sim::Stats) -> u64| worlds().map(|w| f(&w.stats)).sum::<u64>();
    assert!(total(|s| s.dropped) > 0, "no message was dropped");
    assert!(total(|s| s.duplicated) > 0, "no message was duplicated");
    assert!(total(|s| s.partitioned) > 0, "no partition cut a message");
    assert!(total(|s| s.crashes) > 0 && total(|s| s.restarts) > 0, "no crash and restart");
    assert!(total(|s| s.replayed) > 0, "nothing addressed to a crashed node was replayed");
    // The checks were not vacuous: histories have reads and writes, the KVS world reached its
    // late phases, and sessions completed.
    let ops: usize = worlds().map(|w| w.history.ops.len()).sum();
    assert!(ops > 1_000, "only {ops} operations recorded");
    assert!(worlds().filter(|w| w.world == "kvs").all(|w| w.history.settled_at.is_some()));
    assert!(worlds().all(|w| !w.history.settled.is_empty()), "a world never settled");
    let session_reads = worlds()
        .filter(|w| w.world == "session")
        .flat_map(|w| &w.history.ops)
        .filter(|op| op.function.is_some())
        .count();
    assert!(session_reads > 100, "only {session_reads} reads by functions");
}

#[test]
fn histories_export_as_json_lines() {
    let report = dst::run_seed(3, None);
    for world in &report.worlds {
        let history = &world.history;
        let back = History::from_jsonl(&history.to_jsonl()).expect("our own export parses");
        assert_eq!(&back, history, "{}: JSON lines round trip", world.world);
    }
    assert!(History::from_jsonl("{\"type\":\"op\"}\n").is_err(), "an op without fields is refused");
}

#[test]
fn mutant_names_round_trip_and_unknown_ones_are_refused() {
    for mutant in Mutant::all() {
        assert_eq!(Mutant::parse(&mutant.name()).expect("its own name"), mutant);
    }
    let error = Mutant::parse("no-such-defect").expect_err("unknown");
    assert!(error.to_string().contains("skip-remote-read"), "lists the known ones: {error}");
}

/// Heavy (minutes in release): run by `.ci/run` with `cargo test --release`.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "runs in release: cargo test --release -p squall-verify --test dst"
)]
fn every_mutant_is_caught_within_the_bound_in_its_own_world() {
    for mutant in Mutant::all() {
        let bound = dst::seed_bound(mutant);
        let caught = (0..bound)
            .map(|seed| dst::run_seed(seed, Some(mutant)))
            .find(|report| report.failure().is_some())
            .unwrap_or_else(|| panic!("{} escaped {bound} seeds", mutant.name()));
        let world = caught.failure().expect("found by it").world;
        let expected = match mutant {
            Mutant::Gossip(_) => "gossip",
            Mutant::Kvs(_) | Mutant::Cache(_) => "kvs",
            Mutant::Session(_) => "session",
        };
        assert_eq!(world, expected, "{}", mutant.name());
        // And the correct protocols pass that seed: the catch is the mutant's.
        let clean = dst::run_seed(caught.seed, None);
        assert_eq!(
            clean.failure(),
            None,
            "{}: seed {} fails without it",
            mutant.name(),
            caught.seed
        );
    }
}
