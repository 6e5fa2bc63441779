//! Counters, gauges and latency histograms of one running pipeline, in Prometheus form
//! (`prometheus-client`, the Prometheus project's Rust client). The pipeline updates them;
//! `streamtrack serve` registers each job's and stream's set under its own label and exposes
//! them at `GET /metrics`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The metrics of one pipeline. Cloning shares the underlying values.
#[derive(Clone, Debug)]
pub struct StreamMetrics {
    /// Frames delivered by the source.
    pub frames_in: Counter,
    /// Frames analysed (detected, tracked, reported).
    pub frames_processed: Counter,
    /// Frames discarded because newer ones arrived or they were older than the latency limit.
    pub frames_dropped: Counter,
    /// Frames left out on purpose to hold the target frame rate.
    pub frames_skipped: Counter,
    /// Times a live source was lost and connected again.
    pub reconnects: Counter,
    /// Tracks currently alive.
    pub active_tracks: Gauge,
    /// Analysed frames per second, smoothed.
    pub fps: Gauge<f64, AtomicU64>,
    /// Time the source took to deliver a decoded frame.
    pub decode_seconds: Histogram,
    /// Network time per frame (a batch's time shared among its frames).
    pub infer_seconds: Histogram,
    /// Time of tracking, speeds, zones, reporting and drawing for one frame.
    pub analyse_seconds: Histogram,
    /// Time to encode and write one annotated frame.
    pub encode_seconds: Histogram,
    /// From the moment a frame left the source until its results were written.
    pub latency_seconds: Histogram,
    /// Events queued for an event sink (MQTT, webhook), once per sink.
    pub events_published: Counter,
    /// Events an event sink could not take (queue full) or deliver before the stream ended.
    pub events_dropped: Counter,
}

impl Default for StreamMetrics {
    fn default() -> Self {
        // 0.5 ms to about 16 s.
        let buckets = || Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        Self {
            frames_in: Counter::default(),
            frames_processed: Counter::default(),
            frames_dropped: Counter::default(),
            frames_skipped: Counter::default(),
            reconnects: Counter::default(),
            active_tracks: Gauge::default(),
            fps: Gauge::default(),
            decode_seconds: buckets(),
            infer_seconds: buckets(),
            analyse_seconds: buckets(),
            encode_seconds: buckets(),
            latency_seconds: buckets(),
            events_published: Counter::default(),
            events_dropped: Counter::default(),
        }
    }
}

impl StreamMetrics {
    /// Registers every metric under `registry` (which carries the stream's labels).
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "frames_in",
                "Frames delivered by the source",
                &self.frames_in,
            ),
            (
                "frames_processed",
                "Frames analysed",
                &self.frames_processed,
            ),
            (
                "frames_dropped",
                "Frames dropped because newer ones arrived or they were too old",
                &self.frames_dropped,
            ),
            (
                "frames_skipped",
                "Frames left out to hold the target frame rate",
                &self.frames_skipped,
            ),
            (
                "reconnects",
                "Times a live source was lost and reconnected",
                &self.reconnects,
            ),
            (
                "events_published",
                "Events queued for an event sink (MQTT, webhook), once per sink",
                &self.events_published,
            ),
            (
                "events_dropped",
                "Events an event sink could not queue or deliver before the stream ended",
                &self.events_dropped,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register("active_tracks", "Tracks alive", self.active_tracks.clone());
        registry.register("fps", "Analysed frames per second", self.fps.clone());
        let stages = [
            (
                "decode",
                "Time to deliver one decoded frame",
                &self.decode_seconds,
            ),
            ("infer", "Network time per frame", &self.infer_seconds),
            (
                "analyse",
                "Time to track, report and draw one frame",
                &self.analyse_seconds,
            ),
            (
                "encode",
                "Time to encode one annotated frame",
                &self.encode_seconds,
            ),
            (
                "latency",
                "Time from leaving the source to results written",
                &self.latency_seconds,
            ),
        ];
        for (name, help, histogram) in stages {
            registry.register_with_unit(name, help, Unit::Seconds, histogram.clone());
        }
    }

    /// Folds one more analysed frame, `interval` after the previous one, into the FPS gauge.
    pub fn observe_interval(&self, interval: Duration) {
        let secs = interval.as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let current = 1.0 / secs;
        let previous = self.fps.get();
        let smoothed = if previous > 0.0 {
            0.9 * previous + 0.1 * current
        } else {
            current
        };
        self.fps.set(smoothed);
    }
}

/// Renders `registry` in the Prometheus/OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_render_with_their_labels() {
        let mut registry = Registry::with_prefix("streamtrack");
        let metrics = StreamMetrics::default();
        metrics.register(registry.sub_registry_with_label(("stream".into(), "s1".into())));
        metrics.frames_in.inc_by(3);
        metrics.latency_seconds.observe(0.02);
        metrics.observe_interval(Duration::from_millis(40));
        let text = render(&registry);
        assert!(
            text.contains("streamtrack_frames_in_total{stream=\"s1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("streamtrack_latency_seconds_count{stream=\"s1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("streamtrack_fps{stream=\"s1\"} 25.0"),
            "{text}"
        );
    }

    #[test]
    fn fps_is_smoothed() {
        let metrics = StreamMetrics::default();
        metrics.observe_interval(Duration::from_millis(100));
        metrics.observe_interval(Duration::from_millis(50));
        assert!((metrics.fps.get() - 11.0).abs() < 1e-9);
    }
}
