//! `val`: a detector against a YOLO-format dataset.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use streamtrack::config::Config;
use streamtrack::setup;
use streamtrack::video::images;

use super::flags::ModelFlags;

#[derive(Args)]
pub struct ValArgs {
    /// Dataset folder with images/ and labels/ (YOLO txt: class cx cy w h, normalised).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    model: ModelFlags,
}

pub fn val(args: ValArgs, config: Config) -> anyhow::Result<()> {
    use streamtrack::eval::detection::{DetectionEval, Label};
    // Validation scores the whole precision-recall curve: keep low-confidence boxes.
    let mut model = args.model.into_spec(&config);
    model.conf = Some(model.conf.unwrap_or(0.001));
    let (mut detector, names) = setup::build_detector(&model, &config)?;
    let files = images::list_images(&args.data.join("images"))?;
    let mut eval = DetectionEval::new();
    for file in &files {
        let image = images::read_image(file)?;
        let (w, h) = (image.width() as f32, image.height() as f32);
        let stem = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let label_path = args.data.join("labels").join(format!("{stem}.txt"));
        let text = std::fs::read_to_string(&label_path).unwrap_or_default();
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
                .with_context(|| {
                    format!("{}:{}: not a YOLO label line", label_path.display(), n + 1)
                })?;
            if v.len() < 5 || v[0] < 0.0 || v[0] as usize >= names.len() {
                bail!(
                    "{}:{}: expected 'class cx cy w h' with a class below {}",
                    label_path.display(),
                    n + 1,
                    names.len()
                );
            }
            labels.push(Label {
                bbox: streamtrack::geometry::BBox::from_cxcywh(
                    v[1] * w,
                    v[2] * h,
                    v[3] * w,
                    v[4] * h,
                ),
                class_id: v[0] as usize,
            });
        }
        eval.add_image(&detector.detect(&image), &labels);
    }
    let m = eval.metrics();
    report!(
        "{} images: precision {:.3}, recall {:.3}, mAP50 {:.3}, mAP50-95 {:.3}",
        files.len(),
        m.precision,
        m.recall,
        m.map50,
        m.map50_95
    );
    Ok(())
}
