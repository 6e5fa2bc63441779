//! The network's layer list, recovered from an Ultralytics ONNX graph.
//!
//! Ultralytics keeps the PyTorch module path in every node and initialiser name
//! (`/model.6/m.0/cv2/conv/Conv`, `model.6.m.0.cv2.conv.weight`). Each top-level index
//! `model.N` is one layer of the model YAML; its kind follows from the modules under it
//! (C2f/C3k2, SPPF, C2PSA, Detect, ...) and its inputs from the tensors its first operator
//! reads. Channel widths, depths and the class count come from weight shapes, so every scale
//! (n/s/m/l/x) and any fine-tuned class count is recognised without a table per model.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::ImportError;
use crate::graph::{ConvNode, GraphIndex, NodeAttributes};

/// A convolution with its geometry; `act` adds SiLU after it (Ultralytics `Conv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvSpec {
    /// Module path, e.g. `model.2.m.0.cv1.conv`; weights are stored under it.
    pub path: String,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub act: bool,
}

/// Ultralytics `Bottleneck`: two convolutions and an optional residual add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BottleneckSpec {
    pub cv1: ConvSpec,
    pub cv2: ConvSpec,
    pub shortcut: bool,
}

/// A block inside a C2f / C3k2 layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CspBlockSpec {
    /// YOLOv8 C2f and YOLO11 C3k2 with `c3k=False`.
    Bottleneck(BottleneckSpec),
    /// YOLO11 C3k: `cv3(cat(m(cv1(x)), cv2(x)))`.
    C3k {
        cv1: ConvSpec,
        cv2: ConvSpec,
        cv3: ConvSpec,
        blocks: Vec<BottleneckSpec>,
    },
}

/// YOLO11 multi-head self-attention over a feature map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionSpec {
    pub qkv: ConvSpec,
    pub proj: ConvSpec,
    pub pe: ConvSpec,
    pub num_heads: usize,
    pub key_dim: usize,
    pub head_dim: usize,
}

/// YOLO11 `PSABlock`: `x + attn(x)`, then `x + ffn(x)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PsaBlockSpec {
    pub attn: AttentionSpec,
    pub ffn: [ConvSpec; 2],
}

/// The detection head: per level a box branch (to `4 * reg_max` DFL bins) and a class branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectSpec {
    pub box_branches: Vec<Vec<ConvSpec>>,
    pub cls_branches: Vec<Vec<ConvSpec>>,
    pub reg_max: usize,
    pub num_classes: usize,
}

/// What one top-level layer computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LayerKind {
    Conv(ConvSpec),
    /// C2f (YOLOv8) and C3k2 (YOLO11): `cv2(cat(split(cv1(x)), m_1, ..., m_n))`.
    Csp {
        cv1: ConvSpec,
        cv2: ConvSpec,
        blocks: Vec<CspBlockSpec>,
    },
    /// Spatial pyramid pooling (fast): three chained max-pools.
    Sppf {
        cv1: ConvSpec,
        cv2: ConvSpec,
        pool: usize,
    },
    /// YOLO11 C2PSA: `cv2(cat(a, psa(b)))` with `a, b = split(cv1(x))`.
    C2psa {
        cv1: ConvSpec,
        cv2: ConvSpec,
        blocks: Vec<PsaBlockSpec>,
    },
    /// Nearest-neighbour upsampling by an integer factor.
    Upsample {
        scale: usize,
    },
    /// Channel concatenation of the `from` layers.
    Concat,
    Detect(DetectSpec),
}

/// One layer and the layers it reads (absolute indices; `-1` is the input image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSpec {
    pub index: usize,
    pub from: Vec<i64>,
    pub kind: LayerKind,
}

/// Model family, recognised from the blocks present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    /// C2f blocks.
    YoloV8,
    /// C3k2 blocks and C2PSA attention.
    Yolo11,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::YoloV8 => "YOLOv8",
            Family::Yolo11 => "YOLO11",
        })
    }
}

/// The whole network: family, scale letter when it matches an official scale, and layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    pub family: Family,
    pub scale: Option<char>,
    pub layers: Vec<LayerSpec>,
}

impl Architecture {
    /// The detection head (always the last layer).
    pub fn detect(&self) -> &DetectSpec {
        match &self.layers.last().expect("architecture has layers").kind {
            LayerKind::Detect(spec) => spec,
            _ => unreachable!("architecture is validated to end with Detect"),
        }
    }

    /// Every convolution in the network, in layer order.
    pub fn convs(&self) -> Vec<&ConvSpec> {
        let mut out = Vec::new();
        for layer in &self.layers {
            match &layer.kind {
                LayerKind::Conv(c) => out.push(c),
                LayerKind::Csp { cv1, cv2, blocks } => {
                    out.extend([cv1, cv2]);
                    for block in blocks {
                        match block {
                            CspBlockSpec::Bottleneck(b) => out.extend([&b.cv1, &b.cv2]),
                            CspBlockSpec::C3k {
                                cv1,
                                cv2,
                                cv3,
                                blocks,
                            } => {
                                out.extend([cv1, cv2, cv3]);
                                out.extend(blocks.iter().flat_map(|b| [&b.cv1, &b.cv2]));
                            }
                        }
                    }
                }
                LayerKind::Sppf { cv1, cv2, .. } => out.extend([cv1, cv2]),
                LayerKind::C2psa { cv1, cv2, blocks } => {
                    out.extend([cv1, cv2]);
                    for b in blocks {
                        out.extend([&b.attn.qkv, &b.attn.proj, &b.attn.pe, &b.ffn[0], &b.ffn[1]]);
                    }
                }
                LayerKind::Detect(d) => {
                    out.extend(d.box_branches.iter().flatten());
                    out.extend(d.cls_branches.iter().flatten());
                }
                LayerKind::Upsample { .. } | LayerKind::Concat => {}
            }
        }
        out
    }

    /// Recovers the architecture from an indexed graph.
    pub fn from_graph(graph: &GraphIndex) -> Result<Self, ImportError> {
        let count = graph.top_level_layer_count();
        if count == 0 {
            return Err(ImportError::Unsupported(
                "the graph has no Ultralytics module names (model.N...); only Ultralytics YOLO exports are supported"
                    .into(),
            ));
        }
        let reader = LayerReader { graph };
        let layers = (0..count)
            .map(|i| reader.layer(i))
            .collect::<Result<Vec<_>, _>>()?;
        if !matches!(layers.last().map(|l| &l.kind), Some(LayerKind::Detect(_))) {
            return Err(ImportError::Unsupported(
                "the last layer is not a Detect head; segmentation, pose, OBB and classification models are not supported"
                    .into(),
            ));
        }
        for layer in &layers {
            if let Some(bad) = layer.from.iter().find(|&&f| f >= layer.index as i64) {
                return Err(ImportError::Unsupported(format!(
                    "layer model.{} reads layer {bad}, which is not before it",
                    layer.index
                )));
            }
        }
        let family = if layers.iter().any(|l| {
            matches!(&l.kind, LayerKind::C2psa { .. })
                || matches!(&l.kind, LayerKind::Csp { blocks, .. } if blocks.iter().any(|b| matches!(b, CspBlockSpec::C3k { .. })))
        }) {
            Family::Yolo11
        } else {
            Family::YoloV8
        };
        let scale = official_scale(family, &layers);
        Ok(Self {
            family,
            scale,
            layers,
        })
    }
}

/// Matches the stem width (and, for YOLO11 m/l, the depth of layer 2) to an official scale.
fn official_scale(family: Family, layers: &[LayerSpec]) -> Option<char> {
    let stem = match &layers.first()?.kind {
        LayerKind::Conv(c) => c.c_out,
        _ => return None,
    };
    let depth2 = match &layers.get(2)?.kind {
        LayerKind::Csp { blocks, .. } => blocks.len(),
        _ => 0,
    };
    match (family, stem, depth2) {
        (_, 16, _) => Some('n'),
        (_, 32, _) => Some('s'),
        (Family::YoloV8, 48, _) => Some('m'),
        (Family::YoloV8, 64, _) => Some('l'),
        (Family::YoloV8, 80, _) => Some('x'),
        (Family::Yolo11, 64, 1) => Some('m'),
        (Family::Yolo11, 64, 2) => Some('l'),
        (Family::Yolo11, 96, _) => Some('x'),
        _ => None,
    }
}

struct LayerReader<'a> {
    graph: &'a GraphIndex,
}

impl LayerReader<'_> {
    fn layer(&self, index: usize) -> Result<LayerSpec, ImportError> {
        let g = self.graph;
        let p = |suffix: &str| format!("model.{index}.{suffix}");
        let node_prefix = format!("/model.{index}/");
        let unsupported = |what: &str| {
            Err(ImportError::Unsupported(format!(
                "layer model.{index}: {what}; only YOLOv8 and YOLO11 detection models are supported"
            )))
        };

        if g.has_conv(&p("cv2.0.0.conv")) && g.has_conv(&p("cv3.0.0.conv"))
            || g.has_conv(&p("cv3.0.0.0.conv"))
        {
            return self.detect(index);
        }
        if g.has_conv(&p("conv")) {
            let conv = self.conv(&p("conv"))?;
            let from = vec![g.source_layer(&g.conv(&conv.path)?.input)];
            return Ok(LayerSpec {
                index,
                from,
                kind: LayerKind::Conv(conv),
            });
        }
        if let Some(resize) = g.node_with_prefix(&node_prefix, "Resize") {
            let scale = g.resize_scale(resize).unwrap_or(2);
            return Ok(LayerSpec {
                index,
                from: vec![g.source_layer(&resize.input[0])],
                kind: LayerKind::Upsample { scale },
            });
        }
        if !g.has_conv(&p("cv1.conv")) {
            if let Some(concat) = g.node_with_prefix(&node_prefix, "Concat") {
                return Ok(LayerSpec {
                    index,
                    from: concat.input.iter().map(|i| g.source_layer(i)).collect(),
                    kind: LayerKind::Concat,
                });
            }
            return unsupported("unrecognised layer");
        }
        let cv1 = self.conv(&p("cv1.conv"))?;
        let from = vec![g.source_layer(&g.conv(&cv1.path)?.input)];
        if !g.has_conv(&p("cv2.conv")) {
            return unsupported("a block with cv1 but no cv2");
        }
        let cv2 = self.conv(&p("cv2.conv"))?;
        if g.has_conv(&p("cv3.conv")) {
            return unsupported("a C3 block (YOLOv5-style)");
        }
        let kind = if g.has_conv(&p("m.0.attn.qkv.conv")) {
            let blocks = (0..)
                .map_while(|j| {
                    g.has_conv(&p(&format!("m.{j}.attn.qkv.conv")))
                        .then(|| self.psa_block(&p(&format!("m.{j}"))))
                })
                .collect::<Result<_, _>>()?;
            LayerKind::C2psa { cv1, cv2, blocks }
        } else if let Some(pool) = g.node_with_prefix(&node_prefix, "MaxPool") {
            let kernel = pool.ints("kernel_shape").first().copied().unwrap_or(5) as usize;
            LayerKind::Sppf {
                cv1,
                cv2,
                pool: kernel,
            }
        } else if g.has_conv(&p("m.0.cv1.conv")) {
            let blocks = (0..)
                .map_while(|j| {
                    g.has_conv(&p(&format!("m.{j}.cv1.conv")))
                        .then(|| self.csp_block(&p(&format!("m.{j}"))))
                })
                .collect::<Result<_, _>>()?;
            LayerKind::Csp { cv1, cv2, blocks }
        } else {
            return unsupported("a block of unknown type");
        };
        Ok(LayerSpec { index, from, kind })
    }

    fn conv(&self, path: &str) -> Result<ConvSpec, ImportError> {
        let node = self.graph.conv(path)?;
        Ok(conv_spec(path, node))
    }

    fn bottleneck(&self, prefix: &str) -> Result<BottleneckSpec, ImportError> {
        let cv1 = self.conv(&format!("{prefix}.cv1.conv"))?;
        let cv2 = self.conv(&format!("{prefix}.cv2.conv"))?;
        // The residual add is an `Add` node beside the block's cv2 module in the graph.
        let cv2_node = &self.graph.conv(&cv2.path)?.name;
        let module = cv2_node
            .rfind("/conv/")
            .map(|i| &cv2_node[..i])
            .and_then(|m| m.rfind('/').map(|i| &m[..i]))
            .unwrap_or_default();
        let shortcut = self.graph.has_node(&format!("{module}/Add"));
        if shortcut && cv1.c_in != cv2.c_out {
            return Err(ImportError::Unsupported(format!(
                "{prefix}: residual add between {} and {} channels",
                cv1.c_in, cv2.c_out
            )));
        }
        Ok(BottleneckSpec { cv1, cv2, shortcut })
    }

    fn csp_block(&self, prefix: &str) -> Result<CspBlockSpec, ImportError> {
        if !self.graph.has_conv(&format!("{prefix}.cv3.conv")) {
            return Ok(CspBlockSpec::Bottleneck(self.bottleneck(prefix)?));
        }
        let blocks = (0..)
            .map_while(|k| {
                let inner = format!("{prefix}.m.{k}");
                self.graph
                    .has_conv(&format!("{inner}.cv1.conv"))
                    .then(|| self.bottleneck(&inner))
            })
            .collect::<Result<_, _>>()?;
        Ok(CspBlockSpec::C3k {
            cv1: self.conv(&format!("{prefix}.cv1.conv"))?,
            cv2: self.conv(&format!("{prefix}.cv2.conv"))?,
            cv3: self.conv(&format!("{prefix}.cv3.conv"))?,
            blocks,
        })
    }

    fn psa_block(&self, prefix: &str) -> Result<PsaBlockSpec, ImportError> {
        let qkv = self.conv(&format!("{prefix}.attn.qkv.conv"))?;
        let dim = qkv.c_in;
        // Ultralytics' C2PSA builds PSABlock(c, num_heads=c // 64) with attn_ratio 0.5.
        let num_heads = (dim / 64).max(1);
        let nh_kd = qkv.c_out.checked_sub(dim).map(|x| x / 2).unwrap_or(0);
        if nh_kd == 0 || nh_kd % num_heads != 0 || dim % num_heads != 0 {
            return Err(ImportError::Unsupported(format!(
                "{prefix}: attention with {dim} channels and qkv width {} does not split into {num_heads} heads",
                qkv.c_out
            )));
        }
        Ok(PsaBlockSpec {
            attn: AttentionSpec {
                proj: self.conv(&format!("{prefix}.attn.proj.conv"))?,
                pe: self.conv(&format!("{prefix}.attn.pe.conv"))?,
                num_heads,
                key_dim: nh_kd / num_heads,
                head_dim: dim / num_heads,
                qkv,
            },
            ffn: [
                self.conv(&format!("{prefix}.ffn.0.conv"))?,
                self.conv(&format!("{prefix}.ffn.1.conv"))?,
            ],
        })
    }

    fn detect(&self, index: usize) -> Result<LayerSpec, ImportError> {
        let g = self.graph;
        let branch = |name: &str, level: usize| -> Result<Vec<ConvSpec>, ImportError> {
            let prefix = format!("model.{index}.{name}.{level}.");
            Ok(g.convs_with_prefix(&prefix)
                .into_iter()
                .map(|(path, node)| conv_spec(path, node))
                .collect())
        };
        let mut box_branches = Vec::new();
        let mut cls_branches = Vec::new();
        let mut from = Vec::new();
        for level in 0.. {
            let boxes = branch("cv2", level)?;
            if boxes.is_empty() {
                break;
            }
            from.push(g.source_layer(&g.conv(&boxes[0].path)?.input));
            box_branches.push(boxes);
            cls_branches.push(branch("cv3", level)?);
        }
        let last_out = |branches: &[Vec<ConvSpec>]| -> BTreeSet<usize> {
            branches
                .iter()
                .map(|b| b.last().map_or(0, |c| c.c_out))
                .collect()
        };
        let (box_out, cls_out) = (last_out(&box_branches), last_out(&cls_branches));
        if box_out.len() != 1 || cls_out.len() != 1 || cls_branches.iter().any(Vec::is_empty) {
            return Err(ImportError::Unsupported(format!(
                "model.{index}: detection head levels disagree on their output widths"
            )));
        }
        let reg4 = *box_out.first().expect("one width");
        if reg4 % 4 != 0 {
            return Err(ImportError::Unsupported(format!(
                "model.{index}: box branch width {reg4} is not 4 x reg_max"
            )));
        }
        Ok(LayerSpec {
            index,
            from,
            kind: LayerKind::Detect(DetectSpec {
                box_branches,
                cls_branches,
                reg_max: reg4 / 4,
                num_classes: *cls_out.first().expect("one width"),
            }),
        })
    }
}

/// SiLU follows every Ultralytics `Conv` (module path ending in `.conv`) except the ones built
/// with `act=False`: the attention projections and the second feed-forward conv of PSA.
fn has_activation(path: &str) -> bool {
    path.ends_with(".conv")
        && !path.contains(".attn.")
        && !path.ends_with(".ffn.1.conv")
        && !path.ends_with(".dfl.conv")
}

fn conv_spec(path: &str, node: &ConvNode) -> ConvSpec {
    ConvSpec {
        path: path.to_string(),
        c_in: node.c_in_per_group * node.groups,
        c_out: node.c_out,
        kernel: node.kernel,
        stride: node.stride,
        padding: node.padding,
        groups: node.groups,
        act: has_activation(path),
    }
}

/// Channel count each layer outputs, for validating the wiring of a loaded architecture.
pub fn output_channels(arch: &Architecture) -> Result<Vec<usize>, ImportError> {
    let mut channels: HashMap<i64, usize> = HashMap::from([(-1, 3)]);
    for layer in &arch.layers {
        let input: Vec<usize> = layer
            .from
            .iter()
            .map(|f| channels.get(f).copied().unwrap_or(0))
            .collect();
        let mismatch = |expected: usize| {
            ImportError::Unsupported(format!(
                "layer model.{} expects {expected} input channels but receives {input:?}",
                layer.index
            ))
        };
        let out = match &layer.kind {
            LayerKind::Conv(c) => check(c.c_in, input[0], mismatch)?.then_some(c.c_out),
            LayerKind::Csp { cv1, cv2, .. }
            | LayerKind::Sppf { cv1, cv2, .. }
            | LayerKind::C2psa { cv1, cv2, .. } => {
                check(cv1.c_in, input[0], mismatch)?.then_some(cv2.c_out)
            }
            LayerKind::Upsample { .. } => Some(input[0]),
            LayerKind::Concat => Some(input.iter().sum()),
            LayerKind::Detect(d) => {
                for (branch, c) in d.box_branches.iter().zip(&input) {
                    check(branch[0].c_in, *c, mismatch)?;
                }
                Some(0)
            }
        };
        channels.insert(layer.index as i64, out.unwrap_or(0));
    }
    Ok((0..arch.layers.len() as i64)
        .map(|i| channels[&i])
        .collect())
}

fn check(
    expected: usize,
    actual: usize,
    mismatch: impl Fn(usize) -> ImportError,
) -> Result<bool, ImportError> {
    if expected == actual {
        Ok(true)
    } else {
        Err(mismatch(expected))
    }
}
