//! The per-frame analysis after the network: track, estimate speeds, count zones, report
//! events, write results and draw annotations.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::annotate::{self, Annotation, Annotator};
use crate::detect::Detection;
use crate::events::Event;
use crate::geometry::BBox;
use crate::live_view::LiveView;
use crate::output::{FrameRecord, ResultWriters, TrackRecord};
use crate::pipeline::FrameStage;
use crate::speed::{SpeedEstimator, SpeedUnit, TrackSummary};
use crate::track::{CameraMotion, GapFiller, Tracker};
use crate::video::{Frame, Outage};
use crate::zones::{TrackPosition, ZoneCounter, ZoneCounts, ZonesConfig};

/// The tracks of one class that ended: how many, and their speeds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassTally {
    pub tracks: u64,
    /// Sum and number of the tracks' mean speeds (tracks with a speed only).
    speed_sum: f64,
    speeds: u64,
    /// Fastest reported speed of any of them.
    pub max_speed: Option<f64>,
}

impl ClassTally {
    fn add(&mut self, track: &TrackSummary) {
        self.tracks += 1;
        if let Some(mean) = track.mean_speed {
            self.speed_sum += mean;
            self.speeds += 1;
        }
        self.max_speed = match (self.max_speed, track.max_speed) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Mean over the tracks' mean speeds; `None` when no track had a speed.
    pub fn mean_speed(&self) -> Option<f64> {
        (self.speeds > 0).then(|| self.speed_sum / self.speeds as f64)
    }
}

/// Every stage after the network, for one stream.
pub struct Analysis {
    names: Vec<String>,
    tracker: Tracker,
    /// Boxes for the frames a re-found track missed (`[tracker] fill_gaps`).
    gaps: Option<GapFiller>,
    /// The camera's motion between analysed frames (`[tracker] camera_motion`).
    camera: Option<CameraMotion>,
    /// The records written within the backfill's reach (`[speed] backfill`), oldest first:
    /// what a late speed is added to.
    recent: VecDeque<FrameRecord>,
    speeds: SpeedEstimator,
    /// Seconds after which an unseen track is summarised and forgotten.
    track_idle: f64,
    annotator: Annotator,
    writers: ResultWriters,
    /// Tracks already reported above the speed limit (forgotten with the track).
    speeding: HashSet<u64>,
    /// Tracks that ended, per class (totals only: a live run of days keeps no list).
    pub classes: BTreeMap<usize, ClassTally>,
    /// Drawn on frames that were not analysed (frame skipping).
    last_annotations: Vec<Annotation>,
    zones: ZoneCounter,
    /// Shown the line and area counts as they change.
    live_view: Option<Arc<LiveView>>,
    /// Where the time of the last analysed frame went, when asked for (`bench`).
    stage_times: Option<StageTimes>,
}

/// Time spent in each part of [`Analysis`]'s work on one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// The camera's motion between analysed frames (`camera_motion`; zero when off).
    pub camera: Duration,
    /// The tracker.
    pub track: Duration,
    /// The speed estimator.
    pub speed: Duration,
    /// Events, zone counting, drawing and writing the results.
    pub annotate: Duration,
}

impl Analysis {
    /// `names` are the display names (after any renaming); `track_idle` is the tracker's
    /// buffer in seconds.
    pub fn new(
        names: Vec<String>,
        tracker: Tracker,
        speeds: SpeedEstimator,
        track_idle: f64,
        writers: ResultWriters,
    ) -> Self {
        Self {
            names,
            gaps: tracker.gap_filler(),
            camera: tracker.camera_motion(),
            recent: VecDeque::new(),
            tracker,
            speeds,
            track_idle,
            annotator: Annotator::new(),
            writers,
            speeding: HashSet::new(),
            classes: BTreeMap::new(),
            last_annotations: Vec::new(),
            zones: ZoneCounter::default(),
            live_view: None,
            stage_times: None,
        }
    }

    /// Times the parts of each analysed frame (see [`Analysis::last_stage_times`]).
    pub fn with_stage_times(mut self) -> Self {
        self.stage_times = Some(StageTimes::default());
        self
    }

    /// Where the time of the last analysed frame went, when [`Analysis::with_stage_times`]
    /// asked for it.
    pub fn last_stage_times(&self) -> Option<StageTimes> {
        self.stage_times
    }

    /// Shows the line and area counts in `view` as they change.
    pub fn with_live_view(mut self, view: Arc<LiveView>) -> Self {
        view.set_counts(self.zones.counts());
        self.live_view = Some(view);
        self
    }

    /// Counts line crossings and area visits as configured.
    pub fn with_zones(mut self, zones: ZonesConfig) -> Self {
        self.zones = ZoneCounter::new(zones);
        self
    }

    /// Line and area totals so far.
    pub fn zone_counts(&self) -> ZoneCounts {
        self.zones.counts().clone()
    }

    fn unit(&self) -> SpeedUnit {
        self.speeds.calibration().map_or(SpeedUnit::Kmh, |c| c.unit)
    }

    /// The earlier frames that get boxes for tracks of `records` found again after a gap,
    /// when gaps are filled: one record per frame, each marked `late`.
    fn filled_frames(&mut self, frame: &Frame, records: &[TrackRecord]) -> Vec<FrameRecord> {
        let Some(gaps) = self.gaps.as_mut() else {
            return Vec::new();
        };
        let seen = records.iter().map(|r| (r.id, r.bbox(), r.score));
        let mut frames: Vec<FrameRecord> = Vec::new();
        for filled in gaps.update(frame.index, frame.pts, seen) {
            let found = records
                .iter()
                .find(|r| r.id == filled.track_id)
                .expect("filled boxes belong to tracks of this frame");
            let track = TrackRecord {
                bbox: [
                    filled.bbox.x1,
                    filled.bbox.y1,
                    filled.bbox.x2,
                    filled.bbox.y2,
                ],
                score: filled.score,
                speed: None,
                ..found.clone()
            };
            add_late(&mut frames, filled.frame, filled.time, track);
        }
        frames
    }

    /// Keeps `record` while a backfilled speed may still reach it.
    fn remember(&mut self, record: FrameRecord) {
        // A frame's speed may come as late as the backfill's reach after the track was last
        // seen, which is up to `track_idle` before the track ends.
        let Some(horizon) = self.speeds.backfill_horizon().map(|h| h + self.track_idle) else {
            return;
        };
        let oldest = record.time - horizon;
        self.recent.push_back(record);
        while self.recent.front().is_some_and(|r| r.time < oldest) {
            self.recent.pop_front();
        }
    }

    /// Earlier frames again, with the speeds their tracks got since (`[speed] backfill`): one
    /// record per frame, each marked `late`, holding the tracks whose speed it adds.
    fn backfilled_frames(&mut self) -> Vec<FrameRecord> {
        let mut frames: Vec<FrameRecord> = Vec::new();
        for late in self.speeds.take_backfill() {
            let Some(record) = self.recent.iter_mut().find(|r| r.time == late.timestamp) else {
                continue;
            };
            let Some(track) = record.tracks.iter_mut().find(|t| t.id == late.track_id) else {
                continue;
            };
            track.speed = Some(late.speed);
            add_late(&mut frames, record.frame, record.time, track.clone());
        }
        frames.sort_by_key(|f| f.frame);
        frames
    }

    fn record_ended(&mut self, ended: Vec<TrackSummary>) -> Vec<Event> {
        for s in &ended {
            self.speeding.remove(&s.track_id);
            self.zones.forget(s.track_id);
        }
        for s in &ended {
            self.classes.entry(s.class_id).or_default().add(s);
        }
        ended.into_iter().map(Event::TrackEnd).collect()
    }
}

/// Adds `track` to the late record of `frame` in `frames`, starting one if there is none.
fn add_late(frames: &mut Vec<FrameRecord>, frame: u64, time: f64, track: TrackRecord) {
    match frames.iter_mut().find(|f| f.frame == frame) {
        Some(record) => record.tracks.push(track),
        None => frames.push(FrameRecord {
            frame,
            time,
            tracks: vec![track],
            late: true,
        }),
    }
}

impl FrameStage for Analysis {
    fn process(
        &mut self,
        frame: &Frame,
        detections: Option<&[Detection]>,
        canvas: &mut RgbImage,
    ) -> anyhow::Result<()> {
        let Some(detections) = detections else {
            // Not analysed (frame skipping): the tracker and speeds do not see it.
            annotate::draw_zones(canvas, self.zones.config(), self.zones.counts());
            self.annotator.draw(canvas, &self.last_annotations);
            return Ok(());
        };
        let started = Instant::now();
        let camera = self.camera.as_mut().and_then(|c| {
            let objects: Vec<BBox> = detections.iter().map(|d| d.bbox).collect();
            c.estimate(&frame.image, &objects)
        });
        let camera_measured = Instant::now();
        let tracks = self
            .tracker
            .update_with_camera_motion(detections, frame.pts, camera.as_ref());
        let tracked = Instant::now();
        let measured: Vec<_> = tracks
            .iter()
            .map(|t| t.with_detection_box(detections))
            .collect();
        let speeds = self.speeds.update(frame.pts, &measured);
        let measured_at = Instant::now();
        let unit = self.unit();
        let limit = self.speeds.calibration().and_then(|c| c.speed_limit);
        let mut events = Vec::new();
        let mut records = Vec::with_capacity(tracks.len());
        let mut annotations = Vec::with_capacity(tracks.len());
        for (t, speed) in tracks.iter().zip(&speeds) {
            // Draw and report the detector's own box and score for the matched detection.
            let det = &detections[t.detection_index];
            if let (Some(speed), Some(limit)) = (speed, limit)
                && *speed > limit
                && self.speeding.insert(t.track_id)
            {
                events.push(Event::SpeedLimit {
                    frame: frame.index,
                    time: frame.pts,
                    id: t.track_id,
                    speed: *speed,
                    limit,
                    unit: unit.label(),
                });
            }
            records.push(TrackRecord {
                id: t.track_id,
                class: t.class_id,
                name: self.names[t.class_id].clone(),
                bbox: [det.bbox.x1, det.bbox.y1, det.bbox.x2, det.bbox.y2],
                score: det.score,
                speed: *speed,
            });
            annotations.push(Annotation {
                class_id: t.class_id,
                track_id: Some(t.track_id),
                speed: speed.map(|s| (s as f32, unit.label())),
                ..Annotation::from_detection(det, &self.names[t.class_id])
            });
        }
        let positions: Vec<TrackPosition> = records
            .iter()
            .map(|r| TrackPosition {
                id: r.id,
                class: r.class,
                bbox: r.bbox(),
            })
            .collect();
        let zone_events = self
            .zones
            .update(frame.index, frame.pts, &positions, &self.names);
        if let Some(view) = self.live_view.as_ref().filter(|_| !zone_events.is_empty()) {
            view.set_counts(self.zones.counts());
        }
        events.extend(zone_events.into_iter().map(Event::Zone));
        let ended = self.speeds.take_finished(frame.pts, self.track_idle);
        events.extend(self.record_ended(ended));
        let backfilled = self.backfilled_frames();
        annotate::draw_zones(canvas, self.zones.config(), self.zones.counts());
        self.annotator.draw(canvas, &annotations);
        self.last_annotations = annotations;
        let filled = self.filled_frames(frame, &records);
        let record = FrameRecord {
            frame: frame.index,
            time: frame.pts,
            tracks: records,
            late: false,
        };
        self.writers.write_frame(&record, &events)?;
        for record in &filled {
            self.writers.write_frame(record, &[])?;
        }
        for record in &backfilled {
            self.writers.write_late_speeds(record)?;
        }
        self.remember(record);
        if let Some(times) = self.stage_times.as_mut() {
            *times = StageTimes {
                camera: camera_measured - started,
                track: tracked - camera_measured,
                speed: measured_at - tracked,
                annotate: measured_at.elapsed(),
            };
        }
        Ok(())
    }

    fn record_outage(&mut self, outage: &Outage) -> anyhow::Result<()> {
        self.writers
            .write_events(&[Event::Outage(outage.clone())])?;
        Ok(())
    }

    fn active_tracks(&self) -> usize {
        self.tracker.live_tracks()
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        let ended = self.speeds.finish_all();
        let mut events = self.record_ended(ended);
        for record in self.backfilled_frames() {
            self.writers.write_late_speeds(&record)?;
        }
        if !self.zones.counts().is_empty() {
            events.push(Event::ZoneCounts(self.zone_counts()));
        }
        self.writers.write_events(&events)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(track_id: u64, speeds: Option<(f64, f64)>) -> TrackSummary {
        TrackSummary {
            track_id,
            class_id: 2,
            first_seen: 0.0,
            last_seen: 1.0,
            mean_speed: speeds.map(|s| s.0),
            max_speed: speeds.map(|s| s.1),
            distance_m: 0.0,
        }
    }

    #[test]
    fn class_tally_counts_every_track_and_averages_those_with_a_speed() {
        let mut tally = ClassTally::default();
        assert_eq!(tally.mean_speed(), None);
        tally.add(&ended(1, Some((40.0, 52.0))));
        tally.add(&ended(2, None));
        tally.add(&ended(3, Some((60.0, 71.0))));
        assert_eq!(tally.tracks, 3);
        assert_eq!(tally.mean_speed(), Some(50.0));
        assert_eq!(tally.max_speed, Some(71.0));
    }
}
