//! What several streams share at run time: one network that batches their frames
//! ([`SharedDetector`]). Loaded models are shared through `model::ModelCache`.

mod batcher;

pub use batcher::{BatchCounts, BatchSettings, SharedDetector};
