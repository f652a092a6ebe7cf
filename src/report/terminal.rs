use std::io::{self, Write};

use super::{percent, Render, Report};
use crate::latency::human;

/// The few lines printed at the end of a run.
pub struct Terminal;

impl Render for Terminal {
    fn render(&self, r: &Report, out: &mut dyn Write) -> io::Result<()> {
        let s = &r.summary;
        if let Some(fidelity) = r.fidelity.as_ref().filter(|f| f.is_low()) {
            writeln!(out, "WARNING: {}", fidelity.warning())?;
        }
        writeln!(
            out,
            "{} exchanges: {} matched, {} mismatched, {} errors; parity {}",
            s.total,
            s.matched,
            s.mismatched,
            s.errors,
            percent(s.parity)
        )?;
        if s.failed_alike > 0 {
            writeln!(
                out,
                "  {} of the matched are failures on both stacks (4xx/5xx): alike, but no proof of parity",
                s.failed_alike
            )?;
        }
        if let Some(f) = &r.fidelity {
            writeln!(
                out,
                "  fidelity {} ({} of {} legacy answers as recorded, by status and body structure)",
                percent(f.rate),
                f.faithful,
                f.judged
            )?;
            for d in f.divergences.iter().take(5) {
                writeln!(out, "    {}", d.describe())?;
            }
        }
        if let Some(e) = &r.effects {
            writeln!(out, "  {}", e.describe())?;
            for g in e.mismatch_groups.iter().take(5) {
                writeln!(out, "    {g}")?;
            }
        }
        if let Some(load) = &r.load {
            writeln!(
                out,
                "  load received: legacy {}, new {}",
                load.legacy.describe(),
                load.new.describe()
            )?;
            if load.legacy.fell_behind() || load.new.fell_behind() {
                writeln!(
                    out,
                    "  a stack fell behind the schedule: its latencies were measured under a lighter load than the other's"
                )?;
            }
        }
        if let Some(g) = &r.generator {
            writeln!(out, "  sent by {}", g.describe())?;
        }
        if let Some(c) = &r.correlation {
            writeln!(
                out,
                "  correlation: {} links followed, {} mismatches settled as the same recorded value, {} exchanges with values not followed",
                c.links.len(),
                c.settled,
                c.unresolved
            )?;
            for (reason, count) in c.reasons.iter().take(3) {
                writeln!(out, "    not followed {count}x: {reason}")?;
            }
        }
        for (side, l) in [("legacy", &r.latency.legacy), ("new", &r.latency.new)] {
            writeln!(
                out,
                "  {side:<7} latency p50 {} p90 {} p99 {} max {} ({} answers)",
                human(l.p50),
                human(l.p90),
                human(l.p99),
                human(l.max),
                l.count
            )?;
        }
        if r.latency_corrected.legacy.count > 0 || r.latency_corrected.new.count > 0 {
            writeln!(
                out,
                "  from the scheduled time: p99 legacy {} new {}; send lag p99 legacy {} new {}",
                human(r.latency_corrected.legacy.p99),
                human(r.latency_corrected.new.p99),
                human(r.send_lag.legacy.p99),
                human(r.send_lag.new.p99)
            )?;
        }
        if s.dropped > 0 {
            writeln!(
                out,
                "  {} exchanges not sent in time by tandem (--max-in-flight, --max-lag)",
                s.dropped
            )?;
        }
        for (side, errors) in [("legacy", &r.errors.legacy), ("new", &r.errors.new)] {
            for (kind, count) in errors {
                writeln!(out, "  {side:<7} errors: {count} {}", kind.as_str())?;
            }
        }
        if !r.mismatch_groups.is_empty() {
            writeln!(out, "mismatch groups ({}):", r.mismatch_groups.len())?;
        }
        for g in r.mismatch_groups.iter().take(20) {
            let Some(m) = g.examples.first().and_then(|e| e.mismatches.first()) else {
                continue;
            };
            writeln!(
                out,
                "  {:>6}  {} {}  {} {}  (legacy {} / new {}, e.g. #{})",
                g.count,
                g.method,
                g.route,
                g.kind.as_str(),
                g.path.as_deref().unwrap_or(""),
                m.legacy.as_deref().unwrap_or("absent"),
                m.new.as_deref().unwrap_or("absent"),
                g.first_exchange
            )?;
        }
        if r.mismatch_groups.len() > 20 {
            writeln!(
                out,
                "  … {} more in the report",
                r.mismatch_groups.len() - 20
            )?;
        }
        if let Some(noise) = &r.learned_noise {
            let n = noise.groups.len();
            writeln!(
                out,
                "learned noise ({n} groups also differ between two legacy answers):"
            )?;
            for g in noise.groups.iter().take(20) {
                writeln!(
                    out,
                    "  {} {}  {} {}  (legacy/new {} vs legacy/legacy {})",
                    g.method,
                    g.route,
                    g.kind.as_str(),
                    g.path.as_deref().unwrap_or(""),
                    percent(g.diff_rate),
                    percent(g.noise_rate)
                )?;
            }
        }
        for rule in &r.unused_rules {
            writeln!(out, "unused rule: {rule}")?;
        }
        if !r.learned_routes.is_empty() {
            writeln!(
                out,
                "routes learned from the capture: {}",
                r.learned_routes.join(", ")
            )?;
        }
        for gate in &r.gates {
            let verdict = if gate.passed { "passed" } else { "FAILED" };
            writeln!(out, "gate {verdict}: {}", super::gate_line(gate))?;
        }
        for line in super::warnings(r) {
            writeln!(out, "{line}")?;
        }
        if let Some(verdict) = super::verdict(r) {
            writeln!(out, "verdict {verdict}")?;
        }
        Ok(())
    }
}
