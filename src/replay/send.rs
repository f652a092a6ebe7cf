//! Sending one job to both targets.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HOST;
use hyper::Request;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::schedule::Job;
use super::ReplayPlan;
use crate::capture::{self, Body};
use crate::correlate::Bindings;
use crate::http::{self, connection, Client};
use crate::results::{Attempt, ErrorKind, ExchangeResult, TargetError};
use crate::target::Target;

/// One stack (legacy, new or legacy-2) as the sender sees it: its target,
/// its concurrency limit, its extra headers and its connections.
struct Stack {
    /// 0 legacy, 1 new, 2 legacy-2: its bindings.
    index: usize,
    target: Target,
    slots: Option<Arc<Semaphore>>,
    headers: hyper::HeaderMap,
    /// The target's Host header, and its credentials (`user:pass@`), made
    /// once rather than for every request.
    host: hyper::header::HeaderValue,
    credentials: Option<hyper::header::HeaderValue>,
    /// Connections of a cleartext HTTP/1.1 target; `None`: a client's.
    pool: Option<Arc<connection::Pool>>,
    /// A client of its own (`--keep-host` on TLS and HTTP/2 targets, whose
    /// requests name the recorded host); `None`: the sender's.
    client: Option<Client>,
}

/// Sends requests to the targets: over HTTP/1.1 on the engine's own
/// connections to each host and port, otherwise over one pooled client.
pub struct Sender {
    client: Client,
    warm: http::WarmConnections,
    legacy: Stack,
    new: Stack,
    legacy2: Option<Stack>,
    timeout: Duration,
    connect_timeout: Duration,
    max_body: usize,
    max_lag: Option<Duration>,
    keep_host: bool,
    /// Send each request with a `traceparent` naming its exchange and
    /// stack, that effects passed it on with are tied to it.
    trace_effects: bool,
    bindings: Option<Arc<Bindings>>,
    /// The one stack sent to, if only one.
    solo: Option<usize>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Slots for requests in flight (`--max-in-flight`), per target, shared by
/// every engine: the limit holds for the whole replay, whichever engines
/// the sessions hash to.
#[derive(Clone, Default)]
pub struct InFlight {
    legacy: Option<Arc<Semaphore>>,
    new: Option<Arc<Semaphore>>,
    legacy2: Option<Arc<Semaphore>>,
}

impl InFlight {
    /// The plan's limit for each target; none without one.
    pub fn new(plan: &ReplayPlan) -> InFlight {
        let slots = || plan.max_in_flight.map(|n| Arc::new(Semaphore::new(n)));
        InFlight {
            legacy: slots(),
            new: slots(),
            legacy2: slots(),
        }
    }
}

impl Sender {
    /// A sender for one engine, its limits on requests in flight taken
    /// from `in_flight`.
    pub fn new(plan: &ReplayPlan, in_flight: &InFlight, bindings: Option<Arc<Bindings>>) -> Sender {
        // Targets on one host and port share its connections and limit.
        let mut pools = Pools::default();
        let warm = http::WarmConnections::default();
        let mut stack =
            |index: usize, target: &Target, headers: &[(String, String)], slots: &Option<_>| {
                let pool = own_pool(target, plan, &mut pools);
                let trust = match index {
                    0 | 2 => plan.legacy_trust.as_ref(),
                    _ => plan.new_trust.as_ref(),
                };
                let client = (pool.is_none() && (plan.keep_host || trust.is_some()))
                    .then(|| own_client(target, plan, trust, &warm))
                    .flatten();
                Stack {
                    index,
                    target: target.clone(),
                    slots: Option::clone(slots),
                    headers: header_map(headers),
                    host: target.host_header(),
                    credentials: target.basic_auth(),
                    pool,
                    client,
                }
            };
        let legacy = stack(0, &plan.legacy, &plan.legacy_headers, &in_flight.legacy);
        let new = stack(1, &plan.new, &plan.new_headers, &in_flight.new);
        let legacy2 = plan
            .legacy2
            .as_ref()
            .map(|t| stack(2, t, &plan.legacy_headers, &in_flight.legacy2));
        Sender {
            client: http::client_warmed(&plan.client, warm.clone()),
            warm,
            legacy,
            new,
            legacy2,
            timeout: plan.timeout,
            connect_timeout: plan.client.connect_timeout,
            max_body: plan.max_body,
            max_lag: plan.max_lag,
            keep_host: plan.keep_host,
            trace_effects: plan.trace_effects,
            bindings,
            solo: plan.solo,
            metrics: plan.metrics.clone(),
        }
    }

    /// Opens `n` connections to each target ahead of the first request.
    pub async fn warm(&self, n: usize) {
        if n == 0 {
            return;
        }
        let stacks = [Some(&self.legacy), Some(&self.new), self.legacy2.as_ref()];
        let mut warmed: Vec<&Arc<connection::Pool>> = Vec::new();
        for stack in stacks.into_iter().flatten() {
            let Ok(uri) = stack.target.uri_for("/") else {
                continue;
            };
            let opened = match &stack.pool {
                Some(pool) if warmed.iter().any(|p| Arc::ptr_eq(p, pool)) => continue,
                Some(pool) => {
                    warmed.push(pool);
                    pool.open(n).await
                }
                None => self.warm.open(&uri, n, self.connect_timeout).await,
            };
            if opened == 0 {
                tracing::warn!("no connection to {} could be opened ahead", stack.target);
            }
            tracing::debug!("{opened} connections opened ahead to {}", stack.target);
        }
    }

    /// The stacks a job goes to (0 legacy, 1 new, 2 legacy-2), in the
    /// order their requests go out. Jobs due together are sent in this
    /// order: the legacy request in the middle is as far from the second
    /// legacy one as from the new one, and which of those two goes first
    /// alternates, so that whatever the position costs (the first answer
    /// computed earlier, say) falls on both alike. Time-dependent fields
    /// then differ as often between the legacy answers as between legacy
    /// and new, and are learned as noise.
    pub fn stacks_for(&self, job: &Job) -> impl Iterator<Item = usize> + Clone {
        let order = if job.exchange.id % 2 == 0 {
            [2, 0, 1]
        } else {
            [1, 0, 2]
        };
        let (legacy2, solo) = (self.legacy2.is_some(), self.solo);
        order
            .into_iter()
            .filter(move |&i| i != 2 || legacy2)
            .filter(move |&i| solo.is_none_or(|solo| solo == i))
    }

    /// Sends the job's request to stack `which` (see [`Sender::stacks_for`])
    /// once it has a free slot there (`--max-in-flight`), no later than
    /// `--max-lag` allows: each stack keeps its own pace and its own limits.
    pub async fn attempt_on(&self, which: usize, job: &Job, max_lag: Option<Duration>) -> Attempt {
        let stack = self.stack(which).expect("legacy-2 is in the plan");
        let slot = match &stack.slots {
            Some(slots) => {
                let take = slots.clone().acquire_owned();
                let taken = match max_lag {
                    Some(max) => tokio::time::timeout_at((job.at + max).into(), take)
                        .await
                        .ok(),
                    None => Some(take.await),
                };
                match taken {
                    Some(Ok(permit)) => Some(permit),
                    _ => {
                        self.not_sent(which, job);
                        return dropped(
                            job.at,
                            "no free slot within --max-lag (--max-in-flight reached)",
                        );
                    }
                }
            }
            None => None,
        };
        self.attempt(stack, job, slot, max_lag).await
    }

    /// How many of `stack`'s requests can be on the wire at once, where
    /// that is known and nothing else holds a send back: the limit of the
    /// engine's own connections to it, when no request waits for another's
    /// answer (no correlation). A send waiting for a producer would hold a
    /// turn without a connection.
    pub fn turns(&self, stack: usize) -> Option<usize> {
        let stack = self.stack(stack)?;
        match (&stack.pool, &self.bindings) {
            (Some(pool), None) => pool.max(),
            _ => None,
        }
    }

    /// Stack `which` (0 legacy, 1 new, 2 legacy-2); `None` for legacy-2
    /// when the plan has none.
    fn stack(&self, which: usize) -> Option<&Stack> {
        match which {
            0 => Some(&self.legacy),
            1 => Some(&self.new),
            _ => self.legacy2.as_ref(),
        }
    }

    /// Tells the requests that wait for `job`'s answer on `stack` that
    /// none will come, so that they go out as recorded now instead of
    /// holding their session until their deadline.
    pub fn not_sent(&self, stack: usize, job: &Job) {
        if let Some(bindings) = &self.bindings {
            bindings.answered(stack, (job.pass, job.copy, job.exchange.id), None);
        }
    }

    /// Live metrics, if kept.
    pub fn metrics(&self) -> Option<&Arc<crate::metrics::Metrics>> {
        self.metrics.as_ref()
    }

    /// `--max-lag`, if given.
    pub fn max_lag(&self) -> Option<Duration> {
        self.max_lag
    }

    /// The result of `job` from its stacks' attempts; `start` is when the
    /// replay began.
    pub fn result(
        &self,
        job: &Job,
        start: Instant,
        attempts: [Option<Attempt>; 3],
    ) -> ExchangeResult {
        let [legacy, new, legacy2] = attempts;
        let missing = || dropped(job.at, "not sent");
        ExchangeResult {
            id: job.exchange.id,
            pass: job.pass,
            copy: job.copy,
            session: job.exchange.session.to_string(),
            scheduled_us: job.at.saturating_duration_since(start).as_micros() as u64,
            request: job.exchange.request.clone(),
            legacy: legacy.unwrap_or_else(missing),
            new: new.unwrap_or_else(missing),
            legacy2: self
                .legacy2
                .as_ref()
                .map(|_| legacy2.unwrap_or_else(missing)),
            recorded: job.exchange.response.clone(),
        }
    }

    /// Sends the job's request to `stack`'s target, holding its slot (if
    /// limited) until the answer is in. With correlation, the request first
    /// gets this stack's own ids and tokens (waiting for their producers'
    /// answers, within --max-lag or the timeout), and the answer gives the
    /// values later requests need.
    async fn attempt(
        &self,
        stack: &Stack,
        job: &Job,
        _slot: Option<OwnedSemaphorePermit>,
        max_lag: Option<Duration>,
    ) -> Attempt {
        let scheduled = job.at;
        let at = (job.pass, job.copy, job.exchange.id);
        let recorded = &job.exchange.request;
        let (rewritten, unresolved) = match &self.bindings {
            Some(bindings) => {
                let deadline = scheduled + max_lag.unwrap_or(self.timeout);
                // Boxed: its state would be room in every job's future,
                // correlated or not.
                let resolved =
                    Box::pin(bindings.resolve(stack.index, at, recorded, deadline)).await;
                (resolved.request, resolved.unresolved)
            }
            None => (None, Vec::new()),
        };
        let request = rewritten.as_ref().unwrap_or(recorded);
        let trace = self
            .trace_effects
            .then(|| crate::effects::traceparent(job.pass, job.copy, job.exchange.id, stack.index));
        let mut attempt = self
            .send_to(stack, request, trace, scheduled, max_lag)
            .await;
        if let Some(bindings) = &self.bindings {
            let answer = attempt
                .response
                .as_ref()
                .map(|r| (r.status, &r.headers[..], &r.body));
            bindings.answered(stack.index, at, answer);
        }
        attempt.unresolved = unresolved;
        attempt
    }

    async fn send_to(
        &self,
        stack: &Stack,
        request: &capture::Request,
        trace: Option<String>,
        scheduled: Instant,
        max_lag: Option<Duration>,
    ) -> Attempt {
        let sent = Instant::now();
        let lag_us = sent.saturating_duration_since(scheduled).as_micros() as u64;
        if max_lag.is_some_and(|max| sent.saturating_duration_since(scheduled) > max) {
            return dropped(scheduled, "could not go out within --max-lag");
        }
        let _in_flight = self.metrics.as_ref().map(|m| m.in_flight(stack.index));
        let outcome = match &stack.pool {
            Some(pool) => match encode(stack, request, self.keep_host, trace.as_deref()) {
                Ok(out) => self.timed(own_exchange(pool, &out)).await,
                Err(message) => Err(Failed::new(ErrorKind::Other, message)),
            },
            None => match build(stack, request, self.keep_host, trace.as_deref()) {
                // Boxed: hyper-util's future would be room in every
                // request's task, on the engine's own connections too.
                Ok(req) => Box::pin(self.timed(self.exchange(stack, req))).await,
                Err(message) => Err(Failed::new(ErrorKind::Other, message)),
            },
        };
        // One clock read for the end: elapsed, latency and the check of the
        // connection's send time all take it.
        let done = Instant::now();
        let elapsed_us = done.saturating_duration_since(sent).as_micros() as u64;
        match outcome {
            Ok(Answer {
                status,
                headers,
                body: (body, truncated),
                on_wire,
                retried,
            }) => {
                // The actual send is when the request went out on its
                // connection, after any wait for one; the task's own time
                // where the connection could not tell (HTTP/2, or writes
                // that do not fit between the task's start and now).
                let sent = on_wire.filter(|&w| w >= sent && w <= done).unwrap_or(sent);
                Attempt {
                    lag_us: sent.saturating_duration_since(scheduled).as_micros() as u64,
                    response: Some(capture::Response {
                        status,
                        headers,
                        body: Body(body),
                        latency_us: done.saturating_duration_since(sent).as_micros() as u64,
                        truncated,
                    }),
                    error: None,
                    unresolved: Vec::new(),
                    retried,
                }
            }
            Err(Failed {
                kind,
                message,
                retried,
            }) => Attempt {
                lag_us,
                response: None,
                error: Some(TargetError {
                    kind,
                    message,
                    after_us: elapsed_us,
                }),
                unresolved: Vec::new(),
                retried,
            },
        }
    }

    /// `exchange`'s outcome, or a timeout after `--timeout`.
    async fn timed(
        &self,
        exchange: impl std::future::Future<Output = Result<Answer, Failed>>,
    ) -> Result<Answer, Failed> {
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failed::new(
                ErrorKind::Timeout,
                format!("no complete answer within {:?}", self.timeout),
            )),
        }
    }

    /// `req` on the sender's client or the stack's own (TLS, HTTP/2).
    async fn exchange(&self, stack: &Stack, req: Request<Full<Bytes>>) -> Result<Answer, Failed> {
        let client = stack.client.as_ref().unwrap_or(&self.client);
        let response = client.request(req).await.map_err(|e| failed(&e))?;
        // Read before the body: once the body is in, the connection may carry
        // the next request.
        let on_wire = response
            .extensions()
            .get::<http::SendClock>()
            .filter(|_| response.version() < hyper::Version::HTTP_2)
            .map(http::SendClock::sent);
        let (head, body) = response.into_parts();
        let body = http::read_bounded(body, self.max_body)
            .await
            .map_err(|e| failed(&e))?;
        Ok(Answer {
            status: head.status.as_u16(),
            headers: http::to_headers(&head.headers),
            body,
            on_wire,
            retried: false,
        })
    }
}

/// `out` on the engine's own connections to its stack (cleartext HTTP/1.1).
async fn own_exchange(
    pool: &connection::Pool,
    out: &connection::Outgoing,
) -> Result<Answer, Failed> {
    let answer = pool.request(out).await.map_err(|e| failed(&*e))?;
    Ok(Answer {
        status: answer.status,
        headers: answer.headers,
        body: (answer.body, answer.truncated),
        on_wire: Some(answer.sent),
        retried: answer.retried,
    })
}

/// A client's error as the result states it.
fn failed(e: &(dyn std::error::Error + 'static)) -> Failed {
    Failed {
        kind: http::classify(e),
        message: http::error_chain(e),
        retried: was_retried(e),
    }
}

/// An answer as a stack gave it.
struct Answer {
    status: u16,
    headers: Vec<capture::Header>,
    /// The body, with its whole length and hash when cut.
    body: (Bytes, Option<capture::Truncated>),
    /// When the request went out on the wire, where the connection knows.
    on_wire: Option<Instant>,
    /// Sent a second time on a new connection (see [`Attempt::retried`]).
    retried: bool,
}

/// Why a stack gave no answer.
struct Failed {
    kind: ErrorKind,
    message: String,
    /// It failed again after a second send on a new connection.
    retried: bool,
}

impl Failed {
    fn new(kind: ErrorKind, message: String) -> Failed {
        Failed {
            kind,
            message,
            retried: false,
        }
    }
}

/// Whether `error` is that of a request sent a second time.
fn was_retried(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<connection::RetriedError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// An attempt the harness did not make: counted apart, never hidden.
pub fn dropped(scheduled: Instant, why: &str) -> Attempt {
    Attempt {
        lag_us: Instant::now()
            .saturating_duration_since(scheduled)
            .as_micros() as u64,
        response: None,
        error: Some(TargetError {
            kind: ErrorKind::Dropped,
            message: why.to_string(),
            after_us: 0,
        }),
        unresolved: Vec::new(),
        retried: false,
    }
}

/// The engine's own connections to `target`, shared with the other targets
/// on its host and port: for cleartext HTTP/1.1 only.
fn own_pool(
    target: &Target,
    plan: &ReplayPlan,
    pools: &mut Pools,
) -> Option<Arc<connection::Pool>> {
    let uri = target.uri_for("/").ok()?;
    if uri.scheme_str() != Some("http") || plan.client.http2_prior_knowledge {
        return None;
    }
    let key = uri.authority()?.to_string();
    if let Some(pool) = pools.by_endpoint.get(&key) {
        return Some(pool.clone());
    }
    let pool = Arc::new(
        connection::Pool::new(
            &uri,
            plan.client.max_connections,
            plan.client.connect_timeout,
            pools.warned.clone(),
        )?
        .with_max_body(plan.max_body),
    );
    pools.by_endpoint.insert(key, pool.clone());
    Some(pool)
}

/// A stack's own client, for a TLS or HTTP/2 target: with the stack's own
/// certificates (`--legacy-client-cert` and the like), and for
/// `--keep-host` connecting to the target whatever host the request names.
fn own_client(
    target: &Target,
    plan: &ReplayPlan,
    trust: Option<&http::Trust>,
    warm: &http::WarmConnections,
) -> Option<Client> {
    let uri = target.uri_for("/").ok()?;
    let https = uri.scheme_str() == Some("https");
    let dial = (
        uri.host()?.trim_matches(['[', ']']).to_string(),
        uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
    );
    let options = http::ClientOptions {
        dial: plan.keep_host.then_some(dial),
        trust: trust.cloned().unwrap_or_else(|| plan.client.trust.clone()),
        ..plan.client.clone()
    };
    Some(http::client_warmed(&options, warm.clone()))
}

/// `uri` naming `host` (a Host header's value) as its authority.
fn with_authority(uri: &hyper::Uri, host: &hyper::header::HeaderValue) -> Option<hyper::Uri> {
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(host.to_str().ok()?.parse().ok()?);
    hyper::Uri::from_parts(parts).ok()
}

/// An engine's pools, by host and port; a full one is logged once.
#[derive(Default)]
struct Pools {
    by_endpoint: HashMap<String, Arc<connection::Pool>>,
    warned: Arc<AtomicBool>,
}

/// Extra headers as a header map (the CLI checked they are valid).
fn header_map(headers: &[(String, String)]) -> hyper::HeaderMap {
    let pairs: Vec<capture::Header> = headers
        .iter()
        .map(|(n, v)| capture::Header(n.into(), v.into()))
        .collect();
    http::to_header_map(&pairs, &[], 0).0
}

/// The recorded request as the engine's own connections send it: in origin
/// form, the stack's headers set over the recorded ones, hop-by-hop headers
/// left out, the target's Host unless the recorded one is kept, and a
/// Content-Length of the body as it is (not as recorded).
fn encode(
    stack: &Stack,
    request: &capture::Request,
    keep_host: bool,
    trace: Option<&str>,
) -> Result<connection::Outgoing, String> {
    let path = stack.target.path_pieces(&request.target);
    let body = request.body.bytes();
    let mut out = connection::OutgoingHead::new(&request.method, &path, body.len())?;
    let (mut host, mut authorization, mut length) = (false, false, false);
    for capture::Header(name, value) in &request.headers {
        // Names are lower case in captures (the formats say so); one that is
        // not is lowered, as hyper's header map did.
        let name: std::borrow::Cow<str> = match name.bytes().any(|b| b.is_ascii_uppercase()) {
            true => name.to_ascii_lowercase().into(),
            false => name.as_str().into(),
        };
        let overridden = (!stack.headers.is_empty() && stack.headers.contains_key(&*name))
            || (trace.is_some() && name == "traceparent");
        if overridden || http::is_hop_by_hop(&name) {
            continue;
        }
        match &*name {
            "host" if !keep_host => continue,
            "content-length" => {
                length = true;
                continue;
            }
            _ => {}
        }
        // A recorded Host or Authorization left out as invalid is made up
        // for below, as if it had not been recorded.
        if out.header(&name, &http::header_bytes(value)) {
            host |= name == "host";
            authorization |= name == "authorization";
        }
    }
    if !host {
        out.header("host", stack.host.as_bytes());
    }
    if let Some(credentials) = stack.credentials.as_ref().filter(|_| !authorization) {
        out.header("authorization", credentials.as_bytes());
    }
    for (name, value) in &stack.headers {
        out.header(name.as_str(), value.as_bytes());
    }
    if let Some(trace) = trace {
        out.header("traceparent", trace.as_bytes());
    }
    let out = out.body(body, length);
    if out.invalid() > 0 {
        tracing::debug!(
            "{} recorded headers are not valid HTTP and were not sent",
            out.invalid()
        );
    }
    Ok(out)
}

/// The recorded request for a client (TLS or HTTP/2 target), addressed to
/// the stack's target, the stack's headers set over the recorded ones. The
/// recorded Host is dropped unless kept: hyper-util sets the target's for
/// HTTP/1.1, and HTTP/2 names the target in `:authority` alone (RFC 9113
/// §8.3.1: a second, or different, `host` makes nginx answer 400 to every
/// request).
fn build(
    stack: &Stack,
    request: &capture::Request,
    keep_host: bool,
    trace: Option<&str>,
) -> Result<Request<Full<Bytes>>, String> {
    let uri = stack
        .target
        .uri_for(&request.target)
        .map_err(|e| format!("{e:#}"))?;
    let skip: &[&str] = if keep_host { &[] } else { &["host"] };
    // Room for what is set below: Host, Authorization, traceparent and the
    // stack's own headers.
    let more = 3 + stack.headers.len();
    let (headers, invalid) = http::to_header_map(&request.headers, skip, more);
    if invalid > 0 {
        tracing::debug!("{invalid} recorded headers are not valid HTTP and were not sent");
    }
    let mut req = Request::builder()
        .method(request.method.as_str())
        .uri(uri)
        .body(Full::new(request.body.bytes().clone()))
        .map_err(|e| format!("recorded request cannot be sent: {e}"))?;
    *req.headers_mut() = headers;
    if let Some(host) = req.headers_mut().remove(HOST) {
        // --keep-host on a pooled client: the recorded host goes in the URI,
        // which the stack's own client dials at the target.
        if let Some(uri) = with_authority(req.uri(), &host) {
            *req.uri_mut() = uri;
        }
    }
    if let Some(credentials) = &stack.credentials {
        if !req.headers().contains_key(hyper::header::AUTHORIZATION) {
            req.headers_mut()
                .insert(hyper::header::AUTHORIZATION, credentials.clone());
        }
    }
    for (name, value) in &stack.headers {
        req.headers_mut().insert(name, value.clone());
    }
    if let Some(value) = trace.and_then(|t| t.parse().ok()) {
        req.headers_mut().insert("traceparent", value);
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(url: &str, headers: &[(&str, &str)]) -> Stack {
        let target: Target = url.parse().unwrap();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Stack {
            index: 0,
            host: target.host_header(),
            credentials: target.basic_auth(),
            pool: Pool::new(
                &target.uri_for("/").unwrap(),
                None,
                Duration::from_secs(1),
                Arc::default(),
            )
            .map(Arc::new),
            target,
            slots: None,
            headers: header_map(&headers),
            client: None,
        }
    }

    fn recorded(headers: &[(&str, &str)], body: &'static [u8]) -> capture::Request {
        capture::Request {
            method: "POST".into(),
            target: "/orders?x=1".into(),
            version: "HTTP/1.1".into(),
            headers: headers
                .iter()
                .map(|(n, v)| capture::Header((*n).into(), (*v).into()))
                .collect(),
            body: Body(Bytes::from_static(body)),
        }
    }

    fn text(out: &connection::Outgoing) -> String {
        String::from_utf8_lossy(out.as_bytes()).into_owned()
    }

    use connection::Pool;

    #[test]
    fn a_request_goes_out_as_recorded_with_the_stacks_host_headers_and_length() {
        let stack = stack("http://u:p@127.0.0.1:8081/v2", &[("x-stack", "legacy")]);
        let request = recorded(
            &[
                ("Host", "shop.example"),
                ("connection", "keep-alive"),
                ("content-length", "99"),
                ("x-stack", "recorded"),
                ("traceparent", "00-recorded"),
                ("accept", "application/json"),
                ("x-bad", "a\nb"),
            ],
            b"{}",
        );
        let out = encode(&stack, &request, false, Some("00-trace")).unwrap();
        assert_eq!(
            text(&out),
            "POST /v2/orders?x=1 HTTP/1.1\r\naccept: application/json\r\n\
             host: 127.0.0.1:8081\r\nauthorization: Basic dTpw\r\nx-stack: legacy\r\n\
             traceparent: 00-trace\r\ncontent-length: 2\r\n\r\n{}"
        );
        assert_eq!(out.invalid(), 1, "the value with a line feed");
        let bad_host = recorded(&[("host", "shop\u{7f}")], b"");
        let made_up = text(&encode(&stack, &bad_host, true, None).unwrap());
        assert!(
            made_up.contains("\r\nhost: 127.0.0.1:8081\r\n"),
            "{made_up}"
        );
        let kept = encode(&stack, &request, true, None).unwrap();
        let kept = text(&kept);
        assert!(kept.contains("\r\nhost: shop.example\r\n") && !kept.contains("127.0.0.1"));
        assert!(kept.contains("\r\ntraceparent: 00-recorded\r\n"), "{kept}");
    }

    #[test]
    fn a_recorded_authorization_wins_over_the_urls_credentials() {
        let stack = stack("http://u:p@127.0.0.1:8081", &[]);
        let request = recorded(&[("authorization", "Bearer t-1")], b"");
        let out = text(&encode(&stack, &request, false, None).unwrap());
        assert!(out.contains("\r\nauthorization: Bearer t-1\r\n"));
        assert!(!out.contains("Basic"), "{out}");
        assert!(
            !out.contains("content-length"),
            "no body, none recorded: {out}"
        );
    }
}
