//! The deterministic simulator at scale: from one seed, a topology, a workload and a fault
//! schedule for each protocol, run on [`squall_proto::sim::Sim`] with the protocols' own
//! state machines, and judged twice: by the protocols' invariants after every step, and by the
//! [checkers](crate::check) on the recorded [history](crate::history).
//!
//! Each seed runs three *worlds* in turn, each with its own generator seeded from the seed:
//!
//! - [`gossip`]: 3–5 replicas of an LWW register and 2–3 writing clients.
//! - [`kvs`]: 3–7 storage nodes at replication 1–3, 2–4 caches each with an executor, and 2
//!   direct clients, at durabilities one, majority and all; in half the seeds a storage node
//!   joins and one or two members are asked to leave (no storage crash then), in the other
//!   half one storage node may crash and restart; then the late phases (see [`kvs`]).
//! - [`session`]: a scheduler, 2–4 workers, the store and a writer; a random DAG (chain,
//!   diamond or fan-in) called at every consistency level, over LWW or causal values.
//!
//! A world has a *safety phase* under faults (drops, duplicates, reordering and delay — the
//! simulator delivers any in-flight message or fires any armed timer at each step — a
//! partition that heals, crashes and restarts, and messages sent to a node before it crashed
//! arriving after its restart), then a *liveness phase* on a healed network
//! with every node restarted, in which it must settle: every request ends, replicas converge.
//! Same seed, same run, same output.

pub mod gossip;
pub mod kvs;
pub mod session;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use squall_proto::Node;
use squall_proto::NodeId;
use squall_proto::lattice::LatticeValue;
use squall_proto::sim::{Faults, Sim, SimError, Stats};

use crate::check;
use crate::history::{History, Key, Version};

pub use squall_proto::mutants::{Mutant, UnknownMutant};

/// What a world found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The world (`gossip`, `kvs`, `session`).
    pub world: &'static str,
    /// The phase: `safety`, `liveness` or `history`.
    pub phase: &'static str,
    /// The broken invariant or anomaly.
    pub what: String,
    /// The last events before it, one per line.
    pub trace: Vec<String>,
}

/// What one world did in one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorldReport {
    /// The world.
    pub world: &'static str,
    /// The generated topology and workload, in a line.
    pub setup: String,
    /// Counts from the simulator.
    pub stats: Stats,
    /// The last events of a passing run, when asked for with [`set_show_trace`].
    pub events: Vec<String>,
    /// Whether the safety phase partitioned the network.
    pub partitioned: bool,
    /// The recorded history.
    pub history: History,
    /// The first thing found wrong, if any.
    pub failure: Option<Failure>,
}

impl WorldReport {
    /// A world's report once its run ended: `failure` as `(phase, what)`, given the trace
    /// tail of `sim`.
    pub(crate) fn new<N: Node>(
        world: &'static str,
        setup: String,
        sim: &Sim<N>,
        partitioned: bool,
        history: History,
        failure: Option<(&'static str, String)>,
    ) -> Self {
        WorldReport {
            world,
            setup,
            stats: sim.stats(),
            events: shown(sim),
            partitioned,
            failure: failure.map(|(phase, what)| Failure { world, phase, what, trace: tail(sim) }),
            history,
        }
    }
}

/// What one seed did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// The mutant it ran with.
    pub mutant: Option<Mutant>,
    /// Each world's report, in order (a world is not run after one fails).
    pub worlds: Vec<WorldReport>,
}

impl SeedReport {
    /// The first failure, if any.
    pub fn failure(&self) -> Option<&Failure> {
        self.worlds.iter().find_map(|w| w.failure.as_ref())
    }

    /// The command that reproduces this seed.
    pub fn reproduce(&self) -> String {
        let mutant = self.mutant.map(|m| format!(" --mutant {}", m.name())).unwrap_or_default();
        format!("cargo run --release -p squall-verify -- dst --seed {}{mutant}", self.seed)
    }

    /// A readable, deterministic account of the run: each world's setup, counts and verdict,
    /// and the trace of a failure.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mutant = self.mutant.map(|m| format!(" (mutant {})", m.name())).unwrap_or_default();
        writeln!(out, "seed {}{mutant}", self.seed).expect("write to string");
        for world in &self.worlds {
            let s = world.stats;
            let ops = world.history.ops.len();
            writeln!(out, "  {:<8} {}", world.world, world.setup).expect("write to string");
            writeln!(
                out,
                "           {ops} ops; {} delivered, {} dropped, {} duplicated, {} partitioned, \
                 {} crashes ({} power failures), {} restarts ({} disks lost), {} replayed, {} timers",
                s.delivered,
                s.dropped + s.undeliverable,
                s.duplicated,
                s.partitioned,
                s.crashes,
                s.power_failures,
                s.restarts,
                s.disks_lost,
                s.replayed,
                s.fired
            )
            .expect("write to string");
            match &world.failure {
                None => {
                    writeln!(out, "           ok").expect("write to string");
                    for line in &world.events {
                        writeln!(out, "             {line}").expect("write to string");
                    }
                }
                Some(f) => {
                    writeln!(out, "           FAILED in the {} phase: {}", f.phase, f.what)
                        .expect("write to string");
                    writeln!(out, "           last events:").expect("write to string");
                    for line in &f.trace {
                        writeln!(out, "             {line}").expect("write to string");
                    }
                }
            }
        }
        out
    }
}

/// Runs every world of `seed`; with `mutant`, only the world of its protocol, with the mutant
/// in every node.
pub fn run_seed(seed: u64, mutant: Option<Mutant>) -> SeedReport {
    run_worlds(seed, mutant, &WORLDS)
}

/// Seeds within which the simulator must catch each mutant (`dst --all-mutants` and the CI
/// test run each mutant this far at least).
pub const MUTANT_BOUND: u64 = 300;

/// Seeds within which the simulator must catch `mutant`: [`MUTANT_BOUND`], or more for a
/// defect whose damage takes a long chain of faults to show.
///
/// `stale-hold-ok` needs a worker to restart after a session it held ended and was released,
/// a late copy of that session's trigger to make it pin again (after a fetch round trip through
/// its empty cache), its new `Hold` to be lost, the previous incarnation's `HoldOk` to arrive
/// before the retry, and no later crash to wipe the leaked pins before they are judged. Over
/// the composed worker it escaped 3,000 session seeds until storms got a calm tail; since then
/// the first catch is seed 847 (the `dsrr-crash` model and a worker unit test catch it too).
pub fn seed_bound(mutant: Mutant) -> u64 {
    use squall_proto::session::Mutant as Session;
    match mutant {
        Mutant::Session(Session::StaleHoldOk) => 1_000,
        _ => MUTANT_BOUND,
    }
}

/// A world's runner: its seed and mutant in, its report out.
type World = fn(u64, Option<Mutant>) -> WorldReport;

/// The worlds, in the order a seed runs them.
pub const WORLDS: [&str; 3] = ["gossip", "kvs", "session"];

/// As [`run_seed`], running only the worlds named in `only`.
pub fn run_worlds(seed: u64, mutant: Option<Mutant>, only: &[&str]) -> SeedReport {
    let mut report = SeedReport { seed, mutant, worlds: Vec::new() };
    let worlds: [(u64, World); 3] = [(1, gossip::run), (2, kvs::run), (3, session::run)];
    for (salt, world) in worlds {
        // A mutant runs only in the world of its protocol, so a catch is its own.
        let ours = match mutant {
            None => true,
            Some(Mutant::Gossip(_)) => salt == 1,
            Some(Mutant::Kvs(_) | Mutant::Cache(_)) => salt == 2,
            Some(Mutant::Session(_)) => salt == 3,
        };
        if !ours || !only.contains(&WORLDS[salt as usize - 1]) {
            continue;
        }
        // Each world has its own generator, so adding a world never changes the others.
        let world_seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(salt);
        let result = world(world_seed, mutant);
        let failed = result.failure.is_some();
        report.worlds.push(result);
        if failed {
            break;
        }
    }
    report
}

/// The per-world random generator.
pub(crate) fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A fault schedule drawn from `rng`: drops and duplicates up to 20 %, crashes at
/// `crash_per_mille` (restarts ten times as often), and up to 30 % of what a node was sent
/// before a crash arriving again after its restart.
pub(crate) fn faults(rng: &mut ChaCha8Rng, crash_per_mille: u16) -> Faults {
    Faults {
        drop_per_mille: rng.random_range(0..=200),
        duplicate_per_mille: rng.random_range(0..=200),
        crash_per_mille,
        restart_per_mille: crash_per_mille.saturating_mul(10),
        replay_per_mille: rng.random_range(0..=300),
        disk_loss_per_mille: 0,
        power_failure_per_mille: 0,
    }
}

/// How time passes in a safety phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timing {
    /// Any armed timer may fire at any step, whatever its delay: the weakest timing, which
    /// finds bugs that depend on the order of timers.
    Adversarial,
    /// Timers fire at their deadlines and messages take 0–20 ms (duplicates arrive again
    /// later): realistic timing, in which leases do not lapse spuriously, so defects they would
    /// paper over stay visible.
    Timed,
}

impl Timing {
    /// Either timing, with equal probability.
    pub(crate) fn draw(rng: &mut ChaCha8Rng) -> Self {
        if rng.random_bool(0.5) { Timing::Adversarial } else { Timing::Timed }
    }

    /// Sets up `sim` for a safety phase with this timing.
    pub(crate) fn apply<N: Node>(self, sim: &mut Sim<N>) {
        if self == Timing::Timed {
            sim.set_delay(Duration::ZERO, Duration::from_millis(20));
            sim.set_timed(true);
        }
    }

    fn name(self) -> &'static str {
        match self {
            Timing::Adversarial => "adversarial timers",
            Timing::Timed => "timed, 0-20 ms delays",
        }
    }
}

/// When the safety phase partitions the network: from step `start` for `len` steps, cutting
/// `side` off from the rest.
#[derive(Clone, Debug)]
pub(crate) struct Partition {
    pub(crate) start: u64,
    pub(crate) len: u64,
    pub(crate) side: BTreeSet<NodeId>,
}

impl Partition {
    /// With probability one half, a partition of a random subset of `nodes` for a random part
    /// of the first `steps` steps.
    pub(crate) fn draw(rng: &mut ChaCha8Rng, nodes: &[NodeId], steps: u64) -> Option<Self> {
        if !rng.random_bool(0.5) || nodes.len() < 2 {
            return None;
        }
        let side: BTreeSet<NodeId> =
            nodes.iter().copied().filter(|_| rng.random_bool(0.4)).collect();
        let start = rng.random_range(0..steps / 2);
        let len = rng.random_range(steps / 10..steps / 2);
        Some(Self { start, len, side })
    }
}

/// The outcome of a safety phase: the failure, if one was found.
pub(crate) struct Phase {
    pub(crate) failure: Option<(&'static str, String)>,
    pub(crate) partitioned: bool,
}

/// The safety phase: up to `steps` steps under the sim's faults and `partition`, calling
/// `after_step` after each (to record the history and check invariants; it returns a broken
/// invariant's description).
pub(crate) fn safety<N: Node>(
    sim: &mut Sim<N>,
    steps: u64,
    partition: Option<&Partition>,
    calm_from: Option<u64>,
    mut after_step: impl FnMut(&Sim<N>, u64) -> Option<String>,
) -> Phase {
    let mut partitioned = false;
    for step in 0..steps {
        if calm_from == Some(step) {
            sim.set_faults(Faults { crash_per_mille: 0, ..sim.faults() });
        }
        if let Some(p) = partition {
            if step == p.start {
                sim.partition(p.side.iter().copied());
                partitioned = true;
            } else if step == p.start + p.len {
                sim.heal();
            }
        }
        let progressed = match sim.step() {
            Ok(progressed) => progressed,
            Err(SimError::Violation { .. }) if !protocol_checks() => true,
            Err(e) => return Phase { failure: Some(("safety", e.to_string())), partitioned },
        };
        if let Some(broken) = after_step(sim, step).filter(|_| protocol_checks()) {
            return Phase { failure: Some(("safety", broken)), partitioned };
        }
        if !progressed {
            break;
        }
    }
    Phase { failure: None, partitioned }
}

/// The liveness phase: heals the network, restarts every crashed node, turns faults off,
/// switches the simulator to timed mode (messages arrive before timers fire, timers fire in
/// deadline order: the network is synchronous after healing), and steps until `settled` holds with no message in flight, calling `after_step` after each step
/// as in [`safety`]. A failure if it never settles within `max_steps`.
pub(crate) fn liveness<N: Node>(
    sim: &mut Sim<N>,
    max_steps: u64,
    settled: impl Fn(&Sim<N>) -> bool,
    mut after_step: impl FnMut(&Sim<N>, u64) -> Option<String>,
) -> Option<(&'static str, String)> {
    sim.set_faults(Faults::NONE);
    sim.heal();
    sim.restart_all();
    sim.set_delay(Duration::ZERO, Duration::ZERO);
    sim.set_timed(true);
    for step in 0..max_steps {
        if sim.in_flight() == 0 && settled(sim) {
            return None;
        }
        match sim.step() {
            Err(SimError::Violation { .. }) if !protocol_checks() => {}
            Err(e) => return Some(("liveness", e.to_string())),
            Ok(_) => {}
        }
        if let Some(broken) = after_step(sim, step).filter(|_| protocol_checks()) {
            return Some(("liveness", broken));
        }
    }
    Some(("liveness", format!("not settled after {max_steps} steps on a healed network")))
}

/// How many events a failure's trace keeps (see [`set_trace_len`]).
static TRACE_LEN: AtomicUsize = AtomicUsize::new(30);

/// Whether the protocols' own invariants are checked (see [`set_history_only`]).
static PROTOCOL_CHECKS: AtomicBool = AtomicBool::new(true);

/// With `true`, judge runs only from the outside: the protocols' invariants (step checks,
/// state invariants, settled-state checks) are not consulted, only the recorded history, the
/// clients' outcomes and whether the run settles. Shows what the history checkers catch alone.
pub fn set_history_only(history_only: bool) {
    PROTOCOL_CHECKS.store(!history_only, Ordering::Relaxed);
}

/// Whether the protocols' invariants are checked.
pub(crate) fn protocol_checks() -> bool {
    PROTOCOL_CHECKS.load(Ordering::Relaxed)
}

/// Whether passing runs keep their last events too (see [`shown`]).
static SHOW_TRACE: AtomicBool = AtomicBool::new(false);

/// Makes passing runs report their last events as well (as many as [`set_trace_len`] says).
pub fn set_show_trace(show: bool) {
    SHOW_TRACE.store(show, Ordering::Relaxed);
}

/// The last events of a run, if [`set_show_trace`] asked for them.
pub(crate) fn shown<N: Node>(sim: &Sim<N>) -> Vec<String> {
    if SHOW_TRACE.load(Ordering::Relaxed) { tail(sim) } else { Vec::new() }
}

/// Sets how many of the last events a failure reports (30 by default).
pub fn set_trace_len(events: usize) {
    TRACE_LEN.store(events, Ordering::Relaxed);
}

/// The last events of a simulation (as many as [`set_trace_len`] asks), one per line.
pub(crate) fn tail<N: Node>(sim: &Sim<N>) -> Vec<String> {
    let n = TRACE_LEN.load(Ordering::Relaxed);
    let trace = sim.trace();
    let from = trace.len().saturating_sub(n);
    trace[from..].iter().enumerate().map(|(i, e)| format!("#{}: {e:?}", from + i)).collect()
}

/// Runs the checkers on a world's history; the first anomaly, as a failure description.
pub(crate) fn judge(history: &History) -> Option<String> {
    check::all(history).err().map(|anomaly| anomaly.to_string())
}

/// Names the values a workload generated by the versions the history records: each
/// generated `(key, value)` has its version; a value read that nobody generated gets a fresh
/// version nobody wrote, so the thin-air checker flags it.
#[derive(Debug, Default)]
pub(crate) struct Versions {
    known: Vec<(Key, LatticeValue, Version)>,
    unknown: Vec<(Key, LatticeValue, Version)>,
}

/// Versions given to values nobody generated start here.
const UNKNOWN_VERSIONS: Version = 1 << 60;

impl Versions {
    pub(crate) fn add(&mut self, key: &str, value: LatticeValue, version: Version) {
        self.known.push((key.to_owned(), value, version));
    }

    /// The version of a value the workload generated (or added since), if it is one.
    pub(crate) fn known(&self, key: &str, value: &LatticeValue) -> Option<Version> {
        self.known.iter().find(|(k, v, _)| k == key && v == value).map(|(_, _, version)| *version)
    }

    pub(crate) fn of(&mut self, key: &str, value: &LatticeValue) -> Version {
        let found = self.known.iter().chain(&self.unknown).find(|(k, v, _)| k == key && v == value);
        if let Some((_, _, version)) = found {
            return *version;
        }
        let version = UNKNOWN_VERSIONS + self.unknown.len() as Version;
        self.unknown.push((key.to_owned(), value.clone(), version));
        version
    }
}
