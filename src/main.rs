//! The `streamtrack` command line: logging set up, then the command run (see `cli`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::allocator::keep_freed_blocks();
    cli::runtime_dir::ensure();
    let cli = cli::Cli::parse();
    let level = if cli.quiet {
        "warn"
    } else {
        cli.log_level.as_str()
    };
    let filter = if level.contains(['=', ',']) {
        level.to_string()
    } else {
        format!("warn,streamtrack={level}")
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli::run(cli) {
        Ok(()) => cli::signals::exit_status().map_or(ExitCode::SUCCESS, ExitCode::from),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
