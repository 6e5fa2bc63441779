//! Depthwise convolution (one `k x k` filter per channel, YOLO11's `DWConv`) with its bias
//! and activation, parallel over channels.
//!
//! Stride 1 works as `taps.rs` does for full convolutions: the channel's plane is copied
//! into a zero-padded plane `width + 2 * padding` wide, output positions are numbered on
//! that width, and each tap is then one multiply-add over a contiguous run of the padded
//! plane at a fixed offset; the `k - 1` extra positions per row are computed and dropped.
//! The taps are summed a chunk of positions at a time with the chunk's sums in registers,
//! one store per sum (a pass per tap over the sums loaded and stored each sum `k²` times:
//! `cargo bench -p cpu-conv -- depthwise`, one thread, 80 channels at 40x40 about 8 %
//! slower). The bias and activation are applied while the sums are in cache. (Row by row and tap by
//! tap with the border worked out per call, the 10x10 and 20x20 maps of YOLO11's head ran
//! at 2-5 GMAC/s: the bookkeeping of 90 short calls per plane cost more than the products.)
//! On AVX-512, 3x3 stride 1 (YOLO11's `DWConv`) reads the plane in place instead, with masked
//! loads for the padding (`x86::plane_3x3_stride1_avx512`). Other strides accumulate each
//! output row tap by tap over every `s`-th value of the input row.

use std::cell::Cell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::activation::{Epilogue, apply_bias_activation};
use crate::conv::{FeatureMap, output_size};
use crate::scratch::{prefix, with_reused};
use crate::taps::pad_plane;

/// Positions whose sums [`accumulate_taps`] keeps in registers over all taps: four AVX-512
/// vectors.
const TAP_CHUNK: usize = 64;

thread_local! {
    /// The calling thread's zero-padded copy of one plane.
    static PADDED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// The calling thread's sums of one plane on the padded width.
    static SUMS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Values per piece of parallel work at least: a 10x10 plane alone is far less work than
/// handing it to another thread.
const MIN_VALUES_PER_TASK: usize = 4096;

/// A depthwise convolution: `weight` is `[channels, kernel, kernel]`.
#[derive(Debug, Clone, Copy)]
pub struct DepthwiseParams<'a> {
    pub weight: &'a [f32],
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// Bias, activation and residual.
    pub epilogue: Epilogue<'a>,
}

/// Computes `depthwise_conv(inputs)` and its epilogue for one image into `out`
/// (`[channels, out_h, out_w]`); `inputs` are the channel blocks of the input in order, all
/// `height x width`.
///
/// # Panics
/// When a slice's length does not match the shapes given.
pub fn depthwise_conv2d(
    inputs: &[FeatureMap],
    height: usize,
    width: usize,
    params: &DepthwiseParams,
    out: &mut [MaybeUninit<f32>],
) {
    let k = params.kernel;
    let channels = FeatureMap::channels_of(inputs, (height, width));
    let (out_h, out_w) = output_size(height, width, k, params.stride, params.padding);
    assert_eq!(params.weight.len(), channels * k * k, "weight shape");
    assert_eq!(out.len(), channels * out_h * out_w, "output shape");
    params.epilogue.check(channels, out.len());
    let planes: Vec<&[f32]> = inputs
        .iter()
        .flat_map(|part| part.data.chunks_exact(height * width))
        .collect();
    if out_h * out_w == 0 {
        return;
    }
    let min_planes = MIN_VALUES_PER_TASK.div_ceil(height * width).max(1);
    out.par_chunks_exact_mut(out_h * out_w)
        .zip(planes)
        .zip(params.weight.par_chunks_exact(k * k))
        .enumerate()
        .with_min_len(min_planes)
        .for_each(|(channel, ((out, plane), filter))| {
            if params.stride == 1 {
                let channel = ChannelPlane {
                    index: channel,
                    plane,
                    filter,
                    height,
                    width,
                    out_w,
                };
                #[cfg(target_arch = "x86_64")]
                if k == 3 && crate::simd::avx512f() {
                    // SAFETY: the CPU has AVX-512F; the filter is 3x3.
                    return unsafe { x86::plane_3x3_stride1_avx512(channel, params, out) };
                }
                return padded_plane_stride1(channel, params, out);
            }
            let out = zeroed(out);
            for (oy, row) in out.chunks_exact_mut(out_w).enumerate() {
                for (ky, taps) in filter.chunks_exact(k).enumerate() {
                    let Some(iy) = (oy * params.stride + ky)
                        .checked_sub(params.padding)
                        .filter(|&iy| iy < height)
                    else {
                        continue;
                    };
                    let line = &plane[iy * width..(iy + 1) * width];
                    for (kx, &w) in taps.iter().enumerate() {
                        accumulate_tap(row, line, w, kx, params);
                    }
                }
            }
            // Once per plane: on the small maps of the detection head a row is a few dozen
            // values, and a call per row cost more than the activation itself.
            params.epilogue.finish(out, channel, channel * out.len());
        });
}

/// One channel of a stride-1 depthwise convolution: its input plane and filter, and the
/// sizes of the plane and of the output rows.
#[derive(Debug, Clone, Copy)]
struct ChannelPlane<'a> {
    /// The channel's index: its bias, and its place in a residual.
    index: usize,
    plane: &'a [f32],
    filter: &'a [f32],
    height: usize,
    width: usize,
    out_w: usize,
}

/// One channel's stride-1 depthwise convolution and its epilogue into `out`, through a
/// zero-padded copy of its plane (see the module's documentation).
fn padded_plane_stride1(
    channel: ChannelPlane,
    params: &DepthwiseParams,
    out: &mut [MaybeUninit<f32>],
) {
    let ChannelPlane {
        index: channel,
        plane,
        filter,
        height,
        width,
        out_w,
    } = channel;
    let (k, pad) = (params.kernel, params.padding);
    let padded_width = width + 2 * pad;
    let padded_len = (height + 2 * pad) * padded_width;
    let out_h = out.len() / out_w;
    // Positions on the padded width; the last tap of the last (dropped) positions reads up
    // to `k - 1` values past the padded plane.
    let positions = out_h * padded_width;
    with_reused(&PADDED, |padded| {
        with_reused(&SUMS, |sums| {
            let padded = prefix(padded, padded_len + k, 0.0);
            pad_plane(plane, [height, width], (pad, 0.0), padded);
            let sums = prefix(sums, positions, 0.0);
            accumulate_taps(sums, padded, filter, k, padded_width);
            let epilogue = &params.epilogue;
            apply_bias_activation(sums, epilogue.bias[channel], epilogue.activation);
            let first = channel * out.len();
            for (y, (to, from)) in out
                .chunks_exact_mut(out_w)
                .zip(sums.chunks_exact_mut(padded_width))
                .enumerate()
            {
                let from = &mut from[..out_w];
                epilogue.add_residual(from, first + y * out_w);
                for (t, &f) in to.iter_mut().zip(&*from) {
                    t.write(f);
                }
            }
        })
    });
}

/// `sums[p] = Σ filter[t] · padded[p + offset(t)]` over the `k x k` taps `t`, whose
/// offsets on the padded plane are `ky * padded_width + kx`; one pass per tap over the
/// (cached) sums, compiled for AVX-512 or AVX2 + FMA where the CPU has them.
fn accumulate_taps(
    sums: &mut [f32],
    padded: &[f32],
    filter: &[f32],
    k: usize,
    padded_width: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512f() {
        // SAFETY: the CPU has AVX-512F, AVX2 and FMA.
        unsafe { accumulate_taps_avx512(sums, padded, filter, k, padded_width) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { accumulate_taps_fma(sums, padded, filter, k, padded_width) };
        return;
    }
    accumulate_taps_with(sums, padded, filter, k, padded_width, |x, w, s| x * w + s);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn accumulate_taps_avx512(
    sums: &mut [f32],
    padded: &[f32],
    filter: &[f32],
    k: usize,
    padded_width: usize,
) {
    accumulate_taps_with(sums, padded, filter, k, padded_width, f32::mul_add);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_taps_fma(
    sums: &mut [f32],
    padded: &[f32],
    filter: &[f32],
    k: usize,
    padded_width: usize,
) {
    accumulate_taps_with(sums, padded, filter, k, padded_width, f32::mul_add);
}

/// [`accumulate_taps`] with `multiply_add(x, w, s) = x · w + s` (fused where the CPU has
/// FMA; without it `mul_add` would be a library call per value).
#[inline(always)]
fn accumulate_taps_with(
    sums: &mut [f32],
    padded: &[f32],
    filter: &[f32],
    k: usize,
    padded_width: usize,
    multiply_add: impl Fn(f32, f32, f32) -> f32,
) {
    let offset = |tap: usize| (tap / k) * padded_width + tap % k;
    // Every tap on a chunk of positions at a time, the chunk's sums in registers: one store
    // per sum instead of a load and a store per tap. Chunks of four vectors, then of one,
    // then one more vector ending at the last position (recomputing some sums rather than
    // going tap by tap over a few).
    const VECTOR: usize = TAP_CHUNK / 4;
    let taps = (padded, filter, &offset, &multiply_add);
    let first = sums_in_registers::<TAP_CHUNK>(sums, 0, taps);
    let first = sums_in_registers::<VECTOR>(sums, first, taps);
    if first < sums.len() && sums.len() >= VECTOR {
        sums_in_registers::<VECTOR>(sums, sums.len() - VECTOR, taps);
        return;
    }
    let tail = &mut sums[first..];
    tail.fill(0.0);
    for (tap, &w) in filter.iter().enumerate() {
        let values = &padded[first + offset(tap)..][..tail.len()];
        for (s, &x) in tail.iter_mut().zip(values) {
            *s = multiply_add(x, w, *s);
        }
    }
}

/// [`accumulate_taps_with`] on the whole chunks of `N` positions from `first` on, each
/// chunk's sums kept in a local array over all taps; returns where the chunks end.
#[inline(always)]
fn sums_in_registers<const N: usize>(
    sums: &mut [f32],
    first: usize,
    (padded, filter, offset, multiply_add): (
        &[f32],
        &[f32],
        &impl Fn(usize) -> usize,
        &impl Fn(f32, f32, f32) -> f32,
    ),
) -> usize {
    let end = first + (sums.len() - first) / N * N;
    for start in (first..end).step_by(N) {
        let mut acc = [0.0f32; N];
        for (tap, &w) in filter.iter().enumerate() {
            let values = &padded[start + offset(tap)..][..N];
            for (a, &x) in acc.iter_mut().zip(values) {
                *a = multiply_add(x, w, *a);
            }
        }
        sums[start..start + N].copy_from_slice(&acc);
    }
    end
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Stride-1 depthwise convolution on AVX-512 straight from the unpadded plane.

    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{ChannelPlane, DepthwiseParams};
    use crate::activation::Activation;
    use crate::activation::x86::silu_avx512;

    /// Lanes `first..end` of a 16-lane mask (none where `end <= first`).
    fn lanes(first: isize, end: isize) -> __mmask16 {
        let (first, end) = (first.clamp(0, 16), end.clamp(0, 16));
        if end <= first {
            return 0;
        }
        (((1u32 << end) - 1) & !((1u32 << first) - 1)) as __mmask16
    }

    /// Output rows computed together, each with its own chain of multiply-adds.
    const ROWS: usize = 4;

    /// One channel's stride-1 3x3 depthwise convolution and its epilogue into `out`, in vectors
    /// of 16 positions of [`ROWS`] output rows at a time: every tap a masked load of the
    /// input row at the tap's offset (the lanes whose input column lies outside the row
    /// masked off, which is the zero padding) and a multiply-add; bias, activation and
    /// residual on the vector; one masked store into the output. No padded copy of the
    /// plane and no buffer of sums. Each input row is loaded once for the output rows it
    /// is a tap row of (a load per tap and output row kept the load port busier than the
    /// multiply-adds: 80 channels at 40x40 took 63-70 µs that way). `cargo bench -p cpu-conv
    /// -- depthwise`, the padded path / this one: 80 channels at 40x40 68-78 / 58 µs on two
    /// threads, 155 / 118 µs on one; 128 channels at 10x10 about 24 µs either way on two
    /// threads (the parallel loop's own cost), 60 / 45 µs on one. The taps are summed in the
    /// order of [`super::padded_plane_stride1`], so the two give the same values.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the channel's plane holds `height x width` values, `out` its
    /// output plane, and its filter is 3x3.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn plane_3x3_stride1_avx512(
        channel: ChannelPlane,
        params: &DepthwiseParams,
        out: &mut [MaybeUninit<f32>],
    ) {
        let (plane, height, width) = (channel.plane, channel.height, channel.width);
        let out_w = channel.out_w;
        let out_h = out.len() / out_w;
        let pad = params.padding as isize;
        let epilogue = &params.epilogue;
        let bias = _mm512_set1_ps(epilogue.bias[channel.index]);
        let taps: [__m512; 9] = std::array::from_fn(|t| _mm512_set1_ps(channel.filter[t]));
        let first = channel.index * out.len();
        let out_ptr = out.as_mut_ptr().cast::<f32>();
        for start in (0..out_w).step_by(16) {
            let count = (out_w - start).min(16) as isize;
            // Per tap column: the input column of lane 0, and the lanes inside both the
            // output row and the input row.
            let columns: [isize; 3] = std::array::from_fn(|kx| (start + kx) as isize - pad);
            let masks = columns.map(|c| lanes(-c, (width as isize - c).min(count)));
            let stored = lanes(0, count);
            for y0 in (0..out_h).step_by(ROWS) {
                let rows = (out_h - y0).min(ROWS);
                let mut sums = [_mm512_setzero_ps(); ROWS];
                // Each input row is loaded once, at its three tap offsets, and added to the
                // output rows it is a tap row of: to each in the order of its taps.
                for i in 0..rows + 2 {
                    let iy = (y0 + i) as isize - pad;
                    if !(0..height as isize).contains(&iy) {
                        // A row of padding: zeros, which add nothing.
                        continue;
                    }
                    let line = plane[iy as usize * width..].as_ptr();
                    // SAFETY: only the masked lanes are read, and they lie inside row `iy`
                    // (masked lanes of a load are not accessed at all).
                    let x: [__m512; 3] = std::array::from_fn(|kx| unsafe {
                        _mm512_maskz_loadu_ps(masks[kx], line.wrapping_offset(columns[kx]))
                    });
                    for ky in (0..3).rev() {
                        let Some(sum) = i
                            .checked_sub(ky)
                            .filter(|&r| r < rows)
                            .map(|r| &mut sums[r])
                        else {
                            continue;
                        };
                        for (kx, &x) in x.iter().enumerate() {
                            *sum = _mm512_fmadd_ps(x, taps[ky * 3 + kx], *sum);
                        }
                    }
                }
                for (r, &sum) in sums.iter().enumerate().take(rows) {
                    let z = _mm512_add_ps(sum, bias);
                    let mut value = match epilogue.activation {
                        Activation::Identity => z,
                        Activation::Silu => silu_avx512(z),
                    };
                    let at = (y0 + r) * out_w + start;
                    if let Some(residual) = epilogue.residual {
                        let residual = residual[first + at..].as_ptr();
                        // SAFETY: the stored lanes lie inside the residual's row.
                        let residual = unsafe { _mm512_maskz_loadu_ps(stored, residual) };
                        value = _mm512_add_ps(value, residual);
                    }
                    // SAFETY: the stored lanes lie inside output row `y0 + r`.
                    unsafe { _mm512_mask_storeu_ps(out_ptr.add(at), stored, value) };
                }
            }
        }
    }
}

/// `values` set to zeros, as the initialised values they now hold.
fn zeroed(values: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    values.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just initialised; `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `row[ox] += w * line[ox * stride + kx - padding]` wherever that lies inside `line`.
fn accumulate_tap(row: &mut [f32], line: &[f32], w: f32, kx: usize, params: &DepthwiseParams) {
    let s = params.stride;
    // Output columns whose input column `ox * s + kx - padding` is inside the line.
    let first = params.padding.saturating_sub(kx).div_ceil(s).min(row.len());
    let end = (line.len() + params.padding)
        .saturating_sub(kx)
        .div_ceil(s)
        .clamp(first, row.len());
    if first == end {
        return;
    }
    let start = first * s + kx - params.padding;
    let row = &mut row[first..end];
    if s == 1 {
        for (r, &x) in row.iter_mut().zip(&line[start..]) {
            *r += w * x;
        }
    } else {
        for (r, &x) in row.iter_mut().zip(line[start..].iter().step_by(s)) {
            *r += w * x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Activation;
    use crate::test_values::{values, written};
    use proptest::prelude::*;

    /// The AVX-512 and AVX2 + FMA tap accumulations (where this CPU has them) against the
    /// portable one, 3x3 and 5x5 filters over a padded plane with its slack.
    #[test]
    fn every_tap_accumulation_matches_the_portable_one() {
        for (k, padded_width, out_h) in [(3, 23, 17), (5, 12, 3)] {
            let positions = out_h * padded_width;
            let padded = values((out_h + k - 1) * padded_width + k, 1);
            let filter = values(k * k, 2);
            let accumulate = |run: &dyn Fn(&mut [f32])| {
                let mut sums = vec![f32::NAN; positions];
                run(&mut sums);
                sums
            };
            let expected = accumulate(&|sums| {
                accumulate_taps_with(sums, &padded, &filter, k, padded_width, |x, w, s| x * w + s)
            });
            let mut variants: Vec<(&str, Vec<f32>)> = Vec::new();
            #[cfg(target_arch = "x86_64")]
            {
                if crate::simd::avx2_fma() {
                    // SAFETY: the CPU has AVX2 and FMA.
                    let sums = accumulate(&|sums| unsafe {
                        accumulate_taps_fma(sums, &padded, &filter, k, padded_width)
                    });
                    variants.push(("avx2", sums));
                }
                if crate::simd::avx512f() {
                    // SAFETY: the CPU has AVX-512F.
                    let sums = accumulate(&|sums| unsafe {
                        accumulate_taps_avx512(sums, &padded, &filter, k, padded_width)
                    });
                    variants.push(("avx512", sums));
                }
            }
            for (name, sums) in variants {
                for (i, (g, r)) in sums.iter().zip(&expected).enumerate() {
                    assert!(
                        (g - r).abs() <= 1e-5,
                        "{name} {k}x{k}, position {i}: {g} vs {r}"
                    );
                }
            }
        }
    }

    /// The AVX-512 3x3 path against the padded-plane path it stands in for: the same values,
    /// bit for bit, on maps narrower and wider than a vector, with and without padding, a
    /// residual and SiLU.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_3x3_gives_the_padded_paths_values() {
        if !crate::simd::avx512f() {
            return;
        }
        for (h, w, pad) in [(10, 10, 1), (7, 40, 1), (3, 17, 0), (1, 33, 2), (9, 5, 1)] {
            let (oh, ow) = output_size(h, w, 3, 1, pad);
            let plane = values(h * w, 1);
            let filter = values(9, 2);
            let bias = values(1, 3);
            let residual = values(oh * ow, 4);
            for (activation, residual) in [
                (Activation::Silu, None),
                (Activation::Identity, Some(&residual[..])),
            ] {
                let params = DepthwiseParams {
                    weight: &filter,
                    kernel: 3,
                    stride: 1,
                    padding: pad,
                    epilogue: Epilogue {
                        residual,
                        ..Epilogue::new(&bias, activation)
                    },
                };
                let channel = ChannelPlane {
                    index: 0,
                    plane: &plane,
                    filter: &filter,
                    height: h,
                    width: w,
                    out_w: ow,
                };
                let padded = written(oh * ow, |out| padded_plane_stride1(channel, &params, out));
                // SAFETY: the CPU has AVX-512F; the filter is 3x3.
                let direct = written(oh * ow, |out| unsafe {
                    x86::plane_3x3_stride1_avx512(channel, &params, out)
                });
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&direct), bits(&padded), "{h}x{w}, padding {pad}");
            }
        }
    }

    /// Direct per-pixel loops in f64.
    fn reference(x: &[f32], [c, h, w]: [usize; 3], p: &DepthwiseParams) -> Vec<f32> {
        let k = p.kernel;
        let (oh, ow) = output_size(h, w, k, p.stride, p.padding);
        let mut out = Vec::with_capacity(c * oh * ow);
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = f64::from(p.epilogue.bias[ch]);
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * p.stride + ky) as isize - p.padding as isize;
                            let ix = (ox * p.stride + kx) as isize - p.padding as isize;
                            if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                let xv = x[(ch * h + iy as usize) * w + ix as usize];
                                acc += f64::from(xv) * f64::from(p.weight[(ch * k + ky) * k + kx]);
                            }
                        }
                    }
                    out.push(p.epilogue.reference(acc, out.len()));
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_the_reference(
            c in 1usize..6, split in 0usize..6, h in 1usize..15, w in 1usize..15,
            k in prop::sample::select(vec![1usize, 3, 5]), s in 1usize..4, pad in 0usize..3,
            silu in any::<bool>(), with_residual in any::<bool>(),
        ) {
            prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
            let x = values(c * h * w, 1);
            let weight = values(c * k * k, 2);
            let bias = values(c, 3);
            let (oh, ow) = output_size(h, w, k, s, pad);
            let residual = values(c * oh * ow, 4);
            let activation = if silu { Activation::Silu } else { Activation::Identity };
            let params = DepthwiseParams {
                weight: &weight,
                kernel: k,
                stride: s,
                padding: pad,
                epilogue: Epilogue {
                    residual: with_residual.then_some(&residual[..]),
                    ..Epilogue::new(&bias, activation)
                },
            };
            let split = split.min(c);
            let parts = [
                FeatureMap { data: &x[..split * h * w], channels: split },
                FeatureMap { data: &x[split * h * w..], channels: c - split },
            ];
            let out = written(c * oh * ow, |out| depthwise_conv2d(&parts, h, w, &params, out));
            for (i, (g, r)) in out.iter().zip(reference(&x, [c, h, w], &params)).enumerate() {
                prop_assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()), "element {i}: {g} vs {r}");
            }
        }
    }
}
