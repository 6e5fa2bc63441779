//! Runs a source through the analysis stages into the sinks, on four threads: capture
//! (reading and decoding) → inference (the network, batching frames that wait) → analysis
//! (tracking, speeds, results, drawing) → encode.
//!
//! - **File mode**: bounded queues; a full queue blocks its producer (back-pressure: no frame
//!   of a file is lost).
//! - **Live mode**: capture never waits for the analysis. It hands frames over through a
//!   one-frame mailbox where the newest frame wins, so when the analysis falls behind, stale
//!   frames are dropped and counted and latency stays bounded instead of growing. Optional
//!   target analysis rate and latency limit.
//!
//! Ctrl-C (the `stop` flag) stops reading; frames already decoded are finished and the
//! outputs are finalised.

pub mod detect_stage;
pub mod latency;
pub mod latest;
pub mod pacing;
mod priority;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::time::{Duration, Instant};

use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};

use crate::detect::Detection;
use crate::live_view::LiveView;
use crate::metrics::StreamMetrics;
use crate::video::sink::{Mp4Sink, PngFrameSink};
use crate::video::{Frame, FrameSource, Outage, VideoError};
use latency::{LatencyRecorder, LatencySummary};
use latest::LatestSlot;
use pacing::RateLimiter;

/// Frames buffered between two stages.
const QUEUE_DEPTH: usize = 4;

/// The network, on its own thread.
pub trait DetectStage: Send {
    /// Detections for each frame (`None` for a frame it leaves out, e.g. with frame skipping).
    fn detect(&mut self, frames: &[&Frame]) -> Vec<Option<Vec<Detection>>>;
    /// How many waiting frames are worth one network call.
    fn max_batch(&self) -> usize {
        1
    }
}

/// The work done on each frame after the network: tracking, reporting, drawing.
pub trait FrameStage: Send {
    /// Analyses `frame` given the network's `detections` (`None`: the frame was not
    /// analysed) and draws the results into `canvas` (a copy of the frame).
    fn process(
        &mut self,
        frame: &Frame,
        detections: Option<&[Detection]>,
        canvas: &mut RgbImage,
    ) -> anyhow::Result<()>;
    /// Reports a live source's outage once it is over.
    fn record_outage(&mut self, _outage: &Outage) -> anyhow::Result<()> {
        Ok(())
    }
    /// Tracks currently alive (for metrics).
    fn active_tracks(&self) -> usize {
        0
    }
    /// Called once after the last frame.
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Where processed frames go.
#[derive(Default)]
pub struct Sinks {
    pub video: Option<Mp4Sink>,
    pub frames: Option<PngFrameSink>,
    /// Offered every frame; encodes at its own bounded rate while watched.
    pub view: Option<Arc<LiveView>>,
}

/// Live-mode settings.
#[derive(Debug, Clone, Default)]
pub struct LiveOptions {
    /// Analyse at most this many frames per second of stream time; the rest are skipped.
    pub target_fps: Option<f64>,
    /// Frames that waited longer than this before analysis are dropped.
    pub max_latency: Option<Duration>,
    /// Stop after this much wall time.
    pub duration: Option<Duration>,
}

/// How frames travel from capture to analysis.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// Every frame is analysed, in order; a slow analysis slows the reading.
    #[default]
    File,
    /// The newest frame wins.
    Live(LiveOptions),
}

/// Everything about a run besides its source, stage and sinks.
#[derive(Clone, Default)]
pub struct RunOptions {
    pub mode: Mode,
    /// Set (e.g. by Ctrl-C) to stop reading and finish. The run also sets it when it ends,
    /// however it ends, so a live source's reconnection loop stops with it.
    pub stop: Arc<AtomicBool>,
    pub show_progress: bool,
    /// Updated as the run goes (shared with `GET /metrics` under `serve`).
    pub metrics: StreamMetrics,
}

/// Counters of a finished run.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Frames the source delivered.
    pub frames_read: u64,
    /// Frames analysed.
    pub frames_processed: u64,
    /// Live mode: frames dropped because newer ones arrived or they were too old.
    pub frames_dropped: u64,
    /// Live mode: frames skipped to hold the target frame rate.
    pub frames_skipped: u64,
    pub frames_written: u64,
    pub corrupt_frames: u64,
    /// Outages of a live source.
    pub outages: u64,
    /// From leaving the source to results written.
    pub latency: Option<LatencySummary>,
    pub elapsed: Duration,
    pub interrupted: bool,
}

impl RunSummary {
    /// Analysed frames per second of wall time.
    pub fn fps(&self) -> f64 {
        self.frames_processed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// One line for the end of a run, e.g. `250 frames in 10.0 s (25.0 FPS), ...`.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} frames in {:.1} s ({:.1} FPS)",
            self.frames_processed,
            self.elapsed.as_secs_f64(),
            self.fps()
        );
        let extras = [
            (self.frames_dropped, "dropped"),
            (self.frames_skipped, "skipped for the target rate"),
            (self.corrupt_frames, "corrupt frames skipped"),
            (self.outages, "source outages"),
        ];
        for (count, label) in extras {
            if count > 0 {
                text.push_str(&format!(", {count} {label}"));
            }
        }
        if let Some(l) = &self.latency {
            text.push_str(&format!(
                ", latency p50 {:.0} ms p99 {:.0} ms max {:.0} ms",
                l.p50_ms, l.p99_ms, l.max_ms
            ));
        }
        if self.interrupted {
            text.push_str(", interrupted");
        }
        text
    }
}

/// A decoded frame and the moment it left the source.
struct Captured {
    frame: Frame,
    at: Instant,
}

/// Capture's side of the link to the analysis.
enum Outlet {
    Queue(SyncSender<Result<Captured, VideoError>>),
    Latest(Arc<LatestSlot<Captured, VideoError>>),
}

/// The analysis's side of the link.
enum Intake {
    Queue(Receiver<Result<Captured, VideoError>>),
    Latest(Arc<LatestSlot<Captured, VideoError>>),
}

impl Intake {
    /// Waits for the next frame; `None` at the end.
    fn next(&self) -> Option<Result<Captured, VideoError>> {
        match self {
            Self::Queue(rx) => rx.recv().ok(),
            Self::Latest(slot) => slot.take(),
        }
    }

    /// A frame already waiting in the queue (live mode never batches: there is only ever
    /// the newest frame).
    fn try_next(&self) -> Option<Result<Captured, VideoError>> {
        match self {
            Self::Queue(rx) => rx.try_recv().ok(),
            Self::Latest(_) => None,
        }
    }
}

/// What the capture thread counted.
#[derive(Default)]
struct CaptureCounts {
    read: u64,
    dropped: u64,
    skipped: u64,
    corrupt: u64,
}

/// Runs `source` through `detector` and `stage` into `sinks` until the end of the stream,
/// the live duration or `options.stop`.
pub fn run(
    mut source: Box<dyn FrameSource>,
    detector: &mut dyn DetectStage,
    stage: &mut dyn FrameStage,
    mut sinks: Sinks,
    options: &RunOptions,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let metrics = &options.metrics;
    let progress = progress_bar(source.info().frame_count, options.show_progress);
    let (outlet, intake, live) = match &options.mode {
        Mode::File => {
            let (tx, rx) = sync_channel(QUEUE_DEPTH);
            (Outlet::Queue(tx), Intake::Queue(rx), LiveOptions::default())
        }
        Mode::Live(live) => {
            let slot = Arc::new(LatestSlot::default());
            (
                Outlet::Latest(slot.clone()),
                Intake::Latest(slot),
                live.clone(),
            )
        }
    };
    let (outage_tx, outage_rx) = channel();
    let (detected_tx, detected_rx) = sync_channel::<Detected>(QUEUE_DEPTH);
    let (out_tx, out_rx) = sync_channel::<(Frame, RgbImage)>(QUEUE_DEPTH);
    let mut summary = RunSummary::default();
    let mut latencies = LatencyRecorder::default();
    let mut failure: Option<anyhow::Error> = None;
    let (counts, late, encoded) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let capture = {
            let (stop, metrics, live) = (&options.stop, metrics.clone(), live.clone());
            std::thread::Builder::new()
                .name("capture".into())
                .spawn_scoped(scope, move || {
                    priority::below_the_network();
                    let link = CaptureLink {
                        outlet,
                        outages: outage_tx,
                    };
                    capture_loop(source.as_mut(), link, stop, &live, &metrics)
                })?
        };
        let inference = {
            let metrics = metrics.clone();
            let max_latency = live.max_latency;
            std::thread::Builder::new()
                .name("inference".into())
                .spawn_scoped(scope, move || {
                    inference_loop(&intake, detector, &detected_tx, max_latency, &metrics)
                })?
        };
        let encoder = {
            let (metrics, sinks) = (metrics.clone(), &mut sinks);
            std::thread::Builder::new()
                .name("encode".into())
                .spawn_scoped(scope, move || {
                    priority::below_the_network();
                    encode_loop(out_rx, sinks, &metrics)
                })?
        };

        let mut last_done: Option<Instant> = None;
        for detected in detected_rx.iter() {
            if let Err(e) = report_outages(&outage_rx, stage, &mut summary) {
                failure = Some(e);
                break;
            }
            let DetectedFrame {
                captured,
                detections,
            } = match detected {
                Ok(detected) => detected,
                Err(e) => {
                    failure = Some(e.into());
                    break;
                }
            };
            let mut canvas = captured.frame.image.clone();
            let analysis_start = Instant::now();
            if let Err(e) = stage.process(&captured.frame, detections.as_deref(), &mut canvas) {
                failure = Some(e);
                break;
            }
            let done = Instant::now();
            metrics
                .analyse_seconds
                .observe((done - analysis_start).as_secs_f64());
            metrics
                .latency_seconds
                .observe((done - captured.at).as_secs_f64());
            latencies.record(done - captured.at);
            metrics.frames_processed.inc();
            metrics.active_tracks.set(stage.active_tracks() as i64);
            if let Some(previous) = last_done {
                metrics.observe_interval(done - previous);
            }
            last_done = Some(done);
            summary.frames_processed += 1;
            progress.inc(1);
            if out_tx.send((captured.frame, canvas)).is_err() {
                break; // The encoder stopped; its error is reported below.
            }
        }
        summary.interrupted = options.stop.load(Ordering::Relaxed);
        // Whatever ended the loop, capture must stop too (a live source would run on).
        options.stop.store(true, Ordering::Relaxed);
        drop(detected_rx);
        drop(out_tx);
        let late = inference.join().expect("inference thread does not panic");
        let counts = capture.join().expect("capture thread does not panic");
        let encoded = encoder.join().expect("encode thread does not panic");
        Ok((counts, late, encoded))
    })?;
    let outages_result = report_outages(&outage_rx, stage, &mut summary);
    let stage_result = stage.finish();
    progress.finish_and_clear();
    summary.elapsed = started.elapsed();
    summary.frames_read = counts.read;
    summary.frames_dropped = counts.dropped + late;
    summary.frames_skipped = counts.skipped;
    summary.corrupt_frames = counts.corrupt;
    summary.latency = latencies.summary();
    if let Some(e) = failure {
        return Err(e);
    }
    summary.frames_written = encoded?;
    outages_result?;
    stage_result?;
    Ok(summary)
}

/// A frame and what the network found in it (`None`: not analysed), or a source error.
type Detected = Result<DetectedFrame, VideoError>;

/// A frame past the network.
struct DetectedFrame {
    captured: Captured,
    detections: Option<Vec<Detection>>,
}

/// Runs the network over the frames as they come, batching frames that are already waiting
/// (file mode). Drops frames older than `max_latency`; returns how many.
fn inference_loop(
    intake: &Intake,
    detector: &mut dyn DetectStage,
    out: &SyncSender<Detected>,
    max_latency: Option<Duration>,
    metrics: &StreamMetrics,
) -> u64 {
    let mut late = 0;
    let mut pending_error = None;
    'frames: while let Some(item) = intake.next() {
        let mut batch = Vec::with_capacity(detector.max_batch());
        let mut next = Some(item);
        while let Some(item) = next.take() {
            match item {
                Ok(captured) if max_latency.is_some_and(|max| captured.at.elapsed() > max) => {
                    late += 1;
                    metrics.frames_dropped.inc();
                }
                Ok(captured) => batch.push(captured),
                Err(e) => {
                    pending_error = Some(e);
                    break;
                }
            }
            if batch.len() < detector.max_batch() {
                next = intake.try_next();
            }
        }
        if !batch.is_empty() {
            let inference_start = Instant::now();
            let frames: Vec<&Frame> = batch.iter().map(|c| &c.frame).collect();
            let found = detector.detect(&frames);
            let per_frame = inference_start.elapsed().as_secs_f64() / batch.len() as f64;
            for (captured, detections) in batch.into_iter().zip(found) {
                metrics.infer_seconds.observe(per_frame);
                if out
                    .send(Ok(DetectedFrame {
                        captured,
                        detections,
                    }))
                    .is_err()
                {
                    break 'frames;
                }
            }
        }
        if let Some(e) = pending_error.take() {
            let _ = out.send(Err(e));
            break;
        }
    }
    late
}

/// Hands outages the capture thread saw to the stage.
fn report_outages(
    outages: &Receiver<Outage>,
    stage: &mut dyn FrameStage,
    summary: &mut RunSummary,
) -> anyhow::Result<()> {
    for outage in outages.try_iter() {
        summary.outages += 1;
        stage.record_outage(&outage)?;
    }
    Ok(())
}

/// Where the capture thread sends frames and outages.
struct CaptureLink {
    outlet: Outlet,
    outages: Sender<Outage>,
}

fn capture_loop(
    source: &mut dyn FrameSource,
    link: CaptureLink,
    stop: &AtomicBool,
    live: &LiveOptions,
    metrics: &StreamMetrics,
) -> CaptureCounts {
    let started = Instant::now();
    let mut limiter = live.target_fps.map(RateLimiter::new);
    let mut counts = CaptureCounts::default();
    let end = loop {
        let out_of_time = live.duration.is_some_and(|d| started.elapsed() >= d);
        if stop.load(Ordering::Relaxed) || out_of_time {
            break Ok(());
        }
        let asked = Instant::now();
        let next = source.next_frame();
        for outage in source.take_outages() {
            metrics.reconnects.inc();
            let _ = link.outages.send(outage);
        }
        let frame = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        metrics
            .decode_seconds
            .observe(asked.elapsed().as_secs_f64());
        metrics.frames_in.inc();
        counts.read += 1;
        if let Some(limiter) = limiter.as_mut()
            && !limiter.admit(frame.pts)
        {
            counts.skipped += 1;
            metrics.frames_skipped.inc();
            continue;
        }
        let captured = Captured {
            frame,
            at: Instant::now(),
        };
        match &link.outlet {
            Outlet::Queue(tx) => {
                if tx.send(Ok(captured)).is_err() {
                    break Ok(());
                }
            }
            Outlet::Latest(slot) => {
                if slot.put(captured) {
                    counts.dropped += 1;
                    metrics.frames_dropped.inc();
                }
            }
        }
    };
    counts.corrupt = source.corrupt_frames();
    match link.outlet {
        Outlet::Queue(tx) => {
            if let Err(e) = end {
                let _ = tx.send(Err(e));
            }
        }
        Outlet::Latest(slot) => slot.close(end),
    }
    counts
}

/// Writes every frame; the video is finalised whether or not an error occurred. Each frame
/// is held until the next arrives so its duration is the real gap between the two (frames
/// dropped in live mode leave no jumps in the video's timing).
fn encode_loop(
    rx: Receiver<(Frame, RgbImage)>,
    sinks: &mut Sinks,
    metrics: &StreamMetrics,
) -> Result<u64, VideoError> {
    let mut written = 0;
    let mut held: Option<(Frame, RgbImage)> = None;
    let mut result = Ok(());
    for (frame, image) in rx.iter() {
        if let Some((mut previous, previous_image)) = held.take() {
            let gap = frame.pts - previous.pts;
            if gap > 0.0 {
                previous.duration = gap;
            }
            result = write_frame(sinks, &previous, &previous_image, metrics);
            if result.is_err() {
                break;
            }
            written += 1;
        }
        held = Some((frame, image));
    }
    if let (Ok(()), Some((frame, image))) = (&result, held) {
        result = write_frame(sinks, &frame, &image, metrics);
        written += u64::from(result.is_ok());
    }
    if let Some(video) = sinks.video.as_mut() {
        // After a failed write the finisher's error is the one to report: it carries the
        // write's cause and says how many frames the finalised file keeps.
        if let Err(e) = video.finish() {
            result = Err(e);
        }
    }
    result.map(|_| written)
}

fn write_frame(
    sinks: &mut Sinks,
    frame: &Frame,
    image: &RgbImage,
    metrics: &StreamMetrics,
) -> Result<(), VideoError> {
    let started = Instant::now();
    if let Some(video) = sinks.video.as_mut() {
        video.write(frame, image)?;
    }
    if let Some(frames) = sinks.frames.as_ref() {
        frames.write(frame, image)?;
    }
    if let Some(view) = sinks.view.as_ref() {
        view.offer_frame(image);
    }
    metrics
        .encode_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(())
}

fn progress_bar(total: Option<u64>, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    let template = if total.is_some() {
        "{bar:40} {pos}/{len} frames {per_sec} ETA {eta}"
    } else {
        "{spinner} {pos} frames {per_sec}"
    };
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    bar
}
