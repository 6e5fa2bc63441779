//! A small RTSP server for tests: serves the H.264 track of an MP4 file over RTSP with
//! interleaved RTP/TCP (RFC 2326 + RFC 6184 single-NAL and FU-A packets), in real time,
//! looping the file. It can be killed mid-stream (every connection dropped, the port freed)
//! and started again on the same port, to exercise a client's reconnection.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use streamtrack::video::annexb::{nal_type, split_annexb};
use streamtrack::video::mp4_source::Mp4Track;

const SSRC: u32 = 0x5354_524b;
const MAX_PAYLOAD: usize = 1400;

/// The video as access units in decode order.
struct Clip {
    sps: Vec<u8>,
    pps: Vec<u8>,
    /// (NAL units, presentation time in seconds).
    units: Vec<(Vec<Vec<u8>>, f64)>,
    fps: f64,
}

impl Clip {
    fn load(path: &Path) -> Self {
        let mut track = Mp4Track::open(path).unwrap();
        let sets: Vec<Vec<u8>> = split_annexb(&track.parameter_sets)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        let sps = sets.iter().find(|n| nal_type(n) == 7).unwrap().clone();
        let pps = sets.iter().find(|n| nal_type(n) == 8).unwrap().clone();
        let fps = track.info.fps;
        let mut units = Vec::new();
        while let Some((data, pts, _)) = track.next_sample().unwrap() {
            let data = data.unwrap();
            units.push((
                split_annexb(&data)
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect(),
                pts,
            ));
        }
        Self {
            sps,
            pps,
            units,
            fps,
        }
    }
}

/// A running server; [`RtspTestServer::kill`] stops it.
pub struct RtspTestServer {
    port: u16,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl RtspTestServer {
    /// Serves `video` on 127.0.0.1:`port` (0: any free port).
    pub fn start(video: &Path, port: u16) -> Self {
        let clip = Arc::new(Clip::load(video));
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (stop, connections) = (stop.clone(), connections.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            connections
                                .lock()
                                .unwrap()
                                .push(stream.try_clone().unwrap());
                            let (clip, stop) = (clip.clone(), stop.clone());
                            std::thread::spawn(move || serve(stream, port, &clip, &stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        Self {
            port,
            stop,
            connections,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/traffic", self.port)
    }

    /// Drops every connection and closes the port.
    pub fn kill(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for connection in self.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().unwrap();
        }
    }
}

impl Drop for RtspTestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Answers requests on one connection; PLAY starts the RTP sender.
fn serve(stream: TcpStream, port: u16, clip: &Arc<Clip>, stop: &Arc<AtomicBool>) {
    let writer = Arc::new(Mutex::new(stream.try_clone().unwrap()));
    let mut reader = BufReader::new(stream);
    let base = format!("rtsp://127.0.0.1:{port}/traffic");
    let playing = Arc::new(AtomicBool::new(false));
    loop {
        let Some((method, cseq)) = read_request(&mut reader) else {
            playing.store(false, Ordering::Relaxed);
            return;
        };
        let session = "Session: 5354524b;timeout=60\r\n";
        let (headers, body) = match method.as_str() {
            "OPTIONS" => (
                "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n".to_string(),
                String::new(),
            ),
            "DESCRIBE" => (
                format!("Content-Base: {base}/\r\nContent-Type: application/sdp\r\n"),
                sdp(clip),
            ),
            "SETUP" => (
                format!(
                    "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc={SSRC:08X}\r\n{session}"
                ),
                String::new(),
            ),
            "PLAY" => (
                format!("{session}RTP-Info: url={base}/trackID=0;seq=1;rtptime=0\r\n"),
                String::new(),
            ),
            _ => (session.to_string(), String::new()),
        };
        let response = format!(
            "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer
            .lock()
            .unwrap()
            .write_all(response.as_bytes())
            .is_err()
        {
            return;
        }
        match method.as_str() {
            "PLAY" if !playing.swap(true, Ordering::Relaxed) => {
                let (writer, clip, stop, playing) =
                    (writer.clone(), clip.clone(), stop.clone(), playing.clone());
                std::thread::spawn(move || send_rtp(&writer, &clip, &stop, &playing));
            }
            "TEARDOWN" => {
                playing.store(false, Ordering::Relaxed);
                return;
            }
            _ => {}
        }
    }
}

/// Reads one request's method and CSeq (skipping its headers and body).
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, String)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let method = line.split_whitespace().next()?.to_string();
    let (mut cseq, mut length) = (String::new(), 0usize);
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "cseq" => cseq = value.trim().to_string(),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    std::io::Read::read_exact(reader, &mut body).ok()?;
    Some((method, cseq))
}

fn sdp(clip: &Clip) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=streamtrack test\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
         m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
         a=fmtp:96 packetization-mode=1;profile-level-id={:02X}{:02X}{:02X};sprop-parameter-sets={},{}\r\n\
         a=control:trackID=0\r\n",
        clip.sps[1],
        clip.sps[2],
        clip.sps[3],
        b64.encode(&clip.sps),
        b64.encode(&clip.pps)
    )
}

/// Sends the clip in real time, looping, until the connection or the server goes.
fn send_rtp(writer: &Mutex<TcpStream>, clip: &Clip, stop: &AtomicBool, playing: &AtomicBool) {
    let started = Instant::now();
    let clip_length = clip.units.len() as f64 / clip.fps;
    let mut seq: u16 = 1;
    for (sent, (nals, pts)) in clip.units.iter().cycle().enumerate() {
        if stop.load(Ordering::Relaxed) || !playing.load(Ordering::Relaxed) {
            return;
        }
        let due = started + Duration::from_secs_f64(sent as f64 / clip.fps);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let loops = (sent / clip.units.len()) as f64;
        let timestamp = ((loops * clip_length + pts) * 90_000.0) as u32;
        let idr = nals.iter().any(|n| nal_type(n) == 5);
        let mut units: Vec<&[u8]> = Vec::new();
        if idr {
            units.extend([clip.sps.as_slice(), clip.pps.as_slice()]);
        }
        units.extend(nals.iter().map(Vec::as_slice).filter(|n| nal_type(n) != 9));
        let packets = packetize(&units);
        let count = packets.len();
        let mut out = writer.lock().unwrap();
        for (i, payload) in packets.into_iter().enumerate() {
            let mut packet = vec![0x80, 96 | if i + 1 == count { 0x80 } else { 0 }];
            packet.extend_from_slice(&seq.to_be_bytes());
            packet.extend_from_slice(&timestamp.to_be_bytes());
            packet.extend_from_slice(&SSRC.to_be_bytes());
            packet.extend_from_slice(&payload);
            seq = seq.wrapping_add(1);
            let mut frame = vec![b'$', 0];
            frame.extend_from_slice(&(packet.len() as u16).to_be_bytes());
            frame.extend_from_slice(&packet);
            if out.write_all(&frame).is_err() {
                return;
            }
        }
    }
}

/// RTP payloads for one access unit: small NAL units whole, large ones as FU-A fragments.
fn packetize(nals: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    for nal in nals {
        if nal.len() <= MAX_PAYLOAD {
            payloads.push(nal.to_vec());
            continue;
        }
        let indicator = (nal[0] & 0xE0) | 28;
        let chunks: Vec<&[u8]> = nal[1..].chunks(MAX_PAYLOAD).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut header = nal[0] & 0x1F;
            if i == 0 {
                header |= 0x80;
            }
            if i + 1 == chunks.len() {
                header |= 0x40;
            }
            let mut payload = vec![indicator, header];
            payload.extend_from_slice(chunk);
            payloads.push(payload);
        }
    }
    payloads
}
