//! Smaller models from a float one: INT8 weights ([`YoloModel::quantized`]) or pruned
//! channels ([`crate::model::prune`]), each checked against the original on real video
//! frames before it is written, so a model that has collapsed is never saved silently.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::Config;
use crate::detect::Detector;
use crate::eval::agreement::{self, Agreement};
use crate::model::{ComputeDevice, YoloModel, prune};

/// How a compressed model is checked before it is written.
#[derive(Debug, Clone)]
pub struct AgreementCheck {
    /// Videos whose frames both models see (none: no check).
    pub videos: Vec<PathBuf>,
    /// Frames per video, evenly spaced.
    pub frames: usize,
    /// Lowest mAP50 of the compressed model against the original that is accepted.
    pub min_map50: f64,
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    pub agreement: Option<Agreement>,
    pub bytes: u64,
}

/// The model at `path` and a copy pruned by `ratio` (structured, by L1 norm), both on
/// `device`, with a summary of the channels removed. Reads the ONNX export, which names every
/// weight, once for both.
pub fn pruned(
    path: &Path,
    ratio: f32,
    device: ComputeDevice,
) -> anyhow::Result<(YoloModel, YoloModel, prune::PruneSummary)> {
    if path.extension().is_none_or(|e| e != "onnx") {
        bail!(
            "{}: pruning reads an Ultralytics ONNX export (its weights are named by module); \
             pass the .onnx file",
            path.display()
        );
    }
    let imported = model_import::import_file(path)?;
    let mut pruned = imported.clone();
    let summary = prune::prune(&mut pruned.architecture, &mut pruned.weights, ratio)
        .with_context(|| format!("{}: cannot prune", path.display()))?;
    Ok((
        YoloModel::from_imported(imported, path, device.clone()),
        YoloModel::from_imported(pruned, path, device),
        summary,
    ))
}

/// Checks `candidate` against `original` (when `check` names videos) and writes it to
/// `output` (`.bpk` + `.json` card) only if it agrees well enough.
pub fn check_and_save(
    original: YoloModel,
    candidate: YoloModel,
    check: &AgreementCheck,
    config: &Config,
    output: &Path,
) -> anyhow::Result<Written> {
    let agreement = if check.videos.is_empty() {
        None
    } else {
        let detector = |model: YoloModel| -> anyhow::Result<Detector> {
            let thresholds = config.detect.resolve(model.class_names())?;
            Ok(Detector::new(model, thresholds))
        };
        let mut reference = detector(original)?;
        let mut compressed = detector(candidate.clone().dequantized())?;
        let measured =
            agreement::measure(&mut compressed, &mut reference, &check.videos, check.frames)?;
        if measured.metrics.map50 < check.min_map50 {
            bail!(
                "the compressed model's mAP50 against the original is {:.3} on {} frames, \
                 below --min-map50 {}: it was not written to {}",
                measured.metrics.map50,
                measured.frames,
                check.min_map50,
                output.display()
            );
        }
        Some(measured)
    };
    candidate.save(output)?;
    let bytes = std::fs::metadata(output)
        .with_context(|| format!("{}: cannot read back", output.display()))?
        .len();
    Ok(Written { agreement, bytes })
}
