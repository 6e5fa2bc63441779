//! End-to-end latency percentiles of a run, in constant memory.
//!
//! Latencies are counted in logarithmic buckets of microseconds: exact below 64 µs, then 64
//! buckets per power of two (each at most 1/64 = 1.6 % wide). A `live` run of days keeps the
//! same 18 KB instead of a value per frame; percentiles come out within 1.6 %, the maximum is
//! exact.

use std::time::Duration;

use serde::Serialize;

/// Sub-buckets per power of two (and the exact range below it, in µs).
const SUB_BUCKETS: u64 = 64;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// Latencies up to 2^40 µs (12.7 days) get their own bucket; longer ones share the last.
const MAX_EXPONENT: u32 = 40;
const BUCKETS: usize = (SUB_BUCKETS as usize) * (1 + (MAX_EXPONENT - SUB_BITS) as usize);

/// Counts of a run's latencies.
#[derive(Debug, Default, Clone)]
pub struct LatencyRecorder {
    /// Allocated on the first sample.
    counts: Vec<u64>,
    total: u64,
    max: Duration,
}

/// Summary of the recorded latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencyRecorder {
    pub fn record(&mut self, latency: Duration) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(micros)] += 1;
        self.total += 1;
        self.max = self.max.max(latency);
    }

    /// Nearest-rank percentiles (each bucket stands for its midpoint, at most the maximum);
    /// `None` before the first sample.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.total == 0 {
            return None;
        }
        let max_ms = self.max.as_secs_f64() * 1000.0;
        let rank = |p: f64| {
            let wanted = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
            let mut seen = 0;
            let index = self
                .counts
                .iter()
                .position(|&count| {
                    seen += count;
                    seen >= wanted
                })
                .expect("the counts add up to the total");
            (midpoint_micros(index) / 1000.0).min(max_ms)
        };
        Some(LatencySummary {
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms,
        })
    }
}

/// The bucket of a latency of `micros` µs.
fn bucket(micros: u64) -> usize {
    if micros < SUB_BUCKETS {
        return micros as usize;
    }
    let exponent = (63 - micros.leading_zeros()).min(MAX_EXPONENT);
    let shift = exponent - SUB_BITS;
    let mantissa = ((micros >> shift) & (SUB_BUCKETS - 1)).min(SUB_BUCKETS - 1);
    let index = (SUB_BUCKETS * u64::from(1 + shift) + mantissa) as usize;
    index.min(BUCKETS - 1)
}

/// The middle of bucket `index`, µs.
fn midpoint_micros(index: usize) -> f64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index as f64;
    }
    let shift = index / SUB_BUCKETS - 1;
    let low = (SUB_BUCKETS + index % SUB_BUCKETS) << shift;
    low as f64 + ((1u64 << shift) as f64 - 1.0) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_within_the_bucket_width_and_exact_maximum() {
        let mut recorder = LatencyRecorder::default();
        assert_eq!(recorder.summary(), None);
        for ms in (1..=100).rev() {
            recorder.record(Duration::from_millis(ms));
        }
        let summary = recorder.summary().unwrap();
        let close = |got: f64, want: f64| (got - want).abs() <= want / SUB_BUCKETS as f64;
        assert!(close(summary.p50_ms, 50.0), "{summary:?}");
        assert!(close(summary.p99_ms, 99.0), "{summary:?}");
        assert_eq!(summary.max_ms, 100.0);
    }

    #[test]
    fn buckets_cover_every_latency_in_order() {
        // Exact below 64 µs; each bucket's midpoint lies inside it; order is kept.
        assert_eq!(bucket(63), 63);
        let mut last = 0;
        for micros in (0..5_000_000u64)
            .step_by(997)
            .chain([u64::MAX / 2, u64::MAX])
        {
            let index = bucket(micros);
            assert!(index >= last && index < BUCKETS, "{micros} µs -> {index}");
            last = index;
            if micros < 1 << MAX_EXPONENT {
                let mid = midpoint_micros(index);
                assert!(
                    (mid - micros as f64).abs() <= micros as f64 / 64.0 + 1.0,
                    "{micros}"
                );
            }
        }
    }
}
