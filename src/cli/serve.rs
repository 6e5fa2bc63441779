//! `serve`: the HTTP API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use streamtrack::config::Config;
use streamtrack::setup;

use super::flags::ModelFlags;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback only by default; use 0.0.0.0:PORT to expose it).
    #[arg(long, env = "STREAMTRACK_BIND", default_value = "127.0.0.1:8080")]
    bind: std::net::SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on every request (or set STREAMTRACK_TOKEN).
    #[arg(long, env = "STREAMTRACK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Jobs and file streams may only read files under this folder.
    #[arg(long, default_value = ".")]
    media_root: PathBuf,
    /// Jobs and recorded streams write their results into a folder per id here.
    #[arg(long, default_value = "streamtrack-results")]
    results_dir: PathBuf,
    /// Most live streams running at once; more are refused with 429.
    #[arg(long, default_value_t = streamtrack::server::DEFAULT_MAX_STREAMS)]
    max_streams: usize,
    /// Finished jobs kept in memory (listed, with their metrics); older ones are forgotten
    /// (their results stay on disk).
    #[arg(long, default_value_t = streamtrack::server::DEFAULT_KEEP_JOBS)]
    keep_jobs: usize,
    /// Jobs processed at once; more wait in the queue.
    #[arg(long, default_value_t = streamtrack::server::DEFAULT_MAX_JOBS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    max_jobs: usize,
    /// Close a connection after this many seconds without a byte either way.
    #[arg(long, default_value_t = streamtrack::server::DEFAULT_IDLE_TIMEOUT.as_secs_f64())]
    idle_timeout: f64,
    /// Start these streams with the server: a JSON array of `POST /v1/streams` bodies.
    #[arg(long, env = "STREAMTRACK_STREAMS")]
    streams: Option<PathBuf>,
    #[command(flatten)]
    model: ModelFlags,
}

pub fn serve(args: ServeArgs, config: Config) -> anyhow::Result<()> {
    // Fail now, not at the first request, if the model cannot be found.
    let model = args.model.into_spec(&config);
    setup::resolve_model_path(model.model.as_deref(), &config)?;
    streamtrack::server::serve(streamtrack::server::ServerConfig {
        bind: args.bind,
        token: args.token.filter(|t| !t.is_empty()),
        media_root: args.media_root,
        results_dir: args.results_dir,
        model,
        config,
        max_streams: args.max_streams,
        keep_jobs: args.keep_jobs,
        max_jobs: args.max_jobs,
        idle_timeout: Duration::try_from_secs_f64(args.idle_timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| {
                anyhow::anyhow!("--idle-timeout must be a positive number of seconds")
            })?,
        streams: args
            .streams
            .as_deref()
            .map(read_stream_list)
            .transpose()?
            .unwrap_or_default(),
    })
}

/// The streams of `serve --streams FILE`: a JSON array of stream requests.
pub fn read_stream_list(path: &Path) -> anyhow::Result<Vec<streamtrack::server::StreamRequest>> {
    /// Far above any real list; a larger file is not one.
    const MAX_BYTES: u64 = 1 << 20;
    use std::io::Read as _;
    // One bounded read: a byte past the limit is enough to refuse the file.
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_BYTES + 1).read_to_end(&mut text))
        .with_context(|| format!("{}: cannot read the stream list", path.display()))?;
    if text.len() as u64 > MAX_BYTES {
        bail!(
            "{}: too large for a stream list (at most {MAX_BYTES} bytes)",
            path.display()
        );
    }
    serde_json::from_slice(&text).with_context(|| {
        format!(
            "{}: not a JSON array of stream requests (each like a POST /v1/streams body)",
            path.display()
        )
    })
}
