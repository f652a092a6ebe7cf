//! The embedded stacks and workload of `tandem demo` (composed in
//! `cli::demo`): a legacy and a new order API ([`stack`]), a generated
//! workload ([`workload`]), and its recording through the proxy.

pub mod stack;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::record::{record_proxy, ProxyConfig, RecordSummary, Sink};
pub use stack::{start, start_calling, start_with, DemoServer, Flavor, Ids};

/// The demo's rules, as shipped in `scenarios/demo.rules.toml`.
pub const RULES: &str = include_str!("../../scenarios/demo.rules.toml");

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Requests in the generated workload.
    pub requests: usize,
    /// Rate at which the workload is recorded, requests per second.
    pub rate: f64,
    /// Replay speed, multiple of the recorded rate.
    pub speed: f64,
    /// Simulated users (client connections) in the workload.
    pub users: usize,
    /// Seed of the workload.
    pub seed: u64,
    /// The capture to write.
    pub capture: PathBuf,
    /// The run directory.
    pub out_dir: PathBuf,
    /// Rules file; `None` uses the shipped demo rules.
    pub rules: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            requests: 3000,
            rate: 1000.0,
            speed: 2.0,
            users: 32,
            seed: 7,
            capture: PathBuf::from("captures/demo.jsonl.gz"),
            out_dir: PathBuf::from("reports/demo"),
            rules: None,
        }
    }
}

/// Drives the workload through the recording proxy in front of a legacy stack.
pub async fn record(options: &DemoOptions) -> anyhow::Result<RecordSummary> {
    record_with(options, Ids::Issued).await
}

/// [`record`] from a legacy stack that makes its ids as `ids` says.
pub async fn record_with(options: &DemoOptions, ids: Ids) -> anyhow::Result<RecordSummary> {
    let production = start_with(Flavor::Legacy, ids).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_url = format!("http://{}", listener.local_addr()?);
    let config = ProxyConfig {
        session_header: Some("x-demo-user".to_string()),
        timeout: Duration::from_secs(10),
        drain: Duration::from_secs(5),
        ..ProxyConfig::new(listener, production.url().parse()?)
    };
    // Not `config.source()`: this upstream is stopped once recorded, so
    // its port is free for anything after, a replay's own fresh stacks
    // included, which the guard against replaying writes at the recorded
    // upstream would then refuse (a CI run met that once).
    let source = format!(
        "tandem demo: proxy in front of a demo legacy stack at {}, stopped after recording",
        production.url()
    );
    let sink = Sink::create(
        &options.capture,
        &source,
        Default::default(),
        Default::default(),
    )?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(record_proxy(config, sink, async {
        let _ = stopped.await;
    }));
    let calls = workload::generate(options.requests, options.users, options.seed);
    tracing::info!(
        "sending {} requests at {} req/s through the recording proxy",
        calls.len(),
        options.rate
    );
    let driven = workload::drive(&proxy_url, calls, options.rate).await;
    let _ = stop.send(());
    let recorded = proxy.await??;
    production.stop().await;
    let driven = driven?;
    anyhow::ensure!(
        driven.failed == 0,
        "{} demo requests got no answer through the proxy",
        driven.failed
    );
    Ok(recorded)
}
