//! The HTTP API through its router (no network): job lifecycle, stream start/stop with
//! server-sent events and metrics, authentication, bad requests, unknown ids, oversize
//! bodies, paths outside the media root, and the OpenAPI document.

#[path = "common/api.rs"]
mod api;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use streamtrack::config::Config;
use streamtrack::server::{self, AppState, ServerConfig};
use streamtrack::setup::DetectorSpec;
use tower::ServiceExt;

const TOKEN: &str = "test-token";

struct TestServer {
    app: Router,
    results: PathBuf,
}

/// The results folder of the test `name`.
fn results_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("streamtrack-api-{name}-{}", std::process::id()))
}

/// The test server's configuration: the shared videos as media root, the small CPU model.
fn server_config(name: &str, token: Option<&str>) -> ServerConfig {
    ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        token: token.map(str::to_string),
        media_root: "../shared/data/video".into(),
        results_dir: results_dir(name),
        model: DetectorSpec {
            model: Some("../shared/data/models/yolo11n-coco-320.onnx".into()),
            device: Some("cpu".parse().unwrap()),
            ..DetectorSpec::default()
        },
        config: Config::default(),
        max_streams: server::DEFAULT_MAX_STREAMS,
        keep_jobs: server::DEFAULT_KEEP_JOBS,
        max_jobs: server::DEFAULT_MAX_JOBS,
        idle_timeout: server::DEFAULT_IDLE_TIMEOUT,
        streams: Vec::new(),
    }
}

impl TestServer {
    fn new(name: &str, token: Option<&str>) -> Self {
        Self::with_config(server_config(name, token))
    }

    fn with_config(config: ServerConfig) -> Self {
        let results = config.results_dir.clone();
        Self {
            app: server::router(AppState::new(config).unwrap()),
            results,
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        api::send(&self.app, request).await
    }

    async fn call(&self, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        api::call(&self.app, TOKEN, method, uri, body).await
    }

    /// Posts `body` to `uri` `count` times; the ids created.
    async fn create_many(&self, uri: &str, body: &Value, count: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..count {
            let (status, created) = self.call("POST", uri, Some(&body.to_string())).await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            ids.push(created["id"].as_str().unwrap().to_string());
        }
        ids
    }

    /// [`api::poll`] on this server.
    async fn poll(
        &self,
        uri: &str,
        timeout: Duration,
        waiting_for: &str,
        done: impl FnMut(&Value) -> bool,
    ) -> Value {
        api::poll(&self.app, TOKEN, uri, timeout, waiting_for, done).await
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
    for uri in [
        "/metrics",
        "/openapi.json",
        "/v1/jobs/job-1",
        "/no-such-route",
    ] {
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
    let (status, _) = server.call("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    // The scheme's case does not matter (RFC 7235); the token's does.
    for (value, expected) in [
        (format!("bearer {TOKEN}"), StatusCode::OK),
        (format!("BEARER {TOKEN}"), StatusCode::OK),
        (
            format!("Bearer {}", TOKEN.to_uppercase()),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let request = Request::get("/metrics")
            .header(header::AUTHORIZATION, &value)
            .body(Body::empty())
            .unwrap();
        assert_eq!(server.send(request).await.0, expected, "{value}");
    }
}

/// The orchestrator's probes answer without the token; readiness fails, with the reason,
/// when the results folder cannot be written.
#[tokio::test]
async fn probes_answer_without_the_token() {
    let server = TestServer::new("probes", Some(TOKEN));
    let request = Request::get("/healthz").body(Body::empty()).unwrap();
    let (status, body) = server.send(request).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"ok".as_slice())
    );
    let request = Request::get("/readyz").body(Body::empty()).unwrap();
    let (status, body) = server.send(request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let ready: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["streams"], serde_json::json!({}));

    let results = results_dir("probes");
    std::fs::remove_dir_all(&results).unwrap();
    std::fs::write(&results, b"not a folder").unwrap();
    let request = Request::get("/readyz").body(Body::empty()).unwrap();
    let (status, body) = server.send(request).await;
    let ready: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["ready"], false);
    assert!(
        ready["problems"][0]
            .as_str()
            .unwrap()
            .contains("results folder"),
        "{ready}"
    );
    std::fs::remove_file(&results).unwrap();
}

/// Unknown routes and methods answer with the API's JSON error shape.
#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let server = TestServer::new("fallback", None);
    for (method, uri, expected) in [
        ("GET", "/no/such/route", StatusCode::NOT_FOUND),
        ("PUT", "/v1/jobs", StatusCode::METHOD_NOT_ALLOWED),
        ("POST", "/healthz", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let (status, value) = server.call(method, uri, None).await;
        assert_eq!(status, expected, "{method} {uri}");
        assert!(
            value["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{value}"
        );
    }
}

/// A restarted server goes on from the highest id in its results folder instead of writing
/// into an earlier job's results.
#[tokio::test]
async fn job_ids_continue_after_a_restart() {
    let config = server_config("restart", None);
    std::fs::create_dir_all(config.results_dir.join("job-7")).unwrap();
    let server = TestServer::with_config(config);
    let body =
        json!({"input": "traffic-640x360.mp4", "max_frames": 1, "detect": {"input_size": 64}});
    let (status, created) = server
        .call("POST", "/v1/jobs", Some(&body.to_string()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["id"], "job-8");
    server.call("DELETE", "/v1/jobs/job-8", None).await;
}

/// Past `max_streams` live streams, a new one is refused with 429; a FIFO in the media root
/// is refused before a worker could block on it.
#[tokio::test]
async fn stream_limit_and_special_files_are_refused() {
    let mut config = server_config("limits", None);
    config.max_streams = 0;
    let server = TestServer::with_config(config);
    let body = json!({"source": "traffic-640x360.mp4"});
    let (status, value) = server
        .call("POST", "/v1/streams", Some(&body.to_string()))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{value}");
    assert!(
        value["error"].as_str().unwrap().contains("--max-streams"),
        "{value}"
    );

    let media = results_dir("fifo-media");
    std::fs::create_dir_all(&media).unwrap();
    let fifo = media.join("pipe.mp4");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let mut config = server_config("fifo", None);
    config.media_root = media.clone();
    let server = TestServer::with_config(config);
    for (uri, body) in [
        ("/v1/jobs", json!({"input": "pipe.mp4"})),
        ("/v1/streams", json!({"source": "pipe.mp4"})),
    ] {
        let (status, value) = server.call("POST", uri, Some(&body.to_string())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {value}");
        assert!(
            value["error"]
                .as_str()
                .unwrap()
                .contains("not a regular file"),
            "{value}"
        );
    }
    std::fs::remove_dir_all(&media).unwrap();
}

/// `serve --streams`: the configured streams start with the server and are listed like posted
/// ones; a list with a bad entry is refused naming the entry.
#[tokio::test]
async fn configured_streams_start_with_the_server() {
    let camera = json!({"source": "rtsp://user:secret@127.0.0.1:9/stream", "target_fps": 5.0});
    let mut config = server_config("configured", None);
    config.streams = vec![serde_json::from_value(camera.clone()).unwrap()];
    let results = config.results_dir.clone();
    let state = AppState::new(config).unwrap();
    state.start_configured_streams().unwrap();
    let server = TestServer {
        app: server::router(state.clone()),
        results,
    };
    let (status, list) = server.call("GET", "/v1/streams", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let streams = list.as_array().unwrap();
    assert_eq!(streams.len(), 1, "{list}");
    assert_eq!(streams[0]["source"], "rtsp://127.0.0.1:9/stream", "{list}");
    assert_eq!(streams[0]["status"], "connecting", "{list}");
    let uri = format!("/v1/streams/{}", streams[0]["id"].as_str().unwrap());
    let (status, stopped) = server.call("DELETE", &uri, None).await;
    assert_eq!(status, StatusCode::OK, "{stopped}");

    let mut config = server_config("configured-bad", None);
    config.streams = [camera, json!({"source": "../outside.mp4"})]
        .into_iter()
        .map(|request| serde_json::from_value(request).unwrap())
        .collect();
    let state = AppState::new(config).unwrap();
    let error = state.start_configured_streams().unwrap_err().to_string();
    assert!(
        error.contains("stream 2 of the configuration (../outside.mp4)"),
        "{error}"
    );
    state.stop_all();
}

/// The stream lists shipped in `deploy/` are what `serve --streams` reads: each entry is a
/// stream request the server accepts (RTSP cameras, so no media root is involved).
#[test]
fn the_deployment_stream_lists_are_valid_requests() {
    let lists = [
        "deploy/k8s/base/streams.json",
        "deploy/k8s/overlays/camera-group-north/streams.json",
        "deploy/compose/streams.json",
    ];
    for path in lists {
        let text = std::fs::read_to_string(path).unwrap();
        let requests: Vec<server::StreamRequest> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(!requests.is_empty(), "{path}");
        let mut config = server_config("deploy-lists", None);
        config.max_streams = requests.len();
        config.streams = requests;
        let state = AppState::new(config).unwrap();
        let started = state.start_configured_streams();
        state.stop_all();
        started.unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

/// The Compose set-up's configuration loads and sends events to its broker.
#[test]
fn the_compose_configuration_is_valid() {
    let config = Config::load("deploy/compose/streamtrack.toml".as_ref()).unwrap();
    let mqtt = config.sinks.mqtt.expect("an MQTT sink");
    assert_eq!(mqtt.url, "mqtt://mosquitto:1883");
}

/// A camera that never answers shows its failed attempts while the stream is connecting,
/// and the stream still stops on request.
#[tokio::test]
async fn a_camera_that_never_connects_reports_its_attempts() {
    let server = TestServer::new("refused", None);
    // Port 9 (discard) has no RTSP server here: every attempt is refused.
    let body = json!({"source": "rtsp://127.0.0.1:9/stream"});
    let (status, created) = server
        .call("POST", "/v1/streams", Some(&body.to_string()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let uri = format!("/v1/streams/{}", created["id"].as_str().unwrap());
    let waiting = "no failed attempt reported";
    server
        .poll(&uri, Duration::from_secs(30), waiting, |view| {
            assert_eq!(view["status"], "connecting", "{view}");
            view["connection_failures"].as_u64().unwrap() >= 2
        })
        .await;
    let (status, stopped) = server.call("DELETE", &uri, None).await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
}

/// Over real TCP: a client that sends half a request, or declares a body it never sends, is
/// disconnected once the idle timeout passes; a complete request still gets its answer.
#[tokio::test]
async fn idle_connections_are_closed() {
    let mut config = server_config("idle", None);
    config.idle_timeout = Duration::from_millis(500);
    let results = config.results_dir.clone();
    let state = AppState::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve_on(listener, state, async {
        let _ = stopped.await;
    }));
    // Sends `request` on a new connection and reads until the server closes it (at most
    // 10 s): the answer and how long the server took to close.
    let exchange = move |request: &'static str| {
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut client = std::net::TcpStream::connect(address).unwrap();
            client.write_all(request.as_bytes()).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let started = Instant::now();
            let mut answer = Vec::new();
            let closed = client.read_to_end(&mut answer).is_ok();
            (
                closed,
                String::from_utf8_lossy(&answer).into_owned(),
                started.elapsed(),
            )
        })
    };
    // (The declared body may also be refused at once as too large: either way the
    // connection is not held.)
    for (partial, waits_for_timeout) in [
        ("GET /healthz HTTP/1.1\r\nHost: x\r\n", true),
        (
            "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{",
            false,
        ),
    ] {
        let (closed, answer, took) = exchange(partial).await.unwrap();
        assert!(closed, "still open after 10 s: {partial:?}");
        if waits_for_timeout {
            assert!(
                answer.is_empty() && took >= Duration::from_millis(400),
                "{answer} after {took:?}"
            );
        }
    }
    let (_, answer, _) = exchange("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(results);
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
        (
            "/v1/streams",
            "{\"source\": \"traffic-640x360.mp4\", \"sinks\": {\"mqtt\": \
             {\"url\": \"mqtts://broker\", \"ca_file\": \"/etc/passwd\"}}}",
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
    let (status, listed) = server.call("GET", "/v1/jobs", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "{listed}");
    let uri = format!("/v1/jobs/{id}");
    let job = server
        .poll(&uri, Duration::from_secs(300), "job still running", |job| {
            !["queued", "running"].contains(&job["status"].as_str().unwrap())
        })
        .await;
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
    let (status, listed) = server.call("GET", "/v1/streams", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1);

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

/// A long-running server forgets what it no longer needs: finished jobs beyond `keep_jobs`
/// (oldest first, with their metric series; their results stay on disk), and a deleted
/// stream's series.
#[tokio::test]
async fn finished_jobs_beyond_the_limit_and_deleted_streams_are_forgotten() {
    let mut config = server_config("forget", None);
    config.keep_jobs = 1;
    let server = TestServer::with_config(config);
    let metrics = || async {
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        String::from_utf8(server.send(request).await.1).unwrap()
    };
    let body =
        json!({"input": "traffic-640x360.mp4", "max_frames": 2, "detect": {"input_size": 64}});
    let ids = server.create_many("/v1/jobs", &body, 2).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let uri = format!("/v1/jobs/{}", ids[1]);
    server
        .poll(&uri, Duration::from_secs(300), "second job", |job| {
            job["status"] == "done"
        })
        .await;
    // The second job's worker forgets the first right after the second finishes.
    let left = deadline.saturating_duration_since(Instant::now());
    let forgotten = server
        .poll("/v1/jobs", left, "first job not forgotten", |listed| {
            listed.as_array().unwrap().len() == 1
        })
        .await;
    assert_eq!(forgotten[0]["id"], ids[1].as_str());
    let (status, _) = server
        .call("GET", &format!("/v1/jobs/{}", ids[0]), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(server.results.join(&ids[0]).join("events.jsonl").exists());
    let text = metrics().await;
    assert!(!text.contains(&format!("job=\"{}\"", ids[0])), "{text}");
    assert!(
        text.contains(&format!(
            "streamtrack_frames_processed_total{{job=\"{}\"}} 2",
            ids[1]
        )),
        "{text}"
    );

    let stream = json!({"source": "traffic-640x360.mp4"});
    let (status, created) = server
        .call("POST", "/v1/streams", Some(&stream.to_string()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert!(metrics().await.contains(&format!("stream=\"{id}\"")));
    let (status, _) = server
        .call("DELETE", &format!("/v1/streams/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics().await;
    assert!(!text.contains(&format!("stream=\"{id}\"")), "{text}");
}

/// Streams on the same model share one loaded copy of it, and streams with the same detector
/// settings one network that batches their frames.
#[tokio::test]
async fn streams_share_one_loaded_model() {
    let config = server_config("shared-model", None);
    let results = config.results_dir.clone();
    let state = AppState::new(config).unwrap();
    let server = TestServer {
        app: server::router(state.clone()),
        results,
    };
    let body = json!({"source": "traffic-640x360.mp4", "target_fps": 2.0});
    let ids = server.create_many("/v1/streams", &body, 2).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        let left = deadline.saturating_duration_since(Instant::now());
        let uri = format!("/v1/streams/{id}");
        server
            .poll(&uri, left, "no frame processed", |view| {
                view["frames_processed"].as_u64().unwrap_or(0) > 0
            })
            .await;
    }
    let models = state
        .config
        .model
        .models
        .as_ref()
        .expect("the server's model cache");
    assert_eq!(models.len(), 1);
    assert_eq!(state.shared_networks(), 1);
    state.stop_all();
}

/// A stream brings its own zones, tracker settings and calibration (the server's
/// configuration has none): its counters show its area, its tracks get speeds, a speed limit
/// under every vehicle's speed raises events, and the calibration is kept beside its
/// results. Unusable settings are refused with the part named.
#[tokio::test]
async fn a_stream_brings_its_own_zones_tracker_and_calibration() {
    let server = TestServer::new("per-stream", None);
    for (bad, part) in [
        (
            json!({"tracker": {"high_thresh": 2.0}}),
            "tracker: high_thresh",
        ),
        (
            json!({"zones": {"areas": [{"name": "a", "polygon": [[0, 0], [9, 9]]}]}}),
            "zones: ",
        ),
        (
            json!({"calibration": {"image_points": [[0, 0]]}}),
            "calibration: ",
        ),
    ] {
        let mut body = bad.clone();
        body["source"] = json!("traffic-640x360.mp4");
        let (status, answer) = server
            .call("POST", "/v1/streams", Some(&body.to_string()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().starts_with(part),
            "{bad}: {answer}"
        );
    }

    let body = json!({
        "source": "traffic-640x360.mp4",
        "record": true,
        "zones": {"areas": [{"name": "road", "polygon": [[0, 120], [640, 120], [640, 360], [0, 360]]}]},
        "tracker": {"track_buffer": 0.5},
        "calibration": {"metres_per_pixel": 0.05, "speed_limit": 1.0},
    });
    let (status, created) = server
        .call("POST", "/v1/streams", Some(&body.to_string()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let uri = format!("/v1/streams/{id}");
    let view = server
        .poll(
            &uri,
            Duration::from_secs(120),
            "no entry into the area",
            |view| {
                view["zones"]["areas"]["road"]
                    .as_object()
                    .is_some_and(|classes| !classes.is_empty())
            },
        )
        .await;
    assert_eq!(view["status"], "running", "{view}");
    let events = server.results.join(&id).join("events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        if text.contains("\"speed_limit\"") {
            assert!(text.contains("\"speed\":"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no speed-limit event: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kept = std::fs::read_to_string(server.results.join(&id).join("calibration.toml")).unwrap();
    assert!(kept.contains("metres_per_pixel = 0.05"), "{kept}");
    let (status, stopped) = server.call("DELETE", &uri, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stopped["status"], "stopped", "{stopped}");
}

/// With `max_jobs` 2, two jobs run at once and a third waits queued until one of them ends.
#[tokio::test]
async fn jobs_run_concurrently_up_to_the_limit() {
    let mut config = server_config("max-jobs", None);
    config.max_jobs = 2;
    let server = TestServer::with_config(config);
    let body =
        json!({"input": "traffic-640x360.mp4", "max_frames": 300, "detect": {"input_size": 160}});
    let ids = server.create_many("/v1/jobs", &body, 3).await;
    let statuses = |jobs: &Value| -> Vec<String> {
        ids.iter()
            .map(|id| {
                let job = jobs
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|job| job["id"] == id.as_str())
                    .unwrap();
                job["status"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let jobs = server
        .poll(
            "/v1/jobs",
            Duration::from_secs(120),
            "two jobs running",
            |jobs| statuses(jobs).iter().filter(|s| *s == "running").count() == 2,
        )
        .await;
    assert!(statuses(&jobs).contains(&"queued".to_string()), "{jobs}");
    server
        .poll(
            "/v1/jobs",
            Duration::from_secs(300),
            "every job done",
            |jobs| statuses(jobs).iter().all(|s| s == "done"),
        )
        .await;
}
