//! Replay engines: one thread per core, each with a single-threaded runtime,
//! its own connections and its share of the sessions.
//!
//! This is how wrk gets its rate: a thread that schedules, sends and reads
//! answers itself never hands work to another thread, so no request waits
//! for a wake-up or a context switch. Each engine runs the schedule for the
//! sessions that hash to it (a session stays whole on one engine, so its
//! order holds), each job at the time the whole schedule gives it (at a
//! constant rate, every exchange takes its slot whichever engine sends it),
//! and waits for each job's time with a precise timer while serving its
//! connections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};

use super::dispatch::Dispatcher;
use super::progress::Progress;
use super::schedule::{self, Job, Scheduled, Shape};
use super::send::{InFlight, Sender};
use super::timer::PreciseTimer;
use super::ReplayPlan;
use crate::capture::CaptureReader;
use crate::results::ExchangeResult;

/// What an engine shares with the others and the replay.
pub struct Setup {
    /// The whole replay's plan, its connection limit filled in.
    pub plan: ReplayPlan,
    /// Connections to open ahead to each target, all engines together.
    pub warm_connections: usize,
    /// The whole replay's schedule; the engine takes its share.
    pub shape: Shape,
    /// This engine, from 0, of `count`.
    pub index: u32,
    /// Engines in all.
    pub count: u32,
    /// Where results go.
    pub results: mpsc::Sender<ExchangeResult>,
    /// The live progress line's counters, when shown.
    pub progress: Option<Arc<Progress>>,
    /// Set to stop the schedule.
    pub stop: Arc<AtomicBool>,
    /// Requests in flight per target, shared by the engines.
    pub in_flight: InFlight,
    /// Each stack's ids and tokens, shared by the engines.
    pub bindings: Option<Arc<crate::correlate::Bindings>>,
}

/// A started engine: it says when its connections are open, then waits for
/// the start time, replays its share and drains.
pub struct Engine {
    /// Fires once the engine's connections are open.
    pub ready: oneshot::Receiver<()>,
    /// Gives the engine the time to start at.
    pub start: oneshot::Sender<Instant>,
    /// What the engine scheduled, once it is done.
    pub done: oneshot::Receiver<anyhow::Result<Scheduled>>,
}

/// Starts an engine on a thread of its own.
pub fn spawn(setup: Setup) -> anyhow::Result<Engine> {
    let (ready_tx, ready) = oneshot::channel();
    let (start, start_rx) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let stop = setup.stop.clone();
    std::thread::Builder::new()
        .name(format!("tandem-engine-{}", setup.index))
        .spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| run(setup, ready_tx, start_rx));
            let outcome = std::panic::catch_unwind(run)
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a replay engine panicked")));
            // A failed engine stops the others, which would go on sending.
            if outcome.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            let _ = done_tx.send(outcome);
        })
        .context("cannot start a replay engine thread")?;
    Ok(Engine { ready, start, done })
}

fn run(
    setup: Setup,
    ready: oneshot::Sender<()>,
    start: oneshot::Receiver<Instant>,
) -> anyhow::Result<Scheduled> {
    schedule::precise_sleeps();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a replay engine's runtime")?;
    let plan = engine_plan(&setup);
    let (sender, timer) = runtime.block_on(async {
        let sender = Sender::new(&plan, &setup.in_flight, setup.bindings.clone());
        sender
            .warm(setup.warm_connections.div_ceil(setup.count as usize))
            .await;
        (sender, PreciseTimer::new())
    });
    let timer = timer.context("cannot create a timer")?;
    let _ = ready.send(());
    let Ok(start) = runtime.block_on(start) else {
        return Ok(Scheduled::default());
    };
    // Until the start the engine only sleeps: its CPU time from here on is
    // the replay's.
    let at_start = thread_times();
    let machine_at_start = MachineTime::now();
    let reader = CaptureReader::open(&plan.capture)?;
    let (alive, mut gone) = mpsc::channel::<()>(1);
    let mut pacer = EnginePacer {
        dispatcher: Arc::new(Dispatcher::new(
            sender,
            setup.results.clone(),
            &plan,
            start,
            setup.stop.clone(),
            runtime.handle().clone(),
            alive,
        )),
        timer,
        stop: setup.stop.clone(),
        progress: setup.progress.clone(),
    };
    let shape = setup.shape.for_engine(setup.index, setup.count);
    let reports_shared = setup.index == 0;
    // Tokio wakes its reactor (an eventfd write, then an extra epoll_wait)
    // whenever a timer is set earlier than every pending one, which with
    // none pending is every request's timeout. A timer always pending at
    // most 100 ms ahead makes the timeouts, which are later, free to set.
    // The same tick tells live metrics and the progress line how busy the
    // engine is.
    let (metrics, progress) = (plan.metrics.clone(), setup.progress.clone());
    let index = setup.index;
    runtime.spawn(async move {
        let (mut told, mut machine_told, mut told_at) =
            (at_start, machine_at_start, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if metrics.is_none() && progress.is_none() {
                continue;
            }
            let (now, machine) = (thread_times(), MachineTime::now());
            let tick = EngineLoad {
                cpu: now.0.saturating_sub(told.0),
                waited: now.1.saturating_sub(told.1),
                span: told_at.elapsed(),
                ..EngineLoad::default()
            }
            .paused_by_host(machine.stolen_while_busy_since(machine_told));
            (told, machine_told, told_at) = (now, machine, Instant::now());
            if let Some(metrics) = &metrics {
                metrics.engine_time(index, &tick);
            }
            if let Some(progress) = &progress {
                progress.engine_busy(index, tick.cpu + tick.waited + tick.paused);
            }
        }
    });
    // The schedule runs as a task of the runtime, beside the sends: a job
    // it spawns and the timer that wakes it stay on the runtime's own queue,
    // with no wake-up through the reactor (an eventfd write each) as when
    // the schedule drove the runtime from outside. The pacer's dispatcher
    // ends with the task; every send holds one too, and `gone` ends when
    // the last is dropped.
    let capture = plan.capture.clone();
    let schedule = runtime.spawn(async move {
        schedule::run(reader, &capture, shape, start, reports_shared, &mut pacer).await
    });
    let mut scheduled = match runtime.block_on(schedule) {
        Ok(scheduled) => scheduled?,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => return Err(anyhow::anyhow!("a replay schedule was cancelled: {e}")),
    };
    // Over the span of the schedule, while jobs went out: the drain after
    // it is mostly waiting for answers, and would make the engine look
    // idler than it was while it sent.
    let at_end = thread_times();
    let machine = MachineTime::now();
    let load = EngineLoad {
        cpu: at_end.0.saturating_sub(at_start.0),
        waited: at_end.1.saturating_sub(at_start.1),
        paused: Duration::ZERO,
        span: start.elapsed(),
        stolen: machine.stolen_since(machine_at_start),
    };
    let load = load.paused_by_host(machine.stolen_while_busy_since(machine_at_start));
    scheduled.engines.push(load);
    // Each request has its own timeout, so the wait is bounded; after a
    // stop, queues no longer send what waits in them, and the drain limit
    // applies.
    if setup.stop.load(Ordering::Relaxed) {
        let limit = plan.drain + plan.timeout;
        // The timer is made inside the runtime, which it needs.
        runtime
            .block_on(async { tokio::time::timeout(limit, gone.recv()).await })
            .map_err(|_| anyhow::anyhow!("requests still in flight after {limit:?}"))?;
    } else {
        runtime.block_on(gone.recv());
    }
    Ok(scheduled)
}

/// How busy one engine was while its schedule ran: the time its thread ran
/// or was ready to run, over the wall time from the start to its last job.
/// Near the whole span, the engine, not the stacks, may be what held the
/// rate back.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineLoad {
    /// The engine thread's CPU time, user and kernel.
    pub cpu: Duration,
    /// Time it was ready to run but waited for a core that other threads
    /// (the stacks', on a shared machine) held.
    pub waited: Duration,
    /// Time the host paused it while it ran, estimated (see
    /// [`EngineLoad::paused_by_host`]): in neither `cpu` nor `waited`.
    pub paused: Duration,
    /// From the scheduled start to the schedule's end.
    pub span: Duration,
    /// Of the whole machine's CPU time over the span, the share its host
    /// took (steal time: a virtual machine's vCPUs paused while they had
    /// work); 0 where the kernel does not tell.
    pub stolen: f64,
}

impl EngineLoad {
    /// This load with the time the host paused the engine while it ran
    /// ([`paused_while_running`], from `stolen_while_busy`, the share of
    /// the machine's busy time its host took), at most what is left of the
    /// span when it neither ran nor waited: the machine's share stands for
    /// the engine's core's, and another core paused more must not make an
    /// engine more than wholly busy.
    pub fn paused_by_host(self, stolen_while_busy: f64) -> EngineLoad {
        let estimate = paused_while_running(self.cpu, stolen_while_busy);
        let left = self.span.saturating_sub(self.cpu + self.waited);
        EngineLoad {
            paused: estimate.min(left),
            ..self
        }
    }
}

/// The time a host paused a thread that ran `cpu`, where it paused its
/// machine's cores `stolen_while_busy` of the time they had work. The
/// kernel leaves steal time out of a thread's run time (and out of its wait
/// for a core while it runs), so an engine that never idled on a core its
/// host took a tenth of ran 90% of the span and waited for none of it. The
/// machine's share stands for the engine's core's; a share near 1 is capped
/// (a machine paused throughout measures nothing).
fn paused_while_running(cpu: Duration, stolen_while_busy: f64) -> Duration {
    let share = stolen_while_busy.clamp(0.0, 0.9);
    cpu.mul_f64(share / (1.0 - share))
}

/// The machine's CPU time so far, all of it and what its host stole (a
/// virtual machine's vCPUs paused while they had work), in ticks, from the
/// first line of `/proc/stat`; zeros where it is missing.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineTime {
    total: u64,
    idle: u64,
    stolen: u64,
}

impl MachineTime {
    /// Now.
    pub fn now() -> MachineTime {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let line = stat.lines().next().unwrap_or_default();
        // user nice system idle iowait irq softirq steal (guest time is
        // counted in user already).
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|t| t.parse().ok())
            .collect();
        let tick = |i: usize| ticks.get(i).copied().unwrap_or(0);
        MachineTime {
            total: ticks.iter().sum(),
            idle: tick(3) + tick(4),
            stolen: tick(7),
        }
    }

    /// Of the machine's CPU time from `earlier` to this, the share its
    /// host stole (0 when no time is counted).
    pub fn stolen_since(&self, earlier: MachineTime) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.stolen.saturating_sub(earlier.stolen) as f64 / total as f64
    }

    /// Of the time from `earlier` to this that the machine's cores had
    /// work (all but idle and I/O wait), the share its host stole: a host
    /// pauses a core only while it has work, so on a machine half idle
    /// this is twice [`MachineTime::stolen_since`].
    pub fn stolen_while_busy_since(&self, earlier: MachineTime) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        let busy = total.saturating_sub(self.idle.saturating_sub(earlier.idle));
        if busy == 0 {
            return 0.0;
        }
        self.stolen.saturating_sub(earlier.stolen) as f64 / busy as f64
    }
}

/// The calling thread's time on a core and time waiting for one, from
/// the scheduler's own account (`/proc/thread-self/schedstat`); where that
/// is missing, or kept off (zeros: a thread reading it has run), its CPU
/// clock, and no wait.
fn thread_times() -> (Duration, Duration) {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok();
    let mut fields = schedstat.iter().flat_map(|s| s.split_whitespace());
    let mut next = || fields.next().and_then(|f| f.parse::<u64>().ok());
    if let (Some(ran @ 1..), Some(waited)) = (next(), next()) {
        return (Duration::from_nanos(ran), Duration::from_nanos(waited));
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; the clock id is a
    // constant every Linux kernel since 2.6.12 knows.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    (
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32),
        Duration::ZERO,
    )
}

/// The plan as one engine carries it out: its share of the connections.
fn engine_plan(setup: &Setup) -> ReplayPlan {
    let mut plan = setup.plan.clone();
    let count = setup.count as usize;
    plan.client.max_connections = plan.client.max_connections.map(|m| m.div_ceil(count));
    plan
}

/// An engine's schedule: jobs go to its dispatcher, and it waits for their
/// time on a precise timer while the runtime serves the sends.
struct EnginePacer {
    dispatcher: Arc<Dispatcher>,
    timer: PreciseTimer,
    stop: Arc<AtomicBool>,
    progress: Option<Arc<Progress>>,
}

impl schedule::Pacer for EnginePacer {
    async fn wait_until(&mut self, at: Instant) -> bool {
        if Instant::now() >= at {
            // Due already (the engine is behind): still let the sends move.
            tokio::task::yield_now().await;
        }
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= at {
                return true;
            }
            // At least every 50 ms, to see the stop flag.
            let left = (at - now).min(Duration::from_millis(50));
            if self.timer.sleep(left).await.is_err() {
                tokio::time::sleep(left).await;
            }
        }
    }

    fn emit(&mut self, job: Job) {
        if let Some(progress) = &self.progress {
            progress.sent();
        }
        self.dispatcher.dispatch(job);
    }
}
