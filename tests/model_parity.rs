//! Raw network output against ONNX Runtime's, on the exact reference input tensor.

mod common;

use common::{data, read_npy_f32};
use streamtrack::model::{ComputeDevice, YoloModel};

/// Max abs error on box rows (pixels) and on score rows, on `device`.
fn parity(model_file: &str, reference: &str, device: ComputeDevice) -> (f32, f32) {
    let model =
        YoloModel::load(&data(&format!("models/{model_file}")), device).expect("model loads");
    let (in_shape, input) = read_npy_f32(&data(&format!("reference/{reference}/bus.input.npy")));
    let (out_shape, expected) =
        read_npy_f32(&data(&format!("reference/{reference}/bus.output.npy")));
    assert_eq!(in_shape[0], 1);
    let output = model.infer(model.planar_input(input, 1));
    assert_eq!(
        vec![output.batch, output.channels, output.anchors],
        out_shape
    );
    let n = output.anchors;
    let max_err = |rows: std::ops::Range<usize>| {
        output.data[rows.start * n..rows.end * n]
            .iter()
            .zip(&expected[rows.start * n..rows.end * n])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    (max_err(0..4), max_err(4..output.channels))
}

#[test]
fn yolov8n_matches_onnx_runtime() {
    let (boxes, scores) = parity(
        "yolov8n-coco-640.onnx",
        "yolov8n-coco-640",
        ComputeDevice::cpu(),
    );
    eprintln!("yolov8n-640: box max error {boxes} px, score max error {scores}");
    assert!(boxes <= 0.02, "box rows differ by {boxes} px");
    assert!(scores <= 1e-4, "score rows differ by {scores}");
}

#[test]
fn yolo11n_matches_onnx_runtime() {
    let (boxes, scores) = parity(
        "yolo11n-coco-320.onnx",
        "yolo11n-coco-320",
        ComputeDevice::cpu(),
    );
    eprintln!("yolo11n-320: box max error {boxes} px, score max error {scores}");
    assert!(boxes <= 0.02, "box rows differ by {boxes} px");
    assert!(scores <= 1e-4, "score rows differ by {scores}");
}

/// The wgpu path on whatever adapter exists (CI installs Mesa's lavapipe, a software Vulkan
/// driver): same network, same reference tensor.
#[test]
fn wgpu_matches_onnx_runtime_where_an_adapter_exists() {
    let device = match ComputeDevice::resolve(streamtrack::model::DeviceChoice::Gpu) {
        Ok(device) => device,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    eprintln!("device: {}", device.description);
    let (boxes, scores) = parity("yolo11n-coco-320.onnx", "yolo11n-coco-320", device);
    eprintln!("yolo11n-320 on wgpu: box max error {boxes} px, score max error {scores}");
    // Measured on lavapipe: 0.0015 px and 2.7e-6, within the CPU tolerances.
    assert!(boxes <= 0.02, "box rows differ by {boxes} px");
    assert!(scores <= 1e-4, "score rows differ by {scores}");
}

/// The first load of an `.onnx` file caches its conversion; the second load comes from the
/// cache and computes the same output.
#[test]
fn onnx_conversions_are_cached_and_reused() {
    let cache = std::env::temp_dir().join(format!("streamtrack-cache-{}", std::process::id()));
    let path = data("models/yolo11n-coco-320.onnx");
    let (_, input) = read_npy_f32(&data("reference/yolo11n-coco-320/bus.input.npy"));
    let first = YoloModel::load_cached(&path, ComputeDevice::cpu(), Some(&cache)).unwrap();
    let records: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 2, "record and card: {records:?}");
    let second = YoloModel::load_cached(&path, ComputeDevice::cpu(), Some(&cache)).unwrap();
    assert_eq!(second.card.source, path.display().to_string());
    assert_eq!(
        first.infer(first.planar_input(input.clone(), 1)).data,
        second.infer(second.planar_input(input, 1)).data
    );
    std::fs::remove_dir_all(&cache).unwrap();
}
