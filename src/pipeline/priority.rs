//! The capture and encode threads run at a lower scheduling priority than the network.
//!
//! On a machine whose cores the network's thread pool already fills, the kernel otherwise
//! gives decoding and encoding equal turns with the pool's workers. A worker preempted in the
//! middle of a layer holds up the whole layer at its next join, so every frame paid for the
//! decode and encode time twice. At a lower priority they run mostly while the pool waits
//! (`process traffic-640x360.mp4` with yolov8n-640 INT8 on two cores: 52.7 / 55.8 FPS with
//! equal priority, 65.8 at nice 5). They still get a fair share when the machine is busy: a
//! live camera's decoding needs a few percent of a core.

/// How much lower: nice 5, about a third of a default thread's share where both compete.
const NICENESS: i32 = 5;

/// Lowers the calling thread's scheduling priority (Linux; elsewhere nothing changes).
pub fn below_the_network() {
    #[cfg(target_os = "linux")]
    // SAFETY: `setpriority` on the calling thread's own id changes only its niceness; a
    // failure (for example a sandbox forbidding it) leaves the priority as it was.
    unsafe {
        let thread = libc::gettid() as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, thread, NICENESS) != 0 {
            tracing::debug!("could not lower the thread's priority");
        }
    }
}
