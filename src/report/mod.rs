//! Reports: the parity report the judge folds results into, rendered as
//! `report.json` (format v1, `docs/report-format.md`), `summary.md` and a
//! terminal summary; shard reports merged (`tandem report merge`).

pub mod compare;
mod html;
pub mod junit;
mod markdown;
pub mod merge;
pub mod series;
mod terminal;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use html::{capacity_html, Html};
pub use junit::Junit;
pub use markdown::{step_summary, Markdown};
pub use terminal::Terminal;

use crate::diff::{Mismatch, MismatchKind};
use crate::latency::LatencySummary;
use crate::results::ErrorKind;

/// The value of `report.json`'s `format` field.
pub const FORMAT: &str = "tandem-report";
/// The report format version this build writes.
pub const VERSION: u32 = 2;

/// A parity report: the contents of `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Always `"tandem-report"`.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// What was replayed where.
    pub run: RunInfo,
    /// Counts over all exchanges.
    pub summary: Summary,
    /// Failed attempts by target and kind.
    pub errors: TargetErrors,
    /// Counts and latency per route, sorted by method then route.
    pub routes: Vec<RouteReport>,
    /// Mismatches grouped by (method, route, kind, path), most frequent first.
    pub mismatch_groups: Vec<MismatchGroup>,
    /// Latency of answered requests, from the actual send, per target.
    pub latency: SideLatency,
    /// Latency of answered requests from the time they were due (corrected
    /// for coordinated omission: includes any wait to be sent), per target.
    #[serde(default)]
    pub latency_corrected: SideLatency,
    /// Actual send time minus scheduled time, per target, for sent requests.
    #[serde(default)]
    pub send_lag: SideLatency,
    /// Differences also seen between two legacy answers to the same request,
    /// and so left out of `mismatch_groups` (present when learning noise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_noise: Option<LearnedNoise>,
    /// Whether the replay was faithful: the replayed legacy answers against
    /// the recorded ones (absent when no recorded answer was at hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<Fidelity>,
    /// The load each stack actually received, against the schedule: a
    /// stack that fell behind was tested at less than the asked load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<StackLoads>,
    /// How busy tandem's own replay engines were while they sent: near a
    /// whole core, the send lag and corrected latency may be tandem's limit
    /// rather than the stacks' (absent when re-judged from results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<Generator>,
    /// The ids and tokens followed on each stack (absent without
    /// correlation, `--no-correlate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<CorrelationReport>,
    /// Path templates learned from the capture (positions whose values are
    /// many and mostly distinct), beyond what each segment's shape shows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learned_routes: Vec<String>,
    /// Rules of the rules file that applied to nothing in this run.
    #[serde(default)]
    pub unused_rules: Vec<String>,
    /// Every latency histogram in serialized form, so that shard reports
    /// merge exactly (`tandem report merge`).
    #[serde(default)]
    pub histograms: Histograms,
    /// The run over time, interval by interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<series::Series>,
    /// The gates the run was held to, in order, each with its verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<crate::gate::Verdict>,
    /// The replay was stopped early (SIGINT, SIGTERM): the report covers
    /// what was sent before, and the run does not pass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// Why a windowed gate with `abort` stopped the run early, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    /// Input lines (of the capture, or of the results re-judged) that could
    /// not be read: skipped, named, counted, never silently dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<Unreadable>,
    /// Set by `tandem report merge --allow-partial` when shards are
    /// missing: which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
    /// What the stacks did besides answering (webhooks they called), tied
    /// to exchanges and compared; absent when no effects were collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects: Option<crate::effects::EffectsReport>,
}

/// Input lines that could not be read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unreadable {
    /// How many.
    pub lines: u64,
    /// The first [`Unreadable::KEPT`], each naming file, line and what is
    /// wrong.
    pub examples: Vec<String>,
}

impl Unreadable {
    /// Examples kept.
    pub const KEPT: usize = 20;

    /// From the errors of the lines, in line order; `None` when there are none.
    pub fn of<E: std::fmt::Display>(errors: &[E]) -> Option<Unreadable> {
        (!errors.is_empty()).then(|| Unreadable {
            lines: errors.len() as u64,
            examples: errors
                .iter()
                .take(Self::KEPT)
                .map(ToString::to_string)
                .collect(),
        })
    }

    /// Both counts, the examples of `a` first.
    pub fn add(a: Option<&Unreadable>, b: Option<&Unreadable>) -> Option<Unreadable> {
        let mut sum = a.cloned().or_else(|| b.cloned())?;
        if let (Some(_), Some(b)) = (a, b) {
            sum.lines += b.lines;
            sum.examples.extend(b.examples.iter().cloned());
            sum.examples.truncate(Self::KEPT);
        }
        Some(sum)
    }
}

/// Where a run came from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunInfo {
    /// The capture replayed.
    pub capture: String,
    /// Base URL of the legacy target.
    pub legacy: String,
    /// Base URL of the new target.
    pub new: String,
    /// Speed multiple of the recorded rate.
    pub speed: f64,
    /// The rules file applied, if any.
    pub rules: Option<String>,
    /// Wall-clock start, microseconds since the Unix epoch.
    pub started_at_unix_us: u64,
    /// Wall-clock length of the replay in milliseconds.
    pub duration_ms: u64,
    /// SHA-256 of the capture file (hex), when it was there to read: merge
    /// refuses shards of different captures by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_sha256: Option<String>,
    /// The shard replayed, `[index, count]` (`--shard I/N`); absent for a
    /// whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<(u32, u32)>,
}

/// Counts over all exchanges. `total = matched + mismatched + errors + dropped`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Exchanges replayed.
    pub total: u64,
    /// Both targets answered and no mismatch remained after the rules.
    pub matched: u64,
    /// Both targets answered and at least one mismatch remained.
    pub mismatched: u64,
    /// At least one target gave no answer.
    pub errors: u64,
    /// Not sent to at least one target by the harness (`--max-in-flight`,
    /// `--max-lag`), and none failed.
    #[serde(default)]
    pub dropped: u64,
    /// `matched / total`; 0 when nothing was replayed.
    pub parity: f64,
    /// `(mismatched + errors + dropped) / total`, what `--max-mismatch-rate` is held to; 1 when nothing was replayed.
    pub mismatch_rate: f64,
    /// Of the matched, those where both stacks answered 4xx or 5xx: alike,
    /// but no proof of parity (a replay that sends stale tokens gets 401
    /// from both).
    #[serde(default)]
    pub failed_alike: u64,
}

/// The load of each stack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StackLoads {
    /// The legacy stack.
    pub legacy: Load,
    /// The new stack.
    pub new: Load,
}

/// How busy tandem's replay engines were: what tells a stack's limit from
/// the load generator's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Generator {
    /// Each engine, in order (after a merge, each shard's in shard order).
    pub engines: Vec<EngineBusy>,
}

/// One replay engine over the span of its schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineBusy {
    /// The engine thread's CPU time, user and kernel, ms.
    pub cpu_ms: u64,
    /// Time it was ready to run but waited for a core other work on the
    /// machine held, ms.
    #[serde(default)]
    pub waited_ms: u64,
    /// Time its machine's host paused the virtual CPU under it while it
    /// ran, ms: not in `cpu_ms` (the kernel leaves steal time out of a
    /// thread's run time), estimated as `cpu_ms * s / (1 - s)`, `s` the
    /// share of the machine's busy time (not idle) its host took, at most
    /// `span_ms - cpu_ms - waited_ms`.
    #[serde(default)]
    pub paused_ms: u64,
    /// From the scheduled start to the engine's last job, ms.
    pub span_ms: u64,
    /// `(cpu_ms + waited_ms + paused_ms) / span_ms`: the share of the span
    /// the engine had work to do; near 1.0 it never idled, and sent as
    /// fast as it could.
    pub busy: f64,
    /// Of the CPU time of the machine it ran on, over the span, the share
    /// that machine's host took (steal time of a virtual machine: its vCPUs
    /// paused while they had work); 0 where not measured.
    #[serde(default)]
    pub stolen: f64,
}

/// One of the generator's reasons to doubt a run's figures: tandem's own
/// limit ([`Generator::warning`]) or its host's ([`Generator::host_warning`]).
pub type Caveat = fn(&Generator) -> Option<String>;

impl Generator {
    /// The reasons to doubt a run's figures, tandem's first.
    pub const CAVEATS: [Caveat; 2] = [Generator::warning, Generator::host_warning];

    /// An engine this busy or more has little time left to send on time:
    /// what it measured may be its own limit.
    pub const SATURATED: f64 = 0.9;

    /// From the replay's engines; `None` when there were none.
    pub fn of(loads: &[crate::replay::EngineLoad]) -> Option<Generator> {
        let engines = loads
            .iter()
            .map(|l| {
                let span = l.span.as_secs_f64();
                let busy = (l.cpu + l.waited + l.paused).as_secs_f64();
                EngineBusy {
                    cpu_ms: l.cpu.as_millis() as u64,
                    waited_ms: l.waited.as_millis() as u64,
                    paused_ms: l.paused.as_millis() as u64,
                    span_ms: l.span.as_millis() as u64,
                    busy: if span > 0.0 { busy / span } else { 0.0 },
                    stolen: l.stolen,
                }
            })
            .collect::<Vec<_>>();
        (!engines.is_empty()).then_some(Generator { engines })
    }

    /// The busiest engine.
    pub fn busiest(&self) -> Option<&EngineBusy> {
        self.engines.iter().max_by(|a, b| a.busy.total_cmp(&b.busy))
    }

    /// The busiest engine's busy share (0 without engines).
    pub fn most_busy(&self) -> f64 {
        self.busiest().map_or(0.0, |e| e.busy)
    }

    /// Whether some engine was [`Generator::SATURATED`].
    pub fn saturated(&self) -> bool {
        self.most_busy() >= Self::SATURATED
    }

    /// Whether an engine this busy, or one that waited for a core this
    /// share of the run, may have held the figures back: the one rule the
    /// warnings and a capacity step's verdict both follow.
    pub fn held_back(most_busy: f64, most_waited: f64) -> bool {
        most_busy >= Self::SATURATED || most_waited >= Self::CROWDED
    }

    /// E.g. `2 replay engines, the busiest 41% busy (running 38%, waiting
    /// for a core 3%)`, and `, paused by the host 9%` where it was.
    pub fn describe(&self) -> String {
        let Some(e) = self.busiest() else {
            return "no replay engine".into();
        };
        let share = |ms: u64| ms as f64 * 100.0 / e.span_ms.max(1) as f64;
        let paused = match share(e.paused_ms) {
            p if p >= 0.5 => format!(", paused by the host {p:.0}%"),
            _ => String::new(),
        };
        let busy = format!(
            "{:.0}% busy (running {:.0}%, waiting for a core {:.0}%{paused})",
            e.busy * 100.0,
            share(e.cpu_ms),
            share(e.waited_ms)
        );
        match self.engines.len() {
            1 => format!("1 replay engine, {busy}"),
            n => format!("{n} replay engines, the busiest {busy}"),
        }
    }

    /// An engine that waited for a core this share of the run or more had
    /// its sends held back by other work on the machine. Measured on two
    /// cores, from the engines' own account: two engines beside nginx
    /// waited 31-40% of the run at 20,000 exchanges/s (p99 send lag 0.9 ms
    /// and 35 ms in two runs; such runs fell 14.6% and 15.7% behind the
    /// rate in two bench runs of three), 13-23% at 10,000 (lag 0.3-0.4 ms); one engine
    /// 1-4% at 10,000; the demo's engine beside its in-process stacks
    /// 8-12%. A quarter is where the effect is plain; less is reported as a
    /// figure, not warned of.
    pub const CROWDED: f64 = 0.25;

    /// The largest share of its span an engine waited for a core.
    pub fn most_waited(&self) -> f64 {
        let waited = |e: &EngineBusy| e.waited_ms as f64 / e.span_ms.max(1) as f64;
        self.engines.iter().map(waited).fold(0.0, f64::max)
    }

    /// Why the figures may be tandem's: an engine was saturated, or kept
    /// waiting for a core.
    pub fn warning(&self) -> Option<String> {
        if self.saturated() {
            return Some(format!(
                "tandem's own limit may have been reached, {}: send lag and corrected latency may \
                 be tandem's, not the stacks' (give it more engines with --threads, cores of its \
                 own, or shards)",
                self.describe()
            ));
        }
        let most = self.most_waited();
        // Not saturated (above): held back, if at all, by its waits.
        Self::held_back(self.most_busy(), most).then(|| {
            format!(
                "tandem's engines were kept waiting for a core (up to {:.0}% of the run): other \
                 work on this machine took the cores and held their sends back, which the send \
                 lag and corrected latency include (give tandem cores of its own, or fewer \
                 engines with --threads)",
                most * 100.0
            )
        })
    }

    /// A host that takes this share of a machine's CPU time or more pauses
    /// the replay often enough to show in its figures. Measured on a
    /// virtual machine of two vCPUs: under 1% taken while it idled; at
    /// 10,000 exchanges/s, with 6-11% taken, a thread that only walked the
    /// schedule reached its slots late by p99 1.2-3.5 ms, and with 16-27%
    /// taken tandem's sends by p99 7.8-60.9 ms.
    pub const STOLEN: f64 = 0.10;

    /// The largest share of its machine's CPU time a host took while an
    /// engine ran.
    pub fn most_stolen(&self) -> f64 {
        self.engines.iter().map(|e| e.stolen).fold(0.0, f64::max)
    }

    /// Why send lag and latency may be the host's: it paused the machine
    /// that replayed (steal time) for [`Generator::STOLEN`] of its CPU time
    /// or more.
    pub fn host_warning(&self) -> Option<String> {
        let stolen = self.most_stolen();
        (stolen >= Self::STOLEN).then(|| {
            format!(
                "the host of the machine that replayed took {:.0}% of its CPU time (steal time: \
                 its virtual CPUs were paused while they had work): send lag and corrected \
                 latency include those pauses (replay from machines whose steal stays low)",
                stolen * 100.0
            )
        })
    }
}

/// What one stack received of the schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Requests scheduled for it.
    pub scheduled: u64,
    /// Of which sent.
    pub sent: u64,
    /// Requests per second the schedule asked, over its span.
    pub scheduled_per_s: f64,
    /// Requests per second it received, over the span of the actual sends.
    pub achieved_per_s: f64,
    /// Of the sent, those sent a second time on a new connection: the
    /// reused connection closed before any byte of an answer.
    #[serde(default)]
    pub retried: u64,
}

impl Load {
    /// Below 95% of the asked rate: this stack was tested at a lighter load.
    pub fn fell_behind(&self) -> bool {
        self.achieved_per_s < 0.95 * self.scheduled_per_s
    }

    /// E.g. `398.1/s of 400.0/s scheduled (fell behind)`.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{:.1}/s of {:.1}/s scheduled",
            self.achieved_per_s, self.scheduled_per_s
        );
        if self.fell_behind() {
            text.push_str(" (fell behind)");
        }
        if self.retried > 0 {
            text.push_str(&format!(
                " ({} sent again on a new connection: the reused one closed unanswered)",
                self.retried
            ));
        }
        text
    }
}

/// What correlation followed and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CorrelationReport {
    /// The links followed: producer route and place, consumer route and
    /// place, how often each held in the capture, and whether a rule wrote it.
    pub links: Vec<crate::correlate::Link>,
    /// Exchanges where some stack's request carried a recorded value it
    /// should have replaced (its producer failed, lacked the value, or had
    /// not answered in time): apart from target errors.
    pub unresolved: u64,
    /// Why, as `[reason, count]`, most frequent first (exchange ids as `#N`).
    pub reasons: Vec<(String, u64)>,
    /// Mismatches dropped because both values stand for the same recorded one.
    pub settled: u64,
}

/// Below this fidelity the summaries say first that parity cannot be trusted.
pub const LOW_FIDELITY: f64 = 0.9;

/// How faithful the replay was: each replayed legacy answer against the
/// answer recorded for the same request, by status and body structure
/// (fields and their types, under the same rules; values may differ, since
/// ids and times do). A replay that sends a stale token gets 401 where 201
/// was recorded: unfaithful, whatever the two stacks say to each other.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    /// Exchanges with a recorded answer and a replayed legacy answer.
    pub judged: u64,
    /// Of which faithful: same status, same body structure.
    pub faithful: u64,
    /// `faithful / judged`; 0 when nothing was judged.
    pub rate: f64,
    /// Per route, sorted by method then route.
    pub routes: Vec<RouteFidelity>,
    /// What differs, grouped like mismatches, most frequent first.
    pub divergences: Vec<Divergence>,
}

/// Fidelity of one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteFidelity {
    /// Request method.
    pub method: String,
    /// Path template.
    pub route: String,
    /// Exchanges judged.
    pub judged: u64,
    /// Of which faithful.
    pub faithful: u64,
    /// `faithful / judged`.
    pub rate: f64,
}

/// Exchanges of one route whose replayed legacy answer departs from the
/// recorded one in the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// Request method.
    pub method: String,
    /// Path template.
    pub route: String,
    /// What departs: `status`, `missing_field`, `extra_field` or `type`.
    pub kind: MismatchKind,
    /// JSON path (indices as `[*]`); null for status.
    pub path: Option<String>,
    /// The recorded side: the status for `status` (part of the group), the
    /// value at the first exchange otherwise.
    pub recorded: Option<String>,
    /// The replayed legacy side, likewise.
    pub replayed: Option<String>,
    /// Exchanges showing it.
    pub count: u64,
    /// Share of the route's judged exchanges showing it (0..1).
    pub rate: f64,
    /// Id of the first such exchange.
    pub first_exchange: u64,
}

impl Fidelity {
    /// True when low enough that parity cannot be trusted.
    pub fn is_low(&self) -> bool {
        self.rate < LOW_FIDELITY
    }

    /// One line saying why parity cannot be trusted, naming the largest
    /// divergence.
    pub fn warning(&self) -> String {
        let mut text = format!(
            "the replay was not faithful, so the parity figure cannot be trusted: \
             only {} of legacy's replayed answers match what was recorded (status and body structure)",
            percent(self.rate)
        );
        if let Some(d) = self.divergences.first() {
            text.push_str(&format!("; largest divergence: {}", d.describe()));
        }
        text
    }
}

impl Divergence {
    /// E.g. `POST /api/orders: recorded 201, legacy 401 on 462 exchanges`.
    pub fn describe(&self) -> String {
        let side = |v: &Option<String>| v.clone().unwrap_or_else(|| "absent".into());
        let what = match (&self.kind, &self.path) {
            (MismatchKind::Status, _) => String::new(),
            (kind, Some(path)) => format!("{} {path}: ", kind.as_str()),
            (kind, None) => format!("{}: ", kind.as_str()),
        };
        format!(
            "{} {}: {what}recorded {}, legacy {} on {} exchanges",
            self.method,
            self.route,
            side(&self.recorded),
            side(&self.replayed),
            self.count
        )
    }
}

/// Failed attempts per target, by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetErrors {
    /// Failures of the legacy target.
    pub legacy: BTreeMap<ErrorKind, u64>,
    /// Failures of the new target.
    pub new: BTreeMap<ErrorKind, u64>,
}

/// Counts and latency of one route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteReport {
    /// Request method.
    pub method: String,
    /// Path template, e.g. `/api/orders/{id}`.
    pub route: String,
    /// Exchanges on this route.
    pub total: u64,
    /// Of which matched.
    pub matched: u64,
    /// Of which mismatched.
    pub mismatched: u64,
    /// Of which errors (and requests the harness dropped).
    pub errors: u64,
    /// Of which both targets answered: the base of mismatch group rates.
    #[serde(default)]
    pub compared: u64,
    /// Latency on this route per target.
    pub latency: SideLatency,
}

/// Latency histograms in HdrHistogram's V2 deflate form, base64.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histograms {
    /// `latency.legacy`.
    pub legacy: String,
    /// `latency.new`.
    pub new: String,
    /// `latency_corrected.legacy`.
    pub legacy_corrected: String,
    /// `latency_corrected.new`.
    pub new_corrected: String,
    /// `send_lag.legacy`.
    pub legacy_lag: String,
    /// `send_lag.new`.
    pub new_lag: String,
    /// Per route (`"METHOD /template"`): `[legacy, new]`.
    pub routes: BTreeMap<String, [String; 2]>,
}

/// One latency summary per target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SideLatency {
    /// The legacy target.
    pub legacy: LatencySummary,
    /// The new target.
    pub new: LatencySummary,
}

/// All exchanges of one route with the same kind of mismatch at the same path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MismatchGroup {
    /// Request method.
    pub method: String,
    /// Path template.
    pub route: String,
    /// What differs.
    pub kind: MismatchKind,
    /// JSON path (array indices as `[*]`) or header name; null for status and text bodies.
    pub path: Option<String>,
    /// Exchanges showing this mismatch.
    pub count: u64,
    /// Id of the first such exchange.
    pub first_exchange: u64,
    /// Id of the last such exchange.
    pub last_exchange: u64,
    /// Share of the route's compared exchanges showing it (0..1).
    pub rate: f64,
    /// The first few occurrences in full (at most three).
    pub examples: Vec<Example>,
}

/// One occurrence of a mismatch: the request and both answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Example {
    /// Exchange id in the capture and the results file.
    pub exchange_id: u64,
    /// The request, bodies shortened, credentials redacted.
    pub request: MessageView,
    /// The legacy answer.
    pub legacy: MessageView,
    /// The new answer.
    pub new: MessageView,
    /// The mismatches of this group in this exchange, at their concrete paths
    /// (with a unified diff for text bodies).
    pub mismatches: Vec<Mismatch>,
}

/// A message as shown in a report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MessageView {
    /// `METHOD target` for a request, the status code for an answer.
    pub line: String,
    /// Headers, credentials redacted.
    pub headers: Vec<crate::capture::Header>,
    /// The body as text (lossy), shortened to 2,000 characters.
    pub body: String,
}

/// What noise learning found and how it decided.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LearnedNoise {
    /// The second legacy target.
    pub legacy2: String,
    /// A group is noise unless its rate exceeds the noise rate by this share of it.
    pub relative_threshold: f64,
    /// ... and by at least this much (0..1).
    pub absolute_threshold: f64,
    /// ... with a two-proportion z-score above this (0 in reports written
    /// before it was kept).
    #[serde(default)]
    pub z_threshold: f64,
    /// The groups judged noise.
    pub groups: Vec<NoiseGroup>,
    /// The counts behind the judgment, so that shard reports merge into
    /// the judgment one run over all their exchanges makes (absent in
    /// reports written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<NoiseEvidence>,
}

/// What noise is judged from: legacy-vs-legacy counts, the groups judged
/// noise in full, and which groups each mismatched exchange showed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NoiseEvidence {
    /// Exchanges with two legacy answers, per route.
    pub compared: Vec<RouteCount>,
    /// Exchanges whose two legacy answers differ, per group.
    pub legacy_differences: Vec<GroupCount>,
    /// The groups judged noise, as `mismatch_groups` would list them.
    pub noise_mismatch_groups: Vec<MismatchGroup>,
    /// Mismatched exchanges (legacy vs new), counted by route and the set of
    /// groups they showed: an exchange whose every group is noise matches.
    pub mismatch_sets: Vec<MismatchSet>,
}

/// A count on one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteCount {
    /// Request method.
    pub method: String,
    /// Path template.
    pub route: String,
    /// How many.
    pub count: u64,
}

/// A count of one mismatch group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCount {
    /// Request method.
    pub method: String,
    /// Path template.
    pub route: String,
    /// What differs.
    pub kind: MismatchKind,
    /// JSON path or header name.
    pub path: Option<String>,
    /// How many exchanges.
    pub count: u64,
}

/// Mismatch groups of one route, as (kind, path).
pub type GroupSet = Vec<(MismatchKind, Option<String>)>;

/// Mismatched exchanges of one route that showed exactly these groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MismatchSet {
    /// Request method.
    pub method: String,
    /// Path template.
    pub route: String,
    /// The groups, as (kind, path), sorted.
    pub groups: GroupSet,
    /// How many exchanges.
    pub exchanges: u64,
}

/// A difference that two legacy answers also show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoiseGroup {
    /// Request method.
    pub method: String,
    /// Path template.
    pub route: String,
    /// What differs.
    pub kind: MismatchKind,
    /// JSON path or header name.
    pub path: Option<String>,
    /// Share of legacy-vs-new comparisons on the route showing it.
    pub diff_rate: f64,
    /// Share of legacy-vs-legacy comparisons on the route showing it.
    pub noise_rate: f64,
}

impl Summary {
    /// Sets `parity` and `mismatch_rate` from the counts: the one gate
    /// formula, `(mismatched + errors + dropped) / total`. Dropped exchanges
    /// count against the gate: an exchange the harness could not send in
    /// time was not shown to match.
    pub fn finish_rates(&mut self) {
        if self.total > 0 {
            let total = self.total as f64;
            self.parity = self.matched as f64 / total;
            self.mismatch_rate = (self.mismatched + self.errors + self.dropped) as f64 / total;
        } else {
            self.parity = 0.0;
            self.mismatch_rate = 1.0;
        }
    }
}

/// Most frequent first, then by method, route, kind and path.
pub(crate) fn sort_groups(groups: &mut [MismatchGroup]) {
    groups.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| {
            (&a.method, &a.route, a.kind, &a.path).cmp(&(&b.method, &b.route, b.kind, &b.path))
        })
    });
}

/// The files a report is written as, in its run directory.
pub const FILE_NAMES: [&str; 3] = ["report.json", "summary.md", "report.html"];

impl Report {
    /// Holds the run to `gates`: their verdicts go into the report.
    pub fn apply_gates(&mut self, gates: &[crate::gate::Gate]) {
        self.gates = crate::gate::judge_all(gates, self);
    }

    /// Whether the run passes: not interrupted, and every gate held.
    pub fn passed(&self) -> bool {
        !self.interrupted && self.aborted.is_none() && self.gates.iter().all(|g| g.passed)
    }

    /// Reads a `report.json`.
    pub fn load(path: &Path) -> anyhow::Result<Report> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read report", path.display()))?;
        let report: Report = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a tandem report", path.display()))?;
        anyhow::ensure!(
            report.format == FORMAT && report.version == VERSION,
            "{}: report format {} v{} is not supported (this build reads {FORMAT} v{VERSION})",
            path.display(),
            report.format,
            report.version
        );
        Ok(report)
    }

    /// Writes [`FILE_NAMES`] into `dir`;
    /// returns the JSON's path.
    pub fn write_files(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
        let json_path = dir.join("report.json");
        crate::output::write_with(&json_path, |out| {
            serde_json::to_writer_pretty(&mut *out, self)?;
            Ok(out.write_all(b"\n")?)
        })?;
        crate::output::write_with(&dir.join("summary.md"), |out| {
            Ok(Markdown.render(self, out)?)
        })?;
        crate::output::write_with(&dir.join("report.html"), |out| Ok(Html.render(self, out)?))?;
        Ok(json_path)
    }
}

/// One output format of a report.
pub trait Render {
    /// Writes `report` to `out`.
    fn render(&self, report: &Report, out: &mut dyn Write) -> std::io::Result<()>;
}

/// What people must know before reading the figures: input lines
/// skipped (with the first of them), shards missing from a merge.
fn warnings(r: &Report) -> Vec<String> {
    let unreadable = r.unreadable.as_ref().map(|u| {
        format!(
            "{} input lines could not be read and were skipped (the first: {})",
            u.lines,
            u.examples.first().map_or("", String::as_str)
        )
    });
    let partial = r
        .partial
        .as_ref()
        .map(|missing| format!("partial merge: {missing}; the figures cover the shards given"));
    let generator = Generator::CAVEATS
        .into_iter()
        .filter_map(|caveat| r.generator.as_ref().and_then(caveat));
    unreadable
        .into_iter()
        .chain(partial)
        .chain(generator)
        .collect()
}

/// The verdict line: `PASSED`, or `FAILED` with why.
fn verdict(r: &Report) -> Option<String> {
    if r.interrupted {
        return Some(
            "FAILED: the run was interrupted; the report covers what was sent before the stop"
                .into(),
        );
    }
    if let Some(why) = &r.aborted {
        return Some(format!("FAILED: {why}"));
    }
    if r.gates.is_empty() {
        return None;
    }
    let failed = r.gates.iter().filter(|g| !g.passed).count();
    Some(match failed {
        0 => format!("PASSED: {} of {} gates held", r.gates.len(), r.gates.len()),
        n => format!("FAILED: {n} of {} gates failed", r.gates.len()),
    })
}

/// One gate for people: `parity >= 99.9%: 99.82% >= 99.90%`, with its route.
fn gate_line(g: &crate::gate::Verdict) -> String {
    let route = g
        .route
        .as_ref()
        .map_or(String::new(), |r| format!(" on {r}"));
    let name = if g.name == g.expression {
        String::new()
    } else {
        format!("{}: ", g.name)
    };
    format!("{name}{}{route} ({})", g.expression, g.text)
}

fn percent(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::EngineLoad;
    use std::time::Duration;

    fn load(cpu_ms: u64, waited_ms: u64, span_ms: u64) -> EngineLoad {
        EngineLoad {
            cpu: Duration::from_millis(cpu_ms),
            waited: Duration::from_millis(waited_ms),
            paused: Duration::ZERO,
            span: Duration::from_millis(span_ms),
            stolen: 0.0,
        }
    }

    #[test]
    fn an_engine_is_busy_while_it_runs_or_waits_for_a_core() {
        assert_eq!(Generator::of(&[]), None);
        let idle = Generator::of(&[load(300, 100, 2_000), load(500, 0, 2_000)]).unwrap();
        assert_eq!(idle.engines[0].busy, 0.2);
        assert_eq!(idle.busiest().unwrap().cpu_ms, 500);
        assert!(!idle.saturated() && idle.warning().is_none());
        assert_eq!(
            idle.describe(),
            "2 replay engines, the busiest 25% busy (running 25%, waiting for a core 0%)"
        );
        // Running 60% and ready but kept off a core 35%: it never idled.
        let full = Generator::of(&[load(600, 350, 1_000)]).unwrap();
        assert!(full.saturated());
        let warning = full.warning().unwrap();
        assert!(
            warning.starts_with(
                "tandem's own limit may have been reached, 1 replay engine, 95% busy \
                 (running 60%, waiting for a core 35%)"
            ),
            "{warning}"
        );
        let report_of = |generator| Report {
            generator,
            ..serde_json::from_value(serde_json::json!({
                "format": FORMAT, "version": VERSION, "run": RunInfo::default(),
                "summary": Summary::default(), "errors": {"legacy": {}, "new": {}},
                "routes": [], "mismatch_groups": [], "latency": SideLatency::default(),
            }))
            .unwrap()
        };
        assert_eq!(warnings(&report_of(Some(full))), vec![warning]);
        assert!(warnings(&report_of(Some(idle))).is_empty());
        // Not saturated, but kept off a core 30% of the run; 20% is not
        // warned of.
        let crowded = Generator::of(&[load(100, 20, 1_000), load(390, 300, 1_000)]).unwrap();
        assert!(!crowded.saturated());
        let warning = crowded.warning().unwrap();
        assert!(
            warning.starts_with("tandem's engines were kept waiting for a core (up to 30%"),
            "{warning}"
        );
        assert!(Generator::of(&[load(390, 200, 1_000)])
            .unwrap()
            .warning()
            .is_none());
        // A span of nothing (a schedule with no job) is not a division by 0.
        assert_eq!(
            Generator::of(&[load(0, 0, 0)]).unwrap().engines[0].busy,
            0.0
        );
    }

    #[test]
    fn a_host_that_paused_the_replay_is_warned_of() {
        let on = |stolen: f64| EngineLoad {
            stolen,
            ..load(300, 0, 1_000)
        };
        let quiet = Generator::of(&[on(0.0), on(0.09)]).unwrap();
        assert_eq!(quiet.most_stolen(), 0.09);
        assert!(quiet.host_warning().is_none());
        // One shard's machine paused (after a merge each engine keeps its
        // own machine's figure): warned of, though no engine was busy.
        let paused = Generator::of(&[on(0.02), on(0.27)]).unwrap();
        assert!(!paused.saturated() && paused.warning().is_none());
        let warning = paused.host_warning().expect("27% stolen");
        assert!(
            warning.starts_with("the host of the machine that replayed took 27% of its CPU time"),
            "{warning}"
        );
        let report = Report {
            generator: Some(paused),
            ..serde_json::from_value(serde_json::json!({
                "format": FORMAT, "version": VERSION, "run": RunInfo::default(),
                "summary": Summary::default(), "errors": {"legacy": {}, "new": {}},
                "routes": [], "mismatch_groups": [], "latency": SideLatency::default(),
            }))
            .unwrap()
        };
        assert_eq!(warnings(&report), vec![warning]);
    }

    /// Measured in CI: an engine asked 50,000 exchanges/s ran 82% of its
    /// span and waited for a core 8% while the host took 10% of the
    /// machine. Steal time is in neither figure; the engine never idled.
    #[test]
    fn an_engine_the_host_paused_while_it_had_work_was_busy() {
        let paused = EngineLoad {
            stolen: 0.1024,
            ..load(822, 76, 1_004)
        }
        .paused_by_host(0.1024);
        let generator = Generator::of(&[paused]).unwrap();
        let engine = &generator.engines[0];
        assert_eq!(engine.paused_ms, 93);
        assert!((0.98..0.99).contains(&engine.busy), "{engine:?}");
        assert!(generator.saturated());
        assert!(
            generator
                .describe()
                .ends_with("99% busy (running 82%, waiting for a core 8%, paused by the host 9%)"),
            "{}",
            generator.describe()
        );
        // A quiet host adds nothing, and is not named.
        let quiet = Generator::of(&[load(822, 76, 1_004)]).unwrap();
        assert_eq!(quiet.engines[0].paused_ms, 0);
        assert!(!quiet.saturated() && !quiet.describe().contains("paused"));
        // A machine paused throughout does not divide by zero.
        let stopped = load(100, 0, 1_000).paused_by_host(1.0);
        assert_eq!(stopped.paused, Duration::from_millis(900));
        // The other core paused more than the engine's: the estimate is
        // held to the span, never more than wholly busy.
        let full = load(900, 50, 1_000).paused_by_host(0.3);
        assert_eq!(full.paused, Duration::from_millis(50));
        assert_eq!(Generator::of(&[full]).unwrap().engines[0].busy, 1.0);
    }
}
