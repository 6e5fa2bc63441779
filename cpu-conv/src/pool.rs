//! Max-pooling with stride 1 and "same" padding (the SPPF block's pools), separable.

use rayon::prelude::*;

/// Values per piece of parallel work at least: SPPF's planes (20x20 at 640) are far less
/// work each than handing one to another thread.
const MIN_VALUES_PER_TASK: usize = 8192;

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
    if plane == 0 {
        return;
    }
    out.par_chunks_mut(plane)
        .zip(input.par_chunks(plane))
        .with_min_len(MIN_VALUES_PER_TASK.div_ceil(plane))
        .for_each_init(Vec::new, |rows, (dst, src)| {
            // Rows first, into a scratch plane; then columns, whole rows at a time, into
            // `dst`. Each pass takes the maximum with the plane shifted by each offset in
            // turn, so the loops run over contiguous values and vectorise.
            rows.clear();
            rows.extend_from_slice(src);
            for (d, s) in rows.chunks_exact_mut(width).zip(src.chunks_exact(width)) {
                for shift in 1..=r.min(width - 1) {
                    max_into(&mut d[..width - shift], &s[shift..]);
                    max_into(&mut d[shift..], &s[..width - shift]);
                }
            }
            dst.copy_from_slice(rows);
            for shift in 1..=r.min(height - 1) {
                let reach = shift * width;
                max_into(&mut dst[..plane - reach], &rows[reach..]);
                max_into(&mut dst[reach..], &rows[..plane - reach]);
            }
        });
}

/// `into[i] = max(into[i], from[i])`, written as a comparison so that it vectorises (NaN in
/// `from` is skipped, as `f32::max` skips it).
fn max_into(into: &mut [f32], from: &[f32]) {
    for (a, &b) in into.iter_mut().zip(from) {
        *a = if b > *a { b } else { *a };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_window_scan() {
        // SPPF's pool, and windows wider than the plane.
        for (c, h, w, k) in [(3, 7, 9, 5), (2, 3, 2, 5), (1, 1, 4, 9)] {
            check(c, h, w, k);
        }
    }

    fn check(c: usize, h: usize, w: usize, k: usize) {
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
