//! Pure-Rust reader for Ultralytics YOLO detection exports in ONNX.
//!
//! [`import_file`] parses the protobuf, reads the Ultralytics metadata, recovers the layer
//! list ([`Architecture`]) from the graph and returns every convolution's weights as `f32`
//! (dynamically quantised INT8 exports are dequantised: `(q - zero_point) * scale`).
//! Nothing here depends on a tensor library; `streamtrack` builds its Burn modules from it.

pub mod architecture;
mod graph;
pub mod metadata;
mod onnx_proto;
pub mod tensor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

pub use architecture::{Architecture, ConvSpec, DetectSpec, Family, LayerKind, LayerSpec};
use graph::GraphIndex;
pub use metadata::ModelMetadata;
use onnx_proto::ModelProto;
pub use tensor::FloatTensor;

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read: {0}")]
    Io(std::io::Error),
    #[error("not an ONNX model ({0})")]
    NotOnnx(String),
    #[error("corrupt model: {0}")]
    Corrupt(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("bad Ultralytics metadata: {0}")]
    Metadata(String),
}

// The I/O error is part of the message rather than a `source`, so a report of the whole
// error chain does not repeat it.
impl From<std::io::Error> for ImportError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// An import failure together with the file it concerns (one message, no source chain:
/// the failure is already in it).
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct FileImportError {
    pub path: PathBuf,
    pub reason: ImportError,
}

/// Weights of one convolution, bias folded in as exported.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvWeights {
    /// `[c_out, c_in / groups, k, k]`.
    pub weight: FloatTensor,
    /// `[c_out]`; zeros when the export has no bias.
    pub bias: Vec<f32>,
}

/// Everything needed to build and describe the network.
#[derive(Debug, Clone)]
pub struct ImportedModel {
    pub metadata: ModelMetadata,
    pub architecture: Architecture,
    /// Weights by convolution module path.
    pub weights: BTreeMap<String, ConvWeights>,
    /// True when the file stored INT8 weights (dequantised here).
    pub quantized_weights: bool,
}

/// Largest weight magnitude a trained detection export plausibly holds (batch norm folded
/// in); flipped exponent bits make values far beyond it.
pub const PLAUSIBLE_WEIGHT_MAGNITUDE: f32 = 1e4;

impl ImportedModel {
    /// Describes weights that look corrupt — NaN or infinite values, or magnitudes beyond
    /// [`PLAUSIBLE_WEIGHT_MAGNITUDE`] — naming the worst convolution; `None` when all look
    /// sane. Such a model loads but detects nonsense ("300 person" on every image).
    pub fn weight_anomalies(&self) -> Option<String> {
        let mut non_finite = 0usize;
        let mut worst: Option<(&str, f32)> = None;
        for (name, conv) in &self.weights {
            for &w in conv.weight.data.iter().chain(&conv.bias) {
                if !w.is_finite() {
                    non_finite += 1;
                } else if w.abs() > PLAUSIBLE_WEIGHT_MAGNITUDE
                    && worst.is_none_or(|(_, m)| w.abs() > m)
                {
                    worst = Some((name, w.abs()));
                }
            }
        }
        match (non_finite, worst) {
            (0, None) => None,
            (0, Some((name, magnitude))) => Some(format!(
                "weights up to {magnitude:e} in {name} (trained weights stay below {PLAUSIBLE_WEIGHT_MAGNITUDE:e})"
            )),
            (n, _) => Some(format!("{n} weights are NaN or infinite")),
        }
    }
}

/// Reads and validates an Ultralytics YOLO detection export.
pub fn import_file(path: impl AsRef<Path>) -> Result<ImportedModel, FileImportError> {
    let path = path.as_ref();
    let result = std::fs::read(path)
        .map_err(ImportError::from)
        .and_then(|bytes| import_bytes(&bytes));
    result.map_err(|reason| FileImportError {
        path: path.to_path_buf(),
        reason,
    })
}

/// Same as [`import_file`] on an in-memory file.
pub fn import_bytes(bytes: &[u8]) -> Result<ImportedModel, ImportError> {
    let model = ModelProto::decode(bytes).map_err(|e| ImportError::NotOnnx(e.to_string()))?;
    let graph = model
        .graph
        .filter(|g| !g.node.is_empty())
        .ok_or_else(|| ImportError::NotOnnx("the file holds no graph".into()))?;
    let props: Vec<(String, String)> = model
        .metadata_props
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect();
    let input_hw = graph_input_hw(&graph);
    let output_count = graph.output.len();
    let metadata = ModelMetadata::from_props(&props, input_hw)?;
    if metadata.task != "detect" {
        return Err(ImportError::Unsupported(format!(
            "this is a '{}' model; only detection ('detect') models are supported",
            metadata.task
        )));
    }
    if output_count != 1 {
        return Err(ImportError::Unsupported(format!(
            "the graph has {output_count} outputs; a detection export has one"
        )));
    }
    let index = GraphIndex::new(graph)?;
    let architecture = Architecture::from_graph(&index)?;
    architecture::output_channels(&architecture)?;
    let mut metadata = metadata;
    let num_classes = architecture.detect().num_classes;
    if metadata.names.is_empty() {
        metadata.names = (0..num_classes).map(|i| format!("class{i}")).collect();
    } else if metadata.names.len() != num_classes {
        return Err(ImportError::Metadata(format!(
            "{} class names for a head with {num_classes} classes",
            metadata.names.len()
        )));
    }
    let mut quantized_weights = false;
    let mut weights = BTreeMap::new();
    for conv in architecture.convs() {
        let node = index.conv(&conv.path)?;
        let loaded = conv_weights(&index, &conv.path, node)?;
        quantized_weights |= loaded.1;
        weights.insert(conv.path.clone(), loaded.0);
    }
    Ok(ImportedModel {
        metadata,
        architecture,
        weights,
        quantized_weights,
    })
}

/// `[H, W]` of the `images` input when both are fixed.
fn graph_input_hw(graph: &onnx_proto::GraphProto) -> Option<[usize; 2]> {
    let dims = &graph
        .input
        .first()?
        .r#type
        .as_ref()?
        .tensor_type
        .as_ref()?
        .shape
        .as_ref()?
        .dim;
    match dims.as_slice() {
        [_, _, h, w] if h.dim_value > 0 && w.dim_value > 0 => {
            Some([h.dim_value as usize, w.dim_value as usize])
        }
        _ => None,
    }
}

fn conv_weights(
    index: &GraphIndex,
    path: &str,
    node: &graph::ConvNode,
) -> Result<(ConvWeights, bool), ImportError> {
    let load = |name: &str| -> Result<FloatTensor, ImportError> {
        let proto = index
            .initializer(name)
            .ok_or_else(|| ImportError::Corrupt(format!("missing initialiser {name}")))?;
        tensor::decode(proto)
    };
    let mut weight = load(&node.weight)?;
    let quantized = node.weight.ends_with("_quantized");
    if quantized {
        let scale = load(&format!("{path}.weight_scale"))?;
        let zero = load(&format!("{path}.weight_zero_point"))?;
        dequantize(&mut weight, &scale, &zero, path)?;
    }
    let c_out = node.c_out;
    let bias = match node.bias_input.clone().or_else(|| {
        index
            .initializer(&format!("{path}.bias"))
            .map(|_| format!("{path}.bias"))
    }) {
        Some(name) => load(&name)?.data,
        None => vec![0.0; c_out],
    };
    if bias.len() != c_out {
        return Err(ImportError::Corrupt(format!(
            "{path}: bias has {} values for {c_out} output channels",
            bias.len()
        )));
    }
    Ok((ConvWeights { weight, bias }, quantized))
}

/// Per-tensor or per-output-channel affine dequantisation, in place.
fn dequantize(
    weight: &mut FloatTensor,
    scale: &FloatTensor,
    zero: &FloatTensor,
    path: &str,
) -> Result<(), ImportError> {
    let c_out = weight.shape[0];
    let per_channel = |t: &FloatTensor| t.len() == 1 || t.len() == c_out;
    if !per_channel(scale) || !per_channel(zero) {
        return Err(ImportError::Unsupported(format!(
            "{path}: quantisation parameters are neither per-tensor nor per-channel"
        )));
    }
    let per_out = weight.len() / c_out;
    for (i, value) in weight.data.iter_mut().enumerate() {
        let c = i / per_out;
        let s = scale.data[if scale.len() == 1 { 0 } else { c }];
        let z = zero.data[if zero.len() == 1 { 0 } else { c }];
        *value = (*value - z) * s;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real_model() -> ModelProto {
        let bytes = std::fs::read("../../shared/data/models/yolo11n-coco-320.onnx").unwrap();
        ModelProto::decode(bytes.as_slice()).unwrap()
    }

    fn import(model: &ModelProto) -> Result<ImportedModel, ImportError> {
        import_bytes(&model.encode_to_vec())
    }

    #[test]
    fn re_encoded_model_still_imports() {
        let m = import(&real_model()).unwrap();
        assert_eq!(m.architecture.family, Family::Yolo11);
    }

    #[test]
    fn segmentation_and_pose_tasks_are_refused() {
        for task in ["segment", "pose", "obb", "classify"] {
            let mut model = real_model();
            for p in &mut model.metadata_props {
                if p.key == "task" {
                    p.value = task.into();
                }
            }
            let err = import(&model).unwrap_err().to_string();
            assert!(err.contains(&format!("'{task}' model")), "{err}");
        }
    }

    #[test]
    fn a_graph_without_a_detect_head_is_refused() {
        let mut model = real_model();
        let graph = model.graph.as_mut().unwrap();
        graph.node.retain(|n| !n.name.starts_with("/model.23/"));
        graph
            .initializer
            .retain(|t| !t.name.starts_with("model.23."));
        let err = import(&model).unwrap_err().to_string();
        assert!(err.contains("not a Detect head"), "{err}");
    }

    #[test]
    fn unknown_blocks_are_refused_with_their_layer() {
        let mut model = real_model();
        let graph = model.graph.as_mut().unwrap();
        // Turn layer 8's C3k2 into something with a third top-level conv (a YOLOv5 C3).
        for node in &mut graph.node {
            for input in &mut node.input {
                if input == "model.8.cv2.conv.weight" {
                    *input = "model.8.cv3.conv.weight".into();
                }
            }
        }
        for t in &mut graph.initializer {
            if t.name == "model.8.cv2.conv.weight" {
                t.name = "model.8.cv3.conv.weight".into();
            }
        }
        let err = import(&model).unwrap_err().to_string();
        assert!(err.contains("model.8"), "{err}");
    }

    #[test]
    fn class_names_must_match_the_head() {
        let mut model = real_model();
        for p in &mut model.metadata_props {
            if p.key == "names" {
                p.value = "{0: 'a', 1: 'b'}".into();
            }
        }
        let err = import(&model).unwrap_err().to_string();
        assert!(
            err.contains("2 class names for a head with 80 classes"),
            "{err}"
        );
    }
}
