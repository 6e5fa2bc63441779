//! Speed estimation on the road plane from a camera calibration.

pub mod calibration;
pub mod estimator;
mod hold;
pub mod homography;

pub use calibration::{Calibration, CalibrationFile, SpeedUnit};
pub use estimator::{MotionModel, SpeedConfig, SpeedEstimator, TrackSummary};
