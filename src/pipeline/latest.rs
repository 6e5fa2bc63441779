//! A one-frame mailbox where the newest frame wins: the live pipeline's link between capture
//! and analysis, so a slow analysis drops stale frames instead of queueing them.

use std::sync::{Condvar, Mutex};

/// What the consumer gets next.
struct Slot<T, E> {
    item: Option<T>,
    /// Set once by the producer; delivered after the last item.
    end: Option<Result<(), E>>,
}

/// A single-item mailbox shared by one producer and one consumer.
pub struct LatestSlot<T, E> {
    slot: Mutex<Slot<T, E>>,
    ready: Condvar,
}

impl<T, E> Default for LatestSlot<T, E> {
    fn default() -> Self {
        Self {
            slot: Mutex::new(Slot {
                item: None,
                end: None,
            }),
            ready: Condvar::new(),
        }
    }
}

impl<T, E> LatestSlot<T, E> {
    /// Offers `item`; returns true when it replaced one the consumer had not taken yet.
    pub fn put(&self, item: T) -> bool {
        let mut slot = self.slot.lock().expect("slot lock");
        let replaced = slot.item.replace(item).is_some();
        self.ready.notify_one();
        replaced
    }

    /// Ends the stream: the consumer gets any item still waiting, then `result`.
    pub fn close(&self, result: Result<(), E>) {
        let mut slot = self.slot.lock().expect("slot lock");
        slot.end.get_or_insert(result);
        self.ready.notify_one();
    }

    /// Waits for the next item: `Some(Ok(item))`, then `Some(Err(e))` if the producer failed,
    /// then `None`.
    pub fn take(&self) -> Option<Result<T, E>> {
        let mut slot = self.slot.lock().expect("slot lock");
        loop {
            if let Some(item) = slot.item.take() {
                return Some(Ok(item));
            }
            match slot.end.take() {
                Some(Err(e)) => {
                    slot.end = Some(Ok(()));
                    return Some(Err(e));
                }
                Some(Ok(())) => {
                    slot.end = Some(Ok(()));
                    return None;
                }
                None => slot = self.ready.wait(slot).expect("slot lock"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn newest_item_wins_and_the_end_follows_the_last_item() {
        let slot = LatestSlot::<u32, String>::default();
        assert!(!slot.put(1));
        assert!(slot.put(2), "replacing an untaken item is reported");
        slot.close(Err("camera gone".into()));
        assert_eq!(slot.take(), Some(Ok(2)));
        assert_eq!(slot.take(), Some(Err("camera gone".into())));
        assert_eq!(slot.take(), None);
        assert_eq!(slot.take(), None);
    }

    #[test]
    fn take_waits_for_the_producer() {
        let slot = Arc::new(LatestSlot::<u32, ()>::default());
        let producer = {
            let slot = slot.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                slot.put(7);
                slot.close(Ok(()));
            })
        };
        assert_eq!(slot.take(), Some(Ok(7)));
        assert_eq!(slot.take(), None);
        producer.join().unwrap();
    }
}
