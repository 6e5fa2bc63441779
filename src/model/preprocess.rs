//! Letterboxing exactly as the Ultralytics predictor does it: keep the aspect ratio, resize
//! with OpenCV `INTER_LINEAR` semantics (half-pixel centres, 11-bit fixed-point weights, no
//! antialiasing), pad to the network size with grey 114, then RGB / 255 in NCHW order.

use std::borrow::Cow;

use image::RgbImage;
use rayon::prelude::*;

pub(super) use cpu_conv::level_to_unit;

/// Grey value Ultralytics pads with.
pub(super) const PAD_VALUE: u8 = 114;
/// OpenCV's `INTER_RESIZE_COEF_BITS`.
const COEF_BITS: u32 = 11;
const COEF_ONE: i32 = 1 << COEF_BITS;

/// How an original image maps into the network input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Original image size `(width, height)`.
    pub original: (u32, u32),
    /// Network input size `(width, height)`.
    pub input: (u32, u32),
    /// Scale from original to input pixels.
    pub gain: f32,
    /// Left and top padding in input pixels.
    pub pad: (f32, f32),
}

impl Letterbox {
    /// Geometry for fitting `original` into `input` (both `(width, height)`).
    pub fn new(original: (u32, u32), input: (u32, u32)) -> Self {
        let (w0, h0) = (original.0 as f64, original.1 as f64);
        let (w1, h1) = (input.0 as f64, input.1 as f64);
        let gain = (w1 / w0).min(h1 / h0);
        // Same rounding as ultralytics.utils.ops.scale_boxes.
        let pad_x = ((w1 - w0 * gain) / 2.0 - 0.1).round();
        let pad_y = ((h1 - h0 * gain) / 2.0 - 0.1).round();
        Self {
            original,
            input,
            gain: gain as f32,
            pad: (pad_x as f32, pad_y as f32),
        }
    }

    /// Size of the resized image inside the padding, `(width, height)`.
    pub(super) fn resized(&self) -> (u32, u32) {
        let gain = (self.input.0 as f64 / self.original.0 as f64)
            .min(self.input.1 as f64 / self.original.1 as f64);
        (
            ((self.original.0 as f64 * gain).round() as u32).max(1),
            ((self.original.1 as f64 * gain).round() as u32).max(1),
        )
    }

    /// Where the resized image starts in the input, `(left, top)`, as the Ultralytics
    /// `LetterBox` transform places it: `round(d - 0.1)` of each half margin.
    pub(super) fn offset(&self) -> (usize, usize) {
        let (rw, rh) = self.resized();
        let half_margin = |full: u32, part: u32| (full as f64 - part as f64) / 2.0;
        let place = |margin: f64| (margin - 0.1).round().max(0.0) as usize;
        (
            place(half_margin(self.input.0, rw)),
            place(half_margin(self.input.1, rh)),
        )
    }

    /// Maps a point from input pixels back to original pixels (not clipped).
    pub fn to_original(&self, x: f32, y: f32) -> (f32, f32) {
        ((x - self.pad.0) / self.gain, (y - self.pad.1) / self.gain)
    }
}

/// Letterboxes `image` into `out` (`3 * h * w` floats, planar RGB in 0..1).
pub fn letterbox_into(image: &RgbImage, input: (u32, u32), out: &mut [f32]) -> Letterbox {
    letterbox_with(image, input, out, level_to_unit)
}

/// Letterboxes `image` into `out` (`3 * h * w` bytes, planar RGB levels): the levels whose
/// values `level / 255` [`letterbox_into`] writes, a quarter of its bytes.
pub fn letterbox_levels_into(image: &RgbImage, input: (u32, u32), out: &mut [u8]) -> Letterbox {
    letterbox_with(image, input, out, |level| level)
}

/// Letterboxes `image` into `out` (`3 * h * w` values, planar RGB), each byte level written
/// as `value(level)`.
fn letterbox_with<T: Copy + Send + Sync>(
    image: &RgbImage,
    input: (u32, u32),
    out: &mut [T],
    value: impl Fn(u8) -> T + Sync,
) -> Letterbox {
    let geometry = Letterbox::new(image.dimensions(), input);
    let (rw, rh) = geometry.resized();
    let (w, h) = (input.0 as usize, input.1 as usize);
    assert_eq!(out.len(), 3 * w * h, "output buffer size");
    let (left, top) = geometry.offset();
    let resized = resize_linear(image, rw, rh);
    let pad = value(PAD_VALUE);
    let (plane_r, rest) = out.split_at_mut(w * h);
    let (plane_g, plane_b) = rest.split_at_mut(w * h);
    let planes: [&mut [T]; 3] = [plane_r, plane_g, plane_b];
    let (rw, rh) = (rw as usize, rh as usize);
    planes.into_par_iter().enumerate().for_each(|(c, plane)| {
        for (y, row) in plane.chunks_exact_mut(w).enumerate() {
            // Row by row: the padding as runs, the picture's channel `c` from its row.
            let Some(ry) = y.checked_sub(top).filter(|&ry| ry < rh) else {
                row.fill(pad);
                continue;
            };
            let (before, rest) = row.split_at_mut(left);
            let (inside, after) = rest.split_at_mut(rw);
            before.fill(pad);
            after.fill(pad);
            let pixels = resized[ry * rw * 3..(ry + 1) * rw * 3].chunks_exact(3);
            for (to, pixel) in inside.iter_mut().zip(pixels) {
                *to = value(pixel[c]);
            }
        }
    });
    geometry
}

/// Source index pairs and fixed-point weights for one axis of a linear resize, computed as
/// OpenCV does: single-precision offsets, each weight rounded on its own.
pub(super) fn axis_taps(src: usize, dst: usize) -> Vec<(usize, usize, i32, i32)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut frac = f - s as f32;
            if s < 0 {
                s = 0;
                frac = 0.0;
            }
            if s >= src as i64 - 1 {
                s = src as i64 - 1;
                frac = 0.0;
            }
            let w0 = ((1.0 - frac) * COEF_ONE as f32).round_ties_even() as i32;
            let w1 = (frac * COEF_ONE as f32).round_ties_even() as i32;
            let s = s as usize;
            (s, (s + 1).min(src - 1), w0, w1)
        })
        .collect()
}

/// OpenCV-compatible bilinear resize of interleaved RGB, returning interleaved RGB (the
/// image itself, borrowed, at its own size).
fn resize_linear(image: &RgbImage, dw: u32, dh: u32) -> Cow<'_, [u8]> {
    let (sw, sh) = (image.width() as usize, image.height() as usize);
    let (dw, dh) = (dw as usize, dh as usize);
    let src = image.as_raw();
    if (sw, sh) == (dw, dh) {
        return Cow::Borrowed(src);
    }
    let xt = axis_taps(sw, dw);
    let yt = axis_taps(sh, dh);
    let horizontal = |sy: usize, row: &mut [i32]| {
        let line = &src[sy * sw * 3..(sy + 1) * sw * 3];
        for (x, &(x0, x1, a0, a1)) in xt.iter().enumerate() {
            for c in 0..3 {
                row[x * 3 + c] = line[x0 * 3 + c] as i32 * a0 + line[x1 * 3 + c] as i32 * a1;
            }
        }
    };
    let mut out = vec![0u8; dw * dh * 3];
    out.par_chunks_mut(dw * 3).zip(yt.par_iter()).for_each_init(
        || (vec![0i32; dw * 3], vec![0i32; dw * 3]),
        |(row0, row1), (line, &(y0, y1, b0, b1))| {
            horizontal(y0, row0);
            horizontal(y1, row1);
            // OpenCV's vectorised vertical pass: drop 4 bits, keep the high 16 bits of
            // each product, then round off the last 2 bits.
            for ((dst, &r0), &r1) in line.iter_mut().zip(row0.iter()).zip(row1.iter()) {
                let a = ((r0 >> 4) * b0) >> 16;
                let b = ((r1 >> 4) * b1) >> 16;
                *dst = ((a + b + 2) >> 2).clamp(0, 255) as u8;
            }
        },
    );
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_ultralytics_for_a_portrait_image() {
        let lb = Letterbox::new((810, 1080), (640, 640));
        assert!((lb.gain - 640.0 / 1080.0).abs() < 1e-6);
        assert_eq!(lb.pad, (80.0, 0.0));
        assert_eq!(lb.resized(), (480, 640));
        let (x, y) = lb.to_original(80.0 + 240.0, 320.0);
        assert!((x - 405.0).abs() < 1e-3 && (y - 540.0).abs() < 1e-3);
    }

    #[test]
    fn identity_size_borrows_the_image_and_uniform_images_stay_uniform() {
        let image = RgbImage::from_pixel(7, 5, image::Rgb([10, 200, 33]));
        let resized = resize_linear(&image, 13, 3);
        assert!(resized.chunks(3).all(|p| p == [10, 200, 33]));
        assert!(matches!(resize_linear(&image, 7, 5), Cow::Borrowed(_)));
        let mut out = vec![0.0; 3 * 16 * 16];
        let lb = letterbox_into(&image, (16, 16), &mut out);
        assert_eq!(lb.resized(), (16, 11));
        // Top row is padding, the centre row is the image.
        assert_eq!(out[0], 114.0 / 255.0);
        assert_eq!(out[8 * 16 + 8], 10.0 / 255.0);
        assert_eq!(out[256 + 8 * 16 + 8], 200.0 / 255.0);
        let mut levels = vec![0; out.len()];
        assert_eq!(letterbox_levels_into(&image, (16, 16), &mut levels), lb);
        let values: Vec<f32> = levels.into_iter().map(level_to_unit).collect();
        assert_eq!(values, out, "the levels are the values' bytes");
    }

    #[test]
    fn downscale_by_two_averages_pixel_pairs() {
        let mut image = RgbImage::new(4, 2);
        for (x, _, p) in image.enumerate_pixels_mut() {
            let v = (x * 60) as u8;
            *p = image::Rgb([v, v, v]);
        }
        // Half-pixel centres: output pixel 0 samples at source x = 0.5.
        let resized = resize_linear(&image, 2, 1);
        assert_eq!(*resized, [30, 30, 30, 150, 150, 150]);
    }
}
