//! The conformance traces in `verify/conformance/` are exactly what the state machines do:
//! each is regenerated and compared byte for byte, then replayed from its own JSON (configs,
//! messages and timers decoded, outputs compared) as a reimplementation would.
//!
//! After a deliberate protocol change, regenerate them with
//! `SQUALL_BLESS=1 cargo test -p squall-verify --test conformance` and review the diff.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde_json::json;
use squall_proto::cache::CachedKvsNode;
use squall_proto::gossip::{GossipMsg, GossipNode, GossipTimer};
use squall_proto::kvs::{KvsMsg, KvsNode, KvsTimer};
use squall_proto::session::{SessionMsg, SessionTimer};
use squall_proto::worker::{ExecMsg, SystemNode};
use squall_verify::conform::{ConformError, conform, outputs_match, protocol_of};
use squall_verify::conformance::{SCENARIOS, exercised, replay};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance").join(format!("{name}.jsonl"))
}

#[test]
fn the_traces_match_the_state_machines() {
    let bless = std::env::var_os("SQUALL_BLESS").is_some();
    for scenario in SCENARIOS {
        let trace = (scenario.trace)();
        assert_eq!(trace, (scenario.trace)(), "{}: two runs differ", scenario.name);
        let path = path(scenario.name);
        if bless {
            std::fs::write(&path, &trace).expect("write the trace");
            continue;
        }
        let stored = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; regenerate with SQUALL_BLESS=1", path.display()));
        if let Some((i, (new, old))) =
            trace.lines().zip(stored.lines()).enumerate().find(|(_, (a, b))| a != b)
        {
            panic!(
                "{}: line {} differs (SQUALL_BLESS=1 regenerates after a deliberate change)\n  now:    {new}\n  stored: {old}",
                scenario.name,
                i + 1
            );
        }
        assert_eq!(
            trace.lines().count(),
            stored.lines().count(),
            "{}: length differs",
            scenario.name
        );
    }
}

#[test]
fn every_trace_replays_from_its_own_json() {
    for scenario in SCENARIOS {
        let trace = (scenario.trace)();
        let replayed = match scenario.name.split('-').next() {
            Some("gossip") => replay::<GossipNode<u16>>(&trace),
            Some("kvs") => replay::<KvsNode>(&trace),
            Some("cache") => replay::<CachedKvsNode>(&trace),
            Some("session") => replay::<SystemNode>(&trace),
            _ => panic!("{}: which protocol?", scenario.name),
        };
        let steps = replayed.unwrap_or_else(|e| panic!("{}: {e}", scenario.name));
        assert!(steps > 10, "{}: only {steps} steps", scenario.name);
    }
}

#[test]
fn a_changed_output_is_reported_as_a_divergence() {
    let kvs = SCENARIOS.iter().find(|s| s.name == "kvs-put-get").expect("a trace");
    let trace = (kvs.trace)();
    // Make the first acknowledgement of a put claim another request number.
    let tampered = trace.replacen("\"PutOk\":{\"req\":", "\"PutOk\":{\"req\":7", 1);
    assert_ne!(tampered, trace, "the scenario acknowledges a put");
    let error = replay::<KvsNode>(&tampered).expect_err("a tampered trace must not replay");
    assert!(error.to_string().contains("emitted"), "{error}");
}

/// The repository's root, where `conform/` holds the second implementation.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

#[test]
fn the_rust_roles_pass_through_the_harness() {
    let command = format!("'{}' node", env!("CARGO_BIN_EXE_squall-verify"));
    let mut nodes = 0;
    for scenario in &SCENARIOS {
        let reports = conform(scenario, &command, &[]).unwrap_or_else(|e| panic!("{e}"));
        let configs =
            (scenario.trace)().lines().filter(|l| l.contains(r#""type":"config""#)).count();
        assert_eq!(reports.len(), configs, "{}: every node replayed", scenario.name);
        nodes += reports.len();
    }
    assert!(nodes >= 20, "only {nodes} nodes");
}

#[test]
fn the_python_gossip_replica_conforms() {
    let script = repo().join("conform/gossip_replica.py");
    let command = format!("python3 '{}'", script.display());
    // Every gossip trace: concurrent writers, a tombstone that must beat an older write
    // arriving late, and lost, duplicated and re-sent messages.
    let mut traces = 0;
    for scenario in SCENARIOS.iter().filter(|s| protocol_of(s.name) == "gossip") {
        let reports =
            conform(scenario, &command, &["replica".to_owned()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reports.len(), 3, "{}: three replicas", scenario.name);
        assert!(reports.iter().all(|r| r.steps > 3), "{reports:?}");
        traces += 1;
    }
    assert_eq!(traces, 3, "gossip-two-writers, gossip-delete, gossip-faults");
}

#[test]
fn a_program_that_disagrees_is_reported_at_its_first_mismatch() {
    // Answers every line with no outputs: right for a replica's init, wrong at its first Put.
    let silent = r#"while read -r line; do echo '{"outputs":[]}'; done"#;
    let gossip = SCENARIOS.iter().find(|s| s.name == "gossip-two-writers").expect("a trace");
    let error = conform(gossip, silent, &["replica".to_owned()]).expect_err("it disagrees");
    let ConformError::Mismatch(mismatch) = &error else { panic!("{error}") };
    assert_eq!((mismatch.node, mismatch.step), (0, 1), "{error}");
    assert!(mismatch.expected.to_string().contains("PutOk"), "{error}");
    assert_eq!(mismatch.got, serde_json::json!([]), "{error}");
    assert!(error.to_string().contains("expected:"), "{error}");
    // A program that is not there is a program error, not a mismatch.
    let error = conform(gossip, "exit 3", &[]).expect_err("no answer");
    assert!(matches!(error, ConformError::Program { .. }), "{error}");
    // An `ignored` output matches whatever reason a program gives.
    let ignored = serde_json::json!([{"ignored": "any reason"}]);
    assert!(outputs_match(&serde_json::json!([{"ignored": "another"}]), &ignored));
    assert!(!outputs_match(&serde_json::json!([{"cancel_timer": "Gossip"}]), &ignored));
}

/// The variants of enum `T` as serde names them, from its error for an unknown one: a variant
/// added to a message type is expected below without editing this test.
fn variants<T: DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
    let err = serde_json::from_value::<T>(json!("\u{0}")).expect_err("no such variant").to_string();
    let (_, listed) = err.split_once("expected ").expect("serde lists the variants");
    let names: Vec<String> = listed.split('`').skip(1).step_by(2).map(str::to_owned).collect();
    assert!(names.len() >= 2, "{err}: every enum here has at least two variants");
    names
}

/// What no trace can show, by prefix, and why: messages that never leave a node's process.
const IN_PROCESS: [(&str, &str); 4] = [
    ("msg:Call", "an application's call to its KVS client library, inside the application"),
    ("msg:Done", "the KVS client library's answer to its application"),
    ("msg:Kvs::Call", "as msg:Call"),
    (
        "msg:Exec::",
        "a worker and its executors share a process (cluster/src/exec.rs); traced workers run their executors inside",
    ),
];

#[test]
fn the_traces_exercise_every_message_timer_and_fault() {
    let mut exercised_by: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for scenario in SCENARIOS {
        let group = match protocol_of(scenario.name) {
            "cache" => "kvs",
            other => other,
        };
        exercised_by.entry(group).or_default().extend(exercised(&(scenario.trace)()));
    }
    let faults = ["lost", "duplicated"].map(str::to_owned);
    let prefixed = |prefix: &str, names: Vec<String>| -> Vec<String> {
        names.into_iter().map(|n| format!("{prefix}{n}")).collect()
    };
    let expected: [(&str, Vec<String>); 3] = [
        (
            "gossip",
            [
                prefixed("msg:", variants::<GossipMsg<u16>>()),
                prefixed("timer:", variants::<GossipTimer>()),
                faults.to_vec(),
            ]
            .concat(),
        ),
        (
            "kvs",
            [
                prefixed("msg:", variants::<KvsMsg>()),
                prefixed("timer:", variants::<KvsTimer>()),
                vec!["restart:storage".into(), "restart:cache".into()],
                faults.to_vec(),
            ]
            .concat(),
        ),
        (
            "session",
            [
                prefixed("msg:Session::", variants::<SessionMsg>()),
                prefixed("msg:Exec::", variants::<ExecMsg>()),
                prefixed("timer:Session::", variants::<SessionTimer>()),
                vec!["restart:worker".into()],
                faults.to_vec(),
            ]
            .concat(),
        ),
    ];
    let excused = |name: &str| IN_PROCESS.iter().any(|(prefix, _)| name.starts_with(prefix));
    for (group, names) in expected {
        let seen = &exercised_by[group];
        let missing: Vec<&String> =
            names.iter().filter(|n| !seen.contains(*n) && !excused(n)).collect();
        assert!(missing.is_empty(), "the {group} traces never exercise {missing:?}");
    }
    // An excuse that stopped being true goes.
    for (prefix, why) in IN_PROCESS {
        let shown = exercised_by.values().flatten().find(|n| n.starts_with(prefix));
        assert!(shown.is_none(), "{prefix} ({why}) is in a trace after all: {shown:?}");
    }
}
