//! `tandem capacity`: the most each stack sustains within an SLO, with
//! answers still correct (src/capacity.rs); capacity.json, capacity.md and
//! capacity.html in the output directory.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{parse_rate, shutdown_signal, EXIT_GATE_FAILED, EXIT_INTERRUPTED};
use crate::capacity::{search, CapacityPlan, CapacityReport, Measured, Slo};
use crate::latency::human;
use crate::replay::ReplayPlan;
use crate::target::Target;

#[derive(Debug, Args)]
pub(super) struct CapacityArgs {
    /// The capture whose mix is replayed at each rate.
    capture: PathBuf,
    /// Base URL of the legacy stack.
    #[arg(long)]
    legacy: Target,
    /// Base URL of the new stack.
    #[arg(long)]
    new: Target,
    /// Latency objective on corrected latency, e.g. 'p99<250ms'.
    #[arg(long)]
    slo: Slo,
    /// Target errors and requests not sent, per request, at most (0..1).
    #[arg(long, value_parser = parse_rate, default_value_t = 0.01)]
    max_error_rate: f64,
    /// Answers diverging from the recorded ones (status, body structure),
    /// per answer, at most (0..1).
    #[arg(long, value_parser = parse_rate, default_value_t = 0.01)]
    max_mismatch_rate: f64,
    /// Each step's judged part.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    step_hold: Duration,
    /// Each step's warm-up, not judged.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    warmup: Duration,
    /// The winner's confirmation hold [default: twice --step-hold].
    #[arg(long, value_parser = humantime::parse_duration)]
    confirm_hold: Option<Duration>,
    /// First rate tried, requests/s; it doubles until a step fails.
    #[arg(long, default_value_t = 100.0)]
    start_rate: f64,
    /// No rate above this is tried, requests/s.
    #[arg(long, default_value_t = 200_000.0)]
    max_rate: f64,
    /// Bisect until passing and failing rates are this close (0..1).
    #[arg(long, value_parser = parse_rate, default_value_t = 0.05)]
    precision: f64,
    /// The projected (three-year) rate, requests/s: headroom is reported
    /// against it, and the command exits 1 when the new stack falls short.
    #[arg(long)]
    projected_rps: Option<f64>,
    /// Also search both stacks at once, as a replay sends.
    #[arg(long)]
    both: bool,
    /// Rules file (TOML, docs/rules.md).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Longest wait for one complete answer.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Connections open at once to each target, at most (0: no limit).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Replay engines (0: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Send every request as recorded: follow no ids or tokens.
    #[arg(long)]
    no_correlate: bool,
    /// Replay writes even at the upstream the capture was recorded from.
    #[arg(long)]
    allow_recorded_host: bool,
    /// Where to write capacity.json, capacity.md and capacity.html.
    #[arg(long, default_value = "reports/capacity")]
    out: PathBuf,
    /// Print capacity.json on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// Serve live Prometheus metrics at http://HOST:PORT/metrics during the
    /// search (docs/metrics.md).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// `tandem capacity`'s arguments (after `capacity`), parsed.
pub(super) fn parse<I, T>(args: I) -> Result<CapacityArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    super::parse_alone("tandem capacity", args)
}

/// Every flag of `tandem capacity`: the keys of a scenario's `[capacity]`.
pub fn flags() -> crate::scenario::Flags {
    super::flags_alone::<CapacityArgs>()
}

impl CapacityArgs {
    fn plan(self) -> anyhow::Result<CapacityPlan> {
        let mut replay = ReplayPlan::new(self.capture, self.legacy, self.new);
        replay.timeout = self.timeout;
        replay.max_connections = self.max_connections;
        replay.allow_recorded_host = self.allow_recorded_host;
        if let Some(threads) = self.threads {
            replay.threads = threads;
        }
        // A request later than a second is not sent at its rate: counted
        // against the step, not queued.
        replay.max_lag = Some(Duration::from_secs(1));
        replay.check()?;
        replay.correlation =
            super::replay::correlation(!self.no_correlate, &replay.capture, self.rules.as_deref())?;
        anyhow::ensure!(
            self.start_rate >= 1.0 && self.max_rate >= self.start_rate,
            "--start-rate must be at least 1 and at most --max-rate"
        );
        let mut targets = vec![Measured::Legacy, Measured::New];
        if self.both {
            targets.push(Measured::Both);
        }
        Ok(CapacityPlan {
            replay,
            rules: self.rules,
            slo: self.slo,
            max_error_rate: self.max_error_rate,
            max_mismatch_rate: self.max_mismatch_rate,
            warmup: self.warmup,
            hold: self.step_hold,
            confirm_hold: self.confirm_hold.unwrap_or(self.step_hold * 2),
            start_rate: self.start_rate,
            max_rate: self.max_rate,
            precision: self.precision.max(0.001),
            projected: self.projected_rps,
            targets,
        })
    }
}

/// `tandem capacity`.
pub(super) async fn command(args: CapacityArgs) -> anyhow::Result<ExitCode> {
    let (out, json, metrics_addr) = (args.out.clone(), args.json, args.metrics_addr);
    let mut plan = args.plan()?;
    let exporter = match metrics_addr {
        Some(addr) => Some(super::replay::serve_metrics(addr, &plan.replay).await?),
        None => None,
    };
    plan.replay.metrics = exporter.as_ref().map(|e| e.metrics.clone());
    let stopped = Arc::new(AtomicBool::new(false));
    // On a signal the step under way finishes and the search stops after it.
    tokio::spawn({
        let stopped = stopped.clone();
        async move {
            shutdown_signal().await;
            stopped.store(true, Ordering::Relaxed);
        }
    });
    let report = search(&plan, stopped).await?;
    if let Some(exporter) = exporter {
        exporter.stop();
    }
    write_files(&report, &out)?;
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, &report)?;
        writeln!(stdout)?;
    } else {
        stdout.write_all(&markdown(&report))?;
        writeln!(stdout, "report: {}", out.join("capacity.json").display())?;
    }
    let short = report.projected_rps.is_some()
        && report
            .searches
            .iter()
            .filter(|s| s.target == Measured::New)
            .any(|s| s.headroom.is_none_or(|h| h < 1.0));
    Ok(if report.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if short {
        ExitCode::from(EXIT_GATE_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

fn write_files(report: &CapacityReport, out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    crate::output::write(
        &out.join("capacity.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    crate::output::write(&out.join("capacity.md"), markdown(report))?;
    let mut page = Vec::new();
    crate::report::capacity_html(report, &mut page)?;
    crate::output::write(&out.join("capacity.html"), page)?;
    Ok(())
}

/// The summary people read: each stack's rate, the ratio, headroom, steps.
fn markdown(r: &CapacityReport) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = write_markdown(r, &mut out);
    out
}

fn write_markdown(r: &CapacityReport, out: &mut Vec<u8>) -> std::io::Result<()> {
    writeln!(
        out,
        "# Capacity within {} (errors <= {:.2}%, divergent answers <= {:.2}%)\n",
        r.slo,
        r.max_error_rate * 100.0,
        r.max_mismatch_rate * 100.0
    )?;
    for s in &r.searches {
        let rate = s
            .sustainable_rps
            .map_or("none of the rates tried".to_string(), |r| {
                format!("{r:.0} requests/s")
            });
        let headroom = s
            .headroom
            .map_or(String::new(), |h| format!(", {:.2}x the projected rate", h));
        writeln!(out, "- {:?}: {rate}{headroom}{}", s.target, s.caveat())?;
    }
    if let Some(ratio) = r.new_over_legacy {
        writeln!(out, "- new / legacy: {ratio:.2}x")?;
    }
    if r.interrupted {
        writeln!(out, "\n**Interrupted**: the search stopped early.")?;
    }
    for s in &r.searches {
        writeln!(
            out,
            "\n## {:?}\n\n| rate | | latency | errors | divergent | achieved | send lag p99 | engine busy | host stole | why |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
            s.target
        )?;
        for step in &s.steps {
            writeln!(
                out,
                "| {:.0}{} | {} | {} | {:.2}% | {:.2}% | {:.0} | {} | {:.0}% ({:.0}% waiting) | {:.0}% | {} |",
                step.rate,
                if step.confirmation { " (confirm)" } else { "" },
                step.verdict(),
                human(step.latency_us),
                step.error_rate * 100.0,
                step.mismatch_rate * 100.0,
                step.achieved_rps,
                human(step.lag_p99_us),
                step.engine_busy * 100.0,
                step.engine_waited * 100.0,
                step.host_stolen * 100.0,
                step.failed.join("; ")
            )?;
        }
    }
    Ok(())
}
