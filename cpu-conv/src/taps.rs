//! 3x3 convolutions with padding 1 and stride 1 or 2 as one indirect matrix product per
//! tile, read straight from a zero-padded copy of the input instead of an im2col matrix.
//!
//! Stride 1: with the input padded by one pixel on every side into planes `width + 2`
//! wide, output pixel `(y, x)` and tap `(ky, kx)` read padded pixel `(y + ky, x + kx)`.
//! Numbering the output on the padded width too (position `p = y * (width + 2) + x`), that
//! is padded value `p + ky * (width + 2) + kx`: for a run of consecutive positions, each
//! channel's tap reads a run of consecutive values at one fixed offset. The two extra
//! positions per row (`x = width, width + 1`) are computed and dropped.
//!
//! Stride 2: the padded input is split into its four phases (even or odd rows times even or
//! odd columns), each a plane `out_w + 1` wide. Output pixel `(y, x)` and tap `(ky, kx)`
//! read padded pixel `(2y + ky, 2x + kx)`, which is pixel `(y + ky / 2, x + kx / 2)` of
//! phase `(ky % 2, kx % 2)`: again a fixed offset per channel and tap for a run of
//! positions numbered on the phase width, with one extra position per row.
//!
//! So the whole convolution is the product of the `[c_out, c_in * 9]` weights (packed as
//! for im2col) with a matrix whose row `(ci, tap)` is the padded copy read from that
//! channel's and tap's offset: the micro-kernels take one offset per depth step
//! (`multiply_indirect_blocks`) and keep every output block in registers over all
//! `9 * c_in` steps. Nothing is gathered per tile, which is what im2col costs; the copy is
//! the size of the input.
//!
//! Where that copy would not stay in a core's cache, the output is computed in bands of
//! rows: each item copies just the input rows its band reads (every channel) and computes
//! all output channels of the band, so the copy is read back from the cache instead of
//! memory. Smaller inputs get one copy that every item reads, and their items may split
//! the output channels, which small maps need to keep every thread busy.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use crate::activation::Epilogue;
use crate::conv::{
    ConvParams, FeatureMap, ITEMS_PER_THREAD, SharedOut, WorkItem, WorkSplit, output_size,
};
use crate::im2col::deinterleave;
use crate::levels::PlaneValue;
use crate::packed::{MR, Rows, block_width, multiply_indirect_blocks};
use crate::scratch::{prefix, with_reused};

/// Taps of a 3x3 kernel.
pub(crate) const TAPS: usize = 9;

thread_local! {
    /// The calling thread's padded (and for stride 2, phase-split) copy of the input, for
    /// this path and the channel-blocked one (`direct.rs`), which reads the same copy.
    pub(crate) static PADDED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Each thread's product of one tile, `[c_out, tile]`.
    static PRODUCT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Where a stride's padded copy keeps each channel: `stride²` planes (one per row and
/// column phase) of `plane_height x plane_width` values per channel. Generic over the values
/// (f32, or the INT8 path's quads, padded with their zero point).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PaddedLayout {
    stride: usize,
    /// Output rows a copy covers: all of them, or a band's.
    rows: usize,
    plane_height: usize,
    plane_width: usize,
    height: usize,
    width: usize,
    out_h: usize,
    out_w: usize,
}

impl PaddedLayout {
    /// The layout for a 3x3, padding-1 convolution of `stride` (1 or 2) over a
    /// `height x width` input.
    ///
    /// # Panics
    /// When the stride is neither 1 nor 2.
    pub(crate) fn new(height: usize, width: usize, stride: usize) -> Self {
        assert!(matches!(stride, 1 | 2), "stride 1 or 2");
        let (out_h, out_w) = output_size(height, width, 3, stride, 1);
        // Taps reach `2 / stride` planes' rows and columns past an output's own.
        Self {
            stride,
            rows: out_h,
            plane_height: out_h + 2 / stride,
            plane_width: out_w + 2 / stride,
            height,
            width,
            out_h,
            out_w,
        }
    }

    /// The layout of a copy that covers `rows` output rows (a band) instead of all.
    pub(crate) fn for_band(self, rows: usize) -> Self {
        Self {
            rows,
            plane_height: rows + 2 / self.stride,
            ..self
        }
    }

    /// The output's height and width.
    pub(crate) fn out_size(&self) -> (usize, usize) {
        (self.out_h, self.out_w)
    }

    /// The position of output pixel `(y, x)`: where it reads in the copy, less each depth
    /// step's offset.
    pub(crate) fn position(&self, y: usize, x: usize) -> usize {
        y * self.plane_width + x
    }

    /// Output positions, numbered on the padded width (with the dropped extra columns).
    pub(crate) fn positions(&self) -> usize {
        self.out_h * self.plane_width
    }

    /// The positions of output rows `rows`.
    fn row_positions(&self, rows: &Range<usize>) -> Range<usize> {
        rows.start * self.plane_width..rows.end * self.plane_width
    }

    fn plane(&self) -> usize {
        self.plane_height * self.plane_width
    }

    fn channel(&self) -> usize {
        self.stride * self.stride * self.plane()
    }

    /// Where each depth step `(channel, tap)` of `channels` channels reads, for position 0,
    /// channel-major.
    pub(crate) fn offsets(&self, channels: usize) -> Vec<usize> {
        let s = self.stride;
        (0..channels)
            .flat_map(|c| {
                (0..TAPS).map(move |tap| {
                    let (ky, kx) = (tap / 3, tap % 3);
                    let phase = (ky % s) * s + kx % s;
                    c * self.channel() + phase * self.plane() + (ky / s) * self.plane_width + kx / s
                })
            })
            .collect()
    }

    /// The padded copy of `planes` (each `height x width`, [widened](PlaneValue::widened)) in
    /// `buffer`, with `pad` around them and in the slack past them that `offsets` (from
    /// [`Self::offsets`]) read for the last, dropped positions.
    pub(crate) fn copy<'a, S: PlaneValue<T> + Sync, T: Copy + Send + Sync>(
        &self,
        planes: &[&[S]],
        offsets: &[usize],
        pad: T,
        buffer: &'a mut Vec<T>,
    ) -> &'a [T] {
        let padded = self.slack_buffer(planes.len(), offsets, pad, buffer);
        let values: usize = planes.iter().map(|p| p.len()).sum();
        let channels = &mut padded[..planes.len() * self.channel()];
        // On this thread for the smallest maps: a fork costs more than it saves.
        if values < PARALLEL_COPY_VALUES {
            for (dst, src) in channels.chunks_exact_mut(self.channel()).zip(planes) {
                self.fill(src, dst, pad, 0);
            }
        } else {
            channels
                .par_chunks_exact_mut(self.channel())
                .zip(planes)
                .for_each(|(dst, src)| self.fill(src, dst, pad, 0));
        }
        padded
    }

    /// The padded copy of a band of output rows from `first_row` (this layout being the
    /// band's, [`Self::for_band`]) in `buffer`: the rows of `planes` it reads, with `pad`
    /// around them and in the slack `offsets` read past them.
    pub(crate) fn copy_band<'a, S: PlaneValue<T>, T: Copy>(
        &self,
        planes: &[&[S]],
        offsets: &[usize],
        (pad, first_row): (T, usize),
        buffer: &'a mut Vec<T>,
    ) -> &'a [T] {
        let padded = self.slack_buffer(planes.len(), offsets, pad, buffer);
        for (dst, src) in padded.chunks_exact_mut(self.channel()).zip(planes) {
            self.fill(src, dst, pad, first_row);
        }
        padded
    }

    /// `buffer` sized for `channels` channels of this layout and the slack past them that
    /// `offsets` read for the last, dropped positions, that slack set to `pad`.
    fn slack_buffer<'a, T: Copy>(
        &self,
        channels: usize,
        offsets: &[usize],
        pad: T,
        buffer: &'a mut Vec<T>,
    ) -> &'a mut [T] {
        let read_end = offsets
            .iter()
            .max()
            .map_or(0, |&o| o + self.rows * self.plane_width);
        let copied = channels * self.channel();
        let padded = prefix(buffer, copied.max(read_end), pad);
        padded[copied..].fill(pad);
        padded
    }

    /// Fills `dst` (one channel of this layout's `rows` output rows from output row
    /// `first_row`) from the `height x width` plane `src`, [widened](PlaneValue::widened)
    /// line by line.
    fn fill<S: PlaneValue<T>, T: Copy>(&self, src: &[S], dst: &mut [T], pad: T, first_row: usize) {
        let width = self.width;
        let mut widened = Vec::new();
        let line = |y: usize| (y < self.height).then(|| &src[y * width..][..width]);
        let plane = self.plane();
        let plane_width = self.plane_width;
        if self.stride == 1 {
            // Plane row `j` is padded row `first_row + j`, input row `first_row + j - 1`.
            for (j, row) in dst[..plane].chunks_exact_mut(plane_width).enumerate() {
                match (first_row + j).checked_sub(1).and_then(line) {
                    Some(values) => {
                        row[0] = pad;
                        row[1..=width].copy_from_slice(S::widened(values, &mut widened));
                        row[width + 1..].fill(pad);
                    }
                    None => row.fill(pad),
                }
            }
            return;
        }
        // Stride 2: each input line dealt out to the column phases of its row phase. Input
        // pixel `(y, x)` is padded pixel `(y + 1, x + 1)`, so it goes to phase
        // `((y + 1) % 2, (x + 1) % 2)` at `((y + 1) / 2, (x + 1) / 2)`; row `i` of this
        // copy's phase planes is their row `first_row + i`. Every value is written once:
        // the padding around the dealt-out pixels, and whole rows of it past the input.
        let (even, odd) = (width.div_ceil(2), width / 2);
        for i in 0..self.plane_height {
            for py in 0..2 {
                let row = |px: usize| (2 * py + px) * plane + i * plane_width;
                let (left, right) = dst.split_at_mut(row(1));
                let odd_columns = &mut left[row(0)..][..plane_width];
                let even_columns = &mut right[..plane_width];
                match (2 * (first_row + i) + py).checked_sub(1).and_then(line) {
                    Some(values) => {
                        let values = S::widened(values, &mut widened);
                        deinterleave(values, even_columns, &mut odd_columns[1..]);
                        odd_columns[0] = pad;
                        odd_columns[odd + 1..].fill(pad);
                        even_columns[even..].fill(pad);
                    }
                    None => {
                        odd_columns.fill(pad);
                        even_columns.fill(pad);
                    }
                }
            }
        }
    }

    /// The output pixels among a tile's positions `start..start + len`, as runs along an
    /// output row: `(offset in the tile, output pixel y * out_w + x, length)`.
    pub(crate) fn output_runs(
        &self,
        (start, len): (usize, usize),
    ) -> impl Iterator<Item = (usize, usize, usize)> + Clone {
        let (row_width, out_w) = (self.plane_width, self.out_w);
        let end = start + len;
        let mut p = start;
        std::iter::from_fn(move || {
            while p < end {
                let (y, x) = (p / row_width, p % row_width);
                let run = (row_width - x).min(end - p);
                let kept = run.min(out_w.saturating_sub(x));
                let at = p;
                p += run;
                if kept > 0 {
                    return Some((at - start, y * out_w + x, kept));
                }
            }
            None
        })
    }

    /// Output pixels per channel.
    pub(crate) fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Adds the bias, applies the activation and stores the output pixels of one tile, in one
    /// pass that skips the dropped positions: `product` holds a row of `len` positions from
    /// `start` for each of `channels`.
    ///
    /// # Safety
    /// `out` is the `[c_out, out_h, out_w]` output, whose pixels of `channels` at these
    /// positions no one else writes meanwhile.
    pub(crate) unsafe fn finish_tile(
        &self,
        product: &[f32],
        (start, len): (usize, usize),
        channels: Range<usize>,
        epilogue: &Epilogue,
        out: SharedOut,
    ) {
        for (co, row) in channels.zip(product.chunks_exact(len)) {
            for (offset, pixel, kept) in self.output_runs((start, len)) {
                let at = co * self.out_plane() + pixel;
                // SAFETY: output pixels `pixel..pixel + kept` of channel `co`, this caller's
                // alone, apart from the tile's `product`.
                unsafe {
                    let to = out.get().add(at);
                    epilogue.finish_into(&row[offset..offset + kept], to, co, at);
                }
            }
        }
    }
}

/// Copies the `[height, width]` `plane` into `padded` with a border of `pad.0` values
/// `pad.1` around it; whatever `padded` holds past the padded plane gets `pad.1` too.
pub(crate) fn pad_plane<T: Copy>(
    plane: &[T],
    [height, width]: [usize; 2],
    (border, value): (usize, T),
    padded: &mut [T],
) {
    let padded_width = width + 2 * border;
    let (top, rest) = padded.split_at_mut(border * padded_width);
    top.fill(value);
    let (rows, bottom) = rest.split_at_mut(height * padded_width);
    bottom.fill(value);
    for (line, src) in rows
        .chunks_exact_mut(padded_width)
        .zip(plane.chunks_exact(width))
    {
        line[..border].fill(value);
        line[border..border + width].copy_from_slice(src);
        line[border + width..].fill(value);
    }
}

/// Input values from which the padded copy is made in parallel: below, the fork and join
/// cost more than half the copy.
///
/// Inside a forward pass the other workers are kept awake (`streamtrack`'s `awake.rs`), so
/// a fork costs a few µs, while a serial copy leaves the other core idle: with the copy made
/// on one thread below 65 536 values, the other core waited through half of every small
/// 3x3 convolution of YOLO11n at 320. The input was mostly written by the other core, so
/// the copy runs at cross-core speed: 64 channels of 10x10 took 14-55 µs, 128 of 20x20 at
/// stride 2 70-320 µs (the range is the machine's phases). In place, alternating runs of
/// `bench yolo11n-coco-320.onnx` with layer timers: those copies took half as long from
/// 4 096 values on, and the 3x3 and 1x1 layers together 7-10 % less time.
const PARALLEL_COPY_VALUES: usize = 1 << 12;

/// Computes `activation(conv3x3(inputs, weights) + bias)` with padding 1 and stride 1 or 2
/// for one image into `out` (`[c_out, out_h, out_w]`). `inputs` are the channel blocks of
/// the input in order, all `height x width`.
///
/// # Panics
/// When a slice's length does not match the shapes given, or the kernel, stride or padding
/// is not one this path computes.
pub fn conv3x3_taps(
    inputs: &[FeatureMap],
    height: usize,
    width: usize,
    params: &ConvParams,
    out: &mut [MaybeUninit<f32>],
) {
    conv3x3_taps_in(inputs, height, width, params, out, Bands::new);
}

/// [`conv3x3_taps`] with bands chosen by `bands` from the whole copy's layout, the output
/// channels and the input channels.
fn conv3x3_taps_in(
    inputs: &[FeatureMap],
    height: usize,
    width: usize,
    params: &ConvParams,
    out: &mut [MaybeUninit<f32>],
    bands: impl FnOnce(&PaddedLayout, usize, usize) -> Option<Bands>,
) {
    assert!(
        params.kernel == 3 && params.padding == 1 && matches!(params.stride, 1 | 2),
        "3x3 kernel, padding 1, stride 1 or 2"
    );
    // Checks that each part holds its channels' planes; `convolve_planes` counts them.
    FeatureMap::channels_of(inputs, (height, width));
    let planes: Vec<&[f32]> = inputs
        .iter()
        .flat_map(|p| p.data.chunks_exact(height * width))
        .collect();
    convolve_planes(&planes, (height, width), params, out, bands);
}

/// Computes `activation(conv3x3(levels / 255, weights) + bias)` as [`conv3x3_taps`] does for
/// an image given as its `channels` planes of byte levels (`[channels, height, width]`):
/// each level is turned into the value `level / 255` ([`level_to_unit`]) as the padded copy
/// is made, so the output is exactly [`conv3x3_taps`]' on the image's f32 values, and the
/// image is read at a byte a value.
///
/// [`level_to_unit`]: crate::level_to_unit
///
/// # Panics
/// As for [`conv3x3_taps`].
pub fn conv3x3_taps_levels(
    levels: &[u8],
    channels: usize,
    (height, width): (usize, usize),
    params: &ConvParams,
    out: &mut [MaybeUninit<f32>],
) {
    assert_eq!(levels.len(), channels * height * width, "input shape");
    let planes: Vec<&[u8]> = levels.chunks_exact(height * width).collect();
    convolve_planes(&planes, (height, width), params, out, Bands::new);
}

/// The convolution of [`conv3x3_taps_in`] over the input's channel `planes`, widened to f32
/// as they are copied.
fn convolve_planes<S: PlaneValue<f32> + Sync>(
    planes: &[&[S]],
    (height, width): (usize, usize),
    params: &ConvParams,
    out: &mut [MaybeUninit<f32>],
    bands: impl FnOnce(&PaddedLayout, usize, usize) -> Option<Bands>,
) {
    let c_in = planes.len();
    let c_out = params.weight.rows();
    assert_eq!(params.weight.depth(), TAPS * c_in, "weight shape");
    let layout = PaddedLayout::new(height, width, params.stride);
    assert_eq!(
        out.len(),
        c_out * layout.out_h * layout.out_w,
        "output shape"
    );
    params.epilogue.check(c_out, out.len());
    if height == 0 || width == 0 || c_in == 0 {
        return;
    }
    let out = SharedOut::new(out);
    match bands(&layout, c_out, c_in) {
        Some(bands) => convolve_bands(planes, &layout, &bands, params, out),
        None => convolve_whole(planes, &layout, params, out),
    }
}

/// [`conv3x3_taps`] on one padded copy of the whole input, shared by every item: tiles of
/// positions times groups of output channels.
fn convolve_whole<S: PlaneValue<f32> + Sync>(
    planes: &[&[S]],
    layout: &PaddedLayout,
    params: &ConvParams,
    out: SharedOut,
) {
    let offsets = layout.offsets(planes.len());
    let c_out = params.weight.rows();
    with_reused(&PADDED, |buffer| {
        let padded = layout.copy(planes, &offsets, 0.0, buffer);
        let split = WorkSplit::new(
            layout.positions(),
            offsets.len(),
            c_out,
            block_width(),
            true,
        );
        split.for_each_item(
            &PRODUCT,
            |WorkItem {
                 columns,
                 blocks,
                 channels,
             },
             product| {
                let positions = columns.start..columns.end;
                // SAFETY: every offset plus the item's last position lies inside `padded`
                // (`PaddedLayout::copy`); the item's positions of its channels are its own,
                // and `out` outlives the parallel loop.
                unsafe {
                    let x = padded.as_ptr().add(positions.start);
                    let item = (blocks, channels, positions);
                    compute_item(layout, params, (x, &offsets), item, product, out);
                }
            },
        );
    });
}

/// [`conv3x3_taps`] band by band of output rows, each item making its own padded copy of
/// the input rows its band reads and computing every output channel of the band.
fn convolve_bands<S: PlaneValue<f32> + Sync>(
    planes: &[&[S]],
    layout: &PaddedLayout,
    bands: &Bands,
    params: &ConvParams,
    out: SharedOut,
) {
    let band_layout = layout.for_band(bands.max_rows());
    let offsets = band_layout.offsets(planes.len());
    let c_out = params.weight.rows();
    (0..bands.count).into_par_iter().for_each(|band| {
        let rows = bands.rows(band);
        with_reused(&PADDED, |buffer| {
            with_reused(&PRODUCT, |product| {
                let padded = band_layout.copy_band(planes, &offsets, (0.0, rows.start), buffer);
                let item = (0..c_out.div_ceil(MR), 0..c_out, layout.row_positions(&rows));
                // SAFETY: every offset plus the band's last position lies inside `padded`
                // (`PaddedLayout::copy_band`, for bands of up to `max_rows` rows); the
                // band's output rows are its own, and `out` outlives the loop.
                unsafe {
                    compute_item(
                        layout,
                        params,
                        (padded.as_ptr(), &offsets),
                        item,
                        product,
                        out,
                    )
                };
            })
        })
    });
}

/// One work item: output channels `channels` (the weights' row blocks `blocks`) at output
/// positions `positions`, the indirect product of the weights with the rows at `x` (the
/// first position's value in a padded copy) plus `offsets`, into `product`, then finished
/// into `out`.
///
/// # Safety
/// Every offset plus the item's last position lies inside the copy `x` points into; no one
/// else writes the item's output pixels meanwhile, and `out` outlives the call.
unsafe fn compute_item(
    layout: &PaddedLayout,
    params: &ConvParams,
    (x, offsets): (*const f32, &[usize]),
    (blocks, channels, positions): (Range<usize>, Range<usize>, Range<usize>),
    product: &mut Vec<f32>,
    out: SharedOut,
) {
    let (start, len) = (positions.start, positions.len());
    let product = prefix(product, channels.len() * len, 0.0);
    let rows = Rows {
        ptr: product.as_mut_ptr(),
        stride: len,
    };
    // SAFETY: the copy as the caller says; `product` holds a row of `len` for each of
    // `channels`.
    unsafe { multiply_indirect_blocks(params.weight, blocks, x, offsets, len, rows) };
    // SAFETY: the item's output pixels, as the caller says.
    unsafe { layout.finish_tile(product, (start, len), channels, &params.epilogue, out) };
}

/// Bytes of a band's padded copy and product together: within a core's L2 cache.
const BAND_BYTES: usize = 512 * 1024;

/// How [`convolve_bands`] splits the output rows, for an input whose whole padded copy
/// would not stay in cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bands {
    out_h: usize,
    pub(crate) count: usize,
}

impl Bands {
    /// The bands for a convolution of `c_in` channels to `c_out` in `layout`; `None` when the
    /// whole padded copy fits in [`BAND_BYTES`] (then items share one copy and may split the
    /// output channels, which small maps need to keep every thread busy).
    pub(crate) fn new(layout: &PaddedLayout, c_out: usize, c_in: usize) -> Option<Self> {
        let copy_bytes = 4 * c_in * layout.channel();
        if copy_bytes <= BAND_BYTES {
            return None;
        }
        let row_bytes = 4 * (c_in * layout.stride * layout.stride + c_out) * layout.plane_width;
        let for_cache = (layout.out_h * row_bytes).div_ceil(BAND_BYTES);
        let for_threads = ITEMS_PER_THREAD * rayon::current_num_threads();
        Some(Self {
            out_h: layout.out_h,
            count: for_cache.max(for_threads).min(layout.out_h),
        })
    }

    /// Output rows of band `band`: the rows shared out as evenly as they go.
    pub(crate) fn rows(&self, band: usize) -> Range<usize> {
        self.out_h * band / self.count..self.out_h * (band + 1) / self.count
    }

    /// Rows of the largest band.
    pub(crate) fn max_rows(&self) -> usize {
        self.out_h.div_ceil(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::{
        BANDED_3X3_SHAPES, YOLO_3X3_SHAPES, assert_adds_residual, max_difference_from_im2col,
        values, written,
    };
    use crate::{Activation, PackedWeights};
    use proptest::prelude::*;

    /// [`max_difference_from_im2col`] of the tap-wise path, its bands chosen by `bands` as
    /// [`conv3x3_taps_in`] takes them.
    fn max_difference_with(
        shape: [usize; 5],
        stride: usize,
        activation: Activation,
        bands: impl FnOnce(&PaddedLayout, usize, usize) -> Option<Bands>,
    ) -> f32 {
        let [c_in, _, c_out, h, w] = shape;
        max_difference_from_im2col(shape, stride, activation, |parts, weight, bias, out| {
            let packed = PackedWeights::new(weight, c_out, c_in * TAPS);
            let params = ConvParams {
                weight: &packed,
                kernel: 3,
                stride,
                padding: 1,
                epilogue: Epilogue::new(bias, activation),
            };
            conv3x3_taps_in(parts, h, w, &params, out, bands)
        })
    }

    /// [`max_difference_with`] the bands [`conv3x3_taps`] chooses.
    fn max_difference(shape: [usize; 5], stride: usize, activation: Activation) -> f32 {
        max_difference_with(shape, stride, activation, Bands::new)
    }

    #[test]
    fn yolo_shapes_match_the_im2col_path() {
        for (shape, act) in YOLO_3X3_SHAPES {
            for stride in [1, 2] {
                let diff = max_difference(shape, stride, act);
                assert!(diff < 1e-5, "{shape:?} stride {stride}: {diff}");
            }
        }
    }

    /// [`max_difference`] with the output rows in `count` bands.
    fn max_difference_in_bands(shape: [usize; 5], stride: usize, count: usize) -> f32 {
        max_difference_with(shape, stride, Activation::Silu, |layout, _, _| {
            Some(Bands {
                out_h: layout.out_h,
                count: count.min(layout.out_h),
            })
        })
    }

    #[test]
    fn large_maps_run_in_bands_that_match_the_im2col_path() {
        // Copies past `BAND_BYTES`: the stem's 3 channels at 320x240 and 16 channels at
        // 100x90, at stride 2 and 1.
        for (shape, stride) in BANDED_3X3_SHAPES {
            let [c_in, _, c_out, h, w] = shape;
            let layout = PaddedLayout::new(h, w, stride);
            assert!(Bands::new(&layout, c_out, c_in).is_some(), "{shape:?}");
            let diff = max_difference(shape, stride, Activation::Silu);
            assert!(diff < 1e-5, "{shape:?} stride {stride}: {diff}");
        }
    }

    /// An image's byte levels give exactly the output of its f32 values (`level / 255`), at
    /// both strides, from one shared copy and in bands.
    #[test]
    fn byte_levels_give_the_outputs_of_their_f32_values() {
        for ([c_in, c_out, h, w], stride, banded) in [
            ([3, 16, 40, 30], 2, false),
            ([3, 16, 41, 29], 1, false),
            ([3, 16, 320, 240], 2, true),
            ([3, 32, 241, 250], 1, true),
        ] {
            let levels: Vec<u8> = values(c_in * h * w, 4)
                .iter()
                .map(|v| ((v + 1.0) * 127.5) as u8)
                .collect();
            let x: Vec<f32> = levels.iter().map(|&l| crate::level_to_unit(l)).collect();
            let input = [FeatureMap {
                data: &x,
                channels: c_in,
            }];
            let packed = PackedWeights::new(&values(c_out * c_in * TAPS, 5), c_out, c_in * TAPS);
            let bias = values(c_out, 6);
            let params = ConvParams {
                weight: &packed,
                kernel: 3,
                stride,
                padding: 1,
                epilogue: Epilogue::new(&bias, Activation::Silu),
            };
            let layout = PaddedLayout::new(h, w, stride);
            assert_eq!(Bands::new(&layout, c_out, c_in).is_some(), banded);
            let (out_h, out_w) = layout.out_size();
            let len = c_out * out_h * out_w;
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let from_values = written(len, |out| conv3x3_taps(&input, h, w, &params, out));
            let from_levels = written(len, |out| {
                conv3x3_taps_levels(&levels, c_in, (h, w), &params, out)
            });
            assert_eq!(
                bits(from_levels),
                bits(from_values),
                "{c_in}x{h}x{w} stride {stride}"
            );
        }
    }

    #[test]
    fn a_residual_is_added_to_every_output() {
        // One shared copy, with the channels split among items at 10x10, and bands, at
        // strides 1 and 2.
        for ([c_in, c_out, h, w], stride) in [
            ([32, 48, 10, 10], 1),
            ([16, 24, 100, 90], 1),
            ([8, 40, 9, 7], 2),
            ([3, 16, 320, 240], 2),
        ] {
            let x = values(c_in * h * w, 1);
            let input = [FeatureMap {
                data: &x,
                channels: c_in,
            }];
            let packed = PackedWeights::new(&values(c_out * c_in * TAPS, 2), c_out, c_in * TAPS);
            let bias = values(c_out, 3);
            let (out_h, out_w) = PaddedLayout::new(h, w, stride).out_size();
            assert_adds_residual(c_out * out_h * out_w, &bias, Activation::Silu, |e, out| {
                let params = ConvParams {
                    weight: &packed,
                    kernel: 3,
                    stride,
                    padding: 1,
                    epilogue: *e,
                };
                conv3x3_taps(&input, h, w, &params, out)
            });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_shapes_in_bands_match_the_im2col_path(
            c_in in 1usize..12, split in 0usize..12, c_out in 1usize..20,
            h in 1usize..23, w in 1usize..23, stride in 1usize..3, count in 1usize..9,
        ) {
            let diff = max_difference_in_bands([c_in, split, c_out, h, w], stride, count);
            prop_assert!(diff < 1e-5, "{diff}");
        }

        #[test]
        fn random_shapes_match_the_im2col_path(
            c_in in 1usize..24, split in 0usize..24, c_out in 1usize..24,
            h in 1usize..23, w in 1usize..23, stride in 1usize..3, silu in any::<bool>(),
        ) {
            let act = if silu { Activation::Silu } else { Activation::Identity };
            let diff = max_difference([c_in, split, c_out, h, w], stride, act);
            prop_assert!(diff < 1e-5, "{diff}");
        }
    }
}
