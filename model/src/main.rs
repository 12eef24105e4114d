//! `squall-model`: list, check and explore Squall's Stateright models.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use squall_model::{CheckOptions, Depth, Report, check, explore, models};

/// Prints a line of output. When standard output is closed early (`check all | head`), exits
/// with status 141 — what a shell reports for a process killed by `SIGPIPE` — instead of
/// panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(141);
            }
            panic!("cannot write to standard output: {error}");
        }
    }};
}

/// The checker spends much of its time allocating and freeing states; mimalloc does that
/// faster than the system allocator (measured in docs/verification.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Model-check Squall's protocols.
///
/// Each model runs the real protocol state machines of `squall-proto` over a faulty network
/// and checks properties named by invariant id (docs/invariants.md). Mutants are seeded
/// protocol defects; checking a model with one must fail.
#[derive(Debug, Parser)]
#[command(name = "squall-model", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the models, what the everyday bounds leave out of the deep ones, and their
    /// mutants.
    List {
        /// Print a JSON array of {"model", "mutants"} objects.
        #[arg(long)]
        json: bool,
    },
    /// Check one model, or `all` of them, exhaustively at the everyday bounds (or `--deep`).
    ///
    /// The everyday bounds check every model in well under two minutes on two cores and
    /// still catch every mutant; the deep ones (minutes) are for CI and before a release.
    /// `list` says what each model's everyday bounds leave out.
    ///
    /// Exits 0 when every property holds and 1 when one fails, printing a counterexample
    /// trace for each failure.
    Check {
        /// A model name from `list`, or `all`.
        model: String,
        /// Check the model with this seeded defect (see `list`); one property must then fail.
        #[arg(long)]
        mutant: Option<String>,
        /// Print one JSON object per model on standard output instead of text.
        #[arg(long)]
        json: bool,
        /// Search breadth-first, for shortest counterexamples (slower, more memory).
        #[arg(long)]
        bfs: bool,
        /// Checker threads [default: available cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Do not print the progress line on standard error.
        #[arg(long, short)]
        quiet: bool,
        /// Keep searching after the first failure, to decide every property (slower).
        #[arg(long)]
        full: bool,
        /// Check at the deep bounds (CI, before a release) instead of the everyday ones: the
        /// largest models grow several times over.
        #[arg(long)]
        deep: bool,
        /// Check the model once per mutant instead, proving every property can fail: exits 0
        /// when every mutant makes some property fail, 1 when a mutant escapes. With `--json`,
        /// one report per mutant.
        #[arg(long, conflicts_with = "mutant")]
        all_mutants: bool,
    },
    /// Serve Stateright Explorer for a model on localhost, to step through it in a browser.
    Explore {
        /// A model name from `list`.
        model: String,
        /// Explore the model with this seeded defect.
        #[arg(long)]
        mutant: Option<String>,
        /// Where to listen.
        #[arg(long, default_value = "localhost:3000")]
        addr: String,
        /// Explore the model at its deep bounds.
        #[arg(long)]
        deep: bool,
    },
}

/// Exit codes: 0 every property holds, 1 a property fails, 2 the command itself failed (unknown
/// model or mutant, bad arguments).
#[allow(clippy::print_stderr)] // A CLI's error.
fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stdout)] // A CLI's output.
fn run() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::List { json } => {
            if json {
                say!("{}", serde_json::to_string(&models())?);
            } else {
                for info in models() {
                    say!("{:<16} {}", info.model, info.about);
                    say!("{:<16} every day: {}", "", info.everyday.unwrap_or("as deep"));
                    say!("{:<16} mutants: {}", "", info.mutants.join(", "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { model, mutant, json, bfs, threads, quiet, full, deep, all_mutants } => {
            let infos: Vec<_> = if model == "all" {
                anyhow::ensure!(mutant.is_none(), "--mutant needs a single model, not `all`");
                models()
            } else {
                // An unknown name is reported by `check` with the list of known models.
                models().into_iter().filter(|m| m.model == model).collect()
            };
            let depth = Depth::deep_if(deep);
            let mut opts =
                CheckOptions { depth, bfs, full, progress: !quiet, ..CheckOptions::default() };
            if let Some(threads) = threads {
                opts.threads = threads;
            }
            if infos.is_empty() {
                check(&model, None, opts)?;
            }
            let mut ok = true;
            // For the closing table of a check of several models (text output only).
            let mut checked: Vec<Report> = Vec::new();
            let (mut mutants, mut escaped) = (0, 0);
            for info in infos {
                if all_mutants {
                    for name in &info.mutants {
                        let report = check(info.model, Some(name), opts)?;
                        let failed = report.failed();
                        ok &= !failed.is_empty();
                        mutants += 1;
                        escaped += usize::from(failed.is_empty());
                        match failed.is_empty() {
                            // The report itself, its `mutant` field set: a caught mutant is one
                            // whose report has a property with `holds: false`.
                            _ if json => say!("{}", serde_json::to_string(&report)?),
                            true => say!("{} --mutant {name}: ESCAPED", info.model),
                            false => say!(
                                "{} --mutant {name}: caught by {}",
                                info.model,
                                failed.join(", ")
                            ),
                        }
                    }
                    continue;
                }
                let report = check(info.model, mutant.as_deref(), opts)?;
                ok &= report.holds();
                if json {
                    say!("{}", serde_json::to_string(&report)?);
                } else {
                    print_report(&report);
                    checked.push(report);
                }
            }
            if checked.len() > 1 {
                print_table(&checked);
            }
            if all_mutants && !json && mutants > 1 {
                match escaped {
                    0 => say!("all {mutants} mutants caught"),
                    n => say!("{n} of {mutants} mutants ESCAPED"),
                }
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Explore { model, mutant, addr, deep } => {
            let depth = Depth::deep_if(deep);
            say!("Stateright Explorer for `{model}` on http://{addr} (Ctrl-C to stop)");
            explore(&model, mutant.as_deref(), depth, &addr).context("cannot explore")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One line per model: what was explored, in how long, and the verdict.
fn print_table(reports: &[Report]) {
    say!("");
    if let Some(report) = reports.first() {
        say!("at the {} bounds:", report.depth.name());
    }
    say!(
        "{:<18} {:>13} {:>12} {:>6} {:>9}  verdict",
        "model",
        "states",
        "unique",
        "depth",
        "seconds"
    );
    let (mut states, mut unique, mut secs) = (0, 0, 0.0);
    for report in reports {
        let failed = report.failed();
        let verdict = match (failed.is_empty(), report.complete) {
            (true, true) => "every property holds".to_owned(),
            (true, false) => "open (stopped early)".to_owned(),
            (false, _) => format!("FAILS {}", failed.join(", ")),
        };
        say!(
            "{:<18} {:>13} {:>12} {:>6} {:>9.1}  {verdict}",
            report.model,
            report.states,
            report.unique_states,
            report.max_depth,
            report.secs
        );
        (states, unique, secs) =
            (states + report.states, unique + report.unique_states, secs + report.secs);
    }
    say!("{:<18} {:>13} {:>12} {:>6} {:>9.1}", "total", states, unique, "", secs);
}

#[allow(clippy::print_stdout)]
fn print_report(report: &Report) {
    let mutant = report.mutant.as_deref().map(|m| format!(" --mutant {m}")).unwrap_or_default();
    say!(
        "{}{}: {} states, {} unique, max depth {}, {:.2}s",
        report.model,
        mutant,
        report.states,
        report.unique_states,
        report.max_depth,
        report.secs
    );
    for property in &report.properties {
        let verdict = match property.holds {
            Some(true) => "holds ",
            Some(false) => "FAILS ",
            None => "open  ",
        };
        say!("  {verdict} {} ({})", property.name, property.expectation);
        if let Some(trace) = &property.counterexample {
            print!("{trace}");
        }
    }
    if !report.complete {
        say!("  (search stopped at the first failure; `--full` decides the open properties)");
    }
}
