//! Greedy non-maximum suppression, per class in parallel (or across classes).

use rayon::prelude::*;

use super::Candidate;

/// Candidates per class above which classes are suppressed in parallel.
const PARALLEL_THRESHOLD: usize = 256;

/// Keeps the highest-scoring box of every overlapping group (IoU strictly above `iou`),
/// within each class unless `agnostic`; returns at most `max_det` boxes, best first.
pub fn non_max_suppression(
    mut candidates: Vec<Candidate>,
    iou: f32,
    max_det: usize,
    agnostic: bool,
) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept = if agnostic {
        greedy(&candidates, iou, max_det)
    } else {
        let mut groups: Vec<Vec<Candidate>> = Vec::new();
        for c in candidates.iter() {
            if groups.len() <= c.class_id {
                groups.resize_with(c.class_id + 1, Vec::new);
            }
            groups[c.class_id].push(*c);
        }
        let suppress = |group: &Vec<Candidate>| greedy(group, iou, max_det);
        if candidates.len() > PARALLEL_THRESHOLD {
            groups.par_iter().flat_map(suppress).collect()
        } else {
            groups.iter().flat_map(suppress).collect()
        }
    };
    kept.sort_by(|a, b| b.score.total_cmp(&a.score));
    kept.truncate(max_det);
    kept
}

/// Greedy NMS on candidates already sorted by descending score.
fn greedy(sorted: &[Candidate], iou: f32, max_det: usize) -> Vec<Candidate> {
    let mut kept: Vec<Candidate> = Vec::new();
    for c in sorted {
        if kept.len() == max_det {
            break;
        }
        if kept.iter().all(|k| k.bbox.iou(&c.bbox) <= iou) {
            kept.push(*c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::BBox;
    use proptest::prelude::*;

    fn cand(x: f32, score: f32, class_id: usize) -> Candidate {
        Candidate {
            bbox: BBox::new(x, 0.0, x + 10.0, 10.0),
            score,
            class_id,
        }
    }

    #[test]
    fn overlapping_boxes_of_one_class_collapse_to_the_best() {
        let out = non_max_suppression(
            vec![cand(0.0, 0.5, 0), cand(1.0, 0.9, 0), cand(50.0, 0.7, 0)],
            0.7,
            300,
            false,
        );
        assert_eq!(
            out.iter().map(|c| c.score).collect::<Vec<_>>(),
            vec![0.9, 0.7]
        );
    }

    #[test]
    fn classes_do_not_suppress_each_other_unless_agnostic() {
        let input = vec![cand(0.0, 0.9, 0), cand(0.5, 0.8, 1)];
        assert_eq!(non_max_suppression(input.clone(), 0.5, 300, false).len(), 2);
        assert_eq!(non_max_suppression(input, 0.5, 300, true).len(), 1);
    }

    fn arb_candidates() -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec(
            (
                0f32..100.0,
                0f32..100.0,
                1f32..40.0,
                1f32..40.0,
                0.01f32..1.0,
                0usize..3,
            ),
            0..60,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(x, y, w, h, s, c)| Candidate {
                    bbox: BBox::new(x, y, x + w, y + h),
                    score: s,
                    class_id: c,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn nms_properties(cands in arb_candidates(), iou in 0.1f32..0.9, agnostic in any::<bool>()) {
            let out = non_max_suppression(cands.clone(), iou, 300, agnostic);
            // A subset of the input.
            for o in &out {
                prop_assert!(cands.contains(o));
            }
            // Ordered by score.
            prop_assert!(out.windows(2).all(|w| w[0].score >= w[1].score));
            // No two kept boxes of a class overlap above the threshold.
            for (i, a) in out.iter().enumerate() {
                for b in &out[i + 1..] {
                    if agnostic || a.class_id == b.class_id {
                        prop_assert!(a.bbox.iou(&b.bbox) <= iou);
                    }
                }
            }
            // The best box always survives, and NMS is idempotent.
            if let Some(best) = cands.iter().max_by(|a, b| a.score.total_cmp(&b.score)) {
                prop_assert!(out.iter().any(|o| o.score == best.score));
            }
            prop_assert_eq!(non_max_suppression(out.clone(), iou, 300, agnostic), out);
        }
    }
}
