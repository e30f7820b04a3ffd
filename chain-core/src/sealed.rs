//! Sealed JSON: a JSON object that carries the SHA-256 of its own canonical encoding, so
//! that any change to its bytes, even one that still parses (a digit of a time, a flag),
//! is detected. Manifests, run records and check reports are sealed.
//!
//! Writing: the value is encoded canonically (`serde_json` pretty printing of the typed
//! value: field order fixed by the type, maps sorted), and a last field
//! `"sha256": "<hex>"` holding the SHA-256 of that encoding is added before the closing
//! brace. Reading: the `sha256` field is taken out, the rest decoded into the type and
//! encoded canonically again, and the digests compared.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Sha256Digest;

/// The name of the seal field.
pub const SEAL_FIELD: &str = "sha256";

/// Encodes `value` as sealed, pretty JSON. `value` must serialize to a JSON object without
/// a field named `sha256`.
pub fn seal<T: Serialize>(value: &T) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(value).expect("a sealed value always serializes");
    let digest = Sha256Digest::of(&body);
    // Pretty output of an object ends with "\n}"; an empty object is "{}".
    let close = body.pop();
    debug_assert_eq!(close, Some(b'}'));
    let empty = body.last() == Some(&b'{');
    if !empty {
        while body.last() == Some(&b'\n') {
            body.pop();
        }
        body.push(b',');
    }
    body.extend_from_slice(format!("\n  \"{SEAL_FIELD}\": \"{digest}\"\n}}").as_bytes());
    body
}

/// Why sealed JSON does not open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not JSON, not an object, or not the expected type.
    #[error("{0}")]
    Syntax(String),
    /// No seal field.
    #[error("it has no sha256 seal")]
    Unsealed,
    /// The seal does not match the content: the bytes were changed.
    #[error(
        "its sha256 seal does not match its content (recorded {recorded}, computed {computed}): the object was altered or damaged"
    )]
    Mismatch {
        /// The seal found.
        recorded: String,
        /// The digest of the content.
        computed: Sha256Digest,
    },
}

/// Decodes sealed JSON into `T` and checks the seal.
pub fn open<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, SealError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| SealError::Syntax(e.to_string()))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| SealError::Syntax("it is not a JSON object".into()))?;
    let recorded = match object.remove(SEAL_FIELD) {
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(SealError::Syntax("its sha256 seal is not a string".into())),
        None => return Err(SealError::Unsealed),
    };
    let typed: T = serde_json::from_value(value).map_err(|e| SealError::Syntax(e.to_string()))?;
    let canonical = serde_json::to_vec_pretty(&typed).expect("a decoded value re-serializes");
    let computed = Sha256Digest::of(&canonical);
    if computed.to_string() != recorded {
        return Err(SealError::Mismatch { recorded, computed });
    }
    Ok(typed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn sealed_json_round_trips_and_catches_every_changed_byte() {
        let mut v = BTreeMap::new();
        v.insert("time".to_owned(), "2026-11-25T17:39:30Z".to_owned());
        v.insert("flag".to_owned(), "yes".to_owned());
        let bytes = seal(&v);
        assert_eq!(open::<BTreeMap<String, String>>(&bytes).expect("opens"), v);
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x20] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                if let Ok(got) = open::<BTreeMap<String, String>>(&bad) {
                    // Only whitespace changes may open, and then to the same value.
                    assert_eq!(got, v, "flip at {i} changed the content unnoticed");
                }
            }
        }
        let empty: BTreeMap<String, String> = BTreeMap::new();
        assert_eq!(
            open::<BTreeMap<String, String>>(&seal(&empty)).expect("opens"),
            empty
        );
    }
}
