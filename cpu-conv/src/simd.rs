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
