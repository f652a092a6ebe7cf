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
    /// Compare a run with a base run: per-route deltas, mismatch groups new,
    /// fixed or still there (compare.md and compare.html).
    Compare(CompareArgs),
}

#[derive(Debug, Args)]
pub(super) struct CompareArgs {
    /// The base run directory (holding report.json), e.g. the last release's.
    base: PathBuf,
    /// The run directory to compare with it.
    run: PathBuf,
    /// Where to write compare.md and compare.html (default: RUN).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit 1 when the run has a mismatch group the base run did not.
    #[arg(long)]
    fail_on_new_groups: bool,
}

/// `tandem report compare`.
pub(super) fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let base = Report::load(&args.base.join("report.json"))?;
    let run = Report::load(&args.run.join("report.json"))?;
    let names = (
        args.base.display().to_string(),
        args.run.display().to_string(),
    );
    let comparison = crate::report::compare::Comparison::of(&base, &run, (&names.0, &names.1));
    let out = args.out.unwrap_or(args.run);
    std::fs::create_dir_all(&out)?;
    let mut markdown = Vec::new();
    comparison.markdown(&mut markdown)?;
    crate::output::write(&out.join("compare.md"), &markdown)?;
    let mut html = Vec::new();
    comparison.html(&mut html)?;
    crate::output::write(&out.join("compare.html"), html)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&markdown)?;
    writeln!(
        stdout,
        "
comparison: {}",
        out.join("compare.md").display()
    )?;
    Ok(if args.fail_on_new_groups && comparison.new_groups() > 0 {
        ExitCode::from(super::EXIT_GATE_FAILED)
    } else {
        ExitCode::SUCCESS
    })
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
    crate::output::write(&path, page)?;
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
    /// Merge the shards given when some are missing; the report is marked
    /// partial.
    #[arg(long)]
    allow_partial: bool,
}

/// `tandem report merge`.
pub(super) fn command(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let inputs: Vec<PathBuf> = args.runs.iter().map(|r| r.join("report.json")).collect();
    let outputs = [args.out.join("report.json")];
    crate::output::refuse_overwriting(
        &inputs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &[&outputs[0]],
    )?;
    let reports = args
        .runs
        .iter()
        .map(|dir| Report::load(&dir.join("report.json")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let named: Vec<(String, &Report)> = args
        .runs
        .iter()
        .map(|dir| dir.display().to_string())
        .zip(&reports)
        .collect();
    let partial = crate::report::merge::check_shards(&named, args.allow_partial)?;
    let mut report = merge(reports)?;
    report.partial = partial;
    report.apply_gates(&args.gates.gates());
    finish(&Outcome::write(report, &args.out), args.junit.as_deref())
}
