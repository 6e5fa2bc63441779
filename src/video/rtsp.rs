//! RTSP cameras: H.264 over RTSP/TCP with `retina` (pure Rust), decoded with openh264.
//!
//! The connection lives on its own thread with a small tokio runtime. When the stream drops,
//! errors or stalls (no frame for [`RtspOptions::stall_timeout`]), the source logs the outage,
//! reconnects with exponential backoff and jitter, and carries on: frame indices continue and
//! presentation times keep following the wall clock across the gap, so the tracker keeps its
//! tracks over short outages. Each outage is reported once frames flow again. Only with
//! [`RtspOptions::max_reconnects`] set does it ever give up.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use retina::client::{Credentials, PlayOptions, Session, SessionOptions, SetupOptions};
use retina::codec::{CodecItem, FrameFormat};
use url::Url;

use super::damage::DamageLog;
use super::decoder::H264Decoder;
use super::{DEFAULT_RAW_FPS, Frame, FrameSource, Outage, StreamInfo, VideoError};

/// Reconnection behaviour.
#[derive(Debug, Clone)]
pub struct RtspOptions {
    /// No frame for this long counts as a lost stream.
    pub stall_timeout: Duration,
    /// First wait before reconnecting; doubled after each failed attempt.
    pub backoff_initial: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// Give up after this many failed attempts in a row (`None`: never).
    pub max_reconnects: Option<u32>,
    /// Counts every failed connection attempt, also before the first frame (a camera that
    /// never answers shows its retries while the stream is still connecting).
    pub failed_attempts: prometheus_client::metrics::counter::Counter,
}

impl Default for RtspOptions {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_reconnects: None,
            failed_attempts: Default::default(),
        }
    }
}

/// What the connection thread tells the source.
enum Message {
    /// A new session is playing.
    Connected,
    /// One access unit (Annex B, parameter sets before key frames) and its RTP time, seconds.
    AccessUnit(Vec<u8>, f64),
    /// The stream was lost; the thread is reconnecting.
    Lost(String),
    /// The thread gave up (or was stopped).
    Failed(String),
}

/// Access units buffered between the connection thread and the decoder; more are dropped
/// (a slow consumer loses frames rather than memory).
const MESSAGE_BUFFER: usize = 64;

/// An outage in progress.
struct PendingOutage {
    lost_at: SystemTime,
    lost: Instant,
    reason: String,
    /// Connection attempts so far.
    attempts: u32,
}

/// A live H.264 RTSP stream.
pub struct RtspSource {
    /// The URL without credentials, for messages.
    label: String,
    info: StreamInfo,
    messages: Receiver<Message>,
    decoder: H264Decoder,
    ready: VecDeque<Frame>,
    next_index: u64,
    opened: Instant,
    /// Maps the current session's RTP time to stream time (set by its first frame).
    session_offset: Option<f64>,
    last_pts: f64,
    outage: Option<PendingOutage>,
    finished_outages: Vec<Outage>,
    corrupt: u64,
    damage: DamageLog,
    stop: Arc<AtomicBool>,
}

impl RtspSource {
    /// Connects to `url` and waits for the first picture (retrying per `options`); `stop`
    /// ends the wait and later reconnection attempts.
    pub fn open(
        url: &str,
        options: RtspOptions,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, VideoError> {
        let (url, creds) = parse_url(url)?;
        let label = url.to_string();
        let (tx, messages) = sync_channel(MESSAGE_BUFFER);
        let thread_stop = stop.clone();
        let thread_label = label.clone();
        std::thread::Builder::new()
            .name("rtsp".into())
            .spawn(move || connection_thread(url, creds, options, tx, thread_stop, thread_label))
            .map_err(|e| VideoError::input(Path::new(&label), format!("cannot start: {e}")))?;
        let mut source = Self {
            label: label.clone(),
            info: StreamInfo {
                width: 0,
                height: 0,
                fps: DEFAULT_RAW_FPS,
                frame_count: None,
            },
            messages,
            decoder: new_decoder(&label)?,
            ready: VecDeque::new(),
            next_index: 0,
            opened: Instant::now(),
            session_offset: None,
            last_pts: f64::NEG_INFINITY,
            outage: None,
            finished_outages: Vec::new(),
            corrupt: 0,
            damage: DamageLog::new(&label),
            stop,
        };
        let Some(first) = source.next_frame()? else {
            return Err(VideoError::input(
                Path::new(&label),
                "stopped before the first frame",
            ));
        };
        source.info.width = first.image.width();
        source.info.height = first.image.height();
        source.ready.push_front(first);
        // Outages before the first frame are not outages of the stream.
        source.finished_outages.clear();
        Ok(source)
    }

    fn error(&self, message: impl Into<String>) -> VideoError {
        VideoError::input(Path::new(&self.label), message)
    }

    /// Decodes one access unit into zero or more ready frames.
    fn decode(&mut self, data: &[u8], rtp_time: f64) {
        let now = self.opened.elapsed().as_secs_f64();
        let offset = *self.session_offset.get_or_insert(now - rtp_time);
        // Keep time moving forward even if a server restarts its clock oddly.
        let pts = (offset + rtp_time).max(self.last_pts + 1e-3);
        let decoded = self.decoder.decode(data, pts);
        let concealed = self.decoder.take_concealed();
        self.damage
            .concealed(concealed, format_args!("at {pts:.3}s"));
        match decoded {
            Ok(Some((pts, image))) => {
                self.last_pts = pts;
                self.ready.push_back(Frame {
                    index: self.next_index,
                    pts,
                    duration: 1.0 / self.info.fps,
                    image,
                });
                self.next_index += 1;
                self.end_outage();
            }
            Ok(None) => {}
            Err(e) => {
                self.corrupt += 1;
                tracing::debug!("{}: {e}", self.label);
            }
        }
    }

    fn end_outage(&mut self) {
        if let Some(PendingOutage {
            lost_at,
            lost,
            reason,
            attempts,
        }) = self.outage.take()
        {
            let duration = lost.elapsed().as_secs_f64();
            tracing::info!(
                "{}: stream back after {duration:.1} s ({attempts} connection attempts)",
                self.label
            );
            self.finished_outages.push(Outage {
                source: self.label.clone(),
                reason,
                lost_at: lost_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                duration,
                attempts,
            });
        }
    }
}

impl FrameSource for RtspSource {
    fn info(&self) -> &StreamInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Ok(Some(frame));
            }
            if self.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let message = match self.messages.recv_timeout(Duration::from_millis(200)) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            };
            match message {
                Message::AccessUnit(data, rtp_time) => self.decode(&data, rtp_time),
                Message::Connected => {
                    // A new session: fresh decoder state and a new clock mapping.
                    self.decoder = new_decoder(&self.label)?;
                    self.session_offset = None;
                    if let Some(outage) = self.outage.as_mut() {
                        outage.attempts += 1;
                    }
                }
                Message::Lost(reason) => match self.outage.as_mut() {
                    // A failed reconnection attempt.
                    Some(outage) => outage.attempts += 1,
                    None => {
                        self.outage = Some(PendingOutage {
                            lost_at: SystemTime::now(),
                            lost: Instant::now(),
                            reason,
                            attempts: 0,
                        });
                    }
                },
                Message::Failed(reason) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    return Err(self.error(reason));
                }
            }
        }
    }

    fn corrupt_frames(&self) -> u64 {
        self.corrupt
    }

    fn take_outages(&mut self) -> Vec<Outage> {
        std::mem::take(&mut self.finished_outages)
    }
}

fn new_decoder(label: &str) -> Result<H264Decoder, VideoError> {
    H264Decoder::new().map_err(|e| VideoError::input(Path::new(&label), e))
}

/// Splits credentials out of the URL (retina takes them separately).
fn parse_url(text: &str) -> Result<(Url, Option<Credentials>), VideoError> {
    let mut url = Url::parse(text)
        .map_err(|e| VideoError::input(Path::new(text), format!("not a valid URL: {e}")))?;
    if url.scheme() != "rtsp" {
        return Err(VideoError::input(
            Path::new(text),
            "only rtsp:// URLs are supported",
        ));
    }
    let creds = (!url.username().is_empty()).then(|| Credentials {
        username: url.username().to_string(),
        password: url.password().unwrap_or_default().to_string(),
    });
    strip_credentials(&mut url);
    Ok((url, creds))
}

fn strip_credentials(url: &mut Url) {
    // Cannot fail for a URL with a host, and a URL without one has no credentials.
    let _ = url.set_username("");
    let _ = url.set_password(None);
}

/// `source` without the user name and password of a URL, for messages and API answers;
/// anything that is not such a URL is returned as it is.
pub fn without_credentials(source: &str) -> String {
    match Url::parse(source) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            strip_credentials(&mut url);
            url.to_string()
        }
        _ => source.to_string(),
    }
}

/// Connects, plays and forwards access units; on any failure waits and reconnects.
fn connection_thread(
    url: Url,
    creds: Option<Credentials>,
    options: RtspOptions,
    tx: SyncSender<Message>,
    stop: Arc<AtomicBool>,
    label: String,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = tx.send(Message::Failed(format!(
                "cannot start the network runtime: {e}"
            )));
            return;
        }
    };
    let mut backoff = Backoff::new(&options);
    let mut failures = 0u32;
    let mut ever_played = false;
    loop {
        // The RTSP client parses what the camera sends; should it panic on a malformed
        // answer, that is one failed attempt, not the end of the stream.
        let session = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(play(&url, creds.clone(), &options, &tx, &stop))
        }));
        if stop.load(Ordering::Relaxed) {
            let _ = tx.send(Message::Failed("stopped".into()));
            return;
        }
        let (reason, delivered) = session.unwrap_or_else(|panic| {
            let detail = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no detail");
            (
                format!("the RTSP client could not handle the server's answer ({detail})"),
                false,
            )
        });
        if delivered {
            backoff = Backoff::new(&options);
            failures = 0;
            ever_played = true;
        }
        failures += 1;
        options.failed_attempts.inc();
        if options.max_reconnects.is_some_and(|max| failures > max) {
            let _ = tx.send(Message::Failed(format!(
                "{reason}; giving up after {} attempts",
                failures
            )));
            return;
        }
        let wait = backoff.next_wait();
        let what = if ever_played {
            "stream lost"
        } else {
            "cannot connect"
        };
        tracing::warn!(
            "{label}: {what} ({reason}); reconnecting in {:.1} s",
            wait.as_secs_f64()
        );
        if tx.send(Message::Lost(reason)).is_err() {
            return;
        }
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                let _ = tx.send(Message::Failed("stopped".into()));
                return;
            }
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
    }
}

/// One session from DESCRIBE to its end; returns why it ended and whether any frame arrived.
async fn play(
    url: &Url,
    creds: Option<Credentials>,
    options: &RtspOptions,
    tx: &SyncSender<Message>,
    stop: &AtomicBool,
) -> (String, bool) {
    let session = match connect(url, creds, options.stall_timeout).await {
        Ok(session) => session,
        Err(reason) => return (reason, false),
    };
    let mut session = session;
    if tx.send(Message::Connected).is_err() {
        return ("stopped".into(), false);
    }
    let mut delivered = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return ("stopped".into(), delivered);
        }
        let item = match tokio::time::timeout(options.stall_timeout, session.next()).await {
            Err(_) => {
                return (
                    format!("no frame for {:.0} s", options.stall_timeout.as_secs_f64()),
                    delivered,
                );
            }
            Ok(None) => return ("the server ended the stream".into(), delivered),
            Ok(Some(Err(e))) => return (e.to_string(), delivered),
            Ok(Some(Ok(item))) => item,
        };
        if let CodecItem::VideoFrame(frame) = item {
            let time = frame.timestamp().elapsed_secs();
            match tx.try_send(Message::AccessUnit(frame.into_data(), time)) {
                Ok(()) => delivered = true,
                Err(TrySendError::Full(_)) => {
                    tracing::debug!("decoder behind: access unit dropped")
                }
                Err(TrySendError::Disconnected(_)) => return ("stopped".into(), delivered),
            }
        }
    }
}

/// DESCRIBE, SETUP of the first H.264 stream over TCP, PLAY; bounded by `timeout`.
async fn connect(
    url: &Url,
    creds: Option<Credentials>,
    timeout: Duration,
) -> Result<retina::client::Demuxed, String> {
    let attempt = async {
        let options = SessionOptions::default()
            .creds(creds)
            .user_agent(format!("streamtrack/{}", env!("CARGO_PKG_VERSION")));
        let mut session = Session::describe(url.clone(), options)
            .await
            .map_err(|e| e.to_string())?;
        let video = session
            .streams()
            .iter()
            .position(|s| s.media() == "video" && s.encoding_name().eq_ignore_ascii_case("h264"))
            .ok_or("the stream has no H.264 video")?;
        session
            .setup(
                video,
                SetupOptions::default().frame_format(FrameFormat::SIMPLE),
            )
            .await
            .map_err(|e| e.to_string())?;
        let playing = session
            .play(PlayOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        playing.demuxed().map_err(|e| e.to_string())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("no answer within {:.0} s", timeout.as_secs_f64()))?
}

/// Exponential backoff with ±25 % jitter, so many clients do not reconnect in lockstep.
struct Backoff {
    next: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    fn new(options: &RtspOptions) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Self {
            next: options.backoff_initial,
            max: options.backoff_max,
            seed,
        }
    }

    fn next_wait(&mut self) -> Duration {
        // xorshift64: cheap, good enough to spread reconnects.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.75 + 0.5 * (self.seed % 1000) as f64 / 1000.0;
        let wait = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_from_the_url() {
        let (url, creds) = parse_url("rtsp://admin:secret@10.0.0.5:554/stream1").unwrap();
        assert_eq!(url.as_str(), "rtsp://10.0.0.5:554/stream1");
        let creds = creds.unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("admin", "secret")
        );
        assert!(parse_url("rtsp://cam/live").unwrap().1.is_none());
        assert_eq!(
            without_credentials("rtsp://admin:secret@cam/live"),
            "rtsp://cam/live"
        );
        assert_eq!(without_credentials("clip.mp4"), "clip.mp4");
        let err = parse_url("http://cam/live").unwrap_err().to_string();
        assert!(err.contains("only rtsp://"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_limit_with_jitter() {
        let options = RtspOptions {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(800),
            ..RtspOptions::default()
        };
        let mut backoff = Backoff::new(&options);
        let waits: Vec<f64> = (0..6).map(|_| backoff.next_wait().as_secs_f64()).collect();
        for (wait, nominal) in waits.iter().zip([0.1, 0.2, 0.4, 0.8, 0.8, 0.8]) {
            // The jitter reaches ±25 % itself; the margin absorbs the rounding of the bounds.
            assert!(
                (0.75 * nominal - 1e-9..=1.25 * nominal + 1e-9).contains(wait),
                "{wait} vs {nominal}"
            );
        }
    }
}
