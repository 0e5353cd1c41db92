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
}
