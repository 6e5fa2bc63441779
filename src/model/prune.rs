//! Structured (channel) pruning by L1 norm, without retraining.
//!
//! A *channel space* is a set of feature-map channels that some convolutions write and others
//! read. Removing channel `j` of a space removes output row `j` of every convolution that
//! writes it and input column `j` of every convolution that reads it, wherever it sits in a
//! concatenation, so the network stays consistent. The spaces pruned are the ones local to
//! a block, whose width nothing outside the block sees:
//! - the hidden channels of every bottleneck (`cv1` → `cv2`);
//! - both halves of every C2f / C3k2 split: the half that goes straight to the final
//!   concatenation, and the residual chain that the bottlenecks add to (one space through
//!   every shortcut stage, read by each stage's bottleneck and by the concatenation);
//! - the channels SPPF pools (read four times by its `cv2`);
//! - the two hidden widths of every detection-head branch (not the depth-wise YOLO11 class
//!   branches).
//!
//! A channel's importance is the L1 norm of the weights that write it (summed over writers);
//! the `ratio` least important of each space go. What a removed channel would have carried
//! is estimated as its activation of the bias alone (`SiLU(b)`, exact for an all-zero filter)
//! and folded into the readers' biases.

use std::collections::BTreeMap;

use model_import::architecture::{BottleneckSpec, CspBlockSpec, LayerKind};
use model_import::{Architecture, ConvSpec, ConvWeights};

/// Channels before and after pruning, over all pruned spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneSummary {
    pub spaces: usize,
    pub channels_before: usize,
    pub channels_after: usize,
}

/// Why a model cannot be pruned.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("the pruning ratio must be in [0, 1), got {0}")]
    Ratio(f32),
    #[error("no weights for convolution {0}")]
    MissingWeights(String),
}

/// Removes `ratio` of the channels of every prunable space of `arch`, editing the layer
/// specs and `weights` (by module path) in place.
pub fn prune(
    arch: &mut Architecture,
    weights: &mut BTreeMap<String, ConvWeights>,
    ratio: f32,
) -> Result<PruneSummary, PruneError> {
    if !(0.0..1.0).contains(&ratio) {
        return Err(PruneError::Ratio(ratio));
    }
    for conv in arch.convs() {
        if !weights.contains_key(&conv.path) {
            return Err(PruneError::MissingWeights(conv.path.clone()));
        }
    }
    let mut pruner = Pruner::new(weights, ratio);
    for layer in &mut arch.layers {
        match &mut layer.kind {
            LayerKind::Csp { cv1, cv2, blocks } => pruner.csp(cv1, cv2, blocks),
            LayerKind::Sppf { cv1, cv2, .. } => {
                let width = cv1.c_out;
                let space = Space::single(cv1);
                let selection = pruner.select(&space, &pruner.stage_values(&space)[0]);
                pruner.apply_outputs(cv1, &selection);
                for part in (0..4).rev() {
                    pruner.apply_inputs(cv2, part * width, &selection);
                }
            }
            LayerKind::Detect(head) => {
                for branch in head.box_branches.iter_mut().chain(&mut head.cls_branches) {
                    for i in 0..branch.len().saturating_sub(1) {
                        let (writer, reader) = pair(branch, i);
                        if writer.groups == 1 && reader.groups == 1 {
                            pruner.between(writer, reader);
                        }
                    }
                }
            }
            LayerKind::Conv(_)
            | LayerKind::C2psa { .. }
            | LayerKind::Upsample { .. }
            | LayerKind::Concat => {}
        }
    }
    Ok(pruner.summary)
}

/// Mutable access to convolutions `i` and `i + 1` of a chain.
fn pair(branch: &mut [ConvSpec], i: usize) -> (&mut ConvSpec, &mut ConvSpec) {
    let (left, right) = branch.split_at_mut(i + 1);
    (&mut left[i], &mut right[0])
}

/// A convolution that writes a channel space, from output row `first` on.
#[derive(Debug, Clone)]
struct Writer {
    path: String,
    first: usize,
    act: bool,
}

impl Writer {
    fn of(conv: &ConvSpec, first: usize) -> Self {
        Self {
            path: conv.path.clone(),
            first,
            act: conv.act,
        }
    }
}

/// A channel space: its writers in order (later ones residual) and its width.
struct Space {
    writers: Vec<Writer>,
    width: usize,
}

impl Space {
    fn single(conv: &ConvSpec) -> Self {
        Self {
            writers: vec![Writer::of(conv, 0)],
            width: conv.c_out,
        }
    }
}

/// One space of a C2f / C3k2 chain and where it is read.
struct ChainSpace {
    space: Space,
    /// The block whose last convolution starts the space (`None`: `cv1`'s second half).
    start_block: Option<usize>,
    /// Residual blocks whose last convolution writes the space again, one stage each.
    shortcut_blocks: Vec<usize>,
    /// `(block, stage)`: blocks that read the space.
    readers: Vec<(usize, usize)>,
    /// `(part of cv2's concatenation, stage)`.
    parts: Vec<(usize, usize)>,
}

/// The chain of a C2f / C3k2 layer cut into spaces at every block without a residual
/// connection.
fn chain_spaces(cv1: &ConvSpec, half: usize, blocks: &[CspBlockSpec]) -> Vec<ChainSpace> {
    let mut spaces = vec![ChainSpace {
        space: Space {
            writers: vec![Writer::of(cv1, half)],
            width: half,
        },
        start_block: None,
        shortcut_blocks: Vec::new(),
        readers: Vec::new(),
        parts: vec![(1, 0)],
    }];
    for (i, block) in blocks.iter().enumerate() {
        let current = spaces.last_mut().expect("one space");
        let stage = current.space.writers.len() - 1;
        current.readers.push((i, stage));
        match block {
            CspBlockSpec::Bottleneck(b) if b.shortcut => {
                current.space.writers.push(Writer::of(&b.cv2, 0));
                current.shortcut_blocks.push(i);
                current.parts.push((i + 2, stage + 1));
            }
            CspBlockSpec::Bottleneck(BottleneckSpec { cv2: last, .. })
            | CspBlockSpec::C3k { cv3: last, .. } => spaces.push(ChainSpace {
                space: Space::single(last),
                start_block: Some(i),
                shortcut_blocks: Vec::new(),
                readers: Vec::new(),
                parts: vec![(i + 2, 0)],
            }),
        }
    }
    spaces
}

/// The convolution that writes a C2f / C3k2 inner block's output.
fn last_conv(block: &mut CspBlockSpec) -> &mut ConvSpec {
    match block {
        CspBlockSpec::Bottleneck(b) => &mut b.cv2,
        CspBlockSpec::C3k { cv3, .. } => cv3,
    }
}

/// Which channels of a space stay, and the estimated constant value of each removed one.
#[derive(Debug, Clone)]
struct Selection {
    keep: Vec<usize>,
    removed: Vec<(usize, f32)>,
}

impl Selection {
    /// Channels in the space.
    fn width(&self) -> usize {
        self.keep.len() + self.removed.len()
    }

    /// The same channels, with removed channels carrying `values` instead.
    fn with_values(&self, values: &[f32]) -> Self {
        Self {
            keep: self.keep.clone(),
            removed: self.removed.iter().map(|&(j, _)| (j, values[j])).collect(),
        }
    }
}

struct Pruner<'a> {
    weights: &'a mut BTreeMap<String, ConvWeights>,
    ratio: f32,
    summary: PruneSummary,
}

impl<'a> Pruner<'a> {
    /// A pruner of `weights` at `ratio`, nothing pruned yet.
    fn new(weights: &'a mut BTreeMap<String, ConvWeights>, ratio: f32) -> Self {
        Self {
            weights,
            ratio,
            summary: PruneSummary {
                spaces: 0,
                channels_before: 0,
                channels_after: 0,
            },
        }
    }

    /// Prunes the hidden channels between `writer` and `reader` (one reads all the other
    /// writes).
    fn between(&mut self, writer: &mut ConvSpec, reader: &mut ConvSpec) {
        let space = Space::single(writer);
        let selection = self.select(&space, &self.stage_values(&space)[0]);
        self.apply_outputs(writer, &selection);
        self.apply_inputs(reader, 0, &selection);
    }

    /// C2f / C3k2: `cv2(cat(a, b, m_1(b), m_2(m_1(b)), ...))` with `a, b = split(cv1(x))`.
    fn csp(&mut self, cv1: &mut ConvSpec, cv2: &mut ConvSpec, blocks: &mut [CspBlockSpec]) {
        let half = cv1.c_out / 2;
        let straight = Space {
            writers: vec![Writer::of(cv1, 0)],
            width: half,
        };
        let straight = self.select(&straight, &self.stage_values(&straight)[0]);
        let chain = chain_spaces(cv1, half, blocks);
        // Space by space: the selection from the writers' weights as they are (no space
        // shares a writer with another), then every writer and reader.
        let mut parts: Vec<Option<Selection>> = vec![None; blocks.len() + 2];
        parts[0] = Some(straight.clone());
        for space in &chain {
            let values = self.stage_values(&space.space);
            let selection = self.select(&space.space, values.last().expect("one stage"));
            let at = |stage: usize| selection.with_values(&values[stage]);
            match space.start_block {
                None => {
                    let rows: Vec<usize> = straight
                        .keep
                        .iter()
                        .copied()
                        .chain(selection.keep.iter().map(|j| half + j))
                        .collect();
                    self.keep_output_rows(cv1, &rows);
                }
                Some(i) => self.apply_outputs(last_conv(&mut blocks[i]), &selection),
            }
            for &i in &space.shortcut_blocks {
                self.apply_outputs(last_conv(&mut blocks[i]), &selection);
            }
            for &(i, stage) in &space.readers {
                let input = at(stage);
                match &mut blocks[i] {
                    CspBlockSpec::Bottleneck(b) => self.apply_inputs(&mut b.cv1, 0, &input),
                    CspBlockSpec::C3k { cv1, cv2, .. } => {
                        self.apply_inputs(cv1, 0, &input);
                        self.apply_inputs(cv2, 0, &input);
                    }
                }
            }
            for &(part, stage) in &space.parts {
                parts[part] = Some(at(stage));
            }
        }
        // cv2's concatenation, last part first so the earlier offsets hold.
        let parts: Vec<Selection> = parts
            .into_iter()
            .map(|p| p.expect("every part belongs to a space"))
            .collect();
        let mut offsets: Vec<usize> = parts
            .iter()
            .scan(0, |at, sel| {
                let start = *at;
                *at += sel.width();
                Some(start)
            })
            .collect();
        for (selection, offset) in parts.iter().zip(offsets.drain(..)).rev() {
            self.apply_inputs(cv2, offset, selection);
        }
        // Bottleneck hidden channels last: their readers' biases already hold the chain's
        // compensation.
        for block in blocks.iter_mut() {
            if let CspBlockSpec::Bottleneck(b) = block {
                self.between(&mut b.cv1, &mut b.cv2);
            }
        }
    }

    /// Per stage of `space` (one per writer), the value each channel carries when its
    /// filters are dropped: the writer's activation of its bias alone, added to the previous
    /// stage's for residual writers.
    fn stage_values(&self, space: &Space) -> Vec<Vec<f32>> {
        let mut stages: Vec<Vec<f32>> = Vec::new();
        for writer in &space.writers {
            let bias = &self.weights[&writer.path].bias[writer.first..writer.first + space.width];
            let previous = stages.last();
            let values = bias
                .iter()
                .enumerate()
                .map(|(j, &b)| {
                    let own = if writer.act { silu(b) } else { b };
                    own + previous.map_or(0.0, |p| p[j])
                })
                .collect();
            stages.push(values);
        }
        stages
    }

    /// Keeps the `1 - ratio` channels of `space` whose writers' filters have the largest
    /// L1 norm (at least one).
    fn select(&mut self, space: &Space, values: &[f32]) -> Selection {
        let mut importance = vec![0.0f64; space.width];
        for writer in &space.writers {
            let w = &self.weights[&writer.path].weight;
            let row = w.data.len() / w.shape[0];
            for (j, imp) in importance.iter_mut().enumerate() {
                let first = writer.first;
                let filter = &w.data[(first + j) * row..(first + j + 1) * row];
                *imp += filter.iter().map(|v| v.abs() as f64).sum::<f64>();
            }
        }
        let keep_count = ((space.width as f32 * (1.0 - self.ratio)).round() as usize)
            .clamp(1, space.width.max(1));
        let mut order: Vec<usize> = (0..space.width).collect();
        order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]).then(a.cmp(&b)));
        let mut keep = order[..keep_count].to_vec();
        keep.sort_unstable();
        let mut removed: Vec<(usize, f32)> = order[keep_count..]
            .iter()
            .map(|&j| (j, values[j]))
            .collect();
        removed.sort_unstable_by_key(|&(j, _)| j);
        self.summary.spaces += 1;
        self.summary.channels_before += space.width;
        self.summary.channels_after += keep.len();
        Selection { keep, removed }
    }

    /// Keeps output rows `selection.keep` of `conv`.
    fn apply_outputs(&mut self, conv: &mut ConvSpec, selection: &Selection) {
        self.keep_output_rows(conv, &selection.keep);
    }

    fn keep_output_rows(&mut self, conv: &mut ConvSpec, rows: &[usize]) {
        let w = self.weights.get_mut(&conv.path).expect("checked up front");
        let row = w.weight.data.len() / w.weight.shape[0];
        w.weight.data = rows
            .iter()
            .flat_map(|&r| w.weight.data[r * row..(r + 1) * row].to_vec())
            .collect();
        w.weight.shape[0] = rows.len();
        w.bias = rows.iter().map(|&r| w.bias[r]).collect();
        conv.c_out = rows.len();
    }

    /// In input columns `offset..offset + width` of `conv`, keeps `selection.keep` and folds
    /// each removed channel's constant value into the bias.
    fn apply_inputs(&mut self, conv: &mut ConvSpec, offset: usize, selection: &Selection) {
        let width = selection.width();
        let w = self.weights.get_mut(&conv.path).expect("checked up front");
        let [c_out, c_in, kh, kw] = [
            w.weight.shape[0],
            w.weight.shape[1],
            w.weight.shape[2],
            w.weight.shape[3],
        ];
        let area = kh * kw;
        for (o, bias) in w.bias.iter_mut().enumerate() {
            for &(j, value) in &selection.removed {
                let start = (o * c_in + offset + j) * area;
                let tap_sum: f32 = w.weight.data[start..start + area].iter().sum();
                *bias += tap_sum * value;
            }
        }
        let columns: Vec<usize> = (0..offset)
            .chain(selection.keep.iter().map(|j| offset + j))
            .chain(offset + width..c_in)
            .collect();
        let mut data = Vec::with_capacity(c_out * columns.len() * area);
        for o in 0..c_out {
            for &c in &columns {
                let start = (o * c_in + c) * area;
                data.extend_from_slice(&w.weight.data[start..start + area]);
            }
        }
        w.weight.data = data;
        w.weight.shape[1] = columns.len();
        conv.c_in = columns.len();
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ComputeDevice, YoloModel};
    use model_import::ImportedModel;

    const MODEL: &str = "../shared/data/models/yolov8n-coco-640.onnx";

    fn import() -> ImportedModel {
        model_import::import_file(MODEL).expect("test model imports")
    }

    fn outputs(imported: &ImportedModel, input: &[f32]) -> Vec<f32> {
        let model =
            YoloModel::from_imported(imported.clone(), MODEL.as_ref(), ComputeDevice::cpu());
        model.infer(model.planar_input(input.to_vec(), 1)).data
    }

    /// Largest absolute difference between two outputs.
    fn largest_change(before: &[f32], after: &[f32]) -> f32 {
        before
            .iter()
            .zip(after)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    /// An input at the network's size with some structure (a smooth gradient and stripes).
    fn input() -> Vec<f32> {
        (0..3 * 640 * 640)
            .map(|i| {
                let (c, y, x) = (i / (640 * 640), (i / 640) % 640, i % 640);
                ((x + 2 * y + 97 * c) % 256) as f32 / 255.0
            })
            .collect()
    }

    /// Zeroes output channel `row` of `conv`'s filter and sets its bias, so the channel
    /// is the constant `SiLU(bias)` (or `bias`) everywhere.
    fn make_constant(imported: &mut ImportedModel, conv: &str, row: usize, bias: f32) {
        let w = imported.weights.get_mut(conv).expect("conv exists");
        let len = w.weight.data.len() / w.weight.shape[0];
        w.weight.data[row * len..(row + 1) * len].fill(0.0);
        w.bias[row] = bias;
    }

    #[test]
    fn a_constant_channel_is_removed_without_changing_the_output() {
        // Channels read only by 1x1 convolutions (a head branch's last hidden width, SPPF's
        // pooled channels): a constant channel folds exactly into the readers' biases.
        let mut imported = import();
        let (branch, sppf) = {
            let arch = &imported.architecture;
            let LayerKind::Detect(head) = &arch.layers.last().expect("layers").kind else {
                panic!("ends with Detect")
            };
            let sppf = arch
                .layers
                .iter()
                .position(|l| matches!(l.kind, LayerKind::Sppf { .. }))
                .expect("SPPF");
            (head.box_branches[0][1].path.clone(), sppf)
        };
        let LayerKind::Sppf { cv1, .. } = &imported.architecture.layers[sppf].kind else {
            unreachable!()
        };
        let sppf_cv1 = cv1.path.clone();
        make_constant(&mut imported, &branch, 7, 0.8);
        make_constant(&mut imported, &sppf_cv1, 3, -0.4);
        let input = input();
        let before = outputs(&imported, &input);

        let mut pruned = imported.clone();
        let arch = &mut pruned.architecture;
        // 1 of 64 head channels, 1 of 128 SPPF channels.
        let mut pruner = Pruner::new(&mut pruned.weights, 0.01);
        let LayerKind::Sppf { cv1, cv2, .. } = &mut arch.layers[sppf].kind else {
            unreachable!()
        };
        let width = cv1.c_out;
        let space = Space::single(cv1);
        let selection = pruner.select(&space, &pruner.stage_values(&space)[0]);
        assert_eq!(
            selection.removed.iter().map(|r| r.0).collect::<Vec<_>>(),
            [3]
        );
        pruner.apply_outputs(cv1, &selection);
        for part in (0..4).rev() {
            pruner.apply_inputs(cv2, part * width, &selection);
        }
        let LayerKind::Detect(head) = &mut arch.layers.last_mut().expect("layers").kind else {
            unreachable!()
        };
        let (writer, reader) = pair(&mut head.box_branches[0], 1);
        pruner.between(writer, reader);
        assert_eq!(
            pruner.summary.channels_before - pruner.summary.channels_after,
            2
        );
        let worst = largest_change(&before, &outputs(&pruned, &input));
        assert!(worst < 2e-3, "largest output change {worst}");
    }

    #[test]
    fn a_zero_channel_of_a_split_and_its_residual_chain_is_removed_exactly() {
        // In two C2f layers (one with residual bottlenecks, one without), one channel of the
        // straight half, of each chain space and of each bottleneck's hidden width is made
        // identically zero; removing exactly those through the layer's split, chain and
        // concatenation must leave the output as it was.
        let mut imported = import();
        let csp_layers: Vec<usize> = imported
            .architecture
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l.kind, LayerKind::Csp { .. }))
            .map(|(i, _)| i)
            .collect();
        // Layers 2 and 4 (residual, 16 and 32 channels per space), 15 (not residual, 32).
        let chosen = [csp_layers[0], csp_layers[1], csp_layers[5]];
        let mut zeroed = Vec::new();
        for &layer in &chosen {
            let LayerKind::Csp { cv1, blocks, .. } = &imported.architecture.layers[layer].kind
            else {
                unreachable!()
            };
            let half = cv1.c_out / 2;
            zeroed.push((cv1.path.clone(), 1));
            zeroed.push((cv1.path.clone(), half + 2));
            for block in blocks {
                let CspBlockSpec::Bottleneck(b) = block else {
                    panic!("YOLOv8 C2f blocks are bottlenecks")
                };
                zeroed.push((b.cv1.path.clone(), 3));
                // A residual block writes the chain's channel 2; otherwise it starts a new
                // space, whose channel 2 is zeroed as well.
                zeroed.push((b.cv2.path.clone(), 2));
            }
        }
        for (conv, row) in &zeroed {
            make_constant(&mut imported, conv, *row, 0.0);
        }
        let input = input();
        let before = outputs(&imported, &input);
        let mut pruned = imported.clone();
        // 4% of 16 or 32 channels rounds to one: the zeroed channel, the weakest.
        let mut pruner = Pruner::new(&mut pruned.weights, 0.04);
        for &layer in &chosen {
            let LayerKind::Csp { cv1, cv2, blocks } = &mut pruned.architecture.layers[layer].kind
            else {
                unreachable!()
            };
            pruner.csp(cv1, cv2, blocks);
        }
        let summary = pruner.summary;
        assert_eq!(
            summary.channels_before - summary.channels_after,
            summary.spaces
        );
        assert_eq!(summary.spaces, 11, "{summary:?}");
        let worst = largest_change(&before, &outputs(&pruned, &input));
        assert!(worst < 2e-3, "largest output change {worst}");
    }

    #[test]
    fn a_pruned_network_is_consistent_and_smaller() {
        let mut pruned = import();
        let params = |i: &ImportedModel| i.weights.values().map(|w| w.weight.len()).sum::<usize>();
        let before = params(&pruned);
        let summary = prune(&mut pruned.architecture, &mut pruned.weights, 0.25).expect("prunes");
        // Every space loses a quarter, rounded per space.
        let removed = summary.channels_before - summary.channels_after;
        assert!(summary.spaces > 30, "{summary:?}");
        assert!(
            (removed as f64 / summary.channels_before as f64 - 0.25).abs() < 0.01,
            "{summary:?}"
        );
        model_import::architecture::output_channels(&pruned.architecture).expect("wiring");
        for conv in pruned.architecture.convs() {
            let w = &pruned.weights[&conv.path];
            assert_eq!(
                w.weight.shape,
                [
                    conv.c_out,
                    conv.c_in / conv.groups,
                    conv.kernel,
                    conv.kernel
                ],
                "{}",
                conv.path
            );
        }
        assert!(
            params(&pruned) < before * 3 / 4,
            "{} of {before}",
            params(&pruned)
        );
        let out = outputs(&pruned, &input());
        assert_eq!(out.len(), 84 * 8400);
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn ratios_outside_zero_to_one_are_refused() {
        let mut imported = import();
        for ratio in [-0.1, 1.0, f32::NAN] {
            let err = prune(&mut imported.architecture, &mut imported.weights, ratio);
            assert!(matches!(err, Err(PruneError::Ratio(_))), "{ratio}");
        }
    }
}
