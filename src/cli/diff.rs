//! `tandem diff`: a run's results file judged again (e.g. with new rules),
//! sending nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{finish, GateArgs, NoiseArgs, Outcome};
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
    #[command(flatten)]
    gates: GateArgs,
    /// Also write JUnit XML here: a testcase per gate and per mismatch group.
    #[arg(long)]
    junit: Option<PathBuf>,
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
    let out = args.out.clone().unwrap_or(args.run.clone());
    let mut inputs = vec![results.as_path()];
    inputs.extend(args.rules.as_deref());
    let outputs: Vec<PathBuf> = crate::report::FILE_NAMES
        .iter()
        .map(|name| out.join(name))
        .chain(args.junit.clone())
        .collect();
    crate::output::refuse_overwriting(
        &inputs,
        &outputs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
    )?;
    let mut report = judge_results(
        &results,
        args.rules.as_deref(),
        args.noise.thresholds(),
        !args.no_correlate,
    )?;
    // A run that collected effects judges them again too, with the same
    // rules: its report would otherwise lose them.
    let rules = crate::diff::rules::RuleSet::load_or_none(args.rules.as_deref())?;
    if let Some((effects, unused)) = crate::effects::file::judge_run(&args.run, rules)? {
        report.effects = Some(effects);
        report.unused_rules.retain(|rule| unused.contains(rule));
    }
    report.apply_gates(&args.gates.gates());
    finish(&Outcome::write(report, &out), args.junit.as_deref())
}
