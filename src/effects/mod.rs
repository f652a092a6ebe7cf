//! Side effects: what each stack did besides answering (the webhooks it
//! called; mail and row changes are sources to come behind the same
//! trait), collected per stack during a replay, tied to the exchanges that
//! caused them, and compared between the stacks (docs/effects.md).
//!
//! Two stacks can answer every request alike and still write different
//! things: an event published twice, a missing call. The answers' differ
//! cannot see that; [`judge`] can.

mod judge;
pub mod smtp;
pub mod webhook;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::capture::{Body, Header};

pub use judge::{judge, EffectGroup, EffectSides, EffectsReport};
pub use smtp::SmtpSink;
pub use webhook::WebhookSink;

/// The stacks by index, as effects name them.
pub const STACKS: [&str; 2] = ["legacy", "new"];

/// One thing a stack did besides answering.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Effect {
    /// 0 legacy, 1 new.
    pub stack: usize,
    /// What it is, for grouping: e.g. `webhook POST /hooks order.paid` (the
    /// call's method and path, and its JSON body's `type` or `event`).
    pub kind: String,
    /// The call's method, as the differ's rules see it (`POST`).
    pub method: String,
    /// The call's target (`/hooks?x=1`): with the method, the route whose
    /// rules apply to its body.
    pub target: String,
    /// When it arrived, microseconds since the Unix epoch.
    pub at_unix_us: u64,
    /// The exchange that caused it, by the `traceparent` the replay sent
    /// and the stack passed on: `(pass, copy, exchange id)`.
    pub exchange: Option<(u32, u32, u64)>,
    /// Its headers, as they came.
    pub headers: Vec<Header>,
    /// Its body, as it came.
    pub body: Body,
}

/// Where one stack's effects of one kind are collected while a replay runs
/// (a webhook sink; SMTP and PostgreSQL logical decoding are to come).
pub trait EffectSource: Send + Sync {
    /// What it collects and where, e.g. `webhook sink at 127.0.0.1:9101`.
    fn describe(&self) -> String;
    /// The stack it collects for: 0 legacy, 1 new.
    fn stack(&self) -> usize;
    /// What it collected since the last call.
    fn take(&self) -> Vec<Effect>;
    /// When the last effect arrived, if one did.
    fn last_at(&self) -> Option<Instant>;
}

/// The effect sources of a run, already collecting, and how long to wait
/// for late effects after the last answer.
#[derive(Clone)]
pub struct Collection {
    /// Where each stack's effects arrive.
    pub sources: Vec<std::sync::Arc<dyn EffectSource>>,
    /// Webhook sinks to start where the run starts: stack (0 legacy, 1
    /// new) and where it listens.
    pub webhook_sinks: Vec<(usize, std::net::SocketAddr)>,
    /// SMTP sinks to start the same way.
    pub smtp_sinks: Vec<(usize, std::net::SocketAddr)>,
    /// How long no effect must arrive before they are judged; also the
    /// most an effect may follow its exchange's answer and not be late.
    pub quiet: std::time::Duration,
}

impl std::fmt::Debug for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sources: Vec<String> = self.sources.iter().map(|s| s.describe()).collect();
        f.debug_struct("Collection")
            .field("sources", &sources)
            .field("webhook_sinks", &self.webhook_sinks)
            .field("smtp_sinks", &self.smtp_sinks)
            .field("quiet", &self.quiet)
            .finish()
    }
}

/// The default quiet period.
pub const QUIET: std::time::Duration = std::time::Duration::from_secs(2);

impl Collection {
    /// The collection with its webhook sinks listening (each answering 200
    /// with no body, keeping `max_body` bytes of each call); an address
    /// that cannot be bound is an error naming it.
    pub async fn started(&self, max_body: usize) -> anyhow::Result<Collection> {
        let mut sources = self.sources.clone();
        for &(stack, addr) in &self.webhook_sinks {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!(
                    "--{}-webhook-sink {addr}: cannot listen: {e}",
                    STACKS[stack]
                )
            })?;
            let sink = WebhookSink::start(stack, listener, Default::default(), max_body)?;
            tracing::info!("{}", sink.describe());
            sources.push(std::sync::Arc::new(sink));
        }
        for &(stack, addr) in &self.smtp_sinks {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("--{}-smtp-sink {addr}: cannot listen: {e}", STACKS[stack])
            })?;
            let sink = SmtpSink::start(stack, listener)?;
            tracing::info!("{}", sink.describe());
            sources.push(std::sync::Arc::new(sink));
        }
        Ok(Collection {
            sources,
            webhook_sinks: Vec::new(),
            smtp_sinks: Vec::new(),
            quiet: self.quiet,
        })
    }

    /// Waits for late effects, then takes every effect collected.
    pub async fn gather(&self) -> Vec<Effect> {
        settle(&self.sources, self.quiet).await;
        self.sources.iter().flat_map(|s| s.take()).collect()
    }
}

/// Waits until no source has collected anything for `quiet` (at most
/// `4 × quiet` in all), so that effects a stack sends after its answer are
/// in before they are judged.
pub async fn settle(sources: &[std::sync::Arc<dyn EffectSource>], quiet: std::time::Duration) {
    let deadline = Instant::now() + quiet * 4;
    loop {
        let last = sources.iter().filter_map(|s| s.last_at()).max();
        let since = last.map_or(quiet, |t| t.elapsed());
        if since >= quiet || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(quiet - since).await;
    }
}

/// The W3C `traceparent` the replay sends with an exchange to a stack, so
/// that the effects the stack passes it on with are tied to that exchange:
/// the trace id names tandem, the pass, the copy and the exchange; the
/// parent id names the stack.
pub fn traceparent(pass: u32, copy: u32, exchange: u64, stack: usize) -> String {
    format!(
        "00-74616e64{pass:08x}{:04x}{:012x}-{:016x}-01",
        copy & 0xffff,
        exchange & 0xffff_ffff_ffff,
        stack + 1
    )
}

/// The exchange a `traceparent` of [`traceparent`]'s names, if it is one.
pub fn exchange_of(traceparent: &str) -> Option<(u32, u32, u64)> {
    let mut parts = traceparent.trim().split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    if trace.len() != 32 || !trace.starts_with("74616e64") {
        return None;
    }
    let pass = u32::from_str_radix(&trace[8..16], 16).ok()?;
    let copy = u32::from_str_radix(&trace[16..20], 16).ok()?;
    let id = u64::from_str_radix(&trace[20..32], 16).ok()?;
    Some((pass, copy, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_names_its_exchange() {
        let header = traceparent(3, 2, 1_234_567, 1);
        assert_eq!(header.len(), 55, "{header}");
        assert_eq!(exchange_of(&header), Some((3, 2, 1_234_567)));
        assert_eq!(
            exchange_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None,
            "someone else's trace"
        );
    }
}
