//! Batch jobs: `POST /v1/jobs` processes a file under the media root on a worker thread
//! (one job at a time, the rest queue); `GET /v1/jobs/{id}` reports status and progress;
//! `DELETE /v1/jobs/{id}` cancels (the outputs keep what was processed).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::worker::Worker;
use crate::job::{OutputSpec, run_stream};
use crate::metrics::StreamMetrics;
use crate::pipeline::RunOptions;
use crate::setup::DetectorSpec;
use crate::video::{self, FirstFrames};

/// The body of `POST /v1/jobs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Video path relative to the media root.
    pub input: String,
    /// Also write an annotated MP4.
    #[serde(default)]
    pub video: bool,
    /// Also write CSV.
    #[serde(default)]
    pub csv: bool,
    /// Process only the first frames.
    pub max_frames: Option<u64>,
    /// Overrides of the server's detection settings.
    #[serde(default)]
    pub detect: DetectionOverrides,
}

/// Detection settings a request may change (`"detect": {…}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionOverrides {
    pub conf: Option<f32>,
    pub classes: Option<Vec<String>>,
    pub input_size: Option<usize>,
    pub frame_skip: Option<u64>,
}

impl DetectionOverrides {
    /// Checks ranges before any work starts.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.conf.is_some_and(|c| c.is_nan() || c <= 0.0 || c > 1.0) {
            return Err(ApiError::bad_request("conf must be in (0, 1]"));
        }
        if let Some(size) = self.input_size {
            model_import::metadata::check_input_side(size)
                .map_err(|e| ApiError::bad_request(format!("input_size: {e}")))?;
        }
        Ok(())
    }

    /// The server's model settings with these overrides applied.
    pub fn apply(&self, base: &DetectorSpec) -> DetectorSpec {
        let mut model = base.clone();
        model.conf = self.conf.or(model.conf);
        model.input_size = self.input_size.or(model.input_size);
        if let Some(classes) = &self.classes {
            model.classes = classes.clone();
        }
        model
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

/// Files a job writes.
#[derive(Debug, Clone, Serialize)]
pub struct JobResults {
    pub dir: PathBuf,
    pub events: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csv: Option<PathBuf>,
}

/// What a finished job found.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub frames: u64,
    pub fps: f64,
    pub tracks: usize,
}

#[derive(Debug, Clone)]
struct JobState {
    status: JobStatus,
    total_frames: Option<u64>,
    summary: Option<JobSummary>,
    error: Option<String>,
}

/// One job.
pub struct Job {
    id: String,
    input: String,
    results: JobResults,
    state: Mutex<JobState>,
    metrics: StreamMetrics,
    worker: Worker,
}

/// Progress of a job.
#[derive(Debug, Serialize)]
pub struct Progress {
    pub frames: u64,
    pub total: Option<u64>,
}

/// `GET /v1/jobs/{id}`'s answer.
#[derive(Debug, Serialize)]
pub struct JobView {
    pub id: String,
    pub input: String,
    pub status: JobStatus,
    pub progress: Progress,
    pub results: JobResults,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<JobSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Job {
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// Whether the job has ended (done, failed or cancelled).
    pub(super) fn is_finished(&self) -> bool {
        matches!(
            self.state.lock().expect("job lock").status,
            JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// Cancels the job without waiting (a queued job will not start).
    pub fn cancel(&self) {
        self.worker.request_stop();
    }

    /// Cancels the job and waits until its outputs are finalised.
    pub fn cancel_and_wait(&self) {
        self.worker.stop_and_wait();
    }

    fn view(&self) -> JobView {
        let state = self.state.lock().expect("job lock").clone();
        JobView {
            id: self.id.clone(),
            input: self.input.clone(),
            status: state.status,
            progress: Progress {
                frames: self.metrics.frames_processed.get(),
                total: state.total_frames,
            },
            results: self.results.clone(),
            summary: state.summary,
            error: state.error,
        }
    }

    fn set(&self, update: impl FnOnce(&mut JobState)) {
        update(&mut self.state.lock().expect("job lock"));
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/jobs", post(create).get(list))
        .route("/v1/jobs/{id}", get(show).delete(cancel))
}

async fn create(
    State(state): State<Arc<AppState>>,
    body: Result<Json<JobRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(request) = body?;
    request.detect.validate()?;
    if request.max_frames == Some(0) {
        return Err(ApiError::bad_request("max_frames must be positive"));
    }
    let input = state.media_path(&request.input)?;
    let (id, dir) = state.new_id("job")?;
    let results = JobResults {
        events: dir.join("events.jsonl"),
        video: request.video.then(|| dir.join("annotated.mp4")),
        csv: request.csv.then(|| dir.join("tracks.csv")),
        dir,
    };
    let job = Arc::new(Job {
        id: id.clone(),
        input: request.input.clone(),
        results,
        state: Mutex::new(JobState {
            status: JobStatus::Queued,
            total_frames: None,
            summary: None,
            error: None,
        }),
        metrics: state.new_metrics("job", &id),
        worker: Worker::default(),
    });
    state
        .jobs
        .lock()
        .expect("jobs lock")
        .insert(id.clone(), job.clone());
    let (worker_state, worker_job) = (state.clone(), job.clone());
    job.worker
        .start(&id, move || {
            run_job(&worker_state, &worker_job, input, &request);
            worker_state.forget_old_jobs();
        })
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let location = format!("/v1/jobs/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(job.view()),
    ))
}

/// Every job the server knows, oldest first.
async fn list(State(state): State<Arc<AppState>>) -> Json<Vec<JobView>> {
    let jobs = state.jobs.lock().expect("jobs lock");
    let mut views: Vec<JobView> = jobs.values().map(|job| job.view()).collect();
    views.sort_by(|a, b| super::creation_order(&a.id, &b.id));
    Json(views)
}

async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = find(&state, &id)?;
    Ok(Json(job.view()))
}

async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let job = find(&state, &id)?;
    job.cancel();
    job.set(|s| {
        if s.status == JobStatus::Queued {
            s.status = JobStatus::Cancelled;
        }
    });
    Ok((StatusCode::ACCEPTED, Json(job.view())))
}

fn find(state: &AppState, id: &str) -> Result<Arc<Job>, ApiError> {
    state
        .jobs
        .lock()
        .expect("jobs lock")
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("job", id))
}

/// Turns to run a job: a counting semaphore of `max_jobs` slots.
pub(super) struct JobSlots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A job's turn, given back when dropped.
pub(super) struct Turn<'a>(&'a JobSlots);

impl JobSlots {
    pub(super) fn new(slots: usize) -> Self {
        Self {
            free: Mutex::new(slots.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free slot; `None` as soon as `cancelled` says so (checked at least every
    /// 100 ms), so a cancelled job leaves the queue at once.
    fn take(&self, cancelled: impl Fn() -> bool) -> Option<Turn<'_>> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if cancelled() {
                return None;
            }
            if *free > 0 {
                *free -= 1;
                return Some(Turn(self));
            }
            free = self
                .freed
                .wait_timeout(free, std::time::Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// The worker: waits its turn, then processes the file into the results folder.
fn run_job(state: &AppState, job: &Job, input: PathBuf, request: &JobRequest) {
    let Some(_turn) = state.job_slots.take(|| job.worker.stop_requested()) else {
        job.set(|s| s.status = JobStatus::Cancelled);
        return;
    };
    job.set(|s| s.status = JobStatus::Running);
    tracing::info!("{}: processing {}", job.id, input.display());
    let outcome = (|| -> anyhow::Result<JobSummary> {
        let mut source = video::open_source(&input, video::DEFAULT_RAW_FPS)?;
        if let Some(frames) = request.max_frames {
            source = Box::new(FirstFrames::new(source, frames));
        }
        let total = source.info().frame_count;
        job.set(|s| s.total_frames = total);
        let outputs = OutputSpec {
            output: job.results.video.clone(),
            events: Some(job.results.events.clone()),
            csv: job.results.csv.clone(),
            frame_skip: request.detect.frame_skip.unwrap_or(0),
            // The configuration's `[sinks]`, if any, name the job's events after it.
            stream_id: Some(job.id.clone()),
            ..OutputSpec::default()
        };
        let model = request.detect.apply(&state.config.model);
        let options = RunOptions {
            stop: job.worker.stop_flag(),
            metrics: job.metrics.clone(),
            ..RunOptions::default()
        };
        let report = run_stream(
            source,
            &outputs,
            &model,
            &state.config.config,
            &options,
            Default::default(),
        )?;
        Ok(JobSummary {
            frames: report.summary.frames_processed,
            fps: report.summary.fps(),
            tracks: report.classes.values().map(|c| c.tracks as usize).sum(),
        })
    })();
    match outcome {
        Ok(summary) => {
            tracing::info!("{}: done, {} frames", job.id, summary.frames);
            let cancelled = job.worker.stop_requested();
            job.set(|s| {
                s.status = if cancelled {
                    JobStatus::Cancelled
                } else {
                    JobStatus::Done
                };
                s.summary = Some(summary);
            });
        }
        Err(e) => {
            tracing::warn!("{}: failed: {e:#}", job.id);
            job.set(|s| {
                s.status = JobStatus::Failed;
                s.error = Some(format!("{e:#}"));
            });
        }
    }
}
