//! JPEG decoding that reproduces libjpeg-turbo's default output bit for bit: the decoder
//! behind OpenCV's `imread`, and so the pixels the reference stack's network sees.
//!
//! Other pure-Rust decoders (zune-jpeg in the `image` crate) differ from libjpeg-turbo by up
//! to 4 levels per channel (a different integer IDCT, chroma upsampling and colour rounding),
//! which moves borderline detection scores by more than 0.01. This module ports the three
//! parts that decide the samples — the `ISLOW` IDCT (`idct`), "fancy" chroma upsampling
//! (`upsample`) and the YCbCr tables (`color`) — behind its own Huffman decoder (`entropy`)
//! and marker parser (`frame`). It covers baseline and extended sequential, Huffman-coded,
//! 8-bit greyscale / YCbCr / RGB files: what cameras and `yolo`'s datasets hold. Progressive,
//! arithmetic-coded, lossless, 12-bit and CMYK files return [`JpegError::Unsupported`] and
//! the caller decodes them with the `image` crate instead.

mod color;
mod entropy;
mod frame;
mod idct;
mod standard_tables;
mod upsample;

use image::RgbImage;
use rayon::prelude::*;

use frame::{ColourModel, DecodedFrame};
use upsample::{Plane, to_full_size};

/// Why a JPEG was not decoded here.
#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    /// A valid JPEG of a kind this decoder does not handle.
    #[error("unsupported JPEG kind: {0}")]
    Unsupported(String),
    /// Damaged or not a JPEG.
    #[error("{0}")]
    Corrupt(String),
    /// More pixels than the caller allows (checked before anything is allocated).
    #[error("{}", crate::video::images::too_large_message(*width, *height, *limit))]
    TooLarge { width: u64, height: u64, limit: u64 },
}

impl JpegError {
    fn corrupt(message: impl Into<String>) -> Self {
        Self::Corrupt(message.into())
    }
}

/// A decoded JPEG: RGB pixels and the EXIF orientation tag's TIFF payload, if present.
pub struct DecodedJpeg {
    pub image: RgbImage,
    pub exif: Option<Vec<u8>>,
}

/// Decodes a JPEG file's bytes to RGB exactly as libjpeg-turbo (default settings) does;
/// a frame of more than `max_pixels` pixels is refused before its planes are allocated.
pub fn decode(data: &[u8], max_pixels: u64) -> Result<DecodedJpeg, JpegError> {
    let frame = frame::decode_frame(data, max_pixels)?;
    let planes: Vec<Vec<u8>> = frame
        .components
        .iter()
        .map(|c| {
            let (width, height) = frame.component_size(c);
            let plane = Plane {
                samples: &c.samples,
                stride: c.stride,
                width,
                height,
            };
            to_full_size(
                &plane,
                (frame.h_max / c.h, frame.v_max / c.v),
                frame.width,
                frame.height,
            )
        })
        .collect();
    let pixels = interleave(&frame, &planes);
    let image = RgbImage::from_raw(frame.width as u32, frame.height as u32, pixels)
        .expect("one RGB triple per pixel");
    Ok(DecodedJpeg {
        image,
        exif: frame.exif,
    })
}

/// Full-size component planes to interleaved RGB, rows in parallel.
fn interleave(frame: &DecodedFrame, planes: &[Vec<u8>]) -> Vec<u8> {
    let width = frame.width;
    let mut rgb = vec![0u8; width * frame.height * 3];
    let tables = color::YccTables::new();
    rgb.par_chunks_exact_mut(width * 3)
        .enumerate()
        .for_each(|(y, row)| {
            let at = |c: usize| &planes[c][y * width..(y + 1) * width];
            let pixels = row.chunks_exact_mut(3);
            match frame.colour {
                ColourModel::Grey => {
                    for (out, &luma) in pixels.zip(at(0)) {
                        out.fill(luma);
                    }
                }
                ColourModel::Rgb => {
                    for (((out, &r), &g), &b) in pixels.zip(at(0)).zip(at(1)).zip(at(2)) {
                        out.copy_from_slice(&[r, g, b]);
                    }
                }
                ColourModel::YCbCr => {
                    for (((out, &y), &cb), &cr) in pixels.zip(at(0)).zip(at(1)).zip(at(2)) {
                        out.copy_from_slice(&tables.rgb(y, cb, cr));
                    }
                }
            }
        });
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a, 64 bits (as `scripts/opencv_jpeg_digests.py`).
    fn fnv1a64(data: &[u8]) -> u64 {
        data.iter().fold(0xCBF2_9CE4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
        })
    }

    #[test]
    fn shared_images_decode_exactly_as_opencv() {
        // From `scripts/opencv_jpeg_digests.py`: OpenCV's imread (libjpeg-turbo 3.1.2).
        // bus and zidane are 4:2:0 (h2v2), the others 4:4:0 (h1v2).
        let expected = [
            ("bus", 810, 1080, 0x06a1_e636_02d5_a5aa_u64),
            ("dog", 768, 576, 0x1f32_5145_7142_c378),
            ("horses", 773, 512, 0x01ae_6943_d0cb_3a6e),
            ("person", 640, 424, 0x4aca_51be_ea55_54ae),
            ("zidane", 1280, 720, 0x6f84_42d9_936f_e550),
        ];
        for (name, width, height, digest) in expected {
            let data = std::fs::read(format!("../shared/data/images/{name}.jpg")).unwrap();
            let image = decode(&data, u64::MAX).unwrap().image;
            assert_eq!(image.dimensions(), (width, height), "{name}");
            assert_eq!(
                fnv1a64(image.as_raw()),
                digest,
                "{name}: pixels differ from OpenCV's"
            );
        }
    }

    /// A 16x8 greyscale baseline JPEG, built by hand: all-ones quantisation, no Huffman
    /// tables (the standard's), a restart marker after each of its two DC-only blocks, DC 80
    /// (-> sample 138) then -40 (-> 123).
    fn two_block_grey_jpeg(app_segment: &[u8]) -> Vec<u8> {
        let mut file = vec![0xFF, 0xD8];
        file.extend_from_slice(app_segment);
        file.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
        file.extend_from_slice(&[1; 64]);
        // SOF0: 8 bits, 8 rows, 16 columns, one component (id 1, 1x1, table 0).
        file.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x0B, 8, 0, 8, 0, 16, 1, 1, 0x11, 0]);
        file.extend_from_slice(&[0xFF, 0xDD, 0x00, 0x04, 0x00, 0x01]);
        file.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0x00, 0, 63, 0]);
        // Block 1: DC category 7 "11110", value 80 "1010000", EOB "1010".
        file.extend_from_slice(&[0xF5, 0x0A, 0xFF, 0xD0]);
        // Block 2 (prediction reset): category 6 "1110", -40 -> "010111", EOB "1010", pad 1s.
        file.extend_from_slice(&[0xE5, 0xEB, 0xFF, 0xD9]);
        file
    }

    #[test]
    fn restart_markers_reset_the_prediction_and_standard_tables_apply() {
        let image = decode(&two_block_grey_jpeg(&[]), u64::MAX).unwrap().image;
        assert_eq!(image.dimensions(), (16, 8));
        for (x, y, pixel) in image.enumerate_pixels() {
            let want = if x < 8 { 138 } else { 123 };
            assert_eq!(pixel.0, [want; 3], "pixel {x},{y}");
        }
    }

    #[test]
    fn truncated_and_damaged_files_are_errors() {
        let file = two_block_grey_jpeg(&[]);
        let cut = &file[..file.len() - 4];
        assert!(
            matches!(decode(cut, u64::MAX), Err(JpegError::Corrupt(m)) if m.contains("ends early"))
        );
        let mut no_restart = file.clone();
        let at = no_restart
            .windows(2)
            .position(|w| w == [0xFF, 0xD0])
            .unwrap();
        no_restart.drain(at..at + 2);
        assert!(
            matches!(decode(&no_restart, u64::MAX), Err(JpegError::Corrupt(m)) if m.contains("restart"))
        );
        assert!(matches!(
            decode(b"not a jpeg", u64::MAX),
            Err(JpegError::Corrupt(_))
        ));
        assert!(matches!(
            decode(&file[..40], u64::MAX),
            Err(JpegError::Corrupt(_))
        ));
    }

    #[test]
    fn progressive_files_are_left_to_the_fallback() {
        let mut file = two_block_grey_jpeg(&[]);
        let at = file.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        file[at + 1] = 0xC2;
        assert!(
            matches!(decode(&file, u64::MAX), Err(JpegError::Unsupported(m)) if m.contains("progressive"))
        );
    }

    #[test]
    fn the_exif_payload_is_returned_for_orientation() {
        // APP1 "Exif\0\0" + little-endian TIFF with one IFD entry: orientation (0x0112) = 6.
        let mut tiff = b"II*\0\x08\0\0\0\x01\0".to_vec();
        tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&((tiff.len() + 8) as u16).to_be_bytes());
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(&tiff);
        let decoded = decode(&two_block_grey_jpeg(&app1), u64::MAX).unwrap();
        assert_eq!(decoded.exif.as_deref(), Some(&tiff[..]));
        // Orientation 6 turns the 16x8 image a quarter clockwise: the bright block on top.
        let turned = crate::video::images::decode_image(&two_block_grey_jpeg(&app1)).unwrap();
        assert_eq!(turned.dimensions(), (8, 16));
        assert_eq!(turned.get_pixel(0, 0).0, [138; 3]);
        assert_eq!(turned.get_pixel(0, 15).0, [123; 3]);
    }
}
