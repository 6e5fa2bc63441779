//! Convolutions (3x3 with padding 1 and stride 1 or 2, and 1x1) with the output channels in
//! the vector lanes, for AVX-512.
//!
//! The tap-wise path ([`crate::conv3x3_taps`]) and the packed products put output positions
//! in the lanes, numbered on the padded width for 3x3, so on small maps much of every
//! vector is padding columns or a masked tail: at 10x10 the tap-wise path computes 128 lanes
//! per channel for 100 pixels. This path keeps a block of 32 output channels in two vectors
//! (16 in one for a last, narrow block) and broadcasts the input instead: a micro-kernel
//! computes up to [`MAX_PIXELS`] consecutive output pixels, one accumulator per pixel and
//! vector, and each depth step (an input channel and tap) reads the block's weights for that
//! step (one or two vectors, packed once at load) and one input value per pixel. A 3x3
//! convolution reads the tap-wise path's padded copy at the same offsets, where consecutive
//! output pixels read consecutive values for stride 2 as well (that copy splits the input
//! into phase planes); a 1x1 convolution reads its input in place, the whole map as one row
//! of pixels. No lane computes a padding column, and nothing past a row's last pixel is
//! computed.
//!
//! The epilogue works on the sums in registers: it adds the bias as a vector, applies the
//! activation, transposes each vector's 16 channels x pixels in registers and writes each
//! channel's pixels into the `[c_out, out_h, out_w]` output with one masked store, adding a
//! residual there if there is one. (Through a buffer and a scalar transposition, as before,
//! the path was about 5 % slower on shallow layers, such as 1x1 convolutions of 64-128
//! input channels, and the same on deep ones.)

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use crate::activation::{Activation, Epilogue};
use crate::conv::{FeatureMap, ITEMS_PER_THREAD, SharedOut, as_uninit};
use crate::scratch::{prefix, with_reused};
use crate::taps::{Bands, PADDED, PaddedLayout};
use crate::upsample::{LOW_PRODUCT, LowProduct, UpsampledPart};

/// Output channels per block: two vectors of [`LANES`].
const BLOCK: usize = 32;
/// f32 lanes of an AVX-512 vector.
const LANES: usize = 16;
/// Output pixels per micro-kernel call, at most: with two vectors per pixel, 24
/// accumulators, two weight vectors and a broadcast value in 32 registers.
const MAX_PIXELS: usize = 12;

/// A 1x1 or 3x3 convolution's weights in blocks of [`BLOCK`] output channels, depth-major
/// within a block (`[block][c_in * kernel²][lanes]`, the depth in the `(channel, tap)` order
/// of the padded copy's offsets); the last block is [`LANES`] wide when that covers it, and
/// zero-padded.
#[derive(Debug, Clone)]
pub struct ChannelBlockedWeights {
    data: Vec<f32>,
    c_out: usize,
    c_in: usize,
    kernel: usize,
}

impl ChannelBlockedWeights {
    /// Packs `[c_out, c_in, kernel, kernel]` weights.
    ///
    /// # Panics
    /// When the kernel is neither 1 nor 3, or `weight` does not hold
    /// `c_out * c_in * kernel²` values.
    pub fn new(weight: &[f32], c_out: usize, c_in: usize, kernel: usize) -> Self {
        assert!(matches!(kernel, 1 | 3), "1x1 or 3x3 kernel");
        let depth = c_in * kernel * kernel;
        assert_eq!(weight.len(), c_out * depth, "weight shape");
        let mut data = Vec::new();
        for first in (0..c_out).step_by(BLOCK) {
            let lanes = block_lanes(c_out - first);
            data.extend((0..depth).flat_map(|k| {
                (first..first + lanes).map(move |co| {
                    if co < c_out {
                        weight[co * depth + k]
                    } else {
                        0.0
                    }
                })
            }));
        }
        Self {
            data,
            c_out,
            c_in,
            kernel,
        }
    }

    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.c_out
    }

    fn depth(&self) -> usize {
        self.c_in * self.kernel * self.kernel
    }

    fn blocks(&self) -> usize {
        self.c_out.div_ceil(BLOCK)
    }

    /// Block `block`'s output channels and its packed weights.
    fn block(&self, block: usize) -> (Range<usize>, &[f32]) {
        let first = block * BLOCK;
        let lanes = block_lanes(self.c_out - first);
        let start = first * self.depth();
        (
            first..(first + lanes).min(self.c_out),
            &self.data[start..start + lanes * self.depth()],
        )
    }
}

/// Lanes of the block whose first channel leaves `remaining` channels.
fn block_lanes(remaining: usize) -> usize {
    if remaining <= LANES { LANES } else { BLOCK }
}

/// Whether this CPU runs [`conv_channel_blocked`].
pub fn channel_blocked_supported() -> bool {
    crate::simd::avx512f()
}

/// `conv(input, weight)` and its `epilogue`, the output channels in the vector lanes: 3x3
/// with padding 1 and `stride` 1 or 2, or 1x1 with stride 1. `inputs` are the channel blocks
/// of the input, each `[channels, height, width]`; `out` is `[c_out, out_h, out_w]`.
///
/// # Panics
/// When the CPU lacks AVX-512 ([`channel_blocked_supported`]), the stride is not one of
/// those, or a slice's length does not match the shapes.
pub fn conv_channel_blocked(
    inputs: &[FeatureMap],
    (height, width): (usize, usize),
    weight: &ChannelBlockedWeights,
    stride: usize,
    epilogue: &Epilogue,
    out: &mut [MaybeUninit<f32>],
) {
    assert!(channel_blocked_supported(), "AVX-512 needed");
    let c_in = FeatureMap::channels_of(inputs, (height, width));
    assert_eq!(c_in, weight.c_in, "input channels");
    assert!(weight.kernel == 3 || stride == 1, "1x1 at stride 1");
    // The 3x3 copy's layout; its output size is also a 1x1 stride-1 convolution's.
    let layout = PaddedLayout::new(height, width, stride);
    let (out_h, out_w) = layout.out_size();
    assert_eq!(out.len(), weight.c_out * out_h * out_w, "output shape");
    epilogue.check(weight.c_out, out.len());
    if out.is_empty() || c_in == 0 {
        return;
    }
    let planes: Vec<&[f32]> = inputs
        .iter()
        .flat_map(|p| p.data.chunks_exact(height * width))
        .collect();
    let out = SharedOut::new(out);
    if weight.kernel == 1 {
        // The whole map as one row; step `k` reads channel `k` in place.
        let steps = StepRows(planes.iter().map(|p| p.as_ptr()).collect());
        let runs = Runs::new(1, height * width);
        convolve_shared(&steps, runs, |_, x| x, weight, (epilogue, Start::ZERO), out);
        return;
    }
    match Bands::new(&layout, weight.c_out, c_in) {
        Some(bands) => convolve_bands(&planes, &layout, &bands, weight, epilogue, out),
        None => {
            let offsets = layout.offsets(planes.len());
            with_reused(&PADDED, |buffer| {
                let padded = layout.copy(&planes, &offsets, 0.0, buffer);
                let steps = StepRows::at(padded, &offsets);
                let runs = Runs::new(out_h, out_w);
                let position = |y, x| layout.position(y, x);
                convolve_shared(&steps, runs, position, weight, (epilogue, Start::ZERO), out);
            });
        }
    }
}

/// [`conv1x1_upsampled`](crate::conv1x1_upsampled) with the output channels in the vector
/// lanes: `conv1x1(concat(upsample(upsampled), rest), weight)` and its `epilogue` into `out`
/// (`[c_out, height * scale, width * scale]`); `weight` is a 1x1 convolution's.
///
/// # Panics
/// As [`conv_channel_blocked`], and when `weight` is not a 1x1 convolution's.
pub fn conv1x1_channel_blocked_upsampled(
    upsampled: &UpsampledPart,
    rest: &[FeatureMap],
    weight: &ChannelBlockedWeights,
    epilogue: &Epilogue,
    out: &mut [MaybeUninit<f32>],
) {
    assert!(channel_blocked_supported(), "AVX-512 needed");
    assert_eq!(weight.kernel, 1, "a 1x1 convolution");
    upsampled.check();
    let (height, width) = upsampled.output_size();
    let low = upsampled.map;
    let c_in = low.channels + FeatureMap::channels_of(rest, (height, width));
    assert_eq!(c_in, weight.c_in, "input channels");
    assert_eq!(out.len(), weight.c_out * height * width, "output shape");
    epilogue.check(weight.c_out, out.len());
    if out.is_empty() {
        return;
    }
    let planes = |parts: &[FeatureMap], plane: usize| {
        StepRows(
            parts
                .iter()
                .flat_map(|p| p.data.chunks_exact(plane))
                .map(|p| p.as_ptr())
                .collect(),
        )
    };
    let positions = upsampled.positions();
    with_reused(&LOW_PRODUCT, |values| {
        let values = prefix(values, weight.c_out * positions, 0.0);
        let no_bias = vec![0.0; weight.c_out];
        let low_steps = planes(&[low], positions);
        convolve_shared(
            &low_steps,
            Runs::new(1, positions),
            |_, x| x,
            weight,
            (&Epilogue::new(&no_bias, Activation::Identity), Start::ZERO),
            SharedOut::new(as_uninit(values)),
        );
        let start = Start {
            depth: low.channels,
            values: Some(LowProduct {
                values,
                height: upsampled.height,
                width: upsampled.width,
                scale: upsampled.scale,
            }),
        };
        let steps = planes(rest, height * width);
        let runs = Runs::new(1, height * width);
        convolve_shared(
            &steps,
            runs,
            |_, x| x,
            weight,
            (epilogue, start),
            SharedOut::new(out),
        );
    });
}

/// Where a block's sums start: at zero from the weights' first step, or at an upsampled
/// part's product from the step after that part's channels.
#[derive(Clone, Copy)]
struct Start<'a> {
    /// The weights' depth steps the values cover; the block's steps start after them.
    depth: usize,
    values: Option<LowProduct<'a>>,
}

impl Start<'_> {
    const ZERO: Self = Self {
        depth: 0,
        values: None,
    };
}

/// Where each depth step reads the map's position 0: pixel `p` of a step at `p` values on.
struct StepRows(Vec<*const f32>);

// SAFETY: the pointers only read inputs (or a padded copy) that outlive the parallel loops
// sharing them, and nothing writes those meanwhile.
unsafe impl Sync for StepRows {}

impl StepRows {
    /// The steps reading `copy` at `offsets`.
    fn at(copy: &[f32], offsets: &[usize]) -> Self {
        Self(offsets.iter().map(|&o| copy[o..].as_ptr()).collect())
    }
}

/// The output's rows, each cut into runs of up to [`MAX_PIXELS`] pixels as evenly as they go.
#[derive(Debug, Clone, Copy)]
struct Runs {
    rows: usize,
    width: usize,
    per_row: usize,
}

impl Runs {
    fn new(rows: usize, width: usize) -> Self {
        Self {
            rows,
            width,
            per_row: width.div_ceil(MAX_PIXELS),
        }
    }

    fn count(&self) -> usize {
        self.rows * self.per_row
    }

    /// Run `run`: its row and pixels.
    fn get(&self, run: usize) -> (usize, Range<usize>) {
        let (y, r) = (run / self.per_row, run % self.per_row);
        (
            y,
            self.width * r / self.per_row..self.width * (r + 1) / self.per_row,
        )
    }

    /// The runs of rows `rows`.
    fn of_rows(&self, rows: Range<usize>) -> Range<usize> {
        rows.start * self.per_row..rows.end * self.per_row
    }
}

/// All runs of the output, the input read through `steps` shared by every item: blocks of
/// channels times parts of the runs. `position(y, x)` is where output pixel `(y, x)` reads,
/// from each step's row.
fn convolve_shared(
    steps: &StepRows,
    runs: Runs,
    position: impl Fn(usize, usize) -> usize + Sync,
    weight: &ChannelBlockedWeights,
    (epilogue, start): (&Epilogue, Start),
    out: SharedOut,
) {
    let blocks = weight.blocks();
    let parts = (ITEMS_PER_THREAD * rayon::current_num_threads())
        .div_ceil(blocks)
        .min(runs.count());
    let output = Output {
        ptr: out,
        width: runs.width,
        plane: runs.rows * runs.width,
    };
    (0..blocks * parts).into_par_iter().for_each(|item| {
        let (block, part) = (item / parts, item % parts);
        let block = Block::new(weight, block, epilogue, start);
        let all = runs.count();
        for run in all * part / parts..all * (part + 1) / parts {
            let (y, xs) = runs.get(run);
            // SAFETY: every step's row holds the positions the map's pixels read (the
            // caller's input, or a copy with its slack); the block's channels of this run
            // are this item's alone, and `out` outlives the loop.
            unsafe { block.run(&steps.0, position(y, xs.start), (y, xs), output) };
        }
    });
}

/// A 3x3 convolution band by band of output rows, each item making its own padded copy of
/// the input rows its band reads and computing every output channel of the band.
fn convolve_bands(
    planes: &[&[f32]],
    layout: &PaddedLayout,
    bands: &Bands,
    weight: &ChannelBlockedWeights,
    epilogue: &Epilogue,
    out: SharedOut,
) {
    let band_layout = layout.for_band(bands.max_rows());
    let offsets = band_layout.offsets(planes.len());
    let (out_h, out_w) = layout.out_size();
    let runs = Runs::new(out_h, out_w);
    let output = Output {
        ptr: out,
        width: out_w,
        plane: out_h * out_w,
    };
    (0..bands.count).into_par_iter().for_each(|band| {
        let rows = bands.rows(band);
        with_reused(&PADDED, |buffer| {
            let padded = band_layout.copy_band(planes, &offsets, (0.0, rows.start), buffer);
            let steps = StepRows::at(padded, &offsets);
            for block in 0..weight.blocks() {
                let block = Block::new(weight, block, epilogue, Start::ZERO);
                for run in runs.of_rows(rows.clone()) {
                    let (y, xs) = runs.get(run);
                    let position = band_layout.position(y - rows.start, xs.start);
                    // SAFETY: every offset plus the band's last position lies inside
                    // `padded` (`PaddedLayout::copy_band`, for bands of up to `max_rows`
                    // rows); the band's output rows are this item's alone, and `out`
                    // outlives the loop.
                    unsafe { block.run(&steps.0, position, (y, xs), output) };
                }
            }
        })
    });
}

/// Where the output goes: `[c_out, plane]` from `ptr`, rows `width` apart.
#[derive(Clone, Copy)]
struct Output {
    ptr: SharedOut,
    width: usize,
    plane: usize,
}

/// One block of output channels, as an item computes it.
struct Block<'a> {
    weights: &'a [f32],
    channels: Range<usize>,
    /// The block's bias, zero-padded.
    bias: [f32; BLOCK],
    activation: Activation,
    /// The output's residual, added as the block is written.
    residual: Option<&'a [f32]>,
    /// An upsampled part's product, added to the sums before the activation.
    start: Option<LowProduct<'a>>,
}

impl<'a> Block<'a> {
    /// Block `block` of `weight`, its steps from `start.depth` on.
    fn new(
        weight: &'a ChannelBlockedWeights,
        block: usize,
        epilogue: &Epilogue<'a>,
        start: Start<'a>,
    ) -> Self {
        let (channels, weights) = weight.block(block);
        let lanes = block_lanes(channels.len());
        let mut block_bias = [0.0; BLOCK];
        block_bias[..channels.len()].copy_from_slice(&epilogue.bias[channels.clone()]);
        Self {
            weights: &weights[start.depth * lanes..],
            start: start.values,
            channels,
            bias: block_bias,
            activation: epilogue.activation,
            residual: epilogue.residual,
        }
    }

    /// Output pixels `xs` of row `y` for the block's channels, reading each step's row from
    /// `position`.
    ///
    /// # Safety
    /// Each of `steps` plus `position + xs.len()` lies inside what it reads; `out` holds the
    /// block's channels, and the residual (if any) has its shape; no one else writes these
    /// pixels of these channels meanwhile.
    unsafe fn run(
        &self,
        steps: &[*const f32],
        position: usize,
        (y, xs): (usize, Range<usize>),
        out: Output,
    ) {
        let lanes = block_lanes(self.channels.len());
        let pixels = xs.len();
        // The upsampled part's values, `[pixels][BLOCK]` as the sums are.
        let mut start = MaybeUninit::<[f32; MAX_PIXELS * BLOCK]>::uninit();
        let start = self.start.as_ref().map(|low| {
            let start = start.write([0.0; MAX_PIXELS * BLOCK]);
            let mut sources = [0; MAX_PIXELS];
            low.sources(y * out.width + xs.start, &mut sources[..pixels]);
            for (lane, co) in self.channels.clone().enumerate() {
                let plane = low.plane(co);
                for (pixel, &source) in sources[..pixels].iter().enumerate() {
                    start[pixel * BLOCK + lane] = plane[source];
                }
            }
            start.as_ptr()
        });
        let at = self.channels.start * out.plane + y * out.width + xs.start;
        let tile = Tile {
            weights: self.weights.as_ptr(),
            depth: steps.len(),
            steps: steps.as_ptr(),
            position,
            bias: self.bias.as_ptr(),
            start: start.unwrap_or(std::ptr::null()),
            activation: self.activation,
            // SAFETY: pixel `xs.start` of row `y` of the block's first channel.
            out: unsafe { out.ptr.get().add(at) },
            residual: self.residual.map_or(std::ptr::null(), |r| r[at..].as_ptr()),
            plane: out.plane,
            channels: self.channels.len(),
        };
        // SAFETY: AVX-512 was checked; the tile's pointers address what its fields say.
        unsafe { run_kernel(lanes / LANES, pixels, &tile) };
    }
}

/// One micro-kernel call: its sums, and where its epilogue writes them.
struct Tile {
    /// The block's weights of depth step 0; step `k` at `weights + k * lanes`.
    weights: *const f32,
    depth: usize,
    /// Each step's row; step `k` reads `steps[k] + position` onwards.
    steps: *const *const f32,
    position: usize,
    /// The block's bias, [`BLOCK`] values.
    bias: *const f32,
    /// `[pixels][BLOCK]` values added to the sums before the activation, or null.
    start: *const f32,
    activation: Activation,
    /// The block's first channel's first pixel; channel `c` at `out + c * plane`, its pixels
    /// consecutive.
    out: *mut f32,
    /// The residual at the same positions, or null.
    residual: *const f32,
    plane: usize,
    /// The block's channels to write: the vectors' lanes from the first.
    channels: usize,
}

/// The micro-kernel for `vectors` vectors of channels and `pixels` pixels, on `tile`.
///
/// # Safety
/// The CPU has AVX-512F; the tile's pointers address what its fields say.
#[cfg(target_arch = "x86_64")]
unsafe fn run_kernel(vectors: usize, pixels: usize, tile: &Tile) {
    // SAFETY: forwarded from the caller.
    unsafe { x86::kernel(vectors, pixels)(tile) }
}

/// Other CPUs have no AVX-512: [`conv_channel_blocked`] refuses to run before this.
///
/// # Safety
/// Never called.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn run_kernel(_vectors: usize, _pixels: usize, _tile: &Tile) {
    unreachable!("the channel-blocked path needs AVX-512")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512 micro-kernels, one per vector count and pixel count, and their
    //! epilogue: bias, activation and the transposition into the output's rows in
    //! registers.

    use std::arch::x86_64::*;

    use super::{BLOCK, LANES, MAX_PIXELS, Tile};
    use crate::activation::Activation;
    use crate::activation::x86::silu_avx512;

    /// The micro-kernel for `vectors` (1 or 2) vectors of channels and `pixels` (1 to
    /// [`MAX_PIXELS`]) pixels.
    pub(super) fn kernel(vectors: usize, pixels: usize) -> unsafe fn(&Tile) {
        macro_rules! by_pixels {
            ($v:literal) => {
                match pixels {
                    1 => tile::<$v, 1>,
                    2 => tile::<$v, 2>,
                    3 => tile::<$v, 3>,
                    4 => tile::<$v, 4>,
                    5 => tile::<$v, 5>,
                    6 => tile::<$v, 6>,
                    7 => tile::<$v, 7>,
                    8 => tile::<$v, 8>,
                    9 => tile::<$v, 9>,
                    10 => tile::<$v, 10>,
                    11 => tile::<$v, 11>,
                    12 => tile::<$v, 12>,
                    _ => unreachable!("at most {MAX_PIXELS} pixels"),
                }
            };
        }
        match vectors {
            1 => by_pixels!(1),
            _ => by_pixels!(2),
        }
    }

    /// `VECTORS x 16` channels times `PIXELS` pixels.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the tile's pointers address what its fields say, the weights
    /// `VECTORS * 16` per step.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const VECTORS: usize, const PIXELS: usize>(t: &Tile) {
        let mut acc = [[_mm512_setzero_ps(); VECTORS]; PIXELS];
        let mut w = t.weights;
        for k in 0..t.depth {
            // SAFETY: `k` is below the depth; the step's weights and values are in bounds.
            unsafe {
                let x = (*t.steps.add(k)).add(t.position);
                let wv: [__m512; VECTORS] =
                    std::array::from_fn(|v| _mm512_loadu_ps(w.add(LANES * v)));
                for (pixel, sums) in acc.iter_mut().enumerate() {
                    let value = _mm512_set1_ps(*x.add(pixel));
                    for (sum, &wv) in sums.iter_mut().zip(&wv) {
                        *sum = _mm512_fmadd_ps(wv, value, *sum);
                    }
                }
                w = w.add(LANES * VECTORS);
            }
        }
        // The sums by vector, out of the registers that the loop above keeps them in (the
        // epilogue's loop over vectors indexes them).
        let mut by_vector = [[_mm512_setzero_ps(); PIXELS]; VECTORS];
        for (pixel, sums) in acc.iter().enumerate() {
            for (v, &sum) in sums.iter().enumerate() {
                by_vector[v][pixel] = sum;
            }
        }
        let mask = ((1u32 << PIXELS) - 1) as __mmask16;
        for (v, sums) in by_vector.iter().enumerate() {
            // SAFETY: `bias` holds `BLOCK` values, `start` (if not null) `BLOCK` per pixel.
            let bias = unsafe { _mm512_loadu_ps(t.bias.add(LANES * v)) };
            let mut pixels = [_mm512_setzero_ps(); LANES];
            for (pixel, &sum) in sums.iter().enumerate() {
                let mut z = _mm512_add_ps(sum, bias);
                if !t.start.is_null() {
                    // SAFETY: as above.
                    let start = unsafe { _mm512_loadu_ps(t.start.add(pixel * BLOCK + LANES * v)) };
                    z = _mm512_add_ps(z, start);
                }
                pixels[pixel] = match t.activation {
                    Activation::Identity => z,
                    Activation::Silu => silu_avx512(z),
                };
            }
            let rows = transpose(pixels);
            for (c, &row) in rows
                .iter()
                .enumerate()
                .take(t.channels.saturating_sub(LANES * v))
            {
                let at = (LANES * v + c) * t.plane;
                // SAFETY: the first `PIXELS` values of channel `c`'s row, in the output and
                // the residual, per the tile's fields.
                unsafe {
                    let row = if t.residual.is_null() {
                        row
                    } else {
                        _mm512_add_ps(row, _mm512_maskz_loadu_ps(mask, t.residual.add(at)))
                    };
                    _mm512_mask_storeu_ps(t.out.add(at), mask, row);
                }
            }
        }
    }

    /// The 16 x 16 transposition: lane `j` of vector `i` becomes lane `i` of vector `j`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn transpose(r: [__m512; LANES]) -> [__m512; LANES] {
        // Pairs of rows interleaved, then pairs of pairs: `u[4i + k]`'s 128-bit lane `l`
        // holds column `4l + k` of rows `4i..4i + 4`.
        let t: [__m512; LANES] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        let u: [__m512; LANES] = std::array::from_fn(|i| {
            let (group, k) = (i / 4 * 4, i % 4);
            let (a, b) = (
                _mm512_castps_pd(t[group + k / 2]),
                _mm512_castps_pd(t[group + k / 2 + 2]),
            );
            _mm512_castpd_ps(if k % 2 == 0 {
                _mm512_unpacklo_pd(a, b)
            } else {
                _mm512_unpackhi_pd(a, b)
            })
        });
        // Then the 4 x 4 transposition of 128-bit lanes across `u[k], u[4 + k], u[8 + k],
        // u[12 + k]`: column `4l + k` gets lane `l` of each.
        let mut out = [_mm512_setzero_ps(); LANES];
        for k in 0..4 {
            let even = _mm512_shuffle_f32x4::<0x88>(u[k], u[4 + k]);
            let odd = _mm512_shuffle_f32x4::<0xdd>(u[k], u[4 + k]);
            let even_high = _mm512_shuffle_f32x4::<0x88>(u[8 + k], u[12 + k]);
            let odd_high = _mm512_shuffle_f32x4::<0xdd>(u[8 + k], u[12 + k]);
            out[k] = _mm512_shuffle_f32x4::<0x88>(even, even_high);
            out[8 + k] = _mm512_shuffle_f32x4::<0xdd>(even, even_high);
            out[4 + k] = _mm512_shuffle_f32x4::<0x88>(odd, odd_high);
            out[12 + k] = _mm512_shuffle_f32x4::<0xdd>(odd, odd_high);
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn transpose_swaps_vectors_and_lanes() {
            if !crate::simd::avx512f() {
                eprintln!("no AVX-512: the transposition is not run");
                return;
            }
            let values: Vec<f32> = (0..LANES * LANES).map(|i| i as f32).collect();
            // SAFETY: AVX-512 was checked; each load reads 16 of the 256 values.
            let rows: [__m512; LANES] =
                std::array::from_fn(|i| unsafe { _mm512_loadu_ps(values[i * LANES..].as_ptr()) });
            // SAFETY: AVX-512 was checked.
            let columns = unsafe { transpose(rows) };
            for (j, column) in columns.iter().enumerate() {
                let mut lanes = [0.0f32; LANES];
                // SAFETY: 16 values into 16.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *column) };
                let expected: Vec<f32> = (0..LANES).map(|i| values[i * LANES + j]).collect();
                assert_eq!(lanes.to_vec(), expected, "column {j}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::{
        BANDED_3X3_SHAPES, YOLO_3X3_SHAPES, assert_adds_residual, max_difference_from_im2col,
        max_difference_upsampled, one_by_one, relative_difference, split_channels, values, written,
    };
    use proptest::prelude::*;

    /// The largest difference from the im2col path, relative to `1 + |value|`, on a
    /// `[c_in (in two blocks split at `split`), c_out, h, w]` shape; `None` on a CPU without
    /// AVX-512.
    fn max_difference(shape: [usize; 5], stride: usize, activation: Activation) -> Option<f32> {
        if !channel_blocked_supported() {
            eprintln!("no AVX-512: the channel-blocked path is not run");
            return None;
        }
        let [c_in, _, c_out, h, w] = shape;
        Some(max_difference_from_im2col(
            shape,
            stride,
            activation,
            |parts, weight, bias, out| {
                let blocked = ChannelBlockedWeights::new(weight, c_out, c_in, 3);
                let epilogue = Epilogue::new(bias, activation);
                conv_channel_blocked(parts, (h, w), &blocked, stride, &epilogue, out)
            },
        ))
    }

    #[test]
    fn yolo_shapes_match_the_im2col_path() {
        for (shape, act) in YOLO_3X3_SHAPES {
            for stride in [1, 2] {
                let Some(diff) = max_difference(shape, stride, act) else {
                    return;
                };
                assert!(diff < 1e-5, "{shape:?} stride {stride}: {diff}");
            }
        }
    }

    /// The largest difference from `conv2d`'s 1x1 product, as [`max_difference`].
    fn max_difference_1x1(shape: [usize; 5], activation: Activation) -> Option<f32> {
        if !channel_blocked_supported() {
            eprintln!("no AVX-512: the channel-blocked path is not run");
            return None;
        }
        let [c_in, split, c_out, h, w] = shape;
        let x = values(c_in * h * w, 1);
        let weight = values(c_out * c_in, 2);
        let bias = values(c_out, 3);
        let parts = split_channels(&x, c_in, split, h * w);
        let packed = crate::PackedWeights::new(&weight, c_out, c_in);
        let params = one_by_one(&packed, &bias, activation);
        let len = c_out * h * w;
        let want = written(len, |out| crate::conv2d(&parts, h, w, &params, out));
        let blocked = ChannelBlockedWeights::new(&weight, c_out, c_in, 1);
        let got = written(len, |out| {
            conv_channel_blocked(&parts, (h, w), &blocked, 1, &params.epilogue, out)
        });
        Some(relative_difference(&got, &want))
    }

    #[test]
    fn one_by_one_matches_the_packed_product() {
        // YOLO's 1x1 shapes on small maps (a concatenation in two blocks, the head's 80
        // channels), odd sizes and channel counts, one pixel.
        for (shape, act) in [
            ([384, 256, 256, 10, 10], Activation::Silu),
            ([192, 64, 128, 20, 20], Activation::Silu),
            ([64, 0, 80, 40, 40], Activation::Identity),
            ([7, 3, 33, 5, 29], Activation::Silu),
            ([5, 2, 3, 1, 1], Activation::Silu),
        ] {
            let Some(diff) = max_difference_1x1(shape, act) else {
                return;
            };
            assert!(diff < 1e-5, "{shape:?}: {diff}");
        }
    }

    /// [`max_difference_upsampled`] of [`conv1x1_channel_blocked_upsampled`]; `None` on a CPU
    /// without AVX-512.
    fn upsampled_difference(shape: [usize; 6], activation: Activation) -> Option<f32> {
        if !channel_blocked_supported() {
            eprintln!("no AVX-512: the channel-blocked path is not run");
            return None;
        }
        let [c_low, c_rest, c_out, ..] = shape;
        Some(max_difference_upsampled(
            shape,
            activation,
            |upsampled, rest, params, weight, out| {
                let blocked = ChannelBlockedWeights::new(weight, c_out, c_low + c_rest, 1);
                let epilogue = &params.epilogue;
                conv1x1_channel_blocked_upsampled(upsampled, rest, &blocked, epilogue, out)
            },
        ))
    }

    #[test]
    fn an_upsampled_part_matches_the_product_of_its_upsampled_map() {
        // YOLO11n's neck at 320 (256 channels from 10x10 beside 128 at 20x20), a last block
        // of 16 lanes, a scale of 3 with rows that end inside a run, an empty rest and an
        // empty upsampled part.
        for (shape, act) in [
            ([256, 128, 128, 10, 10, 2], Activation::Silu),
            ([24, 8, 40, 5, 7, 2], Activation::Identity),
            ([5, 7, 9, 4, 3, 3], Activation::Silu),
            ([6, 0, 5, 3, 3, 2], Activation::Silu),
            ([0, 6, 33, 3, 3, 2], Activation::Identity),
        ] {
            let Some(diff) = upsampled_difference(shape, act) else {
                return;
            };
            assert!(diff < 1e-5, "{shape:?}: {diff}");
        }
    }

    #[test]
    fn a_residual_is_added_to_every_output() {
        if !channel_blocked_supported() {
            eprintln!("no AVX-512: the channel-blocked path is not run");
            return;
        }
        // A bottleneck's 3x3 on a shared copy and in bands, stride 2, and a 1x1; the last
        // block 16 lanes wide, or partly padding.
        for ([c_in, c_out, h, w], kernel, stride) in [
            ([32, 48, 10, 10], 3, 1),
            ([16, 24, 100, 90], 3, 1),
            ([8, 40, 9, 7], 3, 2),
            ([24, 40, 7, 9], 1, 1),
        ] {
            let x = values(c_in * h * w, 1);
            let weight = values(c_out * c_in * kernel * kernel, 2);
            let bias = values(c_out, 3);
            let blocked = ChannelBlockedWeights::new(&weight, c_out, c_in, kernel);
            let (out_h, out_w) = PaddedLayout::new(h, w, stride).out_size();
            let input = [FeatureMap {
                data: &x,
                channels: c_in,
            }];
            assert_adds_residual(c_out * out_h * out_w, &bias, Activation::Silu, |e, out| {
                conv_channel_blocked(&input, (h, w), &blocked, stride, e, out)
            });
        }
    }

    #[test]
    fn large_maps_run_in_bands_that_match_the_im2col_path() {
        // Copies past the band size: the stem's 3 channels at 320x240 and 16 channels at
        // 100x90 (24 output channels, a block partly padding), at stride 2 and 1.
        for (shape, stride) in BANDED_3X3_SHAPES {
            let [c_in, _, c_out, h, w] = shape;
            let layout = PaddedLayout::new(h, w, stride);
            assert!(Bands::new(&layout, c_out, c_in).is_some(), "{shape:?}");
            if let Some(diff) = max_difference(shape, stride, Activation::Silu) {
                assert!(diff < 1e-5, "{shape:?} stride {stride}: {diff}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_shapes_match_the_im2col_path(
            c_in in 1usize..24, split in 0usize..24, c_out in 1usize..70,
            h in 1usize..23, w in 1usize..30, stride in 1usize..3, silu in any::<bool>(),
        ) {
            let act = if silu { Activation::Silu } else { Activation::Identity };
            if let Some(diff) = max_difference([c_in, split, c_out, h, w], stride, act) {
                prop_assert!(diff < 1e-5, "{diff}");
            }
        }

        #[test]
        fn random_upsampled_parts_match_the_product_of_their_upsampled_maps(
            c_low in 0usize..20, c_rest in 0usize..20, c_out in 1usize..70,
            h in 1usize..9, w in 1usize..9, scale in 1usize..4, silu in any::<bool>(),
        ) {
            prop_assume!(c_low + c_rest > 0);
            let act = if silu { Activation::Silu } else { Activation::Identity };
            if let Some(diff) = upsampled_difference([c_low, c_rest, c_out, h, w, scale], act) {
                prop_assert!(diff < 1e-5, "{diff}");
            }
        }

        #[test]
        fn random_1x1_shapes_match_the_packed_product(
            c_in in 1usize..40, split in 0usize..40, c_out in 1usize..70,
            h in 1usize..23, w in 1usize..30, silu in any::<bool>(),
        ) {
            let act = if silu { Activation::Silu } else { Activation::Identity };
            if let Some(diff) = max_difference_1x1([c_in, split, c_out, h, w], act) {
                prop_assert!(diff < 1e-5, "{diff}");
            }
        }
    }
}
