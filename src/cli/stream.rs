//! `process` and `live`: one stream from its source to its outputs, and the report printed
//! at its end.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use streamtrack::analysis::ClassTally;
use streamtrack::config::{Config, StreamSection};
use streamtrack::engine::{BatchSettings, SharedDetector};
use streamtrack::job::{self, OutputSpec};
use streamtrack::metrics::StreamMetrics;
use streamtrack::pipeline::{LiveOptions, Mode, RunOptions};
use streamtrack::setup::{self, DetectorSpec};
use streamtrack::video;
use streamtrack::video::live::{LiveSourceOptions, LiveSpec, open_live_source};
use streamtrack::video::rtsp::RtspOptions;

use super::flags::{ModelFlags, OutputFlags};

#[derive(Args)]
pub struct ProcessArgs {
    /// Input: MP4 file, raw H.264 (.h264, or - for stdin), image or folder of images.
    input: PathBuf,
    /// Frame rate assumed for raw H.264 input, which carries no timestamps.
    #[arg(long, default_value_t = video::DEFAULT_RAW_FPS)]
    fps: f64,
    #[command(flatten)]
    outputs: OutputFlags,
    #[command(flatten)]
    model: ModelFlags,
}

#[derive(Args)]
pub struct LiveArgs {
    /// Source: a camera (`0` or `/dev/video0`), `rtsp://…` (credentials in the URL are
    /// sent only if the camera asks), `-` for raw H.264 on stdin, or a video file. Repeat
    /// the flag to analyse several sources in one process with one loaded model; every
    /// output path then contains `{stream}`, which becomes each stream's name. Without it,
    /// the configuration file's `[[streams]]` are run.
    #[arg(long, short)]
    source: Vec<String>,
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
    /// Several sources: how many milliseconds a frame may wait for frames of other streams
    /// to join its network call (at most `--batch` frames, default one per source). 0 batches
    /// only the frames already waiting.
    #[arg(long, value_name = "MS", default_value_t = 0.0)]
    batch_wait: f64,
    #[command(flatten)]
    outputs: OutputFlags,
    #[command(flatten)]
    model: ModelFlags,
}

/// Parses `WIDTHxHEIGHT`.
pub fn parse_size(text: &str) -> Result<(u32, u32), String> {
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

pub fn process(args: ProcessArgs, config: Config, quiet: bool) -> anyhow::Result<()> {
    let mut outputs = OutputSpec::from(args.outputs);
    require_outputs(&outputs)?;
    name_the_stream(&mut outputs, &args.input.to_string_lossy());
    outputs.check_paths(&args.input)?;
    let source = video::open_source(&args.input, args.fps)?;
    log_stream(&args.input.display().to_string(), source.info());
    let options = RunOptions {
        stop: crate::cli::signals::stop_on_signals(1)?.remove(0),
        show_progress: !quiet,
        ..RunOptions::default()
    };
    let model = args.model.into_spec(&config);
    run_and_report(source, &outputs, &model, &config, &options, None)
}

pub fn live(args: LiveArgs, config: Config, quiet: bool) -> anyhow::Result<()> {
    let outputs = OutputSpec::from(args.outputs);
    if args.target_fps.is_some_and(|f| f.is_nan() || f <= 0.0) {
        bail!("--target-fps must be positive");
    }
    if !(args.batch_wait.is_finite() && args.batch_wait >= 0.0) {
        bail!("--batch-wait must be zero or more milliseconds");
    }
    let streams = plan_streams(&args.source, &outputs, &config)?;
    // One flag per stream: a stream that ends sets its own (a run does, however it ends),
    // a signal sets them all.
    let stops = crate::cli::signals::stop_on_signals(streams.len())?;
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
    let mode = Mode::Live(LiveOptions {
        target_fps: args.target_fps,
        max_latency: args.max_latency.map(Duration::from_millis),
        duration: args.duration.map(Duration::from_secs_f64),
    });
    let mut model = args.model.into_spec(&config);
    let several = streams.len() > 1;
    if several {
        // One network for all: each stream's frames join the batches of the others.
        let (detector, names) = setup::build_detector(&model, &config)?;
        let settings = BatchSettings {
            max_batch: model.batch.unwrap_or(streams.len()),
            max_wait: Duration::from_secs_f64(args.batch_wait / 1000.0),
        };
        model.shared = Some(SharedDetector::start(detector, names, settings)?);
    }
    let run = |plan: &StreamPlan, stop: Arc<AtomicBool>| -> anyhow::Result<()> {
        let StreamPlan {
            source,
            outputs,
            config,
        } = plan;
        let spec = LiveSpec::parse(source);
        let opened = open_live_source(&spec, &source_options, stop.clone())?;
        log_stream(source, opened.info());
        let options = RunOptions {
            mode: mode.clone(),
            stop,
            // One progress bar per stream would overwrite each other's line.
            show_progress: !quiet && !several,
            metrics: StreamMetrics::default(),
        };
        let heading = several.then(|| outputs.stream_id.as_deref().unwrap_or(source));
        run_and_report(opened, outputs, &model, config, &options, heading)
    };
    if !several {
        return run(&streams[0], stops[0].clone());
    }
    let failures: Vec<String> = std::thread::scope(|scope| {
        let running: Vec<_> = streams
            .iter()
            .zip(stops)
            .map(|(plan, stop)| {
                let run = &run;
                scope.spawn(move || {
                    run(plan, stop).map_err(|e| {
                        let failure = format!("{}: {e:#}", plan.source);
                        // Said now: the other streams may run for a long time yet.
                        tracing::error!("{failure}");
                        failure
                    })
                })
            })
            .collect();
        running
            .into_iter()
            .filter_map(|stream| match stream.join() {
                Ok(result) => result.err(),
                Err(_) => Some("a stream's thread panicked".to_string()),
            })
            .collect()
    });
    if let Some(shared) = &model.shared {
        let counts = shared.counts();
        tracing::info!(
            "{} frames of {} streams in {} network calls",
            counts.frames.load(Ordering::Relaxed),
            streams.len(),
            counts.calls.load(Ordering::Relaxed)
        );
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} streams failed: {}",
            failures.len(),
            streams.len(),
            failures.join("; ")
        );
    }
    Ok(())
}

/// One stream of a `live` run: its source, what it writes, and the configuration it runs
/// with (its own zones and tracker settings where `[[streams]]` gives them).
struct StreamPlan {
    source: String,
    outputs: OutputSpec,
    config: Config,
}

/// The streams of a `live` run: the `--source` flags, or else the configuration's
/// `[[streams]]`. Each is named after its source unless its section names it (`-2`, `-3`...
/// where names repeat), takes the output flags with `{stream}` replaced by its name, and a
/// section's own outputs and calibration in their place. With several streams every output
/// flag must contain `{stream}`, so no two streams write one file.
fn plan_streams(
    sources: &[String],
    outputs: &OutputSpec,
    config: &Config,
) -> anyhow::Result<Vec<StreamPlan>> {
    let sections: Vec<StreamSection> = match (sources.is_empty(), config.streams.is_empty()) {
        (true, true) => bail!("no source: give --source, or [[streams]] in the configuration file"),
        (false, false) => {
            bail!(
                "--source and the configuration's [[streams]] both name sources: give one or the other"
            )
        }
        (true, false) => config.streams.clone(),
        (false, true) => sources
            .iter()
            .map(|source| StreamSection {
                source: source.clone(),
                ..StreamSection::default()
            })
            .collect(),
    };
    if sections.len() > 1 {
        if outputs.stream_id.is_some() {
            bail!(
                "--stream-id names one stream: with several sources each is named after its source"
            );
        }
        let paths = [
            ("-o/--output", &outputs.output),
            ("--save-frames", &outputs.save_frames),
            ("--events", &outputs.events),
            ("--csv", &outputs.csv),
            ("--mot", &outputs.mot),
        ];
        for (flag, path) in paths {
            if let Some(path) = path
                && !path.to_string_lossy().contains(STREAM_FIELD)
            {
                bail!(
                    "{}: with several sources, {flag} must contain {STREAM_FIELD} (the stream's name)",
                    path.display()
                );
            }
        }
    }
    let mut plans: Vec<StreamPlan> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for section in &sections {
        let source = &section.source;
        let mut stream = outputs.clone();
        let name = match &section.name {
            Some(name) => name.clone(),
            None => {
                name_the_stream(&mut stream, source);
                let base = stream.stream_id.clone().unwrap_or_default();
                let count = seen.entry(base.clone()).or_default();
                *count += 1;
                match *count {
                    1 => base,
                    n => format!("{base}-{n}"),
                }
            }
        };
        if plans
            .iter()
            .any(|other| other.outputs.stream_id.as_deref() == Some(&name))
        {
            bail!("{source}: two sources would both be named {name}");
        }
        let with_name = |own: &Option<PathBuf>, flag: &Option<PathBuf>| {
            own.as_ref()
                .or(flag.as_ref())
                .map(|p| PathBuf::from(p.to_string_lossy().replace(STREAM_FIELD, &name)))
        };
        stream.output = with_name(&section.output, &outputs.output);
        stream.save_frames = with_name(&None, &outputs.save_frames);
        stream.events = with_name(&section.events, &outputs.events);
        stream.csv = with_name(&section.csv, &outputs.csv);
        stream.mot = with_name(&section.mot, &outputs.mot);
        stream.calibration = section.calibration.clone().or(stream.calibration);
        stream.stream_id = Some(name);
        require_outputs(&stream).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        stream.check_paths(Path::new(source))?;
        plans.push(StreamPlan {
            source: source.clone(),
            outputs: stream,
            config: section.apply(config),
        });
    }
    Ok(plans)
}

/// The field of an output path that becomes the stream's name.
const STREAM_FIELD: &str = "{stream}";

/// Without `--stream-id`, events name the stream after the source: a file's stem, a URL's
/// host and path (`cam1_stream`), `camera0`, `stdin`.
pub fn name_the_stream(outputs: &mut OutputSpec, source: &str) {
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

pub fn require_outputs(outputs: &OutputSpec) -> anyhow::Result<()> {
    if !outputs.writes_anything() {
        bail!(
            "nothing to write: give --output FILE.mp4, --save-frames DIR, --events, --csv or --mot"
        );
    }
    Ok(())
}

pub fn log_stream(name: &str, info: &video::StreamInfo) {
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

/// Runs one stream from the command line and prints its summary, under `heading` if given.
pub fn run_and_report(
    source: Box<dyn video::FrameSource>,
    outputs: &OutputSpec,
    model: &DetectorSpec,
    config: &Config,
    options: &RunOptions,
    heading: Option<&str>,
) -> anyhow::Result<()> {
    let report = job::run_stream(source, outputs, model, config, options, Default::default())?;
    if let Some(heading) = heading {
        eprintln!("stream {heading}:");
    }
    print_report(&report, outputs);
    Ok(())
}

/// The end-of-run summary on stderr: counts, latency, outputs, tracks and zone totals.
pub fn print_report(report: &job::StreamReport, outputs: &OutputSpec) {
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

/// Per-class track counts and speeds at the end of a run.
pub fn print_track_summary(classes: &BTreeMap<usize, ClassTally>, names: &[String]) {
    for (&class, tally) in classes {
        let speed = match (tally.mean_speed(), tally.max_speed) {
            (Some(mean), Some(max)) => format!(", mean speed {mean:.1}, max {max:.1}"),
            _ => String::new(),
        };
        eprintln!("{}: {} tracks{speed}", names[class], tally.tracks);
    }
}
