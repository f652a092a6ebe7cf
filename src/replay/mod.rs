//! The replay engine: sends every exchange of a capture to the legacy and the
//! new stack at the same scheduled time, concurrently, and hands both answers
//! to one collector, which passes each result to the [`ResultSink`] it was
//! given (the results file, the judge, both). Replay produces results and
//! nothing else: what becomes of them is composed above it.
//!
//! The schedule is open ([`schedule`]): a request goes out at its time
//! whether or not earlier ones have been answered, so a slow target cannot
//! slow the load, and latency is measured from the scheduled time as well as
//! from the actual send. Requests of one session keep their order on each
//! stack, and each stack keeps its own pace (`dispatch.rs`): a slow stack
//! cannot slow the load on the other either. With correlation, each stack's
//! requests carry the ids and tokens it issued itself. The work is split
//! among engines, one per core (`engine.rs`), each with its share of the
//! sessions.

mod dispatch;
mod engine;
pub mod progress;
pub mod schedule;
mod send;
mod timer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::capture::{CaptureError, CaptureReader};
use crate::results::{ExchangeResult, ResultSink};
use crate::target::Target;
pub use engine::{EngineLoad, MachineTime};
pub use schedule::{Pacing, Shape};

/// Connections opened ahead to each target, per engine, unless told.
pub const WARM_CONNECTIONS_PER_ENGINE: usize = 16;
/// Connections open at once to each target, per engine, unless told.
pub const MAX_CONNECTIONS_PER_ENGINE: usize = 32;

/// Why a replay could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The plan asks for something impossible (bad rate, shard, loop count).
    #[error("{0}")]
    Plan(String),
    /// The capture cannot be opened or its header is wrong.
    #[error(transparent)]
    Capture(anyhow::Error),
    /// An engine, the collector or the sink failed.
    #[error(transparent)]
    Run(anyhow::Error),
}

/// A checked replay: everything `tandem replay` was asked to do.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    /// The capture to replay.
    pub capture: PathBuf,
    /// The legacy stack.
    pub legacy: Target,
    /// The new stack.
    pub new: Target,
    /// A second legacy target (or the legacy one again) that gets every
    /// request too, for noise learning.
    pub legacy2: Option<Target>,
    /// Multiple of the recorded rate; offsets are divided by it.
    pub speed: f64,
    /// A constant rate in requests per second instead of the recorded timing.
    pub rate: Option<f64>,
    /// Passes over the capture (`--loop`), at least 1.
    pub passes: u32,
    /// Repeat the capture until this much time is scheduled (`--duration`).
    pub duration: Option<Duration>,
    /// Copies of every request, spread across the gap to the next one.
    pub amplify: u32,
    /// Requests in flight at most, per target.
    pub max_in_flight: Option<usize>,
    /// A request that cannot go out this long after its time is dropped.
    pub max_lag: Option<Duration>,
    /// Keep each session's requests in order, one at a time.
    pub ordered_sessions: bool,
    /// Replay only this shard's sessions: `(index, count)`; `--rate` is
    /// divided by the count.
    pub shard: Option<(u32, u32)>,
    /// Wall-clock time to start at, so that shards begin together.
    pub start_at: Option<std::time::SystemTime>,
    /// Send the recorded Host header instead of the target's.
    pub keep_host: bool,
    /// Headers set (replacing recorded ones) on requests to the legacy stack.
    pub legacy_headers: Vec<(String, String)>,
    /// Headers set (replacing recorded ones) on requests to the new stack.
    pub new_headers: Vec<(String, String)>,
    /// How connections are made: connect timeout, TLS, HTTP/2.
    pub client: crate::http::ClientOptions,
    /// Connections opened to each target before the start, all engines
    /// together; `None`: [`WARM_CONNECTIONS_PER_ENGINE`] per engine.
    pub warm_connections: Option<usize>,
    /// Connections open at once to each target, all engines together;
    /// `None`: [`MAX_CONNECTIONS_PER_ENGINE`] per engine; `Some(0)`: no limit.
    pub max_connections: Option<usize>,
    /// Replay engines (threads, each with its share of the sessions and
    /// connections); 0: see [`ReplayPlan::engine_count`].
    pub threads: usize,
    /// Show the live progress line on stderr (when it is a terminal).
    pub progress: bool,
    /// Longest wait for one complete answer, connecting included.
    pub timeout: Duration,
    /// Answer bytes kept at most; a longer body keeps its first bytes, its
    /// length and hash, and is compared by those (`--max-body`).
    pub max_body: usize,
    /// Longest wait for in-flight requests once the schedule is stopped.
    pub drain: Duration,
    /// Send non-idempotent requests (POST, PUT, PATCH, DELETE) even to the
    /// upstream the capture was recorded from (`--allow-recorded-host`).
    pub allow_recorded_host: bool,
    /// What the legacy stack (and legacy-2) trusts and presents over TLS,
    /// when not what `client` says for all.
    pub legacy_trust: Option<crate::http::Trust>,
    /// The same for the new stack.
    pub new_trust: Option<crate::http::Trust>,
    /// Answers waiting for their pair, at most, per engine: past it the
    /// stack that is behind has its late requests dropped.
    pub max_unpaired: usize,
    /// The ids and tokens to follow on each stack (learned from the capture
    /// by [`crate::correlate::learn`]); `None`: requests go as recorded.
    pub correlation: Option<Arc<crate::correlate::Correlation>>,
    /// Send to this stack only (0 legacy, 1 new): a capacity step measures
    /// one stack at a time. Results mark the other as not sent.
    pub solo: Option<usize>,
    /// Live metrics to keep (`--metrics-addr`): requests in flight and
    /// exchanges offered, here; the judge keeps the rest.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Send each request with a W3C `traceparent` naming its exchange and
    /// stack, so that the effects a stack passes it on with are tied to
    /// the exchange (set when effects are collected).
    pub trace_effects: bool,
}

impl ReplayPlan {
    /// A plan with the defaults of `tandem replay`, the one place they are
    /// set: recorded timing at 1x, one pass, sessions in order, no limits
    /// but the connection caps per engine, 10 s timeouts.
    pub fn new(capture: PathBuf, legacy: Target, new: Target) -> ReplayPlan {
        ReplayPlan {
            capture,
            legacy,
            new,
            legacy2: None,
            speed: 1.0,
            rate: None,
            passes: 1,
            duration: None,
            amplify: 1,
            max_in_flight: None,
            max_lag: None,
            ordered_sessions: true,
            shard: None,
            start_at: None,
            keep_host: false,
            legacy_headers: Vec::new(),
            new_headers: Vec::new(),
            solo: None,
            metrics: None,
            trace_effects: false,
            client: crate::http::ClientOptions::default(),
            warm_connections: None,
            max_connections: None,
            threads: 0,
            progress: false,
            timeout: Duration::from_secs(10),
            max_body: crate::http::MAX_BODY,
            drain: Duration::from_secs(10),
            allow_recorded_host: false,
            legacy_trust: None,
            new_trust: None,
            max_unpaired: 50_000,
            correlation: None,
        }
    }

    /// Connections opened ahead and open at most per target, all engines
    /// together, with the defaults per engine filled in.
    pub fn connections(&self) -> (usize, Option<usize>) {
        let engines = self.engine_count() as usize;
        let warm = self
            .warm_connections
            .unwrap_or(WARM_CONNECTIONS_PER_ENGINE * engines);
        let max = match self.max_connections {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(MAX_CONNECTIONS_PER_ENGINE * engines),
        };
        (warm, max)
    }

    /// Engines to run: `threads`; else one per core, or one per two cores
    /// when a stack runs on this machine. Engines busy at saturation take
    /// their share of the cores from a stack beside them: on two cores
    /// shared with nginx, in five runs of benches/replay.rs (2026-12-02),
    /// two engines sent medians of 0.47x-0.60x wrk's requests/s where one
    /// sent 0.61x-0.85x, nginx's one worker getting half a core.
    pub fn engine_count(&self) -> u32 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = match self.threads {
            0 if self.targets().any(Target::is_loopback) => cores / 2,
            0 => cores,
            n => n,
        };
        threads.clamp(1, 256) as u32
    }

    /// The stacks replayed at.
    fn targets(&self) -> impl Iterator<Item = &Target> {
        [Some(&self.legacy), Some(&self.new), self.legacy2.as_ref()]
            .into_iter()
            .flatten()
    }

    /// Checks the plan and the capture's header: what a replay checks
    /// before anything starts, for callers to check before they write
    /// anything either.
    pub fn check(&self) -> Result<Shape, ReplayError> {
        let reader =
            CaptureReader::open(&self.capture).map_err(|e| ReplayError::Capture(e.into()))?;
        let shape = self.shape()?;
        self.refuse_endless(&shape)?;
        if !self.allow_recorded_host {
            self.refuse_writes_to_the_recording(reader)?;
        }
        Ok(shape)
    }

    /// Refuses a schedule that would never finish, or flood: a send more
    /// than [`LONGEST_WAIT`] after the one before it (a corrupt offset, a
    /// tiny `--rate` or `--speed`), and `--duration` over a capture whose
    /// span, at the speed asked, is under a microsecond (each loop would
    /// start where the last began).
    fn refuse_endless(&self, shape: &Shape) -> Result<(), ReplayError> {
        let day = LONGEST_WAIT.as_secs_f64();
        let speed = match shape.pacing {
            Pacing::Rate { per_second, .. } if 1.0 / per_second > day => {
                return Err(ReplayError::Plan(format!(
                    "--rate {}: one request every {}; refusing a schedule with waits over {}",
                    self.rate.unwrap_or(per_second),
                    wait_text(1.0 / per_second),
                    humantime::format_duration(LONGEST_WAIT)
                )))
            }
            Pacing::Rate { .. } => return Ok(()),
            Pacing::Recorded { speed } => speed,
        };
        let mut reader =
            CaptureReader::open(&self.capture).map_err(|e| ReplayError::Capture(e.into()))?;
        let (mut first, mut last, mut count) = (None::<u64>, 0u64, 0u64);
        while let Some(outline) = reader.next_outline() {
            let Ok(outline) = outline else { continue };
            let gap = outline.offset_us.saturating_sub(last);
            if first.is_some() && gap as f64 / speed / 1e6 > day {
                return Err(ReplayError::Plan(format!(
                    "{}: line {}: offset {} µs comes {} after the one before; at --speed {} \
                     the replay would wait {}: refusing waits over {} (is the offset \
                     corrupt? --rate paces by rate instead)",
                    self.capture.display(),
                    outline.line(),
                    outline.offset_us,
                    humantime::format_duration(Duration::from_micros(gap)),
                    self.speed,
                    wait_text(gap as f64 / speed / 1e6),
                    humantime::format_duration(LONGEST_WAIT)
                )));
            }
            first.get_or_insert(outline.offset_us);
            last = last.max(outline.offset_us);
            count += 1;
        }
        let span_us = last.saturating_sub(first.unwrap_or(0)) as f64;
        let mean_gap = if count > 1 {
            span_us / (count - 1) as f64
        } else {
            1_000.0
        };
        let looped = self.duration.is_some() || self.passes > 1;
        if looped && (span_us + mean_gap) / speed / 1e6 > day {
            return Err(ReplayError::Plan(format!(
                "{}: at --speed {} one loop takes {}: refusing waits over {}",
                self.capture.display(),
                self.speed,
                wait_text((span_us + mean_gap) / speed / 1e6),
                humantime::format_duration(LONGEST_WAIT)
            )));
        }
        if self.duration.is_some() && count > 0 && (span_us + mean_gap) / speed < 1.0 {
            return Err(ReplayError::Plan(format!(
                "--duration over {}: its span at --speed {} is under a microsecond, so each \
                 loop would start where the last began and flood the targets; use --rate",
                self.capture.display(),
                self.speed
            )));
        }
        Ok(())
    }

    /// A replay of writes is never pointed at production by accident: when
    /// a target is the upstream the capture was recorded from (its source
    /// names it) and the capture holds a non-idempotent request, the plan
    /// is refused, naming both and `--allow-recorded-host`.
    fn refuse_writes_to_the_recording(&self, mut reader: CaptureReader) -> Result<(), ReplayError> {
        let Some(recorded) = reader
            .header()
            .source
            .strip_prefix("proxy upstream=")
            .and_then(|url| url.parse::<Target>().ok())
        else {
            return Ok(());
        };
        let targets = [Some(&self.legacy), Some(&self.new), self.legacy2.as_ref()];
        let Some(target) = targets
            .into_iter()
            .flatten()
            .find(|t| t.endpoint() == recorded.endpoint())
        else {
            return Ok(());
        };
        while let Some(outline) = reader.next_outline() {
            let Ok(request) = outline.and_then(|o| o.request()) else {
                continue;
            };
            if !matches!(
                request.method.as_str(),
                "GET" | "HEAD" | "OPTIONS" | "TRACE"
            ) {
                return Err(ReplayError::Plan(format!(
                    "{target} is the upstream {} was recorded from, and the capture holds \
                     writes ({} {} first): refusing to replay them there; pass \
                     --allow-recorded-host if that is really meant",
                    self.capture.display(),
                    request.method,
                    request.target
                )));
            }
        }
        Ok(())
    }

    fn shape(&self) -> Result<Shape, ReplayError> {
        macro_rules! ensure {
            ($cond:expr, $($why:tt)*) => {
                if !$cond {
                    return Err(ReplayError::Plan(format!($($why)*)));
                }
            };
        }
        if let Some((index, count)) = self.shard {
            ensure!(
                count >= 1 && index < count,
                "--shard {index}/{count}: the index must be below the count"
            );
        }
        let pacing = match self.rate {
            Some(r) => {
                ensure!(
                    r.is_finite() && r > 0.0,
                    "--rate must be a positive number, got {r}"
                );
                let shards = self.shard.map_or(1, |(_, count)| count);
                Pacing::Rate {
                    per_second: r / shards as f64,
                }
            }
            None => {
                ensure!(
                    self.speed.is_finite() && self.speed > 0.0,
                    "--speed must be a positive number, got {}",
                    self.speed
                );
                Pacing::Recorded { speed: self.speed }
            }
        };
        ensure!(self.passes >= 1, "--loop must be at least 1");
        ensure!(self.amplify >= 1, "--amplify must be at least 1");
        Ok(Shape {
            pacing,
            passes: if self.duration.is_some() && self.passes == 1 {
                None
            } else {
                Some(self.passes)
            },
            duration: self.duration,
            amplify: self.amplify,
            shard: self.shard,
            engine: None,
        })
    }
}

/// The longest wait between two sends a schedule may hold.
pub const LONGEST_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A wait in seconds, readable whatever its size (up to years).
fn wait_text(seconds: f64) -> String {
    if seconds < 1e15 {
        humantime::format_duration(Duration::from_secs(seconds as u64)).to_string()
    } else {
        format!("{seconds:.1e} s")
    }
}

/// What a replay did, and the sink it fed, handed back.
#[derive(Debug)]
pub struct Replayed<S> {
    /// The sink, after its `finish`.
    pub sink: S,
    /// Jobs scheduled (exchanges, counting loops and copies).
    pub scheduled: u64,
    /// Results with every request sent.
    pub sent: u64,
    /// Results the harness did not send to some target (`--max-in-flight`,
    /// `--max-lag`).
    pub dropped: u64,
    /// Lines of the capture that could not be read, in line order; each
    /// names the file and line.
    pub unreadable: Vec<CaptureError>,
    /// True when the schedule was stopped early by the shutdown signal.
    pub interrupted: bool,
    /// How busy each engine was, in engine order.
    pub engines: Vec<EngineLoad>,
    /// From the scheduled start to the last result.
    pub elapsed: Duration,
    /// The scheduled start on the wall clock, microseconds since the Unix
    /// epoch: results' `scheduled_us` count from it (effects are tied to
    /// exchanges by it).
    pub started_at_unix_us: u64,
}

/// Replays the plan's capture until the schedule ends or `shutdown`
/// completes, handing every result to `sink`; returns the sink after its
/// `finish`, with what was scheduled, sent and dropped.
pub async fn replay<S: ResultSink>(
    plan: &ReplayPlan,
    sink: S,
    shutdown: impl Future<Output = ()>,
) -> Result<Replayed<S>, ReplayError> {
    let shape = plan.check()?;
    let mut plan = plan.clone();
    let warm_connections;
    (warm_connections, plan.client.max_connections) = plan.connections();

    let count = plan.engine_count();
    // Room for about a second of results at 16,000 exchanges/s, for when
    // the collector is behind.
    let (result_tx, result_rx) = mpsc::channel(16_384);
    // Counted only when shown: the judge already keeps the histograms; the
    // line's own copies are for display alone.
    let progress = plan
        .progress
        .then(|| Arc::new(progress::Progress::new(count)));
    let _shown = progress.clone().map(progress::show);
    // Diffing and writing results is CPU work that can wait: a thread of its
    // own, which does not preempt the sends when it wakes, leaves the CPU to
    // them when they need it (the channel holds what piles up meanwhile).
    let collector = {
        let progress = progress.clone();
        let (done, collected) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("tandem-collect".into())
            .spawn(move || {
                yield_to_sends();
                let _ = done.send(collect(result_rx, sink, progress));
            })
            .map_err(|e| {
                ReplayError::Run(anyhow::anyhow!("cannot start the result collector: {e}"))
            })?;
        collected
    };
    let stop = Arc::new(AtomicBool::new(false));
    tracing::debug!("{count} replay engines");
    if let Some(metrics) = &plan.metrics {
        metrics.engines(count);
    }
    let in_flight = send::InFlight::new(&plan);
    let bindings = plan.correlation.clone().filter(|c| !c.is_empty()).map(|c| {
        let now_us = crate::capture::CaptureHeader::new("").started_at_unix_us;
        Arc::new(crate::correlate::Bindings::new(c, plan.shard, now_us))
    });
    let mut engines = Vec::new();
    for index in 0..count {
        engines.push(
            engine::spawn(engine::Setup {
                plan: plan.clone(),
                warm_connections,
                shape,
                index,
                count,
                results: result_tx.clone(),
                progress: progress.clone(),
                stop: stop.clone(),
                in_flight: in_flight.clone(),
                bindings: bindings.clone(),
            })
            .map_err(ReplayError::Run)?,
        );
    }
    // Only the engines send results: the collector ends when they are done.
    drop(result_tx);
    // Every engine has its connections open; scheduling starts a moment from
    // now, so the first jobs are not late, or at the agreed time when shards
    // start together.
    for engine in &mut engines {
        let _ = (&mut engine.ready).await;
    }
    let start = Instant::now() + start_delay(plan.start_at);
    let started_at_unix_us = (std::time::SystemTime::now() + start_delay(plan.start_at))
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut finished = Vec::new();
    for engine in engines {
        let _ = engine.start.send(start);
        finished.push(engine.done);
    }
    let all_done = async {
        let mut all = schedule::Scheduled::default();
        for done in finished {
            let scheduled = done
                .await
                .map_err(|_| anyhow::anyhow!("a replay engine panicked"))??;
            all.jobs += scheduled.jobs;
            all.unreadable.extend(scheduled.unreadable);
            all.engines.extend(scheduled.engines);
        }
        all.unreadable.sort_by_key(|e| e.line());
        anyhow::Ok(all)
    };
    tokio::pin!(shutdown);
    tokio::pin!(all_done);
    let (scheduled, interrupted) = tokio::select! {
        done = &mut all_done => (done, false),
        () = &mut shutdown => {
            stop.store(true, Ordering::Relaxed);
            tracing::warn!("stopped: waiting up to {:?} for requests in flight", plan.drain);
            (all_done.await, true)
        }
    };
    let scheduled = scheduled.map_err(ReplayError::Run)?;
    let collected = collector
        .await
        .map_err(|_| ReplayError::Run(anyhow::anyhow!("result collector panicked")))?;
    let collected = collected.map_err(ReplayError::Run)?;
    tracing::debug!("{} jobs scheduled", scheduled.jobs);
    Ok(Replayed {
        sink: collected.sink,
        scheduled: scheduled.jobs,
        sent: collected.sent,
        dropped: collected.dropped,
        unreadable: scheduled.unreadable,
        interrupted,
        engines: scheduled.engines,
        elapsed: start.elapsed(),
        started_at_unix_us,
    })
}

/// Marks the calling thread (the collector) as batch work: it keeps its
/// fair share of the CPU, but its wake-ups do not preempt the engines'.
///
/// It ran at nice 10 before, which starved it once the engines and the
/// targets kept the cores busy: with an engine per core at saturation on
/// two cores, results piled up in the channel (270-320 MB) and the engines
/// waited for room. Measured against nginx, seven runs each, alternating:
/// exchanges sent to both stacks 13,900-20,100/s (median 16,800) at nice
/// 10, 12,800-23,700/s (median 20,200) as batch work; p99 send lag at
/// 10,000 exchanges/s alike, within the machine's noise. Switching to
/// SCHED_BATCH needs no privilege;
/// elsewhere than Linux the thread stays as it is.
fn yield_to_sends() {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_setscheduler with pid 0 changes only the calling
    // thread's policy, reading the parameter passed by reference.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) != 0 {
            tracing::debug!(
                "the collector stays a normal thread: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Results the collector takes at once, and how long it lets them gather.
const COLLECT_BATCH: usize = 1024;
const COLLECT_PAUSE: Duration = Duration::from_millis(2);

/// What the collector hands back: the sink and its counts.
struct Collected<S> {
    sink: S,
    sent: u64,
    dropped: u64,
}

fn collect<S: ResultSink>(
    mut rx: mpsc::Receiver<ExchangeResult>,
    mut sink: S,
    progress: Option<Arc<progress::Progress>>,
) -> anyhow::Result<Collected<S>> {
    let mut batch = Vec::with_capacity(COLLECT_BATCH);
    let (mut sent, mut dropped) = (0, 0);
    loop {
        // Wake once per batch, not once per result: each wake-up costs the
        // senders a futex call and this thread a context switch.
        std::thread::sleep(COLLECT_PAUSE);
        if rx.blocking_recv_many(&mut batch, COLLECT_BATCH) == 0 {
            sink.finish()?;
            return Ok(Collected {
                sink,
                sent,
                dropped,
            });
        }
        for result in batch.drain(..) {
            sink.accept(&result)?;
            if result.dropped() {
                dropped += 1;
            } else {
                sent += 1;
            }
            if let Some(progress) = &progress {
                progress.collected(&result);
            }
        }
    }
}

/// How long from now to start: until `start_at` if it is ahead, else 20 ms.
fn start_delay(start_at: Option<std::time::SystemTime>) -> Duration {
    let soon = Duration::from_millis(20);
    match start_at.map(|t| t.duration_since(std::time::SystemTime::now())) {
        Some(Ok(ahead)) => ahead.max(soon),
        Some(Err(late)) => {
            tracing::warn!("--start-at is {:?} past; starting now", late.duration());
            soon
        }
        None => soon,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_leave_cores_to_stacks_on_this_machine() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let plan = |legacy: &str, new: &str, threads| ReplayPlan {
            threads,
            ..ReplayPlan::new(
                "captures/none.jsonl".into(),
                legacy.parse().unwrap(),
                new.parse().unwrap(),
            )
        };
        let (local, remote) = ("http://127.0.0.1:9000", "http://orders.staging:8080");
        assert_eq!(plan(remote, remote, 0).engine_count(), cores);
        assert_eq!(plan(local, local, 0).engine_count(), (cores / 2).max(1));
        // One stack beside the replay is enough to share the cores with.
        assert_eq!(plan(remote, local, 0).engine_count(), (cores / 2).max(1));
        // Asked for, the count is kept.
        assert_eq!(plan(local, local, 3).engine_count(), 3);
    }
}
