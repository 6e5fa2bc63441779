//! `streamtrack serve`: an HTTP API (axum on tokio) for batch jobs on files under a media
//! root, live streams with server-sent events, Prometheus metrics and a health check. The
//! analysis itself runs on plain threads (one per job or stream), exactly as the command line
//! runs it; the async side only routes requests and streams events.

mod auth;
mod error;
mod idle;
mod jobs;
mod streams;
mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::engine::{BatchSettings, SharedDetector};
use crate::metrics::{MetricFamilies, StreamMetrics};
use crate::model::ModelCache;
use crate::setup::DetectorSpec;
use crate::video::rtsp::without_credentials;
pub use error::ApiError;
pub use streams::StreamRequest;

/// The OpenAPI document of this API (checked in as `docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Every route as (method, path), as the OpenAPI document lists them.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/v1/jobs"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("delete", "/v1/jobs/{id}"),
    ("get", "/v1/streams"),
    ("post", "/v1/streams"),
    ("get", "/v1/streams/{id}"),
    ("delete", "/v1/streams/{id}"),
    ("get", "/v1/streams/{id}/events"),
    ("get", "/v1/streams/{id}/mjpeg"),
];

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How the server was started.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// Bearer token every request must carry, if set.
    pub token: Option<String>,
    /// Jobs and file streams may only read files under this folder.
    pub media_root: PathBuf,
    /// Each job writes its results into a folder here named after its id.
    pub results_dir: PathBuf,
    /// Model and detection settings (requests may override a few).
    pub model: DetectorSpec,
    pub config: Config,
    /// Most live streams running at once; further `POST /v1/streams` get 429.
    pub max_streams: usize,
    /// Finished jobs kept in memory; the oldest beyond this are forgotten.
    pub keep_jobs: usize,
    /// Jobs processed at once; the others wait their turn, queued.
    pub max_jobs: usize,
    /// A connection with no byte moving either way for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// Streams started with the server, as if each had been posted to `/v1/streams`.
    pub streams: Vec<StreamRequest>,
}

/// Defaults of the limits in [`ServerConfig`].
pub const DEFAULT_MAX_STREAMS: usize = 16;
pub const DEFAULT_KEEP_JOBS: usize = 100;
/// One job at a time: on a CPU a job already uses every core, and two would only slow each
/// other down; on a GPU more may pay.
pub const DEFAULT_MAX_JOBS: usize = 1;
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Shared by every request.
pub struct AppState {
    pub config: ServerConfig,
    /// The canonical media root.
    media_root: PathBuf,
    jobs: Mutex<HashMap<String, Arc<jobs::Job>>>,
    streams: Mutex<HashMap<String, Arc<streams::LiveStream>>>,
    registry: Mutex<Registry>,
    /// Every job's and stream's metrics, registered in `registry`.
    metrics: MetricFamilies,
    /// Turns to run a job, `max_jobs` of them.
    job_slots: jobs::JobSlots,
    /// One network per detector setting that running streams use: their frames are
    /// batched together (see [`AppState::shared_detector`]).
    detectors: Mutex<HashMap<String, SharedDetector>>,
    next_id: AtomicU64,
}

impl AppState {
    /// Checks the media root exists and prepares the results folder.
    pub fn new(mut config: ServerConfig) -> anyhow::Result<Arc<Self>> {
        // Every job and stream on the same model file and device shares one loaded copy.
        config
            .model
            .models
            .get_or_insert_with(|| Arc::new(ModelCache::default()));
        let media_root = config.media_root.canonicalize().map_err(|e| {
            anyhow::anyhow!("{}: media root unusable: {e}", config.media_root.display())
        })?;
        std::fs::create_dir_all(&config.results_dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", config.results_dir.display()))?;
        let first_id = first_free_id(&config.results_dir)?;
        let mut registry = Registry::with_prefix("streamtrack");
        let metrics = MetricFamilies::default();
        metrics.register(&mut registry);
        Ok(Arc::new(Self {
            job_slots: jobs::JobSlots::new(config.max_jobs),
            config,
            media_root,
            jobs: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            registry: Mutex::new(registry),
            metrics,
            detectors: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(first_id),
        }))
    }

    /// `model` with the network that streams of the same detector settings share: their
    /// frames go into its batches (at most one per running stream, without waiting for
    /// more). A network no stream holds any more is stopped here, so varied settings do not
    /// pile up threads.
    pub fn shared_detector(&self, mut model: DetectorSpec) -> anyhow::Result<DetectorSpec> {
        let key = format!(
            "{:?}",
            (
                &model.model,
                model.device,
                model.input_size,
                model.conf,
                model.iou,
                model.max_det,
                model.agnostic_nms,
                &model.classes,
            )
        );
        let mut detectors = self.detectors.lock().unwrap_or_else(|e| e.into_inner());
        detectors.retain(|_, shared| shared.handles() > 1);
        let shared = match detectors.get(&key) {
            Some(shared) => shared.clone(),
            None => {
                let (detector, names) = crate::setup::build_detector(&model, &self.config.config)?;
                let settings = BatchSettings {
                    max_batch: self.config.max_streams.max(1),
                    max_wait: std::time::Duration::ZERO,
                };
                let shared = SharedDetector::start(detector, names, settings)?;
                tracing::info!("started a network for the streams with detector settings {key}");
                detectors.insert(key, shared.clone());
                shared
            }
        };
        model.shared = Some(shared);
        Ok(model)
    }

    /// Networks shared by running streams (one per detector setting in use).
    pub fn shared_networks(&self) -> usize {
        let detectors = self.detectors.lock().unwrap_or_else(|e| e.into_inner());
        detectors
            .values()
            .filter(|shared| shared.handles() > 1)
            .count()
    }

    /// Starts the streams of the configuration, in order; the first one refused stops the
    /// lot (with the streams started before it still running: the caller stops them).
    pub fn start_configured_streams(self: &Arc<Self>) -> anyhow::Result<()> {
        for (i, request) in self.config.streams.iter().enumerate() {
            let stream = streams::start(self, request.clone()).map_err(|e| {
                anyhow::anyhow!(
                    "stream {} of the configuration ({}): {}",
                    i + 1,
                    without_credentials(&request.source),
                    e.message
                )
            })?;
            tracing::info!("started {} on {}", stream.id(), stream.source());
        }
        Ok(())
    }

    /// A fresh id such as `job-3` or `stream-4`, with its results folder created: ids go on
    /// from the highest one in the results folder, so a restarted server never writes into
    /// an earlier run's results.
    fn new_id(&self, kind: &str) -> Result<(String, PathBuf), ApiError> {
        loop {
            let id = format!("{kind}-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
            let dir = self.config.results_dir.join(&id);
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok((id, dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot create results: {e}"),
                    ));
                }
            }
        }
    }

    /// Metrics for a new job or stream, exposed under its id.
    fn new_metrics(&self, kind: &'static str, id: &str) -> StreamMetrics {
        self.metrics.series(kind, id)
    }

    /// Forgets the finished jobs beyond the newest `keep_jobs` (their results stay on
    /// disk), with their metrics.
    pub(super) fn forget_old_jobs(&self) {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let mut finished: Vec<String> = jobs
            .values()
            .filter(|job| job.is_finished())
            .map(|job| job.id().to_string())
            .collect();
        if finished.len() <= self.config.keep_jobs {
            return;
        }
        finished.sort_by(|a, b| creation_order(a, b));
        for id in &finished[..finished.len() - self.config.keep_jobs] {
            jobs.remove(id);
            self.metrics.remove("job", id);
        }
    }

    /// Resolves a client-given path against the media root, refusing anything outside it.
    fn media_path(&self, requested: &str) -> Result<PathBuf, ApiError> {
        let relative = Path::new(requested);
        if requested.is_empty()
            || relative.is_absolute()
            || relative
                .components()
                .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("'{requested}' is not a path inside the media root"),
            ));
        }
        let path = self.media_root.join(relative);
        let canonical = path.canonicalize().map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no file '{requested}' in the media root"),
            )
        })?;
        // A symbolic link may still point outside.
        if !canonical.starts_with(&self.media_root) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("'{requested}' leads outside the media root"),
            ));
        }
        // A FIFO, socket or device would block the worker reading it.
        let kind = std::fs::metadata(&canonical).map(|m| m.file_type());
        if !kind.is_ok_and(|k| k.is_file() || k.is_dir()) {
            return Err(ApiError::bad_request(format!(
                "'{requested}' is not a regular file or folder"
            )));
        }
        Ok(canonical)
    }

    /// Stops every stream and cancels every job, and waits for them (outputs are finalised).
    pub fn stop_all(&self) {
        let streams: Vec<_> = self
            .streams
            .lock()
            .expect("streams lock")
            .values()
            .cloned()
            .collect();
        for stream in streams {
            stream.stop_and_wait();
        }
        let jobs: Vec<_> = self
            .jobs
            .lock()
            .expect("jobs lock")
            .values()
            .cloned()
            .collect();
        // Every job first, so no queued job waits for a running one that was not told.
        for job in &jobs {
            job.cancel();
        }
        for job in jobs {
            job.cancel_and_wait();
        }
    }
}

/// The API's routes on `state`. Every route requires the bearer token when one is set, except
/// the probes an orchestrator calls without credentials: `/healthz` (liveness) and `/readyz`
/// (readiness), which reveal nothing but the server's state, and the built-in page at `/`,
/// which is static and sends the token with its own calls.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(jobs::routes())
        .merge(streams::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // Routes added after the token layer are outside it (and outside the router's
        // method fallback, so they carry their own).
        .route(
            "/healthz",
            get(|| async { "ok" }).fallback(method_not_allowed),
        )
        .route("/readyz", get(readyz).fallback(method_not_allowed))
        // The page itself is static (it asks for the token and sends it with its calls).
        .route("/", get(web_page).fallback(method_not_allowed))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The built-in page: streams, live views, counters, start and stop.
async fn web_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("web/index.html"),
    )
}

/// Orders ids such as `job-9` and `job-10` as they were handed out (the number counts up).
fn creation_order(a: &str, b: &str) -> std::cmp::Ordering {
    (a.len(), a).cmp(&(b.len(), b))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// Readiness: the server can take work when its media root can be read and its results
/// folder written. The body counts the streams by status; a failed or reconnecting camera
/// does not make the server unready (it must stay reachable to be told what to do).
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut problems = Vec::new();
    if let Err(e) = std::fs::read_dir(&state.media_root) {
        problems.push(format!("media root {}: {e}", state.media_root.display()));
    }
    let probe = state.config.results_dir.join(".readyz");
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => problems.push(format!(
            "results folder {}: {e}",
            state.config.results_dir.display()
        )),
    }
    let mut streams: std::collections::BTreeMap<String, usize> = Default::default();
    for stream in state.streams.lock().expect("streams lock").values() {
        *streams.entry(stream.status_name()).or_default() += 1;
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": problems.is_empty(),
        "problems": problems,
        "streams": streams,
    });
    (status, axum::Json(body))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let text = crate::metrics::render(&state.registry.lock().expect("registry lock"));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Runs the server until Ctrl-C or SIGTERM, then stops every stream cleanly.
pub fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let state = AppState::new(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(state.config.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", state.config.bind))?;
        if let Err(e) = state.start_configured_streams() {
            state.stop_all();
            return Err(e);
        }
        tracing::info!(
            "listening on http://{}{}",
            state.config.bind,
            if state.config.token.is_some() {
                " (bearer token required)"
            } else {
                ""
            }
        );
        serve_on(listener, state.clone(), shutdown_signal()).await
    })?;
    tracing::info!("shutting down: stopping streams and jobs");
    // A stage that no longer returns must not keep the process alive for ever.
    let (stopped, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        state.stop_all();
        let _ = stopped.send(());
    });
    done.recv_timeout(SHUTDOWN_DEADLINE).map_err(|_| {
        anyhow::anyhow!(
            "streams or jobs did not stop within {} s; exiting without them",
            SHUTDOWN_DEADLINE.as_secs()
        )
    })
}

/// Longest wait for streams and jobs to finalise their outputs at shutdown.
pub const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves the API on `listener` until `shutdown` completes; idle connections are closed
/// after the configured timeout.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = idle::IdleTimeoutListener {
        listener,
        idle: state.config.idle_timeout,
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// The number after `job-` or `stream-` in the results folder's entries, plus one.
fn first_free_id(results_dir: &Path) -> anyhow::Result<u64> {
    let entries = std::fs::read_dir(results_dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", results_dir.display()))?;
    Ok(entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let (_, number) = name.split_once('-')?;
            number.parse::<u64>().ok()
        })
        .max()
        .map_or(1, |n| n + 1))
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_sort_in_the_order_they_were_handed_out() {
        let mut ids = vec!["job-10", "job-9", "job-100", "job-11"];
        ids.sort_by(|a, b| super::creation_order(a, b));
        assert_eq!(ids, ["job-9", "job-10", "job-11", "job-100"]);
    }
}
