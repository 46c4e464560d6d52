//! Purge windows: `session_gc.purge_window`, the times of day the background worker may purge
//! ('02:00-05:00', several ranges separated by commas; empty: always), read in the server's
//! `log_timezone`: set only in postgresql.conf (a database's or role's own `TimeZone` would
//! let its owner move the window into the DBA's peak hours). Outside them the worker leaves every table alone and ends a run that a
//! closing window overtakes; `cleanup()` and `purge()` are never held back.

use crate::error::GcResult;
use crate::sql;

/// Minutes of the day from `start` up to, not including, `end`; past midnight when `end` is
/// not after `start` ('22:00-02:00').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    start: u16,
    end: u16,
}

const MINUTES_PER_DAY: u16 = 24 * 60;

/// A time of day as minutes since midnight: 'HH:MM', from 00:00 to 24:00.
fn minute_of_day(text: &str) -> Result<u16, String> {
    let invalid = || format!("\"{text}\" is not a time of day such as 02:00 or 23:30");
    let (hours, minutes) = text.trim().split_once(':').ok_or_else(invalid)?;
    let hours: u16 = hours.trim().parse().map_err(|_| invalid())?;
    let minutes: u16 = minutes.trim().parse().map_err(|_| invalid())?;
    if minutes >= 60 || hours > 24 || (hours == 24 && minutes > 0) {
        return Err(invalid());
    }
    Ok(hours * 60 + minutes)
}

/// The ranges of a `session_gc.purge_window` value; empty for an empty value (always open).
pub fn parse(text: &str) -> Result<Vec<Range>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (start, end) = part
                .split_once('-')
                .ok_or_else(|| format!("\"{part}\" is not a range such as 02:00-05:00"))?;
            let range = Range {
                start: minute_of_day(start)? % MINUTES_PER_DAY,
                end: minute_of_day(end)? % MINUTES_PER_DAY,
            };
            if range.start == range.end {
                return Err(format!(
                    "\"{part}\" starts and ends at the same time: leave session_gc.purge_window empty to purge at any time"
                ));
            }
            Ok(range)
        })
        .collect()
}

/// Whether `minute` (of the day) falls in one of the ranges; any minute does with none.
pub fn contains(ranges: &[Range], minute: u16) -> bool {
    ranges.is_empty()
        || ranges.iter().any(|r| {
            if r.start < r.end {
                (r.start..r.end).contains(&minute)
            } else {
                minute >= r.start || minute < r.end
            }
        })
}

/// Whether the worker may purge now, by the server's clock in `log_timezone`. Needs a
/// transaction.
pub fn open_now(ranges: &[Range]) -> GcResult<bool> {
    if ranges.is_empty() {
        return Ok(true);
    }
    let now = sql::one::<String>(
        "SELECT pg_catalog.to_char(pg_catalog.timezone(pg_catalog.current_setting('log_timezone'),
                                                        pg_catalog.now()), 'HH24:MI')",
        &[],
    )?
    .unwrap_or_default();
    Ok(minute_of_day(&now).map_or(true, |minute| contains(ranges, minute)))
}

#[cfg(test)]
mod window_tests {
    use super::{contains, parse};

    fn minute(text: &str) -> u16 {
        super::minute_of_day(text).expect("a time")
    }

    #[test]
    fn a_window_holds_its_start_and_not_its_end() {
        let window = parse("02:00-05:00").expect("valid");
        assert!(!contains(&window, minute("01:59")));
        assert!(contains(&window, minute("02:00")));
        assert!(contains(&window, minute("04:59")));
        assert!(!contains(&window, minute("05:00")));
    }

    #[test]
    fn a_window_past_midnight_wraps() {
        let window = parse("22:30-01:00").expect("valid");
        assert!(!contains(&window, minute("22:29")));
        assert!(contains(&window, minute("22:30")));
        assert!(contains(&window, minute("23:59")));
        assert!(contains(&window, minute("00:00")));
        assert!(contains(&window, minute("00:59")));
        assert!(!contains(&window, minute("01:00")));
        let until_midnight = parse("23:00-24:00").expect("valid");
        assert!(contains(&until_midnight, minute("23:59")));
        assert!(!contains(&until_midnight, minute("00:00")));
    }

    #[test]
    fn several_ranges_and_none() {
        let window = parse(" 02:00-03:00 , 12:00-12:30,").expect("valid");
        assert!(contains(&window, minute("02:30")));
        assert!(contains(&window, minute("12:15")));
        assert!(!contains(&window, minute("12:30")));
        assert!(!contains(&window, minute("08:00")));
        assert!(contains(&parse("").expect("empty"), minute("08:00")));
        assert!(contains(&parse(" , ").expect("blank"), minute("08:00")));
    }

    #[test]
    fn bad_windows_are_refused_with_a_reason() {
        for (bad, words) in [
            ("02:00", "not a range"),
            ("2-5", "not a time of day"),
            ("02:00-25:00", "not a time of day"),
            ("02:60-03:00", "not a time of day"),
            ("24:30-01:00", "not a time of day"),
            ("03:00-03:00", "same time"),
            ("00:00-24:00", "same time"),
            ("aa:bb-cc:dd", "not a time of day"),
        ] {
            let error = parse(bad).expect_err(bad);
            assert!(error.contains(words), "{bad}: {error}");
        }
    }
}
