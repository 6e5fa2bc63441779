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
    let planes_per_task = MIN_VALUES_PER_TASK.div_ceil(plane);
    out.par_chunks_mut(plane * planes_per_task)
        .zip(input.par_chunks(plane * planes_per_task))
        .for_each_init(PoolBuffers::default, |buffers, (dst, src)| {
            // Groups of planes whose padded copy stays in the core's L1 cache.
            let group = (STACKED_VALUES / ((height + 2 * r) * (width + 2 * r))).max(1) * plane;
            for (dst, src) in dst.chunks_mut(group).zip(src.chunks(group)) {
                pool_planes(src, [height, width], r, buffers, dst);
            }
        });
}

/// Values of padded planes stacked for one [`pool_planes`] call at most: its two scratch
/// copies then take 16 KiB.
const STACKED_VALUES: usize = 2048;

/// One thread's scratch for [`pool_planes`].
#[derive(Default)]
struct PoolBuffers {
    padded: Vec<f32>,
    row_maxima: Vec<f32>,
}

/// The `(2r + 1)²` max-pool of the `height x width` planes of `src` into `dst`, through a
/// copy of them stacked one above the other, each padded with `r` values of -inf on every
/// side. On that copy each pass takes the maximum with the whole copy shifted by one offset,
/// rows first (offsets 1..=2r), then columns (offsets of whole padded rows): every pass is
/// one long loop over all the planes, whatever their width, and the positions in the
/// padding are computed and dropped. (Plane by plane and row by row, SPPF's 10x10 planes at
/// 320 ran loops of at most 9 values: one pool of YOLO11n-320's 128 planes of 10x10 took
/// 34 µs, now 24 µs on one thread and 15 µs on two; 128 of 20x20 86 -> 57 µs and 45 -> 35
/// µs, timed in a loop of 2000 in a temporary test.)
fn pool_planes(
    src: &[f32],
    shape: [usize; 2],
    r: usize,
    buffers: &mut PoolBuffers,
    dst: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512f() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { pool_planes_avx512(src, shape, r, buffers, dst) };
        return;
    }
    pool_planes_with(src, shape, r, buffers, dst);
}

/// [`pool_planes`] compiled for AVX-512: 16 lanes to each maximum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn pool_planes_avx512(
    src: &[f32],
    shape: [usize; 2],
    r: usize,
    buffers: &mut PoolBuffers,
    dst: &mut [f32],
) {
    pool_planes_with(src, shape, r, buffers, dst);
}

/// [`pool_planes`]' body, inlined into each instruction-set version.
#[inline(always)]
fn pool_planes_with(
    src: &[f32],
    [height, width]: [usize; 2],
    r: usize,
    buffers: &mut PoolBuffers,
    dst: &mut [f32],
) {
    let padded_width = width + 2 * r;
    let padded_plane = (height + 2 * r) * padded_width;
    let planes = src.len() / (height * width);
    let padded = &mut buffers.padded;
    padded.clear();
    padded.resize(planes * padded_plane, f32::NEG_INFINITY);
    for (padded, plane) in padded
        .chunks_exact_mut(padded_plane)
        .zip(src.chunks_exact(height * width))
    {
        for (line, values) in padded[r * padded_width..]
            .chunks_exact_mut(padded_width)
            .zip(plane.chunks_exact(width))
        {
            line[r..r + width].copy_from_slice(values);
        }
    }
    // Position `p` takes the maximum of `padded[p..=p + 2r]`: at row `y`, column `x` of a
    // padded plane, the window of its input row `y - r` around column `x`.
    let rows_len = padded.len() - 2 * r;
    let row_maxima = &mut buffers.row_maxima;
    row_maxima.clear();
    row_maxima.extend_from_slice(&padded[..rows_len]);
    for shift in 1..=2 * r {
        max_into(row_maxima, &padded[shift..shift + rows_len]);
    }
    // Position `q`, at row `y`, column `x` of a padded plane, takes the maximum of the row
    // maxima of its rows `y..=y + 2r` at column `x`: for `y < height`, the output's row `y`.
    // The last plane's last kept position lies `2r` rows and `2r` columns before the end.
    let columns_len = rows_len - 2 * r * padded_width;
    let maxima = padded;
    maxima.clear();
    maxima.extend_from_slice(&row_maxima[..columns_len]);
    for shift in 1..=2 * r {
        let from = shift * padded_width;
        max_into(maxima, &row_maxima[from..from + columns_len]);
    }
    for (out, maxima) in dst
        .chunks_exact_mut(height * width)
        .zip(maxima.chunks(padded_plane))
    {
        for (line, values) in out.chunks_exact_mut(width).zip(maxima.chunks(padded_width)) {
            line.copy_from_slice(&values[..width]);
        }
    }
}

/// `into[i] = max(into[i], from[i])` (a NaN on either side gives the other value). As
/// `f32::max` it compiles to a vector maximum and a blend; written as a comparison it became
/// a masked store per vector, 1.1-1.2x slower here.
#[inline(always)]
fn max_into(into: &mut [f32], from: &[f32]) {
    for (a, &b) in into.iter_mut().zip(from) {
        *a = a.max(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_window_scan() {
        // SPPF's pool, and windows wider than the plane.
        for (c, h, w, k) in [
            (3, 7, 9, 5),
            (2, 3, 2, 5),
            (1, 1, 4, 9),
            (4, 10, 10, 5),
            (2, 20, 20, 5),
            (1, 2, 1, 3),
        ] {
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
