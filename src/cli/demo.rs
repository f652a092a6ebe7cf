//! `tandem demo`: the whole job on two embedded stacks. Records the demo
//! workload through the recording proxy in front of a "production" legacy
//! stack, then replays the capture at fresh copies of the legacy and the new
//! stack (as a team replays production traffic at staging) with the same
//! composition as `tandem replay`, diffing with `scenarios/demo.rules.toml`;
//! the replayed stacks call their webhooks at tandem's sinks, and their side
//! effects are compared too.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::replay::{self, ReplayJob};
use super::{finish, Outcome};
use crate::demo::{self, start_calling, DemoOptions, Flavor};
use crate::effects::{Collection, WebhookSink};
use crate::record::RecordSummary;
use crate::replay::ReplayPlan;
use crate::target::Target;

#[derive(Debug, Args)]
pub(super) struct DemoArgs {
    /// Requests in the generated workload.
    #[arg(long, default_value_t = DemoOptions::default().requests)]
    requests: usize,
    /// Simulated users (sessions), each logging in first.
    #[arg(long, default_value_t = DemoOptions::default().users)]
    users: usize,
    /// Recording rate, requests per second.
    #[arg(long, default_value_t = DemoOptions::default().rate)]
    rate: f64,
    /// Replay speed, multiple of the recorded rate.
    #[arg(long, default_value_t = DemoOptions::default().speed)]
    speed: f64,
    /// Capture file to write.
    #[arg(long, default_value_os_t = DemoOptions::default().capture)]
    capture: PathBuf,
    /// Run directory.
    #[arg(long, default_value_os_t = DemoOptions::default().out_dir)]
    out: PathBuf,
    /// Rules file (default: the shipped scenarios/demo.rules.toml).
    #[arg(long)]
    rules: Option<PathBuf>,
}

/// What the demo produced.
#[derive(Debug)]
pub struct DemoOutcome {
    /// The recording.
    pub recorded: RecordSummary,
    /// The replay and its report.
    pub replay: Outcome,
}

/// The replay job of the demo: the capture at `options.speed` against
/// `legacy` and `new`, judged with `rules`; every other setting as
/// `tandem replay` has it.
pub fn job(options: &DemoOptions, rules: PathBuf, legacy: Target, new: Target) -> ReplayJob {
    let mut plan = ReplayPlan::new(options.capture.clone(), legacy, new);
    plan.speed = options.speed;
    plan.progress = super::show_progress(false);
    ReplayJob {
        rules: Some(rules),
        // The demo's replay lasts a second or two: its charts need finer
        // intervals than the default.
        series_interval: std::time::Duration::from_millis(100),
        ..ReplayJob::new(plan, options.out_dir.clone())
    }
}

/// Runs the demo end to end.
pub async fn run(options: &DemoOptions) -> anyhow::Result<DemoOutcome> {
    let recorded = demo::record(options).await?;
    tracing::info!(
        "recorded {} exchanges to {}",
        recorded.exchanges,
        options.capture.display()
    );
    let rules = match &options.rules {
        Some(path) => path.clone(),
        None => {
            let path = options.out_dir.join("demo.rules.toml");
            std::fs::create_dir_all(&options.out_dir)?;
            crate::output::write(&path, demo::RULES)?;
            path
        }
    };
    // Each stack calls its webhooks at a sink of its own.
    let mut sinks = Vec::new();
    for stack in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        sinks.push(WebhookSink::start(
            stack,
            listener,
            Default::default(),
            1 << 20,
        )?);
    }
    let legacy = start_calling(Flavor::Legacy, &sinks[0].url()).await?;
    let new = start_calling(Flavor::New, &sinks[1].url()).await?;
    let mut job = job(options, rules, legacy.url().parse()?, new.url().parse()?);
    job.effects = Some(Collection {
        sources: sinks
            .into_iter()
            .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn crate::effects::EffectSource>)
            .collect(),
        webhook_sinks: Vec::new(),
        smtp_sinks: Vec::new(),
        databases: Vec::new(),
        schema_map: None,
        // On loopback the calls follow their answers within milliseconds.
        quiet: std::time::Duration::from_millis(500),
    });
    let replayed = replay::run(&job, std::future::pending()).await;
    legacy.stop().await;
    new.stop().await;
    Ok(DemoOutcome {
        recorded,
        replay: replayed?,
    })
}

/// `tandem demo`.
pub(super) async fn command(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let options = DemoOptions {
        requests: args.requests,
        users: args.users.max(1),
        rate: args.rate,
        speed: args.speed,
        capture: args.capture,
        out_dir: args.out,
        rules: args.rules,
        ..DemoOptions::default()
    };
    println!(
        "tandem demo: recording {} requests through the proxy, then replaying at {}x against legacy and new",
        options.requests, options.speed
    );
    let outcome = run(&options).await?;
    println!(
        "recorded {} exchanges into {}",
        outcome.recorded.exchanges,
        options.capture.display()
    );
    finish(&outcome.replay, None)
}
