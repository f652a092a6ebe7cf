//! The load each stack received: each keeps its own pace, so one that
//! falls behind is tested at less than the schedule asked, and the report
//! says so beside the latencies it is compared by.

use crate::report::{Load, StackLoads};
use crate::results::{Attempt, ExchangeResult};

#[derive(Default, Clone)]
struct Tally {
    scheduled: u64,
    sent: u64,
    retried: u64,
    first_due: u64,
    last_due: u64,
    first_sent: u64,
    last_sent: u64,
}

#[derive(Default, Clone)]
pub(super) struct LoadTally {
    stacks: [Tally; 2],
}

impl LoadTally {
    pub(super) fn add(&mut self, result: &ExchangeResult) {
        for (tally, attempt) in self.stacks.iter_mut().zip([&result.legacy, &result.new]) {
            tally.add(result.scheduled_us, attempt);
        }
    }

    /// `None` when nothing was scheduled.
    pub(super) fn finish(self) -> Option<StackLoads> {
        let [legacy, new] = self.stacks;
        (legacy.scheduled > 0).then(|| StackLoads {
            legacy: legacy.finish(),
            new: new.finish(),
        })
    }
}

impl Tally {
    fn add(&mut self, due_us: u64, attempt: &Attempt) {
        if self.scheduled == 0 {
            self.first_due = due_us;
        }
        self.scheduled += 1;
        self.first_due = self.first_due.min(due_us);
        self.last_due = self.last_due.max(due_us);
        if attempt.was_dropped() {
            return;
        }
        let sent_us = due_us + attempt.lag_us;
        if self.sent == 0 {
            self.first_sent = sent_us;
        }
        self.sent += 1;
        self.retried += u64::from(attempt.retried);
        self.first_sent = self.first_sent.min(sent_us);
        self.last_sent = self.last_sent.max(sent_us);
    }

    fn finish(self) -> Load {
        let rate = |n: u64, first: u64, last: u64| {
            if n < 2 || last <= first {
                0.0
            } else {
                (n - 1) as f64 / ((last - first) as f64 / 1e6)
            }
        };
        Load {
            scheduled: self.scheduled,
            sent: self.sent,
            scheduled_per_s: rate(self.scheduled, self.first_due, self.last_due),
            achieved_per_s: rate(self.sent, self.first_sent, self.last_sent),
            retried: self.retried,
        }
    }
}
