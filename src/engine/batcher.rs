//! Cross-stream batching, as Triton's dynamic batcher does it: streams submit their frames
//! to one scheduler thread that owns the network; it takes whatever frames of any stream are
//! waiting (up to a maximum batch, waiting at most a set time for more), runs one network
//! call and hands each stream its detections. Each stream letterboxes its own frames before
//! submitting them, so that work stays spread over the streams' threads; tracking, speeds,
//! zones and outputs stay with each stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::detect::{DetectBatch, Detection, Detector};
use crate::model::preprocess::Letterbox;
use crate::model::{NetworkInput, YoloModel};

/// How the scheduler forms batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most frames per network call (at least 1).
    pub max_batch: usize,
    /// How long the first frame of a batch may wait for others. Zero batches only what is
    /// already waiting.
    pub max_wait: Duration,
}

/// What the scheduler has done so far.
#[derive(Debug, Default)]
pub struct BatchCounts {
    /// Network calls.
    pub calls: AtomicU64,
    /// Frames those calls took.
    pub frames: AtomicU64,
}

/// Frames of one stream's call, letterboxed, and where their detections go.
struct Request {
    input: NetworkInput,
    letterboxes: Vec<Letterbox>,
    reply: SyncSender<Vec<Vec<Detection>>>,
}

/// A handle on a detector that batches the frames of every stream holding a handle. The
/// scheduler thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct SharedDetector {
    /// Network calls and the frames they took, so far.
    counts: Arc<BatchCounts>,
    /// Counts the handles (the scheduler thread holds none).
    handle: Arc<()>,
    /// For letterboxing on the caller's thread (weights are shared, not copied).
    model: YoloModel,
    /// Display names of the classes.
    names: Arc<[String]>,
    requests: SyncSender<Request>,
}

impl std::fmt::Debug for SharedDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDetector")
            .field("model", &self.model.card.source)
            .finish_non_exhaustive()
    }
}

impl SharedDetector {
    /// Starts the scheduler thread that runs `detector` for every handle; `names` are the
    /// classes' display names.
    pub fn start(
        detector: Detector,
        names: Vec<String>,
        settings: BatchSettings,
    ) -> std::io::Result<Self> {
        let model = detector.model.clone();
        let max_batch = settings.max_batch.max(1);
        let (requests, queue) = sync_channel(max_batch);
        let counts = Arc::new(BatchCounts::default());
        let counted = counts.clone();
        std::thread::Builder::new()
            .name("batcher".into())
            .spawn(move || schedule(detector, &queue, max_batch, settings.max_wait, &counted))?;
        Ok(Self {
            counts,
            handle: Arc::default(),
            model,
            names: names.into(),
            requests,
        })
    }

    /// Display names of the classes.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Handles on this detector alive, this one included.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.handle)
    }

    /// Network calls and frames so far.
    pub fn counts(&self) -> &BatchCounts {
        &self.counts
    }
}

impl DetectBatch for SharedDetector {
    /// # Panics
    /// When the scheduler thread is gone (it ends only after the last handle, or by a
    /// panic in the network).
    fn detect_batch(&mut self, images: &[&RgbImage]) -> Vec<Vec<Detection>> {
        let (input, letterboxes) = self.model.letterbox(images);
        let (reply, answer) = sync_channel(1);
        let request = Request {
            input,
            letterboxes,
            reply,
        };
        self.requests
            .send(request)
            .ok()
            .and_then(|()| answer.recv().ok())
            .expect("the shared detector's scheduler thread stopped")
    }
}

/// The scheduler: one network call per batch of waiting requests, until every handle is
/// gone.
fn schedule(
    mut detector: Detector,
    queue: &Receiver<Request>,
    max_batch: usize,
    max_wait: Duration,
    counts: &BatchCounts,
) {
    while let Ok(first) = queue.recv() {
        let deadline = Instant::now() + max_wait;
        let mut frames = first.letterboxes.len();
        let mut batch = vec![first];
        while frames < max_batch {
            let next = match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => queue.recv_timeout(left),
                _ => queue.try_recv().map_err(|_| RecvTimeoutError::Timeout),
            };
            match next {
                Ok(request) => {
                    frames += request.letterboxes.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let mut inputs = Vec::with_capacity(batch.len());
        let mut letterboxes = Vec::with_capacity(frames);
        let mut replies = Vec::with_capacity(batch.len());
        for request in batch {
            inputs.push(request.input);
            replies.push((request.letterboxes.len(), request.reply));
            letterboxes.extend(request.letterboxes);
        }
        counts.calls.fetch_add(1, Ordering::Relaxed);
        counts.frames.fetch_add(frames as u64, Ordering::Relaxed);
        let output = detector.infer(NetworkInput::cat(inputs));
        let mut detections = detector.postprocess(&output, &letterboxes).into_iter();
        for (count, reply) in replies {
            // A stream that stopped waiting has nothing to receive.
            let _ = reply.send(detections.by_ref().take(count).collect());
        }
    }
}
