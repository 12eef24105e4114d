//! The cache model: a pinned state count, every property holds for the real protocol, and
//! every mutant makes its property fail. The `cache-restart` model (3.5 M states) and its
//! mutant are checked by `check all` and `check all --all-mutants` in release mode, in CI.

use squall_model::cache::{Scenario, model, mutants};
use squall_model::{CheckOptions, Depth, run};
use squall_proto::cache::invariants;
use squall_proto::mutants::Mutant;
use squall_proto::{cache, kvs};
use stateright::{Checker, Model};

#[test]
fn cache_model_holds_with_a_pinned_state_count() {
    let checker = model(Scenario::NoCrash, Depth::Deep, None).checker().spawn_dfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 253_514);
}

#[test]
fn property_names_start_with_their_invariant_ids() {
    let ids = [
        invariants::NO_THIN_AIR,
        invariants::MONOTONE_READS,
        invariants::FRESH,
        invariants::LEASED,
        invariants::WRITE_THROUGH,
        invariants::QUIESCENCE_REACHABLE,
    ];
    let names: Vec<&str> =
        model(Scenario::NoCrash, Depth::Deep, None).properties().iter().map(|p| p.name).collect();
    assert_eq!(names.len(), ids.len());
    for (name, id) in names.iter().zip(ids) {
        assert!(name.starts_with(&format!("{id} ")), "{name} should start with {id}");
    }
}

#[test]
fn every_cache_mutant_makes_its_property_fail() {
    let expected = [
        (Mutant::Cache(cache::Mutant::CacheMissAsBottom), invariants::NO_THIN_AIR),
        (Mutant::Cache(cache::Mutant::PushOverwrites), invariants::MONOTONE_READS),
        (Mutant::Cache(cache::Mutant::IgnorePushes), invariants::FRESH),
        (Mutant::Kvs(kvs::Mutant::RenewalClearsPushes), invariants::FRESH),
        (Mutant::Kvs(kvs::Mutant::KeepLapsedSubscribers), invariants::LEASED),
        (Mutant::Cache(cache::Mutant::AckExecutorEarly), invariants::WRITE_THROUGH),
        (Mutant::Cache(cache::Mutant::ForgetExecutorAck), invariants::QUIESCENCE_REACHABLE),
    ];
    assert_eq!(expected.len(), mutants(Scenario::NoCrash).len());
    for (mutant, id) in expected {
        let opts = CheckOptions { progress: false, ..CheckOptions::default() };
        let report = run(
            "cache",
            Some(mutant.bare_name().to_owned()),
            model(Scenario::NoCrash, Depth::Deep, Some(mutant)),
            opts,
        );
        let verdict = report.properties.iter().find(|p| p.name.starts_with(id)).expect(id).holds;
        assert_eq!(verdict, Some(false), "{mutant:?} should break {id}");
    }
}
