//! `report.html`: one self-contained file that opens offline, for people.
//! The verdict and gates first; then the run over time (throughput,
//! corrected latency, errors, mismatches and drops, send lag), the latency
//! spectrum of both stacks, a sortable table of routes, and each mismatch
//! group with a side-by-side diff of both answers. Charts are drawn by
//! uPlot, inlined from `assets/uplot` with the data as JSON; once every
//! chart has drawn the page sets `data-charts-ready` on `<body>` (what the
//! browser test waits for), and a script error is shown on the page and
//! sets `data-error`.

use std::io::{self, Write};

use serde_json::{json, Value};

use super::{percent, MismatchGroup, Render, Report};
use crate::latency::{human, Latency};

const UPLOT_JS: &str = include_str!("assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/uplot/uPlot.min.css");

/// Mismatch groups shown with their diff, at most (report.json has all).
const GROUPS_SHOWN: usize = 50;

/// The HTML renderer.
pub struct Html;

impl Render for Html {
    fn render(&self, r: &Report, out: &mut dyn Write) -> io::Result<()> {
        let data = data(r).to_string().replace("</", "<\\/");
        write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>tandem parity report</title>\n<style>{UPLOT_CSS}\n{STYLE}</style>\n\
             <script>{ERRORS}</script>\n</head><body>\n"
        )?;
        header(r, out)?;
        write!(
            out,
            "<h2>Over time</h2>\n<div class=\"charts\">\
             <div id=\"throughput\"></div><div id=\"latency\"></div>\
             <div id=\"failures\"></div><div id=\"lag\"></div></div>\n\
             <h2>Latency spectrum</h2>\n<div id=\"spectrum\"></div>\n"
        )?;
        routes(r, out)?;
        groups(r, out)?;
        effects(r, out)?;
        write!(
            out,
            "<script type=\"application/json\" id=\"data\">{data}</script>\n\
             <script>{UPLOT_JS}</script>\n<script>{SCRIPT}</script>\n</body></html>\n"
        )
    }
}

/// The verdict, the gates, the counts, and why parity may not be trusted.
fn header(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let s = &r.summary;
    writeln!(out, "<h1>tandem parity report</h1>")?;
    match super::verdict(r) {
        Some(v) => {
            let class = if r.passed() { "pass" } else { "fail" };
            writeln!(out, "<p class=\"verdict {class}\">{}</p>", esc(&v))?;
        }
        None => writeln!(out, "<p class=\"verdict\">No gates.</p>")?,
    }
    for line in super::warnings(r) {
        writeln!(out, "<p class=\"warning\">{}.</p>", esc(&line))?;
    }
    if let Some(f) = r.fidelity.as_ref().filter(|f| f.is_low()) {
        writeln!(
            out,
            "<p class=\"warning\"><b>Parity cannot be trusted.</b> {}.</p>",
            esc(&f.warning())
        )?;
    }
    if !r.gates.is_empty() {
        writeln!(
            out,
            "<table class=\"gates\"><tr><th></th><th>gate</th><th>route</th><th>observed</th></tr>"
        )?;
        for g in &r.gates {
            let (class, mark) = if g.passed {
                ("pass", "passed")
            } else {
                ("fail", "FAILED")
            };
            writeln!(
                out,
                "<tr class=\"{class}\"><td>{mark}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&g.expression),
                esc(g.route.as_deref().unwrap_or("")),
                esc(&g.text)
            )?;
        }
        writeln!(out, "</table>")?;
    }
    writeln!(
        out,
        "<p class=\"run\">capture <code>{}</code>; legacy <code>{}</code>, new <code>{}</code>; \
         speed {}x; {} exchanges: {} matched, {} mismatched, {} errors, {} not sent in time; \
         parity <b>{}</b>{}{}.</p>",
        esc(&r.run.capture),
        esc(&r.run.legacy),
        esc(&r.run.new),
        r.run.speed,
        s.total,
        s.matched,
        s.mismatched,
        s.errors,
        s.dropped,
        percent(s.parity),
        r.fidelity.as_ref().map_or(String::new(), |f| format!(
            ", fidelity <b>{}</b>",
            percent(f.rate)
        )),
        r.generator.as_ref().map_or(String::new(), |g| format!(
            "; sent by {}",
            esc(&g.describe())
        ))
    )
}

/// Routes: a table that sorts by any column (the script does it).
fn routes(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "<h2>Routes</h2>\n<table class=\"routes sortable\"><thead><tr>"
    )?;
    for (i, h) in [
        "route",
        "count",
        "parity",
        "fidelity",
        "legacy p50",
        "legacy p99",
        "new p50",
        "new p99",
        "p99 delta",
    ]
    .iter()
    .enumerate()
    {
        write!(out, "<th data-col=\"{i}\">{h}</th>")?;
    }
    writeln!(out, "</tr></thead><tbody>")?;
    for route in &r.routes {
        let fidelity = r.fidelity.as_ref().and_then(|f| {
            f.routes
                .iter()
                .find(|x| x.method == route.method && x.route == route.route)
        });
        let parity = route.matched as f64 / route.total.max(1) as f64;
        let (l, n) = (&route.latency.legacy, &route.latency.new);
        let delta = n.p99 as i64 - l.p99 as i64;
        let cell = |sort: f64, shown: String| format!("<td data-v=\"{sort}\">{shown}</td>");
        writeln!(
            out,
            "<tr><td data-v=\"{0}\"><code>{0}</code></td>{1}{2}{3}{4}{5}{6}{7}{8}</tr>",
            esc(&format!("{} {}", route.method, route.route)),
            cell(route.total as f64, route.total.to_string()),
            cell(parity, percent(parity)),
            fidelity.map_or(cell(-1.0, "–".into()), |f| cell(f.rate, percent(f.rate))),
            cell(l.p50 as f64, human(l.p50)),
            cell(l.p99 as f64, human(l.p99)),
            cell(n.p50 as f64, human(n.p50)),
            cell(n.p99 as f64, human(n.p99)),
            cell(
                delta as f64,
                format!(
                    "{}{}",
                    if delta < 0 { "−" } else { "+" },
                    human(delta.unsigned_abs())
                )
            ),
        )?;
    }
    writeln!(out, "</tbody></table>")?;
    if !r.learned_routes.is_empty() {
        writeln!(
            out,
            "<p>Routes learned from the capture (positions with many, mostly distinct values): {}</p>",
            r.learned_routes
                .iter()
                .map(|t| format!("<code>{}</code>", esc(t)))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    Ok(())
}

/// What the stacks did besides answering, and where it differs.
fn effects(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let Some(e) = &r.effects else {
        return Ok(());
    };
    writeln!(out, "<h2>Side effects</h2>\n<p>{}</p>", esc(&e.describe()))?;
    if e.mismatch_groups.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "<table id=\"effects\"><tr><th>count</th><th>route</th><th>effect</th>\
         <th>what differs</th><th>legacy</th><th>new</th><th>example</th></tr>"
    )?;
    for g in e.mismatch_groups.iter().take(GROUPS_SHOWN) {
        let example = g.examples.first();
        let side = |v: Option<&String>| esc(v.map_or("none", String::as_str));
        writeln!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td>\
             <td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
            g.count,
            esc(&g.route),
            esc(&g.kind),
            esc(&g.what),
            side(example.and_then(|x| x.legacy.as_ref())),
            side(example.and_then(|x| x.new.as_ref())),
            example
                .and_then(|x| x.exchange_id)
                .map_or("untied".to_string(), |id| format!("#{id}"))
        )?;
    }
    writeln!(out, "</table>")
}

/// Mismatch groups, each with its first example as a side-by-side diff.
fn groups(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "<h2>Mismatches</h2>")?;
    if r.mismatch_groups.is_empty() {
        return writeln!(out, "<p>None.</p>");
    }
    for (i, g) in r.mismatch_groups.iter().take(GROUPS_SHOWN).enumerate() {
        // The largest groups open, the rest a click away.
        group(g, i < 3, out)?;
    }
    if r.mismatch_groups.len() > GROUPS_SHOWN {
        writeln!(
            out,
            "<p>{} more groups in report.json.</p>",
            r.mismatch_groups.len() - GROUPS_SHOWN
        )?;
    }
    Ok(())
}

fn group(g: &MismatchGroup, open: bool, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "<details class=\"group\"{}><summary><b>{}</b> <code>{} {}</code> {} <code>{}</code> \
         ({} of compared)</summary>",
        if open { " open" } else { "" },
        g.count,
        esc(&g.method),
        esc(&g.route),
        g.kind.as_str(),
        esc(g.path.as_deref().unwrap_or("")),
        percent(g.rate)
    )?;
    if let Some(e) = g.examples.first() {
        writeln!(
            out,
            "<p>exchange #{}: <code>{}</code></p><ul>",
            e.exchange_id,
            esc(&e.request.line)
        )?;
        for m in &e.mismatches {
            writeln!(
                out,
                "<li>{} <code>{}</code>: legacy <code>{}</code>, new <code>{}</code></li>",
                m.kind.as_str(),
                esc(m.path.as_deref().unwrap_or("")),
                esc(m.legacy.as_deref().unwrap_or("(absent)")),
                esc(m.new.as_deref().unwrap_or("(absent)"))
            )?;
        }
        writeln!(out, "</ul>")?;
        side_by_side(
            &format!("{}\n\n{}", e.legacy.line, pretty(&e.legacy.body)),
            &format!("{}\n\n{}", e.new.line, pretty(&e.new.body)),
            out,
        )?;
    }
    writeln!(out, "</details>")
}

/// Both answers in two columns, the lines that differ marked.
fn side_by_side(legacy: &str, new: &str, out: &mut dyn Write) -> io::Result<()> {
    use similar::{ChangeTag, TextDiff};
    writeln!(
        out,
        "<table class=\"diff\"><tr><th>legacy</th><th>new</th></tr>"
    )?;
    let diff = TextDiff::from_lines(legacy, new);
    for op in diff.ops() {
        let (mut old, mut new): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        for change in diff.iter_changes(op) {
            let line = esc(change.value().trim_end_matches('\n'));
            match change.tag() {
                ChangeTag::Equal => {
                    old.push(line.clone());
                    new.push(line);
                }
                ChangeTag::Delete => old.push(format!("<del>{line}</del>")),
                ChangeTag::Insert => new.push(format!("<ins>{line}</ins>")),
            }
        }
        for i in 0..old.len().max(new.len()) {
            writeln!(
                out,
                "<tr><td>{}</td><td>{}</td></tr>",
                old.get(i).map_or("", String::as_str),
                new.get(i).map_or("", String::as_str)
            )?;
        }
    }
    writeln!(out, "</table>")
}

/// A JSON body indented, so that the diff is by field; other bodies as they are.
fn pretty(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.to_string())
}

/// What the charts draw, as the script reads it.
fn data(r: &Report) -> Value {
    let points = r.series.as_ref().map_or(&[][..], |s| &s.points[..]);
    let per_s = r
        .series
        .as_ref()
        .map_or(1.0, |s| 1000.0 / s.interval_ms.max(1) as f64);
    let col =
        |f: &dyn Fn(&super::series::Point) -> f64| -> Vec<f64> { points.iter().map(f).collect() };
    let ms = |us: u64| us as f64 / 1000.0;
    let spectrum = |base64: &str| -> Vec<(f64, f64)> {
        Latency::from_base64(base64)
            .map(|l| {
                l.spectrum()
                    .into_iter()
                    .map(|(p, us)| (p, ms(us)))
                    .collect()
            })
            .unwrap_or_default()
    };
    json!({
        "t": col(&|p| p.at_ms as f64 / 1000.0),
        "legacy_sent": col(&|p| p.legacy.sent as f64 * per_s),
        "legacy_answered": col(&|p| p.legacy.answered as f64 * per_s),
        "new_sent": col(&|p| p.new.sent as f64 * per_s),
        "new_answered": col(&|p| p.new.answered as f64 * per_s),
        "legacy_p50": col(&|p| ms(p.legacy.corrected.p50)),
        "legacy_p99": col(&|p| ms(p.legacy.corrected.p99)),
        "new_p50": col(&|p| ms(p.new.corrected.p50)),
        "new_p99": col(&|p| ms(p.new.corrected.p99)),
        "errors": col(&|p| p.errors as f64),
        "mismatched": col(&|p| p.mismatched as f64),
        "dropped": col(&|p| p.dropped as f64),
        "legacy_lag_p99": col(&|p| ms(p.legacy.lag.p99)),
        "new_lag_p99": col(&|p| ms(p.new.lag.p99)),
        "spectrum_legacy": spectrum(&r.histograms.legacy_corrected),
        "spectrum_new": spectrum(&r.histograms.new_corrected),
    })
}

/// `capacity.html`: latency and error rate against offered rate, each
/// search a line, and every step in a table; self-contained as report.html.
pub fn capacity_html(r: &crate::capacity::CapacityReport, out: &mut dyn Write) -> io::Result<()> {
    let mut rates: Vec<f64> = r
        .searches
        .iter()
        .flat_map(|s| s.steps.iter().map(|step| step.rate))
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let column = |s: &crate::capacity::Search,
                  f: &dyn Fn(&crate::capacity::Step) -> f64|
     -> Vec<Option<f64>> {
        rates
            .iter()
            .map(|rate| {
                // The last step at a rate (a confirmation, when there is one).
                s.steps.iter().rev().find(|st| st.rate == *rate).map(f)
            })
            .collect()
    };
    let data = json!({
        "rates": rates,
        "names": r.searches.iter().map(|s| format!("{:?}", s.target)).collect::<Vec<_>>(),
        "latency": r.searches.iter().map(|s| column(s, &|st| st.latency_us as f64 / 1000.0)).collect::<Vec<_>>(),
        "errors": r.searches.iter().map(|s| column(s, &|st| st.error_rate * 100.0)).collect::<Vec<_>>(),
    })
    .to_string()
    .replace("</", "<\\/");
    write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>tandem capacity</title>\n<style>{UPLOT_CSS}\n{STYLE}</style>\n\
         <script>{ERRORS}</script>\n</head><body>\n<h1>Capacity within {}</h1>\n<ul>",
        esc(&r.slo)
    )?;
    for s in &r.searches {
        writeln!(
            out,
            "<li>{:?}: <b>{}</b>{}{}</li>",
            s.target,
            s.sustainable_rps
                .map_or("none of the rates tried".into(), |v| format!(
                    "{v:.0} requests/s"
                )),
            s.headroom
                .map_or(String::new(), |h| format!(", {h:.2}x the projected rate")),
            esc(s.caveat())
        )?;
    }
    if let Some(ratio) = r.new_over_legacy {
        writeln!(out, "<li>new / legacy: <b>{ratio:.2}x</b></li>")?;
    }
    writeln!(
        out,
        "</ul>\n<div class=\"charts\"><div id=\"latency\"></div><div id=\"errors\"></div></div>"
    )?;
    for s in &r.searches {
        writeln!(
            out,
            "<h2>{:?}</h2><table><tr><th>rate</th><th></th><th>latency</th><th>errors</th>\
             <th>divergent</th><th>achieved</th><th>engine busy</th><th>why</th></tr>",
            s.target
        )?;
        for st in &s.steps {
            writeln!(
                out,
                "<tr class=\"{}\"><td>{:.0}{}</td><td>{}</td><td>{}</td><td>{:.2}%</td><td>{:.2}%</td><td>{:.0}</td><td>{:.0}%</td><td>{}</td></tr>",
                if st.passed { "pass" } else { "fail" },
                st.rate,
                if st.confirmation { " (confirm)" } else { "" },
                st.verdict(),
                human(st.latency_us),
                st.error_rate * 100.0,
                st.mismatch_rate * 100.0,
                st.achieved_rps,
                st.engine_busy * 100.0,
                esc(&st.failed.join("; "))
            )?;
        }
        writeln!(out, "</table>")?;
    }
    write!(
        out,
        "<script type=\"application/json\" id=\"data\">{data}</script>\n\
         <script>{UPLOT_JS}</script>\n<script>{CAPACITY_SCRIPT}</script>\n</body></html>\n"
    )
}

const CAPACITY_SCRIPT: &str = r#"
(function () {
  var d = JSON.parse(document.getElementById('data').textContent);
  var colors = ['#1f77b4', '#ff7f0e', '#2ca02c'], drawn = 0;
  function chart(id, title, ylabel, ys) {
    var opts = {
      title: title, width: 560, height: 280,
      scales: { x: { time: false } },
      series: [{ label: 'req/s' }].concat(d.names.map(function (n, i) {
        return { label: n, stroke: colors[i % 3], width: 1.5, spanGaps: true, points: { show: true, size: 6 } };
      })),
      axes: [{ label: 'offered rate (req/s)' }, { label: ylabel }],
      hooks: { ready: [function () { drawn += 1; if (drawn === 2) { document.body.dataset.chartsReady = '2'; } }] }
    };
    new uPlot(opts, [d.rates].concat(ys), document.getElementById(id));
  }
  chart('latency', 'Corrected latency at the SLO percentile (ms)', 'ms', d.latency);
  chart('errors', 'Errors (%)', '%', d.errors);
})();
"#;

/// Text made safe inside HTML elements and attributes.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }
code { font: 12px ui-monospace, monospace; }
.verdict { font-size: 20px; font-weight: 600; padding: 8px 12px; border-radius: 4px; background: #eee; }
.verdict.pass { background: #d9f2dc; } .verdict.fail { background: #f9d9d9; }
.warning { background: #fff3cd; padding: 8px 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
tr.fail td:first-child { color: #b00; font-weight: 600; } tr.pass td:first-child { color: #070; }
.routes td[data-v] { text-align: right; } .routes td:first-child { text-align: left; }
.sortable th { cursor: pointer; user-select: none; } .sortable th:hover { background: #f3f3f3; }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.diff { width: 100%; table-layout: fixed; } .diff td { font: 12px ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; }
del { background: #fdd; text-decoration: none; display: block; } ins { background: #dfd; text-decoration: none; display: block; }
details.group { margin: 6px 0; } details.group summary { cursor: pointer; }
#js-errors { color: #b00; white-space: pre-wrap; }
"#;

/// Installed first: a script error shows on the page and marks it.
const ERRORS: &str = r#"
window.addEventListener('error', function (e) {
  document.documentElement.dataset.error = String(e.message);
  var box = document.getElementById('js-errors');
  if (!box) { box = document.createElement('pre'); box.id = 'js-errors'; (document.body || document.documentElement).prepend(box); }
  box.textContent += 'script error: ' + e.message + '\n';
});
"#;

const SCRIPT: &str = r#"
(function () {
  var d = JSON.parse(document.getElementById('data').textContent);
  var width = Math.max(360, Math.min(580, (document.body.clientWidth - 12) / 2));
  var expected = 5, drawn = 0;
  function ready() {
    drawn += 1;
    if (drawn === expected) { document.body.dataset.chartsReady = String(drawn); }
  }
  function chart(id, title, xs, series, opts) {
    var el = document.getElementById(id);
    var cfg = Object.assign({
      title: title, width: id === 'spectrum' ? Math.min(1180, width * 2) : width, height: 260,
      series: [{ label: opts && opts.xlabel || 's' }].concat(series.map(function (s) {
        return { label: s[0], stroke: s[2], width: 1.5, points: { show: false } };
      })),
      axes: [{ label: opts && opts.xlabel || 'seconds' }, { label: opts && opts.ylabel || '' }],
      scales: { x: { time: false } },
      hooks: { ready: [function () { ready(); }] }
    }, opts && opts.extra || {});
    if (xs.length === 0) {
      el.textContent = title + ': no data';
      ready();
      return;
    }
    new uPlot(cfg, [xs].concat(series.map(function (s) { return s[1]; })), el);
  }
  var blue = '#1f77b4', orange = '#ff7f0e', lblue = '#9ecae1', lorange = '#fdae6b';
  chart('throughput', 'Throughput (req/s)', d.t, [
    ['legacy sent', d.legacy_sent, lblue], ['legacy answered', d.legacy_answered, blue],
    ['new sent', d.new_sent, lorange], ['new answered', d.new_answered, orange]], { ylabel: 'req/s' });
  chart('latency', 'Corrected latency (ms)', d.t, [
    ['legacy p50', d.legacy_p50, lblue], ['legacy p99', d.legacy_p99, blue],
    ['new p50', d.new_p50, lorange], ['new p99', d.new_p99, orange]], { ylabel: 'ms' });
  chart('failures', 'Errors, mismatches, drops (exchanges)', d.t, [
    ['errors', d.errors, '#d62728'], ['mismatched', d.mismatched, '#9467bd'], ['dropped', d.dropped, '#7f7f7f']],
    { ylabel: 'exchanges' });
  chart('lag', 'Send lag p99 (ms): is the run valid?', d.t, [
    ['legacy', d.legacy_lag_p99, blue], ['new', d.new_lag_p99, orange]], { ylabel: 'ms' });
  // The spectrum: x is 1 / (1 - percentile), on a log scale, so that the
  // tail (p99, p99.9, p99.99) gets as much room as the median.
  var pct = d.spectrum_legacy.length ? d.spectrum_legacy : d.spectrum_new;
  var xs = pct.filter(function (p) { return p[0] < 100; }).map(function (p) { return 1 / (1 - p[0] / 100); });
  function ys(points) { return points.filter(function (p) { return p[0] < 100; }).map(function (p) { return p[1]; }); }
  chart('spectrum', 'Latency by percentile, corrected (ms, log scales to p99.999)', xs, [
    ['legacy', ys(d.spectrum_legacy), blue], ['new', ys(d.spectrum_new), orange]], {
      xlabel: 'percentile', ylabel: 'ms', extra: {
        scales: { x: { time: false, distr: 3 }, y: { distr: 3 } },
        axes: [{ label: 'percentile',
          splits: function () { return [1, 2, 10, 100, 1000, 10000, 100000]; },
          values: function (u, vals) {
            var names = { 1: '0%', 2: '50%', 10: '90%', 100: '99%', 1000: '99.9%', 10000: '99.99%', 100000: '99.999%' };
            return vals.map(function (v) { return names[v] || ''; });
          } }, { label: 'ms' }]
      } });
  // Sortable tables: a click on a header sorts by that column, again to reverse.
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('th').forEach(function (th) {
      th.addEventListener('click', function () {
        var col = Number(th.dataset.col), body = table.tBodies[0];
        var dir = th.dataset.dir === 'asc' ? -1 : 1;
        th.dataset.dir = dir === 1 ? 'asc' : 'desc';
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
          var nx = Number(x), ny = Number(y);
          return dir * (isNaN(nx) || isNaN(ny) ? String(x).localeCompare(String(y)) : nx - ny);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  // A link may carry a sort: report.html#sort=5 sorts the routes by p99 of legacy.
  var sort = /sort=(\d+)/.exec(location.hash);
  if (sort) {
    var th = document.querySelector('table.routes th[data-col="' + sort[1] + '"]');
    if (th) { th.click(); }
  }
})();
"#;
