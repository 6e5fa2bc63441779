//! The flags shared by several commands, and what they become for the library: the model
//! flags a [`DetectorSpec`], the output flags an [`OutputSpec`].

use std::path::{Path, PathBuf};

use clap::Args;
use streamtrack::config::Config;
use streamtrack::job::OutputSpec;
use streamtrack::model::DeviceChoice;
use streamtrack::setup::{self, DetectorSpec};

/// The sample model of a development checkout, used when no model is given in any other way.
const DEV_MODEL: &str = "../shared/data/models/yolov8n-coco-640.onnx";

/// Model and detection flags shared by the commands that run the network.
#[derive(Args, Clone, Debug, Default)]
pub struct ModelFlags {
    /// Model: an Ultralytics YOLOv8/YOLO11 detection export (.onnx) or an imported .bpk.
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Where the network runs: auto, gpu, cpu or cpu-burn (Burn's stock CPU kernels).
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// Confidence threshold (default 0.25).
    #[arg(long)]
    pub conf: Option<f32>,
    /// NMS IoU threshold (default 0.7).
    #[arg(long)]
    pub iou: Option<f32>,
    /// Maximum detections per frame (default 300).
    #[arg(long)]
    pub max_det: Option<usize>,
    /// Suppress overlapping boxes across classes.
    #[arg(long)]
    pub agnostic_nms: bool,
    /// Keep only these classes, by name or id, comma-separated (e.g. car,bus,7).
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Network input size in pixels, a multiple of 32 (default: the model's export size).
    #[arg(long)]
    pub input_size: Option<usize>,
    /// Frames per network call when several are waiting (file input; default 1).
    #[arg(long)]
    pub batch: Option<usize>,
}

impl ModelFlags {
    /// The detector the flags ask for, its model found as [`default_model_path`] finds it
    /// when the flags name none.
    pub fn into_spec(self, config: &Config) -> DetectorSpec {
        let model = self.model.or_else(|| default_model_path(config).ok());
        DetectorSpec {
            model,
            device: self.device,
            conf: self.conf,
            iou: self.iou,
            max_det: self.max_det,
            agnostic_nms: self.agnostic_nms,
            classes: self.classes,
            input_size: self.input_size,
            batch: self.batch,
            models: None,
            shared: None,
        }
    }
}

/// The model of a command given no `--model`: the configuration's, `STREAMTRACK_MODEL` or
/// `models/default.onnx` (see [`setup::resolve_model_path`]), else a development checkout's
/// sample model.
pub fn default_model_path(config: &Config) -> anyhow::Result<PathBuf> {
    setup::resolve_model_path(None, config).or_else(|missing| {
        let sample = Path::new(DEV_MODEL);
        if sample.exists() {
            Ok(sample.to_path_buf())
        } else {
            Err(missing)
        }
    })
}

/// What a run writes, and the per-stream analysis settings.
#[derive(Args, Clone, Debug, Default)]
pub struct OutputFlags {
    /// Output annotated video (.mp4).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Also write every annotated frame as PNG into this folder.
    #[arg(long)]
    pub save_frames: Option<PathBuf>,
    /// Cut the output video into files of this many seconds; `-o` is then a name pattern
    /// (`cam1-%Y%m%d-%H%M%S.mp4`, the segment's start in UTC; without fields the time is
    /// added before the extension).
    #[arg(long, value_name = "SECONDS")]
    pub segment: Option<f64>,
    /// Output video bitrate in bits per second (default: from frame size and rate).
    #[arg(long)]
    pub bitrate: Option<u32>,
    /// Per-frame tracks and events as JSON lines.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Per-frame tracks as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Tracks in MOTChallenge format.
    #[arg(long)]
    pub mot: Option<PathBuf>,
    /// Camera calibration (TOML) enabling speed estimation.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Analyse one frame in N+1 (the others are written with the last annotations).
    #[arg(long, default_value_t = 0)]
    pub frame_skip: u64,
    /// Publish events to this MQTT broker: mqtt://[user:password@]host[:port], or mqtts://
    /// for TLS (overrides `[sinks.mqtt] url`).
    #[arg(long)]
    pub mqtt: Option<String>,
    /// POST every event as JSON to this URL: http[s]://host[:port]/path (overrides
    /// `[sinks.webhook] url`).
    #[arg(long)]
    pub webhook: Option<String>,
    /// Sign webhook bodies with HMAC-SHA256 and this secret (overrides `[sinks.webhook]
    /// secret`).
    #[arg(long, env = "STREAMTRACK_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// The stream's name in MQTT topics and event bodies (default: the input's file name).
    #[arg(long)]
    pub stream_id: Option<String>,
}

impl From<OutputFlags> for OutputSpec {
    fn from(flags: OutputFlags) -> Self {
        Self {
            output: flags.output,
            save_frames: flags.save_frames,
            segment: flags.segment,
            bitrate: flags.bitrate,
            events: flags.events,
            csv: flags.csv,
            mot: flags.mot,
            calibration: flags.calibration,
            frame_skip: flags.frame_skip,
            mqtt: flags.mqtt,
            webhook: flags.webhook,
            webhook_secret: flags.webhook_secret,
            stream_id: flags.stream_id,
            sinks: None,
        }
    }
}
