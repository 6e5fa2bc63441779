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

/// One micro-kernel call: an output block of `rows x cols` (at most `MR x NR`) over `depth`
/// steps.
struct Tile {
    /// The block's first weight of the first depth step; step `k` at `a + k * MR`.
    a: *const f32,
    depth: usize,
    /// Column 0 of input row 0; row `k` at `x + k * x_stride`.
    x: *const f32,
    x_stride: usize,
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
    run: unsafe fn(&Tile),
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
                };
            }
            if crate::simd::avx2_fma() {
                return Kernel {
                    nr: x86::NR_AVX2,
                    run: x86::tile_avx2,
                };
            }
        }
        Kernel {
            nr: NR_PORTABLE,
            run: tile_portable,
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
    // SAFETY: forwarded from the caller.
    unsafe { multiply_with(kernel(), a, blocks, depth, x, n, dst, accumulate) }
}

/// [`multiply_packed_blocks`] with the given micro-kernel.
///
/// # Safety
/// As for [`multiply_packed_blocks`]; the CPU runs `kernel`.
#[allow(clippy::too_many_arguments)]
unsafe fn multiply_with(
    kernel: &Kernel,
    a: &PackedWeights,
    blocks: Range<usize>,
    depth: Range<usize>,
    x: Rows<*const f32>,
    n: usize,
    dst: Rows<*mut f32>,
    accumulate: bool,
) {
    assert!(depth.end <= a.depth, "depth range");
    assert!(blocks.end <= a.rows.div_ceil(MR), "row blocks");
    for first_col in (0..n).step_by(kernel.nr) {
        for block in blocks.clone() {
            let tile = Tile {
                a: a.data[(block * a.depth + depth.start) * MR..].as_ptr(),
                depth: depth.len(),
                // SAFETY (both): in bounds per the caller's contract, `first_col < n` and
                // `block` is one of the blocks `dst` holds.
                x: unsafe { x.ptr.add(first_col) },
                x_stride: x.stride,
                dst: unsafe {
                    dst.ptr
                        .add((block - blocks.start) * MR * dst.stride + first_col)
                },
                dst_stride: dst.stride,
                rows: MR.min(a.rows - block * MR),
                cols: kernel.nr.min(n - first_col),
                accumulate,
            };
            // SAFETY: the tile addresses `rows x cols` of `dst` and `depth x cols` of `x`
            // inside the caller's views, and `depth * MR` packed weights.
            unsafe { (kernel.run)(&tile) };
        }
    }
}

const NR_PORTABLE: usize = 16;

/// The portable micro-kernel (8 x 16), written so the compiler can vectorise it.
///
/// # Safety
/// The tile's pointers address what its fields say.
unsafe fn tile_portable(t: &Tile) {
    let mut acc = [[0.0f32; NR_PORTABLE]; MR];
    for k in 0..t.depth {
        // SAFETY: per the tile's contract.
        let (a, x) = unsafe {
            (
                std::slice::from_raw_parts(t.a.add(k * MR), MR),
                std::slice::from_raw_parts(t.x.add(k * t.x_stride), t.cols),
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

    use super::{MR, Tile};
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
    pub(super) unsafe fn tile_avx512(t: &Tile) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match t.cols.div_ceil(16) {
                0 | 1 => tile_avx512_vectors::<1>(t),
                2 => tile_avx512_vectors::<2>(t),
                _ => tile_avx512_vectors::<3>(t),
            }
        }
    }

    /// `MR x (16 * VECTORS)`.
    ///
    /// # Safety
    /// As for [`tile_avx512`], with `t.cols <= 16 * VECTORS`.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_avx512_vectors<const VECTORS: usize>(t: &Tile) {
        let masks = masks16::<VECTORS>(t.cols);
        let mut acc = [[_mm512_setzero_ps(); VECTORS]; MR];
        let (mut a, mut x) = (t.a, t.x);
        for _ in 0..t.depth {
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
            x = x.wrapping_add(t.x_stride);
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
    pub(super) unsafe fn tile_avx2(t: &Tile) {
        const VECTORS: usize = 3;
        const ROWS: usize = 4;
        // SAFETY: the function runs on a CPU with AVX2.
        let masks = unsafe { masks8::<VECTORS>(t.cols) };
        for first in (0..t.rows).step_by(ROWS) {
            let mut acc = [[_mm256_setzero_ps(); VECTORS]; ROWS];
            let (mut a, mut x) = (t.a.wrapping_add(first), t.x);
            for _ in 0..t.depth {
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
                x = x.wrapping_add(t.x_stride);
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

    /// Every kernel this CPU runs against a plain triple loop, on shapes with row and column
    /// tails, a depth sub-range, a sub-range of row blocks, strided views and accumulation.
    #[test]
    fn kernels_match_a_plain_product() {
        let mut kernels = vec![Kernel {
            nr: NR_PORTABLE,
            run: tile_portable,
        }];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::simd::avx2_fma() {
                kernels.push(Kernel {
                    nr: x86::NR_AVX2,
                    run: x86::tile_avx2,
                });
            }
            if crate::simd::avx512f() {
                kernels.push(Kernel {
                    nr: x86::NR_AVX512,
                    run: x86::tile_avx512,
                });
            }
        }
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
                        kernel,
                        &packed,
                        blocks.clone(),
                        part.clone(),
                        Rows {
                            ptr: x[part.start * x_stride..].as_ptr(),
                            stride: x_stride,
                        },
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
