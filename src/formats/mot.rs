//! MOTChallenge text files: detection, ground-truth and result rows, and `seqinfo.ini`.
//!
//! Rows are `frame, id, left, top, width, height, conf, class, visibility, ...` with 1-based
//! frames. Every parse error names the file and the line.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::geometry::BBox;

/// One row of a MOT file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotRow {
    pub frame: u32,
    /// Object id (`-1` in detection files).
    pub id: i64,
    pub bbox: BBox,
    /// Detection score, or the "consider" flag (0/1) in ground truth.
    pub conf: f32,
    /// Class column when present.
    pub class: Option<i32>,
    pub visibility: Option<f32>,
}

impl MotRow {
    /// A tracker's result row: track `id`'s box in `frame` (1-based) with its score, no
    /// class or visibility.
    pub fn result(frame: u32, id: u64, bbox: BBox, score: f32) -> MotRow {
        MotRow {
            frame,
            id: id as i64,
            bbox,
            conf: score,
            class: None,
            visibility: None,
        }
    }

    /// The row as a detection: its box, its score, and its class (0 when absent).
    pub fn detection(&self) -> crate::detect::Detection {
        crate::detect::Detection {
            bbox: self.bbox,
            score: self.conf,
            class_id: self.class.map_or(0, |c| c.max(0) as usize),
        }
    }
}

/// Sequence metadata from `seqinfo.ini`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqInfo {
    pub name: String,
    pub frame_rate: f64,
    pub length: u32,
    pub width: u32,
    pub height: u32,
}

/// A malformed MOT or seqinfo file.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct MotFileError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// Highest frame number (and `seqLength`) accepted: 9 hours at 30 fps. Frames are grouped
/// into one list per frame number, so a stray huge number would otherwise allocate for
/// every frame up to it.
pub const MAX_FRAME: u32 = 1_000_000;

fn error(path: &Path, line: Option<usize>, message: impl Into<String>) -> MotFileError {
    MotFileError {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// Reads every row of a MOT file (detections, ground truth or results).
pub fn read_rows(path: &Path) -> Result<Vec<MotRow>, MotFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(path, None, format!("cannot read: {e}")))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        rows.push(parse_row(line).map_err(|m| error(path, Some(n + 1), m))?);
    }
    Ok(rows)
}

fn parse_row(line: &str) -> Result<MotRow, String> {
    let fields: Vec<&str> = line
        .split([',', ' ', '\t'])
        .filter(|f| !f.is_empty())
        .collect();
    if fields.len() < 6 {
        return Err(format!(
            "expected at least 6 comma-separated values, found {}",
            fields.len()
        ));
    }
    let number = |i: usize| -> Result<f64, String> {
        let v: f64 = fields[i]
            .trim()
            .parse()
            .map_err(|_| format!("column {} is not a number: '{}'", i + 1, fields[i]))?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("column {} is not finite: '{}'", i + 1, fields[i]))
        }
    };
    let frame = number(0)?;
    if frame < 1.0 || frame.fract() != 0.0 {
        return Err(format!("frame '{}' is not a positive integer", fields[0]));
    }
    if frame > f64::from(MAX_FRAME) {
        return Err(format!(
            "frame {frame} is beyond the longest sequence accepted ({MAX_FRAME} frames)"
        ));
    }
    let (w, h) = (number(4)?, number(5)?);
    if w < 0.0 || h < 0.0 {
        return Err(format!("negative box size {w} x {h}"));
    }
    let optional = |i: usize| -> Result<Option<f64>, String> {
        if i < fields.len() {
            number(i).map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(MotRow {
        frame: frame as u32,
        id: number(1)? as i64,
        bbox: BBox::from_ltwh(number(2)? as f32, number(3)? as f32, w as f32, h as f32),
        conf: optional(6)?.unwrap_or(1.0) as f32,
        // MOT15 files keep world coordinates in this column: only integers are classes.
        class: optional(7)?.filter(|c| c.fract() == 0.0).map(|c| c as i32),
        visibility: optional(8)?.map(|v| v as f32),
    })
}

/// Reads `seqinfo.ini`.
pub fn read_seqinfo(path: &Path) -> Result<SeqInfo, MotFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(path, None, format!("cannot read: {e}")))?;
    let get = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim().to_string())
    };
    let number = |key: &str| -> Result<f64, MotFileError> {
        get(key)
            .ok_or_else(|| error(path, None, format!("missing '{key}'")))?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| error(path, None, format!("'{key}' is not a positive number")))
    };
    let length = number("seqLength")?;
    if length > f64::from(MAX_FRAME) {
        return Err(error(
            path,
            None,
            format!(
                "seqLength {length} is beyond the longest sequence accepted ({MAX_FRAME} frames)"
            ),
        ));
    }
    Ok(SeqInfo {
        name: get("name").unwrap_or_default(),
        frame_rate: number("frameRate")?,
        length: length as u32,
        width: number("imWidth")? as u32,
        height: number("imHeight")? as u32,
    })
}

/// Groups rows by frame, for frames `1..=length` or up to the last row's frame if that is
/// later. The rows of each frame keep their order.
pub fn by_frame(rows: &[MotRow], length: u32) -> Frames {
    let mut sorted = rows.to_vec();
    sorted.sort_by_key(|r| r.frame);
    let last = sorted.last().map_or(0, |r| r.frame);
    Frames {
        rows: sorted,
        length: length.max(last),
    }
}

/// Rows grouped by frame, every frame from 1 to [`Frames::len`] (frames without rows
/// included), held in memory proportional to the rows, not to the frame numbers (which a
/// file may set as high as [`MAX_FRAME`]).
#[derive(Debug, Clone)]
pub struct Frames {
    /// Sorted by frame.
    rows: Vec<MotRow>,
    length: u32,
}

impl Frames {
    /// Frames in the sequence.
    pub fn len(&self) -> usize {
        self.length as usize
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Each frame's rows, from frame 1.
    pub fn iter(&self) -> FrameRows<'_> {
        FrameRows {
            rest: &self.rows,
            next: 1,
            last: self.length,
        }
    }
}

impl<'a> IntoIterator for &'a Frames {
    type Item = &'a [MotRow];
    type IntoIter = FrameRows<'a>;

    fn into_iter(self) -> FrameRows<'a> {
        self.iter()
    }
}

/// The iterator of [`Frames::iter`].
pub struct FrameRows<'a> {
    rest: &'a [MotRow],
    next: u32,
    last: u32,
}

impl<'a> Iterator for FrameRows<'a> {
    type Item = &'a [MotRow];

    fn next(&mut self) -> Option<&'a [MotRow]> {
        if self.next > self.last {
            return None;
        }
        let count = self
            .rest
            .iter()
            .take_while(|r| r.frame <= self.next)
            .count();
        let (rows, rest) = self.rest.split_at(count);
        self.rest = rest;
        self.next += 1;
        Some(rows)
    }
}

/// Writes result rows `frame,id,left,top,width,height,conf,-1,-1,-1`.
pub fn write_results(path: &Path, rows: &[MotRow]) -> Result<(), MotFileError> {
    let fail = |e: std::io::Error| error(path, None, format!("cannot write: {e}"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(fail)?);
    for r in rows {
        writeln!(out, "{}", result_line(r)).map_err(fail)?;
    }
    out.flush().map_err(fail)
}

/// One result row in MOTChallenge format.
pub fn result_line(r: &MotRow) -> String {
    format!(
        "{},{},{:.2},{:.2},{:.2},{:.2},{:.4},-1,-1,-1",
        r.frame,
        r.id,
        r.bbox.x1,
        r.bbox.y1,
        r.bbox.width(),
        r.bbox.height(),
        r.conf
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_with_optional_columns() {
        let r = parse_row("3,-1,10.5,20,30,40,0.9").unwrap();
        assert_eq!((r.frame, r.id, r.conf, r.class), (3, -1, 0.9, None));
        assert_eq!(r.bbox, BBox::new(10.5, 20.0, 40.5, 60.0));
        let g = parse_row("1,7,1,2,3,4,1,2,0.5").unwrap();
        assert_eq!((g.class, g.visibility), (Some(2), Some(0.5)));
    }

    #[test]
    fn frames_hold_gaps_and_far_frames_without_a_slot_each() {
        let rows: Vec<MotRow> = ["4,1,0,0,1,1,1", "2,1,0,0,1,1,1", "4,2,0,0,1,1,1"]
            .iter()
            .map(|line| parse_row(line).unwrap())
            .collect();
        let frames = by_frame(&rows, 5);
        let ids: Vec<Vec<i64>> = frames
            .iter()
            .map(|rows| rows.iter().map(|r| r.id).collect())
            .collect();
        assert_eq!(ids, [vec![], vec![1], vec![], vec![1, 2], vec![]]);
        // A row far beyond the declared length extends the sequence; memory stays with the
        // rows (the iterator makes each frame's slice as it goes).
        let far = [parse_row(&format!("{MAX_FRAME},1,0,0,1,1,1")).unwrap()];
        let frames = by_frame(&far, 1);
        assert_eq!(frames.len(), MAX_FRAME as usize);
        assert_eq!(frames.iter().filter(|rows| !rows.is_empty()).count(), 1);
        assert_eq!(frames.iter().last().unwrap().len(), 1);
    }

    #[test]
    fn malformed_rows_name_the_problem() {
        assert!(parse_row("1,2,3").unwrap_err().contains("at least 6"));
        assert!(
            parse_row("1,-1,0,0,-5,10,0.9")
                .unwrap_err()
                .contains("negative")
        );
        assert!(
            parse_row("1,-1,0,0,5,10,nan")
                .unwrap_err()
                .contains("not finite")
        );
        assert!(parse_row("0,-1,0,0,5,10,1").unwrap_err().contains("frame"));
        // A frame number that would make the per-frame grouping allocate 48 GB.
        assert!(
            parse_row("2000000000,-1,0,0,5,10,1")
                .unwrap_err()
                .contains("longest sequence")
        );
        assert!(
            parse_row("x,-1,0,0,5,10,1")
                .unwrap_err()
                .contains("column 1")
        );
    }

    #[test]
    fn file_errors_carry_path_and_line() {
        let dir = std::env::temp_dir().join(format!("streamtrack-mot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("det.txt");
        std::fs::write(&path, "1,-1,0,0,5,5,0.9\n2,-1,0,0,5,5,oops\n").unwrap();
        let err = read_rows(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("det.txt:2: column 7 is not a number: 'oops'"),
            "{err}"
        );
        let ini = dir.join("seqinfo.ini");
        std::fs::write(&ini, "[Sequence]\nname=x\nframeRate=30\n").unwrap();
        assert!(
            read_seqinfo(&ini)
                .unwrap_err()
                .to_string()
                .contains("missing 'seqLength'")
        );
        std::fs::write(
            &ini,
            "[Sequence]\nframeRate=30\nseqLength=2000000000\nimWidth=640\nimHeight=480\n",
        )
        .unwrap();
        let err = read_seqinfo(&ini).unwrap_err().to_string();
        assert!(err.contains("seqLength 2000000000 is beyond"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
