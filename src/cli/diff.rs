//! `tandem diff`: a run's results file judged again (e.g. with new rules),
//! sending nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{finish, parse_rate, NoiseArgs, Outcome};
use crate::judge::judge_results;

#[derive(Debug, Args)]
pub(super) struct DiffArgs {
    /// The run directory (holding results.jsonl).
    run: PathBuf,
    /// Rules file (TOML, docs/rules.md); none: compare everything.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Where to write report.json and summary.md (default: the run directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit 1 when summary.mismatch_rate, (mismatched + errors + dropped) /
    /// total, is above this (0..1).
    #[arg(long, value_parser = parse_rate)]
    max_mismatch_rate: Option<f64>,
    /// Noise thresholds, for runs made with --learn-noise.
    #[command(flatten)]
    noise: NoiseArgs,
}

/// `tandem diff`.
pub(super) fn command(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let results = args.run.join(crate::results::FILE_NAME);
    let mut report = judge_results(&results, args.rules.as_deref(), args.noise.thresholds())?;
    if let Some(max) = args.max_mismatch_rate {
        report.apply_gate(max);
    }
    let out = args.out.unwrap_or(args.run);
    let report_path = report.write_files(&out)?;
    finish(&Outcome::of(report, report_path))
}
