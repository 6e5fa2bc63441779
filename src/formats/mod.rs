//! The files streamtrack reads and writes besides video and its per-frame results:
//! MOTChallenge text (`mot`), YOLO label files (`yolo_labels`) and the detection JSON of
//! `detect --json` (`detection_json`).

pub mod detection_json;
pub mod mot;
pub mod yolo_labels;
