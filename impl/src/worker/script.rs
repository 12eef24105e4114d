//! A worker whose executors run scripted function bodies: what models and simulations run in
//! place of real code.
//!
//! Each function name maps to a list of steps — reads, writes, messages — that its executor performs
//! in order, each once the previous one was answered; then the function finishes with its name
//! as output. Executors and the worker exchange messages directly, as executors in the
//! worker's process would: none is lost or duplicated, and all die with the worker.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::{ExecMsg, SystemMsg, SystemTimer, Worker, WorkerConfig};
use crate::base::Key;
use crate::node::{Input, Node, NodeId, Outbox, Output, Violation};
use crate::session::{CallId, Write};

/// One step of a scripted function body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Step {
    /// Read a key.
    Get(Key),
    /// Write a key.
    Put(Key, Write),
    /// Send bytes to the function with this label in the session's DAG.
    Send(String, Bytes),
    /// Wait for a message.
    Recv,
}

/// How a scripted worker is configured: the worker, and every function's body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ScriptedWorkerConfig {
    /// The worker.
    pub worker: WorkerConfig,
    /// Each function's steps, by name (a function with none reads its declared keys only).
    pub bodies: BTreeMap<String, Vec<Step>>,
}

/// A function body running on an executor: its steps, and how far it got.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Run {
    call: CallId,
    function: String,
    /// The step waiting for its answer (or the next to take).
    step: usize,
}

/// A scripted worker's state: the worker and its executors' runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScriptedWorker {
    worker: Worker,
    runs: BTreeMap<NodeId, Run>,
}

impl ScriptedWorker {
    /// The worker.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// Passes `input` to the worker, and plays its executors until they wait for it.
    fn drive(&mut self, cfg: &ScriptedWorkerConfig, input: Input<Worker>, out: &mut Outbox<Self>) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let mut inner = Outbox::new();
            self.worker.handle(&cfg.worker, input, &mut inner);
            for output in inner {
                match output {
                    Output::Send { to, msg: SystemMsg::Exec(msg) }
                        if cfg.worker.executors.contains(&to) =>
                    {
                        if let Some(reply) = self.execute(cfg, to, msg) {
                            inputs.push_back(Input::Receive {
                                from: to,
                                msg: SystemMsg::Exec(reply),
                            });
                        }
                    }
                    other => out.absorb_one(other),
                }
            }
        }
    }

    /// Executor `executor` takes the worker's `msg`; its next request or its end, if any.
    fn execute(
        &mut self,
        cfg: &ScriptedWorkerConfig,
        executor: NodeId,
        msg: ExecMsg,
    ) -> Option<ExecMsg> {
        match msg {
            ExecMsg::Invoke { call, function, .. } => {
                self.runs.insert(executor, Run { call, function, step: 0 });
                self.next(cfg, executor)
            }
            ExecMsg::GetOk { call, req, value } => self.answered(
                cfg,
                executor,
                call,
                req,
                value.map(|_| ()).map_err(|e| e.to_string()),
            ),
            ExecMsg::PutOk { call, req, result } => {
                self.answered(cfg, executor, call, req, result.map_err(|e| e.to_string()))
            }
            ExecMsg::Cancel { call } => {
                if self.runs.get(&executor).is_some_and(|run| run.call == call) {
                    self.runs.remove(&executor);
                }
                None
            }
            ExecMsg::Sent { call, req, result } => {
                self.answered(cfg, executor, call, req, result.map_err(|e| e.to_string()))
            }
            ExecMsg::Received { call, req, .. } => self.answered(cfg, executor, call, req, Ok(())),
            ExecMsg::Get { .. }
            | ExecMsg::Put { .. }
            | ExecMsg::Done { .. }
            | ExecMsg::Send { .. }
            | ExecMsg::Recv { .. } => None,
        }
    }

    /// Step `req` of the run on `executor` was answered: the next step, or the failure.
    fn answered(
        &mut self,
        cfg: &ScriptedWorkerConfig,
        executor: NodeId,
        call: CallId,
        req: u32,
        result: Result<(), String>,
    ) -> Option<ExecMsg> {
        let run = self
            .runs
            .get_mut(&executor)
            .filter(|run| run.call == call && run.step == req as usize)?;
        if let Err(reason) = result {
            self.runs.remove(&executor);
            return Some(ExecMsg::Done { call, result: Err(reason) });
        }
        run.step += 1;
        self.next(cfg, executor)
    }

    /// The run on `executor` takes its next step, or finishes.
    fn next(&mut self, cfg: &ScriptedWorkerConfig, executor: NodeId) -> Option<ExecMsg> {
        let run = self.runs.get(&executor)?;
        let (call, req) = (run.call, run.step as u32);
        let steps = cfg.bodies.get(&run.function).map_or(&[][..], Vec::as_slice);
        match steps.get(run.step) {
            Some(Step::Get(key)) => Some(ExecMsg::Get { call, req, key: key.clone() }),
            Some(Step::Put(key, write)) => {
                Some(ExecMsg::Put { call, req, key: key.clone(), write: write.clone() })
            }
            Some(Step::Send(to, bytes)) => {
                Some(ExecMsg::Send { call, req, to: to.clone(), bytes: bytes.clone() })
            }
            Some(Step::Recv) => Some(ExecMsg::Recv { call, req, wait: true }),
            None => {
                let output = Bytes::from(run.function.clone());
                self.runs.remove(&executor);
                Some(ExecMsg::Done { call, result: Ok(output) })
            }
        }
    }
}

impl Node for ScriptedWorker {
    type Config = ScriptedWorkerConfig;
    type Msg = SystemMsg;
    type Timer = SystemTimer;
    type Durable = u32;

    fn init(cfg: &ScriptedWorkerConfig, persisted: &u32, out: &mut Outbox<Self>) -> Self {
        let mut inner = Outbox::new();
        let worker = Worker::init(&cfg.worker, persisted, &mut inner);
        out.absorb(inner);
        Self { worker, runs: BTreeMap::new() }
    }

    fn handle(&mut self, cfg: &ScriptedWorkerConfig, input: Input<Self>, out: &mut Outbox<Self>) {
        let input = match input {
            // Executors are inside: nothing from outside speaks for them.
            Input::Receive { msg: SystemMsg::Exec(_), .. } => {
                return out.ignore("an executor message from outside the worker");
            }
            Input::Receive { from, msg } => Input::Receive { from, msg },
            Input::Timeout(timer) => Input::Timeout(timer),
        };
        self.drive(cfg, input, out);
    }

    fn check_step(
        cfg: &ScriptedWorkerConfig,
        before: &Self,
        after: &Self,
    ) -> Result<(), Violation> {
        Worker::check_step(&cfg.worker, &before.worker, &after.worker)
    }

    fn is_idle(&self, cfg: &ScriptedWorkerConfig) -> bool {
        self.runs.is_empty() && self.worker.is_idle(&cfg.worker)
    }
}
