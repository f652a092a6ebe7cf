//! `tandem demo`: the whole job on two embedded stacks.
//!
//! Records a generated workload through the recording proxy in front of a
//! "production" legacy stack, then replays the capture at fresh copies of the
//! legacy and the new stack (as a team replays production traffic at
//! staging), diffs with `scenarios/demo.rules.toml` and reports.

pub mod stack;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::record::{record_proxy, ProxyConfig, RecordSummary};
use crate::replay::{replay, ReplayOutcome, ReplayPlan};
pub use stack::{start, DemoServer, Flavor};

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

/// What the demo produced.
#[derive(Debug)]
pub struct DemoOutcome {
    /// The recording.
    pub recorded: RecordSummary,
    /// The replay and its report.
    pub replay: ReplayOutcome,
}

/// Runs the demo end to end.
pub async fn run(options: &DemoOptions) -> anyhow::Result<DemoOutcome> {
    let recorded = record(options).await?;
    tracing::info!(
        "recorded {} exchanges to {}",
        recorded.exchanges,
        options.capture.display()
    );
    let legacy = start(Flavor::Legacy).await?;
    let new = start(Flavor::New).await?;
    let rules = match &options.rules {
        Some(path) => path.clone(),
        None => {
            let path = options.out_dir.join("demo.rules.toml");
            std::fs::create_dir_all(&options.out_dir)?;
            std::fs::write(&path, RULES)?;
            path
        }
    };
    let plan = ReplayPlan {
        speed: options.speed,
        rules: Some(rules),
        drain: Duration::from_secs(5),
        ..ReplayPlan::new(
            options.capture.clone(),
            legacy.url().parse()?,
            new.url().parse()?,
            options.out_dir.clone(),
        )
    };
    let replayed = replay(&plan, std::future::pending()).await;
    legacy.stop().await;
    new.stop().await;
    Ok(DemoOutcome {
        recorded,
        replay: replayed?,
    })
}

/// Drives the workload through the recording proxy in front of a legacy stack.
async fn record(options: &DemoOptions) -> anyhow::Result<RecordSummary> {
    let production = start(Flavor::Legacy).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_url = format!("http://{}", listener.local_addr()?);
    let config = ProxyConfig {
        upstream: production.url().parse()?,
        out: options.capture.clone(),
        session_header: Some("x-demo-user".to_string()),
        timeout: Duration::from_secs(10),
        drain: Duration::from_secs(5),
        selection: Default::default(),
        rotation: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(record_proxy(listener, config, async {
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
