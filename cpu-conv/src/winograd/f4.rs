//! Winograd F(4x4, 3x3): each 4x4 block of output from the 6x6 block of input around it,
//! 36 products per tile and channel pair in place of the direct form's 144 (4x fewer, against
//! F(2x2, 3x3)'s 2.25x), with interpolation points 0, ±1, ±2 (Lavin and Gray, 2016).
//!
//! Tiles start every 4 input columns, so each zero-padded input row is first split into its
//! four column phases (column `4i + k` into phase `k`, index `i`): tile `t` then reads
//! phases 0-3 at `t` and phases 0-1 at `t + 1`, and every transform is a loop over whole
//! rows of tiles that the compiler vectorises.

use super::{Points, RowScratch, TileGrid};

/// Points of the transformed 6x6 tile.
pub(super) const POINTS: usize = 36;

/// Side of the input tile.
const SIDE: usize = 6;

/// `G · [a b c]ᵀ` with `G = [¼ 0 0; -⅙ -⅙ -⅙; -⅙ ⅙ -⅙; 1/24 1/12 ⅙; 1/24 -1/12 ⅙; 0 0 1]`:
/// one column of the kernel transform `U = G g Gᵀ`.
pub(super) fn expand_kernel(a: f32, b: f32, c: f32) -> [f32; SIDE] {
    [
        a / 4.0,
        -(a + b + c) / 6.0,
        -(a - b + c) / 6.0,
        a / 24.0 + b / 12.0 + c / 6.0,
        a / 24.0 - b / 12.0 + c / 6.0,
        c,
    ]
}

/// `Bᵀ · d` for one column `d` of an input tile, with
/// `Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]`.
#[inline(always)]
fn input_column([d0, d1, d2, d3, d4, d5]: [f32; SIDE]) -> [f32; SIDE] {
    let (even, odd) = (d4 - 4.0 * d2, d3 - 4.0 * d1);
    let (even_half, odd_half) = (d4 - d2, 2.0 * (d3 - d1));
    [
        4.0 * d0 - 5.0 * d2 + d4,
        even + odd,
        even - odd,
        even_half + odd_half,
        even_half - odd_half,
        4.0 * d1 - 5.0 * d3 + d5,
    ]
}

/// `Aᵀ · m` for one column `m` of a transformed tile, with
/// `Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]`.
#[inline(always)]
fn output_column([m0, m1, m2, m3, m4, m5]: [f32; SIDE]) -> [f32; 4] {
    let (sum_1, difference_1) = (m1 + m2, m1 - m2);
    let (sum_2, difference_2) = (m3 + m4, m3 - m4);
    [
        m0 + sum_1 + sum_2,
        difference_1 + 2.0 * difference_2,
        sum_1 + 4.0 * sum_2,
        difference_1 + 8.0 * difference_2 + m5,
    ]
}

/// Values the row transforms compute at once: one AVX-512 register (or two AVX2 ones).
const LANES: usize = 16;

/// `out[k][i] = f(x[0][i], ..., x[5][i])[k]` for `i < len`: one transform on whole rows, in
/// blocks of [`LANES`] values held in arrays, which the compiler turns into vector code. The
/// blocks go through `#[inline(always)]` functions, not closures: a closure the compiler
/// does not inline is compiled without the caller's AVX2 features (that made these
/// transforms twice as slow).
#[inline(always)]
fn rows<const N: usize>(
    x: [&[f32]; SIDE],
    mut out: [&mut [f32]; N],
    len: usize,
    f: fn([f32; SIDE]) -> [f32; N],
) {
    if len >= LANES {
        // The last block overlaps the one before rather than running short: each output
        // depends on its own index only, so computing it twice changes nothing.
        let mut start = 0;
        loop {
            let input = std::array::from_fn(|k| {
                <[f32; LANES]>::try_from(&x[k][start..start + LANES]).expect("LANES values")
            });
            for (row, values) in out.iter_mut().zip(lanes(input, f)) {
                row[start..start + LANES].copy_from_slice(&values);
            }
            if start + LANES == len {
                break;
            }
            start = (start + LANES).min(len - LANES);
        }
    } else {
        let mut input = [[0.0; LANES]; SIDE];
        for (values, row) in input.iter_mut().zip(x) {
            values[..len].copy_from_slice(&row[..len]);
        }
        for (row, values) in out.iter_mut().zip(lanes(input, f)) {
            row[..len].copy_from_slice(&values[..len]);
        }
    }
}

/// `f` on each of [`LANES`] columns of values.
#[inline(always)]
fn lanes<const N: usize>(
    input: [[f32; LANES]; SIDE],
    f: fn([f32; SIDE]) -> [f32; N],
) -> [[f32; LANES]; N] {
    let mut output = [[0.0; LANES]; N];
    for l in 0..LANES {
        let y = f([
            input[0][l],
            input[1][l],
            input[2][l],
            input[3][l],
            input[4][l],
            input[5][l],
        ]);
        for (row, v) in output.iter_mut().zip(y) {
            row[l] = v;
        }
    }
    output
}

/// `N` disjoint rows of `len` values of `buffer`, `stride` apart, the first at `first`.
fn strided_rows<const N: usize>(
    buffer: &mut [f32],
    first: usize,
    stride: usize,
    len: usize,
) -> [&mut [f32]; N] {
    let mut rest = &mut buffer[first..];
    std::array::from_fn(|k| {
        let taken = std::mem::take(&mut rest);
        let (row, tail) = if k + 1 < N {
            taken.split_at_mut(stride)
        } else {
            (taken, &mut [][..])
        };
        rest = tail;
        &mut row[..len]
    })
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
    // Input rows 4 * row - 1 ..= 4 * row + 4 with one zero column on the left, each split into
    // its four column phases: `[row][phase][n]`.
    let padded = &mut scratch.padded[..SIDE * 4 * n];
    for (r, phases) in padded.chunks_exact_mut(4 * n).enumerate() {
        phases.fill(0.0);
        if let Some(y) = (4 * row + r).checked_sub(1).filter(|&y| y < grid.height) {
            split_phases(&plane[y * grid.width..][..grid.width], phases, n);
        }
    }
    // Down the columns first (the transform is separable): u = Bᵀ · d, on whole rows.
    let u = &mut scratch.transformed[..SIDE * 4 * n];
    let d: [&[f32]; SIDE] = std::array::from_fn(|r| &padded[r * 4 * n..(r + 1) * 4 * n]);
    rows(d, strided_rows(u, 0, 4 * n, 4 * n), 4 * n, input_column);
    // Along the rows: V = u · B, straight into the destination; tile t's columns are phases
    // 0-3 at t and phases 0-1 at t + 1.
    for a in 0..SIDE {
        let phase = |k: usize, shift: usize| &u[(a * 4 + k) * n + shift..][..cols];
        let x = [
            phase(0, 0),
            phase(1, 0),
            phase(2, 0),
            phase(3, 0),
            phase(0, 1),
            phase(1, 1),
        ];
        let out = strided_rows(dst, SIDE * a * point_stride, point_stride, cols);
        rows(x, out, cols, input_column);
    }
}

/// Splits one input row into the column phases of its zero-padded form (padded column
/// `j = x + 1` into phase `j % 4`, index `j / 4`); `phases` is `[4][n]` and already zero.
fn split_phases(line: &[f32], phases: &mut [f32], n: usize) {
    let (p0, rest) = phases.split_at_mut(n);
    let (p1, rest) = rest.split_at_mut(n);
    let (p2, p3) = rest.split_at_mut(n);
    let (quads, last) = line.as_chunks::<4>();
    for ((((&[a, b, c, d], v1), v2), v3), v0) in quads
        .iter()
        .zip(p1.iter_mut())
        .zip(p2.iter_mut())
        .zip(p3.iter_mut())
        .zip(p0[1..].iter_mut())
    {
        (*v1, *v2, *v3, *v0) = (a, b, c, d);
    }
    let q = quads.len();
    for (phase, &v) in [p1, p2, p3].into_iter().zip(last) {
        phase[q] = v;
    }
}

/// See [`TileGrid::transform_output`].
#[inline(always)]
pub(super) fn transform_output(grid: &TileGrid, m: Points, columns: &mut [f32], dst: &mut [f32]) {
    let (width, cols) = (grid.width, grid.cols);
    // Down the columns: s = Aᵀ · M, `[output row i][k][cols]`.
    let s = &mut columns[..4 * SIDE * cols];
    for k in 0..SIDE {
        let x = std::array::from_fn(|a| m.get(SIDE * a + k, cols));
        rows(
            x,
            strided_rows(s, k * cols, SIDE * cols, cols),
            cols,
            output_column,
        );
    }
    // Along the rows: y = s · A, four output pixels per tile.
    for (i, line) in dst.chunks_mut(width).enumerate() {
        let s_i: [&[f32]; SIDE] = std::array::from_fn(|k| &s[(i * SIDE + k) * cols..][..cols]);
        let tile = |t: usize| output_column(std::array::from_fn(|k| s_i[k][t]));
        let (pixels, last) = line.as_chunks_mut::<4>();
        for (t, pixel) in pixels.iter_mut().enumerate() {
            *pixel = tile(t);
        }
        if !last.is_empty() {
            let values = tile(cols - 1);
            last.copy_from_slice(&values[..last.len()]);
        }
    }
}
