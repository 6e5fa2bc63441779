//! Depthwise convolution (one `k x k` filter per channel, YOLO11's `DWConv`) with its bias
//! and activation, parallel over channels. Each output row is accumulated tap by tap over a
//! contiguous run of the input row (stride 1) or its every `s`-th value, then gets the bias
//! and activation while it is in cache.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::activation::{Activation, apply_bias_activation};
use crate::conv::{FeatureMap, output_size};

/// A depthwise convolution: `weight` is `[channels, kernel, kernel]`, `bias` `[channels]`.
#[derive(Debug, Clone, Copy)]
pub struct DepthwiseParams<'a> {
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub activation: Activation,
}

/// Computes `activation(depthwise_conv(inputs) + bias)` for one image into `out`
/// (`[channels, out_h, out_w]`); `inputs` are the channel blocks of the input in order, all
/// `height x width`.
///
/// # Panics
/// When a slice's length does not match the shapes given.
pub fn depthwise_conv2d(
    inputs: &[FeatureMap],
    height: usize,
    width: usize,
    params: &DepthwiseParams,
    out: &mut [MaybeUninit<f32>],
) {
    let k = params.kernel;
    let channels: usize = inputs.iter().map(|p| p.channels).sum();
    let (out_h, out_w) = output_size(height, width, k, params.stride, params.padding);
    assert_eq!(params.weight.len(), channels * k * k, "weight shape");
    assert_eq!(params.bias.len(), channels, "bias shape");
    assert_eq!(out.len(), channels * out_h * out_w, "output shape");
    let planes: Vec<&[f32]> = inputs
        .iter()
        .flat_map(|part| {
            assert_eq!(
                part.data.len(),
                part.channels * height * width,
                "input shape"
            );
            part.data.chunks_exact(height * width)
        })
        .collect();
    if out_h * out_w == 0 {
        return;
    }
    out.par_chunks_exact_mut(out_h * out_w)
        .zip(planes)
        .zip(params.weight.par_chunks_exact(k * k))
        .zip(params.bias)
        .for_each(|(((out, plane), filter), &bias)| {
            let out = zeroed(out);
            for (oy, row) in out.chunks_exact_mut(out_w).enumerate() {
                for (ky, taps) in filter.chunks_exact(k).enumerate() {
                    let Some(iy) = (oy * params.stride + ky)
                        .checked_sub(params.padding)
                        .filter(|&iy| iy < height)
                    else {
                        continue;
                    };
                    let line = &plane[iy * width..(iy + 1) * width];
                    for (kx, &w) in taps.iter().enumerate() {
                        accumulate_tap(row, line, w, kx, params);
                    }
                }
            }
            // Once per plane: on the small maps of the detection head a row is a few dozen
            // values, and a call per row cost more than the activation itself.
            apply_bias_activation(out, bias, params.activation);
        });
}

/// `values` set to zeros, as the initialised values they now hold.
fn zeroed(values: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    values.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just initialised; `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `row[ox] += w * line[ox * stride + kx - padding]` wherever that lies inside `line`.
fn accumulate_tap(row: &mut [f32], line: &[f32], w: f32, kx: usize, params: &DepthwiseParams) {
    let s = params.stride;
    // Output columns whose input column `ox * s + kx - padding` is inside the line.
    let first = params.padding.saturating_sub(kx).div_ceil(s).min(row.len());
    let end = (line.len() + params.padding)
        .saturating_sub(kx)
        .div_ceil(s)
        .clamp(first, row.len());
    if first == end {
        return;
    }
    let start = first * s + kx - params.padding;
    let row = &mut row[first..end];
    if s == 1 {
        for (r, &x) in row.iter_mut().zip(&line[start..]) {
            *r += w * x;
        }
    } else {
        for (r, &x) in row.iter_mut().zip(line[start..].iter().step_by(s)) {
            *r += w * x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::{values, written};
    use proptest::prelude::*;

    /// Direct per-pixel loops in f64.
    fn reference(x: &[f32], [c, h, w]: [usize; 3], p: &DepthwiseParams) -> Vec<f32> {
        let k = p.kernel;
        let (oh, ow) = output_size(h, w, k, p.stride, p.padding);
        let mut out = Vec::with_capacity(c * oh * ow);
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = f64::from(p.bias[ch]);
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * p.stride + ky) as isize - p.padding as isize;
                            let ix = (ox * p.stride + kx) as isize - p.padding as isize;
                            if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                let xv = x[(ch * h + iy as usize) * w + ix as usize];
                                acc += f64::from(xv) * f64::from(p.weight[(ch * k + ky) * k + kx]);
                            }
                        }
                    }
                    out.push(match p.activation {
                        Activation::Identity => acc as f32,
                        Activation::Silu => (acc / (1.0 + (-acc).exp())) as f32,
                    });
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_the_reference(
            c in 1usize..6, split in 0usize..6, h in 1usize..15, w in 1usize..15,
            k in prop::sample::select(vec![1usize, 3, 5]), s in 1usize..4, pad in 0usize..3,
            silu in any::<bool>(),
        ) {
            prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
            let x = values(c * h * w, 1);
            let weight = values(c * k * k, 2);
            let bias = values(c, 3);
            let params = DepthwiseParams {
                weight: &weight,
                bias: &bias,
                kernel: k,
                stride: s,
                padding: pad,
                activation: if silu { Activation::Silu } else { Activation::Identity },
            };
            let split = split.min(c);
            let parts = [
                FeatureMap { data: &x[..split * h * w], channels: split },
                FeatureMap { data: &x[split * h * w..], channels: c - split },
            ];
            let (oh, ow) = output_size(h, w, k, s, pad);
            let out = written(c * oh * ow, |out| depthwise_conv2d(&parts, h, w, &params, out));
            for (i, (g, r)) in out.iter().zip(reference(&x, [c, h, w], &params)).enumerate() {
                prop_assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()), "element {i}: {g} vs {r}");
            }
        }
    }
}
