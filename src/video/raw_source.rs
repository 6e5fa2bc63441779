//! Raw Annex-B H.264 from a file or standard input. Such streams carry no timestamps, so
//! frames are timed at a fixed rate (`--fps`).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::annexb::{AccessUnitBuilder, split_annexb};
use super::damage::DamageLog;
use super::decoder::{H264Decoder, Picture};
use super::{Frame, FrameSource, StreamInfo, VideoError};

/// Bytes read from the stream per refill.
const CHUNK: usize = 1 << 16;

/// Decoded frames of a raw H.264 byte stream.
pub struct RawH264Source {
    name: PathBuf,
    reader: Box<dyn Read + Send>,
    buffer: Vec<u8>,
    units: AccessUnitBuilder,
    decoder: H264Decoder,
    ready: std::collections::VecDeque<Picture>,
    info: StreamInfo,
    fed: u64,
    next_index: u64,
    corrupt: u64,
    damage: DamageLog,
    eof: bool,
}

impl RawH264Source {
    /// Reads standard input.
    pub fn stdin(fps: f64) -> Result<Self, VideoError> {
        Self::new(PathBuf::from("<stdin>"), Box::new(std::io::stdin()), fps)
    }

    /// Reads a `.h264` file.
    pub fn file(path: &Path, fps: f64) -> Result<Self, VideoError> {
        let file = std::fs::File::open(path)
            .map_err(|e| VideoError::input(path, format!("cannot open: {e}")))?;
        Self::new(path.to_path_buf(), Box::new(file), fps)
    }

    fn new(name: PathBuf, reader: Box<dyn Read + Send>, fps: f64) -> Result<Self, VideoError> {
        let decoder = H264Decoder::new().map_err(|e| VideoError::input(&name, e))?;
        let mut source = Self {
            damage: DamageLog::new(name.display()),
            name,
            reader,
            buffer: Vec::new(),
            units: AccessUnitBuilder::default(),
            decoder,
            ready: Default::default(),
            info: StreamInfo {
                width: 0,
                height: 0,
                fps,
                frame_count: None,
            },
            fed: 0,
            next_index: 0,
            corrupt: 0,
            eof: false,
        };
        // Decode up to the first picture so the stream size is known.
        if let Some(first) = source.next_picture()? {
            source.info.width = first.1.width();
            source.info.height = first.1.height();
            source.ready.push_front(first);
        } else {
            return Err(VideoError::input(
                &source.name,
                "no H.264 picture found in the stream",
            ));
        }
        Ok(source)
    }

    fn decode_unit(&mut self, unit: &[u8]) {
        let pts = self.fed as f64 / self.info.fps;
        self.fed += 1;
        match self.decoder.decode(unit, pts) {
            Ok(picture) => {
                let concealed = self.decoder.take_concealed();
                self.damage
                    .concealed(concealed, format_args!("picture {}", self.fed));
                self.ready.extend(picture);
            }
            Err(e) => {
                self.corrupt += 1;
                self.damage.skipped(format_args!("picture {}", self.fed), e);
            }
        }
    }

    fn next_picture(&mut self) -> Result<Option<Picture>, VideoError> {
        while self.ready.is_empty() && !self.eof {
            let mut chunk = vec![0u8; CHUNK];
            let n = self
                .reader
                .read(&mut chunk)
                .map_err(|e| VideoError::input(&self.name, format!("read failed: {e}")))?;
            if n == 0 {
                self.eof = true;
            } else {
                self.buffer.extend_from_slice(&chunk[..n]);
            }
            // Keep the last (possibly incomplete) NAL unit in the buffer until more arrives.
            let nals = split_annexb(&self.buffer);
            let complete = if self.eof {
                nals.len()
            } else {
                nals.len().saturating_sub(1)
            };
            let units: Vec<Vec<u8>> = nals[..complete]
                .iter()
                .filter_map(|nal| self.units.push(nal))
                .collect();
            let consumed = if complete == nals.len() {
                self.buffer.len()
            } else {
                let last = nals[complete];
                last.as_ptr() as usize - self.buffer.as_ptr() as usize - 3
            };
            self.buffer.drain(..consumed);
            for unit in units {
                self.decode_unit(&unit);
            }
            if self.eof {
                if let Some(unit) = self.units.take() {
                    self.decode_unit(&unit);
                }
                let rest = self.decoder.flush();
                self.ready.extend(rest);
                self.damage.finish();
            }
        }
        Ok(self.ready.pop_front())
    }
}

impl FrameSource for RawH264Source {
    fn info(&self) -> &StreamInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        Ok(self.next_picture()?.map(|(pts, image)| {
            let index = self.next_index;
            self.next_index += 1;
            Frame {
                index,
                pts,
                duration: 1.0 / self.info.fps,
                image,
            }
        }))
    }

    fn corrupt_frames(&self) -> u64 {
        self.corrupt
    }
}
