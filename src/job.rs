//! One stream from source to outputs: the work behind `process`, `live` and the HTTP
//! server's jobs and streams. Opens the requested outputs, builds the analysis, runs the
//! pipeline and returns what happened.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::analysis::ClassTally;
use crate::config::Config;
use crate::live_view::LiveView;
use crate::output::{JsonTap, ResultWriters};
use crate::pipeline::{self, Mode, RunOptions, RunSummary, Sinks};
use crate::setup::{self, DetectorSpec};
use crate::sinks::{EventSinks, MqttSettings, SinkCounters, SinkSettings, WebhookSettings};
use crate::video::FrameSource;
use crate::video::encoder::EncodeSettings;
use crate::video::sink::{Mp4Layout, Mp4Sink, PngFrameSink};
use crate::zones::ZoneCounts;

/// What a run writes, and the per-stream analysis settings.
#[derive(Clone, Debug, Default)]
pub struct OutputSpec {
    /// Output annotated video (.mp4).
    pub output: Option<PathBuf>,
    /// Also write every annotated frame as PNG into this folder.
    pub save_frames: Option<PathBuf>,
    /// Cut the output video into files of this many seconds; `-o` is then a name pattern
    /// (`cam1-%Y%m%d-%H%M%S.mp4`, the segment's start in UTC; without fields the time is
    /// added before the extension).
    pub segment: Option<f64>,
    /// Output video bitrate in bits per second (default: from frame size and rate).
    pub bitrate: Option<u32>,
    /// Per-frame tracks and events as JSON lines.
    pub events: Option<PathBuf>,
    /// Per-frame tracks as CSV.
    pub csv: Option<PathBuf>,
    /// Tracks in MOTChallenge format.
    pub mot: Option<PathBuf>,
    /// Camera calibration (TOML) enabling speed estimation.
    pub calibration: Option<PathBuf>,
    /// Analyse one frame in N+1 (the others are written with the last annotations).
    pub frame_skip: u64,
    /// Publish events to this MQTT broker: mqtt://[user:password@]host[:port], or mqtts://
    /// for TLS (overrides `[sinks.mqtt] url`).
    pub mqtt: Option<String>,
    /// POST every event as JSON to this URL: http[s]://host[:port]/path (overrides
    /// `[sinks.webhook] url`).
    pub webhook: Option<String>,
    /// Sign webhook bodies with HMAC-SHA256 and this secret (overrides `[sinks.webhook]
    /// secret`).
    pub webhook_secret: Option<String>,
    /// The stream's name in MQTT topics and event bodies (default: the input's file name).
    pub stream_id: Option<String>,
    /// Event sinks given as settings (the HTTP API's per-stream `sinks`); the flags above
    /// override their URLs.
    pub sinks: Option<SinkSettings>,
}

impl OutputSpec {
    /// Refuses outputs that would overwrite `input` or each other (by file identity, so
    /// another path to the same file counts too): writing an output truncates its file
    /// before the input has been read.
    pub fn check_paths(&self, input: &Path) -> anyhow::Result<()> {
        let files = [
            ("-o/--output", &self.output),
            ("--events", &self.events),
            ("--csv", &self.csv),
            ("--mot", &self.mot),
        ];
        let named: Vec<(&str, &Path)> = files
            .iter()
            .filter_map(|(flag, path)| path.as_deref().map(|p| (*flag, p)))
            .collect();
        for (i, (flag, path)) in named.iter().enumerate() {
            if same_file(path, input) {
                anyhow::bail!(
                    "{}: {flag} names the input file; writing it would destroy the input",
                    path.display()
                );
            }
            if let Some((other, _)) = named[..i].iter().find(|(_, p)| same_file(p, path)) {
                anyhow::bail!("{}: {other} and {flag} name the same file", path.display());
            }
        }
        Ok(())
    }

    /// Whether anything at all would be written.
    pub fn writes_anything(&self) -> bool {
        self.output.is_some()
            || self.save_frames.is_some()
            || self.events.is_some()
            || self.csv.is_some()
            || self.mot.is_some()
            || self.mqtt.is_some()
            || self.webhook.is_some()
    }

    /// The event sinks of the run: the configuration's `[sinks]`, replaced by the
    /// request's settings, with the URLs and secret given as flags on top.
    pub fn sink_settings(&self, config: &Config) -> SinkSettings {
        let mut settings = self.sinks.clone().unwrap_or_else(|| config.sinks.clone());
        if let Some(url) = &self.mqtt {
            let mqtt = settings.mqtt.get_or_insert_with(|| MqttSettings::new(url));
            mqtt.url = url.clone();
        }
        if let Some(url) = &self.webhook {
            let webhook = settings
                .webhook
                .get_or_insert_with(|| WebhookSettings::new(url, None));
            webhook.url = url.clone();
        }
        if let (Some(secret), Some(webhook)) = (&self.webhook_secret, settings.webhook.as_mut()) {
            webhook.secret = Some(secret.clone());
        }
        settings
    }
}

/// True when both paths lead to one existing file, or are the same path.
fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            x.dev() == y.dev() && x.ino() == y.ino()
        }
        _ => false,
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub summary: RunSummary,
    /// Tracks that ended, per class id.
    pub classes: BTreeMap<usize, ClassTally>,
    /// Line and zone counts (empty without zones in the configuration).
    pub zones: ZoneCounts,
    /// Display names of the classes.
    pub names: Vec<String>,
}

/// What a stream hands out while it runs, besides its outputs.
#[derive(Default)]
pub struct StreamTaps {
    /// Receives every JSON line of results as it is produced.
    pub results: Option<JsonTap>,
    /// Shows the annotated frames and the line and area counts.
    pub view: Option<Arc<LiveView>>,
}

/// Runs `source` with the analysis `model` and `config` describe into `outputs` and `taps`.
pub fn run_stream(
    source: Box<dyn FrameSource>,
    outputs: &OutputSpec,
    model: &DetectorSpec,
    config: &Config,
    options: &RunOptions,
    taps: StreamTaps,
) -> anyhow::Result<StreamReport> {
    let info = source.info().clone();
    let settings = EncodeSettings {
        bitrate: outputs.bitrate.or(config.output.bitrate),
        keyframe_interval_s: config.output.keyframe_interval,
    };
    // Live recordings are fragmented so a crash keeps all but the last keyframe interval;
    // files processed whole get the plain layout every player reads.
    let layout = match options.mode {
        Mode::Live(_) => Mp4Layout::Fragmented,
        Mode::File => Mp4Layout::Progressive,
    };
    if let Some(seconds) = outputs.segment {
        crate::checks::positive("--segment", seconds).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            outputs.output.is_some(),
            "--segment cuts the -o video: give -o too"
        );
    }
    let sinks = Sinks {
        video: outputs
            .output
            .as_deref()
            .map(|p| match outputs.segment {
                Some(seconds) => Mp4Sink::segmented(p, seconds, info.fps, settings, layout),
                None => Mp4Sink::with_layout(p, info.fps, settings, layout),
            })
            .transpose()?,
        frames: outputs
            .save_frames
            .as_deref()
            .map(PngFrameSink::create)
            .transpose()?,
        view: taps.view.clone(),
    };
    let calibration = setup::load_calibration(outputs.calibration.as_deref(), config, &info)?;
    let mut writers = ResultWriters::create(
        outputs.events.as_deref(),
        outputs.csv.as_deref(),
        outputs.mot.as_deref(),
    )?;
    if let Some(tap) = taps.results {
        writers = writers.with_tap(tap);
    }
    let sink_settings = outputs.sink_settings(config);
    if !sink_settings.is_empty() {
        let stream = outputs.stream_id.as_deref().unwrap_or("stream");
        let counters = SinkCounters {
            published: options.metrics.events_published.clone(),
            dropped: options.metrics.events_dropped.clone(),
        };
        writers = writers.with_event_sinks(EventSinks::start(stream, &sink_settings, counters)?);
    }
    let setup::StreamAnalysis {
        mut detector,
        mut analysis,
        names,
    } = setup::build_analysis(
        model,
        config,
        &info,
        calibration,
        writers,
        outputs.frame_skip,
    )?;
    if let Some(view) = taps.view {
        analysis = analysis.with_live_view(view);
    }
    let summary = pipeline::run(source, &mut detector, &mut analysis, sinks, options)?;
    Ok(StreamReport {
        summary,
        zones: analysis.zone_counts(),
        classes: analysis.classes,
        names,
    })
}
