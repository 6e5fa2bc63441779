//! The fast CPU path: on the Flex backend, [`ConvBlock`]s run through the `cpu-conv` kernels
//! (Winograd F(4x4, 3x3) or F(2x2, 3x3) for 3x3 stride-1 convolutions on larger maps; on
//! small maps with AVX-512, the output channels in the vector lanes; the tap-wise indirect
//! product for the other 3x3 ones, im2col for the rest, all with micro-kernels over weights
//! packed once and bias, SiLU and a residual block's shortcut fused, parallel over output
//! tiles)
//! on the Flex tensors' own storage, without layout conversions, and read the parts of a
//! channel concatenation in place; SPPF's max-pools and the detection head's DFL decoding and
//! sigmoid run as plain vectorised loops. Convolutions that an INT8 plan names
//! ([`super::int8`]) run through the integer kernels instead. Each function returns `None` where it does not
//! apply (other backends, grouped convolutions), and the caller takes Burn's operations.
//!
//! [`ConvBlock`]: super::layers::ConvBlock

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use burn::backend::flex::FlexTensor;
use burn::backend::{DispatchDevice, Flex};
use burn::module::ParamId;
use burn::tensor::{DType, Tensor, TensorData};
use cpu_conv::{
    Activation, ChannelBlockedWeights, ConvParams, DepthwiseParams, Epilogue, FeatureMap,
    Int8ConvParams, Int8Output, PackedWeights, QuantizedMap, QuantizedWeights, UpsampledPart,
    WinogradTile, WinogradWeights,
};
use rayon::prelude::*;

use super::layers::{ConvBlock, Parts};
use super::profile::timed_layer;
use super::{ImageLevels, awake, int8, profile};

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` with the fast path switched on or off for this thread (forward passes run on the
/// calling thread).
pub(crate) fn with_fast_path<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    let before = ENABLED.replace(enabled);
    let out = f();
    ENABLED.set(before);
    out
}

/// What a forward pass keeps per thread, carried to the threads that run its branches side
/// by side (see [`branches_side_by_side`]).
#[derive(Clone)]
pub(crate) struct BranchContext {
    int8_plan: Option<Arc<int8::Int8Plan>>,
}

impl BranchContext {
    /// Runs `f`, a branch of the pass, on this thread with the pass's settings.
    pub(crate) fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        int8::with_plan(self.int8_plan.clone(), f)
    }
}

/// Whether independent branches of the network that read `x` (the detection head's box and
/// class chains) may run side by side on rayon's pool, and with what: on the fast path, with
/// `x` on the Flex backend and nothing recorded on this thread. The INT8 plan goes with each
/// branch; the rest of what the pass keeps per thread (this switch, a calibration's
/// recorder, an operation profile) then has its default on every thread.
pub(crate) fn branches_side_by_side(x: &Tensor<4>) -> Option<BranchContext> {
    let allowed = ENABLED.get() && is_flex(x) && !int8::is_recording() && !profile::is_recording();
    allowed.then(|| BranchContext {
        int8_plan: int8::current_plan(),
    })
}

/// Whether `tensor` lives on the Flex backend.
fn is_flex(tensor: &Tensor<4>) -> bool {
    matches!(tensor.device().as_dispatch(), DispatchDevice::Flex(_))
}

/// A Flex tensor whose images are each a dense `[C, H, W]` block, with those blocks' offsets.
struct DenseImages {
    tensor: FlexTensor,
    offsets: Vec<usize>,
}

impl DenseImages {
    fn new(tensor: Tensor<4>) -> Option<Self> {
        let flex = tensor.try_into_primitive::<Flex>().ok()?;
        if flex.dtype() != DType::F32 {
            return None;
        }
        let flex = if per_image_dense(&flex) {
            flex
        } else {
            flex.to_contiguous()
        };
        let layout = flex.layout();
        let (start, batch_stride) = (layout.start_offset(), layout.strides()[0]);
        let offsets = (0..layout.shape()[0])
            .map(|b| (start as isize + b as isize * batch_stride) as usize)
            .collect();
        Some(Self {
            tensor: flex,
            offsets,
        })
    }

    fn image(&self, b: usize, image_len: usize) -> &[f32] {
        let start = self.offsets[b];
        &self.tensor.storage::<f32>()[start..start + image_len]
    }
}

/// `tensor`'s Flex primitive, made contiguous (`None` off the Flex backend).
fn contiguous_flex<const D: usize>(tensor: &Tensor<D>) -> Option<FlexTensor> {
    Some(
        tensor
            .clone()
            .try_into_primitive::<Flex>()
            .ok()?
            .to_contiguous(),
    )
}

/// The elements of a contiguous f32 tensor, in order.
fn dense_f32(t: &FlexTensor) -> Option<&[f32]> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let (start, end) = t.layout().contiguous_offsets()?;
    Some(&t.storage::<f32>()[start..end])
}

fn per_image_dense(t: &FlexTensor) -> bool {
    let layout = t.layout();
    let shape = layout.shape();
    let strides = layout.strides();
    strides[3] == 1
        && strides[2] == shape[3] as isize
        && strides[1] == (shape[2] * shape[3]) as isize
        && strides[0] >= 0
}

/// Stride-1 "same" max-pool of `x` with an odd `kernel` (YOLO's SPPF), on the fast path.
pub(crate) fn max_pool(x: &Tensor<4>, kernel: usize) -> Option<Tensor<4>> {
    if !ENABLED.get() || !is_flex(x) || kernel.is_multiple_of(2) {
        return None;
    }
    let shape = x.dims();
    let flex = contiguous_flex(x)?;
    let input = dense_f32(&flex)?;
    let mut out = vec![0.0f32; input.len()];
    let [b, c, h, w] = shape;
    cpu_conv::max_pool_same(input, b * c, h, w, kernel, &mut out);
    Some(to_tensor(out, shape))
}

/// Nearest-neighbour upsampling of `x` by `scale` on the fast path (Burn's interpolation
/// took 0.6 ms of an INT8 forward pass at 640).
pub(crate) fn upsample_nearest(x: &Tensor<4>, scale: usize) -> Option<Tensor<4>> {
    if !ENABLED.get() || !is_flex(x) || scale == 0 {
        return None;
    }
    let [b, c, h, w] = x.dims();
    let flex = contiguous_flex(x)?;
    let input = dense_f32(&flex)?;
    let len = input.len() * scale * scale;
    let mut out = Vec::with_capacity(len);
    cpu_conv::upsample_nearest(
        input,
        b * c,
        h,
        w,
        scale,
        &mut out.spare_capacity_mut()[..len],
    );
    // SAFETY: the upsampling wrote all `len` values.
    unsafe { out.set_len(len) };
    Some(to_tensor(out, [b, c, h * scale, w * scale]))
}

/// YOLO11's multi-head self-attention on the fast path: `qkv` is `[B, heads, 2 * key_dim +
/// head_dim, N]` (each head's queries, keys and values over the map's `N` positions); the
/// result is `[B, heads, head_dim, N]`, the values weighted by the softmax of the scaled
/// query-key products.
pub(crate) fn attention(
    qkv: &Tensor<4>,
    (key_dim, head_dim): (usize, usize),
    scale: f32,
) -> Option<Tensor<4>> {
    if !ENABLED.get() || !is_flex(qkv) {
        return None;
    }
    let [batch, heads, rows, positions] = qkv.dims();
    if rows != 2 * key_dim + head_dim {
        return None;
    }
    let flex = contiguous_flex(qkv)?;
    let input = dense_f32(&flex)?;
    let shape = cpu_conv::AttentionShape {
        heads: batch * heads,
        key_dim,
        head_dim,
        positions,
    };
    let mut out = vec![0.0f32; batch * heads * head_dim * positions];
    cpu_conv::attention(input, shape, scale, &mut out);
    Some(to_tensor(out, [batch, heads, head_dim, positions]))
}

/// The detection head's output `[B, 4 + nc, N]` from each level's box logits
/// `[B, 4 * reg_max, n_l]` and class logits `[B, nc, n_l]` (levels in order, `N` the sum of
/// their `n_l`): DFL expectation, distances to `cx, cy, w, h` around each anchor `(xs, ys)`
/// scaled by its stride, and sigmoid scores. The levels are read where they are, not
/// concatenated first (at 640 that copy alone moved 4.8 MB per image); the boxes and the
/// scores of an image are made side by side, the scores straight from the logits into the
/// output.
pub(crate) fn decode_head(
    box_levels: &[Tensor<3>],
    class_levels: &[Tensor<3>],
    anchors: [&[f32]; 3],
    reg_max: usize,
) -> Option<Tensor<3>> {
    let on_flex = |t: &Tensor<3>| matches!(t.device().as_dispatch(), DispatchDevice::Flex(_));
    if !ENABLED.get() || !box_levels.iter().chain(class_levels).all(on_flex) {
        return None;
    }
    let [batch, _, _] = box_levels.first()?.dims();
    let classes = class_levels.first()?.dims()[1];
    let box_tensors: Vec<FlexTensor> = box_levels
        .iter()
        .map(contiguous_flex)
        .collect::<Option<_>>()?;
    let class_tensors: Vec<FlexTensor> = class_levels
        .iter()
        .map(contiguous_flex)
        .collect::<Option<_>>()?;
    let boxes: Vec<&[f32]> = box_tensors.iter().map(dense_f32).collect::<Option<_>>()?;
    let scores: Vec<&[f32]> = class_tensors.iter().map(dense_f32).collect::<Option<_>>()?;
    // Each level's anchors: (first anchor, count).
    let mut levels = Vec::with_capacity(box_levels.len());
    let mut n = 0;
    for level in box_levels {
        let count = level.dims()[2];
        levels.push((n, count));
        n += count;
    }
    let rows = 4 + classes;
    let len = batch * rows * n;
    // Not zeroed: every value is written below (the clearing took 0.1-0.2 ms at 640).
    let mut out: Vec<f32> = Vec::with_capacity(len);
    for (b, image) in out.spare_capacity_mut()[..len]
        .chunks_exact_mut(rows * n)
        .enumerate()
    {
        let (box_rows, score_rows) = image.split_at_mut(4 * n);
        let image_boxes = ImageBoxes {
            logits: &boxes,
            levels: &levels,
            image: b,
            reg_max,
            anchors,
        };
        rayon::join(
            || image_boxes.decode(box_rows),
            || {
                score_rows
                    .par_chunks_mut(n)
                    .enumerate()
                    .for_each(|(class, row)| {
                        for (&(first, count), level) in levels.iter().zip(&scores) {
                            let logits = &level[(b * classes + class) * count..][..count];
                            cpu_conv::sigmoid_into(logits, &mut row[first..first + count]);
                        }
                    })
            },
        );
    }
    // SAFETY: each image's box and score rows were all written above.
    unsafe { out.set_len(len) };
    let flex = FlexTensor::from_data(TensorData::new(out, [batch, rows, n]));
    Some(Tensor::from_primitive::<Flex>(flex))
}

/// Anchors whose DFL bins are exponentiated and summed together: their `reg_max` rows of
/// logits (16 KiB for 16 bins) stay in the core's L1 cache from the copy to the sums.
const DFL_ANCHORS_PER_JOB: usize = 256;

/// One image's box logits, level by level, and what decoding them needs.
struct ImageBoxes<'a> {
    /// Each level's `[B, 4 * reg_max, n_l]` logits.
    logits: &'a [&'a [f32]],
    /// Each level's first anchor and anchor count.
    levels: &'a [(usize, usize)],
    image: usize,
    reg_max: usize,
    /// Every anchor's centre `x`, `y` and stride.
    anchors: [&'a [f32]; 3],
}

impl ImageBoxes<'_> {
    /// Writes the `[4, n]` box rows (`cx, cy, w, h`): runs of [`DFL_ANCHORS_PER_JOB`] anchors
    /// of a level run in parallel, each taking the DFL expectation of its anchors' four sides
    /// and writing their boxes (a level's side as one job copied 400 KiB of logits at 640, and
    /// four such jobs carried three quarters of the work).
    fn decode(&self, rows: &mut [MaybeUninit<f32>]) {
        let n = rows.len() / 4;
        let mut rest: [&mut [MaybeUninit<f32>]; 4] = {
            let (cx, rest) = rows.split_at_mut(n);
            let (cy, rest) = rest.split_at_mut(n);
            let (w, h) = rest.split_at_mut(n);
            [cx, cy, w, h]
        };
        // (the level's logits, the run's first anchor in the level, its first anchor in the
        // image, its anchors' four rows)
        let mut jobs = Vec::with_capacity(n.div_ceil(DFL_ANCHORS_PER_JOB) + self.levels.len());
        for (&(first, count), logits) in self.levels.iter().zip(self.logits) {
            let size = 4 * self.reg_max * count;
            let level = &logits[self.image * size..][..size];
            for start in (0..count).step_by(DFL_ANCHORS_PER_JOB) {
                let anchors = DFL_ANCHORS_PER_JOB.min(count - start);
                let outs = rest.each_mut().map(|row| {
                    let (run, tail) = std::mem::take(row).split_at_mut(anchors);
                    *row = tail;
                    run
                });
                jobs.push((level, start, first + start, outs));
            }
        }
        jobs.into_par_iter()
            .for_each(|(level, start, anchor, outs)| self.decode_run(level, start, anchor, outs));
    }

    /// The boxes (into the `cx`, `cy`, `w` and `h` rows given) of `cx.len()` anchors from
    /// anchor `start` of a level (`level`, its logits), anchor `anchor` of the image: each
    /// side's distance is the expected bin of the softmax over its `reg_max` logits.
    fn decode_run(
        &self,
        level: &[f32],
        start: usize,
        anchor: usize,
        [cx, cy, w, h]: [&mut [MaybeUninit<f32>]; 4],
    ) {
        let (reg_max, anchors) = (self.reg_max, cx.len());
        let count = level.len() / (4 * reg_max);
        let mut distances = [[0.0f32; DFL_ANCHORS_PER_JOB]; 4];
        let mut bins = Vec::with_capacity(reg_max * anchors);
        for (side, dist) in distances.iter_mut().enumerate() {
            let side_logits = &level[side * reg_max * count..][..reg_max * count];
            bins.clear();
            for k in 0..reg_max {
                bins.extend_from_slice(&side_logits[k * count + start..][..anchors]);
            }
            cpu_conv::exp_minus_column_max(&mut bins, anchors);
            let mut total = [0.0f32; DFL_ANCHORS_PER_JOB];
            let (total, dist) = (&mut total[..anchors], &mut dist[..anchors]);
            for (k, row) in bins.chunks_exact(anchors).enumerate() {
                for ((t, d), &e) in total.iter_mut().zip(dist.iter_mut()).zip(row) {
                    *t += e;
                    *d += k as f32 * e;
                }
            }
            dist.iter_mut().zip(total.iter()).for_each(|(d, t)| *d /= t);
        }
        let [xs, ys, strides] = self.anchors.map(|a| &a[anchor..anchor + anchors]);
        for i in 0..anchors {
            let [left, top, right, bottom] = std::array::from_fn(|side| distances[side][i]);
            let (x1, y1, x2, y2) = (xs[i] - left, ys[i] - top, xs[i] + right, ys[i] + bottom);
            cx[i].write((x1 + x2) / 2.0 * strides[i]);
            cy[i].write((y1 + y2) / 2.0 * strides[i]);
            w[i].write((x2 - x1) * strides[i]);
            h[i].write((y2 - y1) * strides[i]);
        }
    }
}

fn to_tensor(data: Vec<f32>, shape: [usize; 4]) -> Tensor<4> {
    Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(data, shape)))
}

/// A convolution's weights rearranged for the fast path (Winograd-transformed for 3x3
/// stride-1 convolutions on larger maps, packed for the micro-kernels otherwise), made on
/// the first forward and kept with the block. Keyed by the weight parameter's id, so a block
/// whose weights are replaced remakes it.
#[derive(Clone, Debug, Default)]
pub struct PreparedWeights(Arc<Mutex<Option<Prepared>>>);

/// Rearranged weights and the parameter they were made from.
type Prepared = (ParamId, Arc<ConvWeights>);

/// The layout a convolution's weights are kept in.
#[derive(Debug)]
enum ConvWeights {
    Winograd(WinogradWeights),
    Packed(PackedWeights),
    ChannelBlocked(ChannelBlockedWeights),
    /// `[channels, kernel, kernel]` as they are.
    Depthwise(Vec<f32>),
    /// Quantised per output channel for the INT8 kernels.
    Int8(QuantizedWeights),
}

/// Which of the [`ConvWeights`] layouts a convolution runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Winograd(WinogradTile),
    Packed,
    ChannelBlocked,
    Depthwise,
    Int8,
}

impl ConvWeights {
    fn layout(&self) -> Layout {
        match self {
            ConvWeights::Winograd(weights) => Layout::Winograd(weights.tile()),
            ConvWeights::Packed(_) => Layout::Packed,
            ConvWeights::ChannelBlocked(_) => Layout::ChannelBlocked,
            ConvWeights::Depthwise(_) => Layout::Depthwise,
            ConvWeights::Int8(_) => Layout::Int8,
        }
    }
}

impl PreparedWeights {
    /// The weights made for parameter `id` in `layout`, made now by `make` if they are not
    /// there (`None` when `make` cannot).
    fn get(
        &self,
        id: ParamId,
        layout: Layout,
        make: impl FnOnce() -> Option<ConvWeights>,
    ) -> Option<Arc<ConvWeights>> {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match slot.as_ref() {
            Some((made_for, weights)) if *made_for == id && weights.layout() == layout => {
                Some(weights.clone())
            }
            _ => {
                let weights = Arc::new(make()?);
                *slot = Some((id, weights.clone()));
                Some(weights)
            }
        }
    }
}

/// Which Winograd tiling a 3x3 stride-1 convolution of `c_in -> c_out` channels on a
/// `height x width` map runs with, if any (`None`: the tap-wise indirect product).
///
/// F(4x4, 3x3) on maps of 64x64 and more with at least 16 x 16 channels: there a row of
/// tiles fills the transforms' 16 lanes. Timed alone (`cargo bench -p cpu-conv --bench conv
/// -- "winograd|taps"`, µs, taps / F(2x2) / F(4x4)): 16 -> 16 at 160x160 956 / 680 / 523,
/// 32 -> 32 at 80x80 775 / 571 / 425, 64 -> 80 at 80x80 3057 / 1760 / 1344, 80 -> 80 at
/// 80x80 3965 / 2147 / 1684; on 40x40 and smaller F(2x2) wins (64 -> 64 at 40x40 547 / 680,
/// 128 -> 128 at 20x20 694 / 790), and 16 -> 8 at 80x80 is a tie (125 / 130).
///
/// F(2x2, 3x3) on maps of 40x40 and more with at least 32 x 32 channels. Measured inside
/// whole forward passes (each layer timed in place, both choices in back-to-back runs of
/// `bench`, YOLOv8n at 640 and YOLO11n at 320, taps / Winograd in µs), which is not what
/// timing the layers alone says (there the input sits in cache, and Winograd won on 16 -> 8
/// at 80x80):
/// - Winograd: 32 -> 32 at 80x80 812 / 648, 64 -> 64 at 40x40 732 / 555 and 834 / 555,
///   80 -> 80 at 40x40 1157 / 843, 64 -> 64 at 80x80 2791 / 2014.
/// - Taps, fewer channels: 16 -> 8 at 80x80 158 / 250, 8 -> 16 at 80x80 185 / 187,
///   32 -> 16 at 40x40 148 / 147.
/// - Taps, smaller maps: at 20x20 neither wins by more than the runs differ (128 -> 128
///   780 / 755, 256 -> 64 785 / 931, 32 -> 64 153 / 124, 80 -> 80 345 / 365); at 10x10
///   64 -> 64 97 / 121, 256 -> 64 305 / 390.
fn winograd_tile(height: usize, width: usize, c_in: usize, c_out: usize) -> Option<WinogradTile> {
    let channels = c_in * c_out;
    if height >= 64 && width >= 64 && channels >= 16 * 16 {
        Some(WinogradTile::F4x4)
    } else if height * width >= 40 * 40 && channels >= 32 * 32 {
        Some(WinogradTile::F2x2)
    } else {
        None
    }
}

/// Whether a convolution that Winograd does not take runs channel-blocked (output channels
/// in the vector lanes, AVX-512 only) instead of tap-wise (3x3) or as a packed product (1x1),
/// which put output positions in the lanes: on outputs of 20x20 and smaller with at least 16
/// output channels, for 1x1 ones also at least 192 input channels.
///
/// Measured inside whole YOLO11n forward passes at 320 (each layer timed in place, the
/// choices in alternating runs of `bench`, three rounds, positions in the lanes /
/// channel-blocked in µs; the channel-blocked runs came last in each round, on a machine that
/// grew about 3 % faster through the rounds, as the unchanged layers show):
/// - 3x3 on outputs of 20x20 and 10x10, where a tap-wise row of 10 or 20 pixels is computed
///   12 or 22 wide and tiles end in masked tails: 64 -> 64 at 10x10 67-81 / 57-63,
///   256 -> 64 at 10x10 233-261 / 200-211, 32 -> 32 at 20x20 53-79 / 50-60, 128 -> 64 at
///   20x20 378-407 / 331-341; stride 2 to 10x10 128 -> 256 418-478 / 329-353 and 128 -> 128
///   258-274 / 220-223; stride 2 to 20x20 128 -> 128 690-858 / 617-667 and 64 -> 64 221-248
///   / 199-204.
/// - 3x3 on outputs of 40x40 and more, tap-wise (timed the same way before): 16 -> 32 at
///   40x40 113-119 / 124-132, the stem (stride 2 from 320x320) 404-405 / 562-567, 64 -> 64
///   stride 2 to 40x40 694-713 / 717-741, and 8 output channels (a block of 16 half padding)
///   16 -> 8 at 80x80 115-117 / 243-248.
/// - 1x1 on 10x10 and 20x20 with many input channels: 384 -> 256 at 10x10 134-148 /
///   109-122, 512 -> 256 at 10x10 170-199 / 139-147, 384 -> 128 at 20x20 244-275 / 216-223,
///   192 -> 128 at 20x20 126-151 / 119-137. With few input channels the transposed epilogue
///   outweighs the products: 64 -> 64 at 20x20 23-25 / 29-30, 80 -> 80 at 20x20 32-38 /
///   39-41, 128 -> 80 at 20x20 56-65 / 60-68.
fn channel_blocked(kernel: usize, c_in: usize, c_out: usize, out_pixels: usize) -> bool {
    let enough_depth = kernel == 3 || c_in >= 192;
    cpu_conv::channel_blocked_supported() && out_pixels <= 20 * 20 && c_out >= 16 && enough_depth
}

/// `block` applied to the channel concatenation of `parts`, with `residual` (the output's
/// shape) added to its output, on the fast path; `None` when the tensors are not on the Flex
/// backend or the block is a grouped convolution other than a depthwise one.
pub(crate) fn forward(
    block: &ConvBlock,
    parts: &[Tensor<4>],
    residual: Option<&Tensor<4>>,
) -> Option<Tensor<4>> {
    let [c_out, c_in_per_group, kernel, _] = block.weight.dims();
    let depthwise = block.groups == c_out && c_in_per_group == 1;
    if !ENABLED.get()
        || (block.groups != 1 && !depthwise)
        || !parts.iter().chain(residual).all(is_flex)
    {
        return None;
    }
    let [batch, _, height, width] = parts[0].dims();
    let (out_h, out_w) = cpu_conv::output_size(height, width, kernel, block.stride, block.padding);
    let out_len = c_out * out_h * out_w;
    let images = dense_parts(parts)?;
    let residual = residual_images(residual, [batch, c_out, out_h, out_w])?;
    let bias = contiguous_bias(block)?;
    let bias = dense_f32(&bias)?;
    let activation = activation_of(block);
    let epilogue = |b: usize| Epilogue {
        bias,
        activation,
        residual: residual.as_ref().map(|r| r.image(b, out_len)),
    };
    let int8_input = int8::planned(block.weight.id).filter(|_| !depthwise);
    let layout = if depthwise {
        Layout::Depthwise
    } else if int8_input.is_some() {
        Layout::Int8
    } else {
        f32_layout(block, (height, width), out_h * out_w)
    };
    let weights = prepared_weights(block, layout)?;
    awake::keep_awake();
    let inputs_of = |b: usize| image_maps(&images, b, height * width);
    // Calibration records on this thread (its recorder is thread-local).
    for b in 0..batch {
        int8::observe(block.weight.id, &inputs_of(b));
    }
    let convolve = |b: usize, out_image: &mut [MaybeUninit<f32>]| {
        let inputs = inputs_of(b);
        match weights.as_ref() {
            ConvWeights::Int8(quantized) => {
                let input_params = int8_input.expect("INT8 weights only where planned");
                let input = QuantizedMap::quantize(&inputs, height * width, input_params);
                let params = int8_params(block, quantized, epilogue(b));
                cpu_conv::conv2d_int8(&input, height, width, &params, Int8Output::Float(out_image))
            }
            ConvWeights::Winograd(transformed) => cpu_conv::conv3x3_winograd(
                &inputs,
                height,
                width,
                transformed,
                &epilogue(b),
                out_image,
            ),
            ConvWeights::ChannelBlocked(blocked) => cpu_conv::conv_channel_blocked(
                &inputs,
                (height, width),
                blocked,
                block.stride,
                &epilogue(b),
                out_image,
            ),
            ConvWeights::Depthwise(weight) => {
                let params = DepthwiseParams {
                    weight,
                    kernel,
                    stride: block.stride,
                    padding: block.padding,
                    epilogue: epilogue(b),
                };
                cpu_conv::depthwise_conv2d(&inputs, height, width, &params, out_image)
            }
            ConvWeights::Packed(packed) => {
                let params = ConvParams {
                    weight: packed,
                    kernel,
                    stride: block.stride,
                    padding: block.padding,
                    epilogue: epilogue(b),
                };
                // 3x3 convolutions that Winograd does not take: tap-wise (stride 2: 1.3x to
                // 1.6x faster than im2col on YOLOv8n's and YOLO11n's downsampling layers at
                // 80x80 and 20x20, even on the stem).
                if kernel == 3 && block.padding == 1 && matches!(block.stride, 1 | 2) {
                    cpu_conv::conv3x3_taps(&inputs, height, width, &params, out_image)
                } else {
                    cpu_conv::conv2d(&inputs, height, width, &params, out_image)
                }
            }
        }
    };
    Some(convolve_images([batch, c_out, out_h, out_w], convolve))
}

/// `block` applied to frames given as their byte levels, on the fast path: a 3x3
/// convolution (padding 1, stride 1 or 2, one group) that runs tap-wise in f32 reads the
/// levels as `level / 255` while it makes its padded copy
/// ([`cpu_conv::conv3x3_taps_levels`]), which gives exactly its output on the values. `None`
/// for other blocks and layouts (INT8, Winograd, channel-blocked), off the Flex backend, or
/// while a calibration records the inputs' values.
pub(crate) fn forward_levels(block: &ConvBlock, levels: &ImageLevels) -> Option<Tensor<4>> {
    let [c_out, c_in, kernel, _] = block.weight.dims();
    let [batch, channels, height, width] = levels.shape;
    let tap_wise = kernel == 3 && block.padding == 1 && matches!(block.stride, 1 | 2);
    let (out_h, out_w) = cpu_conv::output_size(height, width, kernel, block.stride, block.padding);
    if !ENABLED.get()
        || !matches!(levels.device.as_dispatch(), DispatchDevice::Flex(_))
        || !tap_wise
        || block.groups != 1
        || c_in != channels
        || int8::is_recording()
        || int8::planned(block.weight.id).is_some()
        || f32_layout(block, (height, width), out_h * out_w) != Layout::Packed
    {
        return None;
    }
    let weights = prepared_weights(block, Layout::Packed)?;
    let ConvWeights::Packed(packed) = weights.as_ref() else {
        return None;
    };
    let bias = contiguous_bias(block)?;
    let params = ConvParams {
        weight: packed,
        kernel,
        stride: block.stride,
        padding: block.padding,
        epilogue: Epilogue::new(dense_f32(&bias)?, activation_of(block)),
    };
    awake::keep_awake();
    let image_len = channels * height * width;
    Some(convolve_images([batch, c_out, out_h, out_w], |b, out| {
        let image = &levels.levels[b * image_len..][..image_len];
        cpu_conv::conv3x3_taps_levels(image, channels, (height, width), &params, out)
    }))
}

/// Each of `parts` as dense images, with its channels.
fn dense_parts(parts: &[Tensor<4>]) -> Option<Vec<(DenseImages, usize)>> {
    parts
        .iter()
        .map(|p| Some((DenseImages::new(p.clone())?, p.dims()[1])))
        .collect()
}

/// `residual` as dense images, checked to have `shape`: `Some(None)` without a residual,
/// `None` when it is not a Flex f32 tensor.
///
/// # Panics
/// When its shape is not `shape`.
fn residual_images(residual: Option<&Tensor<4>>, shape: [usize; 4]) -> Option<Option<DenseImages>> {
    match residual {
        None => Some(None),
        Some(residual) => {
            assert_eq!(residual.dims(), shape, "residual shape");
            DenseImages::new(residual.clone()).map(Some)
        }
    }
}

/// Image `b` of each of `parts` (as [`dense_parts`] gives them), planes of `plane` values.
fn image_maps(parts: &[(DenseImages, usize)], b: usize, plane: usize) -> Vec<FeatureMap<'_>> {
    parts
        .iter()
        .map(|(images, channels)| FeatureMap {
            data: images.image(b, channels * plane),
            channels: *channels,
        })
        .collect()
}

/// The f32 layout a convolution with one group runs with on a `height x width` input with
/// `out_pixels` output pixels: Winograd, channel-blocked or packed.
fn f32_layout(block: &ConvBlock, (height, width): (usize, usize), out_pixels: usize) -> Layout {
    let [c_out, c_in, kernel, _] = block.weight.dims();
    let same_padding = block.padding == kernel / 2;
    if let Some(tile) = (kernel == 3 && block.stride == 1 && same_padding)
        .then(|| winograd_tile(height, width, c_in, c_out))
        .flatten()
    {
        Layout::Winograd(tile)
    } else if matches!((kernel, block.stride), (3, 1 | 2) | (1, 1))
        && same_padding
        && channel_blocked(kernel, c_in, c_out, out_pixels)
    {
        Layout::ChannelBlocked
    } else {
        Layout::Packed
    }
}

/// The `shape` output of a convolution that `convolve(b, out)` computes image by image, each
/// writing every value of its image's `out`.
fn convolve_images(
    shape: [usize; 4],
    convolve: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Tensor<4> {
    let [batch, c_out, out_h, out_w] = shape;
    let out_len = c_out * out_h * out_w;
    // Not zeroed: the convolutions write every element (clearing the layers' outputs first
    // took 4 % of an INT8 forward pass).
    let mut out: Vec<f32> = Vec::with_capacity(batch * out_len);
    // The images of a batch side by side: on small maps one image's convolution leaves the
    // pool's threads waiting at its joins, and other images' work fills those waits.
    out.spare_capacity_mut()[..batch * out_len]
        .par_chunks_exact_mut(out_len)
        .enumerate()
        .for_each(|(b, out_image)| convolve(b, out_image));
    // SAFETY: each image's convolution above wrote all `out_len` values of its chunk.
    unsafe { out.set_len(batch * out_len) };
    to_tensor(out, shape)
}

/// `block`, a 1x1 convolution, applied to the concatenation of `parts` whose first part is
/// still to be upsampled, on the fast path. In f32 that part's product is computed before
/// the upsampling (`cpu_conv::conv1x1_upsampled`); in INT8 the part is quantised before it
/// and its quads upsampled (`QuantizedMap::quantize_upsampled`), which needs its channels in
/// whole quads. `None` where `parts` has no such part, for another kernel, or while a
/// calibration records the inputs' values; the caller then upsamples first.
pub(crate) fn forward_upsampled(block: &ConvBlock, parts: &Parts) -> Option<Tensor<4>> {
    let scale = parts.first_scale;
    let [c_out, _, kernel, _] = block.weight.dims();
    let plain_1x1 = kernel == 1 && block.stride == 1 && block.padding == 0 && block.groups == 1;
    if scale < 2
        || !plain_1x1
        || !ENABLED.get()
        || int8::is_recording()
        || !parts.tensors.iter().all(is_flex)
    {
        return None;
    }
    let (low, rest) = parts.tensors.split_first()?;
    let [batch, c_low, low_h, low_w] = low.dims();
    let (height, width) = (low_h * scale, low_w * scale);
    let int8_input = int8::planned(block.weight.id);
    if int8_input.is_some() && !c_low.is_multiple_of(4) {
        return None;
    }
    let layout = match int8_input {
        Some(_) => Layout::Int8,
        None => f32_layout(block, (height, width), height * width),
    };
    let low = DenseImages::new(low.clone())?;
    let rest = dense_parts(rest)?;
    let bias = contiguous_bias(block)?;
    let bias = dense_f32(&bias)?;
    let epilogue = Epilogue::new(bias, activation_of(block));
    let weights = prepared_weights(block, layout)?;
    awake::keep_awake();
    let convolve = |b: usize, out_image: &mut [MaybeUninit<f32>]| {
        let upsampled = UpsampledPart {
            map: FeatureMap {
                data: low.image(b, c_low * low_h * low_w),
                channels: c_low,
            },
            height: low_h,
            width: low_w,
            scale,
        };
        let rest = image_maps(&rest, b, height * width);
        match weights.as_ref() {
            ConvWeights::Int8(quantized) => {
                let input_params = int8_input.expect("INT8 weights only where planned");
                let input = QuantizedMap::quantize_upsampled(&upsampled, &rest, input_params);
                let params = int8_params(block, quantized, epilogue);
                let out_image = Int8Output::Float(out_image);
                cpu_conv::conv2d_int8(&input, height, width, &params, out_image)
            }
            ConvWeights::ChannelBlocked(blocked) => cpu_conv::conv1x1_channel_blocked_upsampled(
                &upsampled, &rest, blocked, &epilogue, out_image,
            ),
            ConvWeights::Packed(packed) => {
                let params = ConvParams {
                    weight: packed,
                    kernel,
                    stride: 1,
                    padding: 0,
                    epilogue,
                };
                cpu_conv::conv1x1_upsampled(&upsampled, &rest, &params, out_image)
            }
            _ => unreachable!("a 1x1 convolution's weights are INT8, channel-blocked or packed"),
        }
    };
    Some(convolve_images([batch, c_out, height, width], convolve))
}

/// The block's bias as a contiguous Flex tensor.
fn contiguous_bias(block: &ConvBlock) -> Option<FlexTensor> {
    let bias = block.bias.val().try_into_primitive::<Flex>().ok()?;
    Some(bias.to_contiguous())
}

fn activation_of(block: &ConvBlock) -> Activation {
    if block.act {
        Activation::Silu
    } else {
        Activation::Identity
    }
}

/// The block's weights in `layout`, made on first use and kept with the block.
fn prepared_weights(block: &ConvBlock, layout: Layout) -> Option<Arc<ConvWeights>> {
    let [c_out, c_in, kernel, _] = block.weight.dims();
    block.prepared.get(block.weight.id, layout, || {
        let weight = block.weight.val().try_into_primitive::<Flex>().ok()?;
        let weight = weight.to_contiguous();
        let weight = dense_f32(&weight)?;
        Some(match layout {
            Layout::Depthwise => ConvWeights::Depthwise(weight.to_vec()),
            Layout::Int8 => ConvWeights::Int8(QuantizedWeights::new(weight, c_out, c_in, kernel)),
            Layout::Winograd(tile) => {
                ConvWeights::Winograd(WinogradWeights::new(weight, c_out, c_in, tile))
            }
            Layout::Packed => {
                ConvWeights::Packed(PackedWeights::new(weight, c_out, c_in * kernel * kernel))
            }
            Layout::ChannelBlocked => {
                ConvWeights::ChannelBlocked(ChannelBlockedWeights::new(weight, c_out, c_in, kernel))
            }
        })
    })
}

fn int8_params<'a>(
    block: &ConvBlock,
    weight: &'a QuantizedWeights,
    epilogue: Epilogue<'a>,
) -> Int8ConvParams<'a> {
    Int8ConvParams {
        weight,
        stride: block.stride,
        padding: block.padding,
        epilogue,
    }
}

/// How many of `convs`, from the first, run in INT8 one after another (ungrouped, in the
/// plan), outside calibration.
pub(crate) fn int8_run(convs: &[&ConvBlock]) -> usize {
    if !ENABLED.get() || int8::is_recording() {
        return 0;
    }
    convs
        .iter()
        .take_while(|c| c.groups == 1 && int8::planned(c.weight.id).is_some())
        .count()
}

/// `convs` (an [`int8_run`]) applied one after another to `x` on the fast path, each
/// handing its output to the next as quantised quads: the producer's epilogue quantises
/// with the consumer's input parameters, so no f32 map is written and read back between
/// them. The last one's output is f32, with `residual` (its shape) added in its epilogue.
/// `None` where `x` or `residual` is not a Flex tensor.
pub(crate) fn forward_int8_chain(
    convs: &[&ConvBlock],
    x: &Tensor<4>,
    residual: Option<&Tensor<4>>,
) -> Option<Tensor<4>> {
    if convs.is_empty() || !std::iter::once(x).chain(residual).all(is_flex) {
        return None;
    }
    let [batch, c_in, mut height, mut width] = x.dims();
    let images = DenseImages::new(x.clone())?;
    // Each convolution's weights, bias and input quantisation.
    let mut layers = Vec::with_capacity(convs.len());
    for conv in convs {
        let weights = prepared_weights(conv, Layout::Int8)?;
        layers.push((
            weights,
            contiguous_bias(conv)?,
            int8::planned(conv.weight.id)?,
        ));
    }
    let plane = height * width;
    awake::keep_awake();
    // The first convolution's input, quantised inside its timing as `forward` does.
    let quantize_input = || -> Vec<QuantizedMap> {
        (0..batch)
            .into_par_iter()
            .map(|b| {
                let input = FeatureMap {
                    data: images.image(b, c_in * plane),
                    channels: c_in,
                };
                QuantizedMap::quantize(&[input], plane, layers[0].2)
            })
            .collect()
    };
    let mut maps = Vec::new();
    let mut out = Vec::new();
    for (i, (conv, (weights, bias, _))) in convs.iter().zip(&layers).enumerate() {
        let ConvWeights::Int8(weights) = weights.as_ref() else {
            return None;
        };
        let epilogue = Epilogue::new(dense_f32(bias)?, activation_of(conv));
        let params = int8_params(conv, weights, epilogue);
        let [c_out, _, kernel, _] = conv.weight.dims();
        let (in_h, in_w) = (height, width);
        (height, width) = cpu_conv::output_size(in_h, in_w, kernel, conv.stride, conv.padding);
        match layers.get(i + 1) {
            Some(&(_, _, next_input)) => {
                let convolve = || {
                    let inputs = if i == 0 { quantize_input() } else { maps };
                    inputs
                        .par_iter()
                        .map(|map| {
                            cpu_conv::conv2d_int8_quantized(map, in_h, in_w, &params, next_input)
                        })
                        .collect()
                };
                maps = timed_layer(conv.op_kind(), convolve, |_| {
                    Some(conv.layer_label((height, width)))
                });
            }
            None => {
                let residual = residual_images(residual, [batch, c_out, height, width])?;
                let out_len = c_out * height * width;
                out.reserve_exact(batch * out_len);
                let inputs = std::mem::take(&mut maps);
                let label = |_: &()| Some(conv.layer_label((height, width)));
                let convolve = || {
                    let inputs = if i == 0 { quantize_input() } else { inputs };
                    out.spare_capacity_mut()[..batch * out_len]
                        .par_chunks_exact_mut(out_len)
                        .zip(&inputs)
                        .enumerate()
                        .for_each(|(b, (out_image, map))| {
                            let residual = residual.as_ref().map(|r| r.image(b, out_len));
                            let params = Int8ConvParams {
                                epilogue: Epilogue {
                                    residual,
                                    ..epilogue
                                },
                                ..params
                            };
                            let out_image = Int8Output::Float(out_image);
                            cpu_conv::conv2d_int8(map, in_h, in_w, &params, out_image)
                        })
                };
                timed_layer(conv.op_kind(), convolve, label);
                // SAFETY: each image's convolution above wrote all `out_len` values of
                // its chunk.
                unsafe { out.set_len(batch * out_len) };
            }
        }
    }
    let c_out = convs[convs.len() - 1].weight.dims()[0];
    Some(to_tensor(out, [batch, c_out, height, width]))
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Device, Distribution, Tensor};
    use cpu_conv::QuantParams;

    use super::super::layers::decode_boxes;
    use super::super::network::AnchorGrid;
    use super::*;

    fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), device)
    }

    fn block(c_in: usize, c_out: usize, kernel: usize, stride: usize, act: bool) -> ConvBlock {
        let device = Device::flex();
        ConvBlock {
            weight: Param::from_tensor(random([c_out, c_in, kernel, kernel], &device)),
            bias: Param::from_tensor(Tensor::random(
                [c_out],
                Distribution::Uniform(-1.0, 1.0),
                &device,
            )),
            stride,
            padding: kernel / 2,
            groups: 1,
            act,
            prepared: Default::default(),
        }
    }

    /// A branch run side by side on another thread sees the pass's INT8 plan (without it the
    /// head's convolutions there would quietly run in f32).
    #[test]
    fn branches_on_other_threads_keep_the_int8_plan() {
        let conv = block(4, 4, 3, 1, true);
        let quant = QuantParams::covering(-1.0, 1.0);
        let plan = Arc::new(int8::Int8Plan::from([(conv.weight.id, quant)]));
        let x = random([1, 4, 8, 8], &Device::flex());
        let context = int8::with_plan(Some(plan), || branches_side_by_side(&x))
            .expect("branches run side by side on the fast path");
        let seen = std::thread::scope(|s| {
            s.spawn(|| context.run(|| int8::planned(conv.weight.id)))
                .join()
                .expect("branch thread")
        });
        assert_eq!(seen, Some(quant));
        assert!(
            profile::record(|| branches_side_by_side(&x)).0.is_none(),
            "an operation profile keeps the branches on the recording thread"
        );
    }

    /// Largest difference between the fast path and Burn's `conv2d` (+ SiLU), relative to
    /// `1 + |value|`: Winograd F(4x4, 3x3)'s rounding error grows with the values' size.
    fn max_difference(block: &ConvBlock, parts: Vec<Tensor<4>>) -> f32 {
        let fast = with_fast_path(true, || forward(block, &parts, None)).expect("fast path taken");
        let stock = with_fast_path(false, || block.forward_parts(parts.into()));
        let scale = stock.clone().abs().add_scalar(1.0);
        fast.sub(stock).abs().div(scale).max().into_scalar()
    }

    #[test]
    fn matches_burn_conv2d_on_yolo_shapes() {
        let device = Device::flex();
        // (c_in, c_out, kernel, stride, size, activation): stem, downsampling, bottleneck,
        // 1x1 projection, detection-head output (no activation), odd sizes.
        let cases = [
            (3, 16, 3, 2, 64, true),
            (16, 32, 3, 2, 33, true),
            (16, 16, 3, 1, 40, true),
            (32, 32, 3, 1, 40, true),
            (16, 24, 3, 1, 66, true),
            (48, 32, 1, 1, 20, true),
            (64, 80, 1, 1, 10, false),
            (7, 5, 3, 1, 9, true),
        ];
        for (c_in, c_out, k, s, size, act) in cases {
            let conv = block(c_in, c_out, k, s, act);
            let x = random([2, c_in, size, size], &device);
            let diff = max_difference(&conv, vec![x]);
            assert!(diff < 1e-4, "{c_in}->{c_out} {k}x{k}/{s} @{size}: {diff}");
        }
    }

    #[test]
    fn each_image_of_a_batch_gets_exactly_what_it_gets_alone() {
        let device = Device::flex();
        // Packed 1x1, tap-wise 3x3 (small map, stride 2) and Winograd 3x3 (large map).
        for (c_in, c_out, k, s, size) in [(16, 24, 1, 1, 12), (8, 16, 3, 2, 20), (8, 8, 3, 1, 48)] {
            let conv = block(c_in, c_out, k, s, true);
            let x = random([3, c_in, size, size], &device);
            let batched = forward(&conv, std::slice::from_ref(&x), None).expect("fast path taken");
            for b in 0..3 {
                let alone =
                    forward(&conv, &[x.clone().narrow(0, b, 1)], None).expect("fast path taken");
                let image = batched.clone().narrow(0, b, 1);
                let context = format!("{c_in}->{c_out} {k}x{k}/{s} @{size}, image {b}");
                assert!(identical(image, alone), "{context}");
            }
        }
    }

    #[test]
    fn reads_concatenation_parts_and_channel_views_in_place() {
        let device = Device::flex();
        let conv = block(24, 16, 1, 1, true);
        // The two halves of a split are strided views for a batch of 2.
        let halves = random([2, 16, 12, 12], &device).chunk(2, 1);
        let extra = random([2, 8, 12, 12], &device);
        let parts = vec![halves[0].clone(), halves[1].clone(), extra];
        assert!(max_difference(&conv, parts) < 1e-4);
    }

    #[test]
    fn folds_an_upsampled_first_part_into_a_1x1_convolution() {
        let device = Device::flex();
        // YOLO11n's neck at 320 (384 -> 128 at 20x20, channel-blocked with AVX-512) and a
        // smaller YOLOv8n neck (192 -> 64 at 24x24, packed), two images each.
        for (c_low, c_rest, c_out, low_size) in [(256, 128, 128, 10), (128, 64, 64, 12)] {
            let conv = block(c_low + c_rest, c_out, 1, 1, true);
            let parts = Parts {
                tensors: vec![
                    random([2, c_low, low_size, low_size], &device),
                    random([2, c_rest, 2 * low_size, 2 * low_size], &device),
                ],
                first_scale: 2,
            };
            let folded = with_fast_path(true, || forward_upsampled(&conv, &parts));
            let folded = folded.expect("a 1x1 convolution folds the upsampling");
            let stock = with_fast_path(false, || conv.forward_parts(parts));
            let diff: f32 = folded.sub(stock).abs().max().into_scalar();
            assert!(diff < 1e-4, "{c_low} + {c_rest} -> {c_out}: {diff}");
        }
        // INT8: the part's quads upsampled give exactly what the upsampled map quantised gives.
        let conv = block(64 + 32, 48, 1, 1, true);
        let parts = Parts {
            tensors: vec![
                random([2, 64, 6, 5], &device),
                random([2, 32, 12, 10], &device),
            ],
            first_scale: 2,
        };
        let plan: int8::Int8Plan = [(conv.weight.id, QuantParams::covering(-0.4, 1.5))].into();
        let (folded, made) = int8::with_plan(Some(Arc::new(plan)), || {
            let folded = forward_upsampled(&conv, &parts).expect("an INT8 1x1 folds too");
            (
                folded,
                forward(&conv, &parts.clone().made(), None).expect("fast path taken"),
            )
        });
        assert!(
            identical(folded, made),
            "INT8 with the upsampled part's quads"
        );
        // A 3x3 convolution reads the upsampled map; so does a part at its size.
        let conv = block(12, 8, 3, 1, true);
        let low = random([1, 8, 5, 5], &device);
        let rest = random([1, 4, 10, 10], &device);
        let parts = Parts {
            tensors: vec![low, rest],
            first_scale: 2,
        };
        assert!(forward_upsampled(&conv, &parts).is_none());
        let at_size = Parts::from(parts.made());
        assert!(forward_upsampled(&block(12, 8, 1, 1, true), &at_size).is_none());
    }

    #[test]
    fn max_pool_matches_burn() {
        use burn::tensor::module::max_pool2d;
        use burn::tensor::ops::MaxPoolOptions;
        let x = random([2, 3, 11, 9], &Device::flex());
        let options = MaxPoolOptions::new([5, 5])
            .with_stride([1, 1])
            .with_padding([2, 2]);
        let stock = max_pool2d(x.clone(), options);
        let fast = max_pool(&x, 5).expect("fast path taken");
        assert_eq!(fast.sub(stock).abs().max().into_scalar::<f32>(), 0.0);
    }

    #[test]
    fn upsampling_matches_burn() {
        use burn::tensor::module::interpolate;
        use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
        let x = random([2, 3, 5, 7], &Device::flex());
        let options = InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([10, 14]);
        let stock = interpolate(x.clone(), options);
        let fast = upsample_nearest(&x, 2).expect("fast path taken");
        assert_eq!(fast.dims(), stock.dims());
        assert_eq!(fast.sub(stock).abs().max().into_scalar::<f32>(), 0.0);
    }

    #[test]
    fn depthwise_convolutions_match_burn() {
        let device = Device::flex();
        for (channels, stride, size) in [(8, 1, 10), (16, 2, 13)] {
            let mut depthwise = block(1, channels, 3, stride, true);
            depthwise.groups = channels;
            let x = random([2, channels, size, size], &device);
            let diff = max_difference(&depthwise, vec![x]);
            assert!(
                diff < 1e-5,
                "depthwise {channels} /{stride} @{size}: {diff}"
            );
        }
    }

    /// Whether `got` and `want` hold the same values, bit for bit.
    fn identical(got: Tensor<4>, want: Tensor<4>) -> bool {
        got.dims() == want.dims() && got.equal(want).all().into_scalar()
    }

    /// A residual given to a convolution comes out added to exactly what the convolution
    /// gives without it, in every layout a bottleneck's convolution may take (batch of two,
    /// so each image gets its own residual): Winograd, channel-blocked, tap-wise, a 1x1
    /// read in place, depthwise, and INT8.
    #[test]
    fn a_residual_is_added_in_every_layout() {
        let device = Device::flex();
        let mut depthwise = block(1, 16, 3, 1, true);
        depthwise.groups = 16;
        let int8_conv = block(16, 16, 3, 1, true);
        let plan = int8::Int8Plan::from([(int8_conv.weight.id, QuantParams::covering(-1.0, 1.0))]);
        let cases = [
            (block(16, 16, 3, 1, true), 40),
            (block(64, 64, 3, 1, true), 10),
            (block(7, 7, 3, 1, true), 9),
            (block(48, 32, 1, 1, false), 20),
            (depthwise, 13),
            (int8_conv, 20),
        ];
        int8::with_plan(Some(Arc::new(plan)), || {
            for (conv, size) in &cases {
                let [c_out, c_in, ..] = conv.weight.dims();
                let c_in = if conv.groups > 1 { c_out } else { c_in };
                let x = random([2, c_in, *size, *size], &device);
                let residual = random([2, c_out, *size, *size], &device);
                let fused = forward(conv, std::slice::from_ref(&x), Some(&residual))
                    .expect("fast path taken");
                let plain = forward(conv, &[x], None).expect("fast path taken");
                assert!(
                    identical(fused, plain + residual),
                    "{c_in} -> {c_out} @{size}"
                );
            }
        });
    }

    /// A chain of INT8 convolutions handing quantised maps on gives exactly what the same
    /// convolutions give one by one (each quantising the previous one's f32 output): a
    /// head branch (3x3, 3x3, 1x1 without activation) and a stride-2 pair, batch of two.
    /// With a residual, the chain's output is that plus the residual.
    #[test]
    fn int8_chain_hands_on_exactly_what_the_convolutions_give_one_by_one() {
        let device = Device::flex();
        let chains = [
            vec![
                block(16, 24, 3, 1, true),
                block(24, 24, 3, 1, true),
                block(24, 10, 1, 1, false),
            ],
            vec![block(8, 13, 3, 2, true), block(13, 6, 1, 1, true)],
        ];
        for convs in chains {
            let convs: Vec<&ConvBlock> = convs.iter().collect();
            let plan: int8::Int8Plan = convs
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        c.weight.id,
                        QuantParams::covering(-0.3 - 0.1 * i as f32, 2.0),
                    )
                })
                .collect();
            let x = random([2, convs[0].weight.dims()[1], 21, 19], &device);
            let outputs = int8::with_plan(Some(Arc::new(plan)), || {
                assert_eq!(int8_run(&convs), convs.len());
                let chained = forward_int8_chain(&convs, &x, None).expect("fast path taken");
                let one_by_one = convs.iter().fold(x.clone(), |y, conv| {
                    forward(conv, &[y], None).expect("fast path taken")
                });
                let residual = random(one_by_one.dims(), &device);
                let with_residual = forward_int8_chain(&convs, &x, Some(&residual));
                let with_residual = with_residual.expect("fast path taken");
                (chained, one_by_one, with_residual, residual)
            });
            let (chained, one_by_one, with_residual, residual) = outputs;
            assert!(
                identical(chained, one_by_one.clone()),
                "{} convolutions",
                convs.len()
            );
            assert!(
                identical(with_residual, one_by_one + residual),
                "{} convolutions with a residual",
                convs.len()
            );
        }
    }

    #[test]
    fn head_decode_over_levels_matches_burn_over_the_concatenation() {
        let device = Device::flex();
        let (batch, classes, reg_max) = (2, 5, 16);
        // Three levels, as YOLO's strides 8, 16 and 32 give: 24x24 and 12x12 anchors, whose
        // box rows are decoded in several runs, and 1x1.
        let sizes = [(24usize, 8.0f32), (12, 16.0), (1, 32.0)];
        let logits = |rows: usize, n: usize| {
            Tensor::<3>::random([batch, rows, n], Distribution::Uniform(-4.0, 4.0), &device)
        };
        let boxes: Vec<Tensor<3>> = sizes
            .iter()
            .map(|&(s, _)| logits(4 * reg_max, s * s))
            .collect();
        let scores: Vec<Tensor<3>> = sizes.iter().map(|&(s, _)| logits(classes, s * s)).collect();
        let mut grid = AnchorGrid::default();
        for &(size, stride) in &sizes {
            grid.add_level(size, size, stride);
        }
        let anchors = [&grid.xs[..], &grid.ys[..], &grid.strides[..]];
        let fast = decode_head(&boxes, &scores, anchors, reg_max).expect("fast path taken");
        let n = grid.xs.len();
        let (anchors, strides) = grid.into_tensors(&device);
        let stock = Tensor::cat(
            vec![
                decode_boxes(Tensor::cat(boxes, 2), anchors, strides, reg_max),
                burn::tensor::activation::sigmoid(Tensor::cat(scores, 2)),
            ],
            1,
        );
        assert_eq!(fast.dims(), [batch, 4 + classes, n]);
        // Within 4 ulp of the output's scale: coordinates reach hundreds of pixels, where
        // one f32 ulp is 3e-5 to 6e-5, and the two decodes sum the distance distributions
        // in different orders (an absolute 1e-4 failed now and then at 1.2e-4, 2 ulp).
        let scale: f32 = stock.clone().abs().max().into_scalar();
        let diff: f32 = fast.sub(stock).abs().max().into_scalar();
        assert!(
            diff <= 4.0 * f32::EPSILON * scale,
            "{diff} at scale {scale}"
        );
    }

    #[test]
    fn grouped_convolutions_and_disabled_path_fall_back() {
        let device = Device::flex();
        let mut grouped = block(4, 8, 3, 1, true);
        grouped.groups = 2;
        let x = random([1, 8, 6, 6], &device);
        assert!(forward(&grouped, std::slice::from_ref(&x), None).is_none());
        let conv = block(8, 4, 3, 1, true);
        assert!(with_fast_path(false, || forward(&conv, &[x], None)).is_none());
    }
}
