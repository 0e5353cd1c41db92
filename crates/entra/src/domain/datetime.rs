//! ISO 8601 date-times as Microsoft Graph writes them (`2025-01-29T10:24:46Z`).

use misim_types::time::{UtcDateTime, days_from_civil};

/// `YYYY-MM-DDThh:mm:ssZ`.
pub(crate) fn format_iso(unix: i64) -> String {
    let t = UtcDateTime::from_unix(unix);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// `YYYY-MM-DDThh:mm:ss.0000000Z`: the seven fraction digits (.NET ticks)
/// Entra's AADSTS700024 message writes its times with.
pub(crate) fn format_ticks(unix: i64) -> String {
    let iso = format_iso(unix);
    format!("{}.0000000Z", iso.trim_end_matches('Z'))
}

/// Parses `YYYY-MM-DDThh:mm:ss[.fff][Z|±hh:mm]` (or a bare date) to Unix seconds.
pub(crate) fn parse_iso(s: &str) -> Option<i64> {
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
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for t in [0, 951_782_400, 1_767_225_599, 1_767_139_199] {
            assert_eq!(parse_iso(&format_iso(t)), Some(t));
        }
        assert_eq!(format_iso(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(
            parse_iso("2025-12-31T23:59:59.1234567Z"),
            Some(1_767_225_599)
        );
        assert_eq!(parse_iso("2026-01-01T01:59:59+02:00"), Some(1_767_225_599));
        assert_eq!(parse_iso("2026-01-01"), Some(1_767_225_600));
        assert_eq!(parse_iso("2025-12-31T23:59:59"), Some(1_767_225_599));
        assert!(parse_iso("yesterday").is_none());
        assert!(parse_iso("2025-13-01T00:00:00Z").is_none());
    }
}
