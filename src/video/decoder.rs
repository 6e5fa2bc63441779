//! H.264 decoding with openh264, in presentation order with presentation times.
//!
//! The decoder runs with `Flush::NoFlush` (flushing after every frame breaks streams with
//! B-frames) and the remaining pictures are flushed at end of stream. Pictures come out in
//! display order, so each output takes the smallest presentation time fed so far.

use image::RgbImage;
use openh264::OpenH264API;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;

/// A decoded picture and its presentation time in seconds.
pub type Picture = (f64, RgbImage);

/// openh264 plus presentation-time bookkeeping.
pub struct H264Decoder {
    decoder: Decoder,
    /// Presentation times of fed pictures not yet output, ascending.
    pending: Vec<f64>,
}

impl H264Decoder {
    pub fn new() -> Result<Self, String> {
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| format!("cannot start the H.264 decoder: {e}"))?;
        Ok(Self {
            decoder,
            pending: Vec::new(),
        })
    }

    /// Feeds parameter sets or other NAL units that carry no picture.
    pub fn feed_headers(&mut self, annexb: &[u8]) -> Result<(), String> {
        self.decoder
            .decode(annexb)
            .map(|_| ())
            .map_err(|e| format!("bad H.264 parameter sets: {e}"))
    }

    /// Decodes one access unit (Annex-B) presented at `pts`. On error the picture is dropped
    /// and the decoder stays usable for the following ones.
    pub fn decode(&mut self, annexb: &[u8], pts: f64) -> Result<Option<Picture>, String> {
        let at = self.pending.partition_point(|&p| p < pts);
        self.pending.insert(at, pts);
        match self.decoder.decode(annexb) {
            Ok(Some(yuv)) => {
                let image = to_rgb(&yuv);
                Ok(Some((self.pending.remove(0), image)))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                if let Some(i) = self.pending.iter().position(|&p| p == pts) {
                    self.pending.remove(i);
                }
                Err(format!("corrupt H.264 data: {e}"))
            }
        }
    }

    /// Returns the pictures still buffered at end of stream.
    pub fn flush(&mut self) -> Vec<Picture> {
        let frames: Vec<RgbImage> = match self.decoder.flush_remaining() {
            Ok(frames) => frames.iter().map(to_rgb).collect(),
            Err(e) => {
                tracing::warn!("flushing the H.264 decoder failed: {e}");
                Vec::new()
            }
        };
        frames
            .into_iter()
            .filter_map(|image| (!self.pending.is_empty()).then(|| (self.pending.remove(0), image)))
            .collect()
    }
}

fn to_rgb(yuv: &DecodedYUV<'_>) -> RgbImage {
    let (w, h) = yuv.dimensions();
    let mut buffer = vec![0u8; w * h * 3];
    yuv.write_rgb8(&mut buffer);
    RgbImage::from_raw(w as u32, h as u32, buffer).expect("buffer matches dimensions")
}
