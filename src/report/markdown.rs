use std::io::{self, Write};

use super::{percent, Render, Report};
use crate::latency::human;

/// `summary.md`: the report for people reading a CI artifact or a PR comment.
pub struct Markdown;

impl Render for Markdown {
    fn render(&self, r: &Report, out: &mut dyn Write) -> io::Result<()> {
        let s = &r.summary;
        writeln!(out, "# tandem parity report\n")?;
        if let Some(fidelity) = r.fidelity.as_ref().filter(|f| f.is_low()) {
            writeln!(
                out,
                "> **Parity cannot be trusted.** {}.\n",
                capitalized(&fidelity.warning())
            )?;
        }
        writeln!(out, "- capture: `{}`", r.run.capture)?;
        writeln!(
            out,
            "- legacy: `{}`, new: `{}`, speed: {}x",
            r.run.legacy, r.run.new, r.run.speed
        )?;
        if let Some(rules) = &r.run.rules {
            writeln!(out, "- rules: `{rules}`")?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "| exchanges | matched | mismatched | errors | not sent in time | parity |"
        )?;
        writeln!(out, "|---:|---:|---:|---:|---:|---:|")?;
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |\n",
            s.total,
            s.matched,
            s.mismatched,
            s.errors,
            s.dropped,
            percent(s.parity)
        )?;
        if let Some(load) = &r.load {
            writeln!(
                out,
                "Load received: legacy {}; new {}.
",
                load.legacy.describe(),
                load.new.describe()
            )?;
            if load.legacy.fell_behind() || load.new.fell_behind() {
                writeln!(
                    out,
                    "**A stack fell behind the schedule**: its latencies were measured under a lighter load than the other's.
"
                )?;
            }
        }
        if let Some(g) = &r.generator {
            writeln!(out, "Sent by {}.\n", g.describe())?;
        }
        if s.failed_alike > 0 {
            writeln!(
                out,
                "{} of the matched exchanges are failures on both stacks (4xx/5xx): alike, but no proof of parity.\n",
                s.failed_alike
            )?;
        }
        verdict_and_gates(r, out)?;
        fidelity(r, out)?;
        effects(r, out)?;
        correlation(r, out)?;
        mismatch_groups(r, out)?;
        noise_and_rules(r, out)?;
        errors(r, out)?;
        routes(r, out)
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn effects(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let Some(e) = &r.effects else {
        return Ok(());
    };
    writeln!(out, "## Side effects\n")?;
    writeln!(out, "{}.\n", capitalized(&e.describe()))?;
    if e.mismatch_groups.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "| count | route | effect | what differs | legacy | new | example |"
    )?;
    writeln!(out, "|---:|---|---|---|---|---|---|")?;
    for g in e.mismatch_groups.iter().take(20) {
        let example = g.examples.first();
        let side = |v: Option<&String>| v.map_or("none".to_string(), |v| format!("`{v}`"));
        writeln!(
            out,
            "| {} | `{}` | `{}` | {} | {} | {} | {} |",
            g.count,
            g.route,
            g.kind,
            g.what,
            side(example.and_then(|e| e.legacy.as_ref())),
            side(example.and_then(|e| e.new.as_ref())),
            example
                .and_then(|e| e.exchange_id)
                .map_or("untied".to_string(), |id| format!("#{id}"))
        )?;
    }
    writeln!(out)
}

fn fidelity(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let Some(f) = &r.fidelity else {
        return Ok(());
    };
    writeln!(out, "## Fidelity\n")?;
    writeln!(
        out,
        "{} of legacy's replayed answers ({} of {}) match the recorded ones in status and body structure.\n",
        percent(f.rate),
        f.faithful,
        f.judged
    )?;
    if f.divergences.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "| count | route | kind | path | recorded | legacy | example |"
    )?;
    writeln!(out, "|---:|---|---|---|---|---|---|")?;
    for d in f.divergences.iter().take(20) {
        writeln!(
            out,
            "| {} | `{} {}` | {} | {} | {} | {} | #{} |",
            d.count,
            d.method,
            d.route,
            d.kind.as_str(),
            d.path
                .as_deref()
                .map_or("–".to_string(), |p| format!("`{p}`")),
            d.recorded
                .as_deref()
                .map_or("–".to_string(), |v| format!("`{v}`")),
            d.replayed
                .as_deref()
                .map_or("–".to_string(), |v| format!("`{v}`")),
            d.first_exchange
        )?;
    }
    writeln!(out)
}

fn correlation(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let Some(c) = &r.correlation else {
        return Ok(());
    };
    writeln!(out, "## Correlation\n")?;
    writeln!(
        out,
        "{} links followed; {} mismatches settled as the same recorded value on both stacks; {} exchanges carried a recorded value that could not be followed.\n",
        c.links.len(),
        c.settled,
        c.unresolved
    )?;
    if !c.links.is_empty() {
        writeln!(out, "| producer | from | consumer | to | held |")?;
        writeln!(out, "|---|---|---|---|---:|")?;
        for l in c.links.iter().take(30) {
            writeln!(
                out,
                "| `{}` | `{}` | `{}` | `{}` | {} of {}{} |",
                l.producer,
                l.from,
                l.consumer,
                l.to,
                l.hits,
                l.occurrences,
                if l.written { " (rule)" } else { "" }
            )?;
        }
        writeln!(out)?;
    }
    for (reason, count) in &c.reasons {
        writeln!(out, "- not followed {count}x: {reason}")?;
    }
    if !c.reasons.is_empty() {
        writeln!(out)?;
    }
    Ok(())
}

fn mismatch_groups(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "## Mismatches\n")?;
    if r.mismatch_groups.is_empty() {
        return writeln!(out, "None.\n");
    }
    writeln!(
        out,
        "| count | route | kind | path | legacy | new | example |"
    )?;
    writeln!(out, "|---:|---|---|---|---|---|---|")?;
    for g in &r.mismatch_groups {
        let Some(example) = g.examples.first() else {
            continue;
        };
        let Some(m) = example.mismatches.first() else {
            continue;
        };
        writeln!(
            out,
            "| {} | `{} {}` | {} | {} | {} | {} | #{} `{}` |",
            g.count,
            g.method,
            g.route,
            g.kind.as_str(),
            code(g.path.as_deref()),
            code(m.legacy.as_deref()),
            code(m.new.as_deref()),
            example.exchange_id,
            example.request.line.replace('|', "\\|"),
        )?;
    }
    writeln!(out)?;
    examples(r, out)
}

/// The verdict, then each gate with what was observed.
fn verdict_and_gates(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    if let Some(verdict) = super::verdict(r) {
        writeln!(out, "**Verdict {verdict}**.\n")?;
    }
    for line in super::warnings(r) {
        writeln!(out, "**{line}.**\n")?;
    }
    if !r.gates.is_empty() {
        writeln!(out, "| | gate | observed |\n|---|---|---|")?;
        for g in &r.gates {
            let mark = if g.passed { "passed" } else { "**FAILED**" };
            let route = g
                .route
                .as_ref()
                .map_or(String::new(), |r| format!(" on `{r}`"));
            writeln!(out, "| {mark} | `{}`{route} | {} |", g.expression, g.text)?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// A short Markdown summary for a CI job's page (`GITHUB_STEP_SUMMARY`):
/// the verdict and gates, the counts, the mismatch groups, and where the
/// full report is; at most `limit` bytes.
pub fn step_summary(r: &Report, artifact: &str, limit: usize) -> String {
    let mut out = Vec::new();
    let _ = step_summary_to(r, artifact, &mut out);
    let mut text = String::from_utf8_lossy(&out).into_owned();
    let tail = format!("\n… cut to fit the step summary; the full report is `{artifact}`.\n");
    if text.len() > limit {
        let mut cut = limit.saturating_sub(tail.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let cut = text[..cut].rfind('\n').map_or(cut, |n| n + 1);
        text.truncate(cut);
        text.push_str(&tail);
    }
    text
}

fn step_summary_to(r: &Report, artifact: &str, out: &mut dyn Write) -> io::Result<()> {
    let s = &r.summary;
    writeln!(out, "## tandem parity\n")?;
    if let Some(fidelity) = r.fidelity.as_ref().filter(|f| f.is_low()) {
        writeln!(
            out,
            "> **Parity cannot be trusted.** {}.\n",
            capitalized(&fidelity.warning())
        )?;
    }
    verdict_and_gates(r, out)?;
    writeln!(
        out,
        "{} exchanges: {} matched, {} mismatched, {} errors, {} not sent in time; parity {}.\n",
        s.total,
        s.matched,
        s.mismatched,
        s.errors,
        s.dropped,
        percent(s.parity)
    )?;
    if !r.mismatch_groups.is_empty() {
        writeln!(out, "| count | route | kind | path |\n|---:|---|---|---|")?;
        for g in &r.mismatch_groups {
            writeln!(
                out,
                "| {} | `{} {}` | {} | {} |",
                g.count,
                g.method,
                g.route,
                g.kind.as_str(),
                code(g.path.as_deref())
            )?;
        }
        writeln!(out)?;
    }
    writeln!(out, "Full report: `{artifact}` (summary.md, report.json).")
}

/// Each group's first example: the request, what differs, both answers.
fn examples(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    for g in r.mismatch_groups.iter().take(20) {
        let Some(e) = g.examples.first() else {
            continue;
        };
        let path = g.path.as_deref().unwrap_or("");
        writeln!(
            out,
            "### `{} {}` {} {path}\n",
            g.method,
            g.route,
            g.kind.as_str()
        )?;
        writeln!(out, "Exchange #{}: `{}`\n", e.exchange_id, e.request.line)?;
        for m in &e.mismatches {
            match &m.diff {
                Some(diff) => writeln!(out, "~~~diff\n{diff}~~~\n")?,
                None => writeln!(
                    out,
                    "- `{}`: legacy {} / new {}",
                    m.path.as_deref().unwrap_or("status"),
                    code(m.legacy.as_deref()),
                    code(m.new.as_deref())
                )?,
            }
        }
        writeln!(out, "\n<details><summary>both answers</summary>\n")?;
        for (side, view) in [("legacy", &e.legacy), ("new", &e.new)] {
            let body = view.body.replace("~~~", "~ ~ ~");
            writeln!(out, "{side} `{}`\n\n~~~\n{body}\n~~~\n", view.line)?;
        }
        writeln!(out, "</details>\n")?;
    }
    Ok(())
}

fn noise_and_rules(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    if !r.learned_routes.is_empty() {
        writeln!(out, "## Routes learned\n")?;
        writeln!(
            out,
            "Path positions with many, mostly distinct values in the capture, named `{{id}}` \
             (`[[route]] template` in the rules file overrides):\n"
        )?;
        for t in &r.learned_routes {
            writeln!(out, "- `{t}`")?;
        }
        writeln!(out)?;
    }
    if let Some(noise) = &r.learned_noise {
        writeln!(out, "## Learned noise\n")?;
        writeln!(
            out,
            "Also different between two legacy answers (`{}`), so not counted above.\n",
            noise.legacy2
        )?;
        writeln!(out, "| route | kind | path | legacy/new | legacy/legacy |")?;
        writeln!(out, "|---|---|---|---:|---:|")?;
        for g in &noise.groups {
            writeln!(
                out,
                "| `{} {}` | {} | {} | {} | {} |",
                g.method,
                g.route,
                g.kind.as_str(),
                code(g.path.as_deref()),
                percent(g.diff_rate),
                percent(g.noise_rate)
            )?;
        }
        writeln!(out)?;
    }
    if !r.unused_rules.is_empty() {
        writeln!(out, "## Unused rules\n")?;
        for rule in &r.unused_rules {
            writeln!(out, "- `{}`", rule.replace('`', "'"))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn errors(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    if r.errors.legacy.is_empty() && r.errors.new.is_empty() {
        return Ok(());
    }
    writeln!(out, "## Errors\n")?;
    for (side, errors) in [("legacy", &r.errors.legacy), ("new", &r.errors.new)] {
        for (kind, count) in errors {
            writeln!(out, "- {side}: {count} {}", kind.as_str())?;
        }
    }
    writeln!(out)
}

fn routes(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "## Routes\n")?;
    writeln!(
        out,
        "| route | total | matched | mismatched | errors | legacy p50 / p99 | new p50 / p99 |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    for route in &r.routes {
        let (l, n) = (&route.latency.legacy, &route.latency.new);
        writeln!(
            out,
            "| `{} {}` | {} | {} | {} | {} | {} / {} | {} / {} |",
            route.method,
            route.route,
            route.total,
            route.matched,
            route.mismatched,
            route.errors,
            human(l.p50),
            human(l.p99),
            human(n.p50),
            human(n.p99)
        )?;
    }
    let (l, n) = (&r.latency.legacy, &r.latency.new);
    writeln!(
        out,
        "| **all** | {} | {} | {} | {} | {} / {} | {} / {} |",
        r.summary.total,
        r.summary.matched,
        r.summary.mismatched,
        r.summary.errors,
        human(l.p50),
        human(l.p99),
        human(n.p50),
        human(n.p99)
    )
}

/// A table cell in code style, with pipes and newlines escaped.
fn code(text: Option<&str>) -> String {
    match text {
        None => "–".to_string(),
        Some(t) => format!(
            "`{}`",
            t.replace('|', "\\|").replace('\n', " ").replace('`', "'")
        ),
    }
}
