//! Post-processing micro-benchmarks: decode + NMS on a real YOLOv8n head output (8400
//! candidates, 80 classes), and ByteTrack updates with 100 and 500 objects.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use streamtrack::detect::{DetectConfig, Detection, decode_candidates, non_max_suppression};
use streamtrack::geometry::BBox;
use streamtrack::track::{Tracker, TrackerConfig};

fn read_npy_f32(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("reference output present");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn decode_and_nms(c: &mut Criterion) {
    let output = read_npy_f32("../shared/data/reference/yolov8n-coco-640/bus.output.npy");
    let config = DetectConfig::default();
    c.bench_function("decode+nms yolov8n 8400x84", |b| {
        b.iter(|| {
            let candidates = decode_candidates(&output, 8400, &config);
            non_max_suppression(candidates, config.iou, config.max_det, false)
        })
    });
}

/// `n` objects on a grid, drifting right, with a little deterministic jitter.
fn scene(n: usize, frame: usize) -> Vec<Detection> {
    let cols = (n as f32).sqrt().ceil() as usize;
    (0..n)
        .map(|i| {
            let (gx, gy) = ((i % cols) as f32, (i / cols) as f32);
            let jitter = ((i * 31 + frame * 17) % 7) as f32 * 0.3;
            let x = gx * 60.0 + frame as f32 * 2.0 + jitter;
            let y = gy * 90.0 + jitter;
            Detection {
                bbox: BBox::new(x, y, x + 40.0, y + 80.0),
                score: 0.5 + ((i % 5) as f32) * 0.1,
                class_id: 0,
            }
        })
        .collect()
}

fn tracker_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("bytetrack update");
    for n in [100, 500] {
        let frames: Vec<Vec<Detection>> = (0..600).map(|f| scene(n, f)).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &frames, |b, frames| {
            let mut tracker = Tracker::new(TrackerConfig::default(), 30.0);
            let mut f = 0usize;
            b.iter(|| {
                let out = tracker.update(&frames[f % frames.len()], f as f64 / 30.0);
                f += 1;
                out
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode_and_nms, tracker_update);
criterion_main!(benches);
