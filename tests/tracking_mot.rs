//! ByteTrack on the MOT17 public FRCNN detections, scored with our TrackEval port, against
//! the reference tracker (Ultralytics 8.4.190 BYTETracker, defaults, same detections):
//! HOTA 47.87, MOTA 48.60, IDF1 56.44, 175 ID switches combined; the per-sequence reference
//! figures are `../shared/data/README.md`'s.

mod common;

use common::data;
use streamtrack::eval::mot::{MotCounts, evaluate};
use streamtrack::formats::mot::{read_rows, read_seqinfo};
use streamtrack::track::{BoxState, TrackerConfig, track_mot_rows};

/// The counts of sequence `seq` (a folder of `../shared/data/mot`) tracked under `config`.
fn sequence_counts(seq: &str, config: &TrackerConfig) -> MotCounts {
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
    counts
}

/// Combined figures of the four MOT17 sequences under `config`.
fn combined(config: &TrackerConfig) -> streamtrack::eval::mot::MotSummary {
    let mut combined: Option<MotCounts> = None;
    for seq in ["MOT17-02", "MOT17-04", "MOT17-05", "MOT17-09"] {
        let counts = sequence_counts(seq, config);
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

/// `with` exceeds `without` by more than `by` points of the figure `name`.
fn assert_raises(name: &str, with: f64, without: f64, by: f64) {
    assert!(with > without + by, "{name} {with} vs {without}");
}

fn assert_beats_reference(s: &streamtrack::eval::mot::MotSummary) {
    assert!(s.hota >= 47.87, "HOTA {}", s.hota);
    assert!(s.mota >= 48.60, "MOTA {}", s.mota);
    assert!(s.idf1 >= 56.44, "IDF1 {}", s.idf1);
    assert!(s.id_switches <= 175, "IDSW {}", s.id_switches);
}

/// The reference's settings, its 30-frame buffer as one second: the same figures within a
/// tenth of a point (the reference keeps 30 frames on the 14 fps MOT17-05, we keep 14 there).
#[test]
fn the_reference_settings_reproduce_the_reference_on_mot17() {
    let s = combined(&TrackerConfig::reference());
    assert!((s.hota - 47.87).abs() <= 0.1, "HOTA {}", s.hota);
    assert!((s.mota - 48.60).abs() <= 0.1, "MOTA {}", s.mota);
    assert!((s.idf1 - 56.44).abs() <= 0.15, "IDF1 {}", s.idf1);
    assert!(s.id_switches.abs_diff(175) <= 3, "IDSW {}", s.id_switches);
}

/// A 2 s buffer beats the reference on all four figures on these sequences, which it was
/// chosen on; held out it does not (`scripts/tracker_loso.py`), so it is not the default.
#[test]
fn two_second_buffer_beats_the_reference_in_sample() {
    let two_seconds = TrackerConfig {
        track_buffer: 2.0,
        ..TrackerConfig::reference()
    };
    assert_beats_reference(&combined(&two_seconds));
}

/// The defaults (the reference's settings with the xywh state and filled gaps, neither of
/// which has a parameter to tune) at or above the reference tracker's HOTA and IDF1 on every
/// shared sequence, TUD's included, and the MOT17 combined HOTA a point or more above it.
#[test]
fn the_defaults_beat_the_reference_on_every_sequence() {
    let reference = [
        ("MOT17-02", 33.18, 39.63),
        ("MOT17-04", 53.06, 62.23),
        ("MOT17-05", 42.93, 54.55),
        ("MOT17-09", 48.11, 58.50),
        ("TUD-Campus", 47.71, 67.17),
        ("TUD-Stadtmitte", 51.53, 71.04),
    ];
    for (seq, hota, idf1) in reference {
        let s = sequence_counts(seq, &TrackerConfig::default()).summary();
        assert!(s.hota >= hota && s.idf1 >= idf1, "{seq}: {s:?}");
    }
    assert!(combined(&TrackerConfig::default()).hota >= 47.87 + 1.0);
}

#[test]
fn tud_sequences_track_without_ground_truth_classes() {
    for seq in ["TUD-Campus", "TUD-Stadtmitte"] {
        let s = sequence_counts(seq, &TrackerConfig::default()).summary();
        assert!(s.mota > 50.0 && s.idf1 > 50.0, "{seq}: {s:?}");
    }
}

/// The NSA Kalman filter (measurement noise scaled by 1 - score) raises the pooled HOTA over
/// the reference; it is an option, not the default, because IDF1 falls on some sequences.
#[test]
fn nsa_kalman_raises_pooled_hota() {
    let nsa = TrackerConfig {
        nsa: true,
        ..TrackerConfig::reference()
    };
    let (with, without) = (combined(&nsa), combined(&TrackerConfig::reference()));
    assert_raises("HOTA", with.hota, without.hota, 0.3);
}

/// BoT-SORT's Kalman state of centre, width and height (`box_state = "xywh"`) raises the
/// pooled HOTA over ByteTrack's centre, aspect ratio and height; alone it loses IDF1 on
/// MOT17-09, with filled gaps it does not (README "Results").
#[test]
fn a_width_and_height_state_raises_pooled_hota() {
    let xywh: TrackerConfig = toml::from_str("box_state = \"xywh\"\nfill_gaps = false").unwrap();
    assert_eq!(
        xywh,
        TrackerConfig {
            box_state: BoxState::Xywh,
            ..TrackerConfig::reference()
        }
    );
    assert!(toml::from_str::<TrackerConfig>("box_state = \"xyxy\"").is_err());
    let (with, without) = (combined(&xywh), combined(&TrackerConfig::reference()));
    assert_raises("HOTA", with.hota, without.hota, 0.3);
}

/// `kind = "ocsort"` is ByteTrack with OC-SORT's re-update and its momentum at 0.2: the same
/// tracks as switching both on by hand, and other tracks than plain ByteTrack's.
#[test]
fn the_oc_sort_kind_is_bytetrack_with_both_oc_sort_terms() {
    let dir = data("mot/MOT17-02");
    let info = read_seqinfo(&dir.join("seqinfo.ini")).unwrap();
    let detections = read_rows(&dir.join("det.txt")).unwrap();
    let tracks = |config: &TrackerConfig| track_mot_rows(&detections, &info, config);
    let kind: TrackerConfig = toml::from_str("kind = \"ocsort\"").unwrap();
    let by_hand = TrackerConfig {
        oru: true,
        ocm: 0.2,
        ..TrackerConfig::default()
    };
    let of_kind = tracks(&kind);
    assert_eq!(of_kind, tracks(&by_hand));
    assert_ne!(of_kind, tracks(&TrackerConfig::default()));
    // An explicit weight still counts; an unknown tracker is refused.
    let weighted: TrackerConfig = toml::from_str("kind = \"ocsort\"\nocm = 0.1").unwrap();
    assert_eq!(weighted.momentum_weight(), 0.1);
    assert!(toml::from_str::<TrackerConfig>("kind = \"sort\"").is_err());
}

/// Filled gaps (`fill_gaps`): a re-found track gets boxes for the frames it missed, one per
/// frame in which it had none, inside the span of its own rows; they raise the pooled HOTA
/// and IDF1 (the filled boxes are mostly where the people were).
#[test]
fn filled_gaps_add_boxes_only_inside_a_tracks_gaps_and_raise_hota_and_idf1() {
    let fill = TrackerConfig {
        fill_gaps: true,
        ..TrackerConfig::reference()
    };
    let dir = data("mot/MOT17-09");
    let info = read_seqinfo(&dir.join("seqinfo.ini")).unwrap();
    let detections = read_rows(&dir.join("det.txt")).unwrap();
    let plain = track_mot_rows(&detections, &info, &TrackerConfig::reference());
    let filled = track_mot_rows(&detections, &info, &fill);
    assert!(filled.windows(2).all(|w| w[0].frame <= w[1].frame));
    let frames_of = |rows: &[streamtrack::formats::mot::MotRow], id: i64| -> Vec<u32> {
        rows.iter()
            .filter(|r| r.id == id)
            .map(|r| r.frame)
            .collect()
    };
    let added = filled.len() - plain.len();
    assert!(added > 100, "{added} boxes filled");
    let ids: std::collections::BTreeSet<i64> = plain.iter().map(|r| r.id).collect();
    for id in ids {
        let (before, after) = (frames_of(&plain, id), frames_of(&filled, id));
        let (first, last) = (before[0], *before.last().unwrap());
        // One row per frame, the original rows kept, the new ones inside the track's span.
        assert!(
            after.windows(2).all(|w| w[0] < w[1]),
            "track {id}: {after:?}"
        );
        assert!(before.iter().all(|f| after.contains(f)), "track {id}");
        assert!(
            after.iter().all(|f| (first..=last).contains(f)),
            "track {id}"
        );
    }
    let (with, without) = (combined(&fill), combined(&TrackerConfig::reference()));
    assert_raises("HOTA", with.hota, without.hota, 0.5);
    assert_raises("IDF1", with.idf1, without.idf1, 0.5);
}
