//! An image's byte levels as a network input: level `l` is the value `l / 255`, computed
//! as each line is copied, so that a first convolution reads the image's bytes instead of
//! an f32 copy four times their size.

/// The network's value for a byte level: `level / 255`, the value an image's f32 input
/// holds (one definition, so that both give the same bits).
#[inline(always)]
pub fn level_to_unit(level: u8) -> f32 {
    level as f32 / 255.0
}

/// Values of a plane that a padded copy of `T` is made from: `T` itself, or (for f32
/// copies) an image's byte levels.
pub(crate) trait PlaneValue<T>: Copy {
    /// `line` as values of `T`: the line itself, or its values widened into `buffer`.
    fn widened<'a>(line: &'a [Self], buffer: &'a mut Vec<T>) -> &'a [T];
}

impl<T: Copy> PlaneValue<T> for T {
    #[inline(always)]
    fn widened<'a>(line: &'a [T], _: &'a mut Vec<T>) -> &'a [T] {
        line
    }
}

impl PlaneValue<f32> for u8 {
    fn widened<'a>(line: &'a [u8], buffer: &'a mut Vec<f32>) -> &'a [f32] {
        buffer.resize(line.len(), 0.0);
        widen_levels(line, buffer);
        buffer
    }
}

/// `dst[i] = level_to_unit(src[i])`, vectorised where the CPU has FMA.
///
/// # Panics
/// When the slices' lengths differ.
pub fn widen_levels(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "one value per level");
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512f() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { x86::widen_avx512(src, dst) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { x86::widen_avx2(src, dst) };
        return;
    }
    widen_divided(src, dst);
}

/// [`widen_levels`] one division at a time.
fn widen_divided(src: &[u8], dst: &mut [f32]) {
    for (value, &level) in dst.iter_mut().zip(src) {
        *value = level_to_unit(level);
    }
}

/// `1 / 255` rounded to f32.
const INVERSE: f32 = 1.0 / 255.0;

/// [`widen_levels`] without a division, for code compiled with FMA: the product with
/// `1 / 255`, corrected by its remainder in one fused multiply-add, which rounds as the
/// quotient does for all 256 levels (the tests check every one). A division of 16 lanes
/// costs several times the three operations.
#[inline(always)]
fn widen_fused(src: &[u8], dst: &mut [f32]) {
    for (value, &level) in dst.iter_mut().zip(src) {
        let x = level as f32;
        let estimate = x * INVERSE;
        let remainder = (-estimate).mul_add(255.0, x);
        *value = remainder.mul_add(INVERSE, estimate);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn widen_avx512(src: &[u8], dst: &mut [f32]) {
        super::widen_fused(src, dst);
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn widen_avx2(src: &[u8], dst: &mut [f32]) {
        super::widen_fused(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level through every path this CPU runs gives the quotient's bits.
    #[test]
    fn every_level_widens_to_its_quotient() {
        let levels: Vec<u8> = (0..=255).collect();
        let quotients: Vec<u32> = levels.iter().map(|&l| level_to_unit(l).to_bits()).collect();
        type Widen = fn(&[u8], &mut [f32]);
        let mut paths: Vec<(&str, Widen)> =
            vec![("dispatched", widen_levels), ("divided", widen_divided)];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::simd::avx2_fma() {
                // SAFETY (both): only where the CPU has the features.
                paths.push(("avx2", |s, d| unsafe { x86::widen_avx2(s, d) }));
            }
            if crate::simd::avx512f() {
                paths.push(("avx512", |s, d| unsafe { x86::widen_avx512(s, d) }));
            }
        }
        for (name, widen) in paths {
            let mut values = vec![f32::NAN; levels.len()];
            widen(&levels, &mut values);
            let bits: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
            assert_eq!(bits, quotients, "{name}");
        }
    }
}
