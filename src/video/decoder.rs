//! H.264 decoding with openh264, in presentation order with presentation times.
//!
//! The decoder runs with `Flush::NoFlush` (flushing after every frame breaks streams with
//! B-frames) and the remaining pictures are flushed at end of stream. Pictures come out in
//! display order, so each output takes the smallest presentation time fed so far.
//!
//! Damaged data is concealed the way openh264 can: a slice it cannot decode is filled from
//! earlier pictures along its neighbours' motion, and the picture is kept (the `openh264`
//! crate's own decode call drops every picture whose decoding state is not clean, so access
//! units go through its raw API here, and the YUV 4:2:0 planes are converted to RGB by the
//! `yuv420` crate). A picture whose slice broke off is finished with an access unit
//! delimiter, so it is concealed and output with its own access unit instead of being lost.
//! B pictures whose references were themselves concealed are decoded from them too (our copy
//! of openh264, `vendor/openh264-sys2`, lets CABAC B slices do what its CAVLC path does). When
//! damage exhausts openh264's picture buffer it resets itself and forgets the parameter sets;
//! the container's parameter sets are then given again and the access unit decoded once more.
//! What still cannot be decoded is skipped per picture.

use image::RgbImage;
use openh264::OpenH264API;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;
use openh264_sys2::{
    DECODER_OPTION_ERROR_CON_IDC, DECODING_STATE, ERROR_CON_SLICE_MV_COPY_CROSS_IDR, SBufferInfo,
    dsDataErrorConcealed, dsErrorFree, dsNoParamSets, dsOutOfMemory,
};
use yuv420::Planes;

/// An access unit delimiter NAL unit (type 9, any primary picture type).
const ACCESS_UNIT_DELIMITER: [u8; 6] = [0, 0, 0, 1, 0x09, 0xf0];

/// A decoded picture and its presentation time in seconds.
pub type Picture = (f64, RgbImage);

/// openh264 plus presentation-time bookkeeping.
pub struct H264Decoder {
    decoder: Decoder,
    /// Presentation times of fed pictures not yet output, ascending.
    pending: Vec<f64>,
    /// Pictures output with concealed damage since the last [`H264Decoder::take_concealed`].
    concealed: u64,
    /// The parameter sets given to [`H264Decoder::feed_headers`], given again after openh264
    /// reset itself.
    parameter_sets: Vec<u8>,
}

impl H264Decoder {
    pub fn new() -> Result<Self, String> {
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let mut decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| format!("cannot start the H.264 decoder: {e}"))?;
        // Motion-guided slice copy, also across IDR pictures. (The modes that "freeze" output
        // the damaged pictures not at all; on one flipped byte in the first IDR of the traffic
        // video this mode keeps 70 of the 128 pictures the damage reached.)
        let mut mode = ERROR_CON_SLICE_MV_COPY_CROSS_IDR as std::os::raw::c_int;
        // SAFETY: the decoder is initialised; the option reads one C int that outlives the
        // call, and concealment is not a setting the crate's wrapper relies on.
        let status = unsafe {
            decoder
                .raw_api()
                .set_option(DECODER_OPTION_ERROR_CON_IDC, (&raw mut mode).cast())
        };
        if status != 0 {
            return Err(format!(
                "cannot enable H.264 error concealment (status {status})"
            ));
        }
        Ok(Self {
            decoder,
            pending: Vec::new(),
            concealed: 0,
            parameter_sets: Vec::new(),
        })
    }

    /// Feeds the stream's parameter sets (from the container, not in the access units); they
    /// are kept to be given again if the decoder resets itself.
    pub fn feed_headers(&mut self, annexb: &[u8]) -> Result<(), String> {
        self.decoder
            .decode(annexb)
            .map_err(|e| format!("bad H.264 parameter sets: {e}"))?;
        self.parameter_sets = annexb.to_vec();
        Ok(())
    }

    /// Decodes one access unit (Annex-B) presented at `pts`. Damage the decoder can conceal
    /// still gives a picture (counted, see [`H264Decoder::take_concealed`]); on an error it
    /// cannot, the picture is dropped and the decoder stays usable for the following ones.
    pub fn decode(&mut self, annexb: &[u8], pts: f64) -> Result<Option<Picture>, String> {
        let at = self.pending.partition_point(|&p| p < pts);
        self.pending.insert(at, pts);
        let length = std::os::raw::c_int::try_from(annexb.len())
            .map_err(|_| format!("an access unit of {} bytes is too large", annexb.len()))?;
        // SAFETY: `annexb` is readable for `length` bytes.
        let (mut state, mut image) = unsafe { self.decode_raw(annexb.as_ptr(), length, true) };
        if state & (dsOutOfMemory | dsNoParamSets) != 0 && !self.parameter_sets.is_empty() {
            // Damage exhausted openh264's picture buffer and it reset itself (out of memory),
            // or it had done so before (no parameter sets): it has forgotten the container's
            // parameter sets. Give them again and decode this access unit once more.
            if self.decoder.decode(&self.parameter_sets).is_ok() {
                // SAFETY: as above.
                (state, image) = unsafe { self.decode_raw(annexb.as_ptr(), length, true) };
            }
        }
        if image.is_none() && state != dsErrorFree {
            // A picture whose slices broke off waits for its missing slices; an access unit
            // delimiter ends it, and the decoder conceals the missing part and outputs it.
            // (The no-delay call would clear that output again, so this one delays.)
            // SAFETY: the delimiter is a static of `length` bytes.
            let (_, concealed) = unsafe {
                self.decode_raw(
                    ACCESS_UNIT_DELIMITER.as_ptr(),
                    ACCESS_UNIT_DELIMITER.len() as std::os::raw::c_int,
                    false,
                )
            };
            if concealed.is_some() {
                state |= dsDataErrorConcealed;
                image = concealed;
            }
        }
        if let Some(image) = image {
            if state != dsErrorFree {
                self.concealed += 1;
            }
            return Ok(Some((self.pending.remove(0), image)));
        }
        if state == dsErrorFree {
            return Ok(None);
        }
        if let Some(i) = self.pending.iter().position(|&p| p == pts) {
            self.pending.remove(i);
        }
        Err(format!("corrupt H.264 data (decoding state {state:#x})"))
    }

    /// One call into the decoder: its decoding state and the picture it output, if any.
    /// `no_delay` decodes the data as a whole access unit now; otherwise the decoder may wait
    /// for what follows.
    ///
    /// # Safety
    /// `data` is readable for `length` bytes.
    unsafe fn decode_raw(
        &mut self,
        data: *const u8,
        length: std::os::raw::c_int,
        no_delay: bool,
    ) -> (DECODING_STATE, Option<RgbImage>) {
        let mut planes = [std::ptr::null_mut::<u8>(); 3];
        // SAFETY: a plain C struct of integers, pointers and a union of them; all zero is
        // its initial state.
        let mut info: SBufferInfo = unsafe { std::mem::zeroed() };
        // SAFETY: the decoder is initialised; its raw calls are made below under the same
        // conditions the crate's own calls meet.
        let api = unsafe { self.decoder.raw_api() };
        // SAFETY: the decoder is initialised, `data` is readable for `length` bytes during
        // the call (the caller's promise), and `planes`/`info` are where the decoder writes
        // its output.
        let state = unsafe {
            if no_delay {
                api.decode_frame_no_delay(data, length, planes.as_mut_ptr(), &raw mut info)
            } else {
                api.decode_frame2(data, length, planes.as_mut_ptr(), &raw mut info)
            }
        };
        // SAFETY: with a ready buffer, the planes are the decoder's picture as `info`
        // describes it, valid until the next call.
        let image = (info.iBufferStatus == 1)
            .then(|| unsafe { picture_to_rgb(&planes, &info) })
            .flatten();
        (state, image)
    }

    /// Pictures output with concealed damage since the last call.
    pub fn take_concealed(&mut self) -> u64 {
        std::mem::take(&mut self.concealed)
    }

    /// Returns the pictures still buffered at end of stream.
    pub fn flush(&mut self) -> Vec<Picture> {
        let frames: Vec<RgbImage> = match self.decoder.flush_remaining() {
            Ok(frames) => frames.iter().filter_map(to_rgb).collect(),
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

/// The decoder's output picture as RGB, `None` if its description is unusable.
///
/// # Safety
/// `planes` and `info` come from a decode call that reported a ready buffer, and the
/// decoder has not been called since.
unsafe fn picture_to_rgb(planes: &[*mut u8; 3], info: &SBufferInfo) -> Option<RgbImage> {
    // SAFETY: the decoder fills the system-buffer member of the union for YUV output.
    let buffer = unsafe { info.UsrData.sSystemBuffer };
    let width = usize::try_from(buffer.iWidth).ok()?;
    let height = usize::try_from(buffer.iHeight).ok()?;
    let luma_stride = usize::try_from(buffer.iStride[0]).ok()?;
    let chroma_stride = usize::try_from(buffer.iStride[1]).ok()?;
    if planes.iter().any(|p| p.is_null()) {
        return None;
    }
    let chroma_rows = height.div_ceil(2);
    // SAFETY: the decoder's planes hold `height` luma rows and `height / 2` chroma rows of
    // their strides.
    let (y, u, v) = unsafe {
        (
            std::slice::from_raw_parts(planes[0], luma_stride * height),
            std::slice::from_raw_parts(planes[1], chroma_stride * chroma_rows),
            std::slice::from_raw_parts(planes[2], chroma_stride * chroma_rows),
        )
    };
    let planes = Planes {
        y,
        u,
        v,
        width,
        height,
        luma_stride,
        chroma_stride,
    };
    RgbImage::from_raw(width as u32, height as u32, planes.to_rgb()?)
}

/// A flushed picture as RGB, converted as [`picture_to_rgb`] converts.
fn to_rgb(yuv: &DecodedYUV<'_>) -> Option<RgbImage> {
    let (width, height) = yuv.dimensions();
    let (luma_stride, chroma_stride, _) = yuv.strides();
    let planes = Planes {
        y: yuv.y(),
        u: yuv.u(),
        v: yuv.v(),
        width,
        height,
        luma_stride,
        chroma_stride,
    };
    RgbImage::from_raw(width as u32, height as u32, planes.to_rgb()?)
}
