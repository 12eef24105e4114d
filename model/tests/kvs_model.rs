//! The KVS models: pinned state counts, every property holds for the real protocol, and every
//! mutant makes its property fail.

use squall_model::kvs::{Scenario, model, mutants};
use squall_model::{CheckOptions, Report, run};
use squall_proto::kvs::{Mutant, invariants};
use stateright::{Checker, Model};

fn check(scenario: Scenario, mutant: Option<Mutant>) -> Report {
    let opts = CheckOptions { progress: false, ..CheckOptions::default() };
    run("kvs", mutant.map(|m| m.name().to_owned()), model(scenario, mutant), opts)
}

fn verdict(report: &Report, id: &str) -> Option<bool> {
    report.properties.iter().find(|p| p.name.starts_with(id)).expect(id).holds
}

#[test]
fn crash_stop_model_holds_with_a_pinned_state_count() {
    let checker = model(Scenario::CrashStop, None).checker().spawn_dfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 257_876);
}

#[test]
fn property_names_start_with_their_invariant_ids() {
    let names: Vec<&str> =
        model(Scenario::CrashStop, None).properties().iter().map(|p| p.name).collect();
    let ids = [
        invariants::NO_THIN_AIR,
        invariants::MONOTONE,
        invariants::DURABLE,
        invariants::CONVERGENCE,
        invariants::TYPED,
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
        let report = check(Scenario::CrashStop, Some(mutant));
        assert_eq!(verdict(&report, id), Some(false), "{mutant:?} should break {id}: {report:?}");
    }
}

#[test]
fn ignoring_a_restarted_peers_incarnation_breaks_convergence() {
    // The restart model itself is checked by `check all` in release mode (1.3 M states); the
    // mutant is found in a fraction of it.
    let report = check(Scenario::Restart, Some(Mutant::IgnoreIncarnation));
    assert_eq!(verdict(&report, invariants::CONVERGENCE), Some(false));
}

#[test]
fn join_model_holds_with_a_pinned_state_count() {
    let checker = model(Scenario::Join, None).checker().spawn_dfs().join();
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
        invariants::QUIESCENCE_REACHABLE,
    ];
    for scenario in [Scenario::Join, Scenario::Leave] {
        let names: Vec<&str> = model(scenario, None).properties().iter().map(|p| p.name).collect();
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
