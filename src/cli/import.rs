//! `import`: an ONNX export as a Burn record and model card.

use std::path::PathBuf;

use clap::Args;
use streamtrack::model::{ComputeDevice, YoloModel};

#[derive(Args)]
pub struct ImportArgs {
    /// The ONNX export to convert.
    model: PathBuf,
    /// Output record (.bpk); the model card is written beside it as .json.
    #[arg(long, short)]
    output: PathBuf,
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let model = YoloModel::load(&args.model, ComputeDevice::cpu())?;
    model.save(&args.output)?;
    let card = &model.card;
    report!(
        "{} {}{}: {} classes, input {}x{} -> {} (+ {})",
        args.model.display(),
        card.architecture.family,
        card.architecture
            .scale
            .map(|s| format!(" scale {s}"))
            .unwrap_or_default(),
        card.metadata.names.len(),
        card.metadata.imgsz[1],
        card.metadata.imgsz[0],
        args.output.display(),
        args.output.with_extension("json").display()
    );
    Ok(())
}
