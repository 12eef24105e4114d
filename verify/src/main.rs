//! `squall-verify`: the deterministic simulator's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use squall_verify::dst::{self, Mutant, SeedReport};

#[derive(Debug, Parser)]
#[command(
    name = "squall-verify",
    version,
    about = "Deterministic simulation of Squall's protocols, judged by history checkers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate seeds: each runs the gossip, KVS and session worlds under faults, checks the
    /// protocols' invariants after every step, then heals the network and judges the recorded
    /// history. Exit 0 when every seed passes (with `--mutant`: when the mutant is caught).
    Dst(DstArgs),
    /// List the seeded mutants `dst --mutant` accepts.
    Mutants,
    /// Judge an export (`dst --export`): each file of the manifest by the built-in black-box
    /// isolation checker at the level the manifest names, and by squall-verify's own checkers
    /// on its text and its JSON lines. Exit 0 when every file passes, 1 when one fails.
    Judge {
        /// The manifest, `DIR/seed-S-manifest.json`; its files are read from beside it.
        manifest: PathBuf,
    },
    /// Replay the conformance traces against a program in any language that speaks the
    /// JSON-lines node protocol (docs/conformance.md), one process per node; report the first
    /// output that differs. Exit 0 when every node replayed matches, 1 at a mismatch.
    Conform(ConformArgs),
    /// Serve the JSON-lines node protocol on stdin and stdout with Squall's own state
    /// machines (what `conform` runs when given no `--node`).
    Node,
}

#[derive(Debug, clap::Args)]
struct ConformArgs {
    /// The program, run with `sh -c` once per node; this binary's `node` by default.
    #[arg(long, value_name = "CMD")]
    node: Option<String>,
    /// Only nodes of these roles (replica, client, storage, cache, scheduler, worker...).
    #[arg(long, value_delimiter = ',')]
    role: Vec<String>,
    /// Only these traces (by name; `squall-verify conform --list` names them).
    #[arg(long, value_delimiter = ',')]
    trace: Vec<String>,
    /// List the traces and exit.
    #[arg(long)]
    list: bool,
}

#[derive(Debug, clap::Args)]
struct DstArgs {
    /// Run seeds 0..N.
    #[arg(long, default_value_t = 100, conflicts_with = "seed")]
    seeds: u64,
    /// Run this one seed and print its full report (with the trace of a failure).
    #[arg(long)]
    seed: Option<u64>,
    /// Seed this defect into every node of its protocol; the run should then fail.
    #[arg(long, value_name = "NAME", conflicts_with = "all_mutants")]
    mutant: Option<String>,
    /// Run every mutant over the seeds (or over its own bound if larger: 300 seeds, 1,000 for
    /// `stale-hold-ok`); exit 0 only if each is caught (by the first failing seed, reported per
    /// mutant).
    #[arg(long)]
    all_mutants: bool,
    /// Write `--seed`'s histories to DIR: each world's whole history as JSON lines
    /// (`seed-S-WORLD.jsonl`); files a published isolation checker can judge, one per world and
    /// promised level, as `r(key,value,session,txn)` text and JSON lines (`seed-S-FILE.txt`,
    /// `.jsonl`); and `seed-S-manifest.json`, naming the level to check each file at and why.
    #[arg(long, value_name = "DIR", requires = "seed")]
    export: Option<PathBuf>,
    /// How many of the last events to print with a failure.
    #[arg(long, value_name = "EVENTS", default_value_t = 30)]
    trace: usize,
    /// With `--seed`: print each world's last events (`--trace` of them) even when it passes.
    #[arg(long, requires = "seed")]
    show_trace: bool,
    /// Judge only from the outside: skip the protocols' own invariants and rely on the
    /// history checkers, the clients' outcomes and settling (shows what the checkers catch).
    #[arg(long)]
    history_only: bool,
    /// Run only these worlds (gossip, kvs, session); all by default.
    #[arg(long, value_delimiter = ',', value_parser = ["gossip", "kvs", "session"])]
    world: Vec<String>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stdout)]
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let args = match cli.command {
        Command::Mutants => {
            for mutant in Mutant::all() {
                println!("{}", mutant.name());
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Dst(args) => args,
        Command::Judge { manifest } => return judge_export(&manifest),
        Command::Conform(args) => return conform(&args),
        Command::Node => {
            let stdin = std::io::stdin().lock();
            squall_verify::conform::serve(stdin, std::io::stdout().lock())?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mutant = args.mutant.as_deref().map(Mutant::parse).transpose()?;
    let worlds: Vec<&str> = if args.world.is_empty() {
        dst::WORLDS.to_vec()
    } else {
        args.world.iter().map(String::as_str).collect()
    };
    let run_seed = |seed| dst::run_worlds(seed, mutant, &worlds);
    dst::set_trace_len(args.trace);
    dst::set_show_trace(args.show_trace);
    dst::set_history_only(args.history_only);
    if let Some(seed) = args.seed {
        let report = run_seed(seed);
        print!("{}", report.render());
        if let Some(dir) = &args.export {
            export(&report, dir)?;
        }
        return Ok(verdict(&report, mutant.is_some()));
    }
    if args.all_mutants {
        return all_mutants(&args, &worlds);
    }
    let bar = progress(args.seeds, args.quiet, "seeds");
    let mut totals = Totals::default();
    for seed in 0..args.seeds {
        let report = run_seed(seed);
        bar.inc(1);
        if let Some(failure) = report.failure() {
            bar.finish_and_clear();
            println!(
                "seed {seed}: {} world, {} phase: {}",
                failure.world, failure.phase, failure.what
            );
            println!("reproduce: {}", report.reproduce());
            return Ok(verdict(&report, mutant.is_some()));
        }
        totals.add(&report);
    }
    bar.finish_and_clear();
    println!("{}", totals.render(args.seeds));
    if let Some(mutant) = mutant {
        println!("mutant {} escaped {} seeds", mutant.name(), args.seeds);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit 0 when the run passed, or with a mutant, when it failed (the mutant was caught).
fn verdict(report: &SeedReport, mutant: bool) -> ExitCode {
    if report.failure().is_some() == mutant { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[allow(clippy::print_stdout)]
fn all_mutants(args: &DstArgs, worlds: &[&str]) -> anyhow::Result<ExitCode> {
    let mutants = Mutant::all();
    let bar = progress(mutants.len() as u64, args.quiet, "mutants");
    let mut escaped = Vec::new();
    for mutant in mutants {
        let seeds = args.seeds.max(dst::seed_bound(mutant));
        let caught = (0..seeds)
            .map(|seed| dst::run_worlds(seed, Some(mutant), worlds))
            .find(|r| r.failure().is_some());
        bar.inc(1);
        match caught {
            Some(report) => {
                let f = report.failure().expect("found by its failure");
                say(
                    &bar,
                    format!(
                        "{:<26} caught at seed {:>3} ({} world, {} phase): {}",
                        mutant.name(),
                        report.seed,
                        f.world,
                        f.phase,
                        f.what
                    ),
                );
            }
            None => {
                say(&bar, format!("{:<26} ESCAPED {seeds} seeds", mutant.name()));
                escaped.push(mutant.name());
            }
        }
    }
    bar.finish_and_clear();
    if escaped.is_empty() {
        println!("every mutant caught within its bound");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("escaped: {}", escaped.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

/// Prints a line above the progress bar (or plainly, when it is hidden).
#[allow(clippy::print_stdout)]
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() { println!("{line}") } else { bar.println(line) }
}

fn progress(len: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {what} [{{elapsed_precise}}, eta {{eta}}]");
    bar.set_style(ProgressStyle::with_template(&template).expect("a valid template"));
    bar
}

/// Writes `--export`'s files: each world's whole history as JSON lines, each file of
/// [`squall_verify::export`] as text and JSON lines, and a manifest naming for each the level a
/// published checker should judge it at.
fn export(report: &SeedReport, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: String, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    let seed = report.seed;
    let mut files = Vec::new();
    let mut checked_here_only = Vec::new();
    for world in &report.worlds {
        write(format!("seed-{seed}-{}.jsonl", world.world), world.history.to_jsonl())?;
        for file in squall_verify::export::export(world.world, &world.history) {
            let prefix = format!("seed-{seed}-{}", file.name);
            write(format!("{prefix}.txt"), file.history.to_text())?;
            write(format!("{prefix}.jsonl"), file.history.to_jsonl())?;
            files.push(file.entry(&prefix));
        }
        checked_here_only.extend(squall_verify::export::checked_here_only(world.world));
    }
    let mutant = report.mutant.map(|m| m.name());
    let manifest = squall_verify::export::Manifest { seed, mutant, files, checked_here_only };
    let manifest = serde_json::to_string_pretty(&manifest).context("encoding the manifest")?;
    write(format!("seed-{seed}-manifest.json"), manifest + "\n")
}

/// `judge`: every file of an export's manifest, by each checker; a line per file.
#[allow(clippy::print_stdout)]
fn judge_export(manifest_path: &std::path::Path) -> anyhow::Result<ExitCode> {
    use squall_verify::History;
    use squall_verify::export::Manifest;
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    let manifest: Manifest = serde_json::from_str(&read(manifest_path)?)
        .with_context(|| format!("{} is not an export manifest", manifest_path.display()))?;
    let dir = manifest_path.parent().unwrap_or(std::path::Path::new("."));
    let mut failed = 0;
    for entry in &manifest.files {
        let text = read(&dir.join(&entry.text))?;
        let jsonl = read(&dir.join(&entry.jsonl))?;
        let causal = entry.causal_keys.iter().copied().collect();
        let from_text = History::from_text(&text, entry.level, &causal)
            .with_context(|| format!("reading {}", entry.text))?;
        let from_jsonl =
            History::from_jsonl(&jsonl).with_context(|| format!("reading {}", entry.jsonl))?;
        let level = format!("{} ({})", entry.isolation.name(), entry.plume);
        match squall_verify::export::judge(&text, entry.isolation, &from_text, &from_jsonl) {
            Ok(()) => println!("{:<34} {level:<20} {:>4} ops  ok", entry.text, entry.operations),
            Err(rejection) => {
                failed += 1;
                println!(
                    "{:<34} {level:<20} {:>4} ops  FAILED by the {}: {}",
                    entry.text, entry.operations, rejection.by, rejection.why
                );
            }
        }
    }
    println!("{} files, {failed} failed", manifest.files.len());
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `conform`: every chosen trace against the program; a line per trace.
#[allow(clippy::print_stdout)]
fn conform(args: &ConformArgs) -> anyhow::Result<ExitCode> {
    use squall_verify::conformance::SCENARIOS;
    if args.list {
        for scenario in SCENARIOS {
            println!("{:<20} {}", scenario.name, scenario.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(unknown) = args.trace.iter().find(|t| !SCENARIOS.iter().any(|s| s.name == **t)) {
        anyhow::bail!("no trace named {unknown} (`conform --list` names them)");
    }
    let command = match &args.node {
        Some(command) => command.clone(),
        None => {
            let exe = std::env::current_exe().context("finding this binary")?;
            format!("'{}' node", exe.display())
        }
    };
    let (mut nodes, mut steps) = (0, 0);
    for scenario in
        SCENARIOS.iter().filter(|s| args.trace.is_empty() || args.trace.iter().any(|t| t == s.name))
    {
        match squall_verify::conform::conform(scenario, &command, &args.role) {
            Ok(reports) if reports.is_empty() => {}
            Ok(reports) => {
                let count: usize = reports.iter().map(|r| r.steps).sum();
                println!("{:<20} {} nodes, {count} steps match", scenario.name, reports.len());
                nodes += reports.len();
                steps += count;
            }
            Err(e) => {
                println!("{:<20} MISMATCH\n{e}", scenario.name);
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    if nodes == 0 {
        anyhow::bail!("no node of the roles asked for is in the traces chosen");
    }
    println!("{nodes} nodes, {steps} steps: every output matches");
    Ok(ExitCode::SUCCESS)
}

/// Sums over passing seeds, for the closing line.
#[derive(Debug, Default)]
struct Totals {
    worlds: usize,
    ops: usize,
    delivered: u64,
    dropped: u64,
    duplicated: u64,
    partitions: u64,
    crashes: u64,
    disks_lost: u64,
    power_failures: u64,
    replayed: u64,
}

impl Totals {
    fn add(&mut self, report: &SeedReport) {
        self.worlds += report.worlds.len();
        for world in &report.worlds {
            self.ops += world.history.ops.len();
            self.delivered += world.stats.delivered;
            self.dropped += world.stats.dropped;
            self.duplicated += world.stats.duplicated;
            self.partitions += u64::from(world.partitioned);
            self.crashes += world.stats.crashes;
            self.disks_lost += world.stats.disks_lost;
            self.power_failures += world.stats.power_failures;
            self.replayed += world.stats.replayed;
        }
    }

    fn render(&self, seeds: u64) -> String {
        format!(
            "dst: {seeds} seeds passed ({} worlds): {} history ops checked; {} messages delivered, \
             {} dropped, {} duplicated; {} partitions, {} crashes, {} power failures, {} disks lost, {} replayed to restarted nodes",
            self.worlds,
            self.ops,
            self.delivered,
            self.dropped,
            self.duplicated,
            self.partitions,
            self.crashes,
            self.power_failures,
            self.disks_lost,
            self.replayed
        )
    }
}
