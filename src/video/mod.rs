//! Video in and out: sources of decoded RGB frames with presentation times, and sinks.
//!
//! Sources: MP4 (H.264, regular or fragmented), raw Annex-B H.264 files or stdin, still
//! images, and live: RTSP cameras, V4L2 webcams and files played in real time. Sinks: H.264
//! MP4 and PNG frame folders.

pub mod annexb;
pub mod damage;
pub mod decoder;
pub mod encoder;
pub mod fragmented_writer;
pub mod images;
pub mod jpeg;
pub mod live;
pub mod mp4_boxes;
pub mod mp4_source;
pub mod mp4_writer;
pub mod raw_source;
pub mod rtsp;
pub mod segments;
pub mod sink;
pub mod webcam;

use std::path::{Path, PathBuf};

use image::RgbImage;

/// One decoded frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// 0-based index in presentation order among the frames the source delivered.
    pub index: u64,
    /// Presentation time in seconds from the start of the stream.
    pub pts: f64,
    /// Display duration in seconds.
    pub duration: f64,
    pub image: RgbImage,
}

/// What a source knows about its stream before decoding it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    pub width: u32,
    pub height: u32,
    /// Nominal frame rate.
    pub fps: f64,
    /// Number of frames, when known in advance (files).
    pub frame_count: Option<u64>,
}

/// Why a video could not be read or written. Every message names the file or stream.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Output { path: PathBuf, message: String },
}

impl VideoError {
    /// An input-side error about `path`.
    pub fn input(path: &Path, message: impl Into<String>) -> Self {
        Self::Input {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// An output-side error about `path`.
    pub fn output(path: &Path, message: impl Into<String>) -> Self {
        Self::Output {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// A stream of decoded frames in presentation order.
pub trait FrameSource: Send {
    /// Stream geometry and rate.
    fn info(&self) -> &StreamInfo;
    /// The next frame; `Ok(None)` at the end of the stream.
    fn next_frame(&mut self) -> Result<Option<Frame>, VideoError>;
    /// Frames that could not be decoded and were skipped so far.
    fn corrupt_frames(&self) -> u64 {
        0
    }
    /// Outages of a live source that ended since the last call (the source reconnected).
    fn take_outages(&mut self) -> Vec<Outage> {
        Vec::new()
    }
}

/// A time a live source delivered nothing: from losing it to its first frame back.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outage {
    /// Where the stream comes from (URL without credentials, device or file).
    pub source: String,
    /// Why the stream was lost.
    pub reason: String,
    /// Unix time, seconds, when the stream was lost.
    pub lost_at: f64,
    /// How long until frames flowed again, seconds.
    pub duration: f64,
    /// Connection attempts it took.
    pub attempts: u32,
}

/// Frame rate assumed for raw H.264, which carries no timestamps, unless the user gives one.
pub const DEFAULT_RAW_FPS: f64 = 25.0;

/// Opens `path` as a frame source: `-` is raw H.264 on stdin; `.h264`/`.264` files are raw
/// Annex-B; image files and folders of images are still images; anything else must be MP4.
pub fn open_source(path: &Path, fallback_fps: f64) -> Result<Box<dyn FrameSource>, VideoError> {
    if path == Path::new("-") {
        return Ok(Box::new(raw_source::RawH264Source::stdin(fallback_fps)?));
    }
    if !path.exists() {
        return Err(VideoError::input(path, "no such file or directory"));
    }
    if path.is_dir() || images::is_image_path(path) {
        return Ok(Box::new(images::ImageSource::open(path)?));
    }
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if extension == "h264" || extension == "264" {
        return Ok(Box::new(raw_source::RawH264Source::file(
            path,
            fallback_fps,
        )?));
    }
    Ok(Box::new(mp4_source::Mp4Source::open(path)?))
}

/// Calls `visit` with about `count` evenly spaced frames of the source at `path` and
/// returns how many it saw.
pub fn for_each_sampled_frame(
    path: &Path,
    count: usize,
    mut visit: impl FnMut(&Frame),
) -> Result<usize, VideoError> {
    let mut source = open_source(path, DEFAULT_RAW_FPS)?;
    let total = source.info().frame_count.unwrap_or(count as u64);
    let stride = (total / count.max(1) as u64).max(1);
    let mut seen = 0;
    while let Some(frame) = source.next_frame()? {
        if frame.index.is_multiple_of(stride) {
            visit(&frame);
            seen += 1;
        }
    }
    Ok(seen)
}

/// The first frames of a source only (a preview, a benchmark's sample).
pub struct FirstFrames {
    inner: Box<dyn FrameSource>,
    left: u64,
    info: StreamInfo,
}

impl FirstFrames {
    pub fn new(inner: Box<dyn FrameSource>, frames: u64) -> Self {
        let mut info = inner.info().clone();
        info.frame_count = Some(info.frame_count.map_or(frames, |n| n.min(frames)));
        Self {
            inner,
            left: frames,
            info,
        }
    }
}

impl FrameSource for FirstFrames {
    fn info(&self) -> &StreamInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.inner.next_frame()
    }

    fn corrupt_frames(&self) -> u64 {
        self.inner.corrupt_frames()
    }
}
