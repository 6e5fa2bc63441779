//! Decoding the Ultralytics head output `[4 + nc, N]` of one image into candidate boxes.

use super::{DetectConfig, Detection};
use crate::geometry::BBox;
use crate::model::preprocess::Letterbox;

/// A box that passed the confidence filter, still in network-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub bbox: BBox,
    pub score: f32,
    pub class_id: usize,
}

/// Picks each anchor's best class and keeps anchors whose score beats the threshold, as the
/// Ultralytics predictor does (`multi_label=False`): the class filter applies to the best
/// class, so an anchor whose best class is filtered out is dropped.
///
/// `output` is row-major `[channels, anchors]`: `cx, cy, w, h`, then class scores.
pub fn decode_candidates(output: &[f32], anchors: usize, config: &DetectConfig) -> Vec<Candidate> {
    let channels = output.len() / anchors;
    let classes = channels - 4;
    let row = |c: usize| &output[c * anchors..(c + 1) * anchors];
    // Best score per anchor, scanning class rows so memory is read sequentially; a select
    // rather than a branch, so the loop vectorises (a NaN score never wins, as before).
    let mut best_score = row(4).to_vec();
    for c in 1..classes {
        for (best, &s) in best_score.iter_mut().zip(row(4 + c)) {
            *best = if s > *best { s } else { *best };
        }
    }
    let floor = config.min_threshold();
    let (cx, cy, w, h) = (row(0), row(1), row(2), row(3));
    (0..anchors)
        .filter(|&a| best_score[a] > floor)
        .filter_map(|a| {
            // The first class with the best score, for the few anchors past the floor.
            let class = (0..classes)
                .find(|&c| row(4 + c)[a] == best_score[a])
                .expect("the best score is one of the anchor's scores");
            let bbox = BBox::from_cxcywh(cx[a], cy[a], w[a], h[a]);
            accept(bbox, best_score[a], class, config)
        })
        .collect()
}

/// [`decode_candidates`] for anchors already reduced on the device
/// ([`crate::model::Survivors`]): `block` is `[6, capacity]` (`cx, cy, w, h`, best score,
/// best class) with `count` leading survivors of the confidence floor.
pub fn decode_survivors(
    block: &[f32],
    capacity: usize,
    count: usize,
    config: &DetectConfig,
) -> Vec<Candidate> {
    let row = |r: usize| &block[r * capacity..r * capacity + count];
    let (cx, cy, w, h, score, class) = (row(0), row(1), row(2), row(3), row(4), row(5));
    (0..count)
        .filter_map(|k| {
            let bbox = BBox::from_cxcywh(cx[k], cy[k], w[k], h[k]);
            accept(bbox, score[k], class[k] as usize, config)
        })
        .collect()
}

/// The candidate for an anchor's best class, if its threshold and the class filter pass it.
fn accept(bbox: BBox, score: f32, class_id: usize, config: &DetectConfig) -> Option<Candidate> {
    (score > config.threshold(class_id) && config.keeps_class(class_id)).then_some(Candidate {
        bbox,
        score,
        class_id,
    })
}

/// Maps kept candidates from network-input pixels to original-image pixels, clipped.
pub fn to_original(candidates: &[Candidate], letterbox: &Letterbox) -> Vec<Detection> {
    let (w, h) = (letterbox.original.0 as f32, letterbox.original.1 as f32);
    candidates
        .iter()
        .map(|c| {
            let (x1, y1) = letterbox.to_original(c.bbox.x1, c.bbox.y1);
            let (x2, y2) = letterbox.to_original(c.bbox.x2, c.bbox.y2);
            Detection {
                bbox: BBox::new(x1, y1, x2, y2).clipped(w, h),
                score: c.score,
                class_id: c.class_id,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three anchors, two classes.
    fn output() -> Vec<f32> {
        vec![
            10.0, 50.0, 90.0, // cx
            10.0, 50.0, 90.0, // cy
            4.0, 8.0, 2.0, // w
            4.0, 8.0, 2.0, // h
            0.9, 0.1, 0.3, // class 0
            0.2, 0.6, 0.25, // class 1
        ]
    }

    #[test]
    fn best_class_and_threshold() {
        let c = decode_candidates(&output(), 3, &DetectConfig::default());
        assert_eq!(c.len(), 3);
        assert_eq!((c[0].class_id, c[0].score), (0, 0.9));
        assert_eq!((c[1].class_id, c[1].score), (1, 0.6));
        assert_eq!(c[0].bbox, BBox::new(8.0, 8.0, 12.0, 12.0));
        let strict = DetectConfig {
            conf: 0.3,
            ..Default::default()
        };
        assert_eq!(
            decode_candidates(&output(), 3, &strict).len(),
            2,
            "0.3 is not > 0.3"
        );
    }

    /// A tie goes to the first class with the best score, and a NaN never beats a score nor
    /// is beaten: an anchor whose first class is NaN is dropped, as one of NaNs is, while a
    /// NaN after a real score is passed over.
    #[test]
    fn ties_go_to_the_first_class_and_nan_scores_never_win() {
        let nan = f32::NAN;
        let output = vec![
            10.0, 50.0, 90.0, // cx
            10.0, 50.0, 90.0, // cy
            4.0, 8.0, 2.0, // w
            4.0, 8.0, 2.0, // h
            0.2, nan, nan, // class 0
            0.7, 0.5, nan, // class 1
            0.7, 0.6, nan, // class 2
            nan, 0.9, nan, // class 3
        ];
        let c = decode_candidates(&output, 3, &DetectConfig::default());
        let found: Vec<_> = c.iter().map(|c| (c.class_id, c.score)).collect();
        assert_eq!(found, vec![(1, 0.7)]);
    }

    #[test]
    fn class_filter_drops_anchors_whose_best_class_is_filtered() {
        let only_person = DetectConfig {
            classes: vec![0],
            ..Default::default()
        };
        let c = decode_candidates(&output(), 3, &only_person);
        assert_eq!(c.iter().map(|c| c.class_id).collect::<Vec<_>>(), vec![0, 0]);
        let per_class = DetectConfig {
            class_conf: vec![(0, 0.95)],
            ..Default::default()
        };
        let c = decode_candidates(&output(), 3, &per_class);
        assert_eq!(c.iter().map(|c| c.class_id).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn boxes_map_back_through_the_letterbox() {
        let lb = Letterbox::new((1280, 720), (640, 640));
        let cand = Candidate {
            bbox: BBox::new(0.0, 140.0, 640.0, 500.0),
            score: 0.5,
            class_id: 0,
        };
        let d = to_original(&[cand], &lb);
        assert_eq!(d[0].bbox, BBox::new(0.0, 0.0, 1280.0, 720.0));
    }
}
