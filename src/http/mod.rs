//! HTTP plumbing shared by the recording proxy, the replay engine and the
//! demo: the pooled client, header conversion and error classification.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

use crate::capture::Header;
use crate::results::ErrorKind;

mod connect;
pub mod connection;
pub mod framing;
pub mod tee;
pub mod tls;

pub use connect::{Connector, SendClock, WarmConnections};
pub use tls::{Trust, TrustFiles};

/// A pooled keep-alive client for http:// and https:// targets.
pub type Client = ClientOf<Full<Bytes>>;

/// A pooled keep-alive client for requests with bodies of type `B`.
pub type ClientOf<B> = HyperClient<HttpsConnector<Connector>, B>;

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Accept any TLS certificate (self-signed staging stacks). Off by default.
    pub insecure_tls: bool,
    /// Speak HTTP/2 from the start on cleartext connections (prior
    /// knowledge); TLS connections choose by ALPN anyway.
    pub http2_prior_knowledge: bool,
    /// Connections open at once to one host and port, at most; `None`: no
    /// limit.
    pub max_connections: Option<usize>,
    /// Certificates trusted beyond the web roots and the machine's store,
    /// and the client certificate, if any.
    pub trust: Trust,
    /// Connect to this host and port whatever host the request URI names:
    /// for `--keep-host` on the pooled client, where the URI carries the
    /// recorded host so that HTTP/1.1's Host and HTTP/2's `:authority` both
    /// name it (and no second `host` is sent).
    pub dial: Option<(String, u16)>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            insecure_tls: false,
            http2_prior_knowledge: false,
            max_connections: None,
            trust: Trust::default(),
            dial: None,
        }
    }
}

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

/// A client with default options and `connect_timeout`.
pub fn client(connect_timeout: Duration) -> Client {
    client_with(&ClientOptions {
        connect_timeout,
        ..ClientOptions::default()
    })
}

/// A client with a connection pool sized for replay concurrency. TLS is
/// rustls trusting the webpki roots, the machine's store and
/// `options.trust`, HTTP/2 offered by ALPN. It sets no Host header of its
/// own over HTTP/2, where `:authority` names the target.
pub fn client_with(options: &ClientOptions) -> Client {
    client_warmed(options, WarmConnections::default())
}

/// A client as [`client_with`] makes, that takes connections from `warm`
/// before it opens new ones, and opens at most `options.max_connections` to
/// each host and port.
pub fn client_warmed(options: &ClientOptions, warm: WarmConnections) -> Client {
    client_of(options, warm)
}

/// A client as [`client_warmed`] makes, for requests with bodies of type
/// `B` (the recording proxy passes request bodies on as they arrive).
pub fn client_of<B>(options: &ClientOptions, warm: WarmConnections) -> ClientOf<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(options.connect_timeout));
    connector.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(options))
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(Connector::new(connector, warm, options));
    HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .http2_only(options.http2_prior_knowledge)
        .build(https)
}

fn tls_config(options: &ClientOptions) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = options.trust.client_config(provider.clone());
    if options.insecure_tls {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AnyCertificate(provider)));
    }
    config
}

/// `--insecure`: any certificate is accepted; signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Headers in the order hyper holds them, as capture headers.
pub fn to_headers(map: &HeaderMap) -> Vec<Header> {
    map.iter()
        .map(|(name, value)| Header::from_parsed(name, value.as_bytes()))
        .collect()
}

/// Capture headers as a header map, leaving out hop-by-hop headers and those
/// `skip` names, with room for `more` headers the caller adds (so that
/// adding them does not grow the map). Headers that are not valid HTTP are
/// left out and counted.
pub fn to_header_map(headers: &[Header], skip: &[&str], more: usize) -> (HeaderMap, usize) {
    let mut map = HeaderMap::with_capacity(headers.len() + more);
    let mut invalid = 0;
    for Header(name, value) in headers {
        // For every request to each stack: the name is lower-cased as it
        // is parsed, and an ASCII value is copied once, into its header.
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            invalid += 1;
            continue;
        };
        if is_hop_by_hop(name.as_str()) || skip.contains(&name.as_str()) {
            continue;
        }
        match HeaderValue::from_bytes(&header_bytes(value)) {
            Ok(value) => {
                map.append(name, value);
            }
            Err(_) => invalid += 1,
        }
    }
    (map, invalid)
}

/// The bytes of a header value as captured: characters up to U+00FF are the
/// ISO-8859-1 bytes they were decoded from, anything else is UTF-8.
pub fn header_bytes(value: &str) -> std::borrow::Cow<'_, [u8]> {
    if value.is_ascii() || value.chars().any(|c| c as u32 > 0xff) {
        value.as_bytes().into()
    } else {
        value.chars().map(|c| c as u8).collect::<Vec<u8>>().into()
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
        if e.is::<connection::Malformed>() {
            protocol = true;
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

/// Bodies longer than this are kept truncated unless told otherwise
/// (`--max-body`): a target answering 50 MB bodies must not make a replay
/// hold them all.
pub const MAX_BODY: usize = 16 << 20;

/// `body` read to its end, keeping at most `max` bytes: a longer one keeps
/// its first `max` bytes, with the whole body's length and SHA-256 (which
/// the differ compares instead).
pub async fn read_bounded<B>(
    mut body: B,
    max: usize,
) -> Result<(Bytes, Option<crate::capture::Truncated>), B::Error>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let mut kept = tee::Kept::new(max);
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame?.into_data() {
            kept.add(&chunk);
        }
    }
    Ok(kept.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answers_headers_become_text_whatever_their_bytes() {
        let mut map = HeaderMap::new();
        map.append("X-Plain", HeaderValue::from_static("order 17"));
        map.append("x-utf8", HeaderValue::from_bytes("Zoë".as_bytes()).unwrap());
        // Not UTF-8: each byte is the ISO-8859-1 character it stands for.
        map.append("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let headers = to_headers(&map);
        let h = |n: &str, v: &str| Header(n.into(), v.into());
        assert_eq!(
            headers,
            [
                h("x-plain", "order 17"),
                h("x-utf8", "Zoë"),
                h("x-latin1", "café")
            ]
        );
    }

    #[test]
    fn recorded_headers_become_a_header_map() {
        let h = |n: &str, v: &str| Header(n.into(), v.into());
        let recorded = [
            h("X-Request-ID", "r-1"),
            h("Host", "legacy.internal"),
            h("Connection", "keep-alive"),
            h("Transfer-Encoding", "chunked"),
            // Decoded from ISO-8859-1 when recorded: sent as those bytes.
            h("X-Name", "Zoë"),
            h("bad name", "x"),
            h("X-Bad-Value", "a\nb"),
            h("x-request-id", "r-2"),
        ];
        let (map, invalid) = to_header_map(&recorded, &["host"], 0);
        assert_eq!(invalid, 2, "the bad name and the bad value");
        let ids: Vec<_> = map.get_all("x-request-id").iter().collect();
        assert_eq!(ids, ["r-1", "r-2"], "repeated headers kept, in order");
        assert!(map.get("host").is_none(), "skipped whatever its case");
        assert!(map.get("connection").is_none() && map.get("transfer-encoding").is_none());
        assert_eq!(map["x-name"].as_bytes(), b"Zo\xeb");
        assert_eq!(map.len(), 3);
        let (kept, _) = to_header_map(&recorded, &[], 0);
        assert_eq!(kept["host"], "legacy.internal");
    }
}
