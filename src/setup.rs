//! Building the analysis of one stream from the configuration and the command line (or an
//! API request): model lookup, detector, tracker, speed estimator and result writers. Shared
//! by `process`, `live`, `bench`, `agree` and the HTTP server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::analysis::Analysis;
use crate::config::Config;
use crate::detect::Detector;
use crate::engine::SharedDetector;
use crate::model::{ComputeDevice, DeviceChoice, ModelCache, YoloModel};
use crate::output::ResultWriters;
use crate::pipeline::detect_stage::FrameDetector;
use crate::speed::{Calibration, SpeedEstimator};
use crate::track::Tracker;
use crate::video::StreamInfo;

/// Which model to run and how to filter its detections: what the command line's model flags
/// and an API request's detector settings both become.
#[derive(Clone, Debug, Default)]
pub struct DetectorSpec {
    /// Model: an Ultralytics YOLOv8/YOLO11 detection export (.onnx) or an imported .bpk.
    pub model: Option<PathBuf>,
    /// Where the network runs: auto, gpu, cpu or cpu-burn (Burn's stock CPU kernels).
    pub device: Option<DeviceChoice>,
    /// Confidence threshold (default 0.25).
    pub conf: Option<f32>,
    /// NMS IoU threshold (default 0.7).
    pub iou: Option<f32>,
    /// Maximum detections per frame (default 300).
    pub max_det: Option<usize>,
    /// Suppress overlapping boxes across classes.
    pub agnostic_nms: bool,
    /// Keep only these classes, by name or id, comma-separated (e.g. car,bus,7).
    pub classes: Vec<String>,
    /// Network input size in pixels, a multiple of 32 (default: the model's export size).
    pub input_size: Option<usize>,
    /// Frames per network call when several are waiting (file input; default 1).
    pub batch: Option<usize>,
    /// Loaded models to share (the server's): a model already there is not loaded again.
    pub models: Option<Arc<ModelCache>>,
    /// A detector already serving other streams: this stream's frames join its batches
    /// (every other field is then already applied in it).
    pub shared: Option<SharedDetector>,
}

impl DetectorSpec {
    /// `path` with every other flag at its default (the config file still applies).
    pub fn for_model(path: &Path, input_size: Option<usize>) -> Self {
        Self {
            model: Some(path.to_path_buf()),
            input_size,
            ..Self::default()
        }
    }
}

/// The model given (`--model` or a request's), then the config file's, then
/// `STREAMTRACK_MODEL`, then `models/default.onnx`.
pub fn resolve_model_path(flag: Option<&Path>, config: &Config) -> anyhow::Result<PathBuf> {
    let candidates = [
        flag.map(Path::to_path_buf),
        config.model.clone(),
        std::env::var_os("STREAMTRACK_MODEL").map(PathBuf::from),
    ];
    if let Some(chosen) = candidates.into_iter().flatten().next() {
        return Ok(chosen);
    }
    Some(PathBuf::from("models/default.onnx"))
        .filter(|p| p.exists())
        .context("no model given: pass --model, set `model` in the config file or STREAMTRACK_MODEL, or place models/default.onnx")
}

/// Loads the model and resolves thresholds; returns the detector and display names.
pub fn build_detector(
    args: &DetectorSpec,
    config: &Config,
) -> anyhow::Result<(Detector, Vec<String>)> {
    let device =
        ComputeDevice::resolve(args.device.unwrap_or(config.device)).map_err(anyhow::Error::msg)?;
    build_detector_on(args, config, device)
}

/// [`build_detector`] on a device already chosen.
pub fn build_detector_on(
    args: &DetectorSpec,
    config: &Config,
    device: ComputeDevice,
) -> anyhow::Result<(Detector, Vec<String>)> {
    let path = resolve_model_path(args.model.as_deref(), config)?;
    tracing::info!("device: {}", device.description);
    let mut model = match &args.models {
        Some(models) => models.get_or_load(&path, device)?,
        None => YoloModel::load(&path, device)?,
    };
    if let Some(size) = args.input_size {
        model
            .set_input_size(size)
            .map_err(|e| anyhow::anyhow!("--input-size: {e}"))?;
    }
    let mut section = config.detect.clone();
    section.conf = args.conf.unwrap_or(section.conf);
    section.iou = args.iou.unwrap_or(section.iou);
    section.max_det = args.max_det.unwrap_or(section.max_det);
    section.agnostic_nms |= args.agnostic_nms;
    if !args.classes.is_empty() {
        section.classes = args.classes.clone();
    }
    let names = section.display_names(model.class_names())?;
    let thresholds = section.resolve(model.class_names())?;
    Ok((Detector::new(model, thresholds), names))
}

/// Loads the calibration at `path` (or the config file's) and checks it fits the stream.
pub fn load_calibration(
    path: Option<&Path>,
    config: &Config,
    info: &StreamInfo,
) -> anyhow::Result<Option<Calibration>> {
    path.or(config.calibration.as_deref())
        .map(|path| -> anyhow::Result<Calibration> {
            let calibration = Calibration::load(path)?;
            calibration
                .check_image_size(info.width, info.height)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok(calibration)
        })
        .transpose()
}

/// The two halves of one stream's analysis: the network stage and everything after it.
pub struct StreamAnalysis {
    pub detector: FrameDetector,
    pub analysis: Analysis,
    /// Display names of the classes.
    pub names: Vec<String>,
}

/// Detector, tracker, speeds (when calibrated), zone counting and the result writers for
/// one stream; one frame in `frame_skip + 1` is analysed.
pub fn build_analysis(
    model: &DetectorSpec,
    config: &Config,
    info: &StreamInfo,
    calibration: Option<Calibration>,
    writers: ResultWriters,
    frame_skip: u64,
) -> anyhow::Result<StreamAnalysis> {
    let (detector, names) = match &model.shared {
        Some(shared) => (FrameDetector::new(shared.clone()), shared.names().to_vec()),
        None => {
            let (detector, names) = build_detector(model, config)?;
            (FrameDetector::new(detector), names)
        }
    };
    let tracker = Tracker::new(config.tracker.clone(), info.fps);
    let speeds = SpeedEstimator::new(calibration, config.speed.clone(), (info.width, info.height));
    let analysis = Analysis::new(
        names.clone(),
        tracker,
        speeds,
        config.tracker.track_buffer,
        writers,
    )
    .with_zones(config.zones.clone());
    let mut detector = detector.with_frame_skip(frame_skip);
    if let Some(batch) = model.batch {
        detector = detector.with_max_batch(batch);
    }
    Ok(StreamAnalysis {
        detector,
        analysis,
        names,
    })
}
