//! One configuration for every command: a TOML file (`--config`) whose values command-line
//! flags override. Every key has a default, so an empty file is valid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::DetectConfig;
use crate::model::DeviceChoice;
use crate::sinks::SinkSettings;
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
    pub input: InputSection,
    /// Counting lines and areas.
    pub zones: ZonesConfig,
    /// Where events are published besides the result files (MQTT, webhooks).
    pub sinks: SinkSettings,
    /// The cameras `live` runs when no `--source` is given (`[[streams]]`).
    pub streams: Vec<StreamSection>,
}

/// `[[streams]]`: one camera of a `live` run, with what differs from the rest of the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSection {
    /// As `live --source`.
    pub source: String,
    /// The stream's name in outputs, events and `{stream}` (default: from the source).
    pub name: Option<String>,
    /// Annotated video, JSON lines, CSV, MOTChallenge tracks of this stream.
    pub output: Option<PathBuf>,
    pub events: Option<PathBuf>,
    pub csv: Option<PathBuf>,
    pub mot: Option<PathBuf>,
    /// This camera's calibration file instead of the top-level `calibration`.
    pub calibration: Option<PathBuf>,
    /// This camera's lines and areas instead of `[zones]`.
    pub zones: Option<ZonesConfig>,
    /// This stream's tracker settings instead of `[tracker]`.
    pub tracker: Option<TrackerConfig>,
}

impl StreamSection {
    /// The configuration this stream runs with: `config` with the stream's zones and tracker
    /// settings in place of its own.
    pub fn apply(&self, config: &Config) -> Config {
        let mut config = config.for_one_stream(self.zones.as_ref(), self.tracker.as_ref());
        config.streams.clear();
        config
    }

    fn validate(&self) -> Result<(), String> {
        if self.source.trim().is_empty() {
            return Err("source must not be empty".into());
        }
        if let Some(zones) = &self.zones {
            zones.validate().map_err(|e| format!("zones: {e}"))?;
        }
        if let Some(tracker) = &self.tracker {
            tracker.validate().map_err(|e| format!("tracker: {e}"))?;
        }
        Ok(())
    }
}

/// `[detect]`: thresholds and class selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectSection {
    pub conf: f32,
    pub iou: f32,
    pub max_det: usize,
    pub agnostic_nms: bool,
    /// Classes to keep, by name or id (empty: all); ids may be written as TOML integers.
    #[serde(deserialize_with = "names_or_ids")]
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

/// `[input]`: limits on what inputs may demand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputSection {
    /// Largest still image decoded, in pixels; larger ones are refused before decoding.
    pub max_image_pixels: u64,
}

impl Default for InputSection {
    fn default() -> Self {
        Self {
            max_image_pixels: crate::video::images::DEFAULT_MAX_PIXELS,
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

/// A class list entry: `"car"`, `"2"` or `2`.
#[derive(Deserialize)]
#[serde(untagged)]
enum NameOrId {
    Name(String),
    Id(u64),
}

/// Reads a list of class names and ids, ids kept as their decimal text.
fn names_or_ids<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<NameOrId>::deserialize(deserializer)?
        .into_iter()
        .map(|entry| match entry {
            NameOrId::Name(name) => name,
            NameOrId::Id(id) => id.to_string(),
        })
        .collect())
}

impl DetectSection {
    /// Checks the thresholds are finite numbers in 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        use crate::checks::in_range;
        in_range("conf", self.conf.into(), 0.0, 1.0)?;
        in_range("iou", self.iou.into(), 0.0, 1.0)?;
        for (class, threshold) in &self.class_conf {
            in_range(
                &format!("class_conf.{class}"),
                (*threshold).into(),
                0.0,
                1.0,
            )?;
        }
        Ok(())
    }
}

impl OutputSection {
    /// Checks the encoder settings can produce a video.
    pub fn validate(&self) -> Result<(), String> {
        if self.bitrate == Some(0) {
            return Err("bitrate must be above 0 bits per second".into());
        }
        crate::checks::positive("keyframe_interval", self.keyframe_interval)
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
    /// This configuration for one stream of several: with the stream's own zones and tracker
    /// settings, where it has them, in place of these.
    pub fn for_one_stream(
        &self,
        zones: Option<&ZonesConfig>,
        tracker: Option<&TrackerConfig>,
    ) -> Config {
        let mut config = self.clone();
        if let Some(zones) = zones {
            config.zones = zones.clone();
        }
        if let Some(tracker) = tracker {
            config.tracker = tracker.clone();
        }
        config
    }

    /// Reads a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let fail = |message: String| ConfigError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let config: Self =
            toml::from_str(&text).map_err(|e| fail(format!("invalid configuration: {e}")))?;
        config.validate().map_err(fail)?;
        Ok(config)
    }

    /// Checks every value is usable, naming the section and key of the first that is not.
    pub fn validate(&self) -> Result<(), String> {
        let sections: [(&str, Result<(), String>); 7] = [
            ("sinks", self.sinks.validate().map_err(|e| e.to_string())),
            ("detect", self.detect.validate()),
            ("tracker", self.tracker.validate()),
            ("speed", self.speed.validate()),
            ("output", self.output.validate()),
            ("zones", self.zones.validate()),
            (
                "input",
                crate::checks::positive("max_image_pixels", self.input.max_image_pixels as f64),
            ),
        ];
        for (name, result) in sections {
            result.map_err(|e| format!("[{name}] {e}"))?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, stream) in self.streams.iter().enumerate() {
            stream
                .validate()
                .map_err(|e| format!("[[streams]] {}: {e}", i + 1))?;
            if let Some(name) = &stream.name
                && !names.insert(name)
            {
                return Err(format!("[[streams]] {}: the name {name} is taken", i + 1));
            }
        }
        Ok(())
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

    #[test]
    fn class_ids_may_be_integers() {
        let config: Config = toml::from_str("[detect]\nclasses = [7, \"car\"]\n").unwrap();
        assert_eq!(config.detect.classes, vec!["7", "car"]);
    }

    /// Each value that once reached a stage unchecked (an infinite match limit hung the
    /// assignment solver; a NaN border margin reported 243 km/h) is refused at load, naming
    /// its section and key.
    #[test]
    fn unusable_values_are_refused_with_their_key() {
        let cases = [
            ("[tracker]\nmatch_thresh = inf\n", "[tracker] match_thresh"),
            ("[tracker]\nhigh_thresh = nan\n", "[tracker] high_thresh"),
            ("[tracker]\nlow_thresh = -0.5\n", "[tracker] low_thresh"),
            ("[tracker]\ntrack_buffer = -1\n", "[tracker] track_buffer"),
            ("[speed]\nwindow = nan\n", "[speed] window"),
            ("[speed]\nmin_span = -1\n", "[speed] min_span"),
            ("[speed]\nborder_margin = nan\n", "[speed] border_margin"),
            ("[speed]\nborder_hold = -1\n", "[speed] border_hold"),
            (
                "[speed]\nmax_standard_error_kmh = nan\n",
                "[speed] max_standard_error_kmh",
            ),
            (
                "[output]\nkeyframe_interval = 0\n",
                "[output] keyframe_interval",
            ),
            (
                "[output]\nkeyframe_interval = nan\n",
                "[output] keyframe_interval",
            ),
            ("[output]\nbitrate = 0\n", "[output] bitrate"),
            (
                "[detect.class_conf]\nperson = nan\n",
                "[detect] class_conf.person",
            ),
            ("[detect]\nconf = inf\n", "[detect] conf"),
            (
                "[[zones.lines]]\nname = \"a\"\nfrom = [0, nan]\nto = [1, 1]\n",
                "[zones] line 'a'",
            ),
        ];
        let dir = std::env::temp_dir().join(format!("streamtrack-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, (text, expected)) in cases.iter().enumerate() {
            let path = dir.join(format!("case{i}.toml"));
            std::fs::write(&path, text).unwrap();
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains(&path.display().to_string()),
                "{text}: {err}"
            );
        }
        std::fs::write(dir.join("default.toml"), "").unwrap();
        assert!(Config::load(&dir.join("default.toml")).is_ok());
    }
}
