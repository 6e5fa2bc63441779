//! The fused convolution on YOLOv8n layer shapes at 640 input, one image.
//!
//! Run with `cargo bench -p cpu-conv`.

use cpu_conv::{Activation, ConvParams, FeatureMap, conv2d, output_size};
use criterion::{Criterion, criterion_group, criterion_main};

/// `(name, c_in, c_out, size, kernel, stride)` of representative YOLOv8n layers.
const LAYERS: [(&str, usize, usize, usize, usize, usize); 5] = [
    ("stem 3->16 3x3/2 @640", 3, 16, 640, 3, 2),
    ("down 16->32 3x3/2 @320", 16, 32, 320, 3, 2),
    ("c2f 16->16 3x3 @160", 16, 16, 160, 3, 1),
    ("c2f cv2 48->32 1x1 @160", 48, 32, 160, 1, 1),
    ("sppf cv2 512->256 1x1 @20", 512, 256, 20, 1, 1),
];

fn layers(c: &mut Criterion) {
    for (name, c_in, c_out, size, k, s) in LAYERS {
        let x = vec![0.25f32; c_in * size * size];
        let weight = vec![0.01f32; c_out * c_in * k * k];
        let bias = vec![0.1f32; c_out];
        let params = ConvParams {
            weight: &weight,
            bias: &bias,
            c_out,
            kernel: k,
            stride: s,
            padding: k / 2,
            activation: Activation::Silu,
        };
        let (oh, ow) = output_size(size, size, k, s, k / 2);
        let mut out = vec![0.0f32; c_out * oh * ow];
        let input = [FeatureMap {
            data: &x,
            channels: c_in,
        }];
        c.bench_function(name, |b| {
            b.iter(|| conv2d(&input, size, size, &params, &mut out))
        });
    }
}

criterion_group!(benches, layers);
criterion_main!(benches);
