//! Final detections against the Ultralytics reference: same count, each reference box matched
//! by one of ours with the same class, IoU >= 0.95 and |conf difference| <= 0.01.
//!
//! Checked twice per model: on the reference's own input tensor (`bus.input.npy`), which
//! isolates the network and post-processing, and from every JPEG file through our whole
//! front end (the libjpeg-exact decoder in `video::jpeg`, OpenCV-exact letterbox). INT8 exports
//! find the float reference's boxes, and `agree` scores a candidate model's whole curve.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::{data, read_npy_f32};
use streamtrack::detect::{DetectConfig, Detection, Detector, decode_candidates, decode_survivors};
use streamtrack::eval::agreement::measure;
use streamtrack::geometry::BBox;
use streamtrack::model::preprocess::Letterbox;
use streamtrack::model::survivors::read_survivors;
use streamtrack::model::{ComputeDevice, DeviceChoice, YoloModel};
use streamtrack::video::images::read_image;

const IMAGES: [&str; 5] = ["bus", "dog", "horses", "person", "zidane"];

fn reference(model: &str, image: &str) -> Vec<Detection> {
    let path = data(&format!("reference/{model}/{image}.json"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let b: Vec<f32> = d["xyxy"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            Detection {
                bbox: BBox::new(b[0], b[1], b[2], b[3]),
                score: d["conf"].as_f64().unwrap() as f32,
                class_id: d["cls"].as_u64().unwrap() as usize,
            }
        })
        .collect()
}

/// Largest allowed score difference to the reference.
const CONF_TOLERANCE: f32 = 0.01;

/// Matches `ours` against the reference; returns the worst IoU and confidence difference.
fn compare(ours: &[Detection], expected: &[Detection], what: &str) -> (f32, f32) {
    let (mut worst_iou, mut worst_conf) = (1.0f32, 0.0f32);
    assert_eq!(ours.len(), expected.len(), "{what}: {ours:?}");
    let mut used = vec![false; ours.len()];
    for r in expected {
        let (best, iou) = ours
            .iter()
            .enumerate()
            .filter(|(i, d)| !used[*i] && d.class_id == r.class_id)
            .map(|(i, d)| (i, d.bbox.iou(&r.bbox)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or_else(|| panic!("{what}: no class {} box for {r:?}", r.class_id));
        used[best] = true;
        let conf_diff = (ours[best].score - r.score).abs();
        assert!(
            iou >= 0.95,
            "{what}: IoU {iou} for {r:?} vs {:?}",
            ours[best]
        );
        assert!(
            conf_diff <= CONF_TOLERANCE,
            "{what}: conf {} vs {}",
            ours[best].score,
            r.score
        );
        worst_iou = worst_iou.min(iou);
        worst_conf = worst_conf.max(conf_diff);
    }
    (worst_iou, worst_conf)
}

/// Checks the reference input tensor and `images`; returns the worst IoU and confidence
/// difference seen.
fn check_model(mut detector: Detector, model: &str, images: &[&str]) -> (f32, f32) {
    // The reference's exact input tensor: the full criterion.
    let (_, input) = read_npy_f32(&data(&format!("reference/{model}/bus.input.npy")));
    let input = detector.model.planar_input(input, 1);
    let output = detector.infer(input);
    let frame = read_image(&data("images/bus.jpg")).unwrap();
    let letterbox = Letterbox::new(frame.dimensions(), detector.model.input_size());
    let ours = detector.postprocess(&output, &[letterbox]).remove(0);
    let (mut worst_iou, mut worst_conf) = compare(
        &ours,
        &reference(model, "bus"),
        &format!("{model}/bus.input.npy"),
    );
    for image in images {
        let frame = read_image(&data(&format!("images/{image}.jpg"))).unwrap();
        let ours = detector.detect(&frame);
        let (iou, conf) = compare(&ours, &reference(model, image), &format!("{model}/{image}"));
        worst_iou = worst_iou.min(iou);
        worst_conf = worst_conf.max(conf);
    }
    (worst_iou, worst_conf)
}

#[test]
fn yolov8n_640_matches_the_reference() {
    let model =
        YoloModel::load(&data("models/yolov8n-coco-640.onnx"), ComputeDevice::cpu()).unwrap();
    let (iou, conf) = check_model(
        Detector::new(model, DetectConfig::default()),
        "yolov8n-coco-640",
        &IMAGES,
    );
    eprintln!("yolov8n-640: worst IoU {iou:.4}, worst conf diff {conf:.5}");
}

#[test]
fn yolo11n_320_from_an_imported_record_matches_the_reference() {
    let dir = std::env::temp_dir().join(format!("streamtrack-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let record = dir.join("yolo11n.bpk");
    YoloModel::load(&data("models/yolo11n-coco-320.onnx"), ComputeDevice::cpu())
        .unwrap()
        .save(&record)
        .unwrap();
    let model = YoloModel::load(&record, ComputeDevice::cpu()).unwrap();
    assert_eq!(model.class_names().len(), 80);
    let (iou, conf) = check_model(
        Detector::new(model, DetectConfig::default()),
        "yolo11n-coco-320",
        &IMAGES,
    );
    eprintln!("yolo11n-320 (record): worst IoU {iou:.4}, worst conf diff {conf:.5}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The wgpu path, where frames are letterboxed on the device and the confidence filter runs
/// there too (only survivors are read back), on whatever adapter exists (CI installs Mesa's lavapipe, a software Vulkan driver:
/// two frames keep it short).
#[test]
fn wgpu_with_device_filtering_matches_the_reference_where_an_adapter_exists() {
    let device = match ComputeDevice::resolve(DeviceChoice::Gpu) {
        Ok(device) => device,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    eprintln!("device: {}", device.description);
    let model = YoloModel::load(&data("models/yolo11n-coco-320.onnx"), device).unwrap();
    assert!(model.filters_on_device() && model.device.letterbox_on_device);
    let (iou, conf) = check_model(
        Detector::new(model, DetectConfig::default()),
        "yolo11n-coco-320",
        &["bus"],
    );
    eprintln!("yolo11n-320 on wgpu: worst IoU {iou:.4}, worst conf diff {conf:.5}");
}

/// Filtering on the device keeps exactly the candidates the host decoder finds: a real
/// 80-class head output, with the default thresholds and with a per-class threshold plus a
/// class filter, through a first read that is too small.
#[test]
fn device_filtering_keeps_the_host_decoders_candidates() {
    let (shape, output) = read_npy_f32(&data("reference/yolov8n-coco-640/bus.output.npy"));
    let strict_people = DetectConfig {
        class_conf: vec![(0, 0.6)],
        classes: vec![0, 5],
        ..Default::default()
    };
    for config in [DetectConfig::default(), strict_people] {
        let host = decode_candidates(&output, shape[2], &config);
        let tensor = Tensor::<3>::from_data(
            TensorData::new(output.clone(), [shape[0], shape[1], shape[2]]),
            &Device::flex(),
        );
        let survivors = read_survivors(tensor, config.min_threshold(), 8);
        let (block, count) = survivors.image(0);
        let filtered = decode_survivors(block, survivors.capacity(), count, &config);
        assert!(host.len() > 8, "{} candidates", host.len());
        assert_eq!(filtered, host);
    }
}

#[test]
fn int8_exports_agree_with_the_float_reference() {
    for (file, reference_model) in [
        ("yolov8n-coco-640-int8.onnx", "yolov8n-coco-640"),
        ("yolo11n-coco-320-int8.onnx", "yolo11n-coco-320"),
    ] {
        let model =
            YoloModel::load(&data(&format!("models/{file}")), ComputeDevice::cpu()).unwrap();
        assert!(model.card.dequantized_int8_export, "{file}: an INT8 export");
        let float = data(&format!("models/{reference_model}.onnx"));
        let float = YoloModel::load(&float, ComputeDevice::cpu()).unwrap();
        assert!(!float.card.dequantized_int8_export, "{reference_model}");
        let mut detector = Detector::new(model, DetectConfig::default());
        for image in ["bus", "zidane"] {
            let frame = read_image(&data(&format!("images/{image}.jpg"))).unwrap();
            let ours = detector.detect(&frame);
            for r in reference(reference_model, image) {
                assert!(
                    ours.iter()
                        .any(|d| d.class_id == r.class_id && d.bbox.iou(&r.bbox) >= 0.9),
                    "{file}/{image}: reference box {r:?} not found"
                );
            }
        }
    }
}

/// `agree` scores the candidate's whole precision-recall curve: a model against itself agrees
/// fully even when the candidate is deployed with a higher threshold than the reference, and
/// it keeps that threshold afterwards.
#[test]
fn agreement_scores_the_candidates_whole_curve_and_keeps_its_thresholds() {
    let load = |conf: f32| {
        let model =
            YoloModel::load(&data("models/yolo11n-coco-320.onnx"), ComputeDevice::cpu()).unwrap();
        Detector::new(
            model,
            DetectConfig {
                conf,
                ..DetectConfig::default()
            },
        )
    };
    let (mut candidate, mut reference) = (load(0.6), load(0.25));
    let video = data("video/traffic-640x360.mp4");
    let agreement = measure(&mut candidate, &mut reference, &[video], 3).unwrap();
    assert!(agreement.reference_objects > 10, "{agreement:?}");
    // 0.995 is a perfect curve's area under Ultralytics' interpolation.
    assert!(agreement.metrics.map50 >= 0.995, "{agreement:?}");
    assert_eq!(agreement.metrics.recall, 1.0, "{agreement:?}");
    assert_eq!(candidate.config.conf, 0.6);
}
