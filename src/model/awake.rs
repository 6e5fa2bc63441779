//! Keeps rayon's other workers awake for the length of a CPU forward pass.
//!
//! A forward pass is about 90 parallel loops one after another, most of them 50-500 µs. An
//! idle rayon worker yields about 32 times and then sleeps on a futex, so between two layers
//! the other worker often falls asleep and the next layer waits for it to be woken (`perf
//! stat`: about 50 context switches per YOLO11n pass at 320). ONNX Runtime's pool spins
//! instead. Here the pass spawns one *spinner* job per other worker: it runs whatever rayon
//! work there is (`rayon::yield_now`) and otherwise yields the core to the OS scheduler,
//! until the pass ends. Spinners are re-spawned as each layer starts if one has ended. While
//! nothing else wants the CPUs, a spinner found on the pass's own CPU moves off it
//! ([`placement`]).
//!
//! Three rules keep this free of deadlocks:
//! - A spinner that lands on the pass's own thread (rayon pops its local jobs while that
//!   thread waits at a join) returns at once, since the pass could not go on under it.
//! - So does one that lands on a thread running a part of the pass that outlives a layer
//!   (the detection head's level spawned while later layers run, see [`PassPart`]): a
//!   spinner spawned after that part could otherwise be stolen by the part's thread while it
//!   waits at a join inside the part, and it would spin above the part until the pass ends.
//! - Only one pass at a time spins. Two spinning passes could each park a spinner above a
//!   frame of the other pass, and each would wait for the other to end.

mod placement;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The pass whose workers are kept awake, shared with its spinners.
struct SpinningPass {
    /// Rayon's index of the thread running the pass.
    owner: usize,
    done: AtomicBool,
    /// Spinners spawned that have not ended yet.
    spinners: AtomicUsize,
    /// Whether the spinners keep off the CPU the pass runs on ([`placement`]).
    apart: bool,
    /// The CPU the pass ran on as its latest layer started (`usize::MAX`: unknown).
    owner_cpu: AtomicUsize,
}

impl SpinningPass {
    /// Notes the CPU the pass's thread is on, for spinners held apart from it.
    fn publish_owner_cpu(&self) {
        if self.apart {
            let cpu = placement::current_cpu().unwrap_or(usize::MAX);
            self.owner_cpu.store(cpu, Ordering::Relaxed);
        }
    }
}

/// Whether some pass is spinning now.
static ANY_PASS_SPINNING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The spinning pass this thread runs, if any.
    static CURRENT: RefCell<Option<Arc<SpinningPass>>> = const { RefCell::new(None) };
    /// The spinning pass a part of which this thread is running, if any.
    static RUNNING_PART_OF: RefCell<Option<Arc<SpinningPass>>> = const { RefCell::new(None) };
}

/// Work of the current forward pass that may run on another thread while the pass goes on
/// through later layers (a rayon scope's task, not a parallel loop within one layer). Made on
/// the pass's thread; [`PassPart::run`] runs the work wherever it lands.
pub(crate) struct PassPart(Option<Arc<SpinningPass>>);

impl PassPart {
    /// A part of the pass this thread runs (none outside a spinning pass).
    pub(crate) fn of_current_pass() -> Self {
        Self(CURRENT.with(|current| current.borrow().clone()))
    }

    /// Runs `f`, the part's work; spinners of the pass that land on this thread meanwhile
    /// return at once.
    pub(crate) fn run<T>(self, f: impl FnOnce() -> T) -> T {
        /// Puts back what the thread ran before, however `f` returns.
        struct Restore(Option<Arc<SpinningPass>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                RUNNING_PART_OF.with(|part| *part.borrow_mut() = self.0.take());
            }
        }
        let _restore = Restore(RUNNING_PART_OF.with(|part| part.replace(self.0)));
        f()
    }
}

/// Runs `f`, a forward pass on a worker of rayon's pool, with the pool's other workers kept
/// awake until it returns. Runs `f` plainly off the pool, on a pool of one thread, or while
/// another pass spins.
pub(crate) fn with_workers_awake<T>(f: impl FnOnce() -> T) -> T {
    let Some(owner) = rayon::current_thread_index() else {
        return f();
    };
    let claimed = || {
        ANY_PASS_SPINNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    };
    if rayon::current_num_threads() < 2 || !claimed() {
        return f();
    }
    let pass = Arc::new(SpinningPass {
        owner,
        done: AtomicBool::new(false),
        spinners: AtomicUsize::new(0),
        apart: placement::hold_apart(),
        owner_cpu: AtomicUsize::new(usize::MAX),
    });
    /// Ends the pass's spinning however `f` returns, unwinding included.
    struct EndSpinning(Arc<SpinningPass>);
    impl Drop for EndSpinning {
        fn drop(&mut self) {
            CURRENT.with(|current| current.borrow_mut().take());
            self.0.done.store(true, Ordering::Release);
            ANY_PASS_SPINNING.store(false, Ordering::Release);
        }
    }
    let _end = EndSpinning(pass.clone());
    CURRENT.with(|current| *current.borrow_mut() = Some(pass));
    keep_awake();
    f()
}

/// Spawns spinners for the current pass until each other worker has one; nothing outside a
/// spinning pass. Called as each layer starts.
pub(crate) fn keep_awake() {
    CURRENT.with(|current| {
        let current = current.borrow();
        let Some(pass) = current.as_ref() else {
            return;
        };
        pass.publish_owner_cpu();
        let wanted = rayon::current_num_threads() - 1;
        while pass
            .spinners
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < wanted).then_some(n + 1)
            })
            .is_ok()
        {
            let pass = pass.clone();
            rayon::spawn(move || spin(&pass));
        }
    });
}

/// A spinner's body: runs rayon's pending work until the pass is done.
fn spin(pass: &SpinningPass) {
    let under_a_part = RUNNING_PART_OF.with(|part| {
        part.borrow()
            .as_ref()
            .is_some_and(|running| std::ptr::eq(Arc::as_ptr(running), pass))
    });
    if rayon::current_thread_index() != Some(pass.owner) && !under_a_part {
        let mut kept_off = placement::KeptOff::default();
        while !pass.done.load(Ordering::Acquire) {
            if pass.apart {
                let owner_cpu = pass.owner_cpu.load(Ordering::Relaxed);
                if placement::current_cpu() == Some(owner_cpu) {
                    kept_off.keep_off(owner_cpu);
                }
            }
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                std::thread::yield_now();
            }
        }
    }
    pass.spinners.fetch_sub(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// The work of item `i` of layer `layer` of pass `pass`: enough to be worth a thread.
    fn item(pass: u64, layer: u64, i: u64) -> u64 {
        (0..200).fold(i ^ layer ^ pass, |a, b| a ^ (b * 7))
    }

    /// Pass `pass`'s result over `layers` layers of 64 items, computed on this thread.
    fn one_after_another(pass: u64, layers: u64) -> u64 {
        (0..layers)
            .map(|l| (0..64).map(|i| item(pass, l, i)).sum::<u64>())
            .sum()
    }

    /// Pass `pass`'s layer `layer` as a parallel loop.
    fn parallel_layer(pass: u64, layer: u64) -> u64 {
        (0..64u64)
            .into_par_iter()
            .map(|i| item(pass, layer, i))
            .sum()
    }

    /// A pool of three threads: a spinning pass keeps two others awake, and other passes
    /// run beside it.
    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool")
    }

    /// Passes run side by side on the pool, each with nested parallel loops and a
    /// `keep_awake` before each, all finish (two spinning passes could deadlock) with the
    /// results they give run one after another.
    #[test]
    fn concurrent_passes_with_nested_loops_finish() {
        let parallel: Vec<u64> = pool().install(|| {
            (0..6u64)
                .into_par_iter()
                .map(|pass| {
                    with_workers_awake(|| {
                        (0..40u64)
                            .map(|l| {
                                keep_awake();
                                parallel_layer(pass, l)
                            })
                            .sum()
                    })
                })
                .collect()
        });
        let sequential: Vec<u64> = (0..6).map(|pass| one_after_another(pass, 40)).collect();
        assert_eq!(parallel, sequential);
    }

    /// The same with a part of each pass spawned on a scope at its tenth layer and running
    /// the pass's last 40 layers' loops while the pass goes on through its first 40: every
    /// pass finishes with the sums the layers give run one after another.
    #[test]
    fn concurrent_passes_with_parts_outliving_layers_finish() {
        let parallel: Vec<u64> = pool().install(|| {
            (0..12u64)
                .into_par_iter()
                .map(|pass| {
                    with_workers_awake(|| {
                        let loop_sum = |l: u64| parallel_layer(pass, l);
                        let part_sum = std::sync::OnceLock::<u64>::new();
                        let main_sum: u64 = rayon::scope(|scope| {
                            (0..40u64)
                                .map(|l| {
                                    keep_awake();
                                    if l == 10 {
                                        let part = PassPart::of_current_pass();
                                        let part_sum = &part_sum;
                                        scope.spawn(move |_| {
                                            let sum: u64 =
                                                part.run(|| (40..80).map(loop_sum).sum());
                                            part_sum.set(sum).expect("one part");
                                        });
                                    }
                                    loop_sum(l)
                                })
                                .sum()
                        });
                        main_sum + part_sum.get().expect("the part ran")
                    })
                })
                .collect()
        });
        let sequential: Vec<u64> = (0..12).map(|pass| one_after_another(pass, 80)).collect();
        assert_eq!(parallel, sequential);
    }
}
