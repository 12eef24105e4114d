//! The store (the KVS as the session protocol sees it) and a concurrent writer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Out, SessionMsg, SessionNode, SessionTimer};
use crate::base::{Key, ReqId};
use crate::lattice::LatticeValue;
use crate::node::{Input, NodeId};

/// How the store starts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StoreConfig {
    /// The keys and values it starts with.
    pub initial: BTreeMap<Key, LatticeValue>,
    /// The workers subscribed to each key at the start (those whose caches start warm).
    pub subscribers: BTreeMap<Key, BTreeSet<NodeId>>,
    /// How often every key's value is re-sent to its subscribers, so that a lost push is made
    /// good (the KVS's caches get this from acknowledged pushes); `None`, the default: pushes
    /// are sent once.
    pub refresh: Option<Duration>,
}

impl StoreConfig {
    /// A store holding `initial`, with no subscriber yet.
    pub fn new(initial: impl IntoIterator<Item = (Key, LatticeValue)>) -> Self {
        Self { initial: initial.into_iter().collect(), subscribers: BTreeMap::new(), refresh: None }
    }
}

/// The store: each key's merged value, pushed to every worker that read it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Store {
    data: BTreeMap<Key, LatticeValue>,
    subscribers: BTreeMap<Key, BTreeSet<NodeId>>,
}

impl Store {
    pub(super) fn init(cfg: &StoreConfig, out: &mut Out) -> Self {
        if let Some(period) = cfg.refresh {
            out.set_timer(SessionTimer::Refresh, period);
        }
        Self { data: cfg.initial.clone(), subscribers: cfg.subscribers.clone() }
    }

    /// The stored values.
    pub fn data(&self) -> &BTreeMap<Key, LatticeValue> {
        &self.data
    }

    pub(super) fn handle(&mut self, cfg: &StoreConfig, input: Input<SessionNode>, out: &mut Out) {
        match input {
            Input::Timeout(SessionTimer::Refresh) => {
                for (key, workers) in &self.subscribers {
                    let value = self.data.get(key).cloned();
                    for &worker in workers {
                        out.send(
                            worker,
                            SessionMsg::Value { key: key.clone(), value: value.clone() },
                        );
                    }
                }
                if let Some(period) = cfg.refresh {
                    out.set_timer(SessionTimer::Refresh, period);
                }
            }
            Input::Receive { from, msg: SessionMsg::Get { key } } => {
                let value = self.data.get(&key).cloned();
                self.subscribers.entry(key.clone()).or_default().insert(from);
                out.send(from, SessionMsg::Value { key, value });
            }
            Input::Receive { from, msg: SessionMsg::Put { req, key, value } } => {
                let grew = match self.data.get_mut(&key) {
                    None => {
                        self.data.insert(key.clone(), value);
                        true
                    }
                    Some(stored) => match stored.merge(value) {
                        Ok(grew) => grew,
                        Err(_) => return out.ignore("a put of another lattice type"),
                    },
                };
                out.send(from, SessionMsg::PutOk { req });
                if grew {
                    let value = self.data.get(&key).cloned();
                    for &worker in self.subscribers.get(&key).into_iter().flatten() {
                        out.send(
                            worker,
                            SessionMsg::Value { key: key.clone(), value: value.clone() },
                        );
                    }
                }
            }
            _ => out.ignore("message the store does not expect"),
        }
    }
}

/// How a writer is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WriterConfig {
    /// The store.
    pub store: NodeId,
    /// The puts, in order; each is sent once the previous one is acknowledged.
    pub puts: Vec<(Key, LatticeValue)>,
    /// How long to wait for an acknowledgement before re-sending.
    pub retry_after: Duration,
}

/// A writer: puts its values one after the other, each after the previous was acknowledged,
/// so a write that depends on an earlier one never reaches the store first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Writer {
    /// How many puts were acknowledged.
    acked: usize,
}

impl Writer {
    pub(super) fn init(cfg: &WriterConfig, out: &mut Out) -> Self {
        let writer = Self { acked: 0 };
        writer.send_next(cfg, out);
        writer
    }

    /// How many puts the store acknowledged.
    pub fn acked(&self) -> usize {
        self.acked
    }

    fn send_next(&self, cfg: &WriterConfig, out: &mut Out) {
        if let Some((key, value)) = cfg.puts.get(self.acked) {
            let req = self.acked as ReqId;
            out.send(cfg.store, SessionMsg::Put { req, key: key.clone(), value: value.clone() });
            out.set_timer(SessionTimer::Put, cfg.retry_after);
        }
    }

    pub(super) fn handle(&mut self, cfg: &WriterConfig, input: Input<SessionNode>, out: &mut Out) {
        match input {
            Input::Receive { msg: SessionMsg::PutOk { req }, .. } if req == self.acked as ReqId => {
                self.acked += 1;
                out.cancel_timer(SessionTimer::Put);
                self.send_next(cfg, out);
            }
            Input::Timeout(SessionTimer::Put) => self.send_next(cfg, out),
            _ => out.ignore("stale or unexpected input at a writer"),
        }
    }
}
