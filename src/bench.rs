//! `streamtrack bench`: where the time of the whole pipeline goes, per model and device.
//!
//! Every stage (decode, preprocess, network, NMS, tracker, speed, annotate, encode) is timed
//! frame by frame after a warm-up; the network stage ends with the output read back to the
//! host, so GPU work is finished before its timer stops. Tracking, speed and annotation are
//! the [`Analysis`] that `process` and `live` run, timed from inside (annotate covers events,
//! zone counting, drawing and the result writers). The same frames are then run
//! through the real three-thread pipeline for the end-to-end rate. Several models (or
//! devices) can take the frames in turn ([`run_interleaved`]), so that their stage times come
//! from the same stretch of time.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::analysis::Analysis;
use crate::detect::Detector;
use crate::model::profile;
use crate::output::ResultWriters;
use crate::pipeline::detect_stage::FrameDetector;
use crate::pipeline::{self, FrameStage, Sinks};
use crate::speed::{Calibration, SpeedConfig, SpeedEstimator};
use crate::track::{Tracker, TrackerConfig};
use crate::video::encoder::EncodeSettings;
use crate::video::sink::Mp4Sink;
use crate::video::{self, FirstFrames, FrameSource, StreamInfo};

/// The stages timed, in pipeline order.
pub const STAGES: [&str; 9] = [
    "decode",
    "preprocess",
    "network",
    "nms",
    "camera motion",
    "track",
    "speed",
    "annotate",
    "encode",
];

/// What to run the benchmark on.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    pub video: PathBuf,
    /// Frames timed after the warm-up.
    pub frames: usize,
    /// Frames run before timing starts (autotune, caches, allocator).
    pub warmup: usize,
    pub tracker: TrackerConfig,
    pub speed: SpeedConfig,
    pub calibration: Option<Calibration>,
    /// Also record a per-operation profile of the network (CPU devices only).
    pub op_profile: bool,
    /// Also record the network's time per layer, in the order the layers run (CPU devices
    /// only).
    pub layer_profile: bool,
}

/// Median and 99th percentile of one stage, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct StageStats {
    pub stage: &'static str,
    pub median_ms: f64,
    pub p99_ms: f64,
}

/// Median time per forward pass of one operation type.
#[derive(Debug, Clone, Serialize)]
pub struct OpStats {
    pub op: &'static str,
    pub calls: usize,
    pub ms: f64,
}

/// Median time per forward pass of one timed call, in the order the pass made them.
#[derive(Debug, Clone, Serialize)]
pub struct LayerStats {
    /// 1 for the pass's first timed call.
    pub index: usize,
    pub op: &'static str,
    /// A convolution's channels, kernel, stride, output size and arithmetic (`f32` or
    /// `int8`), e.g. `64->64 3x3/2 to 40x40 int8`; none for other operations and for
    /// convolutions on Burn's stock kernels.
    pub layer: Option<String>,
    pub ms: f64,
}

/// The result for one model on one device.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    pub input: [usize; 2],
    pub video: String,
    pub video_fps: f64,
    pub frames: usize,
    pub stages: Vec<StageStats>,
    /// Frames per second with the stages one after another (sum of stage medians).
    pub sequential_fps: f64,
    /// Frames per second through the real pipeline (decode, analysis and encode overlap).
    pub pipeline_fps: f64,
    /// `pipeline_fps / video_fps`: at least 1 keeps up with the video in real time.
    pub realtime_factor: f64,
    /// Peak resident memory of the process so far, in MiB (Linux).
    pub peak_memory_mib: Option<f64>,
    /// Per-operation network profile (CPU devices, when asked for).
    pub ops: Vec<OpStats>,
    /// Per-layer network profile (CPU devices, when asked for).
    pub layers: Vec<LayerStats>,
}

impl BenchReport {
    /// The stats of `stage`.
    pub fn stage(&self, stage: &str) -> Option<&StageStats> {
        self.stages.iter().find(|s| s.stage == stage)
    }
}

/// Times every stage of `detector` on the settings' video, then the real pipeline.
pub fn run(
    detector: Detector,
    names: Vec<String>,
    settings: &BenchSettings,
) -> anyhow::Result<BenchReport> {
    let mut reports = run_interleaved(vec![(detector, names)], settings)?;
    Ok(reports.remove(0))
}

/// [`run`] for several detectors (the report's columns), their stage-by-stage runs taken
/// frame by frame in turn: each frame through every column before the next frame, so that
/// on a machine whose speed drifts from minute to minute every column's medians come from
/// the same stretch of time. The profiles and the pipeline runs follow, column by column.
pub fn run_interleaved(
    columns: Vec<(Detector, Vec<String>)>,
    settings: &BenchSettings,
) -> anyhow::Result<Vec<BenchReport>> {
    let mut runs = columns
        .into_iter()
        .enumerate()
        .map(|(column, (detector, names))| ColumnRun::start(detector, names, settings, column))
        .collect::<anyhow::Result<Vec<_>>>()?;
    'frames: for i in 0..settings.warmup + settings.frames {
        for run in &mut runs {
            if !run.frame(i >= settings.warmup)? {
                break 'frames;
            }
        }
    }
    runs.into_iter().map(|run| run.finish(settings)).collect()
}

/// One column's stage-by-stage run: its detector, its own decoder of the video, the analysis
/// and encoder after the network, and the stage times of the frames timed so far.
struct ColumnRun {
    detector: Detector,
    names: Vec<String>,
    source: Box<dyn FrameSource>,
    info: StreamInfo,
    stages: StageRun,
    /// Per stage, the time of each timed frame.
    samples: Vec<Vec<Duration>>,
    /// Where `stages` encodes to; removed when the run is dropped.
    _scratch: ScratchFile,
}

impl ColumnRun {
    /// Opens the video and the encoder for column `column` (numbered so that columns run
    /// side by side do not share a scratch file).
    fn start(
        detector: Detector,
        names: Vec<String>,
        settings: &BenchSettings,
        column: usize,
    ) -> anyhow::Result<Self> {
        let source = video::open_source(&settings.video, video::DEFAULT_RAW_FPS)?;
        let info = source.info().clone();
        let scratch = ScratchFile::new(&format!("stages-{column}"));
        let stages = StageRun {
            analysis: analysis(names.clone(), settings, &info)?.with_stage_times(),
            sink: Mp4Sink::create(&scratch.path, info.fps, EncodeSettings::default())?,
        };
        Ok(Self {
            detector,
            names,
            source,
            info,
            stages,
            samples: vec![Vec::new(); STAGES.len()],
            _scratch: scratch,
        })
    }

    /// Runs the next frame through every stage, keeping its times if `timed`; false at the
    /// end of the video.
    fn frame(&mut self, timed: bool) -> anyhow::Result<bool> {
        let Some(times) = self
            .stages
            .frame(self.source.as_mut(), &mut self.detector)?
        else {
            return Ok(false);
        };
        if timed {
            self.samples
                .iter_mut()
                .zip(times)
                .for_each(|(s, t)| s.push(t));
        }
        Ok(true)
    }

    /// The column's report: the stage medians, then its profile (when asked for) and its
    /// pipeline run.
    fn finish(mut self, settings: &BenchSettings) -> anyhow::Result<BenchReport> {
        self.stages.sink.finish()?;
        let timed = self.samples[0].len();
        anyhow::ensure!(
            timed > 0,
            "{}: fewer frames than the {} warm-up frames",
            settings.video.display(),
            settings.warmup
        );
        let detector = self.detector;
        let profiled =
            (settings.op_profile || settings.layer_profile) && !detector.model.device.is_gpu;
        let (mut ops, mut layers) = if profiled {
            op_profile(&detector, settings)?
        } else {
            Default::default()
        };
        if !settings.op_profile {
            ops.clear();
        }
        if !settings.layer_profile {
            layers.clear();
        }
        let stats: Vec<StageStats> = STAGES
            .iter()
            .zip(self.samples)
            .map(|(stage, times)| stage_stats(stage, times))
            .collect();
        let sequential_ms: f64 = stats.iter().map(|s| s.median_ms).sum();
        let model = detector.model.card.source.clone();
        let device = detector.model.device.description.clone();
        let (w, h) = detector.model.input_size();
        let pipeline_fps = pipeline_fps(detector, self.names, settings, timed)?;
        Ok(BenchReport {
            model,
            device,
            input: [w as usize, h as usize],
            video: settings.video.display().to_string(),
            video_fps: self.info.fps,
            frames: timed,
            stages: stats,
            sequential_fps: 1000.0 / sequential_ms,
            pipeline_fps,
            realtime_factor: pipeline_fps / self.info.fps,
            peak_memory_mib: peak_memory_mib(),
            ops,
            layers,
        })
    }
}

/// The per-frame state of the stage-by-stage run: the analysis `process` and `live` run.
struct StageRun {
    analysis: Analysis,
    sink: Mp4Sink,
}

impl StageRun {
    /// Runs one frame through every stage; `None` at the end of the video.
    fn frame(
        &mut self,
        source: &mut dyn FrameSource,
        detector: &mut Detector,
    ) -> anyhow::Result<Option<[Duration; 9]>> {
        let mut t = [Duration::ZERO; 9];
        let Some(frame) = lap(&mut t[0], || source.next_frame())? else {
            return Ok(None);
        };
        let (input, letterboxes) = lap(&mut t[1], || detector.preprocess(&[&frame.image]));
        let output = lap(&mut t[2], || detector.infer(input));
        let detections = lap(&mut t[3], || detector.postprocess(&output, &letterboxes))
            .pop()
            .expect("one image");
        let mut canvas = frame.image.clone();
        self.analysis
            .process(&frame, Some(&detections), &mut canvas)?;
        let times = self
            .analysis
            .last_stage_times()
            .expect("stage times were asked for");
        (t[4], t[5], t[6], t[7]) = (times.camera, times.track, times.speed, times.annotate);
        lap(&mut t[8], || self.sink.write(&frame, &canvas))?;
        Ok(Some(t))
    }
}

/// The analysis after the network for a stream described by `info`, as `process` builds
/// it from the benchmark's tracker, speed and calibration settings.
fn analysis(
    names: Vec<String>,
    settings: &BenchSettings,
    info: &StreamInfo,
) -> anyhow::Result<Analysis> {
    Ok(Analysis::new(
        names,
        Tracker::new(settings.tracker.clone(), info.fps),
        SpeedEstimator::new(
            settings.calibration.clone(),
            settings.speed.clone(),
            (info.width, info.height),
        ),
        settings.tracker.track_buffer,
        ResultWriters::create(None, None, None)?,
    ))
}

/// Runs `f`, adding its wall time to `slot`.
fn lap<T>(slot: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    *slot += start.elapsed();
    out
}

fn stage_stats(stage: &'static str, mut times: Vec<Duration>) -> StageStats {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(times[((times.len() - 1) as f64 * q).round() as usize]);
    StageStats {
        stage,
        median_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

/// Forward passes the operation profile records; each figure is the median over them, so
/// that a pass slowed by the machine does not move it.
const PROFILED_PASSES: usize = 7;

/// Per-forward time of each operation type, and of each timed call in the order the pass
/// makes them: medians over [`PROFILED_PASSES`] forward passes on the video's first frame.
fn op_profile(
    detector: &Detector,
    settings: &BenchSettings,
) -> anyhow::Result<(Vec<OpStats>, Vec<LayerStats>)> {
    let frame = video::open_source(&settings.video, video::DEFAULT_RAW_FPS)?
        .next_frame()?
        .ok_or_else(|| anyhow::anyhow!("{}: no frames", settings.video.display()))?;
    let (input, _) = detector.preprocess(&[&frame.image]);
    let ((), recorded) = profile::record(|| {
        for _ in 0..PROFILED_PASSES {
            detector.model.infer(input.clone());
        }
    });
    let passes = alike_passes(&recorded.calls, PROFILED_PASSES);
    Ok((kind_stats(&passes), layer_stats(&passes)))
}

/// `calls`, recorded over `passes` passes one after another, split into its passes where
/// they made the same calls in the same order; otherwise the first pass's calls alone.
fn alike_passes(calls: &[profile::OpCall], passes: usize) -> Vec<&[profile::OpCall]> {
    let per_pass = calls.len() / passes.max(1);
    if per_pass == 0 {
        return Vec::new();
    }
    let runs: Vec<&[profile::OpCall]> = calls.chunks_exact(per_pass).collect();
    let alike = calls.len() == per_pass * passes
        && runs.iter().all(|run| {
            run.iter()
                .zip(runs[0])
                .all(|(a, b)| a.kind == b.kind && a.layer == b.layer)
        });
    if alike { runs } else { runs[..1].to_vec() }
}

/// The median of `times`, in milliseconds (`times` is not empty).
fn median_ms(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1000.0
}

/// Each operation type's calls per pass and its median time per pass over `passes`, the
/// costliest first.
fn kind_stats(passes: &[&[profile::OpCall]]) -> Vec<OpStats> {
    let per_pass: Vec<_> = passes.iter().map(|pass| profile::per_kind(pass)).collect();
    let Some(first) = per_pass.first() else {
        return Vec::new();
    };
    let mut ops: Vec<OpStats> = first
        .iter()
        .map(|(&kind, &(calls, _))| OpStats {
            op: kind.label(),
            calls,
            ms: median_ms(per_pass.iter().map(|totals| totals[&kind].1).collect()),
        })
        .collect();
    ops.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    ops
}

/// Each call of a pass with its median time over `passes`.
fn layer_stats(passes: &[&[profile::OpCall]]) -> Vec<LayerStats> {
    let Some(first) = passes.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, call)| LayerStats {
            index: i + 1,
            op: call.kind.label(),
            layer: call.layer.clone(),
            ms: median_ms(passes.iter().map(|pass| pass[i].time).collect()),
        })
        .collect()
}

/// Frames per second of the real pipeline over the first `frames` frames of the video.
fn pipeline_fps(
    detector: Detector,
    names: Vec<String>,
    settings: &BenchSettings,
    frames: usize,
) -> anyhow::Result<f64> {
    let source = FirstFrames::new(
        video::open_source(&settings.video, video::DEFAULT_RAW_FPS)?,
        frames as u64,
    );
    let info = source.info().clone();
    let scratch = ScratchFile::new("pipeline");
    let sinks = Sinks {
        video: Some(Mp4Sink::create(
            &scratch.path,
            info.fps,
            EncodeSettings::default(),
        )?),
        frames: None,
        view: None,
    };
    let mut detector = FrameDetector::new(detector);
    let mut analysis = analysis(names, settings, &info)?;
    let summary = pipeline::run(
        Box::new(source),
        &mut detector,
        &mut analysis,
        sinks,
        &pipeline::RunOptions::default(),
    )?;
    Ok(summary.fps())
}

/// A temporary output file, removed when dropped.
struct ScratchFile {
    path: PathBuf,
}

impl ScratchFile {
    fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "streamtrack-bench-{}-{label}.mp4",
            std::process::id()
        ));
        Self { path }
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Peak resident set size (`VmHWM`) of this process in MiB, where `/proc` has it.
fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Writes the reports as tables: one row per stage and one column per model and device.
pub fn write_tables(out: &mut impl Write, reports: &[BenchReport]) -> std::io::Result<()> {
    for (i, r) in reports.iter().enumerate() {
        writeln!(
            out,
            "[{}] {} on {} (input {}x{}, {} frames of {})",
            i + 1,
            r.model,
            r.device,
            r.input[0],
            r.input[1],
            r.frames,
            r.video
        )?;
    }
    let header: String = (1..=reports.len())
        .map(|i| format!("{:>18}", format!("[{i}] median/p99")))
        .collect();
    writeln!(out, "\n{:<14}{header}", "stage (ms)")?;
    for stage in STAGES {
        let cells: String = reports
            .iter()
            .map(|r| {
                let s = r.stage(stage).expect("every stage is timed");
                format!("{:>18}", format!("{:.2} / {:.2}", s.median_ms, s.p99_ms))
            })
            .collect();
        writeln!(out, "{stage:<14}{cells}")?;
    }
    let mut row = |label: &str, value: &dyn Fn(&BenchReport) -> String| {
        let cells: String = reports
            .iter()
            .map(|r| format!("{:>18}", value(r)))
            .collect();
        writeln!(out, "{label:<14}{cells}")
    };
    row("sequential FPS", &|r| format!("{:.1}", r.sequential_fps))?;
    row("pipeline FPS", &|r| format!("{:.1}", r.pipeline_fps))?;
    row("real-time", &|r| format!("{:.2}x", r.realtime_factor))?;
    row("peak MiB", &|r| {
        r.peak_memory_mib.map_or("-".into(), |m| format!("{m:.0}"))
    })?;
    if let Some(base) = reports.first() {
        let network = |r: &BenchReport| r.stage("network").map_or(f64::NAN, |s| s.median_ms);
        row("network vs [1]", &|r| {
            format!("{:.2}x faster", network(base) / network(r))
        })?;
    }
    for (i, r) in reports.iter().enumerate() {
        let column = i + 1;
        if !r.ops.is_empty() {
            writeln!(
                out,
                "\n[{column}] network per operation (ms per forward pass):"
            )?;
            let total: f64 = r.ops.iter().map(|o| o.ms).sum();
            for op in &r.ops {
                writeln!(
                    out,
                    "  {:<28}{:>5} calls {:>9.2} ms {:>5.1}%",
                    op.op,
                    op.calls,
                    op.ms,
                    100.0 * op.ms / total
                )?;
            }
        }
        if !r.layers.is_empty() {
            writeln!(
                out,
                "\n[{column}] network per layer (ms per forward pass, in the order they ran):"
            )?;
            for layer in &r.layers {
                writeln!(
                    out,
                    "  {:>4}  {:<28}{:<36}{:>8.3} ms",
                    layer.index,
                    layer.op,
                    layer.layer.as_deref().unwrap_or(""),
                    layer.ms
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use profile::{OpCall, OpKind};

    fn call(kind: OpKind, layer: Option<&str>, micros: u64) -> OpCall {
        OpCall {
            kind,
            layer: layer.map(str::to_string),
            time: Duration::from_micros(micros),
        }
    }

    /// Per layer and per operation type, the median over the passes: a pass the machine
    /// slowed (the third) does not move it.
    #[test]
    fn times_are_medians_over_passes_that_made_the_same_calls() {
        let pass = |conv: u64, pool: u64| {
            [
                call(OpKind::Conv3x3, Some("3->16 3x3/2 to 8x8 f32"), conv),
                call(OpKind::MaxPool, None, pool),
                call(OpKind::MaxPool, None, pool),
            ]
        };
        let calls: Vec<OpCall> = [pass(100, 10), pass(200, 20), pass(900, 60)].concat();
        let passes = alike_passes(&calls, 3);
        assert_eq!(passes.len(), 3);
        let layers = layer_stats(&passes);
        assert_eq!(layers.len(), 3);
        assert_eq!(layers[0].index, 1);
        assert_eq!(layers[0].op, "conv 3x3");
        assert_eq!(layers[0].layer.as_deref(), Some("3->16 3x3/2 to 8x8 f32"));
        assert!((layers[0].ms - 0.2).abs() < 1e-9, "{}", layers[0].ms);
        assert_eq!((layers[2].op, layers[2].layer.clone()), ("max-pool", None));
        assert!((layers[2].ms - 0.02).abs() < 1e-9, "{}", layers[2].ms);
        let ops = kind_stats(&passes);
        let summary: Vec<(&str, usize)> = ops.iter().map(|op| (op.op, op.calls)).collect();
        assert_eq!(summary, [("conv 3x3", 1), ("max-pool", 2)]);
        assert!((ops[0].ms - 0.2).abs() < 1e-9 && (ops[1].ms - 0.04).abs() < 1e-9);
    }

    #[test]
    fn passes_that_differ_leave_the_first_passs_times() {
        let calls = [
            call(OpKind::Conv1x1, Some("a"), 100),
            call(OpKind::Conv1x1, Some("b"), 200),
            call(OpKind::Conv1x1, Some("a"), 300),
            call(OpKind::Conv1x1, Some("a"), 400),
        ];
        let passes = alike_passes(&calls, 2);
        assert_eq!(passes.len(), 1);
        let layers = layer_stats(&passes);
        assert_eq!(layers.len(), 2);
        assert!((layers[0].ms - 0.1).abs() < 1e-9 && (layers[1].ms - 0.2).abs() < 1e-9);
        let ops = kind_stats(&passes);
        assert_eq!((ops.len(), ops[0].calls), (1, 2));
        assert!((ops[0].ms - 0.3).abs() < 1e-9, "{}", ops[0].ms);
        assert!(alike_passes(&calls[..1], 2).is_empty());
        assert!(layer_stats(&[]).is_empty() && kind_stats(&[]).is_empty());
    }
}
