use std::collections::{BTreeMap, HashMap};

use super::{
    Example, GroupCount, GroupSet, Histograms, LearnedNoise, MessageView, MismatchGroup,
    MismatchSet, NoiseEvidence, NoiseGroup, Report, RouteCount, RouteReport, RunInfo, SideLatency,
    Summary, TargetErrors,
};
use crate::capture::{Header, Request, Response};
use crate::diff::{Differ, Mismatch, MismatchKind, RouteRules};
use crate::latency::Latency;
use crate::results::{Attempt, ErrorKind, ExchangeResult};
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

/// Thresholds for telling real differences from noise (as in Diffy): a
/// group is real when its rate exceeds the legacy-vs-legacy rate by more
/// than `relative` of that rate and by more than `absolute`, and the excess
/// is significant (a two-proportion z-score above `z`): a field that differs
/// by chance in 4 of 50 answers against 1 of 50 is noise, not a finding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseThresholds {
    /// Share of the noise rate, e.g. 0.2.
    pub relative: f64,
    /// Absolute rate, e.g. 0.01.
    pub absolute: f64,
    /// Least z-score of the excess, e.g. 2.58 (99% two-sided).
    pub z: f64,
}

impl Default for NoiseThresholds {
    fn default() -> Self {
        NoiseThresholds {
            relative: 0.2,
            absolute: 0.01,
            z: 2.58,
        }
    }
}

/// Folds results, one at a time, into a [`Report`]. Memory grows with the
/// number of routes and mismatch groups, and, when learning noise, by a few
/// bytes per mismatched exchange.
pub struct ReportBuilder {
    differ: Differ,
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
}

#[derive(Default)]
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
struct GroupKey {
    route: Route,
    kind: MismatchKind,
    path: Option<String>,
}

struct GroupTally {
    key: GroupKey,
    count: u64,
    first: u64,
    last: u64,
    examples: Vec<Example>,
}

/// Legacy-vs-legacy comparisons, and what each mismatched exchange hit, so
/// that verdicts can be revised once the noise is known.
struct Noise {
    legacy2: String,
    thresholds: NoiseThresholds,
    counts: HashMap<GroupKey, u64>,
    compared: HashMap<Route, u64>,
    hits: Vec<(Route, Vec<usize>)>,
}

impl ReportBuilder {
    /// A builder comparing answers with `differ`.
    pub fn new(differ: Differ, run: RunInfo) -> ReportBuilder {
        ReportBuilder {
            differ,
            run,
            summary: Summary::default(),
            errors: TargetErrors::default(),
            routes: BTreeMap::new(),
            groups: Vec::new(),
            group_index: HashMap::new(),
            legacy: Latency::default(),
            new: Latency::default(),
            corrected: Default::default(),
            lag: Default::default(),
            noise: None,
        }
    }

    /// Learn noise from second legacy answers (`legacy2` names the target).
    pub fn learn_noise(mut self, legacy2: String, thresholds: NoiseThresholds) -> ReportBuilder {
        self.noise = Some(Noise {
            legacy2,
            thresholds,
            counts: HashMap::new(),
            compared: HashMap::new(),
            hits: Vec::new(),
        });
        self
    }

    /// Adds one exchange's result.
    pub fn add(&mut self, result: &ExchangeResult) -> Verdict {
        let route = Route::of(&result.request.method, &result.request.target);
        let (differences, noise) = self.compare(&route, result);
        if let Some(noise) = noise {
            self.learn(&route, noise);
        }
        let verdict = self.judge(&route, result, differences);
        let tally = self.routes.entry(route).or_default();
        tally.total += 1;
        self.summary.total += 1;
        match verdict {
            Verdict::Matched => (tally.matched += 1, self.summary.matched += 1),
            Verdict::Mismatched(_) => (tally.mismatched += 1, self.summary.mismatched += 1),
            Verdict::Error => (tally.errors += 1, self.summary.errors += 1),
            Verdict::Dropped => (tally.errors += 1, self.summary.dropped += 1),
        };
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
            let dropped = attempt
                .error
                .as_ref()
                .is_some_and(|e| e.kind == ErrorKind::Dropped);
            if !dropped {
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

    /// Counts what differs between the two legacy answers.
    fn learn(&mut self, route: &Route, differences: Vec<Mismatch>) {
        let Some(noise) = self.noise.as_mut() else {
            return;
        };
        *noise.compared.entry(route.clone()).or_default() += 1;
        let mut seen = Vec::new();
        for m in differences {
            let key = group_key(route, &m);
            if !seen.contains(&key) {
                *noise.counts.entry(key.clone()).or_default() += 1;
                seen.push(key);
            }
        }
    }

    fn judge(
        &mut self,
        route: &Route,
        result: &ExchangeResult,
        differences: Option<Vec<Mismatch>>,
    ) -> Verdict {
        let dropped = |a: &Attempt| {
            a.error
                .as_ref()
                .is_some_and(|e| e.kind == ErrorKind::Dropped)
        };
        let failed = |a: &Attempt| {
            a.error
                .as_ref()
                .is_some_and(|e| e.kind != ErrorKind::Dropped)
        };
        if failed(&result.legacy) || failed(&result.new) {
            return Verdict::Error;
        }
        if dropped(&result.legacy) || dropped(&result.new) {
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
                let group = &mut self.groups[index];
                group.count += 1;
                group.first = group.first.min(result.id);
                group.last = group.last.max(result.id);
                if group.examples.len() < EXAMPLES {
                    group.examples.push(example(result, legacy, new, &rules));
                }
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
            noise.hits.push((route.clone(), hit));
        }
        Verdict::Mismatched(mismatches.len())
    }

    /// The finished report.
    pub fn finish(self) -> Report {
        let ReportBuilder {
            differ,
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
            ..
        } = self;
        let noisy = judge_noise(&groups, &routes, noise.as_ref());
        if let Some(noise) = &noise {
            revise_verdicts(noise, &noisy, &mut summary, &mut routes);
        }
        finish_rates(&mut summary);
        let sets = noise.as_ref().map(|n| mismatch_sets(n, &groups));
        let mut mismatch_groups = Vec::new();
        let (mut noise_groups, mut noise_mismatch_groups) = (Vec::new(), Vec::new());
        for (g, rates) in groups.into_iter().zip(&noisy) {
            let compared = routes.get(&g.key.route).map_or(1, |r| r.compared.max(1));
            match rates {
                Some((diff_rate, noise_rate)) => {
                    noise_groups.push(noise_group(&g, *diff_rate, *noise_rate));
                    noise_mismatch_groups.push(mismatch_group(g, compared));
                }
                None => mismatch_groups.push(mismatch_group(g, compared)),
            }
        }
        sort_groups(&mut mismatch_groups);
        sort_groups(&mut noise_mismatch_groups);
        let learned_noise = noise.map(|n| LearnedNoise {
            legacy2: n.legacy2.clone(),
            relative_threshold: n.thresholds.relative,
            absolute_threshold: n.thresholds.absolute,
            z_threshold: n.thresholds.z,
            groups: noise_groups,
            evidence: Some(NoiseEvidence {
                compared: n
                    .compared
                    .iter()
                    .map(|(route, &count)| RouteCount {
                        method: route.method.clone(),
                        route: route.template.clone(),
                        count,
                    })
                    .collect(),
                legacy_differences: n
                    .counts
                    .iter()
                    .map(|(key, &count)| GroupCount {
                        method: key.route.method.clone(),
                        route: key.route.template.clone(),
                        kind: key.kind,
                        path: key.path.clone(),
                        count,
                    })
                    .collect(),
                noise_mismatch_groups,
                mismatch_sets: sets.unwrap_or_default(),
            }),
        });
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
            format: super::FORMAT.to_string(),
            version: super::VERSION,
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
            unused_rules: differ.unused_rules(),
            histograms,
            gate: None,
        }
    }
}

/// For each group, `Some((diff_rate, noise_rate))` when it is noise.
fn judge_noise(
    groups: &[GroupTally],
    routes: &BTreeMap<Route, RouteTally>,
    noise: Option<&Noise>,
) -> Vec<Option<(f64, f64)>> {
    groups
        .iter()
        .map(|g| {
            let noise = noise?;
            let noise_count = *noise.counts.get(&g.key)?;
            let noise_base = *noise.compared.get(&g.key.route)?;
            let base = routes.get(&g.key.route).map_or(0, |r| r.compared);
            if base == 0 || noise_base == 0 {
                return None;
            }
            is_noise(
                (g.count, base),
                (noise_count, noise_base),
                &noise.thresholds,
            )
        })
        .collect()
}

/// Whether a group seen in `diff` (count, out of) legacy-vs-new comparisons
/// and `noise` legacy-vs-legacy ones is noise: `Some((diff_rate,
/// noise_rate))` if so.
pub(super) fn is_noise(
    diff: (u64, u64),
    noise: (u64, u64),
    t: &NoiseThresholds,
) -> Option<(f64, f64)> {
    let diff_rate = diff.0 as f64 / diff.1 as f64;
    let noise_rate = noise.0 as f64 / noise.1 as f64;
    let excess = diff_rate - noise_rate;
    let real =
        excess > t.absolute && excess > t.relative * noise_rate && z_score(diff, noise) > t.z;
    (!real).then_some((diff_rate, noise_rate))
}

/// Mismatched exchanges counted by route and the set of groups they showed.
fn mismatch_sets(noise: &Noise, groups: &[GroupTally]) -> Vec<MismatchSet> {
    let mut sets: BTreeMap<(&Route, GroupSet), u64> = BTreeMap::new();
    for (route, hit) in &noise.hits {
        let mut set: Vec<_> = hit
            .iter()
            .map(|&i| (groups[i].key.kind, groups[i].key.path.clone()))
            .collect();
        set.sort();
        *sets.entry((route, set)).or_default() += 1;
    }
    sets.into_iter()
        .map(|((route, groups), exchanges)| MismatchSet {
            method: route.method.clone(),
            route: route.template.clone(),
            groups,
            exchanges,
        })
        .collect()
}

/// Most frequent first, then by method, route, kind and path.
pub(super) fn sort_groups(groups: &mut [MismatchGroup]) {
    groups.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| {
            (&a.method, &a.route, a.kind, &a.path).cmp(&(&b.method, &b.route, b.kind, &b.path))
        })
    });
}

/// The two-proportion z-score of `a` (count, out of) over `b`: how many
/// standard errors apart the two rates are.
fn z_score(a: (u64, u64), b: (u64, u64)) -> f64 {
    let (ra, rb) = (a.0 as f64 / a.1 as f64, b.0 as f64 / b.1 as f64);
    let pooled = (a.0 + b.0) as f64 / (a.1 + b.1) as f64;
    let error = (pooled * (1.0 - pooled) * (1.0 / a.1 as f64 + 1.0 / b.1 as f64)).sqrt();
    if error == 0.0 {
        // Both rates 0 or both 1: no difference at all.
        return 0.0;
    }
    (ra - rb) / error
}

/// An exchange whose every group is noise is a match after all.
fn revise_verdicts(
    noise: &Noise,
    noisy: &[Option<(f64, f64)>],
    summary: &mut Summary,
    routes: &mut BTreeMap<Route, RouteTally>,
) {
    for (route, hit) in &noise.hits {
        if hit.iter().all(|&g| noisy[g].is_some()) {
            summary.mismatched -= 1;
            summary.matched += 1;
            if let Some(t) = routes.get_mut(route) {
                t.mismatched -= 1;
                t.matched += 1;
            }
        }
    }
}

fn finish_rates(summary: &mut Summary) {
    if summary.total > 0 {
        let total = summary.total as f64;
        summary.parity = summary.matched as f64 / total;
        summary.mismatch_rate =
            (summary.mismatched + summary.errors + summary.dropped) as f64 / total;
    } else {
        summary.mismatch_rate = 1.0;
    }
}

fn group_key(route: &Route, mismatch: &Mismatch) -> GroupKey {
    GroupKey {
        route: route.clone(),
        kind: mismatch.kind,
        path: mismatch.group_path(),
    }
}

fn mismatch_group(g: GroupTally, compared: u64) -> MismatchGroup {
    MismatchGroup {
        method: g.key.route.method,
        route: g.key.route.template,
        kind: g.key.kind,
        path: g.key.path,
        count: g.count,
        first_exchange: g.first,
        last_exchange: g.last,
        rate: g.count as f64 / compared as f64,
        examples: g.examples,
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

fn answer(attempt: &Attempt) -> Option<&Response> {
    attempt.response.as_ref()
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
        .map(|h| Header(h.0.clone(), rules.shown(&h.0, h.1.clone())))
        .collect()
}

fn shown_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(BODY_SHOWN) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], body.len()),
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::z_score;

    #[test]
    fn chance_differences_are_not_significant_and_bugs_are() {
        // A millisecond timestamp crossing in 4 of 50 answers against 1 of 50.
        assert!(z_score((4, 50), (1, 50)) < 2.58);
        // Every answer against none, even on few exchanges.
        assert!(z_score((12, 12), (0, 12)) > 2.58);
        // One answer in six against none, on 200 exchanges.
        assert!(z_score((34, 200), (0, 200)) > 2.58);
        assert_eq!(z_score((0, 30), (0, 30)), 0.0);
        assert_eq!(z_score((30, 30), (30, 30)), 0.0);
    }
}
