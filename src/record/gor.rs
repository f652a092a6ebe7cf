//! GoReplay's `.gor` files to exchanges, and exchanges to `.gor`.
//!
//! A `.gor` file is a sequence of records, each ended by the line
//! `🐵🙈🙉`. A record is a meta line, `TYPE ID TIMESTAMP LATENCY` (type 1 a
//! request, 2 the original answer, 3 a replayed answer; the id pairs them;
//! the timestamp in Unix nanoseconds; the latency in nanoseconds), then the
//! raw HTTP/1.x message. Records may come out of timestamp order (GoReplay
//! writes as connections finish): requests are sorted by their timestamp.
//! A request is paired with its original answer (type 2); a replayed
//! answer (type 3) is not the service's and is left out, counted.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;

use super::packets::http1::{Message, Parser, Side};
use crate::capture::{Body, Exchange, Header, Request, Response};

/// The line that ends every record.
pub const SEPARATOR: &str = "\n\u{1F435}\u{1F648}\u{1F649}\n";

/// What a `.gor` file held.
#[derive(Debug)]
pub struct Imported {
    /// Exchanges, numbered from 1 in order of their requests' timestamps.
    pub exchanges: Vec<Exchange>,
    /// When the first request came, µs since the Unix epoch.
    pub started_at_unix_us: u64,
    /// Replayed answers (type 3), left out.
    pub replayed_answers: u64,
    /// Answers whose request is not in the file, left out.
    pub orphan_answers: u64,
    /// Records that could not be read, each named; not imported.
    pub unreadable: Vec<String>,
}

struct Record<'a> {
    kind: u8,
    id: &'a str,
    timestamp_ns: u64,
    latency_ns: u64,
    payload: &'a [u8],
}

/// Reads the `.gor` file at `path`, keeping at most `max_body` bytes of a body.
pub fn read(path: &Path, max_body: usize) -> anyhow::Result<Imported> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut requests = Vec::new();
    let mut answers: HashMap<String, (Response, Option<String>)> = HashMap::new();
    let mut imported = Imported {
        exchanges: Vec::new(),
        started_at_unix_us: 0,
        replayed_answers: 0,
        orphan_answers: 0,
        unreadable: Vec::new(),
    };
    for (n, chunk) in split(&bytes).enumerate() {
        let named = |why: String| format!("{}: record {}: {why}", path.display(), n + 1);
        let record = match record(chunk) {
            Ok(record) => record,
            Err(why) => {
                imported.unreadable.push(named(why));
                continue;
            }
        };
        match record.kind {
            1 => match request(record.payload, max_body) {
                Ok((request, incomplete)) => requests.push((
                    record.timestamp_ns,
                    record.id.to_string(),
                    request,
                    incomplete,
                )),
                Err(why) => imported.unreadable.push(named(why)),
            },
            2 => match response(record.payload, record.latency_ns, max_body) {
                Ok(answer) => drop(answers.insert(record.id.to_string(), answer)),
                Err(why) => imported.unreadable.push(named(why)),
            },
            3 => imported.replayed_answers += 1,
            other => imported
                .unreadable
                .push(named(format!("record type {other} is not 1, 2 or 3"))),
        }
    }
    requests.sort_by_key(|(at, id, _, _)| (*at, id.clone()));
    let first_ns = requests.first().map_or(0, |r| r.0);
    imported.started_at_unix_us = first_ns / 1000;
    for (at, id, request, incomplete) in requests {
        let (response, answer_incomplete) = match answers.remove(&id) {
            Some((response, incomplete)) => (Some(response), incomplete),
            None => (None, None),
        };
        imported.exchanges.push(Exchange {
            id: imported.exchanges.len() as u64 + 1,
            offset_us: (at - first_ns) / 1000,
            session: format!("gor:{id}"),
            error: response
                .is_none()
                .then(|| "the .gor file holds no answer to it".to_string()),
            request,
            response,
            incomplete: incomplete.or(answer_incomplete),
        });
    }
    imported.orphan_answers = answers.len() as u64;
    Ok(imported)
}

/// The records of `bytes`: what lies between separators (the last may lack
/// its separator).
fn split(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let separator = SEPARATOR.as_bytes();
    let mut rest = bytes;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let (chunk, after) = match memchr::memmem::find(rest, separator) {
                Some(i) => (&rest[..i], &rest[i + separator.len()..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = after;
            if !chunk.iter().all(u8::is_ascii_whitespace) {
                return Some(chunk);
            }
        }
        None
    })
}

fn record(chunk: &[u8]) -> Result<Record<'_>, String> {
    let line_end = memchr::memchr(b'\n', chunk).ok_or("no meta line")?;
    let meta = std::str::from_utf8(&chunk[..line_end]).map_err(|_| "the meta line is not text")?;
    let mut fields = meta.split_whitespace();
    let mut field = |what: &str| {
        fields
            .next()
            .ok_or(format!("the meta line {meta:?} has no {what}"))
    };
    let kind = field("type")?;
    let id = field("id")?;
    let timestamp = field("timestamp")?;
    let latency = fields.next().unwrap_or("0");
    Ok(Record {
        kind: kind
            .parse()
            .map_err(|_| format!("type {kind:?} is not a number"))?,
        id,
        timestamp_ns: timestamp
            .parse()
            .map_err(|_| format!("timestamp {timestamp:?} is not a number"))?,
        latency_ns: latency.parse::<i64>().map_or(0, |l| l.max(0) as u64),
        payload: &chunk[line_end + 1..],
    })
}

/// One whole message of `side` out of `payload`.
fn message(
    payload: &[u8],
    side: Side,
    method: Option<&str>,
    max_body: usize,
) -> Result<Message, String> {
    let mut parser = Parser::new(side, max_body);
    if let Some(method) = method {
        parser.expect_response_to(method, false);
    }
    let (mut out, mut trouble) = (Vec::new(), Vec::new());
    parser.feed(payload, 0, &mut out, &mut trouble);
    parser.close(false, &mut out, &mut trouble);
    out.into_iter()
        .next()
        .ok_or_else(|| "not an HTTP/1.x message".to_string())
}

fn request(payload: &[u8], max_body: usize) -> Result<(Request, Option<String>), String> {
    let m = message(payload, Side::Request, None, max_body)?;
    Ok((
        Request {
            method: m.method,
            target: m.target,
            version: m.version,
            headers: m.headers,
            body: Body::from(bytes::Bytes::from(m.body)),
        },
        m.incomplete,
    ))
}

fn response(
    payload: &[u8],
    latency_ns: u64,
    max_body: usize,
) -> Result<(Response, Option<String>), String> {
    // The method is not in an answer's record; GET frames every answer but
    // HEAD's, whose body is empty anyway.
    let m = message(payload, Side::Response, Some("GET"), max_body)?;
    Ok((
        Response {
            status: m.status,
            headers: m.headers,
            body: Body::from(bytes::Bytes::from(m.body)),
            latency_us: latency_ns / 1000,
            truncated: None,
        },
        m.incomplete,
    ))
}

/// A message as HTTP/1.1 bytes: the start line, the headers (less framing,
/// which is made anew from the body), the body.
fn raw(start: &str, headers: &[Header], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{start}\r\n").into_bytes();
    for Header(name, value) in headers {
        let framing = name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding");
        if !framing {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Writes `.gor` records: for each exchange its request (type 1) and the
/// answers given (type 2, the original; type 3, a replayed one).
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// An empty file.
    pub fn new() -> Writer {
        Writer { out: Vec::new() }
    }

    /// Appends one exchange: `id` pairs its records; `at_ns` is when the
    /// request came (Unix nanoseconds).
    pub fn exchange(
        &mut self,
        id: u64,
        at_ns: u64,
        request: &Request,
        original: Option<&Response>,
        replayed: Option<&Response>,
    ) {
        let id = format!("{id:024x}");
        let start = format!("{} {} {}", request.method, request.target, "HTTP/1.1");
        self.record(
            1,
            &id,
            at_ns,
            0,
            &raw(&start, &request.headers, request.body.bytes()),
        );
        for (kind, answer) in [(2, original), (3, replayed)] {
            if let Some(answer) = answer {
                let start = format!("HTTP/1.1 {} {}", answer.status, reason(answer.status));
                let payload = raw(&start, &answer.headers, answer.body.bytes());
                self.record(kind, &id, at_ns, answer.latency_us * 1000, &payload);
            }
        }
    }

    fn record(&mut self, kind: u8, id: &str, at_ns: u64, latency_ns: u64, payload: &[u8]) {
        self.out
            .extend_from_slice(format!("{kind} {id} {at_ns} {latency_ns}\n").as_bytes());
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(SEPARATOR.as_bytes());
    }

    /// Writes the file to `path`, whole or not at all.
    pub fn write(self, path: &Path) -> anyhow::Result<()> {
        crate::output::write(path, self.out)
    }
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

fn reason(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}
