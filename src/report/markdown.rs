use std::io::{self, Write};

use super::{percent, Render, Report};
use crate::latency::human;

/// `summary.md`: the report for people reading a CI artifact or a PR comment.
pub struct Markdown;

impl Render for Markdown {
    fn render(&self, r: &Report, out: &mut dyn Write) -> io::Result<()> {
        let s = &r.summary;
        writeln!(out, "# tandem parity report\n")?;
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
            "| exchanges | matched | mismatched | errors | parity |"
        )?;
        writeln!(out, "|---:|---:|---:|---:|---:|")?;
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |\n",
            s.total,
            s.matched,
            s.mismatched,
            s.errors,
            percent(s.parity)
        )?;
        if let Some(gate) = &r.gate {
            let verdict = if gate.passed { "passed" } else { "FAILED" };
            writeln!(
                out,
                "**Gate {verdict}**: mismatch rate {} against a maximum of {}.\n",
                percent(s.mismatch_rate),
                percent(gate.max_mismatch_rate)
            )?;
        }
        mismatch_groups(r, out)?;
        errors(r, out)?;
        routes(r, out)
    }
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
        let m = &g.example.mismatch;
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
            g.example.exchange_id,
            g.example.target.replace('|', "\\|"),
        )?;
    }
    writeln!(out)
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
