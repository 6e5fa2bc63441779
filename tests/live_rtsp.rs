//! `live` against an RTSP server on 127.0.0.1 that is killed mid-stream and restarted: the
//! client reports the outage, reconnects, keeps processing with the same tracker, and never
//! reuses a track id.

mod common;
#[path = "common/rtsp_server.rs"]
mod rtsp_server;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::data;
use rtsp_server::RtspTestServer;
use serde_json::Value;

/// Lines of the JSON-lines file so far.
fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn frame_count(lines: &[Value]) -> usize {
    lines
        .iter()
        .filter(|l| l.get("frame").is_some() && l.get("event").is_none())
        .count()
}

/// Waits until `done` holds for the events, failing with the process's state after `limit`.
fn wait_for(
    path: &Path,
    child: &mut Child,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) {
    let started = Instant::now();
    loop {
        if done(&events(path)) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "live exited early ({status}) waiting for {what}: {}",
                stderr_text(child)
            );
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Everything the process wrote to stderr (after it exited).
fn stderr_text(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
    }
    text
}

#[test]
fn live_rtsp_survives_a_server_restart() {
    let video = data("video/traffic-640x360.mp4");
    let server = RtspTestServer::start(&video, 0);
    let (port, url) = (server.port(), server.url());
    let dir = std::env::temp_dir().join(format!("streamtrack-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events_path = dir.join("events.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamtrack"))
        .args([
            "live",
            "--source",
            &url,
            "--device",
            "cpu",
            "--input-size",
            "256",
        ])
        .args(["--model", "../shared/data/models/yolo11n-coco-320.onnx"])
        .args(["--stall-timeout", "2", "--target-fps", "10"])
        .arg("--events")
        .arg(&events_path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");

    wait_for(
        &events_path,
        &mut child,
        Duration::from_secs(120),
        "first frames",
        |e| frame_count(e) >= 15,
    );
    let before = frame_count(&events(&events_path));
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    let server = RtspTestServer::start(&video, port);
    wait_for(
        &events_path,
        &mut child,
        Duration::from_secs(120),
        "frames after the restart",
        |e| e.iter().any(|l| l["event"] == "outage") && frame_count(e) >= before + 15,
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -INT {}", child.id()))
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Interrupted runs exit 130, with their outputs finalised.
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    drop(server);

    assert!(
        stderr.contains("stream lost"),
        "the outage is logged: {stderr}"
    );
    assert!(stderr.contains("stream back after"), "{stderr}");
    assert!(
        stderr.contains("1 source outages"),
        "the summary counts it: {stderr}"
    );
    assert!(stderr.contains("latency p50"), "{stderr}");

    let lines = events(&events_path);
    let outage = lines.iter().find(|l| l["event"] == "outage").unwrap();
    assert!(outage["duration"].as_f64().unwrap() >= 1.5, "{outage}");
    assert!(
        outage["source"]
            .as_str()
            .unwrap()
            .starts_with("rtsp://127.0.0.1")
    );
    // Frame indices and times only move forward across the outage (late lines, for earlier
    // frames, aside).
    let frames: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("tracks").is_some() && l.get("late").is_none())
        .collect();
    for pair in frames.windows(2) {
        assert!(pair[1]["frame"].as_u64() > pair[0]["frame"].as_u64());
        assert!(pair[1]["time"].as_f64() > pair[0]["time"].as_f64());
    }
    // Cars are tracked on both sides of the outage.
    let outage_at = lines.iter().position(|l| l["event"] == "outage").unwrap();
    let tracked = |part: &[Value]| {
        part.iter()
            .filter_map(|l| l.get("tracks"))
            .flat_map(|t| t.as_array().unwrap())
            .count()
    };
    assert!(tracked(&lines[..outage_at]) > 0 && tracked(&lines[outage_at..]) > 0);
    // A track id is never used again once its track has ended.
    let mut ended = HashSet::new();
    for line in &lines {
        if line["event"] == "track_end" {
            assert!(
                ended.insert(line["track_id"].as_u64().unwrap()),
                "ended twice: {line}"
            );
        }
        for track in line
            .get("tracks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let id = track["id"].as_u64().unwrap();
            assert!(!ended.contains(&id), "id {id} reused after its track ended");
        }
    }
    assert!(!ended.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
