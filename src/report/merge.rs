//! `tandem report merge`: shard reports into one, without loss. Counts add
//! up; histograms merge exactly from their serialized form; mismatch groups
//! merge by (method, route, kind, path), keeping the earliest examples; a
//! rule is unused only if no shard used it.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};

use super::{
    CorrelationReport, Divergence, Fidelity, Generator, Histograms, LearnedNoise, Load,
    MismatchGroup, NoiseGroup, Report, RouteFidelity, RouteReport, SideLatency, StackLoads,
    Summary,
};
use crate::diff::MismatchKind;
use crate::latency::Latency;

mod noise;

/// Checks that `runs` (each named, e.g. by its directory) are the shards of
/// one run: the same capture, the same shard count, each shard once, and
/// all of them unless `allow_partial`. Returns what is missing, when a
/// partial merge is allowed.
pub fn check_shards(
    runs: &[(String, &Report)],
    allow_partial: bool,
) -> anyhow::Result<Option<String>> {
    let Some((first_name, first)) = runs.first() else {
        bail!("nothing to merge");
    };
    if runs.len() == 1 {
        return Ok(None);
    }
    for (name, r) in runs {
        if let (Some(a), Some(b)) = (&r.run.capture_sha256, &first.run.capture_sha256) {
            if a != b {
                bail!(
                    "{name} replayed another capture than {first_name} ({} sha256 {a:.12}…, {} sha256 {b:.12}…): \
                     shards of different captures do not merge",
                    r.run.capture,
                    first.run.capture
                );
            }
        }
    }
    let mut seen: std::collections::BTreeMap<u32, &str> = Default::default();
    let mut count = None;
    for (name, r) in runs {
        let Some((index, n)) = r.run.shard else {
            bail!(
                "{name} is a whole run, not a shard (--shard I/N): merged with others its \
                 exchanges would be counted twice"
            );
        };
        match count {
            None => count = Some((n, name)),
            Some((m, other)) if m != n => {
                bail!("mixed shard counts: {name} is shard {index}/{n}, {other} one of {m}")
            }
            Some(_) => {}
        }
        if let Some(other) = seen.insert(index, name) {
            bail!("shard {index}/{n} is given twice: {other} and {name}");
        }
    }
    let n = count.map_or(0, |(n, _)| n);
    let missing: Vec<String> = (0..n)
        .filter(|i| !seen.contains_key(i))
        .map(|i| format!("{i}/{n}"))
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let missing = format!("shards {} missing", missing.join(", "));
    if !allow_partial {
        bail!("{missing}; --allow-partial merges the shards given, marked partial");
    }
    Ok(Some(missing))
}

/// Merges shard reports of one capture into one report.
pub fn merge(reports: Vec<Report>) -> anyhow::Result<Report> {
    let Some(first) = reports.first() else {
        bail!("nothing to merge");
    };
    let mut run = first.run.clone();
    run.shard = None;
    for r in &reports[1..] {
        // By content where both reports know it (pods may mount one
        // capture at different paths), else by path.
        let same = match (&r.run.capture_sha256, &run.capture_sha256) {
            (Some(a), Some(b)) => a == b,
            _ => r.run.capture == run.capture,
        };
        if !same {
            bail!(
                "shards replayed different captures: {} and {}",
                run.capture,
                r.run.capture
            );
        }
        run.started_at_unix_us = run.started_at_unix_us.min(r.run.started_at_unix_us);
        run.duration_ms = run.duration_ms.max(r.run.duration_ms);
    }
    let histograms = merge_histograms(&reports)?;
    let latency = |a: &str, b: &str| -> anyhow::Result<SideLatency> {
        Ok(SideLatency {
            legacy: Latency::from_base64(a)?.summary(),
            new: Latency::from_base64(b)?.summary(),
        })
    };
    let mut merged = Report {
        format: super::FORMAT.to_string(),
        version: super::VERSION,
        run,
        summary: merge_summaries(&reports),
        errors: Default::default(),
        routes: merge_routes(&reports, &histograms)?,
        mismatch_groups: Vec::new(),
        latency: latency(&histograms.legacy, &histograms.new)?,
        latency_corrected: latency(&histograms.legacy_corrected, &histograms.new_corrected)?,
        send_lag: latency(&histograms.legacy_lag, &histograms.new_lag)?,
        learned_noise: None,
        fidelity: merge_fidelity(&reports),
        correlation: merge_correlation(&reports),
        load: merge_load(&reports),
        generator: merge_generator(&reports),
        unused_rules: unused_everywhere(&reports),
        // Every shard learns from the same capture.
        learned_routes: reports
            .first()
            .map(|r| r.learned_routes.clone())
            .unwrap_or_default(),
        histograms,
        series: super::series::merge(
            &reports
                .iter()
                .filter_map(|r| r.series.as_ref())
                .collect::<Vec<_>>(),
        )?,
        gates: Vec::new(),
        interrupted: reports.iter().any(|r| r.interrupted),
        aborted: reports.iter().find_map(|r| r.aborted.clone()),
        partial: None,
        effects: crate::effects::EffectsReport::merge(
            reports.iter().filter_map(|r| r.effects.as_ref()),
        ),
        unreadable: reports.iter().fold(None, |sum, r| {
            super::Unreadable::add(sum.as_ref(), r.unreadable.as_ref())
        }),
    };
    for r in &reports {
        for (kind, n) in &r.errors.legacy {
            *merged.errors.legacy.entry(*kind).or_default() += n;
        }
        for (kind, n) in &r.errors.new {
            *merged.errors.new.entry(*kind).or_default() += n;
        }
    }
    let mismatch_groups = reports.iter().flat_map(|r| &r.mismatch_groups);
    merged.mismatch_groups = merge_groups(mismatch_groups, &merged.routes);
    if !noise::rejudge(&reports, &mut merged)? {
        merged.learned_noise = merge_noise(&reports);
    }
    Ok(merged)
}

fn merge_summaries(reports: &[Report]) -> Summary {
    let mut s = Summary::default();
    for r in reports {
        s.total += r.summary.total;
        s.matched += r.summary.matched;
        s.mismatched += r.summary.mismatched;
        s.errors += r.summary.errors;
        s.dropped += r.summary.dropped;
        s.failed_alike += r.summary.failed_alike;
    }
    s.finish_rates();
    s
}

/// Shards run side by side: their loads add up.
/// Every shard's engines, one shard after another: each ran on its own
/// machine, so the busiest of them tells whether any shard hit its limit.
fn merge_generator(reports: &[Report]) -> Option<Generator> {
    let engines: Vec<_> = reports
        .iter()
        .filter_map(|r| r.generator.as_ref())
        .flat_map(|g| g.engines.iter().cloned())
        .collect();
    (!engines.is_empty()).then_some(Generator { engines })
}

fn merge_load(reports: &[Report]) -> Option<StackLoads> {
    let all: Vec<&StackLoads> = reports.iter().filter_map(|r| r.load.as_ref()).collect();
    if all.is_empty() {
        return None;
    }
    let sum = |pick: fn(&StackLoads) -> &Load| Load {
        scheduled: all.iter().map(|l| pick(l).scheduled).sum(),
        sent: all.iter().map(|l| pick(l).sent).sum(),
        scheduled_per_s: all.iter().map(|l| pick(l).scheduled_per_s).sum(),
        achieved_per_s: all.iter().map(|l| pick(l).achieved_per_s).sum(),
        retried: all.iter().map(|l| pick(l).retried).sum(),
    };
    Some(StackLoads {
        legacy: sum(|l| &l.legacy),
        new: sum(|l| &l.new),
    })
}

/// Correlation over all shards: the first shard's links (every shard
/// learns them from the same capture), counts added up.
fn merge_correlation(reports: &[Report]) -> Option<CorrelationReport> {
    let all: Vec<&CorrelationReport> = reports
        .iter()
        .filter_map(|r| r.correlation.as_ref())
        .collect();
    let first = all.first()?;
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for (reason, count) in all.iter().flat_map(|c| &c.reasons) {
        *reasons.entry(reason.clone()).or_default() += count;
    }
    let mut reasons: Vec<(String, u64)> = reasons.into_iter().collect();
    reasons.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    Some(CorrelationReport {
        links: first.links.clone(),
        unresolved: all.iter().map(|c| c.unresolved).sum(),
        reasons,
        settled: all.iter().map(|c| c.settled).sum(),
    })
}

/// Fidelity as one run over all the shards' exchanges would judge it:
/// counts add up per route, divergences per group, rates recomputed.
fn merge_fidelity(reports: &[Report]) -> Option<Fidelity> {
    let all: Vec<&Fidelity> = reports.iter().filter_map(|r| r.fidelity.as_ref()).collect();
    if all.is_empty() {
        return None;
    }
    let rate = |faithful: u64, judged: u64| {
        if judged == 0 {
            0.0
        } else {
            faithful as f64 / judged as f64
        }
    };
    let mut routes: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for r in all.iter().flat_map(|f| &f.routes) {
        let t = routes
            .entry((r.method.clone(), r.route.clone()))
            .or_default();
        t.0 += r.judged;
        t.1 += r.faithful;
    }
    type Key = (String, String, MismatchKind, Option<String>, Option<String>);
    let mut groups: BTreeMap<Key, Divergence> = BTreeMap::new();
    for d in all.iter().flat_map(|f| &f.divergences) {
        // Status groups are per pair of statuses; the others per path.
        let statuses =
            (d.kind == MismatchKind::Status).then(|| format!("{:?} {:?}", d.recorded, d.replayed));
        let key = (
            d.method.clone(),
            d.route.clone(),
            d.kind,
            d.path.clone(),
            statuses,
        );
        match groups.get_mut(&key) {
            Some(g) => {
                g.count += d.count;
                if d.first_exchange < g.first_exchange {
                    g.first_exchange = d.first_exchange;
                    g.recorded = d.recorded.clone();
                    g.replayed = d.replayed.clone();
                }
            }
            None => {
                groups.insert(key, d.clone());
            }
        }
    }
    let mut divergences: Vec<Divergence> = groups
        .into_values()
        .map(|mut d| {
            let judged = routes
                .get(&(d.method.clone(), d.route.clone()))
                .map_or(1, |t| t.0.max(1));
            d.rate = d.count as f64 / judged as f64;
            d
        })
        .collect();
    crate::judge::sort_divergences(&mut divergences);
    let (judged, faithful) = routes.values().fold((0, 0), |(j, f), t| (j + t.0, f + t.1));
    Some(Fidelity {
        judged,
        faithful,
        rate: rate(faithful, judged),
        routes: routes
            .into_iter()
            .map(|((method, route), (judged, faithful))| RouteFidelity {
                method,
                route,
                judged,
                faithful,
                rate: rate(faithful, judged),
            })
            .collect(),
        divergences,
    })
}

fn merge_histograms(reports: &[Report]) -> anyhow::Result<Histograms> {
    let merged = |pick: &dyn Fn(&Histograms) -> &String| -> anyhow::Result<String> {
        let mut all = Latency::default();
        for (i, r) in reports.iter().enumerate() {
            let text = pick(&r.histograms);
            if text.is_empty() {
                bail!(
                    "report {} has no histograms (made before tandem could merge reports?)",
                    i + 1
                );
            }
            all.merge(&Latency::from_base64(text).with_context(|| format!("report {}", i + 1))?);
        }
        Ok(all.to_base64())
    };
    let mut routes: BTreeMap<String, [Latency; 2]> = BTreeMap::new();
    for r in reports {
        for (route, [l, n]) in &r.histograms.routes {
            let entry = routes.entry(route.clone()).or_default();
            entry[0].merge(&Latency::from_base64(l)?);
            entry[1].merge(&Latency::from_base64(n)?);
        }
    }
    Ok(Histograms {
        legacy: merged(&|h| &h.legacy)?,
        new: merged(&|h| &h.new)?,
        legacy_corrected: merged(&|h| &h.legacy_corrected)?,
        new_corrected: merged(&|h| &h.new_corrected)?,
        legacy_lag: merged(&|h| &h.legacy_lag)?,
        new_lag: merged(&|h| &h.new_lag)?,
        routes: routes
            .into_iter()
            .map(|(k, [l, n])| (k, [l.to_base64(), n.to_base64()]))
            .collect(),
    })
}

fn merge_routes(reports: &[Report], histograms: &Histograms) -> anyhow::Result<Vec<RouteReport>> {
    let mut routes: BTreeMap<(String, String), RouteReport> = BTreeMap::new();
    for r in reports {
        for route in &r.routes {
            let entry = routes
                .entry((route.method.clone(), route.route.clone()))
                .or_insert_with(|| RouteReport {
                    method: route.method.clone(),
                    route: route.route.clone(),
                    total: 0,
                    matched: 0,
                    mismatched: 0,
                    errors: 0,
                    compared: 0,
                    latency: SideLatency::default(),
                });
            entry.total += route.total;
            entry.matched += route.matched;
            entry.mismatched += route.mismatched;
            entry.errors += route.errors;
            entry.compared += route.compared;
        }
    }
    for ((method, template), route) in routes.iter_mut() {
        if let Some([l, n]) = histograms.routes.get(&format!("{method} {template}")) {
            route.latency = SideLatency {
                legacy: Latency::from_base64(l)?.summary(),
                new: Latency::from_base64(n)?.summary(),
            };
        }
    }
    Ok(routes.into_values().collect())
}

type GroupKey = (String, String, crate::diff::MismatchKind, Option<String>);

/// Groups of the same key as one: counts add up, the earliest examples kept.
fn merge_groups<'a>(
    all: impl IntoIterator<Item = &'a MismatchGroup>,
    routes: &[RouteReport],
) -> Vec<MismatchGroup> {
    let mut groups: BTreeMap<GroupKey, MismatchGroup> = BTreeMap::new();
    for g in all {
        let key = (g.method.clone(), g.route.clone(), g.kind, g.path.clone());
        match groups.get_mut(&key) {
            None => {
                groups.insert(key, g.clone());
            }
            Some(m) => {
                m.count += g.count;
                m.first_exchange = m.first_exchange.min(g.first_exchange);
                m.last_exchange = m.last_exchange.max(g.last_exchange);
                m.examples.extend(g.examples.iter().cloned());
                m.examples.sort_by_key(|e| e.exchange_id);
                m.examples.truncate(3);
            }
        }
    }
    let mut out: Vec<MismatchGroup> = groups.into_values().collect();
    for g in &mut out {
        let compared = routes
            .iter()
            .find(|r| r.method == g.method && r.route == g.route)
            .map_or(0, |r| r.compared);
        g.rate = g.count as f64 / compared.max(1) as f64;
    }
    super::sort_groups(&mut out);
    out
}

/// Reports written before noise evidence was kept: each shard judged noise
/// on its own traffic, and the merged list holds every group some shard
/// judged noise, with the highest rates seen.
fn merge_noise(reports: &[Report]) -> Option<LearnedNoise> {
    let mut merged: Option<LearnedNoise> = None;
    for noise in reports.iter().filter_map(|r| r.learned_noise.as_ref()) {
        let m = merged.get_or_insert_with(|| LearnedNoise {
            groups: Vec::new(),
            ..noise.clone()
        });
        for g in &noise.groups {
            let same = |x: &&mut NoiseGroup| {
                x.method == g.method && x.route == g.route && x.kind == g.kind && x.path == g.path
            };
            match m.groups.iter_mut().find(same) {
                Some(x) => {
                    x.diff_rate = x.diff_rate.max(g.diff_rate);
                    x.noise_rate = x.noise_rate.max(g.noise_rate);
                }
                None => m.groups.push(g.clone()),
            }
        }
    }
    merged
}

fn unused_everywhere(reports: &[Report]) -> Vec<String> {
    let mut sets = reports
        .iter()
        .map(|r| r.unused_rules.iter().cloned().collect::<BTreeSet<_>>());
    let Some(first) = sets.next() else {
        return Vec::new();
    };
    sets.fold(first, |acc, s| acc.intersection(&s).cloned().collect())
        .into_iter()
        .collect()
}
