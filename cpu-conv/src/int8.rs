//! INT8 convolution: unsigned 8-bit activations (affine, one scale and zero point per
//! tensor) times signed 8-bit weights (symmetric, one scale per output channel), accumulated
//! exactly in i32, then dequantised, biased and activated in f32, and written as f32 or, for
//! a next INT8 convolution, quantised again with its input parameters ([`Int8Output`]).
//!
//! Activations are laid out as *quads*: the input's channels in groups of four, each pixel's
//! four values in one `u32` (`[channels / 4, height, width]` of `u32`, the last group padded
//! with the zero point), which is what `vpdpbusd` multiplies. A 1x1 convolution multiplies
//! that map directly; others build an im2col block of quads per tile (the f32 path's
//! [`Window`], on `u32`), with the zero point where a tap falls outside the image. The zero
//! point's contribution, `zero_point · Σ w`, is subtracted by starting each output row's
//! accumulators at its negative.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use crate::activation::{Activation, Epilogue, apply_bias_activation_into};
use crate::conv::{FeatureMap, SharedOut, WorkItem, WorkSplit, finish_tile, output_size};
use crate::im2col::Window;
use crate::int8_kernels::{MR, Tile, kernel};
use crate::packed::{InputRows, Offsets, Strided};
use crate::taps::PaddedLayout;
use crate::upsample::{UpsampledPart, upsample_nearest};

// `WorkSplit` groups output channels in blocks of the f32 kernels' height.
const _: () = assert!(MR == crate::packed::MR);
use crate::scratch::{prefix, with_reused};

thread_local! {
    /// Each thread's im2col block of quads, reused across tiles and convolutions.
    static IM2COL_BLOCK: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    /// The calling thread's padded copy of a 3x3 convolution's input quads.
    static PADDED_QUADS: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    /// Each thread's dequantised product of one tile, `[c_out, tile]`.
    static PRODUCT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Affine quantisation to u8: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    pub scale: f32,
    pub zero_point: u8,
}

impl QuantParams {
    /// Parameters that cover `[min, max]`, widened to include 0 so that zero (the padding of
    /// a convolution) is exact. A range without width gets scale 1.
    pub fn covering(min: f32, max: f32) -> Self {
        let (min, max) = (min.min(0.0), max.max(0.0));
        let scale = if max > min && (max - min).is_finite() {
            (max - min) / 255.0
        } else {
            1.0
        };
        Self {
            scale,
            zero_point: (-min / scale).round().clamp(0.0, 255.0) as u8,
        }
    }

    /// `value` quantised: rounded to the nearest step (ties to even), clamped to `0..=255`.
    #[inline(always)]
    pub fn quantize(&self, value: f32) -> u8 {
        let steps = (value * (1.0 / self.scale)).round_ties_even();
        (steps + self.zero_point as f32).clamp(0.0, 255.0) as u8
    }

    /// The real value of `q`.
    pub fn dequantize(&self, q: u8) -> f32 {
        self.scale * (q as f32 - self.zero_point as f32)
    }

    /// Four copies of the zero point, as a quad.
    fn zero_quad(&self) -> u32 {
        u32::from_ne_bytes([self.zero_point; 4])
    }
}

/// A quantised feature map of one image: `channels` channels of `height x width` as quads
/// (see the module documentation), with the parameters they were quantised with.
#[derive(Debug, Clone)]
pub struct QuantizedMap {
    pub quads: Vec<u32>,
    pub channels: usize,
    pub params: QuantParams,
}

impl QuantizedMap {
    /// The channel concatenation of `parts` (each `[channels, plane]` f32) quantised with
    /// `params`.
    ///
    /// # Panics
    /// When a part's length is not its channels times `plane`.
    pub fn quantize(parts: &[FeatureMap], plane: usize, params: QuantParams) -> Self {
        let channels = channel_planes(parts, plane);
        let len = channels.len().div_ceil(4) * plane;
        // Not zeroed first: every quad is written below (the clearing took 1 % of an INT8
        // forward pass).
        let mut quads = Vec::with_capacity(len);
        quantize_channels(
            &channels,
            plane,
            params,
            &mut quads.spare_capacity_mut()[..len],
        );
        // SAFETY: `quantize_channels` wrote every quad.
        unsafe { quads.set_len(len) };
        Self {
            quads,
            channels: channels.len(),
            params,
        }
    }

    /// The channel concatenation of `upsampled`, upsampled, and `rest` (each `[channels,
    /// plane]` f32 at the upsampled size) quantised with `params`. Quantisation is per value,
    /// so the upsampled part's quads are those of the map at its own size, repeated: it is
    /// quantised at a `scale²`-th of the values, and the f32 upsampled map is never made.
    ///
    /// # Panics
    /// When the upsampled part's channels are not a multiple of four (its last quad would
    /// take lanes from `rest`), or a part's length is not its channels times its plane.
    pub fn quantize_upsampled(
        upsampled: &UpsampledPart,
        rest: &[FeatureMap],
        params: QuantParams,
    ) -> Self {
        upsampled.check();
        let low = upsampled.map;
        assert!(
            low.channels.is_multiple_of(4),
            "the upsampled part fills whole quads"
        );
        let (height, width) = upsampled.output_size();
        let plane = height * width;
        let low_quads = Self::quantize(&[low], upsampled.height * upsampled.width, params).quads;
        let rest = channel_planes(rest, plane);
        let low_groups = low.channels / 4;
        let len = (low_groups + rest.len().div_ceil(4)) * plane;
        let mut quads = Vec::with_capacity(len);
        let (spread, tail) = quads.spare_capacity_mut()[..len].split_at_mut(low_groups * plane);
        upsample_nearest(
            &low_quads,
            low_groups,
            upsampled.height,
            upsampled.width,
            upsampled.scale,
            spread,
        );
        quantize_channels(&rest, plane, params, tail);
        // SAFETY: the upsampling wrote the upsampled part's quads, `quantize_channels` the
        // rest.
        unsafe { quads.set_len(len) };
        Self {
            quads,
            channels: low.channels + rest.len(),
            params,
        }
    }
}

/// Every channel of `parts` as its plane of `plane` values, in order.
///
/// # Panics
/// When a part's length is not its channels times `plane`.
fn channel_planes<'a>(parts: &[FeatureMap<'a>], plane: usize) -> Vec<&'a [f32]> {
    let mut channels = Vec::new();
    for part in parts {
        assert_eq!(part.data.len(), part.channels * plane, "input shape");
        channels.extend((0..part.channels).map(|c| &part.data[c * plane..(c + 1) * plane]));
    }
    channels
}

/// `channels`, planes of `plane` values, quantised with `params` into `out`: a plane of
/// quads per group of four channels, one after another.
fn quantize_channels(
    channels: &[&[f32]],
    plane: usize,
    params: QuantParams,
    out: &mut [MaybeUninit<u32>],
) {
    assert_eq!(
        out.len(),
        channels.len().div_ceil(4) * plane,
        "quads' shape"
    );
    if plane > 0 {
        out.par_chunks_exact_mut(plane)
            .zip(channels.par_chunks(4))
            .for_each(|(out, group)| {
                let lanes =
                    std::array::from_fn(|c| group.get(c).map(|&values| Lane::plain(values)));
                quantize_group(lanes, Activation::Identity, params, out)
            });
    }
}

/// One channel's values on their way into a lane of the quads: `activation(values + bias)`
/// is what gets quantised.
#[derive(Clone, Copy)]
struct Lane<'a> {
    values: &'a [f32],
    bias: f32,
}

impl<'a> Lane<'a> {
    /// Values quantised as they are (with [`Activation::Identity`]).
    fn plain(values: &'a [f32]) -> Self {
        Self { values, bias: 0.0 }
    }
}

/// Values [`quantize_group_chunked`] activates at a time, per lane.
const ACTIVATED_CHUNK: usize = 256;

/// Quads of four lanes of `out.len()` values each (missing ones read as the zero point),
/// each value biased and activated first: a convolution's epilogue and the quantisation
/// for the next in one pass. AVX-512 does both in registers; elsewhere
/// [`quantize_group_chunked`] activates a chunk at a time with the epilogue's own dispatch.
/// Either way the values quantised are those a float output would hold on the same CPU.
fn quantize_group(
    lanes: [Option<Lane>; 4],
    activation: Activation,
    params: QuantParams,
    out: &mut [MaybeUninit<u32>],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512f() {
        // SAFETY: the CPU supports AVX-512F; every lane holds `out.len()` values.
        unsafe { quantize_group_avx512(lanes, activation, params, out) };
        return;
    }
    quantize_group_chunked(lanes, activation, params, out);
}

/// [`quantize_group`] without AVX-512: for SiLU a chunk of each lane activated into a buffer
/// by the epilogue's own dispatch, then quantised one pixel at a time; without an
/// activation, the biased values quantised as they are read (what the epilogue's `v + b`
/// would write).
fn quantize_group_chunked(
    lanes: [Option<Lane>; 4],
    activation: Activation,
    params: QuantParams,
    out: &mut [MaybeUninit<u32>],
) {
    if activation == Activation::Identity {
        quantize_group_portable(lanes, params, out);
        return;
    }
    let mut activated = [[0.0f32; ACTIVATED_CHUNK]; 4];
    for (chunk, out) in out.chunks_mut(ACTIVATED_CHUNK).enumerate() {
        let range = chunk * ACTIVATED_CHUNK..chunk * ACTIVATED_CHUNK + out.len();
        for (lane, buffer) in lanes.iter().zip(&mut activated) {
            if let Some(lane) = lane {
                // SAFETY: `buffer` holds `ACTIVATED_CHUNK >= out.len()` values of its own.
                unsafe {
                    apply_bias_activation_into(
                        &lane.values[range.clone()],
                        buffer.as_mut_ptr(),
                        lane.bias,
                        activation,
                    )
                };
            }
        }
        let lanes =
            std::array::from_fn(|c| lanes[c].map(|_| Lane::plain(&activated[c][..out.len()])));
        quantize_group_portable(lanes, params, out);
    }
}

/// Quads of each lane's values plus its bias (no activation), one pixel at a time.
fn quantize_group_portable(
    lanes: [Option<Lane>; 4],
    params: QuantParams,
    out: &mut [MaybeUninit<u32>],
) {
    for (i, quad) in out.iter_mut().enumerate() {
        quad.write((0..4).fold(0, |q, c| {
            let v = lanes[c].map_or(params.zero_point, |lane| {
                params.quantize(lane.values[i] + lane.bias)
            });
            q | (v as u32) << (8 * c)
        }));
    }
}

/// [`quantize_group`] 16 pixels at a time: the bias and activation as the epilogue's
/// AVX-512 path computes them, then the same arithmetic as [`QuantParams::quantize`]
/// (multiply, round to nearest even, add the zero point, clamp), with the product clamped
/// before the conversion to integers so that out-of-range values saturate alike.
///
/// # Safety
/// The CPU has AVX-512F; every lane present holds `out.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_group_avx512(
    lanes: [Option<Lane>; 4],
    activation: Activation,
    params: QuantParams,
    out: &mut [MaybeUninit<u32>],
) {
    use crate::activation::x86::silu_avx512;
    use std::arch::x86_64::*;
    let n = out.len();
    let inverse = _mm512_set1_ps(1.0 / params.scale);
    let zero_point = _mm512_set1_epi32(params.zero_point as i32);
    let (low, high) = (_mm512_set1_ps(-512.0), _mm512_set1_ps(512.0));
    let (min, max) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
    for start in (0..n).step_by(16) {
        let mask = ((1u32 << (n - start).min(16)) - 1) as __mmask16;
        let mut quad = _mm512_setzero_si512();
        for (c, lane) in lanes.iter().enumerate() {
            let value = match lane {
                Some(lane) => {
                    // SAFETY: masked lanes are not read; the others lie inside `lane`.
                    let x = unsafe { _mm512_maskz_loadu_ps(mask, lane.values.as_ptr().add(start)) };
                    let x = _mm512_add_ps(x, _mm512_set1_ps(lane.bias));
                    let x = match activation {
                        Activation::Identity => x,
                        Activation::Silu => silu_avx512(x),
                    };
                    let steps = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, inverse), low), high);
                    let q = _mm512_add_epi32(_mm512_cvtps_epi32(steps), zero_point);
                    _mm512_min_epi32(_mm512_max_epi32(q, min), max)
                }
                None => zero_point,
            };
            quad = _mm512_or_si512(
                quad,
                _mm512_sllv_epi32(value, _mm512_set1_epi32(8 * c as i32)),
            );
        }
        // SAFETY: as for the loads, inside `out`.
        unsafe { _mm512_mask_storeu_epi32(out.as_mut_ptr().add(start).cast(), mask, quad) };
    }
}

/// A convolution's weights quantised symmetric per output channel to `-127..=127`, in the
/// micro-kernels' layout: quad `(group, ky, kx)` holds input channels `4 * group .. + 4`
/// at tap `(ky, kx)`.
#[derive(Debug, Clone)]
pub struct QuantizedWeights {
    data: Vec<u32>,
    /// Per output channel (padded to a whole block): Σ of its quantised weights.
    sums: Vec<i32>,
    /// Per output channel (padded to a whole block): the weights' scale.
    scales: Vec<f32>,
    rows: usize,
    channels: usize,
    kernel: usize,
}

impl QuantizedWeights {
    /// Quantises row-major `[rows, channels, kernel, kernel]` f32 weights.
    ///
    /// # Panics
    /// When `values` does not hold that many weights.
    pub fn new(values: &[f32], rows: usize, channels: usize, kernel: usize) -> Self {
        let per_row = channels * kernel * kernel;
        assert_eq!(values.len(), rows * per_row, "weight shape");
        let (quantized, scales) = symmetric_per_row(values, rows, per_row);
        Self::from_quantized(&quantized, &scales, channels, kernel)
    }

    /// Packs weights already quantised (`[rows, channels, kernel, kernel]` row-major, one
    /// scale per row).
    ///
    /// # Panics
    /// When the lengths do not match.
    pub fn from_quantized(values: &[i8], scales: &[f32], channels: usize, kernel: usize) -> Self {
        let rows = scales.len();
        let taps = kernel * kernel;
        assert_eq!(values.len(), rows * channels * taps, "weight shape");
        let quads = channels.div_ceil(4) * taps;
        let blocks = rows.div_ceil(MR);
        let mut data = vec![0u32; blocks * quads * MR];
        let mut sums = vec![0i32; blocks * MR];
        for row in 0..rows {
            for c in 0..channels {
                for tap in 0..taps {
                    let w = values[(row * channels + c) * taps + tap];
                    let quad = (c / 4) * taps + tap;
                    let slot = &mut data[((row / MR) * quads + quad) * MR + row % MR];
                    let mut bytes = slot.to_ne_bytes();
                    bytes[c % 4] = w as u8;
                    *slot = u32::from_ne_bytes(bytes);
                    sums[row] += w as i32;
                }
            }
        }
        let mut scales = scales.to_vec();
        scales.resize(blocks * MR, 0.0);
        Self {
            data,
            sums,
            scales,
            rows,
            channels,
            kernel,
        }
    }

    /// Output channels.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The scale of each output channel's weights.
    pub fn scales(&self) -> &[f32] {
        &self.scales[..self.rows]
    }

    /// Depth in quads: input channel groups times kernel taps.
    fn quads(&self) -> usize {
        self.channels.div_ceil(4) * self.kernel * self.kernel
    }
}

/// Row-major `[rows, per_row]` values quantised symmetric per row to `-127..=127`, with the
/// rows' scales (a row of zeros gets scale 1).
fn symmetric_per_row(values: &[f32], rows: usize, per_row: usize) -> (Vec<i8>, Vec<f32>) {
    let mut scales = Vec::with_capacity(rows);
    let mut quantized = Vec::with_capacity(values.len());
    for row in values.chunks_exact(per_row.max(1)).take(rows) {
        let largest = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if largest > 0.0 && largest.is_finite() {
            largest / 127.0
        } else {
            1.0
        };
        scales.push(scale);
        quantized.extend(
            row.iter()
                .map(|v| (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8),
        );
    }
    (quantized, scales)
}

/// An INT8 convolution with one group, no dilation, and its f32 epilogue. A residual is
/// added only to an [`Int8Output::Float`] output.
#[derive(Debug, Clone, Copy)]
pub struct Int8ConvParams<'a> {
    pub weight: &'a QuantizedWeights,
    pub stride: usize,
    pub padding: usize,
    /// Bias, activation and residual.
    pub epilogue: Epilogue<'a>,
}

/// Where an INT8 convolution's output goes.
pub enum Int8Output<'a> {
    /// `[c_out, out_h, out_w]` f32, every element written.
    Float(&'a mut [MaybeUninit<f32>]),
    /// The output quantised with `params` (the next INT8 convolution's input quantisation)
    /// as quads, `[c_out.div_ceil(4), out_h * out_w]`, every quad written: what
    /// [`QuantizedMap::quantize`] makes of the f32 output, without writing the f32 output.
    Quantized {
        quads: &'a mut [MaybeUninit<u32>],
        params: QuantParams,
    },
}

/// An [`Int8Output`] as the parallel tiles share it.
#[derive(Clone, Copy)]
enum Destination {
    Float(SharedOut<f32>),
    Quantized(SharedOut<u32>, QuantParams),
}

/// Computes `conv(input, weight)` and its epilogue for one image into `out` from a quantised
/// `height x width` input.
///
/// # Panics
/// When the input's channels or length, the bias, the residual or `out` do not match the
/// weights, or a residual comes with a quantised output.
pub fn conv2d_int8(
    input: &QuantizedMap,
    height: usize,
    width: usize,
    params: &Int8ConvParams,
    out: Int8Output,
) {
    let weight = params.weight;
    let k = weight.kernel;
    assert_eq!(input.channels, weight.channels, "input channels");
    let groups = input.channels.div_ceil(4);
    assert_eq!(input.quads.len(), groups * height * width, "input shape");
    let (out_h, out_w) = output_size(height, width, k, params.stride, params.padding);
    let positions = out_h * out_w;
    params.epilogue.check(weight.rows, weight.rows * positions);
    let destination = match out {
        Int8Output::Float(out) => {
            assert_eq!(out.len(), weight.rows * positions, "output shape");
            Destination::Float(SharedOut::new(out))
        }
        Int8Output::Quantized {
            quads,
            params: out_params,
        } => {
            assert!(
                params.epilogue.residual.is_none(),
                "a residual needs a float output"
            );
            assert_eq!(
                quads.len(),
                weight.rows.div_ceil(4) * positions,
                "output shape"
            );
            Destination::Quantized(SharedOut::new(quads), out_params)
        }
    };
    let zero_point = input.params.zero_point as i32;
    let init: Vec<i32> = weight.sums.iter().map(|s| -zero_point * s).collect();
    let scale: Vec<f32> = weight
        .scales
        .iter()
        .map(|s| s * input.params.scale)
        .collect();
    let window = Window {
        height,
        width,
        out_width: out_w,
        kernel: k,
        stride: params.stride,
        padding: params.padding,
    };
    let pad = input.params.zero_quad();
    let epilogue = Dequantize {
        init: &init,
        scale: &scale,
        finish: params.epilogue,
    };
    if k == 3 && params.padding == 1 && taps_pay(params.stride, height * width, weight) {
        let layout = PaddedLayout::new(height, width, params.stride);
        return conv3x3_taps_int8(input, height * width, layout, weight, epilogue, destination);
    }
    let direct = k == 1 && params.stride == 1 && params.padding == 0;
    let phased = window.phases(&input.quads, groups, pad);
    let quads = weight.quads();
    let kernel = kernel();
    // Output channels are shared out only where the input is read in place (see `conv2d`).
    let split = WorkSplit::new(positions, quads, weight.rows, kernel.nr, direct);
    split.for_each_item(
        &IM2COL_BLOCK,
        |WorkItem {
             columns,
             blocks,
             channels,
         },
         block| {
            let (start, len) = (columns.start, columns.len());
            let (x, x_stride) = if direct {
                (input.quads[start..].as_ptr(), positions)
            } else {
                let block = prefix(block, quads * len, pad);
                window.fill(&phased, groups, start, len, block, pad);
                (block.as_ptr(), len)
            };
            let multiply = |dst: (*mut f32, usize)| {
                // SAFETY: `x` has `quads` rows of at least `len` quads, `dst` the output
                // rows of `blocks` from column `start` (per the callers below); the kernel
                // runs on this CPU.
                unsafe {
                    multiply_blocks(
                        (kernel.run, kernel.nr),
                        weight,
                        blocks.clone(),
                        (x, Strided(x_stride)),
                        len,
                        &epilogue,
                        dst,
                    )
                };
            };
            let tile = (channels.clone(), columns.clone());
            match destination {
                Destination::Float(out) => {
                    // SAFETY: this item writes columns `start..start + len` of the output
                    // rows of `blocks` and no other item touches them; `out` outlives the
                    // parallel loop.
                    let dst = unsafe { out.get().add(channels.start * positions + start) };
                    multiply((dst, positions));
                    // SAFETY: as above: this item's columns of its output rows.
                    unsafe { finish_tile((dst, positions), tile, positions, &params.epilogue) };
                }
                Destination::Quantized(quads, out_params) => with_reused(&PRODUCT, |product| {
                    let product = prefix(product, channels.len() * len, 0.0);
                    multiply((product.as_mut_ptr(), len));
                    let runs = std::iter::once((0, start, len));
                    // SAFETY: this item's columns of its channels' groups (whole groups:
                    // blocks of `MR` channels start at a multiple of four).
                    unsafe {
                        store_quantized(
                            (product, len, channels.clone()),
                            runs,
                            &params.epilogue,
                            (quads, positions, out_params),
                        )
                    };
                }),
            }
        },
    );
}

/// The output of one convolution quantised for the next: [`conv2d_int8`] into a new map
/// with [`Int8Output::Quantized`].
pub fn conv2d_int8_quantized(
    input: &QuantizedMap,
    height: usize,
    width: usize,
    params: &Int8ConvParams,
    out_params: QuantParams,
) -> QuantizedMap {
    let (out_h, out_w) = output_size(
        height,
        width,
        params.weight.kernel,
        params.stride,
        params.padding,
    );
    let len = params.weight.rows.div_ceil(4) * out_h * out_w;
    let mut quads = Vec::with_capacity(len);
    conv2d_int8(
        input,
        height,
        width,
        params,
        Int8Output::Quantized {
            quads: &mut quads.spare_capacity_mut()[..len],
            params: out_params,
        },
    );
    // SAFETY: the convolution wrote every quad.
    unsafe { quads.set_len(len) };
    QuantizedMap {
        quads,
        channels: params.weight.rows,
        params: out_params,
    }
}

/// Finishes a tile with `epilogue` (bias and activation: no residual) as it quantises it
/// into the output quads, in one pass: `product` has a row of `len` positions per channel
/// of `channels`, whose start is a multiple of four; `runs` say which of its positions are
/// which output pixels (`(offset in the tile, pixel, length)`), so positions between them
/// are never activated. The last group's channels past `channels` get the zero point, so
/// `channels` ends at a multiple of four or at the last channel.
///
/// # Safety
/// `quads` is the `[groups, plane]` output, whose quads of these channels' groups at the
/// runs' pixels no one else writes meanwhile.
unsafe fn store_quantized(
    (product, len, channels): (&[f32], usize, Range<usize>),
    runs: impl Iterator<Item = (usize, usize, usize)> + Clone,
    epilogue: &Epilogue,
    (quads, plane, params): (SharedOut<u32>, usize, QuantParams),
) {
    debug_assert_eq!(channels.start % 4, 0, "channels start a group");
    debug_assert!(
        epilogue.residual.is_none(),
        "a residual needs a float output"
    );
    let rows: &[f32] = &product[..channels.len() * len];
    for (g, group) in rows.chunks(4 * len).enumerate() {
        let first = channels.start / 4 + g;
        for (offset, pixel, kept) in runs.clone() {
            let lanes = std::array::from_fn(|c| {
                group.get(c * len..(c + 1) * len).map(|row| Lane {
                    values: &row[offset..offset + kept],
                    bias: epilogue.bias[channels.start + 4 * g + c],
                })
            });
            // SAFETY: quads `pixel..pixel + kept` of group `first`, the caller's alone.
            let out = unsafe {
                std::slice::from_raw_parts_mut(
                    quads
                        .get()
                        .add(first * plane + pixel)
                        .cast::<MaybeUninit<u32>>(),
                    kept,
                )
            };
            quantize_group(lanes, epilogue.activation, params, out);
        }
    }
}

/// Whether a 3x3, padding-1 convolution of `stride` on a map of `pixels` runs tap-wise
/// (one indirect product over a padded copy) rather than through im2col blocks: always at
/// stride 2, at stride 1 on maps up to 40x40 and for few channels (`cargo bench -p cpu-conv
/// -- int8`, im2col / taps: 64 -> 128 stride 2 at 80x80 272 / 198 µs, 128 -> 256 stride 2 at
/// 20x20 111 / 67 µs, 64 -> 64 at 40x40 130 / 115 µs, 16 -> 8 at 80x80 52 / 41 µs; but
/// 64 -> 80 at 80x80 446-467 / 483-578 µs).
fn taps_pay(stride: usize, pixels: usize, weight: &QuantizedWeights) -> bool {
    match stride {
        2 => true,
        1 => pixels <= 40 * 40 || weight.channels * weight.rows <= 16 * 16,
        _ => false,
    }
}

/// What turns a convolution's i32 accumulators into its f32 output: each output channel's
/// accumulator start (the zero-point correction) and scale, then the f32 epilogue.
#[derive(Clone, Copy)]
struct Dequantize<'a> {
    init: &'a [i32],
    scale: &'a [f32],
    finish: Epilogue<'a>,
}

/// `dst = scale · (init + weight · x)` for the output rows of `blocks` and `len` columns,
/// tile by tile with the micro-kernel `run` of block width `nr`; `x` is input row 0's first
/// column and how to find the others, `dst` output row `blocks.start * MR`'s first column
/// and the distance between rows.
///
/// # Safety
/// `x` addresses `weight.quads()` readable rows of `len` quads, `dst` the rows of `blocks`
/// (the last only as far as `weight.rows`) of `len` writable values; the CPU runs `run`.
unsafe fn multiply_blocks<R: InputRows>(
    (run, nr): (unsafe fn(&Tile<R>), usize),
    weight: &QuantizedWeights,
    blocks: Range<usize>,
    (x, x_rows): (*const u32, R),
    len: usize,
    epilogue: &Dequantize,
    (dst, dst_stride): (*mut f32, usize),
) {
    let quads = weight.quads();
    for first_col in (0..len).step_by(nr) {
        for b in blocks.clone() {
            let call = Tile {
                a: weight.data[b * quads * MR..].as_ptr(),
                quads,
                // SAFETY (both): `first_col < len`, inside the input rows and the output
                // rows of block `b`, per the caller's contract.
                x: unsafe { x.add(first_col) },
                x_rows,
                init: epilogue.init[b * MR..].as_ptr(),
                scale: epilogue.scale[b * MR..].as_ptr(),
                dst: unsafe { dst.add((b - blocks.start) * MR * dst_stride + first_col) },
                dst_stride,
                rows: MR.min(weight.rows - b * MR),
                cols: nr.min(len - first_col),
            };
            // SAFETY: the weights hold `quads * MR` quads from block `b`, `init`/`scale`
            // `MR` values each; the rest per the caller's contract.
            unsafe { run(&call) };
        }
    }
}

/// [`conv2d_int8`] for 3x3, padding-1 convolutions of stride 1 or 2: one indirect product
/// per tile over a padded (for stride 2, phase-split) copy of the quads, padded with the
/// zero point, as the f32 path's `conv3x3_taps` does, instead of an im2col block per tile.
fn conv3x3_taps_int8(
    input: &QuantizedMap,
    plane: usize,
    layout: PaddedLayout,
    weight: &QuantizedWeights,
    epilogue: Dequantize,
    destination: Destination,
) {
    if plane == 0 {
        return;
    }
    let groups: Vec<&[u32]> = input.quads.chunks_exact(plane).collect();
    let positions = layout.positions();
    // Weight quad `(group, tap)` is depth step `group * 9 + tap`, as the offsets go.
    let offsets = layout.offsets(groups.len());
    let quads = weight.quads();
    debug_assert_eq!(offsets.len(), quads);
    let kernel = kernel();
    with_reused(&PADDED_QUADS, |buffer| {
        let padded = layout.copy(&groups, &offsets, input.params.zero_quad(), buffer);
        let split = WorkSplit::new(positions, quads, weight.rows, kernel.nr, true);
        split.for_each_item(
            &PRODUCT,
            |WorkItem {
                 columns,
                 blocks,
                 channels,
             },
             product| {
                let (start, len) = (columns.start, columns.len());
                let product = prefix(product, channels.len() * len, 0.0);
                // SAFETY: every offset plus the item's last position lies inside `padded`
                // (`PaddedLayout::copy`); `product` has a row of `len` per channel of
                // `blocks`; the kernel runs on this CPU.
                unsafe {
                    multiply_blocks(
                        (kernel.run_indirect, kernel.nr),
                        weight,
                        blocks,
                        (padded.as_ptr().add(start), Offsets(offsets.as_ptr())),
                        len,
                        &epilogue,
                        (product.as_mut_ptr(), len),
                    )
                };
                let tile = (start, len);
                match destination {
                    Destination::Float(out) => {
                        let finish = &epilogue.finish;
                        // SAFETY: the item's positions of its channels are its own; `out`
                        // outlives the parallel loop.
                        unsafe { layout.finish_tile(product, tile, channels, finish, out) }
                    }
                    Destination::Quantized(quads, out_params) => {
                        let runs = layout.output_runs(tile);
                        let out = (quads, layout.out_plane(), out_params);
                        let finish = &epilogue.finish;
                        // SAFETY: the item's pixels of its channels' groups, its own.
                        unsafe { store_quantized((product, len, channels), runs, finish, out) };
                    }
                }
            },
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::apply_bias_activation;
    use crate::test_values::{
        UpsampledCase, assert_adds_residual, split_channels, values, written,
    };
    use proptest::prelude::*;

    /// Plain integer convolution: `Σ (x - zero_point) · w` over the taps inside the image,
    /// then the same float epilogue as the kernels (`acc * (x_scale * w_scale) + bias`,
    /// then the activation).
    fn reference(
        x: &[u8],
        [c_in, h, w]: [usize; 3],
        x_params: QuantParams,
        weight: &[i8],
        w_scales: &[f32],
        p: &Int8ConvParams,
        k: usize,
    ) -> Vec<f32> {
        let (oh, ow) = output_size(h, w, k, p.stride, p.padding);
        let c_out = w_scales.len();
        let mut out = vec![0.0; c_out * oh * ow];
        for co in 0..c_out {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0i32;
                    for ci in 0..c_in {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * p.stride + ky) as isize - p.padding as isize;
                                let ix = (ox * p.stride + kx) as isize - p.padding as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[(ci * h + iy as usize) * w + ix as usize] as i32
                                    - x_params.zero_point as i32;
                                acc += xv * weight[((co * c_in + ci) * k + ky) * k + kx] as i32;
                            }
                        }
                    }
                    out[(co * oh + oy) * ow + ox] = acc as f32 * (w_scales[co] * x_params.scale);
                }
            }
            let row = &mut out[co * oh * ow..(co + 1) * oh * ow];
            p.epilogue.finish(row, co, co * oh * ow);
        }
        out
    }

    /// `conv2d_int8` against the reference, bit for bit, on a `[c_in, h, w]` input given as
    /// two f32 channel blocks split at `split`.
    fn check(shape: [usize; 5], window: [usize; 3], act: Activation) {
        let [c_in, split, c_out, h, w] = shape;
        let [k, s, pad] = window;
        let x = values(c_in * h * w, 11);
        let x_params = QuantParams::covering(-1.0, 1.0);
        let float_weights = values(c_out * c_in * k * k, 12);
        let weights = QuantizedWeights::new(&float_weights, c_out, c_in, k);
        let bias = values(c_out, 13);
        let params = Int8ConvParams {
            weight: &weights,
            stride: s,
            padding: pad,
            epilogue: Epilogue::new(&bias, act),
        };
        let parts = split_channels(&x, c_in, split, h * w);
        let quantized = QuantizedMap::quantize(&parts, h * w, x_params);
        let (oh, ow) = output_size(h, w, k, s, pad);
        let out = written(c_out * oh * ow, |out| {
            conv2d_int8(&quantized, h, w, &params, Int8Output::Float(out))
        });
        let x_q: Vec<u8> = x.iter().map(|&v| x_params.quantize(v)).collect();
        let (w_q, w_scales) = symmetric_per_row(&float_weights, c_out, c_in * k * k);
        let want = reference(&x_q, [c_in, h, w], x_params, &w_q, &w_scales, &params, k);
        for (i, (g, r)) in out.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), r.to_bits(), "element {i}: {g} vs {r}");
        }
        // And close to the float convolution: within a few quantisation steps.
        let packed = crate::PackedWeights::new(&float_weights, c_out, c_in * k * k);
        let float_params = crate::ConvParams {
            weight: &packed,
            kernel: k,
            stride: s,
            padding: pad,
            epilogue: params.epilogue,
        };
        let float = crate::conv::tests::reference(&x, [c_in, h, w], &float_weights, &float_params);
        let tolerance = 0.01 * (c_in * k * k) as f32;
        for (g, f) in out.iter().zip(&float) {
            assert!((g - f).abs() <= tolerance, "{g} vs float {f}");
        }
    }

    #[test]
    fn yolo_shapes_match_the_integer_reference() {
        check([3, 3, 16, 33, 47], [3, 2, 1], Activation::Silu);
        check([16, 16, 16, 20, 24], [3, 1, 1], Activation::Silu);
        // A map over 40x40 with more channels: through im2col blocks, not tap-wise.
        check([32, 16, 24, 45, 41], [3, 1, 1], Activation::Silu);
        check([24, 8, 32, 17, 13], [1, 1, 0], Activation::Silu);
        // A 1x1 on a map small enough that the threads split the output channels.
        assert!(WorkSplit::new(5 * 7, 16, 40, kernel().nr, true).splits_channels());
        check([64, 30, 40, 5, 7], [1, 1, 0], Activation::Identity);
    }

    /// The output quantised for the next convolution is exactly the f32 output quantised:
    /// through the direct 1x1 product, im2col blocks and the tap-wise product at strides 1
    /// and 2, with output channels that fill the last group and ones that do not.
    #[test]
    fn quantized_output_is_the_float_output_quantized() {
        let cases = [
            ([24, 24, 40, 9, 11], [1, 1, 0]),
            ([12, 12, 21, 45, 41], [3, 1, 1]),
            ([8, 8, 13, 17, 13], [3, 1, 1]),
            ([16, 16, 30, 19, 22], [3, 2, 1]),
            ([5, 5, 6, 12, 12], [1, 2, 0]),
        ];
        for ([c_in, _, c_out, h, w], [k, s, pad]) in cases {
            let x_params = QuantParams::covering(-0.3, 1.5);
            let weights = QuantizedWeights::new(&values(c_out * c_in * k * k, 31), c_out, c_in, k);
            let bias = values(c_out, 32);
            let params = Int8ConvParams {
                weight: &weights,
                stride: s,
                padding: pad,
                epilogue: Epilogue::new(&bias, Activation::Silu),
            };
            let x = QuantizedMap::quantize(
                &split_channels(&values(c_in * h * w, 33), c_in, c_in, h * w),
                h * w,
                x_params,
            );
            let (oh, ow) = output_size(h, w, k, s, pad);
            let float = written(c_out * oh * ow, |out| {
                conv2d_int8(&x, h, w, &params, Int8Output::Float(out))
            });
            let out_params = QuantParams::covering(-0.278, 2.0);
            let want = QuantizedMap::quantize(
                &split_channels(&float, c_out, c_out, oh * ow),
                oh * ow,
                out_params,
            );
            let got = conv2d_int8_quantized(&x, h, w, &params, out_params);
            assert_eq!((got.channels, got.params), (want.channels, want.params));
            assert!(
                got.quads == want.quads,
                "{c_in}->{c_out} {k}x{k}/{s} at {h}x{w}"
            );
        }
    }

    /// A float output gets the residual added: through the direct 1x1 product, im2col
    /// blocks and the tap-wise product at strides 1 and 2.
    #[test]
    fn a_residual_is_added_to_every_float_output() {
        for ([c_in, c_out, h, w], [k, s, pad]) in [
            ([24, 40, 9, 11], [1, 1, 0]),
            ([32, 24, 45, 41], [3, 1, 1]),
            ([16, 16, 10, 10], [3, 1, 1]),
            ([16, 30, 19, 22], [3, 2, 1]),
        ] {
            let weights = QuantizedWeights::new(&values(c_out * c_in * k * k, 41), c_out, c_in, k);
            let x = values(c_in * h * w, 43);
            let input = FeatureMap {
                data: &x,
                channels: c_in,
            };
            let x = QuantizedMap::quantize(&[input], h * w, QuantParams::covering(-1.0, 1.0));
            let (oh, ow) = output_size(h, w, k, s, pad);
            let bias = values(c_out, 42);
            assert_adds_residual(c_out * oh * ow, &bias, Activation::Silu, |epilogue, out| {
                let params = Int8ConvParams {
                    weight: &weights,
                    stride: s,
                    padding: pad,
                    epilogue: *epilogue,
                };
                conv2d_int8(&x, h, w, &params, Int8Output::Float(out))
            });
        }
    }

    #[test]
    fn quantisation_rounds_clamps_and_keeps_zero_exact() {
        let p = QuantParams::covering(-0.278, 6.0);
        assert_eq!(p.dequantize(p.quantize(0.0)), 0.0);
        assert_eq!(p.quantize(-10.0), 0);
        assert_eq!(p.quantize(10.0), 255);
        assert!((p.dequantize(p.quantize(1.234)) - 1.234).abs() <= p.scale / 2.0);
        let image = QuantParams::covering(0.0, 1.0);
        assert_eq!((image.zero_point, image.quantize(128.0 / 255.0)), (0, 128));
        assert_eq!(QuantParams::covering(0.0, 0.0).scale, 1.0);
    }

    /// Quantising a part at its own size and upsampling its quads gives exactly the quads of
    /// the upsampled map quantised with the rest: YOLO's neck at 320 (256 channels of 10x10
    /// doubled, beside 128 of 20x20), scale 3 with a rest whose channels leave the last
    /// quad short, and an empty rest.
    #[test]
    fn quantised_upsampled_part_matches_the_upsampled_map_quantised() {
        let params = QuantParams::covering(-0.3, 0.9);
        for shape in [[256, 128, 10, 10, 2], [8, 5, 3, 4, 3], [4, 0, 5, 2, 2]] {
            let case = UpsampledCase::new(shape);
            let [_, _, h, w, scale] = shape;
            let want = QuantizedMap::quantize(&case.made(), h * scale * w * scale, params);
            let got = QuantizedMap::quantize_upsampled(&case.part(), &[case.rest()], params);
            assert_eq!(got.channels, want.channels);
            assert!(got.quads == want.quads, "{shape:?}");
        }
    }

    /// The vectorised quantisation and the chunked one without AVX-512 give the portable
    /// one's quads, out-of-range values, a missing channel and a tail shorter than a vector
    /// included; with a bias, and with SiLU, the quads of the values the float epilogue makes.
    #[test]
    fn quantisation_paths_agree() {
        // SiLU's least value, -0.278, is below the range too.
        let params = QuantParams::covering(-0.2, 3.0);
        // Two whole chunks of the path without AVX-512 and a tail shorter than a vector.
        let pixels = 2 * ACTIVATED_CHUNK + 37;
        let channels: Vec<Vec<f32>> = (0..3)
            .map(|c| values(pixels, 20 + c).iter().map(|v| v * 5.0).collect())
            .collect();
        // Quads written by `run` into a buffer that starts as a pattern no quad here has.
        let quads = |run: &dyn Fn(&mut [MaybeUninit<u32>])| {
            let mut out = vec![MaybeUninit::new(0xdead_beef_u32); pixels];
            run(&mut out);
            // SAFETY: every element was initialised before `run`, which writes only u32s.
            out.into_iter()
                .map(|q| unsafe { q.assume_init() })
                .collect::<Vec<u32>>()
        };
        for (activation, bias) in [(Activation::Identity, -0.3), (Activation::Silu, 0.4)] {
            let finished: Vec<Vec<f32>> = channels
                .iter()
                .map(|c| {
                    let mut row = c.clone();
                    apply_bias_activation(&mut row, bias, activation);
                    row
                })
                .collect();
            let lanes = std::array::from_fn(|c| finished.get(c).map(|v| Lane::plain(v)));
            let portable = quads(&|out| quantize_group_portable(lanes, params, out));
            let lanes =
                std::array::from_fn(|c| channels.get(c).map(|values| Lane { values, bias }));
            let dispatched = quads(&|out| quantize_group(lanes, activation, params, out));
            assert_eq!(portable, dispatched, "{activation:?}");
            let chunked = quads(&|out| quantize_group_chunked(lanes, activation, params, out));
            assert_eq!(portable, chunked, "{activation:?} in chunks");
            assert!(!portable.contains(&0xdead_beef));
            let low_byte = |byte| portable.iter().any(|q| q & 0xff == byte);
            assert!(low_byte(255) && low_byte(0), "{activation:?} saturates");
            assert!(portable.iter().all(|q| q >> 24 == params.zero_point as u32));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn random_shapes_match_the_integer_reference(
            c_in in 1usize..11, split in 0usize..11, c_out in 1usize..20,
            h in 1usize..15, w in 1usize..15, k in prop::sample::select(vec![1usize, 3]),
            s in 1usize..3, pad in 0usize..2, silu in any::<bool>(),
        ) {
            prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
            let act = if silu { Activation::Silu } else { Activation::Identity };
            check([c_in, split, c_out, h, w], [k, s, pad], act);
        }
    }
}
