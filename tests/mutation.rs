//! Every parser of untrusted bytes under mutation (see `mutate`): MP4 demuxing with
//! H.264 decoding, Annex-B streams, JPEG, PNG, ONNX import, the configuration and
//! calibration TOML files, MOT detection/sequence files, and RTSP/RTP from a camera. A few
//! hundred cases per parser run here; `scripts/mutate.sh` runs the same tests with millions
//! of cases.

mod common;
#[path = "common/mutate.rs"]
mod mutate;
#[path = "common/rtsp_server.rs"]
mod rtsp_server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::data;
use mutate::{GuardedAllocator, Limits};
use streamtrack::video::FrameSource;
use streamtrack::video::rtsp::{RtspOptions, RtspSource};

#[global_allocator]
static ALLOCATOR: GuardedAllocator = GuardedAllocator;

/// A scratch file for loaders that take a path.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamtrack-mutation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Writes `bytes` to the scratch file `name` and hands its path to `load`.
fn through_file(name: &str, bytes: &[u8], load: impl FnOnce(&Path) -> bool) -> bool {
    let path = scratch(name);
    std::fs::write(&path, bytes).unwrap();
    load(&path)
}

/// Decodes up to `frames` frames of `source`, stopping at the first error.
fn read_frames(mut source: Box<dyn FrameSource>, frames: usize) -> bool {
    for _ in 0..frames {
        match source.next_frame() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    true
}

const VIDEO_LIMITS: Limits = Limits {
    time: Duration::from_secs(10),
    // Sample tables and decoded frames (a forged size is refused before allocating).
    allocation: |len| 16 * len + (64 << 20),
};

/// Fragmented (`traffic`, first fragment) and regular (`pedestrians`, `moov` first and the
/// start of `mdat`) files.
fn mp4_samples() -> Vec<(Vec<u8>, Vec<usize>)> {
    let tags: &[&[u8]] = &[
        b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", b"avc1", b"avcC", b"stts", b"stsz",
        b"stsc", b"stco", b"mdhd", b"moof", b"traf", b"trun", b"tfhd", b"mdat",
    ];
    let prefixes = [
        ("video/traffic-640x360.mp4", 150_761),
        ("video/pedestrians-768x576.mp4", 60_000),
    ]
    .map(|(file, len)| std::fs::read(data(file)).unwrap()[..len].to_vec());
    mutate::samples(prefixes, tags)
}

#[test]
fn mp4_demux_and_decode() {
    let exclusive = mutate::exclusive();
    let (ran, accepted) = mutate::run(
        &exclusive,
        "mp4",
        &mp4_samples(),
        300,
        VIDEO_LIMITS,
        |bytes| {
            through_file("case.mp4", bytes, |path| {
                match streamtrack::video::mp4_source::Mp4Source::open(path) {
                    Ok(source) => read_frames(Box::new(source), 4),
                    Err(e) => {
                        assert!(e.to_string().contains("case.mp4"), "{e}");
                        false
                    }
                }
            })
        },
    );
    assert!(
        ran > 300 && accepted > 0,
        "{ran} inputs, {accepted} accepted"
    );
}

#[test]
fn annexb_streams() {
    let exclusive = mutate::exclusive();
    // The first 30 samples of the traffic video as a raw H.264 stream.
    let mut track =
        streamtrack::video::mp4_source::Mp4Track::open(&data("video/traffic-640x360.mp4")).unwrap();
    let mut stream = track.parameter_sets.clone();
    for _ in 0..30 {
        stream.extend(track.next_sample().unwrap().unwrap().0.unwrap());
    }
    let marks = mutate::landmarks(&stream, &[b"\0\0\0\x01", b"\0\0\x01"]);
    let (ran, _) = mutate::run(
        &exclusive,
        "annexb",
        &[(stream, marks)],
        200,
        VIDEO_LIMITS,
        |bytes| {
            through_file("case.h264", bytes, |path| {
                match streamtrack::video::raw_source::RawH264Source::file(path, 25.0) {
                    Ok(source) => read_frames(Box::new(source), 6),
                    Err(_) => false,
                }
            })
        },
    );
    assert!(ran > 200);
}

/// Image limits: a 4-megapixel cap (set below) bounds every decode.
const IMAGE_LIMITS: Limits = Limits {
    time: Duration::from_secs(10),
    allocation: |len| 16 * len + (64 << 20),
};

fn decode_image(bytes: &[u8]) -> bool {
    streamtrack::video::images::set_max_pixels(4_000_000);
    match streamtrack::video::images::decode_image(bytes) {
        Ok(image) => u64::from(image.width()) * u64::from(image.height()) <= 4_000_000,
        Err(message) => {
            assert!(!message.is_empty());
            false
        }
    }
}

#[test]
fn jpeg_images() {
    let exclusive = mutate::exclusive();
    let tags: &[&[u8]] = &[
        b"\xff\xc0",
        b"\xff\xc4",
        b"\xff\xdb",
        b"\xff\xda",
        b"\xff\xdd",
        b"\xff\xe1",
    ];
    let samples = mutate::samples(
        ["images/bus.jpg", "images/zidane.jpg"].map(|file| std::fs::read(data(file)).unwrap()),
        tags,
    );
    let (ran, accepted) = mutate::run(
        &exclusive,
        "jpeg",
        &samples,
        300,
        IMAGE_LIMITS,
        decode_image,
    );
    assert!(
        ran > 300 && accepted > 0,
        "{ran} inputs, {accepted} accepted"
    );
}

#[test]
fn png_images() {
    let exclusive = mutate::exclusive();
    let photo = streamtrack::video::images::read_image(&data("images/dog.jpg")).unwrap();
    let small = image::imageops::thumbnail(&photo, 96, 64);
    let mut png = Vec::new();
    small
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let marks = mutate::landmarks(&png, &[b"IHDR", b"IDAT", b"IEND"]);
    let (ran, accepted) = mutate::run(
        &exclusive,
        "png",
        &[(png, marks)],
        300,
        IMAGE_LIMITS,
        decode_image,
    );
    assert!(
        ran > 300 && accepted > 0,
        "{ran} inputs, {accepted} accepted"
    );
}

#[test]
fn onnx_import() {
    let exclusive = mutate::exclusive();
    let model = std::fs::read(data("models/yolo11n-coco-320-int8.onnx")).unwrap();
    let samples = mutate::samples([model], &[b"Conv", b"imgsz", b"names", b"\x0a\x0a"]);
    let limits = Limits {
        time: Duration::from_secs(20),
        allocation: |len| 8 * len + (16 << 20),
    };
    let (ran, accepted) = mutate::run(&exclusive, "onnx", &samples, 60, limits, |bytes| {
        model_import::import_bytes(bytes).is_ok()
    });
    assert!(
        ran > 60 && accepted > 0,
        "{ran} inputs, {accepted} accepted"
    );
}

const TEXT_LIMITS: Limits = Limits {
    time: Duration::from_secs(5),
    allocation: |len| 64 * len + (1 << 20),
};

#[test]
fn configuration_and_calibration_toml() {
    let exclusive = mutate::exclusive();
    let config = br#"model = "m.onnx"
device = "cpu"
calibration = "c.toml"
[detect]
conf = 0.3
iou = 0.6
classes = ["car", 7]
class_conf = { person = 0.5 }
rename = { "2" = "vehicle" }
[tracker]
high_thresh = 0.3
match_thresh = 0.8
track_buffer = 1.5
[speed]
window = 3.0
min_span = 0.5
border_margin = 4
[output]
bitrate = 2000000
keyframe_interval = 1.0
[input]
max_image_pixels = 1000000
[[zones.lines]]
name = "gate"
from = [10, 300]
to = [600, 300]
[[zones.areas]]
name = "lot"
polygon = [[0, 0], [100, 0], [100, 100]]
"#
    .to_vec();
    let calibration = std::fs::read(data("speed/synth-highway-25fps/calibration.toml")).unwrap();
    let tags: &[&[u8]] = &[b"=", b"[", b"\"", b"\n"];
    let samples = mutate::samples([config, calibration], tags);
    let (ran, accepted) = mutate::run(&exclusive, "toml", &samples, 400, TEXT_LIMITS, |bytes| {
        through_file("case.toml", bytes, |path| {
            let config = streamtrack::config::Config::load(path);
            let calibration = streamtrack::speed::Calibration::load(path);
            for message in [
                config.as_ref().err().map(ToString::to_string),
                calibration.as_ref().err().map(ToString::to_string),
            ]
            .into_iter()
            .flatten()
            {
                assert!(message.contains("case.toml"), "{message}");
            }
            config.is_ok() || calibration.is_ok()
        })
    });
    assert!(
        ran > 400 && accepted > 0,
        "{ran} inputs, {accepted} accepted"
    );
}

#[test]
fn mot_files() {
    let exclusive = mutate::exclusive();
    let det = std::fs::read(data("mot/TUD-Campus/det.txt")).unwrap();
    let seqinfo = std::fs::read(data("mot/MOT17-02/seqinfo.ini")).unwrap();
    let tags: &[&[u8]] = &[b",", b"\n", b"="];
    let samples = mutate::samples([det, seqinfo], tags);
    let (ran, accepted) = mutate::run(&exclusive, "mot", &samples, 300, TEXT_LIMITS, |bytes| {
        through_file("case.txt", bytes, |path| {
            use streamtrack::formats::mot;
            let rows = mot::read_rows(path);
            let info = mot::read_seqinfo(path);
            if let (Ok(rows), Ok(info)) = (&rows, &info) {
                mot::by_frame(rows, info.length);
            }
            if let Ok(rows) = &rows {
                let frames = mot::by_frame(rows, 1);
                assert!(frames.len() <= mot::MAX_FRAME as usize);
            }
            rows.is_ok() || info.is_ok()
        })
    });
    assert!(
        ran > 300 && accepted > 0,
        "{ran} inputs, {accepted} accepted"
    );
}

/// What the test RTSP server sends in a real session (the answers to DESCRIBE, SETUP and
/// PLAY, then the first frames' interleaved RTP), recorded by a proxy between it and our
/// client.
fn recorded_rtsp_session() -> Vec<u8> {
    let server = rtsp_server::RtspTestServer::start(&data("video/traffic-640x360.mp4"), 0);
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "rtsp://127.0.0.1:{}/traffic",
        proxy.local_addr().unwrap().port()
    );
    let upstream = server.port();
    let recorder = std::thread::spawn(move || {
        let (mut client, _) = proxy.accept().unwrap();
        let mut server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
        let (mut requests, mut forward) =
            (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || std::io::copy(&mut requests, &mut forward));
        let (mut recorded, mut buffer) = (Vec::new(), vec![0u8; 1 << 16]);
        while let Ok(n @ 1..) = server.read(&mut buffer) {
            recorded.extend_from_slice(&buffer[..n]);
            if client.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        recorded
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut source = RtspSource::open(&url, RtspOptions::default(), stop.clone()).unwrap();
    for _ in 0..4 {
        source.next_frame().unwrap().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    drop(source);
    server.kill();
    recorded_session_from(recorder.join().unwrap())
}

/// The recording up to the end of its last whole interleaved packet.
fn recorded_session_from(recorded: Vec<u8>) -> Vec<u8> {
    let last_answer = recorded
        .windows(8)
        .rposition(|w| w == b"RTSP/1.0")
        .unwrap_or(0);
    let mut end = last_answer
        + recorded[last_answer..]
            .windows(2)
            .position(|w| w == b"$\0")
            .unwrap_or(recorded.len() - last_answer);
    while end + 4 <= recorded.len() && recorded[end] == b'$' {
        let len = 4 + usize::from(u16::from_be_bytes([recorded[end + 2], recorded[end + 3]]));
        if end + len > recorded.len() {
            break;
        }
        end += len;
    }
    recorded[..end].to_vec()
}

/// Plays `transcript` back as a server on one connection: after each request, the next
/// part of it up to the following `RTSP/1.0` (the whole rest after the last), whatever the
/// bytes say, then closes. Returns the port and the server's thread.
fn replay_server(transcript: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return,
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut starts: Vec<usize> = transcript
            .windows(8)
            .enumerate()
            .filter(|(i, w)| *i > 0 && *w == b"RTSP/1.0")
            .map(|(i, _)| i)
            .collect();
        starts.insert(0, 0);
        starts.push(transcript.len());
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        for part in starts.windows(2) {
            if !skip_request(&mut reader)
                || writer.write_all(&transcript[part[0]..part[1]]).is_err()
            {
                return;
            }
        }
    });
    (port, server)
}

/// Reads one request (headers and body); false when the client has gone.
fn skip_request(reader: &mut BufReader<TcpStream>) -> bool {
    let (mut line, mut length) = (String::new(), 0usize);
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(1..) => {}
            _ => return false,
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    reader.read_exact(&mut vec![0; length]).is_ok()
}

#[test]
fn rtsp_responses_and_rtp() {
    let exclusive = mutate::exclusive();
    let session = recorded_rtsp_session();
    let marks = mutate::landmarks(
        &session,
        &[
            b"RTSP/1.0",
            b"CSeq",
            b"Content-Length",
            b"Transport",
            b"sprop-parameter-sets=",
            b"$\0",
        ],
    );
    let limits = Limits {
        time: Duration::from_secs(15),
        allocation: |len| 16 * len + (64 << 20),
    };
    let (ran, accepted) = mutate::run(
        &exclusive,
        "rtsp",
        &[(session, marks)],
        120,
        limits,
        |bytes| {
            let (port, server) = replay_server(bytes.to_vec());
            let url = format!("rtsp://127.0.0.1:{port}/traffic");
            let options = RtspOptions {
                stall_timeout: Duration::from_millis(700),
                max_reconnects: Some(0),
                ..RtspOptions::default()
            };
            let stop = Arc::new(AtomicBool::new(false));
            let opened = match RtspSource::open(&url, options, stop.clone()) {
                Ok(source) => read_frames(Box::new(source), 4),
                Err(e) => {
                    assert!(e.to_string().contains(&url), "{e}");
                    false
                }
            };
            stop.store(true, Ordering::Relaxed);
            // The client's side ends with the connection: nothing of this case runs on.
            server.join().unwrap();
            opened
        },
    );
    assert!(
        ran > 120 && accepted > 0,
        "{ran} inputs, {accepted} accepted"
    );
}
