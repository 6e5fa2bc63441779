//! What a running stream shows the people watching it: the latest annotated frame as a JPEG
//! (encoded at a bounded rate, and only while someone watches) and the latest line and area
//! counts. The server's `GET /v1/streams/{id}/mjpeg` and its built-in page read it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;
use tokio::sync::watch;

use crate::zones::ZoneCounts;

/// JPEG quality of the live frames: small enough for a browser on a LAN, sharp enough to read
/// the labels.
const JPEG_QUALITY: u8 = 75;

/// The latest frame, JPEG-encoded, and its number (frames the view has encoded so far).
#[derive(Debug, Clone)]
pub struct ViewFrame {
    pub number: u64,
    pub jpeg: Arc<[u8]>,
}

/// One stream's live view, shared by the stream's threads and its watchers.
pub struct LiveView {
    /// `None` before the first frame; dropped when the stream ends, which ends every watch.
    frames: Mutex<Option<watch::Sender<Option<ViewFrame>>>>,
    watchers: AtomicUsize,
    min_interval: Duration,
    last_encoded: Mutex<Option<Instant>>,
    counts: Mutex<ZoneCounts>,
}

impl LiveView {
    /// A view that encodes at most `max_fps` frames per second.
    ///
    /// # Panics
    /// When `max_fps` is not a positive number.
    pub fn new(max_fps: f64) -> Self {
        assert!(
            max_fps > 0.0 && max_fps.is_finite(),
            "max_fps must be positive"
        );
        let (sender, _) = watch::channel(None);
        Self {
            frames: Mutex::new(Some(sender)),
            watchers: AtomicUsize::new(0),
            min_interval: Duration::from_secs_f64(1.0 / max_fps),
            last_encoded: Mutex::new(None),
            counts: Mutex::new(ZoneCounts::default()),
        }
    }

    /// Offers the stream's latest annotated frame: encoded and handed to the watchers when
    /// someone watches and the last one is at least the minimum interval old.
    pub fn offer_frame(&self, image: &RgbImage) {
        if self.watchers.load(Ordering::Relaxed) == 0 {
            return;
        }
        {
            let mut last = self.last_encoded.lock().expect("live view lock");
            if last.is_some_and(|at| at.elapsed() < self.min_interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        let mut jpeg = Vec::new();
        if let Err(e) = JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY).encode_image(image) {
            tracing::debug!("live view: cannot encode a frame: {e}");
            return;
        }
        if let Some(sender) = self.frames.lock().expect("live view lock").as_ref() {
            sender.send_modify(|latest| {
                let number = latest.as_ref().map_or(1, |f| f.number + 1);
                *latest = Some(ViewFrame {
                    number,
                    jpeg: jpeg.into(),
                });
            });
        }
    }

    /// Replaces the line and area counts shown.
    pub fn set_counts(&self, counts: &ZoneCounts) {
        counts.clone_into(&mut self.counts.lock().expect("live view lock"));
    }

    /// The latest line and area counts.
    pub fn counts(&self) -> ZoneCounts {
        self.counts.lock().expect("live view lock").clone()
    }

    /// Starts watching: frames are encoded while at least one [`Watch`] lives. `None` once
    /// the stream has ended.
    pub fn watch(self: &Arc<Self>) -> Option<Watch> {
        let receiver = self
            .frames
            .lock()
            .expect("live view lock")
            .as_ref()?
            .subscribe();
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Some(Watch {
            view: self.clone(),
            receiver,
        })
    }

    /// Ends every watch (the stream has ended).
    pub fn close(&self) {
        self.frames.lock().expect("live view lock").take();
    }
}

/// One watcher of a [`LiveView`].
pub struct Watch {
    view: Arc<LiveView>,
    receiver: watch::Receiver<Option<ViewFrame>>,
}

impl Watch {
    /// The next frame encoded after the watch started or after the last one returned;
    /// `None` when the stream has ended.
    pub async fn next_frame(&mut self) -> Option<ViewFrame> {
        loop {
            self.receiver.changed().await.ok()?;
            if let Some(frame) = self.receiver.borrow_and_update().clone() {
                return Some(frame);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.view.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_encoded_only_while_watched_and_at_the_bounded_rate() {
        let view = Arc::new(LiveView::new(1000.0));
        let image = RgbImage::from_pixel(32, 24, image::Rgb([200, 30, 30]));
        view.offer_frame(&image);
        assert!(
            view.last_encoded.lock().unwrap().is_none(),
            "nobody watches"
        );
        let mut watch = view.watch().expect("stream running");
        view.offer_frame(&image);
        let first = watch.next_frame().await.expect("a frame");
        assert_eq!(first.number, 1);
        let decoded = image::load_from_memory(&first.jpeg)
            .expect("a JPEG")
            .to_rgb8();
        assert_eq!(decoded.dimensions(), (32, 24));
        std::thread::sleep(Duration::from_millis(2));
        view.offer_frame(&image);
        assert_eq!(watch.next_frame().await.expect("a frame").number, 2);
        drop(watch);
        assert_eq!(view.watchers.load(Ordering::Relaxed), 0);

        // At one frame per second, a second offer right after the first is skipped.
        let slow = Arc::new(LiveView::new(1.0));
        let mut watch = slow.watch().expect("stream running");
        slow.offer_frame(&image);
        slow.offer_frame(&image);
        assert_eq!(watch.next_frame().await.expect("a frame").number, 1);
        slow.close();
        assert!(watch.next_frame().await.is_none(), "the stream ended");
        assert!(slow.watch().is_none());
    }
}
