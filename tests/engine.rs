//! Several streams through one engine: streams that share a detector have their frames
//! batched together into one network call, and get, frame by frame, the same detections and
//! tracks as each stream run alone.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;

use common::data;
use streamtrack::config::Config;
use streamtrack::engine::{BatchSettings, SharedDetector};
use streamtrack::job::{OutputSpec, run_stream};
use streamtrack::model::{ComputeDevice, DeviceChoice};
use streamtrack::pipeline::RunOptions;
use streamtrack::setup::{self, DetectorSpec};
use streamtrack::video::mp4_source::Mp4Source;
use streamtrack::video::{Frame, FrameSource, StreamInfo, VideoError};

/// The first `left` frames of a video.
struct FirstFrames {
    inner: Mp4Source,
    left: usize,
}

impl FrameSource for FirstFrames {
    fn info(&self) -> &StreamInfo {
        self.inner.info()
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.inner.next_frame()
    }
}

/// Runs the first 40 frames of `video` into the events file `events`, with `model`.
fn run(video: &Path, events: &Path, model: &DetectorSpec) {
    let source = FirstFrames {
        inner: Mp4Source::open(video).unwrap(),
        left: 40,
    };
    let outputs = OutputSpec {
        events: Some(events.to_path_buf()),
        ..OutputSpec::default()
    };
    let report = run_stream(
        Box::new(source),
        &outputs,
        model,
        &Config::default(),
        &RunOptions::default(),
        Default::default(),
    )
    .unwrap();
    assert_eq!(report.summary.frames_processed, 40);
}

/// Two streams (two different videos) on one shared detector, frames batched across them
/// (a batch of 2, waiting up to 50 ms for the other stream's frame; most calls take both):
/// each one's events file,
/// with every frame's tracks and boxes, is byte for byte the one of the stream run alone on
/// its own detector.
#[test]
fn streams_sharing_a_detector_get_what_they_get_alone() {
    let dir = std::env::temp_dir().join(format!("streamtrack-engine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let videos = [
        data("video/traffic-640x360.mp4"),
        data("video/pedestrians-768x576.mp4"),
    ];
    let model = DetectorSpec {
        device: Some(DeviceChoice::Cpu),
        ..DetectorSpec::for_model(&data("models/yolo11n-coco-320.onnx"), None)
    };
    let alone: Vec<_> = videos
        .iter()
        .enumerate()
        .map(|(i, video)| {
            let events = dir.join(format!("alone-{i}.jsonl"));
            run(video, &events, &model);
            std::fs::read_to_string(events).unwrap()
        })
        .collect();

    let (detector, names) =
        setup::build_detector_on(&model, &Config::default(), ComputeDevice::cpu()).unwrap();
    let settings = BatchSettings {
        max_batch: 2,
        max_wait: std::time::Duration::from_millis(50),
    };
    let shared = DetectorSpec {
        shared: Some(SharedDetector::start(detector, names, settings).unwrap()),
        ..model.clone()
    };
    let together: Vec<_> = std::thread::scope(|scope| {
        let running: Vec<_> = videos
            .iter()
            .enumerate()
            .map(|(i, video)| {
                let (dir, shared) = (&dir, &shared);
                scope.spawn(move || {
                    let events = dir.join(format!("together-{i}.jsonl"));
                    run(video, &events, shared);
                    std::fs::read_to_string(events).unwrap()
                })
            })
            .collect();
        running.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let counts = shared.shared.as_ref().unwrap().counts();
    let (calls, frames) = (
        counts.calls.load(Ordering::Relaxed),
        counts.frames.load(Ordering::Relaxed),
    );
    assert_eq!(frames, 80);
    assert!(
        calls < 60,
        "{frames} frames in {calls} network calls: few were batched"
    );
    for (i, (alone, together)) in alone.iter().zip(&together).enumerate() {
        assert!(alone.lines().count() >= 40, "stream {i}: {alone}");
        assert!(alone.contains("\"tracks\":[{"), "stream {i} found nothing");
        assert_eq!(alone, together, "stream {i}");
    }
    assert_ne!(alone[0], alone[1]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A handle counts itself and its clones, not the scheduler thread: what a server needs to
/// know that no stream uses a network any more.
#[test]
fn handles_count_only_handles() {
    let model = DetectorSpec::for_model(&data("models/yolo11n-coco-320.onnx"), None);
    let (detector, names) =
        setup::build_detector_on(&model, &Config::default(), ComputeDevice::cpu()).unwrap();
    let settings = BatchSettings {
        max_batch: 4,
        max_wait: std::time::Duration::ZERO,
    };
    let shared = SharedDetector::start(detector, names, settings).unwrap();
    assert_eq!(shared.handles(), 1);
    let other = shared.clone();
    assert_eq!(shared.handles(), 2);
    drop(other);
    assert_eq!(shared.handles(), 1);
}
