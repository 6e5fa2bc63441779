//! Max-pooling with stride 1 and "same" padding (the SPPF block's pools), separable.

use rayon::prelude::*;

/// `kernel x kernel` max-pool with stride 1 and `kernel / 2` padding (padding never wins)
/// over each `height x width` plane of `input`, into `out` of the same shape.
///
/// # Panics
/// When `kernel` is even, or the slices do not hold `channels` planes.
pub fn max_pool_same(
    input: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    kernel: usize,
    out: &mut [f32],
) {
    assert!(!kernel.is_multiple_of(2), "odd kernels only");
    let plane = height * width;
    assert_eq!(input.len(), channels * plane, "input shape");
    assert_eq!(out.len(), channels * plane, "output shape");
    let r = kernel / 2;
    out.par_chunks_mut(plane)
        .zip(input.par_chunks(plane))
        .for_each(|(dst, src)| {
            // Rows first, into `dst`; then columns, through one column of scratch.
            for (d, s) in dst.chunks_mut(width).zip(src.chunks(width)) {
                for (x, v) in d.iter_mut().enumerate() {
                    *v = window_max(&s[x.saturating_sub(r)..(x + r + 1).min(width)]);
                }
            }
            let mut column = vec![0.0; height];
            for x in 0..width {
                column
                    .iter_mut()
                    .enumerate()
                    .for_each(|(y, c)| *c = dst[y * width + x]);
                for y in 0..height {
                    let rows = &column[y.saturating_sub(r)..(y + r + 1).min(height)];
                    dst[y * width + x] = window_max(rows);
                }
            }
        });
}

fn window_max(values: &[f32]) -> f32 {
    values.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_window_scan() {
        let (c, h, w, k) = (3, 7, 9, 5);
        let input: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.1)
            .collect();
        let mut out = vec![0.0; input.len()];
        max_pool_same(&input, c, h, w, k, &mut out);
        let r = (k / 2) as isize;
        for ch in 0..c {
            for y in 0..h as isize {
                for x in 0..w as isize {
                    let mut best = f32::NEG_INFINITY;
                    for yy in (y - r).max(0)..(y + r + 1).min(h as isize) {
                        for xx in (x - r).max(0)..(x + r + 1).min(w as isize) {
                            best = best.max(input[ch * h * w + (yy as usize) * w + xx as usize]);
                        }
                    }
                    assert_eq!(out[ch * h * w + y as usize * w + x as usize], best);
                }
            }
        }
    }
}
