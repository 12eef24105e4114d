//! The session models over the whole system: pinned state counts for `dsrr`, `dsrr-retry` and `sk`,
//! property names carry their ids, and every listed mutant makes its property fail.
//! `dsrr-crash` and the bounded `causal` model (574 k states deep) are checked, with pinned
//! counts at both depths, by `tests/depths.rs` and `check all --all-mutants` in release mode, in
//! CI.

use squall_model::session::{Scenario, model, mutants};
use squall_model::{CheckOptions, Depth, run};
use squall_proto::cache;
use squall_proto::mutants::Mutant;
use squall_proto::session::{self, invariants};
use stateright::{Checker, Model};

#[test]
fn dsrr_models_hold_with_pinned_state_counts() {
    let pinned =
        [(Scenario::Dsrr, 42_345), (Scenario::DsrrRetry, 71_997), (Scenario::SingleKey, 23_356)];
    for (scenario, unique) in pinned {
        let checker = model(scenario, Depth::Deep, None).checker().spawn_dfs().join();
        checker.assert_properties();
        assert_eq!(checker.unique_state_count(), unique, "{}", scenario.name());
    }
}

#[test]
fn property_names_start_with_their_invariant_ids() {
    let caches = ["CACHE-I1", "CACHE-I2", "CACHE-I3"];
    let dsrr: Vec<&str> = ["SESS-L1"]
        .into_iter()
        .chain(caches)
        .chain([invariants::REPEATABLE_READ, invariants::PINS_HELD, invariants::NO_LEAKED_PINS])
        .collect();
    let retry = [
        "SESS-L1",
        invariants::PINS_HELD,
        invariants::NO_LEAKED_PINS,
        invariants::RETRIED,
        invariants::RESULT_ONCE,
        "SESS-L2",
    ];
    let causal: Vec<&str> = ["SESS-L1"]
        .into_iter()
        .chain(caches)
        .chain([
            invariants::SINGLE_KEY,
            invariants::MULTI_KEY,
            invariants::DISTRIBUTED_CAUSAL,
            invariants::CAUSAL_WRITES,
        ])
        .collect();
    let sk: Vec<&str> =
        ["SESS-L1"].into_iter().chain(caches).chain([invariants::SINGLE_KEY]).collect();
    for (scenario, ids) in [
        (Scenario::Dsrr, &dsrr[..]),
        (Scenario::DsrrRetry, &retry[..]),
        (Scenario::Causal, &causal),
        (Scenario::SingleKey, &sk),
    ] {
        let names: Vec<&str> =
            model(scenario, Depth::Deep, None).properties().iter().map(|p| p.name).collect();
        assert_eq!(names.len(), ids.len(), "{names:?}");
        for (name, id) in names.iter().zip(ids) {
            assert!(name.starts_with(&format!("{id} ")), "{name} should start with {id}");
        }
    }
}

fn verdict(scenario: Scenario, mutant: Mutant, id: &str, full: bool) -> Option<bool> {
    let opts = CheckOptions { progress: false, full, ..CheckOptions::default() };
    let report = run(
        scenario.name(),
        Some(mutant.bare_name().to_owned()),
        model(scenario, Depth::Deep, Some(mutant)),
        opts,
    );
    report.properties.iter().find(|p| p.name.starts_with(id)).expect(id).holds
}

#[test]
fn every_dsrr_mutant_makes_its_property_fail() {
    use session::Mutant::*;
    let dsrr = [
        (Mutant::Session(SkipRemoteRead), invariants::REPEATABLE_READ),
        (Mutant::Session(ReleaseBeforeSink), invariants::PINS_HELD),
        (Mutant::Session(IgnoreRelease), invariants::NO_LEAKED_PINS),
        (Mutant::Session(EveryFunctionPrecedes), "SESS-L1"),
        (Mutant::Cache(cache::Mutant::CacheMissAsBottom), "CACHE-I"),
        (Mutant::Cache(cache::Mutant::IgnorePushes), "CACHE-I3"),
    ];
    let retry = [
        (Mutant::Session(PinByClient), invariants::PINS_HELD),
        (Mutant::Session(IgnoreRelease), invariants::NO_LEAKED_PINS),
        (Mutant::Session(RecordEveryResult), invariants::RESULT_ONCE),
        (Mutant::Session(GiveUpOnAbort), invariants::RETRIED),
        (Mutant::Session(EveryFunctionPrecedes), "SESS-L1"),
    ];
    let sk = [
        (Mutant::Session(SkipRemoteRead), invariants::SINGLE_KEY),
        (Mutant::Session(EveryFunctionPrecedes), "SESS-L1"),
        (Mutant::Cache(cache::Mutant::CacheMissAsBottom), "CACHE-I"),
        (Mutant::Cache(cache::Mutant::IgnorePushes), "CACHE-I3"),
    ];
    let scenarios = [
        (Scenario::Dsrr, &dsrr[..]),
        (Scenario::DsrrRetry, &retry[..]),
        (Scenario::SingleKey, &sk),
    ];
    for (scenario, expected) in scenarios {
        assert_eq!(expected.len(), mutants(scenario).len(), "{}", scenario.name());
        for &(mutant, id) in expected {
            let caught = mutant_fails(scenario, mutant, id);
            assert!(caught, "{} {mutant:?} / {id}", scenario.name());
        }
    }
    // The reachability of a completed retry fails too, once the search is complete.
    assert_eq!(
        verdict(Scenario::DsrrRetry, Mutant::Session(GiveUpOnAbort), "SESS-L2", true),
        Some(false)
    );
}

/// Whether some property whose name starts with `id` fails under `mutant`.
fn mutant_fails(scenario: Scenario, mutant: Mutant, id: &str) -> bool {
    let opts = CheckOptions { progress: false, ..CheckOptions::default() };
    let report = run(
        scenario.name(),
        Some(mutant.bare_name().to_owned()),
        model(scenario, Depth::Deep, Some(mutant)),
        opts,
    );
    report.properties.iter().any(|p| p.name.starts_with(id) && p.holds == Some(false))
}
