//! Fidelity: the third witness. Each replayed legacy answer is compared
//! with the answer recorded for the same request, by the same differ and
//! rules, and only status and body structure count (fields present or not,
//! their types): values legitimately move between a recording and a replay
//! (ids, times, stock), structure does not unless the replay broke (a stale
//! token's 401, a 404 for an id the stack never issued).

use std::collections::{BTreeMap, HashMap};

use crate::capture::Response;
use crate::diff::{Differ, Mismatch, MismatchKind};
use crate::report::{Divergence, Fidelity, RouteFidelity};
use crate::results::ExchangeResult;
use crate::route::Route;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    route: Route,
    kind: MismatchKind,
    path: Option<String>,
    /// For status, the two statuses: "recorded 201, legacy 401" is one group.
    statuses: Option<(String, String)>,
}

#[derive(Clone)]
struct Tally {
    key: Key,
    count: u64,
    first: u64,
    recorded: Option<String>,
    replayed: Option<String>,
}

/// Fidelity counts and divergence groups of a run so far.
#[derive(Default, Clone)]
pub(super) struct FidelityTally {
    /// Some result carried a recorded answer.
    seen: bool,
    /// Per route: judged, faithful.
    routes: BTreeMap<Route, (u64, u64)>,
    groups: Vec<Tally>,
    index: HashMap<Key, usize>,
    /// Recorded answers that could not be read back.
    unreadable: u64,
}

impl FidelityTally {
    /// Judges one exchange: its recorded answer against legacy's.
    /// `recorded` is the exchange's recorded answer as the judge read it
    /// back: `None` when none was recorded.
    pub(super) fn add(
        &mut self,
        differ: &mut Differ,
        route: &Route,
        result: &ExchangeResult,
        recorded: Option<&Result<Response, serde_json::Error>>,
    ) {
        let Some(recorded) = recorded else {
            return;
        };
        self.seen = true;
        let Some(replayed) = result.legacy.response.as_ref() else {
            return;
        };
        let recorded = match recorded {
            Ok(recorded) => recorded,
            Err(e) => {
                self.unreadable += 1;
                tracing::debug!("exchange {}: recorded answer unreadable: {e}", result.id);
                return;
            }
        };
        let divergences: Vec<Mismatch> = differ
            .compare(route, recorded, replayed)
            .into_iter()
            .filter(structural)
            .collect();
        let tally = self.routes.entry(route.clone()).or_default();
        tally.0 += 1;
        if divergences.is_empty() {
            tally.1 += 1;
            return;
        }
        let mut hit = Vec::new();
        for m in divergences {
            let key = Key {
                route: route.clone(),
                kind: m.kind,
                path: m.group_path(),
                statuses: (m.kind == MismatchKind::Status).then(|| {
                    (
                        m.legacy.clone().unwrap_or_default(),
                        m.new.clone().unwrap_or_default(),
                    )
                }),
            };
            let index = *self.index.entry(key.clone()).or_insert_with(|| {
                self.groups.push(Tally {
                    key,
                    count: 0,
                    first: result.id,
                    recorded: m.legacy.clone(),
                    replayed: m.new.clone(),
                });
                self.groups.len() - 1
            });
            // An exchange counts once per group.
            if !hit.contains(&index) {
                hit.push(index);
                let group = &mut self.groups[index];
                group.count += 1;
                if result.id < group.first {
                    (group.first, group.recorded, group.replayed) = (result.id, m.legacy, m.new);
                }
            }
        }
    }

    /// The report's `fidelity`; `None` when no recorded answer was seen.
    pub(super) fn finish(self) -> Option<Fidelity> {
        if !self.seen {
            return None;
        }
        if self.unreadable > 0 {
            tracing::warn!(
                "{} recorded answers could not be read back and were not judged for fidelity",
                self.unreadable
            );
        }
        let rate = |faithful: u64, judged: u64| {
            if judged == 0 {
                0.0
            } else {
                faithful as f64 / judged as f64
            }
        };
        let (judged, faithful) = self
            .routes
            .values()
            .fold((0, 0), |(j, f), (rj, rf)| (j + rj, f + rf));
        let mut divergences: Vec<Divergence> = self
            .groups
            .into_iter()
            .map(|g| {
                let base = self.routes.get(&g.key.route).map_or(1, |r| r.0.max(1));
                Divergence {
                    method: g.key.route.method.clone(),
                    route: g.key.route.template.clone(),
                    kind: g.key.kind,
                    path: g.key.path,
                    recorded: g.recorded,
                    replayed: g.replayed,
                    count: g.count,
                    rate: g.count as f64 / base as f64,
                    first_exchange: g.first,
                }
            })
            .collect();
        sort_divergences(&mut divergences);
        Some(Fidelity {
            judged,
            faithful,
            rate: rate(faithful, judged),
            routes: self
                .routes
                .iter()
                .map(|(route, &(judged, faithful))| RouteFidelity {
                    method: route.method.clone(),
                    route: route.template.clone(),
                    judged,
                    faithful,
                    rate: rate(faithful, judged),
                })
                .collect(),
            divergences,
        })
    }
}

/// Most frequent first, then by route, kind and path.
pub(crate) fn sort_divergences(divergences: &mut [Divergence]) {
    divergences.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| {
            (&a.method, &a.route, a.kind, &a.path, &a.recorded).cmp(&(
                &b.method,
                &b.route,
                b.kind,
                &b.path,
                &b.recorded,
            ))
        })
    });
}

/// A difference in status or body structure, not in values. A whole array
/// element more or less is state (a list that grew), not structure.
fn structural(m: &Mismatch) -> bool {
    match m.kind {
        MismatchKind::Status | MismatchKind::Type => true,
        MismatchKind::MissingField | MismatchKind::ExtraField => {
            !m.path.as_deref().is_some_and(|p| p.ends_with(']'))
        }
        MismatchKind::Header | MismatchKind::Body | MismatchKind::Value => false,
    }
}
