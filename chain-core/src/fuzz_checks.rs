//! The checks that fuzz targets run, shared with `cargo test`'s replay of their corpora.
//!
//! Each function takes arbitrary bytes, feeds them to a decoder, and panics only when an
//! invariant breaks (a decoder that panics, or a value that does not survive a round trip).
//! The fuzz targets in `fuzz/` call these; `chain-core`'s tests replay every file of the
//! corpora through them, so a crash found once stays fixed.

use crate::{ArtifactId, DatabaseName, Manifest};

/// Manifest JSON: decoding never panics; a decoded manifest re-encodes to JSON that decodes
/// to the same manifest.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::from_json(data) {
        let again = Manifest::from_json(&m.to_json()).expect("a decoded manifest re-decodes");
        assert_eq!(again, m, "manifest round trip changed it");
    }
}

/// Artifact ids and database names: parsing never panics; `parse(s)` succeeding means
/// `display(parse(s)) == s` (exactly one spelling per id).
pub fn artifact_id(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = s.parse::<ArtifactId>() {
        assert_eq!(id.to_string(), s, "artifact id has two spellings");
        assert_eq!(id.to_string().parse::<ArtifactId>().ok(), Some(id));
    }
    if let Ok(name) = DatabaseName::new(s) {
        assert_eq!(name.as_str(), s);
    }
}
