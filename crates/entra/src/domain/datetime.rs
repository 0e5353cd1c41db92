//! ISO 8601 date-times as Microsoft Graph writes them (`2025-01-29T10:24:46Z`).

/// `YYYY-MM-DDThh:mm:ssZ`.
pub(crate) fn format_iso(unix: i64) -> String {
    misim_types::time::format_rfc3339(unix)
}

/// `YYYY-MM-DDThh:mm:ss.0000000Z`: the seven fraction digits (.NET ticks)
/// Entra's AADSTS700024 message writes its times with.
pub(crate) fn format_ticks(unix: i64) -> String {
    let iso = format_iso(unix);
    format!("{}.0000000Z", iso.trim_end_matches('Z'))
}

/// `MM/DD/YYYY hh:mm:ss`: how Entra's AADSTS700027 and 50013 messages write a key's validity.
pub(crate) fn format_us(unix: i64) -> String {
    let t = misim_types::time::UtcDateTime::from_unix(unix);
    format!(
        "{:02}/{:02}/{:04} {:02}:{:02}:{:02}",
        t.month, t.day, t.year, t.hour, t.minute, t.second
    )
}

/// Parses `YYYY-MM-DDThh:mm:ss[.fff][Z|±hh:mm]` (or a bare date) to Unix seconds.
pub(crate) fn parse_iso(s: &str) -> Option<i64> {
    misim_types::time::parse_rfc3339(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_and_aadsts_formats() {
        // Parsing and formatting are misim_types::time's (tested there); these are the shapes.
        assert_eq!(format_iso(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(format_ticks(1_767_225_599), "2025-12-31T23:59:59.0000000Z");
        assert_eq!(parse_iso("2025-12-31T23:59:59Z"), Some(1_767_225_599));
        assert_eq!(format_us(1_767_225_599), "12/31/2025 23:59:59");
    }
}
