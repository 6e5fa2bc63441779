//! Weight-only INT8 with Burn's quantised tensors: every convolution weight becomes symmetric
//! int8 (`Q8S`) with one f32 scale per block of at most 64 values of one output channel
//! (whole kernels, as many input channels as fit), so a model file shrinks about 3.8x.
//! At load the weights are dequantised once and the network runs in f32 on every backend.

use burn::module::{ModuleMapper, Param};
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue};
use burn::tensor::{DType, Tensor};

/// Largest number of weights that share one scale.
const MAX_BLOCK: usize = 64;

/// Quantises every rank-4 (convolution weight) parameter; biases stay f32.
pub(crate) struct WeightQuantizer;

impl ModuleMapper for WeightQuantizer {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D != 4 {
            return param;
        }
        param.map(|tensor| {
            let scheme = block_scheme(&tensor.dims());
            tensor.quantize_dynamic(&scheme)
        })
    }
}

/// Turns quantised parameters back into f32 ones (others pass through).
pub(crate) struct Dequantizer;

impl ModuleMapper for Dequantizer {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if matches!(param.val().dtype(), DType::QFloat(_)) {
            param.map(|tensor| tensor.dequantize())
        } else {
            param
        }
    }
}

/// Symmetric int8 with a block of `[channels, kh, kw]` inside one output channel: the most
/// input channels that divide `c_in` and keep the block within [`MAX_BLOCK`] values.
fn block_scheme(dims: &[usize]) -> QuantScheme {
    let (c_in, kh, kw) = (dims[1], dims[2], dims[3]);
    let area = kh * kw;
    let channels = (1..=c_in.min((MAX_BLOCK / area).max(1)))
        .rev()
        .find(|d| c_in.is_multiple_of(*d))
        .unwrap_or(1);
    QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .with_store(QuantStore::Native)
        .per_block(
            [channels as u8, kh as u8, kw as u8],
            burn::tensor::quantization::ScaleDtype::F32,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_stay_inside_one_output_channel_and_divide_the_inputs() {
        let channels = |dims: [usize; 4]| {
            let block = block_scheme(&dims).block_size().expect("per block");
            block
                .as_slice()
                .iter()
                .map(|&v| v as usize)
                .product::<usize>()
        };
        assert_eq!(channels([16, 3, 3, 3]), 27); // stem: all three input channels
        assert_eq!(channels([32, 16, 3, 3]), 36); // 4 channels x 9
        assert_eq!(channels([64, 48, 1, 1]), 48);
        assert_eq!(channels([256, 512, 1, 1]), 64);
        assert_eq!(channels([80, 80, 3, 3]), 45); // 5 channels x 9
    }
}
