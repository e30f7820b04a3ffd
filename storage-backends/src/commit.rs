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
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store
        .put_opts(key, PutPayload::from(bytes.clone()), opts)
        .await
    {
        Ok(_) => Ok(written),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let existing = store
                .get(key)
                .await
                .map_err(|e| Error::store("reading back", key, e))?
                .bytes()
                .await
                .map_err(|e| Error::store("reading back", key, e))?;
            if existing == bytes {
                Ok(written)
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
    index: &Index,
    data: &StoredData,
    index_compression: Compression,
    key: Option<&chain_core::RepoKey>,
) -> Result<Manifest, Error> {
    let mut written: Vec<Path> = data.object.iter().map(|o| o.key.clone()).collect();
    match commit_inner(
        store.as_ref(),
        id,
        builder,
        index,
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
        &index,
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

async fn commit_inner(
    store: &dyn ObjectStore,
    id: &chain_core::ArtifactId,
    builder: ManifestBuilder,
    index: &Index,
    data: &StoredData,
    // How the index is encoded: its compression, and the key of an encrypted repository.
    (index_compression, key): (Compression, Option<&chain_core::RepoKey>),
    written: &mut Vec<Path>,
) -> Result<Manifest, (Error, bool)> {
    let absent = |e: Error| (e, true);
    let index_key = layout::index_key(id);
    let manifest_key = layout::manifest_key(id);
    let encoded = Bytes::from(
        index
            .encode(index_compression, key)
            .map_err(|e| absent(e.into()))?,
    );
    written.push(index_key.clone());
    let index_obj = put_create(store, &index_key, encoded)
        .await
        .map_err(absent)?;
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
