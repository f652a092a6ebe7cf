//! `tandem report merge`: shard reports merged into one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{finish, GateArgs, Outcome};
use crate::report::{merge::merge, Render, Report};

#[derive(Debug, Subcommand)]
pub(super) enum ReportCommand {
    /// Merge shard run directories into one report: counts add up, histograms merge exactly.
    Merge(MergeArgs),
    /// Write a run directory's report.html again from its report.json.
    Html(HtmlArgs),
}

#[derive(Debug, Args)]
pub(super) struct HtmlArgs {
    /// The run directory (holding report.json).
    run: PathBuf,
    /// Where to write the page (default: RUN/report.html).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `tandem report html`.
pub(super) fn html(args: HtmlArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let report = Report::load(&args.run.join("report.json"))?;
    let path = args.out.unwrap_or_else(|| args.run.join("report.html"));
    let mut page = Vec::new();
    crate::report::Html.render(&report, &mut page)?;
    std::fs::write(&path, page)
        .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", path.display()))?;
    writeln!(std::io::stdout(), "report: {}", path.display())?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(super) struct MergeArgs {
    /// Shard run directories (each holding report.json).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where to write the merged report.json and summary.md.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    gates: GateArgs,
    /// Also write JUnit XML here: a testcase per gate and per mismatch group.
    #[arg(long)]
    junit: Option<PathBuf>,
}

/// `tandem report merge`.
pub(super) fn command(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let reports = args
        .runs
        .iter()
        .map(|dir| Report::load(&dir.join("report.json")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut report = merge(reports)?;
    report.apply_gates(&args.gates.gates());
    let report_path = report.write_files(&args.out)?;
    finish(&Outcome::of(report, report_path), args.junit.as_deref())
}
