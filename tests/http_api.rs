//! The HTTP API through its router (no network): job lifecycle, stream start/stop with
//! server-sent events and metrics, authentication, bad requests, unknown ids, oversize
//! bodies, paths outside the media root, and the OpenAPI document.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use streamtrack::config::Config;
use streamtrack::server::{self, AppState, ServerConfig};
use streamtrack::setup::ModelArgs;
use tower::ServiceExt;

const TOKEN: &str = "test-token";

struct TestServer {
    app: Router,
    results: PathBuf,
}

impl TestServer {
    fn new(name: &str, token: Option<&str>) -> Self {
        let results =
            std::env::temp_dir().join(format!("streamtrack-api-{name}-{}", std::process::id()));
        let model = ModelArgs {
            model: Some("../shared/data/models/yolo11n-coco-320.onnx".into()),
            device: Some("cpu".parse().unwrap()),
            ..ModelArgs::default()
        };
        let state = AppState::new(ServerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            token: token.map(str::to_string),
            media_root: "../shared/data/video".into(),
            results_dir: results.clone(),
            model,
            config: Config::default(),
        })
        .unwrap();
        Self {
            app: server::router(state),
            results,
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body.to_vec())
    }

    async fn call(&self, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let (status, bytes) = self.send(request.body(body).unwrap()).await;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.results);
    }
}

#[tokio::test]
async fn a_token_is_required_when_set() {
    let server = TestServer::new("auth", Some(TOKEN));
    for uri in ["/healthz", "/metrics", "/v1/jobs/job-1"] {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let (status, body) = server.send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(String::from_utf8_lossy(&body).contains("bearer token"));
        let request = Request::get(uri)
            .header(header::AUTHORIZATION, "Bearer wrong")
            .body(Body::empty())
            .unwrap();
        assert_eq!(server.send(request).await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = server.call("GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason() {
    let server = TestServer::new("bad", None);
    let cases = [
        ("/v1/jobs", "{\"input\": ", StatusCode::BAD_REQUEST),
        (
            "/v1/jobs",
            "{\"video\": true}",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/jobs",
            "{\"input\": \"a.mp4\", \"colour\": 1}",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/jobs",
            "{\"input\": \"../models/yolo11n-coco-320.onnx\"}",
            StatusCode::FORBIDDEN,
        ),
        (
            "/v1/jobs",
            "{\"input\": \"/etc/passwd\"}",
            StatusCode::FORBIDDEN,
        ),
        (
            "/v1/jobs",
            "{\"input\": \"missing.mp4\"}",
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/jobs",
            "{\"input\": \"traffic-640x360.mp4\", \"detect\": {\"input_size\": 100}}",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/streams",
            "{\"source\": \"-\"}",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/streams",
            "{\"source\": \"../../etc/passwd\"}",
            StatusCode::FORBIDDEN,
        ),
        (
            "/v1/streams",
            "{\"source\": \"traffic-640x360.mp4\", \"target_fps\": 0}",
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (uri, body, expected) in cases {
        let (status, value) = server.call("POST", uri, Some(body)).await;
        assert_eq!(status, expected, "{uri} {body}: {value}");
        assert!(
            value["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{value}"
        );
    }
    let oversize = format!("{{\"input\": \"{}\"}}", "a".repeat(server::MAX_BODY_BYTES));
    let (status, _) = server.call("POST", "/v1/jobs", Some(&oversize)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    for uri in [
        "/v1/jobs/job-99",
        "/v1/streams/stream-99",
        "/v1/streams/stream-99/events",
    ] {
        let (status, value) = server.call("GET", uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(value["error"].as_str().unwrap().contains("99"), "{value}");
    }
    let (status, _) = server.call("DELETE", "/v1/streams/stream-99", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_job_runs_to_completion_and_writes_its_results() {
    let server = TestServer::new("job", Some(TOKEN));
    let body = json!({
        "input": "traffic-640x360.mp4",
        "max_frames": 12,
        "csv": true,
        "detect": {"input_size": 256, "classes": ["car", "truck"]}
    });
    let (status, created) = server
        .call("POST", "/v1/jobs", Some(&body.to_string()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert!(["queued", "running"].contains(&created["status"].as_str().unwrap()));
    let started = Instant::now();
    let job = loop {
        let (status, job) = server.call("GET", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        if !["queued", "running"].contains(&job["status"].as_str().unwrap()) {
            break job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "job still running: {job}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["progress"]["frames"], 12);
    assert_eq!(job["progress"]["total"], 12);
    assert_eq!(job["summary"]["frames"], 12);
    let events = std::fs::read_to_string(job["results"]["events"].as_str().unwrap()).unwrap();
    let frames: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l.get("tracks").is_some())
        .collect();
    assert_eq!(frames.len(), 12);
    let names: Vec<&str> = frames
        .iter()
        .flat_map(|f| f["tracks"].as_array().unwrap())
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| ["car", "truck"].contains(n)),
        "{names:?}"
    );
    let csv = std::fs::read_to_string(job["results"]["csv"].as_str().unwrap()).unwrap();
    assert_eq!(csv.lines().count(), names.len() + 1);
    let (_, metrics) = server
        .send(
            Request::get("/metrics")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(&format!(
            "streamtrack_frames_processed_total{{job=\"{id}\"}} 12"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stream_starts_sends_events_and_stops() {
    let server = TestServer::new("stream", None);
    let body = json!({
        "source": "traffic-640x360.mp4",
        "record": true,
        "detect": {"input_size": 256}
    });
    let (status, created) = server
        .call("POST", "/v1/streams", Some(&body.to_string()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();

    // Follow the server-sent events until a few frame records came through.
    let request = Request::get(format!("/v1/streams/{id}/events"))
        .body(Body::empty())
        .unwrap();
    let response = server.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while text.matches("\"tracks\"").count() < 5 {
        assert!(Instant::now() < deadline, "no events: {text}");
        let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("an event within a minute")
            .expect("the stream is open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    let first = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let record: Value = serde_json::from_str(first).unwrap();
    assert!(
        record["frame"].is_u64() && record["tracks"].is_array(),
        "{record}"
    );

    // The counters follow the event stream (a frame is counted once its results are out).
    let running = loop {
        let (status, running) = server.call("GET", &format!("/v1/streams/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(running["status"], "running", "{running}");
        if running["frames_processed"].as_u64().unwrap() >= 5 {
            break running;
        }
        assert!(Instant::now() < deadline, "counters stuck: {running}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(running["frames_in"].as_u64().unwrap() >= 5, "{running}");
    assert!(running["fps"].as_f64().unwrap() > 0.0, "{running}");

    let (status, stopped) = server
        .call("DELETE", &format!("/v1/streams/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["status"], "stopped");
    // Everything analysed was recorded, and the recording is finalised (track summaries).
    let events = std::fs::read_to_string(stopped["events_file"].as_str().unwrap()).unwrap();
    let frames = events.lines().filter(|l| l.contains("\"tracks\"")).count() as u64;
    assert_eq!(frames, stopped["frames_processed"].as_u64().unwrap());
    assert!(events.contains("\"event\":\"track_end\""));
    // The subscriber's event stream ends with the stream.
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect()).await;
    assert!(rest.is_ok(), "the event stream closes");
    let (status, _) = server.call("GET", &format!("/v1/streams/{id}"), None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a stopped stream is forgotten"
    );
}

#[test]
fn the_openapi_document_lists_exactly_the_routes() {
    let doc: Value = serde_json::from_str(server::OPENAPI).unwrap();
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "delete", "put", "patch"].contains(&k.as_str()))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut routes: Vec<(String, String)> = server::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
}

/// Every route in [`server::ROUTES`] is served (a request does not fall through to 404 for
/// a missing route; unknown ids still answer with a JSON error).
#[tokio::test]
async fn every_listed_route_is_served() {
    let server = TestServer::new("routes", None);
    for (method, path) in server::ROUTES {
        let uri = path.replace("{id}", "none");
        let request = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(&uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let (status, body) = server.send(request).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        if status == StatusCode::NOT_FOUND {
            assert!(
                String::from_utf8_lossy(&body).contains("none"),
                "{method} {uri}"
            );
        }
    }
}
