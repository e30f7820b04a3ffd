//! Parsers of flag values: backup type, compression, times and durations.

use catena::chain_core::{BackupType, Position, RestoreTarget};

pub(crate) fn parse_type(s: &str) -> Result<BackupType, String> {
    s.parse()
        .map_err(|e: catena::chain_core::Error| e.to_string())
}

pub(crate) fn parse_compression(s: &str) -> Result<catena::chain_core::Compression, String> {
    use catena::chain_core::Compression;
    let lower = s.trim().to_ascii_lowercase();
    if lower == "none" {
        return Ok(Compression::None);
    }
    lower
        .strip_prefix("zstd-")
        .or_else(|| lower.strip_prefix("zstd"))
        .and_then(|l| {
            if l.is_empty() {
                Some(3)
            } else {
                l.parse().ok()
            }
        })
        .filter(|l| (1..=22).contains(l))
        .map(|level| Compression::Zstd { level })
        .ok_or_else(|| format!("compression {s:?}: use none or zstd-1 .. zstd-22"))
}

/// The time formats `--restore-until` takes: exactly what Catena prints (inspect's
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC; RFC 3339 in JSON and run records), and RFC 3339
/// with any offset.
pub(crate) const TIME_FORMATS: &str = "a position (a whole number), a UTC time \"YYYY-MM-DD HH:MM:SS[.ffffff]\" as inspect shows it, or RFC 3339 (\"2026-11-25T18:12:29.232432Z\", \"2026-11-25T19:12:29+01:00\")";

pub(crate) fn parse_until(s: &str) -> Result<RestoreTarget, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(RestoreTarget::UntilPosition(Position(n)));
    }
    let bad = || format!("--restore-until {s:?} is not {TIME_FORMATS}");
    // RFC 3339 (with `Z` or an offset), as JSON and run records print times.
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(RestoreTarget::UntilTime(ts));
    }
    // A civil time, as inspect prints it: UTC.
    let dt: jiff::civil::DateTime = t.parse().map_err(|_| bad())?;
    let ts = jiff::tz::TimeZone::UTC
        .to_timestamp(dt)
        .map_err(|_| bad())?;
    Ok(RestoreTarget::UntilTime(ts))
}

/// The longest duration accepted anywhere (100 years): anything longer is a typo.
pub(crate) const MAX_DURATION_SECS: u64 = 100 * 366 * 86_400;

pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("duration {s:?}: use a number and a unit: 30m, 12h, 7d, 4w"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("duration {s:?}: the unit must be s, m, h, d or w")),
    };
    match n.checked_mul(secs) {
        Some(total) if total <= MAX_DURATION_SECS => Ok(std::time::Duration::from_secs(total)),
        _ => Err(format!(
            "duration {s:?} is longer than 100 years; give a shorter one, e.g. 30d"
        )),
    }
}
