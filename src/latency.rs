//! Latency histograms (hdrhistogram) and the percentiles reports show.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded exactly: one hour, in microseconds. Longer values
/// are clamped to it.
const MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Auto-resizing: a route that only sees fast answers keeps a small histogram.
        Latency(Histogram::new(3).expect("3 significant digits is valid"))
    }
}

impl Latency {
    /// Records one latency.
    pub fn record(&mut self, us: u64) {
        // `record` grows an auto-resizing histogram; `saturating_record` would
        // clamp to its current top instead.
        let us = us.clamp(1, MAX_US);
        if self.0.record(us).is_err() {
            self.0.saturating_record(us);
        }
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latency) {
        self.0
            .add(&other.0)
            .expect("histograms with the same bounds merge");
    }

    /// The histogram in HdrHistogram's compressed V2 form, base64: what shard
    /// reports carry so that merging them is exact.
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        let mut bytes = Vec::new();
        use hdrhistogram::serialization::Serializer;
        hdrhistogram::serialization::V2DeflateSerializer::new()
            .serialize(&self.0, &mut bytes)
            .expect("serializing to memory cannot fail");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// A histogram from [`Latency::to_base64`]'s form.
    pub fn from_base64(text: &str) -> anyhow::Result<Latency> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
        let mut histogram: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("not a serialized histogram: {e:?}"))?;
        histogram.auto(true);
        Ok(Latency(histogram))
    }

    /// The percentile spectrum, as HdrHistogram users plot it on a log
    /// scale: `(percentile, µs)` from p0 to p99.99, then the maximum as 100.
    pub fn spectrum(&self) -> Vec<(f64, u64)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        const QUANTILES: [f64; 14] = [
            0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995,
            0.99999,
        ];
        let mut points: Vec<(f64, u64)> = QUANTILES
            .iter()
            .map(|&q| (q * 100.0, self.0.value_at_quantile(q)))
            .collect();
        points.push((100.0, self.0.max()));
        points
    }

    /// The value at quantile `q` (0..1); `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q))
    }

    /// Count and percentiles.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.0;
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        LatencySummary {
            count: h.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: if h.is_empty() { 0 } else { h.max() },
            mean: if h.is_empty() {
                0.0
            } else {
                (h.mean() * 10.0).round() / 10.0
            },
        }
    }
}

/// Percentiles of a latency histogram, all in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Number of values recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// Formats microseconds for people: `850µs`, `12.3ms`, `1.20s`.
pub fn human(us: u64) -> String {
    match us {
        0..=999 => format!("{us}µs"),
        1_000..=999_999 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_histograms_round_trip_exactly() {
        let mut a = Latency::default();
        for us in [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000] {
            a.record(us);
        }
        let back = Latency::from_base64(&a.to_base64()).unwrap();
        assert_eq!(back.summary(), a.summary());
        let mut merged = back.clone();
        merged.merge(&a);
        assert_eq!(merged.summary().count, 14);
        assert!(Latency::from_base64("bm90IGEgaGlzdG9ncmFt").is_err());
    }

    #[test]
    fn percentiles_and_merge() {
        let mut a = Latency::default();
        for us in 1..=1000 {
            a.record(us);
        }
        let mut b = Latency::default();
        b.record(50_000);
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 1001);
        assert!((499..=501).contains(&s.p50), "{s:?}");
        assert!(s.max >= 49_990 && s.max <= 50_100, "{s:?}");
        assert_eq!(Latency::default().summary().p99, 0);
        assert_eq!(human(1_500), "1.5ms");
    }
}
