//! A scripted application around a [`KvsClient`]: the workload models and simulations drive
//! the real client with.
//!
//! It makes a fixed list of calls, one at a time — each as soon as the previous one ended — and
//! records every outcome, in order. The client inside is the one the cluster's client library
//! runs; the script only makes calls and reads answers, as an application would. Calls and
//! answers pass between the two directly, not over the network: an application reaches its
//! client in-process.

use super::client::{ClientConfig, KvsClient};
use super::msg::{KvsMsg, KvsTimer, Op, Outcome, ReqId};
use crate::node::{Input, Node, Outbox, Output, Violation};

/// How a scripted client is configured: its client, and the calls to make.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ScriptConfig {
    /// The client.
    pub client: ClientConfig,
    /// The calls, in order.
    pub ops: Vec<Op>,
}

impl ScriptConfig {
    /// `client` making `ops`.
    pub fn new(client: ClientConfig, ops: Vec<Op>) -> Self {
        Self { client, ops }
    }
}

/// A scripted client's state: the client and the outcomes so far.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScriptedClient {
    client: KvsClient,
    /// The outcomes of the finished calls, in order; call `outcomes.len()` is in progress.
    outcomes: Vec<Outcome>,
}

impl ScriptedClient {
    /// The outcomes of the finished calls, in order.
    pub fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    /// Whether every call has ended.
    pub fn is_done(&self, cfg: &ScriptConfig) -> bool {
        self.outcomes.len() >= cfg.ops.len()
    }

    /// The client inside.
    pub fn client(&self) -> &KvsClient {
        &self.client
    }

    /// Passes `input` to the client, and its outputs on: those for the application (this
    /// node's own id) are the script's answers, which start the next call.
    fn drive(&mut self, cfg: &ScriptConfig, input: Input<KvsClient>, out: &mut Outbox<Self>) {
        let mut inner = Outbox::new();
        self.client.handle(&cfg.client, input, &mut inner);
        let mut next = false;
        for output in inner {
            match output {
                Output::Send { to, msg: KvsMsg::Done { req, outcome } } if to == cfg.client.id => {
                    if req == self.outcomes.len() as ReqId {
                        self.outcomes.push(outcome);
                        next = true;
                    }
                }
                other => out.absorb_one(other),
            }
        }
        if next {
            self.call_next(cfg, out);
        }
    }

    /// Makes the next call, if any is left.
    fn call_next(&mut self, cfg: &ScriptConfig, out: &mut Outbox<Self>) {
        if let Some(op) = cfg.ops.get(self.outcomes.len()) {
            let req = self.outcomes.len() as ReqId;
            let call = KvsMsg::Call { req, op: op.clone() };
            self.drive(cfg, Input::Receive { from: cfg.client.id, msg: call }, out);
        }
    }
}

impl Node for ScriptedClient {
    type Config = ScriptConfig;
    type Msg = KvsMsg;
    type Timer = KvsTimer;
    type Durable = ();

    fn init(cfg: &ScriptConfig, _: &(), out: &mut Outbox<Self>) -> Self {
        let mut inner = Outbox::new();
        let client = KvsClient::init(&cfg.client, &(), &mut inner);
        for output in inner {
            out.absorb_one(output);
        }
        let mut script = Self { client, outcomes: Vec::new() };
        script.call_next(cfg, out);
        script
    }

    fn handle(&mut self, cfg: &ScriptConfig, input: Input<Self>, out: &mut Outbox<Self>) {
        let input = match input {
            // Only the script calls its client.
            Input::Receive { msg: KvsMsg::Call { .. }, .. } => {
                return out.ignore("a call from outside the script");
            }
            Input::Receive { from, msg } => Input::Receive { from, msg },
            Input::Timeout(timer) => Input::Timeout(timer),
        };
        self.drive(cfg, input, out);
    }

    fn check_step(cfg: &ScriptConfig, before: &Self, after: &Self) -> Result<(), Violation> {
        KvsClient::check_step(&cfg.client, &before.client, &after.client)
    }

    fn is_idle(&self, cfg: &ScriptConfig) -> bool {
        self.is_done(cfg) && self.client.is_idle(&cfg.client)
    }
}
