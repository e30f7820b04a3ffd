//! The checks behind the storage URL fuzz target (`fuzz/fuzz_targets/storage_url.rs`),
//! shared with `cargo test`, which replays the fuzz corpus through them.

use crate::StorageConfig;

/// A storage URL from untrusted bytes: parses or gives an error, never panics; what parses
/// prints; an error never depends on the query string (which may carry a SAS token), so it
/// cannot show it: the same URL with the query replaced gives the same message.
pub fn storage_url(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match StorageConfig::from_url(&text) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(e) => {
            if let Some((before, query)) = text.split_once('?') {
                let other = format!("{before}?{}", "Q".repeat(query.len()));
                let same = StorageConfig::from_url(&other).err().map(|e| e.to_string());
                assert_eq!(
                    Some(e.to_string()),
                    same,
                    "the error depends on the query string"
                );
            }
        }
    }
}
