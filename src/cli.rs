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
use crate::packets::AssemblyOptions;
use crate::record::packets::PacketRecording;
use crate::record::{
    import_file, record_live, record_proxy, LiveConfig, ProxyConfig, Rotation, Selection, Sink,
    SinkSummary,
};
use crate::replay::{replay, NoisePlan, ReplayOutcome, ReplayPlan};
use crate::report::NoiseThresholds;
use crate::report::{Render, Terminal};
use crate::target::Target;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Record traffic into a capture file: as a reverse proxy (--listen,
    /// --upstream) or from packets on an interface (--interface, --port).
    Record(RecordArgs),
    /// Import a pcap or pcapng file into a capture file.
    Import(ImportArgs),
    /// Replay a capture at the legacy and the new stack and report parity.
    Replay(ReplayArgs),
    /// Recompute a run's report from its results, e.g. with new rules; sends nothing.
    Diff(DiffArgs),
    /// Work on reports: `tandem report merge`.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Run the whole job on two embedded demo stacks.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct RecordArgs {
    /// Proxy mode: address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, requires = "upstream", conflicts_with = "interface")]
    listen: Option<SocketAddr>,
    /// Proxy mode: the service to forward to, e.g. http://127.0.0.1:9000.
    #[arg(long, requires = "listen")]
    upstream: Option<Target>,
    /// Packet mode: the interface to capture on (needs root or CAP_NET_RAW).
    #[arg(long, requires = "port", required_unless_present = "listen")]
    interface: Option<String>,
    /// Packet mode: the service's TCP port.
    #[arg(long, requires = "interface")]
    port: Option<u16>,
    /// Packet mode: an extra BPF filter, and-ed with the port.
    #[arg(long, requires = "interface")]
    filter: Option<String>,
    /// Capture file to write (.gz for gzip).
    #[arg(long)]
    out: PathBuf,
    /// Proxy mode: take the session key from this request header (default: the client connection).
    #[arg(long, requires = "listen")]
    session_header: Option<String>,
    /// Proxy mode: longest wait for the upstream's complete answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    selection: SelectionArgs,
    /// Start a new file after this many bytes (e.g. 500MB).
    #[arg(long, value_parser = parse_size)]
    rotate_size: Option<u64>,
    /// Start a new file after this long (e.g. 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    rotate_time: Option<Duration>,
    /// Packet mode: body bytes kept at most per message; longer bodies are cut and marked incomplete.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    max_body: u64,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The pcap or pcapng file.
    file: PathBuf,
    /// Capture file to write (.gz for gzip).
    #[arg(long)]
    out: PathBuf,
    /// Server ports, to tell client from server on connections seen without their SYN.
    #[arg(long = "port", value_delimiter = ',')]
    ports: Vec<u16>,
    #[command(flatten)]
    selection: SelectionArgs,
    /// Body bytes kept at most per message; longer bodies are cut and marked incomplete.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    max_body: u64,
}

/// Which exchanges a recording keeps.
#[derive(Debug, Args)]
struct SelectionArgs {
    /// Keep only these methods, e.g. GET,POST.
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Keep only request targets (path and query) matching this regex.
    #[arg(long)]
    path_regex: Option<regex::Regex>,
    /// Keep this percentage of sessions, each whole (0 < P <= 100).
    #[arg(long)]
    sample_percent: Option<f64>,
}

impl SelectionArgs {
    fn selection(self) -> anyhow::Result<Selection> {
        if let Some(p) = self.sample_percent {
            anyhow::ensure!(
                p > 0.0 && p <= 100.0,
                "--sample-percent must be in (0, 100], got {p}"
            );
        }
        Ok(Selection {
            methods: self
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            path: self.path_regex,
            sample_percent: self.sample_percent,
        })
    }
}

/// `16MiB`, `500MB`, `1g`, `4096`: a size in bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 16MiB"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KB, KiB, MB, MiB, GB, GiB)"
            ))
        }
    };
    Ok((number * factor) as u64)
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
    /// A constant rate (requests/s) instead of the recorded timing.
    #[arg(long, conflicts_with = "speed")]
    rate: Option<f64>,
    /// Replay the capture this many times end to end, offsets carried forward.
    #[arg(long = "loop", default_value_t = 1)]
    passes: u32,
    /// Repeat the capture until this much time is scheduled (e.g. 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Send K copies of every request, spread across the gap to the next.
    #[arg(long, default_value_t = 1)]
    amplify: u32,
    /// Requests in flight at most, per target.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Drop (and count) a request that cannot go out this long after its time.
    #[arg(long, value_parser = humantime::parse_duration)]
    max_lag: Option<Duration>,
    /// Let requests of one session overlap (default: in order, one at a time).
    #[arg(long)]
    unordered_sessions: bool,
    /// Replay only shard I of N: the sessions whose key hashes to I (each
    /// session whole on one shard), at --rate / N. E.g. 0/4.
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(u32, u32)>,
    /// Start at this wall-clock time (RFC 3339, e.g. 2026-11-22T10:00:00Z),
    /// so that shards begin together.
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    start_at: Option<std::time::SystemTime>,
    /// Send the recorded Host header (default: each target's host).
    #[arg(long)]
    keep_host: bool,
    /// A header set on every request to the legacy stack, "Name: value" (repeatable).
    #[arg(long = "legacy-header", value_parser = parse_header)]
    legacy_headers: Vec<(String, String)>,
    /// A header set on every request to the new stack, "Name: value" (repeatable).
    #[arg(long = "new-header", value_parser = parse_header)]
    new_headers: Vec<(String, String)>,
    /// Longest wait for a connection.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Connections opened to each target before the first request, so that
    /// a fast start does not open one per request (default: 16 per engine;
    /// 0: none).
    #[arg(long)]
    warm_connections: Option<usize>,
    /// Connections open at once to each target, at most, all engines
    /// together; past it a request waits for one to come free, and its send
    /// lag shows the wait (default: 32 per engine; 0: no limit). Without a
    /// limit, a stall makes the pool open a connection per waiting request.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Replay engines: threads, each with its share of the sessions and of
    /// the connections (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Accept any TLS certificate (self-signed staging stacks).
    #[arg(long)]
    insecure: bool,
    /// No live progress line (it is shown only on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    /// HTTP/2 from the start on cleartext targets (prior knowledge); https
    /// targets negotiate HTTP/2 by ALPN anyway.
    #[arg(long)]
    http2: bool,
    /// Rules file (TOML, docs/rules.md).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Longest wait for one complete answer.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Exit 1 when (mismatched + errors) / total is above this (0..1).
    #[arg(long)]
    max_mismatch_rate: Option<f64>,
    #[command(flatten)]
    noise: NoiseArgs,
    /// Write the learned noise as a rules file (with --learn-noise).
    #[arg(long, requires = "learn_noise")]
    write_rules: Option<PathBuf>,
}

/// Noise learning.
#[derive(Debug, Args)]
struct NoiseArgs {
    /// Send each request to the legacy stack a second time (or to --legacy-2)
    /// and leave out differences two legacy answers also show.
    #[arg(long)]
    learn_noise: bool,
    /// A second legacy instance for noise learning (default: --legacy again).
    #[arg(long = "legacy-2", requires = "learn_noise")]
    legacy2: Option<Target>,
    /// A difference is real when its rate exceeds the noise rate by more than this share of it.
    #[arg(long, default_value_t = 0.2)]
    noise_relative: f64,
    /// ... and by more than this (0..1).
    #[arg(long, default_value_t = 0.01)]
    noise_absolute: f64,
    /// ... and significantly: two-proportion z-score above this (2.58: 99%).
    #[arg(long, default_value_t = 2.58)]
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

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Merge shard run directories into one report: counts add up, histograms merge exactly.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// Shard run directories (each holding report.json).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where to write the merged report.json and summary.md.
    #[arg(long)]
    out: PathBuf,
    /// Exit 1 when (mismatched + errors + dropped) / total is above this (0..1).
    #[arg(long)]
    max_mismatch_rate: Option<f64>,
}

/// `"Name: value"`, checked to be a valid header.
fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once(':').ok_or("expected \"Name: value\"")?;
    let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
    hyper::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a header name"))?;
    hyper::header::HeaderValue::from_str(&value)
        .map_err(|_| format!("{value:?} is not a header value"))?;
    Ok((name, value))
}

/// `I/N` with I < N.
fn parse_shard(text: &str) -> Result<(u32, u32), String> {
    let (i, n) = text.split_once('/').ok_or("expected I/N, e.g. 0/4")?;
    let (i, n): (u32, u32) = (
        i.trim()
            .parse()
            .map_err(|_| format!("{i:?} is not a shard index"))?,
        n.trim()
            .parse()
            .map_err(|_| format!("{n:?} is not a shard count"))?,
    );
    if n == 0 || i >= n {
        return Err(format!("shard {i}/{n}: the index must be below the count"));
    }
    Ok((i, n))
}

#[derive(Debug, Args)]
struct DiffArgs {
    /// The run directory (holding results.jsonl).
    run: PathBuf,
    /// Rules file (TOML, docs/rules.md); none: compare everything.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Where to write report.json and summary.md (default: the run directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit 1 when (mismatched + errors) / total is above this (0..1).
    #[arg(long)]
    max_mismatch_rate: Option<f64>,
    /// Noise thresholds, for runs made with --learn-noise.
    #[arg(long, default_value_t = 0.2)]
    noise_relative: f64,
    /// Noise thresholds, for runs made with --learn-noise.
    #[arg(long, default_value_t = 0.01)]
    noise_absolute: f64,
    /// Noise thresholds, for runs made with --learn-noise.
    #[arg(long, default_value_t = 2.58)]
    noise_z: f64,
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
        Command::Record(args) if args.interface.is_some() => record_packets(args).await,
        Command::Record(args) => record(args).await,
        Command::Import(args) => import(args).await,
        Command::Replay(args) => replay_command(args).await,
        Command::Diff(args) => diff_command(args),
        Command::Report(ReportCommand::Merge(args)) => merge_command(args),
        Command::Demo(args) => demo_command(args).await,
    }
}

async fn record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let (Some(listen), Some(upstream)) = (args.listen, args.upstream) else {
        anyhow::bail!("record needs --listen and --upstream, or --interface and --port");
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let config = ProxyConfig {
        upstream,
        out: args.out.clone(),
        session_header: args.session_header,
        timeout: args.timeout,
        drain: Duration::from_secs(10),
        selection: args.selection.selection()?,
        rotation: Rotation {
            max_bytes: args.rotate_size,
            max_age: args.rotate_time,
        },
    };
    tracing::info!(
        "recording {} -> {} into {}",
        listen,
        config.upstream,
        args.out.display()
    );
    let summary = record_proxy(listener, config, shutdown_signal()).await?;
    let files: Vec<String> = summary
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    println!(
        "recorded {} exchanges into {} ({} without upstream answer, {} abandoned by the client, {} incomplete requests, {} left out by the selection)",
        summary.exchanges,
        files.join(", "),
        summary.upstream_errors,
        summary.abandoned,
        summary.incomplete_requests,
        summary.filtered
    );
    Ok(ExitCode::SUCCESS)
}

async fn record_packets(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let config = LiveConfig {
        interface: args.interface.expect("packet mode has an interface"),
        port: args.port.expect("clap requires --port with --interface"),
        filter: args.filter,
        assembly: AssemblyOptions {
            max_body: args.max_body as usize,
            ..AssemblyOptions::default()
        },
    };
    let rotation = Rotation {
        max_bytes: args.rotate_size,
        max_age: args.rotate_time,
    };
    let source = format!(
        "pcap live interface={} port={}",
        config.interface, config.port
    );
    let mut sink = Sink::create(&args.out, &source, args.selection.selection()?, rotation)?;
    let stop = Arc::new(AtomicBool::new(false));
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal_stop.store(true, Ordering::Relaxed);
    });
    tracing::info!(
        "capturing {} port {} into {}",
        config.interface,
        config.port,
        args.out.display()
    );
    let (recording, sink) = tokio::task::spawn_blocking(move || {
        let recording = record_live(&config, &mut sink, &stop);
        (recording, sink)
    })
    .await?;
    let recording = recording?;
    let written = sink.finish()?;
    report_packets(&recording, &written)
}

async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let options = AssemblyOptions {
        max_body: args.max_body as usize,
        server_ports: args.ports,
        ..AssemblyOptions::default()
    };
    let source = format!("pcap file={}", args.file.display());
    let mut sink = Sink::create(
        &args.out,
        &source,
        args.selection.selection()?,
        Rotation::default(),
    )?;
    let file = args.file.clone();
    let (recording, sink) = tokio::task::spawn_blocking(move || {
        let recording = import_file(&file, options, &mut sink);
        (recording, sink)
    })
    .await?;
    let recording = recording?;
    let written = sink.finish()?;
    report_packets(&recording, &written)
}

/// Prints what a packet recording kept and what it did not, and why.
fn report_packets(recording: &PacketRecording, written: &SinkSummary) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    write!(out, "{}", recording.summary)?;
    let files: Vec<String> = written
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    writeln!(
        out,
        "wrote {} exchanges ({} left out by --methods/--path-regex/--sample-percent) to {}",
        written.written,
        written.filtered,
        files.join(", ")
    )?;
    if let Some(error) = &recording.stopped_by {
        eprintln!("tandem: {error}; everything before it was written");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay_command(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if let Some(rate) = args.max_mismatch_rate {
        anyhow::ensure!(
            (0.0..=1.0).contains(&rate),
            "--max-mismatch-rate must be between 0 and 1, got {rate}"
        );
    }
    let plan_legacy = args.legacy.clone();
    let mut plan = ReplayPlan {
        capture: args.capture,
        legacy: args.legacy,
        new: args.new,
        speed: args.speed,
        rate: args.rate,
        passes: args.passes,
        duration: args.duration,
        amplify: args.amplify,
        max_in_flight: args.max_in_flight,
        max_lag: args.max_lag,
        ordered_sessions: !args.unordered_sessions,
        shard: args.shard,
        start_at: args.start_at,
        keep_host: args.keep_host,
        legacy_headers: args.legacy_headers,
        new_headers: args.new_headers,
        client: crate::http::ClientOptions {
            connect_timeout: args.connect_timeout,
            insecure_tls: args.insecure,
            http2_prior_knowledge: args.http2,
            max_connections: None,
        },
        warm_connections: 0,
        threads: args.threads,
        progress: !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        out_dir: args.out,
        rules: args.rules,
        timeout: args.timeout,
        drain: Duration::from_secs(10),
        max_mismatch_rate: args.max_mismatch_rate,
        noise: args.noise.learn_noise.then(|| NoisePlan {
            legacy2: args
                .noise
                .legacy2
                .clone()
                .unwrap_or_else(|| plan_legacy.clone()),
            thresholds: args.noise.thresholds(),
        }),
        write_rules: args.write_rules,
    };
    // Connection defaults grow with the engines: each needs its own.
    let engines = plan.engine_count() as usize;
    plan.warm_connections = args.warm_connections.unwrap_or(16 * engines);
    plan.client.max_connections = match args.max_connections {
        Some(0) => None,
        Some(n) => Some(n),
        None => Some(32 * engines),
    };
    let outcome = replay(&plan, shutdown_signal()).await?;
    finish(&outcome)
}

fn merge_command(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let reports = args
        .runs
        .iter()
        .map(|dir| crate::report::Report::load(&dir.join("report.json")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut report = crate::report::merge::merge(reports)?;
    if let Some(max) = args.max_mismatch_rate {
        report.apply_gate(max);
    }
    let report_path = report.write_files(&args.out)?;
    finish(&ReplayOutcome {
        report,
        report_path,
        unreadable: Vec::new(),
        interrupted: false,
    })
}

fn diff_command(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let results = args.run.join(crate::results::FILE_NAME);
    let thresholds = NoiseThresholds {
        relative: args.noise_relative,
        absolute: args.noise_absolute,
        z: args.noise_z,
    };
    let mut report = crate::report::rediff(&results, args.rules.as_deref(), thresholds)?;
    if let Some(max) = args.max_mismatch_rate {
        report.apply_gate(max);
    }
    let out = args.out.unwrap_or(args.run);
    let report_path = report.write_files(&out)?;
    finish(&ReplayOutcome {
        report,
        report_path,
        unreadable: Vec::new(),
        interrupted: false,
    })
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
