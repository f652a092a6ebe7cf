//! Shadow mode (`tandem shadow`): live traffic is served by legacy exactly
//! as `tandem record` serves it (and recorded), and each answered exchange
//! is mirrored to the new stack (and to legacy-2, for noise learning)
//! through a bounded queue, then judged online by the same judge, rules
//! and noise learning as a replay. The client never waits for the mirror:
//! when the queue is full the copy is dropped and counted.
//!
//! Safe by default: only GET, HEAD and OPTIONS are mirrored unless
//! `mirror_writes`, and every mirrored request carries a header
//! (`X-Tandem-Shadow: 1`) so that the new stack can skip external side
//! effects. Sampling is by whole session, so that mirrored flows stay
//! causal.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::mpsc;

use crate::capture::{Exchange, Response};
use crate::http::{self, Client};
use crate::judge::{Judge, JudgeOptions, Verdict};
use crate::record::{record_proxy, ProxyConfig, RecordSummary, Sink};
use crate::report::Report;
use crate::results::{self, Attempt, ErrorKind, ExchangeResult, ResultSink, TargetError};
use crate::target::Target;

/// What shadowing needs beyond the recording proxy's configuration.
pub struct ShadowConfig {
    /// The proxy in front of legacy (its `upstream`); `on_answered` is set here.
    pub proxy: ProxyConfig,
    /// Where the recording of what was served goes.
    pub sink: Sink,
    /// The new stack, mirrored to.
    pub new: Target,
    /// A second legacy instance, mirrored to for noise learning.
    pub legacy2: Option<Target>,
    /// The judge's rules, noise thresholds and run description.
    pub judge: JudgeOptions,
    /// Mirror POST, PUT, PATCH, DELETE and the rest too (a new stack on its
    /// own database).
    pub mirror_writes: bool,
    /// The header set on every mirrored request, name and value.
    pub header: (String, String),
    /// Share of sessions mirrored, 0 to 100, chosen by session key.
    pub sample_percent: f64,
    /// Mirror copies waiting, at most.
    pub queue: usize,
    /// Mirrored requests in flight, at most.
    pub max_in_flight: usize,
    /// Longest wait for the new stack's answer.
    pub timeout: Duration,
    /// At stop, longest wait for the mirror queue to empty.
    pub drain: Duration,
    /// The run directory: results of mismatches (and a sample of matches),
    /// report.json, summary.md, report.html.
    pub out_dir: PathBuf,
    /// Pause mirroring while the new stack fails too often.
    pub kill_switch: Option<KillSwitch>,
    /// Write the report of what was judged so far this often.
    pub report_every: Option<Duration>,
    /// Whether and by which links the new stack's (and legacy-2's) own ids
    /// and tokens are followed.
    pub follow: Following,
    /// The gates every report (periodic and final) is held to; windowed
    /// ones read the session's series so far.
    pub gates: Vec<crate::gate::Gate>,
    /// Past this size the results file is set aside (`results.1.jsonl`,
    /// the older ones shifted, [`RESULTS_KEPT`] kept) and a new one begun.
    pub results_max_bytes: u64,
}

/// How the mirror follows each stack's own ids and tokens: what a stack
/// answered at a link's producer place stands for what legacy answered
/// there, and later requests carrying legacy's value go to that stack with
/// its own. Each session is then mirrored in order.
pub enum Following {
    /// Requests go to the mirror targets as served.
    Off,
    /// By these links (learned from an earlier capture, with the rules'
    /// `[[correlate]]`).
    Links(Arc<crate::correlate::Correlation>),
    /// By links learned from the first exchanges served: the warm-up, which
    /// is not mirrored, nor are later exchanges of its sessions (they would
    /// carry values the mirror targets never issued).
    Learn(Warmup),
}

/// How long shadowing learns links before it mirrors.
pub struct Warmup {
    /// Exchanges served, at most.
    pub exchanges: usize,
    /// Time, at most: a quiet service still starts mirroring.
    pub longest: Duration,
    /// The rules' `[[correlate]]` and `[[time_shift]]`, added to what is
    /// learned.
    pub written: crate::correlate::Written,
}

/// Results files set aside by size, at most (besides the current one).
pub const RESULTS_KEPT: u32 = 4;

/// Mirroring pauses (counted, logged) while the new stack's error rate
/// over a window is above `max_error_rate`; meanwhile one copy in
/// [`PROBE`] still goes, and a window of those under the bound resumes it.
#[derive(Debug, Clone, Copy)]
pub struct KillSwitch {
    /// Errors per mirrored request, 0 to 1.
    pub max_error_rate: f64,
    /// Judged over windows this long (by answer time).
    pub window: Duration,
}

/// While paused, one copy in this many is still mirrored, as a probe.
pub const PROBE: u64 = 5;

/// Answers a window needs before it can trip or reset the switch.
const WINDOW_MIN: u64 = 3;

/// What a shadowing session did.
#[derive(Debug)]
pub struct ShadowSummary {
    /// What was served and recorded.
    pub recorded: RecordSummary,
    /// Exchanges mirrored and judged.
    pub mirrored: u64,
    /// Copies dropped because the queue was full (or still queued at stop).
    pub dropped: u64,
    /// Not mirrored: writes (without `mirror_writes`).
    pub writes_skipped: u64,
    /// Not mirrored: the request's body was not kept whole (over
    /// `--max-body`, or cut off by its client), so a copy would differ.
    pub uncopyable: u64,
    /// Not mirrored: sessions outside the sample.
    pub unsampled: u64,
    /// Not mirrored: the kill switch was open.
    pub killed: u64,
    /// Not mirrored: served in the warm-up, or of a session that began in it.
    pub warmup: u64,
    /// Times the kill switch opened, and closed again.
    pub trips: (u64, u64),
    /// The report, also written to the run directory.
    pub report: Report,
}

#[derive(Default)]
struct Counts {
    queued: AtomicU64,
    dropped: AtomicU64,
    writes_skipped: AtomicU64,
    uncopyable: AtomicU64,
    unsampled: AtomicU64,
    killed: AtomicU64,
    warmup: AtomicU64,
    /// The kill switch is open: only probes go.
    paused: std::sync::atomic::AtomicBool,
    probes: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
}

/// One matched exchange in this many is kept in the results file beside
/// every mismatch, so that a report can be re-diffed with other rules.
const MATCH_SAMPLE: u64 = 100;

/// Serves, records and mirrors until `shutdown` completes; then drains the
/// mirror queue (within `drain`), and writes the report.
pub async fn shadow(
    config: ShadowConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ShadowSummary> {
    let ShadowConfig {
        mut proxy,
        sink,
        new,
        legacy2,
        judge,
        mirror_writes,
        header,
        sample_percent,
        queue,
        max_in_flight,
        timeout,
        drain,
        out_dir,
        kill_switch,
        report_every,
        results_max_bytes,
        follow,
        gates,
    } = config;
    let gates = Arc::new(gates);
    let counts = Arc::new(Counts::default());
    let (copies, mut incoming) = mpsc::channel::<Exchange>(queue.max(1));
    let links = Arc::new(std::sync::OnceLock::new());
    let (warm, warmup) = match follow {
        Following::Off => (None, None),
        Following::Links(correlation) => {
            let _ = links.set(correlation);
            (None, None)
        }
        Following::Learn(warmup) => (Some(Arc::new(Warm::new(warmup.exchanges))), Some(warmup)),
    };
    let following = !matches!((&warm, links.get()), (None, None));
    proxy.on_answered = Some(Arc::new({
        let (counts, warm) = (counts.clone(), warm.clone());
        move |exchange: &Exchange| {
            if warm.as_ref().is_some_and(|w| w.holds(exchange)) {
                counts.warmup.fetch_add(1, Ordering::Relaxed);
                return;
            }
            offer(exchange, &copies, &counts, mirror_writes, sample_percent)
        }
    }));
    let learning = match (warm, warmup) {
        (Some(warm), Some(warmup)) => Some(tokio::spawn(warm.learn(
            warmup,
            links.clone(),
            judge.run.started_at_unix_us,
        ))),
        _ => None,
    };

    let results_header = results::ResultsHeader {
        format: results::FORMAT.to_string(),
        version: results::VERSION,
        capture: judge.run.capture.clone(),
        legacy: judge.run.legacy.clone(),
        new: judge.run.new.clone(),
        speed: 1.0,
        legacy2: judge.legacy2.clone(),
        started_at_unix_us: judge.run.started_at_unix_us,
        shard: None,
    };
    let writer =
        results::ResultsWriter::create(&out_dir.join(results::FILE_NAME), &results_header)?;
    // Followed ids and tokens are equal for the differ when they stand for
    // the same value of legacy's: legacy's served answer plays the
    // recorded one.
    let mut judged = Judged {
        judge: Judge::new(judge)?,
        writer,
        matched: 0,
        mirrored: 0,
        kill_switch,
        window: Window::default(),
        counts: counts.clone(),
        links: following.then(|| links.clone()),
        rotation: Rotation {
            dir: out_dir.clone(),
            header: results_header,
            max_bytes: results_max_bytes.max(1),
        },
    };
    let (results_tx, mut results_rx) = mpsc::channel::<ExchangeResult>(1024);
    let mirror = Mirror {
        max_body: proxy.max_body,
        client: http::client(timeout),
        new,
        legacy2,
        header,
        timeout,
        started: Instant::now(),
        follow: following.then(|| Follow::new(links.clone())),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let deadline = Arc::new(std::sync::Mutex::new(None::<tokio::time::Instant>));
    let mirroring = tokio::spawn({
        let (mirror, slots, deadline, counts) = (
            Arc::new(mirror),
            slots.clone(),
            deadline.clone(),
            counts.clone(),
        );
        async move {
            let mut sessions = Sessions::default();
            while let Some(exchange) = incoming.recv().await {
                let past = deadline
                    .lock()
                    .expect("deadline lock")
                    .is_some_and(|d| tokio::time::Instant::now() >= d);
                if past {
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if mirror.follow.is_some() {
                    // In order within each session: a request goes once
                    // the answers it may carry values of are in.
                    sessions.send(exchange, &mirror, &slots, &results_tx);
                    continue;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (mirror, results) = (mirror.clone(), results_tx.clone());
                tokio::spawn(async move {
                    let result = mirror.send(exchange).await;
                    let _ = results.send(result).await;
                    drop(slot);
                });
            }
        }
    });
    let judging = tokio::spawn({
        let (out_dir, gates) = (out_dir.clone(), gates.clone());
        async move {
            let mut tick = report_every
                .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
            loop {
                let due = async {
                    match tick.as_mut() {
                        Some(tick) => drop(tick.tick().await),
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    result = results_rx.recv() => match result {
                        Some(result) => judged.accept(&result)?,
                        None => break,
                    },
                    () = due => {
                        // What was judged so far, for a long session watched
                        // from its run directory.
                        shadow_report(judged.judge.snapshot(), &gates).write_files(&out_dir)?;
                    }
                }
            }
            judged.writer.finish()?;
            anyhow::Ok(judged)
        }
    });

    let recorded = record_proxy(proxy, sink, shutdown).await?;
    if let Some(learning) = learning {
        // Stopped in the warm-up: nothing was mirrored.
        learning.abort();
    }
    // The proxy has drained and dropped the hook: the queue ends once empty,
    // within `drain`; what is still queued then is dropped and counted.
    *deadline.lock().expect("deadline lock") = Some(tokio::time::Instant::now() + drain);
    let _ = tokio::time::timeout(drain + timeout, mirroring).await;
    let judged = judging.await??;
    let report = shadow_report(judged.judge.finish(), &gates);
    report.write_files(&out_dir)?;
    Ok(ShadowSummary {
        recorded,
        mirrored: judged.mirrored,
        dropped: counts.dropped.load(Ordering::Relaxed),
        writes_skipped: counts.writes_skipped.load(Ordering::Relaxed),
        uncopyable: counts.uncopyable.load(Ordering::Relaxed),
        unsampled: counts.unsampled.load(Ordering::Relaxed),
        killed: counts.killed.load(Ordering::Relaxed),
        warmup: counts.warmup.load(Ordering::Relaxed),
        trips: (
            counts.opened.load(Ordering::Relaxed),
            counts.closed.load(Ordering::Relaxed),
        ),
        report,
    })
}

/// The judge's report as shadowing means it: no fidelity, since legacy's
/// served answer is the only one recorded (it would hold itself to
/// itself), and held to the gates.
fn shadow_report(mut report: Report, gates: &[crate::gate::Gate]) -> Report {
    report.fidelity = None;
    report.apply_gates(gates);
    report
}

/// Queues a copy of `exchange` for the mirror if it is to be mirrored and
/// there is room; never waits.
fn offer(
    exchange: &Exchange,
    copies: &mpsc::Sender<Exchange>,
    counts: &Counts,
    mirror_writes: bool,
    sample_percent: f64,
) {
    let method = exchange.request.method.as_str();
    if !mirror_writes && !matches!(method, "GET" | "HEAD" | "OPTIONS") {
        counts.writes_skipped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if exchange
        .incomplete
        .as_deref()
        .is_some_and(|what| what.starts_with("request body"))
    {
        counts.uncopyable.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let bucket = crate::capture::session_hash(&exchange.session) % 10_000;
    if (bucket as f64) >= sample_percent * 100.0 {
        counts.unsampled.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if counts.paused.load(Ordering::Relaxed)
        && counts.probes.fetch_add(1, Ordering::Relaxed) % PROBE != 0
    {
        counts.killed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match copies.try_send(exchange.clone()) {
        Ok(()) => counts.queued.fetch_add(1, Ordering::Relaxed),
        Err(_) => counts.dropped.fetch_add(1, Ordering::Relaxed),
    };
}

/// Judges mirrored exchanges and keeps the results worth re-diffing.
struct Judged {
    judge: Judge,
    writer: results::ResultsWriter,
    matched: u64,
    mirrored: u64,
    kill_switch: Option<KillSwitch>,
    window: Window,
    counts: Arc<Counts>,
    /// The links followed, once known: the judge settles by them.
    links: Option<Links>,
    rotation: Rotation,
}

/// Links followed, set once: at start, or at the warm-up's end.
type Links = Arc<std::sync::OnceLock<Arc<crate::correlate::Correlation>>>;

/// The results file set aside by size: a shadowing session runs for days.
struct Rotation {
    dir: PathBuf,
    header: results::ResultsHeader,
    max_bytes: u64,
}

impl Rotation {
    /// After a write: when the file has grown past the limit, it becomes
    /// `results.1.jsonl` (the older shifted, the oldest dropped) and a new
    /// one is begun.
    fn after_write(&mut self, writer: &mut results::ResultsWriter) -> anyhow::Result<()> {
        if writer.bytes() < self.max_bytes {
            return Ok(());
        }
        let current = self.dir.join(results::FILE_NAME);
        writer.finish()?;
        let aside = |n: u32| self.dir.join(format!("results.{n}.jsonl"));
        let _ = std::fs::remove_file(aside(RESULTS_KEPT));
        for n in (1..RESULTS_KEPT).rev() {
            let _ = std::fs::rename(aside(n), aside(n + 1));
        }
        std::fs::rename(&current, aside(1))?;
        *writer = results::ResultsWriter::create(&current, &self.header)?;
        Ok(())
    }
}

/// The kill switch's current window: answers and the new stack's errors.
#[derive(Default)]
struct Window {
    start: Option<Instant>,
    answers: u64,
    errors: u64,
}

impl Judged {
    /// Counts the new stack's answer into the window; at the window's end,
    /// opens or closes the kill switch.
    fn watch(&mut self, result: &ExchangeResult) {
        let Some(switch) = self.kill_switch else {
            return;
        };
        let now = Instant::now();
        let start = *self.window.start.get_or_insert(now);
        self.window.answers += 1;
        if result.new.error.is_some() {
            self.window.errors += 1;
        }
        if now.duration_since(start) < switch.window || self.window.answers < WINDOW_MIN {
            return;
        }
        let rate = self.window.errors as f64 / self.window.answers as f64;
        let paused = self.counts.paused.load(Ordering::Relaxed);
        if !paused && rate > switch.max_error_rate {
            self.counts.paused.store(true, Ordering::Relaxed);
            self.counts.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "kill switch: the new stack failed {:.0}% of {} mirrored requests; mirroring paused (1 in {PROBE} still goes, as a probe)",
                rate * 100.0,
                self.window.answers
            );
        } else if paused && rate <= switch.max_error_rate {
            self.counts.paused.store(false, Ordering::Relaxed);
            self.counts.closed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                "kill switch: the new stack failed {:.0}% of {} probes; mirroring resumed",
                rate * 100.0,
                self.window.answers
            );
        }
        self.window = Window::default();
    }

    fn accept(&mut self, result: &ExchangeResult) -> anyhow::Result<()> {
        if let Some(correlation) = self.links.as_ref().and_then(|l| l.get()).cloned() {
            self.judge.follow(correlation);
            self.links = None;
        }
        self.mirrored += 1;
        self.watch(result);
        let keep = match self.judge.add(result) {
            Verdict::Matched => {
                self.matched += 1;
                self.matched % MATCH_SAMPLE == 1
            }
            _ => true,
        };
        if keep {
            self.writer.accept(result)?;
            self.rotation.after_write(&mut self.writer)?;
        }
        Ok(())
    }
}

/// Sends mirror copies.
struct Mirror {
    /// Answer bytes kept at most, as the proxy records them.
    max_body: usize,
    client: Client,
    new: Target,
    legacy2: Option<Target>,
    header: (String, String),
    timeout: Duration,
    started: Instant,
    follow: Option<Follow>,
}

/// A session's mirror copies are sent one after another by a worker of its
/// own, which ends after [`SESSION_IDLE`] without one.
#[derive(Default)]
struct Sessions {
    workers: std::collections::HashMap<String, mpsc::UnboundedSender<Exchange>>,
}

const SESSION_IDLE: Duration = Duration::from_secs(10);

impl Sessions {
    fn send(
        &mut self,
        exchange: Exchange,
        mirror: &Arc<Mirror>,
        slots: &Arc<tokio::sync::Semaphore>,
        results: &mpsc::Sender<ExchangeResult>,
    ) {
        let exchange = match self.workers.get(&exchange.session) {
            Some(worker) => match worker.send(exchange) {
                Ok(()) => return,
                Err(mpsc::error::SendError(exchange)) => exchange,
            },
            None => exchange,
        };
        if self.workers.len() > 1_000 {
            self.workers.retain(|_, w| !w.is_closed());
        }
        let (worker, mut queue) = mpsc::unbounded_channel::<Exchange>();
        let session = exchange.session.clone();
        worker.send(exchange).expect("just opened");
        self.workers.insert(session, worker);
        let (mirror, slots, results) = (mirror.clone(), slots.clone(), results.clone());
        tokio::spawn(async move {
            let one = |exchange: Exchange| {
                let (mirror, slots, results) = (&mirror, &slots, &results);
                async move {
                    let Ok(_slot) = slots.acquire().await else {
                        return;
                    };
                    let _ = results.send(mirror.send(exchange).await).await;
                }
            };
            while let Ok(Some(exchange)) = tokio::time::timeout(SESSION_IDLE, queue.recv()).await {
                one(exchange).await;
            }
            // Idle: no more may come in; what slipped in meanwhile goes too.
            queue.close();
            while let Ok(exchange) = queue.try_recv() {
                one(exchange).await;
            }
        });
    }
}

/// The mirror targets' own ids and tokens, followed by value: what
/// legacy's answer gave at a link's producer place stands for what a mirror
/// target's gave there, and later requests carrying it are sent to that
/// target with its own.
struct Follow {
    links: Links,
    /// Per mirror target (new, legacy-2): legacy's value, as JSON text, to
    /// the target's.
    values: [std::sync::Mutex<std::collections::HashMap<String, serde_json::Value>>; 2],
}

/// The mirror targets, as [`Follow`] indexes them.
#[derive(Clone, Copy)]
enum Mirrored {
    New = 0,
    Legacy2 = 1,
}

/// Values followed per target, at most: past it the map starts afresh (a
/// shadowing session runs for days; old ids are rarely read again).
const FOLLOWED: usize = 1_000_000;

impl Follow {
    fn new(links: Links) -> Follow {
        Follow {
            links,
            values: Default::default(),
        }
    }

    /// Notes what `target` answered where legacy's answer gave a value
    /// later requests carry.
    fn learn(&self, target: Mirrored, route: &str, legacy: &Response, theirs: &Response) {
        use crate::correlate::places::{answer_value, key_of};
        let Some(correlation) = self.links.get() else {
            return;
        };
        let mut values = self.values[target as usize]
            .lock()
            .expect("followed values");
        for link in correlation.links.iter().filter(|l| l.producer == route) {
            let legacy = answer_value(&legacy.headers, &legacy.body, &link.from);
            let theirs = answer_value(&theirs.headers, &theirs.body, &link.from);
            if let (Some(key), Some(theirs)) = (legacy.as_ref().and_then(key_of), theirs) {
                if values.len() >= FOLLOWED {
                    values.clear();
                }
                values.insert(key, theirs);
            }
        }
    }

    /// `request` with the values legacy issued replaced by `target`'s, if
    /// any.
    fn rewrite(
        &self,
        target: Mirrored,
        route: &str,
        request: &crate::capture::Request,
    ) -> Option<crate::capture::Request> {
        use crate::correlate::places::{key_of, request_values, rewritten};
        let correlation = self.links.get()?;
        let places: Vec<_> = correlation
            .links
            .iter()
            .filter(|l| l.consumer == route)
            .map(|l| &l.to)
            .collect();
        if places.is_empty() {
            return None;
        }
        let values = self.values[target as usize]
            .lock()
            .expect("followed values");
        let swaps: Vec<_> = request_values(request)
            .into_iter()
            .filter(|(place, _)| places.contains(&place))
            .filter_map(|(place, value)| Some((place, values.get(&key_of(&value)?)?.clone())))
            .collect();
        (!swaps.is_empty()).then(|| rewritten(request, &swaps))
    }
}

/// The warm-up of [`Following::Learn`]: what is served is kept for
/// learning, and its sessions are noted, until enough is kept or time is
/// up; then links are learned and mirroring begins, for new sessions only.
struct Warm {
    phase: std::sync::atomic::AtomicU8,
    kept: std::sync::Mutex<WarmKept>,
    /// Sessions of the warm-up, fixed at its end.
    sessions: std::sync::OnceLock<std::collections::HashSet<String>>,
    limit: usize,
    full: tokio::sync::Notify,
}

#[derive(Default)]
struct WarmKept {
    exchanges: Vec<Exchange>,
    sessions: std::collections::HashSet<String>,
}

/// [`Warm`]'s phases: keeping exchanges, learning from them, following.
const KEEPING: u8 = 0;
const LEARNING: u8 = 1;
const FOLLOWING: u8 = 2;

impl Warm {
    fn new(limit: usize) -> Warm {
        Warm {
            phase: KEEPING.into(),
            kept: Default::default(),
            sessions: Default::default(),
            limit: limit.max(1),
            full: tokio::sync::Notify::new(),
        }
    }

    /// Whether `exchange` is held back from the mirror: it is served in
    /// the warm-up (and kept for learning) or belongs to a session that
    /// began in it.
    fn holds(&self, exchange: &Exchange) -> bool {
        let of_warmup = || {
            self.sessions
                .get()
                .is_some_and(|s| s.contains(&exchange.session))
        };
        if self.phase.load(Ordering::Acquire) == FOLLOWING {
            return of_warmup();
        }
        let mut kept = self.kept.lock().expect("warm-up");
        match self.phase.load(Ordering::Acquire) {
            FOLLOWING => {
                drop(kept);
                return of_warmup();
            }
            KEEPING if kept.exchanges.len() < self.limit => {
                kept.exchanges.push(exchange.clone());
                if kept.exchanges.len() == self.limit {
                    self.full.notify_one();
                }
            }
            _ => {}
        }
        if !kept.sessions.contains(&exchange.session) {
            kept.sessions.insert(exchange.session.clone());
        }
        true
    }

    /// Waits for the warm-up's end, learns links from what it kept (off the
    /// async threads: the proxy serves on), and starts following.
    async fn learn(self: Arc<Self>, warmup: Warmup, links: Links, started_at_unix_us: u64) {
        tokio::select! {
            () = self.full.notified() => {}
            () = tokio::time::sleep(warmup.longest) => {}
        }
        let exchanges = {
            let mut kept = self.kept.lock().expect("warm-up");
            self.phase.store(LEARNING, Ordering::Release);
            std::mem::take(&mut kept.exchanges)
        };
        let served = exchanges.len();
        let learned = tokio::task::spawn_blocking(move || {
            crate::correlate::learn_exchanges(exchanges, started_at_unix_us, &warmup.written)
        })
        .await;
        let correlation = match learned {
            Ok(Ok(correlation)) => correlation,
            Ok(Err(e)) => {
                tracing::error!("following: no links learned: {e:#}");
                crate::correlate::Correlation::default()
            }
            Err(e) => {
                tracing::error!("following: learning failed: {e}");
                crate::correlate::Correlation::default()
            }
        };
        tracing::info!(
            "following: {} links learned from the {served} exchanges of the warm-up; mirroring new sessions",
            correlation.links.len()
        );
        let _ = links.set(Arc::new(correlation));
        let mut kept = self.kept.lock().expect("warm-up");
        let _ = self.sessions.set(std::mem::take(&mut kept.sessions));
        self.phase.store(FOLLOWING, Ordering::Release);
    }
}

impl Mirror {
    /// Legacy's answer as served, beside the new stack's (and legacy-2's).
    async fn send(&self, exchange: Exchange) -> ExchangeResult {
        let served = exchange.response.clone().map(|r| Attempt {
            lag_us: 0,
            response: Some(r),
            error: None,
            unresolved: Vec::new(),
            retried: false,
        });
        // The route is only needed to follow ids: most sessions do not.
        let follow = self.follow.as_ref().map(|f| {
            let route = crate::route::Route::of(&exchange.request.method, &exchange.request.target);
            (f, route.to_string())
        });
        let rewritten = |target| {
            follow
                .as_ref()
                .and_then(|(f, route)| f.rewrite(target, route, &exchange.request))
        };
        let (for_new, for_legacy2) = (rewritten(Mirrored::New), rewritten(Mirrored::Legacy2));
        let to_new = for_new.as_ref().unwrap_or(&exchange.request);
        let to_legacy2 = for_legacy2.as_ref().unwrap_or(&exchange.request);
        let (new, legacy2) =
            tokio::join!(self.attempt(&self.new, to_new, exchange.offset_us), async {
                match &self.legacy2 {
                    Some(target) => {
                        Some(self.attempt(target, to_legacy2, exchange.offset_us).await)
                    }
                    None => None,
                }
            });
        if let (Some((follow, route)), Some(served)) = (&follow, &exchange.response) {
            let answers = [
                (Mirrored::New, new.response.as_ref()),
                (
                    Mirrored::Legacy2,
                    legacy2.as_ref().and_then(|a| a.response.as_ref()),
                ),
            ];
            for (target, answer) in answers {
                if let Some(theirs) = answer {
                    follow.learn(target, route, served, theirs);
                }
            }
        }
        ExchangeResult {
            id: exchange.id,
            pass: 0,
            copy: 0,
            session: exchange.session.clone(),
            scheduled_us: exchange.offset_us,
            request: Arc::new(exchange.request),
            legacy: served.unwrap_or_else(|| failed(ErrorKind::Other, "legacy gave no answer", 0)),
            new,
            legacy2,
            // With following on, legacy's served answer is the value the
            // others stand for (see `shadow`).
            recorded: self
                .follow
                .as_ref()
                .and(exchange.response.as_ref())
                .and_then(|r| serde_json::value::to_raw_value(r).ok())
                .map(Arc::from),
        }
    }

    async fn attempt(
        &self,
        target: &Target,
        request: &crate::capture::Request,
        offset_us: u64,
    ) -> Attempt {
        let sent = Instant::now();
        let lag_us = sent
            .duration_since(self.started)
            .as_micros()
            .saturating_sub(u128::from(offset_us)) as u64;
        let request = match self.request(target, request) {
            Ok(request) => request,
            Err(message) => return failed(ErrorKind::Other, &message, 0),
        };
        let answer = async {
            let response = self.client.request(request).await?;
            let (head, body) = response.into_parts();
            let body = http::read_bounded(body, self.max_body).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((head, body))
        };
        let after_us = || sent.elapsed().as_micros() as u64;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok((head, (body, truncated)))) => Attempt {
                lag_us,
                response: Some(Response {
                    status: head.status.as_u16(),
                    headers: http::to_headers(&head.headers),
                    body: crate::capture::Body(body),
                    latency_us: after_us(),
                    truncated,
                }),
                error: None,
                unresolved: Vec::new(),
                retried: false,
            },
            Ok(Err(e)) => failed(http::classify(&*e), &http::error_chain(&*e), after_us()),
            Err(_) => failed(
                ErrorKind::Timeout,
                &format!("no complete answer within {:?}", self.timeout),
                after_us(),
            ),
        }
    }

    fn request(
        &self,
        target: &Target,
        request: &crate::capture::Request,
    ) -> Result<hyper::Request<Full<Bytes>>, String> {
        let uri = target.uri_for(&request.target).map_err(|e| e.to_string())?;
        let mut builder = hyper::Request::builder()
            .method(request.method.as_str())
            .uri(uri);
        for crate::capture::Header(name, value) in &request.headers {
            let hop = http::HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str());
            if !hop
                && !name.eq_ignore_ascii_case("host")
                && !name.eq_ignore_ascii_case(&self.header.0)
            {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        let has_credentials = request
            .headers
            .iter()
            .any(|h| h.0.eq_ignore_ascii_case("authorization"));
        if let Some(credentials) = target.basic_auth().filter(|_| !has_credentials) {
            builder = builder.header(hyper::header::AUTHORIZATION, credentials);
        }
        builder
            .header(self.header.0.as_str(), self.header.1.as_str())
            .body(Full::new(request.body.bytes().clone()))
            .map_err(|e| e.to_string())
    }
}

fn failed(kind: ErrorKind, message: &str, after_us: u64) -> Attempt {
    Attempt {
        lag_us: 0,
        response: None,
        error: Some(TargetError {
            kind,
            message: message.to_string(),
            after_us,
        }),
        unresolved: Vec::new(),
        retried: false,
    }
}
