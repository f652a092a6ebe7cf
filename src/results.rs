//! Results: what the replay engine got back from each target for each
//! exchange, and where they go. The engine hands each [`ExchangeResult`] to
//! a [`ResultSink`] it is given and knows nothing of who consumes it: the
//! results file ([`ResultsWriter`]), the judge, or both through a [`Tee`].
//!
//! The results file keeps both raw answers so that the report can be
//! recomputed offline. Format v2 (`docs/results-format.md`): JSON Lines, a
//! [`ResultsHeader`] line, then one [`ExchangeResult`] a line, a body that
//! repeats one of an earlier line written as a reference to it.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::capture::body::repeats::{self, Repeats};
use crate::capture::{Request, Response};
use crate::jsonl::{LineError, LineReader, LineWriter};

/// Where the replay hands its results, one at a time, on a thread of its
/// own (the collector's).
pub trait ResultSink: Send + 'static {
    /// Takes one exchange's result.
    fn accept(&mut self, result: &ExchangeResult) -> anyhow::Result<()>;

    /// Called once after the last result: flush and close what is open.
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Hands every result to both sinks, in order.
pub struct Tee<A, B>(pub A, pub B);

impl<A: ResultSink, B: ResultSink> ResultSink for Tee<A, B> {
    fn accept(&mut self, result: &ExchangeResult) -> anyhow::Result<()> {
        self.0.accept(result)?;
        self.1.accept(result)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.0.finish()?;
        self.1.finish()
    }
}

/// Writes the results file: the header line first, then a line a result.
pub struct ResultsWriter {
    lines: Option<LineWriter>,
    repeats: Repeats,
}

impl ResultsWriter {
    /// Creates `path` and writes `header` to it.
    pub fn create(path: &Path, header: &ResultsHeader) -> anyhow::Result<ResultsWriter> {
        let mut lines = LineWriter::create(path)?;
        lines.write(header)?;
        Ok(ResultsWriter {
            lines: Some(lines),
            repeats: Repeats::default(),
        })
    }

    /// Bytes written so far, before any compression.
    pub fn bytes(&self) -> u64 {
        self.lines.as_ref().map_or(0, LineWriter::bytes)
    }
}

impl ResultSink for ResultsWriter {
    fn accept(&mut self, result: &ExchangeResult) -> anyhow::Result<()> {
        let Some(lines) = &mut self.lines else {
            anyhow::bail!("results written after the file was closed");
        };
        let line = lines.lines();
        let written = repeats::with(&mut self.repeats, line, || lines.write(result));
        if written.is_err() {
            // The line is not in the file: no later line may repeat what
            // it kept.
            self.repeats = Repeats::default();
        }
        written
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        match self.lines.take() {
            Some(lines) => lines.finish(),
            None => Ok(()),
        }
    }
}

/// Reads a results file: its header, checked, then one result at a time.
pub struct ResultsReader {
    lines: LineReader,
    header: ResultsHeader,
    repeats: Repeats,
}

impl ResultsReader {
    /// Opens `path` and checks its header line.
    pub fn open(path: &Path) -> anyhow::Result<ResultsReader> {
        let (lines, header) =
            LineReader::open_versioned(path, (FORMAT, READS), |h: &ResultsHeader| {
                (&h.format, h.version)
            })?;
        Ok(ResultsReader {
            lines,
            header,
            repeats: Repeats::default(),
        })
    }

    /// The header line.
    pub fn header(&self) -> &ResultsHeader {
        &self.header
    }

    /// The next result; an error names the file and line.
    pub fn next_result(&mut self) -> Option<Result<ExchangeResult, LineError>> {
        if let Err(e) = self.lines.advance()? {
            return Some(Err(e));
        }
        let lines = &self.lines;
        let line = lines.line_number();
        Some(repeats::with(&mut self.repeats, line, || {
            lines.parse_current("an exchange result")
        }))
    }
}

/// The value of the header line's `format` field.
pub const FORMAT: &str = "tandem-results";
/// The results format version this build writes: 2 states a repeated body
/// once ([`repeats`]).
pub const VERSION: u32 = 2;
/// The versions this build reads: a version 1 file is a version 2 file
/// without repeats.
pub const READS: std::ops::RangeInclusive<u32> = 1..=VERSION;
/// The results file's name inside a run directory.
pub const FILE_NAME: &str = "results.jsonl";

/// First line of a results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultsHeader {
    /// Always `"tandem-results"`.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// The capture replayed.
    pub capture: String,
    /// Base URL of the legacy target.
    pub legacy: String,
    /// Base URL of the new target.
    pub new: String,
    /// The speed multiple of the recorded rate.
    pub speed: f64,
    /// Base URL of the second legacy target when learning noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy2: Option<String>,
    /// Wall-clock start of the replay, microseconds since the Unix epoch.
    pub started_at_unix_us: u64,
    /// The shard replayed, `[index, count]`, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<(u32, u32)>,
}

/// The outcome of one exchange of the capture, replayed at both targets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExchangeResult {
    /// The exchange's id in the capture.
    pub id: u64,
    /// Pass over the capture (`--loop`, `--duration`), from 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pass: u32,
    /// Copy of the exchange within the pass (`--amplify`), from 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub copy: u32,
    /// The exchange's session key.
    pub session: String,
    /// When it was scheduled, microseconds after the replay started.
    pub scheduled_us: u64,
    /// The request as recorded (and sent, but for the Host header); shared
    /// with the schedule's job, not copied per result.
    pub request: Arc<Request>,
    /// What the legacy target did.
    pub legacy: Attempt,
    /// What the new target did.
    pub new: Attempt,
    /// What the legacy target did with the same request a second time, when
    /// learning noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy2: Option<Attempt>,
    /// The answer recorded in the capture, as the capture holds it (a
    /// `response` object): the third witness, against which the judge
    /// checks that the replay was faithful. Absent when none was recorded,
    /// and in results written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<Arc<serde_json::value::RawValue>>,
}

/// One request sent to one target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attempt {
    /// Actual send time minus scheduled send time, microseconds.
    pub lag_us: u64,
    /// The answer, with `latency_us` from the actual send to its last byte;
    /// absent when the attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    /// Why there is no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TargetError>,
    /// Values of earlier answers this request should have carried for this
    /// stack but could not (the producer failed, lacked the value, or had
    /// not answered in time), each `place: reason`; those places carried
    /// the recorded value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
    /// Sent a second time, on a new connection: an idempotent request whose
    /// reused connection closed before any byte of an answer (the server's
    /// keep-alive timeout met it). The answer or error is the second one's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retried: bool,
}

/// A request that got no answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The failure as the client library put it.
    pub message: String,
    /// Microseconds from the actual send to the failure.
    pub after_us: u64,
}

/// Why a target gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The connection was refused (nothing listening).
    Refused,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection was reset or closed before the answer was complete.
    Reset,
    /// The answer was not valid HTTP.
    Protocol,
    /// Anything else (DNS, TLS, local resources).
    Other,
    /// Not sent by the harness: no free slot or too late (`--max-in-flight`,
    /// `--max-lag`). Counted apart from the target's errors.
    Dropped,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ExchangeResult {
    /// True when the harness did not send it to some target
    /// (`--max-in-flight`, `--max-lag`).
    pub fn dropped(&self) -> bool {
        self.legacy.was_dropped()
            || self.new.was_dropped()
            || self.legacy2.as_ref().is_some_and(Attempt::was_dropped)
    }
}

impl Attempt {
    /// True when the harness did not send it (`--max-in-flight`,
    /// `--max-lag`, a stop): not the target's failure.
    pub fn was_dropped(&self) -> bool {
        self.error
            .as_ref()
            .is_some_and(|e| e.kind == ErrorKind::Dropped)
    }
}

impl ErrorKind {
    /// The snake_case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Other => "other",
            ErrorKind::Dropped => "dropped",
        }
    }
}
