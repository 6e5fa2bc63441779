//! Names of rotating recording segments: a path pattern with `strftime`-style fields filled
//! in with each segment's start time in UTC (`cam1-%Y%m%d-%H%M%S.mp4` ->
//! `cam1-20261205-034512.mp4`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The fields a pattern may use: `%Y` year, `%m` month, `%d` day, `%H` hour, `%M` minute,
/// `%S` second, `%%` a percent sign.
pub const FIELDS: &str = "%Y %m %d %H %M %S %%";

/// A segment name pattern.
#[derive(Debug, Clone)]
pub struct SegmentNames {
    pattern: PathBuf,
}

impl SegmentNames {
    /// Takes `pattern` as given when its file name has a field, else inserts
    /// `-%Y%m%d-%H%M%S` before the extension (`out.mp4` -> `out-%Y%m%d-%H%M%S.mp4`).
    pub fn new(pattern: &Path) -> Self {
        let has_field = pattern
            .file_name()
            .is_some_and(|name| name.to_string_lossy().contains('%'));
        if has_field {
            return Self {
                pattern: pattern.to_path_buf(),
            };
        }
        let stem = pattern
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let name = match pattern.extension() {
            Some(ext) => format!("{stem}-%Y%m%d-%H%M%S.{}", ext.to_string_lossy()),
            None => format!("{stem}-%Y%m%d-%H%M%S"),
        };
        Self {
            pattern: pattern.with_file_name(name),
        }
    }

    /// The name of a segment starting at `time`, made unique against existing files by a
    /// `-2`, `-3`, … before the extension (segments shorter than a second share a time).
    pub fn next(&self, time: SystemTime) -> PathBuf {
        let name = format_time(&self.pattern.to_string_lossy(), time);
        let path = PathBuf::from(name);
        if !path.exists() {
            return path;
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().to_string());
        let ext = path.extension().map(|e| e.to_string_lossy().to_string());
        (2..)
            .map(|n| {
                let name = match &ext {
                    Some(ext) => format!("{}-{n}.{ext}", stem.as_deref().unwrap_or_default()),
                    None => format!("{}-{n}", stem.as_deref().unwrap_or_default()),
                };
                path.with_file_name(name)
            })
            .find(|candidate| !candidate.exists())
            .expect("some suffix is free")
    }
}

/// `pattern` with its fields replaced by `time` in UTC; an unknown field is kept as written.
pub fn format_time(pattern: &str, time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (year, month, day) = civil_date(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{year:04}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Year, month and day of `days` after 1970-01-01 in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn fields_are_filled_in_utc() {
        // 2026-12-05 03:45:12 UTC, a leap day, the epoch, and the last second of a year.
        let cases = [
            (1_796_442_312, "cam1-20261205-034512.mp4"),
            (951_782_400, "cam1-20000229-000000.mp4"),
            (0, "cam1-19700101-000000.mp4"),
            (1_767_225_599, "cam1-20251231-235959.mp4"),
        ];
        for (seconds, want) in cases {
            assert_eq!(format_time("cam1-%Y%m%d-%H%M%S.mp4", at(seconds)), want);
        }
        assert_eq!(format_time("100%% %q %", at(0)), "100% %q %");
    }

    #[test]
    fn a_pattern_without_fields_gets_the_time_and_names_stay_unique() {
        let dir = std::env::temp_dir().join(format!("streamtrack-segments-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let names = SegmentNames::new(&dir.join("out.mp4"));
        let first = names.next(at(0));
        assert_eq!(first, dir.join("out-19700101-000000.mp4"));
        std::fs::write(&first, b"").unwrap();
        assert_eq!(names.next(at(0)), dir.join("out-19700101-000000-2.mp4"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
