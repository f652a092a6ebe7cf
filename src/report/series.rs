//! The run over time: per interval (1 s by default) of scheduled time,
//! what was sent, answered, failed, mismatched and dropped, and each
//! stack's latency, corrected latency and send lag as histograms, so that
//! shard reports merge exactly, interval by interval, as the totals do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::latency::{Latency, LatencySummary};

/// Intervals of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Length of an interval, ms.
    pub interval_ms: u64,
    /// The intervals that had exchanges, in time order.
    pub points: Vec<Point>,
}

/// One interval: the exchanges scheduled in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Start of the interval, ms of scheduled time since the replay began.
    pub at_ms: u64,
    /// Exchanges scheduled in it.
    pub total: u64,
    /// Of which matched.
    pub matched: u64,
    /// Of which mismatched.
    pub mismatched: u64,
    /// Of which a target failed.
    pub errors: u64,
    /// Of which the harness did not send to some stack.
    pub dropped: u64,
    /// Legacy's side.
    pub legacy: StackPoint,
    /// New's side.
    pub new: StackPoint,
}

/// One stack in one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StackPoint {
    /// Requests sent.
    pub sent: u64,
    /// Answers received.
    pub answered: u64,
    /// Target errors.
    pub errors: u64,
    /// Requests not sent (`--max-in-flight`, `--max-lag`).
    pub dropped: u64,
    /// Answer latency from the send, µs.
    pub latency: LatencySummary,
    /// From the time the request was due (coordinated omission), µs.
    pub corrected: LatencySummary,
    /// Send lag, µs.
    pub lag: LatencySummary,
    /// The three as histograms (HdrHistogram V2 deflate, base64), for merging.
    pub histograms: [String; 3],
}

/// A stack's interval while it is being counted.
#[derive(Debug, Clone, Default)]
pub struct StackTally {
    /// Requests sent.
    pub sent: u64,
    /// Answers received.
    pub answered: u64,
    /// Target errors.
    pub errors: u64,
    /// Not sent.
    pub dropped: u64,
    /// Latency, corrected latency, send lag.
    pub histograms: [Latency; 3],
}

impl StackTally {
    /// The interval as the report keeps it.
    pub fn point(&self) -> StackPoint {
        let [latency, corrected, lag] = &self.histograms;
        StackPoint {
            sent: self.sent,
            answered: self.answered,
            errors: self.errors,
            dropped: self.dropped,
            latency: latency.summary(),
            corrected: corrected.summary(),
            lag: lag.summary(),
            histograms: [latency.to_base64(), corrected.to_base64(), lag.to_base64()],
        }
    }

    /// The interval back from the report, for merging.
    pub fn of(point: &StackPoint) -> anyhow::Result<StackTally> {
        let mut histograms: [Latency; 3] = Default::default();
        for (h, text) in histograms.iter_mut().zip(&point.histograms) {
            *h = Latency::from_base64(text)?;
        }
        Ok(StackTally {
            sent: point.sent,
            answered: point.answered,
            errors: point.errors,
            dropped: point.dropped,
            histograms,
        })
    }

    /// Adds `other`'s counts and histograms.
    pub fn add(&mut self, other: &StackTally) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.errors += other.errors;
        self.dropped += other.dropped;
        for (h, o) in self.histograms.iter_mut().zip(&other.histograms) {
            h.merge(o);
        }
    }
}

/// Shards' series merged: counts added and histograms merged interval by
/// interval. `None` when no shard has one; an error when their intervals
/// differ.
pub fn merge(all: &[&Series]) -> anyhow::Result<Option<Series>> {
    let Some(first) = all.first() else {
        return Ok(None);
    };
    let interval_ms = first.interval_ms;
    let mut points: BTreeMap<u64, (Point, [StackTally; 2])> = BTreeMap::new();
    for series in all {
        anyhow::ensure!(
            series.interval_ms == interval_ms,
            "shards were run with different series intervals ({} ms and {} ms)",
            interval_ms,
            series.interval_ms
        );
        for p in &series.points {
            let (point, stacks) = points.entry(p.at_ms).or_insert_with(|| {
                let mut empty = p.clone();
                (empty.total, empty.matched, empty.mismatched) = (0, 0, 0);
                (empty.errors, empty.dropped) = (0, 0);
                (empty, Default::default())
            });
            point.total += p.total;
            point.matched += p.matched;
            point.mismatched += p.mismatched;
            point.errors += p.errors;
            point.dropped += p.dropped;
            stacks[0].add(&StackTally::of(&p.legacy)?);
            stacks[1].add(&StackTally::of(&p.new)?);
        }
    }
    let points = points
        .into_values()
        .map(|(mut point, [legacy, new])| {
            point.legacy = legacy.point();
            point.new = new.point();
            point
        })
        .collect();
    Ok(Some(Series {
        interval_ms,
        points,
    }))
}
