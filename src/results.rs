//! The results file: what the replay engine got back from each target for
//! each exchange, both raw answers kept so that the report can be recomputed
//! offline. Format v1 (`docs/results-format.md`): JSON Lines, a
//! [`ResultsHeader`] line, then one [`ExchangeResult`] a line.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::capture::{Request, Response};

/// The value of the header line's `format` field.
pub const FORMAT: &str = "tandem-results";
/// The results format version this build writes.
pub const VERSION: u32 = 1;
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
}

/// One request sent to one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
