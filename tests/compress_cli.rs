//! `quantize` and `prune` end to end: the written models are smaller, load back and agree
//! with their float original on real video frames; a model that does not agree is refused
//! and nothing is written.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::data;

const MODEL: &str = "models/yolo11n-coco-320.onnx";

fn streamtrack(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamtrack"))
        .arg("--quiet")
        .args(args)
        .args(paths)
        .output()
        .expect("binary runs")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamtrack-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `mAP50 X` figure of a command's report.
fn map50(report: &str) -> f64 {
    report
        .split("mAP50 ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no mAP50 in {report}"))
}

#[test]
fn quantized_model_is_a_third_of_the_size_loads_back_and_agrees() {
    let dir = temp_dir("quantize");
    let (model, out) = (data(MODEL), dir.join("q8.bpk"));
    let video = data("video/traffic-640x360.mp4");
    let report = assert_ok(&streamtrack(
        &["quantize", "--frames", "6", "--min-map50", "0.9", "-m"],
        &[&model, "-o".as_ref(), &out, "--check".as_ref(), &video],
    ));
    assert!(map50(&report) >= 0.9, "{report}");
    let (written, float) = (
        std::fs::metadata(&out).unwrap().len(),
        std::fs::metadata(&model).unwrap().len(),
    );
    assert!(written * 3 < float, "{written} bytes vs {float}");
    // Loaded from the record (INT8 tensors, dequantised at load), it still agrees.
    let report = assert_ok(&streamtrack(
        &[
            "agree",
            "--device",
            "cpu",
            "--frames",
            "6",
            "--min-map50",
            "0.9",
            "-m",
        ],
        &[&out, "--reference".as_ref(), &model, &video],
    ));
    assert!(map50(&report) >= 0.9, "{report}");
}

#[test]
fn pruned_model_is_smaller_and_runs_and_a_collapsed_one_is_not_written() {
    let dir = temp_dir("prune");
    let model = data(MODEL);
    let video = data("video/traffic-640x360.mp4");
    let light = dir.join("p05.bpk");
    let report = assert_ok(&streamtrack(
        &["prune", "--ratio", "0.05", "-m"],
        &[&model, "-o".as_ref(), &light],
    ));
    assert!(report.contains("pruned "), "{report}");
    let written = std::fs::metadata(&light).unwrap().len();
    assert!(written < std::fs::metadata(&model).unwrap().len());
    let report = assert_ok(&streamtrack(
        &["detect", "--device", "cpu", "-m"],
        &[&light, &data("images/bus.jpg")],
    ));
    assert!(report.contains("bus.jpg"), "{report}");

    // Half the channels without retraining: the model no longer finds what the original
    // does, so the check refuses it and no file appears.
    let heavy = dir.join("p50.bpk");
    let out = streamtrack(
        &[
            "prune",
            "--ratio",
            "0.5",
            "--frames",
            "4",
            "--min-map50",
            "0.5",
            "-m",
        ],
        &[&model, "-o".as_ref(), &heavy, "--check".as_ref(), &video],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("was not written"), "{stderr}");
    assert!(!heavy.exists() && !heavy.with_extension("json").exists());

    let out = streamtrack(
        &["prune", "--ratio", "0.3", "-m"],
        &[&light, "-o".as_ref(), &heavy],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("pass the .onnx file"),
        "{stderr}"
    );
}
