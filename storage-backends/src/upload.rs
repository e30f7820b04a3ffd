//! The streaming upload pipeline.
//!
//! ```text
//! Stream<io::Result<Bytes>> -> blocks -> hash (blocking pool) -> known? skip
//!                                      -> compress new blocks (blocking pool, every core)
//!                                      -> appended in order -> parts -> multipart upload
//!                                         (N parts in flight; whole-object SHA-256 on the way)
//! ```
//!
//! [`ObjectWriter`] writes one object front to back; [`ArtifactWriter`] turns file streams
//! into stored blocks of one data object and remembers where each block went. Memory is
//! bounded by configuration: about `parts_in_flight x part_size`, plus one part being
//! filled, plus `2 x workers` blocks being hashed or compressed; never by the data size.
//!
//! Any error aborts the multipart upload ([`ObjectWriter::abort`] is also called on drop
//! paths by the owners). Objects smaller than one part are written with a single
//! create-only put.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chain_core::{BlockLocation, BlockRef, Compression, ObjectRef, ObjectRole, Sha256Digest};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UploadPart,
};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// S3's smallest part (all parts but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// S3's largest number of parts.
pub const MAX_PARTS: usize = 10_000;
/// Parts planned for a known size, leaving room for an estimate that was low.
const PLANNED_PARTS: u64 = 9_000;
/// With an unknown size, the part size doubles every this many parts.
const GROW_EVERY: usize = 1_000;

/// How uploads are shaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOptions {
    /// Uncompressed bytes per block (default 1 MiB).
    pub block_size: u32,
    /// Block compression (default zstd level 3).
    pub compression: Compression,
    /// Parts uploading at once (default 8).
    pub parts_in_flight: usize,
    /// The part size to start from (default 8 MiB; never below 5 MiB).
    pub part_size: usize,
    /// Blocks hashed or compressed at once (default: the number of cores).
    pub workers: usize,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            block_size: chain_core::DEFAULT_BLOCK_SIZE,
            compression: Compression::Zstd { level: 3 },
            parts_in_flight: 8,
            part_size: 8 << 20,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

impl UploadOptions {
    /// Checks the options once.
    pub fn validate(&self) -> Result<(), Error> {
        if self.block_size == 0 || self.block_size > chain_core::MAX_BLOCK_SIZE {
            return Err(Error::config(format!(
                "block size {} is out of bounds: choose 1 byte to 64 MiB (default 1 MiB)",
                self.block_size
            )));
        }
        if self.parts_in_flight == 0 || self.workers == 0 {
            return Err(Error::config(
                "parts in flight and workers must be at least 1",
            ));
        }
        if let Compression::Zstd { level } = self.compression
            && !(1..=22).contains(&level)
        {
            return Err(Error::config(format!(
                "zstd level {level} is out of bounds: choose 1 to 22"
            )));
        }
        Ok(())
    }

    /// The part size for an object of `expected` bytes (`None`: unknown, start small and
    /// grow), so that 10,000 parts are never reached and no part is below 5 MiB.
    pub fn part_size_for(&self, expected: Option<u64>) -> usize {
        let base = self.part_size.max(MIN_PART_SIZE);
        match expected {
            Some(total) => {
                let needed = total.div_ceil(PLANNED_PARTS);
                let mib = 1u64 << 20;
                (needed.div_ceil(mib) * mib).max(base as u64) as usize
            }
            None => base,
        }
    }
}

/// An object written by an [`ObjectWriter`]: key, size and SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenObject {
    /// Its key.
    pub key: Path,
    /// Its size.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: Sha256Digest,
}

impl WrittenObject {
    /// As a manifest entry.
    pub fn to_ref(&self, role: ObjectRole) -> ObjectRef {
        ObjectRef {
            role,
            key: self.key.to_string(),
            size: self.size,
            sha256: self.sha256,
        }
    }
}

/// Writes one object front to back, with parts in flight. See the module documentation.
pub struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    key: Path,
    upload: Option<Box<dyn MultipartUpload>>,
    buf: BytesMut,
    part_size: usize,
    grow: bool,
    parts: usize,
    in_flight: FuturesUnordered<UploadPart>,
    max_in_flight: usize,
    hasher: Option<Sha256>,
    size: u64,
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("key", &self.key)
            .field("size", &self.size)
            .field("parts", &self.parts)
            .finish()
    }
}

impl ObjectWriter {
    /// Starts writing `key` (nothing is sent until a part is full or [`finish`](Self::finish)).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        key: Path,
        options: &UploadOptions,
        expected: Option<u64>,
    ) -> Self {
        let part_size = options.part_size_for(expected);
        Self {
            store,
            key,
            upload: None,
            buf: BytesMut::with_capacity(part_size),
            part_size,
            grow: expected.is_none(),
            parts: 0,
            in_flight: FuturesUnordered::new(),
            max_in_flight: options.parts_in_flight,
            hasher: Some(Sha256::new()),
            size: 0,
        }
    }

    /// Bytes written so far (the offset of the next byte).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The object's key.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// Appends `bytes`, sending full parts; waits when `parts_in_flight` parts are uploading.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = self.part_size - self.buf.len();
            let take = room.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == self.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn hash(&mut self, part: Bytes) -> Result<Bytes, Error> {
        let mut hasher = self
            .hasher
            .take()
            .expect("the hasher is back after every part");
        let (hasher, part) = tokio::task::spawn_blocking(move || {
            hasher.update(&part);
            (hasher, part)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?;
        self.hasher = Some(hasher);
        Ok(part)
    }

    async fn send_part(&mut self) -> Result<(), Error> {
        let next_size = if self.grow && (self.parts + 1).is_multiple_of(GROW_EVERY) {
            self.part_size * 2
        } else {
            self.part_size
        };
        let part = std::mem::replace(&mut self.buf, BytesMut::with_capacity(next_size)).freeze();
        self.part_size = next_size;
        let part = self.hash(part).await?;
        if self.upload.is_none() {
            let upload = self
                .store
                .put_multipart(&self.key)
                .await
                .map_err(|e| Error::store("starting the upload of", &self.key, e))?;
            self.upload = Some(upload);
        }
        if self.parts >= MAX_PARTS {
            return Err(Error::config(format!(
                "{} would need more than {MAX_PARTS} parts: raise the part size",
                self.key
            )));
        }
        while self.in_flight.len() >= self.max_in_flight {
            self.wait_one().await?;
        }
        let upload = self.upload.as_mut().expect("started above");
        self.in_flight.push(upload.put_part(PutPayload::from(part)));
        self.parts += 1;
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<(), Error> {
        if let Some(done) = self.in_flight.next().await {
            done.map_err(|e| Error::store("uploading a part of", &self.key, e))?;
        }
        Ok(())
    }

    /// Sends what is left and completes the object. A small object (no part sent yet) is
    /// written with one create-only put. On error the multipart upload is aborted.
    pub async fn finish(mut self) -> Result<WrittenObject, Error> {
        match self.finish_inner().await {
            Ok(w) => Ok(w),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn finish_inner(&mut self) -> Result<WrittenObject, Error> {
        if self.upload.is_none() {
            let body = std::mem::take(&mut self.buf).freeze();
            let body = self.hash(body).await?;
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            self.store
                .put_opts(&self.key, PutPayload::from(body), opts)
                .await
                .map_err(|e| Error::store("writing", &self.key, e))?;
        } else {
            if !self.buf.is_empty() {
                let part = std::mem::take(&mut self.buf).freeze();
                let part = self.hash(part).await?;
                while self.in_flight.len() >= self.max_in_flight {
                    self.wait_one().await?;
                }
                let upload = self.upload.as_mut().expect("started");
                self.in_flight.push(upload.put_part(PutPayload::from(part)));
                self.parts += 1;
            }
            while !self.in_flight.is_empty() {
                self.wait_one().await?;
            }
            let upload = self.upload.as_mut().expect("started");
            upload
                .complete()
                .await
                .map_err(|e| Error::store("completing the upload of", &self.key, e))?;
            self.upload = None;
        }
        let hasher = self.hasher.take().expect("hasher present");
        Ok(WrittenObject {
            key: self.key.clone(),
            size: self.size,
            sha256: Sha256Digest(hasher.finalize().into()),
        })
    }

    /// Aborts the multipart upload, if one was started (best effort: a failed abort is
    /// logged; the store's lifecycle rules or `catena gc` clean up what is left).
    pub async fn abort(&mut self) {
        self.in_flight.clear();
        if let Some(mut upload) = self.upload.take()
            && let Err(e) = upload.abort().await
        {
            tracing::warn!(key = %self.key, error = %e, "aborting the multipart upload failed; the store's lifecycle rules or a garbage collection must remove it");
        }
    }
}

/// Turns file streams into the stored blocks of one data object. Blocks whose content is
/// already known (in the parent's state, or stored earlier in this artifact) are not stored
/// again.
pub struct ArtifactWriter {
    data: ObjectWriter,
    known: HashSet<Sha256Digest>,
    locations: Vec<BlockLocation>,
    options: UploadOptions,
    stored_block_bytes: u64,
}

impl std::fmt::Debug for ArtifactWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactWriter")
            .field("data", &self.data)
            .field("blocks", &self.locations.len())
            .finish()
    }
}

/// What an [`ArtifactWriter`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredData {
    /// The data object, `None` when no block was new.
    pub object: Option<WrittenObject>,
    /// Where each stored block is, in offset order.
    pub locations: Vec<BlockLocation>,
    /// Uncompressed bytes of the stored blocks.
    pub block_bytes: u64,
}

impl ArtifactWriter {
    /// Starts an artifact's data object at `key`. `known` holds the digests of blocks that
    /// need not be stored (the parent state's); `expected` is the expected input size.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        key: Path,
        known: HashSet<Sha256Digest>,
        options: UploadOptions,
        expected: Option<u64>,
    ) -> Result<Self, Error> {
        options.validate()?;
        Ok(Self {
            data: ObjectWriter::new(store, key, &options, expected),
            known,
            locations: Vec::new(),
            options,
            stored_block_bytes: 0,
        })
    }

    /// Streams one file's content into blocks; returns the file's blocks in order.
    pub async fn write_stream<S>(&mut self, input: S) -> Result<Vec<BlockRef>, Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send,
    {
        let block_size = self.options.block_size as usize;
        let compression = self.options.compression;
        let depth = self.options.workers * 2;
        let mut known = std::mem::take(&mut self.known);
        let mut refs = Vec::new();
        let result = {
            let blocks = rechunk(input.map_err(Error::Input), block_size);
            let hashed = blocks
                .map_ok(|raw| async move {
                    tokio::task::spawn_blocking(move || {
                        let digest = Sha256Digest::of(&raw);
                        (raw, digest)
                    })
                    .await
                    .map_err(|e| Error::Task(e.to_string()))
                })
                .try_buffered(depth);
            // In order: decide new or known, then compress the new ones in parallel.
            let known = &mut known;
            let encoded = hashed
                .map_ok(move |(raw, digest)| {
                    let block = BlockRef {
                        digest,
                        len: raw.len() as u32,
                    };
                    let is_new = known.insert(digest);
                    async move {
                        if !is_new {
                            return Ok((block, None));
                        }
                        let encoded = tokio::task::spawn_blocking(move || {
                            chain_core::encode_block(&raw, compression)
                        })
                        .await
                        .map_err(|e| Error::Task(e.to_string()))??;
                        Ok((block, Some(encoded.bytes)))
                    }
                })
                .try_buffered(depth);
            let mut encoded = Box::pin(encoded);
            let mut result = Ok(());
            while let Some(item) = encoded.next().await {
                let (block, bytes) = match item {
                    Ok(x) => x,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                };
                if let Some(bytes) = bytes {
                    let offset = self.data.size();
                    if let Err(e) = self.data.write(&bytes).await {
                        result = Err(e);
                        break;
                    }
                    self.stored_block_bytes += u64::from(block.len);
                    self.locations.push(BlockLocation {
                        digest: block.digest,
                        len: block.len,
                        offset,
                        stored_len: bytes.len() as u32,
                    });
                }
                refs.push(block);
            }
            result
        };
        self.known = known;
        result.map(|()| refs)
    }

    /// Completes the data object (if any block was stored).
    pub async fn finish(mut self) -> Result<StoredData, Error> {
        let object = if self.locations.is_empty() {
            self.data.abort().await;
            None
        } else {
            Some(self.data.finish().await?)
        };
        Ok(StoredData {
            object,
            locations: self.locations,
            block_bytes: self.stored_block_bytes,
        })
    }

    /// Aborts the data object's upload.
    pub async fn abort(mut self) {
        self.data.abort().await;
    }
}

/// Regroups a byte stream into blocks of exactly `size` bytes (the last may be shorter;
/// an empty input gives no block).
pub fn rechunk<S>(input: S, size: usize) -> impl Stream<Item = Result<Bytes, Error>> + Send
where
    S: Stream<Item = Result<Bytes, Error>> + Send,
{
    futures::stream::unfold(
        (Box::pin(input), BytesMut::new(), false),
        move |(mut input, mut buf, mut done)| async move {
            loop {
                if buf.len() >= size {
                    let block = buf.split_to(size).freeze();
                    return Some((Ok(block), (input, buf, done)));
                }
                if done {
                    if buf.is_empty() {
                        return None;
                    }
                    let block = buf.split().freeze();
                    return Some((Ok(block), (input, buf, done)));
                }
                match input.next().await {
                    Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                    Some(Err(e)) => {
                        done = true;
                        buf.clear();
                        return Some((Err(e), (input, buf, done)));
                    }
                    None => done = true,
                }
            }
        },
    )
}
