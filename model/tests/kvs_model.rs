//! The KVS models: pinned state counts, every property holds for the real protocol, and every
//! mutant makes its property fail.

use squall_model::kvs::{Scenario, model, mutants};
use squall_model::{CheckOptions, Depth, Report, run};
use squall_proto::kvs::{Mutant, invariants};
use stateright::{Checker, Expectation, HasDiscoveries, Model};

fn check(scenario: Scenario, mutant: Option<Mutant>) -> Report {
    let opts = CheckOptions { progress: false, ..CheckOptions::default() };
    run("kvs", mutant.map(|m| m.name().to_owned()), model(scenario, Depth::Deep, mutant), opts)
}

/// Whether `mutant` makes the property `id` fail in `scenario`, searching until that property
/// has a counterexample (or, for a `sometimes` property, until the space is exhausted without
/// an example): another property may fail first (`KVS-D1` catches
/// `ack-before-replicas` before `KVS-I4` does), and `check` stops at the first failure.
fn fails(scenario: Scenario, mutant: Mutant, id: &str) -> bool {
    let model = model(scenario, Depth::Deep, Some(mutant));
    let property = model.properties().into_iter().find(|p| p.name.starts_with(id)).expect(id);
    let name = property.name;
    let only = HasDiscoveries::AnyOf(std::collections::BTreeSet::from([name]));
    let checker = model.checker().finish_when(only).spawn_bfs().join();
    match property.expectation {
        // A `sometimes` property fails when the whole space has no example of it.
        Expectation::Sometimes => checker.is_done() && checker.discovery(name).is_none(),
        _ => checker.discovery(name).is_some(),
    }
}

fn verdict(report: &Report, id: &str) -> Option<bool> {
    report.properties.iter().find(|p| p.name.starts_with(id)).expect(id).holds
}

#[test]
fn crash_stop_model_holds_with_a_pinned_state_count() {
    let checker = model(Scenario::CrashStop, Depth::Deep, None).checker().spawn_dfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 257_876);
}

#[test]
fn property_names_start_with_their_invariant_ids() {
    let names: Vec<&str> =
        model(Scenario::CrashStop, Depth::Deep, None).properties().iter().map(|p| p.name).collect();
    let ids = [
        invariants::NO_THIN_AIR,
        invariants::MONOTONE,
        invariants::DURABLE,
        invariants::CONVERGENCE,
        invariants::TYPED,
        invariants::PERSISTED,
        invariants::RECOVERED,
        invariants::QUIESCENCE_REACHABLE,
    ];
    assert_eq!(names.len(), ids.len());
    for (name, id) in names.iter().zip(ids) {
        assert!(name.starts_with(&format!("{id} ")), "{name} should start with {id}");
    }
}

#[test]
fn every_crash_stop_mutant_makes_its_property_fail() {
    let expected = [
        (Mutant::AckBeforeReplicas, invariants::DURABLE),
        (Mutant::GossipSkipsReplica, invariants::CONVERGENCE),
        (Mutant::AcceptMismatch, invariants::TYPED),
        (Mutant::MissingAsBottom, invariants::NO_THIN_AIR),
        (Mutant::RollbackOnReject, invariants::MONOTONE),
        (Mutant::AcksNeverRecorded, invariants::QUIESCENCE_REACHABLE),
    ];
    assert_eq!(expected.len(), mutants(Scenario::CrashStop).len());
    for (mutant, id) in expected {
        assert!(fails(Scenario::CrashStop, mutant, id), "{mutant:?} should break {id}");
    }
}

#[test]
fn every_persistence_mutant_makes_its_property_fail() {
    // The restart model itself is checked by `check all` in release mode (2.5 M states); each
    // mutant is found in a fraction of it.
    let expected = [
        (Mutant::AckBeforeReplicas, invariants::PERSISTED),
        (Mutant::AckBeforePersist, invariants::PERSISTED),
        (Mutant::GossipAckBeforePersist, invariants::PERSISTED),
        (Mutant::RestartEmpty, invariants::RECOVERED),
    ];
    assert_eq!(expected.len(), mutants(Scenario::Restart).len());
    for (mutant, id) in expected {
        let report = check(Scenario::Restart, Some(mutant));
        assert_eq!(verdict(&report, id), Some(false), "{mutant:?} should break {id}: {report:?}");
    }
}

#[test]
fn join_model_holds_with_a_pinned_state_count() {
    let checker = model(Scenario::Join, Depth::Deep, None).checker().spawn_dfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 80_786);
}

#[test]
fn membership_property_names_start_with_their_invariant_ids() {
    let ids = [
        invariants::MONOTONE,
        invariants::CONVERGENCE,
        invariants::HANDOFF,
        invariants::OWNERSHIP,
        invariants::ROUTING,
        invariants::PERSISTED,
        invariants::QUIESCENCE_REACHABLE,
    ];
    for scenario in [Scenario::Join, Scenario::Leave] {
        let names: Vec<&str> =
            model(scenario, Depth::Deep, None).properties().iter().map(|p| p.name).collect();
        assert_eq!(names.len(), ids.len());
        for (name, id) in names.iter().zip(ids) {
            assert!(name.starts_with(&format!("{id} ")), "{name} should start with {id}");
        }
    }
}

#[test]
fn every_membership_mutant_makes_its_property_fail() {
    // The leave model itself (about a million states) is checked by `check all` in release
    // mode; each of its mutants is found in a fraction of it.
    let join = [
        (Mutant::DeleteBeforeHandoffAck, invariants::HANDOFF),
        (Mutant::KeepHandedOff, invariants::OWNERSHIP),
        (Mutant::ForgetNewOwner, invariants::CONVERGENCE),
        (Mutant::ReleaseOwnedKeys, invariants::MONOTONE),
        (Mutant::RingAcksIgnored, invariants::QUIESCENCE_REACHABLE),
    ];
    let leave = [
        (Mutant::FollowStaleRedirect, invariants::ROUTING),
        (Mutant::DeleteBeforeHandoffAck, invariants::HANDOFF),
        (Mutant::ForgetNewOwner, invariants::CONVERGENCE),
        (Mutant::ReleaseOwnedKeys, invariants::MONOTONE),
        (Mutant::RingAcksIgnored, invariants::QUIESCENCE_REACHABLE),
        (Mutant::SilentDeparture, invariants::OWNERSHIP),
    ];
    let cases: [(Scenario, &[(Mutant, &str)]); 2] =
        [(Scenario::Join, &join), (Scenario::Leave, &leave)];
    for (scenario, expected) in cases {
        assert_eq!(expected.len(), mutants(scenario).len());
        for &(mutant, id) in expected {
            let report = check(scenario, Some(mutant));
            let verdict = verdict(&report, id);
            assert_eq!(verdict, Some(false), "{scenario:?} {mutant:?} should break {id}");
        }
    }
}
