//! YCbCr to RGB with libjpeg's fixed-point tables (`jdcolor.c`, 16 fractional bits), so the
//! rounding of every pixel matches libjpeg-turbo.

const SCALE_BITS: u32 = 16;
const ONE_HALF: i64 = 1 << (SCALE_BITS - 1);

/// libjpeg's `FIX(x)`.
fn fix(x: f64) -> i64 {
    (x * f64::from(1u32 << SCALE_BITS) + 0.5) as i64
}

/// The four conversion tables, indexed by the chroma sample.
pub(super) struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i64; 256],
    cb_g: [i64; 256],
}

impl YccTables {
    pub fn new() -> Self {
        let x = |i: usize| i as i64 - 128;
        Self {
            cr_r: std::array::from_fn(|i| ((fix(1.40200) * x(i) + ONE_HALF) >> SCALE_BITS) as i32),
            cb_b: std::array::from_fn(|i| ((fix(1.77200) * x(i) + ONE_HALF) >> SCALE_BITS) as i32),
            cr_g: std::array::from_fn(|i| -fix(0.71414) * x(i)),
            cb_g: std::array::from_fn(|i| -fix(0.34414) * x(i) + ONE_HALF),
        }
    }

    /// One pixel.
    pub fn rgb(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
        let y = i32::from(y);
        let (cb, cr) = (usize::from(cb), usize::from(cr));
        let green = ((self.cb_g[cb] + self.cr_g[cr]) >> SCALE_BITS) as i32;
        let clamp = |v: i32| v.clamp(0, 255) as u8;
        [
            clamp(y + self.cr_r[cr]),
            clamp(y + green),
            clamp(y + self.cb_b[cb]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutral_chroma_is_grey_and_extremes_clamp() {
        let tables = YccTables::new();
        assert_eq!(tables.rgb(77, 128, 128), [77, 77, 77]);
        // Green: (-FIX(0.34414) * 127 + 1/2 - FIX(0.71414) * 127) >> 16 = -134.
        assert_eq!(tables.rgb(255, 255, 255), [255, 121, 255]);
        assert_eq!(tables.rgb(0, 0, 0), [0, 135, 0]);
    }

    #[test]
    fn matches_the_jfif_equations_within_rounding() {
        let tables = YccTables::new();
        for (y, cb, cr) in [(100u8, 90u8, 200u8), (30, 180, 60), (220, 128, 140)] {
            let (yf, cbf, crf) = (f64::from(y), f64::from(cb) - 128.0, f64::from(cr) - 128.0);
            let want = [
                yf + 1.402 * crf,
                yf - 0.34414 * cbf - 0.71414 * crf,
                yf + 1.772 * cbf,
            ];
            for (got, want) in tables.rgb(y, cb, cr).iter().zip(want) {
                assert!((f64::from(*got) - want.clamp(0.0, 255.0)).abs() <= 0.5 + 1e-9);
            }
        }
    }
}
