//! Counters, gauges and latency histograms of one running pipeline, in Prometheus form
//! (`prometheus-client`, the Prometheus project's Rust client). The pipeline updates them;
//! `streamtrack serve` keeps every metric as one family labelled by job or stream
//! ([`MetricFamilies`]), exposes them at `GET /metrics`, and removes a job's or stream's
//! series when it is forgotten, so a server that runs for months does not keep them all.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

/// A stage-time histogram: 0.5 ms to about 16 s.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for StreamMetrics {
    fn default() -> Self {
        let buckets = stage_histogram;
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

/// The labels of one job's or stream's series: `job="job-3"` or `stream="stream-1"`.
type Labels = Vec<(String, String)>;

/// A stage histogram per job or stream.
type StageFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The counters' names and help, in [`MetricFamilies::counters`]'s order.
const COUNTERS: [(&str, &str); 7] = [
    ("frames_in", "Frames delivered by the source"),
    ("frames_processed", "Frames analysed"),
    (
        "frames_dropped",
        "Frames dropped because newer ones arrived or they were too old",
    ),
    (
        "frames_skipped",
        "Frames left out to hold the target frame rate",
    ),
    ("reconnects", "Times a live source was lost and reconnected"),
    (
        "events_published",
        "Events queued for an event sink (MQTT, webhook), once per sink",
    ),
    (
        "events_dropped",
        "Events an event sink could not queue or deliver before the stream ended",
    ),
];

/// The stage histograms' names and help, in [`MetricFamilies::stages`]'s order.
const STAGES: [(&str, &str); 5] = [
    ("decode", "Time to deliver one decoded frame"),
    ("infer", "Network time per frame"),
    ("analyse", "Time to track, report and draw one frame"),
    ("encode", "Time to encode one annotated frame"),
    ("latency", "Time from leaving the source to results written"),
];

/// Every metric of every job and stream a server runs, one family per metric, labelled by
/// job or stream.
pub struct MetricFamilies {
    counters: [Family<Labels, Counter>; 7],
    active_tracks: Family<Labels, Gauge>,
    fps: Family<Labels, Gauge<f64, AtomicU64>>,
    stages: [StageFamily; 5],
}

impl Default for MetricFamilies {
    fn default() -> Self {
        Self {
            counters: Default::default(),
            active_tracks: Family::default(),
            fps: Family::default(),
            stages: std::array::from_fn(|_| {
                Family::new_with_constructor(stage_histogram as fn() -> Histogram)
            }),
        }
    }
}

impl MetricFamilies {
    /// Registers every family under `registry`.
    pub fn register(&self, registry: &mut Registry) {
        for ((name, help), family) in COUNTERS.iter().zip(&self.counters) {
            registry.register(*name, *help, family.clone());
        }
        registry.register("active_tracks", "Tracks alive", self.active_tracks.clone());
        registry.register("fps", "Analysed frames per second", self.fps.clone());
        for ((name, help), family) in STAGES.iter().zip(&self.stages) {
            registry.register_with_unit(*name, *help, Unit::Seconds, family.clone());
        }
    }

    /// The metrics of the job or stream `id` (`kind` is `job` or `stream`), created now.
    pub fn series(&self, kind: &str, id: &str) -> StreamMetrics {
        let labels = labels(kind, id);
        let counter = |i: usize| self.counters[i].get_or_create(&labels).clone();
        let stage = |i: usize| self.stages[i].get_or_create(&labels).clone();
        StreamMetrics {
            frames_in: counter(0),
            frames_processed: counter(1),
            frames_dropped: counter(2),
            frames_skipped: counter(3),
            reconnects: counter(4),
            events_published: counter(5),
            events_dropped: counter(6),
            active_tracks: self.active_tracks.get_or_create(&labels).clone(),
            fps: self.fps.get_or_create(&labels).clone(),
            decode_seconds: stage(0),
            infer_seconds: stage(1),
            analyse_seconds: stage(2),
            encode_seconds: stage(3),
            latency_seconds: stage(4),
        }
    }

    /// Drops the series of the job or stream `id` from every family.
    pub fn remove(&self, kind: &str, id: &str) {
        let labels = labels(kind, id);
        for family in &self.counters {
            family.remove(&labels);
        }
        self.active_tracks.remove(&labels);
        self.fps.remove(&labels);
        for family in &self.stages {
            family.remove(&labels);
        }
    }
}

fn labels(kind: &str, id: &str) -> Labels {
    vec![(kind.to_string(), id.to_string())]
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
    fn series_render_with_their_labels_until_removed() {
        let mut registry = Registry::with_prefix("streamtrack");
        let families = MetricFamilies::default();
        families.register(&mut registry);
        let metrics = families.series("stream", "s1");
        families.series("job", "job-1").frames_in.inc();
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
        assert!(
            text.contains("streamtrack_frames_in_total{job=\"job-1\"} 1"),
            "{text}"
        );
        families.remove("stream", "s1");
        let text = render(&registry);
        assert!(!text.contains("s1"), "{text}");
        assert!(text.contains("job=\"job-1\""), "{text}");
    }

    #[test]
    fn fps_is_smoothed() {
        let metrics = StreamMetrics::default();
        metrics.observe_interval(Duration::from_millis(100));
        metrics.observe_interval(Duration::from_millis(50));
        assert!((metrics.fps.get() - 11.0).abs() < 1e-9);
    }
}
