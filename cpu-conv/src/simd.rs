//! Whether code compiled for AVX2 + FMA (or AVX-512) may run here. Hot loops are written
//! once as `#[inline(always)]` functions and called through a `#[target_feature(enable =
//! "avx2,fma")]` wrapper when this says so, so they vectorise for the CPU at hand while the
//! crate still builds for the baseline target.

/// True on x86-64 CPUs with AVX2 and FMA.
#[inline]
pub(crate) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True on x86-64 CPUs with AVX-512F (which implies AVX2 and FMA).
#[inline]
pub(crate) fn avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Lane masks for the micro-kernels' column tails: which lanes of a tile row's vectors lie
/// within its `cols` columns.
#[cfg(target_arch = "x86_64")]
pub(crate) mod tail {
    use std::arch::x86_64::*;

    /// Masks of the `VECTORS` 16-lane (AVX-512) vectors of a row of `cols` columns.
    #[inline(always)]
    pub(crate) fn masks16<const VECTORS: usize>(cols: usize) -> [__mmask16; VECTORS] {
        std::array::from_fn(|v| {
            let lanes = cols.saturating_sub(16 * v).min(16);
            ((1u32 << lanes) - 1) as __mmask16
        })
    }

    /// Masks of the `VECTORS` 8-lane (AVX2) vectors of a row of `cols` columns, as vectors
    /// whose lanes inside are all ones (what `vmaskmov` takes).
    ///
    /// # Safety
    /// The CPU has AVX2 (called from code compiled for it, into which this is inlined).
    #[inline(always)]
    pub(crate) unsafe fn masks8<const VECTORS: usize>(cols: usize) -> [__m256i; VECTORS] {
        std::array::from_fn(|v| {
            let lanes = cols.saturating_sub(8 * v).min(8) as i32;
            // SAFETY: per the function's contract.
            unsafe {
                _mm256_cmpgt_epi32(
                    _mm256_set1_epi32(lanes),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                )
            }
        })
    }
}
