//! Side effects: what each stack did besides answering (the webhooks it
//! called, the mail it sent, the rows it changed), collected per stack
//! during a replay, kept in the run directory ([`file`]), tied to the
//! exchanges that caused them, and compared between the stacks
//! (docs/effects.md).
//!
//! Two stacks can answer every request alike and still write different
//! things: an event published twice, a missing call. The answers' differ
//! cannot see that; [`judge`] can.

pub mod file;
mod judge;
pub mod postgres;
pub mod smtp;
pub mod webhook;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::capture::{Body, Header};

pub use judge::{judge, EffectGroup, EffectSides, EffectsReport};
pub use postgres::{RowChanges, SchemaMap};
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
    /// Fetches what has arrived, for sources read by polling (a database's
    /// changes); sinks that are sent their effects need not.
    fn collect(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
    /// Releases what the source holds outside tandem (a replication slot).
    fn close(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
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
    /// Databases whose row changes to read: stack and `postgres://` URL.
    pub databases: Vec<(usize, String)>,
    /// Renames from the new schema to the legacy one.
    pub schema_map: Option<std::path::PathBuf>,
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
            .field("databases", &self.databases.len())
            .field("schema_map", &self.schema_map)
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
        let map = match &self.schema_map {
            Some(path) => SchemaMap::load(path)?,
            None => SchemaMap::default(),
        };
        for (stack, url) in &self.databases {
            // The mapping renames the new schema's tables and columns.
            let map = if *stack == 1 {
                map.clone()
            } else {
                SchemaMap::default()
            };
            sources.push(std::sync::Arc::new(
                RowChanges::start(*stack, url, map).await?,
            ));
        }
        Ok(Collection {
            sources,
            webhook_sinks: Vec::new(),
            smtp_sinks: Vec::new(),
            databases: Vec::new(),
            schema_map: None,
            quiet: self.quiet,
        })
    }

    /// Waits for late effects, then takes every effect collected and
    /// closes the sources.
    pub async fn gather(&self) -> Vec<Effect> {
        settle(&self.sources, self.quiet).await;
        let effects = self.sources.iter().flat_map(|s| s.take()).collect();
        for source in &self.sources {
            source.close().await;
        }
        effects
    }

    /// Polls the sources that are read rather than sent to, every second
    /// until dropped, so that a long run's changes do not pile up.
    pub fn poll_while_running(&self) -> tokio::task::JoinHandle<()> {
        let sources = self.sources.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                for source in &sources {
                    source.collect().await;
                }
            }
        })
    }
}

/// Waits until no source has collected anything for `quiet` (at most
/// `4 × quiet` in all), so that effects a stack sends after its answer are
/// in before they are judged.
pub async fn settle(sources: &[std::sync::Arc<dyn EffectSource>], quiet: std::time::Duration) {
    let deadline = Instant::now() + quiet * 4;
    loop {
        for source in sources {
            source.collect().await;
        }
        let last = sources.iter().filter_map(|s| s.last_at()).max();
        let since = last.map_or(quiet, |t| t.elapsed());
        if since >= quiet || Instant::now() >= deadline {
            return;
        }
        // Polled sources are read again within a quarter of the period.
        tokio::time::sleep((quiet - since).min(quiet / 4)).await;
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
