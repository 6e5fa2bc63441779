//! The whole YOLO network: layers wired as the Ultralytics YAML describes, ending in the
//! detection head. `forward` returns exactly what the ONNX export returns: `[B, 4 + nc, N]`
//! with `cx, cy, w, h` in input pixels followed by sigmoid class scores.

use std::sync::OnceLock;

use burn::module::Module;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use model_import::{Architecture, DetectSpec, LayerKind};

use super::ImageLevels;
use super::awake::PassPart;
use super::fast_cpu::{self, BranchContext};
use super::layers::{
    C2psa, ConvBlock, ConvChain, Csp, CspInner, Parts, PsaBlock, Sppf, WeightSource, decode_boxes,
    upsample,
};
use super::profile::{OpKind, timed};

/// Nearest-neighbour upsampling by an integer factor.
#[derive(Module, Debug)]
pub struct Upsample {
    pub scale: usize,
}

/// Channel concatenation of the layer's inputs.
#[derive(Module, Debug)]
pub struct Concat {
    pub dim: usize,
}

/// Per level, a box branch and a class branch; DFL decoding and sigmoid at the end.
#[derive(Module, Debug)]
pub struct DetectHead {
    pub box_branches: Vec<ConvChain>,
    pub cls_branches: Vec<ConvChain>,
    pub reg_max: usize,
    pub num_classes: usize,
}

/// One top-level layer.
#[derive(Module, Debug)]
pub enum Layer {
    Conv(ConvBlock),
    Csp(Csp),
    Sppf(Sppf),
    C2psa(C2psa),
    Upsample(Upsample),
    Concat(Concat),
    Detect(DetectHead),
}

/// Which earlier outputs each layer reads (`-1` is the image), and which outputs to keep.
#[derive(Debug, Clone)]
pub struct Wiring {
    from: Vec<Vec<i64>>,
    keep: Vec<bool>,
}

/// The YOLO detector network as Burn modules.
#[derive(Module, Debug)]
pub struct YoloNetwork {
    pub layers: Vec<Layer>,
    #[module(skip)]
    wiring: Wiring,
}

impl YoloNetwork {
    /// Builds the network for `arch` with weights from `weights`.
    pub fn new(arch: &Architecture, weights: WeightSource, device: &Device) -> Self {
        let layers = arch
            .layers
            .iter()
            .map(|layer| build_layer(&layer.kind, weights, device))
            .collect();
        let from: Vec<Vec<i64>> = arch.layers.iter().map(|l| l.from.clone()).collect();
        // An output is kept when a layer other than the next one reads it.
        let keep = (0..from.len())
            .map(|i| {
                from.iter()
                    .enumerate()
                    .any(|(j, srcs)| j != i + 1 && srcs.contains(&(i as i64)))
            })
            .collect();
        Self {
            layers,
            wiring: Wiring { from, keep },
        }
    }

    /// Runs the network on a `[B, 3, H, W]` batch (RGB, 0..1); returns `[B, 4 + nc, N]`.
    ///
    /// On the CPU each level of the detection head starts as soon as its feature map is
    /// ready, its box and class chains side by side and beside the layers that make the
    /// next level's map: most of those layers are on 20x20 and 10x10 maps (at 640: 40x40 and
    /// 20x20), too small to keep both cores busy one layer at a time.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<3> {
        let [_, _, input_h, input_w] = images.dims();
        self.forward_from(Start::Images(images), [input_h, input_w])
    }

    /// [`forward`](Self::forward) on frames given as their byte levels: the first layer, a
    /// convolution that alone reads the network's input, reads them as `level / 255` on the
    /// fast CPU path. Elsewhere (or for another first layer) the levels become values first.
    pub(crate) fn forward_levels(&self, levels: ImageLevels) -> Tensor<3> {
        let [_, _, input_h, input_w] = levels.shape;
        let only_the_first_reads_the_input = self.wiring.from[0] == [-1]
            && self.wiring.from[1..].iter().all(|from| !from.contains(&-1));
        let stem_output = match &self.layers[0] {
            Layer::Conv(stem) if only_the_first_reads_the_input => stem.forward_levels(&levels),
            _ => None,
        };
        match stem_output {
            Some(output) => self.forward_from(Start::FirstOutput(output), [input_h, input_w]),
            None => self.forward(levels.into_values()),
        }
    }

    /// The forward pass from `start`, on `input_hw` frames.
    fn forward_from(&self, start: Start, [input_h, input_w]: [usize; 2]) -> Tensor<3> {
        let Some(Layer::Detect(head)) = self.layers.last() else {
            unreachable!("architecture ends with a Detect layer")
        };
        let mut levels: Vec<Option<(Tensor<4>, Tensor<4>)>> = vec![None; head.box_branches.len()];
        if let Some(context) = fast_cpu::branches_side_by_side(start.tensor()) {
            let slots: Vec<OnceLock<(Tensor<4>, Tensor<4>)>> =
                levels.iter().map(|_| OnceLock::new()).collect();
            rayon::scope(|scope| {
                self.forward_to_head(start, &mut |level, x| {
                    let slot = &slots[level];
                    let (part, context) = (PassPart::of_current_pass(), context.clone());
                    scope.spawn(move |_| {
                        let outputs = part.run(|| head.level(level, x, Some(&context)));
                        assert!(slot.set(outputs).is_ok(), "each head level is made once");
                    });
                })
            });
            for (level, slot) in levels.iter_mut().zip(slots) {
                *level = slot.into_inner();
            }
        } else {
            self.forward_to_head(start, &mut |level, x| {
                levels[level] = Some(head.level(level, x, None));
            });
        }
        let levels = levels
            .into_iter()
            .map(|level| level.expect("wiring feeds every head level"))
            .collect();
        head.finish(levels, [input_h, input_w])
    }

    /// Runs every layer before the detection head from `start`, handing each of the head's
    /// inputs to `head_input` (with its level) as soon as it is made.
    fn forward_to_head(&self, start: Start, head_input: &mut dyn FnMut(usize, Tensor<4>)) {
        let head_from = self.wiring.from.last().expect("a network has layers");
        let mut saved: Vec<Option<Tensor<4>>> = vec![None; self.layers.len()];
        // What follows the output of `source` (a layer, or -1 for the input): the head gets
        // it if it reads it, and a layer's is kept if a later layer reads it.
        let mut record = |saved: &mut [Option<Tensor<4>>], source: i64, output: &Tensor<4>| {
            for (level, _) in head_from
                .iter()
                .enumerate()
                .filter(|(_, src)| **src == source)
            {
                head_input(level, output.clone());
            }
            if let Ok(i) = usize::try_from(source)
                && self.wiring.keep[i]
            {
                saved[i] = Some(output.clone());
            }
        };
        let (images, mut previous, first_layer) = match start {
            Start::Images(images) => {
                record(&mut saved, -1, &images);
                (Some(images.clone()), images, 0)
            }
            // The first layer ran already, on the input's byte levels.
            Start::FirstOutput(output) => {
                record(&mut saved, 0, &output);
                (None, output, 1)
            }
        };
        let fetch = |saved: &[Option<Tensor<4>>], previous: &Tensor<4>, i: usize, src: i64| {
            if src == -1 {
                images
                    .clone()
                    .expect("only the first layer reads the input, and it has run")
            } else if src as usize + 1 == i {
                previous.clone()
            } else {
                saved[src as usize]
                    .clone()
                    .expect("wiring keeps every output read later")
            }
        };
        // A channel concatenation that only the next layer reads, and whose first
        // convolution reads concatenation parts in place: handed on as its parts.
        let mut pending_parts: Option<Parts> = None;
        // An upsampling that such a concatenation reads first: its input is handed on as
        // that part, with the scale still to apply (see `Parts`).
        let mut deferred_scale = None;
        for (i, layer) in self.layers.iter().enumerate().skip(first_layer) {
            let from = &self.wiring.from[i];
            let inputs: Parts = match pending_parts.take() {
                Some(parts) => parts,
                None => from
                    .iter()
                    .map(|&src| fetch(&saved, &previous, i, src))
                    .collect::<Vec<_>>()
                    .into(),
            };
            let output = match layer {
                Layer::Detect(_) => return,
                Layer::Conv(m) => m.forward_parts(inputs),
                Layer::Csp(m) => m.forward_parts(inputs),
                Layer::Sppf(m) => m.forward(single(inputs.made())),
                Layer::C2psa(m) => m.forward(single(inputs.made())),
                Layer::Upsample(m) if self.defers_upsampling(i) => {
                    deferred_scale = Some(m.scale);
                    previous = single(inputs.made());
                    continue;
                }
                Layer::Upsample(m) => upsample(single(inputs.made()), m.scale),
                Layer::Concat(m) if m.dim == 1 && self.hands_on_parts(i) => {
                    pending_parts = Some(Parts {
                        tensors: inputs.made(),
                        first_scale: deferred_scale.take().unwrap_or(1),
                    });
                    continue;
                }
                Layer::Concat(m) => {
                    timed(OpKind::SplitConcat, || Tensor::cat(inputs.made(), m.dim))
                }
            };
            record(&mut saved, i as i64, &output);
            previous = output;
        }
        unreachable!("architecture ends with a Detect layer")
    }
}

impl YoloNetwork {
    /// Whether layer `i`'s output is read by the next layer alone, and that layer reads
    /// concatenation parts in place (a convolution, or a CSP block through its first
    /// convolution).
    fn hands_on_parts(&self, i: usize) -> bool {
        !self.wiring.keep[i]
            && self.wiring.from.get(i + 1) == Some(&vec![i as i64])
            && matches!(self.layers.get(i + 1), Some(Layer::Conv(_) | Layer::Csp(_)))
    }
}

impl YoloNetwork {
    /// Whether layer `i` is an upsampling that only the next layer reads, as the first part
    /// of a concatenation handed on as its parts: the upsampling is left to the layer that
    /// reads the parts.
    fn defers_upsampling(&self, i: usize) -> bool {
        !self.wiring.keep[i]
            && self.wiring.from.get(i + 1).and_then(|from| from.first()) == Some(&(i as i64))
            && matches!(self.layers.get(i + 1), Some(Layer::Concat(c)) if c.dim == 1)
            && self.hands_on_parts(i + 1)
    }
}

/// Where a forward pass starts.
enum Start {
    /// From the network's input.
    Images(Tensor<4>),
    /// From the first layer's output, made already.
    FirstOutput(Tensor<4>),
}

impl Start {
    fn tensor(&self) -> &Tensor<4> {
        match self {
            Start::Images(tensor) | Start::FirstOutput(tensor) => tensor,
        }
    }
}

fn single(mut inputs: Vec<Tensor<4>>) -> Tensor<4> {
    inputs.pop().expect("layer has one input")
}

fn build_layer(kind: &LayerKind, weights: WeightSource, device: &Device) -> Layer {
    let conv = |spec| ConvBlock::new(spec, weights, device);
    match kind {
        LayerKind::Conv(spec) => Layer::Conv(conv(spec)),
        LayerKind::Csp { cv1, cv2, blocks } => Layer::Csp(Csp {
            cv1: conv(cv1),
            cv2: conv(cv2),
            blocks: blocks
                .iter()
                .map(|b| CspInner::new(b, weights, device))
                .collect(),
        }),
        LayerKind::Sppf { cv1, cv2, pool } => Layer::Sppf(Sppf {
            cv1: conv(cv1),
            cv2: conv(cv2),
            pool: *pool,
        }),
        LayerKind::C2psa { cv1, cv2, blocks } => Layer::C2psa(C2psa {
            cv1: conv(cv1),
            cv2: conv(cv2),
            blocks: blocks
                .iter()
                .map(|b| PsaBlock::new(b, weights, device))
                .collect(),
        }),
        LayerKind::Upsample { scale } => Layer::Upsample(Upsample { scale: *scale }),
        LayerKind::Concat => Layer::Concat(Concat { dim: 1 }),
        LayerKind::Detect(spec) => Layer::Detect(DetectHead::new(spec, weights, device)),
    }
}

impl DetectHead {
    fn new(spec: &DetectSpec, weights: WeightSource, device: &Device) -> Self {
        let chains = |branches: &[Vec<model_import::ConvSpec>]| {
            branches
                .iter()
                .map(|b| ConvChain::new(b, weights, device))
                .collect()
        };
        Self {
            box_branches: chains(&spec.box_branches),
            cls_branches: chains(&spec.cls_branches),
            reg_max: spec.reg_max,
            num_classes: spec.num_classes,
        }
    }

    /// Level `level`'s box and class outputs for its feature map `x`; the two chains side by
    /// side on rayon's pool, each with the pass's `context`, when one is given.
    fn level(
        &self,
        level: usize,
        x: Tensor<4>,
        side_by_side: Option<&BranchContext>,
    ) -> (Tensor<4>, Tensor<4>) {
        let (box_branch, cls_branch) = (&self.box_branches[level], &self.cls_branches[level]);
        let for_boxes = x.clone();
        match side_by_side {
            Some(context) => rayon::join(
                move || context.run(|| box_branch.forward(for_boxes)),
                move || context.run(|| cls_branch.forward(x)),
            ),
            None => (box_branch.forward(for_boxes), cls_branch.forward(x)),
        }
    }

    /// Decodes the levels' box and class outputs into `[B, 4 + nc, N]`.
    fn finish(&self, levels: Vec<(Tensor<4>, Tensor<4>)>, input_hw: [usize; 2]) -> Tensor<3> {
        let device = levels[0].0.device();
        let mut boxes = Vec::new();
        let mut scores = Vec::new();
        let mut grid = AnchorGrid::default();
        for (box_out, class_out) in levels {
            let [b, _, h, w] = box_out.dims();
            grid.add_level(h, w, input_hw[0] as f32 / h as f32);
            boxes.push(box_out.reshape([b, 4 * self.reg_max, h * w]));
            scores.push(class_out.reshape([b, self.num_classes, h * w]));
        }
        timed(OpKind::HeadDecode, || {
            let anchors = [&grid.xs[..], &grid.ys[..], &grid.strides[..]];
            if let Some(out) = fast_cpu::decode_head(&boxes, &scores, anchors, self.reg_max) {
                return out;
            }
            let (boxes, scores) = (Tensor::cat(boxes, 2), Tensor::cat(scores, 2));
            let (anchors, strides) = grid.into_tensors(&device);
            let boxes = decode_boxes(boxes, anchors, strides, self.reg_max);
            Tensor::cat(vec![boxes, sigmoid(scores)], 1)
        })
    }
}

/// Anchor centres (grid cell + 0.5) and strides of every output position, level by level.
#[derive(Default)]
pub(super) struct AnchorGrid {
    pub(super) xs: Vec<f32>,
    pub(super) ys: Vec<f32>,
    pub(super) strides: Vec<f32>,
}

impl AnchorGrid {
    pub(super) fn add_level(&mut self, h: usize, w: usize, stride: f32) {
        for y in 0..h {
            for x in 0..w {
                self.xs.push(x as f32 + 0.5);
                self.ys.push(y as f32 + 0.5);
                self.strides.push(stride);
            }
        }
    }

    pub(super) fn into_tensors(mut self, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let n = self.strides.len();
        self.xs.extend(self.ys);
        (
            Tensor::from_data(TensorData::new(self.xs, [2, n]), device),
            Tensor::from_data(TensorData::new(self.strides, [1, n]), device),
        )
    }
}
