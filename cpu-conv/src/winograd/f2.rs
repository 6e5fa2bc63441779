//! Winograd F(2x2, 3x3): each 2x2 block of output from the 4x4 block of input around it,
//! 16 products per tile and channel pair in place of the direct form's 36 (2.25x fewer).

use super::{Points, RowScratch, TileGrid};
use crate::im2col::deinterleave;

/// Points of the transformed 4x4 tile.
pub(super) const POINTS: usize = 16;

/// `G · [a b c]ᵀ` with `G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]`: one column of the kernel
/// transform `U = G g Gᵀ`.
pub(super) fn expand_kernel(a: f32, b: f32, c: f32) -> [f32; 4] {
    [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c]
}

/// See [`TileGrid::transform_input`].
#[inline(always)]
pub(super) fn transform_input(
    grid: &TileGrid,
    plane: &[f32],
    row: usize,
    scratch: &mut RowScratch,
    dst: &mut [f32],
    point_stride: usize,
) {
    let cols = grid.cols;
    let n = cols + 1;
    // Input rows 2 * row - 1 ..= 2 * row + 2 with one zero column on the left, split into
    // their even and odd columns: tile t reads even and odd columns t and t + 1.
    let (even, odd) = scratch.padded[..8 * n].split_at_mut(4 * n);
    for (r, (even, odd)) in even
        .chunks_exact_mut(n)
        .zip(odd.chunks_exact_mut(n))
        .enumerate()
    {
        even.fill(0.0);
        odd.fill(0.0);
        if let Some(y) = (2 * row + r).checked_sub(1).filter(|&y| y < grid.height) {
            // Input column i is padded column i + 1: even input columns are odd padded ones.
            deinterleave(&plane[y * grid.width..][..grid.width], odd, &mut even[1..]);
        }
    }
    // Down the columns first (the transform is separable): u = Bᵀ · d, on whole rows of
    // even and of odd columns.
    let (u_even, u_odd) = scratch.transformed[..8 * n].split_at_mut(4 * n);
    for (rows, u) in [(&*even, u_even), (&*odd, u_odd)] {
        let d = |r: usize| &rows[r * n..(r + 1) * n];
        let (u0, rest) = u.split_at_mut(n);
        let (u1, rest) = rest.split_at_mut(n);
        let (u2, u3) = rest.split_at_mut(n);
        difference(u0, d(0), d(2));
        sum(u1, d(1), d(2));
        difference(u2, d(2), d(1));
        difference(u3, d(1), d(3));
    }
    // Along the rows: V = u · B, straight into the destination; with e and o the even and
    // odd columns, tile t gets e[t] - e[t+1], o[t] + e[t+1], e[t+1] - o[t], o[t] - o[t+1].
    let (u_even, u_odd) = scratch.transformed[..8 * n].split_at(4 * n);
    for a in 0..4 {
        let (e, o) = (&u_even[a * n..(a + 1) * n], &u_odd[a * n..(a + 1) * n]);
        let at = |k: usize| (4 * a + k) * point_stride..(4 * a + k) * point_stride + cols;
        difference(&mut dst[at(0)], &e[..cols], &e[1..]);
        sum(&mut dst[at(1)], &o[..cols], &e[1..]);
        difference(&mut dst[at(2)], &e[1..], &o[..cols]);
        difference(&mut dst[at(3)], &o[..cols], &o[1..]);
    }
}

/// `out = a + b`, element-wise.
#[inline(always)]
fn sum(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((v, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *v = x + y;
    }
}

/// `out = a - b`, element-wise.
#[inline(always)]
fn difference(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((v, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *v = x - y;
    }
}

/// See [`TileGrid::transform_output`].
#[inline(always)]
pub(super) fn transform_output(grid: &TileGrid, m: Points, columns: &mut [f32], dst: &mut [f32]) {
    let (width, cols) = (grid.width, grid.cols);
    let m: [&[f32]; POINTS] = std::array::from_fn(|p| m.get(p, cols));
    // Down the columns: s = Aᵀ · M, rows s0 and s1 for each k.
    let (s0, s1) = columns[..8 * cols].split_at_mut(4 * cols);
    for ((k, a), b) in s0
        .chunks_exact_mut(cols)
        .enumerate()
        .zip(s1.chunks_exact_mut(cols))
    {
        let (m0, m1, m2, m3) = (m[k], m[4 + k], m[8 + k], m[12 + k]);
        for (((((a, b), &m0), &m1), &m2), &m3) in
            a.iter_mut().zip(b).zip(m0).zip(m1).zip(m2).zip(m3)
        {
            *a = m0 + m1 + m2;
            *b = m1 - m2 - m3;
        }
    }
    // Along the rows: y = s · A, two output pixels per tile.
    let (top, bottom) = dst.split_at_mut(width.min(dst.len()));
    for (line, s) in [(top, &*s0), (bottom, &*s1)] {
        if line.is_empty() {
            continue;
        }
        let (s_0, rest) = s.split_at(cols);
        let (s_1, rest) = rest.split_at(cols);
        let (s_2, s_3) = rest.split_at(cols);
        let (pixels, last) = line.as_chunks_mut::<2>();
        for ((((pixel, &a), &b), &c), &d) in pixels.iter_mut().zip(s_0).zip(s_1).zip(s_2).zip(s_3) {
            *pixel = [a + b + c, b - c - d];
        }
        if let [x] = last {
            let t = cols - 1;
            *x = s_0[t] + s_1[t] + s_2[t];
        }
    }
}
