//! The live view: a stream's annotated frames as MJPEG (`GET /v1/streams/{id}/mjpeg`) and
//! the built-in page at `/`, loaded in a real browser (headless Chromium, Debian's
//! `chromium`, installed by `.ci/run`) against a running server; stream requests with
//! live-view and recording settings out of range are refused.

#[path = "common/api.rs"]
mod api;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use streamtrack::config::Config;
use streamtrack::server::{self, AppState, ServerConfig};
use streamtrack::setup::DetectorSpec;
use tower::ServiceExt;

const TOKEN: &str = "view-token";

/// Counting zones on the traffic video: an area over the road, so vehicles enter it.
const ZONES: &str = r#"
[[zones.areas]]
name = "road"
polygon = [[0, 120], [640, 120], [640, 360], [0, 360]]
"#;

fn server_config(name: &str) -> ServerConfig {
    let dir = std::env::temp_dir().join(format!("streamtrack-view-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("zones.toml");
    std::fs::write(&config_path, ZONES).unwrap();
    ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        token: Some(TOKEN.to_string()),
        media_root: "../shared/data/video".into(),
        results_dir: dir.join("results"),
        model: DetectorSpec {
            model: Some("../shared/data/models/yolo11n-coco-320.onnx".into()),
            device: Some("cpu".parse().unwrap()),
            ..DetectorSpec::default()
        },
        config: Config::load(&config_path).unwrap(),
        max_streams: server::DEFAULT_MAX_STREAMS,
        keep_jobs: server::DEFAULT_KEEP_JOBS,
        max_jobs: server::DEFAULT_MAX_JOBS,
        idle_timeout: server::DEFAULT_IDLE_TIMEOUT,
        streams: Vec::new(),
    }
}

/// One part of a multipart MJPEG answer: its frame number and JPEG bytes.
struct Part {
    number: u64,
    jpeg: Vec<u8>,
}

/// Takes the first complete part off the front of `buffer`, if there is one.
fn take_part(buffer: &mut Vec<u8>) -> Option<Part> {
    let head_end = buffer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    assert!(head.starts_with("--streamtrack-frame\r\n"), "{head}");
    assert!(head.contains("Content-Type: image/jpeg"), "{head}");
    let field = |name: &str| -> u64 {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {head}"))
            .trim()
            .parse()
            .unwrap()
    };
    let (length, number) = (field("Content-Length:") as usize, field("X-Frame-Number:"));
    let end = head_end + 4 + length + 2;
    if buffer.len() < end {
        return None;
    }
    let jpeg = buffer[head_end + 4..head_end + 4 + length].to_vec();
    assert_eq!(&buffer[end - 2..end], b"\r\n");
    buffer.drain(..end);
    Some(Part { number, jpeg })
}

#[tokio::test]
async fn mjpeg_shows_the_annotated_frames_at_the_view_rate() {
    let config = server_config("mjpeg");
    let state = AppState::new(config).unwrap();
    let app = server::router(state.clone());
    for fps in [0.0, 31.0, -1.0] {
        let request = json!({"source": "traffic-640x360.mp4", "view_fps": fps});
        let (status, answer) = api::call(
            &app,
            TOKEN,
            "POST",
            "/v1/streams",
            Some(&request.to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{fps}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("view_fps"),
            "{answer}"
        );
    }
    for (request, wanted) in [
        (
            json!({"source": "traffic-640x360.mp4", "segment_s": 60}),
            "set video too",
        ),
        (
            json!({"source": "traffic-640x360.mp4", "video": true, "segment_s": 0}),
            "segment_s must be a positive number",
        ),
    ] {
        let (status, answer) = api::call(
            &app,
            TOKEN,
            "POST",
            "/v1/streams",
            Some(&request.to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(wanted),
            "{answer}"
        );
    }
    let (status, _) = api::call(&app, TOKEN, "GET", "/v1/streams/stream-9/mjpeg", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let request = json!({"source": "traffic-640x360.mp4", "view_fps": 10.0});
    let (status, stream) = api::call(
        &app,
        TOKEN,
        "POST",
        "/v1/streams",
        Some(&request.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{stream}");
    let id = stream["id"].as_str().unwrap().to_string();
    let request = Request::get(format!("/v1/streams/{id}/mjpeg"))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "multipart/x-mixed-replace; boundary=streamtrack-frame"
    );
    let mut body = response.into_body();
    let (mut buffer, mut parts, mut arrivals) = (Vec::new(), Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    while parts.len() < 4 {
        let frame = tokio::time::timeout_at(deadline.into(), body.frame())
            .await
            .expect("frames arrive")
            .expect("the answer goes on")
            .unwrap();
        buffer.extend_from_slice(&frame.into_data().unwrap());
        while let Some(part) = take_part(&mut buffer) {
            arrivals.push(Instant::now());
            parts.push(part);
        }
    }
    for pair in parts.windows(2) {
        assert_eq!(pair[1].number, pair[0].number + 1);
    }
    for part in &parts {
        let image = image::load_from_memory(&part.jpeg).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (640, 360));
    }
    // At 10 frames per second, three intervals take at least about 0.3 s (the video itself
    // plays at 30).
    let spread = arrivals[3] - arrivals[0];
    assert!(spread >= Duration::from_millis(250), "{spread:?}");

    // Stopping the stream ends the answer.
    let (status, _) = api::call(&app, TOKEN, "DELETE", &format!("/v1/streams/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    });
    ended.await.expect("the MJPEG answer ends with the stream");
    state.stop_all();
}

/// Headless Chromium, as Debian installs it.
fn chromium() -> PathBuf {
    ["chromium", "/usr/bin/chromium", "chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|program| Command::new(program).arg("--version").output().is_ok())
        .expect("chromium is installed (Debian's `chromium`; .ci/run installs it)")
}

/// The number in `<td>{name}</td><td>N</td>` of the page's counter table.
fn counter(dom: &str, name: &str) -> f64 {
    let start = dom
        .find(&format!("<td>{name}</td><td>"))
        .unwrap_or_else(|| panic!("no '{name}' counter in the page:\n{dom}"))
        + name.len()
        + 13;
    dom[start..start + dom[start..].find('<').unwrap()]
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_page_shows_live_streams_in_a_browser() {
    let browser = chromium();
    let state = AppState::new(server_config("page")).unwrap();
    let app = server::router(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve_on(listener, state.clone(), async {
        let _ = stopped.await;
    }));

    let request = json!({"source": "traffic-640x360.mp4", "view_fps": 15.0});
    let (status, stream) = api::call(
        &app,
        TOKEN,
        "POST",
        "/v1/streams",
        Some(&request.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{stream}");
    let id = stream["id"].as_str().unwrap().to_string();
    // Wait for the first vehicles to enter the area, so the page has zone counts to show.
    let uri = format!("/v1/streams/{id}");
    api::poll(
        &app,
        TOKEN,
        &uri,
        Duration::from_secs(120),
        "no vehicle entered the area",
        |view| view["zones"]["areas"]["road"].is_object(),
    )
    .await;

    // The page reads the token from the address's fragment. Chromium's virtual time runs
    // the page's timers (refresh every second) quickly while the live view's frames arrive
    // in real time; the DOM is printed when the budget is spent.
    let url = format!("http://{address}/#token={TOKEN}");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=600000",
                "--dump-dom",
            ])
            .arg(&url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert!(dom.contains(&format!(r#"id="stream-{id}""#)), "{dom}");
    assert!(dom.contains(r#"class="status-running""#), "{dom}");
    assert!(dom.contains("traffic-640x360.mp4"), "{dom}");
    // The live image was replaced by new frames more than once.
    let frames_shown: u64 = dom
        .split(r#"data-frames=""#)
        .nth(1)
        .and_then(|rest| rest[..rest.find('"')?].parse().ok())
        .unwrap_or_else(|| panic!("no live image in the page:\n{dom}"));
    assert!(
        frames_shown >= 2,
        "the live image updated {frames_shown} times"
    );
    assert!(dom.contains("src=\"blob:"), "{dom}");
    assert!(counter(&dom, "frames processed") > 0.0);
    assert!(dom.contains(r#"data-zone="road""#), "{dom}");
    assert!(dom.contains("entered "), "{dom}");

    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    state.stop_all();
}
