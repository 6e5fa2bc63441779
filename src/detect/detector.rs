//! The detection stage: letterbox a batch of frames, run the network, decode and suppress.

use image::RgbImage;
use rayon::prelude::*;

use super::decode::to_original;
use super::{DetectConfig, Detection, decode_candidates, decode_survivors, non_max_suppression};
use crate::model::preprocess::Letterbox;
use crate::model::{NetworkInput, RawOutput, Survivors, YoloModel, survivors};

/// A YOLO model plus thresholds: frames in, detections in original pixels out.
pub struct Detector {
    pub model: YoloModel,
    pub config: DetectConfig,
    /// Columns to read back on the next device-filtered batch.
    survivor_capacity: usize,
}

/// What the pipeline's inference stage calls: a batch of frames in, their detections out.
/// A [`Detector`] of the stream's own, or a handle on one that batches frames of several
/// streams (`engine::SharedDetector`).
pub trait DetectBatch: Send {
    /// Detections of each image, in its original pixels.
    fn detect_batch(&mut self, images: &[&RgbImage]) -> Vec<Vec<Detection>>;
}

impl DetectBatch for Detector {
    fn detect_batch(&mut self, images: &[&RgbImage]) -> Vec<Vec<Detection>> {
        Detector::detect_batch(self, images)
    }
}

/// The network's output as the detector reads it back.
pub enum HeadOutput {
    /// The whole `[batch, 4 + nc, anchors]` output (CPU backends).
    Dense(RawOutput),
    /// Only the anchors above the confidence floor (GPU backends).
    Filtered(Survivors),
}

impl Detector {
    pub fn new(model: YoloModel, config: DetectConfig) -> Self {
        Self {
            model,
            config,
            survivor_capacity: survivors::INITIAL_CAPACITY,
        }
    }

    /// Class names by id.
    pub fn class_names(&self) -> &[String] {
        self.model.class_names()
    }

    /// Detects objects in one frame.
    pub fn detect(&mut self, image: &RgbImage) -> Vec<Detection> {
        self.detect_batch(&[image])
            .pop()
            .expect("one result per image")
    }

    /// Detects objects in each frame of a batch (one network call).
    pub fn detect_batch(&mut self, images: &[&RgbImage]) -> Vec<Vec<Detection>> {
        let (input, letterboxes) = self.preprocess(images);
        let output = self.infer(input);
        self.postprocess(&output, &letterboxes)
    }

    /// Runs the network on a preprocessed batch; where the model
    /// [filters on the device](YoloModel::filters_on_device), only the anchors above the
    /// lowest confidence threshold come back.
    pub fn infer(&mut self, input: NetworkInput) -> HeadOutput {
        if !self.model.filters_on_device() {
            return HeadOutput::Dense(self.model.infer(input));
        }
        let floor = self.config.min_threshold();
        let survivors = self
            .model
            .infer_survivors(input, floor, self.survivor_capacity);
        self.survivor_capacity = survivors.next_capacity();
        HeadOutput::Filtered(survivors)
    }

    /// Letterboxes `images` into one network input batch (see [`YoloModel::letterbox`]).
    pub fn preprocess(&self, images: &[&RgbImage]) -> (NetworkInput, Vec<Letterbox>) {
        self.model.letterbox(images)
    }

    /// Decodes, thresholds and suppresses the network output of each image, in its original
    /// pixels.
    pub fn postprocess(
        &self,
        output: &HeadOutput,
        letterboxes: &[Letterbox],
    ) -> Vec<Vec<Detection>> {
        letterboxes
            .par_iter()
            .enumerate()
            .map(|(b, letterbox)| {
                let candidates = match output {
                    HeadOutput::Dense(raw) => {
                        decode_candidates(raw.image(b), raw.anchors, &self.config)
                    }
                    HeadOutput::Filtered(survivors) => {
                        let (block, count) = survivors.image(b);
                        decode_survivors(block, survivors.capacity(), count, &self.config)
                    }
                };
                let kept = non_max_suppression(
                    candidates,
                    self.config.iou,
                    self.config.max_det,
                    self.config.agnostic_nms,
                );
                to_original(&kept, letterbox)
            })
            .collect()
    }
}
