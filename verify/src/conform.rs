//! The conformance harness for implementations in any language: `squall-verify conform` runs
//! an external program as each node of a [conformance trace](crate::conformance), speaking
//! JSON lines on its stdin and stdout, and reports the first output that differs from the
//! trace. `squall-verify node` is the same protocol served by this crate's state machines.
//!
//! The protocol (docs/conformance.md): the harness starts the program once per node, writes
//! `{"type":"init","protocol":P,"node":N,"role":R,"config":C,"durable":D}`, then one
//! `{"type":"input","input":I}` per step of that node, in the trace's order (`I` as the trace
//! writes it: `{"receive":{"from":N,"msg":M}}` or `{"timeout":T}`). A node that crashed and
//! restarts in the trace is a new process, started the same way with what it persisted. For each line it reads one
//! line back, `{"outputs":[...]}`, the outputs as the trace writes them. Outputs match when
//! they are equal in order, except that an `{"ignored":REASON}` matches any reason (reasons
//! are diagnostics, not protocol). The harness then closes the program's stdin.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use squall_proto::cache::CachedKvsNode;
use squall_proto::gossip::GossipNode;
use squall_proto::kvs::KvsNode;
use squall_proto::worker::SystemNode;
use squall_proto::{Node, Outbox};

use crate::canonical;
use crate::conformance::{Scenario, input_json, outputs_json};

/// The protocol a trace exercises, from its name's first word: `gossip`, `kvs`, `cache` or
/// `session`.
pub fn protocol_of(trace: &str) -> &str {
    trace.split('-').next().unwrap_or(trace)
}

/// How one node of one trace fared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReport {
    /// The trace.
    pub trace: &'static str,
    /// The node.
    pub node: u64,
    /// Its role.
    pub role: String,
    /// Steps replayed (its init included).
    pub steps: usize,
}

/// The first difference between a program and a trace.
#[derive(Debug, thiserror::Error)]
pub enum ConformError {
    /// The program could not be started, or stopped answering.
    #[error("trace {trace}, node {node}: {what}")]
    Program {
        /// The trace.
        trace: &'static str,
        /// The node.
        node: u64,
        /// What happened.
        what: String,
    },
    /// An answer differs from the trace.
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
}

/// Where a program's answer first differed from the trace, and how.
#[derive(Debug, thiserror::Error)]
#[error(
    "trace {trace}, node {node} ({role}), step {step} of the node (trace line {line}):\n  \
     input:    {input}\n  expected: {expected}\n  got:      {got}"
)]
pub struct Mismatch {
    /// The trace.
    pub trace: &'static str,
    /// The node.
    pub node: u64,
    /// Its role.
    pub role: String,
    /// The node's step (0 is its init).
    pub step: usize,
    /// The trace's line.
    pub line: usize,
    /// What the program was given.
    pub input: Value,
    /// The trace's outputs.
    pub expected: Value,
    /// The program's answer.
    pub got: Value,
}

/// Whether `got` matches the trace's `expected` outputs.
pub fn outputs_match(expected: &Value, got: &Value) -> bool {
    let (Some(expected), Some(got)) = (expected.as_array(), got.as_array()) else {
        return false;
    };
    expected.len() == got.len()
        && expected.iter().zip(got).all(|(e, g)| match (e.get("ignored"), g.get("ignored")) {
            (Some(_), Some(_)) => true,
            _ => e == g,
        })
}

/// A running program for one node.
struct Program {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Program {
    fn start(command: &str) -> std::io::Result<Self> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Self { child, stdin, stdout })
    }

    /// Writes `line`, reads the answer's `outputs`.
    fn ask(&mut self, line: &Value) -> Result<Value, String> {
        let stdin = self.stdin.as_mut().expect("open until finish");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = String::new();
        match self.stdout.read_line(&mut answer) {
            Ok(0) => return Err("the program closed its output".into()),
            Err(e) => return Err(format!("read: {e}")),
            Ok(_) => {}
        }
        let answer: Value = serde_json::from_str(&answer)
            .map_err(|e| format!("answer {:?} is not JSON: {e}", answer.trim()))?;
        answer.get("outputs").cloned().ok_or_else(|| format!("answer {answer} has no outputs"))
    }

    fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Replays `scenario` against `command`, one program per node whose role is in `roles` (every
/// role when empty).
pub fn conform(
    scenario: &Scenario,
    command: &str,
    roles: &[String],
) -> Result<Vec<NodeReport>, ConformError> {
    let trace = scenario.name;
    let lines: Vec<Value> = (scenario.trace)()
        .lines()
        .map(|l| serde_json::from_str(l).expect("the traces this crate writes are JSON"))
        .collect();
    let configs = lines.iter().filter(|l| l["type"] == "config");
    let mut reports = Vec::new();
    for config in configs {
        let node = config["node"].as_u64().expect("a node id");
        let role = config["role"].as_str().unwrap_or_default().to_owned();
        if !roles.is_empty() && !roles.contains(&role) {
            continue;
        }
        let program_error = |what: String| ConformError::Program { trace, node, what };
        let mut program: Option<Program> = None;
        let steps =
            lines.iter().enumerate().filter(|(_, l)| l["type"] == "step" && l["node"] == node);
        let mut count = 0;
        for (step, (i, line)) in steps.enumerate() {
            let input = &line["input"];
            let ask = match input.get("init") {
                Some(init) => {
                    // A start, or a restart after a crash: a fresh process, given only what
                    // the node persisted.
                    if let Some(crashed) = program.take() {
                        crashed.finish();
                    }
                    let started = Program::start(command)
                        .map_err(|e| program_error(format!("cannot start: {e}")))?;
                    program = Some(started);
                    json!({
                        "type": "init",
                        "protocol": protocol_of(trace),
                        "node": node,
                        "role": role,
                        "config": config["config"],
                        "durable": init["durable"],
                    })
                }
                None => json!({"type": "input", "input": input}),
            };
            let Some(running) = program.as_mut() else {
                return Err(program_error(format!("step {step}: an input before the node's init")));
            };
            let got =
                running.ask(&ask).map_err(|what| program_error(format!("step {step}: {what}")))?;
            if !outputs_match(&line["outputs"], &got) {
                return Err(ConformError::Mismatch(Box::new(Mismatch {
                    trace,
                    node,
                    role,
                    step,
                    line: i + 1,
                    input: ask,
                    expected: line["outputs"].clone(),
                    got,
                })));
            }
            count += 1;
        }
        if let Some(program) = program {
            program.finish();
        }
        reports.push(NodeReport { trace, node, role, steps: count });
    }
    Ok(reports)
}

/// `squall-verify node`: serves the protocol on `input` and `output` with this crate's state
/// machine for the protocol the init line names.
pub fn serve(input: impl BufRead, output: impl Write) -> anyhow::Result<()> {
    let mut lines = input.lines();
    let Some(first) = lines.next() else { return Ok(()) };
    let first = first?;
    let init: Value = serde_json::from_str(&first)?;
    let rest = lines.map(|l| l.map_err(anyhow::Error::from));
    match init["protocol"].as_str() {
        Some("gossip") => serve_node::<GossipNode<u16>>(&init, rest, output),
        Some("kvs") => serve_node::<KvsNode>(&init, rest, output),
        Some("cache") => serve_node::<CachedKvsNode>(&init, rest, output),
        Some("session") => serve_node::<SystemNode>(&init, rest, output),
        other => anyhow::bail!("unknown protocol {other:?} in the init line"),
    }
}

fn serve_node<N>(
    init: &Value,
    lines: impl Iterator<Item = anyhow::Result<String>>,
    mut output: impl Write,
) -> anyhow::Result<()>
where
    N: Node,
    N::Config: DeserializeOwned,
    N::Msg: Serialize + DeserializeOwned,
    N::Timer: Serialize + DeserializeOwned,
    N::Durable: Serialize + DeserializeOwned,
{
    let cfg: N::Config = canonical::from_value(&init["config"])?;
    let durable: N::Durable = canonical::from_value(&init["durable"])?;
    let mut out = Outbox::new();
    let mut node = N::init(&cfg, &durable, &mut out);
    let mut answer = |out: Outbox<N>| -> anyhow::Result<()> {
        writeln!(output, "{}", json!({ "outputs": outputs_json(&out)? }))?;
        Ok(output.flush()?)
    };
    answer(out)?;
    for line in lines {
        let line: Value = serde_json::from_str(&line?)?;
        let input = input_json(&line["input"]).map_err(anyhow::Error::msg)?;
        let mut out = Outbox::new();
        node.handle(&cfg, input, &mut out);
        answer(out)?;
    }
    Ok(())
}
