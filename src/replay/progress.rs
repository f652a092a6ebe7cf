//! The live line of a long replay: sent, answered, errors, current rate and
//! p99 latency per target. Drawn on stderr only when it is a terminal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::latency::{human, Latency};
use crate::results::ExchangeResult;

/// Counters shared by the dispatcher, the collector and the display.
#[derive(Default)]
pub struct Progress {
    sent: AtomicU64,
    answered: AtomicU64,
    errors: AtomicU64,
    latency: Mutex<[Latency; 2]>,
}

impl Progress {
    /// One job handed to the targets.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// One result collected.
    pub fn collected(&self, result: &ExchangeResult) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if result.legacy.error.is_some() || result.new.error.is_some() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut latency = self.latency.lock().expect("progress lock");
        for (i, attempt) in [&result.legacy, &result.new].into_iter().enumerate() {
            if let Some(r) = &attempt.response {
                latency[i].record(r.latency_us);
            }
        }
    }

    /// The line shown, given the answers per second since the last one.
    pub fn line(&self, rate: f64) -> String {
        let latency = self.latency.lock().expect("progress lock");
        format!(
            "sent {} answered {} errors {} {:.0}/s p99 legacy {} new {}",
            self.sent.load(Ordering::Relaxed),
            self.answered.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            rate,
            human(latency[0].summary().p99),
            human(latency[1].summary().p99)
        )
    }
}

/// Draws the line four times a second until the returned guard is dropped.
pub fn show(progress: Arc<Progress>) -> Shown {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .expect("static template"),
    );
    let ticker = bar.clone();
    let task = tokio::spawn(async move {
        let (mut last, mut at) = (0u64, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let answered = progress.answered.load(Ordering::Relaxed);
            let rate = (answered - last) as f64 / at.elapsed().as_secs_f64();
            (last, at) = (answered, Instant::now());
            ticker.set_message(progress.line(rate));
            ticker.tick();
        }
    });
    Shown { bar, task }
}

/// Clears the line when dropped.
pub struct Shown {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Body, Request, Response};
    use crate::results::{Attempt, ErrorKind, TargetError};

    #[test]
    fn the_line_counts_and_shows_p99() {
        let progress = Progress::default();
        let answered = |us| Attempt {
            lag_us: 0,
            response: Some(Response {
                status: 200,
                headers: vec![],
                body: Body::default(),
                latency_us: us,
                truncated: None,
            }),
            error: None,
            unresolved: Vec::new(),
            retried: false,
        };
        let failed = Attempt {
            lag_us: 0,
            response: None,
            error: Some(TargetError {
                kind: ErrorKind::Refused,
                message: String::new(),
                after_us: 0,
            }),
            unresolved: Vec::new(),
            retried: false,
        };
        let result = |new| ExchangeResult {
            id: 1,
            pass: 0,
            copy: 0,
            session: String::new(),
            scheduled_us: 0,
            request: std::sync::Arc::new(Request {
                method: "GET".into(),
                target: "/".into(),
                version: "HTTP/1.1".into(),
                headers: vec![],
                body: Body::default(),
            }),
            legacy: answered(1_500),
            new,
            legacy2: None,
            recorded: None,
        };
        for _ in 0..3 {
            progress.sent();
        }
        progress.collected(&result(answered(2_000)));
        progress.collected(&result(failed));
        assert_eq!(
            progress.line(12.0),
            "sent 3 answered 2 errors 1 12/s p99 legacy 1.5ms new 2.0ms"
        );
    }
}
