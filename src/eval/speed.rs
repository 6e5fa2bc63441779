//! Speed accuracy on a sequence with ground truth: track the sequence's detections, estimate
//! speeds, match tracks to true objects by IoU each frame, and compare. Every true
//! vehicle-frame after the vehicle's first second in view is scored: it counts towards
//! coverage when the matched track has a speed, and that speed's error towards the statistics.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::detect::Detection;
use crate::motfile::{self, MotRow};
use crate::speed::{Calibration, SpeedConfig, SpeedEstimator};
use crate::track::assignment::assign_with_limit;
use crate::track::{Tracker, TrackerConfig};

/// IoU a track needs with a true box to be taken as that object.
const MATCH_IOU: f64 = 0.5;

/// Speed errors in km/h and coverage (share of eligible true object-frames with a speed).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpeedReport {
    pub mae_kmh: f64,
    pub median_kmh: f64,
    pub p95_kmh: f64,
    pub coverage: f64,
    /// Number of distinct tracks that reported a speed.
    pub tracks: usize,
    /// Number of speed measurements compared.
    pub samples: usize,
}

/// Evaluates the sequence in `dir` (`det.txt`, `gt.txt`, `gt_speed.csv`, `seqinfo.ini`,
/// `calibration.toml`), processing every `frame_step`-th frame.
pub fn evaluate_sequence(
    dir: &Path,
    tracker: &TrackerConfig,
    speed: &SpeedConfig,
    frame_step: u32,
) -> anyhow::Result<SpeedReport> {
    let info = motfile::read_seqinfo(&dir.join("seqinfo.ini"))?;
    let calibration = Calibration::load(&dir.join("calibration.toml"))?;
    calibration
        .check_image_size(info.width, info.height)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("calibration.toml").display()))?;
    let dets = motfile::by_frame(&motfile::read_rows(&dir.join("det.txt"))?, info.length);
    let gt = motfile::by_frame(&motfile::read_rows(&dir.join("gt.txt"))?, info.length);
    let gt_speed = read_gt_speed(&dir.join("gt_speed.csv"))?;
    let mut first_frame: HashMap<i64, u32> = HashMap::new();
    for row in gt.iter().flatten() {
        first_frame.entry(row.id).or_insert(row.frame);
    }

    let mut tracker = Tracker::new(tracker.clone(), info.frame_rate);
    let mut estimator =
        SpeedEstimator::new(Some(calibration), speed.clone(), (info.width, info.height));
    let mut errors = Vec::new();
    let mut eligible = 0usize;
    let mut covered = 0usize;
    let mut reporting_tracks = std::collections::HashSet::new();
    for (f, (frame_dets, frame_gt)) in dets.iter().zip(&gt).enumerate() {
        let frame = f as u32 + 1;
        if !(frame - 1).is_multiple_of(frame_step) {
            continue;
        }
        let detections: Vec<Detection> = frame_dets.iter().map(MotRow::detection).collect();
        let tracks = tracker.update(&detections, (frame - 1) as f64 / info.frame_rate);
        let measured: Vec<_> = tracks
            .iter()
            .map(|t| t.with_detection_box(&detections))
            .collect();
        let speeds = estimator.update((frame - 1) as f64 / info.frame_rate, &measured);
        let cost: Vec<f64> = frame_gt
            .iter()
            .flat_map(|g| tracks.iter().map(move |t| 1.0 - g.bbox.iou(&t.bbox) as f64))
            .collect();
        let matched: HashMap<usize, usize> =
            assign_with_limit(&cost, frame_gt.len(), tracks.len(), 1.0 - MATCH_IOU)
                .matches
                .into_iter()
                .collect();
        for (gi, g) in frame_gt.iter().enumerate() {
            let Some(&truth) = gt_speed.get(&(frame, g.id)) else {
                continue;
            };
            // Scored: every true vehicle-frame after the vehicle's first second in view.
            if ((frame - first_frame[&g.id]) as f64) < info.frame_rate {
                continue;
            }
            eligible += 1;
            if let Some((ti, s)) = matched.get(&gi).and_then(|&ti| speeds[ti].map(|s| (ti, s))) {
                covered += 1;
                errors.push((s - truth).abs());
                reporting_tracks.insert(tracks[ti].track_id);
            }
        }
    }
    if errors.is_empty() {
        anyhow::bail!(
            "{}: no speed could be compared with the ground truth",
            dir.display()
        );
    }
    errors.sort_by(f64::total_cmp);
    let quantile = |q: f64| errors[((errors.len() - 1) as f64 * q).round() as usize];
    Ok(SpeedReport {
        mae_kmh: errors.iter().sum::<f64>() / errors.len() as f64,
        median_kmh: quantile(0.5),
        p95_kmh: quantile(0.95),
        coverage: covered as f64 / eligible.max(1) as f64,
        tracks: reporting_tracks.len(),
        samples: errors.len(),
    })
}

/// `frame,id,speed_kmh` rows keyed by `(frame, id)`.
fn read_gt_speed(path: &Path) -> anyhow::Result<HashMap<(u32, i64), f64>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed = (|| -> Option<((u32, i64), f64)> {
            Some((
                (fields.first()?.parse().ok()?, fields.get(1)?.parse().ok()?),
                fields.get(2)?.parse().ok()?,
            ))
        })();
        let (key, speed) = parsed.ok_or_else(|| {
            anyhow::anyhow!("{}:{}: expected frame,id,speed_kmh", path.display(), n + 1)
        })?;
        out.insert(key, speed);
    }
    Ok(out)
}
