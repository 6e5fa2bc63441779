//! How closely one detector agrees with another on real video frames: the candidate's
//! detections scored as predictions against the reference's detections as labels (mAP50 and
//! mAP50-95). The labels are the reference's boxes at its own thresholds; the candidate's are
//! kept down to [`SCORING_CONF`], as `val` keeps a model's against ground truth, so that a box
//! both models score near the threshold counts as agreement and not as a miss. Used to check
//! quantised or pruned models against their float original, where a silent collapse would
//! otherwise go unnoticed.

use std::path::PathBuf;

use super::detection::{ClassMetrics, DetectionEval, DetectionMetrics, SCORING_CONF};
use crate::detect::Detector;
use crate::formats::yolo_labels::Label;
use crate::video::{self, VideoError};

/// Agreement over evenly spaced frames of each video.
#[derive(Debug, Clone)]
pub struct Agreement {
    pub metrics: DetectionMetrics,
    /// The figures of each class the reference detected, whose means `metrics` holds.
    pub per_class: Vec<ClassMetrics>,
    pub frames: usize,
    /// Reference detections, the labels.
    pub reference_objects: usize,
}

/// Runs both detectors on about `frames_per_video` evenly spaced frames of each video; the
/// candidate keeps its thresholds afterwards.
pub fn measure(
    candidate: &mut Detector,
    reference: &mut Detector,
    videos: &[PathBuf],
    frames_per_video: usize,
) -> Result<Agreement, VideoError> {
    let deployed = candidate.config.clone();
    candidate.config = deployed.down_to(SCORING_CONF);
    let scored = score(candidate, reference, videos, frames_per_video);
    candidate.config = deployed;
    scored
}

fn score(
    candidate: &mut Detector,
    reference: &mut Detector,
    videos: &[PathBuf],
    frames_per_video: usize,
) -> Result<Agreement, VideoError> {
    let mut eval = DetectionEval::new();
    let (mut frames, mut reference_objects) = (0, 0);
    for path in videos {
        frames += video::for_each_sampled_frame(path, frames_per_video, |frame| {
            let labels: Vec<Label> = reference
                .detect(&frame.image)
                .iter()
                .map(|d| Label {
                    bbox: d.bbox,
                    class_id: d.class_id,
                })
                .collect();
            eval.add_image(&candidate.detect(&frame.image), &labels);
            reference_objects += labels.len();
        })?;
    }
    Ok(Agreement {
        metrics: eval.metrics(),
        per_class: eval.per_class(),
        frames,
        reference_objects,
    })
}
