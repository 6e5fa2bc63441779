//! YOLO label files: one object per line, `class cx cy w h` normalised to the image size
//! (and, as `detect --labels` writes them, the confidence after them).

use std::path::{Path, PathBuf};

use crate::detect::Detection;
use crate::geometry::BBox;

/// A ground-truth object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Label {
    pub bbox: BBox,
    pub class_id: usize,
}

/// A label file that cannot be read, written or understood.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|n| format!(":{n}")).unwrap_or_default())]
pub struct LabelFileError {
    pub path: PathBuf,
    /// 1-based line, when the problem is on one.
    pub line: Option<usize>,
    pub message: String,
}

/// Parses the labels of an image of `width x height` pixels from `text` (the contents of
/// `path`), refusing classes at or above `classes`.
pub fn parse(
    text: &str,
    path: &Path,
    classes: usize,
    (width, height): (u32, u32),
) -> Result<Vec<Label>, LabelFileError> {
    let (w, h) = (width as f32, height as f32);
    let fail = |line: usize, message: String| LabelFileError {
        path: path.to_path_buf(),
        line: Some(line),
        message,
    };
    let mut labels = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Vec<f32> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| fail(n + 1, "not a YOLO label line".into()))?;
        if v.len() < 5 || !(v[0] >= 0.0 && (v[0] as usize) < classes) {
            return Err(fail(
                n + 1,
                format!("expected 'class cx cy w h' with a class below {classes}"),
            ));
        }
        labels.push(Label {
            bbox: BBox::from_cxcywh(v[1] * w, v[2] * h, v[3] * w, v[4] * h),
            class_id: v[0] as usize,
        });
    }
    Ok(labels)
}

/// Writes `detections` of an image of `width x height` pixels as a label file, each line
/// with its confidence last.
pub fn write(
    path: &Path,
    detections: &[Detection],
    (width, height): (u32, u32),
) -> Result<(), LabelFileError> {
    let (w, h) = (width as f32, height as f32);
    let lines: String = detections
        .iter()
        .map(|d| {
            let (cx, cy) = d.bbox.centre();
            format!(
                "{} {:.6} {:.6} {:.6} {:.6} {:.5}\n",
                d.class_id,
                cx / w,
                cy / h,
                d.bbox.width() / w,
                d.bbox.height() / h,
                d.score
            )
        })
        .collect();
    std::fs::write(path, lines).map_err(|e| LabelFileError {
        path: path.to_path_buf(),
        line: None,
        message: format!("cannot write: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `write` writes, `parse` reads back (to the precision written); bad lines are
    /// refused with the file and line named.
    #[test]
    fn written_labels_read_back_and_bad_lines_are_named() {
        let path =
            std::env::temp_dir().join(format!("streamtrack-labels-{}.txt", std::process::id()));
        let detection = Detection {
            bbox: BBox::new(64.0, 48.0, 192.0, 144.0),
            score: 0.5,
            class_id: 2,
        };
        write(&path, &[detection], (640, 480)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let labels = parse(&text, &path, 80, (640, 480)).unwrap();
        assert_eq!(labels.len(), 1);
        assert_eq!(labels[0].class_id, 2);
        let b = labels[0].bbox;
        for (got, want) in [(b.x1, 64.0), (b.y1, 48.0), (b.x2, 192.0), (b.y2, 144.0)] {
            assert!((got - want).abs() < 1e-3, "{b:?}");
        }
        let error = parse(
            "0 0.5 0.5 0.1 0.1\n\n80 0.5 0.5 0.1 0.1\n",
            &path,
            80,
            (640, 480),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.ends_with(":3: expected 'class cx cy w h' with a class below 80"),
            "{error}"
        );
        let error = parse("1 a b c d", &path, 80, (640, 480))
            .unwrap_err()
            .to_string();
        assert!(error.ends_with(":1: not a YOLO label line"), "{error}");
        std::fs::remove_file(path).unwrap();
    }
}
