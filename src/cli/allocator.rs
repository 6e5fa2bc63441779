//! The C allocator's settings for a process that runs a network per frame.
//!
//! Every layer of a forward pass allocates its output (megabytes at 640x640) and frees its
//! input. glibc serves allocations above its mmap threshold (128 KiB, raised only up to the
//! largest block freed so far) with fresh `mmap`s and returns the top of its heap to the
//! system past its trim threshold, so each frame faulted in tens of megabytes of zeroed
//! pages again: page faults took about a third of the INT8 network's time (`bench` on
//! yolov8n-640, traffic video: 30 ms per frame with glibc's defaults, 21 ms with these
//! settings; f32 32 -> 30 ms). Keeping freed blocks in the heap up to the limits below
//! costs at most what one frame's activations take (peak memory 100 -> 123 MiB for INT8).
//!
//! All threads share one arena. glibc otherwise gives each thread that allocates while
//! another holds the lock an arena of its own (up to eight per core), and each arena keeps
//! its own freed blocks: the pool's workers, the decoder, the encoder and every stream's
//! thread each held back a frame's worth of activations.

/// Blocks up to this size come from the heap, where freed ones are reused.
const MMAP_THRESHOLD: i32 = 64 << 20;

/// Free memory at the top of the heap kept for reuse instead of returned to the system.
const TRIM_THRESHOLD: i32 = 128 << 20;

/// One arena for the whole process.
const ARENAS: i32 = 1;

/// Applies the settings (glibc only; other C libraries keep their own).
pub fn keep_freed_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes the allocator's tuning parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}
