//! The inverse DCT of libjpeg's default `JDCT_ISLOW` method (`jidctint.c`): integer
//! arithmetic, 13 fractional bits for the constants and 2 extra bits between the passes, so
//! every sample matches libjpeg-turbo (whose SIMD versions are bit-exact with this C code).

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;

const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

/// Rounding right shift (libjpeg's `DESCALE`).
fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// libjpeg's post-IDCT range limit: `clamp(v + 128, 0, 255)` for `|v| <= 512`, and the same
/// wrap-around as its 1024-entry table for the out-of-range values of damaged data.
fn range_limit(v: i64) -> u8 {
    let t = (v & 1023) as u32;
    match t {
        0..=127 => (t + 128) as u8,
        128..=511 => 255,
        512..=895 => 0,
        _ => (t - 896) as u8,
    }
}

/// One 1-D pass of the even/odd butterfly on `x[0..8]`; returns the eight outputs scaled up
/// by 2^CONST_BITS, before descaling.
fn butterfly(x: [i64; 8]) -> [i64; 8] {
    // Even part.
    let z1 = (x[2] + x[6]) * FIX_0_541196100;
    let tmp2 = z1 - x[6] * FIX_1_847759065;
    let tmp3 = z1 + x[2] * FIX_0_765366865;
    let tmp0 = (x[0] + x[4]) << CONST_BITS;
    let tmp1 = (x[0] - x[4]) << CONST_BITS;
    let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
    let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
    // Odd part.
    let (t0, t1, t2, t3) = (x[7], x[5], x[3], x[1]);
    let z1 = -(t0 + t3) * FIX_0_899976223;
    let z2 = -(t1 + t2) * FIX_2_562915447;
    let z5 = (t0 + t2 + t1 + t3) * FIX_1_175875602;
    let z3 = -(t0 + t2) * FIX_1_961570560 + z5;
    let z4 = -(t1 + t3) * FIX_0_390180644 + z5;
    let o0 = t0 * FIX_0_298631336 + z1 + z3;
    let o1 = t1 * FIX_2_053119869 + z2 + z4;
    let o2 = t2 * FIX_3_072711026 + z2 + z3;
    let o3 = t3 * FIX_1_501321110 + z1 + z4;
    [
        tmp10 + o3,
        tmp11 + o2,
        tmp12 + o1,
        tmp13 + o0,
        tmp13 - o0,
        tmp12 - o1,
        tmp11 - o2,
        tmp10 - o3,
    ]
}

/// Dequantises `coefficients` (natural order) with `quant` and writes the 8x8 samples to
/// `out` (row `r` at `out[r * stride..]`).
pub(super) fn inverse_dct(
    coefficients: &[i16; 64],
    quant: &[i16; 64],
    out: &mut [u8],
    stride: usize,
) {
    // Pass 1: columns, results scaled up by 2^PASS1_BITS (every value written, so the work
    // area needs no clearing).
    let columns: [[i64; 8]; 8] = std::array::from_fn(|col| {
        let x: [i64; 8] = std::array::from_fn(|r| {
            i64::from(coefficients[r * 8 + col]) * i64::from(quant[r * 8 + col])
        });
        if x[1..].iter().all(|&v| v == 0) {
            return [x[0] << PASS1_BITS; 8];
        }
        // libjpeg stores the pass-1 results as `int`.
        butterfly(x).map(|v| i64::from(descale(v, CONST_BITS - PASS1_BITS) as i32))
    });
    // Pass 2: rows, out to samples.
    for r in 0..8 {
        let row: [i64; 8] = std::array::from_fn(|col| columns[col][r]);
        let out_row = &mut out[r * stride..r * stride + 8];
        if row[1..].iter().all(|&v| v == 0) {
            out_row.fill(range_limit(descale(row[0], PASS1_BITS + 3)));
            continue;
        }
        for (sample, v) in out_row.iter_mut().zip(butterfly(row)) {
            *sample = range_limit(descale(v, CONST_BITS + PASS1_BITS + 3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook inverse DCT in f64, level-shifted and clamped.
    fn reference(coefficients: &[i16; 64], quant: &[i16; 64]) -> [f64; 64] {
        let c = |u: usize| {
            if u == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            }
        };
        std::array::from_fn(|i| {
            let (y, x) = (i / 8, i % 8);
            let mut sum = 0.0;
            for v in 0..8 {
                for u in 0..8 {
                    let f = f64::from(coefficients[v * 8 + u]) * f64::from(quant[v * 8 + u]);
                    sum += c(u)
                        * c(v)
                        * f
                        * (((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI) / 16.0).cos()
                        * (((2 * y + 1) as f64 * v as f64 * std::f64::consts::PI) / 16.0).cos();
                }
            }
            (sum / 4.0 + 128.0).clamp(0.0, 255.0)
        })
    }

    #[test]
    fn a_flat_block_is_its_dc_value() {
        let mut coefficients = [0i16; 64];
        coefficients[0] = -24;
        let mut out = [0u8; 64];
        inverse_dct(&coefficients, &[2; 64], &mut out, 8);
        // DC -48 spread over 8x8: -48 / 8 = -6 -> 122.
        assert!(out.iter().all(|&v| v == 122), "{out:?}");
    }

    #[test]
    fn random_blocks_are_within_one_level_of_the_exact_transform() {
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..200 {
            let quant: [i16; 64] = std::array::from_fn(|_| 1 + (next() % 16) as i16);
            let coefficients: [i16; 64] = std::array::from_fn(|i| {
                let spread = if i == 0 {
                    60
                } else {
                    12 / (1 + i as u32 / 8) + 1
                };
                (next() % (2 * spread + 1)) as i16 - spread as i16
            });
            let mut out = [0u8; 64];
            inverse_dct(&coefficients, &quant, &mut out, 8);
            for (got, want) in out.iter().zip(reference(&coefficients, &quant)) {
                assert!((f64::from(*got) - want).abs() <= 1.0, "{got} vs {want}");
            }
        }
    }

    #[test]
    fn range_limit_clamps_like_libjpeg() {
        assert_eq!(range_limit(-129), 0);
        assert_eq!(range_limit(-128), 0);
        assert_eq!(range_limit(0), 128);
        assert_eq!(range_limit(127), 255);
        assert_eq!(range_limit(511), 255);
        assert_eq!(range_limit(-512), 0);
    }
}
