//! 3x3 stride-1 convolutions as nine accumulated matrix products, one per kernel tap, read
//! straight from a zero-padded copy of the input instead of an im2col matrix.
//!
//! With the input padded by one pixel on every side into planes `width + 2` wide, output
//! pixel `(y, x)` and tap `(ky, kx)` read padded pixel `(y + ky, x + kx)`. Numbering the
//! output on the padded width too (position `p = y * (width + 2) + x`), that is padded
//! value `p + ky * (width + 2) + kx`: for a run of consecutive positions, each tap reads a
//! run of consecutive values of every channel, at one fixed offset. So each tap is a plain
//! product of its `[c_out, c_in]` weights with the padded planes, read in place; the two
//! extra positions per row (`x = width, width + 1`) are computed and dropped. Nothing is
//! gathered per tile, which is what im2col costs on the small maps (10x10, 20x20) where
//! Winograd's transforms do not pay either.

use std::cell::Cell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::activation::{Activation, apply_bias_activation};
use crate::conv::{FeatureMap, SharedOut, WorkItem, WorkSplit};
use crate::packed::{PackedWeights, Rows, block_width, multiply_packed_blocks};
use crate::scratch::{prefix, with_reused};

/// Taps of a 3x3 kernel.
const TAPS: usize = 9;

thread_local! {
    /// The calling thread's padded copy of the input.
    static PADDED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Each thread's product of one tile, `[c_out, tile]`.
    static PRODUCT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// 3x3 weights split by tap for [`conv3x3_taps`]: one packed `[c_out, c_in]` matrix per tap.
#[derive(Debug, Clone)]
pub struct TapWeights {
    taps: Vec<PackedWeights>,
    c_out: usize,
    c_in: usize,
}

impl TapWeights {
    /// Splits row-major `[c_out, c_in, 3, 3]` weights.
    ///
    /// # Panics
    /// When `weight` does not hold `c_out * c_in * 9` values.
    pub fn new(weight: &[f32], c_out: usize, c_in: usize) -> Self {
        assert_eq!(weight.len(), c_out * c_in * TAPS, "weight shape");
        let taps = (0..TAPS)
            .map(|tap| {
                PackedWeights::from_fn(c_out, c_in, |co, ci| weight[(co * c_in + ci) * TAPS + tap])
            })
            .collect();
        Self { taps, c_out, c_in }
    }

    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.c_out
    }

    /// Input channels.
    pub fn c_in(&self) -> usize {
        self.c_in
    }
}

/// Computes `activation(conv3x3(inputs, weights) + bias)` with stride 1 and padding 1 for
/// one image into `out` (`[c_out, height, width]`). `inputs` are the channel blocks of the
/// input in order, all `height x width`.
///
/// # Panics
/// When a slice's length does not match the shapes given.
pub fn conv3x3_taps(
    inputs: &[FeatureMap],
    height: usize,
    width: usize,
    weights: &TapWeights,
    bias: &[f32],
    activation: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    let (c_in, c_out) = (weights.c_in, weights.c_out);
    assert_eq!(
        inputs.iter().map(|p| p.channels).sum::<usize>(),
        c_in,
        "input channels"
    );
    for part in inputs {
        assert_eq!(
            part.data.len(),
            part.channels * height * width,
            "input shape"
        );
    }
    assert_eq!(bias.len(), c_out, "bias shape");
    assert_eq!(out.len(), c_out * height * width, "output shape");
    if height == 0 || width == 0 {
        return;
    }
    let padded_width = width + 2;
    let plane = (height + 2) * padded_width;
    let positions = height * padded_width;
    with_reused(&PADDED, |padded| {
        // The last tap of the last positions (dropped ones) reads two values past the
        // last plane.
        let padded = prefix(padded, c_in * plane + 2, 0.0);
        let (planes, slack) = padded.split_at_mut(c_in * plane);
        slack.fill(0.0);
        // On this thread: a small map's copy costs less than waking the others.
        let channels = inputs
            .iter()
            .flat_map(|p| p.data.chunks_exact(height * width));
        for (dst, src) in planes.chunks_exact_mut(plane).zip(channels) {
            pad_plane(src, width, dst);
        }
        let padded: &[f32] = padded;
        let split = WorkSplit::new(positions, TAPS * c_in, c_out, block_width(), true);
        let out_ptr = SharedOut::new(out);
        (0..split.items()).into_par_iter().for_each(|item| {
            with_reused(&PRODUCT, |product| {
                let WorkItem {
                    columns,
                    blocks,
                    channels,
                } = split.item(item);
                let (start, len) = (columns.start, columns.len());
                let product = prefix(product, channels.len() * len, 0.0);
                for (tap, weights) in weights.taps.iter().enumerate() {
                    let offset = (tap / 3) * padded_width + tap % 3;
                    // SAFETY: rows `ci` of `x` are `len` values from `start + offset` of
                    // plane `ci`, inside `padded` (the slack covers the last plane's
                    // overrun); `product` holds a row of `len` for each of `channels`.
                    unsafe {
                        multiply_packed_blocks(
                            weights,
                            blocks.clone(),
                            0..c_in,
                            Rows {
                                ptr: padded.as_ptr().add(start + offset),
                                stride: plane,
                            },
                            len,
                            Rows {
                                ptr: product.as_mut_ptr(),
                                stride: len,
                            },
                            tap > 0,
                        );
                    }
                }
                let rows = product.chunks_exact_mut(len).zip(&bias[channels.clone()]);
                for (co, (row, &b)) in channels.zip(rows) {
                    apply_bias_activation(row, b, activation);
                    // The positions of the tile that are output pixels, row by row.
                    let mut p = start;
                    while p < start + len {
                        let (y, x) = (p / padded_width, p % padded_width);
                        let run = (padded_width - x).min(start + len - p);
                        let kept = run.min(width.saturating_sub(x));
                        if kept > 0 {
                            let from = &row[p - start..][..kept];
                            // SAFETY: output pixels `(y, x..x + kept)` of channel `co` are
                            // this item's alone; `out` outlives the parallel loop.
                            unsafe {
                                let to = out_ptr.get().add((co * height + y) * width + x);
                                std::ptr::copy_nonoverlapping(from.as_ptr(), to, kept);
                            }
                        }
                        p += run;
                    }
                }
            })
        });
    });
}

/// Copies one `width`-wide plane into `dst` (`(height + 2) x (width + 2)`) with a border of
/// zeros.
fn pad_plane(src: &[f32], width: usize, dst: &mut [f32]) {
    let padded_width = width + 2;
    let (top, rest) = dst.split_at_mut(padded_width);
    top.fill(0.0);
    let (rows, bottom) = rest.split_at_mut(rest.len() - padded_width);
    bottom.fill(0.0);
    for (line, src) in rows
        .chunks_exact_mut(padded_width)
        .zip(src.chunks_exact(width))
    {
        line[0] = 0.0;
        line[1..=width].copy_from_slice(src);
        line[width + 1] = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::max_difference_from_im2col;
    use proptest::prelude::*;

    /// [`max_difference_from_im2col`] of the tap-wise path.
    fn max_difference(shape: [usize; 5], activation: Activation) -> f32 {
        let [c_in, _, c_out, h, w] = shape;
        max_difference_from_im2col(shape, activation, |parts, weight, bias, out| {
            let taps = TapWeights::new(weight, c_out, c_in);
            conv3x3_taps(parts, h, w, &taps, bias, activation, out)
        })
    }

    #[test]
    fn yolo_shapes_match_the_im2col_path() {
        // The small maps of YOLO's last stages, a head convolution reading two blocks, odd
        // sizes, a map of one pixel.
        for (shape, act) in [
            ([128, 128, 128, 10, 10], Activation::Silu),
            ([64, 32, 80, 20, 20], Activation::Silu),
            ([32, 8, 24, 17, 13], Activation::Identity),
            ([5, 2, 3, 1, 1], Activation::Silu),
            ([7, 3, 9, 3, 2], Activation::Identity),
        ] {
            let diff = max_difference(shape, act);
            assert!(diff < 1e-5, "{shape:?}: {diff}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_shapes_match_the_im2col_path(
            c_in in 1usize..24, split in 0usize..24, c_out in 1usize..24,
            h in 1usize..23, w in 1usize..23, silu in any::<bool>(),
        ) {
            let act = if silu { Activation::Silu } else { Activation::Identity };
            let diff = max_difference([c_in, split, c_out, h, w], act);
            prop_assert!(diff < 1e-5, "{diff}");
        }
    }
}
