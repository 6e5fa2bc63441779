//! From raw network output to detections: box decoding, confidence filtering and NMS.

pub mod decode;
pub mod detector;
pub mod nms;

use serde::{Deserialize, Serialize};

use crate::geometry::BBox;

pub use decode::{Candidate, decode_candidates, decode_survivors};
pub use detector::{DetectBatch, Detector, HeadOutput};
pub use nms::non_max_suppression;

/// One detected object in original-image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f32,
    pub class_id: usize,
}

/// Detection thresholds; the defaults are Ultralytics' predictor defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Minimum class score (strictly greater passes).
    pub conf: f32,
    /// IoU above which the lower-scored of two boxes is suppressed.
    pub iou: f32,
    /// Maximum detections per image.
    pub max_det: usize,
    /// Suppress across classes instead of within each class.
    pub agnostic_nms: bool,
    /// Keep only these class ids (empty: all).
    pub classes: Vec<usize>,
    /// Per-class confidence thresholds overriding `conf`, by class id.
    pub class_conf: Vec<(usize, f32)>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            conf: 0.25,
            iou: 0.7,
            max_det: 300,
            agnostic_nms: false,
            classes: Vec::new(),
            class_conf: Vec::new(),
        }
    }
}

impl DetectConfig {
    /// The confidence threshold for `class_id`.
    pub fn threshold(&self, class_id: usize) -> f32 {
        self.class_conf
            .iter()
            .find(|(c, _)| *c == class_id)
            .map_or(self.conf, |(_, t)| *t)
    }

    /// The lowest threshold of any class: the prefilter bound.
    pub fn min_threshold(&self) -> f32 {
        self.class_conf
            .iter()
            .map(|(_, t)| *t)
            .fold(self.conf, f32::min)
    }

    /// The same settings with every class's threshold lowered to `conf`, for scoring the
    /// whole precision-recall curve.
    pub fn down_to(&self, conf: f32) -> Self {
        Self {
            conf,
            class_conf: Vec::new(),
            ..self.clone()
        }
    }

    /// True when detections of `class_id` are wanted.
    pub fn keeps_class(&self, class_id: usize) -> bool {
        self.classes.is_empty() || self.classes.contains(&class_id)
    }
}
