//! Live sources named on the command line or in an API request: webcams, RTSP cameras,
//! raw H.264 on stdin, and files played at their own rate to simulate a camera.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::rtsp::{RtspOptions, RtspSource};
use super::webcam::WebcamSource;
use super::{Frame, FrameSource, Outage, StreamInfo, VideoError, open_source};

/// Where a live stream comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveSpec {
    /// A V4L2 device (`0` means `/dev/video0`).
    Camera(PathBuf),
    /// An `rtsp://` URL.
    Rtsp(String),
    /// Raw H.264 (Annex B) on standard input.
    Stdin,
    /// A video file or raw H.264 file.
    File(PathBuf),
}

impl LiveSpec {
    /// `N` and `/dev/videoN` are cameras (as are the stable names under `/dev/v4l/by-id/`
    /// and `/dev/v4l/by-path/`), `rtsp://…` is RTSP, `-` is stdin, anything else is a file.
    /// A camera path is matched whole, so `/dev/video0/../../etc/passwd` is a file path (and
    /// the server refuses it as outside its media root).
    pub fn parse(text: &str) -> Self {
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let stable_name = |t: &str| {
            ["/dev/v4l/by-id/", "/dev/v4l/by-path/"]
                .iter()
                .filter_map(|prefix| t.strip_prefix(prefix))
                .any(|name| !name.is_empty() && !name.contains('/'))
        };
        if text == "-" {
            Self::Stdin
        } else if text.starts_with("rtsp://") {
            Self::Rtsp(text.to_string())
        } else if digits(text) {
            Self::Camera(PathBuf::from(format!("/dev/video{text}")))
        } else if text.strip_prefix("/dev/video").is_some_and(digits) || stable_name(text) {
            Self::Camera(PathBuf::from(text))
        } else {
            Self::File(PathBuf::from(text))
        }
    }
}

/// How live sources are opened.
#[derive(Debug, Clone, Default)]
pub struct LiveSourceOptions {
    /// Play files at their own frame rate, like a camera.
    pub realtime: bool,
    /// Start files over at their end, forever.
    pub looped: bool,
    /// Frame rate of raw H.264, which carries no timestamps.
    pub raw_fps: f64,
    /// Requested camera resolution.
    pub camera_size: Option<(u32, u32)>,
    pub rtsp: RtspOptions,
}

/// Opens `spec`; `stop` interrupts waiting for a camera that is not there yet.
pub fn open_live_source(
    spec: &LiveSpec,
    options: &LiveSourceOptions,
    stop: Arc<AtomicBool>,
) -> Result<Box<dyn FrameSource>, VideoError> {
    Ok(match spec {
        LiveSpec::Camera(path) => Box::new(WebcamSource::open(path, options.camera_size)?),
        LiveSpec::Rtsp(url) => Box::new(RtspSource::open(url, options.rtsp.clone(), stop)?),
        LiveSpec::Stdin => open_source(Path::new("-"), options.raw_fps)?,
        LiveSpec::File(path) => {
            let source = if options.looped {
                Box::new(LoopingSource::open(path, options.raw_fps)?)
            } else {
                open_source(path, options.raw_fps)?
            };
            if options.realtime {
                Box::new(RealtimeSource::new(source))
            } else {
                source
            }
        }
    })
}

/// A file played over and over, with indices and times continuing across the restarts.
pub struct LoopingSource {
    path: PathBuf,
    raw_fps: f64,
    inner: Box<dyn FrameSource>,
    /// Added to the current pass's indices and times.
    index_offset: u64,
    time_offset: f64,
    /// Index and end time of the last frame delivered.
    next_index: u64,
    end_time: f64,
    /// Presentation time of the file's first frame (files need not start at 0).
    first_pts: Option<f64>,
}

impl LoopingSource {
    pub fn open(path: &Path, raw_fps: f64) -> Result<Self, VideoError> {
        Ok(Self {
            path: path.to_path_buf(),
            raw_fps,
            inner: open_source(path, raw_fps)?,
            index_offset: 0,
            time_offset: 0.0,
            next_index: 0,
            end_time: 0.0,
            first_pts: None,
        })
    }
}

impl FrameSource for LoopingSource {
    fn info(&self) -> &StreamInfo {
        self.inner.info()
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        let mut restarted = false;
        loop {
            if let Some(mut frame) = self.inner.next_frame()? {
                self.first_pts.get_or_insert(frame.pts);
                frame.index += self.index_offset;
                frame.pts += self.time_offset;
                self.next_index = frame.index + 1;
                self.end_time = self.end_time.max(frame.pts + frame.duration);
                return Ok(Some(frame));
            }
            if restarted {
                return Ok(None); // An empty file: nothing to loop.
            }
            restarted = true;
            let info = self.inner.info().clone();
            self.inner = open_source(&self.path, self.raw_fps)?;
            if (self.inner.info().width, self.inner.info().height) != (info.width, info.height) {
                return Err(VideoError::input(
                    &self.path,
                    "the file changed while looping",
                ));
            }
            self.index_offset = self.next_index;
            // The next pass's first frame follows this pass's last one without a gap.
            self.time_offset = self.end_time - self.first_pts.unwrap_or(0.0);
        }
    }

    fn corrupt_frames(&self) -> u64 {
        self.inner.corrupt_frames()
    }
}

/// Delivers each frame of the wrapped source no earlier than its presentation time after the
/// first frame, like a camera would.
pub struct RealtimeSource {
    inner: Box<dyn FrameSource>,
    /// Wall-clock instant and presentation time of the first frame.
    origin: Option<(Instant, f64)>,
}

impl RealtimeSource {
    pub fn new(inner: Box<dyn FrameSource>) -> Self {
        Self {
            inner,
            origin: None,
        }
    }
}

impl FrameSource for RealtimeSource {
    fn info(&self) -> &StreamInfo {
        self.inner.info()
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        let Some(frame) = self.inner.next_frame()? else {
            return Ok(None);
        };
        let (start, first_pts) = *self.origin.get_or_insert((Instant::now(), frame.pts));
        let due = start + Duration::from_secs_f64((frame.pts - first_pts).max(0.0));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        Ok(Some(frame))
    }

    fn corrupt_frames(&self) -> u64 {
        self.inner.corrupt_frames()
    }

    fn take_outages(&mut self) -> Vec<Outage> {
        self.inner.take_outages()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_are_recognised() {
        assert_eq!(LiveSpec::parse("0"), LiveSpec::Camera("/dev/video0".into()));
        assert_eq!(
            LiveSpec::parse("/dev/video2"),
            LiveSpec::Camera("/dev/video2".into())
        );
        assert_eq!(
            LiveSpec::parse("rtsp://cam/1"),
            LiveSpec::Rtsp("rtsp://cam/1".into())
        );
        assert_eq!(LiveSpec::parse("-"), LiveSpec::Stdin);
        assert_eq!(LiveSpec::parse("a.mp4"), LiveSpec::File("a.mp4".into()));
        let by_id = "/dev/v4l/by-id/usb-cam-video-index0";
        assert_eq!(LiveSpec::parse(by_id), LiveSpec::Camera(by_id.into()));
        for not_camera in [
            "/dev/video0/../../etc/passwd",
            "/dev/videox",
            "/dev/v4l/by-id/../x/y",
        ] {
            assert_eq!(
                LiveSpec::parse(not_camera),
                LiveSpec::File(not_camera.into()),
                "{not_camera}"
            );
        }
    }

    #[test]
    fn a_looped_file_continues_its_indices_and_times() {
        let path = Path::new("../shared/data/video/traffic-640x360.mp4");
        let inner = crate::video::FirstFrames::new(open_source(path, 25.0).unwrap(), 3);
        assert_eq!(inner.info().frame_count, Some(3));
        let mut source = LoopingSource::open(path, 25.0).unwrap();
        source.inner = Box::new(inner);
        let frames: Vec<Frame> = (0..5)
            .map(|_| source.next_frame().unwrap().unwrap())
            .collect();
        let indices: Vec<u64> = frames.iter().map(|f| f.index).collect();
        assert_eq!(indices, [0, 1, 2, 3, 4]);
        for pair in frames.windows(2) {
            assert!(
                pair[1].pts > pair[0].pts,
                "{} then {}",
                pair[0].pts,
                pair[1].pts
            );
        }
        // The second pass restarts the file from its first frame, one frame after the last.
        assert_eq!(frames[3].image, frames[0].image);
        let step = frames[1].pts - frames[0].pts;
        assert!(
            (frames[3].pts - frames[2].pts - step).abs() < 1e-6,
            "no gap at the restart"
        );
    }

    #[test]
    fn a_file_played_in_real_time_takes_its_duration() {
        let path = Path::new("../shared/data/video/traffic-640x360.mp4");
        let options = LiveSourceOptions {
            realtime: true,
            ..LiveSourceOptions::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut source = open_live_source(&LiveSpec::File(path.into()), &options, stop).unwrap();
        // The pacing clock starts when the first frame is delivered, after this instant.
        let started = Instant::now();
        let first = source.next_frame().unwrap().unwrap().pts;
        let mut last = None;
        for _ in 0..8 {
            last = source.next_frame().unwrap();
        }
        let played = last.unwrap().pts - first;
        let elapsed = started.elapsed().as_secs_f64();
        assert!(played > 0.2, "{played} s played");
        assert!(
            elapsed >= played,
            "{elapsed:.3} s wall for {played:.3} s of video"
        );
    }
}
