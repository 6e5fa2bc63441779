//! The detection JSON of `detect --json`: per image its name, the network's input size and
//! its detections (`xyxy` in original pixels to 3 decimals, `conf` to 5, `cls`, `name`), the
//! shape of the reference outputs the detector is checked against.

use crate::detect::Detection;

/// One image's detections as a JSON object.
pub fn image_detections(
    image: &str,
    imgsz: u32,
    detections: &[Detection],
    names: &[String],
) -> serde_json::Value {
    let round = |v: f32, places: i32| (v as f64 * 10f64.powi(places)).round() / 10f64.powi(places);
    serde_json::json!({
        "image": image,
        "imgsz": imgsz,
        "detections": detections.iter().map(|d| serde_json::json!({
            "xyxy": [round(d.bbox.x1, 3), round(d.bbox.y1, 3), round(d.bbox.x2, 3), round(d.bbox.y2, 3)],
            "conf": round(d.score, 5),
            "cls": d.class_id,
            "name": names[d.class_id],
        })).collect::<Vec<_>>(),
    })
}
