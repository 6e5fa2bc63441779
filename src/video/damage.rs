//! Warnings about damaged H.264 pictures, at a bounded rate: a damaged file or a camera that
//! loses packets all the time would otherwise write a line per picture. Concealed pictures
//! (kept, repaired from earlier ones) and skipped ones (not decodable) are each warned about
//! at most once per [`crate::warnings::WARNING_INTERVAL`], with how many there were since the last warning and
//! where the latest was; [`DamageLog::finish`] warns about what is left at the end.

use std::fmt::Display;
use std::time::Instant;

use crate::warnings::WarningCount as Count;

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
        let concealed = self.concealed.take_unreported();
        if concealed > 0 {
            self.warn_concealed(concealed);
        }
        let skipped = self.skipped.take_unreported();
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
