//! Still images (JPEG/PNG), one file or a folder of them, as a frame source.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, RgbImage};

use super::jpeg::{self, JpegError};
use super::{Frame, FrameSource, StreamInfo, VideoError};

/// File extensions read as still images.
const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "bmp"];

/// True when `path` names an image file by its extension.
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// The image files of a folder, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, VideoError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| VideoError::input(dir, format!("cannot list the folder: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image_path(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(VideoError::input(
            dir,
            "the folder holds no JPEG or PNG images",
        ));
    }
    Ok(files)
}

/// Largest image decoded unless configured otherwise (`max_image_pixels`): 100 megapixels,
/// 300 MB as RGB. A small file can declare any size (a 1.7 MB PNG claims 100000x100000);
/// the size is checked against the limit before the pixels are allocated.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

static MAX_PIXELS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_PIXELS);

/// Sets the process-wide pixel limit of image decoding (the configuration's
/// `max_image_pixels`; the server applies it to every job and stream).
pub fn set_max_pixels(limit: u64) {
    MAX_PIXELS.store(limit, Ordering::Relaxed);
}

/// The error text for an image over the pixel limit.
pub fn too_large_message(width: u64, height: u64, limit: u64) -> String {
    format!(
        "the image is {width}x{height} pixels, more than the limit of {limit} (max_image_pixels)"
    )
}

/// Decodes one image file to RGB (see [`decode_image`]).
pub fn read_image(path: &Path) -> Result<RgbImage, VideoError> {
    let data =
        std::fs::read(path).map_err(|e| VideoError::input(path, format!("cannot open: {e}")))?;
    decode_image(&data).map_err(|message| VideoError::input(path, message))
}

/// Decodes an image file's bytes to RGB the way OpenCV's `imread` does: JPEGs through the
/// libjpeg-exact decoder ([`jpeg`]), other formats and the JPEG kinds it leaves out through
/// the `image` crate, then the EXIF orientation applied. Images over the pixel limit
/// ([`set_max_pixels`]) are refused before decoding.
pub fn decode_image(data: &[u8]) -> Result<RgbImage, String> {
    let max_pixels = MAX_PIXELS.load(Ordering::Relaxed);
    let (mut image, orientation) = match decode_exact_jpeg(data, max_pixels)? {
        Some(decoded) => decoded,
        None => decode_other(data, max_pixels)?,
    };
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

/// A JPEG through the libjpeg-exact decoder, with its EXIF orientation; `None` for other
/// formats and the JPEG kinds that decoder leaves out.
fn decode_exact_jpeg(
    data: &[u8],
    max_pixels: u64,
) -> Result<Option<(DynamicImage, Orientation)>, String> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Ok(None);
    }
    match jpeg::decode(data, max_pixels) {
        Ok(decoded) => {
            let orientation = decoded
                .exif
                .as_deref()
                .and_then(Orientation::from_exif_chunk)
                .unwrap_or(Orientation::NoTransforms);
            Ok(Some((DynamicImage::ImageRgb8(decoded.image), orientation)))
        }
        Err(JpegError::Corrupt(message)) => Err(format!("not a decodable JPEG: {message}")),
        Err(e @ JpegError::TooLarge { .. }) => Err(e.to_string()),
        Err(JpegError::Unsupported(_)) => Ok(None),
    }
}

/// Any other format through the `image` crate, with its orientation.
fn decode_other(data: &[u8], max_pixels: u64) -> Result<(DynamicImage, Orientation), String> {
    let not_decodable = |e: image::ImageError| format!("not a decodable image: {e}");
    let mut decoder = image::ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?
        .into_decoder()
        .map_err(not_decodable)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(too_large_message(width.into(), height.into(), max_pixels));
    }
    let orientation = decoder.orientation().map_err(not_decodable)?;
    let image = DynamicImage::from_decoder(decoder).map_err(not_decodable)?;
    Ok((image, orientation))
}

/// Images as frames, one per second of presentation time.
pub struct ImageSource {
    files: Vec<PathBuf>,
    next: usize,
    info: StreamInfo,
}

impl ImageSource {
    pub fn open(path: &Path) -> Result<Self, VideoError> {
        let files = if path.is_dir() {
            list_images(path)?
        } else {
            vec![path.to_path_buf()]
        };
        let first = read_image(&files[0])?;
        Ok(Self {
            info: StreamInfo {
                width: first.width(),
                height: first.height(),
                fps: 1.0,
                frame_count: Some(files.len() as u64),
            },
            files,
            next: 0,
        })
    }

    /// The file the most recent frame came from.
    pub fn current_file(&self) -> Option<&Path> {
        self.next.checked_sub(1).map(|i| self.files[i].as_path())
    }
}

impl FrameSource for ImageSource {
    fn info(&self) -> &StreamInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(None);
        };
        let image = read_image(path)?;
        let index = self.next as u64;
        self.next += 1;
        Ok(Some(Frame {
            index,
            pts: index as f64,
            duration: 1.0,
            image,
        }))
    }
}
