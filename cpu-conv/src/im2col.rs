//! im2col for one tile of output positions: the input patches that a run of consecutive
//! output pixels reads, laid out as a `[channels * k * k, tile]` matrix.

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

impl Window {
    /// Writes the patches of output positions `start..start + len` (row-major over the
    /// output plane) of the `channels` planes in `input` into `block`, one row per
    /// `(channel, ky, kx)`.
    pub fn fill(
        &self,
        input: &[f32],
        channels: usize,
        start: usize,
        len: usize,
        block: &mut [f32],
    ) {
        let plane = self.height * self.width;
        let k = self.kernel;
        for c in 0..channels {
            let src = &input[c * plane..(c + 1) * plane];
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    self.fill_row(src, ky, kx, start, &mut block[row * len..(row + 1) * len]);
                }
            }
        }
    }

    /// One im2col row: input values under kernel tap `(ky, kx)` for each output position.
    fn fill_row(&self, src: &[f32], ky: usize, kx: usize, start: usize, row: &mut [f32]) {
        let mut filled = 0;
        while filled < row.len() {
            let pos = start + filled;
            let (oy, ox0) = (pos / self.out_width, pos % self.out_width);
            let run = (self.out_width - ox0).min(row.len() - filled);
            let out = &mut row[filled..filled + run];
            match (oy * self.stride + ky).checked_sub(self.padding) {
                Some(iy) if iy < self.height => {
                    self.fill_run(&src[iy * self.width..(iy + 1) * self.width], kx, ox0, out)
                }
                _ => out.fill(0.0),
            }
            filled += run;
        }
    }

    /// Output pixels `ox0..ox0 + out.len()` of one output row, reading input row `line`.
    fn fill_run(&self, line: &[f32], kx: usize, ox0: usize, out: &mut [f32]) {
        let s = self.stride;
        // Input column of output column `ox` is `ox * s + kx - padding`; find the output
        // columns whose input column lies inside the row.
        let first_valid = self.padding.saturating_sub(kx).div_ceil(s);
        let last_valid = (self.width + self.padding).saturating_sub(kx).div_ceil(s); // exclusive
        let lo = first_valid.clamp(ox0, ox0 + out.len());
        let hi = last_valid.clamp(lo, ox0 + out.len());
        out[..lo - ox0].fill(0.0);
        out[hi - ox0..].fill(0.0);
        let valid = &mut out[lo - ox0..hi - ox0];
        if valid.is_empty() {
            return;
        }
        let ix0 = lo * s + kx - self.padding;
        if s == 1 {
            valid.copy_from_slice(&line[ix0..ix0 + valid.len()]);
        } else {
            for (v, &x) in valid.iter_mut().zip(line[ix0..].iter().step_by(s)) {
                *v = x;
            }
        }
    }
}
