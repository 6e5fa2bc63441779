//! im2col for one tile of output positions: the input patches that a run of consecutive
//! output pixels reads, laid out as a `[channels * k * k, tile]` matrix.
//!
//! Every kernel tap reads a run of consecutive input pixels for a run of consecutive output
//! pixels, so each row of the matrix is built from plain copies: with stride 1 from the
//! input itself, with stride `s` from its `s x s` phases ([`Window::phases`]: the planes of
//! every `s`-th row and column from each offset), made once per convolution instead of
//! gathering every `s`-th value per tap and tile.
//!
//! The element type is generic: f32 values, or the INT8 path's quads (four u8 channels in
//! a `u32`), padded with the input's zero point instead of 0.

use rayon::prelude::*;

/// Geometry of one convolution's sliding window over an input plane.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub height: usize,
    pub width: usize,
    pub out_width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// Where one kernel tap reads: plane `phase` of a channel, shifted by `(dy, dx)` from the
/// output pixel's position in it.
#[derive(Debug, Clone, Copy)]
struct Tap {
    phase: usize,
    dy: isize,
    dx: isize,
}

impl Window {
    /// Size of one phase plane (the input plane itself for stride 1).
    fn phase_size(&self) -> (usize, usize) {
        (
            self.height.div_ceil(self.stride),
            self.width.div_ceil(self.stride),
        )
    }

    /// The input as the taps read it: `input` itself for stride 1; for stride `s`, each of
    /// its `channels` planes as `s x s` phase planes, phase `(py, px)` holding input rows
    /// `py, py + s, …` and columns `px, px + s, …` (padded with `pad` to the common phase
    /// size).
    pub fn phases<'a, T: Copy + Send + Sync>(
        &self,
        input: &'a [T],
        channels: usize,
        pad: T,
    ) -> std::borrow::Cow<'a, [T]> {
        let s = self.stride;
        if s == 1 {
            return std::borrow::Cow::Borrowed(input);
        }
        let (ph, pw) = self.phase_size();
        let plane = self.height * self.width;
        let mut out = vec![pad; channels * s * s * ph * pw];
        out.par_chunks_exact_mut(s * s * ph * pw)
            .zip(input.par_chunks_exact(plane))
            .for_each(|(dst, src)| {
                // Phase row `r` of row phase `py` for every column phase at once: one pass
                // over each input line deals its values out to the `s` column phases.
                for (y, line) in src.chunks_exact(self.width).enumerate() {
                    let (py, r) = (y % s, y / s);
                    let rows = &mut dst[py * s * ph * pw..(py + 1) * s * ph * pw];
                    let mut phases: Vec<&mut [T]> = rows
                        .chunks_exact_mut(ph * pw)
                        .map(|phase| &mut phase[r * pw..(r + 1) * pw])
                        .collect();
                    deal(line, &mut phases);
                }
            });
        std::borrow::Cow::Owned(out)
    }

    /// Where tap `(ky, kx)` reads: input pixel `(oy * s + ky - padding, ox * s + kx -
    /// padding)` is pixel `(oy + dy, ox + dx)` of the phase of its offset's remainder.
    fn tap(&self, ky: usize, kx: usize) -> Tap {
        let s = self.stride as isize;
        let dy = ky as isize - self.padding as isize;
        let dx = kx as isize - self.padding as isize;
        Tap {
            phase: (dy.rem_euclid(s) * s + dx.rem_euclid(s)) as usize,
            dy: dy.div_euclid(s),
            dx: dx.div_euclid(s),
        }
    }

    /// Writes the patches of output positions `start..start + len` (row-major over the
    /// output plane) of the `channels` planes in `phased` (from [`Window::phases`]) into
    /// `block`, one row per `(channel, ky, kx)`; taps outside the input read `pad`.
    pub fn fill<T: Copy>(
        &self,
        phased: &[T],
        channels: usize,
        start: usize,
        len: usize,
        block: &mut [T],
        pad: T,
    ) {
        let (ph, pw) = self.phase_size();
        let k = self.kernel;
        let channel_len = self.stride * self.stride * ph * pw;
        for c in 0..channels {
            let channel = &phased[c * channel_len..(c + 1) * channel_len];
            for ky in 0..k {
                for kx in 0..k {
                    let tap = self.tap(ky, kx);
                    let plane = &channel[tap.phase * ph * pw..(tap.phase + 1) * ph * pw];
                    let row = (c * k + ky) * k + kx;
                    let out = &mut block[row * len..(row + 1) * len];
                    self.fill_row(plane, tap, start, out, pad);
                }
            }
        }
    }

    /// One im2col row: the values under `tap` for each output position.
    fn fill_row<T: Copy>(&self, plane: &[T], tap: Tap, start: usize, row: &mut [T], pad: T) {
        let (ph, pw) = self.phase_size();
        let mut filled = 0;
        while filled < row.len() {
            let pos = start + filled;
            let (oy, ox0) = (pos / self.out_width, pos % self.out_width);
            let run = (self.out_width - ox0).min(row.len() - filled);
            let out = &mut row[filled..filled + run];
            let iy = oy as isize + tap.dy;
            if (0..ph as isize).contains(&iy) {
                let line = &plane[iy as usize * pw..(iy as usize + 1) * pw];
                copy_shifted(line, ox0 as isize + tap.dx, out, pad);
            } else {
                out.fill(pad);
            }
            filled += run;
        }
    }
}

/// `phases[j][i] = line[i * s + j]` for the `s = phases.len()` phases, as far as `line`
/// goes.
fn deal<T: Copy>(line: &[T], phases: &mut [&mut [T]]) {
    match phases {
        [even, odd] => deinterleave(line, even, odd),
        _ => {
            let s = phases.len();
            for (i, &v) in line.iter().enumerate() {
                phases[i % s][i / s] = v;
            }
        }
    }
}

/// `even[i] = line[2i]` and `odd[i] = line[2i + 1]`, as far as `line` goes (the slices may
/// be longer; a slice shorter than its share panics): a loop the compiler vectorises.
pub(crate) fn deinterleave<T: Copy>(line: &[T], even: &mut [T], odd: &mut [T]) {
    let (pairs, last) = line.as_chunks::<2>();
    for ((e, o), &[a, b]) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
        *e = a;
        *o = b;
    }
    if let [a] = last {
        even[pairs.len()] = *a;
    }
}

/// `out[i] = line[first + i]`, `pad` where that index falls outside `line`.
fn copy_shifted<T: Copy>(line: &[T], first: isize, out: &mut [T], pad: T) {
    let len = out.len() as isize;
    let lo = (-first).clamp(0, len) as usize;
    let hi = (line.len() as isize - first).clamp(lo as isize, len) as usize;
    out[..lo].fill(pad);
    out[hi..].fill(pad);
    if hi > lo {
        let from = (first + lo as isize) as usize;
        out[lo..hi].copy_from_slice(&line[from..from + hi - lo]);
    }
}
