//! Chroma upsampling as libjpeg-turbo does it by default (`jdsample.c`, "fancy" upsampling):
//! triangle filters for the 2:1 cases (h2v1, h1v2, h2v2) with its exact rounding biases and
//! edge replication, plain replication for every other integer ratio.

use rayon::prelude::*;

/// One component's decoded samples at its own resolution.
pub(super) struct Plane<'a> {
    pub samples: &'a [u8],
    /// Distance between rows in `samples` (the MCU-padded width).
    pub stride: usize,
    /// Real samples per row (`ceil(image width * h / h_max)`).
    pub width: usize,
    /// Real rows (`ceil(image height * v / v_max)`).
    pub height: usize,
}

impl Plane<'_> {
    /// Row `r`, clamped to the real rows (libjpeg's context rows replicate the edges).
    fn row(&self, r: isize) -> &[u8] {
        let r = r.clamp(0, self.height as isize - 1) as usize;
        &self.samples[r * self.stride..r * self.stride + self.width]
    }
}

/// Brings `plane` to `out_width x out_height` for the sampling ratios `(h_ratio, v_ratio)`
/// (`h_max / h`, `v_max / v`), rows in parallel.
pub(super) fn to_full_size(
    plane: &Plane,
    (h_ratio, v_ratio): (usize, usize),
    out_width: usize,
    out_height: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; out_width * out_height];
    // libjpeg uses the fancy 2:1 filters only where a row has more than two samples (h1v2 has
    // no such condition).
    let fancy_h = h_ratio == 2 && plane.width > 2;
    out.par_chunks_exact_mut(out_width)
        .enumerate()
        .for_each_init(
            || vec![0u8; plane.width * h_ratio],
            |row_buf, (y, out_row)| {
                let r = (y / v_ratio) as isize;
                match (fancy_h, h_ratio, v_ratio) {
                    (true, 2, 1) => h2v1_row(plane.row(r), row_buf),
                    (true, 2, 2) | (_, 1, 2) => {
                        // Upper output row of a pair leans on the row above, the lower on the one
                        // below.
                        let (near, far) = if y % 2 == 0 {
                            (plane.row(r), plane.row(r - 1))
                        } else {
                            (plane.row(r), plane.row(r + 1))
                        };
                        if h_ratio == 2 {
                            h2v2_row(near, far, row_buf);
                        } else {
                            h1v2_row(near, far, y % 2 == 1, row_buf);
                        }
                    }
                    _ => replicate_row(plane.row(r), h_ratio, row_buf),
                }
                out_row.copy_from_slice(&row_buf[..out_width]);
            },
        );
    out
}

/// `h2v1_fancy_upsample`: 3/4 nearer + 1/4 further sample, biases 1 and 2.
fn h2v1_row(input: &[u8], out: &mut [u8]) {
    let n = input.len();
    let s = |i: usize| u32::from(input[i]);
    out[0] = input[0];
    out[1] = ((s(0) * 3 + s(1) + 2) >> 2) as u8;
    for i in 1..n - 1 {
        out[2 * i] = ((s(i) * 3 + s(i - 1) + 1) >> 2) as u8;
        out[2 * i + 1] = ((s(i) * 3 + s(i + 1) + 2) >> 2) as u8;
    }
    out[2 * n - 2] = ((s(n - 1) * 3 + s(n - 2) + 1) >> 2) as u8;
    out[2 * n - 1] = input[n - 1];
}

/// `h2v2_fancy_upsample`: column sums `3 * near + far`, then the same triangle across columns
/// with biases 8 and 7.
fn h2v2_row(near: &[u8], far: &[u8], out: &mut [u8]) {
    let n = near.len();
    let sum = |i: usize| u32::from(near[i]) * 3 + u32::from(far[i]);
    out[0] = ((sum(0) * 4 + 8) >> 4) as u8;
    out[1] = ((sum(0) * 3 + sum(1) + 7) >> 4) as u8;
    for i in 1..n - 1 {
        out[2 * i] = ((sum(i) * 3 + sum(i - 1) + 8) >> 4) as u8;
        out[2 * i + 1] = ((sum(i) * 3 + sum(i + 1) + 7) >> 4) as u8;
    }
    out[2 * n - 2] = ((sum(n - 1) * 3 + sum(n - 2) + 8) >> 4) as u8;
    out[2 * n - 1] = ((sum(n - 1) * 4 + 7) >> 4) as u8;
}

/// `h1v2_fancy_upsample`: `3 * near + far` with bias 1 for the upper and 2 for the lower row.
fn h1v2_row(near: &[u8], far: &[u8], lower: bool, out: &mut [u8]) {
    let bias = if lower { 2 } else { 1 };
    for ((o, &a), &b) in out.iter_mut().zip(near).zip(far) {
        *o = ((u32::from(a) * 3 + u32::from(b) + bias) >> 2) as u8;
    }
}

/// Plain replication (`h2v1_upsample`, `int_upsample`).
fn replicate_row(input: &[u8], h_ratio: usize, out: &mut [u8]) {
    for (chunk, &v) in out.chunks_exact_mut(h_ratio).zip(input) {
        chunk.fill(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(samples: &[u8], width: usize, height: usize) -> Plane<'_> {
        Plane {
            samples,
            stride: width,
            width,
            height,
        }
    }

    #[test]
    fn h2v1_follows_libjpegs_triangle_and_edges() {
        let input = [0u8, 100, 200];
        let out = to_full_size(&plane(&input, 3, 1), (2, 1), 6, 1);
        // 0 | (0*3+100+2)>>2=25 | (300+0+1)>>2=75 | (300+200+2)>>2=125 | (600+100+1)>>2=175 | 200
        assert_eq!(out, [0, 25, 75, 125, 175, 200]);
    }

    #[test]
    fn h2v2_uses_the_row_above_and_below_with_edges_replicated() {
        // Two rows of three samples; output 6x4 cropped to 5x3.
        let input = [16u8, 16, 16, 48, 48, 48];
        let out = to_full_size(&plane(&input, 3, 2), (2, 2), 5, 3);
        // Row 0 leans on itself (top edge): sums 64 -> 16. Row 1 on input row 1 below:
        // 3*16+48 = 96 -> (96*4+8) >> 4 = 24. Row 2 (input row 1, row 0 above): 3*48+16 = 160
        // -> 40.
        assert_eq!(
            out,
            [16, 16, 16, 16, 16, 24, 24, 24, 24, 24, 40, 40, 40, 40, 40]
        );
    }

    #[test]
    fn h1v2_biases_differ_between_the_two_rows() {
        let input = [10u8, 11];
        let out = to_full_size(&plane(&input, 1, 2), (1, 2), 1, 4);
        // Row 0: (30+10+1)>>2 = 10; row 1: (30+11+2)>>2 = 10; row 2: (33+10+1)>>2 = 11;
        // row 3: (33+11+2)>>2 = 11.
        assert_eq!(out, [10, 10, 11, 11]);
    }

    #[test]
    fn narrow_rows_and_other_ratios_replicate() {
        let input = [7u8, 9];
        assert_eq!(
            to_full_size(&plane(&input, 2, 1), (2, 1), 4, 1),
            [7, 7, 9, 9]
        );
        assert_eq!(
            to_full_size(&plane(&input, 2, 1), (4, 2), 7, 2),
            [7, 7, 7, 7, 9, 9, 9, 7, 7, 7, 7, 9, 9, 9]
        );
    }
}
