//! One configuration for every command: a TOML file (`--config`) whose values command-line
//! flags override. Every key has a default, so an empty file is valid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::DetectConfig;
use crate::model::DeviceChoice;
use crate::speed::SpeedConfig;
use crate::track::TrackerConfig;
use crate::zones::ZonesConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model file (`.onnx` or imported `.bpk`).
    pub model: Option<PathBuf>,
    /// `auto`, `gpu` or `cpu`.
    pub device: DeviceChoice,
    pub detect: DetectSection,
    pub tracker: TrackerConfig,
    /// Camera calibration file enabling speed estimation.
    pub calibration: Option<PathBuf>,
    pub speed: SpeedConfig,
    pub output: OutputSection,
    /// Counting lines and areas.
    pub zones: ZonesConfig,
}

/// `[detect]`: thresholds and class selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectSection {
    pub conf: f32,
    pub iou: f32,
    pub max_det: usize,
    pub agnostic_nms: bool,
    /// Classes to keep, by name or id (empty: all).
    pub classes: Vec<String>,
    /// Per-class confidence thresholds, by class name or id.
    pub class_conf: BTreeMap<String, f32>,
    /// Display names replacing the model's, by class name or id (e.g. `"2" = "vehicle"`).
    pub rename: BTreeMap<String, String>,
}

impl Default for DetectSection {
    fn default() -> Self {
        let d = DetectConfig::default();
        Self {
            conf: d.conf,
            iou: d.iou,
            max_det: d.max_det,
            agnostic_nms: d.agnostic_nms,
            classes: Vec::new(),
            class_conf: BTreeMap::new(),
            rename: BTreeMap::new(),
        }
    }
}

/// `[output]`: encoding of annotated video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputSection {
    /// Video bitrate in bits per second (default: from frame size and rate).
    pub bitrate: Option<u32>,
    /// Longest gap between keyframes, seconds.
    pub keyframe_interval: f64,
}

impl Default for OutputSection {
    fn default() -> Self {
        Self {
            bitrate: None,
            keyframe_interval: 2.0,
        }
    }
}

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let fail = |message: String| ConfigError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let config: Self =
            toml::from_str(&text).map_err(|e| fail(format!("invalid configuration: {e}")))?;
        config
            .zones
            .validate()
            .map_err(|e| fail(format!("[zones]: {e}")))?;
        Ok(config)
    }
}

/// Resolves a class given by name or id against the model's class names.
pub fn resolve_class(names: &[String], class: &str) -> Result<usize, ConfigError> {
    let class = class.trim();
    if let Ok(id) = class.parse::<usize>() {
        return if id < names.len() {
            Ok(id)
        } else {
            Err(ConfigError::Invalid(format!(
                "class id {id} is out of range: the model has {} classes",
                names.len()
            )))
        };
    }
    names.iter().position(|n| n == class).ok_or_else(|| {
        ConfigError::Invalid(format!(
            "the model has no class named '{class}' (it knows: {})",
            names.join(", ")
        ))
    })
}

impl DetectSection {
    /// Thresholds with class names resolved against the model's.
    pub fn resolve(&self, names: &[String]) -> Result<DetectConfig, ConfigError> {
        if !(0.0..=1.0).contains(&self.conf) || !(0.0..=1.0).contains(&self.iou) {
            return Err(ConfigError::Invalid(format!(
                "conf ({}) and iou ({}) must lie in 0..1",
                self.conf, self.iou
            )));
        }
        Ok(DetectConfig {
            conf: self.conf,
            iou: self.iou,
            max_det: self.max_det,
            agnostic_nms: self.agnostic_nms,
            classes: self
                .classes
                .iter()
                .map(|c| resolve_class(names, c))
                .collect::<Result<_, _>>()?,
            class_conf: self
                .class_conf
                .iter()
                .map(|(c, t)| Ok((resolve_class(names, c)?, *t)))
                .collect::<Result<_, ConfigError>>()?,
        })
    }

    /// The model's class names with `rename` applied.
    pub fn display_names(&self, names: &[String]) -> Result<Vec<String>, ConfigError> {
        let mut out = names.to_vec();
        for (class, new_name) in &self.rename {
            out[resolve_class(names, class)?] = new_name.clone();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["person", "bicycle", "car"].map(String::from).to_vec()
    }

    #[test]
    fn classes_resolve_by_name_or_id() {
        assert_eq!(resolve_class(&names(), "car").unwrap(), 2);
        assert_eq!(resolve_class(&names(), "1").unwrap(), 1);
        let err = resolve_class(&names(), "truck").unwrap_err().to_string();
        assert!(err.contains("no class named 'truck'"), "{err}");
        assert!(resolve_class(&names(), "7").is_err());
    }

    #[test]
    fn toml_sections_parse_and_unknown_keys_are_rejected() {
        let config: Config = toml::from_str(
            "device = \"cpu\"\n[detect]\nconf = 0.4\nclasses = [\"car\", \"0\"]\n[detect.rename]\ncar = \"vehicle\"\n",
        )
        .unwrap();
        assert_eq!(config.device, DeviceChoice::Cpu);
        let detect = config.detect.resolve(&names()).unwrap();
        assert_eq!(detect.conf, 0.4);
        assert_eq!(detect.classes, vec![2, 0]);
        assert_eq!(config.detect.display_names(&names()).unwrap()[2], "vehicle");
        assert!(toml::from_str::<Config>("[detect]\nconfidence = 0.3\n").is_err());
    }
}
