//! Bad input gives one clear error naming the file and the problem, a non-zero exit and no
//! panic. Every broken file is made by the test itself from the real samples.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::data;

fn streamtrack(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_streamtrack"))
        .args(args)
        .arg("--quiet")
        .output()
        .expect("binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (out.status.success(), stderr)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamtrack-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn process_fails_with(input: &Path, expected: &str) {
    let out = scratch("out.mp4");
    let (ok, stderr) = streamtrack(&[
        "process",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!ok, "succeeded on {}", input.display());
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        line.contains(&input.display().to_string()),
        "error does not name the file: {stderr}"
    );
    assert!(
        line.contains(expected),
        "expected '{expected}' in: {stderr}"
    );
}

#[test]
fn missing_file() {
    process_fails_with(Path::new("no/such/video.mp4"), "no such file");
}

#[test]
fn text_file_is_not_an_mp4() {
    let path = scratch("notes.mp4");
    std::fs::write(&path, "just some text, not a video\n").unwrap();
    process_fails_with(&path, "not an MP4 file");
}

#[test]
fn non_h264_video_track() {
    // Relabel the sample entry of a real file as MPEG-4 Part 2 ('mp4v').
    let mut bytes = std::fs::read(data("video/traffic-640x360.mp4")).unwrap();
    let stsd = bytes
        .windows(4)
        .position(|w| w == b"stsd")
        .expect("sample description");
    let at = stsd
        + bytes[stsd..]
            .windows(4)
            .position(|w| w == b"avc1")
            .expect("avc1 sample entry");
    bytes[at..at + 4].copy_from_slice(b"mp4v");
    let path = scratch("mpeg4.mp4");
    std::fs::write(&path, bytes).unwrap();
    process_fails_with(&path, "not H.264");
}

#[test]
fn truncated_mp4() {
    let bytes = std::fs::read(data("video/traffic-640x360.mp4")).unwrap();
    let path = scratch("truncated.mp4");
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    process_fails_with(&path, "truncated");
}

#[test]
fn unwritable_output() {
    let input = data("video/traffic-640x360.mp4");
    let (ok, stderr) = streamtrack(&[
        "process",
        input.to_str().unwrap(),
        "-o",
        "/proc/no-such-dir/out.mp4",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("/proc/no-such-dir/out.mp4") && stderr.contains("cannot create"),
        "{stderr}"
    );
}

/// Runs `detect INPUT --model MODEL --device cpu EXTRA...` and expects a failure whose
/// message contains every one of `expected`.
fn detect_fails_with(input: &Path, model: &Path, extra: &[&str], expected: &[&str]) {
    let mut args = vec![
        "detect",
        input.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    let (ok, stderr) = streamtrack(&args);
    assert!(!ok, "succeeded: {args:?}");
    for text in expected {
        assert!(stderr.contains(text), "expected '{text}' in: {stderr}");
    }
}

#[test]
fn corrupt_model_file() {
    let path = scratch("broken.onnx");
    let bytes = std::fs::read(data("models/yolo11n-coco-320.onnx")).unwrap();
    std::fs::write(&path, &bytes[..1000]).unwrap();
    detect_fails_with(
        &data("images/bus.jpg"),
        &path,
        &[],
        &["broken.onnx", "not an ONNX model"],
    );
}

#[test]
fn undecodable_image() {
    let path = scratch("broken.jpg");
    std::fs::write(
        &path,
        b"\xff\xd8\xff\xe0 a JPEG header and nothing after it",
    )
    .unwrap();
    let model = data("models/yolo11n-coco-320.onnx");
    detect_fails_with(&path, &model, &[], &["broken.jpg", "not a decodable JPEG"]);
    // A real photo cut off inside its image data.
    let cut = scratch("cut.jpg");
    let bytes = std::fs::read(data("images/bus.jpg")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    detect_fails_with(&cut, &model, &[], &["cut.jpg", "ends early"]);
    let png = scratch("broken.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n and nothing after it").unwrap();
    detect_fails_with(&png, &model, &[], &["broken.png", "not a decodable image"]);
}

#[test]
fn empty_folder() {
    let dir = scratch("empty-folder");
    std::fs::create_dir_all(&dir).unwrap();
    let model = data("models/yolo11n-coco-320.onnx");
    detect_fails_with(
        &dir,
        &model,
        &[],
        &["empty-folder", "holds no JPEG or PNG images"],
    );
}

#[test]
fn unknown_class_name() {
    let model = data("models/yolo11n-coco-320.onnx");
    detect_fails_with(
        &data("images/bus.jpg"),
        &model,
        &["--classes", "car,unicorn"],
        &["no class named 'unicorn'"],
    );
}
