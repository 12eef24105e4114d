//! The session invariants, as plain functions.
//!
//! The level checks ([`repeatable_read`], [`single_key`], [`multi_key`], [`distributed_causal`])
//! judge one session's reads — the log its sink reports — and know nothing of the protocol;
//! the others judge a whole system state. Each names a stable id of `docs/invariants.md`.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Dag, Level, Outcome, Read, SessionConfig, SessionId, SessionMsg, SessionNode, VersionId,
    covers, dependencies,
};
use crate::base::ReqId;
use crate::node::{NodeId, Violation};

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

/// The nodes of a system state with their configurations, `None` for a crashed node.
pub type Nodes<'a> = [(&'a SessionConfig, Option<&'a SessionNode>)];

/// Every recorded result with the DAG it ran and its level.
fn recorded<'a>(nodes: &'a Nodes<'a>) -> impl Iterator<Item = (&'a Dag, Level, &'a [Read])> {
    nodes
        .iter()
        .filter_map(|(cfg, node)| match (cfg, node) {
            (SessionConfig::Scheduler(cfg), Some(SessionNode::Scheduler(s))) => Some((cfg, s)),
            _ => None,
        })
        .flat_map(|(cfg, s)| s.recorded().iter().map(move |r| (&cfg.dag, r.level, &r.log[..])))
}

/// SESS-I1, SESS-SK, SESS-MK and SESS-DSC on every recorded result whose level promises them.
pub fn levels_hold(nodes: &Nodes<'_>, id: &'static str) -> bool {
    recorded(nodes).all(|(dag, level, log)| {
        let applies = match id {
            REPEATABLE_READ => matches!(level, Level::Dsrr | Level::Dsc),
            SINGLE_KEY => matches!(level, Level::SingleKey | Level::Dsc),
            MULTI_KEY => matches!(level, Level::MultiKey | Level::Dsc),
            _ => level == Level::Dsc,
        };
        let verdict = match id {
            REPEATABLE_READ => repeatable_read(log),
            SINGLE_KEY => single_key(dag, log),
            MULTI_KEY => multi_key(log),
            _ => distributed_causal(dag, log),
        };
        !applies || verdict.is_ok()
    })
}

/// The sessions some scheduler is running.
fn running<'a>(nodes: &'a Nodes<'a>) -> BTreeSet<SessionId> {
    nodes
        .iter()
        .filter_map(|(_, node)| match node {
            Some(SessionNode::Scheduler(s)) => Some(s.sessions().keys().copied()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// SESS-I2: for every running session and every pin in metadata a function may still read
/// — a trigger in flight (`in_flight`), or held by a worker for a function waiting or
/// running — the pinning worker, unless it crashed or restarted since, still pins that
/// version for the session. (A pin lease shorter than the sessions' deadline could break
/// this; the protocol then aborts the session, and the models run without a lease.)
pub fn pins_held<'a>(nodes: &Nodes<'_>, in_flight: impl Iterator<Item = &'a SessionMsg>) -> bool {
    let running = running(nodes);
    let triggers = in_flight.filter_map(|msg| match msg {
        SessionMsg::Trigger { session, info, meta, .. } => Some((*session, info, meta)),
        _ => None,
    });
    let held = nodes.iter().filter_map(|(_, node)| match node {
        Some(SessionNode::Worker(w)) => Some(w.held_metas()),
        _ => None,
    });
    let workers: BTreeMap<NodeId, _> = nodes
        .iter()
        .filter_map(|(cfg, node)| match (cfg, node) {
            (SessionConfig::Worker(cfg), Some(SessionNode::Worker(w))) => Some((cfg.id, (cfg, w))),
            _ => None,
        })
        .collect();
    triggers.chain(held.flatten()).filter(|(session, ..)| running.contains(session)).all(
        |(session, info, meta)| {
            meta.pins.iter().all(|(key, pin)| match workers.get(&pin.cache) {
                Some((cfg, worker)) if worker.incarnation() == pin.incarnation => worker
                    .pinned(cfg, session, info.client, key)
                    .is_some_and(|value| VersionId::of(value) == pin.version),
                _ => true,
            })
        },
    )
}

/// Whether every node is idle: no session running, no release or hold unacknowledged, no
/// function waiting or running. (Stale duplicates may still be in flight.)
pub fn quiescent(nodes: &Nodes<'_>) -> bool {
    nodes.iter().all(|(_, node)| match node {
        Some(SessionNode::Scheduler(s)) => s.is_idle(),
        Some(SessionNode::Worker(w)) => w.is_idle(),
        _ => true,
    })
}

/// SESS-I3: once quiescent, no worker holds a pin.
pub fn no_leaked_pins(nodes: &Nodes<'_>) -> bool {
    !quiescent(nodes)
        || nodes.iter().all(|(_, node)| match node {
            Some(SessionNode::Worker(w)) => w.pins().is_empty(),
            _ => true,
        })
}

/// SESS-I4: a request that failed used all its attempts.
pub fn retried(nodes: &Nodes<'_>) -> bool {
    nodes.iter().all(|(cfg, node)| match (cfg, node) {
        (SessionConfig::Scheduler(cfg), Some(SessionNode::Scheduler(s))) => {
            s.requests().values().all(|r| match r.outcome {
                Some(Outcome::Failed { attempts, .. }) => attempts >= cfg.max_attempts,
                _ => true,
            })
        }
        _ => true,
    })
}

/// SESS-I5: no request has two recorded results.
pub fn result_once(nodes: &Nodes<'_>) -> bool {
    nodes.iter().all(|(_, node)| match node {
        Some(SessionNode::Scheduler(s)) => {
            let mut seen: BTreeSet<(NodeId, ReqId)> = BTreeSet::new();
            s.recorded().iter().all(|r| seen.insert((r.client, r.req)))
        }
        _ => true,
    })
}

/// Whether some request completed after an earlier session of it aborted (for a `sometimes`
/// property: retries are reachable and can succeed).
pub fn completed_after_retry(nodes: &Nodes<'_>) -> bool {
    nodes.iter().any(|(_, node)| match node {
        Some(SessionNode::Scheduler(s)) => s
            .requests()
            .values()
            .any(|r| r.attempts > 1 && matches!(r.outcome, Some(Outcome::Completed { .. }))),
        _ => false,
    })
}

/// Whether some result is recorded (for a `sometimes` property).
pub fn some_result(nodes: &Nodes<'_>) -> bool {
    recorded(nodes).next().is_some()
}

/// The ids of the safety invariants checked after every step that are broken now: the level
/// of every recorded result (SESS-I1, -SK, -MK, -DSC), SESS-I5, SESS-I4, and SESS-I2 (with the
/// messages in flight). Empty when all hold.
pub fn broken<'a>(
    nodes: &Nodes<'_>,
    in_flight: impl Iterator<Item = &'a SessionMsg>,
) -> Vec<&'static str> {
    let mut ids: Vec<&'static str> = [REPEATABLE_READ, SINGLE_KEY, MULTI_KEY, DISTRIBUTED_CAUSAL]
        .into_iter()
        .filter(|id| !levels_hold(nodes, id))
        .collect();
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
