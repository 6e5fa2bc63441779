//! Event sinks against real endpoints: a webhook server on a local port (signatures,
//! retries while it answers 503, order and sequence numbers, a full queue counted) and a real
//! MQTT broker (Mosquitto, which `.ci/run` installs): topics, QoS 1 delivery, the retained
//! status, events queued while the broker is unreachable delivered once it is back, none
//! lost when the broker is killed and restarted mid-stream, and `mqtts://` to a TLS listener
//! with a certificate from a test authority (made with the `openssl` command-line tool).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rumqttc::tokio_rustls::rustls::pki_types::pem::PemObject;
use rumqttc::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rumqttc::tokio_rustls::rustls::{ServerConfig, ServerConnection, StreamOwned};
use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet, QoS};
use serde_json::Value;
use streamtrack::events::Event;
use streamtrack::sinks::{
    EventSinks, MqttSettings, SinkCounters, SinkSettings, WebhookSettings, signature,
};
use streamtrack::zones::ZoneCounts;

fn speed_event(id: u64) -> Event {
    Event::SpeedLimit {
        frame: id * 10,
        time: id as f64,
        id,
        speed: 72.0,
        limit: 50.0,
        unit: "km/h",
    }
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One received webhook request: its signature header and body.
struct Delivery {
    signature: Option<String>,
    raw: Vec<u8>,
    body: Value,
}

/// A connection the test servers read and write: plain TCP or TLS over it.
trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}

/// Reads one request from `stream`: its signature header and body.
fn read_request(stream: &mut dyn Duplex) -> std::io::Result<(Option<String>, Vec<u8>)> {
    let mut reader = BufReader::new(stream);
    let (mut length, mut signature) = (0, None);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "x-streamtrack-signature" => signature = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((signature, body))
}

/// Answers each request with the next status of `answers` (the last one repeats) and sends
/// the 2xx-answered ones to the returned channel; over TLS with `tls` (a client that ends
/// the connection before its request, refusing the certificate, gets no answer and uses up
/// no status).
fn webhook_server(
    answers: Vec<u16>,
    tls: Option<Arc<ServerConfig>>,
) -> (u16, mpsc::Receiver<Delivery>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, deliveries) = mpsc::channel();
    thread::spawn(move || {
        let mut answered = 0;
        for stream in listener.incoming() {
            let stream = stream.unwrap();
            let mut stream: Box<dyn Duplex> = match &tls {
                None => Box::new(stream),
                Some(config) => Box::new(StreamOwned::new(
                    ServerConnection::new(config.clone()).unwrap(),
                    stream,
                )),
            };
            let Ok((signature, body)) = read_request(&mut stream) else {
                continue;
            };
            let status = answers[answered.min(answers.len() - 1)];
            answered += 1;
            // Recorded before the answer: once the sink has its 2xx, the test sees the event.
            if (200..300).contains(&status) {
                let delivery = Delivery {
                    signature,
                    body: serde_json::from_slice(&body).unwrap(),
                    raw: body,
                };
                if sender.send(delivery).is_err() {
                    return;
                }
            }
            write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").unwrap();
            stream.flush().unwrap();
        }
    });
    (port, deliveries)
}

#[test]
fn webhook_events_are_signed_retried_and_delivered_in_order() {
    // The endpoint is "down" (503) for its first two requests.
    let (port, deliveries) = webhook_server(vec![503, 503, 204], None);
    let secret = "shared-secret";
    let settings = SinkSettings {
        webhook: Some(WebhookSettings::new(
            &format!("http://127.0.0.1:{port}/hooks/streamtrack?source=test"),
            Some(secret.into()),
        )),
        ..SinkSettings::default()
    };
    let counters = SinkCounters::default();
    let mut sinks = EventSinks::start("gate-cam", &settings, counters.clone()).unwrap();
    sinks.publish(&[speed_event(1), speed_event(2)]);
    sinks.publish(&[Event::ZoneCounts(ZoneCounts::default())]);
    drop(sinks);

    let received: Vec<Delivery> = deliveries.try_iter().collect();
    assert_eq!(received.len(), 3, "every event once, after the retries");
    for (i, delivery) in received.iter().enumerate() {
        assert_eq!(delivery.body["stream"], "gate-cam");
        assert_eq!(delivery.body["seq"], i as u64 + 1);
        assert_eq!(
            delivery.signature.as_deref(),
            Some(signature(secret, &delivery.raw).as_str())
        );
    }
    assert_eq!(received[0].body["event"], "speed_limit");
    assert_eq!(received[1].body["id"], 2);
    assert_eq!(received[2].body["event"], "zone_counts");
    assert_eq!(counters.published.get(), 3);
    assert_eq!(counters.dropped.get(), 0);
}

#[test]
fn events_an_unreachable_webhook_cannot_take_are_counted() {
    let settings = SinkSettings {
        webhook: Some(WebhookSettings {
            queue: 2,
            ..WebhookSettings::new(&format!("http://127.0.0.1:{}/", free_port()), None)
        }),
        ..SinkSettings::default()
    };
    let counters = SinkCounters::default();
    let mut sinks = EventSinks::start("cam", &settings, counters.clone()).unwrap();
    let events: Vec<Event> = (1..=6).map(speed_event).collect();
    sinks.publish(&events);
    assert!(
        counters.dropped.get() >= 3,
        "a queue of 2 (plus the one in delivery) cannot hold 6: {} dropped",
        counters.dropped.get()
    );
    let started = Instant::now();
    drop(sinks);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the drain has a deadline"
    );
    assert_eq!(
        counters.dropped.get(),
        6,
        "nothing was delivered, and every event is counted"
    );
}

/// A Mosquitto broker on `port`, stopped when dropped.
struct Broker(Child);

impl Broker {
    fn start(port: u16) -> Self {
        Self::start_with(&["-p", &port.to_string()], port)
    }

    /// Mosquitto with `arguments`, once `port` accepts connections.
    fn start_with(arguments: &[&str], port: u16) -> Self {
        // Debian installs it in /usr/sbin, which a user's PATH may lack.
        let program = ["mosquitto", "/usr/sbin/mosquitto"]
            .into_iter()
            .find(|p| Command::new(p).arg("-h").output().is_ok())
            .expect("mosquitto is installed (.ci/run installs it)");
        // Its log (every connection) would drown the test output.
        let child = Command::new(program)
            .args(arguments)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            thread::sleep(Duration::from_millis(20));
        }
        Self(child)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Subscribes to `filter` on the broker at `port`; messages arrive on the returned channel
/// as (topic, payload, retained).
fn subscribe(port: u16, filter: &str) -> mpsc::Receiver<(String, String, bool)> {
    let (client, mut connection) = Client::new(
        MqttOptions::new(format!("test-{port}"), "127.0.0.1", port),
        10,
    );
    client.subscribe(filter, QoS::AtLeastOnce).unwrap();
    let (sender, messages) = mpsc::channel();
    let (subscribed, ready) = mpsc::channel();
    thread::spawn(move || {
        let _client = client;
        for event in connection.iter() {
            match event {
                Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed.send(());
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let payload = String::from_utf8(p.payload.to_vec()).unwrap();
                    if sender.send((p.topic, payload, p.retain)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
    messages
}

/// Forwards connections from `listen` to `target` once `open` fires: until then nothing
/// listens on `listen`, as with a broker that is down.
fn delayed_forwarder(listen: u16, target: u16, open: mpsc::Receiver<()>) {
    thread::spawn(move || {
        open.recv().unwrap();
        let listener = TcpListener::bind(("127.0.0.1", listen)).unwrap();
        for client in listener.incoming() {
            let client = client.unwrap();
            let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

#[test]
fn mqtt_events_reach_a_real_broker_including_those_queued_while_it_was_unreachable() {
    let port = free_port();
    let _broker = Broker::start(port);
    let messages = subscribe(port, "streamtrack/#");
    // The sink reaches the broker through a port that opens only later.
    let (proxy_port, open) = (free_port(), mpsc::channel());
    delayed_forwarder(proxy_port, port, open.1);
    let settings = SinkSettings {
        mqtt: Some(MqttSettings::new(&format!("mqtt://127.0.0.1:{proxy_port}"))),
        ..SinkSettings::default()
    };
    let counters = SinkCounters::default();
    let mut sinks = EventSinks::start("north/gate", &settings, counters.clone()).unwrap();
    sinks.publish(&[speed_event(1), speed_event(2)]);
    thread::sleep(Duration::from_millis(700));
    assert_eq!(counters.dropped.get(), 0, "queued while unreachable");
    open.0.send(()).unwrap();
    sinks.publish(&[Event::ZoneCounts(ZoneCounts::default())]);
    drop(sinks);

    let mut received = Vec::new();
    while let Ok(message) = messages.recv_timeout(Duration::from_secs(10)) {
        let last = message.1 == "offline";
        received.push(message);
        if last {
            break;
        }
    }
    let topics: Vec<&str> = received.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        topics[..4],
        [
            "streamtrack/north_gate/status",
            "streamtrack/north_gate/events",
            "streamtrack/north_gate/events",
            "streamtrack/north_gate/counts",
        ],
        "{received:?}"
    );
    assert_eq!(received[0].1, "online");
    let bodies: Vec<Value> = received[1..4]
        .iter()
        .map(|(_, payload, _)| serde_json::from_str(payload).unwrap())
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(body["stream"], "north/gate");
        assert_eq!(body["seq"], i as u64 + 1);
    }
    assert_eq!(bodies[1]["id"], 2);
    assert_eq!(bodies[2]["event"], "zone_counts");
    assert_eq!(counters.published.get(), 3);
    assert_eq!(counters.dropped.get(), 0);

    // The status stays retained for later subscribers: `offline` after a clean end.
    let late = subscribe(port, "streamtrack/north_gate/status");
    let (topic, payload, retained) = late.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (topic.as_str(), payload.as_str(), retained),
        ("streamtrack/north_gate/status", "offline", true)
    );
}

/// A forwarder in front of the broker, with two switches: `open` (while off, new connections
/// are closed at once, like a broker that is down) and `swallow` (while on, what clients send
/// is dropped: publishes go out but are never acknowledged).
struct Forwarder {
    port: u16,
    open: Arc<AtomicBool>,
    swallow: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, swallow) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicBool::new(false)),
        );
        let (gate, drop_sent) = (open.clone(), swallow.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let client = client.unwrap();
                if !gate.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut from_client, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let drop_sent = drop_sent.clone();
                thread::spawn(move || {
                    let mut buffer = [0u8; 4096];
                    while let Ok(n @ 1..) = from_client.read(&mut buffer) {
                        if !drop_sent.load(Ordering::SeqCst)
                            && to_server.write_all(&buffer[..n]).is_err()
                        {
                            break;
                        }
                    }
                    let _ = to_server.shutdown(std::net::Shutdown::Both);
                });
                let (mut from_server, to_client) = (server, client);
                thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut &to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Self {
            port,
            open,
            swallow,
        }
    }
}

/// Sequence numbers of the event messages that arrive on `messages` until `last` has come
/// (or `timeout` passes).
fn sequence_numbers(
    messages: &mpsc::Receiver<(String, String, bool)>,
    last: u64,
    timeout: Duration,
) -> Vec<u64> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while !seen.contains(&last) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let Ok((_, payload, _)) = messages.recv_timeout(left) else {
            break;
        };
        let body: Value = serde_json::from_str(&payload).unwrap();
        seen.push(body["seq"].as_u64().unwrap());
    }
    seen
}

/// The broker killed in the middle of a stream and started again, without the session it
/// had: the publishes it never acknowledged (sent just before the kill) and the events
/// published while it was down all arrive once it is back. Over QoS 1 an event may arrive
/// twice; deduplicated by their per-stream sequence numbers, exactly the 50 events published
/// arrive, in order of first arrival, and none is counted as dropped.
#[test]
fn mqtt_events_survive_a_broker_killed_and_restarted_mid_stream() {
    let port = free_port();
    let broker = Broker::start(port);
    // The sink goes through the forwarder, so that it reaches the restarted broker only once
    // the test's subscriber is back on it (what the broker gets before that, nobody hears).
    let forwarder = Forwarder::start(port);
    let settings = SinkSettings {
        mqtt: Some(MqttSettings::new(&format!(
            "mqtt://127.0.0.1:{}",
            forwarder.port
        ))),
        ..SinkSettings::default()
    };
    let messages = subscribe(port, "streamtrack/+/events");
    let counters = SinkCounters::default();
    let mut sinks = EventSinks::start("cam", &settings, counters.clone()).unwrap();
    for id in 1..=20 {
        sinks.publish(&[speed_event(id)]);
    }
    let mut seen = sequence_numbers(&messages, 20, Duration::from_secs(20));
    assert!(seen.contains(&20), "before the kill: {seen:?}");

    // Sent, never acknowledged: the broker dies with them unanswered.
    forwarder.swallow.store(true, Ordering::SeqCst);
    for id in 21..=25 {
        sinks.publish(&[speed_event(id)]);
    }
    thread::sleep(Duration::from_millis(500));
    forwarder.open.store(false, Ordering::SeqCst);
    drop(broker);
    for id in 26..=40 {
        sinks.publish(&[speed_event(id)]);
        thread::sleep(Duration::from_millis(10));
    }
    let _broker = Broker::start(port);
    let messages = subscribe(port, "streamtrack/+/events");
    forwarder.swallow.store(false, Ordering::SeqCst);
    forwarder.open.store(true, Ordering::SeqCst);
    for id in 41..=50 {
        sinks.publish(&[speed_event(id)]);
    }
    seen.extend(sequence_numbers(&messages, 50, Duration::from_secs(60)));
    let mut unique = Vec::new();
    for seq in seen {
        if !unique.contains(&seq) {
            unique.push(seq);
        }
    }
    assert_eq!(unique, (1..=50).collect::<Vec<u64>>());
    assert_eq!(counters.dropped.get(), 0);
    drop(sinks);
    assert!(counters.published.get() >= 50);
}

/// Runs the `openssl` command-line tool in `dir`.
fn openssl(dir: &std::path::Path, arguments: &[&str]) {
    let output = Command::new("openssl")
        .args(arguments)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A test certificate authority `<name>-ca.pem` in `dir`, and (when `server`) a certificate
/// for 127.0.0.1 it signed, `<name>-server.pem` with its key `<name>-server.key`.
fn certificate_authority(dir: &std::path::Path, name: &str, server: bool) {
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
    let subject = format!("/CN={name} test authority");
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &key,
            &[
                "-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj", &subject,
            ],
        ]
        .concat(),
    );
    if server {
        let (cert, cert_key, request) = (
            format!("{name}-server.pem"),
            format!("{name}-server.key"),
            format!("{name}-server.csr"),
        );
        openssl(
            dir,
            &[
                &["req"][..],
                &key,
                &[
                    "-keyout",
                    &cert_key,
                    "-out",
                    &request,
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &request,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                "san.cnf",
            ],
        );
        // Mosquitto started as root reads its files as the `mosquitto` user.
        let readable = std::os::unix::fs::PermissionsExt::from_mode(0o644);
        std::fs::set_permissions(dir.join(&cert_key), readable).unwrap();
    }
}

/// `mqtts://`: the sink reaches a Mosquitto TLS listener whose certificate a test authority
/// signed, trusting that authority through `ca_file`; the events are read on the broker's
/// plain listener. A sink that trusts another authority refuses the broker, and its events
/// wait in the queue.
#[test]
fn mqtt_events_reach_a_tls_broker_whose_authority_is_trusted() {
    let dir = std::env::temp_dir().join(format!("streamtrack-mqtts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certificate_authority(&dir, "broker", true);
    certificate_authority(&dir, "other", false);
    let (plain, tls) = (free_port(), free_port());
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "allow_anonymous true\nlistener {plain} 127.0.0.1\nlistener {tls} 127.0.0.1\n\
             cafile {0}/broker-ca.pem\ncertfile {0}/broker-server.pem\n\
             keyfile {0}/broker-server.key\n",
            dir.display()
        ),
    )
    .unwrap();
    let _broker = Broker::start_with(&["-c", &config.to_string_lossy()], tls);
    let messages = subscribe(plain, "streamtrack/+/events");
    let sink = |ca: &str| SinkSettings {
        mqtt: Some(MqttSettings {
            ca_file: Some(dir.join(ca)),
            ..MqttSettings::new(&format!("mqtts://127.0.0.1:{tls}"))
        }),
        ..SinkSettings::default()
    };

    let untrusting = EventSinks::start("doubter", &sink("other-ca.pem"), SinkCounters::default());
    let mut untrusting = untrusting.unwrap();
    untrusting.publish(&[speed_event(1)]);
    let counters = SinkCounters::default();
    let mut sinks = EventSinks::start("cam", &sink("broker-ca.pem"), counters.clone()).unwrap();
    for id in 1..=5 {
        sinks.publish(&[speed_event(id)]);
    }
    let received: Vec<(String, String, bool)> = (0..5)
        .map_while(|_| messages.recv_timeout(Duration::from_secs(20)).ok())
        .collect();
    let topics: Vec<&str> = received.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(topics, ["streamtrack/cam/events"; 5], "{received:?}");
    let sequence: Vec<u64> = received
        .iter()
        .map(|(_, payload, _)| {
            serde_json::from_str::<Value>(payload).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(sequence, [1, 2, 3, 4, 5]);
    assert!(
        messages.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing from the sink that does not trust the broker"
    );
    drop(sinks);
    assert_eq!(counters.dropped.get(), 0);
    drop(untrusting);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A TLS server configuration with the certificate and key [`certificate_authority`] made
/// for `name` in `dir`.
fn tls_server(dir: &std::path::Path, name: &str) -> Arc<ServerConfig> {
    let certificates = CertificateDer::pem_file_iter(dir.join(format!("{name}-server.pem")))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}-server.key"))).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(rustls_graviola::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .unwrap();
    Arc::new(config)
}

/// `https://`: events reach a TLS endpoint whose certificate a test authority signed, trusted
/// through `ca_file`, signed as over plain HTTP; a sink that trusts another authority refuses
/// the endpoint, keeps retrying, and counts its event as dropped when the stream ends.
#[test]
fn webhook_events_reach_an_https_endpoint_whose_authority_is_trusted() {
    let dir = std::env::temp_dir().join(format!("streamtrack-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certificate_authority(&dir, "hook", true);
    certificate_authority(&dir, "other", false);
    let (port, deliveries) = webhook_server(vec![204], Some(tls_server(&dir, "hook")));
    let sink = |ca: &str| SinkSettings {
        webhook: Some(WebhookSettings {
            ca_file: Some(dir.join(ca)),
            ..WebhookSettings::new(
                &format!("https://127.0.0.1:{port}/hook"),
                Some("secret".into()),
            )
        }),
        ..SinkSettings::default()
    };
    let refused = SinkCounters::default();
    let mut doubter = EventSinks::start("doubter", &sink("other-ca.pem"), refused.clone()).unwrap();
    doubter.publish(&[speed_event(1)]);
    let counters = SinkCounters::default();
    let mut sinks = EventSinks::start("cam", &sink("hook-ca.pem"), counters.clone()).unwrap();
    sinks.publish(&[speed_event(1), speed_event(2)]);
    drop(sinks);
    drop(doubter);

    let received: Vec<Delivery> = deliveries.try_iter().collect();
    let streams: Vec<&Value> = received.iter().map(|d| &d.body["stream"]).collect();
    assert_eq!(
        streams,
        ["cam", "cam"],
        "only the sink that trusts the endpoint"
    );
    for (i, delivery) in received.iter().enumerate() {
        assert_eq!(delivery.body["seq"], i as u64 + 1);
        assert_eq!(
            delivery.signature.as_deref(),
            Some(signature("secret", &delivery.raw).as_str())
        );
    }
    assert_eq!(counters.dropped.get(), 0);
    assert_eq!(refused.dropped.get(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sink_settings_are_checked_before_anything_connects() {
    let bad = [
        (
            SinkSettings {
                mqtt: Some(MqttSettings::new("ws://broker:8883")),
                ..SinkSettings::default()
            },
            "only mqtt:// and mqtts://",
        ),
        (
            SinkSettings {
                mqtt: Some(MqttSettings {
                    ca_file: Some("/nonexistent/ca.pem".into()),
                    ..MqttSettings::new("mqtts://broker")
                }),
                ..SinkSettings::default()
            },
            "ca_file /nonexistent/ca.pem",
        ),
        (
            SinkSettings {
                mqtt: Some(MqttSettings {
                    ca_file: Some("ca.pem".into()),
                    ..MqttSettings::new("mqtt://broker")
                }),
                ..SinkSettings::default()
            },
            "is for encrypted connections",
        ),
        (
            SinkSettings {
                webhook: Some(WebhookSettings::new("ftp://example.com/hook", None)),
                ..SinkSettings::default()
            },
            "only http:// and https://",
        ),
        (
            SinkSettings {
                webhook: Some(WebhookSettings {
                    queue: 0,
                    ..WebhookSettings::new("http://example.com/hook", None)
                }),
                ..SinkSettings::default()
            },
            "queue must be between 1",
        ),
        (
            SinkSettings {
                mqtt: Some(MqttSettings {
                    topic_prefix: "a/#".into(),
                    ..MqttSettings::new("mqtt://broker")
                }),
                ..SinkSettings::default()
            },
            "topic_prefix",
        ),
    ];
    for (settings, message) in bad {
        let error = EventSinks::start("cam", &settings, SinkCounters::default())
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains(message), "{error}");
    }
}
