//! End-to-end latency percentiles of a run.

use std::time::Duration;

use serde::Serialize;

/// Every latency of a run, for exact percentiles at the end (a few bytes per frame).
#[derive(Debug, Default, Clone)]
pub struct LatencyRecorder {
    samples_ms: Vec<f32>,
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
        self.samples_ms.push(latency.as_secs_f32() * 1000.0);
    }

    /// Nearest-rank percentiles; `None` before the first sample.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.samples_ms.is_empty() {
            return None;
        }
        let mut sorted = self.samples_ms.clone();
        sorted.sort_by(f32::total_cmp);
        let rank = |p: f64| {
            let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            f64::from(sorted[index])
        };
        Some(LatencySummary {
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: f64::from(*sorted.last().expect("not empty")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut recorder = LatencyRecorder::default();
        assert_eq!(recorder.summary(), None);
        for ms in (1..=100).rev() {
            recorder.record(Duration::from_millis(ms));
        }
        let summary = recorder.summary().unwrap();
        assert_eq!(
            (summary.p50_ms, summary.p99_ms, summary.max_ms),
            (50.0, 99.0, 100.0)
        );
    }
}
