//! Letterboxing on a GPU: the decoded frame goes to the device once, as packed bytes, and one
//! CubeCL kernel writes the network input from it. The kernel repeats the CPU path's integer
//! `INTER_LINEAR` arithmetic (same taps, same shifts) and turns levels into floats through a
//! table the host computed, so both paths give bit-identical inputs.

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, DType, Shape, backend_extension};
use burn::tensor::{Int, Tensor, TensorData};
use burn_cubecl::CubeBackend;
use burn_cubecl::cubecl::{CubeDim, calculate_cube_count_elemwise};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use image::RgbImage;

use super::preprocess::{Letterbox, PAD_VALUE, axis_taps, level_to_unit};

/// Where the resized frame lands in the network input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Width of the source frame in pixels.
    pub source_width: u32,
    /// Left and top padding in input pixels.
    pub offset: (u32, u32),
    /// Size of the resized frame, `(width, height)`.
    pub resized: (u32, u32),
    /// Network input size, `(width, height)`.
    pub input: (u32, u32),
}

/// A Burn backend that can letterbox a packed frame on its device.
#[backend_extension(Cube, Fusion)]
pub trait LetterboxBackend: Backend {
    /// Letterboxes one frame into a `[1, 3, input height, input width]` f32 tensor.
    ///
    /// `frame`: the RGB bytes, four to a `u32` (little-endian); `taps`: `(src0, src1, w0, w1)`
    /// per resized column then per resized row, as [`axis_taps`] computes them; `levels`: the
    /// 256 floats a byte level becomes.
    #[fusion(meta = output_spec)]
    fn letterbox(
        frame: IntTensor<Self>,
        taps: IntTensor<Self>,
        levels: FloatTensor<Self>,
        placement: Placement,
    ) -> FloatTensor<Self>;
}

/// The letterboxed tensor's shape and type, known before the kernel runs.
fn output_spec(
    _frame: &TensorSpec,
    _taps: &TensorSpec,
    _levels: &TensorSpec,
    placement: &Placement,
) -> TensorSpec {
    let (w, h) = placement.input;
    TensorSpec::new(Shape::new([1, 3, h as usize, w as usize]), DType::F32)
}

impl LetterboxBackend for CubeBackend {
    fn letterbox(
        frame: CubeTensor,
        taps: CubeTensor,
        levels: CubeTensor,
        placement: Placement,
    ) -> CubeTensor {
        assert_eq!(frame.dtype, DType::U32, "packed frame must be u32");
        assert_eq!(taps.dtype, DType::U32, "taps must be u32");
        assert_eq!(levels.dtype, DType::F32, "level table must be f32");
        let (w, h) = (placement.input.0 as usize, placement.input.1 as usize);
        let output = empty_device_contiguous_dtype(
            frame.client.clone(),
            frame.device.clone(),
            Shape::new([1, 3, h, w]),
            DType::F32,
        );
        let pixels = w * h;
        let cube_dim = CubeDim::new(&frame.client, pixels);
        let cube_count = calculate_cube_count_elemwise(&frame.client, pixels, cube_dim);
        kernel::letterbox_kernel::launch(
            &output.client,
            cube_count,
            cube_dim,
            frame.into_tensor_arg(),
            taps.into_tensor_arg(),
            levels.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            placement.source_width,
            placement.offset.0,
            placement.offset.1,
            placement.resized.0,
            placement.resized.1,
        );
        output
    }
}

/// The CubeCL kernel, in its own scope: CubeCL's prelude has its own `Tensor`, and the
/// `#[cube]` expansion names the `cubecl` crate, which Burn re-exports.
mod kernel {
    use burn_cubecl::cubecl::{self, prelude::*};

    /// Index of the padding grey in the level table.
    const PAD_LEVEL: usize = super::PAD_VALUE as usize;

    /// One byte of the packed frame.
    #[cube]
    fn frame_byte(frame: &Tensor<u32>, index: u32) -> u32 {
        let word = frame[(index / 4) as usize];
        (word >> ((index % 4) * 8)) & 255
    }

    /// One thread per input pixel: padding grey, or the three channels of the resized frame
    /// (the CPU's horizontal taps, then its vertical pass: drop 4 bits, keep the high 16 bits of
    /// each product, round off the last 2).
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn letterbox_kernel(
        frame: &Tensor<u32>,
        taps: &Tensor<u32>,
        levels: &Tensor<f32>,
        output: &mut Tensor<f32>,
        source_width: u32,
        left: u32,
        top: u32,
        resized_width: u32,
        resized_height: u32,
    ) {
        let width = output.shape(3);
        let plane = width * output.shape(2);
        if ABSOLUTE_POS >= plane {
            terminate!();
        }
        let x = (ABSOLUTE_POS % width) as u32;
        let y = (ABSOLUTE_POS / width) as u32;
        if x < left || x >= left + resized_width || y < top || y >= top + resized_height {
            let grey = levels[PAD_LEVEL];
            output[ABSOLUTE_POS] = grey;
            output[plane + ABSOLUTE_POS] = grey;
            output[2 * plane + ABSOLUTE_POS] = grey;
        } else {
            let column = ((x - left) * 4) as usize;
            let row = ((resized_width + y - top) * 4) as usize;
            let row0 = taps[row] * source_width * 3;
            let row1 = taps[row + 1] * source_width * 3;
            let b0 = taps[row + 2];
            let b1 = taps[row + 3];
            let x0 = taps[column] * 3;
            let x1 = taps[column + 1] * 3;
            let a0 = taps[column + 2];
            let a1 = taps[column + 3];
            #[unroll]
            for c in 0..3u32 {
                let top_line =
                    frame_byte(frame, row0 + x0 + c) * a0 + frame_byte(frame, row0 + x1 + c) * a1;
                let bottom_line =
                    frame_byte(frame, row1 + x0 + c) * a0 + frame_byte(frame, row1 + x1 + c) * a1;
                let upper = ((top_line >> 4) * b0) >> 16;
                let lower = ((bottom_line >> 4) * b1) >> 16;
                let level = u32::min((upper + lower + 2) >> 2, 255);
                output[c as usize * plane + ABSOLUTE_POS] = levels[level as usize];
            }
        }
    }
}

/// Letterboxes `image` to `input` (`(width, height)`) on `device`: one upload of the packed
/// frame and its tap tables, one kernel.
pub fn letterbox_on_device(
    image: &RgbImage,
    input: (u32, u32),
    device: &burn::tensor::Device,
) -> (Tensor<4>, Letterbox) {
    let geometry = Letterbox::new(image.dimensions(), input);
    let (rw, rh) = geometry.resized();
    let (left, top) = geometry.offset();
    let mut taps = Vec::with_capacity(4 * (rw + rh) as usize);
    for axis in [
        axis_taps(image.width() as usize, rw as usize),
        axis_taps(image.height() as usize, rh as usize),
    ] {
        for (s0, s1, w0, w1) in axis {
            taps.extend([s0 as u32, s1 as u32, w0 as u32, w1 as u32]);
        }
    }
    let taps_len = taps.len();
    let u32_tensor = |data: TensorData| Tensor::<1, Int>::from_data(data, (device, DType::U32));
    let levels: Vec<f32> = (0..=255u8).map(level_to_unit).collect();
    let output = <burn::backend::Dispatch as LetterboxBackend>::letterbox(
        u32_tensor(packed_frame(image.as_raw())).into_dispatch(),
        u32_tensor(TensorData::new(taps, [taps_len])).into_dispatch(),
        Tensor::<1>::from_data(TensorData::new(levels, [256]), device).into_dispatch(),
        Placement {
            source_width: image.width(),
            offset: (left as u32, top as u32),
            resized: (rw, rh),
            input,
        },
    );
    (Tensor::from_dispatch(output), geometry)
}

/// The frame's RGB bytes as `u32` words, zero-filled to a whole word. The bytes go to the
/// device as they are, where the kernel reads each word little-endian (as every GPU does).
fn packed_frame(bytes: &[u8]) -> TensorData {
    let len = bytes.len().next_multiple_of(4);
    let mut padded = Vec::with_capacity(len);
    padded.extend_from_slice(bytes);
    padded.resize(len, 0);
    TensorData::from_bytes_vec(padded, [len / 4], DType::U32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::preprocess::letterbox_into;
    use crate::model::{ComputeDevice, DeviceChoice};

    /// Deterministic noise, so every tap weight and byte position is exercised.
    fn noise(width: u32, height: u32) -> RgbImage {
        let mut state = 0x2545_f491_u32;
        RgbImage::from_fn(width, height, |_, _| {
            image::Rgb(std::array::from_fn(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            }))
        })
    }

    /// On whatever adapter exists (CI: Mesa's lavapipe): the kernel's input equals the CPU
    /// letterbox's, float for float, for a downscaled portrait photo, an upscaled frame whose
    /// pixels straddle the packed words, and a frame that only needs padding.
    #[test]
    fn device_letterbox_equals_the_cpu_letterbox_bit_for_bit() {
        let device = match ComputeDevice::resolve(DeviceChoice::Gpu) {
            Ok(device) => device,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let photo = crate::video::images::read_image("../shared/data/images/bus.jpg".as_ref())
            .expect("test photo decodes");
        let cases = [
            (photo.clone(), (640, 640)),
            (photo, (320, 256)),
            (noise(333, 177), (640, 640)),
            (noise(64, 37), (64, 64)),
        ];
        for (image, input) in cases {
            let (tensor, geometry) = letterbox_on_device(&image, input, &device.device);
            let mut host = vec![0.0; 3 * (input.0 * input.1) as usize];
            assert_eq!(geometry, letterbox_into(&image, input, &mut host));
            let ours = tensor.into_data().try_to_vec::<f32>().expect("f32 input");
            let differing = ours
                .iter()
                .zip(&host)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(ours.len(), host.len());
            assert_eq!(
                differing,
                0,
                "{:?} -> {input:?}: {differing} values differ",
                image.dimensions()
            );
        }
    }

    #[test]
    fn frame_bytes_pack_into_words_with_a_zero_filled_tail() {
        let words = packed_frame(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            (words.dtype(), words.shape().as_slice()),
            (DType::U32, &[2][..])
        );
        assert_eq!(words.as_bytes(), &[1, 2, 3, 4, 5, 6, 0, 0]);
    }
}
