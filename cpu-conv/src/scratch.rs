//! Scratch buffers kept per thread and reused from one convolution to the next.
//!
//! The kernels' per-tile buffers (im2col blocks, Winograd transforms) used to be allocated
//! and zero-filled for every piece of work rayon split off; `perf` had that memset at 3 % of
//! a forward pass. A buffer lives in a thread-local slot instead and is taken out for the
//! duration of one piece of work, so a nested user on the same thread (rayon may run another
//! job while one waits) simply gets an empty buffer of its own.

use std::cell::Cell;
use std::thread::LocalKey;

/// Runs `f` with this thread's value from `slot`, taken out for the call and put back after.
pub(crate) fn with_reused<T: Default, R>(
    slot: &'static LocalKey<Cell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut value = slot.take();
    let result = f(&mut value);
    slot.set(value);
    result
}

/// The first `len` elements of `buffer`, growing it with `fill` only when it is shorter. A
/// reused buffer keeps the values of its previous use: callers overwrite what they read.
pub(crate) fn prefix<T: Clone>(buffer: &mut Vec<T>, len: usize, fill: T) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, fill);
    }
    &mut buffer[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static SLOT: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    }

    #[test]
    fn a_buffer_is_reused_and_a_nested_user_gets_its_own() {
        with_reused(&SLOT, |outer| {
            prefix(outer, 4, 7).copy_from_slice(&[1, 2, 3, 4]);
            with_reused(&SLOT, |inner| assert!(inner.is_empty()));
        });
        with_reused(&SLOT, |again| {
            assert_eq!(prefix(again, 2, 0), [1, 2]);
            assert_eq!(prefix(again, 6, 0), [1, 2, 3, 4, 0, 0]);
        });
    }
}
