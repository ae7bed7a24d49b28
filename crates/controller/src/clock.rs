//! Timestamps as the controller writes and reads them: RFC 3339, UTC, milliseconds.

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

const TS_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `at` as RFC 3339 UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z` (the host
/// agent's journal format).
pub fn format_ts(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(TS_FORMAT)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// Milliseconds since the Unix epoch of `at` (0 before the epoch).
pub fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp; `None` if it is not one.
pub fn parse_ts_ms(text: &str) -> Option<i64> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_round_trip_to_the_millisecond() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let text = format_ts(at);
        assert_eq!(text, "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_ts_ms(&text), Some(1_700_000_000_123));
        assert_eq!(
            parse_ts_ms("2023-11-14T23:13:20.123+01:00"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_ts_ms("yesterday"), None);
        assert_eq!(parse_ts_ms("2023-11-14"), None);
    }
}
