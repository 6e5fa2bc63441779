//! Fused 2-D convolution for CPU inference: `activation(conv(x, w) + b)` in one pass.
//!
//! Convolutions are lowered to matrix products against weights packed once at load
//! ([`PackedWeights`]), computed by register-blocked micro-kernels (AVX-512, AVX2 + FMA or
//! portable, chosen at run time) that read the input in place. [`conv2d`]
//! splits the output into column tiles that run in parallel on rayon; each tile builds its
//! own small im2col block (skipped for 1x1 stride-1 convolutions, which multiply the input
//! directly), multiplies it, then adds the bias and applies the activation while the tile is
//! still in cache. [`conv3x3_winograd`] computes 3x3 stride-1 convolutions as Winograd
//! F(4x4, 3x3) or F(2x2, 3x3) (4x or 2.25x fewer multiplications, [`WinogradTile`]) from
//! weights transformed once ([`WinogradWeights`]); on small maps, where Winograd's transforms
//! do not pay, and for stride 2, [`conv3x3_taps`] computes 3x3 convolutions as one indirect product read straight
//! from a padded (for stride 2, phase-split) copy of the input, with the im2col weights.
//! [`conv3x3_taps_levels`] does the same for a network's first convolution on an image's
//! byte levels, each widened to `level / 255` ([`level_to_unit`]) as it is copied.
//! [`conv_channel_blocked`] (AVX-512) puts output channels in the vector lanes instead of
//! output positions, for 3x3 and 1x1 convolutions on small maps, where positions leave
//! lanes empty ([`ChannelBlockedWeights`], packed once).
//! Layout is NCHW, one image at a time, so feature maps move between
//! layers without layout conversions; an input may be given as several channel blocks (the
//! parts of a concatenation), which are read in place instead of being copied together first.
//! A 1x1 convolution whose first block is another map upsampled ([`UpsampledPart`], YOLO's
//! neck) computes that block's product before the upsampling, at a `scale²`-th of the cost,
//! and never makes the upsampled map ([`conv1x1_upsampled`],
//! [`conv1x1_channel_blocked_upsampled`]); the INT8 path quantises such a block before the
//! upsampling and upsamples its quads ([`QuantizedMap::quantize_upsampled`]).
//!
//! [`conv2d_int8`] is the INT8 convolution: u8 activations times i8 weights packed once
//! ([`QuantizedWeights`]), exact i32 accumulation (`vpdpbusd` with AVX-512 VNNI or AVX-VNNI,
//! widened 16-bit products with AVX2, or portable), dequantised into the same bias +
//! activation epilogue.
//!
//! [`depthwise_conv2d`] runs depthwise convolutions (one filter per channel) the same way,
//! with bias and activation fused.
//!
//! [`max_pool_same`] is the stride-1 max-pool of YOLO's SPPF block, separable;
//! [`upsample_nearest`] the neck's nearest-neighbour upsampling; [`attention`] the
//! multi-head self-attention of YOLO11's PSA block;
//! [`sigmoid_into`] and [`exp_minus_column_max`] (a softmax's numerator) are the
//! vectorised activations the detection head and the attention need.

mod activation;
mod attention;
mod conv;
mod depthwise;
mod direct;
mod im2col;
mod int8;
mod int8_kernels;
mod levels;
mod packed;
mod pool;
mod scratch;
mod simd;
mod taps;
#[cfg(test)]
mod test_values;
mod upsample;
mod winograd;

pub use activation::{
    Activation, Epilogue, apply_bias_activation, exp_minus_column_max, sigmoid_into,
};
pub use attention::{AttentionShape, attention};
pub use conv::{ConvParams, FeatureMap, conv1x1_upsampled, conv2d, output_size};
pub use depthwise::{DepthwiseParams, depthwise_conv2d};
pub use direct::{
    ChannelBlockedWeights, channel_blocked_supported, conv_channel_blocked,
    conv1x1_channel_blocked_upsampled,
};
pub use int8::{
    Int8ConvParams, Int8Output, QuantParams, QuantizedMap, QuantizedWeights, conv2d_int8,
    conv2d_int8_quantized,
};
pub use int8_kernels::int8_kernel_name;
pub use levels::{level_to_unit, widen_levels};
pub use packed::PackedWeights;
pub use pool::max_pool_same;
pub use taps::{conv3x3_taps, conv3x3_taps_levels};
pub use upsample::{UpsampledPart, upsample_nearest};
pub use winograd::{WinogradTile, WinogradWeights, conv3x3_winograd};
