//! `quantize` and `prune`: the smaller or INT8 copy of a model, its calibration and checks.

use std::path::{Path, PathBuf};

use clap::Args;
use streamtrack::config::Config;
use streamtrack::model::int8::RangeEstimator;
use streamtrack::model::{ComputeDevice, YoloModel};

#[derive(Args)]
pub struct QuantizeArgs {
    /// The float model (.onnx or .bpk).
    #[arg(long, short)]
    model: PathBuf,
    /// Output record (.bpk); the model card is written beside it as .json.
    #[arg(long, short)]
    output: PathBuf,
    /// Calibrate for INT8 inference on the frames of these videos, images or folders
    /// (repeat the flag): the record keeps f32 weights plus each convolution's input range,
    /// and runs its convolutions in integers on the CPU. Without it, only the weights are
    /// stored as INT8 (a smaller file, run in f32).
    #[arg(long, num_args = 1..)]
    calibrate: Vec<PathBuf>,
    /// Calibration frames in all, spread evenly over the --calibrate sources.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    calibration_frames: u64,
    /// How many of the most sensitive convolutions stay in f32 (see the printed table).
    #[arg(long, default_value_t = 4)]
    keep_float: usize,
    /// How each convolution's input range is chosen from the calibration values: the whole
    /// range seen (minmax), all but 0.01 % on either side (percentile), or the upper bound
    /// with the least expected squared error (mse).
    #[arg(long, value_enum, default_value_t = RangeEstimatorArg::Mse)]
    estimator: RangeEstimatorArg,
    #[command(flatten)]
    check: CheckArgs,
}

/// `--estimator` values (see [`RangeEstimator`]).
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RangeEstimatorArg {
    Minmax,
    Percentile,
    Mse,
}

impl From<RangeEstimatorArg> for RangeEstimator {
    fn from(arg: RangeEstimatorArg) -> Self {
        match arg {
            RangeEstimatorArg::Minmax => RangeEstimator::MinMax,
            RangeEstimatorArg::Percentile => RangeEstimator::Percentile,
            RangeEstimatorArg::Mse => RangeEstimator::Mse,
        }
    }
}

#[derive(Args)]
pub struct PruneArgs {
    /// The float model: an Ultralytics ONNX export.
    #[arg(long, short)]
    model: PathBuf,
    /// Share of the channels of every prunable block to remove, in [0, 1).
    #[arg(long)]
    ratio: f32,
    /// Output record (.bpk); the model card is written beside it as .json.
    #[arg(long, short)]
    output: PathBuf,
    #[command(flatten)]
    check: CheckArgs,
}

/// The agreement check a compressed model must pass before it is written.
#[derive(Args)]
pub struct CheckArgs {
    /// Videos to compare the new model with the original on (repeat the flag); without it
    /// the model is written unchecked.
    #[arg(long = "check")]
    videos: Vec<PathBuf>,
    /// Frames compared per video, evenly spaced.
    #[arg(long, default_value_t = 30)]
    frames: usize,
    /// Refuse to write the model when its mAP50 against the original is below this.
    #[arg(long, default_value_t = 0.5)]
    min_map50: f64,
}

impl CheckArgs {
    fn check(self) -> streamtrack::compress::AgreementCheck {
        streamtrack::compress::AgreementCheck {
            videos: self.videos,
            frames: self.frames,
            min_map50: self.min_map50,
        }
    }
}

pub fn quantize(args: QuantizeArgs, config: Config) -> anyhow::Result<()> {
    let original = YoloModel::load(&args.model, ComputeDevice::cpu())?;
    let quantized = if args.calibrate.is_empty() {
        original.quantized()
    } else {
        let settings = streamtrack::compress::CalibrationSettings {
            sources: args.calibrate,
            frames: args.calibration_frames as usize,
            keep_float: args.keep_float,
            estimator: args.estimator.into(),
        };
        let calibrated = streamtrack::compress::calibrate(original.clone(), &settings)?;
        print_sensitivity(&calibrated, settings.keep_float);
        calibrated.model
    };
    save_compressed(
        original,
        quantized,
        &args.model,
        &args.output,
        args.check,
        &config,
    )
}

/// The per-convolution sensitivity table of an INT8 calibration.
pub fn print_sensitivity(calibrated: &streamtrack::compress::Calibrated, keep_float: usize) {
    report!(
        "calibrated on {} frames; INT8 alone in each convolution, most sensitive first:",
        calibrated.frames
    );
    report!("conv  in-ch  box error px  score error  runs in");
    for (rank, layer) in calibrated.sensitivity.iter().enumerate() {
        report!(
            "{:>4}  {:>5}  {:>12.3}  {:>11.4}  {}",
            layer.index,
            layer.input_channels,
            layer.box_error,
            layer.score_error,
            if rank < keep_float { "f32" } else { "int8" }
        );
    }
}

pub fn prune(args: PruneArgs, config: Config) -> anyhow::Result<()> {
    let (original, pruned, summary) =
        streamtrack::compress::pruned(&args.model, args.ratio, ComputeDevice::cpu())?;
    let removed = summary.channels_before - summary.channels_after;
    report!(
        "pruned {removed} of {} channels in {} blocks ({:.1}%)",
        summary.channels_before,
        summary.spaces,
        100.0 * removed as f64 / summary.channels_before.max(1) as f64
    );
    save_compressed(
        original,
        pruned,
        &args.model,
        &args.output,
        args.check,
        &config,
    )
}

/// Checks `candidate` against `original`, writes it to `output` and reports it.
pub fn save_compressed(
    original: YoloModel,
    candidate: YoloModel,
    source: &Path,
    output: &Path,
    check: CheckArgs,
    config: &Config,
) -> anyhow::Result<()> {
    let written =
        streamtrack::compress::check_and_save(original, candidate, &check.check(), config, output)?;
    report_written(source, output, &written);
    Ok(())
}

/// One line on a written model: size against the source file, and its agreement.
pub fn report_written(source: &Path, output: &Path, written: &streamtrack::compress::Written) {
    let source_bytes = std::fs::metadata(source).map(|m| m.len()).unwrap_or(0);
    let agreement = written
        .agreement
        .as_ref()
        .map_or(String::from("unchecked"), |a| {
            format!(
                "mAP50 {:.3}, mAP50-95 {:.3} against the original on {} frames ({} objects)",
                a.metrics.map50, a.metrics.map50_95, a.frames, a.reference_objects
            )
        });
    report!(
        "{} -> {} ({:.2} MB, source {:.2} MB): {agreement}",
        source.display(),
        output.display(),
        written.bytes as f64 / 1e6,
        source_bytes as f64 / 1e6
    );
}
