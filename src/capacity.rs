//! Capacity search (`tandem capacity`): the most each stack sustains within
//! an SLO, with answers still correct. The recorded mix is replayed at
//! constant open-model rates (`--rate` semantics), one stack at a time on
//! the same schedule, each step warmed up and then held; a step passes when
//! corrected p99 (from the scheduled time) meets the SLO, errors and
//! answers that diverge from the recorded ones stay under their limits, and
//! the run was valid (tandem sent at the asked rate, latency and send lag
//! not growing through the hold). The rate doubles until a step fails, is
//! bisected to the precision asked, and the winner is confirmed over a
//! longer hold. A step whose backlog grows is stopped at once by windowed
//! abort gates rather than run out.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::gate::Gate;
use crate::judge::{Judge, JudgeOptions};
use crate::latency::{human, Latency};
use crate::replay::{replay, ReplayPlan};
use crate::report::series::StackTally;
use crate::report::{Generator, Report, RunInfo};
use crate::results::{ExchangeResult, ResultSink};

/// `capacity.json`'s format name.
pub const FORMAT: &str = "tandem-capacity";
/// `capacity.json`'s version.
pub const VERSION: u32 = 1;

/// What to search, and the limits a step is held to.
#[derive(Debug, Clone)]
pub struct CapacityPlan {
    /// Capture, targets, connections and the links to follow: the rate,
    /// duration and stack of each step are set per step.
    pub replay: ReplayPlan,
    /// Rules file for judging answers.
    pub rules: Option<PathBuf>,
    /// Latency objective, e.g. `p99<250ms`.
    pub slo: Slo,
    /// Target errors (and requests not sent) per request sent, at most.
    pub max_error_rate: f64,
    /// Answers diverging from the recorded ones (status, body structure),
    /// or from legacy's when both stacks are measured together, at most.
    pub max_mismatch_rate: f64,
    /// Each step's warm-up, not judged.
    pub warmup: Duration,
    /// Each step's judged part.
    pub hold: Duration,
    /// The winner's confirmation hold.
    pub confirm_hold: Duration,
    /// First rate tried, requests/s.
    pub start_rate: f64,
    /// No rate above this is tried.
    pub max_rate: f64,
    /// Bisect until the gap between passing and failing rates is under this share.
    pub precision: f64,
    /// The projected (three-year) rate, requests/s, for headroom.
    pub projected: Option<f64>,
    /// What to measure, in order.
    pub targets: Vec<Measured>,
}

/// What one search measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Measured {
    /// The legacy stack alone.
    Legacy,
    /// The new stack alone.
    New,
    /// Both at once, as a replay sends: a step passes when both pass.
    Both,
}

/// A latency objective: a percentile of corrected latency under a limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// The quantile, e.g. 0.99.
    pub quantile: f64,
    /// The limit, µs.
    pub limit_us: u64,
}

impl std::str::FromStr for Slo {
    type Err = String;

    /// `p99<250ms`, `p99.9 < 1s`, `p50<20ms`.
    fn from_str(text: &str) -> Result<Slo, String> {
        let (stat, limit) = text
            .split_once('<')
            .ok_or("expected pNN<LIMIT, e.g. p99<250ms")?;
        let stat = stat.trim();
        let quantile: f64 = stat
            .strip_prefix('p')
            .and_then(|q| q.parse().ok())
            .filter(|q| (0.0..100.0).contains(q))
            .ok_or(format!("{stat:?} is not a percentile (p50, p99, p99.9)"))?;
        let limit = humantime::parse_duration(limit.trim().trim_start_matches('='))
            .map_err(|e| format!("{:?}: {e}", limit.trim()))?;
        Ok(Slo {
            quantile: quantile / 100.0,
            limit_us: limit.as_micros() as u64,
        })
    }
}

impl std::fmt::Display for Slo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = format!("{:.3}", self.quantile * 100.0);
        let p = p.trim_end_matches('0').trim_end_matches('.');
        write!(f, "p{p}<{}", human(self.limit_us))
    }
}

/// The outcome of a search: `capacity.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityReport {
    /// `"tandem-capacity"`.
    pub format: String,
    /// 1.
    pub version: u32,
    /// The capture replayed.
    pub capture: String,
    /// The objective, as given.
    pub slo: String,
    /// The limits a step was held to.
    pub max_error_rate: f64,
    /// See [`CapacityPlan::max_mismatch_rate`].
    pub max_mismatch_rate: f64,
    /// The projected rate, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_rps: Option<f64>,
    /// One search per target.
    pub searches: Vec<Search>,
    /// New's sustainable rate over legacy's, when both were searched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_over_legacy: Option<f64>,
    /// True when a signal stopped the search.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// One target's search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Search {
    /// What was measured.
    pub target: Measured,
    /// The highest rate that passed, confirmed, requests/s; `None` when
    /// even the lowest rate tried failed.
    pub sustainable_rps: Option<f64>,
    /// Sustainable rate over the projected one, when that was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<f64>,
    /// Every step, in the order run.
    pub steps: Vec<Step>,
    /// Some step failed while a replay engine of tandem's was saturated or
    /// kept waiting for a core: the sustainable rate found may be tandem's
    /// limit, and the stack's a lower bound of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub limited_by_tandem: bool,
    /// Some step failed while the host of the machine that replayed took
    /// [`Generator::STOLEN`] of its CPU time or more: the pauses may have
    /// failed it, and the stack's sustainable rate is a lower bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub limited_by_host: bool,
}

impl Search {
    /// For people: what the sustainable rate means when tandem was the
    /// limit.
    pub fn caveat(&self) -> &'static str {
        if self.limited_by_tandem {
            " (at least: tandem's own engines were saturated or kept from a core where \
             steps failed; give it cores of its own, more engines or shards)"
        } else if self.limited_by_host {
            " (at least: the host of the machine that replayed paused it where steps failed; \
             replay from machines whose steal stays low)"
        } else {
            ""
        }
    }
}

/// One rate, held.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Asked, requests/s (per stack).
    pub rate: f64,
    /// The winner's longer confirmation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirmation: bool,
    /// Whether it passed.
    pub passed: bool,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    /// Sent per second during the hold, per stack measured.
    pub achieved_rps: f64,
    /// The SLO's percentile of corrected latency during the hold, µs
    /// (the worse stack's when both are measured).
    pub latency_us: u64,
    /// Target errors and requests not sent, per request, during the hold.
    pub error_rate: f64,
    /// Divergent answers, per answer.
    pub mismatch_rate: f64,
    /// p99 send lag during the hold, µs.
    pub lag_p99_us: u64,
    /// Requests sent during the hold.
    pub sent: u64,
    /// How busy the busiest replay engine was over the step (1.0: it never
    /// idled; see [`crate::report::EngineBusy`]).
    #[serde(default)]
    pub engine_busy: f64,
    /// The largest share of the step an engine waited for a core, held by
    /// other work on the machine.
    #[serde(default)]
    pub engine_waited: f64,
    /// The share of the replaying machine's CPU time its host took over
    /// the step (steal time; see [`crate::report::EngineBusy::stolen`]).
    #[serde(default)]
    pub host_stolen: f64,
    /// Failed while the host paused the machine that replayed: the same
    /// rate was run again once, and the next step counts instead of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
}

impl Step {
    /// For people: passed, failed, or failed and run again.
    pub fn verdict(&self) -> &'static str {
        match (self.passed, self.repeated) {
            (true, _) => "passed",
            (false, false) => "FAILED",
            (false, true) => "failed, host paused: run again",
        }
    }

    /// Failed while tandem itself was saturated, or kept waiting for a
    /// core (see [`Generator::warning`]).
    fn failed_by_tandem(&self) -> bool {
        !self.passed && Generator::held_back(self.engine_busy, self.engine_waited)
    }

    /// Failed while the host paused the machine that replayed (see
    /// [`Generator::host_warning`]).
    fn failed_by_host(&self) -> bool {
        !self.passed && self.host_stolen >= Generator::STOLEN
    }
}

/// Searches every target of `plan` in turn until `stopped` is set (by a
/// signal): the report so far.
pub async fn search(
    plan: &CapacityPlan,
    stopped: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<CapacityReport> {
    let mut searches = Vec::new();
    for &target in &plan.targets {
        searches.push(search_one(plan, target, &stopped).await?);
    }
    let rate = |m: Measured| {
        searches
            .iter()
            .find(|s| s.target == m)
            .and_then(|s| s.sustainable_rps)
    };
    let new_over_legacy = match (rate(Measured::Legacy), rate(Measured::New)) {
        (Some(l), Some(n)) if l > 0.0 => Some(n / l),
        _ => None,
    };
    Ok(CapacityReport {
        format: FORMAT.into(),
        version: VERSION,
        capture: plan.replay.capture.display().to_string(),
        slo: plan.slo.to_string(),
        max_error_rate: plan.max_error_rate,
        max_mismatch_rate: plan.max_mismatch_rate,
        projected_rps: plan.projected,
        searches,
        new_over_legacy,
        interrupted: stopped.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// Doubles, bisects, confirms: one target's search.
async fn search_one(
    plan: &CapacityPlan,
    target: Measured,
    stopped: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<Search> {
    let mut search = Walk::new(plan);
    let steps = take_steps(&mut search, stopped, |rate, confirmation| async move {
        let hold = if confirmation {
            plan.confirm_hold
        } else {
            plan.hold
        };
        let step = run_step(plan, target, rate, hold).await?;
        tracing::info!(
            "capacity {target:?} at {rate:.0} req/s{}: {} ({} {}, errors {:.2}%, divergent {:.2}%, achieved {:.0}/s)",
            if confirmation { " (confirming)" } else { "" },
            if step.passed { "passed" } else { "failed" },
            plan.slo,
            human(step.latency_us),
            step.error_rate * 100.0,
            step.mismatch_rate * 100.0,
            step.achieved_rps
        );
        Ok(step)
    })
    .await?;
    let sustainable = search.confirmed;
    // Steps run again do not count: nor do their reasons.
    let counted = || steps.iter().filter(|s| !s.repeated);
    Ok(Search {
        target,
        sustainable_rps: sustainable,
        headroom: sustainable.zip(plan.projected).map(|(s, p)| s / p),
        limited_by_tandem: counted().any(Step::failed_by_tandem),
        limited_by_host: counted().any(Step::failed_by_host),
        steps,
    })
}

/// Runs the steps `walk` asks for, through `run(rate, confirmation)`,
/// until it has its answer or `stopped` is set. A step that failed while
/// the host paused the machine (steal of [`Generator::STOLEN`] or more) is
/// run once more at the same rate and that second step counts: one burst
/// of a noisy neighbour otherwise halves the rate the search goes on from.
async fn take_steps<F, Fut>(
    walk: &mut Walk,
    stopped: &std::sync::atomic::AtomicBool,
    mut run: F,
) -> anyhow::Result<Vec<Step>>
where
    F: FnMut(f64, bool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Step>>,
{
    let mut steps: Vec<Step> = Vec::new();
    let mut again = None;
    // Bounded: doubling from 1 req/s to a million takes 20 steps, and each
    // may be run twice.
    for _ in 0..80 {
        if stopped.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let Some((rate, confirmation)) = again.take().or_else(|| walk.next()) else {
            break;
        };
        let mut step = run(rate, confirmation).await?;
        step.confirmation = confirmation;
        let repeated_already = steps.last().is_some_and(|s| s.repeated && s.rate == rate);
        if step.failed_by_host() && !repeated_already {
            tracing::info!(
                "the host took {:.0}% of the CPU time during the step at {rate:.0} req/s: run again",
                step.host_stolen * 100.0
            );
            step.repeated = true;
            again = Some((rate, confirmation));
        } else {
            walk.record(rate, confirmation, step.passed);
        }
        steps.push(step);
    }
    Ok(steps)
}

/// Where the search stands: the rates that passed and the lowest that
/// failed; which rate to try next.
#[derive(Debug, Clone)]
struct Walk {
    start_rate: f64,
    max_rate: f64,
    precision: f64,
    passed: Vec<f64>,
    failed_at: Option<f64>,
    confirmed: Option<f64>,
}

impl Walk {
    fn new(plan: &CapacityPlan) -> Walk {
        Walk {
            start_rate: plan.start_rate,
            max_rate: plan.max_rate,
            precision: plan.precision,
            passed: Vec::new(),
            failed_at: None,
            confirmed: None,
        }
    }

    /// The next rate and whether it confirms the best one; `None` once the
    /// answer is known.
    fn next(&self) -> Option<(f64, bool)> {
        let best = self
            .passed
            .iter()
            .copied()
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
        let rate = match (best, self.failed_at) {
            (None, None) => self.start_rate,
            (Some(lo), None) if lo * 2.0 > self.max_rate => {
                // Never failed below the ceiling: that is the answer.
                if self.confirmed == Some(lo) {
                    return None;
                }
                lo
            }
            (Some(lo), None) => lo * 2.0,
            (None, Some(hi)) if hi / 2.0 < 1.0 => return None,
            (None, Some(hi)) => hi / 2.0,
            (Some(lo), Some(hi)) if (hi - lo) / lo <= self.precision => {
                if self.confirmed == Some(lo) {
                    return None;
                }
                lo
            }
            (Some(lo), Some(hi)) => (lo + hi) / 2.0,
        };
        Some((rate, Some(rate) == best))
    }

    /// What a step at `rate` gave.
    fn record(&mut self, rate: f64, confirmation: bool, passed: bool) {
        match (passed, confirmation) {
            (true, true) => self.confirmed = Some(rate),
            (true, false) => self.passed.push(rate),
            (false, _) => {
                self.passed.retain(|&r| r < rate);
                self.failed_at = Some(self.failed_at.map_or(rate, |f: f64| f.min(rate)));
            }
        }
    }
}

/// Hands the judge the measured stack's attempts as legacy's, so that its
/// fidelity, latency and series read that stack whichever it is.
struct Measuring<S> {
    new_as_legacy: bool,
    inner: S,
}

impl<S: ResultSink> ResultSink for Measuring<S> {
    fn accept(&mut self, result: &ExchangeResult) -> anyhow::Result<()> {
        if !self.new_as_legacy {
            return self.inner.accept(result);
        }
        let mut result = result.clone();
        std::mem::swap(&mut result.legacy, &mut result.new);
        self.inner.accept(&result)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.inner.finish()
    }
}

/// One step: `rate` on `target` for the warm-up and `hold`, judged.
async fn run_step(
    plan: &CapacityPlan,
    target: Measured,
    rate: f64,
    hold: Duration,
) -> anyhow::Result<Step> {
    let mut replay_plan = plan.replay.clone();
    replay_plan.rate = Some(rate);
    replay_plan.duration = Some(plan.warmup + hold);
    replay_plan.passes = 1;
    replay_plan.progress = false;
    replay_plan.solo = match target {
        Measured::Legacy => Some(0),
        Measured::New => Some(1),
        Measured::Both => None,
    };
    // Eight intervals a hold, 100 ms to 1 s each; a backlog is caught over
    // four of them.
    let interval = Duration::from_millis(((hold.as_millis() / 8) as u64).clamp(100, 1_000));
    let sides: &[&str] = match target {
        Measured::Both => &["legacy", "new"],
        _ => &["legacy"],
    };
    let far = (plan.slo.limit_us * 4).max(1_000_000);
    let mut stop_gates = Vec::new();
    for side in sides {
        for check in [
            format!("{side}.max < {far}us"),
            format!("lag.{side}.p99 < 1s"),
        ] {
            stop_gates.push(Gate::parse(&check, &check, None)?.windowed(interval * 4, true)?);
        }
    }
    if let Some(metrics) = &replay_plan.metrics {
        metrics.set_offered_rate(rate);
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let judge = Judge::new(JudgeOptions {
        rules: plan.rules.clone(),
        run: RunInfo {
            capture: replay_plan.capture.display().to_string(),
            legacy: replay_plan.legacy.to_string(),
            new: replay_plan.new.to_string(),
            speed: 1.0,
            rules: plan.rules.as_ref().map(|p| p.display().to_string()),
            started_at_unix_us: 0,
            ..RunInfo::default()
        },
        correlation: replay_plan.correlation.clone(),
        metrics: replay_plan.metrics.clone(),
        series_interval: interval,
        abort: Some((stop_gates, stop.clone())),
        ..Default::default()
    })?;
    let sink = Measuring {
        new_as_legacy: target == Measured::New,
        inner: judge,
    };
    let replayed = replay(&replay_plan, sink, async move { stop.notified().await }).await?;
    let report = replayed.sink.inner.finish();
    let mut step = judge_step(plan, target, rate, hold, &report);
    let generator = Generator::of(&replayed.engines);
    if let Some(generator) = &generator {
        step.engine_busy = generator.most_busy();
        step.engine_waited = generator.most_waited();
        step.host_stolen = generator.most_stolen();
    }
    let whose = [
        (step.failed_by_tandem(), "tandem's"),
        (step.failed_by_host(), "the host's"),
    ];
    for ((_, whose), warning) in whose.into_iter().zip(Generator::CAVEATS).filter(|c| c.0 .0) {
        let why = generator.as_ref().and_then(warning).unwrap_or_default();
        step.failed
            .push(format!("this limit may be {whose}: {why}"));
    }
    Ok(step)
}

/// A step's figures over its hold, and whether it passed.
fn judge_step(
    plan: &CapacityPlan,
    target: Measured,
    rate: f64,
    hold: Duration,
    report: &Report,
) -> Step {
    let warmup_ms = plan.warmup.as_millis() as u64;
    let points: Vec<_> = report
        .series
        .as_ref()
        .map(|s| s.points.iter().filter(|p| p.at_ms >= warmup_ms).collect())
        .unwrap_or_default();
    // The judged span: from the first whole interval after the warm-up to
    // the end of the schedule.
    let judged_s = points.first().map_or(hold.as_secs_f64(), |p| {
        (warmup_ms + hold.as_millis() as u64).saturating_sub(p.at_ms) as f64 / 1e3
    });
    let stacks: Vec<usize> = match target {
        Measured::Both => vec![0, 1],
        _ => vec![0],
    };
    let mut failed = Vec::new();
    if let Some(why) = &report.aborted {
        failed.push(format!("stopped early: {why}"));
    }
    let mut worst = (0u64, 0.0f64, f64::MAX, 0u64, 0u64);
    for &side in &stacks {
        let tallies: Vec<StackTally> = points
            .iter()
            .filter_map(|p| StackTally::of(if side == 0 { &p.legacy } else { &p.new }).ok())
            .collect();
        let mut all = StackTally::default();
        for t in &tallies {
            all.add(t);
        }
        let latency = quantile(&all.histograms[1], plan.slo.quantile);
        let sent = all.sent;
        let error_rate = (all.errors + all.dropped) as f64 / (sent + all.dropped).max(1) as f64;
        let achieved = sent as f64 / judged_s.max(1e-3);
        let lag = all.histograms[2].summary().p99;
        if latency > plan.slo.limit_us {
            failed.push(format!(
                "{}: {} is {}",
                side_name(target, side),
                plan.slo,
                human(latency)
            ));
        }
        if error_rate > plan.max_error_rate {
            failed.push(format!(
                "{}: errors {:.2}% (max {:.2}%)",
                side_name(target, side),
                error_rate * 100.0,
                plan.max_error_rate * 100.0
            ));
        }
        if achieved < rate * 0.99 {
            failed.push(format!(
                "{}: tandem sent {achieved:.0}/s of {rate:.0}/s asked (the step is not valid)",
                side_name(target, side)
            ));
        }
        if let Some(why) = growing(&tallies) {
            failed.push(format!("{}: {why}", side_name(target, side)));
        }
        worst = (
            worst.0.max(latency),
            worst.1.max(error_rate),
            worst.2.min(achieved),
            worst.3.max(lag),
            worst.4 + sent,
        );
    }
    let mismatch_rate = match target {
        Measured::Both => report.summary.mismatched as f64 / report.summary.total.max(1) as f64,
        _ => report
            .fidelity
            .as_ref()
            .filter(|f| f.judged > 0)
            .map_or(0.0, |f| 1.0 - f.rate),
    };
    if mismatch_rate > plan.max_mismatch_rate {
        failed.push(format!(
            "divergent answers {:.2}% (max {:.2}%)",
            mismatch_rate * 100.0,
            plan.max_mismatch_rate * 100.0
        ));
    }
    Step {
        rate,
        confirmation: false,
        passed: failed.is_empty(),
        failed,
        achieved_rps: if worst.2 == f64::MAX { 0.0 } else { worst.2 },
        latency_us: worst.0,
        error_rate: worst.1,
        mismatch_rate,
        lag_p99_us: worst.3,
        sent: worst.4,
        engine_busy: 0.0,
        engine_waited: 0.0,
        host_stolen: 0.0,
        repeated: false,
    }
}

fn side_name(target: Measured, side: usize) -> &'static str {
    match (target, side) {
        (Measured::Legacy, _) | (Measured::Both, 0) => "legacy",
        _ => "new",
    }
}

fn quantile(latency: &Latency, q: f64) -> u64 {
    latency.quantile(q).unwrap_or(0)
}

/// A backlog that grows through the hold: corrected p99 or send lag p99 of
/// its last third well above its first third, its middle third on the way
/// up, and the last third's median past the first third's p99. A backlog
/// climbs through the hold and lifts most of the last third's requests; a
/// stall (a shared machine pausing the target or tandem for 20 ms, or for
/// 200 ms across two thirds) lifts its tail alone and drains, and without
/// the median failed steps at 40% of a known capacity in CI.
fn growing(tallies: &[StackTally]) -> Option<String> {
    let third = tallies.len() / 3;
    if third == 0 {
        return None;
    }
    let summary = |part: &[StackTally], h: usize| {
        let mut all = Latency::default();
        for t in part {
            all.merge(&t.histograms[h]);
        }
        all.summary()
    };
    let (first, last) = (&tallies[..third], &tallies[tallies.len() - third..]);
    let middle = &tallies[third..tallies.len() - third];
    for (h, what) in [(1, "latency"), (2, "send lag")] {
        let (a, m, end) = (
            summary(first, h).p99,
            summary(middle, h).p99,
            summary(last, h),
        );
        let b = end.p99;
        if b > 2 * a && b > 20_000 && m > a + (b - a) / 4 && end.p50 > a {
            return Some(format!(
                "{what} grew through the hold (p99 {} then {}): a growing backlog",
                human(a),
                human(b)
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A judged step at 1,000 requests/s.
    fn judged(passed: bool, engine_busy: f64, engine_waited: f64) -> Step {
        Step {
            rate: 1_000.0,
            confirmation: false,
            passed,
            failed: Vec::new(),
            achieved_rps: 1_000.0,
            latency_us: 0,
            error_rate: 0.0,
            mismatch_rate: 0.0,
            lag_p99_us: 0,
            sent: 0,
            engine_busy,
            engine_waited,
            host_stolen: 0.0,
            repeated: false,
        }
    }

    #[test]
    fn a_step_failed_by_tandem_is_one_its_engine_was_saturated_or_crowded_in() {
        let step = judged;
        assert!(step(false, 0.95, 0.0).failed_by_tandem());
        assert!(step(false, 0.6, 0.3).failed_by_tandem());
        assert!(!step(false, 0.6, 0.1).failed_by_tandem());
        // A step that passed was not held back enough to matter.
        assert!(!step(true, 0.95, 0.3).failed_by_tandem());
        // A host that paused the replay: its own reason, not tandem's.
        let paused = |passed, host_stolen| Step {
            host_stolen,
            ..step(passed, 0.5, 0.0)
        };
        assert!(paused(false, 0.2).failed_by_host() && !paused(false, 0.2).failed_by_tandem());
        assert!(!paused(false, 0.05).failed_by_host());
        assert!(!paused(true, 0.2).failed_by_host());
    }

    /// A search over a stack that carries 1,000 requests/s, `paused` saying
    /// which tries (the rate, and whether it was already tried) the host
    /// paused: the steps run.
    fn search_with_pauses(paused: impl Fn(f64, bool) -> bool) -> (Vec<Step>, Option<f64>) {
        let mut search = Walk {
            start_rate: 100.0,
            max_rate: 1e6,
            precision: 0.05,
            passed: Vec::new(),
            failed_at: None,
            confirmed: None,
        };
        let stopped = std::sync::atomic::AtomicBool::new(false);
        let mut tried = Vec::new();
        let steps = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(take_steps(&mut search, &stopped, |rate, _| {
                let again = tried.contains(&rate);
                tried.push(rate);
                let host = paused(rate, again);
                let step = Step {
                    rate,
                    passed: rate <= 1_000.0 && !host,
                    host_stolen: if host { 0.3 } else { 0.0 },
                    ..judged(true, 0.5, 0.0)
                };
                async move { Ok(step) }
            }))
            .unwrap();
        (steps, search.confirmed)
    }

    #[test]
    fn a_step_the_host_paused_is_run_again_once_and_the_second_counts() {
        let (steps, found) = search_with_pauses(|_, _| false);
        assert_eq!(found, Some(1_000.0));
        assert!(steps.iter().all(|s| !s.repeated));
        // Paused at 800 req/s the first time: run again, passed, and the
        // search goes on up as if the pause had not been.
        let (steps, found) = search_with_pauses(|rate, again| rate == 800.0 && !again);
        assert_eq!(found, Some(1_000.0));
        let at_800: Vec<_> = steps.iter().filter(|s| s.rate == 800.0).collect();
        assert_eq!(at_800.len(), 2);
        assert!(at_800[0].repeated && !at_800[0].passed);
        assert!(!at_800[1].repeated && at_800[1].passed);
        // Paused at 800 both times: the second failure counts (no third
        // try), and the search bisects below it.
        let (steps, found) = search_with_pauses(|rate, _| rate == 800.0);
        assert_eq!(steps.iter().filter(|s| s.rate == 800.0).count(), 2);
        assert!(found.is_some_and(|f| f < 800.0), "{found:?}");
        // A step that failed with the host quiet is not run again.
        let (steps, _) = search_with_pauses(|_, _| false);
        assert_eq!(steps.iter().filter(|s| s.rate == 1_600.0).count(), 1);
    }

    /// Nine intervals, each with one corrected latency and send lag.
    fn hold(latencies_ms: [u64; 9]) -> Vec<StackTally> {
        latencies_ms
            .iter()
            .map(|ms| {
                let mut tally = StackTally::default();
                for h in [1, 2] {
                    tally.histograms[h].record(ms * 1_000);
                }
                tally
            })
            .collect()
    }

    #[test]
    fn a_climbing_backlog_fails_and_one_stall_does_not() {
        let climbing = hold([4, 6, 8, 12, 16, 20, 26, 32, 40]);
        let why = growing(&climbing).expect("a backlog");
        assert!(why.contains("latency grew through the hold"), "{why}");
        // A 25 ms stall in the last third alone, as in CI at 40% of capacity.
        assert_eq!(growing(&hold([4, 5, 4, 5, 4, 5, 4, 25, 5])), None);
        // A longer stall across the middle and last thirds that drains
        // before the end, as a CI step at 40% of capacity met once.
        assert_eq!(growing(&hold([12, 11, 12, 11, 12, 30, 33, 11, 12])), None);
        assert_eq!(growing(&hold([4, 5, 4, 5, 4, 5, 4, 5, 4])), None);
    }
}
