//! Machine-readable results: JSON lines, CSV and MOTChallenge text, written as frames are
//! processed and flushed every frame, so a crash loses at most the frame in progress.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::events::Event;
use crate::formats::mot::MotRow;
use crate::geometry::BBox;
use crate::sinks::EventSinks;

/// One tracked object in one frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackRecord {
    pub id: u64,
    pub class: usize,
    pub name: String,
    /// `[x1, y1, x2, y2]` in pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub score: f32,
    /// Speed in the calibration's unit, once known.
    pub speed: Option<f64>,
}

impl TrackRecord {
    pub fn bbox(&self) -> BBox {
        BBox::new(self.bbox[0], self.bbox[1], self.bbox[2], self.bbox[3])
    }
}

/// Everything known about one processed frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameRecord {
    /// 0-based frame index in the source.
    pub frame: u64,
    /// Presentation time, seconds.
    pub time: f64,
    pub tracks: Vec<TrackRecord>,
    /// Written after later frames, with what they taught about this one: boxes of tracks
    /// that went unseen here and were found again (`[tracker] fill_gaps`), and speeds of
    /// tracks that had none here yet (`[speed] backfill`). Each track in it adds to, or
    /// replaces, that track's entry in the frame's first record. Serialised only
    /// when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

/// A failure writing results. The I/O error is part of the message, not a separate source,
/// so a report of the whole error chain says it once.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot write: {reason}", path.display())]
pub struct OutputError {
    pub path: PathBuf,
    pub reason: std::io::Error,
}

/// One result file. Lines collect in memory and go to the file a frame at a time; a write
/// that fails part-way (a full disk) is cut back to the last whole frame, so the file never
/// ends inside a line.
struct Output {
    path: PathBuf,
    file: File,
    pending: String,
    /// Bytes of whole frames in the file.
    committed: u64,
}

impl Output {
    fn create(path: &Path) -> Result<Self, OutputError> {
        let file = File::create(path).map_err(|reason| OutputError {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            pending: String::new(),
            committed: 0,
        })
    }

    fn line(&mut self, text: &str) {
        self.pending.push_str(text);
        self.pending.push('\n');
    }

    /// Writes the pending lines; on failure the file is cut back to its whole frames.
    fn flush(&mut self) -> Result<(), OutputError> {
        let written = self.file.write_all(self.pending.as_bytes());
        let bytes = self.pending.len() as u64;
        self.pending.clear();
        match written {
            Ok(()) => {
                self.committed += bytes;
                Ok(())
            }
            Err(reason) => {
                // Best effort: the write error is what the caller reports.
                let _ = self
                    .file
                    .set_len(self.committed)
                    .and_then(|()| self.file.seek(SeekFrom::Start(self.committed)));
                Err(OutputError {
                    path: self.path.clone(),
                    reason,
                })
            }
        }
    }
}

/// Receives every JSON line as it is written (e.g. the HTTP server's event stream).
pub type JsonTap = Box<dyn FnMut(&str) + Send>;

/// The result files a run writes.
#[derive(Default)]
pub struct ResultWriters {
    jsonl: Option<Output>,
    csv: Option<Output>,
    mot: Option<Output>,
    tap: Option<JsonTap>,
    event_sinks: Option<EventSinks>,
}

impl ResultWriters {
    /// Opens the requested files (CSV gets its header now).
    pub fn create(
        jsonl: Option<&Path>,
        csv: Option<&Path>,
        mot: Option<&Path>,
    ) -> Result<Self, OutputError> {
        let mut writers = Self {
            jsonl: jsonl.map(Output::create).transpose()?,
            csv: csv.map(Output::create).transpose()?,
            mot: mot.map(Output::create).transpose()?,
            tap: None,
            event_sinks: None,
        };
        if let Some(csv) = writers.csv.as_mut() {
            csv.line("frame,time,id,class,name,x1,y1,x2,y2,score,speed");
            csv.flush()?;
        }
        Ok(writers)
    }

    /// Also hands every JSON line (frame records and events) to `tap`.
    pub fn with_tap(mut self, tap: JsonTap) -> Self {
        self.tap = Some(tap);
        self
    }

    /// Also publishes every event to `sinks` (MQTT, webhooks).
    pub fn with_event_sinks(mut self, sinks: EventSinks) -> Self {
        self.event_sinks = Some(sinks);
        self
    }

    /// Writes JSON lines to the JSON-lines file and the tap, then flushes.
    fn json_lines(&mut self, lines: impl Iterator<Item = String>) -> Result<(), OutputError> {
        if self.jsonl.is_none() && self.tap.is_none() {
            return Ok(());
        }
        for line in lines {
            if let Some(out) = self.jsonl.as_mut() {
                out.line(&line);
            }
            if let Some(tap) = self.tap.as_mut() {
                tap(&line);
            }
        }
        match self.jsonl.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }

    /// Writes one frame and its events, then flushes.
    pub fn write_frame(
        &mut self,
        record: &FrameRecord,
        events: &[Event],
    ) -> Result<(), OutputError> {
        let frame_line = serde_json::to_string(record).expect("records serialise");
        let event_lines = events
            .iter()
            .map(|e| serde_json::to_string(e).expect("events serialise"));
        // Published first: a result file that cannot be written does not hold them back.
        if let Some(sinks) = self.event_sinks.as_mut() {
            sinks.publish(events);
        }
        self.json_lines(std::iter::once(frame_line).chain(event_lines))?;
        self.csv_rows(record)?;
        self.mot_rows(record)
    }

    /// Writes a late record that only adds speeds to tracks already written for its frame
    /// (`[speed] backfill`): to the JSON lines and the CSV, not to the MOT file, which has
    /// no speed and already holds those boxes.
    pub fn write_late_speeds(&mut self, record: &FrameRecord) -> Result<(), OutputError> {
        let line = serde_json::to_string(record).expect("records serialise");
        self.json_lines(std::iter::once(line))?;
        self.csv_rows(record)
    }

    fn csv_rows(&mut self, record: &FrameRecord) -> Result<(), OutputError> {
        let Some(out) = self.csv.as_mut() else {
            return Ok(());
        };
        for t in &record.tracks {
            out.line(&format!(
                "{},{:.4},{},{},{},{:.2},{:.2},{:.2},{:.2},{:.4},{}",
                record.frame,
                record.time,
                t.id,
                t.class,
                csv_field(&t.name),
                t.bbox[0],
                t.bbox[1],
                t.bbox[2],
                t.bbox[3],
                t.score,
                t.speed.map(|s| format!("{s:.2}")).unwrap_or_default()
            ));
        }
        out.flush()
    }

    fn mot_rows(&mut self, record: &FrameRecord) -> Result<(), OutputError> {
        let Some(out) = self.mot.as_mut() else {
            return Ok(());
        };
        for t in &record.tracks {
            let row = MotRow::result(record.frame as u32 + 1, t.id, t.bbox(), t.score);
            out.line(&crate::formats::mot::result_line(&row));
        }
        out.flush()
    }

    /// Writes events that are not tied to a frame (track summaries at the end).
    pub fn write_events(&mut self, events: &[Event]) -> Result<(), OutputError> {
        if let Some(sinks) = self.event_sinks.as_mut() {
            sinks.publish(events);
        }
        self.json_lines(
            events
                .iter()
                .map(|e| serde_json::to_string(e).expect("events serialise")),
        )
    }
}

/// Quotes a CSV field when needed.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_gets_the_frame() {
        let dir = std::env::temp_dir().join(format!("streamtrack-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (j, c, m) = (dir.join("a.jsonl"), dir.join("a.csv"), dir.join("a.txt"));
        let mut w = ResultWriters::create(Some(&j), Some(&c), Some(&m)).unwrap();
        let record = FrameRecord {
            frame: 4,
            time: 0.16,
            tracks: vec![TrackRecord {
                id: 7,
                class: 2,
                name: "car, red".into(),
                bbox: [10.0, 20.0, 50.0, 60.0],
                score: 0.9,
                speed: Some(42.5),
            }],
            late: false,
        };
        let limit = Event::SpeedLimit {
            frame: 4,
            time: 0.16,
            id: 7,
            speed: 42.5,
            limit: 40.0,
            unit: "km/h",
        };
        w.write_frame(&record, &[limit]).unwrap();
        let jsonl = std::fs::read_to_string(&j).unwrap();
        let lines: Vec<serde_json::Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["tracks"][0]["box"][2], 50.0);
        assert_eq!(lines[0]["tracks"][0]["speed"], 42.5);
        assert_eq!(lines[1]["event"], "speed_limit");
        let csv = std::fs::read_to_string(&c).unwrap();
        assert_eq!(
            csv.lines().nth(1).unwrap(),
            "4,0.1600,7,2,\"car, red\",10.00,20.00,50.00,60.00,0.9000,42.50"
        );
        assert_eq!(
            std::fs::read_to_string(&m).unwrap().trim(),
            "5,7,10.00,20.00,40.00,40.00,0.9000,-1,-1,-1"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
