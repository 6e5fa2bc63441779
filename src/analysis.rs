//! The per-frame analysis behind `process`: detect, then annotate.

use image::RgbImage;

use crate::annotate::{Annotation, Annotator};
use crate::detect::{Detection, Detector};
use crate::pipeline::FrameStage;
use crate::video::Frame;

/// Detection and drawing for each frame.
pub struct Analysis {
    detector: Detector,
    names: Vec<String>,
    annotator: Annotator,
    /// Detections of every frame so far, in order (for callers that want them).
    pub detections_per_frame: u64,
}

impl Analysis {
    /// `names` are the display names (after any renaming).
    pub fn new(detector: Detector, names: Vec<String>) -> Self {
        Self {
            detector,
            names,
            annotator: Annotator::new(),
            detections_per_frame: 0,
        }
    }

    fn annotations(&self, detections: &[Detection]) -> Vec<Annotation> {
        detections
            .iter()
            .map(|d| Annotation {
                bbox: d.bbox,
                class_id: d.class_id,
                class_name: self.names[d.class_id].clone(),
                score: d.score,
                track_id: None,
                speed: None,
            })
            .collect()
    }
}

impl FrameStage for Analysis {
    fn process(&mut self, frame: &Frame, canvas: &mut RgbImage) -> anyhow::Result<()> {
        let detections = self.detector.detect(&frame.image);
        self.detections_per_frame += detections.len() as u64;
        let annotations = self.annotations(&detections);
        self.annotator.draw(canvas, &annotations);
        Ok(())
    }
}
