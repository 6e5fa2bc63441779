//! H.264 encoding with openh264: RGB frames in, AVCC samples and parameter sets out.

use image::RgbImage;
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, RateControlMode,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};

use openh264_sys2::{ENCODER_OPTION_TRACE_CALLBACK, WelsTraceCallback};

use super::annexb::{nal_type, nals_to_avcc, split_annexb};

/// openh264's log lines (it warns at start-up that bitrate control without frame skipping is
/// approximate, which is the setting chosen here: no frame may be dropped) as debug events
/// of our log instead of lines on stderr.
unsafe extern "C" fn log_openh264(
    _context: *mut std::os::raw::c_void,
    _level: std::os::raw::c_int,
    message: *const std::os::raw::c_char,
) {
    if message.is_null() {
        return;
    }
    // SAFETY: openh264 passes a NUL-terminated string that is valid during the call.
    let text = unsafe { std::ffi::CStr::from_ptr(message) }.to_string_lossy();
    tracing::debug!(target: "streamtrack::openh264", "{}", text.trim_end());
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncodeSettings {
    /// Target bitrate in bits per second; `None` picks one from the frame size and rate.
    pub bitrate: Option<u32>,
    /// Longest distance between keyframes, in seconds.
    pub keyframe_interval_s: f64,
}

impl Default for EncodeSettings {
    fn default() -> Self {
        Self {
            bitrate: None,
            keyframe_interval_s: 2.0,
        }
    }
}

/// One encoded picture.
pub struct EncodedSample {
    /// NAL units with 4-byte length prefixes, parameter sets removed.
    pub avcc: Vec<u8>,
    /// True for IDR pictures (MP4 sync samples).
    pub is_sync: bool,
}

/// openh264 encoder producing MP4-ready samples.
pub struct H264Encoder {
    encoder: Encoder,
    yuv: YUVBuffer,
    width: u32,
    height: u32,
    /// Latest SPS and PPS seen in the stream.
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
}

impl H264Encoder {
    /// An encoder for `width` x `height` frames at `fps`. Odd sizes are rejected by H.264's
    /// 4:2:0 sampling, so frames are cropped to even sizes by the caller.
    pub fn new(
        width: u32,
        height: u32,
        fps: f64,
        settings: EncodeSettings,
    ) -> Result<Self, String> {
        // About 0.25 bits per pixel per frame keeps labels readable.
        let bitrate = settings.bitrate.unwrap_or_else(|| {
            ((width * height) as f64 * fps * 0.25).clamp(200_000.0, 40_000_000.0) as u32
        });
        let keyframe_every = (fps * settings.keyframe_interval_s).floor().max(1.0) as u32;
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(keyframe_every));
        let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| format!("cannot start the H.264 encoder: {e}"))?;
        let mut callback: WelsTraceCallback = Some(log_openh264);
        // SAFETY: the encoder exists (it initialises on the first frame; the trace options are
        // the ones openh264 accepts before that); the option reads the function pointer that
        // `callback` holds during the call, and the function lives for the whole program.
        let status = unsafe {
            encoder
                .raw_api()
                .set_option(ENCODER_OPTION_TRACE_CALLBACK, (&raw mut callback).cast())
        };
        if status != 0 {
            return Err(format!(
                "cannot route the H.264 encoder's log (status {status})"
            ));
        }
        Ok(Self {
            encoder,
            yuv: YUVBuffer::new(width as usize, height as usize),
            width,
            height,
            sps: Vec::new(),
            pps: Vec::new(),
        })
    }

    /// Encoded frame size `(width, height)`.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Encodes one frame (must have the encoder's size).
    pub fn encode(&mut self, image: &RgbImage) -> Result<EncodedSample, String> {
        assert_eq!(image.dimensions(), (self.width, self.height), "frame size");
        self.yuv.read_rgb8(RgbSliceU8::new(
            image.as_raw(),
            (self.width as usize, self.height as usize),
        ));
        let bitstream = self
            .encoder
            .encode(&self.yuv)
            .map_err(|e| format!("H.264 encoding failed: {e}"))?;
        let is_sync = matches!(bitstream.frame_type(), FrameType::IDR);
        let annexb = bitstream.to_vec();
        let mut pictures = Vec::new();
        for nal in split_annexb(&annexb) {
            match nal_type(nal) {
                7 => self.sps = nal.to_vec(),
                8 => self.pps = nal.to_vec(),
                _ => pictures.push(nal),
            }
        }
        if pictures.is_empty() {
            return Err("the H.264 encoder produced no picture for a frame".into());
        }
        Ok(EncodedSample {
            avcc: nals_to_avcc(pictures),
            is_sync,
        })
    }
}
