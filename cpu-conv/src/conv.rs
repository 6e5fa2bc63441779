//! The fused convolution: tiles of output positions, each an im2col block times the weights.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::thread::LocalKey;

use rayon::prelude::*;

use crate::activation::Epilogue;
use crate::im2col::Window;
use crate::packed::{MR, PackedWeights, Rows, block_width, multiply_packed_blocks};
use crate::scratch::{prefix, with_reused};
use crate::upsample::{LOW_PRODUCT, LowProduct, UpsampledPart};

thread_local! {
    /// Each thread's im2col block, reused across tiles and convolutions.
    static IM2COL_BLOCK: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Each thread's source positions of a tile's upsampled values.
    static SOURCES: Cell<Vec<usize>> = const { Cell::new(Vec::new()) };
}

/// One image's feature map, or a block of its channels: `[channels, height, width]`, dense.
#[derive(Debug, Clone, Copy)]
pub struct FeatureMap<'a> {
    pub data: &'a [f32],
    pub channels: usize,
}

impl FeatureMap<'_> {
    /// The channels of `parts` together, each part checked to hold its channels' planes of
    /// `height x width`.
    ///
    /// # Panics
    /// When a part's data does not.
    pub(crate) fn channels_of(parts: &[FeatureMap], (height, width): (usize, usize)) -> usize {
        parts
            .iter()
            .map(|part| {
                assert_eq!(
                    part.data.len(),
                    part.channels * height * width,
                    "input shape"
                );
                part.channels
            })
            .sum()
    }
}

/// A square-kernel convolution with one group, no dilation, and its bias and activation.
#[derive(Debug, Clone, Copy)]
pub struct ConvParams<'a> {
    /// `[c_out, c_in * kernel * kernel]`, packed once: `PackedWeights::new(w, c_out, c_in * kernel * kernel)` of
    /// row-major `[c_out, c_in, kernel, kernel]` weights.
    pub weight: &'a PackedWeights,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// Bias, activation and residual.
    pub epilogue: Epilogue<'a>,
}

/// Output `(height, width)` of a convolution over a `height x width` input.
pub fn output_size(
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> (usize, usize) {
    let out = |n: usize| (n + 2 * padding).saturating_sub(kernel) / stride + 1;
    (out(height), out(width))
}

/// Bytes of im2col block a tile may use: small enough to stay in a core's L2 cache.
const TILE_BLOCK_BYTES: usize = 512 * 1024;
const MIN_TILE: usize = 32;
const MAX_TILE: usize = 1024;

/// Work items per thread to aim for, so that uneven items still even out.
pub(crate) const ITEMS_PER_THREAD: usize = 4;

/// Computes `activation(conv(inputs, weight) + bias)` for one image into `out`
/// (`[c_out, out_h, out_w]`, every element written). `inputs` are the channel blocks of the
/// input in order, all `height x width`; together they have the `c_in` channels that
/// `params.weight` expects.
///
/// # Panics
/// When a slice's length does not match the shapes given.
pub fn conv2d(
    inputs: &[FeatureMap],
    height: usize,
    width: usize,
    params: &ConvParams,
    out: &mut [MaybeUninit<f32>],
) {
    convolve(inputs, (height, width), params, None, out);
}

/// `activation(conv1x1(concat(upsample(upsampled), rest), weight) + bias)` for one image into
/// `out` (`[c_out, height * scale, width * scale]`, every element written): `upsampled`'s
/// product is computed at its own size (a `scale²`-th of its multiply-accumulates) and each
/// tile starts from its values, spread, before the products of `rest` are added.
///
/// # Panics
/// When `params` is not a 1x1 convolution with stride 1 and no padding, or a slice's length
/// does not match the shapes given.
pub fn conv1x1_upsampled(
    upsampled: &UpsampledPart,
    rest: &[FeatureMap],
    params: &ConvParams,
    out: &mut [MaybeUninit<f32>],
) {
    assert!(
        params.kernel == 1 && params.stride == 1 && params.padding == 0,
        "a 1x1 convolution with stride 1"
    );
    upsampled.check();
    let c_out = params.weight.rows();
    let low = upsampled.map;
    let positions = upsampled.positions();
    with_reused(&LOW_PRODUCT, |values| {
        let values = prefix(values, c_out * positions, 0.0);
        if low.channels > 0 {
            let split = WorkSplit::new(positions, low.channels, c_out, block_width(), true);
            let values_ptr = SharedOut::new(as_uninit(values));
            split.for_each_item(&IM2COL_BLOCK, |item, _| {
                let (start, len) = (item.columns.start, item.columns.len());
                // SAFETY: the part's channels from column `start` are `low.channels` rows of
                // `len` values; this item alone writes its columns of its rows of `values`.
                unsafe {
                    multiply_packed_blocks(
                        params.weight,
                        item.blocks,
                        0..low.channels,
                        Rows {
                            ptr: low.data[start..].as_ptr(),
                            stride: positions,
                        },
                        len,
                        Rows {
                            ptr: values_ptr
                                .get()
                                .add(item.channels.start * positions + start),
                            stride: positions,
                        },
                        false,
                    );
                }
            });
        } else {
            values.fill(0.0);
        }
        let start = LowProduct {
            values,
            height: upsampled.height,
            width: upsampled.width,
            scale: upsampled.scale,
        };
        let at = FeatureMap {
            data: &[],
            channels: low.channels,
        };
        let inputs: Vec<FeatureMap> = std::iter::once(at).chain(rest.iter().copied()).collect();
        convolve(&inputs, upsampled.output_size(), params, Some(start), out);
    });
}

/// `values` as the output slice the micro-kernels write.
pub(crate) fn as_uninit(values: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and only f32s are written.
    unsafe { &mut *(values as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// [`conv2d`], where with `first_values` the first input part is not read: each tile starts
/// from those values of that part's product instead (see [`conv1x1_upsampled`]).
fn convolve(
    inputs: &[FeatureMap],
    (height, width): (usize, usize),
    params: &ConvParams,
    first_values: Option<LowProduct>,
    out: &mut [MaybeUninit<f32>],
) {
    let c_in: usize = inputs.iter().map(|p| p.channels).sum();
    assert!(c_in > 0, "a convolution needs input channels");
    let k = params.kernel;
    let k_total = c_in * k * k;
    let (out_h, out_w) = output_size(height, width, k, params.stride, params.padding);
    let positions = out_h * out_w;
    let c_out = params.weight.rows();
    assert_eq!(params.weight.depth(), k_total, "weight shape");
    assert_eq!(out.len(), c_out * positions, "output shape");
    params.epilogue.check(c_out, out.len());
    // The parts the tiles read, and the depth of the weights they start at.
    let (read, first_depth) = match first_values {
        Some(_) => (&inputs[1..], inputs[0].channels * k * k),
        None => (inputs, 0),
    };
    FeatureMap::channels_of(read, (height, width));
    let window = Window {
        height,
        width,
        out_width: out_w,
        kernel: k,
        stride: params.stride,
        padding: params.padding,
    };
    let direct = k == 1 && params.stride == 1 && params.padding == 0;
    // Not a parallel loop of its own: stride 1 borrows the input, and a strided input is
    // split into phases in parallel inside (a parallel loop that has nothing to do still
    // wakes the other threads).
    let phased: Vec<_> = read
        .iter()
        .map(|part| window.phases(part.data, part.channels, 0.0))
        .collect();
    // Items split the output channels only where they read the input in place: with im2col
    // each item would lower its positions again (and one matrix for all of them, built
    // first, falls out of the cache: 485 instead of 375 µs for 128 channels at 20x20).
    let split = WorkSplit::new(positions, k_total, c_out, block_width(), direct);
    let out_ptr = SharedOut::new(out);
    split.for_each_item(
        &IM2COL_BLOCK,
        |WorkItem {
             columns,
             blocks,
             channels,
         },
         block| {
            let (start, len) = (columns.start, columns.len());
            // SAFETY: this item writes columns `start..start + len` of output rows
            // `channels` and no other item touches them; `out` outlives the parallel loop.
            let dst = unsafe { out_ptr.get().add(channels.start * positions + start) };
            if let Some(low) = &first_values {
                // SAFETY: as above.
                unsafe { spread_into_tile(low, channels.clone(), columns.clone(), dst, positions) };
            }
            let mut k_offset = first_depth;
            let parts = read.iter().zip(&phased).filter(|(p, _)| p.channels > 0);
            for (part, phased) in parts {
                let rows = part.channels * k * k;
                let x = if direct {
                    Rows {
                        ptr: part.data[start..].as_ptr(),
                        stride: positions,
                    }
                } else {
                    let block = prefix(block, rows * len, 0.0);
                    window.fill(phased, part.channels, start, len, block, 0.0);
                    Rows {
                        ptr: block.as_ptr(),
                        stride: len,
                    }
                };
                // SAFETY: `x` holds `rows` rows of `len` values (the im2col block, or the
                // part's channels from column `start`), and `dst` addresses columns
                // `start..start + len` of output rows `channels`.
                unsafe {
                    multiply_packed_blocks(
                        params.weight,
                        blocks.clone(),
                        k_offset..k_offset + rows,
                        x,
                        len,
                        Rows {
                            ptr: dst,
                            stride: positions,
                        },
                        k_offset > 0 || first_values.is_some(),
                    );
                }
                k_offset += rows;
            }
            // SAFETY: as above: this item's columns of its output rows.
            unsafe {
                finish_tile(
                    (dst, positions),
                    (channels, columns),
                    positions,
                    &params.epilogue,
                )
            };
        },
    );
}

/// Writes `low`'s values of output channels `channels` at output positions `columns` into the
/// tile at `dst`, channel `channels.start + r`'s run at `dst + r * row_stride`.
///
/// # Safety
/// Those runs of `columns.len()` values are writable and no one else uses them meanwhile.
unsafe fn spread_into_tile(
    low: &LowProduct,
    channels: Range<usize>,
    columns: Range<usize>,
    dst: *mut f32,
    row_stride: usize,
) {
    with_reused(&SOURCES, |sources| {
        let sources = prefix(sources, columns.len(), 0);
        low.sources(columns.start, sources);
        for (r, co) in channels.enumerate() {
            let plane = low.plane(co);
            // SAFETY: run `r` of the tile, per the caller's contract.
            let run = unsafe {
                std::slice::from_raw_parts_mut(dst.add(r * row_stride).cast(), columns.len())
            };
            for (value, &source) in run.iter_mut().zip(sources.iter()) {
                *value = MaybeUninit::new(plane[source]);
            }
        }
    });
}

/// How a convolution's output `[c_out, positions]` is shared out among threads: tiles of
/// output positions (see [`tile_width`]) times groups of output channels (whole blocks of
/// [`MR`] rows). Channels are split, where the caller allows it, only when a small map makes
/// too few tiles to keep every thread busy: 100 positions in tiles of 48 are three items for
/// two threads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkSplit {
    positions: usize,
    tile: usize,
    c_out: usize,
    row_blocks: usize,
    blocks_per_group: usize,
    groups: usize,
}

impl WorkSplit {
    /// The split for `c_out` output channels over `positions`, each tile reading
    /// `block_rows` rows of input, for a micro-kernel `nr` columns wide; `split_channels`
    /// allows groups of channels.
    pub(crate) fn new(
        positions: usize,
        block_rows: usize,
        c_out: usize,
        nr: usize,
        split_channels: bool,
    ) -> Self {
        let tile = tile_width(positions, block_rows, nr);
        let tiles = positions.div_ceil(tile);
        let row_blocks = c_out.div_ceil(MR).max(1);
        let wanted = ITEMS_PER_THREAD * rayon::current_num_threads();
        let groups = if split_channels {
            wanted.div_ceil(tiles).min(row_blocks)
        } else {
            1
        };
        let blocks_per_group = row_blocks.div_ceil(groups);
        Self {
            positions,
            tile,
            c_out,
            row_blocks,
            blocks_per_group,
            groups: row_blocks.div_ceil(blocks_per_group),
        }
    }

    /// Whether items split the output channels (and so share their positions).
    #[cfg(test)]
    pub(crate) fn splits_channels(&self) -> bool {
        self.groups > 1
    }

    /// Work items.
    fn items(&self) -> usize {
        self.positions.div_ceil(self.tile) * self.groups
    }

    /// Runs `work` on every item in parallel, each with its thread's reused buffer from
    /// `scratch`.
    pub(crate) fn for_each_item<T: Default>(
        &self,
        scratch: &'static LocalKey<Cell<T>>,
        work: impl Fn(WorkItem, &mut T) + Sync,
    ) {
        (0..self.items())
            .into_par_iter()
            .for_each(|item| with_reused(scratch, |buffer| work(self.item(item), buffer)));
    }

    /// What item `item` computes.
    fn item(&self, item: usize) -> WorkItem {
        let (t, g) = (item / self.groups, item % self.groups);
        let start = t * self.tile;
        let first_block = g * self.blocks_per_group;
        let blocks = first_block..(first_block + self.blocks_per_group).min(self.row_blocks);
        WorkItem {
            columns: start..(start + self.tile).min(self.positions),
            channels: blocks.start * MR..(blocks.end * MR).min(self.c_out),
            blocks,
        }
    }
}

/// One item of a [`WorkSplit`].
#[derive(Debug, Clone)]
pub(crate) struct WorkItem {
    /// Output positions.
    pub columns: Range<usize>,
    /// Blocks of [`MR`] output channels.
    pub blocks: Range<usize>,
    /// The output channels of those blocks.
    pub channels: Range<usize>,
}

/// Output positions per tile: enough tiles to keep every thread busy, each tile's im2col
/// block of `block_rows` rows of 4-byte values (f32, or the INT8 path's quads) within
/// [`TILE_BLOCK_BYTES`], a multiple of the micro-kernel's width `nr`.
pub(crate) fn tile_width(positions: usize, block_rows: usize, nr: usize) -> usize {
    let per_thread = positions.div_ceil(ITEMS_PER_THREAD * rayon::current_num_threads());
    let cache_bound = TILE_BLOCK_BYTES / (4 * block_rows.max(1));
    per_thread
        .min(cache_bound)
        .clamp(MIN_TILE, MAX_TILE)
        .next_multiple_of(nr)
}

/// Applies `epilogue` to one tile of a `[c_out, positions]` output: its output `channels` at
/// output positions `columns`, channel `channels.start + r`'s run at `dst + r * row_stride`
/// (the output itself, or a buffer).
///
/// # Safety
/// Those runs of `columns.len()` values are writable and no one else uses them meanwhile.
pub(crate) unsafe fn finish_tile(
    (dst, row_stride): (*mut f32, usize),
    (channels, columns): (Range<usize>, Range<usize>),
    positions: usize,
    epilogue: &Epilogue,
) {
    for (r, co) in channels.enumerate() {
        // SAFETY: per the caller's contract, run `r` of the tile.
        let row = unsafe { std::slice::from_raw_parts_mut(dst.add(r * row_stride), columns.len()) };
        epilogue.finish(row, co, co * positions + columns.start);
    }
}

/// The output pointer, shared by tiles that write disjoint elements.
pub(crate) struct SharedOut<T = f32>(*mut T);

// Derived `Clone` and `Copy` would ask the same of `T`; the pointer is copied either way.
impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SharedOut<T> {}

// SAFETY: tiles write disjoint elements (see `conv2d`).
unsafe impl<T> Send for SharedOut<T> {}
unsafe impl<T> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// The start of `out`, which the tiles fill: the kernels write through the pointer
    /// before anything reads, so `out` may start uninitialised.
    pub(crate) fn new(out: &mut [MaybeUninit<T>]) -> Self {
        Self(out.as_mut_ptr().cast())
    }

    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Activation;
    use crate::test_values::{
        assert_adds_residual, max_difference_upsampled, split_channels, written,
    };
    use proptest::prelude::*;

    /// Straightforward seven-loop convolution in f64.
    pub(crate) fn reference(
        x: &[f32],
        [c_in, h, w]: [usize; 3],
        weight: &[f32],
        p: &ConvParams,
    ) -> Vec<f32> {
        let k = p.kernel;
        let (oh, ow) = output_size(h, w, k, p.stride, p.padding);
        let mut out = vec![0.0; p.weight.rows() * oh * ow];
        for co in 0..p.weight.rows() {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = p.epilogue.bias[co] as f64;
                    for ci in 0..c_in {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * p.stride + ky) as isize - p.padding as isize;
                                let ix = (ox * p.stride + kx) as isize - p.padding as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[(ci * h + iy as usize) * w + ix as usize] as f64;
                                let wv = weight[((co * c_in + ci) * k + ky) * k + kx] as f64;
                                acc += xv * wv;
                            }
                        }
                    }
                    let at = (co * oh + oy) * ow + ox;
                    out[at] = p.epilogue.reference(acc, at);
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Compares `conv2d` with the reference on a `[c_in, h, w]` input given as two channel
    /// blocks split at `split`, for a `c_out`-channel `k x k` convolution with stride `s`
    /// and padding `pad`.
    fn check(shape: [usize; 5], window: [usize; 3], act: Activation) {
        let [c_in, split, c_out, h, w] = shape;
        let [k, s, pad] = window;
        let x = values(c_in * h * w, 1);
        let weight = values(c_out * c_in * k * k, 2);
        let bias = values(c_out, 3);
        let packed = PackedWeights::new(&weight, c_out, c_in * k * k);
        let params = ConvParams {
            weight: &packed,
            kernel: k,
            stride: s,
            padding: pad,
            epilogue: Epilogue::new(&bias, act),
        };
        let (oh, ow) = output_size(h, w, k, s, pad);
        let parts = split_channels(&x, c_in, split, h * w);
        let out = written(c_out * oh * ow, |out| conv2d(&parts, h, w, &params, out));
        let want = reference(&x, [c_in, h, w], &weight, &params);
        for (i, (g, r)) in out.iter().zip(&want).enumerate() {
            assert!(
                (g - r).abs() <= 1e-4 * (1.0 + r.abs()),
                "element {i}: {g} vs {r}"
            );
        }
    }

    #[test]
    fn yolo_shapes_match_the_reference() {
        // Stem (3 channels, stride 2), 3x3 stride 1, 1x1 over a two-part concatenation,
        // an SPPF-sized 1x1 on a small map with many channels, and a 1x1 convolution on a
        // map small enough that the threads split the output channels.
        check([3, 3, 16, 33, 47], [3, 2, 1], Activation::Silu);
        check([16, 16, 16, 20, 24], [3, 1, 1], Activation::Silu);
        check([24, 8, 32, 17, 13], [1, 1, 0], Activation::Silu);
        check([64, 32, 40, 5, 7], [1, 1, 0], Activation::Identity);
        assert!(WorkSplit::new(7 * 9, 48, 100, block_width(), true).splits_channels());
        check([48, 24, 100, 7, 9], [1, 1, 0], Activation::Silu);
    }

    #[test]
    fn a_residual_is_added_to_every_output() {
        // A 1x1 read in place with the channels split among items, and a 3x3 of stride 2
        // through im2col blocks, each over two parts.
        for ([c_in, split, c_out, h, w], [k, s, pad]) in [
            ([48, 24, 100, 7, 9], [1, 1, 0]),
            ([16, 5, 24, 20, 24], [3, 2, 1]),
        ] {
            let x = values(c_in * h * w, 1);
            let weight = values(c_out * c_in * k * k, 2);
            let bias = values(c_out, 3);
            let packed = PackedWeights::new(&weight, c_out, c_in * k * k);
            let parts = split_channels(&x, c_in, split, h * w);
            let (oh, ow) = output_size(h, w, k, s, pad);
            assert_adds_residual(c_out * oh * ow, &bias, Activation::Silu, |epilogue, out| {
                let params = ConvParams {
                    weight: &packed,
                    kernel: k,
                    stride: s,
                    padding: pad,
                    epilogue: *epilogue,
                };
                conv2d(&parts, h, w, &params, out)
            });
        }
    }

    /// [`max_difference_upsampled`] of [`conv1x1_upsampled`].
    fn upsampled_difference(shape: [usize; 6], activation: Activation) -> f32 {
        max_difference_upsampled(shape, activation, |upsampled, rest, params, _, out| {
            conv1x1_upsampled(upsampled, rest, params, out)
        })
    }

    #[test]
    fn an_upsampled_part_matches_the_product_of_its_upsampled_map() {
        // YOLO11n's neck at 320 (256 channels from 10x10 beside 128 at 20x20, 128 from
        // 20x20 beside 128 at 40x40), a map small enough that items split the channels, a
        // scale of 3, an empty rest and an empty upsampled part.
        for (shape, act) in [
            ([256, 128, 128, 10, 10, 2], Activation::Silu),
            ([128, 128, 64, 20, 20, 2], Activation::Silu),
            ([40, 8, 100, 3, 4, 2], Activation::Identity),
            ([5, 7, 9, 4, 3, 3], Activation::Silu),
            ([6, 0, 5, 3, 3, 2], Activation::Silu),
            ([0, 6, 5, 3, 3, 2], Activation::Identity),
        ] {
            let diff = upsampled_difference(shape, act);
            assert!(diff < 1e-5, "{shape:?}: {diff}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_upsampled_parts_match_the_product_of_their_upsampled_maps(
            c_low in 0usize..20, c_rest in 0usize..20, c_out in 1usize..40,
            h in 1usize..9, w in 1usize..9, scale in 1usize..4, silu in any::<bool>(),
        ) {
            prop_assume!(c_low + c_rest > 0);
            let act = if silu { Activation::Silu } else { Activation::Identity };
            let diff = upsampled_difference([c_low, c_rest, c_out, h, w, scale], act);
            prop_assert!(diff < 1e-5, "{diff}");
        }

        #[test]
        fn random_shapes_match_the_reference(
            c_in in 1usize..12, split in 0usize..12, c_out in 1usize..20,
            h in 1usize..19, w in 1usize..19, k in prop::sample::select(vec![1usize, 3, 5]),
            s in 1usize..4, pad in 0usize..3, silu in any::<bool>(),
        ) {
            prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
            let act = if silu { Activation::Silu } else { Activation::Identity };
            check([c_in, split, c_out, h, w], [k, s, pad], act);
        }
    }
}
