//! Live streams: `POST /v1/streams` starts analysing a camera, an RTSP URL or a file under
//! the media root (played in real time); `GET /v1/streams/{id}` reports counters;
//! `GET /v1/streams/{id}/events` follows the results as server-sent events (one JSON line per
//! message, the same lines as `--events`); `GET /v1/streams/{id}/mjpeg` shows its annotated
//! frames as multipart MJPEG; `DELETE /v1/streams/{id}` stops it and returns the final
//! counts.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::AppState;
use super::error::ApiError;
use super::jobs::DetectionOverrides;
use super::worker::Worker;
use crate::config::Config;
use crate::job::{OutputSpec, StreamTaps, run_stream};
use crate::live_view::LiveView;
use crate::metrics::StreamMetrics;
use crate::pipeline::{LiveOptions, Mode, RunOptions};
use crate::sinks::SinkSettings;
use crate::speed::{Calibration, CalibrationFile};
use crate::track::TrackerConfig;
use crate::video::live::{LiveSourceOptions, LiveSpec, open_live_source};
use crate::video::rtsp::without_credentials;
use crate::zones::{ZoneCounts, ZonesConfig};

/// Result lines kept for slow event subscribers before they miss some.
const EVENT_BACKLOG: usize = 256;

/// Live-view frames per second unless the request says otherwise, and the most it may ask.
const DEFAULT_VIEW_FPS: f64 = 5.0;
const MAX_VIEW_FPS: f64 = 30.0;

/// The boundary between the parts of the MJPEG answer.
const MJPEG_BOUNDARY: &str = "streamtrack-frame";

/// The body of `POST /v1/streams`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRequest {
    /// `rtsp://…`, a camera (`0`, `/dev/video0`) or a file under the media root.
    pub source: String,
    /// Analyse at most this many frames per second.
    pub target_fps: Option<f64>,
    /// Drop frames older than this.
    pub max_latency_ms: Option<u64>,
    /// Keep the results as JSON lines in the results folder.
    #[serde(default)]
    pub record: bool,
    /// Also record an annotated MP4 (fragmented, so a crash keeps all but the last
    /// keyframe interval).
    #[serde(default)]
    pub video: bool,
    /// Cut the recording into files of this many seconds, named by their start time.
    pub segment_s: Option<f64>,
    #[serde(default)]
    pub detect: DetectionOverrides,
    /// Event sinks for this stream (MQTT, webhook) instead of the configuration's `[sinks]`.
    #[serde(default)]
    pub sinks: Option<SinkSettings>,
    /// Frames per second of the live view (`/mjpeg`), at most 30; 5 unless given.
    pub view_fps: Option<f64>,
    /// Counting lines and areas of this camera instead of the configuration's `[zones]`.
    pub zones: Option<ZonesConfig>,
    /// Tracker settings of this stream instead of the configuration's `[tracker]` (keys left
    /// out take ByteTrack's defaults).
    pub tracker: Option<TrackerConfig>,
    /// This camera's calibration (the calibration file's keys) instead of the
    /// configuration's: speeds are measured with it.
    pub calibration: Option<CalibrationFile>,
}

impl StreamRequest {
    /// The configuration this stream runs with: the server's, with the stream's own zones
    /// and tracker settings in place of the server's.
    fn stream_config(&self, server: &Config) -> Config {
        server.for_one_stream(self.zones.as_ref(), self.tracker.as_ref())
    }
}

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamStatus {
    Connecting,
    Running,
    Stopped,
    Failed,
}

#[derive(Debug, Clone)]
struct StreamState {
    status: StreamStatus,
    error: Option<String>,
    outages: u64,
}

/// One live stream.
pub struct LiveStream {
    id: String,
    source: String,
    state: Mutex<StreamState>,
    metrics: StreamMetrics,
    connection_failures: prometheus_client::metrics::counter::Counter,
    /// Present while the stream runs; dropping it ends every subscriber's event stream.
    events: Mutex<Option<broadcast::Sender<String>>>,
    worker: Worker,
    record: Option<std::path::PathBuf>,
    view: Arc<LiveView>,
}

/// `GET /v1/streams/{id}`'s answer.
#[derive(Debug, Serialize)]
pub struct StreamView {
    pub id: String,
    pub source: String,
    pub status: StreamStatus,
    pub frames_in: u64,
    pub frames_processed: u64,
    pub frames_dropped: u64,
    pub frames_skipped: u64,
    pub fps: f64,
    pub active_tracks: i64,
    pub reconnects: u64,
    /// Failed connection attempts (RTSP), also before the first frame.
    pub connection_failures: u64,
    pub outages: u64,
    /// Line crossings and area visits so far, per zone and class (when zones are set).
    #[serde(skip_serializing_if = "ZoneCounts::is_empty")]
    pub zones: ZoneCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_file: Option<std::path::PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl LiveStream {
    fn view(&self) -> StreamView {
        let state = self.state.lock().expect("stream lock").clone();
        let m = &self.metrics;
        StreamView {
            id: self.id.clone(),
            source: self.source.clone(),
            status: state.status,
            frames_in: m.frames_in.get(),
            frames_processed: m.frames_processed.get(),
            frames_dropped: m.frames_dropped.get(),
            frames_skipped: m.frames_skipped.get(),
            fps: m.fps.get(),
            active_tracks: m.active_tracks.get(),
            reconnects: m.reconnects.get(),
            connection_failures: self.connection_failures.get(),
            outages: state.outages,
            zones: self.view.counts(),
            events_file: self.record.clone(),
            error: state.error,
        }
    }

    fn set(&self, update: impl FnOnce(&mut StreamState)) {
        update(&mut self.state.lock().expect("stream lock"));
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The source, credentials removed.
    pub(super) fn source(&self) -> &str {
        &self.source
    }

    /// The stream's status as the API names it (`running`, `failed`, …).
    pub(super) fn status_name(&self) -> String {
        let status = self.state.lock().expect("stream lock").status;
        serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Whether the stream is connecting or running (it counts against the stream limit).
    fn is_live(&self) -> bool {
        matches!(
            self.state.lock().expect("stream lock").status,
            StreamStatus::Connecting | StreamStatus::Running
        )
    }

    /// Stops the stream and waits until its outputs are finalised.
    pub fn stop_and_wait(&self) {
        self.worker.stop_and_wait();
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/streams", post(create).get(list))
        .route("/v1/streams/{id}", get(show).delete(remove))
        .route("/v1/streams/{id}/events", get(events))
        .route("/v1/streams/{id}/mjpeg", get(mjpeg))
}

async fn create(
    State(state): State<Arc<AppState>>,
    body: Result<Json<StreamRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(request) = body?;
    let stream = start(&state, request)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/streams/{}", stream.id))],
        Json(stream.view()),
    ))
}

/// Writes `calibration` as a calibration file at `path`.
fn write_calibration(
    calibration: &CalibrationFile,
    path: &std::path::Path,
) -> Result<std::path::PathBuf, ApiError> {
    toml::to_string(calibration)
        .map_err(|e| e.to_string())
        .and_then(|text| std::fs::write(path, text).map_err(|e| e.to_string()))
        .map(|()| path.to_path_buf())
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}: cannot write the calibration: {e}", path.display()),
            )
        })
}

/// Checks `request` and starts its stream, as `POST /v1/streams` and `serve --streams` do.
pub(super) fn start(
    state: &Arc<AppState>,
    request: StreamRequest,
) -> Result<Arc<LiveStream>, ApiError> {
    request.detect.validate()?;
    if let Some(zones) = &request.zones {
        zones
            .validate()
            .map_err(|e| ApiError::bad_request(format!("zones: {e}")))?;
    }
    if let Some(tracker) = &request.tracker {
        tracker
            .validate()
            .map_err(|e| ApiError::bad_request(format!("tracker: {e}")))?;
    }
    if let Some(calibration) = &request.calibration {
        Calibration::from_file(calibration.clone())
            .map_err(|e| ApiError::bad_request(format!("calibration: {e}")))?;
    }
    if let Some(sinks) = &request.sinks {
        // A client may not make the server read a file of its choosing.
        if sinks.mqtt.as_ref().is_some_and(|m| m.ca_file.is_some())
            || sinks.webhook.as_ref().is_some_and(|w| w.ca_file.is_some())
        {
            return Err(ApiError::bad_request(
                "sinks: ca_file can only be set in the server's configuration ([sinks.*])",
            ));
        }
        sinks
            .validate()
            .map_err(|e| ApiError::bad_request(format!("sinks.{e}")))?;
    }
    if request.target_fps.is_some_and(|f| f.is_nan() || f <= 0.0) {
        return Err(ApiError::bad_request("target_fps must be positive"));
    }
    if request
        .segment_s
        .is_some_and(|s| !(s.is_finite() && s > 0.0))
    {
        return Err(ApiError::bad_request("segment_s must be a positive number"));
    }
    if request.segment_s.is_some() && !request.video {
        return Err(ApiError::bad_request(
            "segment_s cuts the recording: set video too",
        ));
    }
    let view_fps = request.view_fps.unwrap_or(DEFAULT_VIEW_FPS);
    if !(view_fps > 0.0 && view_fps <= MAX_VIEW_FPS) {
        return Err(ApiError::bad_request(format!(
            "view_fps must be above 0 and at most {MAX_VIEW_FPS}"
        )));
    }
    let spec = match LiveSpec::parse(&request.source) {
        LiveSpec::Stdin => {
            return Err(ApiError::bad_request("the server has no stdin to read"));
        }
        LiveSpec::File(_) => LiveSpec::File(state.media_path(&request.source)?),
        other => other,
    };
    let running = state
        .streams
        .lock()
        .expect("streams lock")
        .values()
        .filter(|s| s.is_live())
        .count();
    if running >= state.config.max_streams {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{running} streams are running, the most this server takes (--max-streams)"),
        ));
    }
    let (id, dir) = state.new_id("stream")?;
    let (sender, _) = broadcast::channel(EVENT_BACKLOG);
    let stream = Arc::new(LiveStream {
        id: id.clone(),
        source: without_credentials(&request.source),
        state: Mutex::new(StreamState {
            status: StreamStatus::Connecting,
            error: None,
            outages: 0,
        }),
        metrics: state.new_metrics("stream", &id),
        connection_failures: Default::default(),
        events: Mutex::new(Some(sender)),
        worker: Worker::default(),
        record: request.record.then(|| dir.join("events.jsonl")),
        view: Arc::new(LiveView::new(view_fps)),
    });
    // The stream's own calibration goes beside its results, where the run reads it (and
    // where it stays as a record of what the speeds were measured with).
    let calibration = request
        .calibration
        .as_ref()
        .map(|calibration| write_calibration(calibration, &dir.join("calibration.toml")))
        .transpose()?;
    let outputs = OutputSpec {
        events: stream.record.clone(),
        calibration,
        output: request.video.then(|| match request.segment_s {
            Some(_) => dir.join("annotated-%Y%m%d-%H%M%S.mp4"),
            None => dir.join("annotated.mp4"),
        }),
        segment: request.segment_s,
        frame_skip: request.detect.frame_skip.unwrap_or(0),
        stream_id: Some(id.clone()),
        sinks: request.sinks.clone(),
        ..OutputSpec::default()
    };
    let (worker_state, worker_stream) = (state.clone(), stream.clone());
    stream
        .worker
        .start(&id, move || {
            run_live(&worker_state, &worker_stream, &spec, &request, &outputs)
        })
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    state
        .streams
        .lock()
        .expect("streams lock")
        .insert(id, stream.clone());
    Ok(stream)
}

/// Every stream the server knows (stopped and failed ones until they are deleted), oldest
/// first.
async fn list(State(state): State<Arc<AppState>>) -> Json<Vec<StreamView>> {
    let streams = state.streams.lock().expect("streams lock");
    let mut views: Vec<StreamView> = streams.values().map(|stream| stream.view()).collect();
    views.sort_by(|a, b| super::creation_order(&a.id, &b.id));
    Json(views)
}

async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<StreamView>, ApiError> {
    Ok(Json(find(&state, &id)?.view()))
}

async fn remove(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<StreamView>, ApiError> {
    let stream = find(&state, &id)?;
    let stopping = stream.clone();
    tokio::task::spawn_blocking(move || stopping.stop_and_wait())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // The final counters are read before the stream's series leave the metrics.
    let view = stream.view();
    state.streams.lock().expect("streams lock").remove(&id);
    state.metrics.remove("stream", &id);
    Ok(Json(view))
}

async fn events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let stream = find(&state, &id)?;
    let receiver = stream
        .events
        .lock()
        .expect("events lock")
        .as_ref()
        .map(broadcast::Sender::subscribe)
        .ok_or_else(|| ApiError::new(StatusCode::GONE, format!("stream '{id}' has ended")))?;
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(line) => return Some((Ok(Event::default().data(line)), receiver)),
                // A slow client misses lines rather than holding the stream back.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The stream's annotated frames as `multipart/x-mixed-replace` (MJPEG, what an `<img>`
/// shows as video), at the stream's `view_fps`; frames are encoded only while someone
/// watches. The answer ends when the stream does.
async fn mjpeg(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let stream = find(&state, &id)?;
    let watch = stream
        .view
        .watch()
        .ok_or_else(|| ApiError::new(StatusCode::GONE, format!("stream '{id}' has ended")))?;
    let parts = futures::stream::unfold(watch, |mut watch| async move {
        let frame = watch.next_frame().await?;
        let head = format!(
            "--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nX-Frame-Number: {}\r\n\r\n",
            frame.jpeg.len(),
            frame.number
        );
        let mut part = Vec::with_capacity(head.len() + frame.jpeg.len() + 2);
        part.extend_from_slice(head.as_bytes());
        part.extend_from_slice(&frame.jpeg);
        part.extend_from_slice(b"\r\n");
        Some((Ok::<_, Infallible>(part), watch))
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        axum::body::Body::from_stream(parts),
    ))
}

fn find(state: &AppState, id: &str) -> Result<Arc<LiveStream>, ApiError> {
    state
        .streams
        .lock()
        .expect("streams lock")
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("stream", id))
}

/// The worker: connects, then analyses until stopped or the source ends.
fn run_live(
    state: &AppState,
    stream: &LiveStream,
    spec: &LiveSpec,
    request: &StreamRequest,
    outputs: &OutputSpec,
) {
    let source_options = LiveSourceOptions {
        realtime: true,
        raw_fps: crate::video::DEFAULT_RAW_FPS,
        rtsp: crate::video::rtsp::RtspOptions {
            failed_attempts: stream.connection_failures.clone(),
            ..Default::default()
        },
        ..LiveSourceOptions::default()
    };
    let sender = stream.events.lock().expect("events lock").clone();
    let outcome = (|| -> anyhow::Result<u64> {
        let source = open_live_source(spec, &source_options, stream.worker.stop_flag())?;
        stream.set(|s| s.status = StreamStatus::Running);
        tracing::info!("{}: running {}", stream.id, stream.source);
        let options = RunOptions {
            mode: Mode::Live(LiveOptions {
                target_fps: request.target_fps,
                max_latency: request.max_latency_ms.map(Duration::from_millis),
                duration: None,
            }),
            stop: stream.worker.stop_flag(),
            show_progress: false,
            metrics: stream.metrics.clone(),
        };
        let results = sender.map(|sender| -> crate::output::JsonTap {
            Box::new(move |line: &str| {
                // No subscriber is fine.
                let _ = sender.send(line.to_string());
            })
        });
        let taps = StreamTaps {
            results,
            view: Some(stream.view.clone()),
        };
        let model = state.shared_detector(request.detect.apply(&state.config.model))?;
        let report = run_stream(
            source,
            outputs,
            &model,
            &request.stream_config(&state.config.config),
            &options,
            taps,
        )?;
        Ok(report.summary.outages)
    })();
    // Ends every subscriber's event stream and live view.
    stream.events.lock().expect("events lock").take();
    stream.view.close();
    let stopped = stream.worker.stop_requested();
    match outcome {
        Ok(outages) => stream.set(|s| {
            s.status = StreamStatus::Stopped;
            s.outages = outages;
        }),
        Err(_) if stopped => stream.set(|s| s.status = StreamStatus::Stopped),
        Err(e) => {
            tracing::warn!("{}: failed: {e:#}", stream.id);
            stream.set(|s| {
                s.status = StreamStatus::Failed;
                s.error = Some(format!("{e:#}"));
            });
        }
    }
}
