//! The replay engine: sends every exchange of a capture to the legacy and the
//! new stack at the same scheduled time (its recorded offset divided by the
//! speed), concurrently, and hands both answers to one collector that writes
//! the results file and folds the report.
//!
//! The schedule is open: a request goes out at its time whether or not
//! earlier ones have been answered, so a slow target cannot slow the load.

mod send;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;

use crate::capture::{CaptureReader, Exchange};
use crate::diff::{Differ, RuleSet};
use crate::jsonl::{LineError, LineWriter};
use crate::report::{NoiseThresholds, Report, ReportBuilder, RunInfo};
use crate::results::{self, ExchangeResult, ResultsHeader};
use crate::target::Target;

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

/// Replays the plan's capture until it ends or `shutdown` completes.
pub async fn replay(
    plan: &ReplayPlan,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<ReplayOutcome> {
    anyhow::ensure!(
        plan.speed.is_finite() && plan.speed > 0.0,
        "--speed must be a positive number, got {}",
        plan.speed
    );
    let rules = match &plan.rules {
        Some(path) => RuleSet::load(path)?,
        None => RuleSet::default(),
    };
    let reader = CaptureReader::open(&plan.capture)?;
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

    let started = Instant::now();
    let (result_tx, result_rx) = mpsc::channel(4096);
    let collector = tokio::spawn(collect(result_rx, results, builder));
    let exchanges = read_in_background(reader);
    let sender = Arc::new(send::Sender::new(plan));
    let schedule = schedule(exchanges, sender, result_tx, plan.speed);
    tokio::pin!(shutdown);
    let (unreadable, interrupted) = tokio::select! {
        unreadable = schedule => (unreadable, false),
        () = &mut shutdown => (Vec::new(), true),
    };
    if interrupted {
        tracing::warn!(
            "stopped: waiting up to {:?} for requests in flight",
            plan.drain
        );
    }
    // The collector ends once every send task has dropped its channel handle.
    let (mut builder, results) =
        match tokio::time::timeout(plan.drain + plan.timeout, collector).await {
            Ok(joined) => joined.context("result collector panicked")??,
            Err(_) => anyhow::bail!(
                "requests still in flight after {:?}",
                plan.drain + plan.timeout
            ),
        };
    results.finish()?;
    builder.set_duration_ms(started.elapsed().as_millis() as u64);
    let mut report = builder.finish();
    if let Some(max) = plan.max_mismatch_rate {
        report.apply_gate(max);
    }
    if let (Some(path), Some(noise)) = (&plan.write_rules, &report.learned_noise) {
        crate::report::noise_rules::write(path, noise, &plan.capture)?;
    }
    let report_path = report.write_files(&plan.out_dir)?;
    Ok(ReplayOutcome {
        report,
        report_path,
        unreadable,
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

/// Reads the capture on a blocking thread, a bounded channel ahead of the
/// schedule, so memory does not grow with the capture.
fn read_in_background(reader: CaptureReader) -> mpsc::Receiver<Result<Exchange, LineError>> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::task::spawn_blocking(move || {
        for item in reader {
            let fatal = matches!(item, Err(LineError::Read { .. }));
            if tx.blocking_send(item).is_err() || fatal {
                break;
            }
        }
    });
    rx
}

/// Sends each exchange at its scheduled time; returns the lines that could
/// not be read.
async fn schedule(
    mut exchanges: mpsc::Receiver<Result<Exchange, LineError>>,
    sender: Arc<send::Sender>,
    results: mpsc::Sender<ExchangeResult>,
    speed: f64,
) -> Vec<String> {
    let start = tokio::time::Instant::now();
    let mut first_offset = None;
    let mut unreadable = Vec::new();
    while let Some(item) = exchanges.recv().await {
        let exchange = match item {
            Ok(exchange) => exchange,
            Err(e) => {
                tracing::error!("{e}");
                unreadable.push(e.to_string());
                continue;
            }
        };
        let base = *first_offset.get_or_insert(exchange.offset_us);
        let offset = exchange.offset_us.saturating_sub(base) as f64 / speed;
        let at = start + Duration::from_micros(offset as u64);
        tokio::time::sleep_until(at).await;
        let (sender, results) = (sender.clone(), results.clone());
        tokio::spawn(async move {
            let result = sender
                .send_both(exchange, at.into_std(), start.into_std())
                .await;
            let _ = results.send(result).await;
        });
    }
    unreadable
}

/// The one owner of the results file and the report builder.
async fn collect(
    mut rx: mpsc::Receiver<ExchangeResult>,
    mut results: LineWriter,
    mut builder: ReportBuilder,
) -> anyhow::Result<(ReportBuilder, LineWriter)> {
    while let Some(result) = rx.recv().await {
        results.write(&result)?;
        builder.add(&result);
    }
    Ok((builder, results))
}

/// The run directory's report path.
pub fn report_path(out_dir: &Path) -> PathBuf {
    out_dir.join("report.json")
}
