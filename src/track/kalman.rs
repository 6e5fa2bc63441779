//! Constant-velocity Kalman filter on a box: `(cx, cy, aspect, height)` with ByteTrack's
//! noise model (position noise `h / 20`, velocity noise `h / 160`, both proportional to the
//! box height; the aspect ratio nearly fixed), or `(cx, cy, width, height)` with BoT-SORT's
//! (each coordinate's noise proportional to the width or height it goes with).

// Small dense matrices read best with explicit indices.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

use super::camera_motion::Similarity;

/// State: the four box coordinates and their velocities (per frame).
pub type State = [f64; 8];
/// 8 x 8 covariance, row-major.
pub type Covariance = [[f64; 8]; 8];
/// Measurement: the four box coordinates.
pub type Measurement = [f64; 4];

const WEIGHT_POSITION: f64 = 1.0 / 20.0;
const WEIGHT_VELOCITY: f64 = 1.0 / 160.0;

/// Chi-square 0.95 quantiles for 1..=4 degrees of freedom, for gating.
pub const CHI2_95: [f64; 5] = [0.0, 3.8415, 5.9915, 7.8147, 9.4877];

/// Which box coordinates a filter tracks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxState {
    /// Centre, aspect ratio (width / height) and height, as ByteTrack: the aspect ratio has
    /// a small fixed noise, so a box whose shape changes (a vehicle coming into view past
    /// the image border) is predicted with its old shape.
    #[default]
    Xyah,
    /// Centre, width and height, as BoT-SORT: width and height change independently.
    Xywh,
}

impl BoxState {
    /// The measurement of a box with centre `(cx, cy)` and size `w x h`.
    pub fn measurement(self, (cx, cy): (f64, f64), w: f64, h: f64) -> Measurement {
        match self {
            BoxState::Xyah => [cx, cy, w / h.max(1e-3), h],
            BoxState::Xywh => [cx, cy, w, h],
        }
    }

    /// Width and height of the box a state or measurement describes.
    pub fn size(self, m: &[f64]) -> (f64, f64) {
        match self {
            BoxState::Xyah => (m[2] * m[3], m[3]),
            BoxState::Xywh => (m[2], m[3]),
        }
    }

    /// Standard deviations of the four coordinates at `weight` times the box's size; the
    /// aspect ratio (ByteTrack's state) gets `aspect` whatever the size.
    fn deviations(self, m: &[f64], weight: f64, aspect: f64) -> [f64; 4] {
        let (w, h) = self.size(m);
        match self {
            BoxState::Xyah => [weight * h, weight * h, aspect, weight * h],
            BoxState::Xywh => [weight * w, weight * h, weight * w, weight * h],
        }
    }

    /// Stops the size from changing further (a lost track's prediction keeps its size).
    pub fn freeze_size(self, mean: &mut State) {
        if self == BoxState::Xywh {
            mean[6] = 0.0;
        }
        mean[7] = 0.0;
    }
}

/// Mean and covariance of one track.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    pub mean: State,
    pub covariance: Covariance,
    pub boxes: BoxState,
}

/// Starts a track at `z` with zero velocity and size-scaled uncertainty.
pub fn initiate(z: Measurement, boxes: BoxState) -> Gaussian {
    let position = boxes.deviations(&z, 2.0 * WEIGHT_POSITION, 1e-2);
    let velocity = boxes.deviations(&z, 10.0 * WEIGHT_VELOCITY, 1e-5);
    let mut covariance = [[0.0; 8]; 8];
    for i in 0..4 {
        covariance[i][i] = position[i] * position[i];
        covariance[i + 4][i + 4] = velocity[i] * velocity[i];
    }
    Gaussian {
        mean: [z[0], z[1], z[2], z[3], 0.0, 0.0, 0.0, 0.0],
        covariance,
        boxes,
    }
}

/// Advances the state by `dt` frames (1.0 for consecutive frames).
pub fn predict(g: &mut Gaussian, dt: f64) {
    let position = g.boxes.deviations(&g.mean, WEIGHT_POSITION, 1e-2);
    let velocity = g.boxes.deviations(&g.mean, WEIGHT_VELOCITY, 1e-5);
    for i in 0..4 {
        g.mean[i] += dt * g.mean[i + 4];
    }
    // P = F P F^T with F = [[I, dt I], [0, I]].
    let p = g.covariance;
    let mut fp = [[0.0; 8]; 8];
    for i in 0..8 {
        for j in 0..8 {
            fp[i][j] = p[i][j] + if i < 4 { dt * p[i + 4][j] } else { 0.0 };
        }
    }
    for i in 0..8 {
        for j in 0..8 {
            g.covariance[i][j] = fp[i][j] + if j < 4 { dt * fp[i][j + 4] } else { 0.0 };
        }
    }
    // Process noise grows with the time step.
    for i in 0..4 {
        g.covariance[i][i] += position[i] * position[i] * dt.max(1e-6);
        g.covariance[i + 4][i + 4] += velocity[i] * velocity[i] * dt.max(1e-6);
    }
}

/// Moves the state with the camera: the centre by `motion`, its velocity and the box size
/// by the motion's rotation and zoom (BoT-SORT's global motion compensation), and the
/// covariance with them (`J P J^T`).
pub fn warp(g: &mut Gaussian, motion: &Similarity) {
    let (a, b, zoom) = (motion.a, motion.b, motion.scale());
    // J: the rotation-and-zoom block on (cx, cy) and on (vx, vy); the zoom on the size
    // coordinates (height, and width for xywh; the aspect ratio is unchanged).
    let size_factor = |i: usize| match (g.boxes, i) {
        (BoxState::Xyah, 2) => 1.0,
        _ => zoom,
    };
    let mut j = [[0.0; 8]; 8];
    for base in [0, 4] {
        j[base][base] = a;
        j[base][base + 1] = -b;
        j[base + 1][base] = b;
        j[base + 1][base + 1] = a;
        for i in 2..4 {
            j[base + i][base + i] = size_factor(i);
        }
    }
    let m = g.mean;
    let (cx, cy) = motion.apply(m[0], m[1]);
    g.mean = std::array::from_fn(|i| (0..8).map(|k| j[i][k] * m[k]).sum());
    (g.mean[0], g.mean[1]) = (cx, cy);
    let p = g.covariance;
    let jp: Covariance =
        std::array::from_fn(|r| std::array::from_fn(|c| (0..8).map(|k| j[r][k] * p[k][c]).sum()));
    g.covariance =
        std::array::from_fn(|r| std::array::from_fn(|c| (0..8).map(|k| jp[r][k] * j[c][k]).sum()));
}

/// Projection to measurement space: mean and innovation covariance `S`, with the measurement
/// noise's variance multiplied by `noise_scale`.
fn project(g: &Gaussian, noise_scale: f64) -> (Measurement, [[f64; 4]; 4]) {
    let r = g.boxes.deviations(&g.mean, WEIGHT_POSITION, 1e-1);
    let mut s = [[0.0; 4]; 4];
    for i in 0..4 {
        for j in 0..4 {
            s[i][j] = g.covariance[i][j];
        }
        s[i][i] += r[i] * r[i] * noise_scale;
    }
    ([g.mean[0], g.mean[1], g.mean[2], g.mean[3]], s)
}

/// Corrects the state with measurement `z`, whose noise variance is `noise_scale` times the
/// height-scaled default (1: ByteTrack's filter; `1 - score`: the NSA Kalman filter of GIAOTracker,
/// which trusts confident detections more).
pub fn update(g: &mut Gaussian, z: Measurement, noise_scale: f64) {
    let (projected, s) = project(g, noise_scale);
    let s_inv = invert4(&s);
    // K = P H^T S^-1 (8 x 4); P H^T is the first four columns of P.
    let mut k = [[0.0; 4]; 8];
    for i in 0..8 {
        for j in 0..4 {
            k[i][j] = (0..4).map(|m| g.covariance[i][m] * s_inv[m][j]).sum();
        }
    }
    let innovation: [f64; 4] = std::array::from_fn(|i| z[i] - projected[i]);
    for i in 0..8 {
        g.mean[i] += (0..4).map(|j| k[i][j] * innovation[j]).sum::<f64>();
    }
    // P -= K S K^T, which equals K (H P).
    let p = g.covariance;
    for i in 0..8 {
        for j in 0..8 {
            g.covariance[i][j] = p[i][j] - (0..4).map(|m| k[i][m] * p[m][j]).sum::<f64>();
        }
    }
}

/// Squared Mahalanobis distance of `z` from the predicted measurement.
pub fn gating_distance(g: &Gaussian, z: Measurement) -> f64 {
    let (projected, s) = project(g, 1.0);
    let s_inv = invert4(&s);
    let d: [f64; 4] = std::array::from_fn(|i| z[i] - projected[i]);
    (0..4)
        .map(|i| (0..4).map(|j| d[i] * s_inv[i][j] * d[j]).sum::<f64>())
        .sum()
}

/// Inverse of a symmetric positive-definite 4 x 4 matrix (Gauss-Jordan with pivoting).
fn invert4(m: &[[f64; 4]; 4]) -> [[f64; 4]; 4] {
    let mut a = *m;
    let mut inv = [[0.0; 4]; 4];
    for (i, row) in inv.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for col in 0..4 {
        let pivot = (col..4)
            .max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))
            .expect("rows");
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let p = a[col][col];
        for j in 0..4 {
            a[col][j] /= p;
            inv[col][j] /= p;
        }
        for r in 0..4 {
            if r != col {
                let f = a[r][col];
                for j in 0..4 {
                    a[r][j] -= f * a[col][j];
                    inv[r][j] -= f * inv[col][j];
                }
            }
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A box 60 px wide whose height grows by 2 px a frame (a vehicle coming into view past
    /// the top of the image): with width and height in the state the width stays where it
    /// was measured; with ByteTrack's nearly fixed aspect ratio it grows with the height.
    #[test]
    fn a_width_and_height_state_follows_a_changing_shape() {
        let predicted_width = |boxes: BoxState| {
            let box_at =
                |frame: f64| boxes.measurement((100.0, 10.0 + frame), 60.0, 10.0 + 2.0 * frame);
            let mut g = initiate(box_at(0.0), boxes);
            for frame in 1..=10 {
                predict(&mut g, 1.0);
                update(&mut g, box_at(frame as f64), 1.0);
            }
            predict(&mut g, 1.0);
            boxes.size(&g.mean).0
        };
        let xywh = predicted_width(BoxState::Xywh);
        assert!((xywh - 60.0).abs() < 1.0, "xywh: {xywh}");
        let xyah = predicted_width(BoxState::Xyah);
        assert!(xyah > 120.0, "xyah: {xyah}");
    }

    #[test]
    fn constant_velocity_is_learned_and_extrapolated() {
        let mut g = initiate([100.0, 50.0, 0.5, 80.0], BoxState::Xyah);
        for step in 1..=20 {
            predict(&mut g, 1.0);
            update(&mut g, [100.0 + 4.0 * step as f64, 50.0, 0.5, 80.0], 1.0);
        }
        assert!((g.mean[4] - 4.0).abs() < 0.2, "vx = {}", g.mean[4]);
        predict(&mut g, 3.0);
        assert!(
            (g.mean[0] - (180.0 + 12.0)).abs() < 1.5,
            "x = {}",
            g.mean[0]
        );
    }

    /// Warping by the camera's motion: a zoom of 2 with a quarter turn and a shift moves the
    /// centre as the camera did, turns and doubles the velocity, doubles the height (and the
    /// width of xywh, not xyah's aspect ratio), and the position's spread with them.
    #[test]
    fn warping_moves_centre_velocity_size_and_spread_with_the_camera() {
        let motion = Similarity {
            a: 0.0,
            b: 2.0,
            tx: 5.0,
            ty: -3.0,
        };
        for boxes in [BoxState::Xyah, BoxState::Xywh] {
            let mut g = initiate(boxes.measurement((10.0, 20.0), 30.0, 60.0), boxes);
            g.mean[4] = 1.0;
            let before = g.clone();
            warp(&mut g, &motion);
            // (10, 20) turned a quarter and doubled is (-40, 20), then shifted.
            assert_eq!((g.mean[0], g.mean[1]), (-35.0, 17.0));
            assert_eq!((g.mean[4], g.mean[5]), (0.0, 2.0));
            let (w, h) = boxes.size(&g.mean);
            assert!(
                (w - 60.0).abs() < 1e-9 && (h - 120.0).abs() < 1e-9,
                "{boxes:?}: {w} x {h}"
            );
            // x and y swap their spreads, each doubled.
            assert!((g.covariance[0][0] - 4.0 * before.covariance[1][1]).abs() < 1e-9);
            assert!((g.covariance[1][1] - 4.0 * before.covariance[0][0]).abs() < 1e-9);
            assert!((g.covariance[3][3] - 4.0 * before.covariance[3][3]).abs() < 1e-9);
            let identity = {
                let mut same = before.clone();
                warp(&mut same, &Similarity::IDENTITY);
                same
            };
            assert_eq!(identity, before);
        }
    }

    #[test]
    fn update_pulls_towards_the_measurement_and_shrinks_uncertainty() {
        let mut g = initiate([0.0, 0.0, 1.0, 100.0], BoxState::Xyah);
        predict(&mut g, 1.0);
        let before = g.covariance[0][0];
        let mut confident = g.clone();
        update(&mut g, [10.0, 0.0, 1.0, 100.0], 1.0);
        assert!(g.mean[0] > 0.0 && g.mean[0] < 10.0);
        assert!(g.covariance[0][0] < before);
        // A smaller measurement noise (a confident detection under NSA) pulls further.
        update(&mut confident, [10.0, 0.0, 1.0, 100.0], 0.1);
        assert!(confident.mean[0] > g.mean[0] && confident.mean[0] < 10.0);
        // Symmetric covariance.
        for i in 0..8 {
            for j in 0..8 {
                assert!((g.covariance[i][j] - g.covariance[j][i]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn gating_separates_near_from_far_measurements() {
        let mut g = initiate([100.0, 100.0, 0.5, 50.0], BoxState::Xyah);
        predict(&mut g, 1.0);
        assert!(gating_distance(&g, [101.0, 100.0, 0.5, 50.0]) < CHI2_95[4]);
        assert!(gating_distance(&g, [200.0, 100.0, 0.5, 50.0]) > CHI2_95[4]);
    }

    #[test]
    fn inverse_is_exact_on_a_known_matrix() {
        let m = [
            [4.0, 1.0, 0.0, 0.0],
            [1.0, 3.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 5.0],
        ];
        let inv = invert4(&m);
        for i in 0..4 {
            for j in 0..4 {
                let v: f64 = (0..4).map(|k| m[i][k] * inv[k][j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }
}
