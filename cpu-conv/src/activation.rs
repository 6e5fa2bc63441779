//! A convolution's epilogue (bias addition, activation, residual) over one output row, in
//! place or into another buffer, vectorised with runtime dispatch.

use std::mem::MaybeUninit;

/// The activation applied after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// No activation: `y = x + b`.
    Identity,
    /// SiLU (swish): `y = z * sigmoid(z)` with `z = x + b`.
    Silu,
}

/// What a convolution does to its sums before they are its output:
/// `activation(sums + bias) + residual`.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    /// `[c_out]`.
    pub bias: &'a [f32],
    pub activation: Activation,
    /// `[c_out, out_h, out_w]`, added after the activation: a residual block's shortcut,
    /// which then needs no pass of its own over the output.
    pub residual: Option<&'a [f32]>,
}

impl<'a> Epilogue<'a> {
    /// Bias and activation, no residual.
    pub fn new(bias: &'a [f32], activation: Activation) -> Self {
        Self {
            bias,
            activation,
            residual: None,
        }
    }

    /// Finishes output values `at..at + row.len()` of the `[c_out, out_h, out_w]` output,
    /// all of channel `co`, in place.
    pub(crate) fn finish(&self, row: &mut [f32], co: usize, at: usize) {
        apply_bias_activation(row, self.bias[co], self.activation);
        self.add_residual(row, at);
    }

    /// [`finish`](Self::finish) from `src` into `dst`.
    ///
    /// # Safety
    /// As for [`apply_bias_activation_into`].
    pub(crate) unsafe fn finish_into(&self, src: &[f32], dst: *mut f32, co: usize, at: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { apply_bias_activation_into(src, dst, self.bias[co], self.activation) };
        if self.residual.is_some() {
            // SAFETY: the caller's `src.len()` values at `dst`, just written.
            let row = unsafe { std::slice::from_raw_parts_mut(dst, src.len()) };
            self.add_residual(row, at);
        }
    }

    /// Adds the residual's values `at..at + row.len()` to `row`, if there is a residual.
    pub(crate) fn add_residual(&self, row: &mut [f32], at: usize) {
        if let Some(residual) = self.residual {
            let residual = &residual[at..at + row.len()];
            row.iter_mut().zip(residual).for_each(|(v, r)| *v += r);
        }
    }

    /// What the epilogue makes of output value `at` whose sum plus bias is `acc`, computed
    /// in f64 for the reference convolutions of the tests.
    #[cfg(test)]
    pub(crate) fn reference(&self, acc: f64, at: usize) -> f32 {
        let activated = match self.activation {
            Activation::Identity => acc,
            Activation::Silu => acc / (1.0 + (-acc).exp()),
        };
        let residual = self.residual.map_or(0.0, |r| f64::from(r[at]));
        (activated + residual) as f32
    }

    /// Checks the bias against `c_out` channels and the residual against an output of
    /// `out_len` values.
    ///
    /// # Panics
    /// When either does not match.
    pub(crate) fn check(&self, c_out: usize, out_len: usize) {
        assert_eq!(self.bias.len(), c_out, "bias shape");
        if let Some(residual) = self.residual {
            assert_eq!(residual.len(), out_len, "residual shape");
        }
    }
}

/// Adds `bias` to every value of `row` and applies `activation`, in place.
pub fn apply_bias_activation(row: &mut [f32], bias: f32, activation: Activation) {
    match activation {
        Activation::Identity => row.iter_mut().for_each(|v| *v += bias),
        Activation::Silu => {
            let ptr = row.as_mut_ptr();
            // SAFETY: reads and writes the `row.len()` values of `row`, each value read
            // before it is written.
            unsafe { bias_silu(ptr, ptr, row.len(), bias) }
        }
    }
}

/// `dst[i] = activation(src[i] + bias)` for every value of `src`: the epilogue that moves
/// a tile's values to the output in the same pass.
///
/// # Safety
/// `dst` addresses `src.len()` writable values that do not overlap `src`, and no one else
/// uses them meanwhile. They may be uninitialised.
pub(crate) unsafe fn apply_bias_activation_into(
    src: &[f32],
    dst: *mut f32,
    bias: f32,
    activation: Activation,
) {
    match activation {
        Activation::Identity => {
            for (i, &v) in src.iter().enumerate() {
                // SAFETY: per the contract, `i < src.len()` values are writable at `dst`.
                unsafe { dst.add(i).write(v + bias) };
            }
        }
        // SAFETY: forwarded from the caller.
        Activation::Silu => unsafe { bias_silu(src.as_ptr(), dst, src.len(), bias) },
    }
}

/// `dst[i] = 1 / (1 + e^-src[i])` for every value.
///
/// # Panics
/// When the slices' lengths differ.
pub fn sigmoid_into(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    assert_eq!(src.len(), dst.len(), "as many values out as in");
    map((src, dst), sigmoid);
}

/// `1 / (1 + e^-z)`.
#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

/// `v = e^v` for every value, in place.
fn exp_in_place(values: &mut [f32]) {
    map(values, exp);
}

/// For a row-major `[rows, columns]` matrix: each value less its column's maximum,
/// exponentiated, in place. That is the numerator of a softmax down each column, which
/// cannot overflow.
///
/// # Panics
/// When `columns` is 0 or does not divide `values.len()`.
pub fn exp_minus_column_max(values: &mut [f32], columns: usize) {
    assert!(
        columns > 0 && values.len().is_multiple_of(columns),
        "matrix shape"
    );
    let mut max = vec![f32::NEG_INFINITY; columns];
    for row in values.chunks_exact(columns) {
        // A comparison rather than `f32::max`, whose NaN rules keep it scalar.
        max.iter_mut()
            .zip(row)
            .for_each(|(m, &v)| *m = if v > *m { v } else { *m });
    }
    for row in values.chunks_exact_mut(columns) {
        row.iter_mut().zip(&max).for_each(|(v, m)| *v -= m);
    }
    exp_in_place(values);
}

/// `dst[i] = silu(src[i] + bias)` for `i < len`.
///
/// # Safety
/// `src` addresses `len` readable values and `dst` `len` writable ones: the same values,
/// or ones that do not overlap.
unsafe fn bias_silu(src: *const f32, dst: *mut f32, len: usize, bias: f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512f() {
        // SAFETY: the CPU has AVX-512F; the pointers as the caller says.
        unsafe { x86::bias_silu_avx512(src, dst, len, bias) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; the pointers as the caller says.
        unsafe { x86::bias_silu_avx2(src, dst, len, bias) };
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe { bias_silu_portable(src, dst, len, bias) }
}

/// [`bias_silu`] one value at a time.
///
/// # Safety
/// As for [`bias_silu`].
#[inline(always)]
unsafe fn bias_silu_portable(src: *const f32, dst: *mut f32, len: usize, bias: f32) {
    for i in 0..len {
        // SAFETY: `i < len`; each value is read before it is written.
        unsafe { dst.add(i).write(silu(src.add(i).read() + bias)) };
    }
}

/// `z · sigmoid(z)`, the scalar definition the vector paths are tested against.
#[inline(always)]
fn silu(z: f32) -> f32 {
    z / (1.0 + exp(-z))
}

/// Values a map applies a function to: in place, or from a source into a destination of
/// the same length (two slices, so the compiler knows they do not overlap and vectorises).
trait MapValues {
    fn apply(self, f: impl Fn(f32) -> f32);
}

impl MapValues for &mut [f32] {
    #[inline(always)]
    fn apply(self, f: impl Fn(f32) -> f32) {
        for v in self {
            *v = f(*v);
        }
    }
}

impl MapValues for (&[f32], &mut [MaybeUninit<f32>]) {
    #[inline(always)]
    fn apply(self, f: impl Fn(f32) -> f32) {
        let (src, dst) = self;
        for (d, &s) in dst.iter_mut().zip(src) {
            d.write(f(s));
        }
    }
}

/// Applies `f` to every value, compiled for AVX-512 or AVX2 + FMA where the CPU has them so
/// the loop vectorises (16 or 8 lanes), else for the baseline target. AVX-512 made bias +
/// SiLU 1.6x faster than AVX2 on an AMD EPYC (criterion, 512k values: 220 vs 351 µs); the
/// Winograd transforms gained nothing from it, so they stay on AVX2.
#[inline(always)]
fn map(values: impl MapValues, f: impl Fn(f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512f() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { map_avx512(values, f) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { map_avx2(values, f) };
        return;
    }
    values.apply(f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn map_avx512(values: impl MapValues, f: impl Fn(f32) -> f32) {
    values.apply(f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_avx2(values: impl MapValues, f: impl Fn(f32) -> f32) {
    values.apply(f);
}

/// The range [`exp`] clamps its argument to: e^x stays a normal, finite f32.
const EXP_MIN: f32 = -87.336_54;
const EXP_MAX: f32 = 88.376_26;
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so that `n · LN2_HI` is exact for the `n` in range.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits.
const ROUNDER: f32 = 12_582_912.0;
/// Cephes `expf`'s polynomial for `(e^r - 1 - r) / r^2` on |r| <= ln 2 / 2, highest degree
/// first. A degree-6 fit (worst relative error of `exp` 1.2e-7) made bias + SiLU 6-7 %
/// faster, two operations of its twenty, but the last-bit changes in every activation moved
/// the INT8 record's `agree` mAP50 on the traffic video from 0.973 to 0.969 (0.969 again
/// when calibrated with it), under the 0.97 the INT8 path is held to; so it stays.
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` to within 2 ulp over the whole f32 range (Cephes `expf`): range reduction by ln 2,
/// a degree-6 polynomial, and the exponent set through the bits. Branch-free and free of
/// float-to-int casts, so loops over it vectorise.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // `max`/`min` map to single vector instructions; `clamp`'s NaN handling does not.
    #[allow(clippy::manual_clamp)]
    let x = x.max(EXP_MIN).min(EXP_MAX);
    let shifted = x * LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let poly = p * r * r + r + 1.0;
    let exponent = shifted
        .to_bits()
        .wrapping_sub(ROUNDER.to_bits())
        .wrapping_add(127)
        << 23;
    poly * f32::from_bits(exponent)
}

/// Bias + SiLU written with intrinsics: the same `exp` as the scalar path, and the division
/// of `z / (1 + e^-z)` replaced by the reciprocal estimate refined by one Newton step
/// (relative error about 2^-23 instead of a correctly rounded quotient), which takes the
/// divider out of the loop: 1.22x faster than the auto-vectorised loop on AVX-512 for a
/// tile in cache, 1.18x over 512k values (`cargo bench -p cpu-conv -- SiLU`: 1.67 against
/// 2.04 µs, 108 against 128 µs). AVX-512 runs row tails masked, so short tile rows
/// need no scalar loop; it takes two vectors an iteration, so that their chains of
/// dependent operations interleave, and forms no `-z`: 0.34 -> 0.29 ns a value over 4 096
/// values in cache, 0.33 -> 0.28 over 65 536 (one thread, medians of 2 000 calls).
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2_E, ROUNDER};
    use std::arch::x86_64::*;

    /// `z / (1 + e^-z)` for every lane: `e^-z` as `super::exp` with the rounding and the
    /// power of two as one instruction each, the division a refined reciprocal.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn silu_avx512(z: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        // `x = -z` is not formed: the clamp, the product and the first reduction step take
        // `z` with their signs turned, which gives the same values.
        let clamped = _mm512_min_ps(
            _mm512_max_ps(z, _mm512_set1_ps(-EXP_MAX)),
            _mm512_set1_ps(-EXP_MIN),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(clamped, _mm512_set1_ps(-LOG2_E)),
        );
        let r = _mm512_fnmsub_ps(n, _mm512_set1_ps(LN2_HI), clamped);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let poly = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, one));
        let e = _mm512_scalef_ps(poly, n);
        let d = _mm512_add_ps(one, e);
        let estimate = _mm512_rcp14_ps(d);
        let reciprocal =
            _mm512_mul_ps(estimate, _mm512_fnmadd_ps(d, estimate, _mm512_set1_ps(2.0)));
        _mm512_mul_ps(z, reciprocal)
    }

    /// # Safety
    /// The CPU has AVX-512F; the pointers as for `super::bias_silu`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn bias_silu_avx512(src: *const f32, dst: *mut f32, len: usize, bias: f32) {
        let bias = _mm512_set1_ps(bias);
        // Two vectors an iteration: their chains interleave.
        let pairs = len / 32 * 32;
        for start in (0..pairs).step_by(32) {
            // SAFETY: `start + 32 <= len`.
            unsafe {
                let z0 = _mm512_add_ps(_mm512_loadu_ps(src.add(start)), bias);
                let z1 = _mm512_add_ps(_mm512_loadu_ps(src.add(start + 16)), bias);
                let (y0, y1) = (silu_avx512(z0), silu_avx512(z1));
                _mm512_storeu_ps(dst.add(start), y0);
                _mm512_storeu_ps(dst.add(start + 16), y1);
            }
        }
        for start in (pairs..len).step_by(16) {
            let lanes = (len - start).min(16);
            let mask = ((1u32 << lanes) - 1) as __mmask16;
            // SAFETY: the masked lanes lie inside the `len` values.
            let z = _mm512_add_ps(unsafe { _mm512_maskz_loadu_ps(mask, src.add(start)) }, bias);
            // SAFETY: as the load.
            unsafe { _mm512_mask_storeu_ps(dst.add(start), mask, silu_avx512(z)) };
        }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; the pointers as for `super::bias_silu`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn bias_silu_avx2(src: *const f32, dst: *mut f32, len: usize, bias: f32) {
        let bias = _mm256_set1_ps(bias);
        let one = _mm256_set1_ps(1.0);
        let two = _mm256_set1_ps(2.0);
        let rounder = _mm256_set1_ps(ROUNDER);
        let exponent_bias = _mm256_set1_epi32(127 - ROUNDER.to_bits() as i32);
        let full = len / 8 * 8;
        for start in (0..full).step_by(8) {
            // SAFETY: `start + 8 <= len`.
            let z = _mm256_add_ps(unsafe { _mm256_loadu_ps(src.add(start)) }, bias);
            let x = _mm256_sub_ps(_mm256_setzero_ps(), z);
            let x = _mm256_min_ps(
                _mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)),
                _mm256_set1_ps(EXP_MAX),
            );
            let shifted = _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2_E), rounder);
            let n = _mm256_sub_ps(shifted, rounder);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
            let mut p = _mm256_set1_ps(EXP_POLY[0]);
            for &c in &EXP_POLY[1..] {
                p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
            }
            let poly = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, one));
            let exponent = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_castps_si256(shifted),
                exponent_bias,
            ));
            let e = _mm256_mul_ps(poly, _mm256_castsi256_ps(exponent));
            let d = _mm256_add_ps(one, e);
            // `rcp_ps` has 12 bits; one Newton step gives about 23.
            let estimate = _mm256_rcp_ps(d);
            let reciprocal = _mm256_mul_ps(estimate, _mm256_fnmadd_ps(d, estimate, two));
            // SAFETY: as the load.
            unsafe { _mm256_storeu_ps(dst.add(start), _mm256_mul_ps(z, reciprocal)) };
        }
        let bias = _mm256_cvtss_f32(bias);
        // SAFETY: the values from `full` on, inside the caller's `len`.
        unsafe { super::bias_silu_portable(src.add(full), dst.add(full), len - full, bias) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_over_the_range_used() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = (exp(x) - x.exp()).abs() / x.exp();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
    }

    #[test]
    fn silu_matches_the_definition_at_extremes_and_zero() {
        let mut row = vec![-200.0, -20.0, -1.0, 0.0, 1e-3, 3.0, 200.0];
        let expected: Vec<f32> = row
            .iter()
            .map(|&z: &f32| (z as f64 / (1.0 + (-z as f64).exp())) as f32)
            .collect();
        apply_bias_activation(&mut row, 0.0, Activation::Silu);
        for (got, want) in row.iter().zip(&expected) {
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1e-6),
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn sigmoid_and_exp_match_std() {
        let xs: Vec<f32> = (-400..400).map(|i| i as f32 * 0.05).collect();
        let mut sig = vec![MaybeUninit::new(f32::NAN); xs.len()];
        sigmoid_into(&xs, &mut sig);
        // SAFETY: every value was written (and was initialised before).
        let sig: Vec<f32> = sig.iter().map(|v| unsafe { v.assume_init() }).collect();
        let mut ex = xs.clone();
        exp_in_place(&mut ex);
        for ((x, s), e) in xs.iter().zip(&sig).zip(&ex) {
            assert!((s - 1.0 / (1.0 + (-x).exp())).abs() < 1e-6, "sigmoid({x})");
            assert!((e - x.exp()).abs() <= 3e-7 * x.exp(), "exp({x})");
        }
    }

    #[test]
    fn exp_minus_column_max_matches_the_definition_without_overflow() {
        // Three rows of four columns; the last column's values would overflow `e^v`.
        let values = [
            1.0f32, -2.0, 0.5, 200.0, //
            3.0, -1.0, 0.5, 150.0, //
            -4.0, -3.0, 0.5, 100.0,
        ];
        let mut shifted = values;
        exp_minus_column_max(&mut shifted, 4);
        for column in 0..4 {
            let max = (0..3)
                .map(|r| values[r * 4 + column])
                .fold(f32::MIN, f32::max);
            for row in 0..3 {
                let want = f64::from(values[row * 4 + column] - max).exp();
                let got = f64::from(shifted[row * 4 + column]);
                assert!(
                    (got - want).abs() <= 1e-6 * want.max(1e-30),
                    "{row},{column}"
                );
            }
        }
    }

    /// Every SiLU path this CPU can run against the scalar definition, in place and into
    /// another buffer, on row lengths that leave every possible tail, across the range where
    /// SiLU bends and where `e^-z` saturates.
    #[test]
    fn silu_paths_match_the_scalar_definition() {
        let values: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) * 0.047).collect();
        let bias = 0.375;
        type BiasSilu = unsafe fn(*const f32, *mut f32, usize, f32);
        let mut paths: Vec<(&str, BiasSilu)> = vec![
            ("dispatched", bias_silu),
            ("portable", |src, dst, len, b| unsafe {
                bias_silu_portable(src, dst, len, b)
            }),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::simd::avx512f() {
                paths.push(("avx512", x86::bias_silu_avx512));
            }
            if crate::simd::avx2_fma() {
                paths.push(("avx2", x86::bias_silu_avx2));
            }
        }
        for (name, path) in paths {
            for len in [1, 7, 8, 15, 16, 17, 31, 32, 33, 48, 63, values.len()] {
                let mut in_place = values[..len].to_vec();
                let mut into = vec![f32::NAN; len + 1];
                let ptr = in_place.as_mut_ptr();
                // SAFETY: the paths that need them are checked above; each writes `len`
                // values, in place or into a separate buffer one longer.
                unsafe {
                    path(ptr, ptr, len, bias);
                    path(values.as_ptr(), into.as_mut_ptr(), len, bias);
                }
                assert!(into[len].is_nan(), "{name}: wrote past the end");
                for ((got, other), &v) in in_place.iter().zip(&into).zip(&values) {
                    let want = silu(v + bias);
                    assert_eq!(got.to_bits(), other.to_bits(), "{name}: in place and into");
                    assert!(
                        (got - want).abs() <= 4e-7 * want.abs() + 1e-30,
                        "{name}, length {len}: silu({}) = {got}, want {want}",
                        v + bias
                    );
                }
            }
        }
    }

    #[test]
    fn into_another_buffer_matches_in_place() {
        let values: Vec<f32> = (0..37).map(|i| i as f32 * 0.31 - 5.0).collect();
        for activation in [Activation::Identity, Activation::Silu] {
            let mut in_place = values.clone();
            apply_bias_activation(&mut in_place, -0.25, activation);
            let mut into = vec![f32::NAN; values.len()];
            // SAFETY: `into` holds `values.len()` values and overlaps nothing.
            unsafe { apply_bias_activation_into(&values, into.as_mut_ptr(), -0.25, activation) };
            assert_eq!(in_place, into, "{activation:?}");
        }
    }

    #[test]
    fn identity_only_adds_the_bias() {
        let mut row = vec![1.0, -2.0];
        apply_bias_activation(&mut row, 0.5, Activation::Identity);
        assert_eq!(row, vec![1.5, -1.5]);
    }
}
