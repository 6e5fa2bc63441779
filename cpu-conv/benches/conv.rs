//! The fused convolutions on YOLOv8n layer shapes at 640 input, one image: the im2col path
//! on every shape, the INT8 path (quantising the f32 input included) beside it, the INT8
//! hand-off to a next INT8 layer (f32 output quantised afterwards, against the output
//! quantised in the epilogue), the
//! tap-wise indirect product on the 3x3 ones (the stem also from an image's byte levels),
//! the channel-blocked path (output channels in
//! the lanes, AVX-512) on every shape, and Winograd F(2x2, 3x3) and F(4x4, 3x3) on the
//! 3x3 stride-1 ones. Then the
//! matrix product alone, single-threaded, on the products those layers run: our packed
//! micro-kernels against the `gemm` crate (the general packed GEMM that Burn's CPU backend
//! uses) in the same run, so the figures compare as a ratio.
//!
//! Run with `cargo bench -p cpu-conv`.

use cpu_conv::{
    Activation, ChannelBlockedWeights, ConvParams, DepthwiseParams, Epilogue, FeatureMap,
    Int8ConvParams, Int8Output, PackedWeights, QuantParams, QuantizedMap, QuantizedWeights,
    WinogradTile, WinogradWeights, channel_blocked_supported, conv_channel_blocked, conv2d,
    conv2d_int8, conv2d_int8_quantized, conv3x3_taps, conv3x3_taps_levels, conv3x3_winograd,
    depthwise_conv2d, output_size,
};
use criterion::{Criterion, criterion_group, criterion_main};

/// `(name, c_in, c_out, size, kernel, stride)` of representative YOLOv8n layers (and ten
/// of YOLO11n at 320).
const LAYERS: [(&str, usize, usize, usize, usize, usize); 21] = [
    ("stem 3->16 3x3/2 @640", 3, 16, 640, 3, 2),
    ("down 16->32 3x3/2 @320", 16, 32, 320, 3, 2),
    ("down 32->64 3x3/2 @160", 32, 64, 160, 3, 2),
    ("down 64->128 3x3/2 @80", 64, 128, 80, 3, 2),
    ("down 128->256 3x3/2 @20", 128, 256, 20, 3, 2),
    ("c2f 16->16 3x3 @160", 16, 16, 160, 3, 1),
    ("c2f 32->32 3x3 @80", 32, 32, 80, 3, 1),
    ("head 64->80 3x3 @80", 64, 80, 80, 3, 1),
    ("head 80->80 3x3 @80", 80, 80, 80, 3, 1),
    ("c2f 128->128 3x3 @20", 128, 128, 20, 3, 1),
    ("c3k2 64->64 3x3 @40", 64, 64, 40, 3, 1),
    ("c3k2 128->128 3x3 @10", 128, 128, 10, 3, 1),
    ("c3k2 16->8 3x3 @80", 16, 8, 80, 3, 1),
    ("c3k2 32->16 3x3 @40", 32, 16, 40, 3, 1),
    ("down 64->64 3x3/2 @80", 64, 64, 80, 3, 2),
    ("c2f cv2 48->32 1x1 @160", 48, 32, 160, 1, 1),
    ("sppf cv2 512->256 1x1 @20", 512, 256, 20, 1, 1),
    ("c2f cv2 48->64 1x1 @80", 48, 64, 80, 1, 1),
    ("c3k2 384->256 1x1 @10", 384, 256, 10, 1, 1),
    ("c3k2 256->64 1x1 @40", 256, 64, 40, 1, 1),
    ("c3k2 192->128 1x1 @20", 192, 128, 20, 1, 1),
];

fn layers(c: &mut Criterion) {
    for (name, c_in, c_out, size, k, s) in LAYERS {
        let x: Vec<f32> = (0..c_in * size * size)
            .map(|i| (i % 17) as f32 * 0.03)
            .collect();
        let weight: Vec<f32> = (0..c_out * c_in * k * k)
            .map(|i| (i % 7) as f32 * 0.01 - 0.03)
            .collect();
        let bias = vec![0.1f32; c_out];
        let packed = PackedWeights::new(&weight, c_out, c_in * k * k);
        let epilogue = Epilogue::new(&bias, Activation::Silu);
        let params = ConvParams {
            weight: &packed,
            kernel: k,
            stride: s,
            padding: k / 2,
            epilogue,
        };
        let (oh, ow) = output_size(size, size, k, s, k / 2);
        let mut out = vec![std::mem::MaybeUninit::uninit(); c_out * oh * ow];
        let input = [FeatureMap {
            data: &x,
            channels: c_in,
        }];
        c.bench_function(name, |b| {
            b.iter(|| conv2d(&input, size, size, &params, &mut out))
        });
        let quantized_weights = QuantizedWeights::new(&weight, c_out, c_in, k);
        let int8_params = Int8ConvParams {
            weight: &quantized_weights,
            stride: s,
            padding: k / 2,
            epilogue,
        };
        let range = QuantParams::covering(0.0, 0.5);
        c.bench_function(&format!("{name} int8"), |b| {
            b.iter(|| {
                let quantized = QuantizedMap::quantize(&input, size * size, range);
                conv2d_int8(
                    &quantized,
                    size,
                    size,
                    &int8_params,
                    Int8Output::Float(&mut out),
                )
            })
        });
        let quantized = QuantizedMap::quantize(&input, size * size, range);
        c.bench_function(&format!("{name} int8 handoff f32"), |b| {
            b.iter(|| {
                conv2d_int8(
                    &quantized,
                    size,
                    size,
                    &int8_params,
                    Int8Output::Float(&mut out),
                );
                // SAFETY: the convolution wrote every element.
                let values = unsafe { &*(&out[..] as *const _ as *const [f32]) };
                let output = [FeatureMap {
                    data: values,
                    channels: c_out,
                }];
                QuantizedMap::quantize(&output, oh * ow, range)
            })
        });
        c.bench_function(&format!("{name} int8 handoff quads"), |b| {
            b.iter(|| conv2d_int8_quantized(&quantized, size, size, &int8_params, range))
        });
        if k == 3 {
            c.bench_function(&format!("{name} taps"), |b| {
                b.iter(|| conv3x3_taps(&input, size, size, &params, &mut out))
            });
        }
        if k == 3 && c_in == 3 {
            // The stem on an image's byte levels, as the network's input arrives.
            let levels: Vec<u8> = (0..c_in * size * size).map(|i| (i % 251) as u8).collect();
            c.bench_function(&format!("{name} taps from levels"), |b| {
                b.iter(|| conv3x3_taps_levels(&levels, c_in, (size, size), &params, &mut out))
            });
        }
        if channel_blocked_supported() {
            let blocked = ChannelBlockedWeights::new(&weight, c_out, c_in, k);
            c.bench_function(&format!("{name} channel-blocked"), |b| {
                b.iter(|| {
                    conv_channel_blocked(&input, (size, size), &blocked, s, &epilogue, &mut out)
                })
            });
        }
        if k == 3 && s == 1 {
            for tile in [WinogradTile::F2x2, WinogradTile::F4x4] {
                let transformed = WinogradWeights::new(&weight, c_out, c_in, tile);
                c.bench_function(&format!("{name} winograd {tile:?}"), |b| {
                    b.iter(|| {
                        conv3x3_winograd(&input, size, size, &transformed, &epilogue, &mut out)
                    })
                });
            }
        }
    }
}

/// `(c_out, depth, n)` of products in the layers above: a Winograd point of the 80x80 head
/// (80 x 80 channels over one block of tiles), an im2col tile of the 3x3 stride-2 down
/// convolution, the 1x1 c2f convolution over one tile, and SPPF's 1x1 on its 20x20 map.
const PRODUCTS: [(usize, usize, usize); 4] = [
    (80, 80, 240),
    (32, 144, 480),
    (32, 48, 480),
    (256, 512, 400),
];

fn products(c: &mut Criterion) {
    for (rows, depth, n) in PRODUCTS {
        let a: Vec<f32> = (0..rows * depth)
            .map(|i| (i % 7) as f32 * 0.01 - 0.03)
            .collect();
        let x: Vec<f32> = (0..depth * n).map(|i| (i % 17) as f32 * 0.03).collect();
        let mut out = vec![0.0f32; rows * n];
        let packed = PackedWeights::new(&a, rows, depth);
        let name = format!("product {rows}x{depth} . {depth}x{n}");
        c.bench_function(&format!("{name} packed"), |b| {
            b.iter(|| packed.multiply(&x, n, &mut out))
        });
        c.bench_function(&format!("{name} gemm"), |b| {
            // Transposed, out^T = x^T · a^T, as these kernels called it: the long position
            // axis as gemm's `m` runs its micro-kernels full width on narrow layers.
            // SAFETY: the three dense row-major buffers above, with their shapes.
            b.iter(|| unsafe {
                gemm::gemm(
                    n,
                    rows,
                    depth,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                    false,
                    x.as_ptr(),
                    n as isize,
                    1,
                    a.as_ptr(),
                    depth as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            })
        });
    }
}

fn activation(c: &mut Criterion) {
    let mut row: Vec<f32> = (0..80 * 80 * 80)
        .map(|i| (i % 23) as f32 * 0.2 - 2.0)
        .collect();
    c.bench_function("bias + SiLU over 512k values", |b| {
        b.iter(|| cpu_conv::apply_bias_activation(&mut row, 0.0, Activation::Silu))
    });
    // One tile's worth, as the convolutions' epilogue sees it: in cache.
    let tile = &mut row[..8 * 1024];
    c.bench_function("bias + SiLU over 8k values", |b| {
        b.iter(|| cpu_conv::apply_bias_activation(tile, 0.0, Activation::Silu))
    });
}

/// YOLO11n's depthwise 3x3 convolutions (its classification branch) at 320 input: the
/// largest map and the smallest.
fn depthwise(c: &mut Criterion) {
    for (channels, size) in [(80, 40), (128, 10)] {
        let x: Vec<f32> = (0..channels * size * size)
            .map(|i| (i % 17) as f32 * 0.03)
            .collect();
        let weight: Vec<f32> = (0..channels * 9).map(|i| (i % 7) as f32 * 0.01).collect();
        let bias = vec![0.1f32; channels];
        let params = DepthwiseParams {
            weight: &weight,
            kernel: 3,
            stride: 1,
            padding: 1,
            epilogue: Epilogue::new(&bias, Activation::Silu),
        };
        let input = [FeatureMap { data: &x, channels }];
        let mut out = vec![std::mem::MaybeUninit::uninit(); channels * size * size];
        c.bench_function(&format!("depthwise {channels} 3x3 @{size}"), |b| {
            b.iter(|| depthwise_conv2d(&input, size, size, &params, &mut out))
        });
    }
}

criterion_group!(benches, layers, products, depthwise, activation);
criterion_main!(benches);
