//! From a due job to sent requests: per-stack session queues, and the
//! pairing of each exchange's answers into one result.
//!
//! Each stack keeps its own pace. Requests of one session go out to a stack
//! in their recorded order and never overlap there, so create-then-read
//! sequences stay causal on every stack; but a stack waits only for its own
//! previous answer, never for another stack's. A slow new stack does not
//! hold back the load on legacy (or the other way round): each shows its
//! own send lag, corrected latency and drops. An exchange's result goes to
//! the collector once every stack has answered it; answers waiting for
//! their pair are bounded, and past the bound the stack that is behind has
//! its late requests dropped and counted, rather than memory growing.
//! Where a stack's connections are limited, its jobs past them wait in its
//! lane for a running send to take them on (see [`Lane`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::runtime::Handle;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::schedule::Job;
use super::send::{dropped, Sender};
use crate::results::{Attempt, ExchangeResult};

/// Answers waiting for their pair, at most, per engine: their bodies'
/// bytes (their count is the plan's `max_unpaired`).
const UNPAIRED_BYTES: usize = 256 << 20;

/// What a stack does with a job it reaches.
enum Admit {
    /// Drop it: the stack is far behind the others.
    Behind,
    /// Send it within this lag (`None`: no limit).
    Send(Option<std::time::Duration>),
}

/// One stack's busy sessions and the jobs waiting behind them, each with
/// its pair.
type Queues = Mutex<foldhash::HashMap<Arc<str>, VecDeque<(Job, Pair)>>>;

/// A job's answers so far, shared by the tasks of its stacks: each holds
/// it, rather than finding it in a map keyed by the job (an insert, two
/// lookups and a removal under one lock for every job).
type Pair = Arc<Mutex<Partial>>;

/// The answers of one job so far.
struct Partial {
    attempts: [Option<Attempt>; 3],
    /// Stacks that began to send it.
    started: [bool; 3],
    /// Stacks still to answer.
    left: usize,
    /// Stacks that never sent it because the replay stopped.
    stopped: usize,
    bytes: usize,
}

/// One stack's turns on its connections: sends running at most as many as
/// it has connections, and the jobs waiting for a turn. A send that ends
/// takes the next waiting job on, so that past what the stack answers
/// (saturation, a backlog) the jobs wait here, a few dozen bytes each,
/// rather than as tasks of a few kilobytes waiting for a connection, which
/// the engine would spawn, park and wake one by one.
struct Lane {
    limit: usize,
    turns: Mutex<Turns>,
}

#[derive(Default)]
struct Turns {
    running: usize,
    waiting: VecDeque<(Job, Pair)>,
}

/// Answers waiting for their pair, all jobs of an engine together.
#[derive(Default)]
struct Pairing {
    /// Jobs some stack has answered and another has not (jobs no stack has
    /// answered yet hold no answer).
    waiting: AtomicUsize,
    /// Their bodies' bytes.
    bytes: AtomicUsize,
}

/// Turns due jobs into sends on its engine's runtime; cheap to call from
/// the engine's schedule.
pub struct Dispatcher {
    sender: Sender,
    results: mpsc::Sender<ExchangeResult>,
    /// Per stack, busy sessions and the jobs waiting behind them; `None`
    /// when sessions are not kept in order.
    queues: Option<[Queues; 3]>,
    /// Per stack, where its connections are limited and known.
    lanes: [Option<Lane>; 3],
    pairing: Pairing,
    max_unpaired: usize,
    runtime: Handle,
    start: Instant,
    stop: Arc<AtomicBool>,
    /// Dropped with the dispatcher, once its last send is done: the engine
    /// waits for that.
    _alive: mpsc::Sender<()>,
}

impl Dispatcher {
    /// A dispatcher sending with `sender` on `runtime` and handing results
    /// to `results`, keeping sessions in order and answers waiting for
    /// their pair bounded as `plan` says; `alive` is dropped when the
    /// dispatcher is.
    pub fn new(
        sender: Sender,
        results: mpsc::Sender<ExchangeResult>,
        plan: &super::ReplayPlan,
        start: Instant,
        stop: Arc<AtomicBool>,
        runtime: Handle,
        alive: mpsc::Sender<()>,
    ) -> Dispatcher {
        let lanes = [0, 1, 2].map(|stack| {
            sender.turns(stack).map(|limit| Lane {
                limit: limit.max(1),
                turns: Mutex::default(),
            })
        });
        Dispatcher {
            sender,
            lanes,
            results,
            queues: plan.ordered_sessions.then(Default::default),
            pairing: Pairing::default(),
            max_unpaired: plan.max_unpaired,
            runtime,
            start,
            stop,
            _alive: alive,
        }
    }

    /// A job is due: on each stack, send it now, or queue it behind its
    /// session there.
    pub fn dispatch(self: &Arc<Self>, job: Job) {
        if let Some(metrics) = self.sender.metrics() {
            metrics.offered();
        }
        let stacks = self.sender.stacks_for(&job);
        let pair = Arc::new(Mutex::new(Partial {
            attempts: [None, None, None],
            started: [false; 3],
            left: stacks.clone().count(),
            stopped: 0,
            bytes: 0,
        }));
        // The stacks whose session is free take the job together, as when
        // they keep pace: their requests go out side by side (in
        // `stacks_for`'s order) and meet --max-lag alike. A stack whose
        // session is still busy takes it later, from its own queue.
        let (mut free, mut count) = ([0; 3], 0);
        for stack in stacks {
            if let Some(queues) = &self.queues {
                let mut queues = queues[stack].lock().expect("session queues lock");
                if let Some(queue) = queues.get_mut(&*job.session) {
                    queue.push_back((job.clone(), pair.clone()));
                    continue;
                }
                queues.insert(job.session.clone(), VecDeque::new());
            }
            free[count] = stack;
            count += 1;
        }
        // A task per stack, spawned in that order: the engine's runtime
        // polls them one after the other (its local queue is first in,
        // first out). One task joining the stacks held room for three
        // stacks' sends, 14 KB for every job.
        for &stack in &free[..count] {
            if self.take_turn(stack, &job, &pair) {
                // Boxed: tokio moves a task's future into its cell and its
                // output over it (2 KB copied three times a request); a box
                // is copied once and costs an allocation.
                let send = Box::pin(self.clone().run(stack, job.clone(), pair.clone()));
                self.runtime.spawn(send);
            }
        }
    }

    /// Whether a send to `stack` may start now; when as many run as it has
    /// connections, the job waits in its lane instead.
    fn take_turn(&self, stack: usize, job: &Job, pair: &Pair) -> bool {
        let Some(lane) = &self.lanes[stack] else {
            return true;
        };
        let mut turns = lane.turns.lock().expect("lane lock");
        if turns.running < lane.limit {
            turns.running += 1;
            return true;
        }
        turns.waiting.push_back((job.clone(), pair.clone()));
        false
    }

    /// The next job waiting for a turn on `stack`; with none, the send that
    /// asks ends its turn.
    fn next_waiting(&self, stack: usize) -> Option<(Job, Pair)> {
        let lane = self.lanes[stack].as_ref()?;
        let mut turns = lane.turns.lock().expect("lane lock");
        let next = turns.waiting.pop_front();
        if next.is_none() {
            turns.running -= 1;
        }
        next
    }

    /// The job queued behind `job` in its session on `stack`; with none,
    /// the session is free there.
    fn next_in_session(&self, stack: usize, job: &Job) -> Option<(Job, Pair)> {
        let mut queues = self.queues.as_ref()?[stack]
            .lock()
            .expect("session queues lock");
        let next = queues.get_mut(&*job.session).and_then(VecDeque::pop_front);
        if next.is_none() {
            queues.remove(&*job.session);
        }
        next
    }

    /// Sends `job` to `stack`, then whatever queued behind it in its
    /// session on that stack, then what waits for a turn there.
    async fn run(self: Arc<Self>, stack: usize, mut job: Job, mut pair: Pair) {
        loop {
            // When the collector is behind, every stack waits for it alike
            // before its next send, as one send for all stacks used to:
            // otherwise only the stack that completes each pair would wait
            // (it hands the result over), fall behind the other, and have
            // its requests dropped for lag while the other's go out.
            if self.results.capacity() == 0 {
                drop(self.results.reserve().await);
            }
            let attempt = match self.admit(stack, &pair) {
                Admit::Behind => {
                    self.sender.not_sent(stack, &job);
                    dropped(
                        job.at,
                        "this stack is far behind the others: answers waiting for their pair reached the bound",
                    )
                }
                Admit::Send(max_lag) => self.sender.attempt_on(stack, &job, max_lag).await,
            };
            self.answered(stack, &job, &pair, Some(attempt)).await;
            let next = self
                .next_in_session(stack, &job)
                .or_else(|| self.next_waiting(stack));
            let Some(next) = next else {
                return;
            };
            if self.stop.load(Ordering::Relaxed) {
                // Once stopped, what waits in a queue or a lane is not sent.
                self.abandon(stack, next).await;
                while let Some(waiting) = self.next_waiting(stack) {
                    self.abandon(stack, waiting).await;
                }
                return;
            }
            (job, pair) = next;
        }
    }

    /// After a stop: the queued jobs of this session on `stack` are not sent.
    async fn abandon(&self, stack: usize, first: (Job, Pair)) {
        let session = first.0.session.clone();
        let mut rest = vec![first];
        if let Some(queues) = &self.queues {
            let mut queues = queues[stack].lock().expect("session queues lock");
            if let Some(queue) = queues.remove(&*session) {
                rest.extend(queue);
            }
        }
        for (job, pair) in rest {
            self.answered(stack, &job, &pair, None).await;
        }
    }

    /// Whether `stack` sends `job`, and within what lag, in one look at the
    /// pairing (which marks the job started on `stack`):
    /// - when answers waiting for their pair have reached the bound and this
    ///   stack is the one `job`'s wait for, it is behind: the job is dropped;
    /// - else `--max-lag`, eased towards what the other stacks did when they
    ///   keep pace with this one. Past saturation each stack would otherwise
    ///   drop for lag on its own, and many exchanges would go to one stack
    ///   only, half-sent and never compared. Where another stack already
    ///   sent the job, this one may be up to twice as late; where another
    ///   dropped it for lag, this one drops it from half the limit. A stack
    ///   far behind still drops on its own.
    fn admit(&self, stack: usize, pair: &Pair) -> Admit {
        let full = self.pairing.waiting.load(Ordering::Relaxed) >= self.max_unpaired
            || self.pairing.bytes.load(Ordering::Relaxed) >= UNPAIRED_BYTES;
        let max = self.sender.max_lag();
        let mut partial = pair.lock().expect("pair lock");
        let others = |i: &usize| *i != stack;
        let answered = (0..3).filter(others).any(|i| partial.attempts[i].is_some());
        if full && answered {
            return Admit::Behind;
        }
        let sent = (0..3).filter(others).any(|i| {
            partial.started[i]
                && !partial.attempts[i]
                    .as_ref()
                    .is_some_and(Attempt::was_dropped)
        });
        let gave_up = (0..3).filter(others).any(|i| {
            partial.attempts[i]
                .as_ref()
                .is_some_and(Attempt::was_dropped)
        });
        partial.started[stack] = true;
        Admit::Send(max.map(|max| match (sent, gave_up) {
            (true, _) => max * 2,
            (false, true) => max / 2,
            (false, false) => max,
        }))
    }

    /// Takes `stack`'s attempt at `job` (`None`: not sent, the replay
    /// stopped); hands the result on once every stack has answered.
    async fn answered(&self, stack: usize, job: &Job, pair: &Pair, attempt: Option<Attempt>) {
        let Pairing { waiting, bytes } = &self.pairing;
        let done = {
            let mut partial = pair.lock().expect("pair lock");
            if partial.attempts.iter().all(Option::is_none) && partial.stopped == 0 {
                waiting.fetch_add(1, Ordering::Relaxed);
            }
            let size = attempt.as_ref().map_or(0, body_bytes);
            partial.bytes += size;
            bytes.fetch_add(size, Ordering::Relaxed);
            match attempt {
                Some(attempt) => partial.attempts[stack] = Some(attempt),
                None => partial.stopped += 1,
            }
            partial.left -= 1;
            if partial.left > 0 {
                return;
            }
            bytes.fetch_sub(partial.bytes, Ordering::Relaxed);
            waiting.fetch_sub(1, Ordering::Relaxed);
            Partial {
                attempts: std::mem::take(&mut partial.attempts),
                ..*partial
            }
        };
        // A job no stack sent before the stop has no result, as before the
        // stop it had none; one that some stack answered has, the others
        // marked as not sent.
        if done.attempts.iter().all(Option::is_none) {
            return;
        }
        let attempts = done.attempts.map(|a| {
            a.or_else(|| {
                (done.stopped > 0).then(|| dropped(job.at, "not sent: the replay stopped"))
            })
        });
        let result = self.sender.result(job, self.start, attempts);
        match self.results.try_reserve() {
            Ok(room) => room.send(result),
            // The wait is boxed: a result held across it would be room
            // carried in every job's future.
            Err(TrySendError::Full(())) => drop(Box::pin(self.results.send(result)).await),
            Err(TrySendError::Closed(())) => {}
        }
    }
}

fn body_bytes(attempt: &Attempt) -> usize {
    attempt
        .response
        .as_ref()
        .map_or(0, |r| r.body.bytes().len())
        + 256
}
