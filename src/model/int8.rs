//! Static INT8 inference on the CPU: calibration ranges, the plan that says which
//! convolutions run in integers, and the per-layer sensitivity that decides it.
//!
//! `quantize --calibrate` runs the float model on calibration frames while [`recording`]
//! notes the range of every convolution's input; the ranges are kept in the model card
//! ([`Int8Calibration`]), one entry per convolution in network order. A model loaded with
//! them on the CPU runs every convolution marked `int8` through `cpu_conv::conv2d_int8`:
//! its input quantised to u8 with the recorded range, its weights symmetric per output
//! channel, i32 accumulation, dequantised into the f32 bias + SiLU epilogue. On a GPU the
//! same record runs in f32.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use cpu_conv::{FeatureMap, QuantParams};
use serde::{Deserialize, Serialize};

use super::network::YoloNetwork;

/// Calibrated input ranges of a model's convolutions, kept in its card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Int8Calibration {
    /// Frames the ranges were measured on.
    pub frames: usize,
    /// How the ranges were chosen from the values seen.
    pub estimator: RangeEstimator,
    /// One entry per convolution, in network order.
    pub layers: Vec<LayerCalibration>,
}

/// One convolution's input range and whether it runs in INT8.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerCalibration {
    pub min: f32,
    pub max: f32,
    pub int8: bool,
}

/// The convolutions that run in INT8 (by weight parameter), with their input quantisation.
pub(crate) type Int8Plan = HashMap<ParamId, QuantParams>;

thread_local! {
    static PLAN: RefCell<Option<Arc<Int8Plan>>> = const { RefCell::new(None) };
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

/// What a calibration pass records at each convolution's input.
enum Recorder {
    /// The range seen.
    Ranges(HashMap<ParamId, (f32, f32)>),
    /// A histogram over a range measured before.
    Histograms(HashMap<ParamId, Histogram>),
}

/// How a convolution's input range is chosen from the values calibration saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeEstimator {
    /// The whole range seen: nothing clipped, the coarsest steps.
    MinMax,
    /// The range that holds all but 0.01 % of the values on either side.
    Percentile,
    /// The upper bound that minimises the expected squared error (clipping plus rounding)
    /// over the histogram; the lower bound stays at the minimum seen.
    Mse,
}

/// Bins of a calibration histogram.
const HISTOGRAM_BINS: usize = 2048;

/// Share of the values a percentile range leaves outside on each side.
const PERCENTILE_TAIL: f64 = 1e-4;

/// The values seen at one convolution's input, binned over `[min, max]`.
#[derive(Debug, Clone)]
pub struct Histogram {
    min: f32,
    max: f32,
    bins: Vec<u64>,
}

impl Histogram {
    pub fn new(min: f32, max: f32) -> Self {
        Self {
            min,
            max: max.max(min),
            bins: vec![0; HISTOGRAM_BINS],
        }
    }

    fn width(&self) -> f32 {
        (self.max - self.min) / HISTOGRAM_BINS as f32
    }

    fn add(&mut self, value: f32) {
        let width = self.width();
        let bin = if width > 0.0 {
            (((value - self.min) / width) as usize).min(HISTOGRAM_BINS - 1)
        } else {
            0
        };
        self.bins[bin] += 1;
    }

    /// The first bin, in `order`, by which more than `tail` values have been seen.
    fn first_past(&self, order: impl Iterator<Item = usize>, tail: u64) -> usize {
        let mut seen = 0;
        for i in order {
            seen += self.bins[i];
            if seen > tail {
                return i;
            }
        }
        0
    }

    /// Centre of bin `i`.
    fn centre(&self, i: usize) -> f32 {
        self.min + (i as f32 + 0.5) * self.width()
    }

    /// The range `estimator` chooses.
    pub fn range(&self, estimator: RangeEstimator) -> (f32, f32) {
        let total: u64 = self.bins.iter().sum();
        if total == 0 || self.width() <= 0.0 {
            return (self.min, self.max);
        }
        match estimator {
            RangeEstimator::MinMax => (self.min, self.max),
            RangeEstimator::Percentile => {
                let tail = (total as f64 * PERCENTILE_TAIL) as u64;
                let low = self.first_past(0..HISTOGRAM_BINS, tail);
                let high = self.first_past((0..HISTOGRAM_BINS).rev(), tail);
                let width = self.width();
                (
                    self.min + low as f32 * width,
                    self.min + (high + 1) as f32 * width,
                )
            }
            RangeEstimator::Mse => {
                let error = |high: usize| {
                    let top = self.min + (high + 1) as f32 * self.width();
                    let step = (top - self.min.min(0.0)) as f64 / 255.0;
                    let rounding = step * step / 12.0;
                    self.bins
                        .iter()
                        .enumerate()
                        .map(|(i, &n)| {
                            let clipped = (self.centre(i) - top).max(0.0) as f64;
                            n as f64 * (clipped * clipped + rounding)
                        })
                        .sum::<f64>()
                };
                let high = (HISTOGRAM_BINS / 8..HISTOGRAM_BINS)
                    .min_by(|&a, &b| error(a).total_cmp(&error(b)))
                    .unwrap_or(HISTOGRAM_BINS - 1);
                (self.min, self.min + (high + 1) as f32 * self.width())
            }
        }
    }
}

/// Runs `f` with `plan` in force on this thread (forward passes run on the calling thread).
pub(crate) fn with_plan<T>(plan: Option<Arc<Int8Plan>>, f: impl FnOnce() -> T) -> T {
    let before = PLAN.replace(plan);
    let out = f();
    PLAN.set(before);
    out
}

/// The plan in force on this thread.
pub(crate) fn current_plan() -> Option<Arc<Int8Plan>> {
    PLAN.with_borrow(Clone::clone)
}

/// The input quantisation of the convolution with weight `id`, if it runs in INT8.
pub(crate) fn planned(id: ParamId) -> Option<QuantParams> {
    PLAN.with_borrow(|plan| plan.as_ref()?.get(&id).copied())
}

/// Runs `f` while the inputs of every convolution on the fast CPU path are measured, and
/// returns the range seen by each (by weight parameter).
pub(crate) fn recording_ranges(f: impl FnOnce()) -> HashMap<ParamId, (f32, f32)> {
    match record(Recorder::Ranges(HashMap::new()), f) {
        Recorder::Ranges(ranges) => ranges,
        Recorder::Histograms(_) => unreachable!("the recorder keeps its kind"),
    }
}

/// Runs `f` while the inputs of the convolutions in `histograms` are added to them.
pub(crate) fn recording_histograms(
    histograms: HashMap<ParamId, Histogram>,
    f: impl FnOnce(),
) -> HashMap<ParamId, Histogram> {
    match record(Recorder::Histograms(histograms), f) {
        Recorder::Histograms(histograms) => histograms,
        Recorder::Ranges(_) => unreachable!("the recorder keeps its kind"),
    }
}

fn record(recorder: Recorder, f: impl FnOnce()) -> Recorder {
    let before = RECORDER.replace(Some(recorder));
    f();
    RECORDER.replace(before).expect("the recorder set above")
}

/// Whether a calibration pass is recording convolution inputs on this thread (they must
/// then reach every convolution in f32).
pub(crate) fn is_recording() -> bool {
    RECORDER.with_borrow(Option::is_some)
}

/// Adds convolution `id`'s input `parts` to what is being recorded (if anything).
pub(crate) fn observe(id: ParamId, parts: &[FeatureMap]) {
    RECORDER.with_borrow_mut(|recorder| {
        let values = parts.iter().flat_map(|p| p.data);
        match recorder {
            None => {}
            Some(Recorder::Ranges(ranges)) => {
                let range = ranges
                    .entry(id)
                    .or_insert((f32::INFINITY, f32::NEG_INFINITY));
                for value in values {
                    range.0 = range.0.min(*value);
                    range.1 = range.1.max(*value);
                }
            }
            Some(Recorder::Histograms(histograms)) => {
                if let Some(histogram) = histograms.get_mut(&id) {
                    values.for_each(|v| histogram.add(*v));
                }
            }
        }
    });
}

/// One convolution of a network, as calibration sees it.
pub(crate) struct Convolution {
    /// Its weight parameter.
    pub id: ParamId,
    /// Input channels per group (1 for a depthwise convolution).
    pub input_channels: usize,
}

/// The network's convolutions in network order (the order of [`Int8Calibration::layers`]):
/// its rank-4 parameters, which are exactly the convolution weights.
pub(crate) fn convolutions(network: &YoloNetwork) -> Vec<Convolution> {
    struct Visitor(Vec<Convolution>);
    impl ModuleVisitor for Visitor {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D == 4 {
                self.0.push(Convolution {
                    id: param.id,
                    input_channels: param.val().dims()[1],
                });
            }
        }
    }
    let mut visitor = Visitor(Vec::new());
    network.visit(&mut visitor);
    visitor.0
}

/// The plan for `network` from its calibration: `None` when the calibration does not
/// describe this network (another number of convolutions).
pub(crate) fn plan(network: &YoloNetwork, calibration: &Int8Calibration) -> Option<Int8Plan> {
    let convolutions = convolutions(network);
    (convolutions.len() == calibration.layers.len()).then(|| {
        convolutions
            .into_iter()
            .zip(&calibration.layers)
            .filter(|(_, layer)| layer.int8)
            .map(|(c, layer)| (c.id, QuantParams::covering(layer.min, layer.max)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bulk` values spread over [0, 1) and one outlier at 100, as a SiLU output with a rare
    /// large activation looks.
    fn with_outlier(bulk: usize) -> Histogram {
        let mut histogram = Histogram::new(0.0, 100.0);
        (0..bulk).for_each(|i| histogram.add(i as f32 / bulk as f32));
        histogram.add(100.0);
        histogram
    }

    #[test]
    fn estimators_clip_a_rare_outlier_and_min_max_keeps_it() {
        let bin = 100.0 / HISTOGRAM_BINS as f32;
        let histogram = with_outlier(100_000);
        assert_eq!(histogram.range(RangeEstimator::MinMax), (0.0, 100.0));
        let (low, high) = histogram.range(RangeEstimator::Percentile);
        assert_eq!(low, 0.0);
        assert!((1.0..=1.0 + bin).contains(&high), "{high}");
        // Squared error over N values in [0, 1) and one at 100, bound `t`: rounding
        // N t^2 / (12 * 255^2) plus clipping (100 - t)^2, least at t = 200 / (N / 390150 + 2).
        // One outlier in 100,000 costs more clipped than the bulk's coarser steps: t = 88.6.
        let (low, high) = histogram.range(RangeEstimator::Mse);
        assert_eq!(low, 0.0);
        assert!((88.6 - high).abs() <= bin, "{high}");
        // One in ten million is clipped (t = 7.2; the search starts at an eighth of the range).
        let (_, high) = with_outlier(10_000_000).range(RangeEstimator::Mse);
        assert!((100.0 / 8.0 - high).abs() <= bin, "{high}");
    }

    #[test]
    fn an_empty_or_flat_histogram_keeps_its_range() {
        let empty = Histogram::new(-1.0, 2.0);
        assert_eq!(empty.range(RangeEstimator::Mse), (-1.0, 2.0));
        let mut flat = Histogram::new(3.0, 3.0);
        flat.add(3.0);
        assert_eq!(flat.range(RangeEstimator::Percentile), (3.0, 3.0));
    }
}
