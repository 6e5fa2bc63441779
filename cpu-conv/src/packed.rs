//! Matrix products against a constant left operand packed once at load:
//! `dst[rows x n] (+)= a[rows x depth] · x[depth x n]`, where `a` is a layer's weights and
//! `x` its input (channels, im2col rows or Winograd-transformed tiles), each row of `x` and
//! `dst` contiguous along the `n` output positions.
//!
//! The weights are stored in blocks of [`MR`] rows, depth-major (`[block][depth][MR]`, the
//! last block zero-padded), so one depth step of a block is one contiguous run of `MR`
//! values that the micro-kernel broadcasts one by one. A micro-kernel keeps an `MR x NR`
//! block of the output in registers for the whole depth and writes it once; `x` is read in
//! place (no packing per call), one row segment of `NR` values per depth step. The
//! micro-kernels are AVX-512 (8 x 48, masked tails), AVX2 + FMA (8 x 24 as two passes of
//! 4 x 24, masked tails) and a portable one (8 x 16), chosen once at run time.

use std::ops::Range;
use std::sync::OnceLock;

/// Output rows per register block.
pub const MR: usize = 8;

/// A `[rows, depth]` matrix in the micro-kernels' layout.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    data: Vec<f32>,
    rows: usize,
    depth: usize,
}

impl PackedWeights {
    /// Packs row-major `[rows, depth]` values.
    ///
    /// # Panics
    /// When `values` does not hold `rows * depth` values.
    pub fn new(values: &[f32], rows: usize, depth: usize) -> Self {
        assert_eq!(values.len(), rows * depth, "weight shape");
        Self::from_fn(rows, depth, |row, k| values[row * depth + k])
    }

    /// Packs the matrix whose element `(row, k)` is `value(row, k)`.
    pub(crate) fn from_fn(rows: usize, depth: usize, value: impl Fn(usize, usize) -> f32) -> Self {
        let mut data = vec![0.0; rows.div_ceil(MR) * depth * MR];
        for row in 0..rows {
            for k in 0..depth {
                data[((row / MR) * depth + k) * MR + row % MR] = value(row, k);
            }
        }
        Self { data, rows, depth }
    }

    /// Rows (a convolution's output channels).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Depth (input channels times kernel positions).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// `out[rows x n] = self · x[depth x n]`, both row-major and dense, on this thread.
    ///
    /// # Panics
    /// When a slice's length does not match the shapes.
    pub fn multiply(&self, x: &[f32], n: usize, out: &mut [f32]) {
        assert_eq!(x.len(), self.depth * n, "input shape");
        assert_eq!(out.len(), self.rows * n, "output shape");
        let x = Rows {
            ptr: x.as_ptr(),
            stride: n,
        };
        let dst = Rows {
            ptr: out.as_mut_ptr(),
            stride: n,
        };
        // SAFETY: the views are the two dense slices, checked above.
        unsafe { multiply_packed(self, 0..self.depth, x, n, dst, false) }
    }
}

/// How a micro-kernel (f32 or INT8) finds input row `k` from row 0's column 0.
pub(crate) trait InputRows: Copy {
    /// Column 0 of row `k`, from `x` (row 0's).
    ///
    /// # Safety
    /// `k` is below the tile's depth.
    unsafe fn row<T>(self, x: *const T, k: usize) -> *const T;
}

/// Rows a fixed number of values apart (a dense matrix or a view of one).
#[derive(Clone, Copy)]
pub(crate) struct Strided(pub usize);

impl InputRows for Strided {
    #[inline(always)]
    unsafe fn row<T>(self, x: *const T, k: usize) -> *const T {
        x.wrapping_add(k * self.0)
    }
}

/// Row `k` at `x + offsets[k]`: an indirect product, whose rows are runs of a convolution's
/// input at each channel's and tap's own offset (no im2col copy).
#[derive(Clone, Copy)]
pub(crate) struct Offsets(pub *const usize);

impl InputRows for Offsets {
    #[inline(always)]
    unsafe fn row<T>(self, x: *const T, k: usize) -> *const T {
        // SAFETY: the tile's offsets hold one value per depth step, and `k` is one.
        x.wrapping_add(unsafe { *self.0.add(k) })
    }
}

/// One micro-kernel call: an output block of `rows x cols` (at most `MR x NR`) over `depth`
/// steps.
struct Tile<R> {
    /// The block's first weight of the first depth step; step `k` at `a + k * MR`.
    a: *const f32,
    depth: usize,
    /// Column 0 of input row 0; row `k` at `x_rows.row(x, k)`.
    x: *const f32,
    x_rows: R,
    /// Output row 0; row `r` at `dst + r * dst_stride`.
    dst: *mut f32,
    dst_stride: usize,
    rows: usize,
    cols: usize,
    /// Add to the output instead of overwriting it.
    accumulate: bool,
}

/// A micro-kernel and its block width.
struct Kernel {
    nr: usize,
    run: unsafe fn(&Tile<Strided>),
    run_indirect: unsafe fn(&Tile<Offsets>),
}

/// The fastest micro-kernel this CPU runs, picked on first use.
fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if crate::simd::avx512f() {
                return Kernel {
                    nr: x86::NR_AVX512,
                    run: x86::tile_avx512,
                    run_indirect: x86::tile_avx512,
                };
            }
            if crate::simd::avx2_fma() {
                return Kernel {
                    nr: x86::NR_AVX2,
                    run: x86::tile_avx2,
                    run_indirect: x86::tile_avx2,
                };
            }
        }
        Kernel {
            nr: NR_PORTABLE,
            run: tile_portable,
            run_indirect: tile_portable,
        }
    })
}

/// Output columns the selected micro-kernel computes per call (tiles are best a multiple).
pub(crate) fn block_width() -> usize {
    kernel().nr
}

/// A matrix as rows of contiguous values: row `i` at `ptr + i * stride`.
#[derive(Clone, Copy)]
pub(crate) struct Rows<P> {
    pub ptr: P,
    pub stride: usize,
}

/// `dst[a.rows() x n] (+)= a[.., depth] · x[depth.len() x n]`: the columns `depth` of `a`
/// (a part of its depth, for an input given in channel blocks) times `x`, single-threaded.
///
/// # Safety
/// `x` must address `depth.len()` readable rows of `n` values, and `dst` `a.rows()` writable
/// rows of `n` values, not overlapping `x`.
pub(crate) unsafe fn multiply_packed(
    a: &PackedWeights,
    depth: Range<usize>,
    x: Rows<*const f32>,
    n: usize,
    dst: Rows<*mut f32>,
    accumulate: bool,
) {
    // SAFETY: forwarded from the caller; `dst` holds every block's rows.
    unsafe { multiply_packed_blocks(a, 0..a.rows.div_ceil(MR), depth, x, n, dst, accumulate) }
}

/// [`multiply_packed`] for the rows of `a` in its blocks of [`MR`] rows `blocks` only:
/// `dst` addresses the first of those rows (row `blocks.start * MR` of `a`).
///
/// # Safety
/// As for [`multiply_packed`], with `dst` holding the rows of `blocks` (the last block only
/// as far as `a.rows()`).
pub(crate) unsafe fn multiply_packed_blocks(
    a: &PackedWeights,
    blocks: Range<usize>,
    depth: Range<usize>,
    x: Rows<*const f32>,
    n: usize,
    dst: Rows<*mut f32>,
    accumulate: bool,
) {
    let kernel = kernel();
    let x_rows = (x.ptr, Strided(x.stride));
    // SAFETY: forwarded from the caller.
    unsafe {
        multiply_with(
            kernel.nr, kernel.run, a, blocks, depth, x_rows, n, dst, accumulate,
        )
    }
}

/// `dst[rows of blocks x n] = a[blocks, ..] · x`, where row `k` of `x` is the `n` values at
/// `x + offsets[k]` (one offset per depth step of `a`): an indirect product, single-threaded.
/// `dst` addresses row `blocks.start * MR` of `a`, as for [`multiply_packed_blocks`].
///
/// # Safety
/// Every `x + offsets[k]` must address `n` readable values, and `dst` the rows of `blocks`
/// (the last block only as far as `a.rows()`), each of `n` writable values, not overlapping
/// `x`'s.
///
/// # Panics
/// When `offsets` does not hold one offset per depth step of `a`.
pub(crate) unsafe fn multiply_indirect_blocks(
    a: &PackedWeights,
    blocks: Range<usize>,
    x: *const f32,
    offsets: &[usize],
    n: usize,
    dst: Rows<*mut f32>,
) {
    assert_eq!(offsets.len(), a.depth, "one offset per depth step");
    let kernel = kernel();
    let x_rows = (x, Offsets(offsets.as_ptr()));
    let depth = 0..a.depth;
    // SAFETY: forwarded from the caller; `offsets` covers the whole depth.
    unsafe {
        multiply_with(
            kernel.nr,
            kernel.run_indirect,
            a,
            blocks,
            depth,
            x_rows,
            n,
            dst,
            false,
        )
    }
}

/// [`multiply_packed_blocks`] with the micro-kernel `run` of block width `nr`, over input
/// rows found from `x` (row 0's column 0 and how to find the others).
///
/// # Safety
/// As for [`multiply_packed_blocks`]; the CPU runs `run`.
#[allow(clippy::too_many_arguments)]
unsafe fn multiply_with<R: InputRows>(
    nr: usize,
    run: unsafe fn(&Tile<R>),
    a: &PackedWeights,
    blocks: Range<usize>,
    depth: Range<usize>,
    x: (*const f32, R),
    n: usize,
    dst: Rows<*mut f32>,
    accumulate: bool,
) {
    assert!(depth.end <= a.depth, "depth range");
    assert!(blocks.end <= a.rows.div_ceil(MR), "row blocks");
    let (x, x_rows) = x;
    for first_col in (0..n).step_by(nr) {
        for block in blocks.clone() {
            let tile = Tile {
                a: a.data[(block * a.depth + depth.start) * MR..].as_ptr(),
                depth: depth.len(),
                // SAFETY (both): in bounds per the caller's contract, `first_col < n` and
                // `block` is one of the blocks `dst` holds.
                x: unsafe { x.add(first_col) },
                x_rows,
                dst: unsafe {
                    dst.ptr
                        .add((block - blocks.start) * MR * dst.stride + first_col)
                },
                dst_stride: dst.stride,
                rows: MR.min(a.rows - block * MR),
                cols: nr.min(n - first_col),
                accumulate,
            };
            // SAFETY: the tile addresses `rows x cols` of `dst` and `depth x cols` of `x`
            // inside the caller's views, and `depth * MR` packed weights.
            unsafe { run(&tile) };
        }
    }
}

const NR_PORTABLE: usize = 16;

/// The portable micro-kernel (8 x 16), written so the compiler can vectorise it.
///
/// # Safety
/// The tile's pointers address what its fields say.
unsafe fn tile_portable<R: InputRows>(t: &Tile<R>) {
    let mut acc = [[0.0f32; NR_PORTABLE]; MR];
    for k in 0..t.depth {
        // SAFETY: per the tile's contract.
        let (a, x) = unsafe {
            (
                std::slice::from_raw_parts(t.a.add(k * MR), MR),
                std::slice::from_raw_parts(t.x_rows.row(t.x, k), t.cols),
            )
        };
        for (row, &w) in acc.iter_mut().zip(a) {
            for (sum, &v) in row.iter_mut().zip(x) {
                *sum += w * v;
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(t.rows) {
        // SAFETY: per the tile's contract.
        let out = unsafe { std::slice::from_raw_parts_mut(t.dst.add(r * t.dst_stride), t.cols) };
        for (o, &sum) in out.iter_mut().zip(row) {
            *o = if t.accumulate { *o + sum } else { sum };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86-64 micro-kernels. Columns past the tile's end are masked out of every load
    //! and store (masked accesses do not touch the memory they skip), so tails need no
    //! copies.

    use std::arch::x86_64::*;

    use super::{InputRows, MR, Tile};
    use crate::simd::tail::{masks8, masks16};

    pub(super) const NR_AVX512: usize = 48;
    pub(super) const NR_AVX2: usize = 24;

    /// 8 x 48: 24 accumulators, 3 input vectors and a broadcast weight in 32 registers;
    /// narrower tiles (the last of a row of tiles, small feature maps) run with only the
    /// vectors they fill.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the tile's pointers address what its fields say.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512<R: InputRows>(t: &Tile<R>) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match t.cols.div_ceil(16) {
                0 | 1 => tile_avx512_vectors::<1, R>(t),
                2 => tile_avx512_vectors::<2, R>(t),
                _ => tile_avx512_vectors::<3, R>(t),
            }
        }
    }

    /// `MR x (16 * VECTORS)`.
    ///
    /// # Safety
    /// As for [`tile_avx512`], with `t.cols <= 16 * VECTORS`.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_avx512_vectors<const VECTORS: usize, R: InputRows>(t: &Tile<R>) {
        let masks = masks16::<VECTORS>(t.cols);
        let mut acc = [[_mm512_setzero_ps(); VECTORS]; MR];
        let mut a = t.a;
        for k in 0..t.depth {
            // SAFETY: `k` is below the tile's depth.
            let x = unsafe { t.x_rows.row(t.x, k) };
            // SAFETY: masked lanes are not read; the others lie inside the tile's row.
            let xv: [__m512; VECTORS] = std::array::from_fn(|v| unsafe {
                _mm512_maskz_loadu_ps(masks[v], x.wrapping_add(16 * v))
            });
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: `a` points at this step's `MR` weights.
                let w = _mm512_set1_ps(unsafe { *a.add(r) });
                for (sum, &v) in row.iter_mut().zip(&xv) {
                    *sum = _mm512_fmadd_ps(w, v, *sum);
                }
            }
            a = a.wrapping_add(MR);
        }
        for (r, row) in acc.iter().enumerate().take(t.rows) {
            let out = t.dst.wrapping_add(r * t.dst_stride);
            for (v, &sum) in row.iter().enumerate() {
                let p = out.wrapping_add(16 * v);
                // SAFETY: as for the loads; the stored lanes lie inside the output row.
                unsafe {
                    let sum = if t.accumulate {
                        _mm512_add_ps(sum, _mm512_maskz_loadu_ps(masks[v], p))
                    } else {
                        sum
                    };
                    _mm512_mask_storeu_ps(p, masks[v], sum);
                }
            }
        }
    }

    /// 8 x 24 as two passes of 4 x 24: 12 accumulators, 3 input vectors and a broadcast
    /// weight in 16 registers.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the tile's pointers address what its fields say.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2<R: InputRows>(t: &Tile<R>) {
        const VECTORS: usize = 3;
        const ROWS: usize = 4;
        // SAFETY: the function runs on a CPU with AVX2.
        let masks = unsafe { masks8::<VECTORS>(t.cols) };
        for first in (0..t.rows).step_by(ROWS) {
            let mut acc = [[_mm256_setzero_ps(); VECTORS]; ROWS];
            let mut a = t.a.wrapping_add(first);
            for k in 0..t.depth {
                // SAFETY: `k` is below the tile's depth.
                let x = unsafe { t.x_rows.row(t.x, k) };
                // SAFETY: masked lanes are not read; the others lie inside the tile's row.
                let xv: [__m256; VECTORS] = std::array::from_fn(|v| unsafe {
                    _mm256_maskload_ps(x.wrapping_add(8 * v), masks[v])
                });
                for (r, row) in acc.iter_mut().enumerate() {
                    // SAFETY: `a` points at this step's weights from row `first` (of `MR`).
                    let w = _mm256_set1_ps(unsafe { *a.add(r) });
                    for (sum, &v) in row.iter_mut().zip(&xv) {
                        *sum = _mm256_fmadd_ps(w, v, *sum);
                    }
                }
                a = a.wrapping_add(MR);
            }
            for (r, row) in acc.iter().enumerate().take(t.rows - first) {
                let out = t.dst.wrapping_add((first + r) * t.dst_stride);
                for (v, &sum) in row.iter().enumerate() {
                    let p = out.wrapping_add(8 * v);
                    // SAFETY: as for the loads; the stored lanes lie inside the output row.
                    unsafe {
                        let sum = if t.accumulate {
                            _mm256_add_ps(sum, _mm256_maskload_ps(p, masks[v]))
                        } else {
                            sum
                        };
                        _mm256_maskstore_ps(p, masks[v], sum);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every micro-kernel this CPU runs: portable, AVX2 + FMA, AVX-512.
    fn every_kernel() -> Vec<Kernel> {
        let mut kernels = vec![Kernel {
            nr: NR_PORTABLE,
            run: tile_portable,
            run_indirect: tile_portable,
        }];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::simd::avx2_fma() {
                kernels.push(Kernel {
                    nr: x86::NR_AVX2,
                    run: x86::tile_avx2,
                    run_indirect: x86::tile_avx2,
                });
            }
            if crate::simd::avx512f() {
                kernels.push(Kernel {
                    nr: x86::NR_AVX512,
                    run: x86::tile_avx512,
                    run_indirect: x86::tile_avx512,
                });
            }
        }
        kernels
    }

    /// Every kernel's indirect product against a plain triple loop: rows of `x` taken in a
    /// scrambled order (and some twice), with row and column tails and a sub-range of row
    /// blocks.
    #[test]
    fn indirect_products_match_a_plain_product() {
        for kernel in every_kernel() {
            for (rows, depth, n) in [(8, 5, 48), (13, 17, 101), (3, 1, 7), (20, 27, 60)] {
                let values: Vec<f32> = (0..rows * depth)
                    .map(|i| ((i * 7) % 11) as f32 - 5.0)
                    .collect();
                let packed = PackedWeights::new(&values, rows, depth);
                let x_rows = depth + 2;
                let x_stride = n + 3;
                let x: Vec<f32> = (0..x_rows * x_stride)
                    .map(|i| ((i * 5) % 13) as f32 * 0.5)
                    .collect();
                let offsets: Vec<usize> = (0..depth)
                    .map(|k| (k * 5 + 1) % x_rows * x_stride + k % 3)
                    .collect();
                let blocks = 1.min(rows.div_ceil(MR) - 1)..rows.div_ceil(MR);
                let first_row = blocks.start * MR;
                let mut dst = vec![f32::NAN; (rows - first_row) * n];
                // SAFETY: every offset plus `n` lies inside `x` (`k % 3 <= 2 < 3` spare
                // values per row); `dst` holds the rows of `blocks`.
                unsafe {
                    multiply_with(
                        kernel.nr,
                        kernel.run_indirect,
                        &packed,
                        blocks.clone(),
                        0..depth,
                        (x.as_ptr(), Offsets(offsets.as_ptr())),
                        n,
                        Rows {
                            ptr: dst.as_mut_ptr(),
                            stride: n,
                        },
                        false,
                    )
                };
                for r in first_row..rows {
                    for j in 0..n {
                        let want: f32 = (0..depth)
                            .map(|k| values[r * depth + k] * x[offsets[k] + j])
                            .sum();
                        let got = dst[(r - first_row) * n + j];
                        assert_eq!(got, want, "nr {}, row {r}, col {j}", kernel.nr);
                    }
                }
            }
        }
    }

    /// Every kernel this CPU runs against a plain triple loop, on shapes with row and column
    /// tails, a depth sub-range, a sub-range of row blocks, strided views and accumulation.
    #[test]
    fn kernels_match_a_plain_product() {
        let kernels = every_kernel();
        for (rows, depth, n) in [(8, 5, 48), (13, 17, 101), (3, 1, 7), (80, 64, 80)] {
            let values: Vec<f32> = (0..rows * depth)
                .map(|i| ((i * 7) % 11) as f32 - 5.0)
                .collect();
            let packed = PackedWeights::new(&values, rows, depth);
            let x_stride = n + 3;
            let x: Vec<f32> = (0..depth * x_stride)
                .map(|i| ((i * 5) % 13) as f32 * 0.5)
                .collect();
            let part = 1.min(depth - 1)..depth;
            // All rows, and the rows from the second block of `MR` on (where there is one).
            let all = 0..rows.div_ceil(MR);
            let row_ranges = [all.clone(), all.end.min(1)..all.end];
            for (kernel, blocks, accumulate) in kernels
                .iter()
                .flat_map(|k| row_ranges.iter().map(move |b| (k, b.clone())))
                .flat_map(|(k, b)| [false, true].map(|acc| (k, b.clone(), acc)))
            {
                let dst_stride = n + 5;
                let first_row = (blocks.start * MR).min(rows);
                let mut dst = vec![1.0f32; rows * dst_stride];
                // SAFETY: the views lie inside the buffers above.
                unsafe {
                    multiply_with(
                        kernel.nr,
                        kernel.run,
                        &packed,
                        blocks.clone(),
                        part.clone(),
                        (x[part.start * x_stride..].as_ptr(), Strided(x_stride)),
                        n,
                        Rows {
                            ptr: dst[first_row * dst_stride..].as_mut_ptr(),
                            stride: dst_stride,
                        },
                        accumulate,
                    )
                };
                for r in 0..rows {
                    for j in 0..dst_stride {
                        let want = if j < n && r >= first_row {
                            let sum: f32 = part
                                .clone()
                                .map(|k| values[r * depth + k] * x[k * x_stride + j])
                                .sum();
                            sum + if accumulate { 1.0 } else { 0.0 }
                        } else {
                            1.0
                        };
                        let nr = kernel.nr;
                        assert_eq!(
                            dst[r * dst_stride + j],
                            want,
                            "nr {nr}, blocks {blocks:?}, row {r}, col {j}"
                        );
                    }
                }
            }
        }
    }
}
