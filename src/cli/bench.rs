//! `bench` (every pipeline stage timed, per model and device) and `agree` (how closely two
//! models agree on video frames).

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use streamtrack::config::Config;
use streamtrack::detect::Detector;
use streamtrack::model::{ComputeDevice, DeviceChoice};
use streamtrack::setup::{self, DetectorSpec};
use streamtrack::speed::Calibration;

#[derive(Args)]
pub struct AgreeArgs {
    /// Videos whose frames are compared.
    #[arg(required = true)]
    videos: Vec<PathBuf>,
    /// The model under test (e.g. an INT8 or pruned export).
    #[arg(long, short)]
    model: PathBuf,
    /// The model whose detections count as ground truth (e.g. the float export).
    #[arg(long)]
    reference: PathBuf,
    /// Frames compared per video, evenly spaced.
    #[arg(long, default_value_t = 50)]
    frames: usize,
    /// Fail when mAP50 against the reference is below this.
    #[arg(long, default_value_t = 0.5)]
    min_map50: f64,
    /// Also print each class's reference objects, candidate boxes and average precisions,
    /// whose means are the mAP figures (a class seen once weighs as much as any other).
    #[arg(long)]
    per_class: bool,
    /// Where the networks run: auto, gpu, cpu or cpu-burn.
    #[arg(long)]
    device: Option<DeviceChoice>,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Video to run on.
    video: PathBuf,
    /// Model(s) to compare; repeat the flag for several (default: the usual model lookup).
    #[arg(long = "model", short)]
    models: Vec<PathBuf>,
    /// Where the network runs: auto, gpu, cpu or cpu-burn (Burn's stock CPU kernels).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Run every available device in turn: cpu-burn, cpu, and the GPU if there is one.
    #[arg(long, conflicts_with = "device")]
    compare_backends: bool,
    /// Frames timed after the warm-up.
    #[arg(long, default_value_t = 50)]
    frames: usize,
    /// Frames run before timing starts.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Camera calibration, so the speed stage does real work.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Network input size in pixels, a multiple of 32 (default: each model's export size).
    #[arg(long)]
    input_size: Option<usize>,
    /// Also print where the network's time goes, per operation type (CPU devices).
    #[arg(long)]
    ops: bool,
    /// Also print the network's time per layer, in the order the layers run, each
    /// convolution with its channels, kernel, stride, output size and arithmetic (CPU
    /// devices).
    #[arg(long)]
    layers: bool,
    /// With several models or devices, time their stage-by-stage runs frame by frame in
    /// turn (each frame through every column before the next), so that a machine whose
    /// speed drifts slows every column alike; every model is loaded first.
    #[arg(long)]
    interleave: bool,
    /// Print the reports as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn bench(args: BenchArgs, config: Config) -> anyhow::Result<()> {
    let devices = if args.compare_backends {
        let mut devices = vec![ComputeDevice::cpu_burn(), ComputeDevice::cpu()];
        if let Some(gpu) = ComputeDevice::resolve(DeviceChoice::Auto)
            .ok()
            .filter(|d| d.is_gpu)
        {
            devices.extend([gpu.clone().with_host_letterbox(), gpu]);
        }
        devices
    } else {
        let choice = args.device.unwrap_or(config.device);
        vec![ComputeDevice::resolve(choice).map_err(anyhow::Error::msg)?]
    };
    let models = if args.models.is_empty() {
        vec![super::flags::default_model_path(&config)?]
    } else {
        args.models.clone()
    };
    let calibration = args
        .calibration
        .as_deref()
        .or(config.calibration.as_deref())
        .map(Calibration::load)
        .transpose()?;
    let settings = streamtrack::bench::BenchSettings {
        video: args.video.clone(),
        frames: args.frames,
        warmup: args.warmup,
        tracker: config.tracker.clone(),
        speed: config.speed.clone(),
        calibration,
        op_profile: args.ops,
        layer_profile: args.layers,
    };
    let columns = models
        .iter()
        .flat_map(|model| devices.iter().map(move |device| (model, device)));
    let build = |(model, device): (&PathBuf, &ComputeDevice)| {
        eprintln!("benchmarking {} on {}", model.display(), device.description);
        let model_args = DetectorSpec::for_model(model, args.input_size);
        setup::build_detector_on(&model_args, &config, device.clone())
    };
    let reports = if args.interleave {
        let detectors = columns.map(build).collect::<anyhow::Result<Vec<_>>>()?;
        streamtrack::bench::run_interleaved(detectors, &settings)?
    } else {
        let mut reports = Vec::new();
        for column in columns {
            let (detector, names) = build(column)?;
            reports.push(streamtrack::bench::run(detector, names, &settings)?);
        }
        reports
    };
    if args.json {
        report!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        let _ = streamtrack::bench::write_tables(&mut std::io::stdout().lock(), &reports);
    }
    Ok(())
}

pub fn agree(args: AgreeArgs, config: Config) -> anyhow::Result<()> {
    let device =
        ComputeDevice::resolve(args.device.unwrap_or(config.device)).map_err(anyhow::Error::msg)?;
    let load = |path: &Path| -> anyhow::Result<Detector> {
        let args = DetectorSpec::for_model(path, None);
        Ok(setup::build_detector_on(&args, &config, device.clone())?.0)
    };
    let (mut candidate, mut reference) = (load(&args.model)?, load(&args.reference)?);
    if candidate.class_names() != reference.class_names() {
        bail!(
            "{} and {} have different class lists",
            args.model.display(),
            args.reference.display()
        );
    }
    let agreement = streamtrack::eval::agreement::measure(
        &mut candidate,
        &mut reference,
        &args.videos,
        args.frames,
    )?;
    let m = agreement.metrics;
    report!(
        "{} vs {}: {} frames, {} reference objects: precision {:.3}, recall {:.3}, mAP50 {:.3}, mAP50-95 {:.3}",
        args.model.display(),
        args.reference.display(),
        agreement.frames,
        agreement.reference_objects,
        m.precision,
        m.recall,
        m.map50,
        m.map50_95
    );
    if args.per_class {
        report!(
            "{:<16} {:>9} {:>9} {:>7} {:>9}",
            "class",
            "reference",
            "boxes",
            "AP50",
            "AP50-95"
        );
        let names = reference.class_names();
        for class in &agreement.per_class {
            let name = names.get(class.class_id).map_or("?", String::as_str);
            report!(
                "{:<16} {:>9} {:>9} {:>7.3} {:>9.3}",
                name,
                class.labels,
                class.predictions,
                class.ap50,
                class.ap50_95
            );
        }
    }
    if m.map50 < args.min_map50 {
        bail!(
            "{}: mAP50 {:.3} against {} is below {} — the model does not agree with its reference",
            args.model.display(),
            m.map50,
            args.reference.display(),
            args.min_map50
        );
    }
    Ok(())
}
