use std::collections::{BTreeMap, HashMap};

use super::{
    Example, MismatchGroup, Report, RouteReport, RunInfo, SideLatency, Summary, TargetErrors,
};
use crate::diff::{Differ, MismatchKind};
use crate::latency::Latency;
use crate::results::{Attempt, ExchangeResult};
use crate::route::Route;

/// How one exchange came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Both answered alike.
    Matched,
    /// Both answered, with this many mismatches.
    Mismatched(usize),
    /// At least one target gave no answer.
    Error,
}

/// Folds results, one at a time, into a [`Report`]. Memory grows with the
/// number of routes and mismatch groups, not with the number of exchanges.
pub struct ReportBuilder {
    differ: Differ,
    run: RunInfo,
    summary: Summary,
    errors: TargetErrors,
    routes: BTreeMap<Route, RouteTally>,
    groups: HashMap<GroupKey, GroupTally>,
    legacy: Latency,
    new: Latency,
}

#[derive(Default)]
struct RouteTally {
    total: u64,
    matched: u64,
    mismatched: u64,
    errors: u64,
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
    count: u64,
    first: u64,
    last: u64,
    example: Example,
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
            groups: HashMap::new(),
            legacy: Latency::default(),
            new: Latency::default(),
        }
    }

    /// Adds one exchange's result.
    pub fn add(&mut self, result: &ExchangeResult) -> Verdict {
        let route = Route::of(&result.method, &result.target);
        let verdict = self.judge(&route, result);
        let tally = self.routes.entry(route).or_default();
        tally.total += 1;
        self.summary.total += 1;
        match verdict {
            Verdict::Matched => (tally.matched += 1, self.summary.matched += 1),
            Verdict::Mismatched(_) => (tally.mismatched += 1, self.summary.mismatched += 1),
            Verdict::Error => (tally.errors += 1, self.summary.errors += 1),
        };
        for (attempt, route_hist, all, errors) in [
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
        ] {
            if let Some(response) = &attempt.response {
                route_hist.record(response.latency_us);
                all.record(response.latency_us);
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

    fn judge(&mut self, route: &Route, result: &ExchangeResult) -> Verdict {
        let (Some(legacy), Some(new)) = (answer(&result.legacy), answer(&result.new)) else {
            return Verdict::Error;
        };
        let mismatches = self.differ.compare(route, legacy, new);
        if mismatches.is_empty() {
            return Verdict::Matched;
        }
        let mut seen = Vec::new();
        for mismatch in &mismatches {
            let key = GroupKey {
                route: route.clone(),
                kind: mismatch.kind,
                path: mismatch.group_path(),
            };
            // An exchange counts once per group, however many array elements differ.
            if seen.contains(&key) {
                continue;
            }
            seen.push(key.clone());
            let group = self.groups.entry(key).or_insert_with(|| GroupTally {
                count: 0,
                first: result.id,
                last: result.id,
                example: Example {
                    exchange_id: result.id,
                    target: result.target.clone(),
                    mismatch: mismatch.clone(),
                },
            });
            group.count += 1;
            group.first = group.first.min(result.id);
            group.last = group.last.max(result.id);
        }
        Verdict::Mismatched(mismatches.len())
    }

    /// The finished report.
    pub fn finish(self) -> Report {
        let mut summary = self.summary;
        if summary.total > 0 {
            let total = summary.total as f64;
            summary.parity = summary.matched as f64 / total;
            summary.mismatch_rate = (summary.mismatched + summary.errors) as f64 / total;
        } else {
            summary.mismatch_rate = 1.0;
        }
        let routes = self
            .routes
            .into_iter()
            .map(|(route, t)| RouteReport {
                method: route.method,
                route: route.template,
                total: t.total,
                matched: t.matched,
                mismatched: t.mismatched,
                errors: t.errors,
                latency: SideLatency {
                    legacy: t.legacy.summary(),
                    new: t.new.summary(),
                },
            })
            .collect();
        let mut groups: Vec<MismatchGroup> = self
            .groups
            .into_iter()
            .map(|(key, g)| MismatchGroup {
                method: key.route.method,
                route: key.route.template,
                kind: key.kind,
                path: key.path,
                count: g.count,
                first_exchange: g.first,
                last_exchange: g.last,
                example: g.example,
            })
            .collect();
        groups.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| {
                (&a.method, &a.route, a.kind, &a.path).cmp(&(&b.method, &b.route, b.kind, &b.path))
            })
        });
        Report {
            format: super::FORMAT.to_string(),
            version: super::VERSION,
            run: self.run,
            summary,
            errors: self.errors,
            routes,
            mismatch_groups: groups,
            latency: SideLatency {
                legacy: self.legacy.summary(),
                new: self.new.summary(),
            },
            gate: None,
        }
    }
}

fn answer(attempt: &Attempt) -> Option<&crate::capture::Response> {
    attempt.response.as_ref()
}
