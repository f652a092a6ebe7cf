//! Learned noise across shards, judged again as one run would judge it.
//!
//! Each shard judged noise on its own exchanges, and a group can be noise on
//! a few exchanges and a finding on all of them (or the other way round).
//! Shard reports keep the counts behind their judgment (`evidence`): summed,
//! they are the counts one run over all the exchanges would have had, so the
//! same thresholds give the same groups, verdicts and rates.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;

use super::super::{
    sort_groups, GroupCount, GroupSet, LearnedNoise, MismatchGroup, MismatchSet, NoiseEvidence,
    NoiseGroup, Report, RouteCount,
};
use super::{merge_groups, GroupKey};
use crate::diff::MismatchKind;
use crate::judge::noise::{is_noise, NoiseThresholds};

type RouteKey = (String, String);
type SetKey = (String, String, GroupSet);

/// Judges the merged report's noise from the shards' evidence, moving
/// groups between `mismatch_groups` and `learned_noise` and exchanges
/// between matched and mismatched as needed. False, leaving `merged` alone,
/// when some shard learned noise without keeping its evidence.
pub(super) fn rejudge(reports: &[Report], merged: &mut Report) -> anyhow::Result<bool> {
    let noises: Vec<&LearnedNoise> = reports
        .iter()
        .filter_map(|r| r.learned_noise.as_ref())
        .collect();
    let Some(first) = noises.first() else {
        return Ok(false);
    };
    if noises.len() < reports.len() || noises.iter().any(|n| n.evidence.is_none()) {
        return Ok(false);
    }
    let thresholds = |n: &LearnedNoise| (n.relative_threshold, n.absolute_threshold, n.z_threshold);
    if noises.iter().any(|n| thresholds(n) != thresholds(first)) {
        bail!("shards learned noise with different thresholds (--noise-z and the others)");
    }
    let t = NoiseThresholds {
        relative: first.relative_threshold,
        absolute: first.absolute_threshold,
        z: first.z_threshold,
    };
    let evidence = sum(&noises);
    let compared = route_counts(&evidence.compared);
    let differences: BTreeMap<GroupKey, u64> = evidence
        .legacy_differences
        .iter()
        .map(|d| (group_key(&d.method, &d.route, d.kind, &d.path), d.count))
        .collect();
    // Every group any shard saw, real or noise there, merged.
    let all = reports.iter().flat_map(|r| &r.mismatch_groups).chain(
        noises
            .iter()
            .flat_map(|n| own(n).noise_mismatch_groups.iter()),
    );
    let (mut real, mut noise_groups, mut noise_mismatch_groups) =
        (Vec::new(), Vec::new(), Vec::new());
    for g in merge_groups(all, &merged.routes) {
        let key = group_key(&g.method, &g.route, g.kind, &g.path);
        let base = merged
            .routes
            .iter()
            .find(|r| r.method == g.method && r.route == g.route)
            .map_or(0, |r| r.compared);
        let legacy = (
            differences.get(&key),
            compared.get(&(key.0.clone(), key.1.clone())),
        );
        let judged = match legacy {
            (Some(&count), Some(&of)) if base > 0 && of > 0 => {
                is_noise((g.count, base), (count, of), &t)
            }
            _ => None,
        };
        match judged {
            Some((diff_rate, noise_rate)) => {
                noise_groups.push(noise_group(&g, diff_rate, noise_rate));
                noise_mismatch_groups.push(g);
            }
            None => real.push(g),
        }
    }
    sort_groups(&mut noise_mismatch_groups);
    let noisy: BTreeSet<GroupKey> = noise_groups
        .iter()
        .map(|g| group_key(&g.method, &g.route, g.kind, &g.path))
        .collect();
    revise_verdicts(&noises, &evidence.mismatch_sets, &noisy, merged);
    merged.mismatch_groups = real;
    merged.learned_noise = Some(LearnedNoise {
        groups: noise_groups,
        evidence: Some(NoiseEvidence {
            noise_mismatch_groups,
            ..evidence
        }),
        ..(*first).clone()
    });
    Ok(true)
}

fn own(noise: &LearnedNoise) -> &NoiseEvidence {
    noise.evidence.as_ref().expect("checked by rejudge")
}

/// The shards' evidence added up (all but the noise groups, merged apart).
fn sum(noises: &[&LearnedNoise]) -> NoiseEvidence {
    let mut compared: BTreeMap<RouteKey, u64> = BTreeMap::new();
    let mut differences: BTreeMap<GroupKey, u64> = BTreeMap::new();
    let mut sets: BTreeMap<SetKey, u64> = BTreeMap::new();
    for e in noises.iter().map(|n| own(n)) {
        for c in &e.compared {
            *compared
                .entry((c.method.clone(), c.route.clone()))
                .or_default() += c.count;
        }
        for d in &e.legacy_differences {
            *differences
                .entry(group_key(&d.method, &d.route, d.kind, &d.path))
                .or_default() += d.count;
        }
        for s in &e.mismatch_sets {
            *sets.entry(set_key(s)).or_default() += s.exchanges;
        }
    }
    NoiseEvidence {
        compared: compared
            .into_iter()
            .map(|((method, route), count)| RouteCount {
                method,
                route,
                count,
            })
            .collect(),
        legacy_differences: differences
            .into_iter()
            .map(|((method, route, kind, path), count)| GroupCount {
                method,
                route,
                kind,
                path,
                count,
            })
            .collect(),
        noise_mismatch_groups: Vec::new(),
        mismatch_sets: sets
            .into_iter()
            .map(|((method, route, groups), exchanges)| MismatchSet {
                method,
                route,
                groups,
                exchanges,
            })
            .collect(),
    }
}

/// Exchanges each shard counted as matched because all their groups were
/// noise there go back to mismatched, and those whose groups are all noise
/// in the merged judgment become matched.
fn revise_verdicts(
    noises: &[&LearnedNoise],
    merged_sets: &[MismatchSet],
    noisy: &BTreeSet<GroupKey>,
    merged: &mut Report,
) {
    let mut change: BTreeMap<RouteKey, i64> = BTreeMap::new();
    for noise in noises {
        let shard_noisy: BTreeSet<GroupKey> = noise
            .groups
            .iter()
            .map(|g| group_key(&g.method, &g.route, g.kind, &g.path))
            .collect();
        for set in own(noise)
            .mismatch_sets
            .iter()
            .filter(|s| all_in(s, &shard_noisy))
        {
            *change
                .entry((set.method.clone(), set.route.clone()))
                .or_default() -= set.exchanges as i64;
        }
    }
    for set in merged_sets.iter().filter(|s| all_in(s, noisy)) {
        *change
            .entry((set.method.clone(), set.route.clone()))
            .or_default() += set.exchanges as i64;
    }
    for ((method, template), matched) in change {
        if let Some(route) = merged
            .routes
            .iter_mut()
            .find(|r| r.method == method && r.route == template)
        {
            route.matched = route.matched.saturating_add_signed(matched);
            route.mismatched = route.mismatched.saturating_add_signed(-matched);
        }
        merged.summary.matched = merged.summary.matched.saturating_add_signed(matched);
        merged.summary.mismatched = merged.summary.mismatched.saturating_add_signed(-matched);
    }
    merged.summary.finish_rates();
}

/// Whether every group of `set` is in `noisy`.
fn all_in(set: &MismatchSet, noisy: &BTreeSet<GroupKey>) -> bool {
    set.groups
        .iter()
        .all(|(kind, path)| noisy.contains(&group_key(&set.method, &set.route, *kind, path)))
}

fn noise_group(g: &MismatchGroup, diff_rate: f64, noise_rate: f64) -> NoiseGroup {
    NoiseGroup {
        method: g.method.clone(),
        route: g.route.clone(),
        kind: g.kind,
        path: g.path.clone(),
        diff_rate,
        noise_rate,
    }
}

fn route_counts(counts: &[RouteCount]) -> BTreeMap<RouteKey, u64> {
    counts
        .iter()
        .map(|c| ((c.method.clone(), c.route.clone()), c.count))
        .collect()
}

fn group_key(method: &str, route: &str, kind: MismatchKind, path: &Option<String>) -> GroupKey {
    (method.to_string(), route.to_string(), kind, path.clone())
}

fn set_key(s: &MismatchSet) -> SetKey {
    (s.method.clone(), s.route.clone(), s.groups.clone())
}

#[cfg(test)]
mod tests {
    use super::super::merge;
    use crate::capture::{Body, Header, Request, Response};
    use crate::judge::{Judge, JudgeOptions};
    use crate::report::Report;
    use crate::results::{Attempt, ExchangeResult};

    fn attempt(v: u32) -> Attempt {
        Attempt {
            lag_us: 10,
            response: Some(Response {
                status: 200,
                headers: vec![Header("content-type".into(), "application/json".into())],
                body: Body::from(format!("{{\"v\":{v}}}").as_str()),
                latency_us: 100,
                truncated: None,
            }),
            error: None,
            unresolved: Vec::new(),
            retried: false,
        }
    }

    /// Exchange `id`: the new answer differs if `differs`, the second
    /// legacy answer if `noisy`.
    fn result(id: u64, differs: bool, noisy: bool) -> ExchangeResult {
        ExchangeResult {
            id,
            pass: 0,
            copy: 0,
            session: format!("s{id}"),
            scheduled_us: id,
            request: std::sync::Arc::new(Request {
                method: "GET".into(),
                target: "/x".into(),
                version: "HTTP/1.1".into(),
                headers: Vec::new(),
                body: Body::default(),
            }),
            legacy: attempt(1),
            new: attempt(if differs { 2 } else { 1 }),
            legacy2: Some(attempt(if noisy { 3 } else { 1 })),
            recorded: None,
        }
    }

    fn report(results: &[ExchangeResult]) -> Report {
        let mut builder = Judge::new(JudgeOptions {
            legacy2: Some("legacy2".into()),
            ..JudgeOptions::default()
        })
        .unwrap();
        for r in results {
            builder.add(r);
        }
        let report = builder.finish();
        // As `tandem report merge` reads it: from report.json.
        serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap()
    }

    #[test]
    fn shards_judge_noise_as_one_run_over_all_their_exchanges() {
        // $.v differs from the new stack in 30 of 100 exchanges, between the
        // legacy answers in 20: not significantly more, so noise. The first
        // shard alone sees 30 of 50 against 5 of 50, a finding there.
        let all: Vec<ExchangeResult> = (0..100)
            .map(|i| {
                result(
                    i + 1,
                    i < 30,
                    (30..35).contains(&i) || (50..65).contains(&i),
                )
            })
            .collect();
        let whole = report(&all);
        let shards = vec![report(&all[..50]), report(&all[50..])];
        assert_eq!(shards[0].mismatch_groups.len(), 1, "a finding in shard 1");
        assert_eq!(whole.mismatch_groups.len(), 0, "noise over all");

        let merged = merge(shards).unwrap();
        assert_eq!(merged.summary, whole.summary);
        assert_eq!(merged.summary.matched, 100);
        assert!(merged.mismatch_groups.is_empty());
        let (m, w) = (merged.learned_noise.unwrap(), whole.learned_noise.unwrap());
        assert_eq!(m.groups.len(), 1);
        assert_eq!(m.groups[0].path, w.groups[0].path);
        assert_eq!(m.groups[0].diff_rate, w.groups[0].diff_rate);
        assert_eq!(m.groups[0].noise_rate, w.groups[0].noise_rate);
        assert_eq!(m.evidence.unwrap().noise_mismatch_groups[0].count, 30);
        assert_eq!(merged.routes[0].matched, whole.routes[0].matched);
    }

    #[test]
    fn a_finding_over_all_exchanges_comes_back_from_shards_that_took_it_for_noise() {
        // $.v differs from the new stack in 40 of 100 exchanges, between the
        // legacy answers in 1: a finding. The second shard sees 2 of 50
        // against 1 of 50, noise there.
        let all: Vec<ExchangeResult> = (0..100)
            .map(|i| result(i + 1, i < 38 || (50..52).contains(&i), i == 60))
            .collect();
        let whole = report(&all);
        let shards = vec![report(&all[..50]), report(&all[50..])];
        assert!(shards[1].mismatch_groups.is_empty(), "noise in shard 2");
        assert_eq!(whole.mismatch_groups[0].count, 40);

        let merged = merge(shards).unwrap();
        assert_eq!(merged.summary, whole.summary);
        assert_eq!(merged.summary.mismatched, 40);
        assert_eq!(merged.mismatch_groups.len(), 1);
        assert_eq!(merged.mismatch_groups[0].count, 40);
        assert_eq!(
            merged.mismatch_groups[0].rate,
            whole.mismatch_groups[0].rate
        );
        assert!(merged.learned_noise.unwrap().groups.is_empty());
    }
}
