//! Frame sinks: an H.264 MP4 file and a folder of PNG frames.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::encoder::{EncodeSettings, H264Encoder};
use super::mp4_writer::Mp4Writer;
use super::{Frame, VideoError};

/// Encodes frames into an MP4 file. The file is complete after [`Mp4Sink::finish`], which
/// also runs on drop, so an error or an interrupt leaves a playable file of what was written.
pub struct Mp4Sink {
    path: PathBuf,
    fps: f64,
    settings: EncodeSettings,
    state: Option<(H264Encoder, Mp4Writer)>,
    finished: bool,
}

impl Mp4Sink {
    /// Prepares to write `path`; fails early when the location is not writable.
    pub fn create(path: &Path, fps: f64, settings: EncodeSettings) -> Result<Self, VideoError> {
        // Probe writability now rather than after the first (possibly slow) frame.
        std::fs::File::create(path)
            .map_err(|e| VideoError::output(path, format!("cannot create the output file: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            fps,
            settings,
            state: None,
            finished: false,
        })
    }

    /// Encodes and appends one frame (cropped to even dimensions for 4:2:0).
    pub fn write(&mut self, frame: &Frame, image: &RgbImage) -> Result<(), VideoError> {
        let (w, h) = (image.width() & !1, image.height() & !1);
        if self.state.is_none() {
            let encoder = H264Encoder::new(w, h, self.fps, self.settings)
                .map_err(|e| VideoError::output(&self.path, e))?;
            let writer = Mp4Writer::create(&self.path, w, h)?;
            self.state = Some((encoder, writer));
        }
        let (encoder, writer) = self.state.as_mut().expect("initialised above");
        let sample = if (w, h) == image.dimensions() {
            encoder.encode(image)
        } else {
            encoder.encode(&image::imageops::crop_imm(image, 0, 0, w, h).to_image())
        }
        .map_err(|e| VideoError::output(&self.path, e))?;
        writer.write_sample(&sample.avcc, frame.duration, sample.is_sync)
    }

    /// Writes the index; returns the number of frames in the file.
    pub fn finish(&mut self) -> Result<usize, VideoError> {
        if self.finished {
            return Ok(0);
        }
        self.finished = true;
        match self.state.take() {
            Some((encoder, writer)) => writer.finish(&encoder.sps, &encoder.pps),
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
