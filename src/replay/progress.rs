//! The live line of a long replay: sent, answered, errors, current rate,
//! p99 latency per target, and how busy tandem's busiest engine is. Drawn
//! on stderr only when it is a terminal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::latency::{human, Latency};
use crate::results::ExchangeResult;

/// Counters shared by the dispatcher, the collector and the display.
pub struct Progress {
    sent: AtomicU64,
    answered: AtomicU64,
    errors: AtomicU64,
    latency: Mutex<[Latency; 2]>,
    /// Per engine, its busy time (running, waiting for a core or paused by
    /// the host while it ran) and when it last told it, both in µs modulo
    /// 2^32 (71 minutes), packed in one word so that the line reads a pair
    /// the engine wrote together. The share is taken between the engine's
    /// own ticks: the line's refreshes do not fall on them.
    engines: Vec<AtomicU64>,
    created: Instant,
}

impl Progress {
    /// Counters for a replay of `engines` engines.
    pub fn new(engines: u32) -> Progress {
        Progress {
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Mutex::default(),
            engines: (0..engines).map(|_| AtomicU64::new(0)).collect(),
            created: Instant::now(),
        }
    }

    /// Engine `engine` was busy (running, waiting for a core or paused by
    /// the host) `busy` more, as of now.
    pub fn engine_busy(&self, engine: u32, busy: Duration) {
        let Some(told) = self.engines.get(engine as usize) else {
            return;
        };
        let at = self.created.elapsed().as_micros() as u32;
        let before = told.load(Ordering::Relaxed);
        let total = ((before >> 32) as u32).wrapping_add(busy.as_micros() as u32);
        told.store((u64::from(total) << 32) | u64::from(at), Ordering::Relaxed);
    }

    /// Each engine's (busy, at) as last told, µs modulo 2^32.
    fn engine_times(&self) -> Vec<(u32, u32)> {
        self.engines
            .iter()
            .map(|t| {
                let packed = t.load(Ordering::Relaxed);
                ((packed >> 32) as u32, packed as u32)
            })
            .collect()
    }

    /// The busiest engine's busy share between `then` and `now` (as
    /// [`Progress::engine_times`] gave them); `None` before any engine
    /// told anything new.
    fn busiest(now: &[(u32, u32)], then: &[(u32, u32)]) -> Option<f64> {
        now.iter()
            .zip(then)
            .filter(|(now, then)| now.1 != then.1)
            .map(|(now, then)| {
                f64::from(now.0.wrapping_sub(then.0)) / f64::from(now.1.wrapping_sub(then.1))
            })
            .max_by(f64::total_cmp)
    }

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

    /// The line shown, given the answers per second since the last one
    /// and the busiest engine's busy share over that time, when known.
    pub fn line(&self, rate: f64, busiest: Option<f64>) -> String {
        let latency = self.latency.lock().expect("progress lock");
        let engine = match busiest {
            Some(b) if b >= crate::report::Generator::SATURATED => {
                format!(" engine {:.0}% (tandem's limit)", b * 100.0)
            }
            Some(b) => format!(" engine {:.0}%", b * 100.0),
            None => String::new(),
        };
        format!(
            "sent {} answered {} errors {} {:.0}/s p99 legacy {} new {}{engine}",
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
        let mut engines = progress.engine_times();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let answered = progress.answered.load(Ordering::Relaxed);
            let elapsed = at.elapsed().as_secs_f64();
            let rate = (answered - last) as f64 / elapsed;
            let now = progress.engine_times();
            let busiest = Progress::busiest(&now, &engines);
            (last, at, engines) = (answered, Instant::now(), now);
            ticker.set_message(progress.line(rate, busiest));
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
        let progress = Progress::new(2);
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
            progress.line(12.0, None),
            "sent 3 answered 2 errors 1 12/s p99 legacy 1.5ms new 2.0ms"
        );
        assert!(progress
            .line(12.0, Some(0.42))
            .ends_with(" new 2.0ms engine 42%"));
        assert!(progress
            .line(12.0, Some(0.97))
            .ends_with(" engine 97% (tandem's limit)"));
        // Between two ticks of its own: busy 3 ms of the time between them.
        let then = progress.engine_times();
        std::thread::sleep(Duration::from_millis(2));
        progress.engine_busy(1, Duration::from_millis(3));
        progress.engine_busy(7, Duration::from_millis(3));
        let now = progress.engine_times();
        assert_eq!(now[0], (0, 0), "engine 0 told nothing");
        assert_eq!(now[1].0, 3_000);
        let busiest = Progress::busiest(&now, &then).unwrap();
        let between = f64::from(now[1].1) / 1e6;
        assert!((busiest - 0.003 / between).abs() < 1e-9, "{busiest}");
        assert_eq!(Progress::busiest(&now, &now), None);
    }
}
