//! The command line: arguments parsed once with clap, checked into typed
//! plans, handed to the stages. Exit codes: 0 pass, 1 gate failed, 2 bad
//! usage or input.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::demo::{self, DemoOptions};
use crate::record::{record_proxy, ProxyConfig};
use crate::replay::{replay, ReplayOutcome, ReplayPlan};
use crate::report::{Render, Terminal};
use crate::target::Target;

/// The gate failed.
pub const EXIT_GATE_FAILED: u8 = 1;
/// Bad usage or bad input.
pub const EXIT_BAD_INPUT: u8 = 2;

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Record traffic through a reverse proxy into a capture file.
    Record(RecordArgs),
    /// Replay a capture at the legacy and the new stack and report parity.
    Replay(ReplayArgs),
    /// Run the whole job on two embedded demo stacks.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct RecordArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: SocketAddr,
    /// The service to forward to, e.g. http://127.0.0.1:9000.
    #[arg(long)]
    upstream: Target,
    /// Capture file to write (.gz for gzip).
    #[arg(long)]
    out: PathBuf,
    /// Take the session key from this request header (default: the client connection).
    #[arg(long)]
    session_header: Option<String>,
    /// Longest wait for the upstream's complete answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// The capture file to replay.
    capture: PathBuf,
    /// Base URL of the legacy stack.
    #[arg(long)]
    legacy: Target,
    /// Base URL of the new stack.
    #[arg(long)]
    new: Target,
    /// Run directory for results.jsonl, report.json and summary.md.
    #[arg(long)]
    out: PathBuf,
    /// Multiple of the recorded rate (0.5 = half speed).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Rules file (TOML, docs/rules.md).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Longest wait for one complete answer.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Exit 1 when (mismatched + errors) / total is above this (0..1).
    #[arg(long)]
    max_mismatch_rate: Option<f64>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Requests in the generated workload.
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    /// Recording rate, requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Replay speed, multiple of the recorded rate.
    #[arg(long, default_value_t = 2.0)]
    speed: f64,
    /// Capture file to write.
    #[arg(long, default_value = "captures/demo.jsonl.gz")]
    capture: PathBuf,
    /// Run directory.
    #[arg(long, default_value = "reports/demo")]
    out: PathBuf,
    /// Rules file (default: the shipped scenarios/demo.rules.toml).
    #[arg(long)]
    rules: Option<PathBuf>,
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
        Command::Record(args) => record(args).await,
        Command::Replay(args) => replay_command(args).await,
        Command::Demo(args) => demo_command(args).await,
    }
}

async fn record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let config = ProxyConfig {
        upstream: args.upstream,
        out: args.out.clone(),
        session_header: args.session_header,
        timeout: args.timeout,
        drain: Duration::from_secs(10),
    };
    tracing::info!(
        "recording {} -> {} into {}",
        args.listen,
        config.upstream,
        args.out.display()
    );
    let summary = record_proxy(listener, config, shutdown_signal()).await?;
    println!(
        "recorded {} exchanges into {} ({} without upstream answer, {} abandoned by the client, {} incomplete requests)",
        summary.exchanges,
        args.out.display(),
        summary.upstream_errors,
        summary.abandoned,
        summary.incomplete_requests
    );
    Ok(ExitCode::SUCCESS)
}

async fn replay_command(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if let Some(rate) = args.max_mismatch_rate {
        anyhow::ensure!(
            (0.0..=1.0).contains(&rate),
            "--max-mismatch-rate must be between 0 and 1, got {rate}"
        );
    }
    let plan = ReplayPlan {
        capture: args.capture,
        legacy: args.legacy,
        new: args.new,
        speed: args.speed,
        out_dir: args.out,
        rules: args.rules,
        timeout: args.timeout,
        drain: Duration::from_secs(10),
        max_mismatch_rate: args.max_mismatch_rate,
    };
    let outcome = replay(&plan, shutdown_signal()).await?;
    finish(&outcome)
}

async fn demo_command(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let options = DemoOptions {
        requests: args.requests,
        rate: args.rate,
        speed: args.speed,
        capture: args.capture,
        out_dir: args.out,
        rules: args.rules,
        ..DemoOptions::default()
    };
    println!(
        "tandem demo: recording {} requests through the proxy, then replaying at {}x against legacy and new",
        options.requests, options.speed
    );
    let outcome = demo::run(&options).await?;
    println!(
        "recorded {} exchanges into {}",
        outcome.recorded.exchanges,
        options.capture.display()
    );
    finish(&outcome.replay)
}

/// Prints the terminal summary and maps the outcome to an exit code.
fn finish(outcome: &ReplayOutcome) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    Terminal.render(&outcome.report, &mut out)?;
    writeln!(out, "report: {}", outcome.report_path.display())?;
    if outcome.interrupted {
        writeln!(
            out,
            "interrupted: the report covers what was sent before the stop"
        )?;
    }
    if !outcome.unreadable.is_empty() {
        for line in &outcome.unreadable {
            eprintln!("tandem: {line}");
        }
        eprintln!(
            "tandem: {} capture lines could not be read and were not replayed",
            outcome.unreadable.len()
        );
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    Ok(if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_GATE_FAILED)
    })
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
