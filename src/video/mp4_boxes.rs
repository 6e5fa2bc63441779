//! Structural check of an MP4 file's box tree before the demuxer reads it.
//!
//! `re_mp4` walks container boxes with loops that only move forward when every child box is
//! at least as large as its header: a child whose size field is 0 (or 1..7) makes it seek
//! back to where it started and spin for ever (a 16-byte `moov` did that). This walk reads
//! only box headers, descends into the containers the demuxer parses, and refuses a box that
//! is smaller than its header, overruns its parent, or nests deeper than any real file, so
//! the demuxer only ever sees a tree in which each loop advances.
//!
//! The demuxer also builds one entry per sample from the counts in `stsz` (non-fragmented
//! files) and `trun` (fragments) before it looks at any sample data, so a 20-byte box could
//! ask for billions. Every sample takes at least one byte of the file, and a sample table
//! lists what it declares: counts beyond either are refused here.

use std::io::{Read, Seek, SeekFrom};

/// Deepest container nesting accepted (real files reach 8: `moov/trak/mdia/minf/stbl/stsd/
/// avc1/avcC`, plus `udta/meta/ilst/item/data`).
const MAX_DEPTH: usize = 16;

/// What is wrong with the box tree.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BoxTreeError {
    #[error("box '{name}' at byte {offset} declares {size} bytes, less than its own header")]
    TooSmall {
        name: String,
        offset: u64,
        size: u64,
    },
    #[error(
        "box '{name}' at byte {offset} ({size} bytes) runs past the end of its parent '{parent}'"
    )]
    Overrun {
        name: String,
        parent: String,
        offset: u64,
        size: u64,
    },
    #[error("box '{name}' at byte {offset} is nested deeper than {MAX_DEPTH} levels")]
    TooDeep { name: String, offset: u64 },
    #[error(
        "box '{name}' at byte {offset} declares {count} samples, more than the file or the box can hold"
    )]
    TooManySamples {
        name: String,
        offset: u64,
        count: u64,
    },
    #[error("the box tree cannot be read: {0}")]
    Io(String),
}

/// Checks the boxes of a file of `size` bytes and returns the length of its whole top-level
/// boxes: the file less a last box cut short by truncation (the samples of a cut `mdat` are
/// still read one by one from the file). A size-0 last box (one that extends to the end of
/// the file) ends the walk.
pub fn check_box_tree<R: Read + Seek>(reader: &mut R, size: u64) -> Result<u64, BoxTreeError> {
    let mut offset = 0;
    // Samples the file can still hold, one byte each at least.
    let mut samples_left = size;
    while size - offset >= 8 {
        let Some(header) = read_header(reader, offset, size)? else {
            break;
        };
        if header.size == 0 {
            return Ok(size);
        }
        check_size(&header, offset)?;
        let end = offset.saturating_add(header.size);
        if end > size {
            break;
        }
        let mut walk = Walk {
            reader: &mut *reader,
            samples_left: &mut samples_left,
            file_size: size,
        };
        walk.check_children(&header, offset, 1, None)?;
        offset = end;
    }
    Ok(offset)
}

/// A box header: type, whole size (header included) and header length.
struct Header {
    name: [u8; 4],
    size: u64,
    header_len: u64,
}

impl Header {
    fn name(&self) -> String {
        self.name.iter().map(|&b| b as char).collect()
    }
}

/// Reads the header at `offset`; `None` when fewer than its bytes remain before `end`.
fn read_header<R: Read + Seek>(
    reader: &mut R,
    offset: u64,
    end: u64,
) -> Result<Option<Header>, BoxTreeError> {
    let io = |e: std::io::Error| BoxTreeError::Io(e.to_string());
    reader.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut bytes = [0u8; 8];
    reader.read_exact(&mut bytes).map_err(io)?;
    let size32 = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let name = [bytes[4], bytes[5], bytes[6], bytes[7]];
    if size32 != 1 {
        return Ok(Some(Header {
            name,
            size: size32.into(),
            header_len: 8,
        }));
    }
    if end - offset < 16 {
        return Ok(None);
    }
    reader.read_exact(&mut bytes).map_err(io)?;
    Ok(Some(Header {
        name,
        size: u64::from_be_bytes(bytes),
        header_len: 16,
    }))
}

fn check_size(header: &Header, offset: u64) -> Result<(), BoxTreeError> {
    if header.size < header.header_len {
        return Err(BoxTreeError::TooSmall {
            name: header.name(),
            offset,
            size: header.size,
        });
    }
    Ok(())
}

/// Bytes of fields between a container's header and its first child; `None` for boxes the
/// demuxer reads as a leaf.
fn children_start(name: &[u8; 4], parent: Option<&[u8; 4]>) -> Option<u64> {
    match name {
        b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"dinf" | b"edts" | b"mvex" | b"moof"
        | b"traf" | b"udta" | b"ilst" => Some(0),
        // version + flags (QuickTime's `meta` without them is caught by its first child's
        // size check either way).
        b"meta" => Some(4),
        // version + flags + entry count.
        b"stsd" => Some(8),
        // Visual sample entries: 78 bytes of fields before `avcC` and friends.
        b"avc1" | b"avc3" | b"encv" | b"hvc1" | b"hev1" | b"vp08" | b"vp09" | b"av01" => Some(78),
        // Audio sample entry.
        b"mp4a" => Some(28),
        // iTunes metadata items hold `data` boxes.
        _ if parent == Some(b"ilst") => Some(0),
        _ => None,
    }
}

/// The recursive part of the walk and what it has counted.
struct Walk<'a, R> {
    reader: &'a mut R,
    samples_left: &'a mut u64,
    file_size: u64,
}

impl<R: Read + Seek> Walk<'_, R> {
    /// Checks the children of the container `header` at `offset` (inside `parent`),
    /// recursively.
    fn check_children(
        &mut self,
        header: &Header,
        offset: u64,
        depth: usize,
        parent: Option<&[u8; 4]>,
    ) -> Result<(), BoxTreeError> {
        let Some(fields) = children_start(&header.name, parent) else {
            return self.check_sample_count(header, offset);
        };
        if depth > MAX_DEPTH {
            return Err(BoxTreeError::TooDeep {
                name: header.name(),
                offset,
            });
        }
        let end = offset + header.size;
        let mut child = offset + header.header_len + fields;
        while child < end {
            let overrun = |size| BoxTreeError::Overrun {
                name: "?".into(),
                parent: header.name(),
                offset: child,
                size,
            };
            if end - child < 8 {
                return Err(overrun(end - child));
            }
            let Some(child_header) = read_header(self.reader, child, end)? else {
                return Err(overrun(end - child));
            };
            check_size(&child_header, child)?;
            if child_header.size > end - child {
                return Err(BoxTreeError::Overrun {
                    name: child_header.name(),
                    parent: header.name(),
                    offset: child,
                    size: child_header.size,
                });
            }
            self.check_children(&child_header, child, depth + 1, Some(&header.name))?;
            child += child_header.size;
        }
        Ok(())
    }

    /// For `stsz` and `trun`: the samples declared fit the box's table and the file.
    fn check_sample_count(&mut self, header: &Header, offset: u64) -> Result<(), BoxTreeError> {
        let payload = header.size - header.header_len;
        // (count, bytes each sample takes in the file, table bytes per sample, room left
        // for the table)
        let (count, sample_bytes, entry_bytes, room) = match &header.name {
            b"stsz" if payload >= 12 => {
                let [_, sample_size, count] = self.read_words::<3>(offset + header.header_len)?;
                let entry_bytes = if sample_size == 0 { 4 } else { 0 };
                (
                    count,
                    u64::from(sample_size.max(1)),
                    entry_bytes,
                    payload - 12,
                )
            }
            b"trun" if payload >= 8 => {
                let [version_flags, count] = self.read_words::<2>(offset + header.header_len)?;
                let flags = version_flags & 0x00FF_FFFF;
                // duration, size, flags, composition offset: 4 bytes each when present.
                let entry_bytes = 4 * u64::from((flags & 0xF00).count_ones());
                let optional = 4 * u64::from((flags & 0x5).count_ones());
                (count, 1, entry_bytes, payload.saturating_sub(8 + optional))
            }
            _ => return Ok(()),
        };
        let count = u64::from(count);
        let fits_table = count.saturating_mul(entry_bytes) <= room;
        let fits_file = count.saturating_mul(sample_bytes) <= self.file_size;
        if !fits_table || !fits_file || count > *self.samples_left {
            return Err(BoxTreeError::TooManySamples {
                name: header.name(),
                offset,
                count,
            });
        }
        *self.samples_left -= count;
        Ok(())
    }

    /// `N` big-endian 32-bit words at `at`.
    fn read_words<const N: usize>(&mut self, at: u64) -> Result<[u32; N], BoxTreeError> {
        let io = |e: std::io::Error| BoxTreeError::Io(e.to_string());
        self.reader.seek(SeekFrom::Start(at)).map_err(io)?;
        let mut words = [0u32; N];
        for word in &mut words {
            let mut bytes = [0u8; 4];
            self.reader.read_exact(&mut bytes).map_err(io)?;
            *word = u32::from_be_bytes(bytes);
        }
        Ok(words)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn check(bytes: &[u8]) -> Result<u64, BoxTreeError> {
        check_box_tree(&mut Cursor::new(bytes), bytes.len() as u64)
    }

    fn boxed(name: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(name);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn zero_sized_child_is_refused() {
        // The 16-byte file that made the demuxer spin: `moov` holding a size-0 box.
        let err = check(b"\0\0\0\x10moov\0\0\0\0\0\0\0\0").unwrap_err();
        assert!(
            matches!(err, BoxTreeError::TooSmall { offset: 8, .. }),
            "{err}"
        );
    }

    #[test]
    fn overrunning_and_dangling_children_are_refused() {
        let mut inner = boxed(b"mvhd", &[0; 8]);
        inner[3] = 40; // declares more than `moov` holds
        let err = check(&boxed(b"moov", &inner)).unwrap_err();
        assert!(matches!(err, BoxTreeError::Overrun { .. }), "{err}");
        let mut tail = boxed(b"mvhd", &[0; 8]);
        tail.extend_from_slice(&[0; 4]); // 4 bytes: not even a header
        assert!(check(&boxed(b"moov", &tail)).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut tree = boxed(b"free", &[]);
        for _ in 0..MAX_DEPTH + 1 {
            tree = boxed(b"moov", &tree);
        }
        assert!(matches!(check(&tree), Err(BoxTreeError::TooDeep { .. })));
    }

    #[test]
    fn sample_counts_beyond_the_file_or_the_table_are_refused() {
        let trun = |flags: u32, count: u32, table: usize| {
            let mut body = flags.to_be_bytes().to_vec();
            body.extend_from_slice(&count.to_be_bytes());
            body.extend(std::iter::repeat_n(0u8, table));
            boxed(b"moof", &boxed(b"traf", &boxed(b"trun", &body)))
        };
        // A 16-byte `trun` of default-sized samples asking for 4 billion of them.
        let err = check(&trun(0, u32::MAX, 0)).unwrap_err();
        assert!(
            matches!(
                err,
                BoxTreeError::TooManySamples {
                    count: 0xFFFF_FFFF,
                    ..
                }
            ),
            "{err}"
        );
        // Sizes for 3 samples (flag 0x200) where 4 are declared; then exactly 4.
        assert!(check(&trun(0x200, 4, 12)).is_err());
        assert!(check(&trun(0x200, 4, 16)).is_ok());
        // `stsz` with one size for all: the samples must fit in the file.
        let stsz = |size: u32, count: u32| {
            let mut body = vec![0; 4];
            body.extend_from_slice(&size.to_be_bytes());
            body.extend_from_slice(&count.to_be_bytes());
            boxed(
                b"moov",
                &boxed(
                    b"trak",
                    &boxed(
                        b"mdia",
                        &boxed(b"minf", &boxed(b"stbl", &boxed(b"stsz", &body))),
                    ),
                ),
            )
        };
        assert!(check(&stsz(1000, 1_000_000)).is_err());
        assert!(check(&stsz(1, 20)).is_ok());
    }

    #[test]
    fn well_formed_and_truncated_files_pass() {
        let file = [
            boxed(b"ftyp", b"isom\0\0\0\0"),
            boxed(b"moov", &boxed(b"trak", &boxed(b"tkhd", &[0; 20]))),
            boxed(b"mdat", &[1; 100]),
        ]
        .concat();
        let whole = file.len() as u64;
        assert_eq!(check(&file), Ok(whole));
        // Cut inside `mdat`: the boxes before it. Cut inside `moov`: only `ftyp`.
        assert_eq!(check(&file[..file.len() - 30]), Ok(whole - 108));
        assert_eq!(check(&file[..30]), Ok(16));
        // A size-0 last box extends to the end of the file.
        let mut open_ended = file.clone();
        open_ended.extend_from_slice(b"\0\0\0\0mdat");
        assert_eq!(check(&open_ended), Ok(whole + 8));
    }
}
