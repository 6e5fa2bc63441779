//! The `streamtrack` command line.

mod cli;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use streamtrack::analysis::ClassTally;
use streamtrack::annotate::{Annotation, Annotator};
use streamtrack::config::Config;
use streamtrack::detect::{Detection, Detector};
use streamtrack::job::{self, OutputArgs};
use streamtrack::metrics::StreamMetrics;
use streamtrack::model::int8::RangeEstimator;
use streamtrack::model::{ComputeDevice, DeviceChoice, YoloModel};
use streamtrack::motfile;
use streamtrack::pipeline::{LiveOptions, Mode, RunOptions};
use streamtrack::setup::{self, ModelArgs};
use streamtrack::speed::Calibration;
use streamtrack::video::live::{LiveSourceOptions, LiveSpec, open_live_source};
use streamtrack::video::rtsp::RtspOptions;
use streamtrack::video::{self, images};

/// `println!` for reports on stdout, where a closed stdout (`streamtrack … | head`) is not an
/// error: the rest of the report is dropped while the work and its files complete.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

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
    /// Analyse a live source (camera, RTSP, stdin, or a file in real time); the newest frame
    /// wins when the analysis falls behind.
    Live(LiveArgs),
    /// HTTP API: jobs on files under a media root, live streams with server-sent events,
    /// Prometheus metrics.
    Serve(ServeArgs),
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
    /// Write a copy of a model with INT8 convolution weights (Burn quantised tensors,
    /// symmetric, one scale per block of at most 64 weights), checked against the original.
    Quantize(QuantizeArgs),
    /// Write a copy of an ONNX model with a share of its channels pruned by L1 norm
    /// (structured, no retraining), checked against the original.
    Prune(PruneArgs),
}

#[derive(Args)]
struct QuantizeArgs {
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
enum RangeEstimatorArg {
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
struct PruneArgs {
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
struct CheckArgs {
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
    /// Sequence folders; with several, the mean over them and the pooled figures follow.
    #[arg(required = true)]
    sequences: Vec<PathBuf>,
    /// Print JSON instead of a table: one object per sequence, and with several a last
    /// object holding the `mean` and `pooled` figures.
    #[arg(long)]
    json: bool,
    /// Process only every N-th frame (simulates frame skipping).
    #[arg(long, default_value_t = 1)]
    frame_step: u32,
}

#[derive(Args)]
struct ProcessArgs {
    /// Input: MP4 file, raw H.264 (.h264, or - for stdin), image or folder of images.
    input: PathBuf,
    /// Frame rate assumed for raw H.264 input, which carries no timestamps.
    #[arg(long, default_value_t = video::DEFAULT_RAW_FPS)]
    fps: f64,
    #[command(flatten)]
    outputs: OutputArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct LiveArgs {
    /// Source: a camera (`0` or `/dev/video0`), `rtsp://…` (credentials in the URL are
    /// sent only if the camera asks), `-` for raw H.264 on stdin, or a video file.
    #[arg(long, short)]
    source: String,
    /// Play a file at its own frame rate, like a camera (otherwise it is read as fast as
    /// possible and the newest frame wins).
    #[arg(long)]
    realtime: bool,
    /// Play a file over and over (with --realtime: a camera that never ends).
    #[arg(long = "loop")]
    looped: bool,
    /// Analyse at most this many frames per second; the others are skipped.
    #[arg(long)]
    target_fps: Option<f64>,
    /// Drop frames that waited longer than this many milliseconds for the analysis.
    #[arg(long)]
    max_latency: Option<u64>,
    /// Stop after this many seconds (default: until the source ends or Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
    /// Frame rate assumed for raw H.264 on stdin.
    #[arg(long, default_value_t = video::DEFAULT_RAW_FPS)]
    fps: f64,
    /// Camera resolution to ask for, e.g. 1280x720.
    #[arg(long, value_parser = parse_size)]
    camera_size: Option<(u32, u32)>,
    /// RTSP: seconds without a frame before the stream counts as lost.
    #[arg(long, default_value_t = 5.0)]
    stall_timeout: f64,
    /// RTSP: give up after this many failed reconnection attempts in a row (default: never).
    #[arg(long)]
    max_reconnects: Option<u32>,
    #[command(flatten)]
    outputs: OutputArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (loopback only by default; use 0.0.0.0:PORT to expose it).
    #[arg(long, env = "STREAMTRACK_BIND", default_value = "127.0.0.1:8080")]
    bind: std::net::SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on every request (or set STREAMTRACK_TOKEN).
    #[arg(long, env = "STREAMTRACK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Jobs and file streams may only read files under this folder.
    #[arg(long, default_value = ".")]
    media_root: PathBuf,
    /// Jobs and recorded streams write their results into a folder per id here.
    #[arg(long, default_value = "streamtrack-results")]
    results_dir: PathBuf,
    /// Most live streams running at once; more are refused with 429.
    #[arg(long, default_value_t = streamtrack::server::DEFAULT_MAX_STREAMS)]
    max_streams: usize,
    /// Finished jobs kept in memory (listed, with their metrics); older ones are forgotten
    /// (their results stay on disk).
    #[arg(long, default_value_t = streamtrack::server::DEFAULT_KEEP_JOBS)]
    keep_jobs: usize,
    /// Close a connection after this many seconds without a byte either way.
    #[arg(long, default_value_t = streamtrack::server::DEFAULT_IDLE_TIMEOUT.as_secs_f64())]
    idle_timeout: f64,
    /// Start these streams with the server: a JSON array of `POST /v1/streams` bodies.
    #[arg(long, env = "STREAMTRACK_STREAMS")]
    streams: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

/// Parses `WIDTHxHEIGHT`.
fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("'{text}' is not WIDTHxHEIGHT"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|e| format!("'{text}': {e}"))
    };
    Ok((parse(w)?, parse(h)?))
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
    cli::allocator::keep_freed_blocks();
    cli::runtime_dir::ensure();
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => cli::signals::exit_status().map_or(ExitCode::SUCCESS, ExitCode::from),
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
    streamtrack::video::images::set_max_pixels(config.input.max_image_pixels);
    match cli.command {
        Command::Process(args) => process(args, config, cli.quiet),
        Command::Live(args) => live(args, config, cli.quiet),
        Command::Serve(args) => serve(args, config),
        Command::Detect(args) => detect(args, config),
        Command::Import(args) => import(args),
        Command::Track(args) => track(args, config),
        Command::Val(args) => val(args, config),
        Command::Eval(EvalCommand::Mot(args)) => eval_mot(args, config),
        Command::Eval(EvalCommand::Speed(args)) => eval_speed(args, config),
        Command::Bench(args) => bench(args, config),
        Command::Agree(args) => agree(args, config),
        Command::Quantize(args) => quantize(args, config),
        Command::Prune(args) => prune(args, config),
    }
}

fn process(mut args: ProcessArgs, config: Config, quiet: bool) -> anyhow::Result<()> {
    require_outputs(&args.outputs)?;
    name_the_stream(&mut args.outputs, &args.input.to_string_lossy());
    args.outputs.check_paths(&args.input)?;
    let source = video::open_source(&args.input, args.fps)?;
    log_stream(&args.input.display().to_string(), source.info());
    let options = RunOptions {
        stop: cli::signals::stop_on_signals()?,
        show_progress: !quiet,
        ..RunOptions::default()
    };
    run_and_report(source, &args.outputs, &args.model, &config, &options)
}

fn live(mut args: LiveArgs, config: Config, quiet: bool) -> anyhow::Result<()> {
    require_outputs(&args.outputs)?;
    name_the_stream(&mut args.outputs, &args.source);
    args.outputs.check_paths(Path::new(&args.source))?;
    if args.target_fps.is_some_and(|f| f.is_nan() || f <= 0.0) {
        bail!("--target-fps must be positive");
    }
    let stop = cli::signals::stop_on_signals()?;
    let source_options = LiveSourceOptions {
        realtime: args.realtime,
        looped: args.looped,
        raw_fps: args.fps,
        camera_size: args.camera_size,
        rtsp: RtspOptions {
            stall_timeout: Duration::from_secs_f64(args.stall_timeout.max(0.1)),
            max_reconnects: args.max_reconnects,
            ..RtspOptions::default()
        },
    };
    let spec = LiveSpec::parse(&args.source);
    let source = open_live_source(&spec, &source_options, stop.clone())?;
    log_stream(&args.source, source.info());
    let options = RunOptions {
        mode: Mode::Live(LiveOptions {
            target_fps: args.target_fps,
            max_latency: args.max_latency.map(Duration::from_millis),
            duration: args.duration.map(Duration::from_secs_f64),
        }),
        stop,
        show_progress: !quiet,
        metrics: StreamMetrics::default(),
    };
    run_and_report(source, &args.outputs, &args.model, &config, &options)
}

fn serve(args: ServeArgs, config: Config) -> anyhow::Result<()> {
    // Fail now, not at the first request, if the model cannot be found.
    setup::resolve_model_path(args.model.model.as_deref(), &config)?;
    streamtrack::server::serve(streamtrack::server::ServerConfig {
        bind: args.bind,
        token: args.token.filter(|t| !t.is_empty()),
        media_root: args.media_root,
        results_dir: args.results_dir,
        model: args.model,
        config,
        max_streams: args.max_streams,
        keep_jobs: args.keep_jobs,
        idle_timeout: Duration::try_from_secs_f64(args.idle_timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| {
                anyhow::anyhow!("--idle-timeout must be a positive number of seconds")
            })?,
        streams: args
            .streams
            .as_deref()
            .map(read_stream_list)
            .transpose()?
            .unwrap_or_default(),
    })
}

/// The streams of `serve --streams FILE`: a JSON array of stream requests.
fn read_stream_list(path: &Path) -> anyhow::Result<Vec<streamtrack::server::StreamRequest>> {
    /// Far above any real list; a larger file is not one.
    const MAX_BYTES: u64 = 1 << 20;
    use std::io::Read as _;
    // One bounded read: a byte past the limit is enough to refuse the file.
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_BYTES + 1).read_to_end(&mut text))
        .with_context(|| format!("{}: cannot read the stream list", path.display()))?;
    if text.len() as u64 > MAX_BYTES {
        bail!(
            "{}: too large for a stream list (at most {MAX_BYTES} bytes)",
            path.display()
        );
    }
    serde_json::from_slice(&text).with_context(|| {
        format!(
            "{}: not a JSON array of stream requests (each like a POST /v1/streams body)",
            path.display()
        )
    })
}

/// Without `--stream-id`, events name the stream after the source: a file's stem, a URL's
/// host and path (`cam1_stream`), `camera0`, `stdin`.
fn name_the_stream(outputs: &mut OutputArgs, source: &str) {
    if outputs.stream_id.is_some() {
        return;
    }
    let name = match LiveSpec::parse(source) {
        LiveSpec::Stdin => "stdin".to_string(),
        LiveSpec::Rtsp(url) => url::Url::parse(&url)
            .map(|u| format!("{}{}", u.host_str().unwrap_or(""), u.path()))
            .unwrap_or(url),
        _ => Path::new(source)
            .file_stem()
            .map_or_else(|| source.to_string(), |s| s.to_string_lossy().into_owned()),
    };
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    outputs.stream_id = Some(name.trim_matches('_').to_string());
}

fn require_outputs(outputs: &OutputArgs) -> anyhow::Result<()> {
    if !outputs.writes_anything() {
        bail!(
            "nothing to write: give --output FILE.mp4, --save-frames DIR, --events, --csv or --mot"
        );
    }
    Ok(())
}

fn log_stream(name: &str, info: &video::StreamInfo) {
    tracing::info!(
        "{name}: {}x{}, {:.2} fps{}",
        info.width,
        info.height,
        info.fps,
        info.frame_count
            .map(|n| format!(", {n} frames"))
            .unwrap_or_default()
    );
}

/// Runs one stream from the command line and prints its summary.
fn run_and_report(
    source: Box<dyn video::FrameSource>,
    outputs: &OutputArgs,
    model: &ModelArgs,
    config: &Config,
    options: &RunOptions,
) -> anyhow::Result<()> {
    let report = job::run_stream(source, outputs, model, config, options, Default::default())?;
    print_report(&report, outputs);
    Ok(())
}

/// The end-of-run summary on stderr: counts, latency, outputs, tracks and zone totals.
fn print_report(report: &job::StreamReport, outputs: &OutputArgs) {
    eprintln!("{}", report.summary.describe());
    match &outputs.output {
        // No frame reached the video: the sink created no file.
        Some(out) if report.summary.frames_written == 0 => {
            eprintln!("no frames: {} was not written", out.display());
        }
        Some(out) if outputs.segment.is_some() => eprintln!(
            "wrote segments of {} ({} frames)",
            out.display(),
            report.summary.frames_written
        ),
        Some(out) => eprintln!(
            "wrote {} ({} frames)",
            out.display(),
            report.summary.frames_written
        ),
        None => {}
    }
    print_track_summary(&report.classes, &report.names);
    for (line, classes) in &report.zones.lines {
        for (class, count) in classes {
            eprintln!(
                "line {line}: {class} in {} out {}",
                count.inbound, count.outbound
            );
        }
    }
    for (area, classes) in &report.zones.areas {
        for (class, count) in classes {
            eprintln!("area {area}: {class} {count} entered");
        }
    }
}

fn bench(args: BenchArgs, config: Config) -> anyhow::Result<()> {
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
        vec![setup::resolve_model_path(None, &config)?]
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
            let (detector, names) = setup::build_detector_on(&model_args, &config, device.clone())?;
            reports.push(streamtrack::bench::run(detector, names, &settings)?);
        }
    }
    if args.json {
        report!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        let _ = streamtrack::bench::write_tables(&mut std::io::stdout().lock(), &reports);
    }
    Ok(())
}

fn agree(args: AgreeArgs, config: Config) -> anyhow::Result<()> {
    let device =
        ComputeDevice::resolve(args.device.unwrap_or(config.device)).map_err(anyhow::Error::msg)?;
    let load = |path: &Path| -> anyhow::Result<Detector> {
        let args = ModelArgs::for_model(path, None);
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

fn quantize(args: QuantizeArgs, config: Config) -> anyhow::Result<()> {
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
fn print_sensitivity(calibrated: &streamtrack::compress::Calibrated, keep_float: usize) {
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

fn prune(args: PruneArgs, config: Config) -> anyhow::Result<()> {
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
fn save_compressed(
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
fn report_written(source: &Path, output: &Path, written: &streamtrack::compress::Written) {
    let source_bytes = std::fs::metadata(source).map(|m| m.len()).unwrap_or(0);
    let agreement = written.agreement.map_or(String::from("unchecked"), |a| {
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

/// Per-class track counts and speeds at the end of a run.
fn print_track_summary(classes: &BTreeMap<usize, ClassTally>, names: &[String]) {
    for (&class, tally) in classes {
        let speed = match (tally.mean_speed(), tally.max_speed) {
            (Some(mean), Some(max)) => format!(", mean speed {mean:.1}, max {max:.1}"),
            _ => String::new(),
        };
        eprintln!("{}: {} tracks{speed}", names[class], tally.tracks);
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
    let (mut detector, names) = setup::build_detector(&args.model, &config)?;
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
                report!("{label}: {}", summary_line(&detections, &names));
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
    report!(
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
    report!(
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
    let mut summaries = Vec::new();
    report!(
        "{:<16} {:>7} {:>7} {:>7} {:>6} {:>7} {:>7}",
        "sequence",
        "HOTA",
        "MOTA",
        "IDF1",
        "IDSW",
        "FP",
        "FN"
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
        print_mot_row(seq, &counts.summary());
        summaries.push(counts.summary());
        match combined.as_mut() {
            Some(c) => c.add(&counts),
            None => combined = Some(counts),
        }
    }
    if summaries.len() > 1 {
        print_mot_row(
            "MEAN",
            &streamtrack::eval::mot::MotSummary::mean(&summaries),
        );
    }
    if let Some(c) = combined {
        print_mot_row("COMBINED", &c.summary());
    }
    Ok(())
}

fn print_mot_row(name: &str, s: &streamtrack::eval::mot::MotSummary) {
    report!(
        "{:<16} {:>7.3} {:>7.3} {:>7.3} {:>6} {:>7} {:>7}",
        name,
        s.hota,
        s.mota,
        s.idf1,
        s.id_switches,
        s.false_positives,
        s.false_negatives
    );
}

fn eval_speed(args: EvalSpeedArgs, config: Config) -> anyhow::Result<()> {
    use streamtrack::eval::speed::{SpeedErrors, SpeedReport, compare_sequence};
    if args.frame_step == 0 {
        bail!("--frame-step must be at least 1");
    }
    let mut compared = Vec::new();
    for sequence in &args.sequences {
        let errors = compare_sequence(sequence, &config.tracker, &config.speed, args.frame_step)?;
        let report = errors.report();
        if args.json {
            report!("{}", serde_json::to_string(&report)?);
        } else {
            print_speed_row(&sequence.display().to_string(), &report);
        }
        compared.push(errors);
    }
    if compared.len() > 1 {
        let reports: Vec<SpeedReport> = compared.iter().map(SpeedErrors::report).collect();
        let (mean, pooled) = (
            SpeedReport::mean(&reports),
            SpeedErrors::pool(&compared).report(),
        );
        if args.json {
            let summary = serde_json::json!({ "mean": mean, "pooled": pooled });
            report!("{summary}");
        } else {
            print_speed_row(&format!("mean of {}", reports.len()), &mean);
            print_speed_row("pooled", &pooled);
        }
    }
    Ok(())
}

fn print_speed_row(name: &str, report: &streamtrack::eval::speed::SpeedReport) {
    report!(
        "{name}: MAE {:.3} km/h, median {:.3}, p95 {:.3}, coverage {:.1}% ({} tracks, {} samples)",
        report.mae_kmh,
        report.median_kmh,
        report.p95_kmh,
        100.0 * report.coverage,
        report.tracks,
        report.samples
    );
}

fn val(mut args: ValArgs, config: Config) -> anyhow::Result<()> {
    use streamtrack::eval::detection::{DetectionEval, Label};
    // Validation scores the whole precision-recall curve: keep low-confidence boxes.
    args.model.conf = Some(args.model.conf.unwrap_or(0.001));
    let (mut detector, names) = setup::build_detector(&args.model, &config)?;
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
    report!(
        "{} images: precision {:.3}, recall {:.3}, mAP50 {:.3}, mAP50-95 {:.3}",
        files.len(),
        m.precision,
        m.recall,
        m.map50,
        m.map50_95
    );
    Ok(())
}
