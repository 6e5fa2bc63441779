//! Frame sinks: an H.264 MP4 file and a folder of PNG frames.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use image::RgbImage;

use super::encoder::{EncodeSettings, H264Encoder};
use super::fragmented_writer::FragmentedMp4Writer;
use super::mp4_writer::Mp4Writer;
use super::segments::SegmentNames;
use super::{Frame, VideoError};

/// How an MP4 file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mp4Layout {
    /// Samples, then one index at the end (`process`): the most widely playable, but only
    /// once finished.
    #[default]
    Progressive,
    /// A fragment per keyframe interval, each on the disk before the next (`live`, server
    /// streams): a crash loses at most the last fragment.
    Fragmented,
}

/// The writer of one [`Mp4Layout`].
enum Writer {
    Progressive(Mp4Writer),
    Fragmented(FragmentedMp4Writer),
}

/// A recording cut into files of a fixed length.
struct Segments {
    names: SegmentNames,
    seconds: f64,
    /// Stream time of the current segment's first frame.
    started: Option<f64>,
    /// Frames in the segments already closed.
    closed_frames: usize,
}

/// Encodes frames into an MP4 file, or a series of them. The file is complete after
/// [`Mp4Sink::finish`], which also runs on drop, so an error or an interrupt leaves a
/// playable file of what was written.
pub struct Mp4Sink {
    path: PathBuf,
    fps: f64,
    settings: EncodeSettings,
    layout: Mp4Layout,
    state: Option<(H264Encoder, Writer)>,
    segments: Option<Segments>,
    finished: bool,
}

impl Mp4Sink {
    /// Prepares to write `path` in the progressive layout; fails early when the location is
    /// not writable.
    pub fn create(path: &Path, fps: f64, settings: EncodeSettings) -> Result<Self, VideoError> {
        Self::with_layout(path, fps, settings, Mp4Layout::Progressive)
    }

    /// Prepares to write `path` in `layout`; fails early when the location is not writable.
    pub fn with_layout(
        path: &Path,
        fps: f64,
        settings: EncodeSettings,
        layout: Mp4Layout,
    ) -> Result<Self, VideoError> {
        // Probe writability now rather than after the first (possibly slow) frame.
        std::fs::File::create(path)
            .map_err(|e| VideoError::output(path, format!("cannot create the output file: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            fps,
            settings,
            layout,
            state: None,
            segments: None,
            finished: false,
        })
    }

    /// Prepares to write segments of `seconds` of stream time each, named from `pattern`
    /// (see [`SegmentNames`]) with each segment's start time. Every segment starts with a
    /// keyframe and plays on its own.
    pub fn segmented(
        pattern: &Path,
        seconds: f64,
        fps: f64,
        settings: EncodeSettings,
        layout: Mp4Layout,
    ) -> Result<Self, VideoError> {
        let names = SegmentNames::new(pattern);
        let mut sink = Self::with_layout(&names.next(SystemTime::now()), fps, settings, layout)?;
        sink.segments = Some(Segments {
            names,
            seconds,
            started: None,
            closed_frames: 0,
        });
        Ok(sink)
    }

    /// Encodes and appends one frame (cropped to even dimensions for 4:2:0).
    pub fn write(&mut self, frame: &Frame, image: &RgbImage) -> Result<(), VideoError> {
        self.rotate(frame.pts)?;
        let (w, h) = (image.width() & !1, image.height() & !1);
        let cropped;
        let image = if (w, h) == image.dimensions() {
            image
        } else {
            cropped = image::imageops::crop_imm(image, 0, 0, w, h).to_image();
            &cropped
        };
        let fail = |e| VideoError::output(&self.path, e);
        let (sample, writer) = match &mut self.state {
            Some((encoder, writer)) => (encoder.encode(image).map_err(fail)?, writer),
            None => {
                let mut encoder = H264Encoder::new(w, h, self.fps, self.settings).map_err(fail)?;
                let sample = encoder.encode(image).map_err(fail)?;
                // After the first frame: the fragmented header needs the codec parameters.
                let writer = match self.layout {
                    Mp4Layout::Progressive => {
                        Writer::Progressive(Mp4Writer::create(&self.path, w, h)?)
                    }
                    Mp4Layout::Fragmented => Writer::Fragmented(FragmentedMp4Writer::create(
                        &self.path,
                        w,
                        h,
                        &encoder.sps,
                        &encoder.pps,
                    )?),
                };
                (sample, &mut self.state.insert((encoder, writer)).1)
            }
        };
        match writer {
            Writer::Progressive(w) => w.write_sample(&sample.avcc, frame.duration, sample.is_sync),
            Writer::Fragmented(w) => w.write_sample(&sample.avcc, frame.duration, sample.is_sync),
        }
    }

    /// Closes the current segment and starts the next when the segment's time is up at a
    /// frame of stream time `pts`.
    fn rotate(&mut self, pts: f64) -> Result<(), VideoError> {
        let Some(segments) = self.segments.as_mut() else {
            return Ok(());
        };
        let started = *segments.started.get_or_insert(pts);
        if pts - started < segments.seconds || self.state.is_none() {
            return Ok(());
        }
        segments.started = Some(pts);
        let next = segments.names.next(SystemTime::now());
        let frames = self.close_file()?;
        tracing::info!("wrote {} ({frames} frames)", self.path.display());
        if let Some(segments) = self.segments.as_mut() {
            segments.closed_frames += frames;
        }
        self.path = next;
        Ok(())
    }

    /// Writes the index; returns the number of frames written (in every segment).
    pub fn finish(&mut self) -> Result<usize, VideoError> {
        if self.finished {
            return Ok(0);
        }
        self.finished = true;
        let closed = self.segments.as_ref().map_or(0, |s| s.closed_frames);
        Ok(closed + self.close_file()?)
    }

    /// Finishes the current file; returns its number of frames.
    fn close_file(&mut self) -> Result<usize, VideoError> {
        match self.state.take() {
            Some((encoder, Writer::Progressive(writer))) => {
                writer.finish(&encoder.sps, &encoder.pps)
            }
            Some((_, Writer::Fragmented(writer))) => writer.finish(),
            None => {
                // Nothing was written: leave no empty, unplayable file behind.
                let _ = std::fs::remove_file(&self.path);
                Ok(0)
            }
        }
    }
}

impl Drop for Mp4Sink {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::error!("{e}");
        }
    }
}

/// Writes every frame as `frame_000000.png` into a folder.
pub struct PngFrameSink {
    dir: PathBuf,
}

impl PngFrameSink {
    pub fn create(dir: &Path) -> Result<Self, VideoError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| VideoError::output(dir, format!("cannot create the folder: {e}")))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn write(&self, frame: &Frame, image: &RgbImage) -> Result<(), VideoError> {
        let path = self.dir.join(format!("frame_{:06}.png", frame.index));
        image
            .save(&path)
            .map_err(|e| VideoError::output(&path, format!("cannot write PNG: {e}")))
    }
}
