//! Integer matrix products for the INT8 convolution: `dst[rows x n] = scale[r] * (init[r] +
//! Σ_q a[r, q] · x[q, n])`, where each element of `a` and `x` is a *quad*: four 8-bit values
//! in one `u32` (signed weights in `a`, unsigned activations in `x`), and `·` is the dot
//! product of the four pairs. Accumulation is exact in i32; the one float operation, the
//! final multiply by the row's scale, is the same on every path, so all of them give
//! bit-identical results.
//!
//! The weights are stored like the f32 kernels' ([`crate::packed`]): blocks of [`MR`] rows,
//! quad-major (`[block][quad][MR]`), the last block zero-padded. The micro-kernels keep an
//! `MR x NR` block of i32 accumulators in registers for the whole depth:
//! - AVX-512 VNNI (8 x 48): one `vpdpbusd` per row and vector does 64 multiply-adds;
//! - AVX-VNNI (8 x 24, two passes of 4 rows): the same instruction on 256-bit vectors;
//! - AVX2 (8 x 16, two passes of 4 rows): without VNNI, `vpmaddubsw` would saturate its
//!   16-bit pair sums (255 · 127 · 2 > 32767), so the quads are split into their even and
//!   odd bytes, widened to 16 bits, and multiplied with `vpmaddwd`, which cannot overflow;
//! - portable (8 x 16).

use std::sync::OnceLock;

use crate::packed::{InputRows, Offsets, Strided};

/// Output rows per register block.
pub(crate) const MR: usize = 8;

/// One micro-kernel call: an output block of `rows x cols` (at most `MR x NR`) over `quads`
/// depth steps.
pub(crate) struct Tile<R> {
    /// The block's first weight quad of the first step; step `q` at `a + q * MR`.
    pub a: *const u32,
    pub quads: usize,
    /// Column 0 of input row 0; row `q` at `x_rows.row(x, q)`.
    pub x: *const u32,
    pub x_rows: R,
    /// `MR` starting values of the accumulators (the zero-point correction) and `MR` scales.
    pub init: *const i32,
    pub scale: *const f32,
    /// Output row 0; row `r` at `dst + r * dst_stride`.
    pub dst: *mut f32,
    pub dst_stride: usize,
    pub rows: usize,
    pub cols: usize,
}

/// A micro-kernel and its block width.
pub(crate) struct Kernel {
    pub name: &'static str,
    pub nr: usize,
    pub run: unsafe fn(&Tile<Strided>),
    pub run_indirect: unsafe fn(&Tile<Offsets>),
}

/// Every micro-kernel this CPU can run, fastest first (the portable one last).
pub(crate) fn available() -> Vec<Kernel> {
    let mut kernels = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
            kernels.push(Kernel {
                name: "avx512-vnni",
                nr: x86::NR_VNNI512,
                run: x86::tile_vnni512,
                run_indirect: x86::tile_vnni512,
            });
        }
        if has!("avx2") && has!("avxvnni") {
            kernels.push(Kernel {
                name: "avx-vnni",
                nr: x86::NR_AVX_VNNI,
                run: x86::tile_avx_vnni,
                run_indirect: x86::tile_avx_vnni,
            });
        }
        if has!("avx2") {
            kernels.push(Kernel {
                name: "avx2",
                nr: x86::NR_AVX2,
                run: x86::tile_avx2,
                run_indirect: x86::tile_avx2,
            });
        }
    }
    kernels.push(Kernel {
        name: "portable",
        nr: NR_PORTABLE,
        run: tile_portable,
        run_indirect: tile_portable,
    });
    kernels
}

/// The fastest micro-kernel this CPU runs, picked on first use.
pub(crate) fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(|| available().swap_remove(0))
}

/// Name of the micro-kernel in use (for logs and benchmarks).
pub fn int8_kernel_name() -> &'static str {
    kernel().name
}

/// The dot product of an activation quad and a weight quad.
#[inline(always)]
fn dot(x: u32, w: u32) -> i32 {
    let (x, w) = (x.to_le_bytes(), w.to_le_bytes());
    (0..4).map(|j| x[j] as i32 * w[j] as i8 as i32).sum()
}

const NR_PORTABLE: usize = 16;

/// The portable micro-kernel (8 x 16).
///
/// # Safety
/// The tile's pointers address what its fields say.
unsafe fn tile_portable<R: InputRows>(t: &Tile<R>) {
    // SAFETY: per the tile's contract.
    let (init, scale) = unsafe {
        (
            std::slice::from_raw_parts(t.init, MR),
            std::slice::from_raw_parts(t.scale, MR),
        )
    };
    let mut acc: [[i32; NR_PORTABLE]; MR] = std::array::from_fn(|r| [init[r]; NR_PORTABLE]);
    for q in 0..t.quads {
        // SAFETY: per the tile's contract.
        let (a, x) = unsafe {
            (
                std::slice::from_raw_parts(t.a.add(q * MR), MR),
                std::slice::from_raw_parts(t.x_rows.row(t.x, q), t.cols),
            )
        };
        for (row, &w) in acc.iter_mut().zip(a) {
            for (sum, &v) in row.iter_mut().zip(x) {
                *sum += dot(v, w);
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(t.rows) {
        // SAFETY: per the tile's contract.
        let out = unsafe { std::slice::from_raw_parts_mut(t.dst.add(r * t.dst_stride), t.cols) };
        for (o, &sum) in out.iter_mut().zip(row) {
            *o = sum as f32 * scale[r];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86-64 micro-kernels. Columns past the tile's end are masked out of every load
    //! and store, so tails need no copies.

    use std::arch::x86_64::*;

    use super::{MR, Tile};
    use crate::packed::InputRows;
    use crate::simd::tail::{masks8, masks16};

    pub(super) const NR_VNNI512: usize = 48;
    pub(super) const NR_AVX_VNNI: usize = 24;
    pub(super) const NR_AVX2: usize = 16;

    /// 8 x 48 with `vpdpbusd`: 24 accumulators, 3 input vectors and a broadcast weight quad;
    /// narrower tiles run with only the vectors they fill.
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW and AVX-512 VNNI; the tile's pointers address what its fields
    /// say.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_vnni512<R: InputRows>(t: &Tile<R>) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match t.cols.div_ceil(16) {
                0 | 1 => tile_vnni512_vectors::<1, R>(t),
                2 => tile_vnni512_vectors::<2, R>(t),
                _ => tile_vnni512_vectors::<3, R>(t),
            }
        }
    }

    /// `MR x (16 * VECTORS)`.
    ///
    /// # Safety
    /// As for [`tile_vnni512`], with `t.cols <= 16 * VECTORS`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile_vnni512_vectors<const VECTORS: usize, R: InputRows>(t: &Tile<R>) {
        let masks = masks16::<VECTORS>(t.cols);
        // SAFETY: `init` holds `MR` values.
        let mut acc: [[__m512i; VECTORS]; MR] =
            std::array::from_fn(|r| [_mm512_set1_epi32(unsafe { *t.init.add(r) }); VECTORS]);
        let mut a = t.a;
        for q in 0..t.quads {
            // SAFETY: `q` is below the tile's depth.
            let x = unsafe { t.x_rows.row(t.x, q) };
            // SAFETY: masked lanes are not read; the others lie inside the tile's row.
            let xv: [__m512i; VECTORS] = std::array::from_fn(|v| unsafe {
                _mm512_maskz_loadu_epi32(masks[v], x.wrapping_add(16 * v).cast())
            });
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: `a` points at this step's `MR` weight quads.
                let w = _mm512_set1_epi32(unsafe { *a.add(r) } as i32);
                for (sum, &v) in row.iter_mut().zip(&xv) {
                    *sum = _mm512_dpbusd_epi32(*sum, v, w);
                }
            }
            a = a.wrapping_add(MR);
        }
        for (r, row) in acc.iter().enumerate().take(t.rows) {
            // SAFETY: `scale` holds `MR` values.
            let scale = _mm512_set1_ps(unsafe { *t.scale.add(r) });
            let out = t.dst.wrapping_add(r * t.dst_stride);
            for (v, &sum) in row.iter().enumerate() {
                let y = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), scale);
                // SAFETY: as for the loads; the stored lanes lie inside the output row.
                unsafe { _mm512_mask_storeu_ps(out.wrapping_add(16 * v), masks[v], y) };
            }
        }
    }

    /// How a 256-bit kernel multiplies an input vector of quads by a broadcast weight quad.
    trait Dot256 {
        /// The input vector as the products read it.
        type Input: Copy;
        /// The weight quad as the products read it.
        type Weight: Copy;
        const VECTORS: usize;
        unsafe fn input(x: __m256i) -> Self::Input;
        unsafe fn weight(w: u32) -> Self::Weight;
        unsafe fn add_dot(acc: __m256i, x: Self::Input, w: Self::Weight) -> __m256i;
    }

    /// AVX-VNNI: `vpdpbusd` on 256-bit vectors.
    struct AvxVnni;

    impl Dot256 for AvxVnni {
        type Input = __m256i;
        type Weight = __m256i;
        const VECTORS: usize = 3;
        #[inline(always)]
        unsafe fn input(x: __m256i) -> __m256i {
            x
        }
        #[inline(always)]
        unsafe fn weight(w: u32) -> __m256i {
            // SAFETY: called only where the CPU has the features (see `tile_256`).
            unsafe { _mm256_set1_epi32(w as i32) }
        }
        #[inline(always)]
        unsafe fn add_dot(acc: __m256i, x: __m256i, w: __m256i) -> __m256i {
            // SAFETY: called only where the CPU has the features (see `tile_256`).
            unsafe { _mm256_dpbusd_avx_epi32(acc, x, w) }
        }
    }

    /// AVX2: even and odd bytes widened to 16 bits (zero-extended activations, sign-extended
    /// weights) and multiplied pairwise with `vpmaddwd`.
    struct Avx2;

    impl Dot256 for Avx2 {
        type Input = (__m256i, __m256i);
        type Weight = (__m256i, __m256i);
        const VECTORS: usize = 2;
        #[inline(always)]
        unsafe fn input(x: __m256i) -> (__m256i, __m256i) {
            // SAFETY: called only where the CPU has the features (see `tile_256`).
            unsafe {
                (
                    _mm256_and_si256(x, _mm256_set1_epi16(0x00ff)),
                    _mm256_srli_epi16::<8>(x),
                )
            }
        }
        #[inline(always)]
        unsafe fn weight(w: u32) -> (__m256i, __m256i) {
            // SAFETY: called only where the CPU has the features (see `tile_256`).
            unsafe {
                let w = _mm256_set1_epi32(w as i32);
                (
                    _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(w)),
                    _mm256_srai_epi16::<8>(w),
                )
            }
        }
        #[inline(always)]
        unsafe fn add_dot(
            acc: __m256i,
            (x_even, x_odd): (__m256i, __m256i),
            (w_even, w_odd): (__m256i, __m256i),
        ) -> __m256i {
            // SAFETY: called only where the CPU has the features (see `tile_256`).
            unsafe {
                let even = _mm256_madd_epi16(x_even, w_even);
                let odd = _mm256_madd_epi16(x_odd, w_odd);
                _mm256_add_epi32(acc, _mm256_add_epi32(even, odd))
            }
        }
    }

    const _: () = assert!(NR_AVX_VNNI == 8 * AvxVnni::VECTORS);
    const _: () = assert!(NR_AVX2 == 8 * Avx2::VECTORS);

    /// 8 x 24 with AVX-VNNI.
    ///
    /// # Safety
    /// The CPU has AVX2 and AVX-VNNI; the tile's pointers address what its fields say.
    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn tile_avx_vnni<R: InputRows>(t: &Tile<R>) {
        // SAFETY: forwarded from the caller.
        unsafe { tile_256::<AvxVnni, 3, R>(t) }
    }

    /// 8 x 16 with AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2; the tile's pointers address what its fields say.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_avx2<R: InputRows>(t: &Tile<R>) {
        // SAFETY: forwarded from the caller.
        unsafe { tile_256::<Avx2, 2, R>(t) }
    }

    /// `MR x (8 * VECTORS)` as two passes of 4 rows (16 registers hold 4 rows of
    /// accumulators, the inputs and a weight).
    ///
    /// # Safety
    /// Called only from a function compiled for the CPU features `D` needs; the tile's
    /// pointers address what its fields say.
    #[inline(always)]
    unsafe fn tile_256<D: Dot256, const VECTORS: usize, R: InputRows>(t: &Tile<R>) {
        const ROWS: usize = 4;
        // SAFETY (whole body): the intrinsics run on a CPU with the features `D` needs (the
        // caller's contract); loads and stores stay inside the tile as its fields say.
        unsafe {
            let masks = masks8::<VECTORS>(t.cols);
            for first in (0..t.rows).step_by(ROWS) {
                let mut acc: [[__m256i; VECTORS]; ROWS] =
                    std::array::from_fn(|r| [_mm256_set1_epi32(*t.init.add(first + r)); VECTORS]);
                let mut a = t.a.wrapping_add(first);
                for q in 0..t.quads {
                    let x = t.x_rows.row(t.x, q);
                    let xv: [D::Input; VECTORS] = std::array::from_fn(|v| {
                        D::input(_mm256_maskload_epi32(
                            x.wrapping_add(8 * v).cast(),
                            masks[v],
                        ))
                    });
                    for (r, row) in acc.iter_mut().enumerate() {
                        let w = D::weight(*a.add(r));
                        for (sum, &v) in row.iter_mut().zip(&xv) {
                            *sum = D::add_dot(*sum, v, w);
                        }
                    }
                    a = a.wrapping_add(MR);
                }
                for (r, row) in acc.iter().enumerate().take(t.rows - first) {
                    let scale = _mm256_set1_ps(*t.scale.add(first + r));
                    let out = t.dst.wrapping_add((first + r) * t.dst_stride);
                    for (v, &sum) in row.iter().enumerate() {
                        let y = _mm256_mul_ps(_mm256_cvtepi32_ps(sum), scale);
                        _mm256_maskstore_ps(out.wrapping_add(8 * v), masks[v], y);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Tile<Strided> {
        /// The same tile with its input rows found by `x_rows` instead.
        fn with_rows<R>(&self, x_rows: R) -> Tile<R> {
            Tile {
                a: self.a,
                quads: self.quads,
                x: self.x,
                x_rows,
                init: self.init,
                scale: self.scale,
                dst: self.dst,
                dst_stride: self.dst_stride,
                rows: self.rows,
                cols: self.cols,
            }
        }
    }

    /// Every kernel this CPU runs against plain integer arithmetic, bit for bit, on blocks
    /// with row and column tails, extreme values (255 x -127 in every byte of a quad, where a
    /// 16-bit pair sum would saturate) and input rows by stride and by offset.
    #[test]
    fn kernels_are_exact() {
        let kernels = available();
        assert!(kernels.iter().any(|k| k.name == "portable"));
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u32
        };
        let names: Vec<_> = kernels.iter().map(|k| k.name).collect();
        eprintln!("INT8 kernels tested: {names:?}");
        for (quads, cols, rows) in [(1, 1, 1), (5, 48, 8), (37, 45, 7), (9, 13, 3)] {
            for extreme in [false, true] {
                let a: Vec<u32> = (0..quads * MR)
                    .map(|_| {
                        if extreme {
                            0x8181_8181
                        } else {
                            next() & 0x7f7f_7f7f ^ 0x8080_0000
                        }
                    })
                    .collect();
                let x_stride = cols + 5;
                let x: Vec<u32> = (0..quads * x_stride)
                    .map(|_| if extreme { u32::MAX } else { next() })
                    .collect();
                let init: Vec<i32> = (0..MR as i32).map(|r| r * 1000 - 3000).collect();
                let scale: Vec<f32> = (0..MR).map(|r| 0.01 + r as f32 * 1e-3).collect();
                let want: Vec<f32> = (0..rows * cols)
                    .map(|i| {
                        let (r, c) = (i / cols, i % cols);
                        let sum: i32 = (0..quads)
                            .map(|q| dot(x[q * x_stride + c], a[q * MR + r]))
                            .sum();
                        (init[r] + sum) as f32 * scale[r]
                    })
                    .collect();
                // The rows by stride, and the same rows through an offset per step.
                let offsets: Vec<usize> = (0..quads).map(|q| q * x_stride).collect();
                for kernel in &kernels {
                    for indirect in [false, true] {
                        let mut dst = vec![f32::NAN; rows * cols];
                        let tile = Tile {
                            a: a.as_ptr(),
                            quads,
                            x: x.as_ptr(),
                            x_rows: Strided(x_stride),
                            init: init.as_ptr(),
                            scale: scale.as_ptr(),
                            dst: dst.as_mut_ptr(),
                            dst_stride: cols,
                            rows,
                            cols: cols.min(kernel.nr),
                        };
                        // SAFETY: the tile lies inside the buffers above, by stride or by
                        // offset; `available` lists only kernels this CPU runs.
                        unsafe {
                            if indirect {
                                (kernel.run_indirect)(&tile.with_rows(Offsets(offsets.as_ptr())))
                            } else {
                                (kernel.run)(&tile)
                            }
                        };
                        for r in 0..rows {
                            for c in 0..cols.min(kernel.nr) {
                                let (got, want) = (dst[r * cols + c], want[r * cols + c]);
                                let name = kernel.name;
                                assert_eq!(got.to_bits(), want.to_bits(), "{name} r{r} c{c}");
                            }
                        }
                    }
                }
            }
        }
        // The extreme quad sums to 4 * 255 * -127 per step: what the AVX2 path must not clip.
        assert_eq!(dot(u32::MAX, 0x8181_8181), -129_540);
    }
}
