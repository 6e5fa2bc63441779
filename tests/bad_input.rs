//! Bad input gives one clear error naming the file and the problem, a non-zero exit and no
//! panic. Every broken file is made by the test itself from the real samples.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::data;
use streamtrack::video::FrameSource;
use streamtrack::video::mp4_source::Mp4Source;

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

/// A file cut short still gives its intact frames, with a warning; one cut before its first
/// frame's data is refused.
#[test]
fn truncated_mp4_processes_its_intact_samples() {
    let bytes = std::fs::read(data("video/traffic-640x360.mp4")).unwrap();
    let path = scratch("truncated.mp4");
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = scratch("truncated-out.mp4");
    let (ok, stderr) = streamtrack(&[
        "process",
        path.to_str().unwrap(),
        "--device",
        "cpu",
        "--input-size",
        "160",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    let mut written = Mp4Source::open(&out).unwrap();
    let mut frames = 0;
    while written.next_frame().unwrap().is_some() {
        frames += 1;
    }
    // The first six of nine fragments (about 130 frames each) are whole.
    assert!((700..1190).contains(&frames), "{frames} frames written");

    std::fs::write(&path, &bytes[..3000]).unwrap();
    process_fails_with(&path, "truncated");
}

/// The 16-byte file that once made the demuxer spin for ever, and the real video with its
/// `moov` children zeroed, are refused at once.
#[test]
fn zero_sized_boxes_are_refused() {
    let path = scratch("zero.mp4");
    std::fs::write(&path, b"\0\0\0\x10moov\0\0\0\0\0\0\0\0").unwrap();
    process_fails_with(&path, "less than its own header");
    let mut bytes = std::fs::read(data("video/traffic-640x360.mp4")).unwrap();
    bytes[36..674].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    process_fails_with(&path, "less than its own header");
}

/// A media timescale of 0 would make every timestamp infinite.
#[test]
fn zero_timescale_is_refused() {
    let mut bytes = std::fs::read(data("video/traffic-640x360.mp4")).unwrap();
    let mdhd = bytes.windows(4).position(|w| w == b"mdhd").unwrap();
    // version 0: 4 bytes version/flags, creation and modification times, then timescale.
    let at = mdhd + 4 + 4 + 8;
    bytes[at..at + 4].fill(0);
    let path = scratch("timescale.mp4");
    std::fs::write(&path, &bytes).unwrap();
    process_fails_with(&path, "timescale is 0");
}

/// An output that is the input, by the same or another path, is refused before anything is
/// written, and the input stays whole.
#[test]
fn output_may_not_be_the_input() {
    let original = std::fs::read(data("video/traffic-640x360.mp4")).unwrap();
    let input = scratch("same.mp4");
    std::fs::write(&input, &original).unwrap();
    let dir = input.parent().unwrap();
    let other_path = dir
        .join("..")
        .join(dir.file_name().unwrap())
        .join("same.mp4");
    let link = scratch("link-to-same.mp4");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&input, &link).unwrap();
    for (flag, output) in [("-o", &input), ("-o", &other_path), ("--events", &link)] {
        let (ok, stderr) = streamtrack(&[
            "process",
            input.to_str().unwrap(),
            flag,
            output.to_str().unwrap(),
        ]);
        assert!(!ok, "{flag} {}", output.display());
        assert!(stderr.contains("names the input file"), "{stderr}");
        assert_eq!(
            std::fs::read(&input).unwrap(),
            original,
            "the input was changed"
        );
    }
    let events = scratch("twice.jsonl");
    let (ok, stderr) = streamtrack(&[
        "process",
        input.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--csv",
        events.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("--events and --csv name the same file"),
        "{stderr}"
    );
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

/// CRC-32 (ISO-HDLC) of a PNG chunk's type and data.
fn png_crc(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A small PNG that declares 100000x100000 pixels (30 GB as RGB) is refused before any
/// pixel is allocated, as is a JPEG over a configured `max_image_pixels`.
#[test]
fn images_over_the_pixel_limit_are_refused() {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&png_crc(&ihdr).to_be_bytes());
    // Image data that is never read: the size is refused first.
    let mut idat = b"IDAT".to_vec();
    idat.extend_from_slice(&[0; 1000]);
    png.extend_from_slice(&1000u32.to_be_bytes());
    png.extend_from_slice(&idat);
    png.extend_from_slice(&png_crc(&idat).to_be_bytes());
    let path = scratch("huge.png");
    std::fs::write(&path, &png).unwrap();
    let model = data("models/yolo11n-coco-320.onnx");
    detect_fails_with(
        &path,
        &model,
        &[],
        &["huge.png", "100000x100000 pixels, more than the limit"],
    );

    let config = scratch("small-images.toml");
    std::fs::write(&config, "[input]\nmax_image_pixels = 100000\n").unwrap();
    detect_fails_with(
        &data("images/bus.jpg"),
        &model,
        &["--config", config.to_str().unwrap()],
        &["bus.jpg", "810x1080 pixels, more than the limit of 100000"],
    );
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

/// A reader that stops early (`streamtrack detect … | head -1`) costs the rest of the report,
/// not a panic: the command completes and its JSON file is whole.
#[test]
fn closed_stdout_drops_the_report_not_the_work() {
    let json = scratch("closed-stdout.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamtrack"))
        .args(["--quiet", "detect", "--device", "cpu", "--json"])
        .arg(&json)
        .arg(data("images"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("binary exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let written = std::fs::read_to_string(&json).unwrap();
    assert_eq!(written.lines().count(), 5, "{written}");
}
