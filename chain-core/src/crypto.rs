//! Client-side encryption of a repository: the repository key, the key slots that wrap it,
//! and the config object that says whether a repository is encrypted. Pure bytes in, bytes
//! out (randomness for keys, salts and nonces comes from the thread's CSPRNG). Specified in
//! `docs/FORMAT.md` ("Encryption").
//!
//! An encrypted repository has one random 256-bit **master key**, stored only wrapped in
//! [`KeySlot`]s (one per passphrase or key file). From it [`RepoKey`] derives, by
//! HKDF-SHA256, four independent keys:
//!
//! - the **record key**: every block record's payload and every index body, each with a
//!   random 192-bit nonce and its header as associated data, under the repository's
//!   [`RecordCipher`]: XAES-256-GCM for repositories created since the config's
//!   `xaes-256-gcm` (AES-256-GCM under a key derived per nonce, C2SP XAES-256-GCM),
//!   XChaCha20-Poly1305 for those created before (still read and written as they are);
//! - the **block-id key** (HMAC-SHA256): a block's identity (what the index lists, what a
//!   DIFF compares) is the HMAC of its bytes, not their SHA-256, so stored indexes do not
//!   reveal hashes of the plaintext;
//! - the **index-id key** (HMAC-SHA256): the digest an index header records of its body;
//! - the **manifest key** (HMAC-SHA256): every manifest carries a MAC of its canonical
//!   encoding, so a manifest written without the key is refused as forged.
//!
//! Records stay self-contained (nonce, ciphertext and tag inside the record, nothing bound
//! to the object they live in), so a store can still copy them into a new FULL by
//! server-side copy.

use std::fmt;
use std::sync::Arc;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use jiff::Timestamp;

use crate::Sha256Digest;

/// Bytes of a random nonce (XAES-256-GCM and XChaCha20-Poly1305 both take 192 bits).
pub const NONCE_LEN: usize = 24;
/// Bytes of an authentication tag (GCM's and Poly1305's).
pub const TAG_LEN: usize = 16;
/// Bytes encryption adds to a record or an index body: nonce and tag.
pub const ENCRYPTION_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of the master key and of every derived key.
pub const KEY_LEN: usize = 32;
/// Version of the config object and key slot formats.
pub const KEYS_FORMAT: u32 = 1;
/// The config object's key, relative to the repository prefix.
pub const CONFIG_KEY: &str = "_config.json";
/// The folder of key slots, relative to the repository prefix.
pub const KEYS_PREFIX: &str = "_keys";

/// The encryption a repository uses, recorded in its config object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encryption {
    /// Plain: records, indexes and manifests are stored as they are.
    #[serde(rename = "none")]
    None,
    /// XChaCha20-Poly1305 records and indexes, HMAC-SHA256 block ids and manifest MACs: the
    /// repositories created before XAES-256-GCM.
    #[serde(rename = "xchacha20-poly1305")]
    XChaCha20Poly1305,
    /// XAES-256-GCM records and indexes, HMAC-SHA256 block ids and manifest MACs: every
    /// repository created now.
    #[serde(rename = "xaes-256-gcm")]
    Xaes256Gcm,
}

impl Encryption {
    /// The cipher of an encrypted repository's records; `None` for a plain one.
    pub fn cipher(self) -> Option<RecordCipher> {
        match self {
            Self::None => None,
            Self::XChaCha20Poly1305 => Some(RecordCipher::XChaCha20Poly1305),
            Self::Xaes256Gcm => Some(RecordCipher::Xaes256Gcm),
        }
    }
}

impl RecordCipher {
    /// The cipher's name, as the config object spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::XChaCha20Poly1305 => "xchacha20-poly1305",
            Self::Xaes256Gcm => "xaes-256-gcm",
        }
    }
}

impl From<RecordCipher> for Encryption {
    fn from(cipher: RecordCipher) -> Self {
        match cipher {
            RecordCipher::XChaCha20Poly1305 => Self::XChaCha20Poly1305,
            RecordCipher::Xaes256Gcm => Self::Xaes256Gcm,
        }
    }
}

/// The AEAD that seals an encrypted repository's records and index bodies. Both take a
/// 32-byte key, a random 24-byte nonce and give a 16-byte tag, so a record has the same
/// layout under either (docs/FORMAT.md, "Encryption"); the repository's config says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordCipher {
    /// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha), the cipher of the first encrypted
    /// repositories.
    XChaCha20Poly1305,
    /// XAES-256-GCM (C2SP): AES-256-GCM under a key derived from the record key and the
    /// nonce's first 12 bytes, with its last 12 as the GCM nonce.
    Xaes256Gcm,
}

/// Why a key, a key slot or a config object cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A config object or key slot is not what Catena writes.
    #[error("{what} is invalid: {why}")]
    Invalid {
        /// "the config object" or "key slot `<id>`".
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// No slot opens with the secret given.
    #[error(
        "no key slot opens with this {what}; `catena key list` shows the {slots} slot(s) of this repository"
    )]
    NoSlotOpens {
        /// "passphrase" or "key file".
        what: &'static str,
        /// How many slots the repository has.
        slots: usize,
    },
    /// A secret that cannot be a key (an empty passphrase, a short key file).
    #[error("{0}")]
    WeakSecret(String),
}

/// A passphrase or the contents of a key file: what opens a [`KeySlot`]. Never printed:
/// its `Debug` shows the kind only, and its bytes are zeroed when dropped.
#[derive(Clone)]
pub enum Secret {
    /// A passphrase (stretched by Argon2id).
    Passphrase(Zeroizing<String>),
    /// The bytes of a key file (at least 32 random bytes; derived by HKDF-SHA256).
    KeyFile(Zeroizing<Vec<u8>>),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Secret::Passphrase(_) => "Secret::Passphrase(..)",
            Secret::KeyFile(_) => "Secret::KeyFile(..)",
        })
    }
}

/// The fewest bytes a key file may hold.
pub const MIN_KEY_FILE_LEN: usize = 32;

impl Secret {
    /// A passphrase; a trailing newline (from a file or `echo`) is not part of it. Empty
    /// passphrases are refused.
    pub fn passphrase(text: impl Into<String>) -> Result<Self, KeyError> {
        let mut text = Zeroizing::new(text.into());
        while text.ends_with('\n') || text.ends_with('\r') {
            text.pop();
        }
        if text.is_empty() {
            return Err(KeyError::WeakSecret(
                "the passphrase is empty; give one of at least one character (long and random is best)".into(),
            ));
        }
        Ok(Secret::Passphrase(text))
    }

    /// The contents of a key file, taken byte for byte; fewer than [`MIN_KEY_FILE_LEN`]
    /// bytes are refused.
    pub fn key_file(bytes: Vec<u8>) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < MIN_KEY_FILE_LEN {
            return Err(KeyError::WeakSecret(format!(
                "the key file has {} bytes; a key file holds at least {MIN_KEY_FILE_LEN} random bytes (make one with `head -c 32 /dev/urandom > FILE`)",
                bytes.len()
            )));
        }
        Ok(Secret::KeyFile(bytes))
    }

    fn kind(&self) -> SlotKind {
        match self {
            Secret::Passphrase(_) => SlotKind::Passphrase,
            Secret::KeyFile(_) => SlotKind::KeyFile,
        }
    }
}

/// The repository key: the master key and the keys derived from it. Its `Debug` shows the
/// repository id only; key bytes are zeroed when dropped.
#[derive(Clone)]
pub struct RepoKey {
    repository: String,
    master: Zeroizing<[u8; KEY_LEN]>,
    /// The records key, under the repository's cipher.
    records: RecordKey,
    block_id: Zeroizing<[u8; KEY_LEN]>,
    index_id: Zeroizing<[u8; KEY_LEN]>,
    manifest: Zeroizing<[u8; KEY_LEN]>,
}

impl PartialEq for RepoKey {
    fn eq(&self, other: &Self) -> bool {
        self.repository == other.repository && self.master[..] == other.master[..]
    }
}

impl Eq for RepoKey {}

impl fmt::Debug for RepoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoKey {{ repository: {:?}, .. }}", self.repository)
    }
}

fn hmac(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> Sha256Digest {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    Sha256Digest(mac.finalize().into_bytes().into())
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::fill(&mut out[..]);
    out
}

/// The records key of a repository, as its cipher uses it.
#[derive(Clone)]
enum RecordKey {
    /// XChaCha20-Poly1305: the key itself (see [`xchacha_key`]).
    XChaCha(Zeroizing<[u8; KEY_LEN]>),
    /// XAES-256-GCM: the AES-256 key schedule and the CMAC subkey K1 (see [`XaesKey`]).
    Xaes(XaesKey),
}

impl RepoKey {
    /// A new random master key for the repository `repository` (its config object's id),
    /// whose records `cipher` seals.
    pub fn generate(repository: &str, cipher: RecordCipher) -> Self {
        Self::from_master(repository, cipher, Zeroizing::new(random()))
    }

    /// The key of repository `repository` whose master key is `master`: for tests and fuzz
    /// targets that need a fixed key (a repository's master key only ever comes from
    /// [`RepoKey::generate`] and lives wrapped in its slots).
    pub fn from_master_bytes(
        repository: &str,
        cipher: RecordCipher,
        master: [u8; KEY_LEN],
    ) -> Self {
        Self::from_master(repository, cipher, Zeroizing::new(master))
    }

    fn from_master(
        repository: &str,
        cipher: RecordCipher,
        master: Zeroizing<[u8; KEY_LEN]>,
    ) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(repository.as_bytes()), &master[..]);
        let derive = |info: &str| {
            let mut k = Zeroizing::new([0u8; KEY_LEN]);
            hk.expand(info.as_bytes(), &mut k[..])
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            k
        };
        // Each cipher has its own records key, so no key is ever used by two algorithms.
        let records = match cipher {
            RecordCipher::XChaCha20Poly1305 => RecordKey::XChaCha(derive("catena/v1/records")),
            RecordCipher::Xaes256Gcm => {
                RecordKey::Xaes(XaesKey::new(&derive("catena/v1/records/xaes-256-gcm")))
            }
        };
        Self {
            repository: repository.to_owned(),
            records,
            block_id: derive("catena/v1/block-id"),
            index_id: derive("catena/v1/index-id"),
            manifest: derive("catena/v1/manifest"),
            master,
        }
    }

    /// The id of the repository this key belongs to.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The cipher that seals this repository's records.
    pub fn cipher(&self) -> RecordCipher {
        match self.records {
            RecordKey::XChaCha(_) => RecordCipher::XChaCha20Poly1305,
            RecordKey::Xaes(_) => RecordCipher::Xaes256Gcm,
        }
    }

    /// A block's identity: HMAC-SHA256 of its bytes under the block-id key.
    pub fn block_digest(&self, raw: &[u8]) -> Sha256Digest {
        hmac(&self.block_id, &[raw])
    }

    /// A fresh HMAC-SHA256 under the index-id key, for an index body hashed as it streams.
    pub(crate) fn index_hasher(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.index_id[..]).expect("any key length")
    }

    /// The MAC of a manifest, not yet finalized: HMAC-SHA256 under the manifest key of the
    /// canonical (compact) JSON encoding of the manifest without its `mac`.
    fn manifest_mac(&self, manifest: &crate::Manifest) -> Hmac<Sha256> {
        let mut unsigned = manifest.clone();
        unsigned.mac = None;
        let canonical =
            serde_json::to_vec(&unsigned).expect("a manifest always serializes to JSON");
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.manifest[..]).expect("any key length");
        mac.update(b"catena-manifest-v1\n");
        mac.update(&canonical);
        mac
    }

    /// Signs a manifest for an encrypted repository: format 3, with its `mac`.
    pub fn sign_manifest(&self, mut manifest: crate::Manifest) -> crate::Manifest {
        manifest.format_version = crate::ENCRYPTED_MANIFEST_FORMAT_VERSION;
        let mac = self.manifest_mac(&manifest).finalize().into_bytes();
        manifest.mac = Some(Sha256Digest(mac.into()));
        manifest
    }

    /// Whether `manifest` carries a valid MAC under this key (compared in constant time).
    pub fn verify_manifest(&self, manifest: &crate::Manifest) -> bool {
        manifest.mac.is_some_and(|recorded| {
            self.manifest_mac(manifest)
                .verify_slice(&recorded.0)
                .is_ok()
        })
    }

    /// Encrypts `buf[at + NONCE_LEN..]` in place with a fresh random nonce, which it writes
    /// at `buf[at..at + NONCE_LEN]`, authenticating `aad` too, and appends the tag.
    pub(crate) fn seal_in_place(&self, aad: &[u8], buf: &mut Vec<u8>, at: usize) {
        let nonce: [u8; NONCE_LEN] = random();
        buf[at..at + NONCE_LEN].copy_from_slice(&nonce);
        let plain = &mut buf[at + NONCE_LEN..];
        let tag: [u8; TAG_LEN] = match &self.records {
            RecordKey::XChaCha(records) => {
                let (key, short) = xchacha_key(records, &nonce);
                let tag = key
                    .seal_in_place_separate_tag(short, ring::aead::Aad::from(aad), plain)
                    .expect("ChaCha20-Poly1305 seals up to 256 GiB per message");
                tag.as_ref().try_into().expect("a 16-byte tag")
            }
            RecordKey::Xaes(records) => {
                let (key, short) = records.gcm_key(&nonce);
                let tag = key
                    .seal_in_place_separate_tag(short, aws_lc_rs::aead::Aad::from(aad), plain)
                    .expect("AES-256-GCM seals up to 64 GiB per message");
                tag.as_ref().try_into().expect("a 16-byte tag")
            }
        };
        buf.extend_from_slice(&tag);
    }

    /// Decrypts `sealed` (nonce, ciphertext, tag) with `aad`, returning the plaintext; `None`
    /// when it does not authenticate.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < ENCRYPTION_OVERHEAD {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let mut out = rest.to_vec();
        let len = match &self.records {
            RecordKey::XChaCha(records) => {
                let (key, short) = xchacha_key(records, &nonce);
                key.open_in_place(short, ring::aead::Aad::from(aad), &mut out)
                    .ok()?
                    .len()
            }
            RecordKey::Xaes(records) => {
                let (key, short) = records.gcm_key(&nonce);
                key.open_in_place(short, aws_lc_rs::aead::Aad::from(aad), &mut out)
                    .ok()?
                    .len()
            }
        };
        out.truncate(len);
        Some(out)
    }
}

/// XChaCha20-Poly1305 of `key` and a 24-byte `nonce`, as the IETF ChaCha20-Poly1305 key and
/// 12-byte nonce that compute it (draft-irtf-cfrg-xchacha, section 2.3): the subkey is
/// HChaCha20 of the key and the nonce's first 16 bytes, the short nonce four zero bytes and
/// the nonce's last 8. The bytes are those of RustCrypto's `XChaCha20Poly1305` (a test
/// compares them); *ring*'s ChaCha20-Poly1305 computes them about twice as fast here (2.4
/// against 1.3 GB/s), which is most of what encryption costs a backup.
fn xchacha_key(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
) -> (ring::aead::LessSafeKey, ring::aead::Nonce) {
    let head: [u8; 16] = nonce[..16].try_into().expect("16 bytes");
    let sub = Zeroizing::new(<[u8; KEY_LEN]>::from(chacha20::hchacha::<chacha20::R20>(
        &(*key).into(),
        &head.into(),
    )));
    let mut short = [0u8; 12];
    short[4..].copy_from_slice(&nonce[16..]);
    let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &sub[..])
        .expect("a 32-byte ChaCha20-Poly1305 key");
    (
        ring::aead::LessSafeKey::new(key),
        ring::aead::Nonce::assume_unique_for_key(short),
    )
}

/// XAES-256-GCM (C2SP, `c2sp.org/XAES-256-GCM`) of one 256-bit key: AES-256-GCM under a key
/// derived from the key and the first 12 bytes of a 24-byte nonce, with the last 12 bytes as
/// the GCM nonce. The derived key is two blocks of a CMAC-like PRF: with `L = AES(K, 0)` and
/// `K1 = L << 1` (xor `0x87` into the last byte when `L`'s top bit was set),
/// `AES(K, [0, 1, 'X', 0, N[..12]] ^ K1) ‖ AES(K, [0, 2, 'X', 0, N[..12]] ^ K1)`.
/// Random 192-bit nonces make a collision negligible however many records one key seals,
/// which plain AES-256-GCM's 96-bit nonces do not (NIST's 2^32 limit); AES-256-GCM itself
/// runs at 9.2 GB/s in aws-lc-rs here, against 2.4 GB/s for ChaCha20-Poly1305 (DESIGN.md).
#[derive(Clone)]
struct XaesKey {
    /// AES-256 under the record key, one block at a time (ECB of whole blocks).
    aes: Arc<aws_lc_rs::cipher::EncryptingKey>,
    k1: Zeroizing<[u8; 16]>,
}

impl XaesKey {
    fn new(key: &[u8; KEY_LEN]) -> Self {
        let unbound = aws_lc_rs::cipher::UnboundCipherKey::new(&aws_lc_rs::cipher::AES_256, key)
            .expect("a 32-byte AES-256 key");
        let aes =
            Arc::new(aws_lc_rs::cipher::EncryptingKey::ecb(unbound).expect("AES-256 supports ECB"));
        let mut l = Zeroizing::new([0u8; 16]);
        Self::blocks(&aes, &mut l[..]);
        let mut k1 = Zeroizing::new([0u8; 16]);
        for i in 0..16 {
            k1[i] = (l[i] << 1) | l.get(i + 1).map_or(0, |next| next >> 7);
        }
        if l[0] & 0x80 != 0 {
            k1[15] ^= 0x87;
        }
        Self { aes, k1 }
    }

    /// Encrypts whole 16-byte blocks in place with AES-256.
    fn blocks(aes: &aws_lc_rs::cipher::EncryptingKey, in_out: &mut [u8]) {
        aes.less_safe_encrypt(in_out, aws_lc_rs::cipher::EncryptionContext::None)
            .expect("AES-256 encrypts whole blocks");
    }

    /// The AES-256-GCM key and 12-byte nonce that seal or open under `nonce`.
    fn gcm_key(
        &self,
        nonce: &[u8; NONCE_LEN],
    ) -> (aws_lc_rs::aead::LessSafeKey, aws_lc_rs::aead::Nonce) {
        let mut derived = Zeroizing::new([0u8; KEY_LEN]);
        for (half, counter) in derived.chunks_exact_mut(16).zip([1u8, 2]) {
            half[..4].copy_from_slice(&[0, counter, b'X', 0]);
            half[4..].copy_from_slice(&nonce[..12]);
            for (b, k) in half.iter_mut().zip(self.k1.iter()) {
                *b ^= k;
            }
        }
        Self::blocks(&self.aes, &mut derived[..]);
        let key = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &derived[..])
            .expect("a 32-byte AES-256-GCM key");
        let short: [u8; 12] = nonce[12..].try_into().expect("12 bytes");
        (
            aws_lc_rs::aead::LessSafeKey::new(key),
            aws_lc_rs::aead::Nonce::assume_unique_for_key(short),
        )
    }
}

/// A block's identity: its SHA-256 in a plain repository, its keyed HMAC in an encrypted one.
pub fn block_digest(raw: &[u8], key: Option<&RepoKey>) -> Sha256Digest {
    match key {
        Some(k) => k.block_digest(raw),
        None => Sha256Digest::of(raw),
    }
}

/// The config object, `_config.json`: sealed JSON that says whether the repository is
/// encrypted. Written create-only by the first backup of an encrypted repository (a
/// repository without one is plain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// [`KEYS_FORMAT`].
    pub format: u32,
    /// The repository's id: 32 lowercase hex digits, random.
    pub repository: String,
    /// How the repository is encrypted.
    pub encryption: Encryption,
    /// When the repository was created.
    pub created_at: Timestamp,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl RepoConfig {
    /// A new encrypted repository's config, with a random id, whose records `cipher` seals
    /// (Catena creates [`RecordCipher::Xaes256Gcm`] repositories).
    pub fn new_encrypted(cipher: RecordCipher, created_at: Timestamp) -> Self {
        Self {
            format: KEYS_FORMAT,
            repository: hex::encode(random::<16>()),
            encryption: cipher.into(),
            created_at,
        }
    }

    /// Opens and checks a stored config object. Any input gives a value or an error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, KeyError> {
        let invalid = |why: String| KeyError::Invalid {
            what: format!("the config object {CONFIG_KEY}"),
            why,
        };
        let config: Self = crate::sealed::open(bytes).map_err(|e| {
            // A sound config naming a cipher this Catena does not know was written by a newer
            // one: say so, rather than only that the value is unknown.
            let newer = crate::sealed::open::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| v.get("encryption")?.as_str().map(str::to_owned))
                .filter(|c| {
                    serde_json::from_value::<Encryption>(serde_json::Value::String(c.clone()))
                        .is_err()
                });
            match newer {
                Some(cipher) => invalid(format!(
                    "it names the cipher {cipher:?}, which this Catena does not know; upgrade Catena"
                )),
                None => invalid(e.to_string()),
            }
        })?;
        if config.format != KEYS_FORMAT {
            return Err(invalid(format!(
                "format {} is not one this Catena reads; upgrade Catena",
                config.format
            )));
        }
        if !is_hex(&config.repository, 32) {
            return Err(invalid(
                "its repository id is not 32 lowercase hex digits".into(),
            ));
        }
        Ok(config)
    }

    /// The sealed bytes to store.
    pub fn to_json(&self) -> Vec<u8> {
        crate::sealed::seal(self)
    }
}

/// What a key slot is opened with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    /// A passphrase, stretched by Argon2id.
    Passphrase,
    /// A key file, derived by HKDF-SHA256.
    KeyFile,
}

impl SlotKind {
    fn what(self) -> &'static str {
        match self {
            SlotKind::Passphrase => "passphrase",
            SlotKind::KeyFile => "key file",
        }
    }
}

/// Argon2id's cost, recorded in each passphrase slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

/// Bounds a reader accepts for a slot's Argon2id cost: a slot written by someone else must
/// not make opening it take a machine's memory or an hour.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 2 << 20;
/// The most passes a slot may ask for.
pub const MAX_ARGON2_ITERATIONS: u32 = 64;
/// The most lanes a slot may ask for.
pub const MAX_ARGON2_PARALLELISM: u32 = 16;

impl Default for Argon2Params {
    /// 128 MiB, 3 passes, 1 lane: about 0.5 s on the reference machine (docs/BENCHMARKS.md).
    fn default() -> Self {
        Self {
            memory_kib: 128 << 10,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl Argon2Params {
    fn check(&self) -> Result<argon2::Params, String> {
        if self.memory_kib > MAX_ARGON2_MEMORY_KIB
            || self.iterations > MAX_ARGON2_ITERATIONS
            || self.parallelism > MAX_ARGON2_PARALLELISM
        {
            return Err(format!(
                "its Argon2id cost ({} KiB, {} passes, {} lanes) is above what Catena accepts ({MAX_ARGON2_MEMORY_KIB} KiB, {MAX_ARGON2_ITERATIONS}, {MAX_ARGON2_PARALLELISM})",
                self.memory_kib, self.iterations, self.parallelism
            ));
        }
        argon2::Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(KEY_LEN),
        )
        .map_err(|e| format!("its Argon2id cost is invalid: {e}"))
    }
}

/// A key slot, `_keys/<id>.json`: the master key wrapped (XChaCha20-Poly1305) under a key
/// derived from a passphrase or key file. Sealed JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySlot {
    /// [`KEYS_FORMAT`].
    pub format: u32,
    /// The slot's id: 16 lowercase hex digits, random; the object is `_keys/<id>.json`.
    pub id: String,
    /// The repository id the slot belongs to.
    pub repository: String,
    /// What opens it.
    pub kind: SlotKind,
    /// Argon2id's cost, for a passphrase slot; absent for a key file slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argon2id: Option<Argon2Params>,
    /// The KDF's salt, 32 bytes as hex.
    pub salt: String,
    /// The wrapped master key: nonce, ciphertext and tag, 72 bytes as hex.
    pub wrapped: String,
    /// When the slot was added.
    pub created_at: Timestamp,
}

impl KeySlot {
    /// Wraps `key`'s master key in a new slot opened by `secret` (with `params` for a
    /// passphrase).
    pub fn wrap(
        key: &RepoKey,
        secret: &Secret,
        params: Argon2Params,
        created_at: Timestamp,
    ) -> Result<Self, KeyError> {
        let mut slot = Self {
            format: KEYS_FORMAT,
            id: hex::encode(random::<8>()),
            repository: key.repository.clone(),
            kind: secret.kind(),
            argon2id: (secret.kind() == SlotKind::Passphrase).then_some(params),
            salt: hex::encode(random::<32>()),
            wrapped: String::new(),
            created_at,
        };
        let kek = slot.derive(secret)?;
        let mut buf = Vec::with_capacity(NONCE_LEN + KEY_LEN + TAG_LEN);
        buf.extend_from_slice(&[0u8; NONCE_LEN]);
        buf.extend_from_slice(&key.master[..]);
        let wrapper = XChaCha20Poly1305::new(&(*kek).into());
        let nonce: [u8; NONCE_LEN] = random();
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        let tag = wrapper
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                slot.aad().as_bytes(),
                (&mut buf[NONCE_LEN..]).into(),
            )
            .expect("32 bytes encrypt");
        buf.extend_from_slice(&tag);
        slot.wrapped = hex::encode(&buf);
        Ok(slot)
    }

    /// What the wrapping authenticates besides the key: the slot cannot be moved to
    /// another repository or id, nor its kind or cost changed.
    fn aad(&self) -> String {
        let cost = self.argon2id.map_or_else(
            || "-".to_owned(),
            |p| format!("{},{},{}", p.memory_kib, p.iterations, p.parallelism),
        );
        format!(
            "catena-key-slot-v1\n{}\n{}\n{}\n{cost}\n{}",
            self.repository,
            self.id,
            match self.kind {
                SlotKind::Passphrase => "passphrase",
                SlotKind::KeyFile => "key_file",
            },
            self.salt
        )
    }

    fn derive(&self, secret: &Secret) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
        let salt = hex::decode(&self.salt).map_err(|e| self.invalid(e.to_string()))?;
        let mut kek = Zeroizing::new([0u8; KEY_LEN]);
        match (secret, self.kind) {
            (Secret::Passphrase(p), SlotKind::Passphrase) => {
                let params = self
                    .argon2id
                    .ok_or_else(|| self.invalid("a passphrase slot without Argon2id cost".into()))?
                    .check()
                    .map_err(|why| self.invalid(why))?;
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(p.as_bytes(), &salt, &mut kek[..])
                    .map_err(|e| self.invalid(format!("Argon2id: {e}")))?;
            }
            (Secret::KeyFile(bytes), SlotKind::KeyFile) => {
                hkdf::Hkdf::<Sha256>::new(Some(&salt), bytes)
                    .expand(b"catena/v1/key-file", &mut kek[..])
                    .expect("32 bytes is a valid HKDF-SHA256 output length");
            }
            _ => {
                return Err(self.invalid("the secret is of another kind than the slot".into()));
            }
        }
        Ok(kek)
    }

    fn invalid(&self, why: String) -> KeyError {
        KeyError::Invalid {
            what: format!("key slot {}", self.id),
            why,
        }
    }

    /// Opens and checks a stored slot. Any input gives a value or an error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, KeyError> {
        let slot: Self = crate::sealed::open(bytes).map_err(|e| KeyError::Invalid {
            what: "a key slot".into(),
            why: e.to_string(),
        })?;
        if slot.format != KEYS_FORMAT {
            return Err(slot.invalid(format!(
                "format {} is not one this Catena reads; upgrade Catena",
                slot.format
            )));
        }
        let why = if !is_hex(&slot.id, 16) {
            "its id is not 16 lowercase hex digits"
        } else if !is_hex(&slot.repository, 32) {
            "its repository id is not 32 lowercase hex digits"
        } else if !is_hex(&slot.salt, 64) {
            "its salt is not 32 bytes of lowercase hex"
        } else if !is_hex(&slot.wrapped, 2 * (NONCE_LEN + KEY_LEN + TAG_LEN)) {
            "its wrapped key is not 72 bytes of lowercase hex"
        } else if (slot.kind == SlotKind::Passphrase) != slot.argon2id.is_some() {
            "a passphrase slot records Argon2id's cost, a key file slot none"
        } else {
            ""
        };
        if !why.is_empty() {
            return Err(slot.invalid(why.into()));
        }
        if let Some(p) = slot.argon2id {
            p.check().map_err(|why| slot.invalid(why))?;
        }
        Ok(slot)
    }

    /// The sealed bytes to store.
    pub fn to_json(&self) -> Vec<u8> {
        crate::sealed::seal(self)
    }

    /// The object key of this slot, relative to the repository prefix.
    pub fn key(&self) -> String {
        format!("{KEYS_PREFIX}/{}.json", self.id)
    }

    /// Unwraps the master key with `secret`, as the key of a repository whose records
    /// `cipher` seals (its config says which): `None` when the secret does not open this slot
    /// (another passphrase, another kind), an error when the slot itself is unusable.
    pub fn open(&self, secret: &Secret, cipher: RecordCipher) -> Result<Option<RepoKey>, KeyError> {
        if secret.kind() != self.kind {
            return Ok(None);
        }
        let kek = self.derive(secret)?;
        let wrapped = hex::decode(&self.wrapped).map_err(|e| self.invalid(e.to_string()))?;
        if wrapped.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
            return Err(self.invalid(format!(
                "its wrapped key is {} bytes, not {}",
                wrapped.len(),
                NONCE_LEN + KEY_LEN + TAG_LEN
            )));
        }
        let wrapper = XChaCha20Poly1305::new(&(*kek).into());
        let (nonce, rest) = wrapped.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(KEY_LEN);
        let mut master = Zeroizing::new([0u8; KEY_LEN]);
        master.copy_from_slice(ciphertext);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("24 bytes");
        let tag: [u8; TAG_LEN] = tag.try_into().expect("16 bytes");
        let opened = wrapper.decrypt_inout_detached(
            &XNonce::from(nonce),
            self.aad().as_bytes(),
            (&mut master[..]).into(),
            &tag.into(),
        );
        Ok(opened
            .ok()
            .map(|()| RepoKey::from_master(&self.repository, cipher, master)))
    }
}

/// Opens the repository key with `secret` from the repository's slots: the first slot of
/// the secret's kind that it opens, and that slot's id. Slots of another repository are
/// skipped.
pub fn open_slots(
    config: &RepoConfig,
    slots: &[KeySlot],
    secret: &Secret,
) -> Result<(RepoKey, String), KeyError> {
    let cipher = config
        .encryption
        .cipher()
        .ok_or_else(|| KeyError::Invalid {
            what: format!("the config object {CONFIG_KEY}"),
            why: "it says the repository is plain, so no key slot applies; remove the key \
              option or restore the config object from a copy"
                .into(),
        })?;
    for slot in slots
        .iter()
        .filter(|s| s.repository == config.repository && s.kind == secret.kind())
    {
        if let Some(key) = slot.open(secret, cipher)? {
            return Ok((key, slot.id.clone()));
        }
    }
    Err(KeyError::NoSlotOpens {
        what: secret.kind().what(),
        slots: slots
            .iter()
            .filter(|s| s.repository == config.repository)
            .count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records sealed through ring (`xchacha_key`) are RustCrypto's XChaCha20-Poly1305 byte
    /// for byte, both ways, for lengths around ChaCha's 64-byte blocks and a whole block.
    #[test]
    fn records_through_ring_are_xchacha20_poly1305_byte_for_byte() {
        for (i, len) in [0usize, 1, 15, 16, 63, 64, 65, 1000, 4097, 1 << 20]
            .into_iter()
            .enumerate()
        {
            let key: [u8; KEY_LEN] = std::array::from_fn(|j| (j * 7 + i) as u8);
            let nonce: [u8; NONCE_LEN] = std::array::from_fn(|j| (j * 13 + i * 3) as u8);
            let aad = format!("header {i}");
            let plain: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
            let mut reference = plain.clone();
            let tag = XChaCha20Poly1305::new(&key.into())
                .encrypt_inout_detached(
                    &XNonce::from(nonce),
                    aad.as_bytes(),
                    (&mut reference[..]).into(),
                )
                .expect("seal");
            reference.extend_from_slice(&tag);
            let (k, short) = xchacha_key(&key, &nonce);
            let mut ours = plain.clone();
            let t = k
                .seal_in_place_separate_tag(short, ring::aead::Aad::from(aad.as_bytes()), &mut ours)
                .expect("seal");
            ours.extend_from_slice(t.as_ref());
            assert_eq!(ours, reference, "length {len}");
            let (k, short) = xchacha_key(&key, &nonce);
            let mut back = reference.clone();
            let opened = k
                .open_in_place(short, ring::aead::Aad::from(aad.as_bytes()), &mut back)
                .expect("opens");
            assert_eq!(opened, &plain[..], "length {len}");
            let (k, short) = xchacha_key(&key, &nonce);
            let mut wrong = reference.clone();
            assert!(
                k.open_in_place(short, ring::aead::Aad::from(b"another header"), &mut wrong)
                    .is_err()
            );
        }
    }

    pub(crate) fn fast() -> Argon2Params {
        Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("time")
    }

    #[test]
    fn slots_open_with_their_secret_only() {
        let config = RepoConfig::new_encrypted(RecordCipher::Xaes256Gcm, now());
        let key = RepoKey::generate(&config.repository, RecordCipher::Xaes256Gcm);
        let pass = Secret::passphrase("correct horse\n").expect("passphrase");
        let file = Secret::key_file(vec![7u8; 32]).expect("key file");
        let a = KeySlot::wrap(&key, &pass, fast(), now()).expect("wrap");
        let b = KeySlot::wrap(&key, &file, fast(), now()).expect("wrap");
        let a = KeySlot::from_json(&a.to_json()).expect("decodes");
        let b = KeySlot::from_json(&b.to_json()).expect("decodes");
        let slots = [a.clone(), b];
        for secret in [&pass, &file] {
            let (opened, _) = open_slots(&config, &slots, secret).expect("opens");
            assert_eq!(opened.block_digest(b"x"), key.block_digest(b"x"));
        }
        let wrong = Secret::passphrase("correct horse battery").expect("passphrase");
        let err = open_slots(&config, &slots, &wrong).expect_err("wrong passphrase");
        assert!(
            err.to_string()
                .contains("`catena key list` shows the 2 slot(s)")
        );
        // A slot whose recorded cost or salt was changed does not open.
        let mut cheaper = a.clone();
        cheaper.argon2id = Some(Argon2Params {
            memory_kib: 32,
            ..fast()
        });
        assert!(
            cheaper
                .open(&pass, RecordCipher::Xaes256Gcm)
                .expect("usable")
                .is_none()
        );
        // A slot whose wrapped key was cut short is refused, not a panic.
        let mut short = a.clone();
        short.wrapped.truncate(100);
        assert!(short.open(&pass, RecordCipher::Xaes256Gcm).is_err());
        // A config that says plain opens nothing.
        let mut plain = config.clone();
        plain.encryption = Encryption::None;
        assert!(open_slots(&plain, &slots, &pass).is_err());
        // Moved to another repository: skipped.
        let other = RepoConfig::new_encrypted(RecordCipher::Xaes256Gcm, now());
        assert!(open_slots(&other, &[a], &pass).is_err());
        // Key material never shows in Debug.
        let shown = format!("{key:?} {pass:?} {file:?}");
        assert!(
            !shown.contains("horse") && !shown.contains("7, 7"),
            "{shown}"
        );
    }

    #[test]
    fn hostile_slots_and_configs_are_refused() {
        let config = RepoConfig::new_encrypted(RecordCipher::Xaes256Gcm, now());
        assert_eq!(
            RepoConfig::from_json(&config.to_json()).expect("decodes"),
            config
        );
        let key = RepoKey::generate(&config.repository, RecordCipher::Xaes256Gcm);
        let pass = Secret::passphrase("p").expect("passphrase");
        let mut slot = KeySlot::wrap(&key, &pass, fast(), now()).expect("wrap");
        slot.argon2id = Some(Argon2Params {
            memory_kib: u32::MAX,
            iterations: 1,
            parallelism: 1,
        });
        assert!(KeySlot::from_json(&slot.to_json()).is_err());
        slot.argon2id = None;
        assert!(KeySlot::from_json(&slot.to_json()).is_err());
        // A config of a newer Catena, naming a cipher this one does not know.
        let newer = serde_json::to_string_pretty(&config)
            .expect("JSON")
            .replace("xaes-256-gcm", "aegis-256");
        let newer = crate::sealed::seal_bytes(newer.into_bytes());
        let err = RepoConfig::from_json(&newer)
            .expect_err("unknown cipher")
            .to_string();
        assert!(
            err.contains("\"aegis-256\"") && err.contains("upgrade Catena"),
            "{err}"
        );
        assert!(Secret::passphrase("\n").is_err());
        assert!(Secret::key_file(vec![1; 31]).is_err());
    }

    #[test]
    fn sealed_bytes_fail_authentication_when_changed() {
        for cipher in [RecordCipher::Xaes256Gcm, RecordCipher::XChaCha20Poly1305] {
            let key = RepoKey::from_master_bytes(&"0".repeat(32), cipher, [9; KEY_LEN]);
            assert_eq!(key.cipher(), cipher);
            let mut buf = vec![0u8; NONCE_LEN];
            buf.extend_from_slice(b"secret payload");
            key.seal_in_place(b"aad", &mut buf, 0);
            assert_eq!(
                key.open(b"aad", &buf).as_deref(),
                Some(&b"secret payload"[..])
            );
            assert!(key.open(b"other aad", &buf).is_none());
            for i in 0..buf.len() {
                let mut bad = buf.clone();
                bad[i] ^= 1;
                assert!(key.open(b"aad", &bad).is_none(), "{cipher:?}: flip at {i}");
            }
            let other = RepoKey::generate(&"0".repeat(32), cipher);
            assert!(other.open(b"aad", &buf).is_none());
            // The same master under the other cipher opens nothing: each has its own key.
            let [other_cipher] = [RecordCipher::Xaes256Gcm, RecordCipher::XChaCha20Poly1305]
                .into_iter()
                .filter(|c| *c != cipher)
                .collect::<Vec<_>>()[..]
            else {
                unreachable!("two ciphers")
            };
            let crossed = RepoKey::from_master_bytes(&"0".repeat(32), other_cipher, [9; KEY_LEN]);
            assert!(crossed.open(b"aad", &buf).is_none());
            // Block ids, index ids and manifest MACs do not depend on the cipher.
            assert_eq!(crossed.block_digest(b"x"), key.block_digest(b"x"));
        }
    }

    /// The C2SP XAES-256-GCM test vectors (`c2sp.org/XAES-256-GCM`), both ways.
    #[test]
    fn xaes_256_gcm_matches_the_c2sp_vectors() {
        let vectors: [([u8; KEY_LEN], &[u8], &str); 2] = [
            (
                [1; KEY_LEN],
                b"",
                "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271",
            ),
            (
                [3; KEY_LEN],
                b"c2sp.org/XAES-256-GCM",
                "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d",
            ),
        ];
        let nonce: &[u8; NONCE_LEN] = b"ABCDEFGHIJKLMNOPQRSTUVWX";
        for (key, aad, expected) in vectors {
            let xaes = XaesKey::new(&key);
            let (k, short) = xaes.gcm_key(nonce);
            let mut buf = b"XAES-256-GCM".to_vec();
            let tag = k
                .seal_in_place_separate_tag(short, aws_lc_rs::aead::Aad::from(aad), &mut buf)
                .expect("seal");
            buf.extend_from_slice(tag.as_ref());
            assert_eq!(hex::encode(&buf), expected);
            let (k, short) = xaes.gcm_key(nonce);
            let opened = k
                .open_in_place(short, aws_lc_rs::aead::Aad::from(aad), &mut buf)
                .expect("opens");
            assert_eq!(opened, b"XAES-256-GCM");
        }
    }
}
