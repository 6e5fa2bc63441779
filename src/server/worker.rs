//! The thread behind a job or a stream, and the flags that stop it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A worker thread that can be asked to stop and waited for.
#[derive(Default)]
pub struct Worker {
    /// The run's stop flag (the pipeline also sets it when the run ends).
    stop: Arc<AtomicBool>,
    /// Set when a client or the server's shutdown asked the worker to stop.
    requested: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    /// The flag to hand to the run.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Starts `work` on a thread called `name`.
    pub fn start(&self, name: &str, work: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                work();
                release_freed_memory();
            })?;
        *self.thread.lock().expect("worker lock") = Some(thread);
        Ok(())
    }

    /// Asks the run to stop, without waiting.
    pub fn request_stop(&self) {
        self.requested.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was asked for (rather than the run ending by itself).
    pub fn stop_requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// Asks the run to stop and waits until the thread has finished (outputs finalised).
    pub fn stop_and_wait(&self) {
        self.request_stop();
        let thread = self.thread.lock().expect("worker lock").take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Hands the memory a finished run freed back to the operating system. glibc keeps what is
/// freed in its per-thread arenas for reuse; a server that runs streams and jobs one after
/// another on new threads would otherwise keep the peak of every run it has had.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks and trims the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
