//! The `streamtrack` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use streamtrack::analysis::Analysis;
use streamtrack::annotate::{Annotation, Annotator};
use streamtrack::config::Config;
use streamtrack::detect::{Detection, Detector};
use streamtrack::model::{ComputeDevice, DeviceChoice, YoloModel};
use streamtrack::motfile;
use streamtrack::output::ResultWriters;
use streamtrack::pipeline::{self, Sinks};
use streamtrack::speed::{Calibration, SpeedEstimator, TrackSummary};
use streamtrack::track::Tracker;
use streamtrack::video::encoder::EncodeSettings;
use streamtrack::video::sink::{Mp4Sink, PngFrameSink};
use streamtrack::video::{self, images};

#[derive(Parser)]
#[command(
    name = "streamtrack",
    version,
    about = "Object detection, tracking and speed estimation on video, in pure Rust"
)]
struct Cli {
    /// Configuration file (TOML); command-line flags override its values.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Hide the progress bar and informational logs.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Log level of streamtrack's own messages: error, warn, info, debug or trace (libraries
    /// log warnings only). A full filter such as `info,cubecl=debug` is used as given.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect objects in a video (or images) and write an annotated H.264 MP4.
    Process(ProcessArgs),
    /// Detect objects in images, folders or videos; print a summary and write JSON.
    Detect(DetectArgs),
    /// Convert an Ultralytics ONNX export into a Burn record (.bpk) plus a model card (.json).
    Import(ImportArgs),
    /// Track MOTChallenge detections (det.txt) and write MOTChallenge results.
    Track(TrackArgs),
    /// Validate a detector on a YOLO-format dataset: precision, recall, mAP50, mAP50-95.
    Val(ValArgs),
    /// Evaluate tracking (HOTA, MOTA, IDF1) or speed accuracy against ground truth.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Time every pipeline stage and the whole pipeline on a video, per model and device.
    Bench(BenchArgs),
    /// How closely a model (e.g. an INT8 export) agrees with a reference model on video frames.
    Agree(AgreeArgs),
}

#[derive(Args)]
struct AgreeArgs {
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
    /// Where the networks run: auto, gpu, cpu or cpu-burn.
    #[arg(long)]
    device: Option<DeviceChoice>,
}

#[derive(Args)]
struct BenchArgs {
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
    /// Print the reports as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrackArgs {
    /// Detections in MOTChallenge format (frame,-1,left,top,width,height,score[,class]).
    #[arg(long)]
    det: PathBuf,
    /// The sequence's seqinfo.ini (frame rate and length).
    #[arg(long)]
    seqinfo: PathBuf,
    /// Output tracks in MOTChallenge format.
    #[arg(long, short)]
    output: PathBuf,
}

#[derive(Args)]
struct ValArgs {
    /// Dataset folder with images/ and labels/ (YOLO txt: class cx cy w h, normalised).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// MOTChallenge metrics of result files against ground truth, per sequence and combined.
    Mot(EvalMotArgs),
    /// Speed error and coverage on a sequence with true speeds (det.txt, gt.txt,
    /// gt_speed.csv, seqinfo.ini, calibration.toml).
    Speed(EvalSpeedArgs),
}

#[derive(Args)]
struct EvalMotArgs {
    /// Folder holding one folder per sequence with gt.txt and seqinfo.ini.
    #[arg(long)]
    gt_root: PathBuf,
    /// Folder holding one SEQ.txt result file per sequence; with --track, results are
    /// computed from each sequence's det.txt and written here.
    #[arg(long)]
    res: PathBuf,
    /// Run the tracker on each sequence's det.txt first.
    #[arg(long)]
    track: bool,
    /// Sequence names.
    #[arg(required = true)]
    sequences: Vec<String>,
}

#[derive(Args)]
struct EvalSpeedArgs {
    /// Sequence folder.
    sequence: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Process only every N-th frame (simulates frame skipping).
    #[arg(long, default_value_t = 1)]
    frame_step: u32,
}

/// Model and detection flags shared by the commands that run the network.
#[derive(Args, Clone)]
struct ModelArgs {
    /// Model: an Ultralytics YOLOv8/YOLO11 detection export (.onnx) or an imported .bpk.
    #[arg(long, short)]
    model: Option<PathBuf>,
    /// Where the network runs: auto, gpu, cpu or cpu-burn (Burn's stock CPU kernels).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Confidence threshold (default 0.25).
    #[arg(long)]
    conf: Option<f32>,
    /// NMS IoU threshold (default 0.7).
    #[arg(long)]
    iou: Option<f32>,
    /// Maximum detections per frame (default 300).
    #[arg(long)]
    max_det: Option<usize>,
    /// Suppress overlapping boxes across classes.
    #[arg(long)]
    agnostic_nms: bool,
    /// Keep only these classes, by name or id, comma-separated (e.g. car,bus,7).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Network input size in pixels, a multiple of 32 (default: the model's export size).
    #[arg(long)]
    input_size: Option<usize>,
}

impl ModelArgs {
    /// `path` with every other flag at its default (the config file still applies).
    fn for_model(path: &Path, input_size: Option<usize>) -> Self {
        Self {
            model: Some(path.to_path_buf()),
            device: None,
            conf: None,
            iou: None,
            max_det: None,
            agnostic_nms: false,
            classes: Vec::new(),
            input_size,
        }
    }
}

#[derive(Args)]
struct ProcessArgs {
    /// Input: MP4 file, raw H.264 (.h264, or - for stdin), image or folder of images.
    input: PathBuf,
    /// Output annotated video (.mp4).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also write every annotated frame as PNG into this folder.
    #[arg(long)]
    save_frames: Option<PathBuf>,
    /// Frame rate assumed for raw H.264 input, which carries no timestamps.
    #[arg(long, default_value_t = video::DEFAULT_RAW_FPS)]
    fps: f64,
    /// Output video bitrate in bits per second (default: from frame size and rate).
    #[arg(long)]
    bitrate: Option<u32>,
    /// Per-frame tracks and events as JSON lines.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Per-frame tracks as CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Tracks in MOTChallenge format.
    #[arg(long)]
    mot: Option<PathBuf>,
    /// Camera calibration (TOML) enabling speed estimation.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Analyse one frame in N+1 (the others are written with the last annotations).
    #[arg(long, default_value_t = 0)]
    frame_skip: u64,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct DetectArgs {
    /// Images, folders of images, or videos.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Write detections here: one JSON object for a single image, JSON lines otherwise.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write YOLO-format label files (class cx cy w h, normalised) into this folder.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Write annotated images into this folder.
    #[arg(long)]
    save_dir: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct ImportArgs {
    /// The ONNX export to convert.
    model: PathBuf,
    /// Output record (.bpk); the model card is written beside it as .json.
    #[arg(long, short)]
    output: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.quiet {
        "warn"
    } else {
        cli.log_level.as_str()
    };
    let filter = if level.contains(['=', ',']) {
        level.to_string()
    } else {
        format!("warn,streamtrack={level}")
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    match cli.command {
        Command::Process(args) => process(args, config, cli.quiet),
        Command::Detect(args) => detect(args, config),
        Command::Import(args) => import(args),
        Command::Track(args) => track(args, config),
        Command::Val(args) => val(args, config),
        Command::Eval(EvalCommand::Mot(args)) => eval_mot(args, config),
        Command::Eval(EvalCommand::Speed(args)) => eval_speed(args, config),
        Command::Bench(args) => bench(args, config),
        Command::Agree(args) => agree(args, config),
    }
}

/// `--model`, then the config file, then `STREAMTRACK_MODEL`, then `models/default.onnx`,
/// then the shared sample model.
fn resolve_model_path(flag: Option<&Path>, config: &Config) -> anyhow::Result<PathBuf> {
    let candidates = [
        flag.map(Path::to_path_buf),
        config.model.clone(),
        std::env::var_os("STREAMTRACK_MODEL").map(PathBuf::from),
    ];
    if let Some(chosen) = candidates.into_iter().flatten().next() {
        return Ok(chosen);
    }
    ["models/default.onnx", "../shared/data/models/yolov8n-coco-640.onnx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("no model given: pass --model, set `model` in the config file or STREAMTRACK_MODEL, or place models/default.onnx")
}

/// Loads the model and resolves thresholds; returns the detector and display names.
fn build_detector(args: &ModelArgs, config: &Config) -> anyhow::Result<(Detector, Vec<String>)> {
    let device =
        ComputeDevice::resolve(args.device.unwrap_or(config.device)).map_err(anyhow::Error::msg)?;
    build_detector_on(args, config, device)
}

/// [`build_detector`] on a device already chosen.
fn build_detector_on(
    args: &ModelArgs,
    config: &Config,
    device: ComputeDevice,
) -> anyhow::Result<(Detector, Vec<String>)> {
    let path = resolve_model_path(args.model.as_deref(), config)?;
    tracing::info!("device: {}", device.description);
    let mut model = YoloModel::load(&path, device)?;
    if let Some(size) = args.input_size {
        model
            .set_input_size(size)
            .map_err(|e| anyhow::anyhow!("--input-size: {e}"))?;
    }
    let mut section = config.detect.clone();
    section.conf = args.conf.unwrap_or(section.conf);
    section.iou = args.iou.unwrap_or(section.iou);
    section.max_det = args.max_det.unwrap_or(section.max_det);
    section.agnostic_nms |= args.agnostic_nms;
    if !args.classes.is_empty() {
        section.classes = args.classes.clone();
    }
    let names = section.display_names(model.class_names())?;
    let thresholds = section.resolve(model.class_names())?;
    Ok((Detector::new(model, thresholds), names))
}

/// Ctrl-C / SIGTERM set the returned flag; a second signal exits at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: finishing the frames in flight and finalising outputs");
    });
    stop
}

fn process(args: ProcessArgs, config: Config, quiet: bool) -> anyhow::Result<()> {
    if args.output.is_none()
        && args.save_frames.is_none()
        && args.events.is_none()
        && args.csv.is_none()
        && args.mot.is_none()
    {
        bail!(
            "nothing to write: give --output FILE.mp4, --save-frames DIR, --events, --csv or --mot"
        );
    }
    let source = video::open_source(&args.input, args.fps)?;
    let info = source.info().clone();
    tracing::info!(
        "{}: {}x{}, {:.2} fps{}",
        args.input.display(),
        info.width,
        info.height,
        info.fps,
        info.frame_count
            .map(|n| format!(", {n} frames"))
            .unwrap_or_default()
    );
    let settings = EncodeSettings {
        bitrate: args.bitrate.or(config.output.bitrate),
        keyframe_interval_s: config.output.keyframe_interval,
    };
    let sinks = Sinks {
        video: args
            .output
            .as_deref()
            .map(|p| Mp4Sink::create(p, info.fps, settings))
            .transpose()?,
        frames: args
            .save_frames
            .as_deref()
            .map(PngFrameSink::create)
            .transpose()?,
    };
    let calibration = args
        .calibration
        .as_deref()
        .or(config.calibration.as_deref())
        .map(|path| -> anyhow::Result<Calibration> {
            let calibration = Calibration::load(path)?;
            calibration
                .check_image_size(info.width, info.height)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok(calibration)
        })
        .transpose()?;
    let writers = ResultWriters::create(
        args.events.as_deref(),
        args.csv.as_deref(),
        args.mot.as_deref(),
    )?;
    let (detector, names) = build_detector(&args.model, &config)?;
    let tracker = Tracker::new(config.tracker.clone(), info.fps);
    let speeds = SpeedEstimator::new(calibration, config.speed.clone(), (info.width, info.height));
    let mut analysis = Analysis::new(
        detector,
        names.clone(),
        tracker,
        speeds,
        config.tracker.track_buffer,
        writers,
    )
    .with_frame_skip(args.frame_skip);
    let summary = pipeline::run(source, &mut analysis, sinks, interrupt_flag(), !quiet)?;
    eprintln!(
        "{} frames in {:.1} s ({:.1} FPS){}{}",
        summary.frames_decoded,
        summary.elapsed.as_secs_f64(),
        summary.fps(),
        if summary.corrupt_frames > 0 {
            format!(", {} corrupt frames skipped", summary.corrupt_frames)
        } else {
            String::new()
        },
        if summary.interrupted {
            ", interrupted"
        } else {
            ""
        }
    );
    if let Some(out) = &args.output {
        eprintln!(
            "wrote {} ({} frames)",
            out.display(),
            summary.frames_written
        );
    }
    print_track_summary(&analysis.summaries, &names);
    Ok(())
}

fn bench(args: BenchArgs, config: Config) -> anyhow::Result<()> {
    let devices = if args.compare_backends {
        let mut devices = vec![ComputeDevice::cpu_burn(), ComputeDevice::cpu()];
        devices.extend(
            ComputeDevice::resolve(DeviceChoice::Auto)
                .ok()
                .filter(|d| d.is_gpu),
        );
        devices
    } else {
        let choice = args.device.unwrap_or(config.device);
        vec![ComputeDevice::resolve(choice).map_err(anyhow::Error::msg)?]
    };
    let models = if args.models.is_empty() {
        vec![resolve_model_path(None, &config)?]
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
    };
    let mut reports = Vec::new();
    for model in &models {
        for device in &devices {
            eprintln!("benchmarking {} on {}", model.display(), device.description);
            let model_args = ModelArgs::for_model(model, args.input_size);
            let (detector, names) = build_detector_on(&model_args, &config, device.clone())?;
            reports.push(streamtrack::bench::run(detector, names, &settings)?);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        streamtrack::bench::print_tables(&reports);
    }
    Ok(())
}

fn agree(args: AgreeArgs, config: Config) -> anyhow::Result<()> {
    let device =
        ComputeDevice::resolve(args.device.unwrap_or(config.device)).map_err(anyhow::Error::msg)?;
    let load = |path: &Path| -> anyhow::Result<Detector> {
        let args = ModelArgs::for_model(path, None);
        Ok(build_detector_on(&args, &config, device.clone())?.0)
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
    println!(
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

/// Per-class track counts and speeds at the end of a run.
fn print_track_summary(summaries: &[TrackSummary], names: &[String]) {
    let mut classes: Vec<usize> = summaries.iter().map(|s| s.class_id).collect();
    classes.sort_unstable();
    classes.dedup();
    for class in classes {
        let tracks: Vec<&TrackSummary> = summaries.iter().filter(|s| s.class_id == class).collect();
        let speeds: Vec<f64> = tracks.iter().filter_map(|s| s.mean_speed).collect();
        let speed = if speeds.is_empty() {
            String::new()
        } else {
            format!(
                ", mean speed {:.1}, max {:.1}",
                speeds.iter().sum::<f64>() / speeds.len() as f64,
                tracks
                    .iter()
                    .filter_map(|s| s.max_speed)
                    .fold(0.0, f64::max)
            )
        };
        eprintln!("{}: {} tracks{speed}", names[class], tracks.len());
    }
}

/// One image's detections in the reference JSON shape.
fn detections_json(
    image: &str,
    imgsz: u32,
    detections: &[Detection],
    names: &[String],
) -> serde_json::Value {
    let round = |v: f32, places: i32| (v as f64 * 10f64.powi(places)).round() / 10f64.powi(places);
    serde_json::json!({
        "image": image,
        "imgsz": imgsz,
        "detections": detections.iter().map(|d| serde_json::json!({
            "xyxy": [round(d.bbox.x1, 3), round(d.bbox.y1, 3), round(d.bbox.x2, 3), round(d.bbox.y2, 3)],
            "conf": round(d.score, 5),
            "cls": d.class_id,
            "name": names[d.class_id],
        })).collect::<Vec<_>>(),
    })
}

fn detect(args: DetectArgs, config: Config) -> anyhow::Result<()> {
    let (mut detector, names) = build_detector(&args.model, &config)?;
    let imgsz = detector
        .model
        .input_size()
        .0
        .max(detector.model.input_size().1);
    for dir in [&args.labels, &args.save_dir].into_iter().flatten() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    }
    let mut records = Vec::new();
    let mut annotator = Annotator::new();
    for input in &args.inputs {
        let files = if input.is_dir() {
            images::list_images(input)?
        } else {
            vec![input.clone()]
        };
        for file in files {
            let mut source = video::open_source(&file, video::DEFAULT_RAW_FPS)?;
            let is_video = !images::is_image_path(&file);
            while let Some(frame) = source.next_frame()? {
                let detections = detector.detect(&frame.image);
                let label = if is_video {
                    format!("{}#{}", file.display(), frame.index)
                } else {
                    file.display().to_string()
                };
                println!("{label}: {}", summary_line(&detections, &names));
                let stem = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                let stem = if is_video {
                    format!("{stem}_{:06}", frame.index)
                } else {
                    stem
                };
                if let Some(dir) = &args.labels {
                    write_yolo_labels(
                        &dir.join(format!("{stem}.txt")),
                        &detections,
                        frame.image.dimensions(),
                    )?;
                }
                if let Some(dir) = &args.save_dir {
                    let mut canvas = frame.image.clone();
                    let annotations: Vec<_> = detections
                        .iter()
                        .map(|d| Annotation::from_detection(d, &names[d.class_id]))
                        .collect();
                    annotator.draw(&mut canvas, &annotations);
                    let path = dir.join(format!("{stem}.jpg"));
                    canvas
                        .save(&path)
                        .with_context(|| format!("{}: cannot write", path.display()))?;
                }
                let name = if is_video {
                    label
                } else {
                    file.file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default()
                };
                records.push(detections_json(&name, imgsz, &detections, &names));
            }
        }
    }
    if let Some(path) = &args.json {
        let text = if records.len() == 1 {
            serde_json::to_string_pretty(&records[0])?
        } else {
            records
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        std::fs::write(path, text + "\n")
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}

/// `2 persons, 1 bus`.
fn summary_line(detections: &[Detection], names: &[String]) -> String {
    if detections.is_empty() {
        return "no detections".into();
    }
    let mut counts: Vec<(usize, usize)> = Vec::new();
    for d in detections {
        match counts.iter_mut().find(|(c, _)| *c == d.class_id) {
            Some((_, n)) => *n += 1,
            None => counts.push((d.class_id, 1)),
        }
    }
    counts
        .iter()
        .map(|(c, n)| format!("{n} {}", names[*c]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_yolo_labels(
    path: &Path,
    detections: &[Detection],
    (w, h): (u32, u32),
) -> anyhow::Result<()> {
    let (w, h) = (w as f32, h as f32);
    let lines: String = detections
        .iter()
        .map(|d| {
            let (cx, cy) = d.bbox.centre();
            format!(
                "{} {:.6} {:.6} {:.6} {:.6} {:.5}\n",
                d.class_id,
                cx / w,
                cy / h,
                d.bbox.width() / w,
                d.bbox.height() / h,
                d.score
            )
        })
        .collect();
    std::fs::write(path, lines).with_context(|| format!("{}: cannot write", path.display()))
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let model = YoloModel::load(&args.model, ComputeDevice::cpu())?;
    model.save(&args.output)?;
    let card = &model.card;
    println!(
        "{} {}{}: {} classes, input {}x{} -> {} (+ {})",
        args.model.display(),
        card.architecture.family,
        card.architecture
            .scale
            .map(|s| format!(" scale {s}"))
            .unwrap_or_default(),
        card.metadata.names.len(),
        card.metadata.imgsz[1],
        card.metadata.imgsz[0],
        args.output.display(),
        args.output.with_extension("json").display()
    );
    Ok(())
}

fn track(args: TrackArgs, config: Config) -> anyhow::Result<()> {
    let info = motfile::read_seqinfo(&args.seqinfo)?;
    let detections = motfile::read_rows(&args.det)?;
    let results = streamtrack::track::track_mot_rows(&detections, &info, &config.tracker);
    motfile::write_results(&args.output, &results)?;
    let ids: std::collections::HashSet<i64> = results.iter().map(|r| r.id).collect();
    println!(
        "{} frames, {} tracks, {} boxes -> {}",
        info.length,
        ids.len(),
        results.len(),
        args.output.display()
    );
    Ok(())
}

fn eval_mot(args: EvalMotArgs, config: Config) -> anyhow::Result<()> {
    use streamtrack::eval::mot::{MotCounts, evaluate};
    if args.track {
        std::fs::create_dir_all(&args.res)
            .with_context(|| format!("{}: cannot create the folder", args.res.display()))?;
    }
    let mut combined: Option<MotCounts> = None;
    println!(
        "{:<16} {:>7} {:>7} {:>7} {:>6} {:>7} {:>7}",
        "sequence", "HOTA", "MOTA", "IDF1", "IDSW", "FP", "FN"
    );
    for seq in &args.sequences {
        let dir = args.gt_root.join(seq);
        let info = motfile::read_seqinfo(&dir.join("seqinfo.ini"))?;
        let res_path = args.res.join(format!("{seq}.txt"));
        if args.track {
            let dets = motfile::read_rows(&dir.join("det.txt"))?;
            motfile::write_results(
                &res_path,
                &streamtrack::track::track_mot_rows(&dets, &info, &config.tracker),
            )?;
        }
        let counts = evaluate(
            &motfile::read_rows(&dir.join("gt.txt"))?,
            &motfile::read_rows(&res_path)?,
            info.length,
        );
        print_mot_row(seq, &counts);
        match combined.as_mut() {
            Some(c) => c.add(&counts),
            None => combined = Some(counts),
        }
    }
    if let Some(c) = combined {
        print_mot_row("COMBINED", &c);
    }
    Ok(())
}

fn print_mot_row(name: &str, counts: &streamtrack::eval::mot::MotCounts) {
    let s = counts.summary();
    println!(
        "{:<16} {:>7.3} {:>7.3} {:>7.3} {:>6} {:>7} {:>7}",
        name, s.hota, s.mota, s.idf1, s.id_switches, s.false_positives, s.false_negatives
    );
}

fn eval_speed(args: EvalSpeedArgs, config: Config) -> anyhow::Result<()> {
    if args.frame_step == 0 {
        bail!("--frame-step must be at least 1");
    }
    let report = streamtrack::eval::speed::evaluate_sequence(
        &args.sequence,
        &config.tracker,
        &config.speed,
        args.frame_step,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{}: MAE {:.3} km/h, median {:.3}, p95 {:.3}, coverage {:.1}% ({} tracks, {} samples)",
            args.sequence.display(),
            report.mae_kmh,
            report.median_kmh,
            report.p95_kmh,
            100.0 * report.coverage,
            report.tracks,
            report.samples
        );
    }
    Ok(())
}

fn val(mut args: ValArgs, config: Config) -> anyhow::Result<()> {
    use streamtrack::eval::detection::{DetectionEval, Label};
    // Validation scores the whole precision-recall curve: keep low-confidence boxes.
    args.model.conf = Some(args.model.conf.unwrap_or(0.001));
    let (mut detector, names) = build_detector(&args.model, &config)?;
    let files = images::list_images(&args.data.join("images"))?;
    let mut eval = DetectionEval::new();
    for file in &files {
        let image = images::read_image(file)?;
        let (w, h) = (image.width() as f32, image.height() as f32);
        let stem = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let label_path = args.data.join("labels").join(format!("{stem}.txt"));
        let text = std::fs::read_to_string(&label_path).unwrap_or_default();
        let mut labels = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: Vec<f32> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| {
                    format!("{}:{}: not a YOLO label line", label_path.display(), n + 1)
                })?;
            if v.len() < 5 || v[0] < 0.0 || v[0] as usize >= names.len() {
                bail!(
                    "{}:{}: expected 'class cx cy w h' with a class below {}",
                    label_path.display(),
                    n + 1,
                    names.len()
                );
            }
            labels.push(Label {
                bbox: streamtrack::geometry::BBox::from_cxcywh(
                    v[1] * w,
                    v[2] * h,
                    v[3] * w,
                    v[4] * h,
                ),
                class_id: v[0] as usize,
            });
        }
        eval.add_image(&detector.detect(&image), &labels);
    }
    let m = eval.metrics();
    println!(
        "{} images: precision {:.3}, recall {:.3}, mAP50 {:.3}, mAP50-95 {:.3}",
        files.len(),
        m.precision,
        m.recall,
        m.map50,
        m.map50_95
    );
    Ok(())
}
