//! YOLO building blocks as Burn modules, built from an imported [`Architecture`] layer spec.
//!
//! Each block mirrors the Ultralytics module of the same name; batch norms are already fused
//! into the convolution weights by the export.
//!
//! [`Architecture`]: model_import::Architecture

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::module::{conv2d, interpolate, max_pool2d};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData};
use model_import::ConvWeights;

use super::ImageLevels;
use super::fast_cpu;
use super::profile::{OpKind, timed, timed_layer_if_some};
use model_import::architecture::{
    AttentionSpec, BottleneckSpec, ConvSpec, CspBlockSpec, PsaBlockSpec,
};

/// Where convolution weights come from: an imported ONNX file, or zeros to be overwritten by
/// a saved Burn record.
#[derive(Clone, Copy)]
pub enum WeightSource<'a> {
    Imported(&'a BTreeMap<String, ConvWeights>),
    Zeros,
}

/// Convolution with fused batch norm, optionally followed by SiLU (Ultralytics `Conv`).
#[derive(Module, Debug)]
pub struct ConvBlock {
    pub weight: Param<Tensor<4>>,
    pub bias: Param<Tensor<1>>,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub act: bool,
    /// The weights rearranged for the fast CPU path, made on first use.
    #[module(skip)]
    pub prepared: fast_cpu::PreparedWeights,
}

impl ConvBlock {
    /// Builds the convolution described by `spec`.
    pub fn new(spec: &ConvSpec, weights: WeightSource, device: &Device) -> Self {
        let shape = [
            spec.c_out,
            spec.c_in / spec.groups,
            spec.kernel,
            spec.kernel,
        ];
        let (weight, bias) = match weights {
            WeightSource::Imported(map) => {
                let w = &map[&spec.path];
                (w.weight.data.clone(), w.bias.clone())
            }
            WeightSource::Zeros => (vec![0.0; shape.iter().product()], vec![0.0; spec.c_out]),
        };
        Self {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(weight, shape), device)),
            bias: Param::from_tensor(Tensor::from_data(
                TensorData::new(bias, [spec.c_out]),
                device,
            )),
            stride: spec.stride,
            padding: spec.padding,
            groups: spec.groups,
            act: spec.act,
            prepared: Default::default(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_parts(vec![x].into())
    }

    /// The block applied to `x`, with `residual` (a residual block's shortcut) added to its
    /// output: on the fast CPU path in the convolution's epilogue, without a pass of its own.
    pub fn forward_residual(&self, x: Tensor<4>, residual: Tensor<4>) -> Tensor<4> {
        let parts = [x];
        let fused = self.timed_fast(|| fast_cpu::forward(self, &parts, Some(&residual)));
        let [x] = parts;
        fused.unwrap_or_else(|| add(residual, self.forward(x)))
    }

    /// The block applied to the channel concatenation of `parts`; the fast CPU path reads
    /// the parts in place instead of concatenating them first, and folds a first part's
    /// upsampling into a 1x1 convolution.
    pub fn forward_parts(&self, parts: Parts) -> Tensor<4> {
        if let Some(y) = self.timed_fast(|| fast_cpu::forward_upsampled(self, &parts)) {
            return y;
        }
        let parts = parts.made();
        if let Some(y) = self.timed_fast(|| fast_cpu::forward(self, &parts, None)) {
            return y;
        }
        let kind = self.op_kind();
        let x = concat(parts);
        let options = ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], self.groups);
        let y = timed(kind, || {
            conv2d(x, self.weight.val(), Some(self.bias.val()), options)
        });
        if self.act {
            timed(OpKind::Activation, || silu(y))
        } else {
            y
        }
    }

    /// The block applied to frames given as their byte levels (`level / 255`), on the fast
    /// CPU path; `None` where that path does not take the block (the caller then converts
    /// the levels to values).
    pub(crate) fn forward_levels(&self, levels: &ImageLevels) -> Option<Tensor<4>> {
        self.timed_fast(|| fast_cpu::forward_levels(self, levels))
    }

    /// `fast`, a fast CPU path of this block, timed as the block's operation type and named
    /// in the profile by its output.
    fn timed_fast(&self, fast: impl FnOnce() -> Option<Tensor<4>>) -> Option<Tensor<4>> {
        timed_layer_if_some(self.op_kind(), fast, |y| {
            let [_, _, height, width] = y.dims();
            Some(self.layer_label((height, width)))
        })
    }

    /// How the profile names this block with an output of `height x width`: its channels,
    /// kernel, stride and the arithmetic it runs in, e.g. `64->64 3x3/2 to 40x40 int8`.
    pub(crate) fn layer_label(&self, (height, width): (usize, usize)) -> String {
        let [c_out, c_in_per_group, k, _] = self.weight.dims();
        let c_in = c_in_per_group * self.groups;
        let stride = match self.stride {
            1 => String::new(),
            s => format!("/{s}"),
        };
        let grouping = if self.groups > 1 { " depthwise" } else { "" };
        let arithmetic = if fast_cpu::int8_run(&[self]) == 1 {
            "int8"
        } else {
            "f32"
        };
        format!("{c_in}->{c_out} {k}x{k}{stride}{grouping} to {height}x{width} {arithmetic}")
    }

    pub(crate) fn op_kind(&self) -> OpKind {
        let [_, _, k, _] = self.weight.dims();
        match (self.groups, k) {
            (g, _) if g > 1 => OpKind::ConvDepthwise,
            (_, 1) => OpKind::Conv1x1,
            _ => OpKind::Conv3x3,
        }
    }
}

/// `convs` applied one after another, where each output feeds only the next convolution,
/// with `residual` added to the last one's output. On the fast CPU path, consecutive INT8
/// convolutions hand their outputs on quantised, and the residual is added in the last
/// convolution's epilogue.
fn chain(convs: &[&ConvBlock], x: Tensor<4>, residual: Option<Tensor<4>>) -> Tensor<4> {
    let run = fast_cpu::int8_run(convs);
    let ends_chain = run == convs.len();
    if run >= 2
        && let Some(y) = fast_cpu::forward_int8_chain(
            &convs[..run],
            &x,
            residual.as_ref().filter(|_| ends_chain),
        )
    {
        return if ends_chain {
            y
        } else {
            chain(&convs[run..], y, residual)
        };
    }
    match (convs, residual) {
        ([], None) => x,
        ([], Some(residual)) => add(residual, x),
        ([last], Some(residual)) => last.forward_residual(x, residual),
        ([first, rest @ ..], residual) => chain(rest, first.forward(x), residual),
    }
}

/// The inputs of a layer that reads a channel concatenation, in order. The first may still
/// wait for the nearest-neighbour upsampling that YOLO's neck puts before a concatenation:
/// the fast CPU path computes a 1x1 convolution's product of that part before upsampling it
/// (a quarter of the work at scale 2), and everything else upsamples it first ([`made`]).
///
/// [`made`]: Parts::made
#[derive(Debug, Clone)]
pub struct Parts {
    pub tensors: Vec<Tensor<4>>,
    /// The factor the first part is still to be upsampled by (1: as it is).
    pub first_scale: usize,
}

impl From<Vec<Tensor<4>>> for Parts {
    fn from(tensors: Vec<Tensor<4>>) -> Self {
        Self {
            tensors,
            first_scale: 1,
        }
    }
}

impl Parts {
    /// The parts as the concatenation reads them, the first upsampled.
    pub fn made(mut self) -> Vec<Tensor<4>> {
        if self.first_scale > 1 {
            let first = self.tensors[0].clone();
            self.tensors[0] = upsample(first, self.first_scale);
        }
        self.tensors
    }
}

/// Nearest-neighbour upsampling of `x` by `scale`.
pub fn upsample(x: Tensor<4>, scale: usize) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    timed(OpKind::Upsample, || {
        fast_cpu::upsample_nearest(&x, scale).unwrap_or_else(|| {
            interpolate(
                x,
                InterpolateOptions::new(InterpolateMode::Nearest)
                    .with_output_size([h * scale, w * scale]),
            )
        })
    })
}

/// Channel concatenation (a no-op for one tensor).
pub fn concat(mut parts: Vec<Tensor<4>>) -> Tensor<4> {
    if parts.len() == 1 {
        return parts.pop().expect("one part");
    }
    timed(OpKind::SplitConcat, || Tensor::cat(parts, 1))
}

/// Channel split into two halves (views on every backend).
fn halves(x: Tensor<4>) -> Vec<Tensor<4>> {
    timed(OpKind::SplitConcat, || x.chunk(2, 1))
}

/// Channel split into the leading channels and the last `tail` (views on every backend).
fn split_tail(x: Tensor<4>, tail: usize) -> Vec<Tensor<4>> {
    let channels = x.dims()[1];
    timed(OpKind::SplitConcat, || {
        vec![
            x.clone().narrow(1, 0, channels - tail),
            x.narrow(1, channels - tail, tail),
        ]
    })
}

/// Residual addition.
fn add(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    timed(OpKind::Add, || a + b)
}

/// Two convolutions with an optional residual connection.
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub cv1: ConvBlock,
    pub cv2: ConvBlock,
    pub shortcut: bool,
}

impl Bottleneck {
    pub fn new(spec: &BottleneckSpec, weights: WeightSource, device: &Device) -> Self {
        Self {
            cv1: ConvBlock::new(&spec.cv1, weights, device),
            cv2: ConvBlock::new(&spec.cv2, weights, device),
            shortcut: spec.shortcut,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let residual = self.shortcut.then(|| x.clone());
        chain(&[&self.cv1, &self.cv2], x, residual)
    }
}

/// YOLO11 C3k: a CSP block with its own bottleneck chain.
#[derive(Module, Debug)]
pub struct C3k {
    pub cv1: ConvBlock,
    pub cv2: ConvBlock,
    pub cv3: ConvBlock,
    pub blocks: Vec<Bottleneck>,
}

impl C3k {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let a = self
            .blocks
            .iter()
            .fold(self.cv1.forward(x.clone()), |y, b| b.forward(y));
        self.cv3.forward_parts(vec![a, self.cv2.forward(x)].into())
    }
}

/// The inner block of a C2f / C3k2 layer (built once per model, so variant sizes do not
/// matter).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum CspInner {
    Bottleneck(Bottleneck),
    C3k(C3k),
}

impl CspInner {
    pub fn new(spec: &CspBlockSpec, weights: WeightSource, device: &Device) -> Self {
        match spec {
            CspBlockSpec::Bottleneck(b) => Self::Bottleneck(Bottleneck::new(b, weights, device)),
            CspBlockSpec::C3k {
                cv1,
                cv2,
                cv3,
                blocks,
            } => Self::C3k(C3k {
                cv1: ConvBlock::new(cv1, weights, device),
                cv2: ConvBlock::new(cv2, weights, device),
                cv3: ConvBlock::new(cv3, weights, device),
                blocks: blocks
                    .iter()
                    .map(|b| Bottleneck::new(b, weights, device))
                    .collect(),
            }),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::Bottleneck(b) => b.forward(x),
            Self::C3k(c) => c.forward(x),
        }
    }

    /// Channels the block reads.
    fn input_channels(&self) -> usize {
        match self {
            Self::Bottleneck(b) => b.cv1.weight.dims()[1],
            Self::C3k(c) => c.cv1.weight.dims()[1],
        }
    }
}

/// C2f (YOLOv8) and C3k2 (YOLO11): split, chain inner blocks, concatenate every stage.
#[derive(Module, Debug)]
pub struct Csp {
    pub cv1: ConvBlock,
    pub cv2: ConvBlock,
    pub blocks: Vec<CspInner>,
}

impl Csp {
    /// The block applied to the channel concatenation of `parts` (read in place by `cv1` on
    /// the fast CPU path).
    pub fn forward_parts(&self, parts: Parts) -> Tensor<4> {
        let y = self.cv1.forward_parts(parts);
        // The chain's share of cv1's channels: half, unless the layer was pruned unevenly.
        let mut parts = match self.blocks.first() {
            Some(first) => split_tail(y, first.input_channels()),
            None => halves(y),
        };
        for block in &self.blocks {
            let last = parts.last().expect("two halves").clone();
            parts.push(block.forward(last));
        }
        self.cv2.forward_parts(parts.into())
    }
}

/// Spatial pyramid pooling, fast variant: three chained stride-1 max-pools.
#[derive(Module, Debug)]
pub struct Sppf {
    pub cv1: ConvBlock,
    pub cv2: ConvBlock,
    pub pool: usize,
}

impl Sppf {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let options = MaxPoolOptions::new([self.pool; 2])
            .with_stride([1, 1])
            .with_padding([self.pool / 2; 2]);
        let mut parts = vec![self.cv1.forward(x)];
        for _ in 0..3 {
            let last = parts.last().expect("one part").clone();
            parts.push(timed(OpKind::MaxPool, || {
                fast_cpu::max_pool(&last, self.pool)
                    .unwrap_or_else(|| max_pool2d(last, options.clone()))
            }));
        }
        self.cv2.forward_parts(parts.into())
    }
}

/// Multi-head self-attention over all positions of a feature map, with a depth-wise
/// positional-encoding convolution on the values.
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: ConvBlock,
    pub proj: ConvBlock,
    pub pe: ConvBlock,
    pub num_heads: usize,
    pub key_dim: usize,
    pub head_dim: usize,
}

impl Attention {
    pub fn new(spec: &AttentionSpec, weights: WeightSource, device: &Device) -> Self {
        Self {
            qkv: ConvBlock::new(&spec.qkv, weights, device),
            proj: ConvBlock::new(&spec.proj, weights, device),
            pe: ConvBlock::new(&spec.pe, weights, device),
            num_heads: spec.num_heads,
            key_dim: spec.key_dim,
            head_dim: spec.head_dim,
        }
    }

    /// `x` plus its attention (the first residual of a PSA block), each addition in a
    /// convolution's epilogue on the fast CPU path.
    pub fn add_to(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let n = h * w;
        let (nh, kd, hd) = (self.num_heads, self.key_dim, self.head_dim);
        let qkv = self.qkv.forward(x.clone()).reshape([b, nh, 2 * kd + hd, n]);
        let v = qkv.clone().narrow(2, 2 * kd, hd);
        let scale = (kd as f32).powf(-0.5);
        let v_map = v.clone().reshape([b, c, h, w]);
        let attended = timed(OpKind::Attention, || {
            fast_cpu::attention(&qkv, (kd, hd), scale).unwrap_or_else(|| {
                let q = qkv.clone().narrow(2, 0, kd);
                let k = qkv.narrow(2, kd, kd);
                let attn = softmax(q.swap_dims(2, 3).matmul(k).mul_scalar(scale), 3);
                v.matmul(attn.swap_dims(2, 3))
            })
        })
        .reshape([b, c, h, w]);
        let mixed = self.pe.forward_residual(v_map, attended);
        self.proj.forward_residual(mixed, x)
    }
}

/// YOLO11 PSA block: attention then a two-layer feed-forward, both residual.
#[derive(Module, Debug)]
pub struct PsaBlock {
    pub attn: Attention,
    pub ffn0: ConvBlock,
    pub ffn1: ConvBlock,
}

impl PsaBlock {
    pub fn new(spec: &PsaBlockSpec, weights: WeightSource, device: &Device) -> Self {
        Self {
            attn: Attention::new(&spec.attn, weights, device),
            ffn0: ConvBlock::new(&spec.ffn[0], weights, device),
            ffn1: ConvBlock::new(&spec.ffn[1], weights, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.attn.add_to(x);
        chain(&[&self.ffn0, &self.ffn1], x.clone(), Some(x))
    }
}

/// YOLO11 C2PSA: attention on one half of the channels.
#[derive(Module, Debug)]
pub struct C2psa {
    pub cv1: ConvBlock,
    pub cv2: ConvBlock,
    pub blocks: Vec<PsaBlock>,
}

impl C2psa {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut parts = halves(self.cv1.forward(x));
        let b = parts.pop().expect("two halves");
        let b = self.blocks.iter().fold(b, |y, block| block.forward(y));
        parts.push(b);
        self.cv2.forward_parts(parts.into())
    }
}

/// A chain of convolutions (one head branch).
#[derive(Module, Debug)]
pub struct ConvChain {
    pub convs: Vec<ConvBlock>,
}

impl ConvChain {
    pub fn new(specs: &[ConvSpec], weights: WeightSource, device: &Device) -> Self {
        Self {
            convs: specs
                .iter()
                .map(|s| ConvBlock::new(s, weights, device))
                .collect(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        chain(&self.convs.iter().collect::<Vec<_>>(), x, None)
    }
}

/// Decodes one batch of head outputs: DFL expectation over `reg_max` bins, distances to
/// `xywh` boxes around anchor points, scaled by each anchor's stride.
///
/// `box_logits` is `[B, 4 * reg_max, N]`; `anchors` is `[2, N]` (x, y in grid cells);
/// `strides` is `[1, N]`. Returns `[B, 4, N]` boxes in input pixels.
pub fn decode_boxes(
    box_logits: Tensor<3>,
    anchors: Tensor<2>,
    strides: Tensor<2>,
    reg_max: usize,
) -> Tensor<3> {
    let [b, _, n] = box_logits.dims();
    let device = box_logits.device();
    let bins: Vec<f32> = (0..reg_max).map(|i| i as f32).collect();
    let bins = Tensor::<1>::from_data(TensorData::new(bins, [reg_max]), &device)
        .reshape([1, 1, reg_max, 1]);
    let probs = softmax(box_logits.reshape([b, 4, reg_max, n]), 2);
    let dist: Tensor<3> = (probs * bins).sum_dim(2).reshape([b, 4, n]);
    let lt = dist.clone().narrow(1, 0, 2);
    let rb = dist.narrow(1, 2, 2);
    let anchors: Tensor<3> = anchors.unsqueeze();
    let x1y1 = anchors.clone() - lt;
    let x2y2 = anchors + rb;
    let centre = (x1y1.clone() + x2y2.clone()).div_scalar(2.0);
    let size = x2y2 - x1y1;
    let strides: Tensor<3> = strides.unsqueeze();
    Tensor::cat(vec![centre, size], 1) * strides
}
