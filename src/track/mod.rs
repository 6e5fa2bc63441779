//! Multi-object tracking: Kalman filter, linear assignment and ByteTrack.

pub mod assignment;
pub mod bytetrack;
pub mod camera_motion;
pub mod gaps;
pub mod kalman;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::detect::Detection;
use crate::geometry::BBox;
pub use bytetrack::ByteTracker;
pub use camera_motion::{CameraMotion, Similarity};
pub use gaps::{FilledBox, GapFiller};
pub use kalman::BoxState;

/// ByteTrack settings. The defaults are Ultralytics' `bytetrack.yaml` (its 30-frame buffer as
/// one second) with two additions that have no parameter and beat it on every shared MOT17
/// and TUD sequence, HOTA and IDF1 alike: BoT-SORT's width-and-height Kalman state and filled
/// gaps ([`TrackerConfig::reference`] leaves both out). A 2 s buffer scored higher on the four
/// MOT17 sequences, but chosen leave-one-sequence-out it lost to the reference's one second
/// on the held-out MOT17-05 (`scripts/tracker_loso.py`, README "Results").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// The tracker: plain ByteTrack (the reference's behaviour), or ByteTrack with OC-SORT's
    /// observation-centric additions switched on.
    pub kind: TrackerKind,
    /// Detections at or above this score take part in the first association.
    pub high_thresh: f32,
    /// Detections above this (and below `high_thresh`) take part in the second association.
    pub low_thresh: f32,
    /// Unmatched detections at or above this score start new tracks.
    pub new_track_thresh: f32,
    /// Seconds a lost track is kept for re-identification.
    pub track_buffer: f64,
    /// Cost limit (1 - IoU, score-fused) of the first association.
    pub match_thresh: f32,
    /// Multiply IoU by the detection score in the first association.
    pub fuse_score: bool,
    /// Track each class separately (a car never continues a person's track).
    pub per_class: bool,
    /// Report a new track on its first frame instead of waiting for its confirmation on the
    /// second (the reference reports it from the second frame on).
    pub report_new_tracks: bool,
    /// Scale the Kalman filter's measurement noise by `1 - score` (the NSA Kalman filter):
    /// confident detections correct the state more.
    pub nsa: bool,
    /// When a lost track is matched again, re-run its filter along a straight line from its
    /// last observation to the new one (OC-SORT's observation-centric re-update) instead of
    /// correcting the drifted prediction once.
    pub oru: bool,
    /// Weight of OC-SORT's momentum term in the first association: a match whose direction
    /// from the track's position three frames ago agrees with the track's direction of
    /// motion costs less (0.2 in OC-SORT; 0 leaves it out).
    pub ocm: f32,
    /// The Kalman filter's box coordinates: `xyah` (ByteTrack's centre, aspect ratio and
    /// height) or `xywh` (BoT-SORT's centre, width and height).
    pub box_state: BoxState,
    /// When a lost track is found again, give it boxes for the analysed frames it missed,
    /// interpolated between the boxes before and after the gap ([`GapFiller`]). They reach
    /// the result files late, after the frame that found the track.
    pub fill_gaps: bool,
    /// Move every track's prediction with the camera before matching (BoT-SORT's global
    /// motion compensation, measured on the frames' background: [`CameraMotion`]); for
    /// cameras that pan, tilt, zoom or shake. Needs the frames (`process`, `live`, `serve`).
    pub camera_motion: bool,
}

/// Which tracker [`TrackerConfig::kind`] selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackerKind {
    /// ByteTrack's two associations as Ultralytics runs them; `nsa`, `oru` and `ocm` add to
    /// them one by one.
    #[default]
    ByteTrack,
    /// ByteTrack's two associations with OC-SORT's observation-centric re-update and its
    /// momentum term at OC-SORT's weight 0.2 (`oru` is then on, and `ocm`, where set above
    /// 0, gives the weight).
    OcSort,
}

/// The frame rate a tracker counts its frames at: the source's, or 30 where it gives none.
fn nominal_fps(fps: f64) -> f64 {
    if fps > 0.0 { fps } else { 30.0 }
}

/// OC-SORT's published momentum weight, which `kind = "ocsort"` uses unless `ocm` is set.
const OC_SORT_MOMENTUM: f32 = 0.2;

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            kind: TrackerKind::ByteTrack,
            high_thresh: 0.25,
            low_thresh: 0.1,
            new_track_thresh: 0.25,
            track_buffer: 1.0,
            match_thresh: 0.8,
            fuse_score: true,
            per_class: false,
            report_new_tracks: false,
            nsa: false,
            oru: false,
            ocm: 0.0,
            box_state: BoxState::Xywh,
            fill_gaps: true,
            camera_motion: false,
        }
    }
}

impl TrackerConfig {
    /// The reference tracker, Ultralytics' ByteTrack with its `bytetrack.yaml`: the defaults
    /// with ByteTrack's aspect-ratio Kalman state and no filled gaps.
    pub fn reference() -> Self {
        Self {
            box_state: BoxState::Xyah,
            fill_gaps: false,
            ..Self::default()
        }
    }

    /// Checks every threshold is a finite number in its range.
    pub fn validate(&self) -> Result<(), String> {
        use crate::checks::{at_least, in_range};
        in_range("high_thresh", self.high_thresh.into(), 0.0, 1.0)?;
        in_range("low_thresh", self.low_thresh.into(), 0.0, 1.0)?;
        in_range("new_track_thresh", self.new_track_thresh.into(), 0.0, 1.0)?;
        in_range("match_thresh", self.match_thresh.into(), 0.0, 1.0)?;
        in_range("ocm", self.ocm.into(), 0.0, 1.0)?;
        at_least("track_buffer", self.track_buffer, 0.0)
    }

    /// Whether a lost track matched again re-runs its filter along its gap (`oru`, or the
    /// OC-SORT kind).
    pub fn re_updates_lost_tracks(&self) -> bool {
        self.oru || self.kind == TrackerKind::OcSort
    }

    /// The momentum term's weight in the first association: `ocm` where set, else OC-SORT's
    /// for the OC-SORT kind, else none.
    pub fn momentum_weight(&self) -> f32 {
        match self.kind {
            TrackerKind::OcSort if self.ocm == 0.0 => OC_SORT_MOMENTUM,
            _ => self.ocm,
        }
    }
}

/// One confirmed track in the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrackedObject {
    /// Positive, unique per stream, never reused.
    pub track_id: u64,
    /// Kalman-filtered box.
    pub bbox: BBox,
    pub score: f32,
    pub class_id: usize,
    /// Index of the detection (in this frame's input) that updated the track.
    pub detection_index: usize,
}

impl TrackedObject {
    /// The same track with the box of the detection that updated it (unfiltered: a switch
    /// to another object shows as a jump instead of a smooth Kalman drift).
    pub fn with_detection_box(&self, detections: &[Detection]) -> TrackedObject {
        TrackedObject {
            bbox: detections[self.detection_index].bbox,
            ..*self
        }
    }
}

/// ByteTrack over all classes, or one ByteTrack per class with a shared id counter.
pub struct Tracker {
    config: TrackerConfig,
    fps: f64,
    trackers: BTreeMap<Option<usize>, ByteTracker>,
    next_id: u64,
}

impl Tracker {
    /// `fps` is the source's nominal frame rate; time steps come from timestamps.
    pub fn new(config: TrackerConfig, fps: f64) -> Self {
        Self {
            config,
            fps,
            trackers: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// Updates with the detections of the frame presented at `timestamp` seconds. Call it for
    /// every processed frame, also when there are no detections.
    pub fn update(&mut self, detections: &[Detection], timestamp: f64) -> Vec<TrackedObject> {
        self.update_with_camera_motion(detections, timestamp, None)
    }

    /// [`Tracker::update`] on a moving camera: every track's prediction is moved by
    /// `camera`, the camera's motion since the previous frame ([`CameraMotion`]).
    pub fn update_with_camera_motion(
        &mut self,
        detections: &[Detection],
        timestamp: f64,
        camera: Option<&Similarity>,
    ) -> Vec<TrackedObject> {
        if !self.config.per_class {
            let tracker = self
                .trackers
                .entry(None)
                .or_insert_with(|| ByteTracker::new(self.config.clone(), self.fps));
            return tracker.update(detections, timestamp, camera, &mut self.next_id);
        }
        let mut by_class: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
        for (i, d) in detections.iter().enumerate() {
            by_class.entry(Some(d.class_id)).or_default().push(i);
        }
        for class in by_class.keys() {
            self.trackers
                .entry(*class)
                .or_insert_with(|| ByteTracker::new(self.config.clone(), self.fps));
        }
        let mut out = Vec::new();
        for (class, tracker) in self.trackers.iter_mut() {
            let indices = by_class.remove(class).unwrap_or_default();
            let subset: Vec<Detection> = indices.iter().map(|&i| detections[i]).collect();
            for mut t in tracker.update(&subset, timestamp, camera, &mut self.next_id) {
                t.detection_index = indices[t.detection_index];
                out.push(t);
            }
        }
        out
    }

    /// A gap filler for this tracker's buffer and frame rate, when `fill_gaps` asks for one.
    pub fn gap_filler(&self) -> Option<GapFiller> {
        let horizon = GapFiller::horizon_for(self.config.track_buffer, self.fps);
        self.config.fill_gaps.then(|| GapFiller::new(horizon))
    }

    /// A camera motion estimator, when `camera_motion` asks for one.
    pub fn camera_motion(&self) -> Option<CameraMotion> {
        self.config.camera_motion.then(CameraMotion::new)
    }

    /// Number of tracks being followed (tracked and lost).
    pub fn live_tracks(&self) -> usize {
        self.trackers.values().map(ByteTracker::live_tracks).sum()
    }
}

/// Runs the tracker over MOTChallenge detection rows of a sequence and returns result rows
/// (`frame, id, box, score`), frame by frame; with `fill_gaps`, the filled boxes among them.
pub fn track_mot_rows(
    detections: &[crate::formats::mot::MotRow],
    info: &crate::formats::mot::SeqInfo,
    config: &TrackerConfig,
) -> Vec<crate::formats::mot::MotRow> {
    let mut tracker = Tracker::new(config.clone(), info.frame_rate);
    let mut gaps = tracker.gap_filler();
    let mut out = Vec::new();
    for (f, rows) in crate::formats::mot::by_frame(detections, info.length)
        .iter()
        .enumerate()
    {
        let frame = f as u32 + 1;
        let dets: Vec<Detection> = rows
            .iter()
            .map(crate::formats::mot::MotRow::detection)
            .collect();
        let time = f as f64 / info.frame_rate;
        let tracks = tracker.update(&dets, time);
        if let Some(gaps) = gaps.as_mut() {
            let seen = tracks.iter().map(|t| (t.track_id, t.bbox, t.score));
            for filled in gaps.update(frame.into(), time, seen) {
                out.push(crate::formats::mot::MotRow::result(
                    filled.frame as u32,
                    filled.track_id,
                    filled.bbox,
                    filled.score,
                ));
            }
        }
        for t in tracks {
            out.push(crate::formats::mot::MotRow::result(
                frame, t.track_id, t.bbox, t.score,
            ));
        }
    }
    out.sort_by_key(|row| row.frame);
    out
}
