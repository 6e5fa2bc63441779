//! Models loaded once and shared: every job and stream of a server that asks for the same
//! model file on the same device gets a handle on one loaded copy (its weights, and the
//! fast CPU path's rearranged weights, are reference-counted), instead of loading its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{ComputeDevice, ModelError, YoloModel};

/// Loaded models by (model file, device).
#[derive(Debug, Default)]
pub struct ModelCache {
    loaded: Mutex<HashMap<(PathBuf, String), YoloModel>>,
}

impl ModelCache {
    /// The model at `path` on `device`: loaded now the first time, shared after that. The
    /// input size and other card settings of the handle returned may be changed freely.
    pub fn get_or_load(&self, path: &Path, device: ComputeDevice) -> Result<YoloModel, ModelError> {
        let file = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let key = (file, device.description.clone());
        // Held while loading: two streams starting together load the model once.
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(model) = loaded.get(&key) {
            tracing::info!("{}: sharing the model already loaded", path.display());
            return Ok(model.clone());
        }
        let model = YoloModel::load(path, device)?;
        loaded.insert(key, model.clone());
        Ok(model)
    }

    /// Models held.
    pub fn len(&self) -> usize {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no model is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
