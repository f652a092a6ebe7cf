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
}

/// `tandem report merge`.
pub(super) fn command(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let reports = args
        .runs
        .iter()
        .map(|dir| Report::load(&dir.join("report.json")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut report = merge(reports)?;
    if let Some(max) = args.max_mismatch_rate {
        report.apply_gate(max);
    }
    let report_path = report.write_files(&args.out)?;
    finish(&Outcome::of(report, report_path))
}
