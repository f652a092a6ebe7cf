//! The replay engine: sends every exchange of a capture to the legacy and the
//! new stack at the same scheduled time, concurrently, and hands both answers
//! to one collector that writes the results file and folds the report.
//!
//! The schedule is open ([`schedule`]): a request goes out at its time
//! whether or not earlier ones have been answered, so a slow target cannot
//! slow the load, and latency is measured from the scheduled time as well as
//! from the actual send. Requests of one session keep their order
//! (`dispatch.rs`). The work is split among engines, one per core
//! (`engine.rs`), each with its share of the sessions.

mod dispatch;
mod engine;
pub mod progress;
pub mod schedule;
mod send;
mod timer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;

use crate::capture::CaptureReader;
use crate::diff::{Differ, RuleSet};
use crate::jsonl::LineWriter;
use crate::report::{NoiseThresholds, Report, ReportBuilder, RunInfo};
use crate::results::{self, ExchangeResult, ResultsHeader};
use crate::target::Target;
pub use schedule::{Pacing, Shape};

/// A checked replay: everything `tandem replay` was asked to do.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    /// The capture to replay.
    pub capture: PathBuf,
    /// The legacy stack.
    pub legacy: Target,
    /// The new stack.
    pub new: Target,
    /// Multiple of the recorded rate; offsets are divided by it.
    pub speed: f64,
    /// A constant rate in requests per second instead of the recorded timing.
    pub rate: Option<f64>,
    /// Passes over the capture (`--loop`), at least 1.
    pub passes: u32,
    /// Repeat the capture until this much time is scheduled (`--duration`).
    pub duration: Option<Duration>,
    /// Copies of every request, spread across the gap to the next one.
    pub amplify: u32,
    /// Requests in flight at most, per target.
    pub max_in_flight: Option<usize>,
    /// A request that cannot go out this long after its time is dropped.
    pub max_lag: Option<Duration>,
    /// Keep each session's requests in order, one at a time.
    pub ordered_sessions: bool,
    /// Replay only this shard's sessions: `(index, count)`; `--rate` is
    /// divided by the count.
    pub shard: Option<(u32, u32)>,
    /// Wall-clock time to start at, so that shards begin together.
    pub start_at: Option<std::time::SystemTime>,
    /// Send the recorded Host header instead of the target's.
    pub keep_host: bool,
    /// Headers set (replacing recorded ones) on requests to the legacy stack.
    pub legacy_headers: Vec<(String, String)>,
    /// Headers set (replacing recorded ones) on requests to the new stack.
    pub new_headers: Vec<(String, String)>,
    /// How connections are made: connect timeout, TLS, HTTP/2.
    pub client: crate::http::ClientOptions,
    /// Connections opened to each target before the start, all engines
    /// together (`tandem replay`: 16 per engine).
    pub warm_connections: usize,
    /// Replay engines (threads, each with its share of the sessions and
    /// connections); 0: one per core.
    pub threads: usize,
    /// Show the live progress line on stderr (when it is a terminal).
    pub progress: bool,
    /// The run directory: results and report files go here.
    pub out_dir: PathBuf,
    /// The rules file, if any.
    pub rules: Option<PathBuf>,
    /// Longest wait for one complete answer, connecting included.
    pub timeout: Duration,
    /// Longest wait for in-flight requests once the schedule is stopped.
    pub drain: Duration,
    /// Fail the run when the mismatch rate is above this.
    pub max_mismatch_rate: Option<f64>,
    /// Learn noise from a second legacy answer to each request.
    pub noise: Option<NoisePlan>,
    /// Write the learned noise as a rules file here.
    pub write_rules: Option<PathBuf>,
}

impl ReplayPlan {
    /// A plan with the defaults of `tandem replay`: recorded timing at 1x,
    /// one pass, sessions in order, no limits, no rules.
    pub fn new(capture: PathBuf, legacy: Target, new: Target, out_dir: PathBuf) -> ReplayPlan {
        ReplayPlan {
            capture,
            legacy,
            new,
            speed: 1.0,
            rate: None,
            passes: 1,
            duration: None,
            amplify: 1,
            max_in_flight: None,
            max_lag: None,
            ordered_sessions: true,
            shard: None,
            start_at: None,
            keep_host: false,
            legacy_headers: Vec::new(),
            new_headers: Vec::new(),
            client: crate::http::ClientOptions::default(),
            warm_connections: 32,
            threads: 0,
            progress: false,
            out_dir,
            rules: None,
            timeout: Duration::from_secs(10),
            drain: Duration::from_secs(10),
            max_mismatch_rate: None,
            noise: None,
            write_rules: None,
        }
    }

    /// Engines to run: `threads`, or one per core.
    pub fn engine_count(&self) -> u32 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = if self.threads == 0 {
            cores
        } else {
            self.threads
        };
        threads.clamp(1, 256) as u32
    }

    fn shape(&self) -> anyhow::Result<Shape> {
        if let Some((index, count)) = self.shard {
            anyhow::ensure!(
                count >= 1 && index < count,
                "--shard {index}/{count}: the index must be below the count"
            );
        }
        let pacing = match self.rate {
            Some(r) => {
                anyhow::ensure!(
                    r.is_finite() && r > 0.0,
                    "--rate must be a positive number, got {r}"
                );
                let shards = self.shard.map_or(1, |(_, count)| count);
                Pacing::Rate {
                    per_second: r / shards as f64,
                    phase: 0.0,
                }
            }
            None => {
                anyhow::ensure!(
                    self.speed.is_finite() && self.speed > 0.0,
                    "--speed must be a positive number, got {}",
                    self.speed
                );
                Pacing::Recorded { speed: self.speed }
            }
        };
        anyhow::ensure!(self.passes >= 1, "--loop must be at least 1");
        anyhow::ensure!(self.amplify >= 1, "--amplify must be at least 1");
        Ok(Shape {
            pacing,
            passes: if self.duration.is_some() && self.passes == 1 {
                None
            } else {
                Some(self.passes)
            },
            duration: self.duration,
            amplify: self.amplify,
            shard: self.shard,
        })
    }
}

/// Noise learning: each request also goes to `legacy2` (the legacy stack
/// again, or a second instance of it).
#[derive(Debug, Clone)]
pub struct NoisePlan {
    /// Where the second legacy answer comes from.
    pub legacy2: Target,
    /// When a difference counts as real rather than noise.
    pub thresholds: NoiseThresholds,
}

/// What a replay produced.
#[derive(Debug)]
pub struct ReplayOutcome {
    /// The report, also written to `report_path`.
    pub report: Report,
    /// Path of `report.json`.
    pub report_path: PathBuf,
    /// Lines of the capture that could not be read, each naming file and line.
    pub unreadable: Vec<String>,
    /// True when the schedule was stopped early by the shutdown signal.
    pub interrupted: bool,
}

impl ReplayOutcome {
    /// True when the gate, if any, passed.
    pub fn passed(&self) -> bool {
        self.report.gate.as_ref().is_none_or(|g| g.passed)
    }
}

/// Replays the plan's capture until the schedule ends or `shutdown` completes.
pub async fn replay(
    plan: &ReplayPlan,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<ReplayOutcome> {
    let shape = plan.shape()?;
    let rules = match &plan.rules {
        Some(path) => RuleSet::load(path)?,
        None => RuleSet::default(),
    };
    // The capture's header is checked before anything starts.
    CaptureReader::open(&plan.capture)?;
    let started_at_unix_us = crate::capture::CaptureHeader::new("").started_at_unix_us;
    let results = open_results(plan, started_at_unix_us)?;
    let run = RunInfo {
        capture: plan.capture.display().to_string(),
        legacy: plan.legacy.to_string(),
        new: plan.new.to_string(),
        speed: plan.speed,
        rules: plan.rules.as_ref().map(|p| p.display().to_string()),
        started_at_unix_us,
        duration_ms: 0,
    };
    let mut builder = ReportBuilder::new(Differ::new(rules), run);
    if let Some(noise) = &plan.noise {
        builder = builder.learn_noise(noise.legacy2.to_string(), noise.thresholds);
    }

    // Room for about a second of results at 16,000 exchanges/s, for when
    // the collector is behind.
    let (result_tx, result_rx) = mpsc::channel(16_384);
    // Counted only when shown: the collector's report already keeps the
    // histograms; the line's own copies are for display alone.
    let progress = plan
        .progress
        .then(|| Arc::new(progress::Progress::default()));
    let _shown = progress.clone().map(progress::show);
    // Diffing and writing results is CPU work that can wait: a thread of its
    // own, at a lower priority, leaves the CPU to the sends when they need
    // it (the channel holds what piles up meanwhile).
    let collector = {
        let progress = progress.clone();
        let (done, collected) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("tandem-collect".into())
            .spawn(move || {
                lower_priority();
                let _ = done.send(collect(result_rx, results, builder, progress));
            })
            .context("cannot start the result collector")?;
        collected
    };
    let stop = Arc::new(AtomicBool::new(false));
    let count = plan.engine_count();
    let in_flight = send::InFlight::new(plan);
    let mut engines = Vec::new();
    for index in 0..count {
        engines.push(engine::spawn(engine::Setup {
            plan: plan.clone(),
            shape,
            index,
            count,
            results: result_tx.clone(),
            progress: progress.clone(),
            stop: stop.clone(),
            in_flight: in_flight.clone(),
        })?);
    }
    // Only the engines send results: the collector ends when they are done.
    drop(result_tx);
    // Every engine has its connections open; scheduling starts a moment from
    // now, so the first jobs are not late, or at the agreed time when shards
    // start together.
    for engine in &mut engines {
        let _ = (&mut engine.ready).await;
    }
    let start = Instant::now() + start_delay(plan.start_at);
    let mut finished = Vec::new();
    for engine in engines {
        let _ = engine.start.send(start);
        finished.push(engine.done);
    }
    let all_done = async {
        let mut all = schedule::Scheduled::default();
        for done in finished {
            let scheduled = done.await.context("a replay engine panicked")??;
            all.jobs += scheduled.jobs;
            all.unreadable.extend(scheduled.unreadable);
        }
        all.unreadable.sort_by_key(|e| e.line());
        anyhow::Ok(all)
    };
    tokio::pin!(shutdown);
    tokio::pin!(all_done);
    let (scheduled, interrupted) = tokio::select! {
        done = &mut all_done => (done, false),
        () = &mut shutdown => {
            stop.store(true, Ordering::Relaxed);
            tracing::warn!("stopped: waiting up to {:?} for requests in flight", plan.drain);
            (all_done.await, true)
        }
    };
    let scheduled = scheduled?;
    let collected = collector.await;
    let (mut builder, results) = collected.context("result collector panicked")??;
    results.finish()?;
    builder.set_duration_ms(start.elapsed().as_millis() as u64);
    let mut report = builder.finish();
    if let Some(max) = plan.max_mismatch_rate {
        report.apply_gate(max);
    }
    if let (Some(path), Some(noise)) = (&plan.write_rules, &report.learned_noise) {
        crate::report::noise_rules::write(path, noise, &plan.capture)?;
    }
    let report_path = report.write_files(&plan.out_dir)?;
    tracing::debug!("{} jobs scheduled", scheduled.jobs);
    Ok(ReplayOutcome {
        report,
        report_path,
        unreadable: scheduled.unreadable.iter().map(|e| e.to_string()).collect(),
        interrupted,
    })
}

fn open_results(plan: &ReplayPlan, started_at_unix_us: u64) -> anyhow::Result<LineWriter> {
    let mut results = LineWriter::create(plan.out_dir.join(results::FILE_NAME))?;
    results.write(&ResultsHeader {
        format: results::FORMAT.to_string(),
        version: results::VERSION,
        capture: plan.capture.display().to_string(),
        legacy: plan.legacy.to_string(),
        new: plan.new.to_string(),
        speed: plan.speed,
        legacy2: plan.noise.as_ref().map(|n| n.legacy2.to_string()),
        started_at_unix_us,
    })?;
    Ok(results)
}

/// Lowers the calling thread's scheduling priority (nice 10); harmless
/// where unsupported.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with PRIO_PROCESS and who = 0 changes only the
    // calling thread's nice value on Linux; raising it needs no privilege.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Results the collector takes at once, and how long it lets them gather.
const COLLECT_BATCH: usize = 1024;
const COLLECT_PAUSE: Duration = Duration::from_millis(2);

fn collect(
    mut rx: mpsc::Receiver<ExchangeResult>,
    mut results: LineWriter,
    mut builder: ReportBuilder,
    progress: Option<Arc<progress::Progress>>,
) -> anyhow::Result<(ReportBuilder, LineWriter)> {
    let mut batch = Vec::with_capacity(COLLECT_BATCH);
    loop {
        // Wake once per batch, not once per result: each wake-up costs the
        // senders a futex call and this thread a context switch.
        std::thread::sleep(COLLECT_PAUSE);
        if rx.blocking_recv_many(&mut batch, COLLECT_BATCH) == 0 {
            return Ok((builder, results));
        }
        for result in batch.drain(..) {
            results.write(&result)?;
            builder.add(&result);
            if let Some(progress) = &progress {
                progress.collected(&result);
            }
        }
    }
}

/// How long from now to start: until `start_at` if it is ahead, else 20 ms.
fn start_delay(start_at: Option<std::time::SystemTime>) -> Duration {
    let soon = Duration::from_millis(20);
    match start_at.map(|t| t.duration_since(std::time::SystemTime::now())) {
        Some(Ok(ahead)) => ahead.max(soon),
        Some(Err(late)) => {
            tracing::warn!("--start-at is {:?} past; starting now", late.duration());
            soon
        }
        None => soon,
    }
}
