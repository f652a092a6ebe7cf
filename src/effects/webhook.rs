//! The outbound HTTP sink: a stack's webhook or downstream base URL points
//! here; each call is answered with a canned answer and kept as an effect.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;

use super::{exchange_of, Effect, EffectSource};
use crate::capture::Body;

/// What the sink answers every call with.
#[derive(Debug, Clone)]
pub struct CannedAnswer {
    /// Status, 200 by default.
    pub status: u16,
    /// Body, empty by default.
    pub body: Bytes,
}

impl Default for CannedAnswer {
    fn default() -> Self {
        CannedAnswer {
            status: 200,
            body: Bytes::new(),
        }
    }
}

/// A running webhook sink for one stack.
pub struct WebhookSink {
    stack: usize,
    addr: SocketAddr,
    kept: Arc<Mutex<Kept>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Default)]
struct Kept {
    effects: Vec<Effect>,
    last: Option<Instant>,
}

impl WebhookSink {
    /// Listens on `listener` for `stack`'s calls (its bodies kept up to
    /// `max_body` bytes), answering each with `answer`.
    pub fn start(
        stack: usize,
        listener: TcpListener,
        answer: CannedAnswer,
        max_body: usize,
    ) -> std::io::Result<WebhookSink> {
        let addr = listener.local_addr()?;
        let kept = Arc::new(Mutex::new(Kept::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handler = {
            let kept = kept.clone();
            move |req: Request<Incoming>, _peer| {
                let (kept, answer) = (kept.clone(), answer.clone());
                async move {
                    let effect = effect_of(stack, req, max_body).await;
                    let mut kept = kept.lock().expect("sink lock");
                    kept.effects.push(effect);
                    kept.last = Some(Instant::now());
                    let mut response = Response::new(Full::new(answer.body));
                    *response.status_mut() =
                        hyper::StatusCode::from_u16(answer.status).unwrap_or(hyper::StatusCode::OK);
                    response
                }
            }
        };
        tokio::spawn(crate::server::serve(
            listener,
            None,
            handler,
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        ));
        Ok(WebhookSink {
            stack,
            addr,
            kept,
            stop: Some(stop),
        })
    }

    /// Its base URL, for the stack's configuration.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl EffectSource for WebhookSink {
    fn describe(&self) -> String {
        format!(
            "{} webhook sink at {}",
            super::STACKS[self.stack],
            self.addr
        )
    }

    fn stack(&self) -> usize {
        self.stack
    }

    fn take(&self) -> Vec<Effect> {
        std::mem::take(&mut self.kept.lock().expect("sink lock").effects)
    }

    fn last_at(&self) -> Option<Instant> {
        self.kept.lock().expect("sink lock").last
    }
}

/// A call as an effect: its kind is method, path and the JSON body's
/// `type` or `event`.
async fn effect_of(stack: usize, req: Request<Incoming>, max_body: usize) -> Effect {
    let at_unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let (parts, body) = req.into_parts();
    let (body, _) = crate::http::read_bounded(body, max_body)
        .await
        .unwrap_or_default();
    let event = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            ["type", "event"]
                .iter()
                .find_map(|k| v.get(k)?.as_str().map(str::to_string))
        });
    let path = parts.uri.path();
    let kind = match event {
        Some(event) => format!("webhook {} {path} {event}", parts.method),
        None => format!("webhook {} {path}", parts.method),
    };
    let exchange = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(exchange_of);
    Effect {
        stack,
        kind,
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.to_string()),
        at_unix_us,
        exchange,
        headers: crate::http::to_headers(&parts.headers),
        body: Body(body),
    }
}
