//! Printing and parsing times without a calendar dependency.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 3339 in UTC, to the second: `2026-11-27T07:30:00Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `30d`, `12h`, `90m`, `45s`: a positive duration.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || {
        format!(
            "invalid duration {text:?}: expected a number and a unit, like 30d, 12h, 90m or 45s"
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| err())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(err()),
    };
    if n == 0 {
        return Err(err());
    }
    // A hundred years is "never" for a key, and keeps every date printable and storable.
    match n.checked_mul(unit) {
        Some(secs) if secs <= 100 * 365 * 86_400 => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "invalid duration {text:?}: at most 100 years (36500d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_764_600)),
            "2026-11-27T07:30:00Z"
        );
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("36501d").is_err());
        assert!(parse_duration("150000000000000d").is_err());
    }
}
