//! `tandem shadow`: serve from legacy, mirror to new, diff online
//! (src/shadow.rs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;

use super::{finish, shutdown_signal, GateArgs, Outcome};
use crate::judge::JudgeOptions;
use crate::record::{ProxyConfig, Sink};
use crate::report::RunInfo;
use crate::shadow::{shadow, Following, KillSwitch, ShadowConfig, Warmup};
use crate::target::Target;

#[derive(Debug, Args)]
pub(super) struct ShadowArgs {
    /// Where clients connect.
    #[arg(long)]
    listen: SocketAddr,
    /// The legacy stack: it answers the clients.
    #[arg(long)]
    legacy: Target,
    /// The new stack: it gets a copy of each exchange, and its answer is
    /// compared with legacy's.
    #[arg(long)]
    new: Target,
    /// A second legacy instance, also mirrored to: what two legacy answers
    /// differ in is noise.
    #[arg(long = "legacy-2")]
    legacy2: Option<Target>,
    /// Rules file (TOML, docs/rules.md).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Run directory: report.json, summary.md, report.html, and the results
    /// of every mismatch (and one match in a hundred).
    #[arg(long)]
    out: PathBuf,
    /// The recording of what was served [default: OUT/served.jsonl.gz].
    #[arg(long)]
    record: Option<PathBuf>,
    /// Mirror POST, PUT, PATCH, DELETE and other writes too (only for a new
    /// stack on its own database).
    #[arg(long)]
    mirror_writes: bool,
    /// The header every mirrored request carries, "Name: value", so that the
    /// new stack can skip external side effects.
    #[arg(long, default_value = "X-Tandem-Shadow: 1")]
    shadow_header: String,
    /// Share of sessions mirrored (0-100), chosen by session key so that a
    /// mirrored flow is whole.
    #[arg(long, default_value_t = 100.0)]
    sample_percent: f64,
    /// Take the session key from this request header (default: the client
    /// connection).
    #[arg(long)]
    session_header: Option<String>,
    /// Mirror copies waiting, at most; past it copies are dropped, counted.
    #[arg(long, default_value_t = 10_000)]
    queue: usize,
    /// Mirrored requests in flight, at most.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Longest wait for an answer, from legacy and from the mirrors.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Body bytes recorded and compared at most per message (e.g. 16MiB);
    /// longer ones are kept cut, with their length and hash, and compared
    /// by those.
    #[arg(long, default_value = "16MiB", value_parser = super::record::parse_size)]
    max_body: u64,
    /// Longest wait for a client's request head; a slower client is
    /// disconnected (an idle keep-alive connection too).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    header_timeout: Duration,
    /// When the recording of what was served cannot be written: keep
    /// serving (and mirroring), or stop accepting; either way counted, exit 2.
    #[arg(long, value_enum, default_value_t = crate::record::proxy::OnWriteError::Serve)]
    on_write_error: crate::record::proxy::OnWriteError,
    /// At stop, longest wait for in-flight requests and the mirror queue.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    drain: Duration,
    /// Pause mirroring (counted, logged) while the new stack's error rate
    /// over --kill-window is above this (0..1); probes resume it.
    #[arg(long, value_parser = super::parse_rate)]
    kill_error_rate: Option<f64>,
    /// The kill switch's window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    kill_window: Duration,
    /// Serve live Prometheus metrics at http://HOST:PORT/metrics
    /// (docs/metrics.md).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Follow the new stack's own ids and tokens, with the links between
    /// answers and later requests learned from this earlier capture (a
    /// recording, or an earlier session's served.jsonl.gz) and the rules'
    /// [[correlate]]; each session is then mirrored in order.
    #[arg(long, conflicts_with = "follow")]
    learn_from: Option<PathBuf>,
    /// Follow the new stack's (and legacy-2's) own ids and tokens, with links
    /// learned from the live traffic: the first --warmup-exchanges served
    /// (or what --warmup-time serves) are kept, not mirrored, and learned
    /// from; then sessions that began after the warm-up are mirrored.
    #[arg(long)]
    follow: bool,
    /// With --follow: exchanges served in the warm-up, at most.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    warmup_exchanges: u64,
    /// With --follow: the warm-up's length, at most.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    warmup_time: Duration,
    /// Set the results file aside past this many MiB (results.1.jsonl …
    /// results.4.jsonl kept) and begin a new one.
    #[arg(long, default_value_t = 256)]
    results_max_mb: u64,
    /// Write report.json, summary.md and report.html of what was judged so
    /// far this often (and whole at stop).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    report_every: Duration,
    #[command(flatten)]
    gates: GateArgs,
    /// Gates from a scenario's `[gates]`.
    #[arg(skip)]
    extra_gates: Vec<crate::gate::Gate>,
}

/// `tandem shadow`'s arguments (after `shadow`), parsed.
pub(super) fn parse<I, T>(args: I) -> Result<ShadowArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    super::parse_alone("tandem shadow", args)
}

/// Every flag of `tandem shadow`: the keys of a scenario's `[shadow]`.
pub fn flags() -> crate::scenario::Flags {
    super::flags_alone::<ShadowArgs>()
}

impl ShadowArgs {
    /// A scenario's `[gates]`, beside the command line's.
    pub(super) fn add_gates(&mut self, gates: Vec<crate::gate::Gate>) {
        self.extra_gates.extend(gates);
    }
}

/// `tandem shadow`.
pub(super) async fn command(args: ShadowArgs) -> anyhow::Result<ExitCode> {
    let (name, value) = args
        .shadow_header
        .split_once(':')
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .context("--shadow-header: expected \"Name: value\"")?;
    hyper::header::HeaderName::from_bytes(name.as_bytes())
        .with_context(|| format!("--shadow-header: {name:?} is not a header name"))?;
    anyhow::ensure!(
        (0.0..=100.0).contains(&args.sample_percent),
        "--sample-percent must be between 0 and 100"
    );
    let record = args
        .record
        .clone()
        .unwrap_or_else(|| args.out.join("served.jsonl.gz"));
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create directory", args.out.display()))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let proxy = ProxyConfig {
        session_header: args.session_header.clone(),
        timeout: args.timeout,
        drain: args.drain,
        header_timeout: args.header_timeout,
        on_write_error: args.on_write_error,
        max_body: args.max_body as usize,
        ..ProxyConfig::new(listener, args.legacy.clone())
    };
    let sink = Sink::create(
        &record,
        &proxy.source(),
        Default::default(),
        Default::default(),
    )?;
    let metrics = match args.metrics_addr {
        Some(addr) => {
            let listener = super::metrics_listener(addr).await?;
            let metrics = crate::metrics::Metrics::new(crate::metrics::RunDescription {
                capture: record.display().to_string(),
                legacy: args.legacy.to_string(),
                new: args.new.to_string(),
            });
            // Served until the process ends, so that a last scrape sees the end.
            tokio::spawn(metrics.clone().serve(listener, std::future::pending()));
            Some(metrics)
        }
        None => None,
    };
    let follow = match (&args.learn_from, args.follow) {
        (Some(capture), _) => Following::Links(
            super::replay::correlation(true, capture, args.rules.as_deref())?
                .context("links are learned when asked")?,
        ),
        (None, true) => Following::Learn(Warmup {
            exchanges: args.warmup_exchanges as usize,
            longest: args.warmup_time,
            written: match &args.rules {
                Some(path) => crate::correlate::rules_in(path)?,
                None => Default::default(),
            },
        }),
        (None, false) => Following::Off,
    };
    let judge = JudgeOptions {
        metrics,
        rules: args.rules.clone(),
        legacy2: args.legacy2.as_ref().map(Target::to_string),
        run: RunInfo {
            capture: record.display().to_string(),
            legacy: args.legacy.to_string(),
            new: args.new.to_string(),
            speed: 1.0,
            rules: args.rules.as_ref().map(|p| p.display().to_string()),
            started_at_unix_us: crate::capture::CaptureHeader::new("").started_at_unix_us,
            ..RunInfo::default()
        },
        ..Default::default()
    };
    tracing::info!(
        "shadowing {} -> {}, mirrored to {}",
        args.listen,
        args.legacy,
        args.new
    );
    let started = std::time::Instant::now();
    let summary = shadow(
        ShadowConfig {
            proxy,
            sink,
            new: args.new,
            legacy2: args.legacy2,
            judge,
            mirror_writes: args.mirror_writes,
            header: (name, value),
            sample_percent: args.sample_percent,
            queue: args.queue,
            max_in_flight: args.max_in_flight,
            timeout: args.timeout,
            drain: args.drain,
            out_dir: args.out.clone(),
            report_every: Some(args.report_every),
            follow,
            gates: {
                let mut gates = args.gates.gates();
                gates.extend(args.extra_gates.iter().cloned());
                gates
            },
            results_max_bytes: args.results_max_mb * 1024 * 1024,
            kill_switch: args.kill_error_rate.map(|max_error_rate| KillSwitch {
                max_error_rate,
                window: args.kill_window,
            }),
        },
        shutdown_signal(),
    )
    .await?;
    println!(
        "served {} exchanges (recorded into {}); mirrored {}, {} dropped (queue full or stopped), \
         {} writes not mirrored, {} with a request body not kept whole (--max-body), {} outside the sample, {} of the warm-up, {} while the kill \
         switch was open (opened {} times, closed {})",
        summary.recorded.exchanges,
        record.display(),
        summary.mirrored,
        summary.dropped,
        summary.writes_skipped,
        summary.uncopyable,
        summary.unsampled,
        summary.warmup,
        summary.killed,
        summary.trips.0,
        summary.trips.1
    );
    println!(
        "{}",
        super::record::recorded_line(&summary.recorded, &record)
    );
    let mut report = summary.report;
    report.run.duration_ms = started.elapsed().as_millis() as u64;
    let code = finish(&Outcome::write(report, &args.out), None)?;
    Ok(match summary.recorded.write_error {
        Some(_) => super::record::write_failure(&summary.recorded),
        None => code,
    })
}
