//! Stateright models of Squall's protocols, built from the real `squall-proto` state machines.
//!
//! Every model runs protocol nodes through the one generic [`adapter::Adapter`]; none
//! re-implements a protocol. Properties are named by invariant id (see `docs/invariants.md`)
//! and call the invariant functions of `squall-proto`. Every model carries seeded mutants —
//! protocol defects compiled in through `squall-proto`'s `mutants` feature — and each property
//! is shown to fail under at least one of them, so no check here is vacuous.
//!
//! The `squall-model` binary is the command-line front end: `list`, `check`, `explore`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adapter;
pub mod cache;
pub mod gossip;
pub mod kvs;
pub mod session;

use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, Instant};

use adapter::Adapter;
use squall_proto::Node;
use stateright::actor::ActorModel;
use stateright::report::{ReportData, ReportDiscovery, Reporter};
use stateright::{Checker, Expectation, HasDiscoveries, Model, Property};

/// A model the CLI knows, with its mutants.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ModelInfo {
    /// Its name on the command line.
    pub model: &'static str,
    /// What it models, in one line.
    #[serde(skip)]
    pub about: &'static str,
    /// What its everyday bounds leave out of the deep ones, in one line; `None` when both
    /// depths build it alike.
    #[serde(skip)]
    pub everyday: Option<&'static str>,
    /// Its mutants, by command-line name.
    pub mutants: Vec<&'static str>,
}

/// Every model, in the order `check all` runs them.
pub fn models() -> Vec<ModelInfo> {
    [ModelInfo {
        model: "gossip",
        about: "replicas of an LWW register gossiping over a duplicating, reordering network",
        everyday: Some(
            "2 replicas, each client writing twice; deep: 3 replicas (two peers acknowledging \
             apart), one write each",
        ),
        mutants: gossip::mutants().into_iter().map(|(name, _)| name).collect(),
    }]
    .into_iter()
    .chain(kvs::Scenario::ALL.map(|scenario| ModelInfo {
        model: scenario.name(),
        about: scenario.about(),
        everyday: scenario.everyday(),
        mutants: kvs::mutants(scenario).into_iter().map(|(n, _)| n).collect(),
    }))
    .chain([
        ModelInfo {
            model: "cache",
            about: "1 storage node, 2 caches; a writer's 2 puts and a reader's get through them",
            everyday: None,
            mutants: cache::mutants(cache::Scenario::NoCrash).into_iter().map(|(n, _)| n).collect(),
        },
        ModelInfo {
            model: "cache-restart",
            about: "the cache model, and the reader's cache may crash and restart empty once",
            everyday: Some("the writer puts once, not twice"),
            mutants: cache::mutants(cache::Scenario::Restart).into_iter().map(|(n, _)| n).collect(),
        },
    ])
    .chain(session::Scenario::ALL.map(|scenario| ModelInfo {
        model: scenario.name(),
        about: scenario.about(),
        everyday: scenario.everyday(),
        mutants: session::mutants(scenario).into_iter().map(|(n, _)| n).collect(),
    }))
    .collect()
}

/// A model or mutant name the CLI does not know.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnknownName {
    /// No model of this name.
    #[error("unknown model `{name}`; known models: {known}")]
    Model {
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// The model has no mutant of this name.
    #[error("model `{model}` has no mutant `{name}`; its mutants: {known}")]
    Mutant {
        /// The model.
        model: String,
        /// The name given.
        name: String,
        /// The model's mutants, comma-separated.
        known: String,
    },
}

/// How much of each model a check explores: which bounds the models are built with.
///
/// Both depths check every property of every model exhaustively within their bounds, and at
/// both every mutant is caught. `Everyday` shrinks the largest models where a smaller run
/// still shows what each property is about (see `docs/verification.md` for what each gives
/// up); `Deep` keeps the larger bounds, for CI and before a release.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Depth {
    /// The bounds `check` uses by default: every model in about a minute on two cores.
    #[default]
    Everyday,
    /// The larger bounds of `check --deep`.
    Deep,
}

impl Depth {
    /// `Deep` if `deep` (the command line's `--deep`), else `Everyday`.
    pub fn deep_if(deep: bool) -> Self {
        if deep { Self::Deep } else { Self::Everyday }
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Everyday => "everyday",
            Self::Deep => "deep",
        }
    }
}

/// How to run the checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Which bounds to build the models with.
    pub depth: Depth,
    /// Breadth-first search (shortest counterexamples) instead of depth-first (faster, less
    /// memory; the default).
    pub bfs: bool,
    /// Checker threads.
    pub threads: usize,
    /// Show progress on standard error: a live line on a terminal, else a line every 10 s.
    pub progress: bool,
    /// Keep searching after the first failure, to decide every property.
    pub full: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            depth: Depth::Everyday,
            bfs: false,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            progress: false,
            full: false,
        }
    }
}

/// The verdict on one property.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PropertyReport {
    /// The property's name, which starts with its invariant id.
    pub name: &'static str,
    /// `always`, `sometimes` or `eventually`.
    pub expectation: &'static str,
    /// Whether it holds; `None` when the search stopped at another property's failure before
    /// deciding this one (run with `full` to decide every property).
    pub holds: Option<bool>,
    /// For a failed property, a readable trace: the counterexample's steps and final state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterexample: Option<String>,
}

/// The result of checking one model.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Report {
    /// The model checked.
    pub model: &'static str,
    /// The mutant it carried, if any.
    pub mutant: Option<String>,
    /// The bounds it was built with.
    pub depth: Depth,
    /// States generated, including revisits.
    pub states: usize,
    /// Distinct states.
    pub unique_states: usize,
    /// The deepest path explored.
    pub max_depth: usize,
    /// Wall-clock seconds.
    pub secs: f64,
    /// Whether the search covered every reachable state (it stops at the first failure
    /// unless run with `full`).
    pub complete: bool,
    /// Every property's verdict.
    pub properties: Vec<PropertyReport>,
}

impl Report {
    /// Whether every property holds.
    pub fn holds(&self) -> bool {
        self.properties.iter().all(|p| p.holds == Some(true))
    }

    /// The invariant ids of the properties that fail, in the model's order.
    pub fn failed(&self) -> Vec<&'static str> {
        self.properties
            .iter()
            .filter(|p| p.holds == Some(false))
            .map(|p| p.name.split(' ').next().unwrap_or(p.name))
            .collect()
    }
}

/// Checks model `name`, optionally with a mutant.
pub fn check(name: &str, mutant: Option<&str>, opts: CheckOptions) -> Result<Report, UnknownName> {
    let depth = opts.depth;
    match name {
        "gossip" => {
            let mutant = lookup_mutant(name, mutant, gossip::mutants())?;
            let model = gossip::model(gossip::Bounds::at(depth), mutant);
            Ok(run("gossip", mutant.map(|m| m.name().to_owned()), model, opts))
        }
        _ if let Some(scenario) = kvs::Scenario::from_name(name) => {
            let mutant = lookup_mutant(name, mutant, kvs::mutants(scenario))?;
            let named = mutant.map(|m| m.name().to_owned());
            Ok(run(scenario.name(), named, kvs::model(scenario, depth, mutant), opts))
        }
        "cache" | "cache-restart" => {
            let (name, scenario) = cache_scenario(name);
            let mutant = lookup_mutant(name, mutant, cache::mutants(scenario))?;
            let named = mutant.map(|m| m.name().to_owned());
            Ok(run(name, named, cache::model(scenario, depth, mutant), opts))
        }
        _ if let Some(scenario) = session::Scenario::from_name(name) => {
            let mutant = lookup_mutant(name, mutant, session::mutants(scenario))?;
            let named = mutant.map(|m| m.name().to_owned());
            Ok(run(scenario.name(), named, session::model(scenario, depth, mutant), opts))
        }
        _ => Err(unknown_model(name)),
    }
}

/// Serves Stateright Explorer for model `name`, built at `depth`, on `addr` (blocks until
/// killed).
pub fn explore(
    name: &str,
    mutant: Option<&str>,
    depth: Depth,
    addr: &str,
) -> Result<(), UnknownName> {
    match name {
        "gossip" => {
            let mutant = lookup_mutant(name, mutant, gossip::mutants())?;
            gossip::model(gossip::Bounds::at(depth), mutant).checker().serve(addr);
            Ok(())
        }
        _ if let Some(scenario) = kvs::Scenario::from_name(name) => {
            let mutant = lookup_mutant(name, mutant, kvs::mutants(scenario))?;
            kvs::model(scenario, depth, mutant).checker().serve(addr);
            Ok(())
        }
        "cache" | "cache-restart" => {
            let (name, scenario) = cache_scenario(name);
            let mutant = lookup_mutant(name, mutant, cache::mutants(scenario))?;
            cache::model(scenario, depth, mutant).checker().serve(addr);
            Ok(())
        }
        _ if let Some(scenario) = session::Scenario::from_name(name) => {
            let mutant = lookup_mutant(name, mutant, session::mutants(scenario))?;
            session::model(scenario, depth, mutant).checker().serve(addr);
            Ok(())
        }
        _ => Err(unknown_model(name)),
    }
}

fn cache_scenario(name: &str) -> (&'static str, cache::Scenario) {
    match name {
        "cache-restart" => ("cache-restart", cache::Scenario::Restart),
        _ => ("cache", cache::Scenario::NoCrash),
    }
}

fn unknown_model(name: &str) -> UnknownName {
    let known: Vec<_> = models().iter().map(|m| m.model).collect();
    UnknownName::Model { name: name.to_owned(), known: known.join(", ") }
}

fn lookup_mutant<M: Copy>(
    model: &str,
    name: Option<&str>,
    mutants: Vec<(&'static str, M)>,
) -> Result<Option<M>, UnknownName> {
    let Some(name) = name else { return Ok(None) };
    match mutants.iter().find(|(n, _)| *n == name) {
        Some((_, m)) => Ok(Some(*m)),
        None => Err(UnknownName::Mutant {
            model: model.to_owned(),
            name: name.to_owned(),
            known: mutants.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// The Stateright model of a protocol node type, as every model here builds it.
pub type NodeModel<N> = ActorModel<Adapter<N>, (), ()>;

/// Runs the checker on a model and reports every property.
pub fn run<N>(
    name: &'static str,
    mutant: Option<String>,
    model: NodeModel<N>,
    opts: CheckOptions,
) -> Report
where
    N: Node + Send + Sync + 'static,
    N::Config: Send + Sync,
    N::Msg: Send + Sync,
    N::Timer: Send + Sync,
    N::Durable: Send + Sync,
{
    let start = Instant::now();
    let mut builder = model.checker().threads(opts.threads.max(1));
    if !opts.full {
        builder = builder.finish_when(HasDiscoveries::AnyFailures);
    }
    let mut progress = Progress::new(name, opts.progress);
    let run = Run { name, mutant, depth: opts.depth, start, full: opts.full };
    if opts.bfs {
        run.summarize(builder.spawn_bfs().join_and_report(&mut progress))
    } else {
        run.summarize(builder.spawn_dfs().join_and_report(&mut progress))
    }
}

/// What a check was asked to do, for its report.
struct Run {
    name: &'static str,
    mutant: Option<String>,
    depth: Depth,
    start: Instant,
    full: bool,
}

impl Run {
    fn summarize<N: Node>(self, checker: impl Checker<NodeModel<N>>) -> Report {
        let Self { name, mutant, depth, start, full } = self;
        let model = checker.model();
        let discoveries = checker.discoveries();
        let failed = |p: &Property<NodeModel<N>>| {
            p.expectation != Expectation::Sometimes && discoveries.contains_key(p.name)
        };
        // Without `--full` the search stops at the first failure, leaving other properties open.
        let stopped_early = !full && model.properties().iter().any(failed);
        let properties = model
            .properties()
            .into_iter()
            .map(|property| {
                let discovery = discoveries.get(property.name);
                let expectation = match property.expectation {
                    Expectation::Always => "always",
                    Expectation::Eventually => "eventually",
                    Expectation::Sometimes => "sometimes",
                };
                let holds = match (&property.expectation, discovery) {
                    (Expectation::Sometimes, Some(_)) => Some(true),
                    (_, Some(_)) => Some(false),
                    (_, None) if stopped_early => None,
                    (Expectation::Sometimes, None) => Some(false),
                    (_, None) => Some(true),
                };
                let counterexample = match (holds, discovery) {
                    (Some(false), Some(path)) => Some(format_trace(model, path.clone())),
                    (Some(false), None) => {
                        Some("no reachable state satisfies this property\n".into())
                    }
                    _ => None,
                };
                PropertyReport { name: property.name, expectation, holds, counterexample }
            })
            .collect();
        Report {
            model: name,
            mutant,
            depth,
            states: checker.state_count(),
            unique_states: checker.unique_state_count(),
            max_depth: checker.max_depth(),
            secs: start.elapsed().as_secs_f64(),
            complete: !stopped_early,
            properties,
        }
    }
}

fn format_trace<N: Node>(
    model: &NodeModel<N>,
    path: stateright::Path<<NodeModel<N> as Model>::State, <NodeModel<N> as Model>::Action>,
) -> String {
    use std::fmt::Write;
    let steps = path.into_vec();
    let mut trace = String::new();
    for (index, (_, action)) in steps.iter().enumerate() {
        if let Some(action) = action {
            let _ = writeln!(trace, "  {:>3}. {}", index + 1, model.format_action(action));
        }
    }
    if let Some((last, _)) = steps.last() {
        let _ = writeln!(trace, "  final state:");
        for (index, actor) in last.actor_states.iter().enumerate() {
            let crashed = if last.crashed[index] { " (crashed)" } else { "" };
            let _ = writeln!(trace, "    n{index}{crashed}: {:?}", actor.node);
            if let Some(violation) = &actor.violation {
                let _ = writeln!(trace, "        broke {violation}");
            }
        }
    }
    trace
}

/// Shows a check's progress on standard error: on a terminal, one live line per model (an
/// indicatif spinner, cleared when the model is done); in a log or a pipe, a line every
/// [`LOG_EVERY`].
struct Progress {
    model: &'static str,
    enabled: bool,
    /// The live line, on a terminal.
    bar: Option<indicatif::ProgressBar>,
    /// When the last log line was printed, measured from the start of the check.
    printed: Duration,
}

/// How often a check writes a progress line when standard error is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    fn new(model: &'static str, enabled: bool) -> Self {
        use std::io::IsTerminal as _;
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}")
                    .expect("a valid template"),
            );
            bar
        });
        Self { model, enabled, bar, printed: Duration::ZERO }
    }

    fn line(&self, data: &ReportData) -> String {
        format!(
            "{}: {} states, {} unique, depth {}, {:.0}s",
            self.model,
            data.total_states,
            data.unique_states,
            data.max_depth,
            data.duration.as_secs_f64()
        )
    }
}

impl<M: Model> Reporter<M> for Progress {
    fn report_checking(&mut self, data: ReportData) {
        if !self.enabled {
            return;
        }
        if let Some(bar) = &self.bar {
            if data.done {
                bar.finish_and_clear();
            } else {
                bar.set_message(self.line(&data));
                bar.tick();
            }
            return;
        }
        if !data.done && data.duration >= self.printed + LOG_EVERY {
            self.printed = data.duration;
            #[allow(clippy::print_stderr)] // The CLI's progress line.
            {
                eprintln!("{}", self.line(&data));
            }
        }
    }

    /// Polls often so a short check ends promptly (and the live line moves).
    fn delay(&self) -> Duration {
        Duration::from_millis(20)
    }

    fn report_discoveries(
        &mut self,
        _: &M,
        _: std::collections::BTreeMap<&'static str, ReportDiscovery<M>>,
    ) where
        M::Action: Debug + PartialEq,
        M::State: Debug + Hash + PartialEq,
    {
    }
}
