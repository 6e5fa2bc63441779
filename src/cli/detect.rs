//! `detect`: detections on images, folders or videos, as a summary, JSON and YOLO labels.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use streamtrack::annotate::{Annotation, Annotator};
use streamtrack::config::Config;
use streamtrack::detect::Detection;
use streamtrack::formats::{detection_json, yolo_labels};
use streamtrack::setup;
use streamtrack::video::{self, images};

use super::flags::ModelFlags;

#[derive(Args)]
pub struct DetectArgs {
    /// Images, folders of images, or videos.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Write detections here: one JSON object for a single image, JSON lines otherwise.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write YOLO-format label files (class cx cy w h, normalised) into this folder.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Write annotated images into this folder.
    #[arg(long)]
    save_dir: Option<PathBuf>,
    #[command(flatten)]
    model: ModelFlags,
}

pub fn detect(args: DetectArgs, config: Config) -> anyhow::Result<()> {
    let (mut detector, names) = setup::build_detector(&args.model.into_spec(&config), &config)?;
    let imgsz = detector
        .model
        .input_size()
        .0
        .max(detector.model.input_size().1);
    for dir in [&args.labels, &args.save_dir].into_iter().flatten() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    }
    let mut records = Vec::new();
    let mut annotator = Annotator::new();
    for input in &args.inputs {
        let files = if input.is_dir() {
            images::list_images(input)?
        } else {
            vec![input.clone()]
        };
        for file in files {
            let mut source = video::open_source(&file, video::DEFAULT_RAW_FPS)?;
            let is_video = !images::is_image_path(&file);
            while let Some(frame) = source.next_frame()? {
                let detections = detector.detect(&frame.image);
                let label = if is_video {
                    format!("{}#{}", file.display(), frame.index)
                } else {
                    file.display().to_string()
                };
                report!("{label}: {}", summary_line(&detections, &names));
                let stem = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                let stem = if is_video {
                    format!("{stem}_{:06}", frame.index)
                } else {
                    stem
                };
                if let Some(dir) = &args.labels {
                    yolo_labels::write(
                        &dir.join(format!("{stem}.txt")),
                        &detections,
                        frame.image.dimensions(),
                    )?;
                }
                if let Some(dir) = &args.save_dir {
                    let mut canvas = frame.image.clone();
                    let annotations: Vec<_> = detections
                        .iter()
                        .map(|d| Annotation::from_detection(d, &names[d.class_id]))
                        .collect();
                    annotator.draw(&mut canvas, &annotations);
                    let path = dir.join(format!("{stem}.jpg"));
                    canvas
                        .save(&path)
                        .with_context(|| format!("{}: cannot write", path.display()))?;
                }
                let name = if is_video {
                    label
                } else {
                    file.file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default()
                };
                records.push(detection_json::image_detections(
                    &name,
                    imgsz,
                    &detections,
                    &names,
                ));
            }
        }
    }
    if let Some(path) = &args.json {
        let text = if records.len() == 1 {
            serde_json::to_string_pretty(&records[0])?
        } else {
            records
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        std::fs::write(path, text + "\n")
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}

/// `2 persons, 1 bus`.
pub fn summary_line(detections: &[Detection], names: &[String]) -> String {
    if detections.is_empty() {
        return "no detections".into();
    }
    let mut counts: Vec<(usize, usize)> = Vec::new();
    for d in detections {
        match counts.iter_mut().find(|(c, _)| *c == d.class_id) {
            Some((_, n)) => *n += 1,
            None => counts.push((d.class_id, 1)),
        }
    }
    counts
        .iter()
        .map(|(c, n)| format!("{n} {}", names[*c]))
        .collect::<Vec<_>>()
        .join(", ")
}
