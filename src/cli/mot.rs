//! `track`: MOTChallenge detections in, MOTChallenge tracks out.

use std::path::PathBuf;

use clap::Args;
use streamtrack::config::Config;
use streamtrack::formats::mot;

#[derive(Args)]
pub struct TrackArgs {
    /// Detections in MOTChallenge format (frame,-1,left,top,width,height,score[,class]).
    #[arg(long)]
    det: PathBuf,
    /// The sequence's seqinfo.ini (frame rate and length).
    #[arg(long)]
    seqinfo: PathBuf,
    /// Output tracks in MOTChallenge format.
    #[arg(long, short)]
    output: PathBuf,
}

pub fn track(args: TrackArgs, config: Config) -> anyhow::Result<()> {
    let info = mot::read_seqinfo(&args.seqinfo)?;
    let detections = mot::read_rows(&args.det)?;
    let results = streamtrack::track::track_mot_rows(&detections, &info, &config.tracker);
    mot::write_results(&args.output, &results)?;
    let ids: std::collections::HashSet<i64> = results.iter().map(|r| r.id).collect();
    report!(
        "{} frames, {} tracks, {} boxes -> {}",
        info.length,
        ids.len(),
        results.len(),
        args.output.display()
    );
    Ok(())
}
