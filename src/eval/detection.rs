//! Detection metrics as Ultralytics' `val` reports them: precision and recall at the
//! confidence of maximum mean F1, mAP50 and mAP50-95 with COCO 101-point interpolation.

use crate::detect::Detection;
use crate::formats::yolo_labels::Label;

/// The confidence down to which predictions are kept when they are scored, as Ultralytics'
/// `val` does: mAP is the area under the whole precision-recall curve, so a deployment
/// threshold (0.25) would cut the curve short and count a box scored just below it as missed.
pub const SCORING_CONF: f32 = 0.001;

/// IoU thresholds 0.50, 0.55, ..., 0.95.
const IOU_THRESHOLDS: usize = 10;

fn iou_threshold(k: usize) -> f32 {
    0.5 + 0.05 * k as f32
}

/// Accumulates predictions and labels over a dataset.
#[derive(Debug, Default)]
pub struct DetectionEval {
    /// Per prediction: confidence, class, and true-positive flags per IoU threshold.
    predictions: Vec<(f32, usize, [bool; IOU_THRESHOLDS])>,
    label_classes: Vec<usize>,
}

/// Final figures (fractions, 0..1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectionMetrics {
    pub precision: f64,
    pub recall: f64,
    pub map50: f64,
    pub map50_95: f64,
}

impl DetectionEval {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one image: each prediction is matched to at most one label of its class, best
    /// IoU first, separately for every IoU threshold.
    pub fn add_image(&mut self, predictions: &[Detection], labels: &[Label]) {
        self.label_classes.extend(labels.iter().map(|l| l.class_id));
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (p, pred) in predictions.iter().enumerate() {
            for (l, label) in labels.iter().enumerate() {
                if pred.class_id == label.class_id {
                    let iou = pred.bbox.iou(&label.bbox);
                    if iou >= iou_threshold(0) {
                        pairs.push((iou, p, l));
                    }
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut tp = vec![[false; IOU_THRESHOLDS]; predictions.len()];
        for (k, threshold) in (0..IOU_THRESHOLDS).map(|k| (k, iou_threshold(k))) {
            let mut pred_used = vec![false; predictions.len()];
            let mut label_used = vec![false; labels.len()];
            for &(iou, p, l) in &pairs {
                if iou >= threshold && !pred_used[p] && !label_used[l] {
                    pred_used[p] = true;
                    label_used[l] = true;
                    tp[p][k] = true;
                }
            }
        }
        for (pred, flags) in predictions.iter().zip(tp) {
            self.predictions.push((pred.score, pred.class_id, flags));
        }
    }

    /// Metrics over the classes that have labels.
    pub fn metrics(&self) -> DetectionMetrics {
        let classes = self.labelled_classes();
        if classes.is_empty() {
            return DetectionMetrics {
                precision: 0.0,
                recall: 0.0,
                map50: 0.0,
                map50_95: 0.0,
            };
        }
        let grid: Vec<f64> = (0..1000).map(|i| i as f64 / 999.0).collect();
        let mut p_curves = Vec::new();
        let mut r_curves = Vec::new();
        let (mut ap50, mut ap50_95) = (0.0, 0.0);
        for &class in &classes {
            let curves = self.class_curves(class);
            let Some((recall, precision)) = curves.by_threshold.first() else {
                // As Ultralytics: a class never predicted scores zero everywhere.
                r_curves.push(vec![0.0; grid.len()]);
                p_curves.push(vec![0.0; grid.len()]);
                continue;
            };
            for k in 0..IOU_THRESHOLDS {
                let ap = curves.average_precision(k);
                ap50_95 += ap / IOU_THRESHOLDS as f64;
                if k == 0 {
                    ap50 += ap;
                }
            }
            // Precision and recall at IoU 0.5 as functions of confidence on a fixed grid.
            r_curves.push(
                grid.iter()
                    .map(|&c| interp_desc(c, &curves.neg_conf, recall, 0.0))
                    .collect::<Vec<f64>>(),
            );
            p_curves.push(
                grid.iter()
                    .map(|&c| interp_desc(c, &curves.neg_conf, precision, 1.0))
                    .collect::<Vec<f64>>(),
            );
        }
        let n = classes.len() as f64;
        let mean_f1: Vec<f64> = (0..grid.len())
            .map(|i| {
                classes
                    .iter()
                    .enumerate()
                    .map(|(c, _)| {
                        let (p, r) = (p_curves[c][i], r_curves[c][i]);
                        2.0 * p * r / (p + r + 1e-16)
                    })
                    .sum::<f64>()
                    / n
            })
            .collect();
        let best = smooth(&mean_f1, 0.1)
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        DetectionMetrics {
            precision: p_curves.iter().map(|c| c[best]).sum::<f64>() / n,
            recall: r_curves.iter().map(|c| c[best]).sum::<f64>() / n,
            map50: ap50 / n,
            map50_95: ap50_95 / n,
        }
    }

    /// Each class that has labels, by class id, with its labels, predictions and average
    /// precisions: the terms of [`DetectionEval::metrics`]' means, where a class seen once
    /// weighs as much as one seen a thousand times.
    pub fn per_class(&self) -> Vec<ClassMetrics> {
        self.labelled_classes()
            .into_iter()
            .map(|class_id| {
                let curves = self.class_curves(class_id);
                let ap = |k| curves.average_precision(k);
                ClassMetrics {
                    class_id,
                    labels: curves.labels,
                    predictions: curves.neg_conf.len(),
                    ap50: ap(0),
                    ap50_95: (0..IOU_THRESHOLDS).map(ap).sum::<f64>() / IOU_THRESHOLDS as f64,
                }
            })
            .collect()
    }

    /// The classes that have labels, ascending.
    fn labelled_classes(&self) -> Vec<usize> {
        let mut classes: Vec<usize> = self.label_classes.clone();
        classes.sort_unstable();
        classes.dedup();
        classes
    }

    /// `class`'s predictions by falling confidence and its precision-recall curves.
    fn class_curves(&self, class: usize) -> ClassCurves {
        let labels = self.label_classes.iter().filter(|&&c| c == class).count();
        let mut preds: Vec<&(f32, usize, [bool; IOU_THRESHOLDS])> =
            self.predictions.iter().filter(|p| p.1 == class).collect();
        preds.sort_by(|a, b| b.0.total_cmp(&a.0));
        // Confidences negated so that they increase, as interpolation needs.
        let neg_conf: Vec<f64> = preds.iter().map(|p| -(p.0 as f64)).collect();
        let by_threshold = if preds.is_empty() {
            Vec::new()
        } else {
            (0..IOU_THRESHOLDS)
                .map(|k| {
                    let (mut tpc, mut fpc) = (0.0, 0.0);
                    let (mut recall, mut precision) = (Vec::new(), Vec::new());
                    for p in &preds {
                        if p.2[k] {
                            tpc += 1.0
                        } else {
                            fpc += 1.0
                        }
                        recall.push(tpc / (labels as f64 + 1e-16));
                        precision.push(tpc / (tpc + fpc));
                    }
                    (recall, precision)
                })
                .collect()
        };
        ClassCurves {
            labels,
            neg_conf,
            by_threshold,
        }
    }
}

/// One class's figures (fractions, 0..1), from [`DetectionEval::per_class`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassMetrics {
    pub class_id: usize,
    /// Labels of the class.
    pub labels: usize,
    /// Predictions of the class, down to the lowest confidence scored.
    pub predictions: usize,
    pub ap50: f64,
    pub ap50_95: f64,
}

/// One class's predictions by falling confidence: their negated confidences, and per IoU
/// threshold the recall and precision after each (none without predictions).
struct ClassCurves {
    labels: usize,
    neg_conf: Vec<f64>,
    by_threshold: Vec<(Vec<f64>, Vec<f64>)>,
}

impl ClassCurves {
    /// The average precision at IoU threshold `k` (zero without predictions).
    fn average_precision(&self, k: usize) -> f64 {
        self.by_threshold.get(k).map_or(0.0, |(recall, precision)| {
            average_precision(recall, precision)
        })
    }
}

/// Area under the interpolated precision envelope, sampled at 101 recall points.
fn average_precision(recall: &[f64], precision: &[f64]) -> f64 {
    let mut mrec = vec![0.0];
    mrec.extend_from_slice(recall);
    mrec.push(1.0);
    let mut mpre = vec![1.0];
    mpre.extend_from_slice(precision);
    mpre.push(0.0);
    for i in (0..mpre.len() - 1).rev() {
        mpre[i] = mpre[i].max(mpre[i + 1]);
    }
    let xs: Vec<f64> = (0..101).map(|i| i as f64 / 100.0).collect();
    let ys: Vec<f64> = xs.iter().map(|&x| interp(x, &mrec, &mpre)).collect();
    xs.windows(2)
        .zip(ys.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0)
        .sum()
}

/// Linear interpolation on non-decreasing `xs`, exactly as numpy's `interp` (clamped outside;
/// at repeated `xs` the last of the repeats wins).
fn interp(x: f64, xs: &[f64], ys: &[f64]) -> f64 {
    if x < xs[0] {
        return ys[0];
    }
    let j = xs.partition_point(|&v| v <= x) - 1;
    if j + 1 >= xs.len() {
        return ys[xs.len() - 1];
    }
    let (x0, x1) = (xs[j], xs[j + 1]);
    ys[j] + (ys[j + 1] - ys[j]) * (x - x0) / (x1 - x0)
}

/// Value at confidence `c` of a curve sampled at descending confidences, given negated
/// (`left` above the highest confidence, the last value below the lowest; 0 without samples).
fn interp_desc(c: f64, neg_conf: &[f64], values: &[f64], left: f64) -> f64 {
    if neg_conf.is_empty() {
        return 0.0; // A class without predictions has zero precision and recall.
    }
    if -c < neg_conf[0] {
        return left;
    }
    interp(-c, neg_conf, values)
}

/// Box filter over `fraction` of the points, with edge padding (Ultralytics' `smooth`).
fn smooth(y: &[f64], fraction: f64) -> Vec<f64> {
    let nf = ((y.len() as f64 * fraction).round() as usize / 2) * 2 + 1;
    let half = nf / 2;
    let padded: Vec<f64> = std::iter::repeat_n(y[0], half)
        .chain(y.iter().copied())
        .chain(std::iter::repeat_n(*y.last().expect("non-empty"), half))
        .collect();
    padded
        .windows(nf)
        .map(|w| w.iter().sum::<f64>() / nf as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::BBox;

    fn det(x: f32, score: f32) -> Detection {
        Detection {
            bbox: BBox::new(x, 0.0, x + 10.0, 10.0),
            score,
            class_id: 0,
        }
    }

    fn label(x: f32) -> Label {
        Label {
            bbox: BBox::new(x, 0.0, x + 10.0, 10.0),
            class_id: 0,
        }
    }

    #[test]
    fn perfect_predictions() {
        let mut e = DetectionEval::new();
        e.add_image(&[det(0.0, 0.9), det(50.0, 0.8)], &[label(0.0), label(50.0)]);
        let m = e.metrics();
        // Ultralytics reports 0.995 for perfect predictions: the precision envelope drops
        // to 0 at recall 1 and the 101-point trapezoid keeps half of the last step.
        assert!(
            (m.map50 - 0.995).abs() < 1e-9 && (m.map50_95 - 0.995).abs() < 1e-9,
            "{m:?}"
        );
        assert!((m.precision - 1.0).abs() < 1e-6 && (m.recall - 1.0).abs() < 1e-6);
    }

    #[test]
    fn shifted_box_counts_only_at_low_iou_thresholds() {
        // Shifted by 2 px: IoU = 8 / 12 = 0.667, a match at 0.50..0.65 only (4 of 10).
        let mut e = DetectionEval::new();
        e.add_image(&[det(2.0, 0.9)], &[label(0.0)]);
        let m = e.metrics();
        assert!((m.map50 - 0.995).abs() < 1e-9);
        assert!((m.map50_95 - 0.4 * 0.995).abs() < 1e-9, "{}", m.map50_95);
    }

    #[test]
    fn missing_and_extra_boxes() {
        let mut e = DetectionEval::new();
        e.add_image(&[det(0.0, 0.9)], &[label(0.0), label(50.0)]);
        let m = e.metrics();
        // Recall 0.5 at precision 1, then the envelope falls linearly to 0 at recall 1.
        assert!((m.map50 - 0.75).abs() < 1e-9, "{}", m.map50);
        assert!((m.recall - 0.5).abs() < 1e-6);
        let mut e = DetectionEval::new();
        e.add_image(&[det(100.0, 0.95), det(0.0, 0.9)], &[label(0.0)]);
        let m = e.metrics();
        // A false positive ranked first: precision 0.5 up to recall 1.
        assert!(
            (m.map50 - (0.5 * 0.99 + 0.25 * 0.01)).abs() < 1e-9,
            "{}",
            m.map50
        );
        let mut e = DetectionEval::new();
        e.add_image(&[det(0.0, 0.9), det(100.0, 0.3)], &[label(0.0)]);
        assert!(
            (e.metrics().map50 - 0.995).abs() < 1e-9,
            "a low-ranked false positive costs nothing"
        );
    }

    #[test]
    fn a_class_never_predicted_scores_zero() {
        // No predictions at all: zero, not the 0.5 that interpolating an empty curve gives.
        let mut e = DetectionEval::new();
        e.add_image(&[], &[label(0.0), label(50.0)]);
        let m = e.metrics();
        assert_eq!(
            (m.map50, m.map50_95, m.precision, m.recall),
            (0.0, 0.0, 0.0, 0.0)
        );
        // One of two classes found perfectly: half the perfect score.
        let mut e = DetectionEval::new();
        let other = Label {
            class_id: 1,
            ..label(50.0)
        };
        e.add_image(&[det(0.0, 0.9)], &[label(0.0), other]);
        assert!((e.metrics().map50 - 0.995 / 2.0).abs() < 1e-9);
    }

    /// Per class: the labels, the predictions and the average precisions whose means
    /// `metrics` reports: a class of 100 found perfectly and a class of one found only at
    /// IoU 0.50-0.65, missed by a false box ranked first.
    #[test]
    fn per_class_figures_are_the_terms_of_the_means() {
        let mut e = DetectionEval::new();
        let rare = |detection: Detection| Detection {
            class_id: 7,
            ..detection
        };
        for i in 0..100 {
            let x = 20.0 * i as f32;
            let mut labels = vec![label(x)];
            let mut predictions = vec![det(x, 0.9)];
            if i == 0 {
                labels.push(Label {
                    class_id: 7,
                    ..label(5000.0)
                });
                predictions.extend([rare(det(6000.0, 0.8)), rare(det(5002.0, 0.7))]);
            }
            e.add_image(&predictions, &labels);
        }
        let classes = e.per_class();
        let summary: Vec<(usize, usize, usize)> = classes
            .iter()
            .map(|c| (c.class_id, c.labels, c.predictions))
            .collect();
        assert_eq!(summary, [(0, 100, 100), (7, 1, 2)]);
        assert!(
            (classes[0].ap50 - 0.995).abs() < 1e-9 && (classes[0].ap50_95 - 0.995).abs() < 1e-9
        );
        let rare_ap50 = 0.5 * 0.99 + 0.25 * 0.01;
        assert!(
            (classes[1].ap50 - rare_ap50).abs() < 1e-9,
            "{:?}",
            classes[1]
        );
        assert!(
            (classes[1].ap50_95 - 0.4 * rare_ap50).abs() < 1e-9,
            "{:?}",
            classes[1]
        );
        let m = e.metrics();
        assert!((m.map50 - (classes[0].ap50 + classes[1].ap50) / 2.0).abs() < 1e-12);
        assert!((m.map50_95 - (classes[0].ap50_95 + classes[1].ap50_95) / 2.0).abs() < 1e-12);
        let mut unseen = DetectionEval::new();
        unseen.add_image(&[], &[label(0.0)]);
        let class = unseen.per_class()[0];
        assert_eq!(
            (class.predictions, class.ap50, class.ap50_95),
            (0, 0.0, 0.0)
        );
    }
}
