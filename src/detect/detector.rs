//! The detection stage: letterbox a batch of frames, run the network, decode and suppress.

use image::RgbImage;
use rayon::prelude::*;

use super::decode::to_original;
use super::{DetectConfig, Detection, decode_candidates, decode_survivors, non_max_suppression};
use crate::model::preprocess::{Letterbox, letterbox_into};
use crate::model::{RawOutput, Survivors, YoloModel, survivors};

/// A YOLO model plus thresholds: frames in, detections in original pixels out.
pub struct Detector {
    pub model: YoloModel,
    pub config: DetectConfig,
    /// Columns to read back on the next device-filtered batch.
    survivor_capacity: usize,
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
        let output = self.infer(input, images.len());
        self.postprocess(&output, &letterboxes)
    }

    /// Runs the network on a preprocessed batch; where the model
    /// [filters on the device](YoloModel::filters_on_device), only the anchors above the
    /// lowest confidence threshold come back.
    pub fn infer(&mut self, input: Vec<f32>, batch: usize) -> HeadOutput {
        if !self.model.filters_on_device() {
            return HeadOutput::Dense(self.model.infer(input, batch));
        }
        let floor = self.config.min_threshold();
        let survivors = self
            .model
            .infer_survivors(input, batch, floor, self.survivor_capacity);
        self.survivor_capacity = survivors.next_capacity();
        HeadOutput::Filtered(survivors)
    }

    /// Letterboxes `images` into one planar network input batch.
    pub fn preprocess(&self, images: &[&RgbImage]) -> (Vec<f32>, Vec<Letterbox>) {
        let (w, h) = self.model.input_size();
        let per_image = 3 * w as usize * h as usize;
        // The network takes ownership of the buffer, so it is allocated per batch.
        let mut input = vec![0.0; per_image * images.len()];
        let letterboxes = input
            .par_chunks_mut(per_image)
            .zip(images.par_iter())
            .map(|(buffer, image)| letterbox_into(image, (w, h), buffer))
            .collect();
        (input, letterboxes)
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
