//! Throughput benchmarks, each against a baseline measured in the same process:
//! - video decode: our MP4 source (demux, AVCC to Annex-B, decode, YUV to RGB) against
//!   openh264 decoding the same samples alone, on the 1080p sample;
//! - network latency per backend for both sample models at batch 1 and 4.
//!
//! Run with `cargo bench --bench throughput`.

use std::time::{Duration, Instant};

use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig, Flush};
use streamtrack::model::{ComputeDevice, YoloModel};
use streamtrack::video::FrameSource;
use streamtrack::video::mp4_source::{Mp4Source, Mp4Track};

const VIDEO: &str = "../shared/data/video/pedestrians-1920x1080.mp4";

/// Best of `runs` timings of `f`.
fn best_of(runs: usize, mut f: impl FnMut() -> u64) -> (Duration, u64) {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let n = f();
            (start.elapsed(), n)
        })
        .min_by_key(|(d, _)| *d)
        .expect("at least one run")
}

fn openh264_alone() -> u64 {
    let mut track = Mp4Track::open(std::path::Path::new(VIDEO)).unwrap();
    let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    let mut decoder = Decoder::with_api_config(OpenH264API::from_source(), config).unwrap();
    decoder.decode(&track.parameter_sets).unwrap();
    let mut frames = 0;
    while let Some((sample, _, _)) = track.next_sample().unwrap() {
        if decoder.decode(&sample.unwrap()).unwrap().is_some() {
            frames += 1;
        }
    }
    frames + decoder.flush_remaining().unwrap().len() as u64
}

fn our_source() -> u64 {
    let mut source = Mp4Source::open(std::path::Path::new(VIDEO)).unwrap();
    let mut frames = 0;
    while source.next_frame().unwrap().is_some() {
        frames += 1;
    }
    frames
}

fn decode_throughput() {
    let (base, n_base) = best_of(3, openh264_alone);
    let (ours, n_ours) = best_of(3, our_source);
    assert_eq!(n_base, n_ours);
    let fps = |d: Duration| n_base as f64 / d.as_secs_f64();
    println!(
        "decode {VIDEO}: openh264 alone {:.1} FPS, streamtrack source {:.1} FPS, ratio {:.2}x",
        fps(base),
        fps(ours),
        ours.as_secs_f64() / base.as_secs_f64()
    );
}

fn network_latency() {
    let mut devices = vec![ComputeDevice::cpu()];
    if let Ok(gpu) = ComputeDevice::resolve(streamtrack::model::DeviceChoice::Gpu) {
        devices.push(gpu);
    }
    for device in devices {
        for model in ["yolov8n-coco-640.onnx", "yolo11n-coco-320.onnx"] {
            let path = format!("../shared/data/models/{model}");
            let net = YoloModel::load(std::path::Path::new(&path), device.clone()).unwrap();
            let (w, h) = net.input_size();
            for batch in [1usize, 4] {
                let input = net.planar_input(vec![0.5f32; batch * 3 * (w * h) as usize], batch);
                // Warm-up (and, on wgpu, autotune), then timed runs; `infer` reads the
                // output back, so the device is synchronised before the timer stops.
                net.infer(input.clone());
                let (best, _) = best_of(5, || {
                    net.infer(input.clone());
                    0
                });
                println!(
                    "network {model} batch {batch} on {}: {:.1} ms per batch, {:.1} ms per image",
                    device.description,
                    best.as_secs_f64() * 1e3,
                    best.as_secs_f64() * 1e3 / batch as f64
                );
            }
        }
    }
}

fn main() {
    decode_throughput();
    network_latency();
}
