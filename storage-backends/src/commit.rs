//! Committing an artifact: the index object, then the manifest, create-only, last.
//!
//! A create-only put that finds the object already there reads it back: the same bytes mean
//! an earlier attempt of ours succeeded (a retry after a lost response); other bytes are a
//! [`Error::Conflict`]. When the manifest write fails with an unknown outcome, the manifest
//! is looked up before anything is cleaned: data is deleted only when the manifest is known
//! not to exist, so a committed artifact never loses its objects.

use std::sync::Arc;

use bytes::Bytes;
use chain_core::{
    ChangeSet, Compression, Index, Manifest, ManifestBuilder, ObjectRole, Sizes, StateSummary,
};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::Error;
use crate::layout;
use crate::upload::{StoredData, UploadOptions, WrittenObject};

/// Writes `bytes` at `key` only if nothing is there; an identical object already there is
/// success.
pub async fn put_create(
    store: &dyn ObjectStore,
    key: &Path,
    bytes: Bytes,
) -> Result<WrittenObject, Error> {
    let written = WrittenObject {
        key: key.clone(),
        size: bytes.len() as u64,
        sha256: Some(chain_core::Sha256Digest::of(&bytes)),
    };
    put_create_payload(store, key, PutPayload::from(bytes)).await?;
    Ok(written)
}

/// [`put_create`] for a payload its writer has already hashed and counted (an
/// [`ObjectWriter`](crate::upload::ObjectWriter)'s object smaller than one part).
pub(crate) async fn put_create_payload(
    store: &dyn ObjectStore,
    key: &Path,
    payload: PutPayload,
) -> Result<(), Error> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store.put_opts(key, payload.clone(), opts).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let found = store
                .get(key)
                .await
                .map_err(|e| Error::store("reading back", key, e))?;
            // Another size is another object: it is not read (whatever is there, a stray
            // object of gigabytes included, is never downloaded to be compared).
            if found.meta.size != payload.content_length() as u64 {
                return Err(Error::Conflict {
                    key: key.to_string(),
                });
            }
            let existing = found
                .bytes()
                .await
                .map_err(|e| Error::store("reading back", key, e))?;
            let mut rest = &existing[..];
            let same = existing.len() == payload.content_length()
                && payload.iter().all(|chunk| {
                    // The lengths are equal, so every chunk is within `rest`.
                    let (head, tail) = rest.split_at(chunk.len());
                    rest = tail;
                    head == &chunk[..]
                });
            if same {
                Ok(())
            } else {
                Err(Error::Conflict {
                    key: key.to_string(),
                })
            }
        }
        Err(e) => Err(Error::store("writing", key, e)),
    }
}

/// Whether the manifest at `key` holds exactly `bytes` (`None` when that cannot be told).
async fn manifest_landed(store: &dyn ObjectStore, key: &Path, bytes: &Bytes) -> Option<bool> {
    match store.get(key).await {
        Ok(r) => r.bytes().await.ok().map(|b| b == bytes),
        Err(object_store::Error::NotFound { .. }) => Some(false),
        Err(_) => None,
    }
}

/// Commits an artifact whose data is stored: writes its index, then its manifest (built from
/// `builder` with the objects' sizes and digests), and returns the manifest. On failure the
/// artifact's objects are deleted when it is certain the manifest was not written; the error
/// is returned either way.
pub async fn commit(
    store: &Arc<dyn ObjectStore>,
    id: &chain_core::ArtifactId,
    builder: ManifestBuilder,
    index: Index,
    data: &StoredData,
    index_compression: Compression,
    key: Option<&chain_core::RepoKey>,
) -> Result<Manifest, Error> {
    let mut written: Vec<Path> = data.object.iter().map(|o| o.key.clone()).collect();
    match commit_inner(
        store,
        id,
        builder,
        Arc::new(index),
        data,
        (index_compression, key),
        &mut written,
    )
    .await
    {
        Ok(manifest) => Ok(manifest),
        Err((error, manifest_absent)) => {
            if manifest_absent {
                delete_quietly(store.as_ref(), &written).await;
            } else {
                tracing::warn!(artifact = %id, "the manifest write had an unknown outcome; the artifact's objects are left for `catena check` / garbage collection");
            }
            Err(error)
        }
    }
}

/// Commits an artifact whose blocks are stored (backup's and aggregate's one commit path):
/// the index (its change set and the block locations), then the manifest, built from
/// `builder` with the state's digest and sizes and the upload's settings. The caller has
/// checked that it still holds the database's lock. The change set and the block locations
/// move into the index (a FULL of a million files holds each once).
pub async fn commit_state(
    store: &Arc<dyn ObjectStore>,
    id: &chain_core::ArtifactId,
    builder: ManifestBuilder,
    state: &StateSummary,
    changes: ChangeSet,
    stored: StoredData,
    upload: &UploadOptions,
) -> Result<Manifest, Error> {
    let StoredData {
        object,
        locations,
        block_bytes,
    } = stored;
    let stored = StoredData {
        object,
        locations: Vec::new(),
        block_bytes,
    };
    let index = Index {
        changes,
        blocks: locations,
    };
    let builder = builder
        .compression(upload.compression)
        .block_size(upload.block_size)
        .state_digest(state.digest)
        .sizes(Sizes {
            logical_bytes: state.logical_bytes,
            block_bytes: stored.block_bytes,
            entries: state.entries,
            blocks: index.blocks.len() as u64,
            ..Sizes::default()
        })
        .committed_at(jiff::Timestamp::now());
    commit(
        store,
        id,
        builder,
        index,
        &stored,
        upload.compression,
        upload.key.as_deref(),
    )
    .await
}

/// Deletes `keys`, best effort (what fails is left for garbage collection).
pub async fn delete_quietly(store: &dyn ObjectStore, keys: &[Path]) {
    for key in keys {
        if let Err(e) = store.delete(key).await
            && !matches!(e, object_store::Error::NotFound { .. })
        {
            tracing::warn!(%key, error = %e, "could not delete; garbage collection will");
        }
    }
}

/// Bytes the index encoder hands over at a time.
const INDEX_CHUNK: usize = 1 << 20;

/// How an index is uploaded: 8 MiB parts, two in flight. An index smaller than one part
/// (every index of a database of up to tens of thousands of files) is one create-only put.
fn index_upload() -> UploadOptions {
    UploadOptions {
        parts_in_flight: 2,
        ..UploadOptions::default()
    }
}

/// Writes an unencrypted index at `key` as it is encoded ([`Index::encode_to`] on a thread
/// of its own, 1 MiB at a time through a channel of two) with an
/// [`ObjectWriter`](crate::upload::ObjectWriter): an index smaller than one part is one
/// create-only put, read back when the key is taken, like [`put_create`]; a larger one is
/// uploaded in parts, so that a commit holds a few parts of it, not all of it (~110 MB for
/// a million files, beside the entries it encodes). On any failure the upload is aborted
/// and nothing is left under `key`.
async fn write_index(
    store: &Arc<dyn ObjectStore>,
    key: &Path,
    index: Arc<Index>,
    compression: Compression,
    options: &UploadOptions,
) -> Result<WrittenObject, Error> {
    struct Chunks {
        tx: tokio::sync::mpsc::Sender<Vec<u8>>,
        buf: Vec<u8>,
    }
    impl Chunks {
        fn send(&mut self) -> std::io::Result<()> {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(INDEX_CHUNK));
            self.tx
                .blocking_send(full)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
    }
    impl std::io::Write for Chunks {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let n = bytes.len().min(INDEX_CHUNK - self.buf.len());
            self.buf.extend_from_slice(&bytes[..n]);
            if self.buf.len() == INDEX_CHUNK {
                self.send()?;
            }
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (tx, mut chunks) = tokio::sync::mpsc::channel(2);
    let (done, encoded) = tokio::sync::oneshot::channel();
    // Not on the blocking pool: the encoder waits on this task, which may need that pool
    // (a local directory's writes do).
    std::thread::Builder::new()
        .name("catena-index".into())
        .spawn(move || {
            let out = Chunks {
                tx,
                buf: Vec::with_capacity(INDEX_CHUNK),
            };
            let result = index.encode_to(compression, out).and_then(|mut out| {
                if out.buf.is_empty() {
                    Ok(())
                } else {
                    out.send()
                        .map_err(|e| chain_core::Error::Compression { why: e.to_string() })
                }
            });
            let _ = done.send(result);
        })
        .map_err(|e| Error::Task(format!("starting the encoder of {key}: {e}")))?;
    let mut writer =
        crate::upload::ObjectWriter::new(Arc::clone(store), key.clone(), options, None);
    let mut failed = None;
    while let Some(chunk) = chunks.recv().await {
        if let Err(e) = writer.write(&chunk).await {
            failed = Some(e);
            break;
        }
    }
    // Dropping the receiver stops an encoder still sending (its send fails).
    drop(chunks);
    let encoded = encoded
        .await
        .map_err(|_| Error::Task(format!("the encoder of {key} stopped")));
    let failed = match (failed, encoded) {
        (Some(e), _) | (None, Err(e)) => Some(e),
        (None, Ok(Err(e))) => Some(e.into()),
        (None, Ok(Ok(()))) => None,
    };
    match failed {
        Some(e) => {
            writer.abort().await;
            Err(e)
        }
        None => writer.finish().await,
    }
}

async fn commit_inner(
    store: &Arc<dyn ObjectStore>,
    id: &chain_core::ArtifactId,
    builder: ManifestBuilder,
    index: Arc<Index>,
    data: &StoredData,
    // How the index is encoded: its compression, and the key of an encrypted repository.
    (index_compression, key): (Compression, Option<&chain_core::RepoKey>),
    written: &mut Vec<Path>,
) -> Result<Manifest, (Error, bool)> {
    let absent = |e: Error| (e, true);
    let index_key = layout::index_key(id);
    let manifest_key = layout::manifest_key(id);
    written.push(index_key.clone());
    let index_obj = match key {
        // An encrypted index is sealed whole (its tag covers the body).
        Some(key) => {
            let encoded = Bytes::from(
                index
                    .encode(index_compression, Some(key))
                    .map_err(|e| absent(e.into()))?,
            );
            put_create(store.as_ref(), &index_key, encoded).await
        }
        None => {
            write_index(
                store,
                &index_key,
                Arc::clone(&index),
                index_compression,
                &index_upload(),
            )
            .await
        }
    }
    .map_err(absent)?;
    let store = store.as_ref();
    let mut objects = Vec::new();
    if let Some(d) = &data.object {
        objects.push(d.to_ref(ObjectRole::Data));
    }
    objects.push(index_obj.to_ref(ObjectRole::Index));
    let manifest = builder
        .objects(objects)
        .block_records(&index.blocks)
        .build()
        .map_err(|e| absent(e.into()))?;
    let manifest = match key {
        Some(key) => key.sign_manifest(manifest),
        None => manifest,
    };
    let bytes = Bytes::from(manifest.to_json());
    match put_create(store, &manifest_key, bytes.clone()).await {
        Ok(_) => Ok(manifest),
        Err(e @ Error::Conflict { .. }) => Err((e, true)),
        Err(e) => match manifest_landed(store, &manifest_key, &bytes).await {
            Some(true) => Ok(manifest),
            Some(false) => Err((e, true)),
            None => Err((e, false)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fault, FaultStore};
    use chain_core::{BlockLocation, Sha256Digest};

    /// An index whose encoding is ~9.7 MB: 240,000 block locations with digests that do not
    /// compress.
    fn big_index() -> Index {
        let blocks = (0..240_000u64)
            .map(|i| BlockLocation {
                digest: Sha256Digest::of(&i.to_le_bytes()),
                len: 100,
                offset: i * 148,
                stored_len: 148,
            })
            .collect();
        Index {
            changes: ChangeSet::default(),
            blocks,
        }
    }

    async fn stored(store: &Arc<dyn ObjectStore>, key: &Path) -> Option<Bytes> {
        match store.get(key).await {
            Ok(got) => Some(got.bytes().await.expect("bytes")),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// A large index is uploaded in parts as it is encoded, a small one with one put; both
    /// are the bytes `Index::encode` makes, with their size and SHA-256; a failure at any
    /// call of the upload is the error and leaves nothing at the key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_index_is_written_as_it_is_encoded_in_parts_or_whole() {
        let index = Arc::new(big_index());
        let compression = Compression::Zstd { level: 3 };
        let expected = Bytes::from(index.encode(compression, None).expect("encode"));
        assert!(
            expected.len() > 8 << 20,
            "{} bytes: two 8 MiB parts",
            expected.len()
        );
        let key = Path::from("db/x.index");
        let mut multipart_calls = 0;
        let in_parts = index_upload();
        let whole = UploadOptions {
            part_size: 64 << 20,
            ..index_upload()
        };
        for (options, parts) in [(&in_parts, true), (&whole, false)] {
            let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
            let counting = FaultStore::new(Arc::clone(&inner), None, Fault::Error);
            let store: Arc<dyn ObjectStore> = Arc::new(counting.clone());
            let written = write_index(&store, &key, Arc::clone(&index), compression, options)
                .await
                .expect("written");
            let landed = stored(&inner, &key).await.expect("an index");
            assert!(
                landed == expected,
                "{} bytes landed, {} encoded",
                landed.len(),
                expected.len()
            );
            assert_eq!(written.size, expected.len() as u64);
            assert_eq!(written.sha256, Some(Sha256Digest::of(&expected)));
            if parts {
                // Started, at least two parts, completed.
                assert!(counting.calls() >= 4, "{} calls", counting.calls());
                multipart_calls = counting.calls();
            } else {
                assert_eq!(counting.calls(), 1);
            }
        }
        for k in 0..multipart_calls {
            let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
            let store: Arc<dyn ObjectStore> =
                Arc::new(FaultStore::new(Arc::clone(&inner), Some(k), Fault::Error));
            let failed = write_index(&store, &key, Arc::clone(&index), compression, &in_parts)
                .await
                .expect_err("a failed call fails the write");
            assert!(!failed.is_permanent(), "call {k}: {failed}");
            assert!(stored(&inner, &key).await.is_none(), "call {k}");
        }
    }

    #[tokio::test]
    async fn a_key_taken_by_an_object_of_another_size_is_a_conflict_without_reading_it() {
        let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let key = Path::from("db/x.manifest.json");
        inner
            .put(&key, PutPayload::from(vec![7u8; 100_000]))
            .await
            .expect("put");
        // Call 0 is the create-only put (refused: the key is taken), call 1 the read back,
        // whose body breaks half way: only a read of the body would see that.
        let store = FaultStore::new(Arc::clone(&inner), Some(1), Fault::BrokenBody);
        let err = put_create(&store, &key, Bytes::from_static(b"ours"))
            .await
            .expect_err("the key is taken");
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        assert_eq!(store.calls(), 2);
        assert_eq!(stored(&inner, &key).await.expect("there").len(), 100_000);
    }
}
