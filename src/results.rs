//! Results: what the replay engine got back from each target for each
//! exchange, and where they go. The engine hands each [`ExchangeResult`] to
//! a [`ResultSink`] it is given and knows nothing of who consumes it: the
//! results file ([`ResultsWriter`]), the judge, or both through a [`Tee`].
//!
//! The results file keeps both raw answers so that the report can be
//! recomputed offline. Format v3 (`docs/results-format.md`): JSON Lines, a
//! [`ResultsHeader`] line, then one [`ExchangeResult`] a line, a body or a
//! header that repeats one of an earlier line written as a reference to it.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::capture::repeats::{self, Repeats};
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
    /// Creates `path` and writes `header` to it, with this build's
    /// [`VERSION`] whatever `header` says (one read from an older file):
    /// the lines that follow are in this build's format.
    pub fn create(path: &Path, header: &ResultsHeader) -> anyhow::Result<ResultsWriter> {
        let mut lines = LineWriter::create(path)?;
        lines.write(&ResultsHeader {
            version: VERSION,
            ..header.clone()
        })?;
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
            self.salvage();
            return Some(Err(e));
        }
        let lines = &self.lines;
        let line = lines.line_number();
        Some(repeats::with(&mut self.repeats, line, || {
            lines.parse_current("an exchange result")
        }))
    }

    /// A line that is not UTF-8 (a damaged byte) is lost, but what it kept
    /// for later lines is not: parsed with the bad bytes replaced, it keeps
    /// its bodies and headers, but for those the replacement is in. Without
    /// this, one bad byte took with it every line that repeated a header of
    /// its line, up to [`repeats::REACH`] of them.
    fn salvage(&mut self) {
        let Some(text) = self.lines.current_lossy() else {
            return;
        };
        let line = self.lines.line_number();
        repeats::with(&mut self.repeats, line, || {
            // What it holds is not trusted; only what it kept is used.
            let _ = serde_json::from_str::<ExchangeResult>(&text);
        });
        self.repeats.forget_replaced(line);
    }
}

/// The value of the header line's `format` field.
pub const FORMAT: &str = "tandem-results";
/// The results format version this build writes: 2 states a repeated body
/// once, 3 a repeated header too ([`repeats`]).
pub const VERSION: u32 = 3;
/// The versions this build reads: a version 1 file is a version 3 file
/// without repeats, a version 2 file one without repeated headers.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 2 file: bodies repeated, headers written out.
    const V2: &str = r#"{"format":"tandem-results","version":2,"capture":"c.jsonl","legacy":"http://127.0.0.1:1","new":"http://127.0.0.1:2","speed":1.0,"started_at_unix_us":0}
{"id":0,"session":"s","scheduled_us":0,"request":{"method":"GET","target":"/a","version":"HTTP/1.1","headers":[["host","127.0.0.1"]],"body":""},"legacy":{"lag_us":1,"response":{"status":200,"headers":[["content-type","application/json"],["server","legacy"]],"body":{"text":"{\"id\":1,\"name\":\"a product of some length to be kept\"}","keep":0},"latency_us":5}},"new":{"lag_us":1,"response":{"status":200,"headers":[["content-type","application/json"],["server","new"]],"body":{"same":0},"latency_us":6}}}
"#;

    fn read_all(path: &Path) -> (ResultsHeader, Vec<ExchangeResult>) {
        let mut reader = ResultsReader::open(path).unwrap();
        let results = std::iter::from_fn(|| reader.next_result())
            .map(Result::unwrap)
            .collect();
        (reader.header().clone(), results)
    }

    /// The version 2 file's result written twice by this build's writer:
    /// the file, and the result as read from the version 2 file.
    fn written_twice(dir: &Path) -> (std::path::PathBuf, ExchangeResult) {
        let old = dir.join("old.jsonl");
        std::fs::write(&old, V2).unwrap();
        let (header, mut results) = read_all(&old);
        assert_eq!(header.version, 2);
        let written = dir.join("written.jsonl");
        let mut writer = ResultsWriter::create(&written, &header).unwrap();
        for _ in 0..2 {
            writer.accept(&results[0]).unwrap();
        }
        writer.finish().unwrap();
        (written, results.remove(0))
    }

    #[test]
    fn a_version_2_file_reads_and_is_rewritten_as_version_3() {
        let dir = tempfile::tempdir().unwrap();
        // Written again, twice: the second line repeats every header of
        // the first, and the header line says version 3.
        let (rewritten, result) = written_twice(dir.path());
        let new = &result.new.response.as_ref().unwrap();
        assert_eq!(
            new.headers[1],
            crate::capture::Header("server".into(), "new".into())
        );
        assert!(new.body.0.starts_with(b"{\"id\":1"));
        let text = std::fs::read_to_string(&rewritten).unwrap();
        let second = text.lines().nth(2).unwrap();
        assert!(second.contains(r#""headers":[0]"#), "{second}");
        assert!(!second.contains("content-type"), "{second}");
        let (header, again) = read_all(&rewritten);
        assert_eq!(header.version, VERSION);
        assert_eq!(again.len(), 2);
        for again in &again {
            assert_eq!(again.request, result.request);
            assert_eq!(again.new.response, result.new.response);
            assert_eq!(again.legacy.response, result.legacy.response);
        }
    }

    /// One bad byte costs its line, and a later line only where it
    /// repeats the very value the byte is in.
    #[test]
    fn a_line_with_a_bad_byte_keeps_what_it_kept_for_later_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (written, result) = written_twice(dir.path());
        let whole = std::fs::read(&written).unwrap();
        let damaged_at = |needle: &str| {
            let mut bytes = whole.clone();
            let at = whole
                .windows(needle.len())
                .position(|w| w == needle.as_bytes());
            bytes[at.expect("in the first line") + 1] = 0xfe;
            let path = dir.path().join("damaged.jsonl");
            std::fs::write(&path, bytes).unwrap();
            let mut reader = ResultsReader::open(&path).unwrap();
            std::iter::from_fn(|| reader.next_result())
                .map(|r| r.map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
        };
        // In the session key, which no line repeats: line 3 reads whole.
        let lines = damaged_at(r#""s","#);
        assert!(lines[0].as_ref().unwrap_err().contains("line 2: not UTF-8"));
        let second = lines[1].as_ref().expect("the headers line 2 kept");
        assert_eq!(second.new.response, result.new.response);
        // In the server header's value, which line 3 repeats: that header
        // alone is forgotten, and line 3's error names it.
        let lines = damaged_at(r#""legacy","#);
        let error = lines[1].as_ref().unwrap_err();
        assert!(
            error.contains("line 3") && error.contains("repeats header"),
            "{error}"
        );
    }
}
