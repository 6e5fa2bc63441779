//! Mutation testing of parsers on stable Rust: real samples, deterministic mutations
//! (truncations, byte flips, inserted and removed ranges, forged length fields, repeated
//! ranges), and three checks per input: no panic, no hang (a time bound per input) and no
//! allocation beyond a bound derived from the input's size. A result or a clear error are
//! both fine; the parser's own tests check which.
//!
//! Every case is reproducible from its seed. `STREAMTRACK_MUTATION_CASES` raises the number
//! of cases per parser and `STREAMTRACK_MUTATION_SECONDS` caps the time spent on each (the
//! long run of `scripts/mutate.sh`); with `STREAMTRACK_MUTATION_SAVE` set, a failing input is
//! kept as `tests/regressions/<parser>-<seed>.bin`, and every file there is replayed first
//! on each run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// An allocator that records the largest single allocation while a case runs, and stops
/// the process (naming the case) instead of attempting an absurd one.
pub struct GuardedAllocator;

/// Allocations above this abort the test run at once: no input here needs them.
const HARD_CAP: usize = 2 << 30;

static TRACKING: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static CURRENT_SEED: AtomicU64 = AtomicU64::new(0);

fn note(size: usize) -> bool {
    if !TRACKING.load(Ordering::Relaxed) {
        return true;
    }
    LARGEST.fetch_max(size, Ordering::Relaxed);
    if size <= HARD_CAP {
        return true;
    }
    // No allocation here: the message is built on the stack.
    let mut line = [0u8; 96];
    let text = b"mutation case with seed ";
    line[..text.len()].copy_from_slice(text);
    let mut at = text.len();
    let seed = CURRENT_SEED.load(Ordering::Relaxed);
    for digit in format_u64(seed).iter().flatten() {
        line[at] = *digit;
        at += 1;
    }
    let tail = b" asked for an allocation over 2 GiB\n";
    line[at..at + tail.len()].copy_from_slice(tail);
    let _ = std::io::stderr().write_all(&line[..at + tail.len()]);
    false
}

/// Decimal digits of `value`, most significant first, without allocating.
fn format_u64(mut value: u64) -> [Option<u8>; 20] {
    let mut digits = [None; 20];
    let mut i = 20;
    loop {
        i -= 1;
        digits[i] = Some(b'0' + (value % 10) as u8);
        value /= 10;
        if value == 0 {
            break;
        }
    }
    digits
}

// SAFETY: every call is forwarded to the system allocator unchanged; the bookkeeping only
// reads and writes atomics and the stack, and refusing (null) is allowed by the contract.
unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, which is the system's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// xorshift64*: small, fast and the same everywhere, so a seed names a case for good.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values a forged length or count field takes.
const FORGED: [u32; 9] = [
    0,
    1,
    7,
    8,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0xFFFF,
    0x1_0000,
];

/// One mutation of `sample`: positions come from `landmarks` (box headers, markers,
/// chunk starts: where a length field sits) half of the time, anywhere otherwise.
pub fn mutate(sample: &[u8], landmarks: &[usize], rng: &mut Rng) -> Vec<u8> {
    let mut data = sample.to_vec();
    for _ in 0..1 + rng.below(3) {
        if data.is_empty() {
            break;
        }
        let len = data.len();
        let at = if !landmarks.is_empty() && rng.below(2) == 0 {
            landmarks[rng.below(landmarks.len())].min(len - 1)
        } else {
            rng.below(len)
        };
        match rng.below(6) {
            0 => data.truncate(at),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let i = if rng.below(2) == 0 {
                        at
                    } else {
                        rng.below(len)
                    };
                    data[i.min(len - 1)] ^= 1 << rng.below(8);
                }
            }
            2 => {
                let extra: Vec<u8> = (0..1 + rng.below(64)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, extra);
            }
            3 => {
                let end = (at + 1 + rng.below(256)).min(len);
                data.drain(at..end);
            }
            4 => {
                let value = FORGED[rng.below(FORGED.len())].to_be_bytes();
                let end = (at + 4).min(len);
                data[at..end].copy_from_slice(&value[..end - at]);
            }
            _ => {
                let end = (at + 1 + rng.below(512)).min(len);
                let copy = data[at..end].to_vec();
                for _ in 0..1 + rng.below(3) {
                    data.splice(at..at, copy.iter().copied());
                }
            }
        }
    }
    data
}

/// Offsets just after each occurrence of any of `tags` (and 4 bytes before, where a length
/// field precedes the tag).
pub fn landmarks(sample: &[u8], tags: &[&[u8]]) -> Vec<usize> {
    let mut out = Vec::new();
    for tag in tags {
        for (i, window) in sample.windows(tag.len()).enumerate() {
            if window == *tag {
                out.push(i.saturating_sub(4));
                out.push(i + tag.len());
            }
        }
    }
    out
}

/// Each input with its landmarks for `tags`: the samples [`run`] takes.
pub fn samples(
    inputs: impl IntoIterator<Item = Vec<u8>>,
    tags: &[&[u8]],
) -> Vec<(Vec<u8>, Vec<usize>)> {
    inputs
        .into_iter()
        .map(|bytes| {
            let marks = landmarks(&bytes, tags);
            (bytes, marks)
        })
        .collect()
}

/// One test at a time: the allocation bookkeeping is process-wide, so nothing else may
/// allocate while a case runs (sample preparation included).
static SERIAL: Mutex<()> = Mutex::new(());

/// Held for the whole of a test that calls [`run`].
pub struct Exclusive {
    _guard: std::sync::MutexGuard<'static, ()>,
}

/// Waits until no other mutation test runs; hold the result from the test's first line.
pub fn exclusive() -> Exclusive {
    Exclusive {
        _guard: SERIAL.lock().unwrap_or_else(|e| e.into_inner()),
    }
}

/// What a parser is checked against.
pub struct Limits {
    /// Wall time for one input.
    pub time: Duration,
    /// Largest single allocation allowed for an input of `len` bytes.
    pub allocation: fn(usize) -> usize,
}

fn cases_wanted(default: usize) -> usize {
    std::env::var("STREAMTRACK_MUTATION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn time_budget() -> Option<Duration> {
    std::env::var("STREAMTRACK_MUTATION_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs_f64)
}

fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/regressions")
}

/// Feeds the regression files of `name`, then `cases` mutations of the samples (seeds
/// `1..=cases`), to `parse` on a worker thread; panics naming the first input that
/// panicked, overran its time or allocated beyond its bound. Returns how many inputs ran
/// and how many the parser accepted.
pub fn run<F>(
    _exclusive: &Exclusive,
    name: &str,
    samples: &[(Vec<u8>, Vec<usize>)],
    cases: usize,
    limits: Limits,
    parse: F,
) -> (usize, usize)
where
    F: Fn(&[u8]) -> bool + Send + 'static,
{
    let cases = cases_wanted(cases);
    let budget = time_budget();
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(regressions_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
        })
        .map(|e| {
            (
                e.path().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    inputs.sort();
    let regressions = inputs.len();

    let (to_worker, inbox) = mpsc::channel::<(u64, Vec<u8>)>();
    let (to_harness, outcomes) = mpsc::channel::<(u64, std::thread::Result<bool>, usize)>();
    std::thread::Builder::new()
        .name(format!("mutate-{name}"))
        .spawn(move || {
            for (seed, data) in inbox {
                CURRENT_SEED.store(seed, Ordering::Relaxed);
                LARGEST.store(0, Ordering::Relaxed);
                TRACKING.store(true, Ordering::Relaxed);
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&data)));
                TRACKING.store(false, Ordering::Relaxed);
                let largest = LARGEST.load(Ordering::Relaxed);
                if to_harness.send((seed, outcome, largest)).is_err() {
                    return;
                }
            }
        })
        .unwrap();

    let started = Instant::now();
    let (mut ran, mut accepted) = (0, 0);
    let mut check = |label: &str, seed: u64, data: Vec<u8>| {
        let len = data.len();
        to_worker.send((seed, data.clone())).unwrap();
        let failure = match outcomes.recv_timeout(limits.time) {
            Err(_) => Some(format!("no answer within {:?} (a hang?)", limits.time)),
            Ok((_, Err(_), _)) => Some("panicked".to_string()),
            Ok((_, Ok(ok), largest)) => {
                accepted += usize::from(ok);
                let bound = (limits.allocation)(len);
                (largest > bound).then(|| {
                    format!("allocated {largest} bytes at once, over the bound of {bound}")
                })
            }
        };
        ran += 1;
        if let Some(failure) = failure {
            let kept = if std::env::var_os("STREAMTRACK_MUTATION_SAVE").is_some() {
                let path = regressions_dir().join(format!("{name}-{seed}.bin"));
                std::fs::create_dir_all(regressions_dir()).unwrap();
                std::fs::write(&path, &data).unwrap();
                format!("; kept as {}", path.display())
            } else {
                String::new()
            };
            panic!("{name}: {label} ({len} bytes) {failure}{kept}");
        }
    };
    for (path, data) in inputs {
        check(&path, 0, data);
    }
    for (i, (sample, _)) in samples.iter().enumerate() {
        check(&format!("sample {i}"), 0, sample.clone());
    }
    for seed in 1..=cases as u64 {
        if budget.is_some_and(|b| started.elapsed() > b) {
            break;
        }
        let mut rng = Rng::new(seed);
        let (sample, marks) = &samples[rng.below(samples.len())];
        check(
            &format!("seed {seed}"),
            seed,
            mutate(sample, marks, &mut rng),
        );
    }
    eprintln!(
        "{name}: {ran} inputs ({regressions} regression files) in {:.1} s, {accepted} accepted",
        started.elapsed().as_secs_f64()
    );
    (ran, accepted)
}
