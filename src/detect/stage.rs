//! The detector as the pipeline's inference stage: batches of frames through the network,
//! leaving out the frames that frame skipping does not analyse.

use crate::pipeline::DetectStage;
use crate::video::Frame;

use super::{Detection, Detector};

/// Frames batched on a GPU when they are waiting (one network call for several frames).
pub const GPU_BATCH: usize = 4;

/// [`Detector`] behind the pipeline's inference thread.
pub struct FrameDetector {
    detector: Detector,
    /// Every `stride`-th frame is detected.
    stride: u64,
    max_batch: usize,
}

impl FrameDetector {
    /// Batches up to [`GPU_BATCH`] waiting frames on a GPU; on the CPU one frame at a time
    /// (the convolutions already use every core for one frame, and batching only adds latency).
    pub fn new(detector: Detector) -> Self {
        let max_batch = if detector.model.device.is_gpu {
            GPU_BATCH
        } else {
            1
        };
        Self {
            detector,
            stride: 1,
            max_batch,
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
