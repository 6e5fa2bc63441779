//! Boxes for the frames a track went unseen, filled in once it is found again.
//!
//! A lost track that a detection matches again within the tracker's buffer keeps its id, but
//! the analysed frames in between have no box for it: the object was occluded or missed by
//! the detector, not gone. Given the box reported before the gap and the one reported after
//! it, each frame in between gets the box interpolated linearly in time between the two (as
//! ByteTrack's published MOT17 results fill their gaps). Those boxes can only be known when
//! the track is found again, so they come later than their frames.

use std::collections::{HashMap, VecDeque};

use crate::geometry::BBox;

/// A track's box in an analysed frame where it went unseen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilledBox {
    /// The frame, as the caller numbered it in [`GapFiller::update`].
    pub frame: u64,
    /// Its timestamp, seconds.
    pub time: f64,
    pub track_id: u64,
    pub bbox: BBox,
    /// The scores at both ends of the gap, interpolated like the box.
    pub score: f32,
}

/// Where a track was last reported.
#[derive(Debug, Clone, Copy)]
struct Sighting {
    time: f64,
    bbox: BBox,
    score: f32,
}

/// Remembers the analysed frames and each track's last box for a bounded time, and fills the
/// gaps of tracks that come back.
#[derive(Debug)]
pub struct GapFiller {
    /// Gaps longer than this (seconds) are left empty; what is older is forgotten.
    horizon: f64,
    /// Analysed frames within the horizon, oldest first: `(frame, time)`.
    frames: VecDeque<(u64, f64)>,
    last_seen: HashMap<u64, Sighting>,
}

impl GapFiller {
    /// Fills gaps of up to `horizon` seconds; pass at least the tracker's buffer.
    pub fn new(horizon: f64) -> Self {
        Self {
            horizon,
            frames: VecDeque::new(),
            last_seen: HashMap::new(),
        }
    }

    /// Gap-filling horizon for a tracker keeping lost tracks for `track_buffer` seconds of a
    /// source at `fps`: the buffer plus the frame on which a lost track is matched again.
    pub fn horizon_for(track_buffer: f64, fps: f64) -> f64 {
        track_buffer + 2.0 / super::nominal_fps(fps)
    }

    /// Takes the tracks reported for analysed frame `frame` at `time` (frames in increasing
    /// time, every analysed frame, also those with no tracks) as `(track id, box, score)`;
    /// returns the boxes filled in for those of them that were missing from earlier frames,
    /// frame by frame.
    pub fn update(
        &mut self,
        frame: u64,
        time: f64,
        tracks: impl IntoIterator<Item = (u64, BBox, f32)>,
    ) -> Vec<FilledBox> {
        let mut filled = Vec::new();
        for (track_id, bbox, score) in tracks {
            let now = Sighting { time, bbox, score };
            let Some(before) = self.last_seen.insert(track_id, now) else {
                continue;
            };
            let span = time - before.time;
            for &(missed_frame, missed_time) in self.frames.iter().filter(|f| f.1 > before.time) {
                let t = ((missed_time - before.time) / span) as f32;
                filled.push(FilledBox {
                    frame: missed_frame,
                    time: missed_time,
                    track_id,
                    bbox: interpolate(&before.bbox, &bbox, t),
                    score: before.score + t * (score - before.score),
                });
            }
        }
        filled.sort_by_key(|f| (f.frame, f.track_id));
        self.frames.push_back((frame, time));
        let oldest = time - self.horizon;
        while self.frames.front().is_some_and(|f| f.1 < oldest) {
            self.frames.pop_front();
        }
        self.last_seen.retain(|_, s| s.time >= oldest);
        filled
    }
}

/// The box a fraction `t` of the way from `a` to `b`, corner by corner.
fn interpolate(a: &BBox, b: &BBox, t: f32) -> BBox {
    let along = |from: f32, to: f32| from + t * (to - from);
    BBox::new(
        along(a.x1, b.x1),
        along(a.y1, b.y1),
        along(a.x2, b.x2),
        along(a.y2, b.y2),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(x: f32) -> BBox {
        BBox::new(x, 10.0, x + 20.0, 50.0)
    }

    #[test]
    fn a_track_found_again_gets_the_frames_it_missed() {
        let mut filler = GapFiller::new(1.0);
        assert!(filler.update(0, 0.0, [(1, boxed(0.0), 0.9)]).is_empty());
        assert!(filler.update(1, 0.1, [(1, boxed(10.0), 0.9)]).is_empty());
        // Frames 2-4 without the track (another one is there), found again at frame 5.
        for f in 2..5 {
            assert!(
                filler
                    .update(f, f as f64 * 0.1, [(2, boxed(200.0), 0.8)])
                    .is_empty()
            );
        }
        let filled = filler.update(5, 0.5, [(1, boxed(50.0), 0.5), (2, boxed(200.0), 0.8)]);
        let frames: Vec<u64> = filled.iter().map(|f| f.frame).collect();
        assert_eq!(frames, [2, 3, 4]);
        for (f, x) in filled.iter().zip([20.0, 30.0, 40.0]) {
            assert_eq!(f.track_id, 1);
            let expected = boxed(x);
            assert!((f.bbox.x1 - expected.x1).abs() < 1e-4, "{f:?}");
            assert!((f.bbox.x2 - expected.x2).abs() < 1e-4, "{f:?}");
            assert_eq!((f.bbox.y1, f.bbox.y2), (10.0, 50.0));
        }
        assert!((filled[1].score - 0.7).abs() < 1e-6);
        // Seen in consecutive frames: nothing to fill.
        assert!(filler.update(6, 0.6, [(1, boxed(60.0), 0.9)]).is_empty());
    }

    #[test]
    fn gaps_longer_than_the_horizon_stay_empty() {
        let mut filler = GapFiller::new(0.25);
        filler.update(0, 0.0, [(1, boxed(0.0), 0.9)]);
        for f in 1..5 {
            filler.update(f, f as f64 * 0.1, []);
        }
        assert!(filler.update(5, 0.5, [(1, boxed(50.0), 0.9)]).is_empty());
        // Only frames within the horizon are remembered, and only recent tracks.
        assert!(filler.frames.len() <= 4);
        assert_eq!(filler.last_seen.len(), 1);
    }

    #[test]
    fn frames_skipped_by_the_caller_are_not_filled() {
        // Frames 1 and 3 were never analysed (frame skipping): only frame 2 is filled.
        let mut filler = GapFiller::new(1.0);
        filler.update(0, 0.0, [(7, boxed(0.0), 0.9)]);
        filler.update(2, 0.2, []);
        let filled = filler.update(4, 0.4, [(7, boxed(40.0), 0.9)]);
        assert_eq!(filled.len(), 1);
        assert_eq!((filled[0].frame, filled[0].bbox.x1), (2, 20.0));
    }
}
