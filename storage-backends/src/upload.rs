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
//! bounded by configuration: at most `parts_in_flight` parts of `part_size` bytes are held
//! (the one being filled counts: while it fills, at most `parts_in_flight - 1` upload; with
//! 1, reading waits for each upload), plus about `2 x workers` blocks being hashed,
//! compressed or handed over and as many recycled block buffers; never by the data size.
//! Part and block buffers are allocated once per writer and reused (a part's buffer returns
//! when its upload drops it), so that the allocator is not left with heaps fragmented by
//! thousands of block-sized allocations on many threads: that, not the data held, was a
//! third of a backup's peak RSS (docs/DESIGN.md, "Why are parts copied into reused
//! buffers").
//!
//! Any error aborts the multipart upload ([`ObjectWriter::abort`] is also called on drop
//! paths by the owners). Objects smaller than one part are written with a single
//! create-only put; one that finds the key taken reads it back, and identical bytes there
//! (a retry of ours whose first answer was lost) are success, others a conflict.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chain_core::{BlockLocation, BlockRef, Compression, ObjectRef, ObjectRole, Sha256Digest};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, UploadPart};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::buffers::BufferPool;

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
    /// Parts held at once, the one being filled included (default 8): while one fills, the
    /// others upload.
    pub parts_in_flight: usize,
    /// The part size to start from (default 8 MiB; never below 5 MiB).
    pub part_size: usize,
    /// Blocks hashed or compressed at once (default: the number of cores).
    pub workers: usize,
    /// The repository's key when it is encrypted: blocks are then identified by their keyed
    /// digest and stored encrypted. The engine sets it from the repository (a value given
    /// in options is replaced).
    pub key: Option<Arc<chain_core::RepoKey>>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            block_size: chain_core::DEFAULT_BLOCK_SIZE,
            compression: Compression::Zstd { level: 3 },
            parts_in_flight: 8,
            part_size: 8 << 20,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            key: None,
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
    /// Its SHA-256, when the writer computed one (not for a format-2 data object, whose
    /// records carry their own digests: see [`ObjectWriter::without_digest`]).
    pub sha256: Option<Sha256Digest>,
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
    /// The part being filled (no capacity until the first byte of a part arrives).
    part: Vec<u8>,
    /// Buffers of parts whose upload is done, for the next parts.
    pool: Arc<BufferPool>,
    part_size: usize,
    grow: bool,
    parts: usize,
    in_flight: FuturesUnordered<UploadPart>,
    max_in_flight: usize,
    hasher: Option<Sha256>,
    /// Whether the whole object is hashed ([`ObjectWriter::without_digest`] turns it off).
    hashed: bool,
    size: u64,
    /// The request that starts the multipart upload, while it is under way: it runs in its
    /// own task, so that a caller dropping [`ObjectWriter::write_bytes`] mid-way (a cancel)
    /// cannot lose an upload the server has started; [`ObjectWriter::abort`] waits for it.
    starting: Option<tokio::task::JoinHandle<object_store::Result<Box<dyn MultipartUpload>>>>,
    /// A part was being sent when the caller dropped the write (a cancel): its bytes left
    /// the buffer, so the object can only be aborted, never completed.
    torn: bool,
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
            part: Vec::new(),
            // Each part holds its buffer until its upload drops it: never more than
            // parts_in_flight at once.
            pool: BufferPool::new(options.parts_in_flight.max(1)),
            part_size,
            grow: expected.is_none(),
            parts: 0,
            in_flight: FuturesUnordered::new(),
            max_in_flight: options.parts_in_flight,
            hasher: Some(Sha256::new()),
            hashed: true,
            size: 0,
            starting: None,
            torn: false,
        }
    }

    /// Does not hash the whole object (a format-2 data object: each record carries its own
    /// SHA-256 and the index pins the record list; hashing every byte a second time cost
    /// about a sixth of a backup's CPU). The written object then has no digest.
    pub fn without_digest(mut self) -> Self {
        self.hasher = None;
        self.hashed = false;
        self
    }

    /// Plans the rest of an object begun without an expected size, now that its total is
    /// known (a listing that ended after the writing began): the remaining bytes are spread
    /// over the parts still allowed, and the part size stops doubling. The part size never
    /// shrinks. Does nothing for an object begun with an expected size.
    pub fn expect_total(&mut self, total: u64) {
        if !self.grow {
            return;
        }
        self.grow = false;
        let parts_left = PLANNED_PARTS.saturating_sub(self.parts as u64).max(1);
        let needed = total.saturating_sub(self.size).div_ceil(parts_left);
        let mib = 1u64 << 20;
        let needed =
            usize::try_from(needed.div_ceil(mib).saturating_mul(mib)).unwrap_or(usize::MAX);
        self.part_size = self.part_size.max(needed);
    }

    /// Bytes written so far (the offset of the next byte).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The object's key.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// Appends `bytes` to the part being filled, sending it when full. Before a new part
    /// is begun, waits until fewer than `parts_in_flight` parts are uploading.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.part.capacity() == 0 {
                self.begin_part().await?;
            }
            let room = self.part_size - self.part.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.part.extend_from_slice(now);
            bytes = rest;
            if self.part.len() >= self.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    /// [`write`](Self::write) for bytes the caller already holds as [`Bytes`] (copied into
    /// the part like any other).
    pub async fn write_bytes(&mut self, bytes: Bytes) -> Result<(), Error> {
        self.write(&bytes).await
    }

    /// Takes a buffer for the next part, once fewer than `parts_in_flight` parts (this one
    /// counted) are held.
    async fn begin_part(&mut self) -> Result<(), Error> {
        while self.in_flight.len() >= self.max_in_flight.max(1) {
            self.wait_one().await?;
        }
        self.part = self.pool.take(self.part_size);
        Ok(())
    }

    /// Feeds the part to the whole-object hash (on the blocking pool) and returns it as a
    /// payload whose buffer goes back to the pool once the upload drops it.
    async fn take_hashed(&mut self) -> Result<PutPayload, Error> {
        let part = std::mem::take(&mut self.part);
        let part = if self.hashed {
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
            part
        } else {
            part
        };
        Ok(PutPayload::from(self.pool.share(part)))
    }

    async fn send_part(&mut self) -> Result<(), Error> {
        if self.grow && (self.parts + 1).is_multiple_of(GROW_EVERY) {
            self.part_size *= 2;
        }
        // Cleared when the part is handed over: a caller dropping this future in between
        // leaves the flag set, and finish refuses.
        self.torn = true;
        let part = self.take_hashed().await?;
        if self.upload.is_none() {
            if self.starting.is_none() {
                let (store, key) = (Arc::clone(&self.store), self.key.clone());
                self.starting = Some(tokio::spawn(async move { store.put_multipart(&key).await }));
            }
            let started = self
                .starting
                .as_mut()
                .expect("set above")
                .await
                .map_err(|e| Error::Task(e.to_string()));
            self.starting = None;
            let upload =
                started?.map_err(|e| Error::store("starting the upload of", &self.key, e))?;
            self.upload = Some(upload);
        }
        if self.parts >= MAX_PARTS {
            return Err(Error::config(format!(
                "{} would need more than {MAX_PARTS} parts: raise the part size",
                self.key
            )));
        }
        // begin_part made room: at most parts_in_flight - 1 others are uploading.
        let upload = self.upload.as_mut().expect("started above");
        self.in_flight.push(upload.put_part(part));
        self.parts += 1;
        self.torn = false;
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<(), Error> {
        if let Some(done) = self.in_flight.next().await {
            done.map_err(|e| Error::store("uploading a part of", &self.key, e))?;
        }
        Ok(())
    }

    /// Sends what is left and completes the object. A small object (no part sent yet) is
    /// written with one create-only put, read back if the key is taken (identical bytes
    /// are success). On error the multipart upload is aborted.
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
        if self.torn {
            return Err(Error::Cancelled);
        }
        if self.upload.is_none() {
            let body = self.take_hashed().await?;
            crate::commit::put_create_payload(self.store.as_ref(), &self.key, body).await?;
        } else {
            if !self.part.is_empty() {
                self.send_part().await?;
            }
            while !self.in_flight.is_empty() {
                self.wait_one().await?;
            }
            let upload = self.upload.as_mut().expect("started");
            let started = std::time::Instant::now();
            upload
                .complete()
                .await
                .map_err(|e| Error::store("completing the upload of", &self.key, e))?;
            // Servers differ most here (s3s-fs assembles the object on one thread now).
            tracing::debug!(key = %self.key, seconds = started.elapsed().as_secs_f64(), "multipart upload completed");
            self.upload = None;
        }
        Ok(WrittenObject {
            key: self.key.clone(),
            size: self.size,
            sha256: self
                .hasher
                .take()
                .filter(|_| self.hashed)
                .map(|h| Sha256Digest(h.finalize().into())),
        })
    }

    /// Aborts the multipart upload, if one was started (best effort: a failed abort is
    /// logged; the store's lifecycle rules or `catena gc` clean up what is left).
    pub async fn abort(&mut self) {
        self.in_flight.clear();
        if let Some(starting) = self.starting.take()
            && let Ok(Ok(upload)) = starting.await
        {
            self.upload = Some(upload);
        }
        if let Some(mut upload) = self.upload.take()
            && let Err(e) = upload.abort().await
        {
            tracing::warn!(key = %self.key, error = %e, "aborting the multipart upload failed; the store's lifecycle rules or a garbage collection must remove it");
        }
    }
}

/// The digests of blocks an artifact need not store (its parent state's): one sorted vector,
/// 32 bytes a block where a hash set took ~70, searched by binary search (a DIFF of a
/// million files holds one per file for its whole run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownBlocks(Vec<Sha256Digest>);

impl KnownBlocks {
    /// The set of `digests` (in any order, repeats allowed).
    pub fn new(mut digests: Vec<Sha256Digest>) -> Self {
        digests.sort_unstable();
        digests.dedup();
        digests.shrink_to_fit();
        Self(digests)
    }

    /// Whether `digest` is known.
    pub fn contains(&self, digest: &Sha256Digest) -> bool {
        self.0.binary_search(digest).is_ok()
    }

    /// Number of distinct digests.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no block is known (a FULL's).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Sha256Digest> for KnownBlocks {
    fn from_iter<I: IntoIterator<Item = Sha256Digest>>(digests: I) -> Self {
        Self::new(digests.into_iter().collect())
    }
}

impl From<HashSet<Sha256Digest>> for KnownBlocks {
    fn from(digests: HashSet<Sha256Digest>) -> Self {
        digests.into_iter().collect()
    }
}

/// Turns file streams into the stored blocks of one data object. Blocks whose content is
/// already known (in the parent's state, or stored earlier in this artifact) are not stored
/// again.
pub struct ArtifactWriter {
    data: ObjectWriter,
    cancel: CancellationToken,
    /// Blocks the parent's state has: never stored again.
    known: Arc<KnownBlocks>,
    /// Blocks stored in this artifact so far: their places in `locations`, hashed by
    /// their digest's first 8 bytes and compared by the whole digest there (4 bytes a
    /// block in the table, where a set of digests held 32 and took ~70).
    stored_here: hashbrown::HashTable<u32>,
    locations: Vec<BlockLocation>,
    options: UploadOptions,
    stored_block_bytes: u64,
    /// Buffers of encoded blocks, back from the data object once copied into a part.
    buffers: Arc<BufferPool>,
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
        known: impl Into<KnownBlocks>,
        options: UploadOptions,
        expected: Option<u64>,
    ) -> Result<Self, Error> {
        options.validate()?;
        Ok(Self {
            data: ObjectWriter::new(store, key, &options, expected).without_digest(),
            cancel: CancellationToken::new(),
            known: Arc::new(known.into()),
            stored_here: hashbrown::HashTable::new(),
            buffers: BufferPool::new(2 * options.workers + 2),
            locations: Vec::new(),
            options,
            stored_block_bytes: 0,
        })
    }

    /// The input's total size, once known when it was not at [`new`](Self::new) (see
    /// [`ObjectWriter::expect_total`]).
    pub fn expect_total(&mut self, total: u64) {
        self.data.expect_total(total);
    }

    /// Cancels with `token`: once it is cancelled, [`write_stream`](Self::write_stream) and
    /// [`finish`](Self::finish) return [`Error::Cancelled`]; the caller then calls
    /// [`abort`](Self::abort), which leaves nothing behind (the multipart upload is aborted;
    /// nothing was committed).
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Streams one file's content into blocks; returns the file's blocks in order. When the
    /// store fails or the upload is cancelled, the data object's upload is aborted before
    /// returning; when the input fails ([`Error::Input`]) the writer stays usable and the
    /// caller chooses between [`finish`](Self::finish) and [`abort`](Self::abort).
    pub async fn write_stream<S>(&mut self, input: S) -> Result<Vec<BlockRef>, Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let block_size = self.options.block_size as usize;
        self.write_inner(rechunk(input.map_err(Error::Input), block_size))
            .await
    }

    /// Like [`write_stream`](Self::write_stream), but each item is one block as it is (for
    /// aggregation, which must keep a chain's block boundaries so the state digest stays
    /// the same). Every item must hold 1 byte to 64 MiB.
    pub async fn write_blocks<S>(&mut self, blocks: S) -> Result<Vec<BlockRef>, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Send + 'static,
    {
        self.write_inner(blocks).await
    }

    /// Many small files at once, each of at most one block ([`UploadOptions::block_size`]
    /// bytes): their blocks are hashed and compressed on every worker together, then stored
    /// in the order given; returns each file's blocks (none for an empty file). One trip to
    /// the workers per batch instead of one per file: with files of a few KiB the trips,
    /// not the bytes, were the cost. Errors as [`write_stream`](Self::write_stream)'s.
    pub async fn write_small_files(
        &mut self,
        files: Vec<Bytes>,
    ) -> Result<Vec<Vec<BlockRef>>, Error> {
        let block_size = self.options.block_size as usize;
        if let Some(big) = files.iter().find(|f| f.len() > block_size) {
            return Err(Error::config(format!(
                "write_small_files takes files of at most one block ({block_size} bytes), not {}",
                big.len()
            )));
        }
        let workers = self.options.workers.max(1);
        let per_worker = files.len().div_ceil(workers).max(1);
        let compression = self.options.compression;
        let mut tasks = Vec::new();
        for chunk in files.chunks(per_worker) {
            let chunk = chunk.to_vec();
            let known = Arc::clone(&self.known);
            let key = self.options.key.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                chunk
                    .iter()
                    .filter(|raw| !raw.is_empty())
                    .map(|raw| encode_unless_known(raw, &known, compression, key.as_deref(), None))
                    .collect::<Result<Vec<_>, Error>>()
            }));
        }
        let mut encoded = Vec::with_capacity(files.len());
        let mut failed = None;
        for task in tasks {
            match task.await {
                Ok(Ok(blocks)) => encoded.extend(blocks),
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(e) => failed = failed.or(Some(Error::Task(e.to_string()))),
            }
        }
        if self.cancel.is_cancelled() {
            failed = Some(Error::Cancelled);
        }
        if let Some(e) = failed {
            self.data.abort().await;
            return Err(e);
        }
        let mut encoded = encoded.into_iter();
        let mut out = Vec::with_capacity(files.len());
        for file in &files {
            if file.is_empty() {
                out.push(Vec::new());
                continue;
            }
            let Some((block, bytes)) = encoded.next() else {
                self.data.abort().await;
                return Err(Error::Task("a block of a small file went missing".into()));
            };
            if let Err(e) = self.store_block(block, bytes).await {
                self.data.abort().await;
                return Err(e);
            }
            out.push(vec![block]);
        }
        Ok(out)
    }

    /// Appends one encoded block to the data object, unless the parent or this artifact
    /// already has it (`bytes` is `None` when the parent has it).
    async fn store_block(&mut self, block: BlockRef, bytes: Option<Vec<u8>>) -> Result<(), Error> {
        // A block seen earlier in this artifact is stored once.
        let locations = &self.locations;
        let seen = self
            .stored_here
            .find(table_hash(&block.digest), |&i| {
                locations[i as usize].digest == block.digest
            })
            .is_some();
        if let Some(bytes) = bytes.filter(|_| !seen) {
            let Ok(place) = u32::try_from(self.locations.len()) else {
                return Err(Error::config(
                    "more than 4,294,967,295 blocks in one artifact: choose a larger block size",
                ));
            };
            let offset = self.data.size();
            let stored_len = bytes.len() as u32;
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => Err(Error::Cancelled),
                r = self.data.write(&bytes) => r,
            }?;
            self.buffers.give(bytes);
            self.stored_block_bytes += u64::from(block.len);
            self.locations.push(BlockLocation {
                digest: block.digest,
                len: block.len,
                offset,
                stored_len,
            });
            let locations = &self.locations;
            self.stored_here
                .insert_unique(table_hash(&block.digest), place, |&i| {
                    table_hash(&locations[i as usize].digest)
                });
        }
        Ok(())
    }

    async fn write_inner<S>(&mut self, blocks: S) -> Result<Vec<BlockRef>, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Send + 'static,
    {
        let compression = self.options.compression;
        // One block per worker plus one ready: more only costs memory (measured: the same
        // throughput at 2x workers, ~25 MiB more peak RSS).
        let depth = self.options.workers + 1;
        let known = Arc::clone(&self.known);
        let key = self.options.key.clone();
        let buffers = Arc::clone(&self.buffers);
        // Encoding runs in its own task, ahead of the upload, `depth` blocks at a time on the
        // blocking pool (hash, then compress unless the parent has the block), handing
        // blocks over in order through a channel of one: while the upload waits for a
        // part's room, the encoded blocks wait in the buffered stream, not in a queue too.
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<Result<(BlockRef, Option<Vec<u8>>), Error>>(1);
        let encoder = tokio::spawn(async move {
            let encoded = blocks
                .map_ok(move |raw| {
                    let known = Arc::clone(&known);
                    let key = key.clone();
                    let buffers = Arc::clone(&buffers);
                    async move {
                        tokio::task::spawn_blocking(move || {
                            encode_unless_known(
                                &raw,
                                &known,
                                compression,
                                key.as_deref(),
                                Some(&buffers),
                            )
                        })
                        .await
                        .map_err(|e| Error::Task(e.to_string()))?
                    }
                })
                .try_buffered(depth);
            futures::pin_mut!(encoded);
            while let Some(item) = encoded.next().await {
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        let mut refs = Vec::new();
        let result = loop {
            let item = tokio::select! {
                biased;
                () = self.cancel.cancelled() => Some(Err(Error::Cancelled)),
                item = rx.recv() => item,
            };
            let Some(item) = item else { break Ok(()) };
            let (block, bytes) = match item {
                Ok(x) => x,
                Err(e) => break Err(e),
            };
            if let Err(e) = self.store_block(block, bytes).await {
                break Err(e);
            }
            refs.push(block);
        };
        drop(rx);
        if result.is_err() {
            encoder.abort();
        }
        let joined = match encoder.await {
            Ok(()) => Ok(()),
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(Error::Task(e.to_string())),
        };
        match result.and(joined) {
            Ok(()) => Ok(refs),
            // The input failed: the writer is intact; the caller decides (skip the file, keep
            // the pieces with keepFailed, or abort).
            Err(e @ Error::Input(_)) => Err(e),
            Err(e) => {
                // The store or a worker failed, or the upload was cancelled: nothing
                // half-written stays behind, whatever the caller does next.
                self.data.abort().await;
                Err(e)
            }
        }
    }

    /// Completes the data object (if any block was stored).
    pub async fn finish(mut self) -> Result<StoredData, Error> {
        if self.cancel.is_cancelled() {
            self.data.abort().await;
            return Err(Error::Cancelled);
        }
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

/// A digest's hash in a table: its first 8 bytes (SHA-256 output, keyed or not, is uniform;
/// no file's content can steer it).
fn table_hash(digest: &Sha256Digest) -> u64 {
    let d = &digest.0;
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// One block's identity, and its record unless `known` (the parent's blocks) has it: the
/// work of a writer's workers, for streamed files and batches of small ones alike. The
/// record is encoded into a recycled buffer of `buffers` when given (streamed files' blocks),
/// into a new one of its size otherwise (small files' few KiB).
fn encode_unless_known(
    raw: &[u8],
    known: &KnownBlocks,
    compression: Compression,
    key: Option<&chain_core::RepoKey>,
    buffers: Option<&BufferPool>,
) -> Result<(BlockRef, Option<Vec<u8>>), Error> {
    let digest = chain_core::block_digest(raw, key);
    let block = BlockRef {
        digest,
        len: raw.len() as u32,
    };
    if known.contains(&digest) {
        return Ok((block, None));
    }
    let Some(buffers) = buffers else {
        let encoded = chain_core::encode_hashed_block(raw, digest, compression, key)?;
        return Ok((block, Some(encoded.bytes)));
    };
    let mut buf = buffers.take(0);
    let encoded = chain_core::encode_hashed_block_into(raw, digest, compression, key, &mut buf);
    match encoded {
        Ok(_) => Ok((block, Some(buf))),
        Err(e) => {
            buffers.give(buf);
            Err(e.into())
        }
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
                    // Aligned input (the common case: readers hand out whole blocks) is
                    // split without copying.
                    Some(Ok(mut bytes)) if buf.is_empty() && bytes.len() >= size => {
                        let block = bytes.split_to(size);
                        buf.extend_from_slice(&bytes);
                        return Some((Ok(block), (input, buf, done)));
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_never_needs_more_than_10000_parts_nor_goes_below_5_mib() {
        let o = UploadOptions {
            part_size: 1 << 20,
            ..UploadOptions::default()
        };
        assert_eq!(o.part_size_for(None), MIN_PART_SIZE);
        assert_eq!(o.part_size_for(Some(10)), MIN_PART_SIZE);
        for total in [1u64 << 30, 100 << 30, 1 << 40, 5 << 40] {
            let part = o.part_size_for(Some(total)) as u64;
            assert!(part >= MIN_PART_SIZE as u64);
            assert!(total.div_ceil(part) <= PLANNED_PARTS, "{total}: {part}");
        }
    }

    #[test]
    fn unknown_sizes_grow_the_part_size_within_the_part_limit() {
        // Parts double every 1000: 10,000 parts of 8 MiB growing reach far past 5 TiB.
        let mut part = 8u64 << 20;
        let mut total = 0u64;
        for n in 1..=MAX_PARTS {
            total += part;
            if n.is_multiple_of(GROW_EVERY) {
                part *= 2;
            }
        }
        assert!(total > 5 << 40);
    }

    /// A writer begun without an expected size (a listing still under way) plans the rest
    /// once the total is known: what is left spread over the parts still allowed, never
    /// smaller parts, no more doubling; a writer begun with a size keeps its plan.
    #[test]
    fn a_total_known_late_plans_the_remaining_parts() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let options = UploadOptions::default();
        let base = options.part_size_for(None);
        let mib = 1usize << 20;
        let mut w = ObjectWriter::new(Arc::clone(&store), Path::from("a"), &options, None);
        w.parts = 5_000;
        w.size = 5_000 * base as u64;
        w.expect_total(w.size + 4_000 * 20 * mib as u64);
        assert_eq!((w.part_size, w.grow), (20 * mib, false));
        w.expect_total(u64::MAX);
        assert_eq!(w.part_size, 20 * mib, "planned once");

        let mut w = ObjectWriter::new(Arc::clone(&store), Path::from("b"), &options, None);
        w.expect_total(1 << 30);
        assert_eq!(
            (w.part_size, w.grow),
            (base, false),
            "never below the part size"
        );

        let mut w = ObjectWriter::new(store, Path::from("c"), &options, Some(1 << 30));
        w.expect_total(1 << 50);
        assert_eq!(
            (w.part_size, w.grow),
            (base, false),
            "a size given first stays"
        );
    }

    #[tokio::test]
    async fn rechunk_cuts_exact_blocks_whatever_the_input_chunks() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        for chunk in [1usize, 7, 1000, 4096, 10_000, 20_000] {
            let input = futures::stream::iter(
                data.chunks(chunk)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect::<Vec<_>>(),
            );
            let blocks: Vec<Bytes> = rechunk(input, 4096).try_collect().await.expect("blocks");
            let lens: Vec<usize> = blocks.iter().map(Bytes::len).collect();
            assert_eq!(lens, vec![4096, 4096, 1808], "input chunks of {chunk}");
            assert_eq!(blocks.concat(), data);
        }
        let empty: Vec<Result<Bytes, Error>> = vec![];
        let none: Vec<Bytes> = rechunk(futures::stream::iter(empty), 4096)
            .try_collect()
            .await
            .expect("none");
        assert!(none.is_empty());
    }

    /// The memory promise of the module documentation: while uploads are slow, a writer
    /// holds at most `parts_in_flight` parts, the one being filled included (it used to
    /// fill one more while `parts_in_flight` uploaded).
    #[tokio::test(start_paused = true)]
    async fn at_most_parts_in_flight_parts_are_held_the_one_being_filled_included() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let memory: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let store: Arc<dyn ObjectStore> = Arc::new(
            crate::FaultStore::new(Arc::clone(&memory), None, crate::Fault::Error)
                .with_part_gate(Arc::clone(&gate)),
        );
        let options = UploadOptions {
            parts_in_flight: 2,
            part_size: MIN_PART_SIZE,
            ..UploadOptions::default()
        };
        let data: Vec<u8> = (0..4 * MIN_PART_SIZE + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        let accepted = Arc::new(AtomicUsize::new(0));
        let writer = tokio::spawn({
            let (data, accepted) = (data.clone(), Arc::clone(&accepted));
            async move {
                let mut w = ObjectWriter::new(store, Path::from("o"), &options, None);
                for chunk in data.chunks(64 << 10) {
                    w.write(chunk).await?;
                    accepted.fetch_add(chunk.len(), Ordering::SeqCst);
                }
                w.finish().await
            }
        });
        // No upload finishes: the writer runs until it waits for room (the paused clock
        // moves on only once every task waits).
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2 * MIN_PART_SIZE,
            "two parts held: one uploading and one filled, then sent; the third waits"
        );
        gate.add_permits(1);
        let written = writer.await.expect("joined").expect("written");
        assert_eq!(written.size, data.len() as u64);
        let stored = memory
            .get(&Path::from("o"))
            .await
            .expect("stored")
            .bytes()
            .await
            .expect("read");
        assert!(
            stored == data,
            "the object holds the bytes written, in order"
        );
        assert_eq!(written.sha256, Some(Sha256Digest::of(&data)));
    }

    #[tokio::test]
    async fn a_small_object_whose_key_is_taken_is_read_back() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let key = Path::from("o");
        let write = |bytes: Vec<u8>| {
            let store = Arc::clone(&store);
            let key = key.clone();
            async move {
                let mut w = ObjectWriter::new(store, key, &UploadOptions::default(), None);
                // In pieces: the single put's payload is the part, whatever the writes were.
                for chunk in bytes.chunks(1000) {
                    w.write(chunk).await?;
                }
                w.finish().await
            }
        };
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let first = write(bytes.clone()).await.expect("written");
        // A retry of ours whose first answer was lost: the same bytes are success.
        let again = write(bytes.clone())
            .await
            .expect("the same bytes are there");
        assert_eq!(first, again);
        // Other bytes (one differs; or one more) are a conflict, and the object is untouched.
        let mut other = bytes.clone();
        other[5_000] ^= 1;
        let mut longer = bytes.clone();
        longer.push(0);
        for different in [other, longer, bytes[..9_999].to_vec()] {
            let e = write(different).await.expect_err("other bytes");
            assert!(matches!(e, Error::Conflict { .. }), "{e}");
        }
        let stored = store
            .get(&key)
            .await
            .expect("there")
            .bytes()
            .await
            .expect("read");
        assert!(stored == bytes);
    }
}
