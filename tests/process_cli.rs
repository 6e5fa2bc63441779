//! Commands end to end on the real videos: `process` with the flags that trade accuracy for
//! speed (`--input-size`, `--frame-skip`), `agree` on the INT8 export, and `bench`.

mod common;

use std::process::Command;

use common::data;
use streamtrack::video::FrameSource;
use streamtrack::video::mp4_source::Mp4Source;

/// Whether `line` of a run's output comes from streamtrack: its log lines (timestamp, level,
/// a `streamtrack` target) and its summary (frames, outputs written, tracks per class with
/// their speeds).
fn ours(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let log_line = line.starts_with("20")
        && words
            .nth(2)
            .is_some_and(|target| target.starts_with("streamtrack"));
    log_line
        || line.contains(" frames in ")
        || line.starts_with("wrote ")
        || line.ends_with(" tracks")
        || line.contains(" tracks, mean speed ")
}

/// Every 10th frame analysed at 320: the video keeps every frame, the events hold exactly
/// the analysed frames, and cars are still found and tracked. With gaps filled, a track
/// found again gets late lines for the analysed frames it missed; with speeds backfilled, a
/// track's frames before its speed was known get it in late lines too (the tracker also
/// measures the camera's motion, which on this fixed camera changes nothing checked here).
/// The run (default device, no
/// `XDG_RUNTIME_DIR`, as under a service manager) prints nothing but streamtrack's own lines:
/// no GPU driver or encoder library chatter.
#[test]
fn frame_skip_and_input_size_keep_every_frame_and_report_analysed_ones() {
    let dir = std::env::temp_dir().join(format!("streamtrack-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (video, events) = (dir.join("out.mp4"), dir.join("events.jsonl"));
    let (config, calibration) = (dir.join("late.toml"), dir.join("calibration.toml"));
    let late = "[tracker]\nfill_gaps = true\ncamera_motion = true\n[speed]\nbackfill = true\n";
    std::fs::write(&config, late).unwrap();
    std::fs::write(&calibration, "metres_per_pixel = 0.05\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamtrack"))
        .env_remove("XDG_RUNTIME_DIR")
        .arg("--config")
        .arg(&config)
        .args(["process", "--frame-skip", "9"])
        .args(["--input-size", "320", "-o"])
        .arg(&video)
        .arg("--events")
        .arg(&events)
        .arg("--calibration")
        .arg(&calibration)
        .arg("--mot")
        .arg(dir.join("tracks.txt"))
        .arg(data("video/traffic-640x360.mp4"))
        .output()
        .expect("binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let printed = stderr
        .lines()
        .chain(std::str::from_utf8(&out.stdout).unwrap().lines());
    for line in printed.filter(|l| !l.trim().is_empty()) {
        assert!(ours(line), "a line not from streamtrack: {line:?}");
    }

    let mut written = Mp4Source::open(&video).unwrap();
    let mut frames = 0;
    while written.next_frame().unwrap().is_some() {
        frames += 1;
    }
    assert_eq!(frames, 1190, "every input frame is written");

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let analysed: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("tracks").is_some() && l.get("late").is_none())
        .filter_map(|l| l["frame"].as_u64())
        .collect();
    assert_eq!(analysed, (0..1190).step_by(10).collect::<Vec<u64>>());
    let (mut filled, mut backfilled) = (0, 0);
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| l["late"] == true) {
        let frame = line["frame"].as_u64().unwrap();
        assert_eq!(frame % 10, 0, "an analysed frame: {line}");
        let own = lines
            .iter()
            .find(|l| l["frame"] == frame && l.get("late").is_none());
        let own_tracks = own.unwrap()["tracks"].as_array().unwrap();
        let frame_line =
            |l: &&serde_json::Value| l.get("tracks").is_some() && l.get("late").is_none();
        let before = lines[..i].iter().rev().find(frame_line);
        assert!(
            before.unwrap()["frame"].as_u64().unwrap() > frame,
            "late: {line}"
        );
        for track in line["tracks"].as_array().unwrap() {
            match own_tracks.iter().find(|t| t["id"] == track["id"]) {
                // A speed learned later for a track that had none in its frame.
                Some(first) => {
                    assert!(
                        first["speed"].is_null() && track["speed"].is_f64(),
                        "{line}"
                    );
                    assert_eq!(first["box"], track["box"]);
                    backfilled += 1;
                }
                // A box for a track that was not seen in this frame.
                None => {
                    assert!(track["speed"].is_null(), "{line}");
                    filled += 1;
                }
            }
        }
    }
    assert!(
        filled > 0 && backfilled > 0,
        "{filled} filled, {backfilled} backfilled"
    );
    // The MOT file: every box once, the filled ones included, the backfilled speeds not.
    let mot = std::fs::read_to_string(dir.join("tracks.txt")).unwrap();
    let rows: std::collections::HashSet<(&str, &str)> = mot
        .lines()
        .map(|l| {
            let mut fields = l.split(',');
            (fields.next().unwrap(), fields.next().unwrap())
        })
        .collect();
    let seen: usize = lines
        .iter()
        .filter(|l| l.get("late").is_none())
        .filter_map(|l| l["tracks"].as_array())
        .map(Vec::len)
        .sum();
    assert_eq!(
        (mot.lines().count(), rows.len()),
        (seen + filled, seen + filled)
    );
    let car_ids: std::collections::HashSet<u64> = lines
        .iter()
        .filter_map(|l| l["tracks"].as_array())
        .flatten()
        .filter(|t| t["name"] == "car")
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert!(car_ids.len() >= 5, "cars tracked at 320: {car_ids:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The INT8 export agrees with its float original on real frames of both videos, its
/// per-class figures are the terms of that mean, and a threshold it cannot meet fails
/// loudly.
#[test]
fn int8_export_agrees_with_the_float_model_on_video_frames() {
    let run = |min_map50: &str| {
        Command::new(env!("CARGO_BIN_EXE_streamtrack"))
            .args(["agree", "--quiet", "--device", "cpu", "--frames", "6"])
            .arg("--per-class")
            .arg("-m")
            .arg(data("models/yolo11n-coco-320-int8.onnx"))
            .arg("--reference")
            .arg(data("models/yolo11n-coco-320.onnx"))
            .args(["--min-map50", min_map50])
            .arg(data("video/traffic-640x360.mp4"))
            .arg(data("video/pedestrians-768x576.mp4"))
            .output()
            .expect("binary runs")
    };
    let out = run("0.5");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let map50: f64 = stdout
        .split("mAP50 ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no mAP50 in {stdout}"));
    assert!((0.5..=1.0).contains(&map50), "{stdout}");
    // One row per class the reference found: name, reference objects, boxes, AP50, AP50-95.
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|line| !line.starts_with("class "))
        .skip(1)
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert!(rows.iter().any(|row| row[0] == "person"), "{stdout}");
    let ap50: Vec<f64> = rows
        .iter()
        .map(|row| row[row.len() - 2].parse().expect("AP50"))
        .collect();
    let mean = ap50.iter().sum::<f64>() / ap50.len() as f64;
    assert!(
        (mean - map50).abs() <= 0.001,
        "{mean} against {map50}: {stdout}"
    );

    let out = run("1.01");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("does not agree with its reference"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The reports of `streamtrack -q bench --json` with the arguments `args` adds, a run that
/// must succeed.
fn bench_reports(args: impl FnOnce(&mut Command) -> &mut Command) -> serde_json::Value {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_streamtrack"));
    bench.args(["-q", "bench", "--json"]);
    let out = args(&mut bench).output().expect("binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `bench` times every stage, the analysis ones inside the same analysis `process` runs
/// (with the camera's motion measured), and the real pipeline after them.
#[test]
fn bench_reports_every_stage_and_the_pipeline() {
    let config =
        std::env::temp_dir().join(format!("streamtrack-bench-{}.toml", std::process::id()));
    std::fs::write(&config, "[tracker]\ncamera_motion = true\n").unwrap();
    let reports = bench_reports(|bench| {
        bench
            .args(["--layers", "--device", "cpu", "--frames", "8", "--config"])
            .arg(&config)
            .args(["--warmup", "2", "-m"])
            .arg(data("models/yolo11n-coco-320.onnx"))
            .arg(data("video/traffic-640x360.mp4"))
    });
    let report = &reports[0];
    assert_eq!(report["frames"], 8, "{report}");
    let stages: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, streamtrack::bench::STAGES, "{report}");
    // `--layers`: every timed call of a pass in order, the stem first, convolutions named.
    let layers = report["layers"].as_array().unwrap();
    assert!(layers.len() > 80, "{report}");
    assert_eq!(layers[0]["index"], 1, "{report}");
    assert_eq!(layers[0]["layer"], "3->16 3x3/2 to 160x160 f32", "{report}");
    assert!(
        layers.iter().all(|l| l["ms"].as_f64().unwrap() >= 0.0),
        "{report}"
    );
    assert!(report["ops"].as_array().unwrap().is_empty(), "{report}");
    for stage in report["stages"].as_array().unwrap() {
        let median = stage["median_ms"].as_f64().unwrap();
        assert!(median.is_finite() && median >= 0.0, "{stage}");
    }
    std::fs::remove_file(&config).unwrap();
    // The camera motion, the tracker and the drawing do real work on a street full of cars.
    for busy in ["network", "camera motion", "track", "annotate", "encode"] {
        let stage = report["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == busy)
            .unwrap();
        assert!(stage["median_ms"].as_f64().unwrap() > 0.0, "{stage}");
    }
    assert!(report["pipeline_fps"].as_f64().unwrap() > 0.0, "{report}");
}

/// `bench --interleave` gives each model its own column, as the runs one after another do:
/// every column times the frames asked for on its own model and input size.
#[test]
fn bench_interleaved_keeps_a_column_per_model() {
    let reports = bench_reports(|bench| {
        bench
            .args(["--interleave", "--device", "cpu", "--frames", "4"])
            .args(["--warmup", "1", "-m"])
            .arg(data("models/yolo11n-coco-320.onnx"))
            .arg("-m")
            .arg(data("models/yolov8n-coco-640.onnx"))
            .arg(data("video/traffic-640x360.mp4"))
    });
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    for (report, (name, size)) in reports
        .iter()
        .zip([("yolo11n-coco-320", 320), ("yolov8n-coco-640", 640)])
    {
        assert!(report["model"].as_str().unwrap().contains(name), "{report}");
        assert_eq!(report["input"], serde_json::json!([size, size]), "{report}");
        assert_eq!(report["frames"], 4, "{report}");
        let network = report["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "network")
            .unwrap();
        assert!(network["median_ms"].as_f64().unwrap() > 0.0, "{report}");
        assert!(report["pipeline_fps"].as_f64().unwrap() > 0.0, "{report}");
    }
}

/// `live` with two sources in one process: one model whose network calls take the frames
/// of both streams, each stream's events in its own file named after its source; with
/// several sources, an output path without `{stream}` is refused before anything starts.
#[test]
fn live_runs_several_sources_on_one_model() {
    let dir = std::env::temp_dir().join(format!("streamtrack-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let live = |events: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_streamtrack"))
            .args(["live", "--device", "cpu", "--duration", "3", "-m"])
            .arg(data("models/yolo11n-coco-320.onnx"))
            .arg("--source")
            .arg(data("video/traffic-640x360.mp4"))
            .arg("--source")
            .arg(data("video/traffic-640x360.mp4"))
            .arg("--events")
            .arg(events)
            .output()
            .expect("binary runs")
    };
    let out = live(&dir.join("{stream}.jsonl"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("frames of 2 streams in"), "{stderr}");
    assert_eq!(
        stderr.matches("loaded ").count(),
        1,
        "one model load: {stderr}"
    );
    for name in ["traffic-640x360", "traffic-640x360-2"] {
        let events = std::fs::read_to_string(dir.join(format!("{name}.jsonl"))).unwrap();
        assert!(events.contains("\"tracks\":[{"), "{name}: {events}");
    }

    let out = live(&dir.join("all.jsonl"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--events must contain {stream}"),
        "{stderr}"
    );
    assert!(!dir.join("all.jsonl").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

/// `live` with the cameras of the configuration file: each `[[streams]]` entry its own
/// name, outputs and zones (here one has an area and writes its counts, the other has none);
/// a stream without a source is refused with the entry named.
#[test]
fn live_runs_the_streams_of_the_configuration() {
    let dir =
        std::env::temp_dir().join(format!("streamtrack-config-streams-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let video = data("video/traffic-640x360.mp4");
    let config = dir.join("cameras.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[streams]]
source = "{video}"
name = "north"
events = "{dir}/north.jsonl"
[streams.zones]
areas = [{{ name = "road", polygon = [[0, 120], [640, 120], [640, 360], [0, 360]] }}]

[[streams]]
source = "{video}"
name = "south"
events = "{dir}/south.jsonl"
"#,
            video = video.display(),
            dir = dir.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamtrack"))
        .arg("--config")
        .arg(&config)
        .args(["live", "--device", "cpu", "--duration", "3", "-m"])
        .arg(data("models/yolo11n-coco-320.onnx"))
        .output()
        .expect("binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let north = std::fs::read_to_string(dir.join("north.jsonl")).unwrap();
    let south = std::fs::read_to_string(dir.join("south.jsonl")).unwrap();
    assert!(
        north.contains("\"zone_counts\"") && north.contains("\"road\""),
        "{north}"
    );
    assert!(
        south.contains("\"tracks\":[{") && !south.contains("\"road\""),
        "{south}"
    );

    std::fs::write(&config, "[[streams]]\nsource = \"\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamtrack"))
        .arg("--config")
        .arg(&config)
        .args(["live", "--duration", "1"])
        .output()
        .expect("binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("[[streams]] 1: source must not be empty"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `live -o` killed with SIGKILL mid-recording: the fragmented MP4 on disk plays every
/// fragment that was complete (at least the first, about 2 s of frames), without its index.
#[test]
fn a_live_recording_killed_with_sigkill_still_plays() {
    let dir = std::env::temp_dir().join(format!("streamtrack-sigkill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let video = dir.join("rec.mp4");
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamtrack"))
        .args([
            "-q",
            "live",
            "--realtime",
            "--device",
            "cpu",
            "--input-size",
            "160",
        ])
        .arg("--source")
        .arg(data("video/traffic-640x360.mp4"))
        .arg("-m")
        .arg(data("models/yolo11n-coco-320.onnx"))
        .arg("-o")
        .arg(&video)
        .spawn()
        .expect("binary runs");
    // Wait for a second fragment to start: the first one is then complete on disk.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let bytes = std::fs::read(&video).unwrap_or_default();
        if bytes.windows(4).filter(|w| w == b"moof").count() >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no second fragment");
        assert!(child.try_wait().unwrap().is_none(), "live ended early");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let bytes = std::fs::read(&video).unwrap();
    assert!(
        !bytes.windows(4).any(|w| w == b"mfra"),
        "killed before its index"
    );
    let mut source = Mp4Source::open(&video).expect("the killed recording opens");
    let mut frames = 0;
    while source
        .next_frame()
        .expect("every frame on disk decodes")
        .is_some()
    {
        frames += 1;
    }
    assert!(frames >= 25, "{frames} frames");
    std::fs::remove_dir_all(dir).unwrap();
}
