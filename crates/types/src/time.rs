//! Calendar arithmetic for the timestamps misim writes: Unix seconds to and from proleptic Gregorian
//! UTC dates (Howard Hinnant's `days_from_civil` and `civil_from_days`), exact for every `i64` day
//! count that fits a date, so no date-time crate is needed for formatting.

/// Seconds in a day; Unix time has no leap seconds.
const DAY: i64 = 86_400;

/// `(year, month 1..=12, day 1..=31)` of a day count since 1970-01-01 (negative before it).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    // Count from 0000-03-01: with years that start in March, a leap day is the last of its year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a civil date (`month` 1..=12, `day` 1..=31; not validated, so
/// February 30 is March 1 or 2).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A UTC date and time of day, to the second; each service formats it as its Azure
/// counterpart does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcDateTime {
    /// Proleptic Gregorian year (0 is 1 BC).
    pub year: i64,
    /// 1..=12.
    pub month: i64,
    /// 1..=31.
    pub day: i64,
    /// 0..=23.
    pub hour: i64,
    /// 0..=59.
    pub minute: i64,
    /// 0..=59.
    pub second: i64,
}

impl UtcDateTime {
    /// The date and time of `unix` seconds since the epoch (negative before it).
    pub fn from_unix(unix: i64) -> Self {
        let (year, month, day) = civil_from_days(unix.div_euclid(DAY));
        let secs = unix.rem_euclid(DAY);
        Self {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs % 3600 / 60,
            second: secs % 60,
        }
    }

    /// Unix seconds of this date and time.
    pub fn to_unix(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * DAY
            + self.hour * 3600
            + self.minute * 60
            + self.second
    }
}

/// `YYYY-MM-DDThh:mm:ssZ`: RFC 3339 in UTC to the second, as Graph and ARM write times.
pub fn format_rfc3339(unix: i64) -> String {
    let t = UtcDateTime::from_unix(unix);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Parses `YYYY-MM-DDThh:mm:ss[.fff][Z|±hh:mm]` (or a bare date, midnight UTC) to Unix
/// seconds; a fraction is dropped. `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let num = |t: &str| -> Option<i64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, t),
        None => (s, "00:00:00Z"),
    };
    let mut dp = date.split('-');
    let (y, mo, d) = (num(dp.next()?)?, num(dp.next()?)?, num(dp.next()?)?);
    if dp.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    // Split off the zone designator.
    let (clock, offset) = if let Some(t) = time.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (t, z) = time.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
        (t, sign * (num(zh)? * 3600 + num(zm)? * 60))
    } else {
        (time, 0)
    };
    let clock = clock.split('.').next()?;
    let mut tp = clock.split(':');
    let h = num(tp.next()?)?;
    let mi = num(tp.next()?)?;
    let sec = tp.next().map_or(Some(0), num)?;
    if tp.next().is_some() || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * DAY + h * 3600 + mi * 60 + sec - offset)
}

/// A duration as the CLI takes it: a whole number and a unit, `500ms`, `90s`, `30m`, `25h`,
/// `46d` (a bare number is seconds). The error names the text and what is expected.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (digits, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map_or((t, "s"), |i| t.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 30m, 25h, 46d)"))?;
    let millis: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m, h or d")),
    };
    n.checked_mul(millis)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_leap(y: i64) -> bool {
        y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
    }

    #[test]
    fn known_dates() {
        for (days, date) in [
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (-719_468, (0, 3, 1)),
            (-719_469, (0, 2, 29)),
            (-719_528, (0, 1, 1)),
            (-719_529, (-1, 12, 31)),
            (-25_508, (1900, 3, 1)),
            (-25_509, (1900, 2, 28)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (20_453, (2025, 12, 31)),
            (47_540, (2100, 2, 28)),
            (47_541, (2100, 3, 1)),
            (2_932_896, (9999, 12, 31)),
        ] {
            assert_eq!(civil_from_days(days), date, "day {days}");
            assert_eq!(days_from_civil(date.0, date.1, date.2), days, "{date:?}");
        }
    }

    #[test]
    fn every_day_of_four_centuries_follows_the_last() {
        // 1900..2300 covers leap years, century non-leap years and the 400-year rule.
        let start = days_from_civil(1900, 1, 1);
        let mut prev = civil_from_days(start);
        assert_eq!(prev, (1900, 1, 1));
        for days in start + 1..days_from_civil(2300, 1, 1) {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = prev;
            let month_len = match pm {
                2 if is_leap(py) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if pd < month_len {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), expected, "day {days}");
            assert_eq!(days_from_civil(y, m, d), days);
            prev = (y, m, d);
        }
    }

    #[test]
    fn date_times() {
        let t = UtcDateTime::from_unix(1_767_225_599);
        assert_eq!(
            t,
            UtcDateTime {
                year: 2025,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 59
            }
        );
        assert_eq!(t.to_unix(), 1_767_225_599);
        let before_epoch = UtcDateTime::from_unix(-1);
        assert_eq!(
            (before_epoch.year, before_epoch.hour, before_epoch.second),
            (1969, 23, 59)
        );
        for unix in [0, -86_400, 951_782_400, 4_102_444_800, -2_208_988_800] {
            assert_eq!(UtcDateTime::from_unix(unix).to_unix(), unix);
        }
    }

    #[test]
    fn rfc3339_round_trips() {
        for t in [0, 951_782_400, 1_767_225_599, 1_767_139_199] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(format_rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(
            parse_rfc3339("2025-12-31T23:59:59.1234567Z"),
            Some(1_767_225_599)
        );
        assert_eq!(
            parse_rfc3339("2026-01-01T01:59:59+02:00"),
            Some(1_767_225_599)
        );
        assert_eq!(parse_rfc3339("2026-01-01"), Some(1_767_225_600));
        assert_eq!(parse_rfc3339("2025-12-31T23:59:59"), Some(1_767_225_599));
        assert!(parse_rfc3339("yesterday").is_none());
        assert!(parse_rfc3339("2025-13-01T00:00:00Z").is_none());
        assert!(parse_rfc3339("2025-12-01T10:00:00:00Z").is_none());
    }

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        use std::time::Duration;
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("25h"), Ok(Duration::from_secs(90_000)));
        assert_eq!(parse_duration("46d"), Ok(Duration::from_secs(46 * 86_400)));
        assert!(
            parse_duration("1w")
                .unwrap_err()
                .contains("the unit must be")
        );
        assert!(parse_duration("h").unwrap_err().contains("not a duration"));
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(
            parse_duration("9999999999999999d")
                .unwrap_err()
                .contains("too long")
        );
    }
}
