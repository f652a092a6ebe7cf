//! `tandem replay`: the replay stage feeding the results file and the judge
//! through a tee; then gates, learned rules and report files. [`run`] is
//! that composition, shared by `tandem demo`, the tests and the benches, so
//! that they replay as a user does.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{finish, shutdown_signal, GateArgs, NoiseArgs, Outcome, TrustArgs};
use crate::judge::{noise, Judge, JudgeOptions, NoiseThresholds};
use crate::replay::{replay, ReplayPlan};
use crate::report::RunInfo;
use crate::results::{self, ResultsHeader, ResultsWriter, Tee};
use crate::target::Target;

#[derive(Debug, Args)]
pub(super) struct ReplayArgs {
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
    #[arg(long)]
    speed: Option<f64>,
    /// A constant rate (requests/s) instead of the recorded timing.
    #[arg(long, conflicts_with = "speed")]
    rate: Option<f64>,
    /// Replay the capture this many times end to end, offsets carried forward.
    #[arg(long = "loop")]
    passes: Option<u32>,
    /// Repeat the capture until this much time is scheduled (e.g. 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Send K copies of every request, spread across the gap to the next.
    #[arg(long)]
    amplify: Option<u32>,
    /// Requests in flight at most, per target.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Drop (and count) a request that cannot go out this long after its
    /// time, per stack (eased between stacks that keep pace: up to twice
    /// this when another stack sent it, half when another dropped it).
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
    /// Replay non-idempotent requests (POST, PUT, PATCH, DELETE) even at the
    /// upstream the capture was recorded from (refused by default).
    #[arg(long)]
    allow_recorded_host: bool,
    /// A header set on every request to the legacy stack, "Name: value" (repeatable).
    #[arg(long = "legacy-header", value_parser = parse_header)]
    legacy_headers: Vec<(String, String)>,
    /// A header set on every request to the new stack, "Name: value" (repeatable).
    #[arg(long = "new-header", value_parser = parse_header)]
    new_headers: Vec<(String, String)>,
    /// Longest wait for a connection [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    connect_timeout: Option<Duration>,
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
    /// the connections (default 0: one per core; one per two cores when a
    /// stack is on this machine, at localhost, 127.0.0.0/8 or ::1).
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    trust: TrustArgs,
    /// The legacy stack's own CA certificates (PEM), instead of --ca-cert's.
    #[arg(long = "legacy-ca-cert")]
    legacy_ca_certs: Vec<PathBuf>,
    /// The legacy stack's own client certificate (PEM), instead of --client-cert.
    #[arg(long, requires = "legacy_client_key")]
    legacy_client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "legacy_client_cert")]
    legacy_client_key: Option<PathBuf>,
    /// The new stack's own CA certificates (PEM), instead of --ca-cert's.
    #[arg(long = "new-ca-cert")]
    new_ca_certs: Vec<PathBuf>,
    /// The new stack's own client certificate (PEM), instead of --client-cert.
    #[arg(long, requires = "new_client_key")]
    new_client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "new_client_cert")]
    new_client_key: Option<PathBuf>,
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
    /// Longest wait for one complete answer [default: 10s].
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Answer bytes kept at most (e.g. 16MiB, the default); a longer body
    /// keeps its first bytes, its length and hash, and is compared by
    /// those.
    #[arg(long, value_parser = super::record::parse_size)]
    max_body: Option<u64>,
    #[command(flatten)]
    gates: GateArgs,
    /// Also write JUnit XML here: a testcase per gate and per mismatch group.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Length of the report's time-series intervals (counts and latency
    /// histograms per stack) [default: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    /// Serve live Prometheus metrics at http://HOST:PORT/metrics during the
    /// run (docs/metrics.md).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Keep serving the metrics this long after the run, for a last scrape
    /// [default: 0s].
    #[arg(long, value_parser = humantime::parse_duration, requires = "metrics_addr")]
    metrics_linger: Option<Duration>,
    /// Send each request to the legacy stack a second time (or to --legacy-2)
    /// and leave out differences two legacy answers also show.
    #[arg(long)]
    learn_noise: bool,
    /// A second legacy instance for noise learning (default: --legacy again).
    #[arg(long = "legacy-2", requires = "learn_noise")]
    legacy2: Option<Target>,
    #[command(flatten)]
    noise: NoiseArgs,
    /// Write what was learned as a rules file to review: the noise (with
    /// --learn-noise) and the correlation links as [[correlate]] rules.
    #[arg(long)]
    write_rules: Option<PathBuf>,
    /// Send every request as recorded: follow no ids or tokens.
    #[arg(long)]
    no_correlate: bool,
    /// Collect the legacy stack's webhook calls: listen here (point its
    /// webhook base URL at it), answer each 200 and compare them with the
    /// new stack's (docs/effects.md).
    #[arg(long, value_name = "ADDR", requires = "new_webhook_sink")]
    legacy_webhook_sink: Option<std::net::SocketAddr>,
    /// Collect the new stack's webhook calls: listen here.
    #[arg(long, value_name = "ADDR", requires = "legacy_webhook_sink")]
    new_webhook_sink: Option<std::net::SocketAddr>,
    /// Collect the legacy stack's mail: an SMTP sink listens here (point
    /// its mail relay at it) and accepts every message.
    #[arg(long, value_name = "ADDR", requires = "new_smtp_sink")]
    legacy_smtp_sink: Option<std::net::SocketAddr>,
    /// Collect the new stack's mail: an SMTP sink listens here.
    #[arg(long, value_name = "ADDR", requires = "legacy_smtp_sink")]
    new_smtp_sink: Option<std::net::SocketAddr>,
    /// Collect the legacy stack's row changes: its PostgreSQL database
    /// (postgres:// URL; wal_level = logical), read through a logical
    /// decoding slot created before the replay and dropped after.
    #[arg(long, value_name = "URL", requires = "new_pg")]
    legacy_pg: Option<String>,
    /// Collect the new stack's row changes: its PostgreSQL database.
    #[arg(long, value_name = "URL", requires = "legacy_pg")]
    new_pg: Option<String>,
    /// Renames from the new schema's tables and columns to the legacy
    /// one's (TOML: [tables] and [columns.TABLE]; docs/effects.md).
    #[arg(long, value_name = "FILE", requires = "new_pg")]
    pg_map: Option<PathBuf>,
    /// How long no effect must arrive after the last answer before effects
    /// are judged; an effect later than this after its exchange's answer is
    /// counted late [default: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    effects_quiet: Option<Duration>,
}

/// Everything `tandem replay` was asked to do: the replay stage's plan,
/// and what becomes of its results.
#[derive(Debug, Clone)]
pub struct ReplayJob {
    /// What to replay where, and how.
    pub plan: ReplayPlan,
    /// The rules file, if any.
    pub rules: Option<PathBuf>,
    /// When a difference is real rather than noise (with `plan.legacy2`).
    pub noise: NoiseThresholds,
    /// The gates the run is held to (exit 1 when one fails).
    pub gates: Vec<crate::gate::Gate>,
    /// Where to write JUnit XML, if anywhere.
    pub junit: Option<PathBuf>,
    /// Length of the report's time-series intervals.
    pub series_interval: Duration,
    /// Where to serve live metrics, and how long after the run.
    pub metrics: Option<(std::net::SocketAddr, Duration)>,
    /// The run directory: results and report files go here.
    pub out_dir: PathBuf,
    /// Write the learned noise and correlation links as a rules file here.
    pub write_rules: Option<PathBuf>,
    /// Learn from the capture which answers feed which requests, and follow
    /// each stack's own ids and tokens (off: `--no-correlate`).
    pub correlate: bool,
    /// Collect each stack's side effects and compare them (`--legacy-webhook-sink`
    /// and the like): the sources are collecting when the job starts.
    pub effects: Option<crate::effects::Collection>,
}

impl ReplayJob {
    /// Refuses a job whose outputs would overwrite its inputs (a capture
    /// named `results.jsonl` or `effects.jsonl` in the run directory, the
    /// rules file as `--write-rules`).
    fn refuse_overwriting(&self) -> anyhow::Result<()> {
        let mut inputs = vec![self.plan.capture.as_path()];
        inputs.extend(self.rules.as_deref());
        let effects = self
            .effects
            .as_ref()
            .map(|_| &crate::effects::file::FILE_NAME);
        let outputs: Vec<PathBuf> = crate::report::FILE_NAMES
            .iter()
            .chain([&crate::results::FILE_NAME])
            .chain(effects)
            .map(|name| self.out_dir.join(name))
            .chain(self.junit.clone())
            .chain(self.write_rules.clone())
            .collect();
        let outputs: Vec<&Path> = outputs.iter().map(PathBuf::as_path).collect();
        crate::output::refuse_overwriting(&inputs, &outputs)
    }

    /// A job with no rules, no gate and default noise thresholds.
    pub fn new(plan: ReplayPlan, out_dir: PathBuf) -> ReplayJob {
        ReplayJob {
            plan,
            rules: None,
            noise: NoiseThresholds::default(),
            gates: Vec::new(),
            junit: None,
            series_interval: Duration::from_secs(1),
            metrics: None,
            out_dir,
            write_rules: None,
            correlate: true,
            effects: None,
        }
    }

    /// The same job with its plan changed by `f`, e.g.
    /// `job.map_plan(|p| ReplayPlan { speed: 2.0, ..p })`.
    pub fn map_plan(self, f: impl FnOnce(ReplayPlan) -> ReplayPlan) -> ReplayJob {
        ReplayJob {
            plan: f(self.plan),
            ..self
        }
    }
}

impl ReplayArgs {
    /// The run directory asked for.
    pub(super) fn out(&self) -> &std::path::Path {
        &self.out
    }

    /// Whether a rules file was given.
    pub(super) fn has_rules(&self) -> bool {
        self.rules.is_some()
    }

    /// The job these flags ask for: every flag not given keeps the
    /// default of [`ReplayPlan::new`]. Certificate files are read here.
    pub(super) fn job(self) -> anyhow::Result<ReplayJob> {
        let mut plan = ReplayPlan::new(self.capture, self.legacy, self.new);
        macro_rules! given {
            ($($field:ident),*) => {
                $( if let Some(value) = self.$field { plan.$field = value; } )*
            };
        }
        given!(speed, passes, amplify, threads, timeout);
        plan.rate = self.rate;
        if let Some(max) = self.max_body {
            plan.max_body = max as usize;
        }
        plan.duration = self.duration;
        plan.max_in_flight = self.max_in_flight;
        plan.max_lag = self.max_lag;
        plan.ordered_sessions = !self.unordered_sessions;
        plan.shard = self.shard;
        plan.start_at = self.start_at;
        plan.keep_host = self.keep_host;
        plan.allow_recorded_host = self.allow_recorded_host;
        plan.legacy_headers = self.legacy_headers;
        plan.new_headers = self.new_headers;
        if let Some(timeout) = self.connect_timeout {
            plan.client.connect_timeout = timeout;
        }
        plan.client.insecure_tls = self.trust.insecure;
        plan.client.trust = self.trust.trust()?;
        // A stack's own certificates, given any of them, replace the
        // common ones for that stack (staging stacks behind different
        // meshes): what is not given falls back to the common flags.
        let own = |cas: Vec<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>| {
            if cas.is_empty() && cert.is_none() {
                return Ok(None);
            }
            let files = crate::http::TrustFiles {
                ca_certs: if cas.is_empty() {
                    self.trust.ca_certs.clone()
                } else {
                    cas
                },
                client_cert: cert.or_else(|| self.trust.client_cert.clone()),
                client_key: key.or_else(|| self.trust.client_key.clone()),
            };
            crate::http::Trust::load(&files).map(Some)
        };
        plan.legacy_trust = own(
            self.legacy_ca_certs,
            self.legacy_client_cert,
            self.legacy_client_key,
        )?;
        plan.new_trust = own(self.new_ca_certs, self.new_client_cert, self.new_client_key)?;
        plan.client.http2_prior_knowledge = self.http2;
        plan.warm_connections = self.warm_connections;
        plan.max_connections = self.max_connections;
        plan.progress = super::show_progress(self.no_progress);
        if self.learn_noise {
            if self.legacy2.is_none() {
                // Stateful traffic: a payment sent twice is paid once, and
                // the second answer (409) is legacy's divergence, not noise.
                tracing::warn!(
                    "--learn-noise without --legacy-2 sends every request to legacy twice: \
                     writes (POST, PUT, PATCH, DELETE) are applied twice; give a second legacy \
                     instance with its own database"
                );
            }
            plan.legacy2 = Some(self.legacy2.unwrap_or_else(|| plan.legacy.clone()));
        }
        Ok(ReplayJob {
            plan,
            rules: self.rules,
            noise: self.noise.thresholds(),
            gates: self.gates.gates(),
            junit: self.junit,
            series_interval: self.interval.unwrap_or(Duration::from_secs(1)),
            metrics: self
                .metrics_addr
                .map(|addr| (addr, self.metrics_linger.unwrap_or_default())),
            out_dir: self.out,
            write_rules: self.write_rules,
            correlate: !self.no_correlate,
            effects: {
                fn pair<T>(legacy: Option<T>, new: Option<T>) -> Vec<(usize, T)> {
                    match (legacy, new) {
                        (Some(l), Some(n)) => vec![(0, l), (1, n)],
                        _ => Vec::new(),
                    }
                }
                let webhook_sinks = pair(self.legacy_webhook_sink, self.new_webhook_sink);
                let smtp_sinks = pair(self.legacy_smtp_sink, self.new_smtp_sink);
                let databases = pair(self.legacy_pg, self.new_pg);
                let any = !(webhook_sinks.is_empty() && smtp_sinks.is_empty());
                (any || !databases.is_empty()).then(|| crate::effects::Collection {
                    sources: Vec::new(),
                    webhook_sinks,
                    smtp_sinks,
                    databases,
                    schema_map: self.pg_map,
                    quiet: self.effects_quiet.unwrap_or(crate::effects::QUIET),
                })
            },
        })
    }
}

/// The job `tandem replay ARGS…` would run, from its arguments (after
/// `replay`), without running it.
pub fn job_from_args<I, T>(args: I) -> anyhow::Result<ReplayJob>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    parse(args)?.job()
}

pub(super) fn parse<I, T>(args: I) -> Result<ReplayArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    super::parse_alone("tandem replay", args)
}

/// Every flag of `tandem replay`, by long name, with how it takes a value:
/// the keys a scenario file may hold.
pub fn flags() -> crate::scenario::Flags {
    super::flags_alone::<ReplayArgs>()
}

/// `tandem replay`.
pub(super) async fn command(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let job = args.job()?;
    let outcome = run(&job, shutdown_signal()).await?;
    finish(&outcome, job.junit.as_deref())
}

/// Replays `job` until its schedule ends or `shutdown` completes: results
/// to the results file and the judge, then the gate, the learned rules and
/// the report files.
pub async fn run(job: &ReplayJob, shutdown: impl Future<Output = ()>) -> anyhow::Result<Outcome> {
    // Everything is checked before a file is written or a request sent.
    job.plan.check()?;
    job.refuse_overwriting()?;
    for gate in &job.gates {
        if let Some(over) = gate.over {
            anyhow::ensure!(
                over.as_micros() % job.series_interval.as_micros().max(1) == 0,
                "gate {:?}: its window ({over:?}) must be a whole number of --interval ({:?})",
                gate.name,
                job.series_interval
            );
        }
    }
    let effects = match &job.effects {
        Some(collection) => Some(collection.started(job.plan.max_body).await?),
        None => None,
    };
    // Sources read by polling are read while the replay runs too.
    let polling = effects
        .as_ref()
        .map(|e| AbortOnDrop(e.poll_while_running()));
    let mut plan = job.plan.clone();
    plan.trace_effects = effects.is_some();
    plan.correlation = correlation(job.correlate, &plan.capture, job.rules.as_deref())?;
    let exporter = match job.metrics {
        Some((addr, linger)) => Some((serve_metrics(addr, &plan).await?, linger)),
        None => None,
    };
    plan.metrics = exporter.as_ref().map(|(e, _)| e.metrics.clone());
    let plan = &plan;
    let started_at_unix_us = crate::capture::CaptureHeader::new("").started_at_unix_us;
    // Windowed gates with `abort` stop the run from the judge, as a signal would.
    let aborting: Vec<crate::gate::Gate> = job.gates.iter().filter(|g| g.abort).cloned().collect();
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let judge = Judge::new(JudgeOptions {
        rules: job.rules.clone(),
        legacy2: plan.legacy2.as_ref().map(Target::to_string),
        noise: job.noise,
        run: RunInfo {
            capture: plan.capture.display().to_string(),
            legacy: plan.legacy.to_string(),
            new: plan.new.to_string(),
            speed: plan.speed,
            rules: job.rules.as_ref().map(|p| p.display().to_string()),
            started_at_unix_us,
            duration_ms: 0,
            capture_sha256: None,
            shard: plan.shard,
        },
        correlation: plan.correlation.clone(),
        series_interval: job.series_interval,
        metrics: plan.metrics.clone(),
        learn_routes: Some(plan.capture.clone()),
        abort: (!aborting.is_empty()).then(|| (aborting, stop.clone())),
    })?;
    let writer = ResultsWriter::create(
        &job.out_dir.join(results::FILE_NAME),
        &ResultsHeader {
            format: results::FORMAT.to_string(),
            version: results::VERSION,
            capture: plan.capture.display().to_string(),
            legacy: plan.legacy.to_string(),
            new: plan.new.to_string(),
            speed: plan.speed,
            legacy2: plan.legacy2.as_ref().map(Target::to_string),
            started_at_unix_us,
            shard: plan.shard,
        },
    )?;
    // The capture's identity for merge, read beside the replay.
    let hashing = tokio::task::spawn_blocking({
        let capture = plan.capture.clone();
        move || crate::capture::sha256_of(&capture).ok()
    });
    let shutdown = async {
        tokio::select! {
            () = shutdown => {}
            () = stop.notified() => {}
        }
    };
    let replayed = replay(plan, Tee(writer, judge), shutdown).await?;
    let Tee(_, mut judge) = replayed.sink;
    if let Some((exporter, linger)) = exporter {
        // A last scrape sees the final counts.
        tokio::time::sleep(linger).await;
        exporter.stop();
    }
    judge.set_duration_ms(replayed.elapsed.as_millis() as u64);
    let mut report = judge.finish();
    report.run.capture_sha256 = hashing.await.ok().flatten();
    if let Some(correlation) = &plan.correlation {
        report
            .unused_rules
            .extend(correlation.unused_rules.iter().cloned());
    }
    // Stopped by a gate, the run failed that gate; it was not interrupted.
    report.interrupted = replayed.interrupted && report.aborted.is_none();
    drop(polling);
    if let Some(collection) = &effects {
        let (judged, unused) = judge_effects(collection, job, replayed.started_at_unix_us).await?;
        report.effects = Some(judged);
        report.unused_rules.retain(|rule| unused.contains(rule));
    }
    report.generator = crate::report::Generator::of(&replayed.engines);
    report.apply_gates(&job.gates);
    if let Some(path) = &job.write_rules {
        let links = plan
            .correlation
            .as_ref()
            .map(|c| c.as_rules())
            .unwrap_or_default();
        noise::write_rules(path, report.learned_noise.as_ref(), &links, &plan.capture)?;
    }
    report.unreadable = crate::report::Unreadable::of(&replayed.unreadable);
    Ok(Outcome::write(report, &job.out_dir))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The effects collected during the run, once late ones are in, kept in
/// the run directory, tied to the exchanges of the results file and
/// compared under the run's rules.
async fn judge_effects(
    collection: &crate::effects::Collection,
    job: &ReplayJob,
    started_at_unix_us: u64,
) -> anyhow::Result<(crate::effects::EffectsReport, Vec<String>)> {
    let effects = collection.gather().await;
    let header = crate::effects::file::EffectsHeader::new(
        collection.sources.iter().map(|s| s.describe()).collect(),
        collection.quiet.as_millis() as u64,
        started_at_unix_us,
    );
    crate::effects::file::write(&job.out_dir, &header, &effects)?;
    let rules = crate::diff::rules::RuleSet::load_or_none(job.rules.as_deref())?;
    let judged = crate::effects::file::judge_run(&job.out_dir, rules)?;
    judged.ok_or_else(|| anyhow::anyhow!("the effects file just written is gone"))
}

/// Live metrics served while a run goes on.
pub(super) struct Exporter {
    pub(super) metrics: std::sync::Arc<crate::metrics::Metrics>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Exporter {
    /// Stops serving.
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
    }
}

/// Binds `addr` (an error names it) and serves `plan`'s metrics there.
pub(super) async fn serve_metrics(
    addr: std::net::SocketAddr,
    plan: &ReplayPlan,
) -> anyhow::Result<Exporter> {
    let listener = super::metrics_listener(addr).await?;
    let metrics = crate::metrics::Metrics::new(crate::metrics::RunDescription {
        capture: plan.capture.display().to_string(),
        legacy: plan.legacy.to_string(),
        new: plan.new.to_string(),
    });
    if let Some(rate) = plan.rate {
        metrics.set_offered_rate(rate);
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(metrics.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    Ok(Exporter { metrics, stop })
}

/// The links of `capture` (learned, and `[[correlate]]` rules of the rules
/// file), when asked for; the count is logged.
pub(super) fn correlation(
    asked: bool,
    capture: &std::path::Path,
    rules: Option<&std::path::Path>,
) -> anyhow::Result<Option<std::sync::Arc<crate::correlate::Correlation>>> {
    if !asked {
        return Ok(None);
    }
    let rules = match rules {
        Some(path) => crate::correlate::rules_in(path)?,
        None => crate::correlate::Written::default(),
    };
    let correlation = crate::correlate::learn(capture, &rules)?;
    tracing::info!(
        "correlation: {} links between answers and later requests ({} written as rules)",
        correlation.links.len(),
        correlation.links.iter().filter(|l| l.written).count()
    );
    Ok(Some(std::sync::Arc::new(correlation)))
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
