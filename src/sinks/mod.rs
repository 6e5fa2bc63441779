//! Event sinks: every event of a stream (line crossings, area entries and exits, speed-limit
//! breaches, ended tracks, outages, zone totals) published to an MQTT broker and/or POSTed to
//! a webhook as it happens, beside the result files.
//!
//! Each event goes out as the JSON object the `--events` file holds, plus the stream's id
//! (`"stream"`) and a per-stream sequence number (`"seq"`, counting every event, so a gap
//! tells a consumer what it missed). Each sink owns a bounded queue drained by its own
//! thread, so a slow or unreachable broker or endpoint never holds up the video: events wait
//! there while it is down and are delivered when it is back; an event that finds its queue
//! full is dropped, counted (`events_dropped` in the metrics) and logged, never lost without
//! a trace. When the stream ends the queues get a few seconds to drain.

mod mqtt;
mod tls;
mod webhook;

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

use crate::events::Event;
use crate::warnings::WarningCount;

pub use mqtt::MqttSettings;
pub use webhook::{WebhookSettings, signature};

/// Events waiting per sink while its broker or endpoint is unreachable.
pub const DEFAULT_QUEUE: usize = 1000;
/// Most events a queue may be configured to hold.
const MAX_QUEUE: usize = 1_000_000;
/// How long the queues get to drain when a stream ends.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// `[sinks]` of the configuration file, or a stream request's `sinks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkSettings {
    pub mqtt: Option<MqttSettings>,
    pub webhook: Option<WebhookSettings>,
}

/// A sink setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct SinkError {
    pub sink: &'static str,
    pub message: String,
}

impl SinkError {
    fn new(sink: &'static str, message: impl Into<String>) -> Self {
        Self {
            sink,
            message: message.into(),
        }
    }
}

impl SinkSettings {
    /// Checks every URL and size before anything connects.
    pub fn validate(&self) -> Result<(), SinkError> {
        if let Some(mqtt) = &self.mqtt {
            mqtt.validate()?;
        }
        if let Some(webhook) = &self.webhook {
            webhook.validate()?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.mqtt.is_none() && self.webhook.is_none()
    }
}

fn default_queue() -> usize {
    DEFAULT_QUEUE
}

/// `url` parsed, with one of the `schemes` the sink speaks and a host; returns the URL and
/// the host.
fn parse_url(
    sink: &'static str,
    url: &str,
    schemes: &[&str],
) -> Result<(url::Url, String), SinkError> {
    let fail = |message: String| SinkError::new(sink, message);
    let parsed = url::Url::parse(url).map_err(|e| fail(format!("'{url}' is not a URL: {e}")))?;
    if !schemes.contains(&parsed.scheme()) {
        let supported: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        return Err(fail(format!(
            "'{}': only {} supported",
            parsed.scheme(),
            supported.join(" and ") + if schemes.len() > 1 { " are" } else { " is" }
        )));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| fail(format!("'{url}' names no host")))?
        .trim_matches(['[', ']'])
        .to_string();
    Ok((parsed, host))
}

/// Starts a sink's thread, named after the sink and the stream.
fn spawn<T: Send + 'static>(
    sink: &'static str,
    stream: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, SinkError> {
    std::thread::Builder::new()
        .name(format!("{sink} {stream}"))
        .spawn(work)
        .map_err(|e| SinkError::new(sink, format!("cannot start its thread: {e}")))
}

/// Checks a configured queue size.
fn check_queue(sink: &'static str, queue: usize) -> Result<(), SinkError> {
    if queue == 0 || queue > MAX_QUEUE {
        return Err(SinkError::new(
            sink,
            format!("queue must be between 1 and {MAX_QUEUE} events, not {queue}"),
        ));
    }
    Ok(())
}

/// Where an event goes within a sink: MQTT publishes zone totals on `…/counts`, everything
/// else on `…/events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Events,
    Counts,
}

/// Counters shared with the metrics.
#[derive(Debug, Clone, Default)]
pub struct SinkCounters {
    /// Events handed to a sink's queue (once per sink).
    pub published: Counter,
    /// Events a full queue turned away, or still queued when the stream ended.
    pub dropped: Counter,
}

/// One sink's side of the stream: offer an event, close at the end.
trait Outlet: Send {
    /// Queues `payload`; false when the queue is full.
    fn offer(&mut self, channel: Channel, payload: &str) -> bool;
    /// Stops taking events, delivers what is queued until `deadline`, and returns how many
    /// events were left undelivered.
    fn close(self: Box<Self>, deadline: Instant) -> u64;
    fn name(&self) -> &'static str;
}

/// The sinks of one stream.
pub struct EventSinks {
    stream: String,
    seq: u64,
    outlets: Vec<Box<dyn Outlet>>,
    counters: SinkCounters,
    /// Events turned away by a full queue, warned about at a bounded rate.
    turned_away: WarningCount,
}

impl EventSinks {
    /// Starts the configured sinks for the stream `stream` (its id in topics and bodies).
    pub fn start(
        stream: &str,
        settings: &SinkSettings,
        counters: SinkCounters,
    ) -> Result<Self, SinkError> {
        settings.validate()?;
        let mut outlets: Vec<Box<dyn Outlet>> = Vec::new();
        if let Some(mqtt) = &settings.mqtt {
            outlets.push(Box::new(mqtt::MqttOutlet::start(mqtt, stream)?));
        }
        if let Some(webhook) = &settings.webhook {
            outlets.push(Box::new(webhook::WebhookOutlet::start(
                webhook,
                stream,
                counters.dropped.clone(),
            )?));
        }
        Ok(Self {
            stream: stream.to_string(),
            seq: 0,
            outlets,
            counters,
            turned_away: WarningCount::default(),
        })
    }

    /// Hands `events` to every sink.
    pub fn publish(&mut self, events: &[Event]) {
        for event in events {
            self.seq += 1;
            let mut value = serde_json::to_value(event).expect("events serialise");
            if let Some(object) = value.as_object_mut() {
                object.insert("stream".into(), self.stream.clone().into());
                object.insert("seq".into(), self.seq.into());
            }
            let payload = value.to_string();
            let channel = match event {
                Event::ZoneCounts(_) => Channel::Counts,
                _ => Channel::Events,
            };
            for outlet in &mut self.outlets {
                if outlet.offer(channel, &payload) {
                    self.counters.published.inc();
                } else {
                    self.counters.dropped.inc();
                    if let Some(dropped) = self.turned_away.add(1, Instant::now()) {
                        tracing::warn!(
                            "{}: {dropped} event(s) dropped since the last warning: {} queue \
                             full (the latest: event {})",
                            self.stream,
                            outlet.name(),
                            self.seq
                        );
                    }
                }
            }
        }
    }
}

impl Drop for EventSinks {
    /// Gives the queues [`DRAIN_DEADLINE`] to drain; what is left is counted and logged.
    fn drop(&mut self) {
        let turned_away = self.turned_away.take_unreported();
        if turned_away > 0 {
            tracing::warn!(
                "{}: {turned_away} more event(s) dropped on full queues",
                self.stream
            );
        }
        let deadline = Instant::now() + DRAIN_DEADLINE;
        for outlet in self.outlets.drain(..) {
            let name = outlet.name();
            let left = outlet.close(deadline);
            if left > 0 {
                self.counters.dropped.inc_by(left);
                tracing::warn!(
                    "{}: {left} event(s) not delivered to the {name} before the stream ended",
                    self.stream
                );
            }
        }
    }
}

/// Waits between failed deliveries: 0.5 s, doubling to 30 s.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const LONGEST: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Self(Self::FIRST)
    }

    /// The next wait.
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Self::LONGEST);
        wait
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}
