//! Sending one exchange to both targets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HOST;
use hyper::Request;

use super::ReplayPlan;
use crate::capture::{self, Body, Exchange};
use crate::http::{self, Client};
use crate::results::{Attempt, ErrorKind, ExchangeResult, TargetError};
use crate::target::Target;

/// Sends requests to the two targets over one pooled client.
pub struct Sender {
    client: Client,
    legacy: Target,
    new: Target,
    legacy2: Option<Target>,
    timeout: Duration,
}

impl Sender {
    pub fn new(plan: &ReplayPlan) -> Sender {
        Sender {
            client: http::client(plan.timeout),
            legacy: plan.legacy.clone(),
            new: plan.new.clone(),
            legacy2: plan.noise.as_ref().map(|n| n.legacy2.clone()),
            timeout: plan.timeout,
        }
    }

    /// Sends `exchange` to both targets at once (and to the second legacy
    /// target when learning noise); `scheduled` is when it was due, `start`
    /// when the replay began.
    pub async fn send_both(
        &self,
        exchange: Exchange,
        scheduled: Instant,
        start: Instant,
    ) -> ExchangeResult {
        let second = async {
            match &self.legacy2 {
                Some(target) => Some(self.attempt(target, &exchange.request, scheduled).await),
                None => None,
            }
        };
        let (legacy, new, legacy2) = tokio::join!(
            self.attempt(&self.legacy, &exchange.request, scheduled),
            self.attempt(&self.new, &exchange.request, scheduled),
            second,
        );
        ExchangeResult {
            id: exchange.id,
            session: exchange.session,
            scheduled_us: scheduled.saturating_duration_since(start).as_micros() as u64,
            request: exchange.request,
            legacy,
            new,
            legacy2,
        }
    }

    async fn attempt(
        &self,
        target: &Target,
        request: &capture::Request,
        scheduled: Instant,
    ) -> Attempt {
        let sent = Instant::now();
        let lag_us = sent.saturating_duration_since(scheduled).as_micros() as u64;
        let outcome = match build(target, request) {
            Ok(req) => match tokio::time::timeout(self.timeout, self.exchange(req)).await {
                Ok(outcome) => outcome,
                Err(_) => Err((
                    ErrorKind::Timeout,
                    format!("no complete answer within {:?}", self.timeout),
                )),
            },
            Err(message) => Err((ErrorKind::Other, message)),
        };
        let elapsed_us = sent.elapsed().as_micros() as u64;
        match outcome {
            Ok((status, headers, body)) => Attempt {
                lag_us,
                response: Some(capture::Response {
                    status,
                    headers,
                    body: Body(body),
                    latency_us: elapsed_us,
                }),
                error: None,
            },
            Err((kind, message)) => Attempt {
                lag_us,
                response: None,
                error: Some(TargetError {
                    kind,
                    message,
                    after_us: elapsed_us,
                }),
            },
        }
    }

    async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(u16, Vec<capture::Header>, Bytes), (ErrorKind, String)> {
        let fail =
            |e: &(dyn std::error::Error + 'static)| (http::classify(e), http::error_chain(e));
        let response = self.client.request(req).await.map_err(|e| fail(&e))?;
        let (head, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| fail(&e))?.to_bytes();
        Ok((head.status.as_u16(), http::to_headers(&head.headers), body))
    }
}

/// The recorded request, addressed to `target`.
fn build(target: &Target, request: &capture::Request) -> Result<Request<Full<Bytes>>, String> {
    let uri = target
        .uri_for(&request.target)
        .map_err(|e| format!("{e:#}"))?;
    let (headers, invalid) = http::to_header_map(&request.headers, &["host"]);
    if invalid > 0 {
        tracing::debug!("{invalid} recorded headers are not valid HTTP and were not sent");
    }
    let mut req = Request::builder()
        .method(request.method.as_str())
        .uri(uri)
        .body(Full::new(request.body.bytes().clone()))
        .map_err(|e| format!("recorded request cannot be sent: {e}"))?;
    *req.headers_mut() = headers;
    req.headers_mut().insert(HOST, target.host_header());
    Ok(req)
}
