//! Runs a source through the analysis stages into the sinks, on three threads joined by
//! bounded channels: decode → analyse (detect, track, annotate) → encode. A full queue
//! blocks its producer (back-pressure: no frame of a file is lost). Ctrl-C stops reading;
//! frames already decoded are finished and the outputs are finalised.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};

use crate::video::sink::{Mp4Sink, PngFrameSink};
use crate::video::{Frame, FrameSource, VideoError};

/// Frames buffered between two stages.
const QUEUE_DEPTH: usize = 4;

/// The work done on each frame between decoding and encoding.
pub trait FrameStage: Send {
    /// Analyses `frame` and draws the results into `canvas` (a copy of the frame).
    fn process(&mut self, frame: &Frame, canvas: &mut RgbImage) -> anyhow::Result<()>;
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
}

/// Counters of a finished run.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub frames_decoded: u64,
    pub frames_written: u64,
    pub corrupt_frames: u64,
    pub elapsed: Duration,
    pub interrupted: bool,
}

impl RunSummary {
    /// Processed frames per second of wall time.
    pub fn fps(&self) -> f64 {
        self.frames_decoded as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `source` through `stage` into `sinks` until the end of the stream or `stop`.
pub fn run(
    mut source: Box<dyn FrameSource>,
    stage: &mut dyn FrameStage,
    mut sinks: Sinks,
    stop: Arc<AtomicBool>,
    show_progress: bool,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let progress = progress_bar(source.info().frame_count, show_progress);
    let (frame_tx, frame_rx) = sync_channel::<Result<Frame, VideoError>>(QUEUE_DEPTH);
    let (out_tx, out_rx) = sync_channel::<(Frame, RgbImage)>(QUEUE_DEPTH);
    let decode_stop = stop.clone();
    let decoder = std::thread::Builder::new()
        .name("decode".into())
        .spawn(move || {
            decode_loop(source.as_mut(), frame_tx, &decode_stop).map(|_| source.corrupt_frames())
        })?;
    let encoder = std::thread::Builder::new()
        .name("encode".into())
        .spawn(move || encode_loop(out_rx, &mut sinks))?;

    let mut summary = RunSummary::default();
    let mut failure: Option<anyhow::Error> = None;
    for item in frame_rx.iter() {
        let frame = match item {
            Ok(frame) => frame,
            Err(e) => {
                failure = Some(e.into());
                break;
            }
        };
        let mut canvas = frame.image.clone();
        if let Err(e) = stage.process(&frame, &mut canvas) {
            failure = Some(e);
            break;
        }
        summary.frames_decoded += 1;
        progress.inc(1);
        if out_tx.send((frame, canvas)).is_err() {
            break; // The encoder stopped; its error is reported below.
        }
    }
    drop(frame_rx);
    drop(out_tx);
    let stage_result = stage.finish();
    let encoded = encoder.join().expect("encode thread does not panic");
    let decoded = decoder.join().expect("decode thread does not panic");
    progress.finish_and_clear();
    summary.elapsed = started.elapsed();
    summary.interrupted = stop.load(Ordering::Relaxed);
    if let Some(e) = failure {
        return Err(e);
    }
    summary.corrupt_frames = decoded?;
    summary.frames_written = encoded?;
    stage_result?;
    Ok(summary)
}

fn decode_loop(
    source: &mut dyn FrameSource,
    tx: SyncSender<Result<Frame, VideoError>>,
    stop: &AtomicBool,
) -> Result<(), VideoError> {
    while !stop.load(Ordering::Relaxed) {
        match source.next_frame() {
            Ok(Some(frame)) => {
                if tx.send(Ok(frame)).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        }
    }
    Ok(())
}

/// Writes every frame; the video is finalised whether or not an error occurred.
fn encode_loop(rx: Receiver<(Frame, RgbImage)>, sinks: &mut Sinks) -> Result<u64, VideoError> {
    let mut written = 0;
    let mut result = Ok(());
    for (frame, image) in rx.iter() {
        if let Some(video) = sinks.video.as_mut() {
            result = video.write(&frame, &image);
        }
        if let (Ok(()), Some(frames)) = (&result, sinks.frames.as_ref()) {
            result = frames.write(&frame, &image);
        }
        if result.is_err() {
            break;
        }
        written += 1;
    }
    if let Some(video) = sinks.video.as_mut() {
        let finished = video.finish();
        result = result.and(finished.map(|_| ()));
    }
    result.map(|_| written)
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
