//! The session invariants, as plain functions.
//!
//! The level checks ([`repeatable_read`], [`single_key`], [`multi_key`], [`distributed_causal`])
//! judge one session's reads — the log its sink reports — and know nothing of the protocol;
//! the others judge a whole system state. Each names a stable id of `docs/invariants.md`.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Dag, LayerConfig, Level, Outcome, Read, Scheduler, SchedulerConfig, SessionId, SessionLayer,
    SessionMsg, VersionId, covers, dependencies,
};
use crate::base::ReqId;
use crate::node::{Hosts, NodeId, Nodes, Violation, live};

/// Every completed DSRR or DSC session read one version per key.
pub const REPEATABLE_READ: &str = "SESS-I1";
/// A version pinned for a running session stays pinned while a function may still read it.
pub const PINS_HELD: &str = "SESS-I2";
/// Once nothing is in flight and nothing is running, no pin remains.
pub const NO_LEAKED_PINS: &str = "SESS-I3";
/// A request fails only after its last attempt aborted.
pub const RETRIED: &str = "SESS-I4";
/// Every request's result is recorded once, and never changed.
pub const RESULT_ONCE: &str = "SESS-I5";
/// Single-key causal: a key's versions never go backwards along the DAG.
pub const SINGLE_KEY: &str = "SESS-SK";
/// Multi-key causal: each function's reads form a causal cut.
pub const MULTI_KEY: &str = "SESS-MK";
/// Distributed-session causal: MK across the DAG, plus repeatable read.
pub const DISTRIBUTED_CAUSAL: &str = "SESS-DSC";
/// Causal writes carry what the session read: a function's write at SK, MK or DSC follows
/// every version of its key that it or a function before it read, and (MK, DSC) depends on
/// every other key's version they read.
pub const CAUSAL_WRITES: &str = "SESS-W";

fn violation(id: &'static str, detail: String) -> Violation {
    Violation { id, detail }
}

/// SESS-I1 on one session's reads: every read of a key returned the same version.
pub fn repeatable_read(log: &[Read]) -> Result<(), Violation> {
    let mut first: BTreeMap<&str, &Read> = BTreeMap::new();
    for read in log {
        let seen = first.entry(&read.key).or_insert(read);
        if VersionId::of(&seen.value) != VersionId::of(&read.value) {
            return Err(violation(
                REPEATABLE_READ,
                format!(
                    "{}: function {} read {:?}, function {} read {:?}",
                    read.key, seen.function, seen.value, read.function, read.value
                ),
            ));
        }
    }
    Ok(())
}

/// SESS-SK on one session's reads: when a function precedes another in `dag`, the later
/// one's version of a key is at or above the earlier one's.
pub fn single_key(dag: &Dag, log: &[Read]) -> Result<(), Violation> {
    for up in log {
        for down in log {
            let ordered = up.key == down.key && dag.precedes(up.function, down.function);
            if ordered && !VersionId::of(&up.value).le(&VersionId::of(&down.value)) {
                return Err(violation(
                    SINGLE_KEY,
                    format!(
                        "{}: function {} read {:?}, then function {} read the older {:?}",
                        up.key, up.function, up.value, down.function, down.value
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// SESS-MK on one session's reads: for every version a function read and every dependency
/// of it on a key the same function read, that read covers the dependency.
pub fn multi_key(log: &[Read]) -> Result<(), Violation> {
    for read in log {
        for (dep, clock) in dependencies(&read.value) {
            let same = log.iter().find(|r| r.function == read.function && r.key == dep);
            if let Some(other) = same
                && !covers(&other.value, &clock)
            {
                return Err(violation(
                    MULTI_KEY,
                    format!(
                        "function {}: {} = {:?} depends on {dep} at {clock:?}, but {dep} read {:?}",
                        read.function, read.key, read.value, other.value
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// SESS-DSC on one session's reads: each function's reads are a causal cut (SESS-MK), and so
/// are the reads along every DAG path: a function never reads another version of a key an
/// upstream function read, never a version older than a dependency of an upstream read, and
/// never one depending on a newer version of a key than an upstream function read.
pub fn distributed_causal(dag: &Dag, log: &[Read]) -> Result<(), Violation> {
    multi_key(log).map_err(|v| violation(DISTRIBUTED_CAUSAL, v.detail))?;
    for up in log {
        for down in log.iter().filter(|d| dag.precedes(up.function, d.function)) {
            let broken = if down.key == up.key {
                VersionId::of(&down.value) != VersionId::of(&up.value)
            } else {
                dependencies(&up.value).get(&down.key).is_some_and(|c| !covers(&down.value, c))
                    || dependencies(&down.value).get(&up.key).is_some_and(|c| !covers(&up.value, c))
            };
            if broken {
                return Err(violation(
                    DISTRIBUTED_CAUSAL,
                    format!(
                        "function {} read {} = {:?} after function {} read {} = {:?}",
                        down.function, down.key, down.value, up.function, up.key, up.value
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// SESS-W on one session's reads and writes at `level`: each causal write's clock covers every
/// version of its key read by its function or one before it in `dag`, and at MK and DSC its
/// dependencies cover every other key's version they read.
pub fn causal_writes(
    dag: &Dag,
    level: Level,
    log: &[Read],
    writes: &[Read],
) -> Result<(), Violation> {
    if !matches!(level, Level::SingleKey | Level::MultiKey | Level::Dsc) {
        return Ok(());
    }
    for write in writes {
        let deps = dependencies(&write.value);
        let before = log
            .iter()
            .filter(|r| r.function == write.function || dag.precedes(r.function, write.function));
        for read in before {
            let Some(read_clock) = read.value.as_ref().and_then(super::clock) else { continue };
            let covered = if read.key == write.key {
                covers(&write.value, &read_clock)
            } else {
                level == Level::SingleKey || deps.get(&read.key).is_some_and(|c| read_clock <= *c)
            };
            if !covered {
                return Err(violation(
                    CAUSAL_WRITES,
                    format!(
                        "function {} wrote {} = {:?} without covering {} = {:?} read by function {}",
                        write.function, write.key, write.value, read.key, read.value, read.function
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A world the session invariants judge: one that hosts schedulers, and whose workers have
/// session layers (the world of the whole system, [`crate::worker::SystemNode`]).
pub trait SessionWorld: Hosts<Scheduler> {
    /// This node's session layer, if it is a worker.
    fn layer(&self) -> Option<&SessionLayer>;
    /// A worker's session layer configuration.
    fn layer_config(cfg: &Self::Config) -> Option<&LayerConfig>;
    /// A message of the session protocol, if this one is.
    fn session_msg(msg: &Self::Msg) -> Option<&SessionMsg>;
}

/// Every live scheduler with its configuration.
fn schedulers<'a, W: SessionWorld>(
    nodes: &'a Nodes<'a, W>,
) -> impl Iterator<Item = (&'a SchedulerConfig, &'a Scheduler)> + 'a {
    live::<Scheduler, W>(nodes)
}

/// Every live worker's session layer with its configuration.
fn layers<'a, W: SessionWorld>(
    nodes: &'a Nodes<'a, W>,
) -> impl Iterator<Item = (&'a LayerConfig, &'a SessionLayer)> + 'a {
    nodes.iter().filter_map(|(cfg, node)| Some((W::layer_config(cfg)?, node.as_ref()?.layer()?)))
}

/// Every recorded result with the DAG it ran, its level, its reads and its writes.
fn recorded<'a, W: SessionWorld>(
    nodes: &'a Nodes<'a, W>,
) -> impl Iterator<Item = (&'a Dag, Level, &'a [Read], &'a [Read])> + 'a {
    schedulers(nodes).flat_map(|(_, s)| {
        s.recorded().iter().filter_map(move |r| {
            let dag = &s.requests().get(&(r.client, r.req))?.dag;
            Some((dag, r.level, &r.log[..], &r.writes[..]))
        })
    })
}

/// SESS-I1, SESS-SK, SESS-MK, SESS-DSC and SESS-W on every recorded result whose level
/// promises them.
pub fn levels_hold<W: SessionWorld>(nodes: &Nodes<'_, W>, id: &'static str) -> bool {
    recorded(nodes).all(|(dag, level, log, writes)| {
        let applies = match id {
            REPEATABLE_READ => matches!(level, Level::Dsrr | Level::Dsc),
            SINGLE_KEY => matches!(level, Level::SingleKey | Level::Dsc),
            MULTI_KEY => matches!(level, Level::MultiKey | Level::Dsc),
            CAUSAL_WRITES => true,
            _ => level == Level::Dsc,
        };
        let verdict = match id {
            REPEATABLE_READ => repeatable_read(log),
            SINGLE_KEY => single_key(dag, log),
            MULTI_KEY => multi_key(log),
            CAUSAL_WRITES => causal_writes(dag, level, log, writes),
            _ => distributed_causal(dag, log),
        };
        !applies || verdict.is_ok()
    })
}

/// The sessions some scheduler is running.
fn running<W: SessionWorld>(nodes: &Nodes<'_, W>) -> BTreeSet<SessionId> {
    schedulers(nodes).flat_map(|(_, s)| s.sessions().keys().copied()).collect()
}

/// SESS-I2: for every running session and every pin in metadata a function may still read
/// — a trigger in flight (`in_flight`), or held by a worker for a function waiting or
/// running — the pinning worker, unless it crashed or restarted since, still pins that
/// version for the session. (A pin lease shorter than the sessions' deadline could break
/// this; the protocol then aborts the session, and the models run without a lease.)
pub fn pins_held<'a, W: SessionWorld + 'a>(
    nodes: &Nodes<'_, W>,
    in_flight: impl Iterator<Item = &'a W::Msg>,
) -> bool {
    let running = running(nodes);
    let triggers = in_flight.filter_map(|msg| match W::session_msg(msg) {
        Some(SessionMsg::Trigger { session, info, meta, .. }) => Some((*session, info, meta)),
        _ => None,
    });
    let held = layers(nodes).flat_map(|(_, layer)| layer.held_metas());
    let workers: BTreeMap<NodeId, (&LayerConfig, &SessionLayer)> =
        layers(nodes).map(|(cfg, layer)| (cfg.id, (cfg, layer))).collect();
    triggers.chain(held).filter(|(session, ..)| running.contains(session)).all(
        |(session, info, meta)| {
            meta.pins.iter().all(|(key, pin)| match workers.get(&pin.cache) {
                Some((cfg, layer)) if layer.incarnation() == pin.incarnation => layer
                    .pinned(cfg, session, info.client, key)
                    .is_some_and(|value| VersionId::of(value) == pin.version),
                _ => true,
            })
        },
    )
}

/// Whether every node is up and idle: no session running, no release or hold
/// unacknowledged, no function waiting or running, nothing in flight at any cache or storage
/// node. (Stale duplicates may still be in flight.)
pub fn quiescent<W: SessionWorld>(nodes: &Nodes<'_, W>) -> bool {
    crate::node::quiescent(nodes)
}

/// SESS-I3: once quiescent, no worker holds a pin.
pub fn no_leaked_pins<W: SessionWorld>(nodes: &Nodes<'_, W>) -> bool {
    !quiescent(nodes) || layers(nodes).all(|(_, layer)| layer.pins().is_empty())
}

/// SESS-I4: a request that failed used all its attempts.
pub fn retried<W: SessionWorld>(nodes: &Nodes<'_, W>) -> bool {
    schedulers(nodes).all(|(cfg, s)| {
        s.requests().values().all(|r| match r.outcome {
            Some(Outcome::Failed { attempts, .. }) => attempts >= cfg.max_attempts,
            _ => true,
        })
    })
}

/// SESS-I5: no request has two recorded results.
pub fn result_once<W: SessionWorld>(nodes: &Nodes<'_, W>) -> bool {
    schedulers(nodes).all(|(_, s)| {
        let mut seen: BTreeSet<(NodeId, ReqId)> = BTreeSet::new();
        s.recorded().iter().all(|r| seen.insert((r.client, r.req)))
    })
}

/// Whether some request completed after an earlier session of it aborted (for a `sometimes`
/// property: retries are reachable and can succeed).
pub fn completed_after_retry<W: SessionWorld>(nodes: &Nodes<'_, W>) -> bool {
    schedulers(nodes).any(|(_, s)| {
        s.requests()
            .values()
            .any(|r| r.attempts > 1 && matches!(r.outcome, Some(Outcome::Completed { .. })))
    })
}

/// Whether some result is recorded (for a `sometimes` property).
pub fn some_result<W: SessionWorld>(nodes: &Nodes<'_, W>) -> bool {
    recorded(nodes).next().is_some()
}

/// The ids of the safety invariants checked after every step that are broken now: the level
/// of every recorded result (SESS-I1, -SK, -MK, -DSC, -W), SESS-I5, SESS-I4, and SESS-I2 (with the
/// messages in flight). Empty when all hold.
pub fn broken<'a, W: SessionWorld + 'a>(
    nodes: &Nodes<'_, W>,
    in_flight: impl Iterator<Item = &'a W::Msg>,
) -> Vec<&'static str> {
    let levels = [REPEATABLE_READ, SINGLE_KEY, MULTI_KEY, DISTRIBUTED_CAUSAL, CAUSAL_WRITES];
    let mut ids: Vec<&'static str> =
        levels.into_iter().filter(|id| !levels_hold(nodes, id)).collect();
    if !result_once(nodes) {
        ids.push(RESULT_ONCE);
    }
    if !retried(nodes) {
        ids.push(RETRIED);
    }
    if !pins_held(nodes, in_flight) {
        ids.push(PINS_HELD);
    }
    ids
}
