//! MP4 (ISO BMFF) input with an H.264 video track, regular or fragmented.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use re_mp4::{Mp4, StsdBoxContent, TrackKind};

use super::annexb::avcc_to_annexb;
use super::damage::DamageLog;
use super::decoder::{H264Decoder, Picture};
use super::mp4_boxes::check_box_tree;
use super::{Frame, FrameSource, StreamInfo, VideoError};

/// Compressed samples of the video track, for decoding or benchmarking.
pub struct Mp4Track {
    path: PathBuf,
    file: BufReader<File>,
    samples: Vec<re_mp4::Sample>,
    next_sample: usize,
    length_size: usize,
    /// SPS and PPS from `avcC`, as Annex-B.
    pub parameter_sets: Vec<u8>,
    pub info: StreamInfo,
}

impl Mp4Track {
    /// Opens the first H.264 video track of `path`.
    pub fn open(path: &Path) -> Result<Self, VideoError> {
        let fail = |m: String| VideoError::input(path, m);
        let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        let size = file.metadata().map_err(|e| fail(e.to_string()))?.len();
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 8];
        if reader.read_exact(&mut magic).is_err() || !is_iso_bmff(&magic) {
            return Err(fail(
                "not an MP4 file (no ISO BMFF box at the start)".into(),
            ));
        }
        let readable = check_box_tree(&mut reader, size)
            .map_err(|e| fail(format!("not a readable MP4 file (corrupt: {e})")))?;
        if readable < size {
            tracing::warn!(
                "{}: the file is truncated: the box at byte {readable} is cut short",
                path.display()
            );
        }
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| fail(e.to_string()))?;
        // The demuxer indexes its sample tables without checking them against each other;
        // tables that disagree (found by mutation testing) make it panic, which is a corrupt
        // file here, not the end of the process.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Mp4::read(&mut reader, readable)
        }))
        .map_err(|_| fail("not a readable MP4 file (its sample tables disagree)".into()))?;
        let mp4 = read.map_err(|e| {
            fail(format!(
                "not a readable MP4 file (truncated or corrupt: {e})"
            ))
        })?;
        let track = mp4
            .tracks()
            .values()
            .find(|t| {
                t.kind == Some(TrackKind::Video)
                    || &t.trak(&mp4).mdia.hdlr.handler_type.value == b"vide"
            })
            .ok_or_else(|| fail("the file has no video track".into()))?;
        let avc = match &track.trak(&mp4).mdia.minf.stbl.stsd.contents {
            StsdBoxContent::Avc1(avc) => avc,
            other => {
                return Err(fail(format!(
                    "the video track is {}, not H.264; only H.264 is supported",
                    codec_name(other)
                )));
            }
        };
        let avcc = &avc.avcc.contents;
        let mut parameter_sets = Vec::new();
        for nal in avcc
            .sequence_parameter_sets
            .iter()
            .chain(&avcc.picture_parameter_sets)
        {
            parameter_sets.extend_from_slice(&super::annexb::START_CODE);
            parameter_sets.extend_from_slice(&nal.bytes);
        }
        if track.timescale == 0 {
            return Err(fail(
                "the video track's timescale is 0 (its media header 'mdhd' is corrupt)".into(),
            ));
        }
        let mut samples = track.samples.clone();
        // A truncated file keeps the samples before the cut (decode order is file order in
        // every writer we know; a sample past the end stops the track there).
        if let Some(cut) = samples
            .iter()
            .position(|s| s.offset.checked_add(s.size).is_none_or(|end| end > size))
        {
            if cut == 0 {
                return Err(fail(format!(
                    "the file is truncated: none of its {} video samples lies inside it",
                    samples.len()
                )));
            }
            tracing::warn!(
                "{}: the file is truncated: reading the first {cut} of {} video samples",
                path.display(),
                samples.len()
            );
            samples.truncate(cut);
        }
        // Nominal rate from the typical sample duration (robust to edit lists and a
        // different last duration).
        let mut durations: Vec<u64> = samples
            .iter()
            .map(|s| s.duration)
            .filter(|&d| d > 0)
            .collect();
        durations.sort_unstable();
        let fps = match durations.get(durations.len() / 2) {
            Some(&d) => track.timescale as f64 / d as f64,
            None => 25.0,
        };
        let info = StreamInfo {
            width: track.width as u32,
            height: track.height as u32,
            fps,
            frame_count: Some(samples.len() as u64),
        };
        Ok(Self {
            path: path.to_path_buf(),
            file: reader,
            samples,
            next_sample: 0,
            length_size: avcc.length_size_minus_one as usize + 1,
            parameter_sets,
            info,
        })
    }

    /// The next sample in decode order as Annex-B (`Err` text when its NAL framing is
    /// broken), with its presentation time and duration.
    #[allow(clippy::type_complexity)]
    pub fn next_sample(
        &mut self,
    ) -> Result<Option<(Result<Vec<u8>, String>, f64, f64)>, VideoError> {
        let Some(sample) = self.samples.get(self.next_sample).copied() else {
            return Ok(None);
        };
        self.next_sample += 1;
        let mut data = vec![0u8; sample.size as usize];
        self.file
            .seek(SeekFrom::Start(sample.offset))
            .and_then(|_| self.file.read_exact(&mut data))
            .map_err(|e| {
                VideoError::input(&self.path, format!("cannot read sample {}: {e}", sample.id))
            })?;
        let mut annexb = Vec::with_capacity(data.len() + 16);
        let annexb = avcc_to_annexb(&data, self.length_size, &mut annexb).map(|_| annexb);
        let timescale = sample.timescale as f64;
        Ok(Some((
            annexb,
            sample.composition_timestamp as f64 / timescale,
            sample.duration as f64 / timescale,
        )))
    }
}

/// Decoded frames of an MP4 file.
pub struct Mp4Source {
    track: Mp4Track,
    decoder: H264Decoder,
    ready: std::collections::VecDeque<Picture>,
    frame_duration: f64,
    next_index: u64,
    corrupt: u64,
    damage: DamageLog,
    flushed: bool,
}

impl Mp4Source {
    pub fn open(path: &Path) -> Result<Self, VideoError> {
        let track = Mp4Track::open(path)?;
        let mut decoder = H264Decoder::new().map_err(|e| VideoError::input(path, e))?;
        decoder
            .feed_headers(&track.parameter_sets)
            .map_err(|e| VideoError::input(path, e))?;
        Ok(Self {
            frame_duration: 1.0 / track.info.fps,
            track,
            decoder,
            ready: Default::default(),
            next_index: 0,
            corrupt: 0,
            damage: DamageLog::new(path.display()),
            flushed: false,
        })
    }
}

impl FrameSource for Mp4Source {
    fn info(&self) -> &StreamInfo {
        &self.track.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        while self.ready.is_empty() && !self.flushed {
            match self.track.next_sample()? {
                Some((annexb, pts, duration)) => {
                    self.frame_duration = duration;
                    match annexb.and_then(|unit| self.decoder.decode(&unit, pts)) {
                        Ok(picture) => {
                            let concealed = self.decoder.take_concealed();
                            self.damage
                                .concealed(concealed, format_args!("at {pts:.3}s"));
                            self.ready.extend(picture);
                        }
                        Err(e) => {
                            self.corrupt += 1;
                            self.damage.skipped(format_args!("at {pts:.3}s"), e);
                        }
                    }
                }
                None => {
                    self.ready.extend(self.decoder.flush());
                    self.flushed = true;
                    self.damage.finish();
                }
            }
        }
        Ok(self.ready.pop_front().map(|(pts, image)| {
            let index = self.next_index;
            self.next_index += 1;
            Frame {
                index,
                pts,
                duration: self.frame_duration,
                image,
            }
        }))
    }

    fn corrupt_frames(&self) -> u64 {
        self.corrupt
    }
}

/// True when the first 8 bytes look like an ISO BMFF box header (`ftyp`, `moov`, ...).
fn is_iso_bmff(header: &[u8; 8]) -> bool {
    matches!(
        &header[4..8],
        b"ftyp" | b"moov" | b"mdat" | b"free" | b"skip" | b"wide" | b"styp" | b"moof"
    )
}

fn codec_name(content: &StsdBoxContent) -> String {
    match content {
        StsdBoxContent::Av01(_) => "AV1".into(),
        StsdBoxContent::Hev1(_) | StsdBoxContent::Hvc1(_) => "H.265/HEVC".into(),
        StsdBoxContent::Vp08(_) => "VP8".into(),
        StsdBoxContent::Vp09(_) => "VP9".into(),
        StsdBoxContent::Unknown(fourcc) => format!("'{fourcc}'"),
        _ => "not video".into(),
    }
}
