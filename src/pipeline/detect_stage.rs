//! The detector as the pipeline's inference stage: batches of frames through the network,
//! leaving out the frames that frame skipping does not analyse.

use super::DetectStage;
use crate::detect::{DetectBatch, Detection};
use crate::video::Frame;

/// A detector (the stream's own or a shared one) behind the pipeline's inference thread.
pub struct FrameDetector {
    detector: Box<dyn DetectBatch>,
    /// Every `stride`-th frame is detected.
    stride: u64,
    max_batch: usize,
}

impl FrameDetector {
    /// One frame per network call unless [`FrameDetector::with_max_batch`] says otherwise:
    /// on the CPU the convolutions already use every core for one frame, and on an NVIDIA
    /// H200 batches of 4 gave the same pipeline throughput as single frames (the network is
    /// not the bottleneck there) at a higher latency.
    pub fn new(detector: impl DetectBatch + 'static) -> Self {
        Self {
            detector: Box::new(detector),
            stride: 1,
            max_batch: 1,
        }
    }

    /// Detects one frame in `skip + 1` (by frame index).
    pub fn with_frame_skip(mut self, skip: u64) -> Self {
        self.stride = skip + 1;
        self
    }

    /// Sets the largest batch (at least 1).
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    fn wanted(&self, frame: &Frame) -> bool {
        frame.index.is_multiple_of(self.stride)
    }
}

impl DetectStage for FrameDetector {
    fn detect(&mut self, frames: &[&Frame]) -> Vec<Option<Vec<Detection>>> {
        let images: Vec<_> = frames
            .iter()
            .filter(|f| self.wanted(f))
            .map(|f| &f.image)
            .collect();
        let mut found = if images.is_empty() {
            Vec::new()
        } else {
            self.detector.detect_batch(&images)
        }
        .into_iter();
        frames
            .iter()
            .map(|f| {
                self.wanted(f)
                    .then(|| found.next().expect("one result per detected frame"))
            })
            .collect()
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }
}
