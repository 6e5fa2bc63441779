//! A minimal MP4 muxer for one H.264 video track.
//!
//! Layout while writing: `ftyp`, `mdat` (samples streamed as they come), then `moov` written
//! by [`Mp4Writer::finish`], which then moves `moov` in front of `mdat` (a copy renamed over
//! the file) so players streaming it can start early; a file cut short by a full disk keeps
//! its index at the end. Timestamps use a 90 kHz timescale, so common frame rates
//! (25, 30, 30000/1001, 10, ...) have exact durations; durations past 32 bits (13 hours at
//! 90 kHz) are written in the boxes' 64-bit versions. The boxes they share with the
//! fragmented writer ([`super::fragmented_writer`]) are built here.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::VideoError;

/// Track timescale in ticks per second.
pub(super) const TIMESCALE: u32 = 90_000;
/// Movie-header timescale (milliseconds).
const MOVIE_TIMESCALE: u32 = 1_000;

pub(super) struct SampleEntry {
    pub size: u32,
    pub duration: u32,
    pub is_sync: bool,
}

impl SampleEntry {
    /// The entry of a sample of `size` bytes displayed for `duration_s` seconds.
    pub fn new(size: usize, duration_s: f64, is_sync: bool) -> Self {
        Self {
            size: size as u32,
            duration: (duration_s * TIMESCALE as f64)
                .round()
                .clamp(1.0, u32::MAX as f64) as u32,
            is_sync,
        }
    }
}

/// The file-type box both writers start with.
pub(super) fn ftyp() -> Vec<u8> {
    mp4_box(b"ftyp", |b| {
        b.extend_from_slice(b"isom");
        b.extend_from_slice(&0x200u32.to_be_bytes());
        for brand in [b"isom", b"iso2", b"avc1", b"mp41"] {
            b.extend_from_slice(brand);
        }
    })
}

/// Streams H.264 samples into an MP4 file.
pub struct Mp4Writer {
    path: PathBuf,
    file: BufWriter<File>,
    mdat_start: u64,
    written: u64,
    samples: Vec<SampleEntry>,
    width: u32,
    height: u32,
}

impl Mp4Writer {
    /// Creates `path` and writes the file header.
    pub fn create(path: &Path, width: u32, height: u32) -> Result<Self, VideoError> {
        let fail = |e: std::io::Error| VideoError::output(path, format!("cannot write: {e}"));
        // Readable too: `finish` copies the media data when it moves the index to the front.
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(fail)?;
        let mut file = BufWriter::new(file);
        let ftyp = ftyp();
        file.write_all(&ftyp).map_err(fail)?;
        let mdat_start = ftyp.len() as u64;
        // 64-bit mdat header: size 1, type, then the real size patched in at the end.
        file.write_all(&1u32.to_be_bytes()).map_err(fail)?;
        file.write_all(b"mdat").map_err(fail)?;
        file.write_all(&0u64.to_be_bytes()).map_err(fail)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            mdat_start,
            written: 0,
            samples: Vec::new(),
            width,
            height,
        })
    }

    /// Appends one sample (AVCC) displayed for `duration_s` seconds.
    pub fn write_sample(
        &mut self,
        avcc: &[u8],
        duration_s: f64,
        is_sync: bool,
    ) -> Result<(), VideoError> {
        self.file
            .write_all(avcc)
            .map_err(|e| VideoError::output(&self.path, format!("cannot write: {e}")))?;
        self.written += avcc.len() as u64;
        self.samples
            .push(SampleEntry::new(avcc.len(), duration_s, is_sync));
        Ok(())
    }

    /// Patches the `mdat` size and writes the `moov` index; the file is then complete and
    /// holds `Ok`'s count of samples.
    ///
    /// When the file cannot take everything (a full disk), the samples that did reach it
    /// are kept: the file is cut after the last whole one and the index written behind it,
    /// dropping further samples from the end until the index fits. The error is still
    /// returned, saying how many frames the playable file keeps.
    pub fn finish(self, sps: &[u8], pps: &[u8]) -> Result<usize, VideoError> {
        let Self {
            path,
            file,
            mdat_start,
            mut samples,
            width,
            height,
            ..
        } = self;
        let total = samples.len();
        // A failed flush leaves the writer with bytes that never reached the file: drop them.
        let (file, mut failure) = match file.into_inner() {
            Ok(file) => (file, None),
            Err(e) => {
                let (error, writer) = e.into_parts();
                (writer.into_parts().0, Some(error.to_string()))
            }
        };
        let mut index = Index {
            file,
            mdat_start,
            track: Track { width, height },
        };
        if failure.is_some() {
            // Keep the samples wholly on disk.
            let on_disk = index.file.metadata().map(|m| m.len()).unwrap_or(0);
            let mut end = mdat_start + 16;
            let whole = samples
                .iter()
                .take_while(|s| {
                    end += u64::from(s.size);
                    end <= on_disk
                })
                .count();
            samples.truncate(whole);
        }
        loop {
            match index.write(&samples, sps, pps) {
                Ok(()) => break,
                Err(e) => {
                    failure.get_or_insert(e.to_string());
                    if samples.is_empty() {
                        return Err(VideoError::output(&path, format!("cannot finalise: {e}")));
                    }
                    // Free at least the index's size from the end and try again.
                    let mut freed = 0u64;
                    let need = index.moov(&samples, sps, pps).len() as u64 + 4096;
                    while freed < need {
                        match samples.pop() {
                            Some(s) => freed += u64::from(s.size),
                            None => break,
                        }
                    }
                }
            }
        }
        match failure {
            None => {
                if let Err(e) = index.move_index_to_front(&path, &samples, sps, pps) {
                    // The file as it is (index at the end) plays everywhere but in players
                    // that stream it before it is whole.
                    tracing::warn!("{}: index kept at the end: {e}", path.display());
                }
                Ok(total)
            }
            Some(e) => Err(VideoError::output(
                &path,
                format!(
                    "cannot write: {e}; the video is finalised with the first {} of {total} frames",
                    samples.len()
                ),
            )),
        }
    }
}

/// Writes the index of a file whose samples are already in its `mdat`.
struct Index {
    file: File,
    mdat_start: u64,
    track: Track,
}

impl Index {
    /// Cuts the file after `samples`, appends `moov` and patches the `mdat` size.
    fn write(&mut self, samples: &[SampleEntry], sps: &[u8], pps: &[u8]) -> std::io::Result<()> {
        let data: u64 = samples.iter().map(|s| u64::from(s.size)).sum();
        let end = self.mdat_start + 16 + data;
        self.file.set_len(end)?;
        self.file.seek(SeekFrom::Start(end))?;
        self.file.write_all(&self.moov(samples, sps, pps))?;
        self.file.seek(SeekFrom::Start(self.mdat_start + 8))?;
        self.file.write_all(&(data + 16).to_be_bytes())?;
        self.file.sync_data()
    }

    fn moov(&self, samples: &[SampleEntry], sps: &[u8], pps: &[u8]) -> Vec<u8> {
        self.track
            .moov(samples, sps, pps, Some(self.mdat_start + 16))
    }

    /// Rewrites the finished file at `path` as `ftyp`, `moov`, `mdat` ("fast start"), so a
    /// player reading it over HTTP can start before the whole file has arrived: a copy
    /// beside it, synced, then renamed over it (an error leaves the original as it was).
    fn move_index_to_front(
        &mut self,
        path: &Path,
        samples: &[SampleEntry],
        sps: &[u8],
        pps: &[u8],
    ) -> std::io::Result<()> {
        let data: u64 = samples.iter().map(|s| u64::from(s.size)).sum();
        let moov_len = self.moov(samples, sps, pps).len() as u64;
        let mdat_at = self.mdat_start + moov_len;
        let moov = self.track.moov(samples, sps, pps, Some(mdat_at + 16));
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".faststart");
        let staging = path.with_file_name(name);
        let mut copy = || -> std::io::Result<()> {
            let mut out = BufWriter::new(File::create(&staging)?);
            out.write_all(&ftyp())?;
            out.write_all(&moov)?;
            self.file.seek(SeekFrom::Start(self.mdat_start))?;
            let copied = std::io::copy(&mut (&self.file).take(16 + data), &mut out)?;
            if copied != 16 + data {
                return Err(std::io::Error::other(
                    "the media data is shorter than indexed",
                ));
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&staging, path)
        };
        copy().inspect_err(|_| {
            let _ = std::fs::remove_file(&staging);
        })
    }
}

/// The video track's description.
#[derive(Debug, Clone, Copy)]
pub(super) struct Track {
    pub width: u32,
    pub height: u32,
}

impl Track {
    /// The movie box for `samples`, stored in one chunk at `chunk_offset`; with no offset,
    /// the movie box of a fragmented file (no samples of its own, `mvex` announcing the
    /// fragments).
    pub fn moov(
        &self,
        samples: &[SampleEntry],
        sps: &[u8],
        pps: &[u8],
        chunk_offset: Option<u64>,
    ) -> Vec<u8> {
        let total: u64 = samples.iter().map(|s| s.duration as u64).sum();
        let movie_duration = total * MOVIE_TIMESCALE as u64 / TIMESCALE as u64;
        // Version 1 (64-bit times) only where a duration needs it.
        let long = u8::from(total > u64::from(u32::MAX));
        let put_time = |b: &mut Vec<u8>, v: u64| {
            if long == 1 {
                b.extend_from_slice(&v.to_be_bytes());
            } else {
                put32(b, v as u32);
            }
        };
        let (w, h) = (self.width, self.height);
        let mvhd = full_box(b"mvhd", long, 0, |b| {
            put_time(b, 0); // creation
            put_time(b, 0); // modification
            put32(b, MOVIE_TIMESCALE);
            put_time(b, movie_duration);
            put32(b, 0x0001_0000); // rate 1.0
            b.extend_from_slice(&[0x01, 0x00]); // volume 1.0
            b.extend_from_slice(&[0; 10]);
            put_matrix(b);
            b.extend_from_slice(&[0; 24]);
            put32(b, 2); // next track id
        });
        let tkhd = full_box(b"tkhd", long, 3, |b| {
            put_time(b, 0);
            put_time(b, 0);
            put32(b, 1); // track id
            put32(b, 0);
            put_time(b, movie_duration);
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&[0; 8]); // layer, alternate group, volume, reserved
            put_matrix(b);
            put32(b, w << 16);
            put32(b, h << 16);
        });
        let mdhd = full_box(b"mdhd", long, 0, |b| {
            put_time(b, 0);
            put_time(b, 0);
            put32(b, TIMESCALE);
            put_time(b, total);
            b.extend_from_slice(&[0x55, 0xc4, 0, 0]); // language "und"
        });
        let hdlr = full_box(b"hdlr", 0, 0, |b| {
            put32(b, 0);
            b.extend_from_slice(b"vide");
            b.extend_from_slice(&[0; 12]);
            b.extend_from_slice(b"streamtrack video\0");
        });
        let vmhd = full_box(b"vmhd", 0, 1, |b| b.extend_from_slice(&[0; 8]));
        let dref = full_box(b"dref", 0, 0, |b| {
            put32(b, 1);
            b.extend_from_slice(&full_box(b"url ", 0, 1, |_| {}));
        });
        let dinf = container(b"dinf", &[&dref]);
        let stbl = mp4_box(b"stbl", |b| {
            b.extend_from_slice(&self.stsd(sps, pps));
            b.extend_from_slice(&stts(samples));
            if chunk_offset.is_some() {
                b.extend_from_slice(&stss(samples));
            }
            b.extend_from_slice(&full_box(b"stsc", 0, 0, |b| {
                let n = samples.len() as u32;
                put32(b, u32::from(n > 0));
                if n > 0 {
                    put32(b, 1);
                    put32(b, n);
                    put32(b, 1);
                }
            }));
            b.extend_from_slice(&full_box(b"stsz", 0, 0, |b| {
                put32(b, 0);
                put32(b, samples.len() as u32);
                for s in samples {
                    put32(b, s.size);
                }
            }));
            b.extend_from_slice(&full_box(b"co64", 0, 0, |b| {
                match chunk_offset.filter(|_| !samples.is_empty()) {
                    Some(offset) => {
                        put32(b, 1);
                        b.extend_from_slice(&offset.to_be_bytes());
                    }
                    None => put32(b, 0),
                }
            }));
        });
        let minf = container(b"minf", &[&vmhd, &dinf, &stbl]);
        let mdia = container(b"mdia", &[&mdhd, &hdlr, &minf]);
        let trak = container(b"trak", &[&tkhd, &mdia]);
        mp4_box(b"moov", |b| {
            b.extend_from_slice(&mvhd);
            b.extend_from_slice(&trak);
            if chunk_offset.is_none() {
                // Track 1's fragment defaults: sample description 1, the rest per sample.
                let trex = full_box(b"trex", 0, 0, |b| {
                    for v in [1, 1, 0, 0, 0] {
                        put32(b, v);
                    }
                });
                b.extend_from_slice(&container(b"mvex", &[&trex]));
            }
        })
    }

    fn stsd(&self, sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let avcc = mp4_box(b"avcC", |b| {
            let profile = sps.get(1).copied().unwrap_or(66);
            b.push(1);
            b.push(profile);
            b.push(sps.get(2).copied().unwrap_or(0));
            b.push(sps.get(3).copied().unwrap_or(30));
            b.push(0xff); // 4-byte NAL lengths
            b.push(0xe1); // one SPS
            b.extend_from_slice(&(sps.len() as u16).to_be_bytes());
            b.extend_from_slice(sps);
            b.push(1);
            b.extend_from_slice(&(pps.len() as u16).to_be_bytes());
            b.extend_from_slice(pps);
            if matches!(profile, 100 | 110 | 122 | 144) {
                // 4:2:0, 8-bit, no SPS extensions.
                b.extend_from_slice(&[0xfd, 0xf8, 0xf8, 0]);
            }
        });
        let avc1 = mp4_box(b"avc1", |b| {
            b.extend_from_slice(&[0; 6]);
            b.extend_from_slice(&1u16.to_be_bytes()); // data reference index
            b.extend_from_slice(&[0; 16]);
            b.extend_from_slice(&(self.width as u16).to_be_bytes());
            b.extend_from_slice(&(self.height as u16).to_be_bytes());
            put32(b, 0x0048_0000);
            put32(b, 0x0048_0000);
            put32(b, 0);
            b.extend_from_slice(&1u16.to_be_bytes()); // frame count
            let mut name = [0u8; 32];
            let label = b"streamtrack H.264";
            name[0] = label.len() as u8;
            name[1..=label.len()].copy_from_slice(label);
            b.extend_from_slice(&name);
            b.extend_from_slice(&0x18u16.to_be_bytes());
            b.extend_from_slice(&0xffffu16.to_be_bytes());
            b.extend_from_slice(&avcc);
        });
        full_box(b"stsd", 0, 0, |b| {
            put32(b, 1);
            b.extend_from_slice(&avc1);
        })
    }
}

/// Sample durations as runs of equal values.
fn stts(samples: &[SampleEntry]) -> Vec<u8> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for s in samples {
        match runs.last_mut() {
            Some((count, duration)) if *duration == s.duration => *count += 1,
            _ => runs.push((1, s.duration)),
        }
    }
    full_box(b"stts", 0, 0, |b| {
        put32(b, runs.len() as u32);
        for (count, duration) in runs {
            put32(b, count);
            put32(b, duration);
        }
    })
}

/// The 1-based numbers of the keyframes.
fn stss(samples: &[SampleEntry]) -> Vec<u8> {
    let sync: Vec<u32> = samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_sync)
        .map(|(i, _)| i as u32 + 1)
        .collect();
    full_box(b"stss", 0, 0, |b| {
        put32(b, sync.len() as u32);
        for n in sync {
            put32(b, n);
        }
    })
}

pub(super) fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put_matrix(b: &mut Vec<u8>) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        put32(b, v);
    }
}

pub(super) fn mp4_box(kind: &[u8; 4], fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = vec![0, 0, 0, 0];
    b.extend_from_slice(kind);
    fill(&mut b);
    let size = b.len() as u32;
    b[..4].copy_from_slice(&size.to_be_bytes());
    b
}

/// A box holding `children`, in order.
pub(super) fn container(kind: &[u8; 4], children: &[&[u8]]) -> Vec<u8> {
    mp4_box(kind, |b| {
        children.iter().for_each(|child| b.extend_from_slice(child))
    })
}

pub(super) fn full_box(
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    fill: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    mp4_box(kind, |b| {
        put32(b, (version as u32) << 24 | flags);
        fill(b);
    })
}
