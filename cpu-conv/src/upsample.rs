//! Nearest-neighbour upsampling by an integer factor (YOLO's neck), in parallel over planes,
//! and the upsampled first part of a 1x1 convolution's input, which is never made.
//!
//! YOLO's neck upsamples a map and concatenates it with an earlier one for a 1x1
//! convolution. Upsampling commutes with a 1x1 convolution (each output pixel reads only the
//! input pixel it copies), so that part's product is computed at its own size, with a
//! `scale²`-th of the multiply-accumulates, and each of its values spread over the block of
//! output pixels it covers ([`LowProduct`]); the upsampled map is never written.

use std::cell::Cell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::conv::FeatureMap;

/// The first channels of a 1x1 convolution's input, given at `1/scale` of the output's size:
/// the convolution reads `map` upsampled (nearest neighbour) by `scale`.
#[derive(Debug, Clone, Copy)]
pub struct UpsampledPart<'a> {
    /// `[channels, height, width]`.
    pub map: FeatureMap<'a>,
    pub height: usize,
    pub width: usize,
    pub scale: usize,
}

impl UpsampledPart<'_> {
    /// The size the convolution runs at: the map's upsampled by `scale`.
    pub fn output_size(&self) -> (usize, usize) {
        (self.height * self.scale, self.width * self.scale)
    }

    /// Pixels of the map.
    pub(crate) fn positions(&self) -> usize {
        self.height * self.width
    }

    /// # Panics
    /// When the scale is 0 or the map does not hold its channels' planes.
    pub(crate) fn check(&self) {
        assert!(self.scale > 0, "scale must be at least 1");
        assert_eq!(
            self.map.data.len(),
            self.map.channels * self.positions(),
            "upsampled part's shape"
        );
    }
}

thread_local! {
    /// Each thread's [`LowProduct`] buffer, reused across convolutions.
    pub(crate) static LOW_PRODUCT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// The product of an [`UpsampledPart`]'s channels with their weights, `[c_out, height * width]`
/// at the part's own size, read as the product of its upsampled map.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LowProduct<'a> {
    pub values: &'a [f32],
    pub height: usize,
    pub width: usize,
    pub scale: usize,
}

impl LowProduct<'_> {
    /// Output channel `co`'s values at the part's own size.
    pub fn plane(&self, co: usize) -> &[f32] {
        let positions = self.height * self.width;
        &self.values[co * positions..][..positions]
    }

    /// For each output position `first..first + sources.len()` (numbered row by row over the
    /// upsampled width), the position in a [`plane`](Self::plane) it copies.
    pub fn sources(&self, first: usize, sources: &mut [usize]) {
        let out_width = self.width * self.scale;
        let (mut y, mut x) = (first / out_width, first % out_width);
        for source in sources {
            *source = y / self.scale * self.width + x / self.scale;
            x += 1;
            if x == out_width {
                (x, y) = (0, y + 1);
            }
        }
    }
}

/// Repeats every pixel of each `height x width` plane of `input` into a `scale x scale`
/// block of `out` (`[channels, height * scale, width * scale]`, every element written, so it
/// may start uninitialised). The pixels are f32 values or the INT8 path's quads.
///
/// # Panics
/// When `scale` is 0, or the slices do not hold `channels` planes of their sizes.
pub fn upsample_nearest<T: Copy + Send + Sync>(
    input: &[T],
    channels: usize,
    height: usize,
    width: usize,
    scale: usize,
    out: &mut [MaybeUninit<T>],
) {
    assert!(scale > 0, "scale must be at least 1");
    let plane = height * width;
    let out_width = width * scale;
    assert_eq!(input.len(), channels * plane, "input shape");
    assert_eq!(out.len(), channels * plane * scale * scale, "output shape");
    if plane == 0 {
        return;
    }
    out.par_chunks_mut(plane * scale * scale)
        .zip(input.par_chunks(plane))
        .for_each(|(dst, src)| {
            for (rows, line) in dst
                .chunks_exact_mut(out_width * scale)
                .zip(src.chunks(width))
            {
                let (first, copies) = rows.split_at_mut(out_width);
                match scale {
                    2 => spread::<2, T>(line, first),
                    _ => {
                        for (block, &v) in first.chunks_exact_mut(scale).zip(line) {
                            block.fill(MaybeUninit::new(v));
                        }
                    }
                }
                for copy in copies.chunks_exact_mut(out_width) {
                    copy.copy_from_slice(first);
                }
            }
        });
}

/// Each value of `line` written `S` times into `out`: with `S` known, a loop the compiler
/// vectorises (YOLO upsamples by 2; a `fill` call per pixel took 3 % of an INT8 forward pass).
fn spread<const S: usize, T: Copy>(line: &[T], out: &mut [MaybeUninit<T>]) {
    for (block, &v) in out.chunks_exact_mut(S).zip(line) {
        let block: &mut [MaybeUninit<T>; S] = block.try_into().expect("chunks of S");
        *block = [MaybeUninit::new(v); S];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pixel_becomes_a_block() {
        // Two 2x3 planes, doubled and tripled.
        let input: Vec<f32> = (0..12).map(|v| v as f32).collect();
        for scale in [1, 2, 3] {
            let (h, w) = (2, 3);
            let out = crate::test_values::written(2 * h * w * scale * scale, |out| {
                upsample_nearest(&input, 2, h, w, scale, out)
            });
            for c in 0..2 {
                for y in 0..h * scale {
                    for x in 0..w * scale {
                        let got = out[(c * h * scale + y) * w * scale + x];
                        let want = input[(c * h + y / scale) * w + x / scale];
                        assert_eq!(got, want, "scale {scale} channel {c} ({y}, {x})");
                    }
                }
            }
        }
    }
}
