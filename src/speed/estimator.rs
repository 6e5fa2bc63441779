//! Per-track speed on the road plane from timestamped ground points.
//!
//! Each track's ground point (bottom centre of its detection's box) is mapped to metres
//! with its frame's timestamp. The speed is the derivative at the newest sample of a
//! least-squares polynomial fitted over a sliding time window, after rejecting outliers.
//! Boxes whose bottom or side the image border cuts give no position (that moves the bottom
//! centre, the ground point); a box cut only at the top is used. A cut box keeps its track's
//! last speed for `border_hold` seconds while its uncut edges move on as before
//! ([`super::hold`]): a vehicle leaving the image keeps its label. A frame whose position
//! the fit rejects as an outlier gets no speed, then or later: its box is most likely
//! another object's (the tracker gave the id to a neighbour for a frame) or badly placed.
//! A fit whose speed is too uncertain (`max_standard_error_kmh`, typically far from a low
//! camera) gives none: its frames take a later, surer fit's speed through the backfill.
//! A track's history restarts where its motion breaks: a jump beyond any plausible speed
//! and the positions' own noise, a return after a gap far from where its velocity points,
//! or recent samples that all leave the motion of the older ones, by an offset or at a new
//! velocity (the tracker has handed the id to another object: a false-positive track
//! taking over a passing vehicle, or a vehicle passing another at a different speed).

// Small dense matrices read best with explicit indices.
#![allow(clippy::needless_range_loop)]

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::calibration::{Calibration, SpeedUnit};
use super::hold::UncutBoxes;
use crate::geometry::BBox;
use crate::track::TrackedObject;

/// Estimator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpeedConfig {
    /// Length of the fitting window, seconds.
    pub window: f64,
    /// Minimum time span of samples before a speed is reported, seconds.
    pub min_span: f64,
    /// Minimum number of samples before a speed is reported: at low analysed frame rates
    /// (`--frame-skip`, `--target-fps`) the first speed then waits for enough positions to be
    /// as precise as at full rate.
    pub min_samples: usize,
    /// Boxes whose bottom or a side comes within this many pixels of the image border are
    /// not used,
    pub border_margin: f32,
    /// nor those whose side or bottom comes within this fraction of their own width or
    /// height of it.
    pub border_fraction: f32,
    /// Motion model fitted to the window's positions.
    pub motion: MotionModel,
    /// A track whose box the border cuts (a vehicle leaving the image) keeps the speed of
    /// its last fit with `min_span` and `min_samples` for up to this many seconds after that
    /// fit's newest position, while the box's uncut edges keep moving as they did; 0 gives
    /// cut boxes no speed.
    pub border_hold: f64,
    /// A track whose ground point moves faster than this between two frames (km/h), beyond
    /// the noise of its positions, has jumped to another object; its history restarts.
    pub max_plausible_kmh: f64,
    /// Before `min_span` and `min_samples` are reached, a speed is reported from at least
    /// six positions once its expected error is at most this many km/h: a straight line's
    /// standard error (from its residuals) plus the lag a line has behind the acceleration a
    /// parabola fits; 0 waits for both rules.
    pub early_error_kmh: f64,
    /// A fit with `min_span` and `min_samples` gives a speed only when the standard error of
    /// its window's mean speed is at most this many km/h (a straight line's, with the noise
    /// measured about a parabola); its frames take the speed of a later fit that does
    /// through the backfill, or none. 0 turns the check off.
    pub max_standard_error_kmh: f64,
    /// Also give a track's frames that had no speed (before enough positions, while the fit
    /// was too uncertain, while the border cut its box) the speed a later fit puts at their
    /// time
    /// ([`SpeedEstimator::take_backfill`]): the latest fit whose window still holds the frame,
    /// so each such speed arrives up to `window` seconds late.
    pub backfill: bool,
}

/// How positions are modelled over the fitting window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MotionModel {
    /// Constant speed: a straight line in time (lags behind vehicles that accelerate).
    Linear,
    /// Constant acceleration: a parabola in time (no lag, noisier).
    Quadratic,
    /// Both, blended by the evidence for an acceleration: the line's velocity moved toward
    /// the parabola's by `1 - 9 / t²` (t: the acceleration's t-statistic; none below 3σ).
    #[default]
    Auto,
}

impl Default for SpeedConfig {
    fn default() -> Self {
        Self {
            window: 4.0,
            min_span: 0.8,
            min_samples: 14,
            border_margin: 6.0,
            border_fraction: 0.04,
            motion: MotionModel::Auto,
            border_hold: 1.0,
            max_plausible_kmh: 400.0,
            early_error_kmh: 3.0,
            max_standard_error_kmh: 0.5,
            backfill: true,
        }
    }
}

impl SpeedConfig {
    /// Checks every duration and distance is a finite number in its range.
    pub fn validate(&self) -> Result<(), String> {
        use crate::checks::{at_least, positive};
        positive("window", self.window)?;
        at_least("min_span", self.min_span, 0.0)?;
        if self.min_span > self.window {
            return Err(format!(
                "min_span ({}) must not exceed window ({})",
                self.min_span, self.window
            ));
        }
        at_least("border_margin", self.border_margin.into(), 0.0)?;
        at_least("border_fraction", self.border_fraction.into(), 0.0)?;
        at_least("early_error_kmh", self.early_error_kmh, 0.0)?;
        at_least("max_standard_error_kmh", self.max_standard_error_kmh, 0.0)?;
        at_least("border_hold", self.border_hold, 0.0)?;
        positive("max_plausible_kmh", self.max_plausible_kmh)
    }
}

/// What a track did while in view, reported when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackSummary {
    pub track_id: u64,
    pub class_id: usize,
    pub first_seen: f64,
    pub last_seen: f64,
    /// Mean and maximum of the speeds measured frame by frame (not those held while the
    /// border cut the box), in the calibration's unit.
    pub mean_speed: Option<f64>,
    pub max_speed: Option<f64>,
    /// Distance travelled on the road plane, metres.
    pub distance_m: f64,
}

#[derive(Debug, Clone)]
struct History {
    samples: VecDeque<(f64, f64, f64)>,
    class_id: usize,
    first_seen: f64,
    last_seen: f64,
    distance: f64,
    last_point: Option<(f64, f64)>,
    /// Ground velocity (m/s) of the last fit.
    velocity: Option<(f64, f64)>,
    /// Times of this track's frames with no speed since its history last restarted, within
    /// the window, for the backfill.
    unreported: VecDeque<f64>,
    /// The latest fit and the times of its oldest and newest samples: what backfills the
    /// frames still without a speed when the track ends.
    last_fit: Option<(Motion, f64, f64)>,
    speed_sum: f64,
    speed_count: u64,
    speed_max: f64,
    /// The newest position did not fit the motion of the others: the frame gets no speed,
    /// and no backfilled one either.
    off_track: bool,
    /// The newest uncut boxes, which a cut box must follow to keep the track's speed.
    uncut: UncutBoxes,
    /// A cut box since the last uncut one did not follow them: no speed is held until the
    /// box is whole again.
    hold_broken: bool,
}

/// A step faster than the plausible speed is a jump once it passes that speed's reach by
/// this many noise scales of the track's positions.
const JUMP_NOISE_SCALES: f64 = 3.0;

/// Samples closer together than this many typical frame intervals are consecutive; a larger
/// gap means the track was lost and found again.
const GAP_INTERVALS: f64 = 2.5;

/// After a gap, how far (metres, plus a share of the distance covered in the gap) the track
/// may be from where its last velocity puts it before it counts as another object.
const RESUME_TOLERANCE_M: f64 = 2.0;
const RESUME_TOLERANCE_SHARE: f64 = 0.25;

impl History {
    /// A track first seen at `timestamp`.
    fn new(timestamp: f64, class_id: usize) -> Self {
        History {
            samples: VecDeque::new(),
            class_id,
            first_seen: timestamp,
            last_seen: timestamp,
            distance: 0.0,
            last_point: None,
            velocity: None,
            unreported: VecDeque::new(),
            last_fit: None,
            speed_sum: 0.0,
            speed_count: 0,
            speed_max: 0.0,
            off_track: false,
            uncut: UncutBoxes::default(),
            hold_broken: false,
        }
    }

    /// The velocity (m/s) a track whose box the border cuts keeps: that of its last fit,
    /// when the fit is settled, until `border_hold` seconds after its newest position, and
    /// while each cut box's uncut edges follow the track's last uncut boxes (once one does
    /// not, another vehicle has most likely taken the id: nothing more is held until a
    /// whole box comes).
    fn held_velocity(
        &mut self,
        timestamp: f64,
        bbox: &BBox,
        config: &SpeedConfig,
        (width, side_margin): (f32, f32),
    ) -> Option<(f64, f64)> {
        let (motion, _, newest) = self.last_fit?;
        if self.hold_broken
            || timestamp - newest > config.border_hold
            || !settled(&self.samples, config)
        {
            return None;
        }
        if !self.uncut.followed_by(timestamp, bbox, width, side_margin) {
            self.hold_broken = true;
            return None;
        }
        Some(motion.velocity_at(0.0))
    }

    /// True when a step of `step` metres in `dt` seconds from the last position is faster
    /// than `max_kmh`, beyond [`JUMP_NOISE_SCALES`] times the noise of the positions (far
    /// from a low camera one frame's noise alone can pass any plausible speed).
    fn jumped(&self, step: f64, dt: f64, max_kmh: f64) -> bool {
        let reach = max_kmh / 3.6 * dt;
        // The noise needs a fit: only for a step already too fast.
        step > reach && step > reach + JUMP_NOISE_SCALES * self.noise_scale()
    }

    /// [`Fit::noise_scale`] of a straight line through the history; 0 for a history too
    /// short to tell.
    fn noise_scale(&self) -> f64 {
        let Some(&(newest, _, _)) = self.samples.back() else {
            return 0.0;
        };
        if self.samples.len() < EARLY_MIN_SAMPLES {
            return 0.0;
        }
        poly_fit(&relative_to(&self.samples, newest), 1).map_or(0.0, |f| f.noise_scale())
    }

    /// Speeds for the frames still without one from before `until`, from the latest fit (not
    /// extrapolated before its first position); frames after its newest position (the border
    /// cutting a leaving vehicle's box) get none. None of them is waiting any more.
    fn backfill(&mut self, until: f64, track_id: u64, unit: SpeedUnit) -> Vec<BackfilledSpeed> {
        let waiting = self.unreported.partition_point(|&t| t < until);
        let leaving = self.unreported.drain(..waiting);
        let Some((motion, oldest, newest)) = self.last_fit else {
            return Vec::new();
        };
        leaving
            .filter(|&timestamp| timestamp <= newest)
            .map(|timestamp| {
                let (vx, vy) = motion.velocity_at(timestamp.max(oldest) - newest);
                BackfilledSpeed {
                    track_id,
                    timestamp,
                    speed: unit.from_mps(vx.hypot(vy)),
                }
            })
            .collect()
    }

    /// True when the track comes back after a gap away from where its motion predicts:
    /// the tracker has most likely given its id to another vehicle.
    fn resumes_elsewhere(&self, timestamp: f64, (x, y): (f64, f64)) -> bool {
        let (Some((vx, vy)), Some((px, py))) = (self.velocity, self.last_point) else {
            return false;
        };
        let mut times = self.samples.iter().rev().map(|s| s.0);
        let (Some(last), Some(before)) = (times.next(), times.next()) else {
            return false;
        };
        let dt = timestamp - last;
        if dt <= GAP_INTERVALS * (last - before) {
            return false;
        }
        let (ex, ey) = (px + vx * dt, py + vy * dt);
        let travelled = vx.hypot(vy) * dt;
        (x - ex).hypot(y - ey) > RESUME_TOLERANCE_M + RESUME_TOLERANCE_SHARE * travelled
    }
}

/// A speed given to an earlier frame of a track once its speed became known
/// ([`SpeedConfig::backfill`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackfilledSpeed {
    pub track_id: u64,
    /// The earlier frame's timestamp, as passed to [`SpeedEstimator::update`].
    pub timestamp: f64,
    /// In the calibration's unit.
    pub speed: f64,
}

/// Speeds for every track of a stream, and what each track did. Without a calibration it
/// still keeps each track's summary (class, time in view), with no speed or distance.
pub struct SpeedEstimator {
    calibration: Option<Calibration>,
    config: SpeedConfig,
    image_size: (f32, f32),
    histories: HashMap<u64, History>,
    /// Speeds for earlier frames found by the latest updates, until taken.
    backfill: Vec<BackfilledSpeed>,
}

impl SpeedEstimator {
    pub fn new(
        calibration: Option<Calibration>,
        config: SpeedConfig,
        image_size: (u32, u32),
    ) -> Self {
        Self {
            calibration,
            config,
            image_size: (image_size.0 as f32, image_size.1 as f32),
            histories: HashMap::new(),
            backfill: Vec::new(),
        }
    }

    /// The calibration in use.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    /// Adds the tracks of the frame at `timestamp`; returns each track's speed in the
    /// calibration's unit, once enough history exists.
    pub fn update(&mut self, timestamp: f64, tracks: &[TrackedObject]) -> Vec<Option<f64>> {
        let speeds: Vec<Option<f64>> = tracks
            .iter()
            .map(|t| self.track_speed(timestamp, t))
            .collect();
        if self.config.backfill {
            for (t, speed) in tracks.iter().zip(&speeds) {
                let history = self.histories.get_mut(&t.track_id).expect("updated above");
                if speed.is_none() && !history.off_track {
                    history.unreported.push_back(timestamp);
                }
            }
        }
        speeds
    }

    /// How far back (seconds) from the frame that gives it, or from its track's last frame
    /// when the track ends, a backfilled speed may reach, when [`SpeedConfig::backfill`] is
    /// on.
    pub fn backfill_horizon(&self) -> Option<f64> {
        self.config.backfill.then_some(self.config.window)
    }

    /// Speeds found by the latest updates (and track ends) for earlier frames of their
    /// tracks, oldest frame first per track, when [`SpeedConfig::backfill`] is on; each is
    /// given once.
    pub fn take_backfill(&mut self) -> Vec<BackfilledSpeed> {
        std::mem::take(&mut self.backfill)
    }

    /// One track's part of [`SpeedEstimator::update`].
    fn track_speed(&mut self, timestamp: f64, t: &TrackedObject) -> Option<f64> {
        let backfill_unit = self.backfill_unit();
        let history = self
            .histories
            .entry(t.track_id)
            .or_insert_with(|| History::new(timestamp, t.class_id));
        history.last_seen = timestamp;
        history.class_id = t.class_id;
        history.off_track = false;
        // Frames still without a speed from before `until` take it from the last fit, the
        // one that holds them: as they leave the window, or before the history restarts.
        let mut backfill_before = |history: &mut History, until: f64| {
            if let Some(unit) = backfill_unit {
                self.backfill
                    .extend(history.backfill(until, t.track_id, unit));
            }
        };
        backfill_before(history, timestamp - self.config.window);
        let (w, h) = self.image_size;
        let (margin, fraction) = (self.config.border_margin, self.config.border_fraction);
        if t.bbox.ground_point_cut(w, h, margin, fraction) {
            let unit = self.calibration.as_ref()?.unit;
            let side_margin = margin.max(fraction * t.bbox.width());
            let (vx, vy) =
                history.held_velocity(timestamp, &t.bbox, &self.config, (w, side_margin))?;
            return Some(unit.from_mps(vx.hypot(vy)));
        }
        history.hold_broken = false;
        history.uncut.push(timestamp, t.bbox);
        let calibration = self.calibration.as_ref()?;
        let (gx, gy) = t.bbox.bottom_centre();
        let (x, y) = calibration.to_ground(gx as f64, gy as f64)?;
        if let (Some((px, py)), Some(&(pt, _, _))) = (history.last_point, history.samples.back()) {
            let step = (x - px).hypot(y - py);
            let dt = (timestamp - pt).max(1e-6);
            if history.jumped(step, dt, self.config.max_plausible_kmh)
                || history.resumes_elsewhere(timestamp, (x, y))
            {
                backfill_before(history, timestamp);
                history.uncut.forget_before(timestamp);
                history.samples.clear();
                history.velocity = None;
                history.last_fit = None;
            } else {
                history.distance += step;
            }
        }
        history.last_point = Some((x, y));
        history.samples.push_back((timestamp, x, y));
        if let Some(start) = change_point(&history.samples) {
            let change = history.samples[start].0;
            backfill_before(history, change);
            history.uncut.forget_before(change);
            history.samples.drain(..start);
            history.unreported.clear();
            history.last_fit = None;
        }
        while history
            .samples
            .front()
            .is_some_and(|s| s.0 < timestamp - self.config.window)
        {
            history.samples.pop_front();
        }
        let fitted = fit_motion(&history.samples, &self.config);
        history.velocity = fitted.as_ref().map(|f| f.motion.velocity_at(0.0));
        let Fitted {
            motion,
            newest_fits,
        } = fitted?;
        let oldest = history.samples.front().map_or(timestamp, |s| s.0);
        history.last_fit = Some((motion, oldest, timestamp));
        if !newest_fits {
            history.off_track = true;
            return None;
        }
        let (vx, vy) = motion.velocity_at(0.0);
        let speed = calibration.unit.from_mps(vx.hypot(vy));
        history.speed_sum += speed;
        history.speed_count += 1;
        history.speed_max = history.speed_max.max(speed);
        Some(speed)
    }

    /// Summaries of tracks not seen for `idle` seconds before `now`; they are forgotten.
    pub fn take_finished(&mut self, now: f64, idle: f64) -> Vec<TrackSummary> {
        let ended: Vec<u64> = self
            .histories
            .iter()
            .filter(|(_, h)| now - h.last_seen > idle)
            .map(|(id, _)| *id)
            .collect();
        self.take(ended)
    }

    /// Summaries of every track still held (end of stream).
    pub fn finish_all(&mut self) -> Vec<TrackSummary> {
        let all: Vec<u64> = self.histories.keys().copied().collect();
        self.take(all)
    }

    /// The unit backfilled speeds are given in, when there are any: with a calibration and
    /// [`SpeedConfig::backfill`] on.
    fn backfill_unit(&self) -> Option<SpeedUnit> {
        self.calibration
            .as_ref()
            .map(|c| c.unit)
            .filter(|_| self.config.backfill)
    }

    fn take(&mut self, ids: Vec<u64>) -> Vec<TrackSummary> {
        let backfill_unit = self.backfill_unit();
        let mut out: Vec<TrackSummary> = ids
            .into_iter()
            .filter_map(|id| self.histories.remove(&id).map(|h| (id, h)))
            .map(|(track_id, mut h)| {
                if let Some(unit) = backfill_unit {
                    self.backfill
                        .extend(h.backfill(f64::INFINITY, track_id, unit));
                }
                (track_id, h)
            })
            .map(|(track_id, h)| TrackSummary {
                track_id,
                class_id: h.class_id,
                first_seen: h.first_seen,
                last_seen: h.last_seen,
                mean_speed: (h.speed_count > 0).then(|| h.speed_sum / h.speed_count as f64),
                max_speed: (h.speed_count > 0).then_some(h.speed_max),
                distance_m: h.distance,
            })
            .collect();
        out.sort_by_key(|s| s.track_id);
        out
    }
}

/// The motion fitted to a track's window: its velocity at any time of the window.
#[derive(Debug, Clone, Copy)]
struct Motion {
    /// The straight line's velocity (m/s).
    line: (f64, f64),
    /// The parabola's velocity at the newest sample (m/s) and its acceleration (m/s²): the
    /// line's for a line alone.
    parabola: (f64, f64),
    acceleration: (f64, f64),
    /// The share of the way from the line's velocity to the parabola's that the model takes.
    share: f64,
}

impl Motion {
    /// A straight line's motion.
    fn line(line: (f64, f64)) -> Motion {
        Motion {
            line,
            parabola: line,
            acceleration: (0.0, 0.0),
            share: 0.0,
        }
    }

    /// A line's velocity moved `share` of the way toward the parabola `quadratic`.
    fn blend(line: (f64, f64), quadratic: &Fit, share: f64) -> Motion {
        Motion {
            line,
            parabola: quadratic.velocity,
            acceleration: quadratic.acceleration_components(),
            share,
        }
    }

    /// Velocity (m/s) at `dt` seconds from the newest sample (negative: before it).
    fn velocity_at(&self, dt: f64) -> (f64, f64) {
        let ((lx, ly), (qx, qy), (ax, ay)) = (self.line, self.parabola, self.acceleration);
        let (qx, qy) = (qx + ax * dt, qy + ay * dt);
        (lx + self.share * (qx - lx), ly + self.share * (qy - ly))
    }
}

/// A track's fitted motion, and whether its newest position fits it.
struct Fitted {
    motion: Motion,
    /// The newest position is not among the samples rejected as outliers.
    newest_fits: bool,
}

/// The motion of a least-squares fit of positions over time (times relative to the newest
/// sample), refitted once without samples that lie far off the first fit; `None` until the
/// history spans `min_span` seconds and holds `min_samples` samples, or before that, once a
/// straight line through the samples gives the velocity with a standard error within
/// `early_error_kmh`; `None` too while the settled window's mean speed is less certain than
/// `max_standard_error_kmh`.
fn fit_motion(samples: &VecDeque<(f64, f64, f64)>, config: &SpeedConfig) -> Option<Fitted> {
    let newest = samples.back()?.0;
    let settled = settled(samples, config);
    let early = config.early_error_kmh > 0.0 && samples.len() >= EARLY_MIN_SAMPLES;
    if !settled && !early {
        return None;
    }
    let points = relative_to(samples, newest);
    let inliers = reject_outliers(&points)?;
    let line = poly_fit(&inliers, 1)?;
    let quadratic = poly_fit(&inliers, 2);
    if !settled && early_error(&inliers, &line, quadratic.as_ref()?)? * 3.6 > config.early_error_kmh
    {
        return None;
    }
    if settled
        && config.max_standard_error_kmh > 0.0
        && mean_speed_error(&line, quadratic.as_ref())
            .is_some_and(|error| error * 3.6 > config.max_standard_error_kmh)
    {
        return None;
    }
    let motion = match config.motion {
        MotionModel::Linear => Motion::line(line.velocity),
        MotionModel::Quadratic => {
            let quadratic = quadratic?;
            Motion::blend(quadratic.velocity, &quadratic, 1.0)
        }
        MotionModel::Auto => {
            let quadratic = quadratic?;
            // A shrinkage blend rather than a switch: no jump between the models where the
            // evidence crosses the threshold.
            let share =
                (1.0 - ACCELERATION_SIGNIFICANCE / quadratic.acceleration_significance).max(0.0);
            Motion::blend(line.velocity, &quadratic, share)
        }
    };
    // The newest sample is the last point, at time 0.
    let newest_fits = inliers.last().is_some_and(|p| p.0 == 0.0);
    Some(Fitted {
        motion,
        newest_fits,
    })
}

/// Whether `samples` span `min_span` seconds and number `min_samples` (at least 4).
fn settled(samples: &VecDeque<(f64, f64, f64)>, config: &SpeedConfig) -> bool {
    let span = match (samples.front(), samples.back()) {
        (Some(oldest), Some(newest)) => newest.0 - oldest.0,
        _ => return false,
    };
    samples.len() >= config.min_samples.max(4) && span >= config.min_span
}

/// The standard error (m/s, along one direction) of the window's mean speed: the straight
/// line's velocity, with the noise measured about the parabola so that an acceleration does
/// not count as noise. `None` without the degrees of freedom to measure it.
fn mean_speed_error(line: &Fit, quadratic: Option<&Fit>) -> Option<f64> {
    Some((quadratic?.noise_variance? * line.velocity_variance_factor).sqrt())
}

/// The velocity (m/s) at the newest sample of [`fit_motion`].
#[cfg(test)]
fn fit_velocity(samples: &VecDeque<(f64, f64, f64)>, config: &SpeedConfig) -> Option<(f64, f64)> {
    fit_motion(samples, config).map(|f| f.motion.velocity_at(0.0))
}

/// The expected error (m/s) of the speed of `line`, fitted to `points` (times relative to
/// the newest), for a history too short for the settled rules: the line's standard error,
/// plus the lag a line has behind an accelerating vehicle (the acceleration `parabola` fits
/// to the same points, times the samples' mean age). `None` without the degrees of freedom
/// to measure the line's error.
fn early_error(points: &[(f64, f64, f64)], line: &Fit, parabola: &Fit) -> Option<f64> {
    let mean_age = -points.iter().map(|p| p.0).sum::<f64>() / points.len() as f64;
    Some(line.velocity_standard_error()? + parabola.acceleration() * mean_age)
}

/// The samples with time measured from `origin` (the fits work around `t = 0`).
fn relative_to(samples: &VecDeque<(f64, f64, f64)>, origin: f64) -> Vec<(f64, f64, f64)> {
    samples
        .iter()
        .map(|&(t, x, y)| (t - origin, x, y))
        .collect()
}

/// The newest samples that count as "recent" for [`change_point`]: this many seconds, and at
/// least [`RECENT_MIN_SAMPLES`].
const RECENT_SECONDS: f64 = 0.2;
const RECENT_MIN_SAMPLES: usize = 3;

/// Where a track's motion changed abruptly, most likely because its id passed to another
/// object (a false-positive track taking over a passing vehicle, a swap between neighbours):
/// when every recent sample lies far off the motion fitted to the older ones, the index of
/// the first recent sample, from which the history should restart.
fn change_point(samples: &VecDeque<(f64, f64, f64)>) -> Option<usize> {
    let newest = samples.back()?.0;
    let recent = samples
        .iter()
        .rev()
        .take_while(|s| s.0 >= newest - RECENT_SECONDS)
        .count()
        .max(RECENT_MIN_SAMPLES);
    let older = samples.len().checked_sub(recent)?;
    if older < 2 * RECENT_MIN_SAMPLES {
        return None;
    }
    let points = relative_to(samples, newest);
    let (before, after) = points.split_at(older);
    let inliers = reject_outliers(before)?;
    let degree = if inliers.len() > 8 { 2 } else { 1 };
    let fit = poly_fit(&inliers, degree)?;
    let median = fit.median_residual();
    let tolerance = CHANGE_RESIDUALS * median + CHANGE_MARGIN_M;
    // Each recent sample's time and its offset from the older motion.
    let offsets: Vec<(f64, f64, f64)> = after
        .iter()
        .map(|&(t, x, y)| {
            let (ex, ey) = fit.position(t);
            (t, x - ex, y - ey)
        })
        .collect();
    let jumped = offsets.iter().all(|&(_, dx, dy)| dx.hypot(dy) > tolerance);
    let since = before.last()?.0;
    (jumped || velocity_changed(&offsets, since, noise_scale(median))).then_some(older)
}

/// Whether recent samples leave the older motion at a new velocity from the time `since` of
/// the last older sample: the velocity change that best explains their `offsets` from that
/// motion (`(time, dx, dy)`, offsets growing with the time since) is at least
/// [`CHANGE_MIN_VELOCITY`] and [`CHANGE_SIGNIFICANCE`] in squared units of the positions'
/// `noise` scale. This finds an id handed to a vehicle passing at another speed, where the
/// two positions meet and no offset shows at first.
fn velocity_changed(offsets: &[(f64, f64, f64)], since: f64, noise: f64) -> bool {
    let (mut sum_x, mut sum_y, mut sum_tt) = (0.0, 0.0, 0.0);
    for &(t, dx, dy) in offsets {
        let elapsed = t - since;
        sum_x += dx * elapsed;
        sum_y += dy * elapsed;
        sum_tt += elapsed * elapsed;
    }
    if sum_tt <= 0.0 {
        return false;
    }
    let change = (sum_x / sum_tt).hypot(sum_y / sum_tt);
    change >= CHANGE_MIN_VELOCITY
        && change * change * sum_tt / (noise * noise) >= CHANGE_SIGNIFICANCE
}

/// A recent sample is off the older motion beyond this many median residuals plus
/// [`CHANGE_MARGIN_M`].
const CHANGE_RESIDUALS: f64 = 4.0;
const CHANGE_MARGIN_M: f64 = 1.0;

/// A change of velocity (m/s) smaller than this is left to the motion model: braking hard
/// for the 0.2 s of recent samples changes a vehicle's velocity by about 2 m/s.
const CHANGE_MIN_VELOCITY: f64 = 8.0;
/// The squared size of a velocity change, in units of its standard error, above which it
/// is not the positions' noise (10 standard errors).
const CHANGE_SIGNIFICANCE: f64 = 100.0;

/// Positions a history needs before an early speed (`early_error_kmh`): a line through
/// them leaves four degrees of freedom to estimate its residuals' spread.
const EARLY_MIN_SAMPLES: usize = 6;

/// Squared t-statistic of the fitted acceleration below which `Auto` ignores it.
const ACCELERATION_SIGNIFICANCE: f64 = 9.0;

/// Drops samples far off a straight-line fit (more than 3 median residuals plus 0.2 m).
fn reject_outliers(points: &[(f64, f64, f64)]) -> Option<Vec<(f64, f64, f64)>> {
    let line = poly_fit(points, 1)?;
    let cutoff = 3.0 * line.median_residual() + 0.2;
    let inliers: Vec<(f64, f64, f64)> = points
        .iter()
        .zip(&line.residuals)
        .filter(|(_, r)| **r <= cutoff)
        .map(|(p, _)| *p)
        .collect();
    Some(if inliers.len() >= 4 {
        inliers
    } else {
        points.to_vec()
    })
}

/// A polynomial fit of both coordinates.
struct Fit {
    /// Polynomial coefficients of `x(t)` and `y(t)` (constant, t, t^2).
    coefficients: ([f64; 3], [f64; 3]),
    /// Derivatives at `t = 0`.
    velocity: (f64, f64),
    /// Distance of each sample from the fitted curve.
    residuals: Vec<f64>,
    /// Squared t-statistic of the second-order terms (0 for lines).
    acceleration_significance: f64,
    /// Per-coordinate noise variance from the residuals (`None` without degrees of freedom
    /// left), and the factor that turns it into the velocity's variance.
    noise_variance: Option<f64>,
    velocity_variance_factor: f64,
}

impl Fit {
    /// The median distance of the samples from the curve (upper median).
    fn median_residual(&self) -> f64 {
        let mut sorted = self.residuals.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    /// [`noise_scale`] of the fit's residuals.
    fn noise_scale(&self) -> f64 {
        noise_scale(self.median_residual())
    }

    /// Standard error of the velocity along one direction (m/s), from the residuals.
    fn velocity_standard_error(&self) -> Option<f64> {
        Some((self.noise_variance? * self.velocity_variance_factor).sqrt())
    }

    /// The fitted acceleration's magnitude (m/s²; 0 for lines).
    fn acceleration(&self) -> f64 {
        let (ax, ay) = self.acceleration_components();
        ax.hypot(ay)
    }

    /// The fitted acceleration along x and y (m/s²; 0 for lines).
    fn acceleration_components(&self) -> (f64, f64) {
        let (cx, cy) = self.coefficients;
        (2.0 * cx[2], 2.0 * cy[2])
    }

    /// The fitted position at time `t`.
    fn position(&self, t: f64) -> (f64, f64) {
        let eval = |c: &[f64; 3]| c[0] + c[1] * t + c[2] * t * t;
        (eval(&self.coefficients.0), eval(&self.coefficients.1))
    }
}

/// A cautious scale (m) of one coordinate's noise from the median distance of samples from
/// a fitted curve: read as the median absolute deviate of one normal coordinate (which
/// overstates the noise when it spreads over both), plus a floor for noiseless positions.
fn noise_scale(median_residual: f64) -> f64 {
    median_residual / MEDIAN_ABSOLUTE_NORMAL + NOISE_FLOOR_M
}

/// The median of the absolute value of a standard normal variate.
const MEDIAN_ABSOLUTE_NORMAL: f64 = 0.6745;
/// The smallest noise scale (m) a fit is granted.
const NOISE_FLOOR_M: f64 = 0.05;

/// Fits `x(t)` and `y(t)` with polynomials of `degree` (1 or 2) around `t = 0`.
fn poly_fit(points: &[(f64, f64, f64)], degree: usize) -> Option<Fit> {
    let k = degree + 1;
    // Normal equations (V^T V) c = V^T z with V the Vandermonde matrix in t.
    let mut ata = [[0.0f64; 3]; 3];
    let mut atx = [0.0f64; 3];
    let mut aty = [0.0f64; 3];
    for &(t, x, y) in points {
        let powers = [1.0, t, t * t];
        for i in 0..k {
            for j in 0..k {
                ata[i][j] += powers[i] * powers[j];
            }
            atx[i] += powers[i] * x;
            aty[i] += powers[i] * y;
        }
    }
    let cx = solve(&ata, &atx, k)?;
    let cy = solve(&ata, &aty, k)?;
    let eval = |c: &[f64; 3], t: f64| c[0] + c[1] * t + c[2] * t * t;
    let residuals: Vec<f64> = points
        .iter()
        .map(|&(t, x, y)| (x - eval(&cx, t)).hypot(y - eval(&cy, t)))
        .collect();
    // Per-coordinate noise variance: the residuals are distances over both coordinates.
    let noise_variance = (points.len() > k)
        .then(|| residuals.iter().map(|r| r * r).sum::<f64>() / (2 * (points.len() - k)) as f64);
    let acceleration_significance = match noise_variance {
        Some(sigma2) if degree == 2 => {
            // The variance factor of the t^2 coefficient.
            let unit = solve(&ata, &[0.0, 0.0, 1.0], 3)?[2];
            (cx[2] * cx[2] + cy[2] * cy[2]) / (sigma2 * unit).max(1e-12)
        }
        _ => 0.0,
    };
    let velocity_variance_factor = solve(&ata, &[0.0, 1.0, 0.0], k)?[1];
    Some(Fit {
        coefficients: (cx, cy),
        velocity: (cx[1], cy[1]),
        residuals,
        acceleration_significance,
        noise_variance,
        velocity_variance_factor,
    })
}

/// Solves the leading `k x k` system by Gaussian elimination with partial pivoting.
pub(super) fn solve(a: &[[f64; 3]; 3], b: &[f64; 3], k: usize) -> Option<[f64; 3]> {
    let mut m = *a;
    let mut v = *b;
    for col in 0..k {
        let pivot = (col..k).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        v.swap(col, pivot);
        for r in col + 1..k {
            let f = m[r][col] / m[col][col];
            for c in col..k {
                m[r][c] -= f * m[col][c];
            }
            v[r] -= f * v[col];
        }
    }
    let mut out = [0.0; 3];
    for r in (0..k).rev() {
        let rest: f64 = (r + 1..k).map(|c| m[r][c] * out[c]).sum();
        out[r] = (v[r] - rest) / m[r][r];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::BBox;
    use crate::speed::calibration::CalibrationFile;

    fn speed(samples: &VecDeque<(f64, f64, f64)>, motion: MotionModel) -> Option<f64> {
        let config = SpeedConfig {
            min_span: 0.5,
            motion,
            ..Default::default()
        };
        fit_velocity(samples, &config).map(|(vx, vy)| vx.hypot(vy))
    }

    /// The speed (km/h) [`fit_motion`] gives at the newest of `samples` under `config`.
    fn kmh_with(samples: &VecDeque<(f64, f64, f64)>, config: SpeedConfig) -> Option<f64> {
        fit_velocity(samples, &config).map(|(vx, vy)| 3.6 * vx.hypot(vy))
    }

    #[test]
    fn constant_speed_is_recovered_despite_an_outlier() {
        let mut samples: VecDeque<(f64, f64, f64)> = (0..25)
            .map(|i| {
                let t = i as f64 / 25.0;
                (t, 3.0 * t, 4.0 * t)
            })
            .collect();
        assert!((speed(&samples, MotionModel::Linear).unwrap() - 5.0).abs() < 1e-9);
        assert!((speed(&samples, MotionModel::Auto).unwrap() - 5.0).abs() < 1e-6);
        samples[12].1 += 3.0;
        assert!((speed(&samples, MotionModel::Linear).unwrap() - 5.0).abs() < 1e-6);
    }

    #[test]
    fn acceleration_is_followed_without_lag() {
        // 2 m/s^2 from 10 m/s: after 1 s the speed is 12 m/s; a line would report ~11.
        let samples: VecDeque<(f64, f64, f64)> = (0..=25)
            .map(|i| {
                let t = i as f64 / 25.0;
                (t, 10.0 * t + t * t, 0.0)
            })
            .collect();
        assert!((speed(&samples, MotionModel::Auto).unwrap() - 12.0).abs() < 1e-6);
        assert!((speed(&samples, MotionModel::Linear).unwrap() - 11.0).abs() < 1e-6);
    }

    #[test]
    fn an_early_speed_needs_precise_steady_positions() {
        // 0.5 s at 10 fps along a straight road from 20 m/s (72 km/h), braking at
        // `braking` m/s²: six positions, short of `min_span` and `min_samples`, with a
        // deterministic jitter of `noise` metres.
        let history = |noise: f64, braking: f64| -> VecDeque<(f64, f64, f64)> {
            (0..6)
                .map(|i| {
                    let t = i as f64 / 10.0;
                    let jitter = noise * [1.0, -1.0, -1.0, 1.0, 1.0, -1.0][i];
                    (t, 0.5, 20.0 * t - braking * t * t / 2.0 + jitter)
                })
                .collect()
        };
        let kmh = |samples: &VecDeque<_>, early_error_kmh| {
            kmh_with(
                samples,
                SpeedConfig {
                    early_error_kmh,
                    ..Default::default()
                },
            )
        };
        let default = SpeedConfig::default().early_error_kmh;
        // Positions within 2 cm of a steady drive give the speed early.
        let steady = history(0.02, 0.0);
        let early = kmh(&steady, default).expect("precise steady positions report early");
        assert!((early - 72.0).abs() < 1.0, "{early}");
        // Not with the rule off; not through 1 m of jitter; not from five positions.
        assert_eq!(kmh(&steady, 0.0), None);
        assert_eq!(kmh(&history(1.0, 0.0), default), None);
        let mut five = history(0.0, 0.0);
        five.pop_back();
        assert_eq!(kmh(&five, default), None);
        // Not while braking hard (6 m/s²), however exact the positions: a line through
        // them lags 0.25 s of deceleration behind, 5.4 km/h.
        assert_eq!(kmh(&history(0.0, 6.0), default), None);
    }

    /// 2 s at 25 fps of an object at 1.5 m/s (a false-positive track creeping), then its id
    /// on a vehicle passing at 25 m/s.
    fn takeover(after: usize) -> VecDeque<(f64, f64, f64)> {
        (0..50 + after)
            .map(|i| {
                let t = i as f64 / 25.0;
                let y = if i < 50 {
                    60.0 - 1.5 * t
                } else {
                    57.0 - 25.0 * (t - 2.0)
                };
                (t, 1.8 + 0.05 * (i % 3) as f64, y)
            })
            .collect()
    }

    #[test]
    fn a_track_taken_over_by_another_object_restarts_at_the_change() {
        // The first samples of the new motion alone are not enough (noise or an outlier)...
        assert_eq!(change_point(&takeover(2)), None);
        // ... but once every recent sample (0.2 s) is off the old motion, history restarts
        // there: within a few samples of the switch (the first ones are still close).
        let samples = takeover(10);
        let start = change_point(&samples).expect("a change is found");
        assert!((50..=54).contains(&start), "{start}");
        // A steady track never restarts.
        let steady: VecDeque<(f64, f64, f64)> = (0..75)
            .map(|i| {
                let t = i as f64 / 25.0;
                (t, 0.1 * (i % 2) as f64, 30.0 * t + 1.5 * t * t)
            })
            .collect();
        assert_eq!(change_point(&steady), None);
    }

    #[test]
    fn a_track_found_again_far_from_its_prediction_counts_as_another_object() {
        let mut history = History {
            samples: (0..10)
                .map(|i| (i as f64 * 0.04, 0.0, i as f64 * 0.8))
                .collect(),
            last_seen: 0.36,
            last_point: Some((0.0, 7.2)),
            velocity: Some((0.0, 20.0)),
            ..History::new(0.0, 2)
        };
        // Next frame, anywhere plausible: no gap, no judgement.
        assert!(!history.resumes_elsewhere(0.40, (0.0, 9.0)));
        // One second later where its speed puts it, or 20 m short of it.
        assert!(!history.resumes_elsewhere(1.36, (0.5, 27.0)));
        assert!(history.resumes_elsewhere(1.36, (0.0, 7.0)));
        history.velocity = None;
        assert!(!history.resumes_elsewhere(1.36, (0.0, 7.0)));
    }

    #[test]
    fn too_little_history_gives_no_speed() {
        let samples: VecDeque<(f64, f64, f64)> =
            (0..5).map(|i| (i as f64 / 25.0, i as f64, 0.0)).collect();
        assert!(speed(&samples, MotionModel::Auto).is_none());
    }

    /// A pinhole camera 9 m above the road, pitched 22 degrees down, 1000 px focal length,
    /// 1280x720: road point `(x, y)` (metres; `y` along the road) to image pixels, and the
    /// distance along the optical axis.
    fn project(x: f64, y: f64) -> (f64, f64, f64) {
        let (height, pitch, focal) = (9.0, 22f64.to_radians(), 1000.0);
        let depth = y * pitch.cos() + height * pitch.sin();
        let down = height * pitch.cos() - y * pitch.sin();
        (
            640.0 + focal * x / depth,
            360.0 + focal * down / depth,
            depth,
        )
    }

    /// The calibration a user would measure for [`project`]'s camera: four road points.
    fn calibration() -> Calibration {
        let world = vec![[-7.0, 20.0], [7.0, 20.0], [7.0, 80.0], [-7.0, 80.0]];
        let image = world
            .iter()
            .map(|w| {
                let (u, v, _) = project(w[0], w[1]);
                [u, v]
            })
            .collect();
        Calibration::from_file(CalibrationFile {
            image_points: Some(image),
            world_points: Some(world),
            ..Default::default()
        })
        .unwrap()
    }

    /// Track `track_id`'s box for a car 1.8 m wide and 1.5 m tall at road point `(x, y)` of
    /// [`project`]'s camera, its bottom centre moved by `jitter` box heights.
    fn car(track_id: u64, (x, y): (f64, f64), jitter: (f64, f64)) -> TrackedObject {
        let (u, v, depth) = project(x, y);
        let (w, h) = (1000.0 * 1.8 / depth, 1000.0 * 1.5 / depth);
        let (u, v) = (u + jitter.0 * h, v + jitter.1 * h);
        TrackedObject {
            track_id,
            bbox: BBox::new(
                (u - w / 2.0) as f32,
                (v - h) as f32,
                (u + w / 2.0) as f32,
                v as f32,
            ),
            score: 0.9,
            class_id: 2,
            detection_index: 0,
        }
    }

    /// A track lost while its first frames still wait for a backfill ends a buffer later:
    /// their speeds reach back further than the window, but not further than the window plus
    /// the tracker's buffer, which is what the outputs keep.
    #[test]
    fn backfill_at_a_tracks_end_reaches_back_the_window_plus_the_buffer() {
        let mut estimator =
            SpeedEstimator::new(Some(calibration()), SpeedConfig::default(), (1280, 720));
        let idle = 1.0;
        let mut last_seen = 0.0;
        for frame in 0..88 {
            last_seen = frame as f64 / 25.0;
            estimator.update(
                last_seen,
                &[car(3, (1.8, 80.0 - 20.0 * last_seen), (0.0, 0.0))],
            );
            assert!(estimator.take_backfill().is_empty(), "frame {frame}");
        }
        let now = last_seen + idle + 0.04;
        assert_eq!(estimator.take_finished(now, idle).len(), 1);
        let late = estimator.take_backfill();
        let horizon = estimator.backfill_horizon().unwrap();
        assert!(late.iter().any(|b| b.timestamp < now - horizon), "{late:?}");
        assert!(late.iter().all(|b| b.timestamp >= now - horizon - idle));
    }

    /// Deterministic noise, uniform in -1..1.
    fn jitter_source() -> impl FnMut() -> f64 {
        let mut seed = 0x9E37_79B9_u32;
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            f64::from(seed) / f64::from(u32::MAX) * 2.0 - 1.0
        }
    }

    /// Mean absolute speed error (km/h) over a vehicle's reported speeds after its first
    /// second, analysing every `step`-th frame of 25 fps video, and how many speeds were
    /// reported. The vehicle (1.8 m wide, 1.5 m tall) drives `position(t)` metres along the
    /// road in lane x = 1.8 m; its box jitters by up to 1.5 % of its height, as a detector's
    /// does.
    fn error_kmh(position: impl Fn(f64) -> f64, seconds: f64, step: usize) -> (f64, usize) {
        let mut estimator =
            SpeedEstimator::new(Some(calibration()), SpeedConfig::default(), (1280, 720));
        let mut jitter = jitter_source();
        let (mut sum, mut count) = (0.0, 0);
        for frame in 0..(seconds * 25.0) as usize {
            let t = frame as f64 / 25.0;
            // Jitter is drawn for every frame, so both runs see the same noise.
            let (du, dv) = (jitter(), jitter());
            if frame % step != 0 {
                continue;
            }
            let object = car(1, (1.8, position(t)), (0.015 * du, 0.015 * dv));
            let speed = estimator.update(t, &[object])[0];
            if let (Some(speed), true) = (speed, t >= 1.0) {
                let truth = (position(t + 1e-4) - position(t - 1e-4)).abs() / 2e-4 * 3.6;
                sum += (speed - truth).abs();
                count += 1;
            }
        }
        assert!(count > 0, "no speed reported");
        (sum / count as f64, count)
    }

    #[test]
    fn every_third_frame_changes_the_error_by_less_than_0_3_kmh() {
        // Receding at a constant 79.2 km/h; approaching while braking from 72 to 43 km/h.
        let receding = |t: f64| 12.0 + 22.0 * t;
        let braking = |t: f64| 90.0 - (20.0 * t - t * t);
        for (name, position, seconds) in [
            ("receding", &receding as &dyn Fn(f64) -> f64, 3.5),
            ("braking", &braking, 4.0),
        ] {
            let ((all, n_all), (third, n_third)) = (
                error_kmh(position, seconds, 1),
                error_kmh(position, seconds, 3),
            );
            eprintln!("{name}: {all:.3} km/h ({n_all} speeds) -> {third:.3} km/h ({n_third})");
            assert!(all < 1.0 && third < 1.0, "{name}: {all} / {third} km/h");
            assert!((third - all).abs() < 0.3, "{name}: {all} -> {third} km/h");
        }
    }

    /// A car's box taken for a frame by its neighbour one lane over: that frame gets no
    /// speed, then or as a backfill, and the frames around it keep theirs.
    #[test]
    fn a_frame_off_the_tracks_motion_gets_no_speed_then_or_later() {
        let mut estimator =
            SpeedEstimator::new(Some(calibration()), SpeedConfig::default(), (1280, 720));
        let (swapped, mut late) = (40, Vec::new());
        for frame in 0..60 {
            let t = frame as f64 / 25.0;
            let lane = if frame == swapped { -1.7 } else { 1.8 };
            let object = car(7, (lane, 70.0 - 20.0 * t), (0.0, 0.0));
            let speed = estimator.update(t, &[object])[0];
            if frame >= 20 {
                assert_eq!(
                    speed.is_none(),
                    frame == swapped,
                    "frame {frame}: {speed:?}"
                );
            }
            if let Some(speed) = speed {
                assert!((speed - 72.0).abs() < 0.5, "frame {frame}: {speed} km/h");
            }
            late.extend(estimator.take_backfill());
        }
        estimator.finish_all();
        late.extend(estimator.take_backfill());
        assert!(!late.is_empty());
        let swapped_at = swapped as f64 / 25.0;
        assert!(late.iter().all(|b| b.timestamp != swapped_at), "{late:?}");
    }

    /// With `backfill`, the frames of a braking vehicle that had no speed (before enough
    /// positions) get one as they leave the window, from the latest fit: each frame once,
    /// close to the truth at its own time, the deceleration included. Without it, none.
    #[test]
    fn backfill_gives_the_first_frames_the_speed_at_their_time() {
        let position = |t: f64| 90.0 - (20.0 * t - t * t);
        for backfill in [false, true] {
            let config = SpeedConfig {
                backfill,
                ..Default::default()
            };
            let mut estimator = SpeedEstimator::new(Some(calibration()), config, (1280, 720));
            let (mut without_speed, mut late) = (Vec::new(), Vec::new());
            for frame in 0..125 {
                let t = frame as f64 / 25.0;
                let object = car(4, (1.8, position(t)), (0.0, 0.0));
                if estimator.update(t, &[object])[0].is_none() {
                    without_speed.push(t);
                }
                let given = estimator.take_backfill();
                assert!(
                    given.iter().all(|b| t - b.timestamp > 3.99),
                    "{t}: {given:?}"
                );
                late.extend(given);
            }
            estimator.finish_all();
            late.extend(estimator.take_backfill());
            if !backfill {
                assert!(late.is_empty());
                continue;
            }
            assert!(without_speed.len() >= 5, "{without_speed:?}");
            let times: Vec<f64> = late.iter().map(|b| b.timestamp).collect();
            assert_eq!(times, without_speed);
            for b in &late {
                let truth = (20.0 - 2.0 * b.timestamp) * 3.6;
                assert!((b.speed - truth).abs() < 0.5, "{b:?}: truth {truth} km/h");
                assert_eq!(b.track_id, 4);
            }
        }
    }

    /// 2 s at 25 fps of a vehicle at 10 m/s, then, from the same spot, its id on one
    /// passing at 25 m/s: no jump in position, only in velocity. Positions jitter by 5 cm.
    fn passing(after: usize) -> VecDeque<(f64, f64, f64)> {
        let mut jitter = jitter_source();
        (0..50 + after)
            .map(|i| {
                let t = i as f64 / 25.0;
                let y = if i < 50 {
                    10.0 * t
                } else {
                    20.0 + 25.0 * (t - 2.0)
                };
                (t, 1.8 + 0.05 * jitter(), y + 0.05 * jitter())
            })
            .collect()
    }

    #[test]
    fn an_id_handed_to_a_vehicle_passing_at_another_speed_restarts_the_history() {
        // Every prefix of the first vehicle's drive is steady, and so are the first two
        // samples of the other one.
        for n in 10..=52 {
            let samples: VecDeque<_> = passing(2).into_iter().take(n).collect();
            assert_eq!(change_point(&samples), None, "{n} samples");
        }
        let start = change_point(&passing(6)).expect("the new velocity is found");
        assert!((50..=53).contains(&start), "{start}");
        // Hard braking (8 m/s² from 25 m/s) with the same jitter never restarts.
        let mut jitter = jitter_source();
        let braking: Vec<(f64, f64, f64)> = (0..75)
            .map(|i| {
                let t = i as f64 / 25.0;
                (
                    t,
                    1.8 + 0.05 * jitter(),
                    25.0 * t - 4.0 * t * t + 0.05 * jitter(),
                )
            })
            .collect();
        for n in 10..=braking.len() {
            let samples: VecDeque<_> = braking[..n].iter().copied().collect();
            assert_eq!(change_point(&samples), None, "{n} samples");
        }
    }

    #[test]
    fn a_step_within_the_positions_noise_is_no_jump() {
        // 1 s at 30 fps at 20 m/s, with positions 2 m off either way along the road (a
        // vehicle far from a low camera): consecutive steps reach 5 m, faster than 400 km/h
        // (3.7 m a frame) allows.
        let noisy = |amplitude: f64| History {
            samples: (0..30)
                .map(|i| {
                    let t = i as f64 / 30.0;
                    let noise = amplitude * if i % 2 == 0 { 1.0 } else { -1.0 };
                    (t, 0.0, 20.0 * t + noise)
                })
                .collect(),
            ..History::new(0.0, 2)
        };
        let dt = 1.0 / 30.0;
        assert!(!noisy(2.0).jumped(4.7, dt, 400.0));
        // A step far beyond the noise is a jump; so is the same 4.7 m on a precise track.
        assert!(noisy(2.0).jumped(40.0, dt, 400.0));
        assert!(noisy(0.0).jumped(4.7, dt, 400.0));
        assert!(!noisy(0.0).jumped(3.0, dt, 400.0));
    }

    #[test]
    fn an_uncertain_fit_gives_no_speed() {
        // 2 s at 25 fps at 20 m/s, positions jittering by up to `noise` metres.
        let samples = |noise: f64| -> VecDeque<(f64, f64, f64)> {
            let mut jitter = jitter_source();
            (0..50)
                .map(|i| {
                    let t = i as f64 / 25.0;
                    (t, 1.8 + noise * jitter(), 20.0 * t + noise * jitter())
                })
                .collect()
        };
        let unchecked = SpeedConfig {
            max_standard_error_kmh: 0.0,
            ..Default::default()
        };
        // 1.5 m of jitter: the mean speed's standard error is about 0.8 km/h.
        assert_eq!(kmh_with(&samples(1.5), SpeedConfig::default()), None);
        let speed = kmh_with(&samples(1.5), unchecked).expect("with the check off");
        assert!((speed - 72.0).abs() < 5.0, "{speed}");
        let precise =
            kmh_with(&samples(0.2), SpeedConfig::default()).expect("precise positions give one");
        assert!((precise - 72.0).abs() < 1.0, "{precise}");
    }

    /// A car approaching at 20 m/s from 150 m for 7 s (its box jittering by 3 % of its
    /// height makes its far positions uncertain): the speed each frame gets live, those
    /// given late by frame, and the mean error of all of them against 72 km/h.
    fn approach(config: SpeedConfig) -> (Vec<Option<f64>>, HashMap<u64, f64>, f64) {
        let mut estimator = SpeedEstimator::new(Some(calibration()), config, (1280, 720));
        let mut jitter = jitter_source();
        let (mut live, mut late) = (Vec::new(), HashMap::new());
        for frame in 0..175 {
            let t = frame as f64 / 25.0;
            let object = car(
                5,
                (1.8, 150.0 - 20.0 * t),
                (0.03 * jitter(), 0.03 * jitter()),
            );
            live.push(estimator.update(t, &[object])[0]);
            for b in estimator.take_backfill() {
                late.insert((b.timestamp * 25.0).round() as u64, b.speed);
            }
        }
        estimator.finish_all();
        for b in estimator.take_backfill() {
            late.insert((b.timestamp * 25.0).round() as u64, b.speed);
        }
        let all: Vec<f64> = live
            .iter()
            .flatten()
            .chain(late.values())
            .copied()
            .collect();
        let error = all.iter().map(|s| (s - 72.0).abs()).sum::<f64>() / all.len() as f64;
        (live, late, error)
    }

    #[test]
    fn uncertain_speeds_come_late_from_a_surer_fit_and_are_closer() {
        let checked = approach(SpeedConfig::default());
        let unchecked = approach(SpeedConfig {
            max_standard_error_kmh: 0.0,
            ..Default::default()
        });
        // Frames the check left without a live speed (the first settled fits, far away):
        // the backfill gives each of them one, and all speeds together are closer.
        let withheld: Vec<usize> = (0..checked.0.len())
            .filter(|&f| checked.0[f].is_none() && unchecked.0[f].is_some())
            .collect();
        assert!(withheld.len() >= 10, "{withheld:?}");
        assert!(
            withheld
                .iter()
                .all(|f| checked.1.contains_key(&(*f as u64)))
        );
        assert!(
            checked.2 < unchecked.2,
            "{} against {}",
            checked.2,
            unchecked.2
        );
    }

    #[test]
    fn a_car_leaving_through_the_bottom_keeps_its_speed_while_its_box_follows() {
        // Approaching at 20 m/s, its box's bottom reaches the border about 10 m away.
        let run = |border_hold: f64, swap_at: Option<f64>| {
            let config = SpeedConfig {
                border_hold,
                backfill: false,
                ..Default::default()
            };
            let mut estimator = SpeedEstimator::new(Some(calibration()), config, (1280, 720));
            let mut held = Vec::new();
            let mut last_uncut = 0.0;
            for frame in 0..100 {
                let t = frame as f64 / 25.0;
                let mut object = car(6, (1.8, 60.0 - 20.0 * t), (0.0, 0.0));
                if swap_at.is_some_and(|s| t >= s) {
                    // Another car's box, standing still a lane over.
                    object.bbox = car(6, (-1.8, 9.0), (0.0, 0.0)).bbox;
                }
                let cut = object.bbox.ground_point_cut(1280.0, 720.0, 6.0, 0.04);
                let speed = estimator.update(t, &[object])[0];
                if !cut {
                    last_uncut = t;
                } else if let Some(speed) = speed {
                    held.push((t - last_uncut, speed));
                }
            }
            held
        };
        let held = run(1.0, None);
        assert!(held.len() >= 3, "{held:?}");
        assert!(
            held.iter().all(|&(after, _)| after <= 1.0 + 1e-9),
            "{held:?}"
        );
        assert!(
            held.iter().all(|&(_, speed)| (speed - 72.0).abs() < 1.0),
            "{held:?}"
        );
        assert!(run(0.0, None).is_empty());
        // Once another vehicle's box takes the id at the border, nothing is held.
        let first_cut = held[0].0;
        let swapped = run(1.0, Some(2.5 - 0.04 + first_cut));
        assert!(swapped.len() < held.len(), "{swapped:?}");
    }
}
