//! `tandem report merge`: shard reports merged into one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{finish, parse_rate, Outcome};
use crate::report::{merge::merge, Report};

#[derive(Debug, Subcommand)]
pub(super) enum ReportCommand {
    /// Merge shard run directories into one report: counts add up, histograms merge exactly.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub(super) struct MergeArgs {
    /// Shard run directories (each holding report.json).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where to write the merged report.json and summary.md.
    #[arg(long)]
    out: PathBuf,
    /// Exit 1 when summary.mismatch_rate, (mismatched + errors + dropped) /
    /// total, is above this (0..1).
    #[arg(long, value_parser = parse_rate)]
    max_mismatch_rate: Option<f64>,
    /// Exit 1 when fidelity (legacy's replayed answers matching the
    /// recorded ones in status and body structure) is below this (0..1).
    #[arg(long, value_parser = parse_rate)]
    min_fidelity: Option<f64>,
}

/// `tandem report merge`.
pub(super) fn command(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let reports = args
        .runs
        .iter()
        .map(|dir| Report::load(&dir.join("report.json")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut report = merge(reports)?;
    report.apply_gates(args.max_mismatch_rate, args.min_fidelity);
    let report_path = report.write_files(&args.out)?;
    finish(&Outcome::of(report, report_path))
}
