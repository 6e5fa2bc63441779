//! Winograd F(2x2, 3x3) for 3x3 convolutions with stride 1 and padding 1 (YOLO's bottleneck
//! and detection-head convolutions, two thirds of its arithmetic).
//!
//! Each 2x2 block of output ("tile") is computed from the 4x4 block of input around it: the
//! input block is transformed (`V = Bᵀ d B`, additions only), multiplied point by point with
//! the transformed kernel (`U = G g Gᵀ`, once at load) and summed over input channels, then
//! transformed back (`Y = Aᵀ M A`). The channel sums at each of the 16 points are matrix
//! products, `M[p] = V[p] · U[p]`, so 16 multiplications per tile and channel pair replace
//! the 36 of the direct form (2.25x fewer). Rows of tiles are processed in blocks small
//! enough for a core's L2 cache, in parallel.

use std::cell::Cell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::activation::{Activation, apply_bias_activation};
use crate::conv::{FeatureMap, SharedOut};
use crate::im2col::deinterleave;
use crate::packed::{PackedWeights, Rows, multiply_packed};
use crate::scratch::{prefix, with_reused};
use crate::simd::avx2_fma;

/// Points of the transformed 4x4 tile.
const POINTS: usize = 16;

/// Bytes of transformed input and output one block of tiles may use.
const BLOCK_BYTES: usize = 512 * 1024;

/// 3x3 weights transformed for [`conv3x3_winograd`]: `U = G g Gᵀ` per output and input
/// channel, one packed `[c_out, c_in]` matrix per point of the 4x4 tile.
#[derive(Debug, Clone)]
pub struct WinogradWeights {
    points: Vec<PackedWeights>,
    c_out: usize,
    c_in: usize,
}

impl WinogradWeights {
    /// Transforms row-major `[c_out, c_in, 3, 3]` weights.
    ///
    /// # Panics
    /// When `weight` does not hold `c_out * c_in * 9` values.
    pub fn new(weight: &[f32], c_out: usize, c_in: usize) -> Self {
        assert_eq!(weight.len(), c_out * c_in * 9, "weight shape");
        let transformed: Vec<[f32; POINTS]> =
            weight.chunks_exact(9).map(transform_kernel).collect();
        let points = (0..POINTS)
            .map(|p| PackedWeights::from_fn(c_out, c_in, |co, ci| transformed[co * c_in + ci][p]))
            .collect();
        Self {
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
}

/// `G g Gᵀ` for one 3x3 kernel `g`, with `G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]`.
fn transform_kernel(g: &[f32]) -> [f32; POINTS] {
    let expand = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    let columns: [[f32; 4]; 3] = std::array::from_fn(|j| expand(g[j], g[3 + j], g[6 + j]));
    let mut u = [0.0; POINTS];
    for i in 0..4 {
        let row = expand(columns[0][i], columns[1][i], columns[2][i]);
        u[i * 4..i * 4 + 4].copy_from_slice(&row);
    }
    u
}

/// Computes `activation(conv3x3(inputs, weights) + bias)` with stride 1 and padding 1 for
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
    let grid = TileGrid::new(height, width);
    let rows_per_block = grid.rows_per_block(c_in + c_out);
    let blocks = grid.rows.div_ceil(rows_per_block);
    let out_ptr = SharedOut::new(out);
    (0..blocks).into_par_iter().for_each(|b| {
        with_reused(&SCRATCH, |scratch| {
            let first = b * rows_per_block;
            let rows = first..(first + rows_per_block).min(grid.rows);
            let tiles = rows.len() * grid.cols;
            scratch.reserve(c_in, c_out, tiles, grid.cols);
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
            let out_rows = 2 * rows.start..(2 * rows.end).min(height);
            for (co, &b) in bias.iter().enumerate() {
                // SAFETY: this block alone writes output rows `out_rows` of every channel;
                // `out` outlives the parallel loop.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        out_ptr.get().add(co * plane + out_rows.start * width),
                        out_rows.len() * width,
                    )
                };
                for r in 0..rows.len() {
                    let offset = co * tiles + r * grid.cols;
                    let points: [&[f32]; POINTS] = std::array::from_fn(|p| {
                        &scratch.product[p * c_out * tiles + offset..][..grid.cols]
                    });
                    let first_row = 2 * r * width;
                    let lines = (dst.len() - first_row).min(2 * width);
                    grid.transform_output(
                        points,
                        &mut scratch.rows.transformed,
                        &mut dst[first_row..first_row + lines],
                    );
                }
                apply_bias_activation(dst, b, activation);
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
    /// Transformed input, `[16, c_in, tiles]`.
    input: Vec<f32>,
    /// Channel sums, `[16, c_out, tiles]`.
    product: Vec<f32>,
    /// The even and odd columns of four zero-padded input rows, and their transforms down
    /// the columns (or the output's columns).
    rows: RowScratch,
}

impl Scratch {
    /// Grows the buffers to at least what a block of `tiles` tiles needs (never shrinks
    /// them: the block code indexes them explicitly).
    fn reserve(&mut self, c_in: usize, c_out: usize, tiles: usize, cols: usize) {
        prefix(&mut self.input, POINTS * c_in * tiles, 0.0);
        prefix(&mut self.product, POINTS * c_out * tiles, 0.0);
        prefix(&mut self.rows.padded, 4 * (2 * cols + 2), 0.0);
        prefix(&mut self.rows.transformed, POINTS * cols, 0.0);
    }
}

#[derive(Default)]
struct RowScratch {
    padded: Vec<f32>,
    transformed: Vec<f32>,
}

/// The 2x2 output tiles covering a `height x width` plane.
#[derive(Debug, Clone, Copy)]
struct TileGrid {
    height: usize,
    width: usize,
    rows: usize,
    cols: usize,
}

impl TileGrid {
    fn new(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            rows: height.div_ceil(2),
            cols: width.div_ceil(2),
        }
    }

    /// Rows of tiles per block: the block's transformed input and output within
    /// [`BLOCK_BYTES`], and enough blocks to keep every thread busy.
    fn rows_per_block(&self, channels: usize) -> usize {
        let by_cache = BLOCK_BYTES / (4 * POINTS * channels * self.cols);
        let by_threads = self.rows.div_ceil(3 * rayon::current_num_threads());
        by_cache.min(by_threads).max(1)
    }

    /// Transforms the 4x4 input blocks of tile row `row` of one plane, `V = Bᵀ d B` with
    /// `Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`; point `p`'s values (one per tile of
    /// the row) go to `dst[p * point_stride..][..cols]`.
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

    /// Transforms one row of tiles back, `Y = Aᵀ M A` with `Aᵀ = [1 1 1 0; 0 1 -1 -1]`, into
    /// `dst`: the one or two output rows of the tile row. `columns` is scratch.
    fn transform_output(&self, m: [&[f32]; POINTS], columns: &mut [f32], dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2_fma() {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { transform_output_avx2(self, m, columns, dst) };
            return;
        }
        transform_output(self, m, columns, dst);
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
unsafe fn transform_output_avx2(
    grid: &TileGrid,
    m: [&[f32]; POINTS],
    columns: &mut [f32],
    dst: &mut [f32],
) {
    transform_output(grid, m, columns, dst);
}

/// See [`TileGrid::transform_input`].
#[inline(always)]
fn transform_input(
    grid: &TileGrid,
    plane: &[f32],
    row: usize,
    scratch: &mut RowScratch,
    dst: &mut [f32],
    point_stride: usize,
) {
    let cols = grid.cols;
    let n = cols + 1;
    // Input rows 2 * row - 1 ..= 2 * row + 2 with one zero column on the left, split into
    // their even and odd columns: tile t reads even and odd columns t and t + 1.
    let (even, odd) = scratch.padded[..8 * n].split_at_mut(4 * n);
    for (r, (even, odd)) in even
        .chunks_exact_mut(n)
        .zip(odd.chunks_exact_mut(n))
        .enumerate()
    {
        even.fill(0.0);
        odd.fill(0.0);
        if let Some(y) = (2 * row + r).checked_sub(1).filter(|&y| y < grid.height) {
            // Input column i is padded column i + 1: even input columns are odd padded ones.
            deinterleave(&plane[y * grid.width..][..grid.width], odd, &mut even[1..]);
        }
    }
    // Down the columns first (the transform is separable): u = Bᵀ · d, on whole rows of
    // even and of odd columns.
    let (u_even, u_odd) = scratch.transformed[..8 * n].split_at_mut(4 * n);
    for (rows, u) in [(&*even, u_even), (&*odd, u_odd)] {
        let d = |r: usize| &rows[r * n..(r + 1) * n];
        let (u0, rest) = u.split_at_mut(n);
        let (u1, rest) = rest.split_at_mut(n);
        let (u2, u3) = rest.split_at_mut(n);
        difference(u0, d(0), d(2));
        sum(u1, d(1), d(2));
        difference(u2, d(2), d(1));
        difference(u3, d(1), d(3));
    }
    // Along the rows: V = u · B, straight into the destination; with e and o the even and
    // odd columns, tile t gets e[t] - e[t+1], o[t] + e[t+1], e[t+1] - o[t], o[t] - o[t+1].
    let (u_even, u_odd) = scratch.transformed[..8 * n].split_at(4 * n);
    for a in 0..4 {
        let (e, o) = (&u_even[a * n..(a + 1) * n], &u_odd[a * n..(a + 1) * n]);
        let at = |k: usize| (4 * a + k) * point_stride..(4 * a + k) * point_stride + cols;
        difference(&mut dst[at(0)], &e[..cols], &e[1..]);
        sum(&mut dst[at(1)], &o[..cols], &e[1..]);
        difference(&mut dst[at(2)], &e[1..], &o[..cols]);
        difference(&mut dst[at(3)], &o[..cols], &o[1..]);
    }
}

/// `out = a + b`, element-wise.
#[inline(always)]
fn sum(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((v, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *v = x + y;
    }
}

/// `out = a - b`, element-wise.
#[inline(always)]
fn difference(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((v, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *v = x - y;
    }
}

/// See [`TileGrid::transform_output`].
#[inline(always)]
fn transform_output(grid: &TileGrid, m: [&[f32]; POINTS], columns: &mut [f32], dst: &mut [f32]) {
    let (width, cols) = (grid.width, grid.cols);
    // Down the columns: s = Aᵀ · M, rows s0 and s1 for each k.
    let (s0, s1) = columns[..8 * cols].split_at_mut(4 * cols);
    for ((k, a), b) in s0
        .chunks_exact_mut(cols)
        .enumerate()
        .zip(s1.chunks_exact_mut(cols))
    {
        let (m0, m1, m2, m3) = (m[k], m[4 + k], m[8 + k], m[12 + k]);
        for (((((a, b), &m0), &m1), &m2), &m3) in
            a.iter_mut().zip(b).zip(m0).zip(m1).zip(m2).zip(m3)
        {
            *a = m0 + m1 + m2;
            *b = m1 - m2 - m3;
        }
    }
    // Along the rows: y = s · A, two output pixels per tile.
    let (top, bottom) = dst.split_at_mut(width.min(dst.len()));
    for (line, s) in [(top, &*s0), (bottom, &*s1)] {
        if line.is_empty() {
            continue;
        }
        let (s_0, rest) = s.split_at(cols);
        let (s_1, rest) = rest.split_at(cols);
        let (s_2, s_3) = rest.split_at(cols);
        let (pixels, last) = line.as_chunks_mut::<2>();
        for ((((pixel, &a), &b), &c), &d) in pixels.iter_mut().zip(s_0).zip(s_1).zip(s_2).zip(s_3) {
            *pixel = [a + b + c, b - c - d];
        }
        if let [x] = last {
            let t = cols - 1;
            *x = s_0[t] + s_1[t] + s_2[t];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::max_difference_from_im2col;
    use proptest::prelude::*;

    /// [`max_difference_from_im2col`] of the Winograd path.
    fn max_difference(shape: [usize; 5], activation: Activation) -> f32 {
        let [c_in, _, c_out, h, w] = shape;
        max_difference_from_im2col(shape, 1, activation, |parts, weight, bias, out| {
            let transformed = WinogradWeights::new(weight, c_out, c_in);
            conv3x3_winograd(parts, h, w, &transformed, bias, activation, out)
        })
    }

    #[test]
    fn kernel_transform_of_a_delta_is_the_interpolation_row() {
        // g = centre tap only: G g Gᵀ is the outer product of G's middle column.
        let mut g = [0.0f32; 9];
        g[4] = 1.0;
        let column = [0.0, 0.5, -0.5, 0.0];
        let u = transform_kernel(&g);
        for i in 0..4 {
            for k in 0..4 {
                assert_eq!(u[i * 4 + k], column[i] * column[k]);
            }
        }
    }

    #[test]
    fn yolo_shapes_match_the_im2col_path() {
        // Bottleneck at 160 and 80, head convolution reading two blocks, odd sizes, a map
        // smaller than one tile.
        for (shape, act) in [
            ([16, 16, 16, 40, 40], Activation::Silu),
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
