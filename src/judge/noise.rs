//! Noise learning: what differs between two legacy answers to the same
//! request is noise, not a finding (as in Diffy). The judge counts the
//! legacy-vs-legacy differences per group here, decides which groups are
//! noise once the run is over, revises the verdicts of exchanges whose
//! every group is noise, and writes the learned noise as rules to review
//! (`--write-rules`). `tandem report merge` judges shards' evidence with
//! the same [`is_noise`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context;

use super::{group_key, GroupKey, GroupTally, RouteTally};
use crate::diff::rules::{RouteRule, RuleBody, RulesFile};
use crate::diff::{Mismatch, MismatchKind};
use crate::report::{
    GroupCount, GroupSet, LearnedNoise, MismatchGroup, MismatchSet, NoiseEvidence, NoiseGroup,
    RouteCount, Summary,
};
use crate::route::Route;

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

/// Legacy-vs-legacy comparisons, and what each mismatched exchange hit, so
/// that verdicts can be revised once the noise is known.
#[derive(Clone)]
pub(super) struct Noise {
    legacy2: String,
    thresholds: NoiseThresholds,
    counts: HashMap<GroupKey, u64>,
    compared: HashMap<Route, u64>,
    hits: Vec<(Route, Vec<usize>)>,
}

impl Noise {
    pub(super) fn new(legacy2: String, thresholds: NoiseThresholds) -> Noise {
        Noise {
            legacy2,
            thresholds,
            counts: HashMap::new(),
            compared: HashMap::new(),
            hits: Vec::new(),
        }
    }

    /// Counts what differs between the two legacy answers.
    pub(super) fn learn(&mut self, route: &Route, differences: Vec<Mismatch>) {
        *self.compared.entry(route.clone()).or_default() += 1;
        let mut seen = Vec::new();
        for m in differences {
            let key = group_key(route, &m);
            if !seen.contains(&key) {
                *self.counts.entry(key.clone()).or_default() += 1;
                seen.push(key);
            }
        }
    }

    /// Keeps which groups a mismatched exchange showed.
    pub(super) fn hit(&mut self, route: &Route, groups: Vec<usize>) {
        self.hits.push((route.clone(), groups));
    }

    /// For each group, `Some((diff_rate, noise_rate))` when it is noise.
    pub(super) fn judge(
        &self,
        groups: &[GroupTally],
        routes: &BTreeMap<Route, RouteTally>,
    ) -> Vec<Option<(f64, f64)>> {
        groups
            .iter()
            .map(|g| {
                let noise_count = *self.counts.get(&g.key)?;
                let noise_base = *self.compared.get(&g.key.route)?;
                let base = routes.get(&g.key.route).map_or(0, |r| r.compared);
                if base == 0 || noise_base == 0 {
                    return None;
                }
                is_noise((g.count, base), (noise_count, noise_base), &self.thresholds)
            })
            .collect()
    }

    /// An exchange whose every group is noise is a match after all.
    pub(super) fn revise_verdicts(
        &self,
        noisy: &[Option<(f64, f64)>],
        summary: &mut Summary,
        routes: &mut BTreeMap<Route, RouteTally>,
    ) {
        for (route, hit) in &self.hits {
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

    /// What the report keeps of it: the noise groups and the evidence
    /// behind them, so that shard reports can be judged again as one.
    pub(super) fn learned(
        self,
        groups: &[GroupTally],
        noise_groups: Vec<NoiseGroup>,
        noise_mismatch_groups: Vec<MismatchGroup>,
    ) -> LearnedNoise {
        let mismatch_sets = self.mismatch_sets(groups);
        LearnedNoise {
            legacy2: self.legacy2,
            relative_threshold: self.thresholds.relative,
            absolute_threshold: self.thresholds.absolute,
            z_threshold: self.thresholds.z,
            groups: noise_groups,
            evidence: Some(NoiseEvidence {
                compared: self
                    .compared
                    .iter()
                    .map(|(route, &count)| RouteCount {
                        method: route.method.clone(),
                        route: route.template.clone(),
                        count,
                    })
                    .collect(),
                legacy_differences: self
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
                mismatch_sets,
            }),
        }
    }

    /// Mismatched exchanges counted by route and the set of groups they showed.
    fn mismatch_sets(&self, groups: &[GroupTally]) -> Vec<MismatchSet> {
        let mut sets: BTreeMap<(&Route, GroupSet), u64> = BTreeMap::new();
        for (route, hit) in &self.hits {
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
}

/// Whether a group seen in `diff` (count, out of) legacy-vs-new comparisons
/// and `noise` legacy-vs-legacy ones is noise: `Some((diff_rate,
/// noise_rate))` if so.
pub fn is_noise(diff: (u64, u64), noise: (u64, u64), t: &NoiseThresholds) -> Option<(f64, f64)> {
    let diff_rate = diff.0 as f64 / diff.1 as f64;
    let noise_rate = noise.0 as f64 / noise.1 as f64;
    let excess = diff_rate - noise_rate;
    let real =
        excess > t.absolute && excess > t.relative * noise_rate && z_score(diff, noise) > t.z;
    (!real).then_some((diff_rate, noise_rate))
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

/// Writes what was learned as a rules file at `path` (`--write-rules`):
/// per route, the JSON paths and headers that differ between two legacy
/// answers, and the correlation `links` as `[[correlate]]` rules.
pub fn write_rules(
    path: &Path,
    noise: Option<&LearnedNoise>,
    links: &[crate::correlate::CorrelateRule],
    capture: &Path,
) -> anyhow::Result<()> {
    let mut text = match noise {
        Some(noise) => render_rules(noise, capture)?,
        None => format!(
            "# Learned by tandem replay from {}.\n# Review before use: docs/rules.md.\n",
            capture.display()
        ),
    };
    if !links.is_empty() {
        let file = RulesFile {
            correlate: links.to_vec(),
            ..RulesFile::default()
        };
        text.push_str("\n# Links between answers and later requests that the replay followed.\n");
        text.push_str(&toml::to_string(&file).context("learned links cannot be written as TOML")?);
    }
    crate::output::write(path, text)
        .with_context(|| format!("{}: cannot write the learned rules", path.display()))
}

/// The rules file text: written with the serde types that read rules
/// files, so what is written is what loads. Each route is preceded by
/// comments with the rates behind it, and differences no rule can express
/// by path (status codes, text bodies) are comments only.
pub fn render_rules(noise: &LearnedNoise, capture: &Path) -> anyhow::Result<String> {
    #[derive(Default)]
    struct Learned {
        paths: Vec<String>,
        headers: Vec<String>,
        notes: Vec<String>,
    }
    let mut routes: BTreeMap<String, Learned> = BTreeMap::new();
    for g in &noise.groups {
        let route = routes
            .entry(format!("{} {}", g.method, g.route))
            .or_default();
        let rates = format!(
            "legacy/new {:.1}%, legacy/legacy {:.1}%",
            g.diff_rate * 100.0,
            g.noise_rate * 100.0
        );
        let note = match (g.kind, &g.path) {
            (MismatchKind::Header, Some(name)) => {
                route.headers.push(name.clone());
                format!("# header {name}: {rates}")
            }
            (kind, Some(path)) => {
                route.paths.push(path.clone());
                format!("# {} {path}: {rates}", kind.as_str())
            }
            (kind, None) => format!(
                "# {} differs between legacy answers too ({rates}); no rule can say so by path",
                kind.as_str()
            ),
        };
        route.notes.push(note);
    }
    let mut out = format!(
        "# Noise learned by tandem replay --learn-noise from {}.\n\
         # Differences also seen between two legacy answers to the same request.\n\
         # Review before use: docs/rules.md.\n",
        capture.display()
    );
    for (pattern, learned) in routes {
        let file = RulesFile {
            defaults: RuleBody::default(),
            routes: vec![RouteRule {
                pattern,
                template: None,
                body: RuleBody::ignoring(learned.paths, learned.headers),
            }],
            correlate: Vec::new(),
            time_shift: Vec::new(),
        };
        out.push('\n');
        for note in &learned.notes {
            out.push_str(note);
            out.push('\n');
        }
        out.push_str(&toml::to_string(&file).context("learned rules cannot be written as TOML")?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn learned_rules_load_as_the_rules_they_say() {
        let group = |kind, path: Option<&str>| NoiseGroup {
            method: "GET".into(),
            route: "/api/orders/{id}".into(),
            kind,
            path: path.map(str::to_string),
            diff_rate: 1.0,
            noise_rate: 1.0,
        };
        let noise = LearnedNoise {
            groups: vec![
                group(MismatchKind::Value, Some("$.created_at")),
                group(MismatchKind::Header, Some("x-trace-id")),
                group(MismatchKind::Status, None),
            ],
            ..LearnedNoise::default()
        };
        let text = render_rules(&noise, Path::new("c.jsonl")).unwrap();
        let mut rules = crate::diff::RuleSet::parse(&text).unwrap();
        let route = Route::of("GET", "/api/orders/7");
        let for_route = rules.for_route(&route);
        assert_eq!(for_route.ignore_paths.len(), 1, "{text}");
        assert!(for_route.ignores_header("x-trace-id"), "{text}");
        assert!(text.contains("# status differs"), "{text}");
    }
}
