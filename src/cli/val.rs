//! `val`: a detector against a YOLO-format dataset.

use std::path::PathBuf;

use clap::Args;
use streamtrack::config::Config;
use streamtrack::eval::detection::{DetectionEval, SCORING_CONF};
use streamtrack::formats::yolo_labels;
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
    let mut model = args.model.into_spec(&config);
    model.conf = Some(model.conf.unwrap_or(SCORING_CONF));
    let (mut detector, names) = setup::build_detector(&model, &config)?;
    let files = images::list_images(&args.data.join("images"))?;
    let mut eval = DetectionEval::new();
    for file in &files {
        let image = images::read_image(file)?;
        let stem = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let label_path = args.data.join("labels").join(format!("{stem}.txt"));
        let text = std::fs::read_to_string(&label_path).unwrap_or_default();
        let labels = yolo_labels::parse(&text, &label_path, names.len(), image.dimensions())?;
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
