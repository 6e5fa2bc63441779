//! ByteTrack (Zhang et al., 2022) as the Ultralytics reference implements it: two-stage
//! association (high-score detections with score-fused IoU, then low-score detections with
//! plain IoU), unconfirmed tracks confirmed on their second frame, lost tracks kept for a
//! time buffer, and duplicate tracked/lost pairs resolved toward the older track. Time is
//! taken from timestamps, so skipped frames stretch the Kalman prediction accordingly.

use super::assignment::assign_with_limit;
use super::camera_motion::Similarity;
use super::kalman::{self, BoxState, Gaussian, Measurement};
use super::{TrackedObject, TrackerConfig};
use crate::detect::Detection;
use crate::geometry::BBox;

/// Cost limit of the second association (low-score detections).
const SECOND_MATCH_LIMIT: f64 = 0.5;
/// Cost limit for confirming unconfirmed tracks.
const UNCONFIRMED_MATCH_LIMIT: f64 = 0.7;
/// IoU distance under which a tracked and a lost track are duplicates.
const DUPLICATE_DISTANCE: f32 = 0.15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Tracked,
    Lost,
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    kf: Gaussian,
    state: State,
    /// Confirmed (matched on a second frame, or born on the first frame of the stream).
    activated: bool,
    score: f32,
    class_id: usize,
    detection_index: usize,
    start_frame: u64,
    /// Last frame the track was matched.
    end_frame: u64,
    /// The filter just after the last match, and that match's measurement: where an
    /// observation-centric re-update starts from.
    last_observation: (Gaussian, Measurement),
    /// Centres of the latest matches, newest last, with their frames (at most
    /// [`OCM_DELTA_FRAMES`] + 1): where the momentum term measures directions from.
    recent_centres: Vec<(u64, [f64; 2])>,
    /// Unit direction of motion over the latest matches (OC-SORT's "inertia"), once the
    /// track has moved.
    direction: Option<[f64; 2]>,
}

impl Track {
    fn bbox(&self) -> BBox {
        let m = &self.kf.mean;
        let (w, h) = self.kf.boxes.size(m);
        BBox::from_cxcywh(m[0] as f32, m[1] as f32, w as f32, h as f32)
    }

    fn update(&mut self, det: &Candidate, frame: u64, cfg: &TrackerConfig) {
        // NSA: measurement noise scaled by 1 - score (kept above zero for scores of 1).
        let noise_scale = if cfg.nsa {
            (1.0 - det.score as f64).max(0.01)
        } else {
            1.0
        };
        let gap = frame.saturating_sub(self.end_frame);
        if cfg.re_updates_lost_tracks() && self.state == State::Lost && gap > 1 {
            // OC-SORT's observation-centric re-update: the prediction drifted while the
            // track was lost, so the filter goes back to its last observation and follows a
            // straight line from there to this one, one virtual observation per frame.
            let (mut kf, from) = self.last_observation.clone();
            for k in 1..=gap {
                kalman::predict(&mut kf, 1.0);
                let t = k as f64 / gap as f64;
                let z = std::array::from_fn(|i| from[i] + t * (det.measurement[i] - from[i]));
                kalman::update(&mut kf, z, noise_scale);
            }
            self.kf = kf;
        } else {
            kalman::update(&mut self.kf, det.measurement, noise_scale);
        }
        self.last_observation = (self.kf.clone(), det.measurement);
        let centre = [det.measurement[0], det.measurement[1]];
        if let Some(direction) = unit(self.momentum_origin(frame), centre) {
            self.direction = Some(direction);
        }
        self.recent_centres.push((frame, centre));
        if self.recent_centres.len() > OCM_DELTA_FRAMES as usize + 1 {
            self.recent_centres.remove(0);
        }
        self.state = State::Tracked;
        self.activated = true;
        self.score = det.score;
        self.class_id = det.class_id;
        self.detection_index = det.index;
        self.end_frame = frame;
    }
}

impl Track {
    /// Where directions of motion are measured from at `frame`: the match
    /// [`OCM_DELTA_FRAMES`] frames earlier, else the nearest to that of the later ones, else
    /// the latest (as OC-SORT picks its previous observation).
    fn momentum_origin(&self, frame: u64) -> [f64; 2] {
        (1..=OCM_DELTA_FRAMES)
            .rev()
            .find_map(|dt| {
                let wanted = frame.checked_sub(dt)?;
                self.recent_centres
                    .iter()
                    .find(|(f, _)| *f == wanted)
                    .map(|(_, c)| *c)
            })
            .or_else(|| self.recent_centres.last().map(|(_, c)| *c))
            .unwrap_or([self.last_observation.1[0], self.last_observation.1[1]])
    }
}

/// The unit vector from `from` to `to`, if they differ.
fn unit(from: [f64; 2], to: [f64; 2]) -> Option<[f64; 2]> {
    let (dx, dy) = (to[0] - from[0], to[1] - from[1]);
    let length = dx.hypot(dy);
    (length > 1e-6).then(|| [dx / length, dy / length])
}

/// How many frames back OC-SORT's momentum term measures a track's direction of motion
/// (its `delta_t`).
const OCM_DELTA_FRAMES: u64 = 3;

/// OC-SORT's momentum term (OCM) on a first-association cost matrix: each pair a gate
/// already admits gets cheaper the better the direction from the track's recent position to
/// the detection agrees with the track's direction of motion (by up to `weight / 2`, times
/// the detection's score), dearer the worse it agrees; costs stay inside the gate.
fn add_momentum(
    cost: &mut [f64],
    tracks: &[Track],
    dets: &[Candidate],
    weight: f64,
    frame: u64,
    gate: f64,
) {
    if weight == 0.0 || dets.is_empty() {
        return;
    }
    for (row, track) in cost.chunks_exact_mut(dets.len()).zip(tracks) {
        let Some(direction) = track.direction else {
            continue;
        };
        let origin = track.momentum_origin(frame);
        for (c, det) in row.iter_mut().zip(dets) {
            if *c >= gate {
                continue;
            }
            let centre = [det.measurement[0], det.measurement[1]];
            let Some(towards) = unit(origin, centre) else {
                continue;
            };
            let cosine = (direction[0] * towards[0] + direction[1] * towards[1]).clamp(-1.0, 1.0);
            // (pi/2 - angle) / pi: 0.5 along the motion, -0.5 against it.
            let agreement = (std::f64::consts::FRAC_PI_2 - cosine.acos()) / std::f64::consts::PI;
            let adjusted = *c - weight * agreement * det.score as f64;
            *c = adjusted.clamp(0.0, gate.next_down());
        }
    }
}

/// A detection prepared for association.
struct Candidate {
    bbox: BBox,
    measurement: Measurement,
    score: f32,
    class_id: usize,
    index: usize,
}

impl Candidate {
    fn new(index: usize, d: &Detection, boxes: BoxState) -> Self {
        let (cx, cy) = d.bbox.centre();
        let (w, h) = (d.bbox.width() as f64, d.bbox.height().max(1e-3) as f64);
        Self {
            bbox: d.bbox,
            measurement: boxes.measurement((cx as f64, cy as f64), w, h),
            score: d.score,
            class_id: d.class_id,
            index,
        }
    }
}

/// One ByteTrack instance.
pub struct ByteTracker {
    config: TrackerConfig,
    fps: f64,
    /// Tracked tracks, confirmed or not, in creation order.
    tracked: Vec<Track>,
    lost: Vec<Track>,
    frame: u64,
    last_time: Option<f64>,
}

impl ByteTracker {
    pub fn new(config: TrackerConfig, fps: f64) -> Self {
        Self {
            config,
            fps: super::nominal_fps(fps),
            tracked: Vec::new(),
            lost: Vec::new(),
            frame: 0,
            last_time: None,
        }
    }

    /// Tracked plus lost tracks.
    pub fn live_tracks(&self) -> usize {
        self.tracked.len() + self.lost.len()
    }

    /// Frames a lost track survives: `track_buffer` seconds at the nominal rate.
    fn max_lost_frames(&self) -> f64 {
        (self.config.track_buffer * self.fps).floor()
    }

    /// Processes one frame; `camera` is the camera's motion since the previous frame, where
    /// known; `next_id` hands out track ids.
    pub fn update(
        &mut self,
        detections: &[Detection],
        timestamp: f64,
        camera: Option<&Similarity>,
        next_id: &mut u64,
    ) -> Vec<TrackedObject> {
        // Frame counter advanced by the elapsed time, so skipped frames count as frames.
        let steps = match self.last_time {
            Some(last) => ((timestamp - last) * self.fps).max(0.0),
            None => 1.0,
        };
        let step_frames = steps.round().max(1.0) as u64;
        self.frame += step_frames;
        self.last_time = Some(timestamp);
        let frame = self.frame;
        let cfg = self.config.clone();

        let mut high = Vec::new();
        let mut low = Vec::new();
        for (i, d) in detections.iter().enumerate() {
            if d.score >= cfg.high_thresh {
                high.push(Candidate::new(i, d, cfg.box_state));
            } else if d.score > cfg.low_thresh {
                low.push(Candidate::new(i, d, cfg.box_state));
            }
        }

        let (confirmed, mut unconfirmed): (Vec<Track>, Vec<Track>) =
            std::mem::take(&mut self.tracked)
                .into_iter()
                .partition(|t| t.activated);
        // Pool: confirmed tracked tracks then lost tracks, predicted forward.
        let mut pool: Vec<Track> = confirmed;
        pool.extend(std::mem::take(&mut self.lost));
        for t in &mut pool {
            if t.state != State::Tracked {
                t.kf.boxes.freeze_size(&mut t.kf.mean);
            }
            kalman::predict(&mut t.kf, steps.max(1e-3));
        }
        if let Some(camera) = camera {
            for t in pool.iter_mut().chain(unconfirmed.iter_mut()) {
                kalman::warp(&mut t.kf, camera);
            }
        }

        let mut activated: Vec<Track> = Vec::new();
        let mut lost_now: Vec<Track> = Vec::new();

        // First association: pool x high-score detections.
        let mut cost = iou_cost(&pool, &high, cfg.fuse_score);
        add_momentum(
            &mut cost,
            &pool,
            &high,
            cfg.momentum_weight().into(),
            frame,
            cfg.match_thresh.into(),
        );
        let first = assign_with_limit(&cost, pool.len(), high.len(), cfg.match_thresh as f64);
        let mut pool_slots: Vec<Option<Track>> = pool.into_iter().map(Some).collect();
        for &(ti, di) in &first.matches {
            let mut t = pool_slots[ti].take().expect("matched once");
            t.update(&high[di], frame, &cfg);
            activated.push(t);
        }

        // Second association: remaining tracked (not lost) tracks x low-score detections.
        let remaining: Vec<Track> = first
            .unmatched_rows
            .iter()
            .filter_map(|&i| pool_slots[i].take())
            .collect();
        let (r_tracked, r_lost): (Vec<Track>, Vec<Track>) = remaining
            .into_iter()
            .partition(|t| t.state == State::Tracked);
        let cost = iou_cost(&r_tracked, &low, false);
        let second = assign_with_limit(&cost, r_tracked.len(), low.len(), SECOND_MATCH_LIMIT);
        let mut r_slots: Vec<Option<Track>> = r_tracked.into_iter().map(Some).collect();
        for &(ti, di) in &second.matches {
            let mut t = r_slots[ti].take().expect("matched once");
            t.update(&low[di], frame, &cfg);
            activated.push(t);
        }
        for mut t in r_slots.into_iter().flatten() {
            t.state = State::Lost;
            lost_now.push(t);
        }
        let mut still_lost = r_lost;

        // Unconfirmed tracks: matched to leftover high detections or removed.
        let leftovers: Vec<&Candidate> = first.unmatched_cols.iter().map(|&i| &high[i]).collect();
        let cost = iou_cost_refs(&unconfirmed, &leftovers, cfg.fuse_score);
        let third = assign_with_limit(
            &cost,
            unconfirmed.len(),
            leftovers.len(),
            UNCONFIRMED_MATCH_LIMIT,
        );
        let mut confirmed_now = Vec::new();
        for &(ti, di) in third.matches.iter().rev() {
            let mut t = unconfirmed.swap_remove(ti);
            t.update(leftovers[di], frame, &cfg);
            confirmed_now.push(t);
        }
        confirmed_now.reverse();
        activated.extend(confirmed_now);

        // New tracks from confident unmatched detections.
        for &di in &third.unmatched_cols {
            let det = leftovers[di];
            if det.score < cfg.new_track_thresh {
                continue;
            }
            let id = *next_id;
            *next_id += 1;
            let kf = kalman::initiate(det.measurement, cfg.box_state);
            activated.push(Track {
                id,
                last_observation: (kf.clone(), det.measurement),
                recent_centres: vec![(frame, [det.measurement[0], det.measurement[1]])],
                direction: None,
                kf,
                state: State::Tracked,
                activated: frame == 1,
                score: det.score,
                class_id: det.class_id,
                detection_index: det.index,
                start_frame: frame,
                end_frame: frame,
            });
        }

        // Lost tracks past the buffer are dropped for good (nothing is kept of them).
        let max_lost = self.max_lost_frames();
        still_lost.retain(|t| ((frame - t.end_frame) as f64) <= max_lost);
        still_lost.extend(lost_now);
        activated.sort_by_key(|t| t.id);
        let (tracked, lost) = remove_duplicates(activated, still_lost);
        self.tracked = tracked;
        self.lost = lost;

        self.tracked
            .iter()
            .filter(|t| (t.activated || cfg.report_new_tracks) && t.end_frame == frame)
            .map(|t| TrackedObject {
                track_id: t.id,
                bbox: t.bbox(),
                score: t.score,
                class_id: t.class_id,
                detection_index: t.detection_index,
            })
            .collect()
    }
}

/// `1 - IoU` between track boxes and detections, optionally fused with detection scores
/// (`1 - IoU * score`), row-major.
fn iou_cost(tracks: &[Track], dets: &[Candidate], fuse_score: bool) -> Vec<f64> {
    let refs: Vec<&Candidate> = dets.iter().collect();
    iou_cost_refs(tracks, &refs, fuse_score)
}

fn iou_cost_refs(tracks: &[Track], dets: &[&Candidate], fuse_score: bool) -> Vec<f64> {
    let mut cost = Vec::with_capacity(tracks.len() * dets.len());
    for t in tracks {
        let tb = t.bbox();
        for d in dets {
            let iou = tb.iou(&d.bbox) as f64;
            let similarity = if fuse_score {
                iou * d.score as f64
            } else {
                iou
            };
            cost.push(1.0 - similarity);
        }
    }
    cost
}

/// A tracked and a lost track that overlap almost completely are one object: keep the one
/// followed for longer.
fn remove_duplicates(tracked: Vec<Track>, lost: Vec<Track>) -> (Vec<Track>, Vec<Track>) {
    let mut drop_tracked = vec![false; tracked.len()];
    let mut drop_lost = vec![false; lost.len()];
    for (p, a) in tracked.iter().enumerate() {
        let ab = a.bbox();
        for (q, b) in lost.iter().enumerate() {
            if 1.0 - ab.iou(&b.bbox()) < DUPLICATE_DISTANCE {
                let age_a = a.end_frame - a.start_frame;
                let age_b = b.end_frame - b.start_frame;
                if age_a > age_b {
                    drop_lost[q] = true;
                } else {
                    drop_tracked[p] = true;
                }
            }
        }
    }
    let keep = |tracks: Vec<Track>, drop: Vec<bool>| {
        tracks
            .into_iter()
            .zip(drop)
            .filter(|(_, d)| !d)
            .map(|(t, _)| t)
            .collect()
    };
    (keep(tracked, drop_tracked), keep(lost, drop_lost))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, score: f32) -> Detection {
        Detection {
            bbox: BBox::new(x, 100.0, x + 40.0, 200.0),
            score,
            class_id: 0,
        }
    }

    fn run(
        tracker: &mut ByteTracker,
        frames: &[Vec<Detection>],
        fps: f64,
        next_id: &mut u64,
    ) -> Vec<Vec<TrackedObject>> {
        frames
            .iter()
            .enumerate()
            .map(|(i, dets)| tracker.update(dets, i as f64 / fps, None, next_id))
            .collect()
    }

    /// The momentum term: for a track moving right, a detection ahead of it costs less and
    /// one behind it more than their IoU alone says, by at most half the weight times the
    /// score; pairs the gate refuses stay refused, and a track without motion is left alone.
    #[test]
    fn momentum_favours_detections_along_the_motion() {
        let mut tracker = ByteTracker::new(TrackerConfig::default(), 30.0);
        let mut next_id = 1;
        let frames: Vec<Vec<Detection>> = (0..6).map(|i| vec![det(5.0 * i as f32, 0.9)]).collect();
        run(&mut tracker, &frames, 30.0, &mut next_id);
        let moving = tracker.tracked[0].clone();
        assert_eq!(
            moving.direction.map(|d| d.map(|v| v.round())),
            Some([1.0, 0.0])
        );
        let still = Track {
            direction: None,
            ..moving.clone()
        };
        let dets = [
            Candidate::new(0, &det(40.0, 0.9), BoxState::Xyah),
            Candidate::new(1, &det(10.0, 0.9), BoxState::Xyah),
            Candidate::new(2, &det(400.0, 0.9), BoxState::Xyah),
        ];
        let gate = 0.8;
        let plain = iou_cost(&[moving.clone(), still.clone()], &dets, true);
        let mut cost = plain.clone();
        add_momentum(&mut cost, &[moving, still], &dets, 0.2, 7, gate);
        assert!(
            cost[0] < plain[0] && plain[0] - cost[0] <= 0.1 * 0.9 + 1e-9,
            "{cost:?}"
        );
        assert!(
            cost[1] > plain[1] && cost[1] - plain[1] <= 0.1 * 0.9 + 1e-9,
            "{cost:?}"
        );
        assert!(cost[..2].iter().all(|&c| c < gate));
        assert_eq!(cost[2], plain[2], "outside the gate");
        assert_eq!(cost[3..], plain[3..], "no motion, no momentum");
    }

    /// A parked object while the camera pans 30 px a frame, farther than its box overlaps
    /// from frame to frame: moved with the camera, its track keeps one id in every frame;
    /// without it, the first frame's track is never matched again.
    #[test]
    fn predictions_moved_with_the_camera_keep_ids_through_a_pan() {
        let pan = Similarity {
            tx: -30.0,
            ..Similarity::IDENTITY
        };
        let frames: Vec<Vec<Detection>> = (0..12)
            .map(|i| vec![det(400.0 - 30.0 * i as f32, 0.9)])
            .collect();
        let ids = |camera: Option<&Similarity>| {
            let mut tracker = ByteTracker::new(TrackerConfig::default(), 30.0);
            let mut next_id = 1;
            let (mut ids, mut reports) = (std::collections::BTreeSet::new(), 0);
            for (i, dets) in frames.iter().enumerate() {
                let moved = camera.filter(|_| i > 0);
                for t in tracker.update(dets, i as f64 / 30.0, moved, &mut next_id) {
                    ids.insert(t.track_id);
                    reports += 1;
                }
            }
            (ids.len(), reports)
        };
        assert_eq!(ids(Some(&pan)), (1, 12));
        assert_eq!(ids(None), (1, 1));
    }

    /// An object moving 5 px a frame vanishes for five frames and comes back having moved
    /// only 10 px in six: the re-update sees the slow-down along the gap, the single
    /// correction of the drifted prediction keeps most of the old speed.
    #[test]
    fn observation_centric_re_update_learns_the_motion_across_the_gap() {
        let velocity_after = |oru: bool| {
            let config = TrackerConfig {
                oru,
                ..TrackerConfig::default()
            };
            let mut tracker = ByteTracker::new(config, 30.0);
            let mut frames: Vec<Vec<Detection>> = (0..10)
                .map(|i| vec![det(10.0 + 5.0 * i as f32, 0.9)])
                .collect();
            frames.extend((0..5).map(|_| Vec::new()));
            frames.push(vec![det(65.0, 0.9)]);
            let mut next_id = 1;
            let out = run(&mut tracker, &frames, 30.0, &mut next_id);
            assert_eq!(out[15][0].track_id, 1, "the same track");
            tracker.tracked[0].kf.mean[4]
        };
        let (plain, re_updated) = (velocity_after(false), velocity_after(true));
        let across_gap = 10.0 / 6.0;
        assert!(
            (re_updated - across_gap).abs() < (plain - across_gap).abs(),
            "re-updated {re_updated}, plain {plain}"
        );
    }

    #[test]
    fn a_moving_object_keeps_one_id() {
        let mut tracker = ByteTracker::new(TrackerConfig::default(), 30.0);
        let frames: Vec<Vec<Detection>> = (0..50)
            .map(|i| vec![det(10.0 + 3.0 * i as f32, 0.9)])
            .collect();
        let mut next_id = 1;
        let out = run(&mut tracker, &frames, 30.0, &mut next_id);
        assert!(out.iter().all(|o| o.len() == 1 && o[0].track_id == 1));
        assert_eq!(out[49][0].detection_index, 0);
        assert!((out[49][0].bbox.x1 - (10.0 + 147.0)).abs() < 2.0);
    }

    #[test]
    fn low_score_detections_continue_but_never_start_tracks() {
        let mut tracker = ByteTracker::new(TrackerConfig::default(), 30.0);
        let mut next_id = 1;
        let mut frames: Vec<Vec<Detection>> =
            (0..5).map(|i| vec![det(10.0 + i as f32, 0.9)]).collect();
        frames.extend((5..10).map(|i| vec![det(10.0 + i as f32, 0.15)]));
        frames.push(vec![det(400.0, 0.15)]);
        let out = run(&mut tracker, &frames, 30.0, &mut next_id);
        assert!(
            out[5..10]
                .iter()
                .all(|o| o.len() == 1 && o[0].track_id == 1)
        );
        assert!(out[10].is_empty());
        assert_eq!(next_id, 2);
    }

    #[test]
    fn lost_tracks_are_recovered_within_the_buffer_and_forgotten_after() {
        let one_second = TrackerConfig {
            track_buffer: 1.0,
            ..TrackerConfig::default()
        };
        let mut next_id = 1;
        let mut tracker = ByteTracker::new(one_second.clone(), 10.0);
        let mut frames: Vec<Vec<Detection>> = (0..5).map(|_| vec![det(50.0, 0.9)]).collect();
        frames.extend((0..8).map(|_| Vec::new()));
        frames.push(vec![det(50.0, 0.9)]);
        let out = run(&mut tracker, &frames, 10.0, &mut next_id);
        assert_eq!(out[13][0].track_id, 1, "re-identified after 0.9 s");

        let mut tracker = ByteTracker::new(one_second, 10.0);
        let mut frames: Vec<Vec<Detection>> = (0..5).map(|_| vec![det(50.0, 0.9)]).collect();
        frames.extend((0..15).map(|_| Vec::new()));
        frames.push(vec![det(50.0, 0.9)]);
        frames.push(vec![det(50.0, 0.9)]);
        let out = run(&mut tracker, &frames, 10.0, &mut next_id);
        assert!(
            out[20].is_empty(),
            "a new track is unconfirmed on its first frame"
        );
        assert_eq!(out[21][0].track_id, 3, "a new id after 1.5 s");
        assert_eq!(tracker.live_tracks(), 1, "the old track is gone");
    }

    #[test]
    fn skipped_frames_keep_the_track_through_the_real_time_step() {
        let mut next_id = 1;
        let mut tracker = ByteTracker::new(TrackerConfig::default(), 30.0);
        // An object moving 6 px per frame, seen only every 4th frame.
        let out: Vec<_> = (0..40)
            .step_by(4)
            .map(|i| {
                tracker.update(
                    &[det(6.0 * i as f32, 0.9)],
                    i as f64 / 30.0,
                    None,
                    &mut next_id,
                )
            })
            .collect();
        assert!(out[1..].iter().all(|o| o.len() == 1 && o[0].track_id == 1));
    }
}
