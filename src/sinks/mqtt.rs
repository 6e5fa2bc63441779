//! The MQTT sink (rumqttc, MQTT 3.1.1, QoS 1): events on `<prefix>/<stream>/events`, zone
//! totals on `<prefix>/<stream>/counts`, and a retained `<prefix>/<stream>/status` that reads
//! `online` while the stream runs and `offline` after it ends or when the connection dies
//! (the broker publishes the last will). The client's request queue is the sink's bounded
//! queue; a thread drives the connection and reconnects with backoff while the broker is
//! unreachable. `mqtts://` brokers are reached over TLS ([`super::tls`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{
    Client, Connection, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, Request,
    TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};

use super::{
    Backoff, Channel, DEFAULT_QUEUE, Outlet, SinkError, check_queue, default_queue, parse_url, tls,
};

/// `[sinks.mqtt]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    /// `mqtt://[user:password@]host[:port]` (port 1883 by default), or `mqtts://` for TLS
    /// (port 8883 by default).
    pub url: String,
    /// PEM file of the certificate authorities that may sign an `mqtts` broker's certificate
    /// (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// First level of every topic.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// MQTT client id (default: `streamtrack-<stream>`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Events waiting while the broker is unreachable.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_prefix() -> String {
    "streamtrack".into()
}

/// The parts of an `mqtt://` or `mqtts://` URL.
struct Broker {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    /// `mqtts`: the connection is TLS.
    tls: bool,
}

impl MqttSettings {
    /// Settings for `url` with every other value at its default.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            ca_file: None,
            topic_prefix: default_prefix(),
            client_id: None,
            queue: DEFAULT_QUEUE,
        }
    }

    pub(super) fn validate(&self) -> Result<(), SinkError> {
        let broker = self.broker()?;
        tls::check_ca_file_use("mqtt", self.ca_file.as_deref(), broker.tls, "mqtt")?;
        if broker.tls {
            tls::client_config("mqtt", self.ca_file.as_deref())?;
        }
        if self.topic_prefix.is_empty() || self.topic_prefix.contains(['+', '#']) {
            return Err(SinkError::new(
                "mqtt",
                format!(
                    "topic_prefix '{}' must be non-empty, without + or #",
                    self.topic_prefix
                ),
            ));
        }
        check_queue("mqtt", self.queue)
    }

    fn broker(&self) -> Result<Broker, SinkError> {
        let fail = |message: String| SinkError::new("mqtt", message);
        let (url, host) = parse_url("mqtt", &self.url, &["mqtt", "mqtts"])?;
        let tls = url.scheme() == "mqtts";
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| fail("the credentials are not valid UTF-8".into()))
        };
        let credentials = if url.username().is_empty() {
            None
        } else {
            Some((
                decode(url.username())?,
                decode(url.password().unwrap_or(""))?,
            ))
        };
        Ok(Broker {
            host,
            port: url.port().unwrap_or(if tls { 8883 } else { 1883 }),
            credentials,
            tls,
        })
    }
}

/// Topic names: `<prefix>/<stream>/<leaf>`, the stream id with MQTT's wildcards replaced.
fn topic(prefix: &str, stream: &str, leaf: &str) -> String {
    let stream: String = stream
        .chars()
        .map(|c| if matches!(c, '+' | '#' | '/') { '_' } else { c })
        .collect();
    format!("{prefix}/{stream}/{leaf}")
}

/// A running MQTT sink.
pub(super) struct MqttOutlet {
    client: Client,
    events: String,
    counts: String,
    status: String,
    /// Publishes queued (events and status messages) and acknowledged by the broker.
    queued: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    /// The stream has ended: no `online` status any more.
    ending: Arc<AtomicBool>,
    /// The drain is over: the driver stops at its next failed attempt.
    closing: Arc<AtomicBool>,
    driver: std::thread::JoinHandle<()>,
}

impl MqttOutlet {
    pub(super) fn start(settings: &MqttSettings, stream: &str) -> Result<Self, SinkError> {
        let broker = settings.broker()?;
        let status = topic(&settings.topic_prefix, stream, "status");
        let client_id = settings
            .client_id
            .clone()
            .unwrap_or_else(|| format!("streamtrack-{stream}"));
        let mut options = MqttOptions::new(client_id, broker.host, broker.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            // Publishes not yet acknowledged are sent again after a reconnection.
            .set_clean_session(false)
            .set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true));
        if let Some((user, password)) = broker.credentials {
            options.set_credentials(user, password);
        }
        if broker.tls {
            let config = tls::client_config("mqtt", settings.ca_file.as_deref())?;
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(config)));
        }
        let (client, connection) = Client::new(options, settings.queue);
        // First in the queue, so it precedes every event of the stream.
        client
            .try_publish(&status, QoS::AtLeastOnce, true, "online")
            .map_err(|e| SinkError::new("mqtt", format!("cannot queue the status: {e}")))?;
        let queued = Arc::new(AtomicU64::new(1));
        let acked = Arc::new(AtomicU64::new(0));
        let ending = Arc::new(AtomicBool::new(false));
        let closing = Arc::new(AtomicBool::new(false));
        let driver = {
            let (client, status, queued, acked, ending, closing) = (
                client.clone(),
                status.clone(),
                queued.clone(),
                acked.clone(),
                ending.clone(),
                closing.clone(),
            );
            let url = settings.url.clone();
            super::spawn("mqtt", stream, move || {
                drive(
                    connection,
                    &client,
                    &status,
                    &url,
                    [&queued, &acked],
                    [&ending, &closing],
                )
            })?
        };
        Ok(Self {
            client,
            events: topic(&settings.topic_prefix, stream, "events"),
            counts: topic(&settings.topic_prefix, stream, "counts"),
            status,
            queued,
            acked,
            ending,
            closing,
            driver,
        })
    }
}

/// Runs the connection until the sink closes: publishes the retained `online` status again
/// after a reconnection (the broker published the last will when the connection died),
/// counts acknowledgements, waits with backoff while the broker is unreachable.
fn drive(
    mut connection: Connection,
    client: &Client,
    status: &str,
    url: &str,
    [queued, acked]: [&AtomicU64; 2],
    [ending, closing]: [&AtomicBool; 2],
) {
    let mut backoff = Backoff::new();
    let mut reported_down = false;
    let mut connected_before = false;
    // What the client still had to deliver when the connection was lost: its unacknowledged
    // publishes and the requests it had taken from the queue. rumqttc drops them when the
    // broker comes back without the session (a restarted broker keeps none), so they are
    // given back to it then.
    let mut undelivered: VecDeque<Request> = VecDeque::new();
    while let Ok(notification) = connection.recv() {
        match notification {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                let pending = &mut connection.eventloop.pending;
                if !ack.session_present && pending.is_empty() {
                    while let Some(request) = undelivered.pop_back() {
                        pending.push_front(request);
                    }
                }
                undelivered.clear();
                if reported_down {
                    tracing::info!("MQTT broker {url} reachable again");
                    reported_down = false;
                }
                if connected_before
                    && !ending.load(Ordering::Relaxed)
                    && client
                        .try_publish(status, QoS::AtLeastOnce, true, "online")
                        .is_ok()
                {
                    queued.fetch_add(1, Ordering::Relaxed);
                }
                connected_before = true;
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(error) => {
                if closing.load(Ordering::Relaxed) {
                    break;
                }
                undelivered.clone_from(&connection.eventloop.pending);
                if !reported_down {
                    tracing::warn!(
                        "MQTT broker {url} unreachable ({error}); events wait in the queue"
                    );
                    reported_down = true;
                }
                std::thread::sleep(backoff.next());
            }
        }
    }
}

impl Outlet for MqttOutlet {
    fn offer(&mut self, channel: Channel, payload: &str) -> bool {
        let topic = match channel {
            Channel::Events => &self.events,
            Channel::Counts => &self.counts,
        };
        let queued = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload.as_bytes())
            .is_ok();
        if queued {
            self.queued.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    fn close(self: Box<Self>, deadline: Instant) -> u64 {
        self.ending.store(true, Ordering::Relaxed);
        // The stream is over: `offline` (retained), then a clean disconnect, which leaves
        // the last will unused.
        if self
            .client
            .try_publish(&self.status, QoS::AtLeastOnce, true, "offline")
            .is_ok()
        {
            self.queued.fetch_add(1, Ordering::Relaxed);
        }
        while self.acked.load(Ordering::Relaxed) < self.queued.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = self
            .queued
            .load(Ordering::Relaxed)
            .saturating_sub(self.acked.load(Ordering::Relaxed));
        self.closing.store(true, Ordering::Relaxed);
        let _ = self.client.disconnect();
        // A driver stuck on an unreachable broker stops at its next failed attempt; it is
        // not waited for.
        if left == 0 {
            let _ = self.driver.join();
        }
        left
    }

    fn name(&self) -> &'static str {
        "MQTT broker"
    }
}
