//! When each request goes out.
//!
//! A schedule reads the capture and releases each job at its time: the
//! recorded offset divided by the speed, or slot after slot at a constant
//! rate, waiting for each with the [`Pacer`] it is given (a replay engine's
//! schedule is a task beside its sends). The schedule is open: it never
//! waits for answers.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::{CaptureError, CaptureReader, Outline, Request};

/// How offsets are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// The recorded timing, `speed` times faster.
    Recorded {
        /// Multiple of the recorded rate.
        speed: f64,
    },
    /// A constant rate, ignoring the recorded timing: the capture's
    /// exchanges (of the shard) take slot after slot in their recorded
    /// order, whichever engine sends them.
    Rate {
        /// Requests per second.
        per_second: f64,
    },
}

/// What the schedule covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// How offsets are chosen.
    pub pacing: Pacing,
    /// Passes over the capture; `None` with a duration: as many as fit.
    pub passes: Option<u32>,
    /// Stop scheduling past this much time.
    pub duration: Option<Duration>,
    /// Copies of every request, spread across the gap to the next one.
    pub amplify: u32,
    /// Only sessions whose hash is `index` modulo `count`: `(index, count)`.
    pub shard: Option<(u32, u32)>,
    /// Of the shard's sessions, only those of engine `index` of `count`:
    /// the shard's sessions whose hash divided by the shard count is
    /// `index` modulo `count`.
    pub engine: Option<(u32, u32)>,
}

impl Shape {
    /// Engine `engine` of `engines` sharing this shape: the sessions of its
    /// shard that hash to it, each exchange at the time the whole shape
    /// gives it. Together the engines send the shape: at a constant rate
    /// every exchange takes its slot whichever engine holds its session, so
    /// that the rate holds however unevenly the sessions split (one engine
    /// may hold none).
    pub fn for_engine(self, engine: u32, engines: u32) -> Shape {
        Shape {
            engine: Some((engine, engines)),
            ..self
        }
    }

    /// Where the session hashing to `hash` goes: `None` when it is not of
    /// this shape's shard (nor are its slots this schedule's to count),
    /// else whether it is of this shape's engine.
    fn owns(&self, hash: u64) -> Option<bool> {
        let (index, count) = self.shard.unwrap_or((0, 1));
        if hash % count as u64 != index as u64 {
            return None;
        }
        let (engine, engines) = self.engine.unwrap_or((0, 1));
        Some((hash / count as u64) % engines as u64 == engine as u64)
    }
}

/// What a replay sends of a recorded exchange.
#[derive(Debug)]
pub struct Recorded {
    /// Position in the capture.
    pub id: u64,
    /// When the request arrived, µs since the capture started.
    pub offset_us: u64,
    /// The session key.
    pub session: Arc<str>,
    /// The request as recorded.
    pub request: Arc<Request>,
    /// The recorded answer, unparsed, for the judge; `None` if none was recorded.
    pub response: Option<Arc<serde_json::value::RawValue>>,
}

impl Recorded {
    fn read(outline: &Outline) -> Result<Recorded, CaptureError> {
        Ok(Recorded {
            id: outline.id,
            offset_us: outline.offset_us,
            session: Arc::from(&*outline.session),
            request: Arc::new(outline.request()?),
            response: outline.response_text().map(Arc::from),
        })
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Job {
    /// The recorded request.
    pub exchange: Arc<Recorded>,
    /// Pass over the capture, from 0.
    pub pass: u32,
    /// Copy of the exchange in this pass, from 0 (`--amplify`).
    pub copy: u32,
    /// Session queue: the exchange's session, per copy (shared: a job is
    /// cloned for each stack it goes to).
    pub session: Arc<str>,
    /// When it is due.
    pub at: Instant,
}

/// What the schedule did.
#[derive(Debug, Default)]
pub struct Scheduled {
    /// Jobs released.
    pub jobs: u64,
    /// Capture lines that could not be read, each naming file and line:
    /// those of this reader's exchanges, and when it reports them, those
    /// every reader fails on.
    pub unreadable: Vec<CaptureError>,
    /// How busy each engine was (filled in by the engines).
    pub engines: Vec<super::engine::EngineLoad>,
}

/// Where the schedule's jobs go, and how it waits for their time.
pub trait Pacer {
    /// Waits until `at`; false to stop the schedule.
    fn wait_until(&mut self, at: Instant) -> impl Future<Output = bool> + Send;
    /// A job is due.
    fn emit(&mut self, job: Job);
}

/// Releases every job of `shape` to `pacer` at its time, from `start`, until
/// the schedule ends or the pacer says stop. Lines of the capture that cannot be
/// read are logged and kept: a request that does not parse by the schedule
/// that would send it, a line that does not parse at all by the schedule
/// that `reports_shared` (every schedule fails on it).
pub async fn run<P: Pacer + Send>(
    first: CaptureReader,
    capture: &Path,
    shape: Shape,
    start: Instant,
    reports_shared: bool,
    pacer: &mut P,
) -> anyhow::Result<Scheduled> {
    let mut clock = Clock {
        shape,
        start,
        base_us: 0.0,
        slot: 0,
        out: Scheduled::default(),
        ended: false,
        reports_shared,
    };
    let mut reader = Some(first);
    // Whether another pass may follow `done` passes.
    let more_after = |done: u32| match (shape.passes, shape.duration) {
        (Some(n), _) => done < n,
        (None, Some(_)) => true,
        (None, None) => false,
    };
    // A capture small enough is read once: later passes, if any, take its
    // lines as the first pass found them, rather than parsing every line
    // again.
    let keep =
        more_after(1) && std::fs::metadata(capture).is_ok_and(|m| m.len() <= KEEP_CAPTURE_BYTES);
    let mut kept: Option<Arc<[Line]>> = None;
    let mut pass = 0u32;
    while !clock.ended {
        let mut lines = match (reader.take(), &kept) {
            (Some(r), _) => Lines::Read {
                reader: Box::new(r),
                kept: keep.then(Vec::new),
            },
            (None, Some(kept)) => Lines::Kept {
                lines: kept.clone(),
                next: 0,
            },
            (None, None) => Lines::Read {
                reader: Box::new(CaptureReader::open(capture)?),
                kept: None,
            },
        };
        let span = clock.pass(&mut lines, pass, pacer).await;
        if let Lines::Read {
            kept: Some(read), ..
        } = lines
        {
            // Whole: a pass cut short by the end of the schedule has no
            // next pass.
            kept = Some(read.into());
        }
        pass += 1;
        // A schedule whose share of the capture is empty (fewer sessions
        // than engines or shards) sends nothing in any pass: it ends here
        // rather than reading the capture again and again, which never
        // reached --duration's end since nothing was scheduled.
        if !more_after(pass) || span.count == 0 || span.own == 0 {
            break;
        }
        // The next pass starts one mean gap after this one's last request.
        let mean_gap = if span.count > 1 {
            span.length_us / (span.count - 1) as f64
        } else {
            1_000.0
        };
        if let Pacing::Recorded { speed } = shape.pacing {
            clock.base_us += (span.length_us + mean_gap) / speed;
        }
    }
    Ok(clock.out)
}

/// Captures up to this size are read once for all passes (`--loop`,
/// `--duration`); larger ones again for each.
const KEEP_CAPTURE_BYTES: u64 = 64 << 20;

/// A readable line of the capture as a schedule sees it: where it falls on
/// the timeline, whose it is, and the exchange when it is this schedule's
/// own (`None` too when its request could not be read).
#[derive(Clone)]
struct Line {
    offset_us: u64,
    /// See [`Shape::owns`].
    owner: Option<bool>,
    recorded: Option<Arc<Recorded>>,
}

/// Where a pass takes its lines from: the capture file (keeping what it
/// reads, when asked), or the lines a first pass kept.
enum Lines {
    Read {
        /// Boxed: its buffers would be room in every pass's lines.
        reader: Box<CaptureReader>,
        kept: Option<Vec<Line>>,
    },
    Kept {
        lines: Arc<[Line]>,
        next: usize,
    },
}

/// What a pass has read so far: first and last recorded offset, and how
/// many exchanges.
#[derive(Default)]
struct Seen {
    first_us: Option<u64>,
    last_us: u64,
    count: u64,
    /// Of them, this schedule's own.
    own: u64,
}

/// First to last recorded offset of a pass, and how many exchanges (all,
/// and this schedule's own).
struct Span {
    length_us: f64,
    count: u64,
    own: u64,
}

struct Clock {
    shape: Shape,
    start: Instant,
    /// Where the current pass starts, µs after `start`.
    base_us: f64,
    /// Next slot, in rate mode.
    slot: u64,
    out: Scheduled,
    ended: bool,
    reports_shared: bool,
}

impl Clock {
    async fn pass<P: Pacer + Send>(&mut self, lines: &mut Lines, pass: u32, pacer: &mut P) -> Span {
        let mut seen = Seen::default();
        let mut waiting: Option<(Arc<Recorded>, u64)> = None;
        while let Some((exchange, slot)) = self.next_own(lines, &mut seen, pass) {
            let first = seen.first_us.unwrap_or(0);
            if let Some((previous, at_slot)) = waiting.replace((exchange.clone(), slot)) {
                let gap = exchange.offset_us.saturating_sub(previous.offset_us);
                self.release(&previous, at_slot, first, gap, pass, pacer)
                    .await;
            }
            if self.ended {
                return Span {
                    length_us: 0.0,
                    count: 0,
                    own: 0,
                };
            }
        }
        if let Some((last, slot)) = waiting {
            self.release(&last, slot, seen.first_us.unwrap_or(0), 0, pass, pacer)
                .await;
        }
        let length_us = seen.last_us.saturating_sub(seen.first_us.unwrap_or(0)) as f64;
        Span {
            length_us,
            count: seen.count,
            own: seen.own,
        }
    }

    /// The next exchange this schedule sends, `None` at the end of the
    /// capture. Every exchange read on the way shapes the timeline (first
    /// offset, span, mean gap), so that all shards and engines keep the same
    /// one; another's session is just not sent from here, nor its request
    /// parsed.
    fn next_own(
        &mut self,
        lines: &mut Lines,
        seen: &mut Seen,
        pass: u32,
    ) -> Option<(Arc<Recorded>, u64)> {
        while let Some(line) = self.next_line(lines, pass) {
            seen.first_us.get_or_insert(line.offset_us);
            seen.last_us = seen.last_us.max(line.offset_us);
            seen.count += 1;
            let Some(own) = line.owner else {
                continue;
            };
            // The shard's exchanges take their slots in the recorded order,
            // another engine's too.
            let slot = self.slot;
            self.slot += self.shape.amplify.max(1) as u64;
            if !own {
                if self.past_the_end(self.slot - 1) {
                    return None;
                }
                continue;
            }
            // Without it, the request could not be read (and was reported).
            if let Some(recorded) = line.recorded {
                seen.own += 1;
                return Some((recorded, slot));
            }
        }
        None
    }

    /// The next readable line of the pass, `None` at its end; a line read
    /// from the file is kept for the next passes when they are to reuse it.
    /// Only this schedule's own requests are parsed; lines that cannot be
    /// read are reported on the first pass and skipped.
    fn next_line(&mut self, lines: &mut Lines, pass: u32) -> Option<Line> {
        let (reader, kept) = match lines {
            Lines::Kept { lines, next } => {
                *next += 1;
                return lines.get(*next - 1).cloned();
            }
            Lines::Read { reader, kept } => (reader, kept),
        };
        loop {
            let outline = match reader.next_outline()? {
                Ok(outline) => outline,
                Err(e) => {
                    self.unreadable(e, pass, self.reports_shared);
                    continue;
                }
            };
            let owner = self
                .shape
                .owns(crate::capture::session_hash(&outline.session));
            let recorded = match owner {
                Some(true) => match Recorded::read(&outline) {
                    Ok(recorded) => Some(Arc::new(recorded)),
                    Err(e) => {
                        self.unreadable(e, pass, true);
                        None
                    }
                },
                _ => None,
            };
            let line = Line {
                offset_us: outline.offset_us,
                owner,
                recorded,
            };
            if let Some(kept) = kept {
                kept.push(line.clone());
            }
            return Some(line);
        }
    }

    /// Whether slot `slot` falls past `--duration`, at a constant rate
    /// (which ends the schedule).
    fn past_the_end(&mut self, slot: u64) -> bool {
        if let Pacing::Rate { per_second } = self.shape.pacing {
            if self.beyond(slot_us(slot, per_second)) {
                self.ended = true;
            }
        }
        self.ended
    }

    /// Whether a send due `due_us` after the start falls past `--duration`.
    fn beyond(&self, due_us: f64) -> bool {
        self.shape
            .duration
            .is_some_and(|d| due_us > d.as_micros() as f64)
    }

    /// Logs and keeps a line that cannot be read, once (on the first pass),
    /// if `mine` to report.
    fn unreadable(&mut self, error: CaptureError, pass: u32, mine: bool) {
        if pass == 0 && mine {
            tracing::error!("{error}");
            self.out.unreadable.push(error);
        }
    }

    /// Releases the copies of one exchange, spread over `gap` µs (recorded),
    /// or in slots from `slot` on (at a constant rate).
    async fn release<P: Pacer + Send>(
        &mut self,
        exchange: &Arc<Recorded>,
        slot: u64,
        first_us: u64,
        gap: u64,
        pass: u32,
        pacer: &mut P,
    ) {
        let copies = self.shape.amplify.max(1);
        for copy in 0..copies {
            let due_us = match self.shape.pacing {
                Pacing::Recorded { speed } => {
                    let recorded = exchange.offset_us.saturating_sub(first_us) as f64
                        + gap as f64 * copy as f64 / copies as f64;
                    self.base_us + recorded / speed
                }
                Pacing::Rate { per_second } => slot_us(slot + copy as u64, per_second),
            };
            if self.beyond(due_us) {
                self.ended = true;
                return;
            }
            let at = self.start + Duration::from_nanos((due_us * 1_000.0) as u64);
            if !pacer.wait_until(at).await {
                self.ended = true;
                return;
            }
            let session = if copy == 0 {
                exchange.session.clone()
            } else {
                Arc::from(format!("{}#{copy}", exchange.session))
            };
            self.out.jobs += 1;
            pacer.emit(Job {
                exchange: exchange.clone(),
                pass,
                copy,
                session,
                at,
            });
        }
    }
}

/// When slot `slot` is due at `per_second`, µs after the start.
fn slot_us(slot: u64, per_second: f64) -> f64 {
    slot as f64 * 1e6 / per_second
}

/// Asks Linux to end this thread's timed waits on time to the microsecond
/// (timer slack 1 ns instead of 50 µs): the engines' fallback sleeps and
/// their runtime's poll timeouts. Harmless where unsupported.
pub fn precise_sleeps() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only changes
    // the calling thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}
