//! Keeps a pass's spinners off the CPU the pass runs on while nothing else wants the CPUs.
//!
//! On the 2-CPU development VM the kernel at times leaves both workers of a pass on one CPU
//! while the other idles, and the pass then runs at one CPU's speed (yolo11n-320: passes of
//! 15-17 ms among passes of 9.5, in clusters of tens of frames, a fifth of all passes). A
//! spinner that finds itself on the pass's CPU therefore moves off it and stays off it until
//! the pass ends (`sched_setaffinity`; no system call while the two are apart). Where other
//! work is runnable, though, sharing one CPU is the scheduler's right answer: a spinner held
//! apart would wait behind the other work at every layer's join. So a pass holds its
//! spinners apart only when, as it starts, nothing but itself is runnable on the machine
//! (the running count of `/proc/loadavg`, a few microseconds to read).

/// Runnable tasks at a pass's start, the pass's own thread included, up to which the machine
/// counts as otherwise idle: the pass's thread and the thread that handed it the frame, which
/// is on its way to sleep.
const IDLE_RUNNABLE: u32 = 2;

/// Whether the spinners of a pass starting now should keep off its CPU.
pub(super) fn hold_apart() -> bool {
    runnable_tasks().is_some_and(|n| n <= IDLE_RUNNABLE)
}

/// Tasks runnable on the machine now (`None` where the system does not say).
fn runnable_tasks() -> Option<u32> {
    runnable_of_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// The runnable tasks `/proc/loadavg` gives: the first half of its fourth field,
/// `runnable/total`.
fn runnable_of_loadavg(text: &str) -> Option<u32> {
    let running = text.split_whitespace().nth(3)?.split('/').next()?;
    running.parse().ok()
}

/// The CPU the calling thread runs on (`None` where the system does not say).
pub(super) fn current_cpu() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sched_getcpu` takes no arguments and only reads the calling thread's CPU.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// A spinner's thread kept off one CPU of the set it may run on; its set is given back when
/// this drops. Makes no system call until the first [`KeptOff::keep_off`].
#[derive(Default)]
pub(super) struct KeptOff {
    /// The thread's own CPU set, read at the first move.
    #[cfg(target_os = "linux")]
    allowed: Option<libc::cpu_set_t>,
    excluded: Option<usize>,
}

impl KeptOff {
    /// Moves the calling thread off `cpu` (nothing where `cpu` is the one already excluded,
    /// or the only one allowed).
    pub(super) fn keep_off(&mut self, cpu: usize) {
        if self.excluded == Some(cpu) {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            if cpu >= libc::CPU_SETSIZE as usize {
                return;
            }
            let Some(mut narrowed) = self.allowed.or_else(own_cpu_set) else {
                return;
            };
            self.allowed = Some(narrowed);
            // SAFETY: `cpu` is below CPU_SETSIZE, checked above.
            unsafe { libc::CPU_CLR(cpu, &mut narrowed) };
            // SAFETY: reads the plain bit array.
            if unsafe { libc::CPU_COUNT(&narrowed) } == 0 {
                return;
            }
            set_own_cpu_set(&narrowed);
        }
        self.excluded = Some(cpu);
    }
}

impl Drop for KeptOff {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let (Some(allowed), Some(_)) = (&self.allowed, self.excluded) {
            set_own_cpu_set(allowed);
        }
    }
}

/// The calling thread's CPU set (`None` where it cannot be read).
#[cfg(target_os = "linux")]
fn own_cpu_set() -> Option<libc::cpu_set_t> {
    // SAFETY: `cpu_set_t` is a plain bit array; all zeroes is an empty set.
    let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread, and the size is that of `cpus`, which the call
    // fills.
    let read =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut cpus) };
    (read == 0).then_some(cpus)
}

/// Restricts the calling thread to `cpus`; a failure leaves its set as it was, which is only
/// slower.
#[cfg(target_os = "linux")]
fn set_own_cpu_set(cpus: &libc::cpu_set_t) {
    // SAFETY: pid 0 is the calling thread, and the size is that of `cpus`.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), cpus) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_runnable_count_of_loadavg() {
        assert_eq!(runnable_of_loadavg("0.52 0.58 0.59 3/467 12345\n"), Some(3));
        assert_eq!(runnable_of_loadavg("0.52 0.58 0.59"), None);
        assert_eq!(runnable_of_loadavg("0.52 0.58 0.59 x/467 1"), None);
        assert!(
            runnable_tasks().is_some_and(|n| n >= 1),
            "this test's thread runs"
        );
    }

    /// Kept off the CPU it runs on, the thread is on another one of its set as the call
    /// returns; dropping the hold gives it its whole set back.
    #[cfg(target_os = "linux")]
    #[test]
    fn moves_the_thread_off_a_cpu_and_gives_its_set_back() {
        let before = own_cpu_set().expect("the test thread's CPU set");
        // SAFETY: reads the plain bit array.
        if unsafe { libc::CPU_COUNT(&before) } < 2 {
            eprintln!("one CPU allowed: nothing to move to");
            return;
        }
        let cpu = current_cpu().expect("Linux says which CPU a thread is on");
        {
            let mut kept_off = KeptOff::default();
            kept_off.keep_off(cpu);
            assert_ne!(current_cpu(), Some(cpu));
            let during = own_cpu_set().expect("CPU set");
            // SAFETY: `cpu` came from the kernel, below CPU_SETSIZE.
            assert!(!unsafe { libc::CPU_ISSET(cpu, &during) });
        }
        let after = own_cpu_set().expect("CPU set");
        // SAFETY: compares two plain bit arrays.
        assert!(
            unsafe { libc::CPU_EQUAL(&before, &after) },
            "the thread's whole CPU set is back"
        );
    }
}
