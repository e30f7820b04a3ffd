//! The checks that fuzz targets run, shared with `cargo test`'s replay of their corpora.
//!
//! Each function takes arbitrary bytes, feeds them to a decoder, and panics only when an
//! invariant breaks (a decoder that panics, or a value that does not survive a round trip).
//! The fuzz targets in `fuzz/` call these; `chain-core`'s tests replay every file of the
//! corpora through them, so a crash found once stays fixed.

use crate::crypto::{KeySlot, RecordCipher, RepoConfig, RepoKey, Secret};
use crate::{
    ArtifactId, BlockRef, Compression, DatabaseName, Index, IndexChanges, Manifest, Sha256Digest,
};

/// The fixed key the fuzz checks decode encrypted objects with. XChaCha20-Poly1305, the
/// cipher the corpora's sealed inputs were made with, so that they still reach the checks
/// behind authentication (what follows opening is the same for either cipher).
fn fuzz_key() -> RepoKey {
    RepoKey::from_master_bytes(&"0f".repeat(16), RecordCipher::XChaCha20Poly1305, [7; 32])
}

/// Manifest JSON: decoding never panics; a decoded manifest re-encodes to JSON that decodes
/// to the same manifest. The bytes are tried as they are and resealed
/// ([`crate::sealed::seal_bytes`]), so that mutations reach the checks past the seal (a
/// fuzzer cannot forge a SHA-256).
pub fn manifest(data: &[u8]) {
    for bytes in [data.to_vec(), crate::sealed::seal_bytes(data.to_vec())] {
        if let Ok(m) = Manifest::from_json(&bytes) {
            let again = Manifest::from_json(&m.to_json()).expect("a decoded manifest re-decodes");
            assert_eq!(again, m, "manifest round trip changed it");
        }
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

/// Index objects: decoding never panics; a decoded index re-encodes (with and without
/// compression) to bytes that decode to the same index. The bytes are tried both as a
/// whole index object and as its JSON body (past the checksum a fuzzer cannot forge).
pub fn index(data: &[u8]) {
    // The bytes as a body under a header that records their true length and SHA-256
    // (resealed), through the streaming decoder with a small limit and with none.
    let mut resealed = Vec::with_capacity(crate::INDEX_HEADER_LEN + data.len());
    resealed.extend_from_slice(&crate::INDEX_MAGIC);
    resealed.extend_from_slice(&[crate::CONTAINER_VERSION, 0, 0, 0]);
    resealed.extend_from_slice(&(data.len() as u64).to_be_bytes());
    resealed.extend_from_slice(&Sha256Digest::of(data).0);
    resealed.extend_from_slice(data);
    // Read as a stream, an object decodes exactly as it does whole.
    for object in [data, &resealed[..]] {
        let whole = Index::decode(object);
        let streamed = Index::decode_streamed(object, object.len() as u64, crate::MAX_INDEX_LEN);
        assert_eq!(
            whole.is_ok(),
            streamed.is_ok(),
            "{whole:?} against {streamed:?}"
        );
        // Decoded without its block list, an object is refused or accepted exactly as it
        // is with it, with the same changes and the list summed up the same.
        for lean in [
            IndexChanges::decode_streamed(object, object.len() as u64, crate::MAX_INDEX_LEN),
            IndexChanges::decode_within(object, crate::MAX_INDEX_LEN, None),
        ] {
            match (&whole, lean) {
                (Ok(index), Ok(lean)) => {
                    assert_eq!(lean.changes, index.changes, "another change set");
                    assert_eq!(
                        Some(lean.blocks),
                        index.summary().ok(),
                        "another block list summary"
                    );
                }
                (Err(_), Err(_)) => {}
                (whole, lean) => panic!("{whole:?} against {lean:?} without the block list"),
            }
        }
        assert_eq!(
            whole.ok(),
            streamed.ok(),
            "streamed decoding gave another index"
        );
    }
    for decoded in [
        Index::decode(data),
        Index::decode_body(data),
        Index::decode(&resealed),
        Index::decode_within(&resealed, 4096, None),
        Index::decode_within(data, crate::MAX_INDEX_LEN, Some(&fuzz_key())),
    ] {
        let Ok(index) = decoded else { continue };
        let key = fuzz_key();
        for c in [Compression::None, Compression::Zstd { level: 1 }] {
            let again = Index::decode(&index.encode(c, None).expect("a valid index encodes"))
                .expect("a re-encoded index decodes");
            assert_eq!(again, index, "index round trip changed it");
            let sealed = index.encode(c, Some(&key)).expect("a valid index encodes");
            let again = Index::decode_within(&sealed, crate::MAX_INDEX_LEN, Some(&key))
                .expect("an encrypted index decodes");
            assert_eq!(again, index, "encrypted index round trip changed it");
        }
    }
}

/// Stored blocks: decoding never panics, whatever the bytes and whatever block the caller
/// expects; a block that decodes hashes to what was expected.
pub fn block(data: &[u8]) {
    // Expect the block the header claims (the most permissive check), and a fixed one.
    let claimed = (data.len() >= 48).then(|| BlockRef {
        digest: Sha256Digest(data[16..48].try_into().expect("32 bytes")),
        len: u32::from_be_bytes(data[8..12].try_into().expect("4 bytes")).max(1),
    });
    for expected in claimed.into_iter().chain([BlockRef {
        digest: Sha256Digest::of(b""),
        len: 1,
    }]) {
        if let Ok(raw) = crate::decode_block(data, &expected, None) {
            assert_eq!(Sha256Digest::of(&raw), expected.digest);
            assert_eq!(raw.len() as u64, u64::from(expected.len));
        }
        let key = fuzz_key();
        if let Ok(raw) = crate::decode_block(data, &expected, Some(&key)) {
            assert_eq!(key.block_digest(&raw), expected.digest);
            assert_eq!(raw.len() as u64, u64::from(expected.len));
        }
    }
}

/// Key slots: decoding never panics, with the bytes as they are and resealed; a decoded
/// slot re-encodes to itself, and opening it with a wrong secret gives `None` or an error,
/// never a key. Opening is tried only for cheap slots (a fuzzer would otherwise spend its
/// time in Argon2id).
pub fn key_slot(data: &[u8]) {
    for bytes in [data.to_vec(), crate::sealed::seal_bytes(data.to_vec())] {
        let Ok(slot) = KeySlot::from_json(&bytes) else {
            continue;
        };
        assert_eq!(
            KeySlot::from_json(&slot.to_json()).as_ref(),
            Ok(&slot),
            "key slot round trip changed it"
        );
        let cheap = slot
            .argon2id
            .is_none_or(|p| p.memory_kib <= 1024 && p.iterations <= 2);
        if cheap {
            for secret in [
                Secret::passphrase("fuzz").expect("passphrase"),
                Secret::key_file(vec![0; 32]).expect("key file"),
            ] {
                if let Ok(Some(key)) = slot.open(&secret, RecordCipher::Xaes256Gcm) {
                    // Only a slot wrapped under this very secret opens: impossible for a
                    // fuzzer without breaking XChaCha20-Poly1305.
                    panic!("a fuzzed slot opened: {key:?}");
                }
            }
        }
    }
}

/// Config objects: decoding never panics, with the bytes as they are and resealed; a
/// decoded config re-encodes to itself.
pub fn repo_config(data: &[u8]) {
    for bytes in [data.to_vec(), crate::sealed::seal_bytes(data.to_vec())] {
        if let Ok(config) = RepoConfig::from_json(&bytes) {
            assert_eq!(
                RepoConfig::from_json(&config.to_json()).as_ref(),
                Ok(&config),
                "config round trip changed it"
            );
        }
    }
}
