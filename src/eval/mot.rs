//! HOTA, CLEAR (MOTA) and Identity (IDF1) metrics for 2-D boxes, ported from TrackEval's
//! `MotChallenge2DBox` dataset and its `HOTA`, `CLEAR` and `Identity` metrics, including the
//! preprocessing: tracker boxes matched (IoU >= 0.5) to distractor ground truth are removed,
//! and ground truth that is zero-marked or not a pedestrian is dropped.

use std::collections::HashMap;

use crate::formats::mot::MotRow;
use crate::geometry::BBox;
use crate::track::assignment::linear_sum_assignment;

const EPS: f64 = f64::EPSILON;
/// MOT17 ground-truth classes whose matched tracker boxes are ignored:
/// person_on_vehicle, static_person, distractor, reflection.
const DISTRACTOR_CLASSES: [i32; 4] = [2, 7, 8, 12];
const PEDESTRIAN: i32 = 1;
/// HOTA's localisation thresholds 0.05, 0.10, ..., 0.95.
const ALPHAS: usize = 19;

fn alpha(a: usize) -> f64 {
    0.05 * (a + 1) as f64
}

/// One sequence after preprocessing: per frame the ids present and their IoUs.
#[derive(Debug, Clone, Default)]
pub struct SequenceData {
    gt_ids: Vec<Vec<usize>>,
    tracker_ids: Vec<Vec<usize>>,
    /// Per frame, `gt x tracker` IoUs, row-major.
    similarity: Vec<Vec<f64>>,
    num_gt_ids: usize,
    num_tracker_ids: usize,
}

fn iou_matrix(gt: &[BBox], tr: &[BBox]) -> Vec<f64> {
    let mut out = Vec::with_capacity(gt.len() * tr.len());
    for g in gt {
        for t in tr {
            let inter = {
                let w = (g.x2.min(t.x2) as f64 - g.x1.max(t.x1) as f64).max(0.0);
                let h = (g.y2.min(t.y2) as f64 - g.y1.max(t.y1) as f64).max(0.0);
                w * h
            };
            let area = |b: &BBox| (b.width() as f64) * (b.height() as f64);
            let union = area(g) + area(t) - inter;
            out.push(if union > EPS { inter / union } else { 0.0 });
        }
    }
    out
}

impl SequenceData {
    /// Preprocesses ground truth and tracker rows of a sequence of `length` frames.
    /// Distractor removal runs when the ground truth carries classes (MOT16/17/20).
    pub fn new(gt_rows: &[MotRow], tracker_rows: &[MotRow], length: u32) -> Self {
        let gt_frames = crate::formats::mot::by_frame(gt_rows, length);
        let length = gt_frames.len() as u32;
        let tr_frames = crate::formats::mot::by_frame(tracker_rows, length);
        // MOT16/17/20 ground truth has a class on every row (MOT15's has world coordinates).
        let with_classes = !gt_rows.is_empty()
            && gt_rows
                .iter()
                .all(|r| r.class.is_some_and(|c| (1..=12).contains(&c)));
        let mut data = SequenceData::default();
        let mut gt_map: HashMap<i64, usize> = HashMap::new();
        let mut tr_map: HashMap<i64, usize> = HashMap::new();
        let mut raw: Vec<(Vec<i64>, Vec<i64>, Vec<f64>)> = Vec::new();
        for (gt, tr) in gt_frames.iter().zip(&tr_frames) {
            let gt_boxes: Vec<BBox> = gt.iter().map(|r| r.bbox).collect();
            let tr_boxes: Vec<BBox> = tr.iter().map(|r| r.bbox).collect();
            let sim = iou_matrix(&gt_boxes, &tr_boxes);
            let mut remove_tracker = vec![false; tr.len()];
            if with_classes && !gt.is_empty() && !tr.is_empty() {
                let scores: Vec<f64> = sim
                    .iter()
                    .map(|&s| if s < 0.5 - EPS { 0.0 } else { -s })
                    .collect();
                for (r, c) in linear_sum_assignment(&scores, gt.len(), tr.len()) {
                    let matched = -scores[r * tr.len() + c] > EPS;
                    if matched && gt[r].class.is_some_and(|k| DISTRACTOR_CLASSES.contains(&k)) {
                        remove_tracker[c] = true;
                    }
                }
            }
            let keep_gt: Vec<usize> = (0..gt.len())
                .filter(|&i| {
                    gt[i].conf != 0.0 && (!with_classes || gt[i].class == Some(PEDESTRIAN))
                })
                .collect();
            let keep_tr: Vec<usize> = (0..tr.len()).filter(|&j| !remove_tracker[j]).collect();
            let frame_sim: Vec<f64> = keep_gt
                .iter()
                .flat_map(|&i| keep_tr.iter().map(move |&j| (i, j)))
                .map(|(i, j)| sim[i * tr.len() + j])
                .collect();
            raw.push((
                keep_gt.iter().map(|&i| gt[i].id).collect(),
                keep_tr.iter().map(|&j| tr[j].id).collect(),
                frame_sim,
            ));
        }
        // Relabel ids to 0..n in order of first appearance.
        for (gt_ids, tr_ids, sim) in raw {
            let relabel = |ids: &[i64], map: &mut HashMap<i64, usize>| -> Vec<usize> {
                ids.iter()
                    .map(|id| {
                        let next = map.len();
                        *map.entry(*id).or_insert(next)
                    })
                    .collect()
            };
            data.gt_ids.push(relabel(&gt_ids, &mut gt_map));
            data.tracker_ids.push(relabel(&tr_ids, &mut tr_map));
            data.similarity.push(sim);
        }
        data.num_gt_ids = gt_map.len();
        data.num_tracker_ids = tr_map.len();
        data
    }
}

/// Raw counts from which every metric is derived; sequences combine by adding them.
#[derive(Debug, Clone, PartialEq)]
pub struct MotCounts {
    hota_tp: [f64; ALPHAS],
    hota_fn: [f64; ALPHAS],
    hota_fp: [f64; ALPHAS],
    /// AssA, AssRe, AssPr and LocA per alpha, each weighted by the TP count.
    ass_a_w: [f64; ALPHAS],
    ass_re_w: [f64; ALPHAS],
    ass_pr_w: [f64; ALPHAS],
    loc_a_w: [f64; ALPHAS],
    clr_tp: f64,
    clr_fn: f64,
    clr_fp: f64,
    idsw: f64,
    motp_sum: f64,
    mt: f64,
    pt: f64,
    ml: f64,
    frag: f64,
    idtp: f64,
    idfn: f64,
    idfp: f64,
}

/// Headline figures, in percent except the counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotSummary {
    pub hota: f64,
    pub deta: f64,
    pub assa: f64,
    pub loca: f64,
    pub mota: f64,
    pub motp: f64,
    pub idf1: f64,
    pub idp: f64,
    pub idr: f64,
    pub id_switches: u64,
    pub fragments: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
    pub mostly_tracked: u64,
    pub mostly_lost: u64,
}

impl MotSummary {
    /// The mean of each figure over `summaries` (sequences weigh alike, unlike pooled
    /// counts, where long and crowded sequences dominate); counts are rounded means.
    pub fn mean(summaries: &[MotSummary]) -> MotSummary {
        let n = summaries.len().max(1) as f64;
        let mean = |f: fn(&MotSummary) -> f64| summaries.iter().map(f).sum::<f64>() / n;
        let count = |f: fn(&MotSummary) -> u64| {
            (summaries.iter().map(f).sum::<u64>() as f64 / n).round() as u64
        };
        MotSummary {
            hota: mean(|s| s.hota),
            deta: mean(|s| s.deta),
            assa: mean(|s| s.assa),
            loca: mean(|s| s.loca),
            mota: mean(|s| s.mota),
            motp: mean(|s| s.motp),
            idf1: mean(|s| s.idf1),
            idp: mean(|s| s.idp),
            idr: mean(|s| s.idr),
            id_switches: count(|s| s.id_switches),
            fragments: count(|s| s.fragments),
            false_positives: count(|s| s.false_positives),
            false_negatives: count(|s| s.false_negatives),
            mostly_tracked: count(|s| s.mostly_tracked),
            mostly_lost: count(|s| s.mostly_lost),
        }
    }
}

impl MotCounts {
    /// Computes all counts of one preprocessed sequence.
    pub fn compute(data: &SequenceData) -> Self {
        let mut counts = MotCounts {
            hota_tp: [0.0; ALPHAS],
            hota_fn: [0.0; ALPHAS],
            hota_fp: [0.0; ALPHAS],
            ass_a_w: [0.0; ALPHAS],
            ass_re_w: [0.0; ALPHAS],
            ass_pr_w: [0.0; ALPHAS],
            loc_a_w: [0.0; ALPHAS],
            clr_tp: 0.0,
            clr_fn: 0.0,
            clr_fp: 0.0,
            idsw: 0.0,
            motp_sum: 0.0,
            mt: 0.0,
            pt: 0.0,
            ml: 0.0,
            frag: 0.0,
            idtp: 0.0,
            idfn: 0.0,
            idfp: 0.0,
        };
        counts.hota(data);
        counts.clear(data);
        counts.identity(data);
        counts
    }

    fn hota(&mut self, d: &SequenceData) {
        let (ng, nt) = (d.num_gt_ids, d.num_tracker_ids);
        let mut potential = vec![0.0f64; ng * nt];
        let mut gt_count = vec![0.0f64; ng];
        let mut tr_count = vec![0.0f64; nt];
        for ((gt, tr), sim) in d.gt_ids.iter().zip(&d.tracker_ids).zip(&d.similarity) {
            let (n, m) = (gt.len(), tr.len());
            let row_sum: Vec<f64> = (0..n)
                .map(|i| (0..m).map(|j| sim[i * m + j]).sum())
                .collect();
            let col_sum: Vec<f64> = (0..m)
                .map(|j| (0..n).map(|i| sim[i * m + j]).sum())
                .collect();
            for i in 0..n {
                for j in 0..m {
                    let denom = row_sum[i] + col_sum[j] - sim[i * m + j];
                    if denom > EPS {
                        potential[gt[i] * nt + tr[j]] += sim[i * m + j] / denom;
                    }
                }
            }
            for &g in gt {
                gt_count[g] += 1.0;
            }
            for &t in tr {
                tr_count[t] += 1.0;
            }
        }
        let global: Vec<f64> = (0..ng * nt)
            .map(|k| potential[k] / (gt_count[k / nt] + tr_count[k % nt] - potential[k]))
            .collect();
        let mut matches = vec![vec![0.0f64; ng * nt]; ALPHAS];
        let mut loc = [0.0f64; ALPHAS];
        for ((gt, tr), sim) in d.gt_ids.iter().zip(&d.tracker_ids).zip(&d.similarity) {
            let (n, m) = (gt.len(), tr.len());
            if n == 0 || m == 0 {
                for a in 0..ALPHAS {
                    self.hota_fp[a] += m as f64;
                    self.hota_fn[a] += n as f64;
                }
                continue;
            }
            let score: Vec<f64> = (0..n * m)
                .map(|k| -(global[gt[k / m] * nt + tr[k % m]] * sim[k]))
                .collect();
            let pairs = linear_sum_assignment(&score, n, m);
            for a in 0..ALPHAS {
                let kept: Vec<&(usize, usize)> = pairs
                    .iter()
                    .filter(|(i, j)| sim[i * m + j] >= alpha(a) - EPS)
                    .collect();
                let k = kept.len() as f64;
                self.hota_tp[a] += k;
                self.hota_fn[a] += n as f64 - k;
                self.hota_fp[a] += m as f64 - k;
                for &&(i, j) in &kept {
                    loc[a] += sim[i * m + j];
                    matches[a][gt[i] * nt + tr[j]] += 1.0;
                }
            }
        }
        for a in 0..ALPHAS {
            let tp = self.hota_tp[a];
            let (mut ass_a, mut ass_re, mut ass_pr) = (0.0, 0.0, 0.0);
            for (k, &c) in matches[a].iter().enumerate() {
                if c == 0.0 {
                    continue;
                }
                let (g, t) = (gt_count[k / nt], tr_count[k % nt]);
                ass_a += c * c / (g + t - c).max(1.0);
                ass_re += c * c / g.max(1.0);
                ass_pr += c * c / t.max(1.0);
            }
            // Stored weighted by TP so that sequences combine by addition.
            self.ass_a_w[a] = ass_a / tp.max(1.0) * tp;
            self.ass_re_w[a] = ass_re / tp.max(1.0) * tp;
            self.ass_pr_w[a] = ass_pr / tp.max(1.0) * tp;
            self.loc_a_w[a] = loc[a].max(1e-10) / tp.max(1e-10) * tp;
        }
    }

    fn clear(&mut self, d: &SequenceData) {
        let ng = d.num_gt_ids;
        let mut gt_count = vec![0.0f64; ng];
        let mut gt_matched = vec![0.0f64; ng];
        let mut frag_count = vec![0.0f64; ng];
        let mut prev_tracker: Vec<Option<usize>> = vec![None; ng];
        let mut prev_timestep: Vec<Option<usize>> = vec![None; ng];
        for ((gt, tr), sim) in d.gt_ids.iter().zip(&d.tracker_ids).zip(&d.similarity) {
            let (n, m) = (gt.len(), tr.len());
            if n == 0 {
                self.clr_fp += m as f64;
                continue;
            }
            if m == 0 {
                self.clr_fn += n as f64;
                for &g in gt {
                    gt_count[g] += 1.0;
                }
                continue;
            }
            let score: Vec<f64> = (0..n * m)
                .map(|k| {
                    let (i, j) = (k / m, k % m);
                    if sim[k] < 0.5 - EPS {
                        0.0
                    } else {
                        let continued = prev_timestep[gt[i]] == Some(tr[j]);
                        -(1000.0 * f64::from(u8::from(continued)) + sim[k])
                    }
                })
                .collect();
            let pairs: Vec<(usize, usize)> = linear_sum_assignment(&score, n, m)
                .into_iter()
                .filter(|&(i, j)| -score[i * m + j] > EPS)
                .collect();
            for &(i, j) in &pairs {
                if prev_tracker[gt[i]].is_some_and(|p| p != tr[j]) {
                    self.idsw += 1.0;
                }
            }
            for &g in gt {
                gt_count[g] += 1.0;
            }
            let not_previously: Vec<bool> = prev_timestep.iter().map(Option::is_none).collect();
            prev_timestep.iter_mut().for_each(|p| *p = None);
            for &(i, j) in &pairs {
                gt_matched[gt[i]] += 1.0;
                prev_tracker[gt[i]] = Some(tr[j]);
                prev_timestep[gt[i]] = Some(tr[j]);
                self.motp_sum += sim[i * m + j];
            }
            for g in 0..ng {
                if not_previously[g] && prev_timestep[g].is_some() {
                    frag_count[g] += 1.0;
                }
            }
            let k = pairs.len() as f64;
            self.clr_tp += k;
            self.clr_fn += n as f64 - k;
            self.clr_fp += m as f64 - k;
        }
        for g in 0..ng {
            if gt_count[g] > 0.0 {
                let ratio = gt_matched[g] / gt_count[g];
                if ratio > 0.8 {
                    self.mt += 1.0;
                } else if ratio >= 0.2 {
                    self.pt += 1.0;
                }
            }
        }
        self.ml = ng as f64 - self.mt - self.pt;
        self.frag = frag_count
            .iter()
            .filter(|&&f| f > 0.0)
            .map(|f| f - 1.0)
            .sum();
    }

    fn identity(&mut self, d: &SequenceData) {
        let (ng, nt) = (d.num_gt_ids, d.num_tracker_ids);
        let mut potential = vec![0.0f64; ng * nt];
        let mut gt_count = vec![0.0f64; ng];
        let mut tr_count = vec![0.0f64; nt];
        for ((gt, tr), sim) in d.gt_ids.iter().zip(&d.tracker_ids).zip(&d.similarity) {
            let m = tr.len();
            for (i, &g) in gt.iter().enumerate() {
                for (j, &t) in tr.iter().enumerate() {
                    if sim[i * m + j] >= 0.5 {
                        potential[g * nt + t] += 1.0;
                    }
                }
                gt_count[g] += 1.0;
            }
            for &t in tr {
                tr_count[t] += 1.0;
            }
        }
        let size = ng + nt;
        let mut fn_mat = vec![0.0f64; size * size];
        let mut fp_mat = vec![0.0f64; size * size];
        for r in ng..size {
            for c in 0..nt {
                fp_mat[r * size + c] = 1e10;
            }
        }
        for r in 0..ng {
            for c in nt..size {
                fn_mat[r * size + c] = 1e10;
            }
        }
        for g in 0..ng {
            for c in 0..nt {
                fn_mat[g * size + c] = gt_count[g];
            }
            fn_mat[g * size + nt + g] = gt_count[g];
        }
        for t in 0..nt {
            for r in 0..ng {
                fp_mat[r * size + t] = tr_count[t];
            }
            fp_mat[(t + ng) * size + t] = tr_count[t];
        }
        for g in 0..ng {
            for t in 0..nt {
                fn_mat[g * size + t] -= potential[g * nt + t];
                fp_mat[g * size + t] -= potential[g * nt + t];
            }
        }
        let total: Vec<f64> = fn_mat.iter().zip(&fp_mat).map(|(a, b)| a + b).collect();
        let pairs = linear_sum_assignment(&total, size, size);
        self.idfn = pairs.iter().map(|&(r, c)| fn_mat[r * size + c]).sum();
        self.idfp = pairs.iter().map(|&(r, c)| fp_mat[r * size + c]).sum();
        self.idtp = gt_count.iter().sum::<f64>() - self.idfn;
    }

    /// Adds another sequence's counts (TrackEval's combined "COMBINED_SEQ" row).
    pub fn add(&mut self, other: &MotCounts) {
        for a in 0..ALPHAS {
            self.hota_tp[a] += other.hota_tp[a];
            self.hota_fn[a] += other.hota_fn[a];
            self.hota_fp[a] += other.hota_fp[a];
            self.ass_a_w[a] += other.ass_a_w[a];
            self.ass_re_w[a] += other.ass_re_w[a];
            self.ass_pr_w[a] += other.ass_pr_w[a];
            self.loc_a_w[a] += other.loc_a_w[a];
        }
        self.clr_tp += other.clr_tp;
        self.clr_fn += other.clr_fn;
        self.clr_fp += other.clr_fp;
        self.idsw += other.idsw;
        self.motp_sum += other.motp_sum;
        self.mt += other.mt;
        self.pt += other.pt;
        self.ml += other.ml;
        self.frag += other.frag;
        self.idtp += other.idtp;
        self.idfn += other.idfn;
        self.idfp += other.idfp;
    }

    /// Final metrics.
    pub fn summary(&self) -> MotSummary {
        let mut hota = 0.0;
        let mut deta = 0.0;
        let mut assa = 0.0;
        let mut loca = 0.0;
        for a in 0..ALPHAS {
            let tp = self.hota_tp[a];
            let det_a = tp / (tp + self.hota_fn[a] + self.hota_fp[a]).max(1.0);
            let ass_a = self.ass_a_w[a] / tp.max(1.0);
            hota += (det_a * ass_a).sqrt();
            deta += det_a;
            assa += ass_a;
            loca += self.loc_a_w[a].max(1e-10) / tp.max(1e-10);
        }
        let n = ALPHAS as f64;
        let pct = |x: f64| 100.0 * x;
        MotSummary {
            hota: pct(hota / n),
            deta: pct(deta / n),
            assa: pct(assa / n),
            loca: pct(loca / n),
            mota: pct(
                (self.clr_tp - self.clr_fp - self.idsw) / (self.clr_tp + self.clr_fn).max(1.0)
            ),
            motp: pct(self.motp_sum / self.clr_tp.max(1.0)),
            idf1: pct(self.idtp / (self.idtp + 0.5 * self.idfp + 0.5 * self.idfn).max(1.0)),
            idp: pct(self.idtp / (self.idtp + self.idfp).max(1.0)),
            idr: pct(self.idtp / (self.idtp + self.idfn).max(1.0)),
            id_switches: self.idsw as u64,
            fragments: self.frag as u64,
            false_positives: self.clr_fp as u64,
            false_negatives: self.clr_fn as u64,
            mostly_tracked: self.mt as u64,
            mostly_lost: self.ml as u64,
        }
    }
}

/// Evaluates one sequence's results against its ground truth.
pub fn evaluate(gt_rows: &[MotRow], tracker_rows: &[MotRow], length: u32) -> MotCounts {
    MotCounts::compute(&SequenceData::new(gt_rows, tracker_rows, length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(frame: u32, id: i64, x: f32) -> MotRow {
        MotRow {
            frame,
            id,
            bbox: BBox::from_ltwh(x, 0.0, 10.0, 10.0),
            conf: 1.0,
            class: None,
            visibility: None,
        }
    }

    #[test]
    fn perfect_tracking_scores_100() {
        let gt: Vec<MotRow> = (1..=10)
            .flat_map(|f| [row(f, 1, 0.0), row(f, 2, 50.0)])
            .collect();
        let s = evaluate(&gt, &gt, 10).summary();
        assert!(
            (s.hota - 100.0).abs() < 1e-9
                && (s.mota - 100.0).abs() < 1e-9
                && (s.idf1 - 100.0).abs() < 1e-9
        );
        assert_eq!(
            (s.id_switches, s.false_positives, s.false_negatives),
            (0, 0, 0)
        );
    }

    #[test]
    fn an_id_switch_and_a_miss_are_counted() {
        let gt: Vec<MotRow> = (1..=10).map(|f| row(f, 1, 0.0)).collect();
        // Tracker switches id at frame 6 and misses frame 10.
        let tr: Vec<MotRow> = (1..=9)
            .map(|f| row(f, if f < 6 { 7 } else { 8 }, 0.0))
            .collect();
        let s = evaluate(&gt, &tr, 10).summary();
        assert_eq!(
            (s.id_switches, s.false_negatives, s.false_positives),
            (1, 1, 0)
        );
        assert!((s.mota - 100.0 * (9.0 - 1.0) / 10.0).abs() < 1e-9);
        // IDF1: best id covers 5 of 10 gt and 5 of 9 tracker boxes.
        assert!((s.idf1 - 100.0 * 5.0 / (5.0 + 0.5 * 4.0 + 0.5 * 5.0)).abs() < 1e-9);
        // DetA at every alpha is 9/10; AssA = (5*5/10 + 4*4/10) / 9.
        let ass = (25.0 / 10.0 + 16.0 / 10.0) / 9.0;
        assert!((s.hota - 100.0 * (0.9f64 * ass).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn distractor_matches_and_zero_marked_gt_are_ignored() {
        let mut gt = vec![row(1, 1, 0.0), row(1, 2, 50.0), row(1, 3, 100.0)];
        gt[1].class = Some(7); // static person: matched tracker box is dropped
        gt[0].class = Some(1);
        gt[2].class = Some(1);
        gt[2].conf = 0.0; // zero-marked: not counted
        let tr = vec![row(1, 1, 0.0), row(1, 2, 50.0)];
        let s = evaluate(&gt, &tr, 1).summary();
        assert_eq!((s.false_positives, s.false_negatives), (0, 0));
    }
}
