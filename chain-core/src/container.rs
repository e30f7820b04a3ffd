//! The artifact container: how blocks and the index are laid out in objects. Pure bytes in,
//! bytes out; every decoder treats its input as hostile. Specified in `docs/FORMAT.md`
//! ("Artifact container, version 1").
//!
//! An artifact has at most one **data object**, a plain concatenation of blocks written
//! front to back in one pass, and one **index object**, written after the data object is
//! complete. Each block is self-describing (a 48-byte header with its lengths, codec and
//! SHA-256), so any block can be read alone with one ranged read and verified on its own;
//! the index says where each block is.

use hmac::Mac as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::crypto::{ENCRYPTION_OVERHEAD, NONCE_LEN, RepoKey, TAG_LEN};
use crate::{BlockRef, ChangeSet, Compression, Error, Sha256Digest};

/// Version of the container format (block header and index header) of a plain repository.
pub const CONTAINER_VERSION: u8 = 1;
/// Version of the container format of an encrypted repository: the payload of a record
/// and the body of an index are sealed (nonce, ciphertext, tag, under the repository's
/// [`crate::crypto::RecordCipher`]) with the 48-byte header as associated data, and the
/// header's digest is keyed.
pub const ENCRYPTED_CONTAINER_VERSION: u8 = 2;
/// Magic bytes that start every block.
pub const BLOCK_MAGIC: [u8; 4] = *b"CTNB";
/// Magic bytes that start an index object.
pub const INDEX_MAGIC: [u8; 4] = *b"CTNI";
/// Length of a block header in bytes.
pub const BLOCK_HEADER_LEN: usize = 48;
/// Length of an index header in bytes.
pub const INDEX_HEADER_LEN: usize = 48;
/// The largest block size accepted: 64 MiB.
pub const MAX_BLOCK_SIZE: u32 = 64 << 20;
/// The largest decoded index accepted: 4 GiB.
pub const MAX_INDEX_LEN: u64 = 4 << 30;

const CODEC_NONE: u8 = 0;
const CODEC_ZSTD: u8 = 1;

/// A block as stored: header and payload, ready to append to a data object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedBlock {
    /// What the block holds.
    pub block: BlockRef,
    /// Header and (possibly compressed) payload.
    pub bytes: Vec<u8>,
}

/// Hashes and encodes one block. The payload is compressed when `compression` asks for it
/// and that makes it smaller; otherwise it is stored as it is (the header says which).
pub fn encode_block(raw: &[u8], compression: Compression) -> Result<EncodedBlock, Error> {
    encode_hashed_block(
        raw,
        Sha256Digest(Sha256::digest(raw).into()),
        compression,
        None,
    )
}

/// [`encode_block`] for a block whose SHA-256 the caller has just computed (the upload
/// pipeline hashes every block first, to skip those the parent already stores): hashing
/// is half the CPU of a backup, so it is done once. `digest` must be the block's identity
/// ([`crate::block_digest`] of `raw` under `key`); a wrong one makes a block that every
/// reader rejects. With a `key`, the record is encrypted (container version 2).
pub fn encode_hashed_block(
    raw: &[u8],
    digest: Sha256Digest,
    compression: Compression,
    key: Option<&RepoKey>,
) -> Result<EncodedBlock, Error> {
    let mut bytes = Vec::new();
    let block = encode_hashed_block_into(raw, digest, compression, key, &mut bytes)?;
    // Give back the unused bound: a well-compressed block would otherwise keep a whole
    // block's allocation alive while it waits in a part.
    bytes.shrink_to_fit();
    Ok(EncodedBlock { block, bytes })
}

/// [`encode_hashed_block`] into a buffer the caller reuses: `bytes` is overwritten with the
/// record (its capacity kept, so that a pipeline recycling a few buffers allocates nothing
/// per block once warm).
pub fn encode_hashed_block_into(
    raw: &[u8],
    digest: Sha256Digest,
    compression: Compression,
    key: Option<&RepoKey>,
    bytes: &mut Vec<u8>,
) -> Result<BlockRef, Error> {
    let raw_len = u32::try_from(raw.len())
        .ok()
        .filter(|&n| n > 0 && n <= MAX_BLOCK_SIZE)
        .ok_or(Error::InvalidBlockSize {
            size: raw.len() as u64,
        })?;
    // The header's room (and the nonce's, encrypted), then the payload compressed in place
    // after it, then room for the tag. Only bytes beyond the buffer's current length are
    // zeroed before zstd overwrites them.
    let start = BLOCK_HEADER_LEN + if key.is_some() { NONCE_LEN } else { 0 };
    let tail = if key.is_some() { TAG_LEN } else { 0 };
    let mut codec = CODEC_NONE;
    if let Compression::Zstd { level } = compression
        && looks_compressible(raw, level)
    {
        let bound = start + zstd::zstd_safe::compress_bound(raw.len());
        // Exactly: a reused buffer grown by doubling would hold twice a block.
        bytes.reserve_exact(bound.saturating_sub(bytes.len()) + tail);
        bytes.resize(bound, 0);
        let n = with_compressor(level, |c| c.compress_to_buffer(raw, &mut bytes[start..]))
            .map_err(|e| Error::Compression { why: e.to_string() })?;
        if n < raw.len() {
            codec = CODEC_ZSTD;
            bytes.truncate(start + n);
        } else {
            bytes.truncate(start);
        }
    } else {
        bytes.clear();
        bytes.reserve_exact(start + raw.len() + tail);
        bytes.resize(start, 0);
    }
    if codec == CODEC_NONE {
        bytes.extend_from_slice(raw);
    }
    let payload_len = (bytes.len() + tail - BLOCK_HEADER_LEN) as u32;
    bytes[0..4].copy_from_slice(&BLOCK_MAGIC);
    bytes[4] = if key.is_some() {
        ENCRYPTED_CONTAINER_VERSION
    } else {
        CONTAINER_VERSION
    };
    bytes[5] = codec;
    bytes[6..8].fill(0);
    bytes[8..12].copy_from_slice(&raw_len.to_be_bytes());
    bytes[12..16].copy_from_slice(&payload_len.to_be_bytes());
    bytes[16..48].copy_from_slice(&digest.0);
    if let Some(key) = key {
        let header: [u8; BLOCK_HEADER_LEN] =
            bytes[..BLOCK_HEADER_LEN].try_into().expect("48 bytes");
        key.seal_in_place(&header, bytes, BLOCK_HEADER_LEN);
    }
    Ok(BlockRef {
        digest,
        len: raw_len,
    })
}

/// Bytes of each sample [`looks_compressible`] compresses.
const PROBE_LEN: usize = 8 << 10;

/// Whether a block is worth compressing: blocks up to 64 KiB always are tried; larger ones
/// when one of three 8 KiB samples (start, middle, end) shrinks by at least 3% at the
/// block's zstd level (the same level, so the thread's context is reused). Incompressible data (already compressed files, encrypted pages, noise) then
/// costs three small probes instead of a whole compression that is thrown away: about a
/// third of the CPU of a backup of half-incompressible data.
fn looks_compressible(raw: &[u8], level: i32) -> bool {
    if raw.len() <= 8 * PROBE_LEN {
        return true;
    }
    let mid = raw.len() / 2 - PROBE_LEN / 2;
    [0, mid, raw.len() - PROBE_LEN].iter().any(|&at| {
        let sample = &raw[at..at + PROBE_LEN];
        let mut out = [0u8; PROBE_LEN + 512];
        with_compressor(level, |c| c.compress_to_buffer(sample, &mut out[..]))
            .map_or(true, |n| n * 100 < PROBE_LEN * 97)
    })
}

/// The digest an index header records of its body: SHA-256 in a plain repository, the
/// HMAC-SHA256 under the index-id key in an encrypted one.
enum BodyHasher {
    Plain(Sha256),
    Keyed(hmac::Hmac<Sha256>),
}

impl BodyHasher {
    fn new(key: Option<&RepoKey>) -> Self {
        match key {
            Some(k) => BodyHasher::Keyed(k.index_hasher()),
            None => BodyHasher::Plain(Sha256::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            BodyHasher::Plain(h) => sha2::Digest::update(h, bytes),
            BodyHasher::Keyed(h) => h.update(bytes),
        }
    }

    fn finalize(self) -> Sha256Digest {
        Sha256Digest(match self {
            BodyHasher::Plain(h) => h.finalize().into(),
            BodyHasher::Keyed(h) => h.finalize().into_bytes().into(),
        })
    }
}

/// A writer that hashes and counts what passes through it (the index body, on its way into
/// the compressor).
struct HashingWriter<W> {
    inner: W,
    hasher: BodyHasher,
    len: u64,
}

impl<W: std::io::Write> HashingWriter<W> {
    fn new(inner: W, key: Option<&RepoKey>) -> Self {
        Self {
            inner,
            hasher: BodyHasher::new(key),
            len: 0,
        }
    }

    /// Writes `value` as JSON through a 64 KiB buffer (the hash is updated per buffer, not
    /// per token); returns the inner writer, the bytes written and their SHA-256.
    fn serialize(self, value: &impl Serialize) -> Result<(W, u64, Sha256Digest), Error> {
        let failed = |why: String| Error::Compression { why };
        let mut buffered = std::io::BufWriter::with_capacity(64 << 10, self);
        serde_json::to_writer(&mut buffered, value).map_err(|e| failed(e.to_string()))?;
        let this = buffered
            .into_inner()
            .map_err(|e| failed(e.error().to_string()))?;
        Ok((this.inner, this.len, this.hasher.finalize()))
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An index object's 48-byte header (FORMAT.md): magic, container version (2 when
/// `encrypted`), codec, two reserved bytes, the body's length and digest.
fn index_header(
    compression: Compression,
    encrypted: bool,
    len: u64,
    digest: &Sha256Digest,
) -> [u8; INDEX_HEADER_LEN] {
    let mut header = [0u8; INDEX_HEADER_LEN];
    header[..4].copy_from_slice(&INDEX_MAGIC);
    header[4] = if encrypted {
        ENCRYPTED_CONTAINER_VERSION
    } else {
        CONTAINER_VERSION
    };
    header[5] = match compression {
        Compression::None => CODEC_NONE,
        Compression::Zstd { .. } => CODEC_ZSTD,
    };
    header[8..16].copy_from_slice(&len.to_be_bytes());
    header[16..48].copy_from_slice(&digest.0);
    header
}

/// zstd compression contexts, reused: creating one per block costs more than compressing
/// a small block. A shared pool rather than one per thread: a pipeline's blocking pool has
/// more threads than compress at once, and each context is a few MiB at higher levels; the
/// pool holds as many as ever compressed at the same time.
static COMPRESSORS: std::sync::Mutex<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
    std::sync::Mutex::new(Vec::new());

thread_local! {
    /// One zstd decompression context per thread, reused: a context per block was an
    /// allocation and a free of ~100 KiB for every block restored or checked.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let pooled = COMPRESSORS.lock().ok().and_then(|mut pool| {
        let i = pool.iter().position(|(l, _)| *l == level)?;
        Some(pool.swap_remove(i).1)
    });
    let mut compressor = match pooled {
        Some(c) => c,
        None => zstd::bulk::Compressor::new(level)?,
    };
    let out = f(&mut compressor);
    if let Ok(mut pool) = COMPRESSORS.lock() {
        pool.push((level, compressor));
    }
    out
}

/// Why a stored block or index does not decode. The caller adds the object key and offset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header or the header's lengths need.
    #[error("truncated: {got} bytes, {want} needed")]
    Truncated {
        /// Bytes present.
        got: u64,
        /// Bytes needed.
        want: u64,
    },
    /// More bytes than the header's lengths account for.
    #[error("{extra} trailing bytes after the payload")]
    Trailing {
        /// Bytes left over.
        extra: u64,
    },
    /// The magic bytes are wrong: not a block / index, or a misplaced range.
    #[error("bad magic bytes (not a Catena {what}, or the wrong byte range)")]
    BadMagic {
        /// "block" or "index".
        what: &'static str,
    },
    /// A container version this build does not read.
    #[error("container version {0} is not one this Catena reads; upgrade Catena")]
    UnsupportedVersion(u8),
    /// An unknown codec byte.
    #[error("unknown codec {0}")]
    UnknownCodec(u8),
    /// A length out of bounds.
    #[error("{what} length {len} is out of bounds")]
    BadLength {
        /// Which length.
        what: &'static str,
        /// Its value.
        len: u64,
    },
    /// The payload does not decompress, or not to the recorded length.
    #[error("payload does not decompress: {0}")]
    Decompress(String),
    /// The decoded bytes do not hash to the recorded digest.
    #[error("checksum mismatch: recorded {expected}, computed {actual}")]
    Checksum {
        /// Recorded.
        expected: Sha256Digest,
        /// Computed.
        actual: Sha256Digest,
    },
    /// The block is intact but not the one the index promised.
    #[error(
        "holds block {found} of {found_len} bytes, but the index says {expected} of {expected_len} bytes"
    )]
    WrongBlock {
        /// What the index says.
        expected: Sha256Digest,
        /// Its length per the index.
        expected_len: u32,
        /// What the header says.
        found: Sha256Digest,
        /// Its length per the header.
        found_len: u32,
    },
    /// The index payload is not a valid index body.
    #[error("index body is invalid: {0}")]
    IndexBody(String),
    /// An encrypted record or index, read without the repository's key.
    #[error("it is encrypted and no key was given; give the repository's passphrase or key file")]
    KeyNeeded,
    /// A plain record or index in an encrypted repository: not written by Catena with
    /// this repository's key.
    #[error(
        "it is not encrypted, but the repository is: it was not written with this repository's key"
    )]
    NotEncrypted,
    /// The sealed payload does not authenticate under the repository's key.
    #[error(
        "it failed authentication under {cipher}, the cipher the repository's config names: damaged, written with another key, or the config names the wrong cipher"
    )]
    Authentication {
        /// The cipher it was opened with ([`crate::crypto::RecordCipher::name`]).
        cipher: &'static str,
    },
}

/// Checks that a header's version is the one `key` calls for, and opens the sealed payload
/// of an encrypted one (`bytes` after the header) with the header as associated data.
fn open_payload<'a>(
    h: &Header,
    bytes: &'a [u8],
    key: Option<&RepoKey>,
) -> Result<std::borrow::Cow<'a, [u8]>, DecodeError> {
    match (h.version == ENCRYPTED_CONTAINER_VERSION, key) {
        (false, None) => Ok(std::borrow::Cow::Borrowed(&bytes[48..])),
        (true, None) => Err(DecodeError::KeyNeeded),
        (false, Some(_)) => Err(DecodeError::NotEncrypted),
        (true, Some(key)) => key
            .open(&bytes[..48], &bytes[48..])
            .map(std::borrow::Cow::Owned)
            .ok_or(DecodeError::Authentication {
                cipher: key.cipher().name(),
            }),
    }
}

struct Header {
    version: u8,
    codec: u8,
    raw_len: u64,
    stored_len: u64,
    digest: Sha256Digest,
}

fn read_header(
    bytes: &[u8],
    magic: [u8; 4],
    what: &'static str,
    wide: bool,
) -> Result<Header, DecodeError> {
    if bytes.len() < 48 {
        return Err(DecodeError::Truncated {
            got: bytes.len() as u64,
            want: 48,
        });
    }
    if bytes[0..4] != magic {
        return Err(DecodeError::BadMagic { what });
    }
    let version = bytes[4];
    if version != CONTAINER_VERSION && version != ENCRYPTED_CONTAINER_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if bytes[6..8] != [0, 0] {
        return Err(DecodeError::BadLength {
            what: "reserved (must be zero)",
            len: u64::from(u16::from_be_bytes([bytes[6], bytes[7]])),
        });
    }
    let codec = bytes[5];
    if codec != CODEC_NONE && codec != CODEC_ZSTD {
        return Err(DecodeError::UnknownCodec(codec));
    }
    let be32 = |at: usize| {
        u64::from(u32::from_be_bytes(
            bytes[at..at + 4].try_into().expect("4 bytes"),
        ))
    };
    let (raw_len, stored_len) = if wide {
        let raw = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
        (raw, (bytes.len() - 48) as u64)
    } else {
        (be32(8), be32(12))
    };
    let digest_at = 16;
    let digest = Sha256Digest(
        bytes[digest_at..digest_at + 32]
            .try_into()
            .expect("32 bytes"),
    );
    Ok(Header {
        version,
        codec,
        raw_len,
        stored_len,
        digest,
    })
}

fn decompress(
    codec: u8,
    payload: std::borrow::Cow<'_, [u8]>,
    raw_len: u64,
) -> Result<Vec<u8>, DecodeError> {
    match codec {
        CODEC_NONE => {
            if payload.len() as u64 != raw_len {
                return Err(DecodeError::BadLength {
                    what: "stored (uncompressed)",
                    len: payload.len() as u64,
                });
            }
            Ok(payload.into_owned())
        }
        _ => {
            // The capacity bounds the output: a payload that inflates past the recorded
            // length is an error, not an allocation.
            let out = DECOMPRESSOR
                .with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = Some(zstd::bulk::Decompressor::new()?);
                    }
                    let decompressor = slot.as_mut().expect("set above");
                    decompressor.decompress(&payload, raw_len as usize)
                })
                .map_err(|e| DecodeError::Decompress(e.to_string()))?;
            if out.len() as u64 != raw_len {
                return Err(DecodeError::Decompress(format!(
                    "{} bytes, the header says {raw_len}",
                    out.len()
                )));
            }
            Ok(out)
        }
    }
}

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: BodyHasher,
    read: u64,
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Decodes one stored block (header and payload, exactly as the index locates it), checks
/// it is the block `expected`, and returns its uncompressed bytes after verifying their
/// digest. `key` is the repository's key when it is encrypted: a record is then
/// authenticated and decrypted, and its digest is keyed ([`crate::block_digest`]).
pub fn decode_block(
    bytes: &[u8],
    expected: &BlockRef,
    key: Option<&RepoKey>,
) -> Result<Vec<u8>, DecodeError> {
    let h = read_header(bytes, BLOCK_MAGIC, "block", false)?;
    if h.raw_len == 0 || h.raw_len > u64::from(MAX_BLOCK_SIZE) {
        return Err(DecodeError::BadLength {
            what: "block",
            len: h.raw_len,
        });
    }
    if h.digest != expected.digest || h.raw_len != u64::from(expected.len) {
        return Err(DecodeError::WrongBlock {
            expected: expected.digest,
            expected_len: expected.len,
            found: h.digest,
            found_len: h.raw_len as u32,
        });
    }
    let want = BLOCK_HEADER_LEN as u64 + h.stored_len;
    let got = bytes.len() as u64;
    if got < want {
        return Err(DecodeError::Truncated { got, want });
    }
    if got > want {
        return Err(DecodeError::Trailing { extra: got - want });
    }
    let payload = open_payload(&h, bytes, key)?;
    let raw = decompress(h.codec, payload, h.raw_len)?;
    let actual = crate::block_digest(&raw, key);
    if actual != h.digest {
        return Err(DecodeError::Checksum {
            expected: h.digest,
            actual,
        });
    }
    Ok(raw)
}

/// Where one stored block lives in this artifact's data object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockLocation {
    /// The block.
    pub digest: Sha256Digest,
    /// Its uncompressed length.
    pub len: u32,
    /// Byte offset of its header in the data object.
    pub offset: u64,
    /// Bytes of header and payload: the range to read is `offset..offset + stored_len`.
    pub stored_len: u32,
}

impl BlockLocation {
    /// The block this location holds.
    pub fn block(&self) -> BlockRef {
        BlockRef {
            digest: self.digest,
            len: self.len,
        }
    }

    /// The byte range to read.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + u64::from(self.stored_len)
    }
}

fn stored_twice(digest: &Sha256Digest) -> Error {
    Error::InvalidIndex {
        why: format!("block {digest} is stored twice"),
    }
}

/// What an index's block list says of its data object, summed up record by record: what
/// [`Index::check_layout`] and [`Index::check_within`] check against the manifest, kept
/// when the list itself is not ([`IndexChanges`]). Both build it with
/// [`BlockListSummary::add`], so a list streamed past is refused exactly as one held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockListSummary {
    /// Records listed.
    pub blocks: u64,
    /// Their uncompressed bytes (saturating).
    pub block_bytes: u64,
    /// The last record, which ends where every record ends at the latest (records are in
    /// offset order without overlap).
    pub last: Option<BlockLocation>,
    /// The first record that does not start where the one before it ends (the first
    /// record: at 0), with where the one before ends.
    pub first_gap: Option<(BlockLocation, u64)>,
}

impl BlockListSummary {
    /// Adds the next record of the list: refuses lengths out of bounds, a record that
    /// starts before the one before it ends, and offsets that overflow.
    pub fn add(&mut self, b: &BlockLocation) -> Result<(), Error> {
        if b.len == 0 || b.len > MAX_BLOCK_SIZE || (b.stored_len as usize) < BLOCK_HEADER_LEN {
            return Err(Error::InvalidIndex {
                why: format!("block {} has lengths out of bounds", b.digest),
            });
        }
        let end = self.end();
        if b.offset < end {
            return Err(Error::InvalidIndex {
                why: format!("block {} overlaps the previous one", b.digest),
            });
        }
        if b.offset.checked_add(u64::from(b.stored_len)).is_none() {
            return Err(Error::InvalidIndex {
                why: "offsets overflow".into(),
            });
        }
        if b.offset != end && self.first_gap.is_none() {
            self.first_gap = Some((*b, end));
        }
        self.blocks += 1;
        self.block_bytes = self.block_bytes.saturating_add(u64::from(b.len));
        self.last = Some(*b);
        Ok(())
    }

    /// Where the records end (0 for none; saturating, for a summary built by hand).
    pub fn end(&self) -> u64 {
        self.last
            .map_or(0, |b| b.offset.saturating_add(u64::from(b.stored_len)))
    }

    /// [`Index::check_within`] of the list summed up.
    pub fn check_within(&self, data_size: u64) -> Result<(), Error> {
        match self.last {
            Some(b) if self.end() > data_size => Err(Error::InvalidIndex {
                why: format!(
                    "block {} lies at byte {} and is {} bytes long, but the data object has {data_size} bytes",
                    b.digest, b.offset, b.stored_len
                ),
            }),
            _ => Ok(()),
        }
    }

    /// [`Index::check_layout`] of the list summed up.
    pub fn check_layout(&self, data_size: u64, blocks: u64, block_bytes: u64) -> Result<(), Error> {
        if let Some((b, end)) = self.first_gap {
            return Err(Error::InvalidIndex {
                why: format!(
                    "block {} starts at {} but the one before it ends at {end}: the records of a data object lie back to back",
                    b.digest, b.offset
                ),
            });
        }
        let end = self.end();
        if end != data_size {
            return Err(Error::InvalidIndex {
                why: format!(
                    "its records end at byte {end} but the data object has {data_size} bytes"
                ),
            });
        }
        if self.blocks != blocks || self.block_bytes != block_bytes {
            return Err(Error::InvalidIndex {
                why: format!(
                    "it lists {} blocks of {} bytes but the manifest records {blocks} of {block_bytes}",
                    self.blocks, self.block_bytes
                ),
            });
        }
        Ok(())
    }
}

/// An index decoded without its block list: the change set, and the list summed up as it
/// streamed past, every record checked as [`Index::validate`] checks it (a block listed
/// twice included). What composing a backup's parent state needs: at a million files the
/// list is ~50 MB that this never holds (its digests, 32 bytes a block, only while it is
/// checked for repeats).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexChanges {
    /// What the artifact changes.
    pub changes: ChangeSet,
    /// Its block list, summed up.
    #[serde(deserialize_with = "summarize_blocks")]
    pub blocks: BlockListSummary,
}

/// Deserializes a block list into its [`BlockListSummary`], refusing what
/// [`Index::validate`] refuses.
fn summarize_blocks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BlockListSummary, D::Error> {
    struct Summing;
    impl<'de> serde::de::Visitor<'de> for Summing {
        type Value = BlockListSummary;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of block records")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<BlockListSummary, A::Error> {
            use serde::de::Error as _;
            let mut summary = BlockListSummary::default();
            let mut digests = Vec::new();
            while let Some(b) = seq.next_element::<BlockLocation>()? {
                summary.add(&b).map_err(A::Error::custom)?;
                digests.push(b.digest);
            }
            digests.sort_unstable();
            if let Some(w) = digests.windows(2).find(|w| w[0] == w[1]) {
                return Err(A::Error::custom(stored_twice(&w[0])));
            }
            Ok(summary)
        }
    }
    d.deserialize_seq(Summing)
}

impl IndexChanges {
    /// [`Index::decode_within`] without keeping the block list.
    pub fn decode_within(
        bytes: &[u8],
        limit: u64,
        key: Option<&RepoKey>,
    ) -> Result<Self, DecodeError> {
        decode_within_as(bytes, limit, key, |c: &Self| c.changes.validate())
    }

    /// [`Index::decode_streamed`] without keeping the block list.
    pub fn decode_streamed(
        object: impl std::io::Read,
        len: u64,
        limit: u64,
    ) -> Result<Self, DecodeError> {
        decode_streamed_as(object, len, limit, |c: &Self| c.changes.validate())
    }
}

/// The index of one artifact: its change set against the parent's state, and where each
/// block it stores lives.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// What the artifact changes (for a FULL: every entry, added).
    pub changes: ChangeSet,
    /// The blocks stored in this artifact's data object, in offset order.
    pub blocks: Vec<BlockLocation>,
}

impl Index {
    /// Checks the index on its own: the change set is valid, blocks are in offset order
    /// without overlap or repeats, and lengths are in bounds.
    pub fn validate(&self) -> Result<(), Error> {
        self.changes.validate()?;
        self.summary()?;
        // Each block once: (digest prefix, position) pairs sorted by digest, 16 bytes a
        // block, where a set of the digests took ~50 (50 MB beside the index of a million
        // files being decoded, at the peak of every DIFF, restore and check of it). Equal
        // digests end up side by side; only pairs with equal prefixes are compared whole.
        let digest = |i: usize| &self.blocks[i].digest;
        let prefix = |d: &Sha256Digest| {
            let mut p = [0u8; 8];
            p.copy_from_slice(&d.0[..8]);
            u64::from_be_bytes(p)
        };
        let mut order: Vec<(u64, usize)> = self
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (prefix(&b.digest), i))
            .collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| digest(a.1).cmp(digest(b.1))));
        if let Some(w) = order
            .windows(2)
            .find(|w| w[0].0 == w[1].0 && digest(w[0].1) == digest(w[1].1))
        {
            return Err(stored_twice(digest(w[0].1)));
        }
        Ok(())
    }

    /// The block list summed up record by record ([`BlockListSummary::add`]): the first
    /// record with lengths out of bounds, overlapping the one before or overflowing is
    /// the error.
    pub fn summary(&self) -> Result<BlockListSummary, Error> {
        let mut summary = BlockListSummary::default();
        for b in &self.blocks {
            summary.add(b)?;
        }
        Ok(summary)
    }

    /// Checks that every record this index lists lies within the data object's first
    /// `data_size` bytes (what every format requires; format 2's [`Index::check_layout`]
    /// pins more). A format-1 index rewritten to point past its data object is then refused
    /// as damage before any read, instead of failing as a request for a range that is not
    /// there (which reads as a failed request, to retry).
    pub fn check_within(&self, data_size: u64) -> Result<(), Error> {
        self.summary()?.check_within(data_size)
    }

    /// Checks what format 2 pins (`docs/FORMAT.md`, "Format 2"): the records this index
    /// lists lie back to back from offset 0 and end exactly at `data_size`, the data
    /// object's size (0 when there is none), and they are as many as `blocks` and hold
    /// `block_bytes` uncompressed bytes, as the manifest says. With every record verified
    /// by its own header and digest, a missing, extra, truncated, reordered or misplaced
    /// record is then found without a digest of the whole object.
    pub fn check_layout(&self, data_size: u64, blocks: u64, block_bytes: u64) -> Result<(), Error> {
        self.summary()?.check_layout(data_size, blocks, block_bytes)
    }

    /// Encodes the index object: header, then the JSON body, zstd-compressed when asked.
    /// The JSON is serialized straight into the compressor, hashed and counted on the way,
    /// and the header's length and digest are filled in at the end: the uncompressed body
    /// (670 bytes per file of a many-file FULL, 67 MB for 100,000 files) is never held.
    ///
    /// With a `key` (an encrypted repository) the header's digest is keyed and the encoded
    /// body is sealed after the header (container version 2).
    pub fn encode(
        &self,
        compression: Compression,
        key: Option<&RepoKey>,
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(INDEX_HEADER_LEN + ENCRYPTION_OVERHEAD + 4096);
        // The header (and the nonce's room when encrypted), filled in once the body is known.
        out.resize(
            INDEX_HEADER_LEN + if key.is_some() { NONCE_LEN } else { 0 },
            0,
        );
        let (mut out, len, digest) = self.write_body(out, compression, key)?;
        let header = index_header(compression, key.is_some(), len, &digest);
        out[..INDEX_HEADER_LEN].copy_from_slice(&header);
        if let Some(key) = key {
            key.seal_in_place(&header, &mut out, INDEX_HEADER_LEN);
        }
        Ok(out)
    }

    /// [`Index::encode`] for an unencrypted repository, written front to back into `out`
    /// without holding the encoded index (a million files' index is ~110 MB compressed):
    /// the JSON body is serialized twice, first only to learn the length and SHA-256 its
    /// header records, then through the compressor into `out`. The bytes written are
    /// exactly those of `encode(compression, None)`; a second serialization that differs
    /// from the first (it cannot, for the same index) is an error, never a wrong header.
    /// Returns `out` (its errors come back as [`Error::Compression`]).
    pub fn encode_to<W: std::io::Write>(
        &self,
        compression: Compression,
        mut out: W,
    ) -> Result<W, Error> {
        let (_, len, digest) = HashingWriter::new(std::io::sink(), None).serialize(self)?;
        out.write_all(&index_header(compression, false, len, &digest))
            .map_err(|e| Error::Compression { why: e.to_string() })?;
        let (out, again, again_digest) = self.write_body(out, compression, None)?;
        if (again, again_digest) != (len, digest) {
            return Err(Error::Compression {
                why: "the index serialized differently the second time".into(),
            });
        }
        Ok(out)
    }

    /// Serializes the JSON body into `out`, through zstd when asked, hashed (keyed when
    /// encrypted) and counted before compression: what [`Index::encode`] and
    /// [`Index::encode_to`] both write after the header. Returns `out`, the body's length
    /// and its digest.
    fn write_body<W: std::io::Write>(
        &self,
        out: W,
        compression: Compression,
        key: Option<&RepoKey>,
    ) -> Result<(W, u64, Sha256Digest), Error> {
        match compression {
            Compression::None => HashingWriter::new(out, key).serialize(self),
            Compression::Zstd { level } => {
                let compress_error = |e: std::io::Error| Error::Compression { why: e.to_string() };
                let encoder =
                    zstd::stream::write::Encoder::new(out, level).map_err(compress_error)?;
                let (encoder, len, digest) = HashingWriter::new(encoder, key).serialize(self)?;
                Ok((encoder.finish().map_err(compress_error)?, len, digest))
            }
        }
    }

    /// Decodes and validates an index object. Any input gives a value or an error, never a
    /// panic; see [`Index::decode_within`] for what it allocates.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_within(bytes, MAX_INDEX_LEN, None)
    }

    /// Decodes and validates an index object whose body may be at most `limit` bytes (and
    /// [`MAX_INDEX_LEN`]): a reader passes what the artifact's manifest allows
    /// ([`Index::body_limit`]). The body is decompressed and parsed as a stream, hashed
    /// on the way, so memory follows what the body really holds, never the length its
    /// header claims: a small object that claims or inflates to gigabytes fails at its
    /// first byte that is not the JSON of an index, or at the limit.
    ///
    /// `key` is the repository's key when it is encrypted: the body is then authenticated
    /// and decrypted first (it is at most the object's size), and its digest is keyed.
    pub fn decode_within(
        bytes: &[u8],
        limit: u64,
        key: Option<&RepoKey>,
    ) -> Result<Self, DecodeError> {
        decode_within_as(bytes, limit, key, Index::validate)
    }

    /// [`decode_within`](Self::decode_within) for an index object of an unencrypted
    /// repository read from `object`, `len` bytes long (what its manifest records): the
    /// object is read as it is decoded, never held whole (the index of a million files is
    /// ~110 MB compressed). Exactly `len` bytes are read at most; the caller checks that
    /// the object has no more, and its digest. An encrypted index needs its whole body to
    /// authenticate it: it is refused here ([`DecodeError::KeyNeeded`]).
    pub fn decode_streamed(
        object: impl std::io::Read,
        len: u64,
        limit: u64,
    ) -> Result<Self, DecodeError> {
        decode_streamed_as(object, len, limit, Index::validate)
    }

    /// The most bytes the body of an index can take for an artifact whose manifest records
    /// `sizes` and `block_size`: 1 MiB, plus 16 KiB per entry of its state (a path of up to
    /// 4,096 bytes, escaped, and metadata), plus 128 bytes per block its files can have,
    /// plus 256 per block it stores. A manifest that understates its sizes gets its index
    /// refused, not read.
    pub fn body_limit(sizes: &crate::Sizes, block_size: u32) -> u64 {
        let file_blocks = sizes.logical_bytes / u64::from(block_size.max(1)) + sizes.entries;
        (1u64 << 20)
            .saturating_add(sizes.entries.saturating_mul(16 << 10))
            .saturating_add(file_blocks.saturating_mul(128))
            .saturating_add(sizes.blocks.saturating_mul(256))
            .min(MAX_INDEX_LEN)
    }

    /// Decodes and validates the JSON body of an index (what [`decode`](Self::decode) finds
    /// after the header and its checksum).
    pub fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        let index: Index =
            serde_json::from_slice(body).map_err(|e| DecodeError::IndexBody(e.to_string()))?;
        index
            .validate()
            .map_err(|e| DecodeError::IndexBody(e.to_string()))?;
        Ok(index)
    }
}

/// Decodes an index object held whole into `T` (an [`Index`] or an [`IndexChanges`]):
/// header, claims, the payload opened (authenticated when `key`), then the body.
fn decode_within_as<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limit: u64,
    key: Option<&RepoKey>,
    validate: impl FnOnce(&T) -> Result<(), Error>,
) -> Result<T, DecodeError> {
    let h = read_header(bytes, INDEX_MAGIC, "index", true)?;
    check_claims(&h, limit)?;
    let payload = open_payload(&h, bytes, key)?;
    decode_payload(&h, &payload[..], key, validate)
}

/// Decodes an unencrypted index object into `T` as it is read from `object` (see
/// [`Index::decode_streamed`]).
fn decode_streamed_as<T: serde::de::DeserializeOwned>(
    mut object: impl std::io::Read,
    len: u64,
    limit: u64,
    validate: impl FnOnce(&T) -> Result<(), Error>,
) -> Result<T, DecodeError> {
    let mut head = [0u8; INDEX_HEADER_LEN];
    let mut got = 0;
    while got < head.len() {
        match object.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DecodeError::Decompress(e.to_string())),
        }
    }
    if got < head.len() || len < head.len() as u64 {
        return Err(DecodeError::Truncated {
            got: (got as u64).min(len),
            want: head.len() as u64,
        });
    }
    let mut h = read_header(&head, INDEX_MAGIC, "index", true)?;
    h.stored_len = len - head.len() as u64;
    check_claims(&h, limit)?;
    if h.version == ENCRYPTED_CONTAINER_VERSION {
        return Err(DecodeError::KeyNeeded);
    }
    decode_payload(&h, object.take(h.stored_len), None, validate)
}

/// Refuses a header whose body length is beyond `limit` (and [`MAX_INDEX_LEN`]), or
/// beyond what its compressed size can inflate to, before anything is allocated.
fn check_claims(h: &Header, limit: u64) -> Result<(), DecodeError> {
    if h.raw_len > MAX_INDEX_LEN.min(limit) {
        return Err(DecodeError::BadLength {
            what: "index (more than its manifest allows)",
            len: h.raw_len,
        });
    }
    if h.codec == CODEC_ZSTD {
        // A zstd frame cannot expand by more than ~1:32768 with the default window;
        // refuse headers that claim absurd ratios before allocating.
        let limit = (h.stored_len.max(1)).saturating_mul(1 << 16);
        if h.raw_len > limit {
            return Err(DecodeError::BadLength {
                what: "index (for its compressed size)",
                len: h.raw_len,
            });
        }
    }
    Ok(())
}

/// Decompresses, parses, hashes and validates (with `validate`) the body from `payload`
/// (what follows the header, decrypted) against the header `h`, into an [`Index`] or an
/// [`IndexChanges`].
fn decode_payload<T: serde::de::DeserializeOwned>(
    h: &Header,
    payload: impl std::io::Read,
    key: Option<&RepoKey>,
    validate: impl FnOnce(&T) -> Result<(), Error>,
) -> Result<T, DecodeError> {
    let inner: Box<dyn std::io::Read + '_> = match h.codec {
        CODEC_NONE => Box::new(payload),
        _ => Box::new(
            zstd::stream::read::Decoder::new(payload)
                .map_err(|e| DecodeError::Decompress(e.to_string()))?,
        ),
    };
    // One byte past the recorded length shows a body longer than it says.
    let mut body = HashingReader {
        inner: std::io::Read::take(inner, h.raw_len.saturating_add(1)),
        hasher: BodyHasher::new(key),
        read: 0,
    };
    let index: T = serde_json::from_reader(std::io::BufReader::new(&mut body))
        .map_err(|e| DecodeError::IndexBody(e.to_string()))?;
    if body.read != h.raw_len {
        return Err(DecodeError::Decompress(format!(
            "{}{} bytes, the header says {}",
            body.read.min(h.raw_len),
            if body.read > h.raw_len {
                " or more"
            } else {
                ""
            },
            h.raw_len
        )));
    }
    let actual = body.hasher.finalize();
    if actual != h.digest {
        return Err(DecodeError::Checksum {
            expected: h.digest,
            actual,
        });
    }
    validate(&index).map_err(|e| DecodeError::IndexBody(e.to_string()))?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Entry, EntryKind, EntryPath, Metadata, State};

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 ^ (i / 7) as u8).collect()
    }

    #[test]
    fn blocks_round_trip_with_and_without_compression() {
        for c in [
            Compression::None,
            Compression::Zstd { level: 1 },
            Compression::Zstd { level: 3 },
        ] {
            for raw in [vec![7u8], sample(1000), vec![0u8; 1 << 20]] {
                let e = encode_block(&raw, c).expect("encode");
                assert_eq!(decode_block(&e.bytes, &e.block, None).expect("decode"), raw);
            }
        }
        // Incompressible data is stored as it is even when zstd is asked for.
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let e = encode_block(&noise, Compression::Zstd { level: 3 }).expect("encode");
        assert!(e.bytes.len() <= noise.len() + BLOCK_HEADER_LEN);
    }

    /// A reused buffer holds the bytes of the block before; none of them may reach the
    /// next record (compressed after stored, stored after compressed, shorter after
    /// longer, plain and sealed).
    #[test]
    fn a_reused_buffer_gives_the_same_records_as_a_fresh_one() {
        let noise: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let blocks = [
            sample(1 << 20),
            noise.clone(),
            vec![0u8; 10],
            noise[..1000].to_vec(),
            sample(70_000),
            vec![9u8],
        ];
        let key = key();
        for c in [Compression::None, Compression::Zstd { level: 1 }] {
            let mut buf = Vec::new();
            for raw in &blocks {
                let digest = Sha256Digest::of(raw);
                let block =
                    encode_hashed_block_into(raw, digest, c, None, &mut buf).expect("encode");
                let fresh = encode_hashed_block(raw, digest, c, None).expect("encode");
                assert_eq!(block, fresh.block);
                assert!(
                    buf == fresh.bytes,
                    "a record of {} bytes differs",
                    raw.len()
                );
            }
            let mut sealed = Vec::new();
            for raw in &blocks {
                let digest = crate::block_digest(raw, Some(&key));
                let block = encode_hashed_block_into(raw, digest, c, Some(&key), &mut sealed)
                    .expect("encode");
                assert_eq!(
                    &decode_block(&sealed, &block, Some(&key)).expect("opens"),
                    raw
                );
                let fresh = encode_hashed_block(raw, digest, c, Some(&key)).expect("encode");
                assert_eq!(sealed.len(), fresh.bytes.len());
                // The nonces differ; the headers may not.
                assert_eq!(sealed[..BLOCK_HEADER_LEN], fresh.bytes[..BLOCK_HEADER_LEN]);
            }
        }
    }

    #[test]
    fn every_flipped_byte_of_a_block_is_detected() {
        let raw = sample(5000);
        for c in [Compression::None, Compression::Zstd { level: 3 }] {
            let e = encode_block(&raw, c).expect("encode");
            for i in 0..e.bytes.len() {
                let mut bad = e.bytes.clone();
                bad[i] ^= 0x01;
                assert!(
                    decode_block(&bad, &e.block, None).is_err(),
                    "flip at {i} went unnoticed"
                );
            }
            assert!(decode_block(&e.bytes[..e.bytes.len() - 1], &e.block, None).is_err());
            let other = encode_block(b"other", c).expect("encode");
            assert!(matches!(
                decode_block(&other.bytes, &e.block, None),
                Err(DecodeError::WrongBlock { .. })
            ));
        }
    }

    #[test]
    fn empty_and_oversized_blocks_are_refused() {
        assert!(encode_block(b"", Compression::None).is_err());
    }

    fn index() -> Index {
        let a = encode_block(b"hello", Compression::None).expect("encode");
        let b = encode_block(&sample(3000), Compression::Zstd { level: 1 }).expect("encode");
        let blocks = vec![
            BlockLocation {
                digest: a.block.digest,
                len: a.block.len,
                offset: 0,
                stored_len: a.bytes.len() as u32,
            },
            BlockLocation {
                digest: b.block.digest,
                len: b.block.len,
                offset: a.bytes.len() as u64,
                stored_len: b.bytes.len() as u32,
            },
        ];
        let state = State::from_entries([
            Entry {
                stamp: None,
                path: EntryPath::new("d").expect("path"),
                kind: EntryKind::Directory,
                meta: Metadata::default(),
            },
            Entry {
                stamp: None,
                path: EntryPath::new("d/f").expect("path"),
                kind: EntryKind::File {
                    size: 3005,
                    blocks: vec![a.block, b.block],
                },
                meta: Metadata {
                    mode: 0o644,
                    mtime_ns: 1,
                    ..Metadata::default()
                },
            },
        ]);
        Index {
            changes: ChangeSet::full(&state),
            blocks,
        }
    }

    #[test]
    fn index_round_trips_and_detects_every_flip() {
        let idx = index();
        for c in [Compression::None, Compression::Zstd { level: 3 }] {
            let bytes = idx.encode(c, None).expect("encode");
            assert_eq!(Index::decode(&bytes).expect("decode"), idx);
            // A flip either fails to decode or decodes to the very same index (a zstd frame
            // has a few bits that do not change its output; the manifest's object SHA-256
            // catches those).
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x80;
                if let Ok(decoded) = Index::decode(&bad) {
                    assert_eq!(decoded, idx, "flip at {i} changed the index unnoticed");
                }
            }
            for cut in [0, 10, 47, 48, bytes.len() - 1] {
                assert!(Index::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    /// Read as a stream (here a byte at a time), an index object decodes exactly as it
    /// does whole, flips and cuts included; an encrypted one is refused, since its body
    /// authenticates only whole.
    #[test]
    fn index_streamed_decodes_as_whole() {
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(1).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let idx = index();
        for c in [Compression::None, Compression::Zstd { level: 3 }] {
            let bytes = idx.encode(c, None).expect("encode");
            let streamed =
                |b: &[u8]| Index::decode_streamed(Trickle(b), b.len() as u64, MAX_INDEX_LEN);
            assert_eq!(streamed(&bytes).expect("decode"), idx);
            for i in (0..bytes.len()).step_by(7) {
                let mut bad = bytes.clone();
                bad[i] ^= 0x80;
                assert_eq!(streamed(&bad).ok(), Index::decode(&bad).ok(), "flip at {i}");
            }
            for cut in [0, 10, 47, 48, bytes.len() - 1] {
                assert!(streamed(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            // The length a manifest records bounds what is read: a longer object's tail is
            // not read (its caller then finds the size wrong).
            let mut longer = bytes.clone();
            longer.extend_from_slice(b"trailing");
            assert_eq!(
                Index::decode_streamed(&longer[..], bytes.len() as u64, MAX_INDEX_LEN)
                    .expect("decode"),
                idx
            );
            let sealed = idx.encode(c, Some(&key())).expect("encode");
            assert!(matches!(
                Index::decode_streamed(&sealed[..], sealed.len() as u64, MAX_INDEX_LEN),
                Err(DecodeError::KeyNeeded)
            ));
        }
    }

    #[test]
    fn format_2_layout_finds_missing_extra_truncated_reordered_and_misplaced_records() {
        let idx = index();
        let size = idx
            .blocks
            .iter()
            .map(|b| u64::from(b.stored_len))
            .sum::<u64>();
        let bytes = idx.blocks.iter().map(|b| u64::from(b.len)).sum::<u64>();
        idx.check_layout(size, 2, bytes).expect("as written");
        // Extra bytes after the records, or a truncated object.
        assert!(idx.check_layout(size + 1, 2, bytes).is_err());
        assert!(idx.check_layout(size - 1, 2, bytes).is_err());
        // A record missing from the index (the object still holds it).
        let mut missing = idx.clone();
        missing.blocks.remove(0);
        assert!(missing.check_layout(size, 1, bytes - 5).is_err());
        // Reordered or misplaced records: offsets no longer back to back from 0.
        let mut reordered = idx.clone();
        reordered.blocks.swap(0, 1);
        assert!(reordered.check_layout(size, 2, bytes).is_err());
        let mut misplaced = idx.clone();
        misplaced.blocks[1].offset += 1;
        assert!(misplaced.check_layout(size, 2, bytes).is_err());
        // The manifest's counts disagree.
        assert!(idx.check_layout(size, 3, bytes).is_err());
        assert!(idx.check_layout(size, 2, bytes + 1).is_err());
        Index::default()
            .check_layout(0, 0, 0)
            .expect("no blocks, no data");
    }

    #[test]
    fn an_index_written_front_to_back_is_the_index_encoded_whole() {
        let idx = index();
        for compression in [Compression::None, Compression::Zstd { level: 3 }] {
            let whole = idx.encode(compression, None).expect("encode");
            let streamed = idx.encode_to(compression, Vec::new()).expect("encode_to");
            assert_eq!(streamed, whole, "{compression:?}");
            assert_eq!(Index::decode(&streamed).expect("decode"), idx);
        }
        // A writer that fails is the error, not a short index.
        struct Full;
        impl std::io::Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(idx.encode_to(Compression::Zstd { level: 3 }, Full).is_err());
    }

    #[test]
    fn records_past_the_data_object_are_refused_in_any_format() {
        let idx = index();
        let size = idx.blocks.last().map(|b| b.range().end).expect("blocks");
        idx.check_within(size).expect("within");
        idx.check_within(size + 7)
            .expect("format 1 allows gaps and a tail");
        let err = idx.check_within(size - 1).expect_err("past the end");
        assert!(
            err.to_string().contains(&format!("has {} bytes", size - 1)),
            "{err}"
        );
        let mut far = idx.clone();
        far.blocks[1].offset = u64::MAX;
        assert!(far.check_within(u64::MAX).is_err(), "no overflow, no panic");
        Index::default().check_within(0).expect("no blocks");
        // A summary built by hand whose last record overflows: refused, no panic.
        let by_hand = BlockListSummary {
            last: Some(far.blocks[1]),
            ..BlockListSummary::default()
        };
        assert_eq!(by_hand.end(), u64::MAX);
        assert!(by_hand.check_within(u64::MAX - 1).is_err());
    }

    #[test]
    fn an_index_read_without_its_block_list_refuses_what_the_whole_index_refuses() {
        let idx = index();
        let mut lists: Vec<(&str, Vec<BlockLocation>)> = vec![("as written", idx.blocks.clone())];
        let mut twice = idx.blocks.clone();
        twice.push(BlockLocation {
            offset: idx.summary().expect("valid").end() + 10,
            ..twice[0]
        });
        lists.push(("a block twice", twice));
        let mut overlap = idx.blocks.clone();
        overlap[1].offset -= 1;
        lists.push(("overlapping", overlap));
        let mut empty = idx.blocks.clone();
        empty[0].len = 0;
        lists.push(("an empty block", empty));
        let mut short = idx.blocks.clone();
        short[1].stored_len = 3;
        lists.push(("a record shorter than its header", short));
        let mut overflow = idx.blocks.clone();
        overflow[1].offset = u64::MAX - 10;
        lists.push(("offsets overflowing", overflow));
        let mut gap = idx.blocks.clone();
        gap[1].offset += 7;
        lists.push(("a gap (format 1 allows it)", gap));
        for (what, blocks) in lists {
            let idx = Index {
                changes: idx.changes.clone(),
                blocks,
            };
            let bytes = idx
                .encode(Compression::Zstd { level: 1 }, None)
                .expect("encode");
            let whole = Index::decode(&bytes);
            let streamed =
                IndexChanges::decode_streamed(&bytes[..], bytes.len() as u64, MAX_INDEX_LEN);
            let held = IndexChanges::decode_within(&bytes, MAX_INDEX_LEN, None);
            assert_eq!(streamed, held, "{what}");
            let valid = what == "as written" || what.starts_with("a gap");
            assert_eq!(whole.is_ok(), valid, "{what}: {whole:?}");
            match (whole, streamed) {
                (Ok(whole), Ok(lean)) => {
                    assert_eq!(lean.changes, whole.changes, "{what}");
                    assert_eq!(Some(lean.blocks), whole.summary().ok(), "{what}");
                }
                (Err(DecodeError::IndexBody(a)), Err(DecodeError::IndexBody(b))) => {
                    // The same finding, whatever else the parser adds to it.
                    let why = a.trim_start_matches("invalid index: ");
                    assert!(b.contains(why), "{what}: {a} against {b}");
                }
                (whole, lean) => panic!("{what}: {whole:?} against {lean:?}"),
            }
        }
        // The summary of a list with a gap records it, for format 2's check.
        let mut gap = idx.clone();
        gap.blocks[1].offset += 7;
        let summary = gap.summary().expect("format 1 allows gaps");
        assert_eq!(
            summary.first_gap.map(|(b, end)| (b.offset, end)),
            Some((idx.blocks[1].offset + 7, idx.blocks[1].offset))
        );
        assert!(summary.check_within(summary.end()).is_ok());
        assert!(
            summary
                .check_layout(summary.end(), 2, summary.block_bytes)
                .is_err()
        );
    }

    #[test]
    fn a_block_listed_twice_is_refused_wherever_it_is() {
        // Digests sharing their first 8 bytes: the duplicate check compares those whole.
        let digest = |last: u8| {
            let mut d = [7u8; 32];
            d[31] = last;
            Sha256Digest(d)
        };
        let blocks = |digests: &[Sha256Digest]| Index {
            changes: ChangeSet::default(),
            blocks: digests
                .iter()
                .enumerate()
                .map(|(i, &digest)| BlockLocation {
                    digest,
                    len: 10,
                    offset: i as u64 * 100,
                    stored_len: 100,
                })
                .collect(),
        };
        let other = Sha256Digest::of(b"elsewhere");
        blocks(&[digest(1), digest(2), other, digest(3)])
            .validate()
            .expect("one prefix, three digests");
        for twice in [
            vec![digest(1), digest(2), digest(1)],
            vec![digest(2), digest(1), other, digest(3), digest(1)],
            vec![other, digest(1), other],
            vec![digest(5), digest(5)],
        ] {
            let err = blocks(&twice).validate().expect_err("stored twice");
            assert!(err.to_string().contains("is stored twice"), "{err}");
        }
        Index::default().validate().expect("no blocks");
    }

    #[test]
    fn index_with_overlapping_blocks_is_refused() {
        let mut idx = index();
        idx.blocks[1].offset = 1;
        assert!(idx.validate().is_err());
        let bytes = idx.encode(Compression::None, None).expect("encode");
        assert!(Index::decode(&bytes).is_err());
    }

    fn key() -> RepoKey {
        RepoKey::generate(&"ab".repeat(16), crate::crypto::RecordCipher::Xaes256Gcm)
    }

    #[test]
    fn encrypted_records_round_trip_and_every_flipped_byte_fails_authentication() {
        let key = key();
        let raw = sample(5000);
        for c in [Compression::None, Compression::Zstd { level: 3 }] {
            let digest = crate::block_digest(&raw, Some(&key));
            assert_ne!(digest, Sha256Digest::of(&raw), "the block id is keyed");
            let e = encode_hashed_block(&raw, digest, c, Some(&key)).expect("encode");
            assert_eq!(e.bytes[4], ENCRYPTED_CONTAINER_VERSION);
            assert_eq!(
                decode_block(&e.bytes, &e.block, Some(&key)).expect("decode"),
                raw
            );
            // The plaintext does not appear in the record.
            assert!(!e.bytes.windows(64).any(|w| w == &raw[100..164]));
            for i in 0..e.bytes.len() {
                let mut bad = e.bytes.clone();
                bad[i] ^= 0x01;
                assert!(
                    decode_block(&bad, &e.block, Some(&key)).is_err(),
                    "flip at {i} went unnoticed"
                );
            }
            assert_eq!(
                decode_block(&e.bytes, &e.block, None),
                Err(DecodeError::KeyNeeded)
            );
            assert!(matches!(
                decode_block(&e.bytes, &e.block, Some(&self::key())),
                Err(DecodeError::Authentication {
                    cipher: "xaes-256-gcm"
                })
            ));
            let plain = encode_block(&raw, c).expect("encode");
            let claimed = BlockRef {
                digest,
                ..plain.block
            };
            let mut forged = plain.bytes.clone();
            forged[16..48].copy_from_slice(&digest.0);
            assert_eq!(
                decode_block(&forged, &claimed, Some(&key)),
                Err(DecodeError::NotEncrypted)
            );
        }
    }

    #[test]
    fn encrypted_indexes_round_trip_and_every_flipped_byte_fails() {
        let key = key();
        let idx = index();
        for c in [Compression::None, Compression::Zstd { level: 3 }] {
            let bytes = idx.encode(c, Some(&key)).expect("encode");
            assert_eq!(bytes[4], ENCRYPTED_CONTAINER_VERSION);
            assert_eq!(
                Index::decode_within(&bytes, MAX_INDEX_LEN, Some(&key)).expect("decode"),
                idx
            );
            assert!(!bytes.windows(3).any(|w| w == b"d/f"), "a path in clear");
            assert_eq!(Index::decode(&bytes), Err(DecodeError::KeyNeeded));
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x80;
                assert!(
                    Index::decode_within(&bad, MAX_INDEX_LEN, Some(&key)).is_err(),
                    "flip at {i} went unnoticed"
                );
            }
            let plain = idx.encode(c, None).expect("encode");
            assert_eq!(
                Index::decode_within(&plain, MAX_INDEX_LEN, Some(&key)),
                Err(DecodeError::NotEncrypted)
            );
        }
    }
}
