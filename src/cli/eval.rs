//! `eval mot` and `eval speed`: tracking and speed accuracy against ground truth.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use streamtrack::config::Config;
use streamtrack::formats::mot;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// MOTChallenge metrics of result files against ground truth, per sequence and combined.
    Mot(EvalMotArgs),
    /// Speed error and coverage on a sequence with true speeds (det.txt, gt.txt,
    /// gt_speed.csv, seqinfo.ini, calibration.toml).
    Speed(EvalSpeedArgs),
}

#[derive(Args)]
pub struct EvalMotArgs {
    /// Folder holding one folder per sequence with gt.txt and seqinfo.ini.
    #[arg(long)]
    gt_root: PathBuf,
    /// Folder holding one SEQ.txt result file per sequence; with --track, results are
    /// computed from each sequence's det.txt and written here.
    #[arg(long)]
    res: PathBuf,
    /// Run the tracker on each sequence's det.txt first.
    #[arg(long)]
    track: bool,
    /// Sequence names.
    #[arg(required = true)]
    sequences: Vec<String>,
}

#[derive(Args)]
pub struct EvalSpeedArgs {
    /// Sequence folders; with several, the mean over them and the pooled figures follow.
    #[arg(required = true)]
    sequences: Vec<PathBuf>,
    /// Print JSON instead of a table: one object per sequence, and with several a last
    /// object holding the `mean` and `pooled` figures.
    #[arg(long)]
    json: bool,
    /// Process only every N-th frame (simulates frame skipping).
    #[arg(long, default_value_t = 1)]
    frame_step: u32,
}

pub fn eval_mot(args: EvalMotArgs, config: Config) -> anyhow::Result<()> {
    use streamtrack::eval::mot::{MotCounts, evaluate};
    if args.track {
        std::fs::create_dir_all(&args.res)
            .with_context(|| format!("{}: cannot create the folder", args.res.display()))?;
    }
    let mut combined: Option<MotCounts> = None;
    let mut summaries = Vec::new();
    report!(
        "{:<16} {:>7} {:>7} {:>7} {:>6} {:>7} {:>7}",
        "sequence",
        "HOTA",
        "MOTA",
        "IDF1",
        "IDSW",
        "FP",
        "FN"
    );
    for seq in &args.sequences {
        let dir = args.gt_root.join(seq);
        let info = mot::read_seqinfo(&dir.join("seqinfo.ini"))?;
        let res_path = args.res.join(format!("{seq}.txt"));
        if args.track {
            let dets = mot::read_rows(&dir.join("det.txt"))?;
            mot::write_results(
                &res_path,
                &streamtrack::track::track_mot_rows(&dets, &info, &config.tracker),
            )?;
        }
        let counts = evaluate(
            &mot::read_rows(&dir.join("gt.txt"))?,
            &mot::read_rows(&res_path)?,
            info.length,
        );
        print_mot_row(seq, &counts.summary());
        summaries.push(counts.summary());
        match combined.as_mut() {
            Some(c) => c.add(&counts),
            None => combined = Some(counts),
        }
    }
    if summaries.len() > 1 {
        print_mot_row(
            "MEAN",
            &streamtrack::eval::mot::MotSummary::mean(&summaries),
        );
    }
    if let Some(c) = combined {
        print_mot_row("COMBINED", &c.summary());
    }
    Ok(())
}

pub fn print_mot_row(name: &str, s: &streamtrack::eval::mot::MotSummary) {
    report!(
        "{:<16} {:>7.3} {:>7.3} {:>7.3} {:>6} {:>7} {:>7}",
        name,
        s.hota,
        s.mota,
        s.idf1,
        s.id_switches,
        s.false_positives,
        s.false_negatives
    );
}

pub fn eval_speed(args: EvalSpeedArgs, config: Config) -> anyhow::Result<()> {
    use streamtrack::eval::speed::{SpeedErrors, SpeedReport, compare_sequence};
    if args.frame_step == 0 {
        bail!("--frame-step must be at least 1");
    }
    let mut compared = Vec::new();
    for sequence in &args.sequences {
        let errors = compare_sequence(sequence, &config.tracker, &config.speed, args.frame_step)?;
        let report = errors.report();
        if args.json {
            report!("{}", serde_json::to_string(&report)?);
        } else {
            print_speed_row(&sequence.display().to_string(), &report);
        }
        compared.push(errors);
    }
    if compared.len() > 1 {
        let reports: Vec<SpeedReport> = compared.iter().map(SpeedErrors::report).collect();
        let (mean, pooled) = (
            SpeedReport::mean(&reports),
            SpeedErrors::pool(&compared).report(),
        );
        if args.json {
            let summary = serde_json::json!({ "mean": mean, "pooled": pooled });
            report!("{summary}");
        } else {
            print_speed_row(&format!("mean of {}", reports.len()), &mean);
            print_speed_row("pooled", &pooled);
        }
    }
    Ok(())
}

pub fn print_speed_row(name: &str, report: &streamtrack::eval::speed::SpeedReport) {
    report!(
        "{name}: MAE {:.3} km/h, median {:.3}, p95 {:.3}, coverage {:.1}% ({} tracks, {} samples)",
        report.mae_kmh,
        report.median_kmh,
        report.p95_kmh,
        100.0 * report.coverage,
        report.tracks,
        report.samples
    );
    let bands: Vec<String> = report
        .by_distance
        .iter()
        .map(|b| {
            let range = match b.to_m {
                Some(to) => format!("{}-{to} m", b.from_m),
                None => format!("{}+ m", b.from_m),
            };
            format!(
                "{range} MAE {:.3} (bias {:+.3}), coverage {:.1}% ({})",
                b.mae_kmh,
                b.bias_kmh,
                100.0 * b.coverage,
                b.samples
            )
        })
        .collect();
    if !bands.is_empty() {
        report!(
            "  by distance from the nearest ground seen: {}",
            bands.join("; ")
        );
    }
}
