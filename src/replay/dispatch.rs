//! From a due job to a sent request: session queues and the collector.
//!
//! Requests of one session go out in their recorded order and never overlap,
//! so create-then-read sequences stay causal: a job whose session is busy
//! waits in that session's queue and goes out when the previous request of
//! the session has both answers (its lag, and so its corrected latency,
//! shows the wait). Sessions run in parallel.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::schedule::Job;
use super::send::Sender;
use crate::results::ExchangeResult;

/// Turns due jobs into sends on its engine's runtime; cheap to call from
/// the engine's schedule.
pub struct Dispatcher {
    sender: Sender,
    results: mpsc::Sender<ExchangeResult>,
    /// Busy sessions and the jobs waiting behind them; `None` when sessions
    /// are not kept in order.
    queues: Option<Mutex<HashMap<String, VecDeque<Job>>>>,
    runtime: Handle,
    start: Instant,
    stop: Arc<AtomicBool>,
    /// Dropped with the dispatcher, once its last send is done: the engine
    /// waits for that.
    _alive: mpsc::Sender<()>,
}

impl Dispatcher {
    /// A dispatcher sending with `sender` on `runtime` and handing results
    /// to `results`; `alive` is dropped when the dispatcher is.
    pub fn new(
        sender: Sender,
        results: mpsc::Sender<ExchangeResult>,
        ordered_sessions: bool,
        start: Instant,
        stop: Arc<AtomicBool>,
        runtime: Handle,
        alive: mpsc::Sender<()>,
    ) -> Dispatcher {
        Dispatcher {
            sender,
            results,
            queues: ordered_sessions.then(|| Mutex::new(HashMap::new())),
            runtime,
            start,
            stop,
            _alive: alive,
        }
    }

    /// A job is due: send it now, or queue it behind its session.
    pub fn dispatch(self: &Arc<Self>, job: Job) {
        if let Some(queues) = &self.queues {
            let mut queues = queues.lock().expect("session queues lock");
            if let Some(queue) = queues.get_mut(&job.session) {
                queue.push_back(job);
                return;
            }
            queues.insert(job.session.clone(), VecDeque::new());
        }
        let me = self.clone();
        self.runtime.spawn(async move { me.run(job).await });
    }

    /// Sends `job`, then whatever queued behind it in its session.
    async fn run(self: Arc<Self>, mut job: Job) {
        loop {
            let session = job.session.clone();
            let result = self.sender.send(&job, self.start).await;
            let _ = self.results.send(result).await;
            let Some(queues) = &self.queues else {
                return;
            };
            let mut queues = queues.lock().expect("session queues lock");
            // Once stopped, what waits in a queue is not sent.
            let next = if self.stop.load(Ordering::Relaxed) {
                None
            } else {
                queues.get_mut(&session).and_then(VecDeque::pop_front)
            };
            match next {
                Some(next) => job = next,
                None => {
                    queues.remove(&session);
                    return;
                }
            }
        }
    }
}
