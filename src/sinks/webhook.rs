//! The webhook sink: each event POSTed as JSON (HTTP/1.1 over TCP, or TLS for `https://`
//! URLs, see [`super::tls`]) to the configured URL, signed with HMAC-SHA256 when a secret is
//! set (`X-Streamtrack-Signature: sha256=<hex>` over the body, as GitHub signs its webhooks).
//! Connection failures, 5xx and 429 answers are retried with backoff (0.5 s doubling to 30 s)
//! while later events wait in the queue; any other answer outside 2xx means the endpoint
//! refuses that event for good, so it is dropped, counted and logged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{
    Backoff, Channel, DEFAULT_QUEUE, Outlet, SinkError, check_queue, default_queue, parse_url, tls,
};
use tls::rustls::pki_types::ServerName;
use tls::rustls::{ClientConfig, ClientConnection, StreamOwned};

/// How long one delivery attempt may take to connect, and then to send and be answered.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `[sinks.webhook]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `http://host[:port]/path`, or `https://` (port 443 by default).
    pub url: String,
    /// PEM file of the certificate authorities that may sign an `https` endpoint's
    /// certificate (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Shared secret of the HMAC-SHA256 signature header (none: unsigned).
    #[serde(default)]
    pub secret: Option<String>,
    /// Events waiting while the endpoint is unreachable.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

/// Where requests go.
#[derive(Debug, Clone)]
struct Endpoint {
    /// `host:port` for connecting and the `Host` header.
    authority: String,
    /// Path and query.
    target: String,
    /// For `https`: the TLS configuration and the name the certificate must carry.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl WebhookSettings {
    /// Settings for `url` with every other value at its default.
    pub fn new(url: &str, secret: Option<String>) -> Self {
        Self {
            url: url.to_string(),
            ca_file: None,
            secret,
            queue: DEFAULT_QUEUE,
        }
    }

    pub(super) fn validate(&self) -> Result<(), SinkError> {
        self.endpoint()?;
        if self.secret.as_deref() == Some("") {
            return Err(SinkError::new("webhook", "secret is empty"));
        }
        check_queue("webhook", self.queue)
    }

    fn endpoint(&self) -> Result<Endpoint, SinkError> {
        let (url, host) = parse_url("webhook", &self.url, &["http", "https"])?;
        let encrypted = url.scheme() == "https";
        tls::check_ca_file_use("webhook", self.ca_file.as_deref(), encrypted, "http")?;
        let tls = if encrypted {
            let name = ServerName::try_from(host.clone()).map_err(|e| {
                SinkError::new("webhook", format!("'{host}' is not a TLS server name: {e}"))
            })?;
            Some((
                tls::client_config("webhook", self.ca_file.as_deref())?,
                name,
            ))
        } else {
            None
        };
        let port = url.port().unwrap_or(if encrypted { 443 } else { 80 });
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        Ok(Endpoint {
            authority: if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            },
            target,
            tls,
        })
    }
}

/// The `X-Streamtrack-Signature` value of `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// A running webhook sink: a bounded queue and the thread that delivers it.
pub(super) struct WebhookOutlet {
    queue: SyncSender<String>,
    /// Set when the stream ends: after it, failed deliveries are not retried.
    deadline: Arc<Mutex<Option<Instant>>>,
    delivery: std::thread::JoinHandle<u64>,
}

impl WebhookOutlet {
    pub(super) fn start(
        settings: &WebhookSettings,
        stream: &str,
        dropped: Counter,
    ) -> Result<Self, SinkError> {
        let endpoint = settings.endpoint()?;
        let (queue, events) = std::sync::mpsc::sync_channel(settings.queue);
        let deadline = Arc::new(Mutex::new(None));
        let delivery = {
            let (secret, deadline, url) = (
                settings.secret.clone(),
                deadline.clone(),
                settings.url.clone(),
            );
            super::spawn("webhook", stream, move || {
                deliver_all(
                    events,
                    &endpoint,
                    &url,
                    secret.as_deref(),
                    &deadline,
                    &dropped,
                )
            })?
        };
        Ok(Self {
            queue,
            deadline,
            delivery,
        })
    }
}

/// Delivers queued events in order until the queue closes; returns how many were left
/// undelivered when the deadline passed.
fn deliver_all(
    events: Receiver<String>,
    endpoint: &Endpoint,
    url: &str,
    secret: Option<&str>,
    deadline: &Mutex<Option<Instant>>,
    dropped: &Counter,
) -> u64 {
    let deadline = || {
        *deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    let past_deadline = || deadline().is_some_and(|at| Instant::now() >= at);
    let mut backoff = Backoff::new();
    let mut reported_down = false;
    let mut left = 0;
    for body in events {
        if past_deadline() {
            left += 1;
            continue;
        }
        loop {
            match post(endpoint, &body, secret) {
                Ok(status) if (200..300).contains(&status) => {
                    backoff.reset();
                    if reported_down {
                        tracing::info!("webhook {url} reachable again");
                        reported_down = false;
                    }
                    break;
                }
                Ok(status) if status != 429 && status < 500 => {
                    dropped.inc();
                    tracing::warn!("webhook {url} refused an event with HTTP {status}: dropped");
                    break;
                }
                failure => {
                    if past_deadline() {
                        left += 1;
                        break;
                    }
                    if !reported_down {
                        let why = match failure {
                            Ok(status) => format!("HTTP {status}"),
                            Err(e) => e.to_string(),
                        };
                        tracing::warn!(
                            "webhook {url} unreachable ({why}); events wait in the queue"
                        );
                        reported_down = true;
                    }
                    // Not past the end of the stream's drain time.
                    let wait = match deadline() {
                        Some(at) => backoff
                            .next()
                            .min(at.saturating_duration_since(Instant::now())),
                        None => backoff.next(),
                    };
                    std::thread::sleep(wait);
                }
            }
        }
    }
    left
}

/// One POST of `body`; the answer's status code.
fn post(endpoint: &Endpoint, body: &str, secret: Option<&str>) -> std::io::Result<u16> {
    let address = endpoint
        .authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the host name has no address"))?;
    let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let signature = secret
        .map(|secret| {
            format!(
                "X-Streamtrack-Signature: {}\r\n",
                signature(secret, body.as_bytes())
            )
        })
        .unwrap_or_default();
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: streamtrack/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{signature}\
         Connection: close\r\n\r\n{body}",
        endpoint.target,
        endpoint.authority,
        env!("CARGO_PKG_VERSION"),
        body.len(),
    );
    match &endpoint.tls {
        None => exchange(stream, &request),
        Some((config, name)) => {
            let connection = ClientConnection::new(config.clone(), name.clone())
                .map_err(std::io::Error::other)?;
            exchange(StreamOwned::new(connection, stream), &request)
        }
    }
}

/// Sends `request` on `stream`; the answer's status code.
fn exchange(mut stream: impl Read + Write, request: &str) -> std::io::Result<u16> {
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    // The status line is all we need: `HTTP/1.1 204 No Content`.
    let mut line = String::new();
    BufReader::new(stream.take(1024)).read_line(&mut line)?;
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {:?}", line.trim())))
}

impl Outlet for WebhookOutlet {
    fn offer(&mut self, _channel: Channel, payload: &str) -> bool {
        match self.queue.try_send(payload.to_string()) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    fn close(self: Box<Self>, deadline: Instant) -> u64 {
        *self
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(deadline);
        drop(self.queue);
        // The thread ends at the deadline at the latest, plus one attempt's timeouts.
        self.delivery.join().unwrap_or(0)
    }

    fn name(&self) -> &'static str {
        "webhook"
    }
}
