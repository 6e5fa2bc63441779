//! Reproducible pseudo-random test inputs in [-1, 1), shared by the kernels' tests, and the
//! output buffers they run into.

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
