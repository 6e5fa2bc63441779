//! Smaller or faster models from a float one: INT8 weights ([`YoloModel::quantized`]),
//! calibrated INT8 inference ([`calibrate`]) or pruned channels ([`crate::model::prune`]),
//! each checked against the original on real video frames before it is written, so a model
//! that has collapsed is never saved silently.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::Config;
use crate::detect::Detector;
use crate::eval::agreement::{self, Agreement};
use crate::model::int8::{Histogram, Int8Calibration, LayerCalibration, RangeEstimator};
use crate::model::{ComputeDevice, RawOutput, YoloModel, prune};
use crate::video;

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

/// Convolutions with fewer input channels stay in f32: four channels make one quad of the
/// integer kernels, and the stem (3 channels, padded to 4, nine quads deep) is no faster in
/// INT8 than in f32 (`cargo bench -p cpu-conv -- stem`: 0.73 ms with the image's
/// quantisation against 0.79 ms for the f32 tap-wise path at 640; it once was 2.8 against
/// 0.9 ms), so quantising it would cost accuracy for nothing.
pub const MIN_INT8_CHANNELS: usize = 16;

/// Calibration frames kept for the per-layer sensitivity (each layer runs them once).
const SENSITIVITY_FRAMES: usize = 8;

/// An objectness-free YOLO head's class scores are sigmoids; anchors whose best score in the
/// float model reaches this are the ones the sensitivity's box error looks at.
const CONFIDENT_SCORE: f32 = 0.25;

/// How `quantize --calibrate` builds an INT8 model.
#[derive(Debug, Clone)]
pub struct CalibrationSettings {
    /// Videos, images or folders of images whose frames the float model runs on.
    pub sources: Vec<PathBuf>,
    /// Frames used in all, spread evenly over the sources.
    pub frames: usize,
    /// The most sensitive convolutions kept in f32.
    pub keep_float: usize,
    /// How each input range is chosen from the values seen.
    pub estimator: RangeEstimator,
}

/// What INT8 alone in one convolution does to the network output.
#[derive(Debug, Clone, Copy)]
pub struct LayerSensitivity {
    /// Position of the convolution in network order.
    pub index: usize,
    pub input_channels: usize,
    /// Mean absolute change of the box coordinates (pixels) of confident anchors.
    pub box_error: f64,
    /// Mean over the confident anchors of the largest change of any class score.
    pub score_error: f64,
}

impl LayerSensitivity {
    /// The ranking key: pixels plus score percent.
    pub fn cost(&self) -> f64 {
        self.box_error + 100.0 * self.score_error
    }
}

/// A calibrated model and how it was decided.
pub struct Calibrated {
    /// The float model with its INT8 calibration in force.
    pub model: YoloModel,
    pub frames: usize,
    /// Every convolution eligible for INT8, most sensitive first.
    pub sensitivity: Vec<LayerSensitivity>,
}

/// Calibrates `model` (on the CPU) for INT8: records each convolution's input range over the
/// settings' frames (then, unless the estimator is min/max, a histogram over that range in a
/// second pass, from which the estimator picks the range), measures each eligible
/// convolution's sensitivity on a few of the frames, and keeps the `keep_float` most
/// sensitive in f32.
pub fn calibrate(model: YoloModel, settings: &CalibrationSettings) -> anyhow::Result<Calibrated> {
    if settings.sources.is_empty() || settings.frames == 0 {
        bail!("calibration needs frames: give --calibrate a video, image or folder");
    }
    let inputs = model.convolution_inputs();
    let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); inputs.len()];
    let per_source = settings.frames.div_ceil(settings.sources.len());
    let keep_every = per_source.div_ceil(SENSITIVITY_FRAMES.div_ceil(settings.sources.len()));
    let (mut frames, mut kept) = (0, Vec::new());
    for path in &settings.sources {
        let mut seen = 0;
        video::for_each_sampled_frame(path, per_source, |frame| {
            for (range, (min, max)) in ranges.iter_mut().zip(model.input_ranges(&frame.image)) {
                *range = (range.0.min(min), range.1.max(max));
            }
            if seen % keep_every.max(1) == 0 {
                kept.push(frame.image.clone());
            }
            seen += 1;
        })?;
        frames += seen;
    }
    if frames == 0 {
        bail!("the calibration sources held no frames");
    }
    if settings.estimator != RangeEstimator::MinMax {
        let mut histograms: Vec<Histogram> = ranges
            .iter()
            .map(|&(min, max)| Histogram::new(min, max))
            .collect();
        for path in &settings.sources {
            video::for_each_sampled_frame(path, per_source, |frame| {
                model.add_to_histograms(&frame.image, &mut histograms)
            })?;
        }
        for (range, histogram) in ranges.iter_mut().zip(&histograms) {
            *range = histogram.range(settings.estimator);
        }
    }
    let calibration = |int8: &dyn Fn(usize) -> bool| Int8Calibration {
        frames,
        estimator: settings.estimator,
        layers: ranges
            .iter()
            .enumerate()
            .map(|(i, &(min, max))| LayerCalibration {
                min,
                max,
                int8: int8(i),
            })
            .collect(),
    };
    let outputs = |model: &YoloModel| -> Vec<RawOutput> {
        kept.iter()
            .map(|image| model.infer(model.letterbox(&[image]).0))
            .collect()
    };
    let reference = outputs(&model);
    let mut sensitivity: Vec<LayerSensitivity> = (0..inputs.len())
        .filter(|&i| inputs[i] >= MIN_INT8_CHANNELS)
        .map(|index| {
            let single = model.clone().with_int8(calibration(&|i| i == index));
            let (box_error, score_error) = output_error(&reference, &outputs(&single));
            LayerSensitivity {
                index,
                input_channels: inputs[index],
                box_error,
                score_error,
            }
        })
        .collect();
    sensitivity.sort_by(|a, b| b.cost().total_cmp(&a.cost()));
    let int8: Vec<usize> = sensitivity
        .iter()
        .skip(settings.keep_float)
        .map(|s| s.index)
        .collect();
    Ok(Calibrated {
        model: model.with_int8(calibration(&|i| int8.contains(&i))),
        frames,
        sensitivity,
    })
}

/// Mean absolute change of the box coordinates, and mean largest change of any class score,
/// over the anchors whose best score in `reference` reaches [`CONFIDENT_SCORE`] (zero when
/// none do). The largest change over classes sees a car turning into a truck, which the
/// change of the best score alone would not.
fn output_error(reference: &[RawOutput], candidate: &[RawOutput]) -> (f64, f64) {
    let (mut boxes, mut scores, mut anchors) = (0.0f64, 0.0f64, 0usize);
    for (r, c) in reference.iter().zip(candidate) {
        let (r, c, n) = (r.image(0), c.image(0), r.anchors);
        let rows = r.len() / n;
        for a in 0..n {
            let best = (4..rows).map(|row| r[row * n + a]).fold(0.0f32, f32::max);
            if best < CONFIDENT_SCORE {
                continue;
            }
            anchors += 1;
            let change = |rows: std::ops::Range<usize>| {
                rows.map(|row| (r[row * n + a] - c[row * n + a]).abs() as f64)
            };
            scores += change(4..rows).fold(0.0, f64::max);
            boxes += change(0..4).sum::<f64>() / 4.0;
        }
    }
    let mean = |sum: f64| {
        if anchors == 0 {
            0.0
        } else {
            sum / anchors as f64
        }
    };
    (mean(boxes), mean(scores))
}
