//! The gossip model at small bounds: pinned state counts, every property holds for the real
//! protocol, and every mutant makes its property fail.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use squall_model::adapter::Checked;
use squall_model::gossip::{Bounds, GossipActor, GossipModel, model, mutants};
use squall_model::{CheckOptions, Report, run};
use squall_proto::gossip::{GossipNode, Mutant, invariants};
use stateright::actor::ActorModelState;
use stateright::{Checker, Expectation, Model};

const SMALL: Bounds = Bounds { replicas: 2, clients: 2, writes_per_client: 1, lossy: false };

fn check(bounds: Bounds, mutant: Option<Mutant>) -> Report {
    let opts = CheckOptions { progress: false, ..CheckOptions::default() };
    run("gossip", mutant.map(|m| m.name().to_owned()), model(bounds, mutant), opts)
}

fn verdict(report: &Report, id: &str) -> Option<bool> {
    let property = report.properties.iter().find(|p| p.name.starts_with(id)).expect(id);
    property.holds
}

#[test]
fn small_gossip_model_has_a_pinned_state_count() {
    let checker = model(SMALL, None).checker().spawn_dfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 757);
}

#[test]
fn every_property_holds_for_the_real_protocol() {
    let report = check(SMALL, None);
    assert!(report.complete);
    for property in &report.properties {
        assert_eq!(property.holds, Some(true), "{property:?}");
    }
    assert!(report.holds());
}

#[test]
fn property_names_start_with_their_invariant_ids() {
    let names: Vec<&str> = model(SMALL, None).properties().iter().map(|p| p.name).collect();
    let ids = [
        invariants::NO_THIN_AIR,
        invariants::MONOTONE,
        invariants::CONVERGENCE,
        invariants::RETRANSMISSION,
        invariants::DELETES_STICK,
        invariants::QUIESCENCE_REACHABLE,
    ];
    assert_eq!(names.len(), ids.len());
    for (name, id) in names.iter().zip(ids) {
        assert!(name.starts_with(&format!("{id} ")), "{name} should start with {id}");
    }
}

#[test]
fn every_mutant_makes_its_property_fail() {
    let expected = [
        (Mutant::OverwriteMerge, invariants::MONOTONE),
        (Mutant::TornLww, invariants::NO_THIN_AIR),
        (Mutant::LwwIgnoresWriter, invariants::MONOTONE),
        (Mutant::SkipPeer, invariants::CONVERGENCE),
        (Mutant::DropGossipAck, invariants::QUIESCENCE_REACHABLE),
        (Mutant::NoRetransmit, invariants::RETRANSMISSION),
        (Mutant::DeleteAsHole, invariants::DELETES_STICK),
    ];
    assert_eq!(expected.len(), mutants().len(), "every mutant has an expectation");
    for (mutant, id) in expected {
        let mut report = check(SMALL, Some(mutant));
        if verdict(&report, id).is_none() {
            // Another property failed first; search on to decide this one.
            let opts = CheckOptions { progress: false, full: true, ..CheckOptions::default() };
            report = run("gossip", None, model(SMALL, Some(mutant)), opts);
        }
        assert!(!report.holds(), "{mutant:?} escaped");
        assert_eq!(verdict(&report, id), Some(false), "{mutant:?} should break {id}");
        let failed = report.properties.iter().find(|p| p.name.starts_with(id)).unwrap();
        let trace = failed.counterexample.as_deref().expect("a failure explains itself");
        assert!(!trace.is_empty());
    }
}

type NodeStates = HashSet<Vec<Arc<Checked<GossipNode<u8>>>>>;

/// Where [`record`] collects the node states of the model being checked.
static SEEN: Mutex<Option<NodeStates>> = Mutex::new(None);

/// A property that holds everywhere and records each state's node states (network and timers
/// left out). Properties are plain function pointers, hence the static.
fn record(_: &GossipModel, state: &ActorModelState<GossipActor>) -> bool {
    SEEN.lock().unwrap().get_or_insert_default().insert(state.actor_states.clone());
    true
}

/// The node states the model reaches at `bounds`.
fn node_states(bounds: Bounds) -> NodeStates {
    let model = model(bounds, None).property(Expectation::Always, "record node states", record);
    model.checker().spawn_dfs().join().assert_properties();
    SEEN.lock().unwrap().take().expect("the checker visited states")
}

#[test]
fn explicit_message_loss_reaches_no_other_node_states() {
    // The default model leaves drops implicit: in the duplicating network a lost message is one
    // never delivered. Explicit drops must reach exactly the same node states, and the
    // properties look at nothing else.
    let tiny = SMALL;
    let lossy = Bounds { lossy: true, ..tiny };
    let implicit = node_states(tiny);
    assert!(implicit.len() > 20, "{} node states", implicit.len());
    assert_eq!(implicit, node_states(lossy));
    let caught = check(lossy, Some(Mutant::SkipPeer));
    assert_eq!(verdict(&caught, invariants::CONVERGENCE), Some(false));
}

#[test]
fn full_search_decides_every_property_despite_a_failure() {
    let opts = CheckOptions { progress: false, full: true, ..CheckOptions::default() };
    let report = run("gossip", None, model(SMALL, Some(Mutant::TornLww)), opts);
    assert!(report.complete);
    assert!(report.properties.iter().all(|p| p.holds.is_some()), "{:?}", report.properties);
    assert_eq!(verdict(&report, invariants::NO_THIN_AIR), Some(false));
    assert_eq!(verdict(&report, invariants::QUIESCENCE_REACHABLE), Some(true));
}

#[test]
fn clients_with_several_writes_are_checked_too() {
    // Exercises the client's sequence numbers: a later write must not be taken as acknowledged
    // by an earlier write's PutOk.
    let bounds = Bounds { replicas: 2, clients: 1, writes_per_client: 2, lossy: false };
    let checker = model(bounds, None).checker().spawn_dfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 140);
}
