//! `tandem record --listen --upstream`: a recording reverse proxy.
//!
//! Clients get exactly what the upstream answers (less hop-by-hop headers);
//! each exchange is written to the capture as it completes, in arrival order.
//! On shutdown the proxy stops accepting, lets in-flight requests finish,
//! then flushes and closes the capture: no completed exchange is lost.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::{Request, Response, StatusCode, Uri};
use tokio::net::TcpListener;

use super::sink::{Selection, Sink};
use crate::capture::{self, Body, Exchange};
use crate::http::tee::{CutOff, Tee, Teed};
use crate::http::{self, ClientOptions};
use crate::target::Target;

/// What the proxy needs to know.
pub struct ProxyConfig {
    /// Where clients connect, bound by the caller (so that a test can bind
    /// port 0 and learn the port).
    pub listener: TcpListener,
    /// Where requests are forwarded.
    pub upstream: Target,
    /// Take the session key from this request header when present, instead of
    /// the client connection.
    pub session_header: Option<String>,
    /// Longest wait for the upstream's complete answer.
    pub timeout: Duration,
    /// Longest wait for in-flight requests at shutdown.
    pub drain: Duration,
    /// Body bytes recorded at most per message; a longer body is recorded
    /// cut, with its length and hash; every body is passed on whole, as it
    /// arrives, so a large one never sits in memory.
    pub max_body: usize,
    /// Longest wait for a client's request head (HTTP/1): a client that
    /// sends its headers slower than this is disconnected (an idle keep-alive connection too).
    pub header_timeout: Duration,
    /// How the proxy connects upstream: TLS trust (`--ca-cert`,
    /// `--insecure`), client certificate, HTTP/2.
    pub client: ClientOptions,
    /// Terminate TLS for the proxy's clients with this configuration
    /// (`--tls-cert`, `--tls-key`; HTTP/2 by ALPN).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// When the capture cannot be written: keep serving clients (the
    /// default: the proxy's job is not to break production), or stop
    /// accepting.
    pub on_write_error: OnWriteError,
    /// Called with each exchange the upstream answered, once the client has
    /// its answer in hand: `tandem shadow` mirrors from here. It must not
    /// block: the client's answer does not wait for it.
    pub on_answered: Option<OnAnswered>,
}

/// What the proxy does when the capture cannot be written. Either way
/// every exchange it could not record is counted, and said at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnWriteError {
    /// Go on forwarding, unrecorded.
    #[default]
    Serve,
    /// Stop accepting, answer what is in flight, and end.
    Stop,
}

/// See [`ProxyConfig::on_answered`].
pub type OnAnswered = Arc<dyn Fn(&Exchange) + Send + Sync>;

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("listener", &self.listener)
            .field("upstream", &self.upstream)
            .field("session_header", &self.session_header)
            .field("timeout", &self.timeout)
            .field("drain", &self.drain)
            .field("header_timeout", &self.header_timeout)
            .field("tls", &self.tls.is_some())
            .field("on_answered", &self.on_answered.is_some())
            .finish_non_exhaustive()
    }
}

impl ProxyConfig {
    /// A cleartext proxy on `listener` to `upstream`, sessions by client
    /// connection, 30 s upstream timeout, 10 s drain, 10 s for a request
    /// head.
    pub fn new(listener: TcpListener, upstream: Target) -> ProxyConfig {
        let timeout = Duration::from_secs(30);
        ProxyConfig {
            listener,
            upstream,
            session_header: None,
            timeout,
            drain: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_body: crate::http::MAX_BODY,
            client: ClientOptions {
                connect_timeout: timeout,
                ..ClientOptions::default()
            },
            tls: None,
            on_write_error: OnWriteError::Serve,
            on_answered: None,
        }
    }

    /// The capture header's `source`.
    pub fn source(&self) -> String {
        format!("proxy upstream={}", self.upstream)
    }
}

/// What the exchanges in flight need of the configuration.
struct Forward {
    upstream: Target,
    session_header: Option<String>,
    timeout: Duration,
    max_body: usize,
}

/// What a recording session produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSummary {
    /// Exchanges written, including those recorded with an error.
    pub exchanges: u64,
    /// Exchanges left out by the selection.
    pub filtered: u64,
    /// The capture files written, in order (more than one when rotating).
    pub files: Vec<PathBuf>,
    /// Of which the upstream gave no answer (recorded with `response: null`).
    pub upstream_errors: u64,
    /// Of which the client went away before the answer (recorded with `response: null`).
    pub abandoned: u64,
    /// Of which the proxy stopped before the upstream answered (recorded
    /// with the request and `response: null`).
    pub abandoned_at_stop: u64,
    /// Requests whose body the client cut off (recorded with what arrived,
    /// answered 400).
    pub incomplete_requests: u64,
    /// Malformed requests, answered 400 (or 414, 431) before they could be
    /// forwarded: nothing to record but the count.
    pub malformed_requests: u64,
    /// Why the capture could not be written, if it could not: what was
    /// recorded before is in the file.
    pub write_error: Option<String>,
    /// Exchanges served but not recorded because of it (those the writer
    /// had not yet flushed when it failed, and all after).
    pub unrecorded: u64,
    /// Values replaced by each redaction rule.
    pub redacted: std::collections::BTreeMap<String, u64>,
}

enum Event {
    /// An exchange is finished, with or without a response.
    Done(Box<Exchange>),
}

struct Shared {
    config: Forward,
    on_answered: Option<OnAnswered>,
    client: http::ClientOf<Upload>,
    started: Instant,
    next_id: AtomicU64,
    recorder: Arc<Mutex<Recorder>>,
}

/// Runs the proxy on the configured listener until `shutdown` completes,
/// writing every exchange into `sink`, then closes the capture and returns
/// what was recorded.
pub async fn record_proxy(
    config: ProxyConfig,
    sink: Sink,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RecordSummary> {
    let write_failed = Arc::new(tokio::sync::Notify::new());
    let recorder = Arc::new(Mutex::new(Recorder {
        selection: sink.selection().clone(),
        sink: Some(sink),
        summary: RecordSummary::default(),
        failed: None,
        stopping: false,
        write_failed: (config.on_write_error == OnWriteError::Stop).then(|| write_failed.clone()),
    }));
    let shutdown = {
        let recorder = recorder.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                () = write_failed.notified() => {
                    tracing::error!("the capture cannot be written: stopped accepting (--on-write-error stop)");
                }
            }
            // What is still in flight now and never answered was abandoned
            // by the stop, not by its client.
            lock(&recorder).stopping = true;
        }
    };
    let flushes = tokio::spawn(flush_every(recorder.clone()));
    let ProxyConfig {
        listener,
        upstream,
        session_header,
        timeout,
        drain,
        header_timeout,
        client,
        tls,
        on_answered,
        on_write_error: _,
        max_body,
    } = config;
    let shared = Arc::new(Shared {
        on_answered,
        client: http::client_of(&client, http::WarmConnections::default()),
        config: Forward {
            upstream,
            session_header,
            timeout,
            max_body,
        },
        started: Instant::now(),
        next_id: AtomicU64::new(1),
        recorder: recorder.clone(),
    });
    let handler = {
        let shared = shared.clone();
        move |req, peer| handle(shared.clone(), req, peer)
    };
    let refused = Arc::new(crate::server::Refused::default());
    let connections = crate::server::Connections {
        header_timeout: Some(header_timeout),
        refused: Some(refused.clone()),
    };
    crate::server::serve_with(listener, tls, handler, shutdown, drain, connections).await;
    // Every connection task has ended, so every in-flight exchange has been
    // handed over.
    flushes.abort();
    drop(shared);
    let mut summary = tokio::task::spawn_blocking(move || lock(&recorder).finish())
        .await
        .context("capture writer lost")??;
    summary.malformed_requests = refused.malformed.load(Ordering::Relaxed);
    Ok(summary)
}

/// The recorder, even after a panic elsewhere while holding it: each change
/// to it is whole, so recording can go on.
fn lock(recorder: &Mutex<Recorder>) -> std::sync::MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(|e| e.into_inner())
}

/// Flushes the capture every [`FLUSH_EVERY`] until aborted.
async fn flush_every(recorder: Arc<Mutex<Recorder>>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tick.tick().await;
        lock(&recorder).flush();
    }
}

/// What a client gets: the proxy's own short answers whole, the
/// upstream's passed on as it arrives.
type Answer = Either<Full<Bytes>, Tee<Incoming>>;

/// A request body passed upstream as it arrives from the client.
type Upload = Tee<Incoming>;

/// What of a request body was passed on, once it was.
type Uploaded = Arc<Mutex<Option<Teed>>>;

async fn handle(shared: Arc<Shared>, req: Request<Incoming>, peer: SocketAddr) -> Response<Answer> {
    let arrived = Instant::now();
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/".to_string(), |pq| pq.as_str().to_string());
    let headers = http::to_headers(&parts.headers);
    let session = session_key(&shared.config, &headers, peer);
    let uploaded = Uploaded::default();
    let upload = Tee::new(body, shared.config.max_body, {
        let uploaded = uploaded.clone();
        move |teed| *uploaded.lock().expect("upload lock") = Some(teed)
    });
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let mut pending = Pending {
        id,
        recorder: shared.recorder.clone(),
        uploaded: Some(uploaded),
        max_body: shared.config.max_body,
        exchange: Some(Exchange {
            id,
            offset_us: arrived.duration_since(shared.started).as_micros() as u64,
            session,
            request: capture::Request {
                method: parts.method.to_string(),
                target: target.clone(),
                version: http::version_name(parts.version).to_string(),
                headers,
                body: Body::default(),
            },
            response: None,
            error: None,
            incomplete: None,
        }),
    };
    match forward(&shared, parts, &target, upload).await {
        Ok(response) => pass_on(shared, pending, response, arrived),
        Err(failure) => {
            let message = &failure.message;
            let client_failed = pending.take_request();
            let exchange = pending.exchange.as_mut().expect("recorded at the end");
            if let Some(reason) = client_failed {
                tracing::debug!("request body from {peer} was cut off: {reason}");
                exchange.error = Some(format!("request body {reason}"));
                pending.finish();
                return plain(StatusCode::BAD_REQUEST, "tandem: incomplete request body\n");
            }
            tracing::warn!("upstream failed for exchange {}: {message}", exchange.id);
            exchange.error = Some(format!("upstream: {message}"));
            pending.finish();
            match failure.timed_out {
                true => plain(StatusCode::GATEWAY_TIMEOUT, "tandem: upstream timed out\n"),
                false => plain(StatusCode::BAD_GATEWAY, "tandem: upstream failed\n"),
            }
        }
    }
}

/// The upstream's answer passed on to the client as it arrives; the
/// exchange is recorded when its body has gone by (its first `--max-body`
/// bytes, with the whole one's length and hash), failed, or was left unread.
fn pass_on(
    shared: Arc<Shared>,
    pending: Pending,
    response: Response<Incoming>,
    arrived: Instant,
) -> Response<Answer> {
    let (mut head, body) = response.into_parts();
    let (status, headers) = (head.status.as_u16(), http::to_headers(&head.headers));
    strip_hop_by_hop(&mut head.headers);
    let (max_body, timeout) = (shared.config.max_body, shared.config.timeout);
    let body = Tee::new(body, max_body, move |teed| {
        let mut pending = pending;
        pending.take_request();
        let exchange = pending.exchange.as_mut().expect("recorded at the end");
        let (body, truncated) = teed.body;
        match teed.cut_off {
            None => {
                exchange.response = Some(capture::Response {
                    status,
                    headers,
                    body: Body(body),
                    latency_us: arrived.elapsed().as_micros() as u64,
                    truncated,
                });
                if let Some(on_answered) = &shared.on_answered {
                    on_answered(exchange);
                }
                pending.finish();
            }
            Some(CutOff {
                reason,
                source: true,
            }) => {
                tracing::warn!("upstream answer to exchange {} {reason}", exchange.id);
                exchange.error = Some(format!("upstream: answer {reason}"));
                pending.finish();
            }
            // Dropped unfinished: the client went away, or the proxy stopped.
            Some(CutOff { source: false, .. }) => drop(pending),
        }
    })
    .within(timeout.saturating_sub(arrived.elapsed()));
    Response::from_parts(head, Either::Right(body))
}

/// Why the upstream gave no answer: a timeout is told to the client as 504,
/// anything else as 502.
struct UpstreamFailure {
    message: String,
    timed_out: bool,
}

impl From<String> for UpstreamFailure {
    fn from(message: String) -> UpstreamFailure {
        UpstreamFailure {
            message,
            timed_out: false,
        }
    }
}

/// Sends the request upstream, its body passed on as it arrives, and waits
/// for the answer's head.
async fn forward(
    shared: &Shared,
    parts: hyper::http::request::Parts,
    target: &str,
    body: Upload,
) -> Result<Response<Incoming>, UpstreamFailure> {
    let upstream = &shared.config.upstream;
    let uri: Uri = upstream.uri_for(target).map_err(|e| e.to_string())?;
    let mut req = Request::builder().method(parts.method).uri(uri);
    let headers = req.headers_mut().expect("builder has no error yet");
    *headers = parts.headers;
    strip_hop_by_hop(headers);
    // The client's Host names the proxy. The client sets the upstream's for
    // HTTP/1.1; over HTTP/2 `:authority` names it, and a `host` beside it
    // is refused by nginx (RFC 9113 §8.3.1).
    headers.remove(HOST);
    let mut req = req.body(body).map_err(|e| e.to_string())?;
    if let Some(credentials) = upstream.basic_auth() {
        if !req.headers().contains_key(hyper::header::AUTHORIZATION) {
            req.headers_mut()
                .insert(hyper::header::AUTHORIZATION, credentials);
        }
    }
    let answer = shared.client.request(req);
    match tokio::time::timeout(shared.config.timeout, answer).await {
        Ok(result) => result.map_err(|e| UpstreamFailure::from(http::error_chain(&e))),
        Err(_) => Err(UpstreamFailure {
            message: format!("no complete answer within {:?}", shared.config.timeout),
            timed_out: true,
        }),
    }
}

fn session_key(config: &Forward, headers: &[capture::Header], peer: SocketAddr) -> String {
    config
        .session_header
        .as_deref()
        .and_then(|name| capture::header_value(headers, name))
        .map_or_else(|| peer.to_string(), str::to_string)
}

/// Removes the hop-by-hop headers, and those the Connection header names
/// as such (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect();
    for name in http::HOP_BY_HOP
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        headers.remove(name);
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Answer> {
    let body = Full::new(Bytes::from_static(text.as_bytes()));
    let mut response = Response::new(Either::Left(body));
    *response.status_mut() = status;
    response
}

/// An exchange in flight. Whatever happens to the request, dropping this
/// tells the writer, so that one abandoned request never holds back the
/// exchanges after it.
struct Pending {
    id: u64,
    recorder: Arc<Mutex<Recorder>>,
    /// What of the request body went upstream, once it has; `None` once
    /// taken into the exchange.
    uploaded: Option<Uploaded>,
    max_body: usize,
    exchange: Option<Exchange>,
}

impl Pending {
    /// Puts what of the request body went upstream into the exchange;
    /// returns why, if the client cut it off.
    fn take_request(&mut self) -> Option<String> {
        let exchange = self.exchange.as_mut()?;
        let uploaded = self.uploaded.take()?;
        let Some(teed) = uploaded.lock().expect("upload lock").take() else {
            exchange.incomplete =
                Some("request body still arriving when the exchange ended".into());
            return None;
        };
        let (body, truncated) = teed.body;
        exchange.request.body = Body(body);
        if let Some(whole) = truncated {
            exchange.incomplete = Some(format!(
                "request body of {} bytes cut to --max-body ({})",
                whole.len, self.max_body
            ));
        }
        match teed.cut_off {
            None => None,
            Some(CutOff { reason, source }) => {
                exchange.incomplete = Some(format!("request body {reason}"));
                source.then_some(reason)
            }
        }
    }

    fn finish(&mut self) {
        if let Some(exchange) = self.exchange.take() {
            self.record(Event::Done(Box::new(exchange)));
        }
        self.id = 0;
    }

    fn record(&self, event: Event) {
        lock(&self.recorder).record(event);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.id == 0 {
            return;
        }
        let cut_by_client = self.take_request();
        let Some(mut exchange) = self.exchange.take() else {
            return;
        };
        let mut recorder = lock(&self.recorder);
        exchange.error = Some(match cut_by_client {
            Some(reason) => format!("request body {reason}"),
            None if recorder.stopping => "abandoned at stop: no answer within the drain".into(),
            None => "client went away before the end of the answer".into(),
        });
        recorder.record(Event::Done(Box::new(exchange)));
    }
}

/// How often the capture is flushed at least, so that a crash loses little.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The sink and the counts, shared by the exchanges in flight. Each hands
/// its exchange over as it ends, under the lock: the sink puts exchanges
/// back in arrival order (cheap) and passes them to its writer thread,
/// which serializes and writes them. A thread of its own in between cost
/// 14 µs per proxied request at p50 (one more wake-up per exchange).
struct Recorder {
    sink: Option<Sink>,
    selection: Selection,
    summary: RecordSummary,
    /// The first failure to write; the rest of the run is not recorded.
    failed: Option<anyhow::Error>,
    /// Told of that failure, with `--on-write-error stop`.
    write_failed: Option<Arc<tokio::sync::Notify>>,
    /// The proxy is stopping: an exchange dropped unanswered now was cut
    /// off at the drain deadline.
    stopping: bool,
}

impl Recorder {
    fn record(&mut self, event: Event) {
        let Event::Done(exchange) = event;
        if self.selection.keeps(&exchange) {
            tally(&mut self.summary, &exchange);
            if self.failed.is_some() {
                self.summary.unrecorded += 1;
            }
        }
        let produced = (exchange.id, Some(*exchange));
        // The sink waits when its writer is far behind: the disk sets the
        // pace rather than memory growing without bound.
        self.apply(|sink| sink.take(vec![produced]));
    }

    fn flush(&mut self) {
        self.apply(Sink::flush);
    }

    fn apply(&mut self, f: impl FnOnce(&mut Sink) -> anyhow::Result<()>) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        if let Err(e) = f(sink) {
            // The clients are still served; what is not recorded is counted.
            tracing::error!("recording stopped: {e:#}; exchanges are forwarded but not recorded");
            self.summary.exchanges = sink.confirmed();
            self.summary.unrecorded += sink.unconfirmed();
            self.failed = Some(e);
            self.sink = None;
            if let Some(stop) = &self.write_failed {
                stop.notify_one();
            }
        }
    }

    /// Writes what still waits, closes the file and says what was recorded.
    /// A write failure is part of the summary (the count of what was not
    /// recorded is what the caller must say), not an error.
    fn finish(&mut self) -> anyhow::Result<RecordSummary> {
        if self.failed.is_none() {
            let sink = self.sink.take().context("the capture was already closed")?;
            let (confirmed, unconfirmed) = (sink.confirmed(), sink.unconfirmed());
            match sink.finish() {
                Ok(written) => {
                    let mut summary = std::mem::take(&mut self.summary);
                    summary.exchanges = written.written;
                    summary.filtered = written.filtered;
                    summary.files = written.files;
                    summary.redacted = written.redacted;
                    return Ok(summary);
                }
                Err(e) => {
                    self.summary.exchanges = confirmed;
                    self.summary.unrecorded += unconfirmed;
                    self.failed = Some(e);
                }
            }
        }
        let mut summary = std::mem::take(&mut self.summary);
        summary.write_error = self.failed.take().map(|e| format!("{e:#}"));
        Ok(summary)
    }
}

fn tally(summary: &mut RecordSummary, exchange: &Exchange) {
    match &exchange.error {
        Some(e) if e.starts_with("client") => summary.abandoned += 1,
        Some(e) if e.starts_with("abandoned at stop") => summary.abandoned_at_stop += 1,
        Some(e) if e.starts_with("request body") => summary.incomplete_requests += 1,
        Some(_) => summary.upstream_errors += 1,
        None => {}
    }
}
