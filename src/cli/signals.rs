//! Ctrl-C and SIGTERM for `process` and `live`: the first signal asks the run to stop (frames
//! in flight are finished and every output is finalised); the process then exits with the
//! conventional status, 130 for SIGINT and 143 for SIGTERM, so scripts can tell an
//! interrupted run from a complete one.
//!
//! A second signal within [`DOUBLE_PRESS`] is ignored (a double tap must not cut the
//! finalisation short and leave an unplayable video); a later one exits at once. If the run
//! has not stopped [`SHUTDOWN_DEADLINE`] after the first signal (a stage that no longer
//! returns), the process exits anyway rather than hang with a core busy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};

/// Further signals this soon after the first are taken as part of the same request.
pub const DOUBLE_PRESS: Duration = Duration::from_secs(2);
/// Longest wait for a stopping run before the process exits regardless.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// The signal that stopped the run, 0 while none came.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Starts listening for SIGINT and SIGTERM; returns one flag for each of `runs` runs, all of
/// which the first signal sets (each run may also set its own when it ends, without
/// stopping the others).
pub fn stop_on_signals(runs: usize) -> anyhow::Result<Vec<Arc<AtomicBool>>> {
    let stops: Vec<Arc<AtomicBool>> = (0..runs).map(|_| Arc::default()).collect();
    let flags = stops.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered here, before the run starts, so no signal falls in a gap.
    let (mut interrupt, mut terminate) = runtime.block_on(async {
        anyhow::Ok((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut first: Option<Instant> = None;
                loop {
                    let number = tokio::select! {
                        _ = interrupt.recv() => libc_signal::SIGINT,
                        _ = terminate.recv() => libc_signal::SIGTERM,
                    };
                    match first {
                        None => {
                            first = Some(Instant::now());
                            RECEIVED.store(number, Ordering::SeqCst);
                            for flag in &flags {
                                flag.store(true, Ordering::SeqCst);
                            }
                            eprintln!(
                                "\ninterrupted: finishing the frames in flight and finalising outputs"
                            );
                            std::thread::spawn(move || {
                                std::thread::sleep(SHUTDOWN_DEADLINE);
                                eprintln!(
                                    "error: the run did not stop within {} s of the signal; exiting",
                                    SHUTDOWN_DEADLINE.as_secs()
                                );
                                std::process::exit(128 + number);
                            });
                        }
                        Some(at) if at.elapsed() < DOUBLE_PRESS => {}
                        Some(_) => std::process::exit(128 + number),
                    }
                }
            })
        })?;
    Ok(stops)
}

/// The exit status for a run that ended: `128 + signal` when a signal stopped it.
pub fn exit_status() -> Option<u8> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        number => u8::try_from(128 + number).ok(),
    }
}

/// Signal numbers (the same on every Unix this builds for).
mod libc_signal {
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}
