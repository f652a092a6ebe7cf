//! The capture file: what a source records and what the replay engine reads.
//!
//! Format v1 is JSON Lines (documented in `docs/capture-format.md`): a header
//! line, then one [`Exchange`] a line, in the order the requests arrived.
//! Files ending in `.gz` are written gzip-compressed; the reader recognises
//! gzip by its magic bytes whatever the name. Reader and writer stream: memory
//! does not grow with the size of the capture.

pub(crate) mod body;
mod mix;
pub mod ordered;
mod reader;
pub mod repeats;
mod writer;

pub use body::Body;
pub use mix::mix;
pub use reader::{CaptureError, CaptureReader, Outline};
pub use writer::CaptureWriter;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// The value of the header line's `format` field.
pub const FORMAT: &str = "tandem-capture";
/// The capture format version this build writes and reads.
pub const VERSION: u32 = 1;

/// First line of a capture file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaptureHeader {
    /// Always `"tandem-capture"`.
    pub format: String,
    /// Format version; readers refuse versions they do not know.
    pub version: u32,
    /// Wall-clock start of the capture, microseconds since the Unix epoch.
    pub started_at_unix_us: u64,
    /// What recorded it, e.g. `"proxy upstream=http://127.0.0.1:8080"`.
    pub source: String,
}

/// The last line of a capture, when its recorder had something to say that
/// it could only know at the end: `{"trailer": {...}}`. Readers skip it as
/// an exchange and keep it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureTrailer {
    /// Values replaced by each redaction rule (counts, never values).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub redacted: std::collections::BTreeMap<String, u64>,
}

/// How the trailer line is written: one key, `trailer`.
#[derive(Serialize, Deserialize)]
pub(crate) struct TrailerLine {
    pub(crate) trailer: CaptureTrailer,
}

impl CaptureHeader {
    /// A v1 header stamped with the current time.
    pub fn new(source: impl Into<String>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        CaptureHeader {
            format: FORMAT.to_string(),
            version: VERSION,
            started_at_unix_us: now.as_micros() as u64,
            source: source.into(),
        }
    }
}

/// One request as the client sent it, with the response the recorded service gave.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Exchange {
    /// Position in the capture, from 1, in arrival order.
    pub id: u64,
    /// When the request arrived, in microseconds since the capture started.
    pub offset_us: u64,
    /// Who sent it: the client connection (`ip:port`) or a user key. Requests
    /// of one session keep their order on replay.
    pub session: String,
    /// The request as received.
    pub request: Request,
    /// The recorded answer; `null` when the service gave none (see `error`).
    pub response: Option<Response>,
    /// Why `response` is null, e.g. `"upstream refused the connection"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the exchange is not whole although usable, e.g. bytes lost from a
    /// packet capture or a body over the size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

/// An HTTP request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    /// Method as sent, e.g. `"POST"`.
    pub method: String,
    /// Request target as sent: path and query, e.g. `"/api/orders?page=2"`.
    pub target: String,
    /// `"HTTP/1.0"`, `"HTTP/1.1"` or `"HTTP/2"`.
    pub version: String,
    /// Headers in the order received, names lower-cased.
    pub headers: Vec<Header>,
    /// The body after transfer decoding (chunking removed), content encoding kept.
    pub body: Body,
}

/// An HTTP response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in the order received, names lower-cased.
    pub headers: Vec<Header>,
    /// The body after transfer decoding, content encoding kept.
    pub body: Body,
    /// From the request's arrival to the last byte of the response, in microseconds.
    pub latency_us: u64,
    /// Set when the body was longer than the limit kept (`--max-body`):
    /// `body` holds its first bytes, and this the whole body's length and
    /// hash, which the differ compares instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncated>,
}

/// A body longer than what was kept of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncated {
    /// The whole body's length in bytes.
    pub len: u64,
    /// SHA-256 of the whole body, lower-case hex.
    pub sha256: String,
}

/// A header as a `[name, value]` pair. Values that are not UTF-8 are kept as
/// ISO-8859-1, which maps every byte to one character.
///
/// Both are [`CompactString`]s: up to 24 bytes (nearly every name, and most
/// values) they are held inline. An answer's headers then take an
/// allocation for the list and one for each longer value (3 for nginx's
/// seven headers, against 15 as `String`s), on the replay engines that make
/// them and on the collector that frees them.
///
/// A results file (v3) also writes `["name", "value", N]` for a header
/// later lines may repeat, and `N` for the repeat ([`repeats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header(pub CompactString, pub CompactString);

impl Serialize for Header {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let keep = match repeats::note_header(self) {
            repeats::Noted::Same(number) => return serializer.serialize_u64(number),
            repeats::Noted::Keep(number) => Some(number),
            repeats::Noted::Plain => None,
        };
        let mut pair = serializer.serialize_tuple(2 + keep.is_some() as usize)?;
        pair.serialize_element(self.0.as_str())?;
        pair.serialize_element(self.1.as_str())?;
        if let Some(number) = keep {
            pair.serialize_element(&number)?;
        }
        pair.end()
    }
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(HeaderVisitor)
    }
}

struct HeaderVisitor;

impl<'de> serde::de::Visitor<'de> for HeaderVisitor {
    type Value = Header;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a header: [name, value]")
    }

    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Header, E> {
        repeats::same_header(number).map_err(E::custom)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Header, A::Error> {
        use serde::de::Error;
        let missing = || A::Error::custom("header: expected [name, value]");
        let name: CompactString = seq.next_element()?.ok_or_else(missing)?;
        let value: CompactString = seq.next_element()?.ok_or_else(missing)?;
        let header = Header(name, value);
        if let Some(number) = seq.next_element::<u64>()? {
            repeats::keep_header(number, &header).map_err(A::Error::custom)?;
        }
        if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            return Err(A::Error::custom(
                "header: expected [name, value] (or [name, value, number] in a results file)",
            ));
        }
        Ok(header)
    }
}

impl Header {
    /// A header from raw bytes, lower-casing the name.
    pub fn from_bytes(name: &str, value: &[u8]) -> Header {
        let mut name = CompactString::from(name);
        name.make_ascii_lowercase();
        Header(name, header_text(value))
    }

    /// A header of a parsed answer: its name is lower-case already.
    pub fn from_parsed(name: &hyper::header::HeaderName, value: &[u8]) -> Header {
        Header(CompactString::from(name.as_str()), header_text(value))
    }
}

/// A header value as text: as it is when it is UTF-8, else each byte as the
/// ISO-8859-1 character it stands for. Nearly every value is ASCII, which
/// is checked a word at a time; UTF-8 validation costs more for the few
/// dozen bytes a value has.
fn header_text(value: &[u8]) -> CompactString {
    if value.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        return CompactString::from(unsafe { std::str::from_utf8_unchecked(value) });
    }
    match std::str::from_utf8(value) {
        Ok(text) => CompactString::from(text),
        Err(_) => value.iter().map(|&b| b as char).collect(),
    }
}

/// A session key's hash (FNV-1a, the same on every machine and run): what
/// sampling and sharding split sessions by, so that a session stays whole.
pub fn session_hash(session: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in session.bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The value of the first header named `name` (case-insensitive).
pub fn header_value<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.0.eq_ignore_ascii_case(name))
        .map(|h| h.1.as_str())
}

/// SHA-256 of `bytes`, as lower-case hex.
pub fn sha256_of_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the file at `path`, as lower-case hex: a capture's identity
/// in reports, so that shards of different captures are not merged.
pub fn sha256_of(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}
