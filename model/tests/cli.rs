//! The `squall-model` command line: its output formats and exit codes, as documented in the
//! design's command-line contracts.

use std::process::{Command, Output};

fn squall_model(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_squall-model")).args(args).output().expect("runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

#[test]
fn list_json_is_an_array_of_models_with_their_mutants() {
    let output = squall_model(&["list", "--json"]);
    assert!(output.status.success());
    let models: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let gossip = models.as_array().unwrap().iter().find(|m| m["model"] == "gossip").unwrap();
    let mutants: Vec<&str> =
        gossip["mutants"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert!(mutants.contains(&"skip-peer") && mutants.len() >= 2, "{mutants:?}");
}

#[test]
fn a_mutant_fails_the_check_with_exit_1_and_a_readable_trace() {
    let output = squall_model(&["check", "gossip", "--mutant", "skip-peer", "--quiet"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("FAILS  GOSSIP-I3"), "{text}");
    assert!(text.contains("Timeout(Id("), "the trace lists the steps: {text}");
    assert!(text.contains("final state:"), "{text}");
}

#[test]
fn json_report_has_the_contracted_fields() {
    let output = squall_model(&["check", "gossip", "--mutant", "torn-lww", "--json", "-q"]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    for field in ["model", "mutant", "states", "unique_states", "max_depth", "secs", "properties"] {
        assert!(report.get(field).is_some(), "missing {field}: {report}");
    }
    assert_eq!(report["model"], "gossip");
    assert_eq!(report["mutant"], "torn-lww");
    assert_eq!(report["depth"], "everyday");
    assert!(report["unique_states"].as_u64().unwrap() > 0);
    let failed = report["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["holds"] == false)
        .expect("a failed property");
    assert!(failed["name"].as_str().unwrap().starts_with("GOSSIP-I1"));
    assert_eq!(failed["expectation"], "always");
}

#[test]
fn deep_checks_the_larger_bounds_and_says_so() {
    // A mutant caught within a few hundred states at either depth, in models of another
    // size: gossip has 2 replicas every day and 3 deep.
    let depth_and_states = |args: &[&str]| {
        let output = squall_model(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let report: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
        (report["depth"].as_str().unwrap().to_owned(), report["states"].as_u64().unwrap())
    };
    let base = ["check", "gossip", "--mutant", "skip-peer", "--json", "-q", "--threads", "1"];
    let (everyday, everyday_states) = depth_and_states(&base);
    let (deep, deep_states) = depth_and_states(&[&base[..], &["--deep"]].concat());
    assert_eq!((everyday.as_str(), deep.as_str()), ("everyday", "deep"));
    assert_ne!(everyday_states, deep_states);
}

#[test]
fn list_says_what_the_everyday_bounds_leave_out() {
    let output = squall_model(&["list"]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(text.contains("every day: as deep"), "{text}");
    assert!(text.contains("every day: 2 storage nodes at replication 2"), "{text}");
}

#[test]
fn unknown_names_are_clear_errors() {
    // Exit 2, not 1: nothing was checked, so nothing failed.
    let output = squall_model(&["check", "nosuch"]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("unknown model `nosuch`") && error.contains("gossip"), "{error}");

    let output = squall_model(&["check", "gossip", "--mutant", "nosuch"]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("no mutant `nosuch`") && error.contains("skip-peer"), "{error}");

    let output = squall_model(&["check", "all", "--mutant", "skip-peer"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn all_mutants_reports_each_mutant_caught() {
    let output = squall_model(&["check", "gossip", "--all-mutants", "-q"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.contains("gossip --mutant no-retransmit: caught by GOSSIP-I4"), "{text}");
    // One line per mutant, and a closing count.
    let mutants = squall_model_mutant_count();
    assert_eq!(text.lines().count(), mutants + 1);
    assert_eq!(text.lines().last(), Some(format!("all {mutants} mutants caught").as_str()));
}

#[test]
fn progress_goes_to_a_log_at_most_every_ten_seconds() {
    // Standard error is a pipe here: no live line (no spinner, no escape codes), only plain
    // progress lines, at most one per 10 s of checking.
    let started = std::time::Instant::now();
    let output = squall_model(&["check", "sk"]);
    let secs = started.elapsed().as_secs();
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(stderr.lines().count() as u64 <= secs / 10, "{stderr}");
    for line in stderr.lines() {
        assert!(line.starts_with("sk: ") && line.contains(" unique, depth "), "{line:?}");
    }
}

fn squall_model_mutant_count() -> usize {
    let output = squall_model(&["list", "--json"]);
    let models: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    models[0]["mutants"].as_array().unwrap().len()
}

#[test]
fn all_mutants_with_json_prints_one_report_per_mutant() {
    let output = squall_model(&["check", "gossip", "--all-mutants", "--json", "-q"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let reports: Vec<serde_json::Value> =
        stdout(&output).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(reports.len(), squall_model_mutant_count());
    for report in reports {
        assert!(report["mutant"].is_string(), "{report}");
        let caught = report["properties"].as_array().unwrap().iter().any(|p| p["holds"] == false);
        assert!(caught, "{report}");
    }
}
