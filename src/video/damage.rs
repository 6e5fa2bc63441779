//! Warnings about damaged H.264 pictures, at a bounded rate: a damaged file or a camera that
//! loses packets all the time would otherwise write a line per picture. Concealed pictures
//! (kept, repaired from earlier ones) and skipped ones (not decodable) are each warned about
//! at most once per [`WARNING_INTERVAL`], with how many there were since the last warning and
//! where the latest was; [`DamageLog::finish`] warns about what is left at the end.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// Shortest time between two warnings of one kind from one stream.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The damage warnings of one stream.
#[derive(Debug)]
pub struct DamageLog {
    /// The stream, as the warnings name it.
    source: String,
    concealed: Count,
    skipped: Count,
    /// Where the latest concealed picture was (`at 1.200s`, `picture 30`).
    last_concealed: String,
}

impl DamageLog {
    pub fn new(source: impl Display) -> Self {
        Self {
            source: source.to_string(),
            concealed: Count::default(),
            skipped: Count::default(),
            last_concealed: String::new(),
        }
    }

    /// `pictures` decoded with concealed damage (0 when the picture was clean), `at` where.
    pub fn concealed(&mut self, pictures: u64, at: impl Display) {
        if pictures > 0 {
            self.last_concealed = at.to_string();
        }
        if let Some(n) = self.concealed.add(pictures, Instant::now()) {
            self.warn_concealed(n);
        }
    }

    /// A picture `at` skipped because of `error`.
    pub fn skipped(&mut self, at: impl Display, error: impl Display) {
        if let Some(n) = self.skipped.add(1, Instant::now()) {
            tracing::warn!(
                "{}: {n} picture(s) skipped, the last {at}: {error}",
                self.source
            );
        }
    }

    /// Warns about the pictures not warned about yet (at the end of the stream).
    pub fn finish(&mut self) {
        let concealed = std::mem::take(&mut self.concealed.unreported);
        if concealed > 0 {
            self.warn_concealed(concealed);
        }
        let skipped = std::mem::take(&mut self.skipped.unreported);
        if skipped > 0 {
            tracing::warn!(
                "{}: {skipped} more picture(s) skipped (corrupt H.264 data)",
                self.source
            );
        }
    }

    fn warn_concealed(&self, pictures: u64) {
        tracing::warn!(
            "{}: {pictures} picture(s) with damaged H.264 data (the last {}), concealed from \
             earlier pictures",
            self.source,
            self.last_concealed
        );
    }
}

/// Damaged pictures of one kind, and when they were last warned about.
#[derive(Debug, Default)]
struct Count {
    unreported: u64,
    last_warning: Option<Instant>,
}

impl Count {
    /// Adds `pictures` seen at `now`; returns how many to warn about, when a warning is due.
    fn add(&mut self, pictures: u64, now: Instant) -> Option<u64> {
        self.unreported += pictures;
        let recent = self
            .last_warning
            .is_some_and(|t| now.duration_since(t) < WARNING_INTERVAL);
        if self.unreported == 0 || recent {
            return None;
        }
        self.last_warning = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_come_at_most_every_interval_with_the_count() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut count = Count::default();
        assert_eq!(count.add(0, at(0)), None);
        assert_eq!(count.add(1, at(0)), Some(1));
        assert_eq!(count.add(1, at(1)), None);
        assert_eq!(count.add(2, at(5)), None);
        assert_eq!(count.add(0, at(11)), Some(3));
        assert_eq!(count.add(4, at(12)), None);
        assert_eq!(count.unreported, 4);
    }
}
