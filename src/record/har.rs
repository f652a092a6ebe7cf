//! HAR 1.2 (HTTP Archive: browser devtools and proxy exports) to exchanges,
//! and exchanges to HAR, through the `har` crate's types.
//!
//! Import: entries in order of their start, offsets from the first;
//! HTTP/2 pseudo-headers dropped; bodies as the HAR holds them (`text`,
//! base64 when `encoding` says so), which is decoded, so the answer's
//! Content-Encoding and Content-Length go with it. An entry saved without
//! its answer's body keeps the rest, marked `incomplete`; an entry with no
//! answer at all (status 0: the browser got none) is kept with its error.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use har::v1_2::{self, Entries};

use crate::capture::{Body, Exchange, Header, Request, Response};

/// What a HAR file held, in capture order.
#[derive(Debug)]
pub struct Imported {
    /// Exchanges, numbered from 1 in order of their start.
    pub exchanges: Vec<Exchange>,
    /// When the first one started, µs since the Unix epoch.
    pub started_at_unix_us: u64,
    /// Entries kept without their answer's body (the HAR had none).
    pub without_body: u64,
    /// Entries that could not be read, each named; not imported.
    pub unreadable: Vec<String>,
}

/// Reads the HAR at `path`.
pub fn read(path: &Path) -> anyhow::Result<Imported> {
    let har =
        har::from_path(path).with_context(|| format!("{}: not a HAR 1.2 file", path.display()))?;
    let har::Spec::V1_2(log) = har.log else {
        anyhow::bail!(
            "{}: HAR version 1.3 is not supported (1.2 is)",
            path.display()
        );
    };
    let mut timed = Vec::new();
    let mut unreadable = Vec::new();
    for (i, entry) in log.entries.into_iter().enumerate() {
        match started_us(&entry.started_date_time) {
            Some(at) => timed.push((at, i, entry)),
            None => unreadable.push(format!(
                "{}: entry {}: startedDateTime {:?} is not an RFC 3339 time",
                path.display(),
                i + 1,
                entry.started_date_time
            )),
        }
    }
    timed.sort_by_key(|(at, i, _)| (*at, *i));
    let first = timed.first().map_or(0, |(at, _, _)| *at);
    let mut imported = Imported {
        exchanges: Vec::with_capacity(timed.len()),
        started_at_unix_us: first,
        without_body: 0,
        unreadable,
    };
    for (at, i, entry) in timed {
        match exchange(entry, at - first) {
            Ok(mut exchange) => {
                exchange.id = imported.exchanges.len() as u64 + 1;
                imported.without_body += u64::from(exchange.incomplete.is_some());
                imported.exchanges.push(exchange);
            }
            Err(e) => {
                imported
                    .unreadable
                    .push(format!("{}: entry {}: {e:#}", path.display(), i + 1))
            }
        }
    }
    Ok(imported)
}

fn exchange(entry: Entries, offset_us: u64) -> anyhow::Result<Exchange> {
    let session = entry
        .connection
        .clone()
        .or_else(|| entry.pageref.clone())
        .map_or_else(|| "har".to_string(), |c| format!("har:{c}"));
    let request = request(&entry.request)?;
    let latency_us = (entry.time.max(0.0) * 1000.0) as u64;
    let (response, error, incomplete) = match entry.response.status {
        0 => (
            None,
            Some("the HAR holds no answer (status 0)".to_string()),
            None,
        ),
        _ => {
            let (response, whole) = response(&entry.response, latency_us)?;
            let incomplete = (!whole).then(|| "har: the answer's body was not saved".to_string());
            (Some(response), None, incomplete)
        }
    };
    Ok(Exchange {
        id: 0,
        offset_us,
        session,
        request,
        response,
        error,
        incomplete,
    })
}

fn request(har: &v1_2::Request) -> anyhow::Result<Request> {
    let uri: hyper::Uri = har
        .url
        .parse()
        .with_context(|| format!("url {:?} is not a URL", har.url))?;
    let target = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let body = match &har.post_data {
        Some(post) => match (&post.text, &post.params) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(params)) => form(params).into_bytes(),
            (None, None) => Vec::new(),
        },
        None => Vec::new(),
    };
    let mut headers = headers(&har.headers);
    // The body is whole and plain here: its recorded framing may not be.
    fix_length(&mut headers, body.len());
    Ok(Request {
        method: har.method.clone(),
        target,
        version: version(&har.http_version),
        headers,
        body: Body::from(bytes::Bytes::from(body)),
    })
}

/// The answer, and whether its body was in the HAR.
fn response(har: &v1_2::Response, latency_us: u64) -> anyhow::Result<(Response, bool)> {
    let content = &har.content;
    let body = match (&content.text, content.encoding.as_deref()) {
        (Some(text), Some("base64")) => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .context("content.text is not base64")?,
        (Some(text), _) => text.clone().into_bytes(),
        (None, _) => Vec::new(),
    };
    let whole = content.text.is_some() || content.size <= 0;
    let mut headers = headers(&har.headers);
    // HAR keeps the decoded body: the coding it was sent in is gone.
    headers.retain(|h| !h.0.eq_ignore_ascii_case("content-encoding"));
    if whole {
        fix_length(&mut headers, body.len());
    }
    let status = u16::try_from(har.status).context("status is not an HTTP status")?;
    Ok((
        Response {
            status,
            headers,
            body: Body::from(bytes::Bytes::from(body)),
            latency_us,
            truncated: None,
        },
        whole,
    ))
}

/// Headers less HTTP/2 pseudo-headers (`:authority`, `:path`…), which are
/// not headers, and Transfer-Encoding, whose framing the HAR body no
/// longer has.
fn headers(har: &[v1_2::Headers]) -> Vec<Header> {
    har.iter()
        .filter(|h| !h.name.starts_with(':'))
        .filter(|h| !h.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|h| Header(h.name.as_str().into(), h.value.as_str().into()))
        .collect()
}

/// A recorded Content-Length made true to `len`, where there was one.
fn fix_length(headers: &mut [Header], len: usize) {
    for header in headers
        .iter_mut()
        .filter(|h| h.0.eq_ignore_ascii_case("content-length"))
    {
        header.1 = compact_str::format_compact!("{len}");
    }
}

fn form(params: &[v1_2::Params]) -> String {
    params
        .iter()
        .map(|p| format!("{}={}", p.name, p.value.as_deref().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("&")
}

/// `HTTP/1.1`, `HTTP/2`, `h2`, `http/2.0` as the capture names versions.
fn version(har: &str) -> String {
    match har.to_ascii_lowercase().as_str() {
        "h2" | "http/2" | "http/2.0" => "HTTP/2".to_string(),
        "h3" | "http/3" | "http/3.0" => "HTTP/3".to_string(),
        "http/1.0" => "HTTP/1.0".to_string(),
        _ => "HTTP/1.1".to_string(),
    }
}

/// An RFC 3339 time (`Z` or a `±HH:MM` offset) in µs since the Unix epoch.
fn started_us(text: &str) -> Option<u64> {
    let text = text.trim();
    let (base, offset_s) = match text.len().checked_sub(6).map(|i| text.split_at(i)) {
        Some((base, tz)) if matches!(tz.as_bytes()[0], b'+' | b'-') && tz.as_bytes()[3] == b':' => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let hours: i64 = tz[1..3].parse().ok()?;
            let minutes: i64 = tz[4..6].parse().ok()?;
            (format!("{base}Z"), sign * (hours * 3600 + minutes * 60))
        }
        _ => (text.to_string(), 0),
    };
    let at = humantime::parse_rfc3339_weak(base.trim_end_matches('Z')).ok()?;
    let us = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros() as i64;
    u64::try_from(us - offset_s * 1_000_000).ok()
}

/// One HAR entry of an exchange's request with `response` (the recorded
/// answer, or a stack's), started `offset_us` after `started_at_unix_us`.
pub fn entry(
    request: &Request,
    response: Option<&Response>,
    started_at_unix_us: u64,
    offset_us: u64,
    comment: Option<String>,
) -> Entries {
    let started =
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(started_at_unix_us + offset_us);
    let status = response.map_or(0, |r| i64::from(r.status));
    let latency_ms = response.map_or(0.0, |r| r.latency_us as f64 / 1000.0);
    Entries {
        pageref: None,
        started_date_time: humantime::format_rfc3339_micros(started).to_string(),
        time: latency_ms,
        request: har_request(request),
        response: har_response(response, status),
        cache: v1_2::Cache::default(),
        timings: v1_2::Timings {
            blocked: None,
            dns: None,
            connect: None,
            send: 0.0,
            wait: latency_ms,
            receive: 0.0,
            ssl: None,
            comment: None,
        },
        server_ip_address: None,
        connection: None,
        comment,
    }
}

fn har_headers(headers: &[Header]) -> Vec<v1_2::Headers> {
    headers
        .iter()
        .map(|h| v1_2::Headers {
            name: h.0.to_string(),
            value: h.1.to_string(),
            comment: None,
        })
        .collect()
}

fn har_request(request: &Request) -> v1_2::Request {
    let host = crate::capture::header_value(&request.headers, "host").unwrap_or("localhost");
    let body = request.body.bytes();
    v1_2::Request {
        method: request.method.clone(),
        url: format!("http://{host}{}", request.target),
        http_version: request.version.clone(),
        cookies: Vec::new(),
        headers: har_headers(&request.headers),
        query_string: Vec::new(),
        post_data: (!body.is_empty()).then(|| v1_2::PostData {
            mime_type: crate::capture::header_value(&request.headers, "content-type")
                .unwrap_or("application/octet-stream")
                .to_string(),
            text: Some(String::from_utf8_lossy(body).into_owned()),
            params: None,
            comment: None,
        }),
        headers_size: -1,
        body_size: body.len() as i64,
        comment: None,
    }
}

fn har_response(response: Option<&Response>, status: i64) -> v1_2::Response {
    let (headers, body) = match response {
        Some(r) => (har_headers(&r.headers), r.body.bytes().to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    let (text, encoding) = match String::from_utf8(body.clone()) {
        Ok(text) => (text, None),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&body),
            Some("base64".to_string()),
        ),
    };
    v1_2::Response {
        status,
        status_text: String::new(),
        http_version: "HTTP/1.1".to_string(),
        cookies: Vec::new(),
        headers,
        content: v1_2::Content {
            size: body.len() as i64,
            compression: None,
            mime_type: response
                .and_then(|r| crate::capture::header_value(&r.headers, "content-type"))
                .map(str::to_string),
            text: Some(text),
            encoding,
            comment: None,
        },
        redirect_url: None,
        headers_size: -1,
        body_size: body.len() as i64,
        comment: None,
    }
}

/// `entries` as a HAR 1.2 document written to `path`, whole or not at all.
pub fn write(path: &Path, entries: Vec<Entries>) -> anyhow::Result<()> {
    let har = har::Har {
        log: har::Spec::V1_2(v1_2::Log {
            creator: v1_2::Creator {
                name: "tandem".to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                comment: None,
            },
            browser: None,
            pages: None,
            entries,
            comment: None,
        }),
    };
    let json = har::to_json(&har).context("the HAR cannot be written")?;
    crate::output::write(path, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A browser's export: HTTP/2 pseudo-headers, an answer saved without
    /// its body, a request that got no answer, entries out of order.
    #[test]
    fn a_browser_export_keeps_what_it_has_and_marks_what_it_lacks() {
        let entry = |at: &str, url: &str, status: i64, text: Option<&str>| {
            serde_json::json!({
                "startedDateTime": at, "time": 12.5,
                "request": {"method": "GET", "url": url, "httpVersion": "h2", "cookies": [],
                    "headers": [{"name": ":authority", "value": "shop.test"},
                                {"name": "accept", "value": "application/json"}],
                    "queryString": [], "headersSize": -1, "bodySize": 0},
                "response": {"status": status, "statusText": "", "httpVersion": "h2", "cookies": [],
                    "headers": [{"name": "content-encoding", "value": "br"}],
                    "content": {"size": 10, "mimeType": "application/json", "text": text},
                    "redirectURL": "", "headersSize": -1, "bodySize": -1},
                "cache": {}, "timings": {"send": 0, "wait": 12, "receive": 0.5}
            })
        };
        let har = serde_json::json!({"log": {"version": "1.2",
        "creator": {"name": "WebInspector", "version": "537.36"},
        "entries": [
            entry("2026-12-01T10:00:01.000+01:00", "https://shop.test/api/b?x=1", 200, None),
            entry("2026-12-01T09:00:00.500Z", "https://shop.test/api/a", 200, Some("{\"ok\":true}")),
            entry("2026-12-01T09:00:02.000Z", "https://shop.test/api/c", 0, None),
        ]}});
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("browser.har");
        std::fs::write(&path, har.to_string()).unwrap();
        let imported = read(&path).unwrap();
        let targets: Vec<&str> = imported
            .exchanges
            .iter()
            .map(|x| x.request.target.as_str())
            .collect();
        assert_eq!(targets, ["/api/a", "/api/b?x=1", "/api/c"]);
        let [a, b, c] = &imported.exchanges[..] else {
            panic!("three exchanges")
        };
        assert_eq!(b.offset_us, 500_000);
        assert_eq!(a.request.version, "HTTP/2");
        assert!(a.request.headers.iter().all(|h| !h.0.starts_with(':')));
        let answer = a.response.as_ref().unwrap();
        assert_eq!(answer.body.bytes().as_ref(), b"{\"ok\":true}");
        assert!(answer.headers.iter().all(|h| h.0 != "content-encoding"));
        assert!(b.incomplete.as_deref().unwrap().contains("not saved"));
        assert_eq!(imported.without_body, 1);
        assert!(c.response.is_none() && c.error.is_some());
    }

    #[test]
    fn rfc3339_times_with_offsets() {
        let z = started_us("2026-12-01T20:56:46.163932Z").unwrap();
        assert_eq!(started_us("2026-12-01T20:56:46.163932+00:00"), Some(z));
        assert_eq!(
            started_us("2026-12-01T21:56:46.163932+01:00"),
            Some(z),
            "an hour east is the same instant"
        );
        assert_eq!(started_us("yesterday"), None);
    }
}
