//! Two runs side by side (`tandem report compare BASE RUN`): per route, how
//! parity and each stack's latency moved; mismatch groups that are new,
//! fixed or still there. For the grey-scale step after a fix: did it fix
//! what it meant to, and break nothing else?

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use super::{percent, Generator, Report, RouteReport};
use crate::latency::human;

/// What changed from a base run to a run.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Where the base report came from.
    pub base: String,
    /// Where the compared report came from.
    pub run: String,
    /// Per route, both sides (either may be missing).
    pub routes: Vec<RouteDelta>,
    /// Mismatch groups of either run, each with what became of it.
    pub groups: Vec<GroupChange>,
    /// Why either run's latencies may be tandem's rather than the stacks'
    /// (its engines saturated or kept from a core), naming the run: a
    /// latency that moved between two runs is the stacks' only if neither
    /// was held back by tandem.
    pub caveats: Vec<String>,
}

/// One route in both runs.
#[derive(Debug, Clone)]
pub struct RouteDelta {
    /// `METHOD /route`.
    pub route: String,
    /// Its figures in the base run.
    pub base: Option<Figures>,
    /// Its figures in the run.
    pub run: Option<Figures>,
}

/// A route's figures in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Exchanges.
    pub total: u64,
    /// Matched share.
    pub parity: f64,
    /// Legacy's p50 and p99, µs.
    pub legacy: (u64, u64),
    /// New's p50 and p99, µs.
    pub new: (u64, u64),
}

/// What became of a mismatch group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Only in the run.
    New,
    /// In both.
    Still,
    /// Only in the base run.
    Fixed,
}

/// A mismatch group in either run.
#[derive(Debug, Clone)]
pub struct GroupChange {
    /// `METHOD /route kind path`.
    pub group: String,
    /// New, still there, or fixed.
    pub change: Change,
    /// Exchanges showing it in the base run and in the run.
    pub counts: (u64, u64),
}

impl Comparison {
    /// `run` held against `base`.
    pub fn of(base: &Report, run: &Report, names: (&str, &str)) -> Comparison {
        let figures = |r: &RouteReport| Figures {
            total: r.total,
            parity: r.matched as f64 / r.total.max(1) as f64,
            legacy: (r.latency.legacy.p50, r.latency.legacy.p99),
            new: (r.latency.new.p50, r.latency.new.p99),
        };
        let mut routes: BTreeMap<String, RouteDelta> = BTreeMap::new();
        for (side, report) in [(0, base), (1, run)] {
            for r in &report.routes {
                let name = format!("{} {}", r.method, r.route);
                let delta = routes.entry(name.clone()).or_insert(RouteDelta {
                    route: name,
                    base: None,
                    run: None,
                });
                *(if side == 0 {
                    &mut delta.base
                } else {
                    &mut delta.run
                }) = Some(figures(r));
            }
        }
        let counts = |r: &Report| -> BTreeMap<String, u64> {
            r.mismatch_groups
                .iter()
                .map(|g| {
                    let path = g.path.as_deref().unwrap_or("");
                    let key = format!("{} {} {} {path}", g.method, g.route, g.kind.as_str());
                    (key.trim_end().to_string(), g.count)
                })
                .collect()
        };
        let (before, after) = (counts(base), counts(run));
        let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        let mut groups: Vec<GroupChange> = keys
            .into_iter()
            .map(|key| {
                let (b, a) = (before.get(key).copied(), after.get(key).copied());
                let change = match (b, a) {
                    (None, _) => Change::New,
                    (_, None) => Change::Fixed,
                    _ => Change::Still,
                };
                GroupChange {
                    group: key.clone(),
                    change,
                    counts: (b.unwrap_or(0), a.unwrap_or(0)),
                }
            })
            .collect();
        groups.sort_by(|x, y| x.change.cmp(&y.change).then(y.counts.1.cmp(&x.counts.1)));
        let caveats = [(names.0, base), (names.1, run)]
            .into_iter()
            .flat_map(|(name, r)| {
                let generator = r.generator.as_ref();
                Generator::CAVEATS
                    .into_iter()
                    .filter_map(move |warning| generator.and_then(warning))
                    .map(move |warning| format!("{name}: {warning}"))
            })
            .collect();
        Comparison {
            base: names.0.to_string(),
            run: names.1.to_string(),
            routes: routes.into_values().collect(),
            groups,
            caveats,
        }
    }

    /// Groups only in the run.
    pub fn new_groups(&self) -> usize {
        self.count(Change::New)
    }

    /// How many groups changed so.
    pub fn count(&self, change: Change) -> usize {
        self.groups.iter().filter(|g| g.change == change).count()
    }

    /// The comparison in Markdown.
    pub fn markdown(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "# tandem: {} against {}\n", self.run, self.base)?;
        for caveat in &self.caveats {
            writeln!(out, "**{caveat}.**\n")?;
        }
        writeln!(
            out,
            "Mismatch groups: {} new, {} fixed, {} still there.\n",
            self.count(Change::New),
            self.count(Change::Fixed),
            self.count(Change::Still)
        )?;
        writeln!(out, "| | group | base | run |\n|---|---|---:|---:|")?;
        for g in &self.groups {
            writeln!(
                out,
                "| {} | `{}` | {} | {} |",
                g.change.name(),
                g.group,
                g.counts.0,
                g.counts.1
            )?;
        }
        writeln!(
            out,
            "\n| route | exchanges | parity | legacy p50 | legacy p99 | new p50 | new p99 |\n\
             |---|---:|---:|---:|---:|---:|---:|"
        )?;
        for r in &self.routes {
            let cells = r.cells();
            writeln!(out, "| `{}` | {} |", r.route, cells.join(" | "))?;
        }
        Ok(())
    }

    /// The comparison as one self-contained HTML page.
    pub fn html(&self, out: &mut dyn Write) -> io::Result<()> {
        use super::html::{esc, STYLE};
        writeln!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>tandem comparison</title><style>{STYLE}</style></head><body>"
        )?;
        writeln!(
            out,
            "<h1>{} against {}</h1>\n<p class=\"verdict {}\">Mismatch groups: {} new, {} fixed, {} still there.</p>",
            esc(&self.run),
            esc(&self.base),
            if self.new_groups() == 0 { "pass" } else { "fail" },
            self.count(Change::New),
            self.count(Change::Fixed),
            self.count(Change::Still)
        )?;
        for caveat in &self.caveats {
            writeln!(out, "<p class=\"warning\">{}.</p>", esc(caveat))?;
        }
        writeln!(
            out,
            "<table><tr><th></th><th>group</th><th>base</th><th>run</th></tr>"
        )?;
        for g in &self.groups {
            let class = match g.change {
                Change::New => "fail",
                Change::Fixed => "pass",
                Change::Still => "",
            };
            writeln!(
                out,
                "<tr class=\"{class}\"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                g.change.name(),
                esc(&g.group),
                g.counts.0,
                g.counts.1
            )?;
        }
        writeln!(
            out,
            "</table>\n<table><tr><th>route</th><th>exchanges</th><th>parity</th>\
             <th>legacy p50</th><th>legacy p99</th><th>new p50</th><th>new p99</th></tr>"
        )?;
        for r in &self.routes {
            let cells: String = r
                .cells()
                .iter()
                .map(|c| format!("<td>{}</td>", esc(c)))
                .collect();
            writeln!(
                out,
                "<tr><td><code>{}</code></td>{cells}</tr>",
                esc(&r.route)
            )?;
        }
        writeln!(out, "</table></body></html>")
    }
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Still => "still",
            Change::Fixed => "fixed",
        }
    }
}

impl RouteDelta {
    /// Each figure as `base → run (delta)`, or one side when the route is
    /// in one run only.
    fn cells(&self) -> Vec<String> {
        let pick: [&dyn Fn(&Figures) -> f64; 6] = [
            &|f| f.total as f64,
            &|f| f.parity,
            &|f| f.legacy.0 as f64,
            &|f| f.legacy.1 as f64,
            &|f| f.new.0 as f64,
            &|f| f.new.1 as f64,
        ];
        pick.iter()
            .enumerate()
            .map(|(i, f)| {
                let show = |v: f64| match i {
                    0 => format!("{v:.0}"),
                    1 => percent(v),
                    _ => human(v as u64),
                };
                match (self.base.as_ref().map(f), self.run.as_ref().map(f)) {
                    (Some(b), Some(r)) if b == r => show(r),
                    (Some(b), Some(r)) => {
                        let delta = match i {
                            1 => format!("{:+.2} pts", (r - b) * 100.0),
                            0 => format!("{:+.0}", r - b),
                            _ => format!(
                                "{}{}",
                                if r < b { "−" } else { "+" },
                                human((r - b).abs() as u64)
                            ),
                        };
                        format!("{} → {} ({delta})", show(b), show(r))
                    }
                    (Some(b), None) => format!("{} → (none)", show(b)),
                    (None, Some(r)) => format!("(none) → {}", show(r)),
                    (None, None) => String::new(),
                }
            })
            .collect()
    }
}
