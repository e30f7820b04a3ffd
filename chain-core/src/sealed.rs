//! Sealed JSON: a JSON object that carries the SHA-256 of its own canonical encoding, so
//! that any change to its bytes, even one that still parses (a digit of a time, a flag),
//! is detected. Manifests, run records and check reports are sealed.
//!
//! Writing: the value is encoded canonically (`serde_json` pretty printing of the typed
//! value: field order fixed by the type, maps sorted), and a last field
//! `"sha256": "<hex>"` holding the SHA-256 of that encoding is added before the closing
//! brace. Reading: the seal is split off the end, the object closed again, and the SHA-256
//! of those exact bytes compared before anything is decoded, so that no changed byte opens.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Sha256Digest;

/// The most bytes a sealed record may have (a check report of a badly damaged repository
/// lists many problems; manifests have their own, smaller limit). Readers compare an
/// object's listed size with it before reading the object.
pub const MAX_RECORD_LEN: usize = 64 << 20;

/// The name of the seal field.
pub const SEAL_FIELD: &str = "sha256";

/// Encodes `value` as sealed, pretty JSON. `value` must serialize to a JSON object without
/// a field named `sha256`.
pub fn seal<T: Serialize>(value: &T) -> Vec<u8> {
    seal_bytes(serde_json::to_vec_pretty(value).expect("a sealed value always serializes"))
}

/// Seals `body`, bytes that end with the `}` of a pretty-printed JSON object, as [`seal`]
/// seals a value's encoding: for tools and fuzzers that need sealed bytes of content no type
/// produces (the fuzz targets reseal mutated manifests, so the checks past the seal are
/// fuzzed too). Bytes that do not end with `}` get a `}` first.
pub fn seal_bytes(mut body: Vec<u8>) -> Vec<u8> {
    if body.last() != Some(&b'}') {
        body.push(b'}');
    }
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

/// Decodes sealed JSON into `T` and checks the seal over the exact bytes: the seal must be
/// the last field, as [`seal`] writes it, and the SHA-256 of the bytes before it (with the
/// object closed again) must match. Any changed byte is caught, including ones that would
/// still decode to the same value (whitespace, a misspelt optional field).
pub fn open<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, SealError> {
    if bytes.len() > MAX_RECORD_LEN {
        return Err(SealError::Syntax(format!(
            "it is {} bytes, more than the {MAX_RECORD_LEN} a sealed record may have",
            bytes.len()
        )));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| SealError::Syntax("it is not UTF-8 text".into()))?;
    let Some((body, recorded)) = split_seal(text) else {
        // Say whether the seal is missing or the bytes are not what Catena writes.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| SealError::Syntax(e.to_string()))?;
        let object = value
            .as_object()
            .ok_or_else(|| SealError::Syntax("it is not a JSON object".into()))?;
        return Err(if object.contains_key(SEAL_FIELD) {
            SealError::Syntax("its sha256 seal is not the last field as Catena writes it".into())
        } else {
            SealError::Unsealed
        });
    };
    let computed = Sha256Digest::of(body.as_bytes());
    if computed.to_string() != recorded {
        return Err(SealError::Mismatch {
            recorded: recorded.to_owned(),
            computed,
        });
    }
    serde_json::from_str(&body).map_err(|e| SealError::Syntax(e.to_string()))
}

/// Splits sealed text into the body that was hashed and the recorded seal: the text ends
/// with `\n  "sha256": "<64 hex>"\n}`, preceded by `,` after the last field, or by `{` for
/// an empty object.
fn split_seal(text: &str) -> Option<(String, &str)> {
    let marker = format!("\n  \"{SEAL_FIELD}\": \"");
    let at = text.rfind(&marker)?;
    let rest = &text[at + marker.len()..];
    let recorded = rest.strip_suffix("\"\n}")?;
    if recorded.len() != 64
        || !recorded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let head = &text[..at];
    if head == "{" {
        return Some(("{}".to_owned(), recorded));
    }
    let head = head.strip_suffix(',')?;
    Some((format!("{head}\n}}"), recorded))
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
                assert!(
                    open::<BTreeMap<String, String>>(&bad).is_err(),
                    "a flip at {i} opened"
                );
            }
        }
        let empty: BTreeMap<String, String> = BTreeMap::new();
        assert_eq!(
            open::<BTreeMap<String, String>>(&seal(&empty)).expect("opens"),
            empty
        );
    }
}
