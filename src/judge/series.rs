//! The run over time, as the judge counts it: each exchange in the
//! interval of its scheduled time (the same in every shard of a run, so
//! that shard series merge interval by interval).

use std::collections::BTreeMap;

use super::Verdict;
use crate::report::series::{Point, Series, StackTally};
use crate::results::{Attempt, ExchangeResult};

#[derive(Clone)]
pub(super) struct SeriesTally {
    interval_us: u64,
    points: BTreeMap<u64, PointTally>,
}

#[derive(Default, Clone)]
struct PointTally {
    total: u64,
    matched: u64,
    mismatched: u64,
    errors: u64,
    dropped: u64,
    stacks: [StackTally; 2],
}

impl SeriesTally {
    pub(super) fn new(interval: std::time::Duration) -> SeriesTally {
        SeriesTally {
            interval_us: (interval.as_micros() as u64).max(1_000),
            points: BTreeMap::new(),
        }
    }

    pub(super) fn add(&mut self, result: &ExchangeResult, verdict: Verdict) {
        let index = result.scheduled_us / self.interval_us;
        let point = self.points.entry(index).or_default();
        point.total += 1;
        match verdict {
            Verdict::Matched => point.matched += 1,
            Verdict::Mismatched(_) => point.mismatched += 1,
            Verdict::Error => point.errors += 1,
            Verdict::Dropped => point.dropped += 1,
        }
        for (stack, attempt) in point.stacks.iter_mut().zip([&result.legacy, &result.new]) {
            add(stack, attempt);
        }
    }

    /// The figures of the exchanges scheduled in `[from_us, to_us)`, for
    /// windowed gates while the run goes on; `None` when there were none.
    pub(super) fn window(&self, from_us: u64, to_us: u64) -> Option<crate::gate::Figures> {
        let (from, to) = (from_us / self.interval_us, to_us.div_ceil(self.interval_us));
        let points: Vec<_> = self.points.range(from..to).collect();
        if points.is_empty() {
            return None;
        }
        Some(crate::gate::Figures::window(points.into_iter().map(
            |(_, p)| {
                let counts = crate::gate::Counts {
                    total: p.total,
                    matched: p.matched,
                    failed: p.mismatched + p.errors + p.dropped,
                };
                (counts, &p.stacks)
            },
        )))
    }

    pub(super) fn finish(self) -> Option<Series> {
        if self.points.is_empty() {
            return None;
        }
        let interval_ms = self.interval_us / 1_000;
        let points = self
            .points
            .into_iter()
            .map(|(index, p)| {
                let [legacy, new] = &p.stacks;
                Point {
                    at_ms: index * interval_ms,
                    total: p.total,
                    matched: p.matched,
                    mismatched: p.mismatched,
                    errors: p.errors,
                    dropped: p.dropped,
                    legacy: legacy.point(),
                    new: new.point(),
                }
            })
            .collect();
        Some(Series {
            interval_ms,
            points,
        })
    }
}

fn add(stack: &mut StackTally, attempt: &Attempt) {
    if attempt.was_dropped() {
        stack.dropped += 1;
        return;
    }
    stack.sent += 1;
    stack.histograms[2].record(attempt.lag_us);
    match &attempt.response {
        Some(response) => {
            stack.answered += 1;
            stack.histograms[0].record(response.latency_us);
            stack.histograms[1].record(attempt.lag_us + response.latency_us);
        }
        None => stack.errors += 1,
    }
}
