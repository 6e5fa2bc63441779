//! ByteTrack on the MOT17 public FRCNN detections, scored with our TrackEval port, against
//! the reference tracker (Ultralytics 8.4.190 BYTETracker, defaults, same detections):
//! HOTA 47.87, MOTA 48.60, IDF1 56.44, 175 ID switches combined.

mod common;

use common::data;
use streamtrack::eval::mot::{MotCounts, evaluate};
use streamtrack::motfile::{read_rows, read_seqinfo};
use streamtrack::track::{TrackerConfig, track_mot_rows};

/// Combined figures of the four MOT17 sequences under `config`.
fn combined(config: &TrackerConfig) -> streamtrack::eval::mot::MotSummary {
    let mut combined: Option<MotCounts> = None;
    for seq in ["MOT17-02", "MOT17-04", "MOT17-05", "MOT17-09"] {
        let dir = data(&format!("mot/{seq}"));
        let info = read_seqinfo(&dir.join("seqinfo.ini")).unwrap();
        let results = track_mot_rows(&read_rows(&dir.join("det.txt")).unwrap(), &info, config);
        let counts = evaluate(
            &read_rows(&dir.join("gt.txt")).unwrap(),
            &results,
            info.length,
        );
        let s = counts.summary();
        eprintln!(
            "{seq}: HOTA {:.3} MOTA {:.3} IDF1 {:.3} IDSW {}",
            s.hota, s.mota, s.idf1, s.id_switches
        );
        match combined.as_mut() {
            Some(c) => c.add(&counts),
            None => combined = Some(counts),
        }
    }
    let s = combined.unwrap().summary();
    eprintln!(
        "combined: HOTA {:.3} MOTA {:.3} IDF1 {:.3} IDSW {}",
        s.hota, s.mota, s.idf1, s.id_switches
    );
    s
}

fn assert_beats_reference(s: &streamtrack::eval::mot::MotSummary) {
    assert!(s.hota >= 47.87, "HOTA {}", s.hota);
    assert!(s.mota >= 48.60, "MOTA {}", s.mota);
    assert!(s.idf1 >= 56.44, "IDF1 {}", s.idf1);
    assert!(s.id_switches <= 175, "IDSW {}", s.id_switches);
}

/// The reference keeps lost tracks 30 frames whatever the frame rate (2.1 s on the 14 fps
/// MOT17-05); our default keeps them 2 s and beats it on all four figures.
#[test]
fn default_tracker_beats_the_reference_on_mot17() {
    assert_beats_reference(&combined(&TrackerConfig::default()));
}

#[test]
fn tud_sequences_track_without_ground_truth_classes() {
    for seq in ["TUD-Campus", "TUD-Stadtmitte"] {
        let dir = data(&format!("mot/{seq}"));
        let info = read_seqinfo(&dir.join("seqinfo.ini")).unwrap();
        let results = track_mot_rows(
            &read_rows(&dir.join("det.txt")).unwrap(),
            &info,
            &TrackerConfig::default(),
        );
        let s = evaluate(
            &read_rows(&dir.join("gt.txt")).unwrap(),
            &results,
            info.length,
        )
        .summary();
        eprintln!(
            "{seq}: HOTA {:.3} MOTA {:.3} IDF1 {:.3} IDSW {}",
            s.hota, s.mota, s.idf1, s.id_switches
        );
        assert!(s.mota > 50.0 && s.idf1 > 50.0, "{seq}: {s:?}");
    }
}
