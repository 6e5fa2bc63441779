//! Fragmented MP4 for recordings that must survive a crash: `ftyp` and a `moov` without
//! samples first, then one `moof` + `mdat` fragment per keyframe interval, each written
//! through to the disk before the next begins, and at a normal end an `mfra` index of the
//! fragments' keyframes. A recording cut by SIGKILL, an out-of-memory kill or a power loss
//! plays up to its last whole fragment; memory stays bounded by one fragment whatever the
//! recording's length, and decode times are 64-bit (`tfdt` version 1).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::VideoError;
use super::mp4_writer::{SampleEntry, Track, container, ftyp, full_box, put32};

/// A fragment is closed at the next keyframe, or once it holds this many bytes (a stream
/// with rare keyframes still reaches the disk regularly).
const MAX_FRAGMENT_BYTES: usize = 8 << 20;

/// `trun` sample flags: a keyframe (depends on no other sample), and any other sample.
const SYNC_SAMPLE: u32 = 0x0200_0000;
const OTHER_SAMPLE: u32 = 0x0101_0000;

/// Where a fragment that starts with a keyframe begins, for `mfra`.
struct RandomAccess {
    decode_time: u64,
    moof_offset: u64,
}

/// Streams H.264 samples into a fragmented MP4 file.
pub struct FragmentedMp4Writer {
    path: PathBuf,
    file: BufWriter<File>,
    /// Bytes written so far: where the next fragment starts.
    written: u64,
    sequence: u32,
    /// Decode time of the pending fragment's first sample, in track ticks.
    decode_time: u64,
    pending: Vec<SampleEntry>,
    pending_data: Vec<u8>,
    random_access: Vec<RandomAccess>,
    /// Samples in fragments on disk.
    samples: usize,
}

impl FragmentedMp4Writer {
    /// Creates `path` and writes its header (`ftyp`, `moov` with the codec's `sps`/`pps`).
    pub fn create(
        path: &Path,
        width: u32,
        height: u32,
        sps: &[u8],
        pps: &[u8],
    ) -> Result<Self, VideoError> {
        let fail = |e: std::io::Error| VideoError::output(path, format!("cannot write: {e}"));
        let mut file = BufWriter::new(File::create(path).map_err(fail)?);
        let header = [ftyp(), Track { width, height }.moov(&[], sps, pps, None)].concat();
        file.write_all(&header).map_err(fail)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            written: header.len() as u64,
            sequence: 0,
            decode_time: 0,
            pending: Vec::new(),
            pending_data: Vec::new(),
            random_access: Vec::new(),
            samples: 0,
        })
    }

    /// Appends one sample (AVCC) displayed for `duration_s` seconds; a keyframe first
    /// writes the fragment before it to the disk.
    pub fn write_sample(
        &mut self,
        avcc: &[u8],
        duration_s: f64,
        is_sync: bool,
    ) -> Result<(), VideoError> {
        if is_sync || self.pending_data.len() + avcc.len() > MAX_FRAGMENT_BYTES {
            self.write_fragment()?;
        }
        self.pending_data.extend_from_slice(avcc);
        self.pending
            .push(SampleEntry::new(avcc.len(), duration_s, is_sync));
        Ok(())
    }

    /// Writes the last fragment and the `mfra` index; returns the number of samples in the
    /// file.
    pub fn finish(mut self) -> Result<usize, VideoError> {
        self.write_fragment()?;
        let entries = std::mem::take(&mut self.random_access);
        let tfra = full_box(b"tfra", 1, 0, |b| {
            put32(b, 1); // track id
            put32(b, 0); // one-byte fragment, run and sample numbers
            put32(b, entries.len() as u32);
            for entry in &entries {
                b.extend_from_slice(&entry.decode_time.to_be_bytes());
                b.extend_from_slice(&entry.moof_offset.to_be_bytes());
                b.extend_from_slice(&[1, 1, 1]);
            }
        });
        // `mfro` closes the index with the size of the whole `mfra` (16 more bytes).
        let mfra_size = 8 + tfra.len() as u32 + 16;
        let mfro = full_box(b"mfro", 0, 0, |b| put32(b, mfra_size));
        let mfra = container(b"mfra", &[&tfra, &mfro]);
        self.write_through(&mfra)?;
        Ok(self.samples)
    }

    /// Writes the pending samples as one `moof` + `mdat` and makes them durable.
    fn write_fragment(&mut self) -> Result<(), VideoError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.sequence += 1;
        let moof = self.moof();
        if self.pending[0].is_sync {
            self.random_access.push(RandomAccess {
                decode_time: self.decode_time,
                moof_offset: self.written,
            });
        }
        let mdat_size = 8 + self.pending_data.len() as u32;
        let mut fragment = moof;
        put32(&mut fragment, mdat_size);
        fragment.extend_from_slice(b"mdat");
        fragment.extend_from_slice(&self.pending_data);
        self.write_through(&fragment)?;
        self.decode_time += self
            .pending
            .iter()
            .map(|s| u64::from(s.duration))
            .sum::<u64>();
        self.samples += self.pending.len();
        self.pending.clear();
        self.pending_data.clear();
        Ok(())
    }

    /// The movie fragment box of the pending samples, whose data follows it in an `mdat`.
    fn moof(&self) -> Vec<u8> {
        let mfhd = full_box(b"mfhd", 0, 0, |b| put32(b, self.sequence));
        // Base data offset: the start of this `moof` (default-base-is-moof).
        let tfhd = full_box(b"tfhd", 0, 0x02_0000, |b| put32(b, 1));
        let tfdt = full_box(b"tfdt", 1, 0, |b| {
            b.extend_from_slice(&self.decode_time.to_be_bytes())
        });
        let trun_len = 12 + 8 + 12 * self.pending.len();
        let moof_len = 8 + mfhd.len() + 8 + tfhd.len() + tfdt.len() + trun_len;
        // Data offset, sample duration, size and flags present.
        let trun = full_box(b"trun", 0, 0x0701, |b| {
            put32(b, self.pending.len() as u32);
            put32(b, (moof_len + 8) as u32); // the first sample, after the mdat header
            for s in &self.pending {
                put32(b, s.duration);
                put32(b, s.size);
                put32(b, if s.is_sync { SYNC_SAMPLE } else { OTHER_SAMPLE });
            }
        });
        let traf = container(b"traf", &[&tfhd, &tfdt, &trun]);
        let moof = container(b"moof", &[&mfhd, &traf]);
        debug_assert_eq!(moof.len(), moof_len);
        moof
    }

    /// Appends `bytes`, flushes and asks the system to put them on the disk.
    fn write_through(&mut self, bytes: &[u8]) -> Result<(), VideoError> {
        let file = &mut self.file;
        let written = file
            .write_all(bytes)
            .and_then(|()| file.flush())
            .and_then(|()| file.get_ref().sync_data());
        written.map_err(|e| VideoError::output(&self.path, format!("cannot write: {e}")))?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}
