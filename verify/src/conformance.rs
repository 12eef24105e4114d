//! Conformance traces: every role's inputs and outputs in a handful of scenarios, as
//! language-neutral JSON lines, so an implementation in another language can replay them.
//!
//! A scenario starts its nodes in id order and runs them over a perfect network: messages
//! arrive in the order they were sent, each before any timer fires; when no message is in
//! flight, the timer with the earliest deadline fires (ties in the order they were armed). It
//! stops once the scenario is done and no message is in flight. Every line of a trace is one
//! JSON object:
//!
//! - `{"type":"config","node":N,"role":R,"config":{…}}` — first, one per node;
//! - `{"type":"step","step":S,"node":N,"input":I,"outputs":[…]}` — then one per `init` or
//!   `handle` call, where `I` is `{"init":{"durable":D}}`, `{"receive":{"from":N,"msg":M}}` or
//!   `{"timeout":T}`, and each output is `{"send":{"to":N,"msg":M}}`,
//!   `{"set_timer":{"timer":T,"after_us":U}}`, `{"cancel_timer":T}`, `{"persist":D}` or
//!   `{"ignored":REASON}`.
//!
//! Messages, timers, configurations and durable state are the `squall-proto` types in
//! [canonical JSON](crate::canonical) (externally tagged enums, bytes as hex, durations as
//! integer microseconds, no nested nulls). A replayer feeds each `step`'s input to its node,
//! built from the `config` line, and compares the outputs, in order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use squall_proto::cache::{CacheConfig, CachedKvsConfig, CachedKvsNode};
use squall_proto::gossip::{self, GossipConfig, GossipNode, ReplicaConfig};
use squall_proto::kvs::{
    self, ClientConfig, Durability, KvsConfig, KvsMsg, KvsNode, Op, Ring, ScriptConfig,
    StorageConfig,
};
use squall_proto::lattice::{
    Dependencies, LatticeType, LatticeValue, Lww, MultiKeyCausal, SetUnion, Stamp, VectorClock,
    WriterId,
};
use squall_proto::session::{self, Call, Dag, Level, SchedulerConfig, SessionMsg};
use squall_proto::sim::{self as simulator, Faults, Recorded, Sim};
use squall_proto::worker::{
    ScriptedWorkerConfig, Step, SystemConfig, SystemMsg, SystemNode, WorkerConfig,
};
use squall_proto::{Input, Node, NodeId, Outbox, Output, Refusal};

/// A scenario: its name (the trace's file stem) and how to produce its trace.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// The file stem, e.g. `kvs-put-get`.
    pub name: &'static str,
    /// What it exercises, in a line.
    pub about: &'static str,
    /// Produces the trace.
    pub trace: fn() -> String,
}

/// Every scenario, in a stable order.
pub const SCENARIOS: [Scenario; 12] = [
    Scenario {
        name: "gossip-two-writers",
        about: "3 LWW replicas; two clients write the same time (ties broken by writer)",
        trace: gossip_two_writers,
    },
    Scenario {
        name: "gossip-delete",
        about: "3 LWW replicas; a client writes then deletes, another's older write arrives late",
        trace: gossip_delete,
    },
    Scenario {
        name: "gossip-faults",
        about: "3 LWW replicas, 2 clients; lost, duplicated and replayed messages, timers in any order",
        trace: gossip_faults,
    },
    Scenario {
        name: "kvs-put-get",
        about: "3 storage nodes at replication 3; majority put, get, wrong-type put, missing get",
        trace: kvs_put_get,
    },
    Scenario {
        name: "kvs-redirect",
        about: "3 storage nodes at replication 1; a client with a one-node ring is redirected",
        trace: kvs_redirect,
    },
    Scenario {
        name: "kvs-leave",
        about: "3 storage nodes at replication 2; nodes 2 and 1 leave, handing their keys off; 0 may not",
        trace: kvs_leave,
    },
    Scenario {
        name: "kvs-faults",
        about: "3 storage nodes, 2 clients; lost and duplicated messages, storage crashes and restarts",
        trace: kvs_faults,
    },
    Scenario {
        name: "cache-push",
        about: "2 storage nodes, a cache and its executor; a direct write is pushed to the cache",
        trace: cache_push,
    },
    Scenario {
        name: "cache-faults",
        about: "2 storage nodes, a one-key cache and 2 clients; eviction, leases, crashes, lost pushes",
        trace: cache_faults,
    },
    Scenario {
        name: "session-dsrr",
        about: "a DSRR call of f0(x) → f1(x, y) on two workers while a writer updates x",
        trace: session_dsrr,
    },
    Scenario {
        name: "session-dsc",
        about: "a DSC call of f0(x) → f1(x, y) over causal values; the new x depends on the new y",
        trace: session_dsc,
    },
    Scenario {
        name: "session-faults",
        about: "DSRR and DSC calls on two crashing workers with pin leases; lost and duplicated messages",
        trace: session_faults,
    },
];

/// An output as a trace records it.
pub(crate) fn output_json<N>(output: &Output<N>) -> Result<Value, canonical::Error>
where
    N: Node,
    N::Msg: Serialize,
    N::Timer: Serialize,
    N::Durable: Serialize,
{
    Ok(match output {
        Output::Send { to, msg } => json!({"send": {"to": to.0, "msg": canon(msg)?}}),
        Output::SetTimer { timer, after } => {
            json!({"set_timer": {"timer": canon(timer)?, "after_us": canon(after)?}})
        }
        Output::CancelTimer(timer) => json!({"cancel_timer": canon(timer)?}),
        Output::Persist(durable) => json!({"persist": canon(durable)?}),
        Output::Ignored { reason } => json!({"ignored": reason}),
    })
}

/// A step's outputs as a trace records them.
pub(crate) fn outputs_json<N>(out: &Outbox<N>) -> Result<Value, canonical::Error>
where
    N: Node,
    N::Msg: Serialize,
    N::Timer: Serialize,
    N::Durable: Serialize,
{
    out.as_slice().iter().map(output_json).collect::<Result<_, _>>().map(Value::Array)
}

/// Why a trace did not replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A line is not JSON, or a config, message or timer does not decode.
    #[error("line {line}: {what}")]
    Malformed {
        /// The 1-based line number.
        line: usize,
        /// What was wrong.
        what: String,
    },
    /// A step's outputs differ from the recorded ones.
    #[error("line {line}: node {node} emitted {actual}, the trace says {expected}")]
    Diverged {
        /// The 1-based line number.
        line: usize,
        /// The node.
        node: u64,
        /// What the state machine emitted.
        actual: Value,
        /// What the trace recorded.
        expected: Value,
    },
}

use crate::canonical::{self, from_value as decode, to_value as canon};

/// A step's input as a trace writes it (`{"receive":{"from":N,"msg":M}}` or
/// `{"timeout":T}`), decoded.
pub(crate) fn input_json<N>(input: &Value) -> Result<Input<N>, String>
where
    N: Node,
    N::Msg: serde::de::DeserializeOwned,
    N::Timer: serde::de::DeserializeOwned,
{
    if let Some(receive) = input.get("receive") {
        let from = receive["from"].as_u64().ok_or("no sender")?;
        let msg = decode(&receive["msg"]).map_err(|e| format!("message: {e}"))?;
        Ok(Input::Receive { from: NodeId(from), msg })
    } else if let Some(timer) = input.get("timeout") {
        Ok(Input::Timeout(decode(timer).map_err(|e| format!("timer: {e}"))?))
    } else {
        Err(format!("unknown input {input}"))
    }
}

/// Replays a trace against this crate's state machines, as a reimplementation would: builds
/// each node from its `config` line, feeds it each `step`'s input, and compares the outputs.
pub fn replay<N>(trace: &str) -> Result<usize, ReplayError>
where
    N: Node,
    N::Config: serde::de::DeserializeOwned,
    N::Msg: Serialize + serde::de::DeserializeOwned,
    N::Timer: Serialize + serde::de::DeserializeOwned,
    N::Durable: Serialize + serde::de::DeserializeOwned,
{
    let mut configs: BTreeMap<u64, N::Config> = BTreeMap::new();
    let mut nodes: BTreeMap<u64, N> = BTreeMap::new();
    let mut steps = 0;
    for (i, text) in trace.lines().enumerate() {
        let line = i + 1;
        let bad = |what: String| ReplayError::Malformed { line, what };
        let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let node = value["node"].as_u64().ok_or_else(|| bad("no node id".into()))?;
        match value["type"].as_str() {
            Some("config") => {
                let cfg = decode(&value["config"]).map_err(|e| bad(format!("config: {e}")))?;
                configs.insert(node, cfg);
            }
            Some("step") => {
                let cfg =
                    configs.get(&node).ok_or_else(|| bad(format!("no config for node {node}")))?;
                let input = &value["input"];
                let mut out = Outbox::new();
                if let Some(init) = input.get("init") {
                    let durable =
                        decode(&init["durable"]).map_err(|e| bad(format!("durable: {e}")))?;
                    nodes.insert(node, N::init(cfg, &durable, &mut out));
                } else {
                    let state = nodes
                        .get_mut(&node)
                        .ok_or_else(|| bad(format!("node {node} not started")))?;
                    state.handle(cfg, input_json(input).map_err(bad)?, &mut out);
                }
                let actual = outputs_json(&out).map_err(|e| bad(format!("outputs: {e}")))?;
                if actual != value["outputs"] {
                    return Err(ReplayError::Diverged {
                        line,
                        node,
                        actual,
                        expected: value["outputs"].clone(),
                    });
                }
                steps += 1;
            }
            _ => return Err(bad(format!("unknown line type {}", value["type"]))),
        }
    }
    Ok(steps)
}

/// Whether a scenario is done, from every node's configuration and state.
type Done<N> = fn(&[(&<N as Node>::Config, Option<&N>)]) -> bool;

/// A step's input as a trace writes it.
fn call_json<N>(call: &simulator::Call<N>) -> Result<Value, canonical::Error>
where
    N: Node,
    N::Msg: Serialize,
    N::Timer: Serialize,
    N::Durable: Serialize,
{
    Ok(match call {
        simulator::Call::Init(durable) => json!({"init": {"durable": canon(durable)?}}),
        simulator::Call::Handle(Input::Receive { from, msg }) => {
            json!({"receive": {"from": from.0, "msg": canon(msg)?}})
        }
        simulator::Call::Handle(Input::Timeout(timer)) => json!({"timeout": canon(timer)?}),
    })
}

/// The trace of `recorded`, the calls made to the nodes of `configs`.
fn render<N>(
    configs: &BTreeMap<NodeId, N::Config>,
    role: fn(&N::Config) -> &'static str,
    recorded: &[Recorded<N>],
) -> String
where
    N: Node,
    N::Config: Serialize,
    N::Msg: Serialize,
    N::Timer: Serialize,
    N::Durable: Serialize,
{
    const CANONICAL: &str = "the protocol types have a canonical JSON form";
    let configs = configs.iter().map(|(id, cfg)| {
        let cfg = canon(cfg).expect(CANONICAL);
        json!({"type": "config", "node": id.0, "role": role(&configs[id]), "config": cfg})
    });
    let steps = recorded.iter().enumerate().map(|(step, r)| {
        let input = call_json(&r.call).expect(CANONICAL);
        let outputs: Vec<Value> =
            r.outputs.iter().map(|o| output_json(o).expect(CANONICAL)).collect();
        json!({"type": "step", "step": step, "node": r.node.0, "input": input, "outputs": outputs})
    });
    let mut text = String::new();
    for line in configs.chain(steps) {
        text.push_str(&line.to_string());
        text.push('\n');
    }
    text
}

/// Runs `configs` over the perfect network until `done` holds with no message in flight (at
/// most `max_steps` handler calls), returning the trace.
fn run<N>(
    configs: Vec<(NodeId, N::Config)>,
    role: fn(&N::Config) -> &'static str,
    done: Done<N>,
    max_steps: usize,
) -> String
where
    N: Node,
    N::Config: Serialize,
    N::Msg: Serialize,
    N::Timer: Serialize,
    N::Durable: Serialize,
{
    let configs: BTreeMap<NodeId, N::Config> = configs.into_iter().collect();
    let mut nodes: BTreeMap<NodeId, N> = BTreeMap::new();
    let mut net = PerfectNetwork {
        recorded: Vec::new(),
        queue: VecDeque::new(),
        timers: BTreeMap::new(),
        now: Duration::ZERO,
        armed: 0,
    };
    for (&id, cfg) in &configs {
        let mut out = Outbox::new();
        let durable = N::Durable::default();
        nodes.insert(id, N::init(cfg, &durable, &mut out));
        net.execute(id, simulator::Call::Init(durable), out);
    }
    for _ in configs.len()..max_steps {
        let states: Vec<(&N::Config, Option<&N>)> =
            configs.iter().map(|(id, cfg)| (cfg, nodes.get(id))).collect();
        let next = match net.queue.pop_front() {
            Some((from, to, msg)) => Some((to, Input::Receive { from, msg })),
            None if done(&states) => None,
            None => net.timers.pop_first().map(|((deadline, _), (id, timer))| {
                net.now = net.now.max(deadline);
                (id, Input::Timeout(timer))
            }),
        };
        let Some((id, input)) = next else { break };
        let Some(node) = nodes.get_mut(&id) else { continue };
        let mut out = Outbox::new();
        node.handle(&configs[&id], input.clone(), &mut out);
        net.execute(id, simulator::Call::Handle(input), out);
    }
    render(&configs, role, &net.recorded)
}

/// The perfect network's state, and the calls made so far.
struct PerfectNetwork<N: Node> {
    recorded: Vec<Recorded<N>>,
    queue: VecDeque<(NodeId, NodeId, N::Msg)>,
    /// Armed timers: (deadline, arming order) → (node, timer).
    timers: BTreeMap<(Duration, u64), (NodeId, N::Timer)>,
    now: Duration,
    armed: u64,
}

impl<N: Node> PerfectNetwork<N> {
    /// Records `call` of `id` and executes its outputs `out`.
    fn execute(&mut self, id: NodeId, call: simulator::Call<N>, out: Outbox<N>) {
        let outputs = out.as_slice().to_vec();
        for output in out {
            match output {
                Output::Send { to, msg } => self.queue.push_back((id, to, msg)),
                Output::SetTimer { timer, after } => {
                    self.timers.retain(|_, (node, t)| !(*node == id && *t == timer));
                    self.timers.insert((self.now + after, self.armed), (id, timer));
                    self.armed += 1;
                }
                Output::CancelTimer(timer) => {
                    self.timers.retain(|_, (node, t)| !(*node == id && *t == timer));
                }
                Output::Persist(_) | Output::Ignored { .. } => {}
            }
        }
        self.recorded.push(Recorded { node: id, call, outputs });
    }
}

/// Runs `configs` in the simulator under `faults` (seeded by `seed`, crashing only the nodes
/// in `crashable`), with `inject`'s messages `(from, to, msg)` in flight from the start (what
/// an application or a transport would send), for `steps` steps, then without faults, every crashed node restarted, until
/// no message is in flight and `done` holds (at most `max_steps` more, timers firing by deadline), returning the trace of
/// every call the nodes got: lost, duplicated and replayed messages, timers firing in any
/// order, crashes (a node's calls stop) and restarts (an `init` with what it persisted).
fn simulated<N>(
    (seed, faults, crashable): (u64, Faults, &[u64]),
    configs: Vec<(NodeId, N::Config)>,
    inject: Vec<(u64, u64, N::Msg)>,
    role: fn(&N::Config) -> &'static str,
    done: Done<N>,
    (steps, max_steps): (u64, u64),
) -> String
where
    N: Node,
    N::Config: Serialize,
    N::Msg: Serialize,
    N::Timer: Serialize,
    N::Durable: Serialize,
{
    let mut sim: Sim<N> = Sim::recording(seed, faults, configs.iter().cloned());
    sim.set_crashable(crashable.iter().copied().map(NodeId));
    for (from, to, msg) in inject {
        sim.inject(NodeId(from), NodeId(to), msg);
    }
    sim.run(steps).expect("the state machines pass their step checks");
    // Settling runs in timed mode, as the simulator's liveness phases do: timers at their
    // deadlines, so leases and deadlines do not lapse before what they wait for can happen.
    sim.set_timed(true);
    sim.run_until_settled(max_steps, |sim| done(&sim.states()))
        .expect("the scenario settles once the faults stop");
    render(&configs.into_iter().collect(), role, sim.recorded())
}

fn lww(time: u64, writer: u64, value: &'static [u8]) -> LatticeValue {
    LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(writer)), Bytes::from_static(value)))
}

/// Replicas 0..3 of an LWW register, and one client per `(id, replica, writes)`.
fn gossip_scenario(clients: Vec<(u64, u64, Vec<Lww<u16>>)>, max_steps: usize) -> String {
    let replicas: Vec<NodeId> = (0..3).map(NodeId).collect();
    let mut configs: Vec<(NodeId, GossipConfig<u16>)> = replicas
        .iter()
        .map(|&id| {
            (id, GossipConfig::Replica(ReplicaConfig::with_default_period(id, replicas.clone())))
        })
        .collect();
    for (c, replica, writes) in clients {
        let cfg =
            gossip::ClientConfig::new(NodeId(c), NodeId(replica), writes, gossip::GOSSIP_PERIOD);
        configs.push((NodeId(c), GossipConfig::Client(cfg)));
    }
    let role = |cfg: &GossipConfig<u16>| match cfg {
        GossipConfig::Replica(_) => "replica",
        GossipConfig::Client(_) => "client",
    };
    run::<GossipNode<u16>>(configs, role, gossip::invariants::quiescent, max_steps)
}

fn gossip_two_writers() -> String {
    let write = |c: u64| vec![Lww::new(Stamp::new(1, WriterId(c)), 100 + c as u16)];
    gossip_scenario(vec![(3, 0, write(3)), (4, 2, write(4))], 200)
}

fn gossip_delete() -> String {
    // Client 3 writes at time 2 and deletes at time 3 through replica 0; client 4's write at
    // time 1 reaches replica 2 and must lose to the delete everywhere.
    let writes =
        vec![Lww::new(Stamp::new(2, WriterId(3)), 7), Lww::deleted(Stamp::new(3, WriterId(3)))];
    let late = vec![Lww::new(Stamp::new(1, WriterId(4)), 9)];
    gossip_scenario(vec![(3, 0, writes), (4, 2, late)], 300)
}

/// Storage nodes 0..3 on one ring at `replication` (each config passed through `storage`), and
/// client 3 making `ops`, routing by `client_ring` (the storage nodes' ring if `None`).
fn kvs_scenario(
    replication: usize,
    storage: fn(&mut StorageConfig),
    client_ring: Option<Ring>,
    ops: Vec<Op>,
    max_steps: usize,
) -> String {
    let ids: Vec<NodeId> = (0..3).map(NodeId).collect();
    let ring = Ring::with_members(16, ids.iter().copied());
    let mut configs: Vec<(NodeId, KvsConfig)> = ids
        .iter()
        .map(|&id| {
            let mut cfg = StorageConfig::new(id, ring.clone(), replication);
            storage(&mut cfg);
            (id, KvsConfig::Storage(cfg))
        })
        .collect();
    let client = ClientConfig::new(NodeId(3), client_ring.unwrap_or(ring), replication);
    configs.push((NodeId(3), KvsConfig::Client(ScriptConfig::new(client, ops))));
    run::<KvsNode>(configs, kvs_role, kvs::invariants::quiescent, max_steps)
}

fn kvs_redirect() -> String {
    // The client believes node 0 alone holds every key: the owners of the others redirect it.
    let stale = Ring::with_members(16, [NodeId(0)]);
    let ops = ["a", "b", "c", "d"]
        .iter()
        .map(|k| Op::Put { key: (*k).into(), value: lww(1, 3, b"v"), durability: Durability::One })
        .chain(std::iter::once(Op::Get { key: "d".into() }))
        .collect();
    kvs_scenario(1, |_| {}, Some(stale), ops, 400)
}

fn kvs_leave() -> String {
    let ops = vec![
        Op::Put { key: "a".into(), value: lww(1, 3, b"x"), durability: Durability::All },
        Op::Put { key: "b".into(), value: lww(1, 3, b"y"), durability: Durability::All },
        Op::Leave { node: NodeId(2) },
        Op::Get { key: "a".into() },
        Op::Get { key: "b".into() },
        // Node 1 leaves too; node 0, the last member, may not.
        Op::Leave { node: NodeId(1) },
        Op::Leave { node: NodeId(0) },
        Op::Get { key: "a".into() },
    ];
    kvs_scenario(2, |_| {}, None, ops, 1_000)
}

fn kvs_role(cfg: &KvsConfig) -> &'static str {
    match cfg {
        KvsConfig::Storage(_) => "storage",
        KvsConfig::Client(_) => "client",
    }
}

fn cache_role(cfg: &CachedKvsConfig) -> &'static str {
    match cfg {
        CachedKvsConfig::Storage(_) => "storage",
        CachedKvsConfig::Client(_) => "client",
        CachedKvsConfig::Cache(_) => "cache",
    }
}

fn kvs_put_get() -> String {
    let wrong = LatticeValue::Set(SetUnion::singleton(Bytes::from_static(b"s")));
    let ops = vec![
        Op::Put { key: "k0".into(), value: lww(1, 3, b"a"), durability: Durability::Majority },
        Op::Get { key: "k0".into() },
        Op::Put { key: "k0".into(), value: wrong, durability: Durability::One },
        Op::Get { key: "k1".into() },
    ];
    let schema = |cfg: &mut StorageConfig| {
        cfg.schema = BTreeMap::from([("k".to_owned(), LatticeType::Lww)]);
    };
    kvs_scenario(3, schema, None, ops, 400)
}

fn cache_push() -> String {
    let ids: Vec<NodeId> = (0..2).map(NodeId).collect();
    let ring = Ring::with_members(16, ids.iter().copied());
    let mut configs: Vec<(NodeId, CachedKvsConfig)> = ids
        .iter()
        .map(|&id| (id, CachedKvsConfig::Storage(StorageConfig::new(id, ring.clone(), 2))))
        .collect();
    let cache = NodeId(2);
    configs.push((cache, CachedKvsConfig::Cache(CacheConfig::new(cache, ring.clone(), 2))));
    // The executor reads k through the cache (a miss, then a subscription), writes it, and
    // reads it again; a direct client's later write reaches the cache as a push.
    let executor_ops = vec![
        Op::Get { key: "k".into() },
        Op::Put { key: "k".into(), value: lww(1, 3, b"mine"), durability: Durability::All },
        Op::Get { key: "k".into() },
    ];
    let mut executor = ClientConfig::new(NodeId(3), ring.clone(), 2);
    executor.via = Some(cache);
    configs.push((NodeId(3), CachedKvsConfig::Client(ScriptConfig::new(executor, executor_ops))));
    let direct_ops = vec![
        Op::Get { key: "other".into() },
        Op::Put { key: "k".into(), value: lww(5, 4, b"theirs"), durability: Durability::All },
    ];
    let direct = ClientConfig::new(NodeId(4), ring, 2);
    configs.push((NodeId(4), CachedKvsConfig::Client(ScriptConfig::new(direct, direct_ops))));
    run::<CachedKvsNode>(configs, cache_role, kvs::invariants::quiescent, 600)
}

fn session_role(cfg: &SystemConfig) -> &'static str {
    match cfg {
        SystemConfig::Scheduler(_) => "scheduler",
        SystemConfig::Worker(_) => "worker",
        SystemConfig::Storage(_) => "storage",
        SystemConfig::Client(_) => "client",
    }
}

/// A scheduler (n0) calling `f0(x) → f1(x, y)` once at `level` on workers n1 and n2 (one
/// executor each, inside), a storage node (n3) and a writer (n4) putting `puts` in order.
fn session(level: Level, puts: Vec<(&str, LatticeValue)>) -> String {
    let dag = Dag::chain(&[&["x"], &["x", "y"]]).expect("a valid chain");
    let workers = vec![NodeId(1), NodeId(2)];
    let ring = Ring::with_members(16, [NodeId(3)]);
    let mut scheduler = SchedulerConfig::new(NodeId(0), workers.clone());
    scheduler.calls = vec![Call { client: NodeId(9), req: 0, level, dag, args: Vec::new() }];
    let mut configs = vec![(NodeId(0), SystemConfig::Scheduler(scheduler))];
    for &id in &workers {
        let cache = CacheConfig::new(id, ring.clone(), 1);
        let mut worker = WorkerConfig::new(cache, NodeId(0), vec![NodeId(100)]);
        worker.session.pin_lease = None;
        let cfg = ScriptedWorkerConfig { worker, bodies: BTreeMap::new() };
        configs.push((id, SystemConfig::Worker(cfg)));
    }
    configs
        .push((NodeId(3), SystemConfig::Storage(StorageConfig::new(NodeId(3), ring.clone(), 1))));
    let ops = puts
        .into_iter()
        .map(|(k, v)| Op::Put { key: k.to_owned(), value: v, durability: Durability::One })
        .collect();
    let writer = ClientConfig::new(NodeId(4), ring, 1);
    configs.push((NodeId(4), SystemConfig::Client(ScriptConfig::new(writer, ops))));
    // Done once every session ended and the writer's puts are in: everything idle.
    run::<SystemNode>(configs, session_role, session::invariants::quiescent, 600)
}

fn session_dsrr() -> String {
    session(
        Level::Dsrr,
        vec![("x", lww(1, 4, b"x1")), ("y", lww(1, 4, b"y1")), ("x", lww(2, 4, b"x2"))],
    )
}

fn session_dsc() -> String {
    let clock = |n| VectorClock::new([(WriterId(4), n)]);
    let causal = |n, deps: Dependencies<String>| {
        LatticeValue::MultiKeyCausal(MultiKeyCausal::new(clock(n), deps, Bytes::from_static(b"v")))
    };
    // The writer never reuses a clock: x@1 and y@2 at first, then y@3, then x@4 after y@3.
    session(
        Level::Dsc,
        vec![
            ("x", causal(1, Dependencies::default())),
            ("y", causal(2, Dependencies::default())),
            ("y", causal(3, Dependencies::default())),
            ("x", causal(4, Dependencies::new([("y".to_owned(), clock(3))]))),
        ],
    )
}

/// The seeds of the simulated scenarios, chosen for what their runs cover (see
/// `verify/tests/conformance.rs`, which checks that the traces together exercise every message
/// and timer).
const GOSSIP_FAULTS_SEED: u64 = 3;
const KVS_FAULTS_SEED: u64 = 1;
const CACHE_FAULTS_SEED: u64 = 13;
const SESSION_FAULTS_SEED: u64 = 2;

/// The faults of the simulated scenarios: a tenth of messages lost and a tenth duplicated,
/// crashes at `crash_per_mille` of steps (restarts ten times as often), and a fifth of what a
/// node was sent before a crash arriving again after its restart.
fn faults(crash_per_mille: u16) -> Faults {
    Faults {
        drop_per_mille: 100,
        duplicate_per_mille: 100,
        crash_per_mille,
        restart_per_mille: crash_per_mille * 10,
        replay_per_mille: 200,
        ..Faults::NONE
    }
}

fn gossip_faults() -> String {
    gossip_faults_seeded(GOSSIP_FAULTS_SEED)
}

fn gossip_faults_seeded(seed: u64) -> String {
    let replicas: Vec<NodeId> = (0..3).map(NodeId).collect();
    let mut configs: Vec<(NodeId, GossipConfig<u16>)> = replicas
        .iter()
        .map(|&id| {
            (id, GossipConfig::Replica(ReplicaConfig::with_default_period(id, replicas.clone())))
        })
        .collect();
    for (c, replica) in [(3, 0), (4, 1)] {
        let writes = (1..=3).map(|t| Lww::new(Stamp::new(t, WriterId(c)), (10 * c + t) as u16));
        let cfg = gossip::ClientConfig::new(
            NodeId(c),
            NodeId(replica),
            writes.collect(),
            gossip::GOSSIP_PERIOD,
        );
        configs.push((NodeId(c), GossipConfig::Client(cfg)));
    }
    let role = |cfg: &GossipConfig<u16>| match cfg {
        GossipConfig::Replica(_) => "replica",
        GossipConfig::Client(_) => "client",
    };
    simulated::<GossipNode<u16>>(
        (seed, faults(0), &[]),
        configs,
        Vec::new(),
        role,
        gossip::invariants::quiescent,
        (120, 2_000),
    )
}

fn kvs_faults() -> String {
    kvs_faults_seeded(KVS_FAULTS_SEED)
}

fn kvs_faults_seeded(seed: u64) -> String {
    let ids: Vec<NodeId> = (0..3).map(NodeId).collect();
    let ring = Ring::with_members(16, ids.iter().copied());
    let mut configs: Vec<(NodeId, KvsConfig)> = ids
        .iter()
        .map(|&id| (id, KvsConfig::Storage(StorageConfig::new(id, ring.clone(), 3))))
        .collect();
    let put = |key: &str, time, durability| Op::Put {
        key: key.into(),
        value: lww(time, 3, b"v"),
        durability,
    };
    let ops = vec![
        put("a", 1, Durability::Majority),
        put("b", 2, Durability::All),
        Op::Get { key: "a".into() },
        put("a", 3, Durability::One),
        Op::Get { key: "b".into() },
    ];
    configs.push((
        NodeId(3),
        KvsConfig::Client(ScriptConfig::new(ClientConfig::new(NodeId(3), ring.clone(), 3), ops)),
    ));
    // Client 4 also has node 2 leave: ring updates, lost or not, and a handoff under faults.
    let ops = vec![
        Op::Get { key: "a".into() },
        put("c", 4, Durability::Majority),
        Op::Leave { node: NodeId(2) },
        Op::Get { key: "c".into() },
    ];
    configs.push((
        NodeId(4),
        KvsConfig::Client(ScriptConfig::new(ClientConfig::new(NodeId(4), ring, 3), ops)),
    ));
    // A transport refuses client 3's first request on node 0's behalf (it was overloaded).
    let refused = KvsMsg::Refused { req: 0, refusal: Refusal::Overloaded };
    simulated::<KvsNode>(
        (seed, faults(20), &[0, 1, 2]),
        configs,
        vec![(0, 3, refused)],
        kvs_role,
        kvs::invariants::quiescent,
        (250, 4_000),
    )
}

fn cache_faults() -> String {
    cache_faults_seeded(CACHE_FAULTS_SEED)
}

fn cache_faults_seeded(seed: u64) -> String {
    let ids: Vec<NodeId> = (0..2).map(NodeId).collect();
    let ring = Ring::with_members(16, ids.iter().copied());
    let mut configs: Vec<(NodeId, CachedKvsConfig)> = ids
        .iter()
        .map(|&id| (id, CachedKvsConfig::Storage(StorageConfig::new(id, ring.clone(), 2))))
        .collect();
    let cache = NodeId(2);
    let mut cache_cfg = CacheConfig::new(cache, ring.clone(), 2);
    // One key at a time: reading a second evicts the first (an Unsubscribe).
    cache_cfg.max_keys = 1;
    configs.push((cache, CachedKvsConfig::Cache(cache_cfg)));
    let executor_ops = vec![
        Op::Get { key: "k".into() },
        Op::Put { key: "k".into(), value: lww(1, 3, b"mine"), durability: Durability::All },
        Op::Get { key: "j".into() },
        Op::Get { key: "k".into() },
    ];
    let mut executor = ClientConfig::new(NodeId(3), ring.clone(), 2);
    executor.via = Some(cache);
    configs.push((NodeId(3), CachedKvsConfig::Client(ScriptConfig::new(executor, executor_ops))));
    let direct_ops = vec![
        Op::Put { key: "k".into(), value: lww(5, 4, b"theirs"), durability: Durability::All },
        Op::Put { key: "j".into(), value: lww(6, 4, b"jay"), durability: Durability::One },
    ];
    let direct = ClientConfig::new(NodeId(4), ring, 2);
    configs.push((NodeId(4), CachedKvsConfig::Client(ScriptConfig::new(direct, direct_ops))));
    simulated::<CachedKvsNode>(
        (seed, faults(20), &[0, 1, 2]),
        configs,
        Vec::new(),
        cache_role,
        kvs::invariants::quiescent,
        (300, 6_000),
    )
}

fn session_faults() -> String {
    session_faults_seeded(SESSION_FAULTS_SEED)
}

fn session_faults_seeded(seed: u64) -> String {
    let dag = Dag::chain(&[&["x"], &["x", "y"]]).expect("a valid chain");
    let workers = vec![NodeId(1), NodeId(2)];
    let ring = Ring::with_members(16, [NodeId(3)]);
    let mut scheduler = SchedulerConfig::new(NodeId(0), workers.clone());
    scheduler.calls = [(0, Level::Dsrr), (1, Level::Dsc)]
        .into_iter()
        .map(|(req, level)| Call {
            client: NodeId(9),
            req,
            level,
            dag: dag.clone(),
            args: Vec::new(),
        })
        .collect();
    let mut configs = vec![(NodeId(0), SystemConfig::Scheduler(scheduler))];
    // f0 reads x and sends f1 a message; f1 waits for it, then reads x and y.
    let bodies = BTreeMap::from([
        (
            "f0".to_owned(),
            vec![Step::Get("x".into()), Step::Send("f1".into(), Bytes::from_static(b"hi"))],
        ),
        ("f1".to_owned(), vec![Step::Recv, Step::Get("x".into()), Step::Get("y".into())]),
    ]);
    for &id in &workers {
        let cache = CacheConfig::new(id, ring.clone(), 1);
        let mut worker = WorkerConfig::new(cache, NodeId(0), vec![NodeId(100)]);
        // Workers report what they cache, so the scheduler hears `Cached`.
        worker.report_keys = 4;
        let cfg = ScriptedWorkerConfig { worker, bodies: bodies.clone() };
        configs.push((id, SystemConfig::Worker(cfg)));
    }
    configs
        .push((NodeId(3), SystemConfig::Storage(StorageConfig::new(NodeId(3), ring.clone(), 1))));
    let ops = [("x", 1), ("y", 2), ("x", 3)]
        .into_iter()
        .map(|(k, t)| Op::Put {
            key: k.to_owned(),
            value: lww(t, 4, b"w"),
            durability: Durability::One,
        })
        .collect();
    let writer = ClientConfig::new(NodeId(4), ring, 1);
    configs.push((NodeId(4), SystemConfig::Client(ScriptConfig::new(writer, ops))));
    // An application calls once more and submits once (answered at once), and a transport
    // refuses a request on the scheduler's behalf that it never made.
    let call =
        |req| SessionMsg::Call { req, level: Level::SingleKey, dag: dag.clone(), args: Vec::new() };
    let submit =
        SessionMsg::Submit { req: 3, level: Level::Lww, dag: dag.clone(), args: Vec::new() };
    let refused = SessionMsg::Refused { req: 7, refusal: Refusal::Unreachable };
    let inject = [(9, 0, call(2)), (9, 0, submit), (1, 0, refused)];
    simulated::<SystemNode>(
        (seed, faults(20), &[1, 2]),
        configs,
        inject.into_iter().map(|(from, to, msg)| (from, to, SystemMsg::Session(msg))).collect(),
        session_role,
        session::invariants::quiescent,
        (300, 6_000),
    )
}

/// What a trace exercises: each message variant sent or received (`msg:Put`, or
/// `msg:Kvs::Put` in the system world), each timer variant that fired (`timer:Gossip`), each
/// role that restarted (`restart:storage`), and whether a message was lost (sent, never
/// received: `lost`) or received more often than sent (`duplicated`).
pub fn exercised(trace: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut roles: BTreeMap<u64, String> = BTreeMap::new();
    let mut started: BTreeSet<u64> = BTreeSet::new();
    // (from, to, message) → sent minus received.
    let mut in_flight: BTreeMap<(u64, u64, String), i64> = BTreeMap::new();
    let mut sent: BTreeSet<(u64, u64, String)> = BTreeSet::new();
    for line in trace.lines() {
        let Ok(line) = serde_json::from_str::<Value>(line) else { continue };
        let node = line["node"].as_u64().unwrap_or(u64::MAX);
        if line["type"] == "config" {
            roles.insert(node, line["role"].as_str().unwrap_or_default().to_owned());
            continue;
        }
        let input = &line["input"];
        for send in line["outputs"].as_array().into_iter().flatten().filter_map(|o| o.get("send")) {
            seen.insert(format!("msg:{}", variant_path(&send["msg"])));
            let to = send["to"].as_u64().unwrap_or(u64::MAX);
            let key = (node, to, send["msg"].to_string());
            sent.insert(key.clone());
            *in_flight.entry(key).or_default() += 1;
        }
        if let Some(receive) = input.get("receive") {
            seen.insert(format!("msg:{}", variant_path(&receive["msg"])));
            let from = receive["from"].as_u64().unwrap_or(u64::MAX);
            let pending = in_flight.entry((from, node, receive["msg"].to_string())).or_default();
            *pending -= 1;
            // Messages a node never sent come from outside (an application, a transport).
            if *pending < 0 && sent.contains(&(from, node, receive["msg"].to_string())) {
                seen.insert("duplicated".to_owned());
            }
        }
        if let Some(timer) = input.get("timeout") {
            seen.insert(format!("timer:{}", variant_path(timer)));
        }
        if input.get("init").is_some() && !started.insert(node) {
            seen.insert(format!("restart:{}", roles.get(&node).map_or("?", String::as_str)));
        }
    }
    // Messages to ids that are not nodes of the trace leave it (an application's answers).
    if in_flight.iter().any(|((_, to, _), &n)| n > 0 && roles.contains_key(to)) {
        seen.insert("lost".to_owned());
    }
    seen
}

/// An externally tagged enum value's variant names, outermost first: `Kvs::Put` for
/// `{"Kvs":{"Put":{...}}}`, `Gossip` for `"Gossip"`.
fn variant_path(value: &Value) -> String {
    match value {
        Value::String(name) => name.clone(),
        Value::Object(fields) if fields.len() == 1 => {
            let (name, inner) = fields.iter().next().expect("one field");
            // Only the system world's layers wrap another protocol's enum.
            if ["Kvs", "Session", "Exec"].contains(&name.as_str()) && !inner.is_null() {
                format!("{name}::{}", variant_path(inner))
            } else {
                name.clone()
            }
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod seed_scan {
    use super::*;

    /// For picking the simulated scenarios' seeds after a protocol change: what each of the
    /// first 16 seeds' traces lacks of what any of them exercises, and their lengths.
    /// `cargo test -p squall-verify --lib seed_scan -- --ignored --nocapture`
    #[test]
    #[ignore = "a tool for choosing seeds, not a check"]
    #[allow(clippy::print_stdout)]
    fn scan() {
        type Seeded = fn(u64) -> String;
        let scenarios: [(&str, Seeded); 4] = [
            ("gossip", gossip_faults_seeded),
            ("kvs", kvs_faults_seeded),
            ("cache", cache_faults_seeded),
            ("session", session_faults_seeded),
        ];
        for (name, f) in scenarios {
            let mut union = BTreeSet::new();
            let runs: Vec<(u64, BTreeSet<String>, usize)> = (0..16)
                .filter_map(|seed| {
                    let Ok(t) = std::panic::catch_unwind(|| f(seed)) else {
                        println!("{name} seed {seed}: does not settle");
                        return None;
                    };
                    let e = exercised(&t);
                    union.extend(e.clone());
                    Some((seed, e, t.lines().count()))
                })
                .collect();
            for (seed, e, lines) in runs {
                let missing: Vec<&String> = union.difference(&e).collect();
                println!("{name} seed {seed}: {lines} lines, missing {missing:?}");
            }
        }
    }
}
