//! Bias addition and activation over one output row, vectorised with runtime dispatch.

/// The activation applied after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// No activation: `y = x + b`.
    Identity,
    /// SiLU (swish): `y = z * sigmoid(z)` with `z = x + b`.
    Silu,
}

/// Adds `bias` to every value of `row` and applies `activation`, in place.
pub fn apply_bias_activation(row: &mut [f32], bias: f32, activation: Activation) {
    match activation {
        Activation::Identity => row.iter_mut().for_each(|v| *v += bias),
        Activation::Silu => bias_silu(row, bias),
    }
}

/// `v = 1 / (1 + e^-v)` for every value, in place.
pub fn sigmoid_in_place(values: &mut [f32]) {
    map_in_place(values, |z| 1.0 / (1.0 + exp(-z)));
}

/// `v = e^v` for every value, in place.
pub fn exp_in_place(values: &mut [f32]) {
    map_in_place(values, exp);
}

fn bias_silu(row: &mut [f32], bias: f32) {
    map_in_place(row, |v| {
        let z = v + bias;
        z / (1.0 + exp(-z))
    });
}

/// Applies `f` to every value, compiled for AVX-512 or AVX2 + FMA where the CPU has them so
/// the loop vectorises (16 or 8 lanes), else for the baseline target. AVX-512 made bias +
/// SiLU 1.6x faster than AVX2 on an AMD EPYC (criterion, 512k values: 220 vs 351 µs); the
/// Winograd transforms gained nothing from it, so they stay on AVX2.
#[inline(always)]
fn map_in_place(values: &mut [f32], f: impl Fn(f32) -> f32) {
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
    map_portable(values, f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn map_avx512(values: &mut [f32], f: impl Fn(f32) -> f32) {
    map_portable(values, f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_avx2(values: &mut [f32], f: impl Fn(f32) -> f32) {
    map_portable(values, f);
}

#[inline(always)]
fn map_portable(values: &mut [f32], f: impl Fn(f32) -> f32) {
    for v in values.iter_mut() {
        *v = f(*v);
    }
}

/// `e^x` to within 2 ulp over the whole f32 range (Cephes `expf`): range reduction by ln 2,
/// a degree-6 polynomial, and the exponent set through the bits. Branch-free and free of
/// float-to-int casts, so loops over it vectorise.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;
    // `max`/`min` map to single vector instructions; `clamp`'s NaN handling does not.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.336_54).min(88.376_26);
    let shifted = x * LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let poly = p * r * r + r + 1.0;
    let exponent = shifted
        .to_bits()
        .wrapping_sub(ROUNDER.to_bits())
        .wrapping_add(127)
        << 23;
    poly * f32::from_bits(exponent)
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
        let (mut sig, mut ex) = (xs.clone(), xs.clone());
        sigmoid_in_place(&mut sig);
        exp_in_place(&mut ex);
        for ((x, s), e) in xs.iter().zip(&sig).zip(&ex) {
            assert!((s - 1.0 / (1.0 + (-x).exp())).abs() < 1e-6, "sigmoid({x})");
            assert!((e - x.exp()).abs() <= 3e-7 * x.exp(), "exp({x})");
        }
    }

    #[test]
    fn identity_only_adds_the_bias() {
        let mut row = vec![1.0, -2.0];
        apply_bias_activation(&mut row, 0.5, Activation::Identity);
        assert_eq!(row, vec![1.5, -1.5]);
    }
}
