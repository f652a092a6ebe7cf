//! The command layer: arguments parsed once with clap, checked into typed
//! plans, and the stages composed for each command, one module a command.
//! Exit codes: 0 pass, 1 a gate failed, 2 bad usage or input, 3 the run was
//! interrupted (SIGINT, SIGTERM): an interrupted run never passes.

mod capacity;
pub mod demo;
mod diff;
mod formats;
mod merge;
mod record;
pub mod replay;
mod run;
mod shadow;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::judge::NoiseThresholds;
use crate::report::{Render, Report, Terminal};

/// The gate failed.
pub const EXIT_GATE_FAILED: u8 = 1;
/// Bad usage or bad input.
pub const EXIT_BAD_INPUT: u8 = 2;
/// The run was interrupted.
pub const EXIT_INTERRUPTED: u8 = 3;

/// Record HTTP traffic, replay it at a legacy and a new stack, diff, gate.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Record traffic into a capture file: as a reverse proxy (--listen,
    /// --upstream) or from packets on an interface (--interface, --port).
    Record(record::RecordArgs),
    /// Import a pcap or pcapng file into a capture file.
    Import(record::ImportArgs),
    /// Redact an existing capture into a new one (docs/redaction.md).
    Redact(record::RedactCommandArgs),
    /// Export a capture, or a run's results, as HAR or GoReplay .gor.
    Export(formats::ExportArgs),
    /// Replay a capture at the legacy and the new stack and report parity.
    Replay(replay::ReplayArgs),
    /// Serve clients from legacy (recording), mirror each exchange to new,
    /// and diff online (docs/shadow.md).
    Shadow(shadow::ShadowArgs),
    /// Find the most each stack sustains within an SLO, answers still
    /// correct: rates doubled, bisected, confirmed (docs/load-testing.md).
    Capacity(capacity::CapacityArgs),
    /// Run a scenario file (docs/scenarios.md): a replay with its targets,
    /// pacing, rules, gates, setup and teardown; flags after the file
    /// replace its keys.
    Run(run::RunArgs),
    /// Recompute a run's report from its results, e.g. with new rules; sends nothing.
    Diff(diff::DiffArgs),
    /// Work on reports: `tandem report merge`, `html`, `compare`.
    #[command(subcommand)]
    Report(merge::ReportCommand),
    /// Run the whole job on two embedded demo stacks.
    Demo(demo::DemoArgs),
}

/// Noise thresholds, for `replay --learn-noise` and `diff` of such runs;
/// the defaults are [`NoiseThresholds::default`]'s.
#[derive(Debug, Args)]
struct NoiseArgs {
    /// A difference is real when its rate exceeds the noise rate by more than this share of it.
    #[arg(long, default_value_t = NoiseThresholds::default().relative)]
    noise_relative: f64,
    /// ... and by more than this (0..1).
    #[arg(long, default_value_t = NoiseThresholds::default().absolute)]
    noise_absolute: f64,
    /// ... and significantly: two-proportion z-score above this (2.58: 99%).
    #[arg(long, default_value_t = NoiseThresholds::default().z)]
    noise_z: f64,
}

impl NoiseArgs {
    fn thresholds(&self) -> NoiseThresholds {
        NoiseThresholds {
            relative: self.noise_relative,
            absolute: self.noise_absolute,
            z: self.noise_z,
        }
    }
}

/// TLS towards the targets (replay) or the upstream (record).
#[derive(Debug, Args)]
struct TrustArgs {
    /// Also trust the CA certificates in this PEM file (repeatable); the
    /// machine's trust store and the web roots are trusted anyway.
    #[arg(long = "ca-cert")]
    ca_certs: Vec<PathBuf>,
    /// Present this client certificate chain (PEM) when asked (mutual TLS).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Accept any TLS certificate (self-signed staging stacks).
    #[arg(long)]
    insecure: bool,
}

impl TrustArgs {
    /// The certificates to trust and present, read and checked.
    fn trust(&self) -> anyhow::Result<crate::http::Trust> {
        crate::http::Trust::load(&crate::http::TrustFiles {
            ca_certs: self.ca_certs.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        })
    }
}

/// The gates a run is held to: `--gate` expressions and their shorthands.
#[derive(Debug, Clone, Default, Args)]
pub struct GateArgs {
    /// A gate, e.g. "parity >= 99.9%", "errors.new <= 0.1%", "new.p99 <=
    /// 1.10 * legacy.p99" or "new.p99 < 250ms" (docs/gates.md); repeatable.
    /// Exit 1 when one fails.
    #[arg(long = "gate", value_parser = parse_gate)]
    gate: Vec<crate::gate::Gate>,
    /// Shorthand for --gate "mismatch_rate <= X": summary.mismatch_rate,
    /// (mismatched + errors + dropped) / total, at most this (0..1).
    #[arg(long, value_parser = parse_rate)]
    max_mismatch_rate: Option<f64>,
    /// Shorthand for --gate "fidelity >= X": legacy's replayed answers
    /// matching the recorded ones in status and body structure (0..1).
    #[arg(long, value_parser = parse_rate)]
    min_fidelity: Option<f64>,
}

impl GateArgs {
    /// Every gate these flags ask for, shorthands first.
    pub fn gates(&self) -> Vec<crate::gate::Gate> {
        let shorthands = [
            self.max_mismatch_rate
                .map(crate::gate::Gate::max_mismatch_rate),
            self.min_fidelity.map(crate::gate::Gate::min_fidelity),
        ];
        shorthands
            .into_iter()
            .flatten()
            .chain(self.gate.iter().cloned())
            .collect()
    }
}

/// `EXPR`, or `EXPR over DURATION [abort]` for a windowed gate.
fn parse_gate(text: &str) -> Result<crate::gate::Gate, String> {
    let (expression, window) = match text.split_once(" over ") {
        Some((expression, window)) => (expression, Some(window.trim())),
        None => (text, None),
    };
    let gate = crate::gate::Gate::parse(text, expression, None).map_err(|e| e.why)?;
    let Some(window) = window else {
        return Ok(gate);
    };
    let (over, abort) = match window.strip_suffix("abort") {
        Some(over) => (over.trim(), true),
        None => (window, false),
    };
    let over = humantime::parse_duration(over).map_err(|e| format!("over {over:?}: {e}"))?;
    gate.windowed(over, abort).map_err(|e| e.why)
}

/// One command's arguments on their own: a scenario's, or a test's.
#[derive(Parser)]
struct Alone<A: Args> {
    #[command(flatten)]
    args: A,
}

/// `command`'s arguments (what follows `tandem NAME`), parsed alone.
fn parse_alone<A, I, T>(command: &'static str, args: I) -> Result<A, clap::Error>
where
    A: Args + clap::FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let argv =
        std::iter::once(std::ffi::OsString::from(command)).chain(args.into_iter().map(Into::into));
    let matches = Alone::<A>::command()
        .name(command)
        .try_get_matches_from(argv)?;
    Ok(Alone::<A>::from_arg_matches(&matches)?.args)
}

/// Every flag of a command, by long name, with how it takes a value: the
/// keys a scenario (or its section) may hold.
fn flags_alone<A: Args>() -> crate::scenario::Flags {
    use crate::scenario::Takes;
    use clap::{ArgAction, CommandFactory};
    Alone::<A>::command()
        .get_arguments()
        .filter_map(|arg| {
            let takes = match arg.get_action() {
                ArgAction::SetTrue => Takes::Switch,
                ArgAction::Append => Takes::Many,
                ArgAction::Set => Takes::One,
                _ => return None,
            };
            Some((arg.get_long()?.to_string(), takes))
        })
        .collect()
}

/// A rate between 0 and 1, e.g. for `--max-mismatch-rate`.
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("must be between 0 and 1, got {rate}"));
    }
    Ok(rate)
}

/// Binds `--metrics-addr` (an error names it) and says where the metrics
/// are served: with port 0 the system picks a free port (shards sharing a
/// node, say), which only this line names.
async fn metrics_listener(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-addr {addr}: cannot listen"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!("metrics at http://{bound}/metrics");
    Ok(listener)
}

/// Whether to show the live progress line: on a terminal, unless told not to.
fn show_progress(no_progress: bool) -> bool {
    !no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// What a command that reports produced.
#[derive(Debug)]
pub struct Outcome {
    /// The report, also written to `report_path`.
    pub report: Report,
    /// Path of `report.json`, or why the report files could not be
    /// written (the terminal summary is then all there is).
    pub written: Result<PathBuf, anyhow::Error>,
}

impl Outcome {
    /// `report`, written into `dir` if it can be: a full disk still leaves
    /// the terminal summary, from memory.
    fn write(report: Report, dir: &std::path::Path) -> Outcome {
        let written = report.write_files(dir);
        Outcome { report, written }
    }

    /// True when the run was not interrupted and every gate held.
    pub fn passed(&self) -> bool {
        self.report.passed()
    }
}

/// Parses the command line and runs it.
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Ok(ExitCode::from(if e.use_stderr() {
                EXIT_BAD_INPUT
            } else {
                0
            }));
        }
    };
    init_logging(cli.verbose, cli.quiet);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Record(args) if args.packet_mode() => record::packets(args).await,
        Command::Record(args) => record::proxy(args).await,
        Command::Import(args) => record::import(args).await,
        Command::Redact(args) => record::redact(args),
        Command::Export(args) => formats::export(args),
        Command::Replay(args) => replay::command(args).await,
        Command::Run(args) => run::command(args).await,
        Command::Capacity(args) => capacity::command(args).await,
        Command::Shadow(args) => shadow::command(args).await,
        Command::Diff(args) => diff::command(args),
        Command::Report(merge::ReportCommand::Merge(args)) => merge::command(args),
        Command::Report(merge::ReportCommand::Html(args)) => merge::html(args),
        Command::Report(merge::ReportCommand::Compare(args)) => merge::compare(args),
        Command::Demo(args) => demo::command(args).await,
    }
}

/// Prints the terminal summary, writes the CI outputs (`--junit`, and the
/// step summary when `GITHUB_STEP_SUMMARY` names a file) and maps the
/// outcome to an exit code.
fn finish(outcome: &Outcome, junit: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    Terminal.render(&outcome.report, &mut out)?;
    let report_path = match &outcome.written {
        Ok(path) => path,
        Err(e) => {
            eprintln!(
                "tandem: {e:#}; the report was not written (any earlier one is left whole), \
                 and the summary above is all there is of it"
            );
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    writeln!(out, "report: {}", report_path.display())?;
    if let Some(path) = junit {
        write_junit(&outcome.report, path)?;
        writeln!(out, "junit: {}", path.display())?;
    }
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        append_step_summary(outcome, std::path::Path::new(&path))?;
    }
    if let Some(unreadable) = &outcome.report.unreadable {
        for line in &unreadable.examples {
            eprintln!("tandem: {line}");
        }
        eprintln!(
            "tandem: {} input lines could not be read and were skipped",
            unreadable.lines
        );
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    Ok(if outcome.report.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_GATE_FAILED)
    })
}

fn write_junit(report: &Report, path: &std::path::Path) -> anyhow::Result<()> {
    crate::output::write_with(path, |out| Ok(crate::report::Junit.render(report, out)?))
}

/// GitHub's limit for one step's summary.
const STEP_SUMMARY_LIMIT: usize = 1 << 20;

/// Appends the run's Markdown summary to the step summary file, keeping
/// the file under GitHub's 1 MiB.
fn append_step_summary(outcome: &Outcome, path: &std::path::Path) -> anyhow::Result<()> {
    let used = std::fs::metadata(path).map_or(0, |m| m.len() as usize);
    let room = STEP_SUMMARY_LIMIT.saturating_sub(used + 1);
    let artifact = match &outcome.written {
        Ok(path) => path.parent().unwrap_or(std::path::Path::new(".")),
        Err(_) => std::path::Path::new("(not written)"),
    }
    .display()
    .to_string();
    let text = crate::report::step_summary(&outcome.report, &artifact, room);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("{}: cannot append the step summary", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("{}: cannot append the step summary", path.display()))
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("tandem={default}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("signal received: stopping");
}
