//! Whether a box the image border cuts is still the same vehicle's, so that its track may
//! keep its last speed while it leaves the image (`[speed] border_hold`).
//!
//! A cut box's ground point is the border, not the vehicle, so it cannot be checked against
//! the track's motion on the road. Its uncut edges can: the top edge, and whichever side
//! edge is clear of the border, keep moving across the image as they did over the last
//! uncut frames. When another vehicle's box takes the id (a swap between vehicles that
//! overlap near the border), those edges jump.

use std::collections::VecDeque;

use super::estimator::solve;
use crate::geometry::BBox;

/// Uncut boxes older than this (seconds) before the newest say nothing of where its edges
/// are heading now...
const MEMORY_SECONDS: f64 = 0.6;
/// ... nor more than this many frames.
const MEMORY_FRAMES: usize = 12;
/// Fewer uncut boxes than this give no trend to check against.
const MIN_BOXES: usize = 3;
/// An edge may be this share of the box's size (height for the top edge, width for the
/// side edges) off where its recent positions put it.
const EDGE_TOLERANCE: f32 = 0.2;

/// A track's newest uncut boxes, with their timestamps.
#[derive(Debug, Clone, Default)]
pub(super) struct UncutBoxes {
    boxes: VecDeque<(f64, BBox)>,
}

impl UncutBoxes {
    /// Adds the box of the frame at `timestamp` (the newest).
    pub(super) fn push(&mut self, timestamp: f64, bbox: BBox) {
        self.boxes.push_back((timestamp, bbox));
        while self.boxes.len() > MEMORY_FRAMES
            || self
                .boxes
                .front()
                .is_some_and(|b| b.0 < timestamp - MEMORY_SECONDS)
        {
            self.boxes.pop_front();
        }
    }

    /// Forgets the boxes from before `timestamp` (the track's history restarted there).
    pub(super) fn forget_before(&mut self, timestamp: f64) {
        self.boxes.retain(|b| b.0 >= timestamp);
    }

    /// True when the cut box `bbox` at `timestamp` has its top edge, and each side edge
    /// farther than `side_margin` from the border of an image `width` wide, within
    /// [`EDGE_TOLERANCE`] of where that edge's motion through the uncut boxes puts it.
    pub(super) fn followed_by(
        &self,
        timestamp: f64,
        bbox: &BBox,
        width: f32,
        side_margin: f32,
    ) -> bool {
        let Some(&(_, newest)) = self.boxes.back() else {
            return false;
        };
        if self.boxes.len() < MIN_BOXES {
            return false;
        }
        let near = |edge: fn(&BBox) -> f32, size: f32| {
            self.predict(timestamp, edge)
                .is_some_and(|p| (edge(bbox) - p).abs() <= EDGE_TOLERANCE * size)
        };
        near(|b| b.y1, newest.height())
            && (bbox.x1 <= side_margin || near(|b| b.x1, newest.width()))
            && (bbox.x2 >= width - side_margin || near(|b| b.x2, newest.width()))
    }

    /// Where `edge` is at `timestamp` by the perspective motion through the boxes: a point
    /// of a vehicle driving steadily along the road projects to `(a + b t) / (1 + c t)`
    /// (its depth changes linearly in time), fitted by least squares as the linear
    /// `e = a + b t - c t e` with `t` from the newest box. `None` where the fit is singular
    /// or the vehicle would have passed the camera.
    fn predict(&self, timestamp: f64, edge: fn(&BBox) -> f32) -> Option<f32> {
        let newest = self.boxes.back()?.0;
        let mut normal = [[0.0; 3]; 3];
        let mut right = [0.0; 3];
        for (t, b) in &self.boxes {
            let (t, e) = (t - newest, edge(b) as f64);
            let row = [1.0, t, -t * e];
            for ((normal_row, right_value), ri) in normal.iter_mut().zip(&mut right).zip(row) {
                for (n, rj) in normal_row.iter_mut().zip(row) {
                    *n += ri * rj;
                }
                *right_value += ri * e;
            }
        }
        let [a, b, c] = solve(&normal, &right, 3)?;
        let t = timestamp - newest;
        let depth = 1.0 + c * t;
        (depth > 0.0).then(|| ((a + b * t) / depth) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 100x60 box at 10 fps whose edges move 20 px right and 30 px down a second.
    fn moving(t: f64) -> BBox {
        let (dx, dy) = (20.0 * t as f32, 30.0 * t as f32);
        BBox::new(400.0 + dx, 500.0 + dy, 500.0 + dx, 560.0 + dy)
    }

    fn history(until: f64) -> UncutBoxes {
        let mut boxes = UncutBoxes::default();
        for i in 0..=(until * 10.0) as usize {
            let t = i as f64 / 10.0;
            boxes.push(t, moving(t));
        }
        boxes
    }

    #[test]
    fn a_box_moving_on_as_before_is_followed_and_a_box_elsewhere_is_not() {
        let boxes = history(1.0);
        // Later, with its bottom cut at the border (the bottom edge is not checked).
        let mut cut = moving(1.5);
        cut.y2 = 719.0;
        assert!(boxes.followed_by(1.5, &cut, 1280.0, 6.0));
        // Another vehicle's box, standing where the first one was half a second before.
        let mut other = moving(1.0);
        other.y2 = 719.0;
        assert!(!boxes.followed_by(1.5, &other, 1280.0, 6.0));
        // A side edge off its line fails, unless it lies at the border (cut there).
        let mut wider = moving(1.5);
        wider.x1 -= 30.0;
        assert!(!boxes.followed_by(1.5, &wider, 1280.0, 6.0));
        wider.x1 = 3.0;
        assert!(boxes.followed_by(1.5, &wider, 1280.0, 6.0));
    }

    #[test]
    fn only_the_recent_uncut_boxes_count_and_too_few_give_no_trend() {
        let boxes = history(3.0);
        assert!(boxes.boxes.len() <= MEMORY_FRAMES);
        assert!(boxes.boxes.front().unwrap().0 >= 3.0 - MEMORY_SECONDS - 1e-9);
        let mut restarted = boxes.clone();
        restarted.forget_before(2.85);
        assert_eq!(restarted.boxes.len(), 2);
        assert!(!restarted.followed_by(3.1, &moving(3.1), 1280.0, 6.0));
        assert!(boxes.followed_by(3.1, &moving(3.1), 1280.0, 6.0));
    }
}
