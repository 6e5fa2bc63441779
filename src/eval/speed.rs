//! Speed accuracy on a sequence with ground truth: track the sequence's detections, estimate
//! speeds, match tracks to true objects by IoU each frame, and compare. Every true
//! vehicle-frame after the vehicle's first second in view is scored: it counts towards
//! coverage when the matched track has a speed, and that speed's error towards the statistics.
//! Both are also broken down by the vehicle's distance along the road plane from the nearest
//! ground the camera sees (the bottom centre of the image).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::detect::Detection;
use crate::formats::mot::{self, MotRow};
use crate::speed::{Calibration, SpeedConfig, SpeedEstimator};
use crate::track::assignment::assign_with_limit;
use crate::track::{Tracker, TrackerConfig};

/// IoU a track's box (its detection's, as the outputs show it) needs with a true box to be
/// taken as that object.
const MATCH_IOU: f64 = 0.5;

/// Where the distance bands end, in metres from the nearest ground the camera sees; a last
/// band runs on from the last end.
const BAND_ENDS_M: [f64; 3] = [15.0, 30.0, 60.0];

/// Distance bands: the ends above and the open last one.
const BANDS: usize = BAND_ENDS_M.len() + 1;

/// Errors and coverage of the scored vehicle-frames at one range of distance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DistanceBand {
    /// Metres from the nearest ground the camera sees: the band's start...
    pub from_m: f64,
    /// ...and its end (none for the last band).
    pub to_m: Option<f64>,
    pub mae_kmh: f64,
    /// Mean signed error (estimate minus truth): how much of the MAE is a bias.
    pub bias_kmh: f64,
    pub coverage: f64,
    pub samples: usize,
}

/// The sums behind one [`DistanceBand`].
#[derive(Debug, Clone, Copy, Default)]
struct BandCounts {
    error_sum: f64,
    signed_error_sum: f64,
    samples: usize,
    eligible: usize,
    covered: usize,
}

impl BandCounts {
    fn add(&mut self, other: &BandCounts) {
        self.error_sum += other.error_sum;
        self.signed_error_sum += other.signed_error_sum;
        self.samples += other.samples;
        self.eligible += other.eligible;
        self.covered += other.covered;
    }
}

/// The band a distance falls in.
fn band_of(distance_m: f64) -> usize {
    BAND_ENDS_M
        .iter()
        .position(|&end| distance_m < end)
        .unwrap_or(BANDS - 1)
}

/// The start and end of band `i`.
fn band_range(i: usize) -> (f64, Option<f64>) {
    let from = if i == 0 { 0.0 } else { BAND_ENDS_M[i - 1] };
    (from, BAND_ENDS_M.get(i).copied())
}

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
    /// The same by distance from the nearest ground the camera sees; bands without scored
    /// vehicle-frames are left out.
    pub by_distance: Vec<DistanceBand>,
}

/// One sequence compared with its ground truth: every absolute error, and the counts behind
/// the coverage. Sequences pool by concatenating them ([`SpeedErrors::pool`]).
#[derive(Debug, Clone, Default)]
pub struct SpeedErrors {
    /// Absolute errors in km/h, sorted.
    errors: Vec<f64>,
    /// True vehicle-frames that are scored.
    eligible: usize,
    /// Those a speed was reported for.
    covered: usize,
    tracks: usize,
    /// The same counts per distance band (vehicle-frames whose distance is known).
    bands: [BandCounts; BANDS],
}

impl SpeedErrors {
    /// The figures of these errors.
    pub fn report(&self) -> SpeedReport {
        let quantile = |q: f64| {
            self.errors
                .get(((self.errors.len().max(1) - 1) as f64 * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        SpeedReport {
            mae_kmh: self.errors.iter().sum::<f64>() / self.errors.len().max(1) as f64,
            median_kmh: quantile(0.5),
            p95_kmh: quantile(0.95),
            coverage: self.covered as f64 / self.eligible.max(1) as f64,
            tracks: self.tracks,
            samples: self.errors.len(),
            by_distance: (0..BANDS)
                .filter(|&i| self.bands[i].eligible > 0)
                .map(|i| {
                    let (from_m, to_m) = band_range(i);
                    let b = &self.bands[i];
                    DistanceBand {
                        from_m,
                        to_m,
                        mae_kmh: b.error_sum / b.samples.max(1) as f64,
                        bias_kmh: b.signed_error_sum / b.samples.max(1) as f64,
                        coverage: b.covered as f64 / b.eligible as f64,
                        samples: b.samples,
                    }
                })
                .collect(),
        }
    }

    /// Several sequences as one: every error and every scored vehicle-frame together.
    pub fn pool(parts: &[SpeedErrors]) -> SpeedErrors {
        let mut errors: Vec<f64> = parts
            .iter()
            .flat_map(|p| p.errors.iter().copied())
            .collect();
        errors.sort_by(f64::total_cmp);
        SpeedErrors {
            errors,
            eligible: parts.iter().map(|p| p.eligible).sum(),
            covered: parts.iter().map(|p| p.covered).sum(),
            tracks: parts.iter().map(|p| p.tracks).sum(),
            bands: std::array::from_fn(|i| {
                let mut band = BandCounts::default();
                parts.iter().for_each(|p| band.add(&p.bands[i]));
                band
            }),
        }
    }
}

impl SpeedReport {
    /// The mean of each figure over `reports` (sequences weigh alike); counts are summed.
    pub fn mean(reports: &[SpeedReport]) -> SpeedReport {
        let n = reports.len().max(1) as f64;
        let mean = |f: fn(&SpeedReport) -> f64| reports.iter().map(f).sum::<f64>() / n;
        SpeedReport {
            mae_kmh: mean(|r| r.mae_kmh),
            median_kmh: mean(|r| r.median_kmh),
            p95_kmh: mean(|r| r.p95_kmh),
            coverage: mean(|r| r.coverage),
            tracks: reports.iter().map(|r| r.tracks).sum(),
            samples: reports.iter().map(|r| r.samples).sum(),
            by_distance: mean_bands(reports),
        }
    }
}

/// Each distance band's figures averaged over the reports that have it.
fn mean_bands(reports: &[SpeedReport]) -> Vec<DistanceBand> {
    (0..BANDS)
        .filter_map(|i| {
            let (from_m, to_m) = band_range(i);
            let bands: Vec<&DistanceBand> = reports
                .iter()
                .flat_map(|r| &r.by_distance)
                .filter(|b| b.from_m == from_m)
                .collect();
            let mean = |figure: fn(&DistanceBand) -> f64| {
                bands.iter().map(|&b| figure(b)).sum::<f64>() / bands.len() as f64
            };
            (!bands.is_empty()).then(|| DistanceBand {
                from_m,
                to_m,
                mae_kmh: mean(|b| b.mae_kmh),
                bias_kmh: mean(|b| b.bias_kmh),
                coverage: mean(|b| b.coverage),
                samples: bands.iter().map(|b| b.samples).sum(),
            })
        })
        .collect()
}

/// Evaluates the sequence in `dir` (`det.txt`, `gt.txt`, `gt_speed.csv`, `seqinfo.ini`,
/// `calibration.toml`), processing every `frame_step`-th frame.
pub fn evaluate_sequence(
    dir: &Path,
    tracker: &TrackerConfig,
    speed: &SpeedConfig,
    frame_step: u32,
) -> anyhow::Result<SpeedReport> {
    Ok(compare_sequence(dir, tracker, speed, frame_step)?.report())
}

/// [`evaluate_sequence`]'s comparison before it is summarised.
pub fn compare_sequence(
    dir: &Path,
    tracker: &TrackerConfig,
    speed: &SpeedConfig,
    frame_step: u32,
) -> anyhow::Result<SpeedErrors> {
    let info = mot::read_seqinfo(&dir.join("seqinfo.ini"))?;
    let calibration = Calibration::load(&dir.join("calibration.toml"))?;
    calibration
        .check_image_size(info.width, info.height)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("calibration.toml").display()))?;
    let dets = mot::by_frame(&mot::read_rows(&dir.join("det.txt"))?, info.length);
    let gt = mot::by_frame(&mot::read_rows(&dir.join("gt.txt"))?, info.length);
    let gt_speed = read_gt_speed(&dir.join("gt_speed.csv"))?;
    let mut first_frame: HashMap<i64, u32> = HashMap::new();
    for row in gt.iter().flatten() {
        first_frame.entry(row.id).or_insert(row.frame);
    }

    // The nearest ground the camera sees, and a true box's distance from it.
    let near = calibration.to_ground(info.width as f64 / 2.0, info.height as f64);
    let distance_band = |g: &MotRow| -> Option<usize> {
        let (nx, ny) = near?;
        let (x, y) = g.bbox.bottom_centre();
        let (gx, gy) = calibration.to_ground(x as f64, y as f64)?;
        Some(band_of((gx - nx).hypot(gy - ny)))
    };
    let mut bands = [BandCounts::default(); BANDS];
    // Tracks unseen for the tracker's buffer end, as in `process`, which backfills them.
    let track_idle = tracker.track_buffer;
    let mut tracker = Tracker::new(tracker.clone(), info.frame_rate);
    let mut estimator = SpeedEstimator::new(
        Some(calibration.clone()),
        speed.clone(),
        (info.width, info.height),
    );
    // Each scored true vehicle-frame with the track matched to it, and every speed reported
    // per (frame, track): scored at the end, since a backfilled speed comes after its frame.
    let mut scored: Vec<(u32, f64, Option<usize>, Option<u64>)> = Vec::new();
    let mut speed_of: HashMap<(u32, u64), f64> = HashMap::new();
    let record_backfill = |estimator: &mut SpeedEstimator, speed_of: &mut HashMap<_, _>| {
        for late in estimator.take_backfill() {
            let frame = (late.timestamp * info.frame_rate).round() as u32 + 1;
            speed_of.insert((frame, late.track_id), late.speed);
        }
    };
    for (f, (frame_dets, frame_gt)) in dets.iter().zip(&gt).enumerate() {
        let frame = f as u32 + 1;
        if !(frame - 1).is_multiple_of(frame_step) {
            continue;
        }
        let detections: Vec<Detection> = frame_dets.iter().map(MotRow::detection).collect();
        let timestamp = (frame - 1) as f64 / info.frame_rate;
        let tracks = tracker.update(&detections, timestamp);
        let measured: Vec<_> = tracks
            .iter()
            .map(|t| t.with_detection_box(&detections))
            .collect();
        let speeds = estimator.update(timestamp, &measured);
        for (t, speed) in tracks.iter().zip(speeds) {
            if let Some(speed) = speed {
                speed_of.insert((frame, t.track_id), speed);
            }
        }
        estimator.take_finished(timestamp, track_idle);
        record_backfill(&mut estimator, &mut speed_of);
        // Matched by the box the outputs show with the speed: the track's detection's.
        let cost: Vec<f64> = frame_gt
            .iter()
            .flat_map(|g| {
                measured
                    .iter()
                    .map(move |t| 1.0 - g.bbox.iou(&t.bbox) as f64)
            })
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
            let track = matched.get(&gi).map(|&ti| tracks[ti].track_id);
            scored.push((frame, truth, distance_band(g), track));
        }
    }
    estimator.finish_all();
    record_backfill(&mut estimator, &mut speed_of);
    let mut errors = Vec::new();
    let mut covered = 0usize;
    let mut reporting_tracks = std::collections::HashSet::new();
    for &(frame, truth, band, track) in &scored {
        let mut band = band.map(|i| &mut bands[i]);
        if let Some(band) = band.as_mut() {
            band.eligible += 1;
        }
        let Some((track, speed)) = track.and_then(|id| Some((id, *speed_of.get(&(frame, id))?)))
        else {
            continue;
        };
        covered += 1;
        let error = speed - truth;
        errors.push(error.abs());
        reporting_tracks.insert(track);
        if let Some(band) = band {
            band.covered += 1;
            band.samples += 1;
            band.error_sum += error.abs();
            band.signed_error_sum += error;
        }
    }
    let eligible = scored.len();
    if errors.is_empty() {
        anyhow::bail!(
            "{}: no speed could be compared with the ground truth",
            dir.display()
        );
    }
    errors.sort_by(f64::total_cmp);
    Ok(SpeedErrors {
        errors,
        eligible,
        covered,
        tracks: reporting_tracks.len(),
        bands,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(values: &[f64], eligible: usize) -> SpeedErrors {
        SpeedErrors {
            errors: values.to_vec(),
            eligible,
            covered: values.len(),
            tracks: 1,
            bands: Default::default(),
        }
    }

    /// A short sequence with large errors and a long one with small errors: the mean weighs
    /// the two alike, pooling weighs every sample alike.
    #[test]
    fn mean_weighs_sequences_and_pooling_weighs_samples() {
        let short = errors(&[4.0, 4.0], 4);
        let long = errors(&[0.0; 8], 8);
        let mean = SpeedReport::mean(&[short.report(), long.report()]);
        assert_eq!((mean.mae_kmh, mean.coverage), (2.0, 0.75));
        let pooled = SpeedErrors::pool(&[short, long]).report();
        assert_eq!(
            (pooled.mae_kmh, pooled.median_kmh, pooled.p95_kmh),
            (0.8, 0.0, 4.0)
        );
        assert_eq!(
            (pooled.coverage, pooled.samples, pooled.tracks),
            (10.0 / 12.0, 10, 2)
        );
    }
}
