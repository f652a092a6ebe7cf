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
    /// Exit 1 when fidelity (legacy's replayed answers matching the
    /// recorded ones in status and body structure) is below this (0..1).
    #[arg(long, value_parser = parse_rate)]
    min_fidelity: Option<f64>,
    /// Noise thresholds, for runs made with --learn-noise.
    #[command(flatten)]
    noise: NoiseArgs,
    /// Judge without correlation (values standing for the same recorded one
    /// are not equal), as a replay with --no-correlate.
    #[arg(long)]
    no_correlate: bool,
}

/// `tandem diff`.
pub(super) fn command(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let results = args.run.join(crate::results::FILE_NAME);
    let mut report = judge_results(
        &results,
        args.rules.as_deref(),
        args.noise.thresholds(),
        !args.no_correlate,
    )?;
    report.apply_gates(args.max_mismatch_rate, args.min_fidelity);
    let out = args.out.unwrap_or(args.run);
    let report_path = report.write_files(&out)?;
    finish(&Outcome::of(report, report_path))
}
