//! The judge: folds replay results, one exchange at a time, into a parity
//! report. It owns the differ with its rules, noise learning ([`noise`])
//! and the report under construction, and is the one consumer of results
//! for every mode: the sink behind `tandem replay`, the reader of a
//! results file behind `tandem diff` ([`judge_results`]).

mod correlation;
mod fidelity;
mod load;
pub mod noise;
mod series;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use fidelity::sort_divergences;
use noise::Noise;
pub use noise::NoiseThresholds;

use crate::capture::{Header, Request, Response};
use crate::diff::{Differ, Mismatch, MismatchKind, RouteRules, RuleSet};
use crate::latency::Latency;
use crate::report::{
    sort_groups, Example, Histograms, MessageView, MismatchGroup, NoiseGroup, Report, RouteReport,
    RunInfo, SideLatency, Summary, TargetErrors,
};
use crate::results::{Attempt, ExchangeResult, ResultSink};
use crate::route::Route;

/// Examples kept per mismatch group.
const EXAMPLES: usize = 3;
/// Characters of a body shown in an example.
const BODY_SHOWN: usize = 2_000;

/// How one exchange came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Both answered alike.
    Matched,
    /// Both answered, with this many mismatches.
    Mismatched(usize),
    /// At least one target gave no answer.
    Error,
    /// The harness did not send it to at least one target.
    Dropped,
}

/// What a judge is built from.
#[derive(Debug, Clone, Default)]
pub struct JudgeOptions {
    /// The rules file; none: compare everything but the default-ignored headers.
    pub rules: Option<PathBuf>,
    /// Learn noise from second legacy answers, which came from this target.
    pub legacy2: Option<String>,
    /// When a difference is real rather than noise.
    pub noise: NoiseThresholds,
    /// What was replayed where: the report's `run`.
    pub run: RunInfo,
    /// The links the replay followed: values standing for the same
    /// recorded one are equal.
    pub correlation: Option<Arc<crate::correlate::Correlation>>,
    /// Length of the report's time series intervals; zero: one second.
    pub series_interval: std::time::Duration,
    /// Live metrics to keep, exchange by exchange.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Learn route templates from the requests of this capture.
    pub learn_routes: Option<PathBuf>,
    /// Windowed gates that stop the run when a window fails (`abort`),
    /// and what to wake when one does.
    pub abort: Option<(Vec<crate::gate::Gate>, Arc<tokio::sync::Notify>)>,
}

/// Windowed gates watched while the run goes on.
struct Watch {
    gates: Vec<crate::gate::Gate>,
    /// Per gate, the next window to judge.
    next: Vec<u64>,
    stop: Arc<tokio::sync::Notify>,
    /// Why the run was stopped, once it was.
    aborted: Option<String>,
}

/// A window is judged once the schedule is this far past its end: answers
/// to its last requests have had time to come in.
const WINDOW_GRACE_US: u64 = 1_000_000;

/// Folds results, one at a time, into a [`Report`]. Memory grows with the
/// number of routes and mismatch groups, and, when learning noise, by a few
/// bytes per mismatched exchange.
pub struct Judge {
    differ: Differ,
    /// Names each request's route.
    templates: crate::route::Templates,
    run: RunInfo,
    summary: Summary,
    errors: TargetErrors,
    routes: BTreeMap<Route, RouteTally>,
    groups: Vec<GroupTally>,
    group_index: HashMap<GroupKey, usize>,
    legacy: Latency,
    new: Latency,
    /// From the scheduled time, per side (legacy, new).
    corrected: [Latency; 2],
    /// Send lag, per side.
    lag: [Latency; 2],
    noise: Option<Noise>,
    fidelity: fidelity::FidelityTally,
    equivalence: Option<correlation::Equivalence>,
    load: load::LoadTally,
    series: series::SeriesTally,
    watch: Option<Watch>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

#[derive(Default, Clone)]
struct RouteTally {
    total: u64,
    matched: u64,
    mismatched: u64,
    errors: u64,
    /// Exchanges where both answered (the base of the diff rate).
    compared: u64,
    legacy: Latency,
    new: Latency,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct GroupKey {
    route: Route,
    kind: MismatchKind,
    path: Option<String>,
}

#[derive(Clone)]
struct GroupTally {
    key: GroupKey,
    count: u64,
    first: u64,
    last: u64,
    examples: Vec<Example>,
}

impl Judge {
    /// A judge with `options`' rules (read and checked here) and noise
    /// learning when a second legacy target is named.
    pub fn new(options: JudgeOptions) -> anyhow::Result<Judge> {
        let rules = RuleSet::load_or_none(options.rules.as_deref())?;
        let mut templates = crate::route::Templates::written(rules.templates());
        if let Some(capture) = &options.learn_routes {
            // Only the targets: the bodies are not read.
            let mut reader = crate::capture::CaptureReader::open(capture)?;
            let mut targets = Vec::new();
            while let Some(outline) = reader.next_outline() {
                targets.extend(outline.and_then(|o| o.target()).ok());
            }
            templates.learn(targets);
        }
        Ok(Judge {
            differ: Differ::new(rules),
            templates,
            run: options.run,
            summary: Summary::default(),
            errors: TargetErrors::default(),
            routes: BTreeMap::new(),
            groups: Vec::new(),
            group_index: HashMap::new(),
            legacy: Latency::default(),
            new: Latency::default(),
            corrected: Default::default(),
            lag: Default::default(),
            noise: options
                .legacy2
                .map(|legacy2| Noise::new(legacy2, options.noise)),
            fidelity: fidelity::FidelityTally::default(),
            equivalence: options.correlation.map(correlation::Equivalence::new),
            load: load::LoadTally::default(),
            series: series::SeriesTally::new(match options.series_interval {
                std::time::Duration::ZERO => std::time::Duration::from_secs(1),
                interval => interval,
            }),
            metrics: options.metrics,
            watch: options.abort.map(|(gates, stop)| Watch {
                next: vec![0; gates.len()],
                gates,
                stop,
                aborted: None,
            }),
        })
    }

    /// Adds one exchange's result.
    pub fn add(&mut self, result: &ExchangeResult) -> Verdict {
        let route = self
            .templates
            .route(&result.request.method, &result.request.target);
        // Read back once, for fidelity and for what values stand for.
        let recorded = result
            .recorded
            .as_ref()
            .map(|raw| serde_json::from_str::<Response>(raw.get()));
        if let Some(equivalence) = self.equivalence.as_mut() {
            equivalence.observe(
                &route,
                result,
                recorded.as_ref().and_then(|r| r.as_ref().ok()),
            );
        }
        let (mut differences, mut legacy_differences) = self.compare(&route, result);
        if let Some(equivalence) = self.equivalence.as_mut() {
            for (found, other) in [(&mut differences, 1), (&mut legacy_differences, 2)] {
                if let Some(found) = found.as_mut() {
                    equivalence.settle(found, 0, other);
                }
            }
        }
        if let (Some(noise), Some(differences)) = (self.noise.as_mut(), legacy_differences) {
            noise.learn(&route, differences);
        }
        self.fidelity
            .add(&mut self.differ, &route, result, recorded.as_ref());
        self.load.add(result);
        let verdict = self.judge(&route, result, differences);
        self.series.add(result, verdict);
        if let Some(metrics) = &self.metrics {
            metrics.observe(&route, result, verdict);
        }
        self.watch(result.scheduled_us);
        let tally = self.routes.entry(route).or_default();
        tally.total += 1;
        self.summary.total += 1;
        match verdict {
            Verdict::Matched => {
                tally.matched += 1;
                self.summary.matched += 1;
                if failed_alike(result) {
                    self.summary.failed_alike += 1;
                }
            }
            Verdict::Mismatched(_) => {
                tally.mismatched += 1;
                self.summary.mismatched += 1;
            }
            Verdict::Error => {
                tally.errors += 1;
                self.summary.errors += 1;
            }
            Verdict::Dropped => {
                tally.errors += 1;
                self.summary.dropped += 1;
            }
        }
        if matches!(verdict, Verdict::Matched | Verdict::Mismatched(_)) {
            tally.compared += 1;
        }
        let sides = [
            (
                &result.legacy,
                &mut tally.legacy,
                &mut self.legacy,
                &mut self.errors.legacy,
            ),
            (
                &result.new,
                &mut tally.new,
                &mut self.new,
                &mut self.errors.new,
            ),
        ];
        for (side, (attempt, route_hist, all, errors)) in sides.into_iter().enumerate() {
            if !attempt.was_dropped() {
                self.lag[side].record(attempt.lag_us);
            }
            if let Some(response) = &attempt.response {
                route_hist.record(response.latency_us);
                all.record(response.latency_us);
                self.corrected[side].record(attempt.lag_us + response.latency_us);
            }
            if let Some(error) = &attempt.error {
                *errors.entry(error.kind).or_default() += 1;
            }
        }
        verdict
    }

    /// Judges the windows of the abort gates that the schedule has left
    /// behind (by [`WINDOW_GRACE_US`]); the first that fails stops the run.
    fn watch(&mut self, scheduled_us: u64) {
        let Some(watch) = self.watch.as_mut().filter(|w| w.aborted.is_none()) else {
            return;
        };
        for (gate, next) in watch.gates.iter().zip(watch.next.iter_mut()) {
            let over_us = gate.over.map_or(u64::MAX, |o| o.as_micros() as u64).max(1);
            while (*next + 1) * over_us + WINDOW_GRACE_US <= scheduled_us {
                let (from, to) = (*next * over_us, (*next + 1) * over_us);
                *next += 1;
                let Some(Ok(held)) = self.series.window(from, to).map(|f| gate.hold(&f)) else {
                    continue;
                };
                if !held.passed {
                    let why = format!(
                        "gate {} failed in window {}–{} ({}): the run was stopped (abort)",
                        gate.name,
                        crate::latency::human(from),
                        crate::latency::human(to),
                        gate.show(&held)
                    );
                    tracing::warn!("{why}");
                    watch.aborted = Some(why);
                    watch.stop.notify_one();
                    return;
                }
            }
        }
    }

    /// Sets the wall-clock length of the run.
    pub fn set_duration_ms(&mut self, ms: u64) {
        self.run.duration_ms = ms;
    }

    /// What differs between the legacy and new answers, and between the
    /// two legacy answers when learning noise, where both sides answered.
    /// The legacy answer is parsed once for both.
    fn compare(
        &mut self,
        route: &Route,
        result: &ExchangeResult,
    ) -> (Option<Vec<Mismatch>>, Option<Vec<Mismatch>>) {
        let Some(legacy) = answer(&result.legacy) else {
            return (None, None);
        };
        let new = answer(&result.new);
        let legacy2 = result.legacy2.as_ref().and_then(answer);
        match (new, legacy2.filter(|_| self.noise.is_some())) {
            (Some(new), Some(legacy2)) => {
                let [differences, noise] = self.differ.compare_each(route, legacy, [new, legacy2]);
                (Some(differences), Some(noise))
            }
            (Some(new), None) => (Some(self.differ.compare(route, legacy, new)), None),
            (None, Some(legacy2)) => (None, Some(self.differ.compare(route, legacy, legacy2))),
            (None, None) => (None, None),
        }
    }

    fn judge(
        &mut self,
        route: &Route,
        result: &ExchangeResult,
        differences: Option<Vec<Mismatch>>,
    ) -> Verdict {
        let failed = |a: &Attempt| a.error.is_some() && !a.was_dropped();
        if failed(&result.legacy) || failed(&result.new) {
            return Verdict::Error;
        }
        if result.legacy.was_dropped() || result.new.was_dropped() {
            return Verdict::Dropped;
        }
        let (Some(legacy), Some(new), Some(mismatches)) =
            (answer(&result.legacy), answer(&result.new), differences)
        else {
            return Verdict::Error;
        };
        if mismatches.is_empty() {
            return Verdict::Matched;
        }
        let rules = self.differ.rules_for(route);
        let mut hit: Vec<usize> = Vec::new();
        for mismatch in &mismatches {
            let key = group_key(route, mismatch);
            let index = match self.group_index.get(&key) {
                Some(&i) => i,
                None => {
                    self.groups.push(GroupTally {
                        key: key.clone(),
                        count: 0,
                        first: result.id,
                        last: result.id,
                        examples: Vec::new(),
                    });
                    self.group_index.insert(key, self.groups.len() - 1);
                    self.groups.len() - 1
                }
            };
            // An exchange counts once per group, however many elements differ.
            if !hit.contains(&index) {
                hit.push(index);
                if let Some(metrics) = &self.metrics {
                    metrics.mismatch(route, mismatch.kind);
                }
                let group = &mut self.groups[index];
                group.count += 1;
                group.first = group.first.min(result.id);
                group.last = group.last.max(result.id);
                keep_example(&mut group.examples, result.id, || {
                    example(result, legacy, new, &rules)
                });
            }
            let group = &mut self.groups[index];
            if let Some(example) = group
                .examples
                .iter_mut()
                .find(|e| e.exchange_id == result.id)
            {
                example.mismatches.push(mismatch.clone());
            }
        }
        if let Some(noise) = self.noise.as_mut() {
            noise.hit(route, hit);
        }
        Verdict::Mismatched(mismatches.len())
    }

    /// Judges from now on with `correlation` (links learned while the
    /// results came, as shadowing learns them in its warm-up), unless it
    /// already has links.
    pub fn follow(&mut self, correlation: Arc<crate::correlate::Correlation>) {
        if self.equivalence.is_none() {
            self.equivalence = Some(correlation::Equivalence::new(correlation));
        }
    }

    /// The report of what was judged so far, the judge going on: what
    /// `tandem shadow` writes every `--report-every`.
    pub fn snapshot(&self) -> Report {
        let copy = Judge {
            differ: Differ::new(RuleSet::default()),
            templates: self.templates.clone(),
            run: self.run.clone(),
            summary: self.summary.clone(),
            errors: self.errors.clone(),
            routes: self.routes.clone(),
            groups: self.groups.clone(),
            group_index: HashMap::new(),
            legacy: self.legacy.clone(),
            new: self.new.clone(),
            corrected: self.corrected.clone(),
            lag: self.lag.clone(),
            noise: self.noise.clone(),
            fidelity: self.fidelity.clone(),
            equivalence: self.equivalence.clone(),
            load: self.load.clone(),
            series: self.series.clone(),
            watch: None,
            metrics: None,
        };
        let mut report = copy.finish();
        report.unused_rules = self.differ.unused_rules();
        report
    }

    /// The finished report.
    pub fn finish(self) -> Report {
        let Judge {
            differ,
            templates,
            run,
            mut summary,
            errors,
            mut routes,
            groups,
            legacy,
            new,
            corrected,
            lag,
            noise,
            fidelity,
            equivalence,
            load,
            series,
            watch,
            ..
        } = self;
        let noisy = match &noise {
            Some(noise) => noise.judge(&groups, &routes),
            None => vec![None; groups.len()],
        };
        if let Some(noise) = &noise {
            noise.revise_verdicts(&noisy, &mut summary, &mut routes);
        }
        summary.finish_rates();
        let mut mismatch_groups = Vec::new();
        let (mut noise_groups, mut noise_mismatch_groups) = (Vec::new(), Vec::new());
        for (g, rates) in groups.iter().zip(&noisy) {
            let compared = routes.get(&g.key.route).map_or(1, |r| r.compared.max(1));
            match rates {
                Some((diff_rate, noise_rate)) => {
                    noise_groups.push(noise_group(g, *diff_rate, *noise_rate));
                    noise_mismatch_groups.push(mismatch_group(g, compared));
                }
                None => mismatch_groups.push(mismatch_group(g, compared)),
            }
        }
        sort_groups(&mut mismatch_groups);
        sort_groups(&mut noise_mismatch_groups);
        let learned_noise = noise.map(|n| n.learned(&groups, noise_groups, noise_mismatch_groups));
        let histograms = Histograms {
            legacy: legacy.to_base64(),
            new: new.to_base64(),
            legacy_corrected: corrected[0].to_base64(),
            new_corrected: corrected[1].to_base64(),
            legacy_lag: lag[0].to_base64(),
            new_lag: lag[1].to_base64(),
            routes: routes
                .iter()
                .map(|(route, t)| (route.to_string(), [t.legacy.to_base64(), t.new.to_base64()]))
                .collect(),
        };
        Report {
            format: crate::report::FORMAT.to_string(),
            version: crate::report::VERSION,
            run,
            summary,
            errors,
            routes: routes
                .into_iter()
                .map(|(route, t)| route_report(route, t))
                .collect(),
            mismatch_groups,
            latency: SideLatency {
                legacy: legacy.summary(),
                new: new.summary(),
            },
            latency_corrected: SideLatency {
                legacy: corrected[0].summary(),
                new: corrected[1].summary(),
            },
            send_lag: SideLatency {
                legacy: lag[0].summary(),
                new: lag[1].summary(),
            },
            learned_noise,
            fidelity: fidelity.finish(),
            correlation: equivalence.map(correlation::Equivalence::finish),
            load: load.finish(),
            generator: None,
            unused_rules: differ.unused_rules(),
            learned_routes: templates.learned(),
            histograms,
            series: series.finish(),
            gates: Vec::new(),
            interrupted: false,
            aborted: watch.and_then(|w| w.aborted),
            unreadable: None,
            partial: None,
            effects: None,
        }
    }
}

pub(crate) fn group_key(route: &Route, mismatch: &Mismatch) -> GroupKey {
    GroupKey {
        route: route.clone(),
        kind: mismatch.kind,
        path: mismatch.group_path(),
    }
}

fn mismatch_group(g: &GroupTally, compared: u64) -> MismatchGroup {
    MismatchGroup {
        method: g.key.route.method.clone(),
        route: g.key.route.template.clone(),
        kind: g.key.kind,
        path: g.key.path.clone(),
        count: g.count,
        first_exchange: g.first,
        last_exchange: g.last,
        rate: g.count as f64 / compared as f64,
        examples: g.examples.clone(),
    }
}

fn noise_group(g: &GroupTally, diff_rate: f64, noise_rate: f64) -> NoiseGroup {
    NoiseGroup {
        method: g.key.route.method.clone(),
        route: g.key.route.template.clone(),
        kind: g.key.kind,
        path: g.key.path.clone(),
        diff_rate,
        noise_rate,
    }
}

fn route_report(route: Route, t: RouteTally) -> RouteReport {
    RouteReport {
        method: route.method,
        route: route.template,
        total: t.total,
        matched: t.matched,
        mismatched: t.mismatched,
        errors: t.errors,
        compared: t.compared,
        latency: SideLatency {
            legacy: t.legacy.summary(),
            new: t.new.summary(),
        },
    }
}

/// Both stacks answered with a failure status (4xx, 5xx).
fn failed_alike(result: &ExchangeResult) -> bool {
    let failed = |a: &Attempt| a.response.as_ref().is_some_and(|r| r.status >= 400);
    failed(&result.legacy) && failed(&result.new)
}

fn answer(attempt: &Attempt) -> Option<&Response> {
    attempt.response.as_ref()
}

/// Keeps the examples of the lowest exchange ids, in id order, whatever
/// order the engines' results arrive in: the same replay gives the same
/// report.
fn keep_example(examples: &mut Vec<Example>, id: u64, make: impl FnOnce() -> Example) {
    if examples.len() < EXAMPLES {
        examples.push(make());
    } else if let Some(last) = examples.last_mut().filter(|e| e.exchange_id > id) {
        *last = make();
    } else {
        return;
    }
    examples.sort_by_key(|e| e.exchange_id);
}

fn example(
    result: &ExchangeResult,
    legacy: &Response,
    new: &Response,
    rules: &RouteRules,
) -> Example {
    Example {
        exchange_id: result.id,
        request: request_view(&result.request, rules),
        legacy: response_view(legacy, rules),
        new: response_view(new, rules),
        mismatches: Vec::new(),
    }
}

fn request_view(r: &Request, rules: &RouteRules) -> MessageView {
    MessageView {
        line: format!("{} {}", r.method, r.target),
        headers: redacted(&r.headers, rules),
        body: shown_body(r.body.bytes()),
    }
}

fn response_view(r: &Response, rules: &RouteRules) -> MessageView {
    MessageView {
        line: r.status.to_string(),
        headers: redacted(&r.headers, rules),
        body: shown_body(r.body.bytes()),
    }
}

fn redacted(headers: &[Header], rules: &RouteRules) -> Vec<Header> {
    headers
        .iter()
        .map(|h| Header(h.0.clone(), rules.shown(&h.0, h.1.to_string()).into()))
        .collect()
}

fn shown_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(BODY_SHOWN) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], body.len()),
        None => text.into_owned(),
    }
}

impl ResultSink for Judge {
    fn accept(&mut self, result: &ExchangeResult) -> anyhow::Result<()> {
        self.add(result);
        Ok(())
    }
}

/// Judges a results file again, with `rules` (none: no rules) and no
/// traffic sent: `tandem diff RUN_DIR`. Noise is learned when the run sent
/// to a second legacy target; with `correlate`, the links are learned again
/// from the capture the run replayed (and the rules' `[[correlate]]`), as
/// the replay learned them. A line that cannot be read is an error naming
/// the file and line.
pub fn judge_results(
    results: &Path,
    rules: Option<&Path>,
    thresholds: NoiseThresholds,
    correlate: bool,
) -> anyhow::Result<Report> {
    let mut reader = crate::results::ResultsReader::open(results)?;
    let header = reader.header().clone();
    let capture = PathBuf::from(&header.capture);
    let correlation = match (correlate, capture.exists()) {
        (false, _) => None,
        (true, true) => {
            let written = match rules {
                Some(path) => crate::correlate::rules_in(path)?,
                None => crate::correlate::Written::default(),
            };
            Some(Arc::new(crate::correlate::learn(&capture, &written)?))
        }
        (true, false) => {
            tracing::warn!(
                "{}: the replayed capture is gone; judging without correlation",
                capture.display()
            );
            None
        }
    };
    let mut judge = Judge::new(JudgeOptions {
        rules: rules.map(Path::to_path_buf),
        legacy2: header.legacy2.clone(),
        noise: thresholds,
        run: RunInfo {
            capture: header.capture,
            legacy: header.legacy,
            new: header.new,
            speed: header.speed,
            rules: rules.map(|p| p.display().to_string()),
            started_at_unix_us: header.started_at_unix_us,
            duration_ms: 0,
            capture_sha256: capture
                .exists()
                .then(|| crate::capture::sha256_of(&capture).ok())
                .flatten(),
            shard: header.shard,
        },
        correlation: correlation.clone(),
        series_interval: std::time::Duration::ZERO,
        metrics: None,
        learn_routes: capture.exists().then(|| capture.clone()),
        abort: None,
    })?;
    // A line that cannot be read is skipped and named, as the replay skips
    // a capture's; a read failure (a truncated gzip stream) ends the file.
    let mut unreadable = Vec::new();
    while let Some(result) = reader.next_result() {
        match result {
            Ok(result) => {
                judge.add(&result);
            }
            Err(e) => unreadable.push(e),
        }
    }
    let mut report = judge.finish();
    report.unreadable = crate::report::Unreadable::of(&unreadable);
    if let Some(correlation) = &correlation {
        report
            .unused_rules
            .extend(correlation.unused_rules.iter().cloned());
    }
    Ok(report)
}
