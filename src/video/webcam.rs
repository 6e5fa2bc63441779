//! Webcams through Video4Linux2 (Linux), with `linuxvideo`: plain ioctls on the device file,
//! no C library, nothing at run time beyond the kernel's V4L2. Takes YUYV (converted here) or
//! Motion-JPEG (decoded with `image`); presentation times follow the wall clock.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use linuxvideo::format::{PixFormat, PixelFormat};
use linuxvideo::stream::ReadStream;
use linuxvideo::{BufType, Device};

use super::images::decode_image;
use super::{Frame, FrameSource, StreamInfo, VideoError};

/// Frame rate assumed when the driver does not report one.
const FALLBACK_FPS: f64 = 30.0;

/// A V4L2 capture device.
pub struct WebcamSource {
    path: PathBuf,
    info: StreamInfo,
    stream: ReadStream,
    format: PixelFormat,
    opened: Instant,
    next_index: u64,
    corrupt: u64,
}

impl WebcamSource {
    /// Opens `/dev/videoN` (or any V4L2 capture device), asking for `size` when given.
    pub fn open(path: &Path, size: Option<(u32, u32)>) -> Result<Self, VideoError> {
        let fail = |message: String| VideoError::input(path, message);
        let device =
            Device::open(path).map_err(|e| fail(format!("cannot open the camera: {e}")))?;
        let formats = device
            .formats(BufType::VIDEO_CAPTURE)
            .map(|f| f.map(|f| f.pixel_format()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(format!("cannot list the camera's formats: {e}")))?;
        let format = [PixelFormat::YUYV, PixelFormat::MJPG]
            .into_iter()
            .find(|f| formats.contains(f))
            .ok_or_else(|| {
                fail(format!(
                    "the camera offers none of YUYV or MJPG (it offers {formats:?})"
                ))
            })?;
        let (width, height) = size.unwrap_or((1280, 720));
        let capture = device
            .video_capture(PixFormat::new(width, height, format))
            .map_err(|e| fail(format!("the camera refused the capture format: {e}")))?;
        let (width, height, format) = {
            let f = capture.format();
            (f.width(), f.height(), f.pixel_format())
        };
        if format != PixelFormat::YUYV && format != PixelFormat::MJPG {
            return Err(fail(format!(
                "the camera switched to an unsupported format {format:?}"
            )));
        }
        let stream = capture
            .into_stream()
            .map_err(|e| fail(format!("cannot start streaming: {e}")))?;
        tracing::info!("{}: {width}x{height} {format:?}", path.display());
        Ok(Self {
            path: path.to_path_buf(),
            info: StreamInfo {
                width,
                height,
                fps: FALLBACK_FPS,
                frame_count: None,
            },
            stream,
            format,
            opened: Instant::now(),
            next_index: 0,
            corrupt: 0,
        })
    }
}

impl FrameSource for WebcamSource {
    fn info(&self) -> &StreamInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        let (width, height, format) = (self.info.width, self.info.height, self.format);
        loop {
            let image = self
                .stream
                .dequeue(|buffer| {
                    if buffer.is_error() {
                        return Ok(None);
                    }
                    Ok(to_rgb(&buffer, width, height, format))
                })
                .map_err(|e| {
                    VideoError::input(&self.path, format!("the camera stopped delivering: {e}"))
                })?;
            let Some(image) = image else {
                self.corrupt += 1;
                continue;
            };
            let frame = Frame {
                index: self.next_index,
                pts: self.opened.elapsed().as_secs_f64(),
                duration: 1.0 / self.info.fps,
                image,
            };
            self.next_index += 1;
            return Ok(Some(frame));
        }
    }

    fn corrupt_frames(&self) -> u64 {
        self.corrupt
    }
}

/// Converts one captured buffer; `None` for a damaged one.
fn to_rgb(data: &[u8], width: u32, height: u32, format: PixelFormat) -> Option<RgbImage> {
    if format == PixelFormat::MJPG {
        return decode_image(data).ok();
    }
    yuyv_to_rgb(data, width, height)
}

/// YUYV 4:2:2 (BT.601, limited range) to RGB.
pub fn yuyv_to_rgb(data: &[u8], width: u32, height: u32) -> Option<RgbImage> {
    let pixels = width as usize * height as usize;
    if data.len() < pixels * 2 || !width.is_multiple_of(2) {
        return None;
    }
    let mut rgb = Vec::with_capacity(pixels * 3);
    for quad in data[..pixels * 2].chunks_exact(4) {
        let (u, v) = (f32::from(quad[1]) - 128.0, f32::from(quad[3]) - 128.0);
        for y in [quad[0], quad[2]] {
            let y = 1.164 * (f32::from(y) - 16.0);
            let clamp = |x: f32| x.round().clamp(0.0, 255.0) as u8;
            rgb.extend_from_slice(&[
                clamp(y + 1.596 * v),
                clamp(y - 0.392 * u - 0.813 * v),
                clamp(y + 2.017 * u),
            ]);
        }
    }
    RgbImage::from_raw(width, height, rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_converts_known_colours() {
        // Two pixels of white (Y 235), then two of pure red in BT.601 (Y 81, U 90, V 240).
        let data = [235, 128, 235, 128, 81, 90, 81, 240];
        let image = yuyv_to_rgb(&data, 4, 1).unwrap();
        assert_eq!(image.get_pixel(0, 0).0, [255, 255, 255]);
        let red = image.get_pixel(3, 0).0;
        assert!(red[0] >= 250 && red[1] <= 5 && red[2] <= 5, "{red:?}");
        assert!(yuyv_to_rgb(&data[..6], 4, 1).is_none(), "short buffer");
    }

    #[test]
    fn a_missing_camera_is_a_clear_error() {
        let err = WebcamSource::open(Path::new("/dev/video-streamtrack-none"), None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("/dev/video-streamtrack-none") && err.contains("cannot open"),
            "{err}"
        );
    }
}
