//! The effects file of a run directory (`effects.jsonl`, format v1,
//! docs/effects.md): what every stack did besides answering, as collected,
//! so that `tandem diff` judges it again with other rules, as it judges the
//! results file. JSON Lines: an [`EffectsHeader`] line, then one
//! [`Effect`] a line, in the order they arrived.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Effect, EffectsReport};
use crate::diff::rules::RuleSet;
use crate::jsonl::{LineError, LineReader, LineWriter};
use crate::results;

/// The value of the header line's `format` field.
pub const FORMAT: &str = "tandem-effects";
/// The effects format version this build writes.
pub const VERSION: u32 = 1;
/// The effects file's name inside a run directory.
pub const FILE_NAME: &str = "effects.jsonl";

/// First line of an effects file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EffectsHeader {
    /// Always `"tandem-effects"`.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// What collected them, e.g. `legacy webhook sink at 127.0.0.1:9101`.
    pub sources: Vec<String>,
    /// The quiet period waited for late effects after the last answer, ms.
    pub quiet_ms: u64,
    /// When the replay's schedule began, µs since the Unix epoch: what
    /// the results' offsets count from. Not the results header's time,
    /// taken before the connections are opened and any `--start-at`.
    pub started_at_unix_us: u64,
}

impl EffectsHeader {
    /// The header of effects collected by `sources`, waited for `quiet_ms`
    /// after a replay begun at `started_at_unix_us`.
    pub fn new(sources: Vec<String>, quiet_ms: u64, started_at_unix_us: u64) -> EffectsHeader {
        EffectsHeader {
            format: FORMAT.into(),
            version: VERSION,
            sources,
            quiet_ms,
            started_at_unix_us,
        }
    }
}

/// Writes `effects` under `header` as the effects file of `run_dir`.
pub fn write(run_dir: &Path, header: &EffectsHeader, effects: &[Effect]) -> anyhow::Result<()> {
    let mut lines = LineWriter::create(run_dir.join(FILE_NAME))?;
    lines.write(header)?;
    for effect in effects {
        lines.write(effect)?;
    }
    lines.finish()
}

/// The effects of `run_dir` tied to the exchanges of its results file
/// and compared under `rules`, with the rules they left unused; `None`
/// when the run collected none (it has no effects file). A line that
/// cannot be read is an error naming the file and line: effects left out
/// would read as effects the stacks never had.
pub fn judge_run(
    run_dir: &Path,
    rules: RuleSet,
) -> anyhow::Result<Option<(EffectsReport, Vec<String>)>> {
    let path = run_dir.join(FILE_NAME);
    if !path.exists() {
        return Ok(None);
    }
    let (header, effects) = read(&path)?;
    let results_path = run_dir.join(results::FILE_NAME);
    // Checked here, where a missing or foreign file is named.
    results::ResultsReader::open(&results_path)?;
    // Read twice by the judge: once for when each exchange was in flight,
    // once for the answers of those that caused effects.
    let results = || {
        let reader = results::ResultsReader::open(&results_path).ok();
        let mut results = reader
            .into_iter()
            .flat_map(|mut reader| std::iter::from_fn(move || reader.next_result()));
        std::iter::from_fn(move || results.next()).filter_map(Result::ok)
    };
    let quiet = std::time::Duration::from_millis(header.quiet_ms);
    let (mut report, unused) =
        super::judge(effects, results, header.started_at_unix_us, rules, quiet);
    report.sources = header.sources;
    Ok(Some((report, unused)))
}

fn read(path: &Path) -> anyhow::Result<(EffectsHeader, Vec<Effect>)> {
    let (mut lines, header) =
        LineReader::open_versioned(path, (FORMAT, VERSION..=VERSION), |h: &EffectsHeader| {
            (&h.format, h.version)
        })?;
    let effects = std::iter::from_fn(|| lines.next::<Effect>("an effect"))
        .collect::<Result<Vec<_>, LineError>>()?;
    Ok((header, effects))
}
