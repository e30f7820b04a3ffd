//! The read side: whole objects verified against the manifest, and blocks read by byte
//! range with N in flight, each verified against its hash before it is handed out.
//! Every failure names the object key and the offset.

use std::sync::Arc;

use bytes::Bytes;
use chain_core::{
    BlockListSummary, BlockLocation, Index, IndexChanges, Manifest, ObjectRef, ObjectRole,
    Sha256Digest,
};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest as _, Sha256};

use crate::Error;

fn path_of(object: &ObjectRef) -> Result<Path, Error> {
    Path::parse(&object.key).map_err(|e| Error::Corrupt {
        key: object.key.clone(),
        offset: 0,
        why: format!("the manifest names an invalid key: {e}"),
    })
}

/// Opens the object a manifest names for reading: its key and the store's answer. Every
/// failure to read it, then or while its body streams, is the store's error (it may pass
/// on a retry), never taken for damage.
async fn open_object(
    store: &dyn ObjectStore,
    object: &ObjectRef,
) -> Result<(Path, object_store::GetResult), Error> {
    let key = path_of(object)?;
    match store.get(&key).await {
        Ok(got) => Ok((key, got)),
        Err(e) => Err(Error::store("reading", &key, e)),
    }
}

/// Reads a whole object and checks its size and SHA-256 against the manifest's record.
pub async fn get_verified(store: &dyn ObjectStore, object: &ObjectRef) -> Result<Bytes, Error> {
    let (key, got) = open_object(store, object).await?;
    let bytes = got
        .bytes()
        .await
        .map_err(|e| Error::store("reading", &key, e))?;
    check_read(object, bytes.len() as u64, true, || {
        Sha256Digest::of(&bytes)
    })?;
    Ok(bytes)
}

/// Checks what was read of `object` against the manifest's record: its size (`size` bytes
/// read, all of them when `exact`, else at least one past the record was seen) and, when
/// recorded, its SHA-256 (`digest` of what was read, computed only then).
fn check_read(
    object: &ObjectRef,
    size: u64,
    exact: bool,
    digest: impl FnOnce() -> Sha256Digest,
) -> Result<(), Error> {
    let len = object.size;
    if size != len {
        return Err(Error::Corrupt {
            key: object.key.clone(),
            offset: size.min(len),
            why: if exact || size < len {
                format!("{size} bytes, the manifest records {len}")
            } else {
                format!("more than {len} bytes, the manifest records {len}")
            },
        });
    }
    match object.sha256 {
        Some(expected) => {
            let actual = digest();
            if actual != expected {
                return Err(Error::Corrupt {
                    key: object.key.clone(),
                    offset: 0,
                    why: format!("SHA-256 {actual}, the manifest records {expected}"),
                });
            }
            Ok(())
        }
        None => Ok(()),
    }
}

/// Streams a whole object through SHA-256 and checks size and digest (for `check`, without
/// holding the object in memory). A format-2 data object has no recorded digest: its size
/// is checked here, its records by [`read_blocks`] and their layout by [`read_index`].
pub async fn verify_object(store: &dyn ObjectStore, object: &ObjectRef) -> Result<(), Error> {
    let (key, got) = open_object(store, object).await?;
    let mut stream = got.into_stream();
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::store("reading", &key, e))?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    check_read(object, size, true, || {
        Sha256Digest(hasher.finalize().into())
    })
}

/// Reads and decodes an artifact's index, verified against the manifest: size and SHA-256
/// of the object, and (format 2) that its records cover the data object exactly. `key` is
/// the repository's key when it is encrypted.
pub async fn read_index(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    key: Option<&Arc<chain_core::RepoKey>>,
) -> Result<Index, Error> {
    read_index_as(
        store,
        manifest,
        key,
        IndexDecoder {
            whole: Index::decode_within,
            streamed: |read, len, limit| Index::decode_streamed(read, len, limit),
            summary: Index::summary,
        },
    )
    .await
}

/// [`read_index`] without keeping the block list: the change set, every record checked as
/// it streams past (what a backup needs of its parent; ~50 MB less at a million files).
pub async fn read_index_changes(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    key: Option<&Arc<chain_core::RepoKey>>,
) -> Result<IndexChanges, Error> {
    read_index_as(
        store,
        manifest,
        key,
        IndexDecoder {
            whole: IndexChanges::decode_within,
            streamed: |read, len, limit| IndexChanges::decode_streamed(read, len, limit),
            summary: |c| Ok(c.blocks),
        },
    )
    .await
}

/// How [`read_index_as`] decodes an index into `T`: held whole (an encrypted index), as it
/// streams in, and what its block list sums up to.
struct IndexDecoder<T> {
    whole: fn(&[u8], u64, Option<&chain_core::RepoKey>) -> Decoded<T>,
    streamed: StreamedDecoder<T>,
    summary: fn(&T) -> Result<BlockListSummary, chain_core::Error>,
}

/// What decoding an index gives.
type Decoded<T> = Result<T, chain_core::DecodeError>;

/// Decodes an index from its object's bytes as they are read: the reader, the object's
/// size, the body's limit.
type StreamedDecoder<T> = fn(&mut dyn std::io::Read, u64, u64) -> Decoded<T>;

async fn read_index_as<T: Send + 'static>(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    key: Option<&Arc<chain_core::RepoKey>>,
    decoder: IndexDecoder<T>,
) -> Result<T, Error> {
    let object = manifest
        .objects
        .iter()
        .find(|o| o.role == ObjectRole::Index)
        .ok_or_else(|| Error::Corrupt {
            key: crate::layout::manifest_key(&manifest.id).to_string(),
            offset: 0,
            why: "the manifest lists no index object".into(),
        })?;
    let limit = Index::body_limit(&manifest.sizes, manifest.block_size);
    let decoded = match key {
        // An encrypted index authenticates only whole: it is read whole.
        Some(key) => {
            let bytes = get_verified(store, object).await?;
            let key = Arc::clone(key);
            let whole = decoder.whole;
            tokio::task::spawn_blocking(move || whole(&bytes, limit, Some(&key)))
                .await
                .map_err(|e| Error::Task(e.to_string()))?
        }
        None => decode_index_streamed(store, object, limit, decoder.streamed).await?,
    };
    let corrupt = |why: String| Error::Corrupt {
        key: object.key.clone(),
        offset: 0,
        why,
    };
    let index = decoded.map_err(|e| corrupt(e.to_string()))?;
    // Format 2 pins the data object by its record list instead of a digest; format 1's
    // records must at least lie within it.
    let data_size = data_object(manifest).map_or(0, |d| d.size);
    let summary = (decoder.summary)(&index).map_err(|e| corrupt(e.to_string()))?;
    if manifest.format_version >= 2 {
        summary.check_layout(data_size, manifest.sizes.blocks, manifest.sizes.block_bytes)
    } else {
        summary.check_within(data_size)
    }
    .map_err(|e| corrupt(e.to_string()))?;
    Ok(index)
}

/// Decodes an unencrypted index object as it is read from the store (the index of a
/// million files is ~110 MB: never held whole), and checks its size and SHA-256 against
/// the manifest's record as [`get_verified`] does, every byte included. A failed read is
/// the store's error (it may pass on a retry), never taken for a damaged index; a wrong
/// size or digest is reported before what the decoder made of the bytes.
async fn decode_index_streamed<T: Send + 'static>(
    store: &dyn ObjectStore,
    object: &ObjectRef,
    limit: u64,
    decode: StreamedDecoder<T>,
) -> Result<Decoded<T>, Error> {
    let (key, got) = open_object(store, object).await?;
    let stream = got.into_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let len = object.size;
    // The decoder waits on the store's stream, which may itself need the blocking pool (a
    // local directory's reads do): on a pool thread, a few decoders could hold every
    // thread while their reads wait for one. It runs on a thread of its own.
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("catena-index".into())
        .spawn(move || {
            let mut read = Verifying {
                inner: reader,
                hasher: Sha256::new(),
                size: 0,
                failed: None,
            };
            let decoded = decode(&mut read, len, limit);
            // The rest, through the digest, up to one byte past the recorded size.
            let rest = (len + 1).saturating_sub(read.size);
            let _ = std::io::copy(
                &mut std::io::Read::take(&mut read, rest),
                &mut std::io::sink(),
            );
            let _ = done.send((decoded, read));
        })
        .map_err(|e| Error::Task(format!("starting the decoder of {key}: {e}")))?;
    let (decoded, mut read) = result
        .await
        .map_err(|_| Error::Task(format!("the decoder of {key} stopped")))?;
    if let Some(e) = read.failed.take() {
        return Err(
            match e.into_inner().map(|e| e.downcast::<object_store::Error>()) {
                Some(Ok(e)) => Error::store("reading", &key, *e),
                Some(Err(e)) => Error::store(
                    "reading",
                    &key,
                    object_store::Error::Generic {
                        store: "stream",
                        source: e,
                    },
                ),
                None => Error::Task(format!("reading {key} failed")),
            },
        );
    }
    // At most one byte past the record was read.
    check_read(object, read.size, false, || {
        Sha256Digest(read.hasher.finalize().into())
    })?;
    Ok(decoded)
}

/// A reader that hashes and counts what passes, and keeps the first error of the reader
/// it wraps (a failed read of the store, told apart from bytes the decoder refuses).
struct Verifying<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
    failed: Option<std::io::Error>,
}

impl<R: std::io::Read> std::io::Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.failed.is_some() {
            return Err(std::io::Error::other("the read failed before"));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.size += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let shown = std::io::Error::other(e.to_string());
                self.failed = Some(e);
                Err(shown)
            }
        }
    }
}

/// The data object of an artifact, if it has one.
pub fn data_object(manifest: &Manifest) -> Option<&ObjectRef> {
    manifest.objects.iter().find(|o| o.role == ObjectRole::Data)
}

/// Reads blocks from the object `key` by byte range, `in_flight` at once, decodes and
/// verifies each on the blocking pool, and yields their bytes in the given order.
/// `repo_key` is the repository's key when it is encrypted.
pub fn read_blocks(
    store: Arc<dyn ObjectStore>,
    key: Path,
    locations: Vec<BlockLocation>,
    in_flight: usize,
    repo_key: Option<Arc<chain_core::RepoKey>>,
) -> impl Stream<Item = Result<Bytes, Error>> + Send {
    read_blocks_at(
        store,
        locations
            .into_iter()
            .map(move |l| (key.clone(), l))
            .collect(),
        in_flight,
        repo_key,
    )
}

/// Largest byte range fetched by one GET: consecutive blocks that lie back to back in the
/// same object are read together up to this size (a FULL restores with 4 MiB requests
/// instead of one request per 1 MiB block).
pub const COALESCE_BYTES: u64 = 4 << 20;

/// Ranges decoded at once, ahead of the reader of [`read_blocks_at`]: two keep both cores
/// of a small machine busy; each holds a range's decoded blocks (up to 4 MiB stored).
const DECODE_AHEAD: usize = 2;

/// Consecutive `(object, location)` pairs that are contiguous in one object, each group at
/// most [`COALESCE_BYTES`] long (a single larger block is a group of its own).
fn coalesce(blocks: Vec<(Path, BlockLocation)>) -> Vec<(Path, Vec<BlockLocation>)> {
    let mut groups: Vec<(Path, Vec<BlockLocation>)> = Vec::new();
    for (key, loc) in blocks {
        if let Some((k, locs)) = groups.last_mut()
            && *k == key
            && let (Some(first), Some(last)) = (locs.first(), locs.last())
            && last.range().end == loc.offset
            && loc.range().end - first.offset <= COALESCE_BYTES
        {
            locs.push(loc);
            continue;
        }
        groups.push((key, vec![loc]));
    }
    groups
}

/// Reads the bytes `range` of the object `key` with one ranged GET, and checks that the
/// store gave exactly that many (a shorter object is corruption, named with its offset).
pub async fn read_range(
    store: &dyn ObjectStore,
    key: &Path,
    range: std::ops::Range<u64>,
) -> Result<Bytes, Error> {
    let stored = store
        .get_range(key, range.clone())
        .await
        .map_err(|e| Error::store("reading a range of", key, e))?;
    if stored.len() as u64 != range.end - range.start {
        return Err(Error::Corrupt {
            key: key.to_string(),
            offset: range.start,
            why: format!(
                "asked for {} bytes, got {}: the object is shorter than its index says",
                range.end - range.start,
                stored.len()
            ),
        });
    }
    Ok(stored)
}

/// Decodes and verifies the block at `loc` out of `stored`, the bytes [`read_range`] gave
/// for a range of the object `key` that starts at `start` and holds the whole block
/// (decrypted and authenticated under `repo_key` in an encrypted repository). CPU work: call
/// it on the blocking pool.
pub fn decode_at(
    stored: &Bytes,
    start: u64,
    loc: &BlockLocation,
    key: &Path,
    repo_key: Option<&chain_core::RepoKey>,
) -> Result<Bytes, Error> {
    let corrupt = |why: String| Error::Corrupt {
        key: key.to_string(),
        offset: loc.offset,
        why,
    };
    let at = loc
        .offset
        .checked_sub(start)
        .and_then(|at| usize::try_from(at).ok())
        .filter(|at| at.saturating_add(loc.stored_len as usize) <= stored.len())
        .ok_or_else(|| corrupt("the block lies outside the bytes read for it".to_owned()))?;
    let raw = stored.slice(at..at + loc.stored_len as usize);
    chain_core::decode_block(&raw, &loc.block(), repo_key)
        .map(Bytes::from)
        .map_err(|e| corrupt(e.to_string()))
}

/// Like [`read_blocks`], for blocks spread over several objects (a file of a DIFF chain):
/// each item names its object. Blocks that lie back to back in one object are fetched with
/// one ranged GET (up to [`COALESCE_BYTES`]); `in_flight` such requests run at once, and
/// their blocks are decoded and verified on the blocking pool (decrypted and
/// authenticated under `repo_key` in an encrypted repository).
pub fn read_blocks_at(
    store: Arc<dyn ObjectStore>,
    blocks: Vec<(Path, BlockLocation)>,
    in_flight: usize,
    repo_key: Option<Arc<chain_core::RepoKey>>,
) -> impl Stream<Item = Result<Bytes, Error>> + Send {
    // Two stages: `in_flight` ranged reads at once, and their decoding DECODE_AHEAD ranges
    // ahead of the consumer. Decoding inside each read held every range's decoded blocks
    // beside its stored bytes until the consumer came to it.
    futures::stream::iter(coalesce(blocks))
        .map(move |(key, locs)| {
            let store = Arc::clone(&store);
            async move {
                let (start, end) = match (locs.first(), locs.last()) {
                    (Some(f), Some(l)) => (f.offset, l.range().end),
                    _ => return Ok((key, locs, 0, Bytes::new())),
                };
                let stored = read_range(store.as_ref(), &key, start..end).await?;
                Ok((key, locs, start, stored))
            }
        })
        .buffered(in_flight.max(1))
        .map(
            move |read: Result<(Path, Vec<BlockLocation>, u64, Bytes), Error>| {
                let repo_key = repo_key.clone();
                async move {
                    let (key, locs, start, stored) = read?;
                    tokio::task::spawn_blocking(move || {
                        locs.iter()
                            .map(|loc| decode_at(&stored, start, loc, &key, repo_key.as_deref()))
                            .collect::<Result<Vec<Bytes>, Error>>()
                    })
                    .await
                    .map_err(|e| Error::Task(e.to_string()))?
                }
            },
        )
        .buffered(DECODE_AHEAD)
        .map_ok(|blocks| futures::stream::iter(blocks.into_iter().map(Ok)))
        .try_flatten()
        .into_stream()
}
