//! Reproducible pseudo-random test inputs in [-1, 1), shared by the kernels' tests, the
//! output buffers they run into, and the comparison of the 3x3 paths with im2col.

use std::mem::MaybeUninit;

/// What `run` writes into a `len`-element output that starts as NaN, so that an element a
/// kernel leaves unwritten shows.
pub(crate) fn written(len: usize, run: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut out = vec![MaybeUninit::new(f32::NAN); len];
    run(&mut out);
    // SAFETY: every element was initialised (to NaN) before `run`, which writes only f32s.
    out.into_iter()
        .map(|v| unsafe { v.assume_init() })
        .collect()
}

/// A 1x1 stride-1 convolution's parameters with `weight`, `bias` and `activation`.
pub(crate) fn one_by_one<'a>(
    weight: &'a crate::PackedWeights,
    bias: &'a [f32],
    activation: crate::Activation,
) -> crate::ConvParams<'a> {
    crate::ConvParams {
        weight,
        kernel: 1,
        stride: 1,
        padding: 0,
        epilogue: crate::Epilogue::new(bias, activation),
    }
}

/// Asserts that `run`, a convolution into `len` outputs with the epilogue it is given, adds
/// a residual exactly: with bias `bias`, `activation` and a residual of [`values`], every
/// output is what it is without the residual plus the residual's value at that index.
pub(crate) fn assert_adds_residual(
    len: usize,
    bias: &[f32],
    activation: crate::Activation,
    run: impl Fn(&crate::Epilogue, &mut [MaybeUninit<f32>]),
) {
    let residual = values(len, 9);
    let plain = crate::Epilogue::new(bias, activation);
    let with_residual = crate::Epilogue {
        residual: Some(&residual),
        ..plain
    };
    let without = written(len, |out| run(&plain, out));
    let with = written(len, |out| run(&with_residual, out));
    for (i, ((w, o), r)) in with.iter().zip(&without).zip(&residual).enumerate() {
        assert_eq!(
            w.to_bits(),
            (o + r).to_bits(),
            "element {i}: {w} vs {o} + {r}"
        );
    }
}

/// `n` values from xorshift64 seeded with `seed`.
pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `x`, `channels` planes of `plane` values, as two channel blocks split after channel
/// `split` (at most `channels`), as the parts of a concatenation arrive.
pub(crate) fn split_channels(
    x: &[f32],
    channels: usize,
    split: usize,
    plane: usize,
) -> [crate::FeatureMap<'_>; 2] {
    let cut = split.min(channels);
    [
        crate::FeatureMap {
            data: &x[..cut * plane],
            channels: cut,
        },
        crate::FeatureMap {
            data: &x[cut * plane..],
            channels: channels - cut,
        },
    ]
}

/// Largest relative difference `|got - want| / (1 + |want|)` (infinite where `got` is NaN)
/// between a 3x3, padding-1 convolution of `stride` computed by `run` and the im2col path
/// (itself tested against a direct f64 convolution), on a `[c_in, h, w]` input given as two
/// channel blocks split at `split`. `run` gets the blocks, the row-major
/// `[c_out, c_in, 3, 3]` weights, the bias and the output.
pub(crate) fn max_difference_from_im2col(
    [c_in, split, c_out, h, w]: [usize; 5],
    stride: usize,
    activation: crate::Activation,
    run: impl FnOnce(&[crate::FeatureMap], &[f32], &[f32], &mut [MaybeUninit<f32>]),
) -> f32 {
    let x = values(c_in * h * w, 1);
    let weight = values(c_out * c_in * 9, 2);
    let bias = values(c_out, 3);
    let parts = split_channels(&x, c_in, split, h * w);
    let packed = crate::PackedWeights::new(&weight, c_out, c_in * 9);
    let params = crate::ConvParams {
        weight: &packed,
        kernel: 3,
        stride,
        padding: 1,
        epilogue: crate::Epilogue::new(&bias, activation),
    };
    let (out_h, out_w) = crate::output_size(h, w, 3, stride, 1);
    let len = c_out * out_h * out_w;
    let want = written(len, |out| crate::conv2d(&parts, h, w, &params, out));
    let got = written(len, |out| run(&parts, &weight, &bias, out));
    relative_difference(&got, &want)
}

/// The largest difference of `got` from `want` relative to `1 + |want|`; infinite where
/// `got` is NaN (an element left unwritten).
pub(crate) fn relative_difference(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
        .fold(0.0, |worst, d| {
            if d.is_nan() {
                f32::INFINITY
            } else {
                worst.max(d)
            }
        })
}

/// `([c_in, split, c_out, h, w], activation)` on which the 3x3 paths are checked against
/// im2col, each at stride 1 and 2: YOLO's small maps (rows of 10 and 20 pixels), a head
/// convolution of 80 channels reading two blocks, the stem's 3 input channels, odd sizes
/// and channel counts (blocks of output channels partly padding), one pixel.
pub(crate) const YOLO_3X3_SHAPES: [([usize; 5], crate::Activation); 8] = [
    ([128, 128, 128, 10, 10], crate::Activation::Silu),
    ([64, 32, 80, 20, 20], crate::Activation::Silu),
    ([3, 3, 16, 64, 48], crate::Activation::Silu),
    ([32, 8, 24, 17, 13], crate::Activation::Identity),
    ([32, 8, 40, 17, 13], crate::Activation::Identity),
    ([5, 2, 3, 1, 1], crate::Activation::Silu),
    ([7, 3, 9, 3, 2], crate::Activation::Identity),
    ([7, 3, 33, 3, 29], crate::Activation::Identity),
];

/// `([c_in, split, c_out, h, w], stride)` whose padded copy is too large to share, so the
/// 3x3 paths run them in bands of output rows: the stem at 320x240 (stride 2) and 16
/// channels at 100x90.
pub(crate) const BANDED_3X3_SHAPES: [([usize; 5], usize); 2] =
    [([3, 3, 16, 320, 240], 2), ([16, 8, 24, 100, 90], 1)];

/// The largest relative difference (as [`relative_difference`]) between `run`, a 1x1
/// convolution of a `[c_low, h, w]` map upsampled by `scale` and concatenated with a
/// `[c_rest, h * scale, w * scale]` map into `c_out` channels, and [`crate::conv2d`] over the
/// upsampled map made first. `run` gets the upsampled part, the rest, the parameters (the
/// weights packed), the row-major `[c_out, c_low + c_rest]` weights and the output.
pub(crate) fn max_difference_upsampled(
    [c_low, c_rest, c_out, h, w, scale]: [usize; 6],
    activation: crate::Activation,
    run: impl FnOnce(
        &crate::UpsampledPart,
        &[crate::FeatureMap],
        &crate::ConvParams,
        &[f32],
        &mut [MaybeUninit<f32>],
    ),
) -> f32 {
    let case = UpsampledCase::new([c_low, c_rest, h, w, scale]);
    let (out_h, out_w) = (h * scale, w * scale);
    let weight = values(c_out * (c_low + c_rest), 2);
    let bias = values(c_out, 3);
    let packed = crate::PackedWeights::new(&weight, c_out, c_low + c_rest);
    let params = one_by_one(&packed, &bias, activation);
    let len = c_out * out_h * out_w;
    let want = written(len, |out| {
        crate::conv2d(&case.made(), out_h, out_w, &params, out)
    });
    let got = written(len, |out| {
        run(&case.part(), &[case.rest()], &params, &weight, out)
    });
    relative_difference(&got, &want)
}

/// A `[c_low, h, w]` map to be upsampled by `scale` beside a `[c_rest, h * scale, w * scale]`
/// one, both of [`values`], and the upsampled map made.
pub(crate) struct UpsampledCase {
    low: Vec<f32>,
    rest: Vec<f32>,
    up: Vec<f32>,
    /// `[c_low, c_rest, h, w, scale]`.
    shape: [usize; 5],
}

impl UpsampledCase {
    pub(crate) fn new(shape: [usize; 5]) -> Self {
        let [c_low, c_rest, h, w, scale] = shape;
        let low = values(c_low * h * w, 1);
        let up = written(low.len() * scale * scale, |out| {
            crate::upsample_nearest(&low, c_low, h, w, scale, out)
        });
        Self {
            rest: values(c_rest * h * scale * w * scale, 4),
            low,
            up,
            shape,
        }
    }

    /// The map as the part a convolution reads upsampled.
    pub(crate) fn part(&self) -> crate::UpsampledPart<'_> {
        let [c_low, _, h, w, scale] = self.shape;
        crate::UpsampledPart {
            map: crate::FeatureMap {
                data: &self.low,
                channels: c_low,
            },
            height: h,
            width: w,
            scale,
        }
    }

    /// The part beside it.
    pub(crate) fn rest(&self) -> crate::FeatureMap<'_> {
        crate::FeatureMap {
            data: &self.rest,
            channels: self.shape[1],
        }
    }

    /// The concatenation with the upsampled map made.
    pub(crate) fn made(&self) -> [crate::FeatureMap<'_>; 2] {
        let up = crate::FeatureMap {
            data: &self.up,
            channels: self.shape[0],
        };
        [up, self.rest()]
    }
}
