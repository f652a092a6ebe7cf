//! Gates: the thresholds that turn a report into a verdict, written as short
//! expressions in the k6 habit but about parity:
//!
//! ```text
//! parity >= 99.9%            fidelity >= 98%          mismatch_rate <= 0.1%
//! errors.new <= 0.1%         dropped.legacy <= 1%
//! new.p99 < 250ms            new.p99 <= 1.10 * legacy.p99
//! lag.new.p99 < 5ms
//! ```
//!
//! A side is a metric (optionally times a number) or a quantity: a share
//! (`99.9%` or `0.999`) or a time (`250ms`, `1.5s`, `800us`). Both sides of
//! a gate must be of one kind. Latencies are corrected for coordinated
//! omission (measured from each request's scheduled time); per route they
//! are the route's answer latencies. A gate with a `route` reads that
//! route's figures only. docs/gates.md has the grammar.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::latency::LatencySummary;
use crate::report::series::StackTally;
use crate::report::Report;

/// A gate as written: its name, expression and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// Unique within a run: the scenario's key, or the expression itself.
    pub name: String,
    /// The expression as written.
    pub expression: String,
    /// `METHOD /route` as the report names it, or the whole run.
    pub route: Option<String>,
    /// Held over each window of this length (scheduled time), failing if
    /// any window fails; `None`: over the whole run.
    pub over: Option<std::time::Duration>,
    /// With `over`: stop the run as soon as a window fails.
    pub abort: bool,
    check: Check,
}

/// One holding of a gate: both sides and whether it held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Held {
    /// The left side's value.
    pub left: f64,
    /// The right side's value.
    pub right: f64,
    /// Whether the comparison held.
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Check {
    left: Side,
    op: Op,
    right: Side,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

#[derive(Debug, Clone, PartialEq)]
enum Side {
    Metric(f64, Metric),
    Quantity(Quantity),
}

/// A value of one kind.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Quantity {
    /// 0..1.
    Share(f64),
    /// Microseconds.
    Time(f64),
    /// A number of things.
    Count(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Share,
    Time,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    Legacy,
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Parity,
    MismatchRate,
    Fidelity,
    Errors(Stack),
    Dropped(Stack),
    Latency(Stack, Stat),
    Lag(Stack, Stat),
    /// Differences in the stacks' side effects, over the whole run.
    EffectsMismatched,
    /// How busy tandem's busiest replay engine was, over the whole run.
    EngineBusy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stat {
    P50,
    P90,
    P99,
    P999,
    Max,
    Mean,
}

/// What a gate found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The gate's name.
    pub name: String,
    /// Its expression.
    pub expression: String,
    /// Its route, when it reads one route only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The left side's value: a share (0..1) or microseconds; `None` when
    /// there was nothing to measure (no exchange, nothing judged).
    pub observed: Option<f64>,
    /// The right side's value, in the same unit.
    pub threshold: Option<f64>,
    /// Both sides for people, e.g. `99.82% >= 99.90%`, or why not measured.
    pub text: String,
    /// Whether it held. A gate with nothing to measure fails.
    pub passed: bool,
}

/// A gate expression that cannot be read: says where and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("gate {expression:?}: {why}")]
pub struct GateError {
    /// The expression.
    pub expression: String,
    /// What is wrong.
    pub why: String,
}

impl Gate {
    /// Reads `expression`, named `name`, over `route` (or the whole run).
    pub fn parse(name: &str, expression: &str, route: Option<String>) -> Result<Gate, GateError> {
        let error = |why: String| GateError {
            expression: expression.to_string(),
            why,
        };
        let check = parse_check(expression).map_err(error)?;
        if route.is_some() {
            for side in [&check.left, &check.right] {
                if let Side::Metric(
                    _,
                    m @ (Metric::Errors(_)
                    | Metric::Dropped(_)
                    | Metric::Lag(..)
                    | Metric::EngineBusy),
                ) = side
                {
                    return Err(error(format!(
                        "{} is not kept per route; gate the whole run instead",
                        m.name()
                    )));
                }
            }
        }
        Ok(Gate {
            name: name.to_string(),
            expression: expression.trim().to_string(),
            route,
            over: None,
            abort: false,
            check,
        })
    }

    /// The gate held over each window of `over` instead of the whole run;
    /// with `abort`, the run stops at the first window that fails.
    pub fn windowed(mut self, over: std::time::Duration, abort: bool) -> Result<Gate, GateError> {
        let error = |why: &str| GateError {
            expression: self.expression.clone(),
            why: why.to_string(),
        };
        if over.is_zero() {
            return Err(error("a window must last longer than zero"));
        }
        if self.route.is_some() {
            return Err(error("windows are kept for the whole run, not per route"));
        }
        // Metrics kept for the whole run only, and why.
        for side in [&self.check.left, &self.check.right] {
            let why = match side {
                Side::Metric(_, Metric::Fidelity) => {
                    "fidelity is not kept per window; gate the whole run"
                }
                Side::Metric(_, Metric::EngineBusy) => {
                    "engine.busy is measured over the whole run; gate the whole run"
                }
                Side::Metric(_, Metric::EffectsMismatched) => {
                    "effects are judged once the run is over; gate the whole run"
                }
                _ => continue,
            };
            return Err(error(why));
        }
        self.over = Some(over);
        self.abort = abort;
        Ok(self)
    }

    /// `--max-mismatch-rate X`: the gate `mismatch_rate <= X`.
    pub fn max_mismatch_rate(max: f64) -> Gate {
        Gate::shorthand("max-mismatch-rate", Metric::MismatchRate, Op::Le, max)
    }

    /// `--min-fidelity X`: the gate `fidelity >= X`.
    pub fn min_fidelity(min: f64) -> Gate {
        Gate::shorthand("min-fidelity", Metric::Fidelity, Op::Ge, min)
    }

    fn shorthand(name: &str, metric: Metric, op: Op, value: f64) -> Gate {
        let check = Check {
            left: Side::Metric(1.0, metric),
            op,
            right: Side::Quantity(Quantity::Share(value)),
        };
        Gate {
            name: name.to_string(),
            expression: check.to_string(),
            route: None,
            over: None,
            abort: false,
            check,
        }
    }

    /// Holds the gate against `figures`.
    pub fn hold(&self, figures: &Figures) -> Result<Held, String> {
        let left = figures.value(&self.check.left)?;
        let right = figures.value(&self.check.right)?;
        Ok(Held {
            left,
            right,
            passed: self.check.op.holds(left, right),
        })
    }

    /// Both sides for people: `99.82% >= 99.90%`.
    pub fn show(&self, held: &Held) -> String {
        let kind = self.check.left.kind();
        format!(
            "{} {} {}",
            show(kind, held.left),
            self.check.op,
            show(kind, held.right)
        )
    }

    /// How far from failing: negative when it failed.
    fn margin(&self, held: &Held) -> f64 {
        match self.check.op {
            Op::Lt | Op::Le => held.right - held.left,
            Op::Gt | Op::Ge => held.left - held.right,
            Op::Eq => -(held.left - held.right).abs(),
        }
    }

    /// Holds the gate against `report`: the whole run, a route, or each
    /// window of the run's series.
    pub fn judge(&self, report: &Report) -> Verdict {
        let outcome = match (&self.route, self.over) {
            (_, Some(over)) => self.judge_windows(report, over),
            (Some(route), None) => match Figures::route(report, route) {
                Some(f) => self.hold(&f).map(|h| (h, self.show(&h))),
                None => Err(format!("no route {route:?} in this run")),
            },
            (None, None) => self.hold(&Figures::run(report)).map(|h| (h, self.show(&h))),
        };
        let (observed, threshold, text, passed) = match outcome {
            Err(why) => (None, None, why, false),
            Ok((held, text)) => (Some(held.left), Some(held.right), text, held.passed),
        };
        Verdict {
            name: self.name.clone(),
            expression: self.expression.clone(),
            route: self.route.clone(),
            observed,
            threshold,
            text,
            passed,
        }
    }

    /// Each window of `over` in the run's series: the first that failed,
    /// or the tightest when all held. Windows with no exchange are skipped.
    fn judge_windows(
        &self,
        report: &Report,
        over: std::time::Duration,
    ) -> Result<(Held, String), String> {
        let series = report
            .series
            .as_ref()
            .ok_or("the report has no time series")?;
        let over_ms = (over.as_millis() as u64).max(1);
        let mut windows: std::collections::BTreeMap<u64, Vec<(Counts, [StackTally; 2])>> =
            Default::default();
        for p in &series.points {
            let stacks = [StackTally::of(&p.legacy), StackTally::of(&p.new)];
            let [Ok(legacy), Ok(new)] = stacks else {
                return Err("the report's series histograms cannot be read".into());
            };
            let counts = Counts {
                total: p.total,
                matched: p.matched,
                failed: p.mismatched + p.errors + p.dropped,
            };
            windows
                .entry(p.at_ms / over_ms)
                .or_default()
                .push((counts, [legacy, new]));
        }
        let held: Vec<(u64, Held)> = windows
            .iter()
            .filter_map(|(k, points)| {
                let figures = Figures::window(points.iter().map(|(c, s)| (*c, s)));
                self.hold(&figures).ok().map(|h| (*k, h))
            })
            .collect();
        let span = |k: u64| {
            format!(
                "window {}–{}",
                crate::latency::human(k * over_ms * 1_000),
                crate::latency::human((k + 1) * over_ms * 1_000)
            )
        };
        let failing: Vec<&(u64, Held)> = held.iter().filter(|(_, h)| !h.passed).collect();
        if let Some((k, h)) = failing.first() {
            let text = format!(
                "{}: {} (failed in {} of {} windows)",
                span(*k),
                self.show(h),
                failing.len(),
                held.len()
            );
            return Ok((*h, text));
        }
        let (k, h) = held
            .iter()
            .min_by(|a, b| self.margin(&a.1).total_cmp(&self.margin(&b.1)))
            .ok_or("no window had exchanges")?;
        let text = format!(
            "all {} windows held; tightest {}: {}",
            held.len(),
            span(*k),
            self.show(h)
        );
        Ok((*h, text))
    }
}

/// Holds every gate against `report`, in order.
pub fn judge_all(gates: &[Gate], report: &Report) -> Vec<Verdict> {
    gates.iter().map(|g| g.judge(report)).collect()
}

fn show(kind: Kind, value: f64) -> String {
    match kind {
        Kind::Share => format!("{:.2}%", value * 100.0),
        Kind::Time => crate::latency::human(value.round().max(0.0) as u64),
        Kind::Count => decimal(value),
    }
}

/// The figures a gate reads: the run's, one route's, or one window's.
pub struct Figures {
    total: u64,
    matched: u64,
    /// Mismatched, errors and dropped: what `mismatch_rate` counts.
    failed: u64,
    /// Judged and faithful share, where kept.
    fidelity: Option<(u64, f64)>,
    /// Effect differences, where effects were collected (the whole run).
    effects: Option<u64>,
    /// The busiest engine's busy share, where measured (the whole run).
    engine_busy: Option<f64>,
    /// Per stack (legacy, new); kept for the run and its windows.
    errors: [u64; 2],
    dropped: [u64; 2],
    latency: [LatencySummary; 2],
    lag: [LatencySummary; 2],
}

impl Figures {
    fn run(report: &Report) -> Figures {
        let s = &report.summary;
        let per_stack = |dropped: bool| {
            [&report.errors.legacy, &report.errors.new].map(|errors| {
                errors
                    .iter()
                    .filter(|(kind, _)| (**kind == crate::results::ErrorKind::Dropped) == dropped)
                    .map(|(_, n)| n)
                    .sum()
            })
        };
        Figures {
            total: s.total,
            matched: s.matched,
            failed: s.mismatched + s.errors + s.dropped,
            fidelity: report.fidelity.as_ref().map(|f| (f.judged, f.rate)),
            effects: report.effects.as_ref().map(|e| e.mismatched),
            engine_busy: report.generator.as_ref().map(|g| g.most_busy()),
            errors: per_stack(false),
            dropped: per_stack(true),
            latency: [
                report.latency_corrected.legacy.clone(),
                report.latency_corrected.new.clone(),
            ],
            lag: [report.send_lag.legacy.clone(), report.send_lag.new.clone()],
        }
    }

    fn route(report: &Report, name: &str) -> Option<Figures> {
        let name = name.trim();
        let route = report
            .routes
            .iter()
            .find(|r| format!("{} {}", r.method, r.route) == name)?;
        let fidelity = report.fidelity.as_ref().and_then(|f| {
            f.routes
                .iter()
                .find(|r| r.method == route.method && r.route == route.route)
                .map(|r| (r.judged, r.rate))
        });
        Some(Figures {
            total: route.total,
            matched: route.matched,
            // A route's errors count its dropped exchanges too.
            failed: route.mismatched + route.errors,
            fidelity: fidelity.or(Some((0, 0.0))),
            effects: None,
            engine_busy: None,
            // Not kept per route: refused when the gate is read.
            errors: [0; 2],
            dropped: [0; 2],
            latency: [route.latency.legacy.clone(), route.latency.new.clone()],
            lag: Default::default(),
        })
    }

    /// A window of the run: the counts of its intervals added up, their
    /// histograms merged.
    pub fn window<'p>(points: impl IntoIterator<Item = (Counts, &'p [StackTally; 2])>) -> Figures {
        let mut counts = Counts::default();
        let mut stacks: [StackTally; 2] = Default::default();
        for (c, s) in points {
            counts.total += c.total;
            counts.matched += c.matched;
            counts.failed += c.failed;
            for (into, from) in stacks.iter_mut().zip(s) {
                into.add(from);
            }
        }
        Figures {
            total: counts.total,
            matched: counts.matched,
            failed: counts.failed,
            fidelity: None,
            effects: None,
            engine_busy: None,
            errors: [stacks[0].errors, stacks[1].errors],
            dropped: [stacks[0].dropped, stacks[1].dropped],
            latency: [
                stacks[0].histograms[1].summary(),
                stacks[1].histograms[1].summary(),
            ],
            lag: [
                stacks[0].histograms[2].summary(),
                stacks[1].histograms[2].summary(),
            ],
        }
    }

    fn value(&self, side: &Side) -> Result<f64, String> {
        match *side {
            Side::Quantity(Quantity::Share(v) | Quantity::Time(v) | Quantity::Count(v)) => Ok(v),
            Side::Metric(factor, metric) => Ok(factor * self.metric(metric)?),
        }
    }

    fn metric(&self, metric: Metric) -> Result<f64, String> {
        let share = |n: u64| match self.total {
            0 => Err("no exchanges".to_string()),
            total => Ok(n as f64 / total as f64),
        };
        match metric {
            Metric::Parity => share(self.matched),
            Metric::MismatchRate => share(self.failed),
            Metric::Fidelity => match self.fidelity {
                Some((judged, rate)) if judged > 0 => Ok(rate),
                _ => Err(
                    "fidelity not judged (no legacy answer to hold against a recorded one)"
                        .to_string(),
                ),
            },
            Metric::Errors(stack) => share(self.errors[stack as usize]),
            Metric::Dropped(stack) => share(self.dropped[stack as usize]),
            Metric::Latency(stack, stat) => stat.of(&self.latency[stack as usize]),
            Metric::Lag(stack, stat) => stat.of(&self.lag[stack as usize]),
            Metric::EffectsMismatched => self.effects.map(|n| n as f64).ok_or_else(|| {
                "no effects collected (--legacy-webhook-sink and --new-webhook-sink), or a \
                 route or window asked: effects are judged for the whole run"
                    .to_string()
            }),
            Metric::EngineBusy => self.engine_busy.ok_or_else(|| {
                "engines not measured (results re-judged without a replay)".to_string()
            }),
        }
    }
}

/// Exchanges of an interval by verdict, as a window adds them up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Exchanges.
    pub total: u64,
    /// Matched.
    pub matched: u64,
    /// Mismatched, errors and dropped.
    pub failed: u64,
}

impl Stat {
    fn of(self, l: &LatencySummary) -> Result<f64, String> {
        if l.count == 0 {
            return Err("no latencies measured".to_string());
        }
        Ok(match self {
            Stat::P50 => l.p50 as f64,
            Stat::P90 => l.p90 as f64,
            Stat::P99 => l.p99 as f64,
            Stat::P999 => l.p999 as f64,
            Stat::Max => l.max as f64,
            Stat::Mean => l.mean,
        })
    }

    fn parse(text: &str) -> Option<Stat> {
        Some(match text {
            "p50" | "median" => Stat::P50,
            "p90" => Stat::P90,
            "p99" => Stat::P99,
            "p99.9" | "p999" => Stat::P999,
            "max" => Stat::Max,
            "mean" | "avg" => Stat::Mean,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P99 => "p99",
            Stat::P999 => "p99.9",
            Stat::Max => "max",
            Stat::Mean => "mean",
        }
    }
}

impl Metric {
    fn kind(self) -> Kind {
        match self {
            Metric::Latency(..) | Metric::Lag(..) => Kind::Time,
            Metric::EffectsMismatched => Kind::Count,
            _ => Kind::Share,
        }
    }

    fn parse(text: &str) -> Result<Metric, String> {
        let stack = |s: &str| match s {
            "legacy" => Ok(Stack::Legacy),
            "new" => Ok(Stack::New),
            _ => Err(format!("{s:?} is not a stack (legacy or new)")),
        };
        let stat = |s: &str| {
            Stat::parse(s).ok_or(format!(
                "{s:?} is not a statistic (p50, p90, p99, p99.9, max, mean)"
            ))
        };
        let parts: Vec<&str> = text.splitn(2, '.').collect();
        Ok(match parts[..] {
            ["parity"] => Metric::Parity,
            ["mismatch_rate"] => Metric::MismatchRate,
            ["fidelity"] => Metric::Fidelity,
            ["effects", "mismatched"] => Metric::EffectsMismatched,
            ["engine", "busy"] => Metric::EngineBusy,
            ["errors", s] => Metric::Errors(stack(s)?),
            ["dropped", s] => Metric::Dropped(stack(s)?),
            ["lag", rest] => {
                let (s, st) = rest.split_once('.').ok_or(format!(
                    "{text:?}: expected lag.STACK.STAT, e.g. lag.new.p99"
                ))?;
                Metric::Lag(stack(s)?, stat(st)?)
            }
            [s @ ("legacy" | "new"), st] => Metric::Latency(stack(s)?, stat(st)?),
            _ => {
                return Err(format!(
                    "{text:?} is not a metric (parity, mismatch_rate, fidelity, errors.STACK, \
                     dropped.STACK, STACK.p99 and other percentiles, lag.STACK.p99, \
                     effects.mismatched, engine.busy)"
                ))
            }
        })
    }

    fn name(self) -> String {
        let stack = |s: Stack| match s {
            Stack::Legacy => "legacy",
            Stack::New => "new",
        };
        match self {
            Metric::Parity => "parity".into(),
            Metric::MismatchRate => "mismatch_rate".into(),
            Metric::Fidelity => "fidelity".into(),
            Metric::EffectsMismatched => "effects.mismatched".into(),
            Metric::EngineBusy => "engine.busy".into(),
            Metric::Errors(s) => format!("errors.{}", stack(s)),
            Metric::Dropped(s) => format!("dropped.{}", stack(s)),
            Metric::Latency(s, st) => format!("{}.{}", stack(s), st.name()),
            Metric::Lag(s, st) => format!("lag.{}.{}", stack(s), st.name()),
        }
    }
}

impl Side {
    fn kind(&self) -> Kind {
        match self {
            Side::Metric(_, m) => m.kind(),
            Side::Quantity(Quantity::Share(_)) => Kind::Share,
            Side::Quantity(Quantity::Time(_)) => Kind::Time,
            Side::Quantity(Quantity::Count(_)) => Kind::Count,
        }
    }
}

impl Op {
    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Eq => (left - right).abs() < 1e-9,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
        })
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |s: &Side| match s {
            Side::Metric(factor, m) if *factor == 1.0 => m.name(),
            Side::Metric(factor, m) => format!("{factor} * {}", m.name()),
            Side::Quantity(Quantity::Share(v)) => format!("{}%", decimal(v * 100.0)),
            Side::Quantity(Quantity::Time(us)) => format!("{}us", decimal(*us)),
            Side::Quantity(Quantity::Count(n)) => decimal(*n),
        };
        write!(f, "{} {} {}", side(&self.left), self.op, side(&self.right))
    }
}

/// `x` with at most six decimals, trailing zeros dropped: 99.9, not
/// 99.90000000000001.
fn decimal(x: f64) -> String {
    let text = format!("{x:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn parse_check(text: &str) -> Result<Check, String> {
    let ops = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    let (at, len, op) = ops
        .iter()
        .filter_map(|(s, op)| text.find(s).map(|at| (at, s.len(), *op)))
        .min_by_key(|(at, len, _)| (*at, usize::MAX - len))
        .ok_or("expected a comparison: <, <=, >, >= or ==")?;
    let (left, mut right) = (parse_side(&text[..at])?, parse_side(&text[at + len..])?);
    // A bare number beside a count is a count, not a share.
    if let (Kind::Count, Side::Quantity(Quantity::Share(v))) = (left.kind(), &right) {
        if !text[at + len..].contains('%') {
            right = Side::Quantity(Quantity::Count(*v));
        }
    }
    if matches!(left, Side::Quantity(_)) {
        return Err("the left side must be a metric, e.g. parity >= 99.9%".into());
    }
    match (left.kind(), right.kind()) {
        (a, b) if a == b => Ok(Check { left, op, right }),
        (Kind::Count, _) => Err("the left side is a count, the right is not (write 0)".into()),
        (_, Kind::Count) => Err("the right side is a count, the left is not".into()),
        (Kind::Share, _) => Err("the left side is a share, the right a time".into()),
        (Kind::Time, _) => {
            Err("the left side is a time, the right a share (write 250ms, not 250)".into())
        }
    }
}

fn parse_side(text: &str) -> Result<Side, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a side of the comparison is empty".into());
    }
    if let Some((factor, metric)) = text.split_once('*') {
        let factor: f64 = factor
            .trim()
            .parse()
            .map_err(|_| format!("{:?} is not a number", factor.trim()))?;
        return Ok(Side::Metric(factor, Metric::parse(metric.trim())?));
    }
    if text.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Ok(Side::Metric(1.0, Metric::parse(text)?));
    }
    parse_quantity(text).map(Side::Quantity)
}

fn parse_quantity(text: &str) -> Result<Quantity, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    Ok(match unit.trim() {
        "" => Quantity::Share(value),
        "%" => Quantity::Share(value / 100.0),
        "us" | "µs" => Quantity::Time(value),
        "ms" => Quantity::Time(value * 1e3),
        "s" => Quantity::Time(value * 1e6),
        other => return Err(format!("{other:?} is not a unit (%, us, ms, s)")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(text: &str) -> Result<Gate, GateError> {
        Gate::parse(text, text, None)
    }

    #[test]
    fn every_form_reads() {
        for text in [
            "parity >= 99.9%",
            "fidelity>=0.98",
            "mismatch_rate < 1%",
            "errors.new <= 0.1%",
            "dropped.legacy <= 1%",
            "new.p99 <= 1.10 * legacy.p99",
            "new.p99 < 250ms",
            "legacy.p99.9 < 1.5s",
            "new.mean > 800us",
            "lag.new.p99 < 5ms",
            "engine.busy < 90%",
        ] {
            gate(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        for (text, why) in [
            ("parity 99%", "comparison"),
            ("parity >= 250ms", "share, the right a time"),
            ("new.p99 < 250", "write 250ms"),
            ("99% <= parity", "left side must be a metric"),
            ("speed >= 2", "not a metric"),
            ("new.p98 < 1s", "not a statistic"),
            ("old.p99 < 1s", "not a metric"),
            ("errors.old <= 1%", "not a stack"),
            ("parity >= 99 pct", "not a unit"),
            ("parity >=", "empty"),
        ] {
            let error = gate(text).unwrap_err().to_string();
            assert!(error.contains(why), "{text}: {error}");
        }
        let per_route = Gate::parse("e", "errors.new <= 1%", Some("GET /x".into()));
        assert!(per_route.unwrap_err().why.contains("not kept per route"));
        let per_route = Gate::parse("e", "engine.busy < 90%", Some("GET /x".into()));
        assert!(per_route.unwrap_err().why.contains("not kept per route"));
        let windowed = gate("engine.busy < 90%")
            .unwrap()
            .windowed(std::time::Duration::from_secs(1), false);
        assert!(windowed.unwrap_err().why.contains("whole run"));
    }

    #[test]
    fn operators_hold_as_written() {
        assert!(Op::Lt.holds(1.0, 2.0) && !Op::Lt.holds(2.0, 2.0));
        assert!(Op::Le.holds(2.0, 2.0) && !Op::Le.holds(2.1, 2.0));
        assert!(Op::Gt.holds(3.0, 2.0) && !Op::Gt.holds(2.0, 2.0));
        assert!(Op::Ge.holds(2.0, 2.0) && !Op::Ge.holds(1.9, 2.0));
    }

    #[test]
    fn shorthands_read_back_as_expressions() {
        let g = Gate::max_mismatch_rate(0.01);
        assert_eq!(g.expression, "mismatch_rate <= 1%");
        assert_eq!(gate(&g.expression).unwrap().check, g.check);
        assert_eq!(Gate::min_fidelity(0.98).expression, "fidelity >= 98%");
    }

    #[test]
    fn effect_differences_are_a_count() {
        let g = gate("effects.mismatched == 0").unwrap();
        assert_eq!(g.check.right, Side::Quantity(Quantity::Count(0.0)));
        assert_eq!(g.check.op, Op::Eq);
        assert!(gate("effects.mismatched <= 2").is_ok());
        assert!(gate("effects.mismatched <= 10ms").is_err());
        let windowed = gate("effects.mismatched == 0")
            .unwrap()
            .windowed(std::time::Duration::from_secs(1), false);
        assert!(windowed.is_err(), "judged once the run is over");
    }
}
