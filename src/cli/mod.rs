//! The command line (the binary's modules; the library never sees them): the arguments of
//! every command, one file per command, the report printing, and the binary's own
//! machinery (allocator settings, runtime folder, signals).

/// `println!` for reports on stdout, where a closed stdout (`streamtrack … | head`) is not an
/// error: the rest of the report is dropped while the work and its files complete.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod allocator;
mod bench;
mod compress;
mod detect;
mod eval;
mod flags;
mod import;
mod mot;
pub mod runtime_dir;
mod serve;
pub mod signals;
mod stream;
mod val;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use streamtrack::config::Config;

use bench::{AgreeArgs, BenchArgs};
use compress::{PruneArgs, QuantizeArgs};
use detect::DetectArgs;
use eval::EvalCommand;
use import::ImportArgs;
use mot::TrackArgs;
use serve::ServeArgs;
use stream::{LiveArgs, ProcessArgs};
use val::ValArgs;

#[derive(Parser)]
#[command(
    name = "streamtrack",
    version,
    about = "Object detection, tracking and speed estimation on video, in pure Rust"
)]
pub struct Cli {
    /// Configuration file (TOML); command-line flags override its values.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Hide the progress bar and informational logs.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Log level of streamtrack's own messages: error, warn, info, debug or trace (libraries
    /// log warnings only). A full filter such as `info,cubecl=debug` is used as given.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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

/// Loads the configuration and runs the command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    streamtrack::video::images::set_max_pixels(config.input.max_image_pixels);
    match cli.command {
        Command::Process(args) => stream::process(args, config, cli.quiet),
        Command::Live(args) => stream::live(args, config, cli.quiet),
        Command::Serve(args) => serve::serve(args, config),
        Command::Detect(args) => detect::detect(args, config),
        Command::Import(args) => import::import(args),
        Command::Track(args) => mot::track(args, config),
        Command::Val(args) => val::val(args, config),
        Command::Eval(EvalCommand::Mot(args)) => eval::eval_mot(args, config),
        Command::Eval(EvalCommand::Speed(args)) => eval::eval_speed(args, config),
        Command::Bench(args) => bench::bench(args, config),
        Command::Agree(args) => bench::agree(args, config),
        Command::Quantize(args) => compress::quantize(args, config),
        Command::Prune(args) => compress::prune(args, config),
    }
}
