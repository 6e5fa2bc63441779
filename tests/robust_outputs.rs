//! Outputs survive what ends a run early: a full disk (simulated with a file-size limit,
//! which fails writes the same way) and Ctrl-C pressed twice in quick succession still leave
//! a playable video and result files of whole JSON lines, and an interrupted run exits with
//! the signal's conventional status.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::data;
use streamtrack::video::FrameSource;
use streamtrack::video::mp4_source::Mp4Source;

/// `process` on the CPU at a small input size: quick, and the outputs are what is tested.
const QUICK_PROCESS: [&str; 6] = [
    "process",
    "--quiet",
    "--device",
    "cpu",
    "--input-size",
    "96",
];

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamtrack-robust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// `process` on the traffic video at a small input size, writing `outputs` (flag, file),
/// under a file-size limit of `limit_kib` (the signal that limit raises is ignored, so
/// writes past it fail with an error as on a full disk).
fn process_with_file_limit(limit_kib: u32, outputs: &[(&str, &Path)]) -> Output {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {limit_kib}; exec \"$@\""))
        .arg("bash")
        .arg(env!("CARGO_BIN_EXE_streamtrack"))
        .args(QUICK_PROCESS)
        .arg(data("video/traffic-640x360.mp4"));
    for (flag, path) in outputs {
        command.arg(flag).arg(path);
    }
    command.output().expect("bash runs")
}

fn frames_in(video: &Path) -> usize {
    let mut source = Mp4Source::open(video).unwrap_or_else(|e| panic!("unplayable: {e}"));
    let mut frames = 0;
    while source.next_frame().unwrap().is_some() {
        frames += 1;
    }
    frames
}

fn whole_json_lines(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "ends inside a line"
    );
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a whole JSON line ({e}): {line}"));
    }
    text.lines().count()
}

#[test]
fn a_full_disk_leaves_a_playable_video_and_whole_json_lines() {
    let (video, events) = (scratch("full.mp4"), scratch("full.jsonl"));
    let out = process_with_file_limit(200, &[("-o", &video), ("--events", &events)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the video is finalised with the first"),
        "{stderr}"
    );
    let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert_eq!(error.matches("File too large").count(), 1, "{error}");
    let frames = frames_in(&video);
    assert!(frames > 10, "{frames} frames kept");
    assert!(std::fs::metadata(&video).unwrap().len() <= 200 * 1024);
    whole_json_lines(&events);

    // The events file alone reaching the limit mid-line is cut back to whole lines.
    let out = process_with_file_limit(16, &[("--events", &events)]);
    assert!(!out.status.success());
    assert!(whole_json_lines(&events) > 10);
}

/// Two SIGINTs 20 ms apart: the run still finishes its frames in flight, finalises the
/// video and exits with 130.
#[test]
fn a_double_ctrl_c_still_finalises_the_video() {
    let video = scratch("interrupted.mp4");
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamtrack"))
        .args(QUICK_PROCESS)
        .arg("-o")
        .arg(&video)
        .arg(data("video/traffic-640x360.mp4"))
        .spawn()
        .unwrap();
    // Wait until frames are being written.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&video).map_or(0, |m| m.len()) < 50_000 {
        assert!(Instant::now() < deadline, "no output after a minute");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..2 {
        let sent = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let frames = frames_in(&video);
    assert!((1..1190).contains(&frames), "{frames} frames");
}
