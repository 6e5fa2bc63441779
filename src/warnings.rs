//! Warnings at a bounded rate: something that can happen on every frame (a damaged picture,
//! an event a full queue turns away) is warned about at most once per [`WARNING_INTERVAL`],
//! with how many times it happened since the last warning.

use std::time::{Duration, Instant};

/// Shortest time between two warnings of one kind from one stream.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Occurrences of one kind, and when they were last warned about.
#[derive(Debug, Default)]
pub struct WarningCount {
    unreported: u64,
    last_warning: Option<Instant>,
}

impl WarningCount {
    /// Adds `occurrences` seen at `now`; returns how many to warn about, when a warning is due.
    pub fn add(&mut self, occurrences: u64, now: Instant) -> Option<u64> {
        self.unreported += occurrences;
        let recent = self
            .last_warning
            .is_some_and(|t| now.duration_since(t) < WARNING_INTERVAL);
        if self.unreported == 0 || recent {
            return None;
        }
        self.last_warning = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }

    /// Occurrences not warned about yet, taken (for a last warning at the end).
    pub fn take_unreported(&mut self) -> u64 {
        std::mem::take(&mut self.unreported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_come_at_most_every_interval_with_the_count() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut count = WarningCount::default();
        assert_eq!(count.add(0, at(0)), None);
        assert_eq!(count.add(1, at(0)), Some(1));
        assert_eq!(count.add(1, at(1)), None);
        assert_eq!(count.add(2, at(5)), None);
        assert_eq!(count.add(0, at(11)), Some(3));
        assert_eq!(count.add(4, at(12)), None);
        assert_eq!(count.unreported, 4);
    }
}
