//! HTTP plumbing shared by the recording proxy, the replay engine and the
//! demo: the pooled client, header conversion and error classification.

use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

use crate::capture::Header;
use crate::results::ErrorKind;

/// A pooled keep-alive HTTP/1.1 client.
pub type Client = HyperClient<HttpConnector, Full<Bytes>>;

/// Headers that describe one connection, not the message: never forwarded
/// (RFC 9110 §7.6.1) and never replayed.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True for a hop-by-hop header name (lower case).
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// A client with a connection pool sized for replay concurrency.
pub fn client(connect_timeout: Duration) -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.enforce_http(true);
    HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// Headers in the order hyper holds them, as capture headers.
pub fn to_headers(map: &HeaderMap) -> Vec<Header> {
    map.iter()
        .map(|(name, value)| Header::from_bytes(name.as_str(), value.as_bytes()))
        .collect()
}

/// Capture headers as a header map, leaving out hop-by-hop headers and those
/// `skip` names. Headers that are not valid HTTP are left out and counted.
pub fn to_header_map(headers: &[Header], skip: &[&str]) -> (HeaderMap, usize) {
    let mut map = HeaderMap::with_capacity(headers.len());
    let mut invalid = 0;
    for Header(name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if is_hop_by_hop(&lower) || skip.contains(&lower.as_str()) {
            continue;
        }
        match (
            HeaderName::from_bytes(lower.as_bytes()),
            HeaderValue::from_bytes(&header_bytes(value)),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => invalid += 1,
        }
    }
    (map, invalid)
}

/// The bytes of a header value as captured: characters up to U+00FF are the
/// ISO-8859-1 bytes they were decoded from, anything else is UTF-8.
fn header_bytes(value: &str) -> Vec<u8> {
    if value.is_ascii() || value.chars().any(|c| c as u32 > 0xff) {
        value.as_bytes().to_vec()
    } else {
        value.chars().map(|c| c as u8).collect()
    }
}

/// "HTTP/1.1" and friends.
pub fn version_name(version: hyper::Version) -> &'static str {
    match version {
        hyper::Version::HTTP_09 => "HTTP/0.9",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_11 => "HTTP/1.1",
        hyper::Version::HTTP_2 => "HTTP/2",
        hyper::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// What kind of failure a client error is, from the io error under it.
pub fn classify(error: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut source = Some(error);
    let mut protocol = false;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            return match io.kind() {
                Io::ConnectionRefused => ErrorKind::Refused,
                Io::TimedOut => ErrorKind::Timeout,
                Io::ConnectionReset
                | Io::ConnectionAborted
                | Io::BrokenPipe
                | Io::UnexpectedEof => ErrorKind::Reset,
                _ => ErrorKind::Other,
            };
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return ErrorKind::Reset;
            }
            if h.is_parse() || h.is_parse_status() {
                protocol = true;
            }
        }
        if let Some(c) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if c.is_connect()
                && c.source()
                    .is_some_and(|s| s.to_string().contains("timed out"))
            {
                return ErrorKind::Timeout;
            }
        }
        source = e.source();
    }
    if protocol {
        ErrorKind::Protocol
    } else {
        ErrorKind::Other
    }
}

/// The error and its causes on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}
