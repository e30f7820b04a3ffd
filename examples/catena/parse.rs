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

/// A duration in jiff's friendly format: `30m`, `12h`, `7d`, `4w`, `1d12h`, `90 minutes`.
/// Days are 24 hours; months and years, which have no fixed length, are refused.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let usage = || {
        format!("duration {s:?}: use a number and a unit: 30m, 12h, 7d, 4w (or combined: 1d12h)")
    };
    let too_long =
        || format!("duration {s:?} is longer than 100 years; give a shorter one, e.g. 30d");
    let span: jiff::Span = match s.trim().parse() {
        Ok(span) => span,
        // jiff's own limit on a unit (e.g. 7,304,484 days) is far beyond ours.
        Err(e) if e.to_string().contains("range") => return Err(too_long()),
        Err(_) => return Err(usage()),
    };
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(format!(
            "duration {s:?}: months and years have no fixed length; use days or weeks, e.g. 30d"
        ));
    }
    if span.is_negative() {
        return Err(usage());
    }
    let secs = span
        .total((
            jiff::Unit::Second,
            jiff::SpanRelativeTo::days_are_24_hours(),
        ))
        .map_err(|_| too_long())?;
    if secs > MAX_DURATION_SECS as f64 {
        return Err(too_long());
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_are_read_like_people_write_them() {
        for (text, secs) in [
            ("30s", 30),
            ("30m", 1800),
            ("12h", 43_200),
            ("7d", 604_800),
            ("4w", 2_419_200),
            ("1d12h", 129_600),
            ("90 minutes", 5_400),
        ] {
            assert_eq!(
                parse_duration(text).map(|d| d.as_secs()),
                Ok(secs),
                "{text}"
            );
        }
        for bad in [
            "",
            "12",
            "1mo",
            "1y",
            "-5m",
            "soon",
            "5000000w",
            "9999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
