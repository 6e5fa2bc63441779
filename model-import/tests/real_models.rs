//! Import of the real Ultralytics exports in `../shared/data/models/`.

use model_import::{Family, LayerKind, import_bytes, import_file};

const MODELS: &str = "../../shared/data/models";

fn model(name: &str) -> model_import::ImportedModel {
    import_file(format!("{MODELS}/{name}")).expect("model imports")
}

#[test]
fn yolov8n_is_recognised_with_its_metadata() {
    let m = model("yolov8n-coco-640.onnx");
    assert_eq!(m.architecture.family, Family::YoloV8);
    assert_eq!(m.architecture.scale, Some('n'));
    assert_eq!(m.architecture.layers.len(), 23);
    assert_eq!(m.metadata.imgsz, [640, 640]);
    assert_eq!(m.metadata.names.len(), 80);
    assert_eq!(m.metadata.names[0], "person");
    assert_eq!(m.metadata.names[79], "toothbrush");
    assert_eq!(m.architecture.detect().num_classes, 80);
    assert_eq!(m.architecture.detect().reg_max, 16);
    assert_eq!(m.architecture.layers[11].from, vec![10, 6]);
    assert_eq!(m.architecture.layers[22].from, vec![15, 18, 21]);
    assert!(!m.quantized_weights);
    assert_eq!(m.weights.len(), 63, "every conv but the fixed DFL one");
}

#[test]
fn yolo11n_is_recognised_with_attention_and_c3k() {
    let m = model("yolo11n-coco-320.onnx");
    assert_eq!(m.architecture.family, Family::Yolo11);
    assert_eq!(m.architecture.scale, Some('n'));
    assert_eq!(m.metadata.imgsz, [320, 320]);
    assert_eq!(m.architecture.layers[23].from, vec![16, 19, 22]);
    match &m.architecture.layers[10].kind {
        LayerKind::C2psa { blocks, .. } => {
            assert_eq!(blocks.len(), 1);
            assert_eq!(blocks[0].attn.num_heads, 2);
            assert_eq!(blocks[0].attn.key_dim, 32);
            assert_eq!(blocks[0].attn.head_dim, 64);
        }
        other => panic!("layer 10 is {other:?}"),
    }
}

#[test]
fn int8_exports_dequantise_to_the_float_weights() {
    for (int8, float) in [
        ("yolov8n-coco-640-int8.onnx", "yolov8n-coco-640.onnx"),
        ("yolo11n-coco-320-int8.onnx", "yolo11n-coco-320.onnx"),
    ] {
        let q = model(int8);
        let f = model(float);
        assert!(q.quantized_weights);
        assert_eq!(q.architecture, f.architecture);
        for (path, wf) in &f.weights {
            let wq = &q.weights[path];
            assert_eq!(wq.weight.shape, wf.weight.shape, "{path}");
            let max_err = wq
                .weight
                .data
                .iter()
                .zip(&wf.weight.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                max_err < 1e-5,
                "{path}: dequantised weights differ by {max_err}"
            );
            assert_eq!(wq.bias, wf.bias, "{path}");
        }
    }
}

#[test]
fn non_onnx_and_truncated_files_are_refused() {
    let err = import_bytes(b"\x89PNG\r\n\x1a\n not a model").unwrap_err();
    assert!(err.to_string().contains("not an ONNX model"), "{err}");
    let bytes = std::fs::read(format!("{MODELS}/yolo11n-coco-320.onnx")).unwrap();
    let err = import_bytes(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(err.to_string().contains("not an ONNX model"), "{err}");
    let missing = import_file("no/such/model.onnx").unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("no/such/model.onnx: cannot read"),
        "{missing}"
    );
}

/// The real exports' weights look sane; a weight with flipped exponent bits (huge or NaN)
/// is reported, naming the convolution.
#[test]
fn corrupt_weights_are_recognised() {
    for name in ["yolov8n-coco-640.onnx", "yolo11n-coco-320-int8.onnx"] {
        assert_eq!(model(name).weight_anomalies(), None, "{name}");
    }
    let mut m = model("yolo11n-coco-320.onnx");
    let (conv, weights) = m.weights.iter_mut().nth(5).unwrap();
    let conv = conv.clone();
    weights.weight.data[3] = 3.4e37;
    let report = m.weight_anomalies().expect("a huge weight is reported");
    assert!(
        report.contains(&conv) && report.contains("3.4e37"),
        "{report}"
    );
    m.weights.values_mut().next().unwrap().bias[0] = f32::NAN;
    let report = m.weight_anomalies().unwrap();
    assert!(report.contains("1 weights are NaN or infinite"), "{report}");
}

/// An error reading the file says so once (no repeated cause in the chain).
#[test]
fn file_errors_state_their_cause_once() {
    let missing = import_file("no/such/model.onnx").unwrap_err();
    assert!(std::error::Error::source(&missing).is_none());
    let text = missing.to_string();
    assert_eq!(text.matches("No such file").count(), 1, "{text}");
}
