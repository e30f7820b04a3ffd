//! Names: [`DatabaseName`] and [`ArtifactId`].
//!
//! An artifact id is `<database>-<UTC time>-<suffix>`, for example
//! `neo4j-20261125T164656.123456Z-9f86d081884c7d65`:
//!
//! - the database name, as validated by [`DatabaseName`];
//! - the creation time in UTC with microsecond precision, fixed width, so that ids of one
//!   database sort by creation time as plain strings;
//! - 16 lowercase hex digits chosen at random by the writer, so that two writers that start
//!   in the same microsecond still get different ids.
//!
//! Parsing is strict: exactly one spelling is accepted for each id, so `parse(display(id))`
//! is the identity and `display(parse(s)) == s` for every accepted `s`.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// The longest database name accepted, in bytes.
pub const MAX_DATABASE_NAME_LEN: usize = 63;

/// The name of a backed-up data set ("database"), safe to use as a storage key segment.
///
/// 1 to 63 ASCII characters: letters, digits, `.`, `_` and `-`, starting with a letter or
/// a digit. These are the names Neo4j accepts for databases (lower and upper case), and
/// none of them can escape a key prefix or a directory.
///
/// ```
/// use chain_core::DatabaseName;
/// let name: DatabaseName = "neo4j".parse()?;
/// assert_eq!(name.as_str(), "neo4j");
/// assert!("../etc".parse::<DatabaseName>().is_err());
/// # Ok::<(), chain_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DatabaseName(String);

impl DatabaseName {
    /// Validates `name` and wraps it.
    pub fn new(name: &str) -> Result<Self, Error> {
        let invalid = |why: &'static str| Error::InvalidDatabaseName {
            name: truncate_for_message(name),
            why,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > MAX_DATABASE_NAME_LEN {
            return Err(invalid("it is longer than 63 characters"));
        }
        let first = name.as_bytes()[0];
        if !first.is_ascii_alphanumeric() {
            return Err(invalid("it must start with a letter or a digit"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                "only ASCII letters, digits, '.', '_' and '-' are allowed",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Shortens user input quoted in an error message, so a huge input cannot flood a log.
pub(crate) fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl fmt::Display for DatabaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for DatabaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseName({:?})", self.0)
    }
}

impl FromStr for DatabaseName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl Serialize for DatabaseName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DatabaseName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Length of the time field of an id: `YYYYMMDDTHHMMSS.ffffffZ`.
const TIME_LEN: usize = 23;
/// Length of the random suffix of an id, in hex digits.
const SUFFIX_LEN: usize = 16;

/// The unique, time-ordered name of one artifact: `<database>-<UTC time>-<suffix>`.
///
/// Ordering compares creation time first, then the suffix, then the database, so sorting
/// ids sorts artifacts by creation time. Within one database that is also the order of the
/// id strings.
///
/// ```
/// use chain_core::{ArtifactId, DatabaseName};
/// let created = "2026-11-25T16:46:56.123456Z".parse()?;
/// let id = ArtifactId::new(DatabaseName::new("neo4j")?, created, 0x9f86d081884c7d65);
/// assert_eq!(id.to_string(), "neo4j-20261125T164656.123456Z-9f86d081884c7d65");
/// assert_eq!(id.to_string().parse::<ArtifactId>()?, id);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ArtifactId {
    created_at: Timestamp,
    suffix: u64,
    database: DatabaseName,
}

impl ArtifactId {
    /// Builds an id. `created_at` is truncated to whole microseconds (the precision the id
    /// keeps); `suffix` should come from a random source, so that concurrent writers differ.
    pub fn new(database: DatabaseName, created_at: Timestamp, suffix: u64) -> Self {
        let micros = created_at.as_microsecond();
        let created_at =
            Timestamp::from_microsecond(micros).expect("a timestamp truncated stays in range");
        Self {
            created_at,
            suffix,
            database,
        }
    }

    /// The database this artifact belongs to.
    pub fn database(&self) -> &DatabaseName {
        &self.database
    }

    /// The creation time recorded in the id (UTC, microsecond precision).
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// The writer's random suffix.
    pub fn suffix(&self) -> u64 {
        self.suffix
    }
}

impl PartialOrd for ArtifactId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ArtifactId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.created_at, self.suffix, &self.database).cmp(&(
            other.created_at,
            other.suffix,
            &other.database,
        ))
    }
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dt = TimeZone::UTC.to_datetime(self.created_at);
        write!(
            f,
            "{}-{:04}{:02}{:02}T{:02}{:02}{:02}.{:06}Z-{:016x}",
            self.database,
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.subsec_nanosecond() / 1_000,
            self.suffix
        )
    }
}

impl fmt::Debug for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArtifactId({self})")
    }
}

impl FromStr for ArtifactId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |why: &'static str| Error::InvalidArtifactId {
            id: truncate_for_message(s),
            why,
        };
        // Split from the right: the database name may itself contain '-'.
        let (rest, suffix) = s
            .rsplit_once('-')
            .ok_or_else(|| invalid("expected <database>-<time>-<suffix>"))?;
        let (database, time) = rest
            .rsplit_once('-')
            .ok_or_else(|| invalid("expected <database>-<time>-<suffix>"))?;
        if suffix.len() != SUFFIX_LEN
            || !suffix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid("the suffix must be 16 lowercase hex digits"));
        }
        let suffix = u64::from_str_radix(suffix, 16)
            .map_err(|_| invalid("the suffix must be 16 lowercase hex digits"))?;
        let created_at = parse_id_time(time)
            .ok_or_else(|| invalid("the time must be YYYYMMDDTHHMMSS.ffffffZ, a valid UTC time"))?;
        let database = DatabaseName::new(database)?;
        Ok(Self {
            created_at,
            suffix,
            database,
        })
    }
}

/// Parses exactly `YYYYMMDDTHHMMSS.ffffffZ`.
fn parse_id_time(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != TIME_LEN || b[8] != b'T' || b[15] != b'.' || b[22] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut n = 0i64;
        for d in digits {
            n = n * 10 + i64::from(d - b'0');
        }
        Some(n)
    };
    let year = i16::try_from(num(0..4)?).ok()?;
    let month = i8::try_from(num(4..6)?).ok()?;
    let day = i8::try_from(num(6..8)?).ok()?;
    let hour = i8::try_from(num(9..11)?).ok()?;
    let minute = i8::try_from(num(11..13)?).ok()?;
    let second = i8::try_from(num(13..15)?).ok()?;
    let micros = i32::try_from(num(16..22)?).ok()?;
    let dt = DateTime::new(year, month, day, hour, minute, second, micros * 1_000).ok()?;
    TimeZone::UTC.to_timestamp(dt).ok()
}

impl Serialize for ArtifactId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ArtifactId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    #[test]
    fn id_round_trips_and_keeps_microseconds() {
        let id = ArtifactId::new(
            DatabaseName::new("my-db.v2").expect("name"),
            ts("2026-01-02T03:04:05.678901999Z"),
            7,
        );
        let s = id.to_string();
        assert_eq!(s, "my-db.v2-20260102T030405.678901Z-0000000000000007");
        assert_eq!(s.parse::<ArtifactId>().expect("parse"), id);
        assert_eq!(id.created_at(), ts("2026-01-02T03:04:05.678901Z"));
    }

    #[test]
    fn ids_of_one_database_sort_by_time_as_strings_and_values() {
        let db = DatabaseName::new("neo4j").expect("name");
        let a = ArtifactId::new(db.clone(), ts("2026-01-01T00:00:00Z"), u64::MAX);
        let b = ArtifactId::new(db, ts("2026-01-01T00:00:00.000001Z"), 0);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn id_parser_rejects_near_misses() {
        for bad in [
            "",
            "neo4j",
            "neo4j-20260101T000000.000000Z",
            "neo4j-20260101T000000.000000Z-0000000000000000x",
            "neo4j-20260101T000000.000000Z-000000000000000A",
            "neo4j-20260101T000000.000000-0000000000000000",
            "neo4j-20261301T000000.000000Z-0000000000000000",
            "neo4j-20260230T000000.000000Z-0000000000000000",
            "neo4j-2026010100000000000000-0000000000000000",
            "-20260101T000000.000000Z-0000000000000000",
            "../x-20260101T000000.000000Z-0000000000000000",
            "neo4j-+0260101T000000.000000Z-0000000000000000",
        ] {
            assert!(bad.parse::<ArtifactId>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn database_names_are_key_safe() {
        for good in ["neo4j", "system", "a", "A1.b_c-d"] {
            DatabaseName::new(good).expect(good);
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", "é", &"x".repeat(64)] {
            assert!(DatabaseName::new(bad).is_err(), "accepted {bad:?}");
        }
    }
}
