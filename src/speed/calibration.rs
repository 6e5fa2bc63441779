//! Camera calibration: image pixels to road-plane metres.
//!
//! ```toml
//! image_points = [[415.5, 267.2], [864.4, 267.2], [720.6, 67.8], [559.4, 67.8]]
//! world_points = [[-7.0, 20.0], [7.0, 20.0], [7.0, 80.0], [-7.0, 80.0]]
//! # or, for a top-down view only:  metres_per_pixel = 0.05
//! speed_limit = 90          # optional, in `unit`
//! unit = "kmh"              # "kmh" (default) or "mph"
//! zone = [[0, 300], [1280, 300], [1280, 720], [0, 720]]   # optional, image pixels
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::homography::Homography;
use crate::geometry::point_in_polygon;

/// Unit in which speeds are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpeedUnit {
    #[default]
    Kmh,
    Mph,
}

impl SpeedUnit {
    /// Converts metres per second into this unit.
    pub fn from_mps(self, mps: f64) -> f64 {
        match self {
            SpeedUnit::Kmh => mps * 3.6,
            SpeedUnit::Mph => mps * 2.236_936_292,
        }
    }

    /// Label for display, e.g. `km/h`.
    pub fn label(self) -> &'static str {
        match self {
            SpeedUnit::Kmh => "km/h",
            SpeedUnit::Mph => "mph",
        }
    }
}

/// The calibration file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationFile {
    pub image_points: Option<Vec<[f64; 2]>>,
    pub world_points: Option<Vec<[f64; 2]>>,
    pub metres_per_pixel: Option<f64>,
    pub speed_limit: Option<f64>,
    #[serde(default)]
    pub unit: SpeedUnit,
    pub zone: Option<Vec<[f64; 2]>>,
}

/// How image points reach the road plane.
#[derive(Debug, Clone, PartialEq)]
enum GroundMapping {
    Homography(Homography),
    /// Top-down views only: one scale for the whole image.
    Scale(f64),
}

/// A validated calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    mapping: GroundMapping,
    image_points: Vec<[f64; 2]>,
    pub speed_limit: Option<f64>,
    pub unit: SpeedUnit,
    zone: Option<Vec<[f64; 2]>>,
}

/// An unusable calibration file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct CalibrationError {
    pub path: PathBuf,
    pub message: String,
}

impl Calibration {
    /// Reads and validates a calibration TOML file.
    pub fn load(path: &Path) -> Result<Self, CalibrationError> {
        let fail = |message: String| CalibrationError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read the calibration: {e}")))?;
        let file: CalibrationFile =
            toml::from_str(&text).map_err(|e| fail(format!("invalid calibration: {e}")))?;
        Self::from_file(file).map_err(fail)
    }

    /// Validates parsed calibration data.
    pub fn from_file(file: CalibrationFile) -> Result<Self, String> {
        for (key, points) in [
            ("image_points", &file.image_points),
            ("world_points", &file.world_points),
            ("zone", &file.zone),
        ] {
            crate::checks::finite_points(key, points.as_deref().unwrap_or_default())?;
        }
        let mapping = match (
            &file.image_points,
            &file.world_points,
            file.metres_per_pixel,
        ) {
            (Some(img), Some(world), None) => {
                let h = Homography::fit(img, world)?;
                let signs: Vec<bool> = img.iter().map(|p| h.w(p[0], p[1]) > 0.0).collect();
                if signs.iter().any(|&s| s != signs[0]) {
                    return Err("the calibration points straddle the horizon: the homography maps some of them behind the camera".into());
                }
                GroundMapping::Homography(if signs[0] { h } else { h.flipped() })
            }
            (None, None, Some(scale)) if scale > 0.0 && scale.is_finite() => {
                GroundMapping::Scale(scale)
            }
            (None, None, Some(scale)) => {
                return Err(format!("metres_per_pixel must be positive, got {scale}"));
            }
            (None, None, None) => {
                return Err(
                    "give image_points and world_points (or metres_per_pixel for a top-down view)"
                        .into(),
                );
            }
            _ => {
                return Err(
                    "give either image_points with world_points, or metres_per_pixel, not both"
                        .into(),
                );
            }
        };
        if let Some(zone) = &file.zone
            && zone.len() < 3
        {
            return Err(format!(
                "the zone polygon needs at least 3 points, got {}",
                zone.len()
            ));
        }
        if let Some(limit) = file.speed_limit {
            crate::checks::positive("speed_limit", limit)?;
        }
        Ok(Self {
            mapping,
            image_points: file.image_points.unwrap_or_default(),
            speed_limit: file.speed_limit,
            unit: file.unit,
            zone: file.zone,
        })
    }

    /// Checks that the calibration points lie inside a `width` x `height` image.
    pub fn check_image_size(&self, width: u32, height: u32) -> Result<(), String> {
        let (w, h) = (width as f64, height as f64);
        for (i, p) in self
            .image_points
            .iter()
            .chain(self.zone.iter().flatten())
            .enumerate()
        {
            if p[0] < 0.0 || p[1] < 0.0 || p[0] > w || p[1] > h {
                return Err(format!(
                    "point {} ({}, {}) lies outside the {width}x{height} image",
                    i + 1,
                    p[0],
                    p[1]
                ));
            }
        }
        Ok(())
    }

    /// Road-plane position in metres of an image point; `None` outside the measurement zone
    /// or beyond the horizon.
    pub fn to_ground(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        if let Some(zone) = &self.zone
            && !point_in_polygon(zone, x, y)
        {
            return None;
        }
        match &self.mapping {
            GroundMapping::Homography(h) => h.apply(x, y),
            GroundMapping::Scale(s) => Some((x * s, y * s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn highway() -> CalibrationFile {
        toml::from_str(
            "image_points = [[415.55, 267.22], [864.45, 267.22], [720.63, 67.78], [559.37, 67.78]]\nworld_points = [[-7.0, 20.0], [7.0, 20.0], [7.0, 80.0], [-7.0, 80.0]]\n",
        )
        .unwrap()
    }

    #[test]
    fn ground_points_and_horizon() {
        let c = Calibration::from_file(highway()).unwrap();
        let (x, y) = c.to_ground(640.0, 267.22).unwrap();
        assert!(x.abs() < 1e-6 && (y - 20.0).abs() < 1e-6);
        // The vanishing point of the road is above the far points; far above it is the sky.
        assert!(c.to_ground(640.0, -500.0).is_none());
        c.check_image_size(1280, 720).unwrap();
        assert!(
            c.check_image_size(640, 360)
                .unwrap_err()
                .contains("outside")
        );
    }

    #[test]
    fn zone_limits_measurement() {
        let mut file = highway();
        file.zone = Some(vec![
            [0.0, 200.0],
            [1280.0, 200.0],
            [1280.0, 720.0],
            [0.0, 720.0],
        ]);
        let c = Calibration::from_file(file).unwrap();
        assert!(c.to_ground(640.0, 300.0).is_some());
        assert!(c.to_ground(640.0, 100.0).is_none());
    }

    #[test]
    fn invalid_files_explain_themselves() {
        let mut both = highway();
        both.metres_per_pixel = Some(0.1);
        assert!(
            Calibration::from_file(both)
                .unwrap_err()
                .contains("not both")
        );
        assert!(
            Calibration::from_file(CalibrationFile::default())
                .unwrap_err()
                .contains("give image_points")
        );
        let mut nan_point = highway();
        nan_point.world_points.as_mut().unwrap()[2][1] = f64::NAN;
        assert!(
            Calibration::from_file(nan_point)
                .unwrap_err()
                .contains("world_points: point 3 is not a finite number")
        );
        let mut straddle = highway();
        // Swapping two far points twists the quadrilateral: only a map through the horizon
        // can do that.
        straddle.image_points = Some(vec![
            [415.55, 267.22],
            [864.45, 267.22],
            [559.37, 67.78],
            [720.63, 67.78],
        ]);
        assert!(
            Calibration::from_file(straddle)
                .unwrap_err()
                .contains("horizon")
        );
        let top_down = CalibrationFile {
            metres_per_pixel: Some(0.05),
            ..Default::default()
        };
        let c = Calibration::from_file(top_down).unwrap();
        assert_eq!(c.to_ground(100.0, 20.0), Some((5.0, 1.0)));
    }
}
