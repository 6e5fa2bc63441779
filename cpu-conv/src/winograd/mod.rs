//! Winograd convolution for 3x3 convolutions with stride 1 and padding 1 (YOLO's bottleneck
//! and detection-head convolutions, two thirds of its arithmetic), in two tilings:
//! F(2x2, 3x3) ([`f2`]) and F(4x4, 3x3) ([`f4`]).
//!
//! Each block of output ("tile") is computed from the block of input around it: the input
//! block is transformed (`V = Bᵀ d B`, additions only), multiplied point by point with the
//! transformed kernel (`U = G g Gᵀ`, once at load) and summed over input channels, then
//! transformed back (`Y = Aᵀ M A`). The channel sums at each point are matrix products,
//! `M[p] = V[p] · U[p]`, on the packed micro-kernels. This module holds what both tilings
//! share: the weights, the blocks of tile rows (small enough for a core's L2 cache, run in
//! parallel), the products, bias and activation.

mod f2;
mod f4;

use std::cell::Cell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::activation::Epilogue;
use crate::conv::{FeatureMap, SharedOut};
use crate::packed::{PackedWeights, Rows, multiply_packed};
use crate::scratch::{prefix, with_reused};
use crate::simd::avx2_fma;

/// The size of the output tile a Winograd convolution computes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WinogradTile {
    /// F(2x2, 3x3): 16 points, 2.25x fewer multiplications than the direct form.
    F2x2,
    /// F(4x4, 3x3): 36 points, 4x fewer multiplications, larger transforms and slightly
    /// larger rounding error.
    F4x4,
}

impl WinogradTile {
    /// Output pixels along a tile's side.
    fn size(self) -> usize {
        match self {
            Self::F2x2 => 2,
            Self::F4x4 => 4,
        }
    }

    /// Points of the transformed tile.
    fn points(self) -> usize {
        match self {
            Self::F2x2 => f2::POINTS,
            Self::F4x4 => f4::POINTS,
        }
    }

    /// Bytes of transformed input and output one block of tiles may use. F(4x4, 3x3) on
    /// YOLOv8n's 80x80 head layers (`cargo bench -p cpu-conv --bench conv -- "winograd F4"`):
    /// 64 -> 80 1643 µs with 512 KiB, 1344-1478 with 1 or 2 MiB; a block of 512 KiB holds
    /// a single row of 20 tiles there, which leaves the micro-kernel's 48 columns half empty.
    fn block_bytes(self) -> usize {
        match self {
            Self::F2x2 => 512 * 1024,
            Self::F4x4 => 1024 * 1024,
        }
    }

    /// `U = G g Gᵀ` for one 3x3 kernel `g` (row-major), row-major over the tile's points.
    fn transform_kernel(self, g: &[f32]) -> Vec<f32> {
        match self {
            Self::F2x2 => outer_transform(g, f2::expand_kernel),
            Self::F4x4 => outer_transform(g, f4::expand_kernel),
        }
    }
}

/// `G g Gᵀ` from `expand`, which is `G` applied to one column of three values.
fn outer_transform<const N: usize>(g: &[f32], expand: fn(f32, f32, f32) -> [f32; N]) -> Vec<f32> {
    let columns: [[f32; N]; 3] = std::array::from_fn(|j| expand(g[j], g[3 + j], g[6 + j]));
    (0..N)
        .flat_map(|i| expand(columns[0][i], columns[1][i], columns[2][i]))
        .collect()
}

/// 3x3 weights transformed for [`conv3x3_winograd`]: `U = G g Gᵀ` per output and input
/// channel, one packed `[c_out, c_in]` matrix per point of the tile.
#[derive(Debug, Clone)]
pub struct WinogradWeights {
    tile: WinogradTile,
    points: Vec<PackedWeights>,
    c_out: usize,
    c_in: usize,
}

impl WinogradWeights {
    /// Transforms row-major `[c_out, c_in, 3, 3]` weights for `tile`.
    ///
    /// # Panics
    /// When `weight` does not hold `c_out * c_in * 9` values.
    pub fn new(weight: &[f32], c_out: usize, c_in: usize, tile: WinogradTile) -> Self {
        assert_eq!(weight.len(), c_out * c_in * 9, "weight shape");
        let transformed: Vec<Vec<f32>> = weight
            .chunks_exact(9)
            .map(|g| tile.transform_kernel(g))
            .collect();
        let points = (0..tile.points())
            .map(|p| PackedWeights::from_fn(c_out, c_in, |co, ci| transformed[co * c_in + ci][p]))
            .collect();
        Self {
            tile,
            points,
            c_out,
            c_in,
        }
    }

    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.c_out
    }

    /// Input channels.
    pub fn c_in(&self) -> usize {
        self.c_in
    }

    /// The tiling the weights were transformed for.
    pub fn tile(&self) -> WinogradTile {
        self.tile
    }
}

/// Computes `conv3x3(inputs, weights)` with stride 1 and padding 1 and its `epilogue` for
/// one image into `out` (`[c_out, height, width]`). `inputs` are the channel blocks of the
/// input in order, all `height x width`.
///
/// # Panics
/// When a slice's length does not match the shapes given.
pub fn conv3x3_winograd(
    inputs: &[FeatureMap],
    height: usize,
    width: usize,
    weights: &WinogradWeights,
    epilogue: &Epilogue,
    out: &mut [MaybeUninit<f32>],
) {
    let (c_in, c_out) = (weights.c_in, weights.c_out);
    assert_eq!(
        FeatureMap::channels_of(inputs, (height, width)),
        c_in,
        "input channels"
    );
    assert_eq!(out.len(), c_out * height * width, "output shape");
    epilogue.check(c_out, out.len());
    if height == 0 || width == 0 {
        return;
    }
    let grid = TileGrid::new(height, width, weights.tile);
    let (size, points) = (weights.tile.size(), weights.tile.points());
    let rows_per_block = grid.rows_per_block(c_in + c_out);
    let blocks = grid.rows.div_ceil(rows_per_block);
    let out_ptr = SharedOut::new(out);
    (0..blocks).into_par_iter().for_each(|b| {
        with_reused(&SCRATCH, |scratch| {
            let first = b * rows_per_block;
            let rows = first..(first + rows_per_block).min(grid.rows);
            let tiles = rows.len() * grid.cols;
            scratch.reserve(points, c_in, c_out, tiles, grid.cols);
            let mut channel = 0;
            for part in inputs {
                for plane in part.data.chunks_exact(height * width) {
                    for (r, row) in rows.clone().enumerate() {
                        let offset = channel * tiles + r * grid.cols;
                        grid.transform_input(
                            plane,
                            row,
                            &mut scratch.rows,
                            &mut scratch.input[offset..],
                            c_in * tiles,
                        );
                    }
                    channel += 1;
                }
            }
            for (p, weights) in weights.points.iter().enumerate() {
                // SAFETY: point `p`'s input block is `[c_in, tiles]` and its product
                // `[c_out, tiles]`, both inside their buffers.
                unsafe {
                    multiply_packed(
                        weights,
                        0..c_in,
                        Rows {
                            ptr: scratch.input.as_ptr().add(p * c_in * tiles),
                            stride: tiles,
                        },
                        tiles,
                        Rows {
                            ptr: scratch.product.as_mut_ptr().add(p * c_out * tiles),
                            stride: tiles,
                        },
                        false,
                    );
                }
            }
            let plane = height * width;
            let out_rows = size * rows.start..(size * rows.end).min(height);
            for co in 0..c_out {
                let at = co * plane + out_rows.start * width;
                // SAFETY: this block alone writes output rows `out_rows` of every channel;
                // `out` outlives the parallel loop.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(out_ptr.get().add(at), out_rows.len() * width)
                };
                for r in 0..rows.len() {
                    let m = Points {
                        product: &scratch.product,
                        first: co * tiles + r * grid.cols,
                        stride: c_out * tiles,
                    };
                    let first_row = size * r * width;
                    let lines = (dst.len() - first_row).min(size * width);
                    grid.transform_output(
                        m,
                        &mut scratch.rows.transformed,
                        &mut dst[first_row..first_row + lines],
                    );
                }
                epilogue.finish(dst, co, at);
            }
        })
    });
}

thread_local! {
    /// Each thread's buffers, reused across blocks and convolutions.
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
}

/// Per-thread buffers of one block of tiles.
#[derive(Default)]
struct Scratch {
    /// Transformed input, `[points, c_in, tiles]`.
    input: Vec<f32>,
    /// Channel sums, `[points, c_out, tiles]`.
    product: Vec<f32>,
    /// The zero-padded input rows of one row of tiles, and their transforms down the columns
    /// (or the output's columns).
    rows: RowScratch,
}

impl Scratch {
    /// Grows the buffers to at least what a block of `tiles` tiles needs (never shrinks
    /// them: the block code indexes them explicitly).
    fn reserve(&mut self, points: usize, c_in: usize, c_out: usize, tiles: usize, cols: usize) {
        prefix(&mut self.input, points * c_in * tiles, 0.0);
        prefix(&mut self.product, points * c_out * tiles, 0.0);
        prefix(&mut self.rows.padded, points * (cols + 1), 0.0);
        prefix(&mut self.rows.transformed, points * (cols + 1), 0.0);
    }
}

#[derive(Default)]
struct RowScratch {
    padded: Vec<f32>,
    transformed: Vec<f32>,
}

/// One tile row's channel sums of one output channel: point `p`'s values (one per tile of the
/// row) start at `product[first + p * stride]`.
#[derive(Clone, Copy)]
struct Points<'a> {
    product: &'a [f32],
    first: usize,
    stride: usize,
}

impl<'a> Points<'a> {
    /// Point `p`'s `cols` values.
    fn get(self, p: usize, cols: usize) -> &'a [f32] {
        &self.product[self.first + p * self.stride..][..cols]
    }
}

/// The output tiles covering a `height x width` plane.
#[derive(Debug, Clone, Copy)]
struct TileGrid {
    tile: WinogradTile,
    height: usize,
    width: usize,
    rows: usize,
    cols: usize,
}

impl TileGrid {
    fn new(height: usize, width: usize, tile: WinogradTile) -> Self {
        Self {
            tile,
            height,
            width,
            rows: height.div_ceil(tile.size()),
            cols: width.div_ceil(tile.size()),
        }
    }

    /// Rows of tiles per block: the block's transformed input and output within
    /// [`WinogradTile::block_bytes`], and enough blocks to keep every thread busy.
    fn rows_per_block(&self, channels: usize) -> usize {
        let by_cache = self.tile.block_bytes() / (4 * self.tile.points() * channels * self.cols);
        let by_threads = self.rows.div_ceil(3 * rayon::current_num_threads());
        by_cache.min(by_threads).max(1)
    }

    /// Transforms the input blocks of tile row `row` of one plane, `V = Bᵀ d B`; point `p`'s
    /// values (one per tile of the row) go to `dst[p * point_stride..][..cols]`.
    fn transform_input(
        &self,
        plane: &[f32],
        row: usize,
        scratch: &mut RowScratch,
        dst: &mut [f32],
        point_stride: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if avx2_fma() {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { transform_input_avx2(self, plane, row, scratch, dst, point_stride) };
            return;
        }
        transform_input(self, plane, row, scratch, dst, point_stride);
    }

    /// Transforms one row of tiles back, `Y = Aᵀ M A`, into `dst`: the output rows of the
    /// tile row (fewer than a tile's side at the bottom edge). `columns` is scratch.
    fn transform_output(&self, m: Points, columns: &mut [f32], dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2_fma() {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { transform_output_avx2(self, m, columns, dst) };
            return;
        }
        transform_output(self, m, columns, dst);
    }
}

/// [`TileGrid::transform_input`] for the grid's tiling.
#[inline(always)]
fn transform_input(
    grid: &TileGrid,
    plane: &[f32],
    row: usize,
    scratch: &mut RowScratch,
    dst: &mut [f32],
    point_stride: usize,
) {
    match grid.tile {
        WinogradTile::F2x2 => f2::transform_input(grid, plane, row, scratch, dst, point_stride),
        WinogradTile::F4x4 => f4::transform_input(grid, plane, row, scratch, dst, point_stride),
    }
}

/// [`TileGrid::transform_output`] for the grid's tiling.
#[inline(always)]
fn transform_output(grid: &TileGrid, m: Points, columns: &mut [f32], dst: &mut [f32]) {
    match grid.tile {
        WinogradTile::F2x2 => f2::transform_output(grid, m, columns, dst),
        WinogradTile::F4x4 => f4::transform_output(grid, m, columns, dst),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_input_avx2(
    grid: &TileGrid,
    plane: &[f32],
    row: usize,
    scratch: &mut RowScratch,
    dst: &mut [f32],
    point_stride: usize,
) {
    transform_input(grid, plane, row, scratch, dst, point_stride);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_output_avx2(grid: &TileGrid, m: Points, columns: &mut [f32], dst: &mut [f32]) {
    transform_output(grid, m, columns, dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Activation;
    use crate::test_values::{assert_adds_residual, max_difference_from_im2col, values};
    use proptest::prelude::*;

    const TILES: [WinogradTile; 2] = [WinogradTile::F2x2, WinogradTile::F4x4];

    /// [`max_difference_from_im2col`] of the Winograd path with `tile`.
    fn max_difference(shape: [usize; 5], activation: Activation, tile: WinogradTile) -> f32 {
        let [c_in, _, c_out, h, w] = shape;
        max_difference_from_im2col(shape, 1, activation, |parts, weight, bias, out| {
            let transformed = WinogradWeights::new(weight, c_out, c_in, tile);
            let epilogue = Epilogue::new(bias, activation);
            conv3x3_winograd(parts, h, w, &transformed, &epilogue, out)
        })
    }

    /// The largest relative error each tiling may show against im2col: F(4x4, 3x3)'s
    /// transforms multiply by up to 8 and divide by 24, so its rounding error is larger.
    fn bound(tile: WinogradTile) -> f32 {
        match tile {
            WinogradTile::F2x2 => 1e-5,
            WinogradTile::F4x4 => 2e-4,
        }
    }

    #[test]
    fn kernel_transform_of_a_delta_is_the_interpolation_row() {
        // g = centre tap only: G g Gᵀ is the outer product of G's middle column.
        let mut g = [0.0f32; 9];
        g[4] = 1.0;
        for (tile, column) in [
            (WinogradTile::F2x2, vec![0.0, 0.5, -0.5, 0.0]),
            (
                WinogradTile::F4x4,
                vec![0.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 12.0, -1.0 / 12.0, 0.0],
            ),
        ] {
            let u = tile.transform_kernel(&g);
            let n = column.len();
            assert_eq!(u.len(), n * n);
            for i in 0..n {
                for k in 0..n {
                    let want = column[i] * column[k];
                    assert!((u[i * n + k] - want).abs() <= 1e-7, "{tile:?} {i} {k}");
                }
            }
        }
    }

    #[test]
    fn yolo_shapes_match_the_im2col_path() {
        // Bottleneck at 160 and 80, head convolution reading two blocks, odd sizes, maps
        // smaller than one tile, widths 1-3 past a multiple of four.
        for (shape, act) in [
            ([16, 16, 16, 40, 40], Activation::Silu),
            ([64, 32, 80, 20, 20], Activation::Silu),
            ([32, 8, 24, 17, 13], Activation::Identity),
            ([5, 2, 3, 1, 1], Activation::Silu),
            ([7, 3, 9, 3, 2], Activation::Identity),
            ([6, 1, 5, 7, 9], Activation::Silu),
            ([6, 4, 5, 6, 10], Activation::Identity),
            ([6, 2, 5, 5, 11], Activation::Silu),
        ] {
            for tile in TILES {
                let diff = max_difference(shape, act, tile);
                assert!(diff < bound(tile), "{tile:?} {shape:?}: {diff}");
            }
        }
    }

    #[test]
    fn a_residual_is_added_to_every_output() {
        // A bottleneck's 3x3 (more rows of tiles than one block holds), and a map whose
        // last row of tiles is partly outside it.
        for ([c, h, w], tile) in [
            ([16, 80, 80], WinogradTile::F4x4),
            ([16, 80, 80], WinogradTile::F2x2),
            ([6, 7, 9], WinogradTile::F4x4),
        ] {
            let x = values(c * h * w, 1);
            let input = [FeatureMap {
                data: &x,
                channels: c,
            }];
            let weights = WinogradWeights::new(&values(c * c * 9, 2), c, c, tile);
            let bias = values(c, 3);
            assert_adds_residual(c * h * w, &bias, Activation::Silu, |epilogue, out| {
                conv3x3_winograd(&input, h, w, &weights, epilogue, out)
            });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_shapes_match_the_im2col_path(
            c_in in 1usize..24, split in 0usize..24, c_out in 1usize..24,
            h in 1usize..23, w in 1usize..23, silu in any::<bool>(), f4 in any::<bool>(),
        ) {
            let act = if silu { Activation::Silu } else { Activation::Identity };
            let tile = if f4 { WinogradTile::F4x4 } else { WinogradTile::F2x2 };
            let diff = max_difference([c_in, split, c_out, h, w], act, tile);
            prop_assert!(diff < bound(tile), "{tile:?}: {diff}");
        }
    }
}
