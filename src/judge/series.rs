//! The run over time, as the judge counts it: each exchange in the
//! interval of its scheduled time (the same in every shard of a run, so
//! that shard series merge interval by interval).

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::Verdict;
use crate::report::series::{Point, Series, StackPoint, StackTally};
use crate::results::{Attempt, ExchangeResult};

/// How far behind the newest interval an interval's histograms stay as
/// they are counted; older ones are sealed into the report's compact form
/// (HdrHistogram V2 deflate). A live interval holds six histograms of tens
/// of kilobytes, so without sealing a long run grew for every second it
/// lasted (at 2,000 exchanges/s, 150 KB a second with glibc's malloc and
/// 380 KB with mimalloc). A result for a sealed interval (answered more
/// than this long after its time) opens it again; it is sealed anew when
/// the next interval begins, so that a stream of late answers costs one
/// opening per interval, not one per answer.
const LIVE_US: u64 = 3_000_000;

#[derive(Clone)]
pub(super) struct SeriesTally {
    interval_us: u64,
    points: BTreeMap<u64, PointTally>,
    /// Intervals below this one are sealed, but for those in `reopened`.
    sealed_below: u64,
    reopened: Vec<u64>,
    /// The newest interval that had a result.
    newest: u64,
}

#[derive(Default, Clone)]
struct PointTally {
    total: u64,
    matched: u64,
    mismatched: u64,
    errors: u64,
    dropped: u64,
    stacks: Stacks,
}

/// A point's two stacks: counted, or sealed as the report keeps them
/// (boxed, so that a sealed point is small: that is what sealing is for).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Stacks {
    Live([StackTally; 2]),
    Sealed(Box<[StackPoint; 2]>),
}

impl Default for Stacks {
    fn default() -> Stacks {
        Stacks::Live(Default::default())
    }
}

impl Stacks {
    /// The stacks as counted, opened again if sealed.
    fn live(&mut self) -> &mut [StackTally; 2] {
        if let Stacks::Sealed(points) = self {
            *self = Stacks::Live(points.each_ref().map(open));
        }
        match self {
            Stacks::Live(stacks) => stacks,
            Stacks::Sealed(_) => unreachable!("opened above"),
        }
    }

    fn seal(&mut self) {
        if let Stacks::Live(stacks) = self {
            *self = Stacks::Sealed(Box::new(stacks.each_ref().map(StackTally::point)));
        }
    }

    /// The stacks as counted, decoded if sealed.
    fn tallies(&self) -> Cow<'_, [StackTally; 2]> {
        match self {
            Stacks::Live(stacks) => Cow::Borrowed(stacks),
            Stacks::Sealed(points) => Cow::Owned(points.each_ref().map(open)),
        }
    }

    fn points(&self) -> [StackPoint; 2] {
        match self {
            Stacks::Live(stacks) => stacks.each_ref().map(StackTally::point),
            Stacks::Sealed(points) => (**points).clone(),
        }
    }
}

/// A sealed stack counted again: its histograms are this tally's own
/// encoding, which decodes.
fn open(point: &StackPoint) -> StackTally {
    StackTally::of(point).expect("a sealed interval decodes")
}

impl SeriesTally {
    pub(super) fn new(interval: std::time::Duration) -> SeriesTally {
        SeriesTally {
            interval_us: (interval.as_micros() as u64).max(1_000),
            points: BTreeMap::new(),
            sealed_below: 0,
            reopened: Vec::new(),
            newest: 0,
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
        let stacks = point.stacks.live();
        for (stack, attempt) in stacks.iter_mut().zip([&result.legacy, &result.new]) {
            add(stack, attempt);
        }
        if index < self.sealed_below && !self.reopened.contains(&index) {
            self.reopened.push(index);
        }
        if index > self.newest {
            self.newest = index;
            self.seal();
        }
    }

    /// Seals the intervals that fell out of the live span and those late
    /// results opened again.
    fn seal(&mut self) {
        let end = self.newest.saturating_sub(LIVE_US / self.interval_us);
        if end > self.sealed_below {
            for (_, point) in self.points.range_mut(self.sealed_below..end) {
                point.stacks.seal();
            }
            self.sealed_below = end;
        }
        for index in std::mem::take(&mut self.reopened) {
            if let Some(point) = self.points.get_mut(&index) {
                point.stacks.seal();
            }
        }
    }

    /// The figures of the exchanges scheduled in `[from_us, to_us)`, for
    /// windowed gates while the run goes on; `None` when there were none.
    pub(super) fn window(&self, from_us: u64, to_us: u64) -> Option<crate::gate::Figures> {
        let (from, to) = (from_us / self.interval_us, to_us.div_ceil(self.interval_us));
        let points: Vec<_> = self
            .points
            .range(from..to)
            .map(|(_, p)| {
                let counts = crate::gate::Counts {
                    total: p.total,
                    matched: p.matched,
                    failed: p.mismatched + p.errors + p.dropped,
                };
                (counts, p.stacks.tallies())
            })
            .collect();
        if points.is_empty() {
            return None;
        }
        Some(crate::gate::Figures::window(
            points.iter().map(|(counts, stacks)| (*counts, &**stacks)),
        ))
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
                let [legacy, new] = p.stacks.points();
                Point {
                    at_ms: index * interval_ms,
                    total: p.total,
                    matched: p.matched,
                    mismatched: p.mismatched,
                    errors: p.errors,
                    dropped: p.dropped,
                    legacy,
                    new,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn result(scheduled_s: u64, latency_us: u64) -> ExchangeResult {
        let attempt = serde_json::json!({
            "lag_us": 10,
            "response": {"status": 200, "headers": [], "body": "", "latency_us": latency_us}
        });
        serde_json::from_value(serde_json::json!({
            "id": 1, "session": "s", "scheduled_us": scheduled_s * 1_000_000,
            "request": {"method": "GET", "target": "/", "version": "HTTP/1.1", "headers": [], "body": ""},
            "legacy": attempt, "new": attempt,
        }))
        .unwrap()
    }

    #[test]
    fn old_intervals_are_sealed_and_a_late_result_still_counts() {
        let mut tally = SeriesTally::new(std::time::Duration::from_secs(1));
        for s in 0..=100 {
            tally.add(&result(s, 1_000 + s), Verdict::Matched);
        }
        let sealed = |t: &SeriesTally, s: u64| matches!(t.points[&s].stacks, Stacks::Sealed(_));
        assert!(sealed(&tally, 0) && sealed(&tally, 96));
        assert!(!sealed(&tally, 97) && !sealed(&tally, 100));
        // What a window is made of: sealed intervals decoded.
        let window = |t: &SeriesTally| {
            assert!(t.window(0, 10_000_000).is_some());
            let points = t.points.range(0..10).map(|(_, p)| p);
            let tallies: Vec<_> = points.clone().map(|p| p.stacks.tallies()).collect();
            let slowest = tallies.iter().map(|s| s[0].histograms[0].summary().max);
            (
                points.map(|p| p.total).sum::<u64>(),
                tallies.iter().map(|s| s[0].sent).sum::<u64>(),
                slowest.max().unwrap(),
            )
        };
        assert_eq!(window(&tally), (10, 10, 1_009));

        // Answered long after its time: its sealed interval takes it, and
        // is sealed again when the next interval begins.
        tally.add(&result(5, 2_000), Verdict::Matched);
        assert!(!sealed(&tally, 5));
        assert_eq!(window(&tally), (11, 11, 2_000));
        tally.add(&result(101, 1_000), Verdict::Matched);
        assert!(sealed(&tally, 5) && sealed(&tally, 97) && !sealed(&tally, 98));
        assert_eq!(window(&tally), (11, 11, 2_000));
        let series = tally.finish().unwrap();
        assert_eq!(series.points.len(), 102);
        let late = &series.points[5];
        assert_eq!((late.total, late.legacy.sent), (2, 2));
        assert_eq!(late.legacy.latency.max, 2_000);
        let early = StackTally::of(&series.points[3].legacy).unwrap();
        assert_eq!(early.histograms[0].summary().max, 1_003);
    }
}
